//! The agent: kubelab's kubelet, one per node.
//!
//! It registers its node and heartbeats, serves its pods' logs, and watches the pods bound
//! to its node. Each pod gets a worker (`pod_workers` dispatches, `pod_worker` acts,
//! `pod_status` holds Kubernetes' phase rules) that drives the node through one seam,
//! `pod_runtime::PodRuntime` (really: `container::image::ImageManager` for images,
//! `runtime::RuntimeService` for containers through shims, `network` for CNI; a fake in
//! the workers' unit tests), and reports status (`status_manager::StatusManager`) and
//! events. Beside them: `dns_config` (each pod's resolv.conf), `service_links`, `proxy`
//! (kube-proxy's part), `separate_host` (a node with a network of its own, host-gw
//! routes), `args` (the flags). It writes only pod status, events, and its own Node; it
//! never binds or creates pods.
//!
//! Stopping the agent (SIGTERM or Ctrl-C) stops its pods' containers and removes their
//! files: a lab that is shut down leaves nothing running. A `kill -9` leaves them running
//! (their shims live on); the agent started again re-adopts them, and removes what it
//! finds of pods deleted meanwhile.

mod args;
pub mod dns_config;
mod expansion;
mod logs;
mod network;
mod pod_runtime;
mod pod_status;
mod pod_worker;
mod pod_workers;
mod prober;
pub mod proxy;
pub mod reset;
pub mod runtime;
pub mod separate_host;
mod server;
pub mod service_links;
mod status_manager;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubelab_proto::v1::agent_server::AgentServer;
use kubelab_proto::v1::{
    HeartbeatRequest, ListPodsRequest, Node, NodeResources, NodeSpec, NodeStatus, ObjectMeta,
    WatchEventType, WatchRequest,
};

use crate::backoff::{self, Backoff};
use crate::client::{ApiClient, EventRecorder};
use crate::container::image::{self, ImageManager};
use kubelab_proto::credential::Credential;
use pod_runtime::{NodeRuntime, PodRuntime};
use pod_workers::PodWorkers;
use runtime::RuntimeService;
use status_manager::StatusManager;

pub use args::{parse_label, parse_taint, AgentArgs};

/// The agent's settings that pod workers read.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    pub pod_pids_limit: i64,
    pub dns: dns_config::DnsSettings,
}

