//! The tables of `kubelab get`: a row per pod, node, namespace or event, with kubectl's
//! columns and its STATUS wording. Builds rows only; `table.rs` lays them out.

use kubelab_proto::v1 as api;

use kubelab_proto::k8s::printers::pod_status_text;

use super::values::{age, or_none};

/// `get pods`: NAME READY STATUS RESTARTS AGE, after NAMESPACE with `-A`, then IP and
/// NODE with `-o wide`; the header first.
pub fn pod_rows(pods: &[api::Pod], wide: bool, with_namespace: bool) -> Vec<Vec<String>> {
    let mut header: Vec<String> = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        .map(String::from)
        .to_vec();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    if wide {
        header.extend(["IP", "NODE"].map(String::from));
    }
    let mut rows = vec![header];
    for pod in pods {
        let m = pod.metadata.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let total = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
        let ready = status.container_statuses.iter().filter(|s| s.ready).count();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .map(|s| s.restart_count)
            .sum();
        let mut row = vec![
            m.name.clone(),
            format!("{ready}/{total}"),
            pod_status_text(pod),
            restarts.to_string(),
            age(m.creation_timestamp_ms),
        ];
        if with_namespace {
            row.insert(0, m.namespace.clone());
        }
        if wide {
            let node = pod
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            row.extend([or_none(&status.pod_ip), or_none(&node)]);
        }
        rows.push(row);
    }
    rows
}

/// `get nodes`: NAME STATUS AGE and capacity, then where the node is with `-o wide`; the
/// header first.
pub fn node_rows(nodes: &[api::Node], wide: bool) -> Vec<Vec<String>> {
    let mut header: Vec<String> = ["NAME", "STATUS", "AGE", "CPU", "MEMORY", "PODS"]
        .map(String::from)
        .to_vec();
    if wide {
        header.extend(["POD-CIDR", "AGENT", "OS-IMAGE", "KERNEL-VERSION"].map(String::from));
    }
    let mut rows = vec![header];
    for node in nodes {
        let m = node.metadata.clone().unwrap_or_default();
        let s = node.status.clone().unwrap_or_default();
        let cap = s.capacity.unwrap_or_default();
        let mut status = if kubelab_proto::node_is_ready(node) {
            "Ready".to_string()
        } else {
            "NotReady".to_string()
        };
        if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
            status.push_str(",SchedulingDisabled");
        }
        let mut row = vec![
            m.name.clone(),
            status,
            age(m.creation_timestamp_ms),
            format!("{}", cap.cpu_millis as f64 / 1000.0),
            format!("{}Mi", cap.memory_bytes >> 20),
            cap.pods.to_string(),
        ];
        if wide {
            let cidr = node.spec.as_ref().map(|s| s.pod_cidr.as_str());
            row.extend([
                or_none(cidr.unwrap_or_default()),
                s.agent_endpoint.clone(),
                s.os_image.clone(),
                s.kernel_version.clone(),
            ]);
        }
        rows.push(row);
    }
    rows
}

/// `get namespaces`: NAME STATUS AGE; the header first.
pub fn namespace_rows(namespaces: &[api::Namespace]) -> Vec<Vec<String>> {
    let mut rows = vec![["NAME", "STATUS", "AGE"].map(String::from).to_vec()];
    for ns in namespaces {
        let m = ns.metadata.clone().unwrap_or_default();
        let phase = ns.status.as_ref().map(|s| s.phase.clone());
        rows.push(vec![
            m.name,
            phase.unwrap_or_default(),
            age(m.creation_timestamp_ms),
        ]);
    }
    rows
}

/// `get events`: kubectl's columns, in the order given; the header first.
pub fn event_rows(events: &[api::Event]) -> Vec<Vec<String>> {
    let header = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"].map(String::from);
    std::iter::once(header.to_vec())
        .chain(events.iter().map(event_row))
        .collect()
}

/// One event's row of `get events`: when it was last seen (and how often, when more than
/// once), what it says and about which object.
pub fn event_row(e: &api::Event) -> Vec<String> {
    let object = e.involved_object.clone().unwrap_or_default();
    let count = if e.count > 1 {
        format!(" (x{})", e.count)
    } else {
        String::new()
    };
    vec![
        format!("{}{count}", age(e.timestamp_ms)),
        e.r#type.clone(),
        e.reason.clone(),
        format!("{}/{}", object.kind.to_lowercase(), object.name),
        e.message.clone(),
    ]
}
