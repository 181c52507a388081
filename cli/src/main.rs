//! `kubelab`: the command-line client, with kubectl's verbs and output shapes.
//!
//! Layout: `manifest` (Pod YAML → API objects), `output` (tables, describe, `-o json|yaml`
//! in Kubernetes' shape), `image` (`image push`). This file holds the commands; each talks
//! to the apiserver only, never to agents or the store.

mod image;
mod manifest;
mod output;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use kubelab_proto::v1::events_client::EventsClient;
use kubelab_proto::v1::nodes_client::NodesClient;
use kubelab_proto::v1::pods_client::PodsClient;
use kubelab_proto::v1::{
    self as api, DeletePodRequest, ListEventsRequest, ListNodesRequest, ListPodsRequest,
    LogsRequest, ObjectKey, WatchEventType, WatchRequest,
};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "kubelab",
    version,
    about = "kubelab's command-line client (kubectl's verbs, smaller)"
)]
struct Cli {
    /// The apiserver's address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:6443",
        env = "KUBELAB_SERVER"
    )]
    server: String,
    /// The namespace to act in.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Subcommand)]
enum Command {
    /// Create the pods in a Kubernetes Pod manifest (YAML).
    Apply {
        /// The manifest file ("-" for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// List pods or nodes, or show one.
    Get {
        /// pods (po) or nodes (no).
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<OutputFormat>,
        /// Pods of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show a pod in detail, with its events as a timeline.
    Describe {
        /// pod (po).
        kind: String,
        name: String,
    },
    /// Print a container's output.
    Logs {
        name: String,
        /// The container (needed when the pod has several).
        #[arg(short = 'c', long)]
        container: Option<String>,
    },
    /// Delete a pod: SIGTERM, the grace period, then SIGKILL.
    Delete {
        /// pod (po).
        kind: String,
        name: String,
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
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Work with images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pack a directory as an image (one layer per directory) and push it to a registry.
    Push {
        /// The root filesystem to pack (the bottom layer).
        dir: PathBuf,
        /// Where to push it, e.g. 127.0.0.1:5000/busybox:1.
        reference: String,
        /// More directories, each one layer on top (in order).
        #[arg(long = "layer")]
        layers: Vec<PathBuf>,
        /// The image's Entrypoint (repeat for each word).
        #[arg(long)]
        entrypoint: Vec<String>,
        /// The image's Cmd (repeat for each word).
        #[arg(long)]
        cmd: Vec<String>,
        /// NAME=VALUE for the image's environment.
        #[arg(long)]
        env: Vec<String>,
        /// The image's working directory.
        #[arg(long)]
        workdir: Option<String>,
        /// A registry (HOST:PORT) to speak plain HTTP to. Loopback registries always are.
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
        /// Manifest format: oci, or docker (Docker's schema 2).
        #[arg(long, value_enum, default_value = "oci")]
        format: image::ImageFormat,
    },
}

struct Api {
    server: String,
    pods: PodsClient<Channel>,
    nodes: NodesClient<Channel>,
    events: EventsClient<Channel>,
}

impl Api {
    async fn connect(server: &str) -> anyhow::Result<Api> {
        let url = if server.contains("://") {
            server.to_string()
        } else {
            format!("http://{server}")
        };
        let channel = tonic::transport::Endpoint::from_shared(url)
            .with_context(|| format!("invalid --server {server:?} (expected HOST:PORT)"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot reach the apiserver at {server}: is the lab running? Start it with `make demo` or `kubelabd up`, or point --server (KUBELAB_SERVER) at it"
                )
            })?;
        Ok(Api {
            server: server.to_string(),
            pods: PodsClient::new(channel.clone()),
            nodes: NodesClient::new(channel.clone()),
            events: EventsClient::new(channel),
        })
    }
}

/// A gRPC error as one line: the server's own message, or what to do when it is unreachable.
fn status_error(server: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    move |s| match s.code() {
        tonic::Code::Unavailable if s.message().contains("agent") => {
            anyhow::anyhow!("{}", s.message())
        }
        tonic::Code::Unavailable => anyhow::anyhow!(
            "the apiserver at {server} stopped answering: {}",
            s.message()
        ),
        _ => anyhow::anyhow!("{}", s.message()),
    }
}

fn is_pod_kind(kind: &str) -> bool {
    matches!(kind, "pod" | "pods" | "po")
}

fn check_pod_kind(kind: &str) -> anyhow::Result<()> {
    if !is_pod_kind(kind) {
        bail!("unknown resource type {kind:?}: this command works on pods (pod, pods, po)");
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ns = cli.namespace.clone();
    match cli.command {
        Command::Image {
            command:
                ImageCommand::Push {
                    dir,
                    reference,
                    layers,
                    entrypoint,
                    cmd,
                    env,
                    workdir,
                    insecure_registries,
                    format,
                },
        } => {
            let mut all = vec![dir];
            all.extend(layers);
            let url = image::push(image::PushOptions {
                layers: all,
                reference: reference.clone(),
                entrypoint,
                cmd,
                env,
                workdir,
                insecure_registries,
                format,
            })
            .await?;
            println!("pushed {reference} ({url})");
            Ok(())
        }
        Command::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the manifest from standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let (pods, warnings) =
                manifest::parse_pods(&text).with_context(|| format!("{}", file.display()))?;
            for w in warnings {
                eprintln!("warning: {w} is not supported by kubelab yet and is ignored");
            }
            let mut api = Api::connect(&cli.server).await?;
            for mut pod in pods {
                let meta = pod.metadata.get_or_insert_with(Default::default);
                if meta.namespace.is_empty() {
                    meta.namespace = ns.clone();
                }
                let name = meta.name.clone();
                match api.pods.create(pod.clone()).await {
                    Ok(_) => println!("pod/{name} created"),
                    Err(s) if s.code() == tonic::Code::AlreadyExists => {
                        let existing = api
                            .pods
                            .get(ObjectKey {
                                namespace: meta_ns(&pod),
                                name: name.clone(),
                            })
                            .await
                            .map_err(status_error(&api.server))?
                            .into_inner();
                        let mut wanted = pod.spec.clone().unwrap_or_default();
                        let mut current = existing.spec.clone().unwrap_or_default();
                        // Compare what the user wrote, not what the API filled in.
                        current.node_name.clear();
                        wanted.node_name.clear();
                        for (w, c) in wanted.containers.iter_mut().zip(&current.containers) {
                            if w.image_pull_policy.is_empty() {
                                w.image_pull_policy = c.image_pull_policy.clone();
                            }
                        }
                        if wanted.restart_policy.is_empty() {
                            wanted.restart_policy = current.restart_policy.clone();
                        }
                        if wanted == current {
                            println!("pod/{name} unchanged");
                        } else {
                            bail!("pod {name:?} already exists with a different spec; a pod's spec cannot be changed: delete it first (kubelab delete pod {name})");
                        }
                    }
                    Err(s) => return Err(status_error(&api.server)(s)),
                }
            }
            Ok(())
        }
        Command::Get {
            kind,
            name,
            output,
            all_namespaces,
        } => {
            let mut api = Api::connect(&cli.server).await?;
            let err = status_error(&cli.server);
            match kind.as_str() {
                k if is_pod_kind(k) => {
                    let pods = match &name {
                        Some(n) => vec![api
                            .pods
                            .get(ObjectKey {
                                namespace: ns.clone(),
                                name: n.clone(),
                            })
                            .await
                            .map_err(&err)?
                            .into_inner()],
                        None => {
                            let namespace = if all_namespaces {
                                String::new()
                            } else {
                                ns.clone()
                            };
                            api.pods
                                .list(ListPodsRequest {
                                    namespace,
                                    node_name: String::new(),
                                })
                                .await
                                .map_err(&err)?
                                .into_inner()
                                .items
                        }
                    };
                    let k8s: Vec<_> = pods.iter().map(output::to_k8s_pod).collect();
                    print_objects(
                        output,
                        name.is_some(),
                        &k8s,
                        || {
                            if pods.is_empty() {
                                eprintln!(
                                    "No resources found in {} namespace.",
                                    if all_namespaces { "any" } else { &ns }
                                );
                            } else {
                                output::table(&output::pod_rows(
                                    &pods,
                                    output == Some(OutputFormat::Wide),
                                    all_namespaces,
                                ));
                            }
                        },
                        |p| format!("pod/{}", p.metadata.name.clone().unwrap_or_default()),
                    )
                }
                "node" | "nodes" | "no" => {
                    let nodes = match &name {
                        Some(n) => vec![api
                            .nodes
                            .get(ObjectKey {
                                namespace: String::new(),
                                name: n.clone(),
                            })
                            .await
                            .map_err(&err)?
                            .into_inner()],
                        None => {
                            api.nodes
                                .list(ListNodesRequest {})
                                .await
                                .map_err(&err)?
                                .into_inner()
                                .items
                        }
                    };
                    let k8s: Vec<_> = nodes.iter().map(output::to_k8s_node).collect();
                    print_objects(
                        output,
                        name.is_some(),
                        &k8s,
                        || {
                            if nodes.is_empty() {
                                eprintln!("No nodes registered (start an agent: kubelabd agent --node-name NAME).");
                            } else {
                                output::table(&output::node_rows(
                                    &nodes,
                                    output == Some(OutputFormat::Wide),
                                ));
                            }
                        },
                        |n| format!("node/{}", n.metadata.name.clone().unwrap_or_default()),
                    )
                }
                other => {
                    bail!("unknown resource type {other:?}: kubelab knows pods (po) and nodes (no)")
                }
            }
        }
        Command::Describe { kind, name } => {
            check_pod_kind(&kind)?;
            let mut api = Api::connect(&cli.server).await?;
            let err = status_error(&cli.server);
            let pod = api
                .pods
                .get(ObjectKey {
                    namespace: ns,
                    name,
                })
                .await
                .map_err(&err)?
                .into_inner();
            let uid = pod
                .metadata
                .as_ref()
                .map(|m| m.uid.clone())
                .unwrap_or_default();
            let namespace = pod
                .metadata
                .as_ref()
                .map(|m| m.namespace.clone())
                .unwrap_or_default();
            let events = api
                .events
                .list(ListEventsRequest {
                    namespace,
                    involved_uid: uid,
                })
                .await
                .map_err(&err)?
                .into_inner()
                .items;
            print!("{}", output::describe_pod(&pod, &events));
            Ok(())
        }
        Command::Logs { name, container } => {
            let mut api = Api::connect(&cli.server).await?;
            let request = LogsRequest {
                namespace: ns,
                name,
                container: container.unwrap_or_default(),
                follow: false,
            };
            let mut stream = api
                .pods
                .logs(request)
                .await
                .map_err(status_error(&cli.server))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(status_error(&cli.server))?;
                std::io::Write::write_all(&mut out, &chunk.data)?;
            }
            Ok(())
        }
        Command::Delete {
            kind,
            name,
            grace_period,
            force,
            wait,
        } => {
            check_pod_kind(&kind)?;
            if force && grace_period != Some(0) {
                bail!("--force needs --grace-period=0 (it removes the pod without waiting for its containers to stop)");
            }
            let mut api = Api::connect(&cli.server).await?;
            let err = status_error(&cli.server);
            let pod = api
                .pods
                .delete(DeletePodRequest {
                    namespace: ns.clone(),
                    name: name.clone(),
                    grace_period_seconds: grace_period,
                    force,
                    uid: String::new(),
                })
                .await
                .map_err(&err)?
                .into_inner();
            if wait {
                wait_until_gone(&mut api, &pod).await?;
            }
            println!("pod \"{name}\" deleted");
            Ok(())
        }
        Command::Wait {
            kind,
            name,
            condition,
            timeout,
        } => {
            check_pod_kind(&kind)?;
            let mut api = Api::connect(&cli.server).await?;
            let wanted = condition
                .strip_prefix("phase=")
                .unwrap_or(&condition)
                .to_string();
            if !["Running", "Succeeded", "Failed", "Ready"].contains(&wanted.as_str()) {
                bail!("--for {condition:?}: wait for Running, Succeeded, Failed or Ready");
            }
            let deadline = Duration::from_secs(timeout);
            tokio::time::timeout(deadline, wait_for(&mut api, &ns, &name, &wanted))
                .await
                .map_err(|_| anyhow::anyhow!("timed out after {timeout}s waiting for pod {name:?} to be {wanted} (see: kubelab describe pod {name})"))?
        }
    }
}

fn meta_ns(pod: &api::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.namespace.clone())
        .unwrap_or_default()
}

