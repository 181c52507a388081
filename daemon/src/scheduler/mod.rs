//! The scheduler: gives each unbound pod a node.
//!
//! It lists and watches pods and nodes into a `cache`, takes the pods that have no node
//! from its queue, filters the nodes that could run each one and scores the rest
//! (`framework`), and binds the pod through the API — binds run in the background, many at
//! once, while the next pods are decided. It records `Scheduled` or `FailedScheduling`
//! events. The scheduler never talks to agents: the agent of the chosen node learns of the
//! pod from its own watch.

mod cache;
mod framework;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kubelab_proto::now_ms;
use kubelab_proto::v1::{
    BindRequest, ListNodesRequest, ListPodsRequest, Node, Pod, WatchEventType, WatchRequest,
};

use crate::client::{ApiClient, EventRecorder};
use cache::{pod_key, ClusterCache};

/// Pods that could not be placed are tried again this often even when nothing changed.
const RETRY_PERIOD: Duration = Duration::from_secs(5);
/// Most binds in flight at once: the API's durable writes are grouped, so many together
/// cost little more than one.
const MAX_BINDS_IN_FLIGHT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("apiserver call failed: {0}")]
    Api(#[from] tonic::Status),
}

enum Update {
    // Boxed: pods and nodes are much larger than a tick.
    Pod(WatchEventType, Box<Pod>),
    Node(WatchEventType, Box<Node>),
    /// A bind the API refused: the pod as it was before we assumed it.
    BindFailed(Box<Pod>),
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

/// What one scheduling pass needs besides the cache.
struct Binder {
    client: ApiClient,
    events: EventRecorder,
    in_flight: Arc<tokio::sync::Semaphore>,
    failed: tokio::sync::mpsc::UnboundedSender<Update>,
    /// The last FailedScheduling message per pod uid, so that a pod that stays
    /// unschedulable gets one event per distinct reason, not one per retry.
    last_failure: std::collections::HashMap<String, String>,
}

async fn run_once(client: &ApiClient, events: &EventRecorder) -> Result<(), SchedulerError> {
    let mut cache = ClusterCache::default();
    let nodes = client
        .nodes
        .clone()
        .list(ListNodesRequest::default())
        .await?
        .into_inner();
    let pods = client
        .pods
        .clone()
        .list(ListPodsRequest::default())
        .await?
        .into_inner();
    for node in nodes.items {
        cache.set_node(node);
    }
    for pod in pods.items {
        cache.set_pod(pod);
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
    let (failed_tx, failed_rx) = tokio::sync::mpsc::unbounded_channel();
    let failed = tokio_stream::wrappers::UnboundedReceiverStream::new(failed_rx).map(Ok);
    let mut updates = futures::stream::select(
        futures::stream::select(node_watch, pod_watch),
        futures::stream::select(ticks, failed),
    );
    let mut binder = Binder {
        client: client.clone(),
        events: events.clone(),
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_BINDS_IN_FLIGHT)),
        failed: failed_tx,
        last_failure: Default::default(),
    };
    tracing::info!(
        nodes = cache.nodes.len(),
        pods = cache.pod_count(),
        pending = cache.pending(),
        "scheduler watching"
    );
    schedule_pending(&mut binder, &mut cache).await;
    while let Some(update) = updates.next().await {
        apply(&mut cache, &mut binder, update?);
        // Take everything already queued before scheduling, so a burst is handled in one pass.
        while let Some(Some(update)) = updates.next().now_or_never() {
            apply(&mut cache, &mut binder, update?);
        }
        schedule_pending(&mut binder, &mut cache).await;
    }
    Err(tonic::Status::unavailable("watch stream ended").into())
}

fn apply(cache: &mut ClusterCache, binder: &mut Binder, update: Update) {
    match update {
        Update::Node(WatchEventType::Deleted, node) => {
            cache.remove_node(&node.metadata.unwrap_or_default().name);
        }
        Update::Node(_, node) => {
            if cache.set_node(*node) {
                cache.retry_unschedulable();
            }
        }
        Update::Pod(WatchEventType::Deleted, pod) => {
            if let Some(m) = &pod.metadata {
                binder.last_failure.remove(&m.uid);
            }
            cache.remove_pod(&pod_key(&pod));
            // Its room is free again.
            cache.retry_unschedulable();
        }
        Update::Pod(_, pod) => cache.set_pod(*pod),
        Update::BindFailed(pod) => {
            let key = pod_key(&pod);
            let version = |p: &Pod| {
                p.metadata
                    .as_ref()
                    .map(|m| (m.uid.clone(), m.resource_version))
            };
            // Undo our assumption, unless the watch has brought a newer version since (the
            // pod bound after all, or deleted): the cached copy is still the one we assumed.
            let still_assumed = cache.pod(&key).is_some_and(|p| version(p) == version(&pod));
            if still_assumed {
                cache.set_pod_to_retry(*pod);
            }
        }
        Update::Tick => cache.retry_unschedulable(),
    }
}

