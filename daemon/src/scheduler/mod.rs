//! The scheduler: gives each unbound pod a node.
//!
//! It lists and watches pods and nodes, keeps the pods that have no node in a queue,
//! filters the nodes that could run each one (`filter`), picks the best (`score`), and
//! binds the pod through the API. It records `Scheduled` or `FailedScheduling` events.
//! The scheduler never talks to agents: the agent of the chosen node learns of the pod
//! from its own watch.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kubelab_proto::v1::{
    BindRequest, ListNodesRequest, ListPodsRequest, Node, Pod, WatchEventType, WatchRequest,
};
use kubelab_proto::{node_is_ready, now_ms};

use crate::client::{ApiClient, EventRecorder};

/// Pods that could not be placed are tried again this often even when nothing changed:
/// a node can turn NotReady by staying silent, which no watch event announces.
const RETRY_PERIOD: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("apiserver call failed: {0}")]
    Api(#[from] tonic::Status),
}

/// What the scheduler knows of the cluster, rebuilt from a list and kept current by watches.
#[derive(Default)]
struct ClusterCache {
    nodes: HashMap<String, Node>,
    pods: HashMap<String, Pod>,
    /// The last FailedScheduling message per pod uid, so that a pod that stays
    /// unschedulable gets one event per distinct reason, not one per retry.
    last_failure: HashMap<String, String>,
}

enum Update {
    // Boxed: pods and nodes are much larger than a tick.
    Pod(WatchEventType, Box<Pod>),
    Node(WatchEventType, Box<Node>),
    Tick,
}

pub async fn run(client: ApiClient) -> Result<(), SchedulerError> {
    let events = EventRecorder::start(client.clone(), "scheduler");
    loop {
        match run_once(&client, &events).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                // Usually the apiserver restarting, or an expired watch: relist and go on.
                tracing::warn!(error = %e, "scheduler lost its watch; relisting in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run_once(client: &ApiClient, events: &EventRecorder) -> Result<(), SchedulerError> {
    let mut cache = ClusterCache::default();
    let nodes = client
        .nodes
        .clone()
        .list(ListNodesRequest {})
        .await?
        .into_inner();
    let pods = client
        .pods
        .clone()
        .list(ListPodsRequest::default())
        .await?
        .into_inner();
    for node in nodes.items {
        cache.nodes.insert(name_of(&node.metadata), node);
    }
    for pod in pods.items {
        cache.pods.insert(pod_key(&pod), pod);
    }
    let node_watch = client
        .nodes
        .clone()
        .watch(WatchRequest {
            from_revision: nodes.resource_version,
            ..Default::default()
        })
        .await?
        .into_inner()
        .map(|e| e.map(|e| Update::Node(e.r#type(), Box::new(e.object.unwrap_or_default()))));
    let pod_watch = client
        .pods
        .clone()
        .watch(WatchRequest {
            from_revision: pods.resource_version,
            ..Default::default()
        })
        .await?
        .into_inner()
        .map(|e| e.map(|e| Update::Pod(e.r#type(), Box::new(e.object.unwrap_or_default()))));
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(RETRY_PERIOD))
        .map(|_| Ok(Update::Tick));
    let mut updates =
        futures::stream::select(futures::stream::select(node_watch, pod_watch), ticks);
    tracing::info!(
        nodes = cache.nodes.len(),
        pods = cache.pods.len(),
        "scheduler watching"
    );
    schedule_pending(client, events, &mut cache).await;
    while let Some(update) = updates.next().await {
        apply(&mut cache, update?);
        // Take everything already queued before scheduling, so a burst is handled in one pass.
        while let Some(Some(update)) = updates.next().now_or_never() {
            apply(&mut cache, update?);
        }
        schedule_pending(client, events, &mut cache).await;
    }
    Err(tonic::Status::unavailable("watch stream ended").into())
}

use futures::FutureExt;

fn apply(cache: &mut ClusterCache, update: Update) {
    match update {
        Update::Node(WatchEventType::Deleted, node) => {
            cache.nodes.remove(&name_of(&node.metadata));
        }
        Update::Node(_, node) => {
            cache.nodes.insert(name_of(&node.metadata), *node);
        }
        Update::Pod(WatchEventType::Deleted, pod) => {
            if let Some(m) = &pod.metadata {
                cache.last_failure.remove(&m.uid);
            }
            cache.pods.remove(&pod_key(&pod));
        }
        Update::Pod(_, pod) => {
            cache.pods.insert(pod_key(&pod), *pod);
        }
        Update::Tick => {}
    }
}

async fn schedule_pending(client: &ApiClient, events: &EventRecorder, cache: &mut ClusterCache) {
    let mut pending: Vec<Pod> = cache
        .pods
        .values()
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| s.node_name.is_empty())
                && p.metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp_ms == 0)
        })
        .cloned()
        .collect();
    // First come, first served.
    pending.sort_by_key(|p| {
        p.metadata
            .as_ref()
            .map(|m| m.creation_timestamp_ms)
            .unwrap_or(0)
    });
    for pod in pending {
        schedule_one(client, events, cache, pod).await;
    }
}

#[tracing::instrument(skip_all, fields(pod = %pod_key(&pod)))]
async fn schedule_one(
    client: &ApiClient,
    events: &EventRecorder,
    cache: &mut ClusterCache,
    pod: Pod,
) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let used = usage(cache);
    let (feasible, reasons) = filter(cache, &used, &pod, now_ms());
    let Some(node_name) = score(cache, &used, &feasible) else {
        let message = failure_message(cache.nodes.len(), &reasons);
        if cache.last_failure.get(&meta.uid) != Some(&message) {
            tracing::info!(%message, "pod is unschedulable");
            events.pod_event(&pod, "Warning", "FailedScheduling", message.clone());
            cache.last_failure.insert(meta.uid.clone(), message);
        }
        return;
    };
    let bind = BindRequest {
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        node_name: node_name.clone(),
    };
    // The decision is made now; the agent may start acting on the binding before our event
    // is written, so stamp the event with the time of the decision, not of its recording.
    let decided_at = now_ms();
    match client.pods.clone().bind(bind).await {
        Ok(bound) => {
            let bound = bound.into_inner();
            tracing::info!(node = %node_name, "bound");
            cache.last_failure.remove(&meta.uid);
            events.pod_event_at(
                &bound,
                decided_at,
                "Normal",
                "Scheduled",
                format!(
                    "Successfully assigned {}/{} to {node_name}",
                    meta.namespace, meta.name
                ),
            );
            // Count the pod on its node right away, so the next pod of a burst sees it.
            cache.pods.insert(pod_key(&bound), bound);
        }
        // Someone else bound or deleted it meanwhile: the watch will tell us the outcome.
        Err(e) => tracing::info!(error = %e.message(), "bind refused"),
    }
}

/// The resources a pod asks for: the sum of its containers' requests.
fn requests(pod: &Pod) -> (i64, i64) {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref())
        .fold((0, 0), |(cpu, mem), r| {
            (cpu + r.cpu_request_millis, mem + r.memory_request_bytes)
        })
}

fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// What is already placed on each node: (cpu millis, memory bytes, pods).
type Usage<'a> = HashMap<&'a str, (i64, i64, i64)>;

fn usage(cache: &ClusterCache) -> Usage<'_> {
    let mut used = Usage::new();
    for pod in cache.pods.values() {
        let Some(node) = pod
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if is_terminal(pod) {
            continue;
        }
        let (cpu, mem) = requests(pod);
        let entry = used.entry(node).or_default();
        entry.0 += cpu;
        entry.1 += mem;
        entry.2 += 1;
    }
    used
}

