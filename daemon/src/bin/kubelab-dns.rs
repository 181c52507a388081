//! `kubelab-dns`: the cluster DNS (CoreDNS's role) as a program of its own, as CoreDNS is
//! one: it carries a DNS library no other daemon needs, which would otherwise be in the
//! pages of every `kubelabd` process (the agents' idle memory, docs/benchmarks.md).
//! This file only parses the flags and runs `kubelab_daemon::dns`.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;

use kubelab_daemon::daemon::{init_logging, shutdown_signal};
use kubelab_daemon::dns;

#[derive(Parser)]
#[command(
    name = "kubelab-dns",
    version,
    about = "kubelab's cluster DNS: Services' names, other names forwarded"
)]
struct Cli {
    #[command(flatten)]
    args: dns::ClusterDnsArgs,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kubelab_proto::credential::init_tls();
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(dns::run(cli.args, Box::pin(shutdown_signal())))
        .context("kubelab-dns")
}
