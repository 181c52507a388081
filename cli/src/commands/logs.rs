//! `kubelab logs POD [-c CONTAINER] [-f] [--previous] [--tail N] [--timestamps]`: the
//! container's output, from its node's agent (through the apiserver, which proxies the
//! request as kube-apiserver does to the kubelet).

use futures::StreamExt;
use kubelab_proto::v1::LogsRequest;

use crate::api::{Api, Connection};

#[derive(Debug, clap::Args)]
pub struct LogsOptions {
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep printing new output until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The output of the container's previous run (before its last restart).
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Prefix each line with the time it was written (RFC 3339).
    #[arg(long)]
    timestamps: bool,
}

pub async fn run(
    server: &Connection,
    namespace: &str,
    name: &str,
    options: LogsOptions,
) -> anyhow::Result<()> {
    let mut api = Api::connect(server).await?;
    let request = LogsRequest {
        namespace: namespace.into(),
        name: name.into(),
        container: options.container.unwrap_or_default(),
        follow: options.follow,
        previous: options.previous,
        tail_lines: (options.tail >= 0).then_some(options.tail),
        timestamps: options.timestamps,
        since_time_ms: 0,
    };
    let mut stream = api
        .pods
        .logs(request)
        .await
        .map_err(api.error())?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(api.error())?;
        std::io::Write::write_all(&mut out, &chunk.data)?;
        // With -f, each chunk is shown as it comes.
        std::io::Write::flush(&mut out)?;
    }
    Ok(())
}