/// How many feasible nodes to look for before choosing (kube-scheduler's adaptive
/// percentageOfNodesToScore: all of a small cluster, 50% less 1% per 125 nodes of a large
/// one, never under 5% nor 100 nodes).
fn nodes_to_find(total: usize) -> usize {
    const MIN_NODES: usize = 100;
    if total <= MIN_NODES {
        return total.max(1);
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(MIN_NODES)
}

async fn schedule_pending(binder: &mut Binder, cache: &mut ClusterCache) {
    while let Some(pod) = cache.pop_active() {
        schedule_one(binder, cache, pod).await;
    }
}

#[tracing::instrument(skip_all, fields(pod = %pod_key(&pod)))]
async fn schedule_one(binder: &mut Binder, cache: &mut ClusterCache, pod: Pod) {
    let meta = pod.metadata.clone().unwrap_or_default();
    let info = framework::PodInfo::new(&pod);
    // Like kube-scheduler, stop looking once enough feasible nodes are found (a share of a
    // large cluster); a pod that fits nowhere still has every node's reason.
    let total = cache.node_order.len();
    let wanted = nodes_to_find(total);
    let mut feasible = Vec::new();
    let mut reasons = Vec::new();
    let mut scanned = 0;
    for i in 0..total {
        let name = &cache.node_order[(cache.next_start + i) % total];
        scanned += 1;
        match framework::filter(&info, &cache.nodes[name]) {
            None => feasible.push(name.as_str()),
            Some(reason) => reasons.push(reason),
        }
        if feasible.len() >= wanted {
            break;
        }
    }
    let same_labels_max = feasible
        .iter()
        .map(|n| cache.nodes[*n].same_labels(info.label_set))
        .max()
        .unwrap_or(0);
    // Highest score wins; ties go to fewer pods, then to the name, so the choice is stable.
    let best = feasible
        .iter()
        .map(|n| {
            let node = &cache.nodes[*n];
            let score = framework::score(&info, node, same_labels_max);
            (std::cmp::Reverse(score), node.pods, *n)
        })
        .min()
        .map(|(std::cmp::Reverse(score), _, n)| (n.to_string(), score));
    if total > 0 {
        cache.next_start = (cache.next_start + scanned) % total;
    }
    let Some((node_name, best_score)) = best else {
        let message = framework::failure_message(cache.nodes.len(), &reasons);
        if binder.last_failure.get(&meta.uid) != Some(&message) {
            tracing::info!(%message, "pod is unschedulable");
            binder
                .events
                .pod_event(&pod, "Warning", "FailedScheduling", message.clone());
            binder.last_failure.insert(meta.uid.clone(), message);
        }
        cache.mark_unschedulable(pod_key(&pod));
        return;
    };
    // Why this node, after Kubernetes' words: what was searched, what fit, what did not.
    let mut why = format!(
        "{} of {scanned} nodes searched fit, best score {best_score}",
        feasible.len()
    );
    if !reasons.is_empty() {
        why.push_str(&format!("; {}", framework::reason_counts(&reasons)));
    }
    // Assume the binding: the next pod sees this one on its node at once.
    let mut assumed = pod.clone();
    assumed.spec.get_or_insert_with(Default::default).node_name = node_name.clone();
    cache.set_pod(assumed);
    binder.last_failure.remove(&meta.uid);
    // The decision is made now; the agent may start acting on the binding before our event
    // is written, so stamp the event with the time of the decision, not of its recording.
    let decided_at = now_ms();
    let Ok(permit) = binder.in_flight.clone().acquire_owned().await else {
        return;
    };
    let (client, events, failed) = (
        binder.client.clone(),
        binder.events.clone(),
        binder.failed.clone(),
    );
    let bind = BindRequest {
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        node_name: node_name.clone(),
        resource_version: 0,
    };
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let _permit = permit;
            match client.pods.clone().bind(bind).await {
                Ok(bound) => {
                    tracing::debug!(node = %node_name, "bound");
                    events.pod_event_at(
                        &bound.into_inner(),
                        decided_at,
                        "Normal",
                        "Scheduled",
                        format!(
                            "Successfully assigned {}/{} to {node_name} ({why})",
                            meta.namespace, meta.name
                        ),
                    );
                }
                // Someone else bound or deleted it meanwhile, or the API is away: undo the
                // assumption; the watch tells the outcome, a retry does the rest.
                Err(e) => {
                    tracing::info!(error = %e.message(), "bind refused");
                    let _ = failed.send(Update::BindFailed(Box::new(pod)));
                }
            }
        }
        .instrument(span),
    );
}

use tracing::Instrument;
