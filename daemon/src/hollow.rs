//! Hollow nodes, like Kubernetes' kubemark: agents that join, register, heartbeat and take
//! pods like real ones, and report them Running without starting anything.
//!
//! For scale tests and benchmarks only (`kubelabd hollow-nodes --count 1000`, or one with
//! `kubelabd agent --hollow`): they load the apiserver and the scheduler as a real cluster
//! would. Nothing here touches containers, images, cgroups or the network; a test of the
//! real path never uses them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kubelab_proto::credential::Credential;
use kubelab_proto::now_ms;
use kubelab_proto::v1::{
    container_state, ContainerState, ContainerStateRunning, ContainerStatus, DeletePodRequest,
    HeartbeatRequest, JoinRequest, ListPodsRequest, Node, NodeResources, NodeSpec, NodeStatus,
    ObjectMeta, Pod, PodCondition, PodStatus, Taint, UpdatePodStatusRequest, WatchEventType,
    WatchRequest,
};

use crate::client::ApiClient;

/// Most watch streams on one connection (the HTTP/2 server allows a few hundred).
const NODES_PER_CONNECTION: usize = 100;
/// Joins and registrations in flight at once while the nodes come up.
const STARTING_AT_ONCE: usize = 32;

#[derive(Debug, clap::Args)]
pub struct HollowNodesArgs {
    /// How many nodes: PREFIX0, PREFIX1, ...
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    #[arg(long, default_value = "hollow-")]
    pub name_prefix: String,
    /// The credential nodes join with, as the apiserver wrote it.
    #[arg(long, default_value = "/var/lib/kubelab/apiserver/bootstrap.conf")]
    pub bootstrap_config: PathBuf,
    #[command(flatten)]
    pub shape: HollowShape,
}

/// What each hollow node says it has.
#[derive(Clone, Debug, clap::Args)]
pub struct HollowShape {
    /// CPU each hollow node offers, in millicores.
    #[arg(long, default_value_t = 4000)]
    pub hollow_cpu_millis: i64,
    /// Memory each hollow node offers, in bytes.
    #[arg(long, default_value_t = 16 << 30)]
    pub hollow_memory_bytes: i64,
    /// Most pods each hollow node takes.
    #[arg(long, default_value_t = 110, value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    pub hollow_max_pods: i64,
    /// How often each hollow node heartbeats.
    #[arg(long, default_value = "10s", value_parser = kubelab_proto::duration::parse)]
    pub hollow_heartbeat: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error(transparent)]
    Credential(#[from] kubelab_proto::credential::CredentialError),
    #[error("node {0} could not join: {1}")]
    Join(String, String),
}

/// One hollow node to run.
#[derive(Clone, Debug)]
pub struct HollowNode {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub taints: Vec<Taint>,
}

/// Starts `count` hollow nodes and runs them until the process is stopped.
pub async fn run_many(args: HollowNodesArgs) -> Result<(), HollowError> {
    let nodes = (0..args.count)
        .map(|i| HollowNode {
            name: format!("{}{i}", args.name_prefix),
            labels: Vec::new(),
            taints: Vec::new(),
        })
        .collect();
    run(&args.bootstrap_config, nodes, args.shape).await
}

/// Joins and registers every node (a few at a time), then keeps them all going.
pub async fn run(
    bootstrap_config: &std::path::Path,
    nodes: Vec<HollowNode>,
    shape: HollowShape,
) -> Result<(), HollowError> {
    let bootstrap = Credential::load(bootstrap_config)?;
    let connections = nodes.len().div_ceil(NODES_PER_CONNECTION).max(1);
    let channels: Vec<_> = (0..connections)
        .map(|_| {
            bootstrap.endpoint().map(|e| {
                e.connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
        })
        .collect::<Result<_, _>>()?;
    let bootstrap_api = ApiClient::over(channels[0].clone(), &bootstrap.token);
    let started = Arc::new(tokio::sync::Semaphore::new(STARTING_AT_ONCE));
    let count = nodes.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let channel = channels[i % connections].clone();
        let (bootstrap_api, started, shape) =
            (bootstrap_api.clone(), started.clone(), shape.clone());
        tasks.spawn(async move {
            let token = {
                let _permit = started.acquire().await;
                let joined = bootstrap_api
                    .nodes
                    .clone()
                    .join(JoinRequest {
                        node_name: node.name.clone(),
                        without_serving_certificate: true,
                    })
                    .await
                    .map_err(|e| HollowError::Join(node.name.clone(), e.message().to_string()))?;
                joined.into_inner().token
            };
            let api = ApiClient::over(channel, &token);
            run_node(api, node, shape, started).await;
            Ok::<(), HollowError>(())
        });
    }
    tracing::info!(count, connections, "hollow nodes starting");
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(e);
        }
    }
    Ok(())
}

