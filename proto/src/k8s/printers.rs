//! The tables kube-apiserver serves (`as=Table`) for kubelab's resources: each
//! resource's column definitions and one row's cells, with kubectl's wording (a pod's
//! STATUS, RESTARTS `2 (5m ago)`, ages as `HumanDuration`). Pure functions of an object
//! and the time; the apiserver wraps them into a `meta.k8s.io/v1` Table, and the CLI
//! reads its STATUS from here too.

use serde_json::{json, Value};

use crate::v1 as api;
use crate::v1::container_state::State;

/// One column of a table: kube-apiserver's `TableColumnDefinition`.
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `date`...
    pub kind: &'static str,
    /// `name` for the column that names the object, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: shown with `-o wide`.
    pub priority: i32,
}

pub const fn column(name: &'static str, description: &'static str, priority: i32) -> Column {
    Column {
        name,
        kind: "string",
        format: "",
        description,
        priority,
    }
}

pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
pub const AGE: Column = Column {
    name: "Age",
    kind: "string",
    format: "",
    description: "CreationTimestamp is the time the object was created.",
    priority: 0,
};

pub const POD_COLUMNS: &[Column] = &[
    NAME,
    column("Ready", "The aggregate readiness state of this pod for accepting traffic.", 0),
    column("Status", "The aggregate status of the containers in this pod.", 0),
    column("Restarts", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
    AGE,
    column("IP", "The IP address assigned to the pod.", 1),
    column("Node", "The name of the node the pod is assigned to.", 1),
    column("Nominated Node", "The name of the node the pod is nominated to (preemption).", 1),
    column("Readiness Gates", "The readiness gates of the pod.", 1),
];

pub const NODE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "The status of the node.", 0),
    column(
        "Roles",
        "The roles of the node (its node-role.kubernetes.io/ labels).",
        0,
    ),
    AGE,
    column("Version", "The version of the node's kubelet.", 0),
    column("Internal-IP", "The node's internal address.", 1),
    column("External-IP", "The node's external address.", 1),
    column("OS-Image", "The operating system image of the node.", 1),
    column("Kernel-Version", "The kernel version of the node.", 1),
    column("Container-Runtime", "The container runtime of the node.", 1),
];

pub const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    column("Status", "The status of the namespace.", 0),
    AGE,
];

pub const EVENT_COLUMNS: &[Column] = &[
    column("Last Seen", "When the event was last seen.", 0),
    column("Type", "The type of the event (Normal or Warning).", 0),
    column("Reason", "Why the event happened, in one word.", 0),
    column("Object", "The object the event is about.", 0),
    column("Subobject", "The part of the object the event is about.", 1),
    column("Source", "Who reported the event.", 1),
    column("Message", "What happened.", 0),
    column("First Seen", "When the event was first seen.", 1),
    column("Count", "How many times the event happened.", 1),
    column("Name", "The event's name.", 1),
];

/// How long ago, as kubectl writes an age (apimachinery's `HumanDuration`): `45s`,
/// `5m30s`, `3h12m`, `4d2h`, `<invalid>` for a time in the future.
pub fn human_duration(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of something that happened at `at_ms`, `<unknown>` when it has no time.
pub fn age(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= 0 {
        return "<unknown>".into();
    }
    human_duration(now_ms.saturating_sub(at_ms))
}

fn or_none(value: &str) -> String {
    if value.is_empty() {
        "<none>".into()
    } else {
        value.into()
    }
}

/// The STATUS column: what kubectl shows (a container's waiting or terminated reason
/// when there is one, else the phase).
pub fn pod_status_text(pod: &api::Pod) -> String {
    if pod
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp_ms > 0)
    {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    // kubectl's rule: the first init container not done yet decides the STATUS.
    let init_count = pod
        .spec
        .as_ref()
        .map(|s| s.init_containers.len())
        .unwrap_or(0);
    for (i, s) in status.init_container_statuses.iter().enumerate() {
        match s.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Terminated(t)) if t.exit_code == 0 => continue,
            Some(State::Terminated(t)) if !t.reason.is_empty() => {
                return format!("Init:{}", t.reason)
            }
            Some(State::Terminated(t)) => return format!("Init:ExitCode:{}", t.exit_code),
            Some(State::Waiting(w)) if !w.reason.is_empty() && w.reason != "PodInitializing" => {
                return format!("Init:{}", w.reason)
            }
            _ => return format!("Init:{i}/{init_count}"),
        }
    }
    let mut text = status.phase.clone();
    for s in &status.container_statuses {
        match s.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Waiting(w)) if !w.reason.is_empty() => return w.reason.clone(),
            Some(State::Terminated(t)) if !t.reason.is_empty() && text != "Running" => {
                text = t.reason.clone()
            }
            _ => {}
        }
    }
    if text.is_empty() {
        "Pending".into()
    } else {
        text
    }
}

