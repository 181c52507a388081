//! `kubelabd`: every kubelab daemon in one binary. This file only parses the subcommand,
//! sets up logging and the async runtime, and calls into the `kubelab_daemon` library,
//! whose crate doc lists the parts.

#![forbid(unsafe_code)]

use kubelab_daemon::container::shim;
use kubelab_daemon::daemon::{init_logging, shutdown_signal};
use kubelab_daemon::{agent, apiserver, build, client, controllers, hollow, reset, scheduler, up};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kubelabd",
    version,
    about = "kubelab's daemons: apiserver, scheduler, agent (kubelet), shim"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the API (gRPC) and store objects in sled.
    Apiserver(apiserver::ApiserverArgs),
    /// Bind unbound pods to nodes.
    Scheduler {
        /// The scheduler's credential, as the apiserver wrote it.
        #[arg(long, default_value = "/var/lib/kubelab/apiserver/scheduler.conf")]
        config: std::path::PathBuf,
    },
    /// Run the controllers (ReplicaSet, garbage collector): kube-controller-manager's role.
    ControllerManager(controllers::ControllerManagerArgs),
    /// Run the node agent (kubelet) for one node.
    Agent(agent::AgentArgs),
    /// Start an apiserver, a scheduler and N agents together.
    Up(up::UpArgs),
    /// Run many hollow nodes (no containers: for scale tests and benchmarks only).
    HollowNodes(hollow::HollowNodesArgs),
    /// Build an image from a Containerfile (what `kubelab image build` runs).
    Build(build::BuildArgs),
    /// Remove what a killed lab, agent or build under DIR left on this machine:
    /// processes, mounts, cgroups, network links and iptables rules.
    Reset(reset::ResetArgs),
    /// Internal: run one container (started by the agent).
    #[command(hide = true)]
    Shim(shim::ShimArgs),
    /// Run a command inside a running container (started by the agent for exec).
    #[command(hide = true)]
    ExecHelper(agent::runtime::exec::ExecHelperArgs),
}

fn main() {
    if let Err(e) = run() {
        // One line, cause included: "error: agent: another agent is using ...".
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    kubelab_proto::credential::init_tls();
    // The shim and the exec helper must stay single-threaded (libcontainer forks them):
    // no async runtime for them.
    let command = match cli.command {
        Command::Shim(args) => std::process::exit(shim::run(args)),
        Command::ExecHelper(args) => std::process::exit(agent::runtime::exec::run_helper(args)),
        other => other,
    };
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Apiserver(args) => apiserver::run(args, Box::pin(shutdown_signal()))
                .await
                .context("apiserver"),
            Command::Scheduler { config } => {
                let credential =
                    kubelab_proto::credential::Credential::load(&config).context("scheduler")?;
                let api = client::ApiClient::new(&credential).context("scheduler")?;
                tokio::select! {
                    r = scheduler::run(api) => r.context("scheduler"),
                    _ = shutdown_signal() => Ok(()),
                }
            }
            Command::Agent(args) if args.hollow => {
                let node = hollow::HollowNode {
                    name: args.node_name.clone(),
                    labels: args.node_labels.clone(),
                    taints: args.register_with_taints.clone(),
                };
                let mut shape = args.hollow_shape.clone();
                shape.hollow_max_pods = args.max_pods;
                tokio::select! {
                    r = hollow::run(&args.bootstrap_config, vec![node], shape) => r.context("hollow agent"),
                    _ = shutdown_signal() => Ok(()),
                }
            }
            Command::ControllerManager(args) => {
                controllers::run(args, Box::pin(shutdown_signal()))
                    .await
                    .context("controller-manager")
            }
            Command::Agent(args) => agent::run(args, Box::pin(shutdown_signal())).await.context("agent"),
            Command::HollowNodes(args) => {
                tokio::select! {
                    r = hollow::run_many(args) => r.context("hollow-nodes"),
                    _ = shutdown_signal() => Ok(()),
                }
            }
            Command::Up(args) => up::run(args, Box::pin(shutdown_signal())).await.context("up"),
            Command::Build(args) => build::run(args).await.context("build"),
            Command::Reset(args) => reset::run(args).await.context("reset"),
            Command::Shim(_) | Command::ExecHelper(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    })
}