/// Everything a pod worker needs, shared by all of them.
pub struct Kubelet {
    pub api: ApiClient,
    pub events: EventRecorder,
    /// What pod workers drive: images, sandboxes, networks, containers (a fake in the
    /// workers' unit tests). The fields below it are the agent's own (orphans, its node's
    /// network, exec probes).
    pub node: Arc<dyn PodRuntime>,
    pub runtime: Arc<RuntimeService>,
    pub status: StatusManager,
    pub config: KubeletConfig,
    pub network: Arc<network::NetworkManager>,
    /// The Services' variables for containers (`WEB_SERVICE_HOST` …).
    pub service_links: service_links::ServiceLinks,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("credentials: {0}")]
    Credential(#[from] kubelab_proto::credential::CredentialError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("another agent is using {0} (a node is run by one agent at a time; stop the other one, or give this one its own --root-dir and --node-name)")]
    RootDirInUse(PathBuf),
    #[error("an agent is still running on {0}{pids}: stop it first (make down, Ctrl-C on kubelabd up, or kill the pid), then run kubelabd reset again", pids = pid_list(.1))]
    StillRunning(PathBuf, Vec<i32>),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("cannot serve on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("the agent's server (logs, exec): {0}")]
    Serve(String),
    #[error("the node's own network: {0}")]
    SeparateHost(#[from] separate_host::SeparateHostError),
}

pub async fn run(args: AgentArgs, shutdown: crate::Shutdown) -> Result<(), AgentError> {
    let root = args
        .root_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/kubelab/agents").join(&args.node_name));
    let _lock = lock_root_dir(&root)?;
    let credential = node_credential(&args, &root).await?;
    let api = ApiClient::new(&credential)?;
    let separate = match &args.separate_host {
        Some(bridge) => Some(separate_host::attach(&args.node_name, bridge, args.node_ip).await?),
        None => None,
    };
    let runtime = Arc::new(
        RuntimeService::new(
            root.clone(),
            args.node_name.clone(),
            args.container_log_max_bytes,
        )?
        .with_node_netns(
            separate
                .as_ref()
                .map(separate_host::SeparateHost::netns_path),
        ),
    );
    // Pods a previous run left: re-adopted by their workers, or removed once the first
    // list shows they are gone from the API.
    let mut left_behind = runtime.pods_on_disk();
    if !left_behind.is_empty() {
        tracing::info!(
            pods = left_behind.len(),
            "found pods of a previous run of this agent"
        );
    }
    let network_settings = network::NetworkSettings {
        bin_dirs: args.cni_bin_dirs.clone(),
        conf_file: args.cni_conf.clone(),
        bridge: args
            .cni_bridge
            .clone()
            .unwrap_or_else(|| default_bridge(&root, &args.node_name)),
        cluster_cidr: args.cluster_cidr.clone(),
        ipam_dir: root.join("cni").join("networks"),
        netns: separate
            .as_ref()
            .map(separate_host::SeparateHost::netns_path),
    };
    let network = network::NetworkManager::new(network_settings.clone());
    let network = Arc::new(network);
    let images = Arc::new(ImageManager::new(
        root.join("images"),
        args.insecure_registries.clone(),
        args.max_layer_bytes,
    )?);
    let kubelet = Arc::new(Kubelet {
        node: Arc::new(NodeRuntime {
            images: images.clone(),
            runtime: runtime.clone(),
            network: network.clone(),
        }),
        network,
        config: KubeletConfig {
            backoff_initial: args.backoff_initial,
            backoff_max: args.backoff_max,
            backoff_reset: args.backoff_reset,
            pod_pids_limit: args.pod_pids_limit,
            dns: dns_config::DnsSettings::from_args(&args.dns),
        },
        events: EventRecorder::start(api.clone(), &args.node_name),
        status: StatusManager::start(api.clone()),
        runtime: runtime.clone(),
        service_links: service_links::ServiceLinks::follow(&credential)
            .map_err(|e| AgentError::Join(format!("following the Services: {e}")))?,
        api: api.clone(),
    });

    tokio::spawn(async move { images.warm_up().await });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| AgentError::Listen(args.listen, e))?;
    let endpoint = listener
        .local_addr()
        .map_err(|e| AgentError::Listen(args.listen, e))?;
    // TLS with the certificate the apiserver issued for this node's name: the apiserver
    // checks it, and only it knows this agent's peer token.
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&credential.serving_cert, &credential.serving_key),
    );
    let agent_server = tonic::transport::Server::builder()
        .tls_config(tls)
        .map_err(|e| AgentError::Serve(e.to_string()))?
        .add_service(AgentServer::new(server::AgentService {
            runtime: runtime.clone(),
            peer_token: credential.peer_token.clone(),
        }))
        .serve_with_incoming(crate::net::incoming(listener));
    let mut agent_server = tokio::spawn(agent_server);

    let mut node = node_object(&args.node_name, &endpoint.to_string(), args.max_pods);
    if let (Some(status), Some(ip)) = (node.status.as_mut(), args.node_ip) {
        status.internal_ip = ip.to_string();
    }
    node.metadata
        .get_or_insert_with(Default::default)
        .labels
        .extend(args.node_labels.clone());
    node.spec.get_or_insert_with(Default::default).taints = args.register_with_taints.clone();
    let registered = register(&api, node.clone()).await;
    let pod_cidr = pod_cidr_of(&registered);
    kubelet.network.set_pod_cidr(&pod_cidr);
    // Before anything goes on the host beyond the root: what `kubelabd reset` removes.
    reset::write_host_record(
        &root,
        &reset::HostRecord {
            node_name: args.node_name.clone(),
            network: network_settings,
            pod_cidr: pod_cidr.clone(),
            separate_host: separate.clone(),
        },
    )?;
    if let Err(e) = kubelet.network.ensure_masquerade().await {
        tracing::warn!(error = %e, "pods' traffic to outside the cluster will not be masqueraded");
    }
    tokio::spawn(heartbeat(
        api.clone(),
        node,
        kubelet.clone(),
        args.heartbeat_period,
    ));
    let netns = separate
        .as_ref()
        .map(separate_host::SeparateHost::netns_path);
    let routes = separate_host::Routes::default();
    let route_keeper = args.node_ip.map(|ip| {
        let keep = separate_host::keep_routes(
            credential.clone(),
            args.node_name.clone(),
            ip,
            separate.clone(),
            pod_cidr.clone(),
            routes.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = keep.await {
                tracing::error!(error = %e, "routes to the other nodes' pods are no longer kept");
            }
        })
    });
    let proxy = (args.proxy_mode == proxy::ProxyMode::Iptables).then(|| {
        let (credential, cidr) = (credential.clone(), args.cluster_cidr.clone());
        let netns = netns.clone();
        tokio::spawn(async move {
            if let Err(e) = proxy::run(credential, cidr, netns).await {
                tracing::error!(error = %e, "the service proxy stopped: Services are not routed on this node");
            }
        })
    });

    let workers = PodWorkers::new(kubelet.clone());
    let outcome = tokio::select! {
        _ = sync_loop(&api, &args.node_name, &workers, &kubelet, &mut left_behind) => Ok(()),
        _ = shutdown => {
            tracing::info!("agent stopping: stopping its pods");
            Ok(())
        }
        // The agent's own server (logs, exec) stopping is a failure to say, not to hide:
        // the pods go on, but `kubelab logs` would fail with no reason given.
        ended = &mut agent_server => {
            let why = match ended {
                Ok(Err(e)) => e.to_string(),
                other => crate::supervise::task_end(other),
            };
            tracing::error!(reason = %why, "the agent's server stopped: stopping the agent");
            Err(AgentError::Serve(why))
        }
    };
    workers.shutdown().await;
    if let Some(proxy) = proxy {
        proxy.abort();
        for removed in proxy::clean_up(netns.as_deref()).await {
            tracing::info!(%removed, "service rules removed");
        }
    }
    kubelet.network.clean_up_node().await;
    if let Some(keeper) = route_keeper {
        keeper.abort();
    }
    let removed = match &separate {
        Some(host) => separate_host::detach(host, &pod_cidr).await,
        None => separate_host::remove_routes(&routes).await,
    };
    for removed in removed {
        tracing::info!(%removed, "removed from the host");
    }
    runtime.remove_node_cgroups();
    outcome
}