fn print_objects<T: serde::Serialize>(
    output: Option<OutputFormat>,
    single: bool,
    items: &[T],
    table: impl FnOnce(),
    name: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    // One object prints as itself; several print as a Kubernetes List, as kubectl does.
    let value = if single {
        serde_json::to_value(&items[0])?
    } else {
        serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
    };
    match output {
        Some(OutputFormat::Json) => println!("{}", serde_json::to_string_pretty(&value)?),
        Some(OutputFormat::Yaml) => print!("{}", serde_yaml::to_string(&value)?),
        Some(OutputFormat::Name) => items.iter().for_each(|i| println!("{}", name(i))),
        _ => table(),
    }
    Ok(())
}

/// Waits, through a watch, for the pod to reach a phase; fails early when it cannot.
async fn wait_for(api: &mut Api, ns: &str, name: &str, wanted: &str) -> anyhow::Result<()> {
    let err = status_error(&api.server);
    let pod = api
        .pods
        .get(ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        })
        .await
        .map_err(&err)?
        .into_inner();
    let from = pod
        .metadata
        .as_ref()
        .map(|m| m.resource_version)
        .unwrap_or(0);
    let mut stream = api
        .pods
        .watch(WatchRequest {
            from_revision: from,
            namespace: ns.into(),
            node_name: String::new(),
        })
        .await
        .map_err(&err)?
        .into_inner();
    let mut current = Some(pod);
    loop {
        if let Some(pod) = &current {
            let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
            let ready = pod.status.as_ref().is_some_and(|s| {
                !s.container_statuses.is_empty() && s.container_statuses.iter().all(|c| c.ready)
            });
            if phase == wanted || (wanted == "Ready" && ready) {
                println!("pod/{name} condition met ({wanted})");
                return Ok(());
            }
            if (phase == "Succeeded" || phase == "Failed") && wanted != phase {
                bail!(
                    "pod {name:?} ended {phase} ({}); it will not become {wanted}",
                    output::pod_status_text(pod)
                );
            }
        }
        match stream.next().await {
            Some(event) => {
                let event = event.map_err(&err)?;
                let Some(pod) = event.object.clone() else {
                    continue;
                };
                if pod.metadata.as_ref().map(|m| m.name.as_str()) != Some(name) {
                    continue;
                }
                if event.r#type() == WatchEventType::Deleted {
                    bail!("pod {name:?} was deleted");
                }
                current = Some(pod);
            }
            None => bail!("the apiserver closed the watch"),
        }
    }
}

async fn wait_until_gone(api: &mut Api, pod: &api::Pod) -> anyhow::Result<()> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let err = status_error(&api.server);
    let request = WatchRequest {
        from_revision: meta.resource_version,
        namespace: meta.namespace.clone(),
        node_name: String::new(),
    };
    let mut stream = api.pods.watch(request).await.map_err(&err)?.into_inner();
    // The delete may have removed it at once (an unbound pod): check before waiting.
    match api
        .pods
        .get(ObjectKey {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        })
        .await
    {
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
        Ok(p) if p.get_ref().metadata.as_ref().map(|m| &m.uid) != Some(&meta.uid) => return Ok(()),
        _ => {}
    }
    while let Some(event) = stream.next().await {
        let event = event.map_err(&err)?;
        if event.r#type() == WatchEventType::Deleted
            && event
                .object
                .as_ref()
                .and_then(|p| p.metadata.as_ref())
                .is_some_and(|m| m.uid == meta.uid)
        {
            return Ok(());
        }
    }
    bail!(
        "the apiserver closed the watch before pod {:?} was gone",
        meta.name
    )
}
