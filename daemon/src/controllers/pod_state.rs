//! What the workload controllers read of a pod, as kube-controller-manager's
//! `controller_utils` reads it: its controlling owner, whether it is active, ready and
//! available, and the order in which pods are chosen for deletion. Pure functions.

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The owner with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// A reference to `owner` as its controller, blocking its foreground deletion.
pub fn owner_ref<K>(owner: &K) -> OwnerReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    OwnerReference {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        name: owner.metadata().name.clone().unwrap_or_default(),
        uid: owner.metadata().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn labels(meta: &ObjectMeta) -> HashMap<String, String> {
    meta.labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The pod's phase (Pending until its node says otherwise).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished nor being deleted: a pod that counts toward the replicas.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became true, if it is true.
fn ready_since_ms(pod: &Pod) -> Option<i64> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| kubelab_proto::k8s::time_ms(&c.last_transition_time))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since_ms(pod).is_some()
}

/// Ready for at least `min_ready_seconds`; else how long until it will be (if ready).
pub fn availability(pod: &Pod, min_ready_seconds: i32, now_ms: i64) -> Result<(), Option<i64>> {
    let Some(since) = ready_since_ms(pod) else {
        return Err(None);
    };
    let needed = i64::from(min_ready_seconds.max(0)).saturating_mul(1000);
    let ready_for = now_ms.saturating_sub(since);
    if needed == 0 || ready_for >= needed {
        Ok(())
    } else {
        Err(Some(needed - ready_for))
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|s| s.restart_count).sum())
        .unwrap_or(0)
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    }
}

/// The order in which a scale-down takes pods, first to go first (Kubernetes'
/// `ActivePods` ordering): not yet on a node, then pending before running, not ready
/// before ready, ready for less time, more restarts, newer.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(is_ready(a).cmp(&is_ready(b)))
        // Ready more recently goes first.
        .then(
            ready_since_ms(b)
                .unwrap_or(0)
                .cmp(&ready_since_ms(a).unwrap_or(0)),
        )
        .then(restarts(b).cmp(&restarts(a)))
        .then(
            kubelab_proto::k8s::time_ms(&b.metadata.creation_timestamp)
                .cmp(&kubelab_proto::k8s::time_ms(&a.metadata.creation_timestamp)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};

    fn pod(name: &str, node: Option<&str>, phase: &str, created_ms: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: kubelab_proto::k8s::time(created_ms),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_scale_down_takes_unscheduled_then_pending_then_newer_pods_first() {
        let mut pods = [
            pod("old-running", Some("n"), "Running", 1_000),
            pod("new-running", Some("n"), "Running", 2_000),
            pod("pending", Some("n"), "Pending", 500),
            pod("unscheduled", None, "Pending", 100),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["unscheduled", "pending", "new-running", "old-running"]
        );
    }
}