/// One hollow node: registers, heartbeats, and answers for its pods, forever.
#[tracing::instrument(skip_all, fields(node = %node.name))]
async fn run_node(
    api: ApiClient,
    node: HollowNode,
    shape: HollowShape,
    started: Arc<tokio::sync::Semaphore>,
) {
    let object = hollow_node_object(&node, &shape);
    {
        let _permit = started.acquire().await;
        let mut backoff = crate::backoff::Backoff::new(crate::backoff::API_FIRST);
        while let Err(e) = api.nodes.clone().register(object.clone()).await {
            tracing::warn!(error = %e.message(), "cannot register yet; retrying");
            backoff.sleep(crate::backoff::API_MAX).await;
        }
    }
    let heartbeat = {
        let (api, name, period) = (api.clone(), node.name.clone(), shape.hollow_heartbeat);
        async move {
            // Spread a thousand nodes' heartbeats over the period rather than all at once.
            let offset = Duration::from_millis(rand_below(period.as_millis() as u64));
            tokio::time::sleep(offset).await;
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                if let Err(e) = api
                    .nodes
                    .clone()
                    .heartbeat(HeartbeatRequest { name: name.clone() })
                    .await
                {
                    tracing::warn!(error = %e.message(), "heartbeat failed");
                }
            }
        }
    };
    let pods = async {
        loop {
            if let Err(e) = sync_pods(&api, &node.name).await {
                tracing::debug!(error = %e.message(), "pod watch lost; relisting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(heartbeat, pods);
}

/// Lists and watches the node's pods; reports new ones Running, finishes deletes at once.
async fn sync_pods(api: &ApiClient, node: &str) -> Result<(), tonic::Status> {
    let list = api
        .pods
        .clone()
        .list(ListPodsRequest {
            node_name: node.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut running = HashSet::new();
    for pod in list.items {
        handle(api, &mut running, pod).await;
    }
    let mut stream = api
        .pods
        .clone()
        .watch(WatchRequest {
            from_revision: list.resource_version,
            node_name: node.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        let event = event?;
        let deleted = event.r#type() == WatchEventType::Deleted;
        let Some(pod) = event.object else { continue };
        if deleted {
            if let Some(m) = &pod.metadata {
                running.remove(&m.uid);
            }
            continue;
        }
        handle(api, &mut running, pod).await;
    }
    Err(tonic::Status::unavailable("watch stream ended"))
}

async fn handle(api: &ApiClient, running: &mut HashSet<String>, pod: Pod) {
    let meta = pod.metadata.clone().unwrap_or_default();
    if meta.deletion_timestamp_ms != 0 {
        // Nothing to stop: finish the delete, as a real agent does once its containers are gone.
        let request = DeletePodRequest {
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            grace_period_seconds: Some(0),
            force: true,
            ..Default::default()
        };
        let _ = api.pods.clone().delete(request).await;
        return;
    }
    if running.contains(&meta.uid) {
        return;
    }
    let request = UpdatePodStatusRequest {
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        status: Some(running_status(&pod)),
        resource_version: 0,
    };
    match api.pods.clone().update_status(request).await {
        Ok(_) => {
            running.insert(meta.uid);
        }
        Err(e) => tracing::debug!(pod = %meta.name, error = %e.message(), "status not written"),
    }
}

/// Every container running and ready since now.
fn running_status(pod: &Pod) -> PodStatus {
    let now = now_ms();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let condition = |t: &str| PodCondition {
        r#type: t.into(),
        status: "True".into(),
        last_transition_time_ms: now,
        ..Default::default()
    };
    PodStatus {
        phase: "Running".into(),
        start_time_ms: now,
        container_statuses: containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                ready: true,
                started: true,
                state: Some(ContainerState {
                    state: Some(container_state::State::Running(ContainerStateRunning {
                        started_at_ms: now,
                    })),
                }),
                ..Default::default()
            })
            .collect(),
        conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
            .map(condition)
            .to_vec(),
        ..Default::default()
    }
}

fn hollow_node_object(node: &HollowNode, shape: &HollowShape) -> Node {
    let resources = NodeResources {
        cpu_millis: shape.hollow_cpu_millis,
        memory_bytes: shape.hollow_memory_bytes,
        pods: shape.hollow_max_pods,
    };
    let mut labels: std::collections::HashMap<String, String> = [
        ("kubernetes.io/hostname".to_string(), node.name.clone()),
        ("kubelab.dev/hollow".to_string(), "true".to_string()),
    ]
    .into();
    labels.extend(node.labels.iter().cloned());
    Node {
        metadata: Some(ObjectMeta {
            name: node.name.clone(),
            labels,
            ..Default::default()
        }),
        spec: Some(NodeSpec {
            taints: node.taints.clone(),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources),
            allocatable: Some(resources),
            os_image: "hollow (no containers)".into(),
            ..Default::default()
        }),
    }
}

/// A number below `n` (0 for 0), from the clock: spreading heartbeats needs no better.
fn rand_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n
}
