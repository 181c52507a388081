//! `kubelab`: the command-line client, with kubectl's verbs and output shapes.
//!
//! Layout: `commands/` (one file per verb), `api` (the connection to the apiserver and
//! its errors), `manifest` (Pod YAML → API objects), `output` (tables, describe, `-o
//! json|yaml` in Kubernetes' shape), `image` (pushing images), `build` (`image build`,
//! which hands the build to `kubelabd build`). This file holds the command line itself.
//! The CLI talks to the apiserver (and to registries for pushes) only, never to agents
//! or the store.

#![forbid(unsafe_code)]

mod api;
mod build;
mod commands;
mod image;
mod manifest;
mod output;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "kubelab",
    version,
    about = "kubelab's command-line client (kubectl's verbs, smaller)"
)]
struct Cli {
    /// The credential file the apiserver wrote (default: ~/.kubelab/config).
    #[arg(long, global = true, env = "KUBELAB_CONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The apiserver's address (default: the one in the credential file).
    #[arg(long, global = true, env = "KUBELAB_SERVER")]
    server: Option<String>,
    /// The namespace to act in.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Subcommand)]
enum Command {
    /// Create the pods in a Kubernetes Pod manifest (YAML).
    Apply {
        /// The manifest file, a directory of them (*.yaml, *.yml, *.json), or "-" for
        /// standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// List pods, nodes, namespaces or events, or show one.
    Get {
        /// pods (po), nodes (no), namespaces (ns) or events (ev).
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<OutputFormat>,
        /// Pods of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only objects whose labels match: `app=web`, `tier!=db`, `env in (a,b)`, `!canary`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Pods: `spec.nodeName=NODE` (the one field selector kubelab knows).
        #[arg(long)]
        field_selector: Option<String>,
        /// After listing, print each change as it happens (Ctrl-C to stop).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Create a namespace: `kubelab create namespace NAME`.
    Create {
        /// namespace (ns).
        kind: String,
        name: String,
    },
    /// Set (`KEY=VALUE`) or remove (`KEY-`) a node's or namespace's labels:
    /// `kubelab label node N disk=ssd`, `kubelab label ns NS pod-security.kubernetes.io/enforce=restricted`.
    Label {
        /// node (no) or namespace (ns).
        kind: String,
        name: String,
        #[arg(required = true)]
        changes: Vec<String>,
        /// Allow changing the value of a label the node already has.
        #[arg(long)]
        overwrite: bool,
    },
    /// Add (`KEY=VALUE:EFFECT`) or remove (`KEY:EFFECT-`) a node's taints:
    /// `kubelab taint node N gpu=true:NoSchedule`.
    Taint {
        /// node (no).
        kind: String,
        name: String,
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Mark a node unschedulable: no new pod is placed on it.
    Cordon { node: String },
    /// Make a cordoned node schedulable again.
    Uncordon { node: String },
    /// Cordon a node and delete its pods, waiting until they are stopped.
    Drain {
        node: String,
        /// Delete pods no controller will recreate (in kubelab, every pod).
        #[arg(long)]
        force: bool,
        /// Seconds each pod gets to stop (default: the pod's own).
        #[arg(long)]
        grace_period: Option<i64>,
        /// Give up after this long (kubectl's form: 30s, 2m, 1h30m; a bare number is seconds).
        #[arg(long, default_value = "120s", value_parser = kubelab_proto::duration::parse)]
        timeout: Duration,
    },
    /// Show a pod (with its events as a timeline) or a node (its pods, what they take,
    /// its conditions and events) in detail.
    Describe {
        /// pod (po) or node (no).
        kind: String,
        name: String,
    },
    /// A pod's path through the seven steps (image, push, create, schedule, accept, pull,
    /// start), with times and durations, from what the components recorded.
    Trace {
        /// pod (po).
        kind: String,
        name: String,
    },
    /// Print a container's output.
    Logs {
        name: String,
        #[command(flatten)]
        options: commands::logs::LogsOptions,
    },
    /// Run a command in a running container: `kubelab exec POD [-c C] [-i] -- CMD ARGS...`.
    /// Exits with the command's exit code.
    Exec {
        name: String,
        #[command(flatten)]
        options: commands::exec::ExecOptions,
    },
    /// Delete pods: SIGTERM, the grace period, then SIGKILL. As kubectl takes them:
    /// `delete pod NAME [NAME...]`, `delete pod/NAME`, `delete pods --all`, `delete -f FILE`.
    Delete {
        /// pod (po), or pod/NAME.
        kind: Option<String>,
        names: Vec<String>,
        /// The pods of a manifest (a file, a directory of them, or "-" for standard input).
        #[arg(short = 'f', long = "filename")]
        file: Option<PathBuf>,
        /// Every pod of the namespace.
        #[arg(long)]
        all: bool,
        /// Seconds the containers get between SIGTERM and SIGKILL (default: the pod's own).
        #[arg(long)]
        grace_period: Option<i64>,
        /// With --grace-period=0: remove the pod from the API at once.
        #[arg(long)]
        force: bool,
        /// Wait until the pod is gone.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
    },
    /// Wait until a pod reaches a phase (Running, Succeeded, Failed) or is Ready.
    Wait {
        /// pod (po).
        kind: String,
        name: String,
        /// The phase to wait for.
        #[arg(long = "for")]
        condition: String,
        /// Give up after this long (kubectl's form: 30s, 2m, 1h30m; a bare number is seconds).
        #[arg(long, default_value = "60s", value_parser = kubelab_proto::duration::parse)]
        timeout: Duration,
    },
    /// Work with images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build an image from DIR/Containerfile (or Dockerfile); --push sends it to its registry.
    Build(build::BuildArgs),
    /// Pack a directory as an image (one layer per directory) and push it to a registry.
    Push(image::PushArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    kubelab_proto::credential::init_tls();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let connection = api::Connection {
        kubeconfig: cli
            .kubeconfig
            .clone()
            .unwrap_or_else(|| home.join(".kubelab").join("config")),
        server: cli.server.clone(),
    };
    let (server, ns) = (&connection, cli.namespace.as_str());
    match cli.command {
        Command::Image {
            command: ImageCommand::Build(args),
        } => match build::run(args).await? {
            0 => Ok(()),
            // kubelabd build has printed the error.
            code => std::process::exit(code),
        },
        Command::Image {
            command: ImageCommand::Push(args),
        } => {
            let reference = args.reference.clone();
            let url = image::push(args).await?;
            println!("pushed {reference} ({url})");
            Ok(())
        }
        Command::Apply { file } => commands::apply::run(server, ns, &file).await,
        Command::Get {
            kind,
            name,
            output,
            all_namespaces,
            selector,
            field_selector,
            watch,
        } => {
            let options = commands::get::GetOptions {
                format: output,
                all_namespaces,
                label_selector: selector.unwrap_or_default(),
                field_selector: field_selector.unwrap_or_default(),
                watch,
            };
            // kubectl's `get po/NAME` form.
            let (kind, name) = match (kind.split_once('/'), name) {
                (Some((k, n)), None) => (k.to_string(), Some(n.to_string())),
                (Some(_), Some(_)) => anyhow::bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"
                ),
                (None, name) => (kind, name),
            };
            commands::get::run(server, ns, &kind, name, options).await
        }
        Command::Label {
            kind,
            name,
            changes,
            overwrite,
        } => {
            if commands::namespace::is_namespace_kind(&kind) {
                return commands::namespace::label(server, &name, &changes, overwrite).await;
            }
            commands::check_node_kind(&kind)?;
            commands::node::label(server, &name, &changes, overwrite).await
        }
        Command::Create { kind, name } => {
            if !commands::namespace::is_namespace_kind(&kind) {
                anyhow::bail!("unknown resource type {kind:?}: kubelab creates namespaces (namespace, ns) this way; pods come from `kubelab apply -f`");
            }
            commands::namespace::create(server, &name).await
        }
        Command::Taint {
            kind,
            name,
            changes,
        } => {
            commands::check_node_kind(&kind)?;
            commands::node::taint(server, &name, &changes).await
        }
        Command::Cordon { node } => commands::node::cordon(server, &node, true).await,
        Command::Uncordon { node } => commands::node::cordon(server, &node, false).await,
        Command::Drain {
            node,
            force,
            grace_period,
            timeout,
        } => {
            let options = commands::node::DrainOptions {
                force,
                grace_period,
                timeout,
            };
            commands::node::drain(server, &node, options).await
        }
        Command::Describe { kind, name } => commands::describe::run(server, ns, &kind, &name).await,
        Command::Trace { kind, name } => commands::trace::run(server, ns, &kind, &name).await,
        Command::Logs { name, options } => commands::logs::run(server, ns, &name, options).await,
        Command::Exec { name, options } => {
            let code = commands::exec::run(server, ns, &name, options).await?;
            std::process::exit(code);
        }
        Command::Delete {
            kind,
            names,
            file,
            all,
            grace_period,
            force,
            wait,
        } => {
            let targets = commands::delete::Targets {
                kind,
                names,
                file,
                all,
            };
            commands::delete::run_many(
                server,
                ns,
                targets,
                commands::delete::DeleteOptions {
                    grace_period,
                    force,
                    wait,
                },
            )
            .await
        }
        Command::Wait {
            kind,
            name,
            condition,
            timeout,
        } => commands::wait::run(server, ns, &kind, &name, &condition, timeout).await,
    }
}