/// The nodes that can run the pod, and for the others the reason each was left out.
fn filter(
    cache: &ClusterCache,
    used: &Usage<'_>,
    pod: &Pod,
    now: i64,
) -> (Vec<String>, Vec<&'static str>) {
    let (cpu, mem) = requests(pod);
    let mut feasible = Vec::new();
    let mut reasons = Vec::new();
    for (name, node) in &cache.nodes {
        let alloc = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable)
            .unwrap_or_default();
        let (ucpu, umem, upods) = used.get(name.as_str()).copied().unwrap_or_default();
        let reason = if !node_is_ready(node, now) {
            Some("node(s) were not ready")
        } else if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
            Some("node(s) were unschedulable")
        } else if upods + 1 > alloc.pods {
            Some("Too many pods")
        } else if ucpu + cpu > alloc.cpu_millis {
            Some("Insufficient cpu")
        } else if umem + mem > alloc.memory_bytes {
            Some("Insufficient memory")
        } else {
            None
        };
        match reason {
            Some(r) => reasons.push(r),
            None => feasible.push(name.clone()),
        }
    }
    (feasible, reasons)
}

/// Least allocated wins: the node whose busier resource (cpu or memory) is the least
/// used fraction; ties go to fewer pods, then to the name, so the choice is stable.
fn score(cache: &ClusterCache, used: &Usage<'_>, feasible: &[String]) -> Option<String> {
    feasible
        .iter()
        .map(|name| {
            let alloc = cache.nodes[name]
                .status
                .as_ref()
                .and_then(|s| s.allocatable)
                .unwrap_or_default();
            let (cpu, mem, pods) = used.get(name.as_str()).copied().unwrap_or_default();
            let frac = |u: i64, a: i64| if a > 0 { u as f64 / a as f64 } else { 1.0 };
            let load = frac(cpu, alloc.cpu_millis).max(frac(mem, alloc.memory_bytes));
            // Per mille, so that the key is an integer and sorts exactly.
            ((load * 1000.0) as i64, pods, name.clone())
        })
        .min()
        .map(|(_, _, name)| name)
}

/// Kubernetes' wording: `0/3 nodes are available: 1 Insufficient memory, 2 node(s) were not ready.`
fn failure_message(total: usize, reasons: &[&str]) -> String {
    if total == 0 {
        return "0/0 nodes are available: no nodes registered (start an agent: kubelabd agent --node-name NAME)".into();
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in reasons {
        match counts.iter_mut().find(|(x, _)| x == r) {
            Some((_, n)) => *n += 1,
            None => counts.push((r, 1)),
        }
    }
    counts.sort();
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

fn name_of(meta: &Option<kubelab_proto::v1::ObjectMeta>) -> String {
    meta.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

fn pod_key(pod: &Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_reads_like_kubernetes() {
        assert_eq!(
            failure_message(
                3,
                &[
                    "Insufficient memory",
                    "node(s) were not ready",
                    "node(s) were not ready"
                ]
            ),
            "0/3 nodes are available: 1 Insufficient memory, 2 node(s) were not ready."
        );
    }
}