/// Takes `<root>/agent.lock` for as long as the agent runs: two agents sharing a root
/// directory would start every container twice.
fn lock_root_dir(root: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>, AgentError> {
    std::fs::create_dir_all(root).map_err(|e| AgentError::Io(root.into(), e))?;
    let path = root.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AgentError::Io(path.clone(), e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| AgentError::RootDirInUse(root.into()))
}

/// Lists the pods bound to this node, then follows the watch; relists when the watch breaks.
async fn sync_loop(
    api: &ApiClient,
    node_name: &str,
    workers: &PodWorkers,
    kubelet: &Kubelet,
    left_behind: &mut Vec<String>,
) {
    loop {
        if let Err(e) = list_and_watch(api, node_name, workers, kubelet, left_behind).await {
            tracing::warn!(error = %e.message(), "pod watch lost; relisting in 1s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn list_and_watch(
    api: &ApiClient,
    node_name: &str,
    workers: &PodWorkers,
    kubelet: &Kubelet,
    left_behind: &mut Vec<String>,
) -> Result<(), tonic::Status> {
    let list = api
        .pods
        .clone()
        .list(ListPodsRequest {
            label_selector: String::new(),
            namespace: String::new(),
            node_name: node_name.into(),
        })
        .await?
        .into_inner();
    let present: HashSet<String> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.as_ref().map(|m| m.uid.clone()))
        .collect();
    workers.remove_missing(&present);
    for uid in std::mem::take(left_behind) {
        if !present.contains(&uid) {
            let record = kubelet.runtime.network_record(&uid);
            if let Err(e) = kubelet.network.teardown(&record).await {
                tracing::warn!(%uid, error = %e, "could not detach an orphaned pod's network");
            }
            let runtime = kubelet.runtime.clone();
            let stopped = {
                let uid = uid.clone();
                crate::blocking::off_thread(move || runtime.remove_orphan(&uid)).await
            };
            tracing::info!(%uid, stopped, "removed a pod deleted while the agent was away");
        }
    }
    for pod in list.items {
        workers.update_pod(pod);
    }
    let request = WatchRequest {
        from_revision: list.resource_version,
        node_name: node_name.into(),
        ..Default::default()
    };
    let mut stream = api.pods.clone().watch(request).await?.into_inner();
    tracing::info!(
        revision = list.resource_version,
        "watching pods bound to this node"
    );
    while let Some(event) = stream.next().await {
        let event = event?;
        let Some(pod) = event.object.clone() else {
            continue;
        };
        match event.r#type() {
            WatchEventType::Deleted => {
                kubelet.status.forget(&pod_workers::uid_of(&pod));
                workers.remove_pod(&pod)
            }
            _ => {
                kubelet.status.reconcile(&pod);
                workers.update_pod(pod)
            }
        }
    }
    Err(tonic::Status::unavailable("watch stream ended"))
}

/// This node's credential: the one it got when it joined (`<root>/node.conf`), or, the
/// first time, a new one the apiserver issues for the bootstrap credential (retrying until
/// the apiserver answers).
async fn node_credential(
    args: &AgentArgs,
    root: &std::path::Path,
) -> Result<Credential, AgentError> {
    let path = root.join("node.conf");
    match Credential::load(&path) {
        Ok(credential) if !credential.serving_cert.is_empty() => return Ok(credential),
        // Joined before agents had their own serving certificates: join again.
        Ok(_) => tracing::info!("the node credential has no serving certificate: joining again"),
        Err(_) => {}
    }
    let bootstrap = Credential::load(&args.bootstrap_config)?;
    let mut nodes = kubelab_proto::v1::nodes_client::NodesClient::new(bootstrap.channel()?);
    let mut backoff = Backoff::new(backoff::API_FIRST);
    let joined = loop {
        let request = kubelab_proto::v1::JoinRequest {
            node_name: args.node_name.clone(),
            without_serving_certificate: false,
        };
        match nodes.join(request).await {
            Ok(joined) => break joined.into_inner(),
            Err(e) if e.code() == tonic::Code::Unavailable => {
                tracing::warn!(error = %e.message(), "cannot join the cluster yet; retrying");
                backoff.sleep(backoff::API_MAX).await;
            }
            Err(e) => {
                return Err(AgentError::Join(e.message().to_string()));
            }
        }
    };
    let credential = Credential {
        token: joined.token,
        peer_token: joined.peer_token,
        serving_cert: joined.serving_cert,
        serving_key: joined.serving_key,
        ..bootstrap
    };
    credential.save(&path)?;
    tracing::info!("joined the cluster: node credential saved");
    Ok(credential)
}

/// Registers the node (retrying until the apiserver answers); returns it as stored.
async fn register(api: &ApiClient, node: Node) -> Node {
    let mut backoff = Backoff::new(backoff::API_FIRST);
    loop {
        match api.nodes.clone().register(node.clone()).await {
            Ok(registered) => {
                let registered = registered.into_inner();
                tracing::info!(pod_cidr = %pod_cidr_of(&registered), "node registered");
                return registered;
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "cannot register the node yet; retrying");
                backoff.sleep(backoff::API_MAX).await;
            }
        }
    }
}

/// ` (pid 12, 13)`, or nothing when no pid is known.
fn pid_list(pids: &[i32]) -> String {
    if pids.is_empty() {
        return String::new();
    }
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    format!(" (pid {})", pids.join(", "))
}

fn pod_cidr_of(node: &Node) -> String {
    node.spec
        .as_ref()
        .map(|s| s.pod_cidr.clone())
        .unwrap_or_default()
}

/// `kl-` and 12 hex digits of a hash of the agent's root directory and node name: a valid
/// interface name (at most 15 bytes) that differs between the agents of one host, even
/// between two labs with the same node names.
fn default_bridge(root: &std::path::Path, node_name: &str) -> String {
    use sha2::Digest;
    let id = format!("{}\0{node_name}", root.display());
    let hash = sha2::Sha256::digest(id.as_bytes());
    format!("kl-{}", &hex::encode(hash)[..12])
}

async fn heartbeat(api: ApiClient, node: Node, kubelet: Arc<Kubelet>, period: Duration) {
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match api
            .nodes
            .clone()
            .heartbeat(HeartbeatRequest { name: name.clone() })
            .await
        {
            Ok(_) => {}
            // The apiserver lost our node (a fresh data dir): register again.
            Err(e) if e.code() == tonic::Code::NotFound => {
                let registered = register(&api, node.clone()).await;
                kubelet.network.set_pod_cidr(&pod_cidr_of(&registered));
            }
            Err(e) => tracing::warn!(error = %e.message(), "heartbeat failed"),
        }
    }
}

/// This node as the API sees it: capacity read from the host.
pub fn node_object(name: &str, endpoint: &str, max_pods: i64) -> Node {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as i64)
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let capacity = NodeResources {
        cpu_millis: cpus * 1000,
        memory_bytes: memory,
        pods: max_pods,
    };
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default();
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: [
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ]
            .into(),
            ..Default::default()
        }),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(capacity),
            agent_endpoint: endpoint.into(),
            kernel_version: kernel,
            os_image,
            ..Default::default()
        }),
    }
}
