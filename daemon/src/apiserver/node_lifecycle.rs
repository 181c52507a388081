//! The node lifecycle controller: notices agents that stopped heartbeating.
//!
//! Owns the nodes' Ready condition once an agent falls silent (kube-controller-manager's
//! node lifecycle controller): after the grace period without a heartbeat the node becomes
//! NotReady (condition Unknown, a `NodeNotReady` event), it gets the
//! `node.kubernetes.io/unreachable` taints (NoSchedule, and NoExecute with the time it was
//! added) and its pods' Ready condition turns False. A heartbeat makes it Ready again and
//! takes those taints off (`nodes.rs`, through `mark_ready`). Evicting the pods the
//! NoExecute taint no longer lets stay is the controller manager's taint eviction
//! controller's. This module never deletes pods, and never talks to an agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubelab_proto::now_ms;
use kubelab_proto::v1::{Event, Node, NodeCondition, ObjectReference, Pod, PodCondition, Taint};

use super::events::record;
use super::store::{key, prefix, Store};

/// The taints a node gets while it is not ready (Kubernetes' names): nothing new is
/// scheduled there, and running pods stay only as long as they tolerate it.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Sets the node's Ready condition True and takes off the not-ready taints; returns
/// whether it was not Ready before.
pub fn mark_ready(node: &mut Node, now: i64) -> bool {
    if let Some(spec) = node.spec.as_mut() {
        spec.taints
            .retain(|t| t.key != UNREACHABLE && t.key != NOT_READY);
    }
    let status = node.status.get_or_insert_with(Default::default);
    let was_ready = status.ready;
    status.ready = true;
    status.last_heartbeat_ms = now;
    set_condition(
        &mut status.conditions,
        NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_heartbeat_time_ms: now,
            last_transition_time_ms: now,
            reason: "KubeletReady".into(),
            message: "kubelet is posting ready status".into(),
        },
    );
    !was_ready
}