/// NAME READY STATUS RESTARTS AGE | IP NODE NOMINATED NODE READINESS GATES.
pub fn pod_row(pod: &api::Pod, now_ms: i64) -> Vec<Value> {
    let m = pod.metadata.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let ready = status.container_statuses.iter().filter(|s| s.ready).count();
    let restarts: i64 = status
        .container_statuses
        .iter()
        .map(|s| i64::from(s.restart_count))
        .sum();
    // When the last container restarted: the latest end of a previous run.
    let last_restart = status
        .container_statuses
        .iter()
        .filter_map(|s| match s.last_state.as_ref()?.state.as_ref()? {
            State::Terminated(t) => Some(t.finished_at_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let restarts = if restarts > 0 && last_restart > 0 {
        format!("{restarts} ({} ago)", age(last_restart, now_ms))
    } else {
        restarts.to_string()
    };
    vec![
        json!(m.name),
        json!(format!("{ready}/{}", spec.containers.len())),
        json!(pod_status_text(pod)),
        json!(restarts),
        json!(age(m.creation_timestamp_ms, now_ms)),
        json!(or_none(&status.pod_ip)),
        json!(or_none(&spec.node_name)),
        json!("<none>"),
        json!("<none>"),
    ]
}

/// NAME STATUS ROLES AGE VERSION | INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION
/// CONTAINER-RUNTIME, from the node in Kubernetes' shape.
pub fn node_row(node: &api::Node, now_ms: i64) -> Vec<Value> {
    let m = node.metadata.clone().unwrap_or_default();
    let s = node.status.clone().unwrap_or_default();
    let mut status = if crate::node_is_ready(node) {
        "Ready".to_string()
    } else {
        "NotReady".to_string()
    };
    if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = m
        .labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort_unstable();
    let internal_ip = if s.internal_ip.is_empty() {
        s.agent_endpoint
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
            .unwrap_or_default()
    } else {
        s.internal_ip.clone()
    };
    vec![
        json!(m.name),
        json!(status),
        json!(or_none(&roles.join(","))),
        json!(age(m.creation_timestamp_ms, now_ms)),
        json!(super::defaults::kubelet_version()),
        json!(or_none(&internal_ip)),
        json!("<none>"),
        json!(or_none(&s.os_image)),
        json!(or_none(&s.kernel_version)),
        json!("kubelab://libcontainer"),
    ]
}

/// NAME STATUS AGE.
pub fn namespace_row(ns: &api::Namespace, now_ms: i64) -> Vec<Value> {
    let m = ns.metadata.clone().unwrap_or_default();
    let phase = ns
        .status
        .as_ref()
        .map(|s| s.phase.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "Active".into());
    vec![
        json!(m.name),
        json!(phase),
        json!(age(m.creation_timestamp_ms, now_ms)),
    ]
}

/// LAST SEEN TYPE REASON OBJECT | SUBOBJECT SOURCE | MESSAGE | FIRST SEEN COUNT NAME.
pub fn event_row(e: &api::Event, now_ms: i64) -> Vec<Value> {
    let object = e.involved_object.clone().unwrap_or_default();
    let first = if e.first_timestamp_ms > 0 {
        e.first_timestamp_ms
    } else {
        e.timestamp_ms
    };
    let last_seen = if e.count > 1 {
        format!(
            "{} (x{} over {})",
            age(e.timestamp_ms, now_ms),
            e.count,
            age(first, now_ms)
        )
    } else {
        age(e.timestamp_ms, now_ms)
    };
    vec![
        json!(last_seen),
        json!(e.r#type),
        json!(e.reason),
        json!(format!("{}/{}", object.kind.to_lowercase(), object.name)),
        json!(""),
        json!(e.source),
        json!(e.message),
        json!(age(first, now_ms)),
        json!(e.count.max(1)),
        json!(e
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        let s = 1000;
        assert_eq!(human_duration(45 * s), "45s");
        assert_eq!(human_duration(119 * s), "119s");
        assert_eq!(human_duration(330 * s), "5m30s");
        assert_eq!(human_duration(600 * s), "10m");
        assert_eq!(human_duration((3 * 3600 + 12 * 60) * s), "3h12m");
        assert_eq!(human_duration(30 * 3600 * s), "30h");
        assert_eq!(human_duration((4 * 24 + 2) * 3600 * s), "4d2h");
        assert_eq!(human_duration(-5 * s), "<invalid>");
        assert_eq!(age(0, 10), "<unknown>");
    }
}