/// Replaces the condition of the same type, keeping its transition time when the status
/// did not change.
fn set_condition(conditions: &mut Vec<NodeCondition>, mut new: NodeCondition) {
    match conditions.iter_mut().find(|c| c.r#type == new.r#type) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time_ms = old.last_transition_time_ms;
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// The event of a node that is Ready again.
pub async fn announce_ready(store: &Store, node: &Node) {
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let message = format!("Node {name} status is now: NodeReady");
    node_event(store, node, "NodeReady", message).await;
}

/// The cluster CIDR has no range left for this node (Kubernetes' node IPAM says the same):
/// the node is registered without a pod CIDR, and its pods cannot get a pod network.
pub async fn announce_cidr_not_available(store: &Store, node: &Node) {
    let name = node
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let message = format!("Node {name} status is now: CIDRNotAvailable");
    node_event(store, node, "CIDRNotAvailable", message).await;
}

/// Records an event about a node, from the node controller.
async fn node_event(store: &Store, node: &Node, reason: &str, message: String) {
    let meta = node.metadata.clone().unwrap_or_default();
    let regarding = ObjectReference {
        kind: "Node".into(),
        namespace: String::new(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        api_version: String::new(),
    };
    if reason == "NodeReady" {
        event(store, regarding, "Normal", reason, message).await;
    } else {
        warn(store, regarding, reason, message).await;
    }
}

async fn warn(store: &Store, regarding: ObjectReference, reason: &str, message: String) {
    event(store, regarding, "Warning", reason, message).await;
}

async fn event(
    store: &Store,
    regarding: ObjectReference,
    kind: &str,
    reason: &str,
    message: String,
) {
    let name = regarding.name.clone();
    let event = Event {
        involved_object: Some(regarding),
        reason: reason.into(),
        message,
        r#type: kind.into(),
        source: "node-controller".into(),
        ..Default::default()
    };
    if let Err(e) = record(store, event).await {
        tracing::warn!(object = %name, error = %e, "could not record a node controller event");
    }
}

/// Watches heartbeats for as long as the apiserver runs.
pub async fn run(store: Arc<Store>, grace: Duration) {
    // When each node's heartbeat was last seen to change, by this process's clock: after
    // an apiserver restart every node gets a full grace period (as in Kubernetes), and a
    // skewed agent clock does not matter.
    let mut seen: HashMap<String, (i64, Instant)> = HashMap::new();
    let mut ticks = tokio::time::interval(
        (grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(2)),
    );
    loop {
        ticks.tick().await;
        let Ok((nodes, _)) = store.list::<Node>(&prefix::<Node>("")).await else {
            continue;
        };
        let mut present = std::collections::HashSet::new();
        for node in nodes {
            let name = node
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let status = node.status.clone().unwrap_or_default();
            present.insert(name.clone());
            let entry = seen
                .entry(name.clone())
                .or_insert((status.last_heartbeat_ms, Instant::now()));
            if entry.0 != status.last_heartbeat_ms {
                *entry = (status.last_heartbeat_ms, Instant::now());
            }
            if status.ready && entry.1.elapsed() > grace {
                mark_not_ready(&store, &name, grace).await;
            }
        }
        seen.retain(|name, _| present.contains(name));
    }
}

#[tracing::instrument(skip(store, grace))]
async fn mark_not_ready(store: &Store, name: &str, grace: Duration) {
    let now = now_ms();
    let node_key = key::<Node>("", name);
    let updated = store
        .update::<Node, _>(&node_key, |current| {
            let Some(mut node) = current else {
                return Err(super::ApiError::NotFound(node_key.clone()));
            };
            add_unreachable_taints(&mut node, now);
            let status = node.status.get_or_insert_with(Default::default);
            status.ready = false;
            set_condition(
                &mut status.conditions,
                NodeCondition {
                    r#type: "Ready".into(),
                    status: "Unknown".into(),
                    last_heartbeat_time_ms: status.last_heartbeat_ms,
                    last_transition_time_ms: now,
                    reason: "NodeStatusUnknown".into(),
                    message: "Kubelet stopped posting node status.".into(),
                },
            );
            Ok(Some(node))
        })
        .await;
    let Ok(node) = updated else {
        return;
    };
    tracing::warn!(
        grace_seconds = grace.as_secs_f64(),
        "no heartbeat within the grace period: node is NotReady"
    );
    node_event(
        store,
        &node,
        "NodeNotReady",
        format!("Node {name} status is now: NodeNotReady"),
    )
    .await;
    mark_pods_not_ready(store, name).await;
}

/// `unreachable:NoSchedule` and `unreachable:NoExecute` (stamped with the time added),
/// unless the node has them already.
fn add_unreachable_taints(node: &mut Node, now: i64) {
    let spec = node.spec.get_or_insert_with(Default::default);
    for effect in ["NoSchedule", "NoExecute"] {
        if spec
            .taints
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == effect)
        {
            continue;
        }
        spec.taints.push(Taint {
            key: UNREACHABLE.into(),
            value: String::new(),
            effect: effect.into(),
            time_added_ms: if effect == "NoExecute" { now } else { 0 },
        });
    }
}

/// Every pod of the node that may still be running is no longer Ready: nobody can tell.
async fn mark_pods_not_ready(store: &Store, node: &str) {
    let Ok((pods, _)) = store.list::<Pod>(&prefix::<Pod>("")).await else {
        return;
    };
    for pod in pods {
        if pod.spec.as_ref().is_none_or(|s| s.node_name != node) {
            continue;
        }
        let meta = pod.metadata.clone().unwrap_or_default();
        let pod_key = key::<Pod>(&meta.namespace, &meta.name);
        let now = now_ms();
        let updated = store
            .update::<Pod, _>(&pod_key, |current| {
                let Some(mut pod) =
                    current.filter(|p| p.metadata.as_ref().is_some_and(|m| m.uid == meta.uid))
                else {
                    return Err(super::ApiError::NotFound(pod_key.clone()));
                };
                let status = pod.status.get_or_insert_with(Default::default);
                if status.phase == "Succeeded" || status.phase == "Failed" {
                    return Err(super::ApiError::Conflict("pod has ended".into()));
                }
                for c in &mut status.container_statuses {
                    c.ready = false;
                }
                let message = format!("node {node} is not ready");
                match status.conditions.iter_mut().find(|c| c.r#type == "Ready") {
                    Some(c) => {
                        if c.status != "False" {
                            c.last_transition_time_ms = now;
                        }
                        c.status = "False".into();
                        c.reason = "NodeNotReady".into();
                        c.message = message;
                    }
                    None => status.conditions.push(PodCondition {
                        r#type: "Ready".into(),
                        status: "False".into(),
                        last_transition_time_ms: now,
                        reason: "NodeNotReady".into(),
                        message,
                    }),
                }
                Ok(Some(pod))
            })
            .await;
        if updated.is_ok() {
            let pod_ref = ObjectReference {
                kind: "Pod".into(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                api_version: "v1".into(),
            };
            warn(store, pod_ref, "NodeNotReady", "Node is not ready".into()).await;
        }
    }
}
