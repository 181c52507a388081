//! The scheduler's plugins: the filters that rule nodes out and the scores that rank the rest.
//!
//! Pure functions over a pod and one node's `NodeInfo`, as kube-scheduler's framework plugins
//! are: NodeReady, NodeUnschedulable, NodeAffinity (nodeSelector), TaintToleration,
//! NodeResourcesFit (pods, cpu, memory), then LeastAllocated, TaintToleration and spread
//! scores. They never call the API and never change the cache.

use std::collections::HashMap;

use kubelab_proto::v1::{Node, Pod, PodSpec, Taint, Toleration};

use super::cache::{label_set, NodeInfo, Resources};

/// What the plugins need of a pod, worked out once per attempt rather than once per node
/// (kube-scheduler's PodInfo).
pub struct PodInfo<'a> {
    pub spec: &'a PodSpec,
    /// Its requests, for fitting.
    pub requests: Resources,
    /// Its requests with the non-zero defaults, for scoring.
    pub scoring: Resources,
    /// A hash of its labels, for spreading.
    pub label_set: Option<u64>,
}

impl<'a> PodInfo<'a> {
    pub fn new(pod: &'a Pod) -> Self {
        static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
        PodInfo {
            spec: pod
                .spec
                .as_ref()
                .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default)),
            requests: requests(pod),
            scoring: requests_for_scoring(pod),
            label_set: label_set(pod),
        }
    }
}

/// Requests a pod with none is counted as, for scoring only (kube-scheduler's defaults):
/// otherwise pods without requests would all pile onto one node.
pub const DEFAULT_CPU_MILLIS: i128 = 100;
pub const DEFAULT_MEMORY_BYTES: i128 = 200 << 20;

/// The resources a pod asks for: the sum of its containers' requests (init containers run
/// one at a time before, so the largest of them counts if it is larger).
pub fn requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let sum = spec
        .containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .fold(Resources::default(), |acc, r| Resources {
            cpu_millis: acc.cpu_millis + i128::from(r.cpu_request_millis),
            memory_bytes: acc.memory_bytes + i128::from(r.memory_request_bytes),
        });
    spec.init_containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .fold(sum, |acc, r| Resources {
            cpu_millis: acc.cpu_millis.max(i128::from(r.cpu_request_millis)),
            memory_bytes: acc.memory_bytes.max(i128::from(r.memory_request_bytes)),
        })
}

/// As `requests`, with kube-scheduler's non-zero defaults: what scoring counts.
pub fn requests_for_scoring(pod: &Pod) -> Resources {
    let r = requests(pod);
    Resources {
        cpu_millis: if r.cpu_millis == 0 {
            DEFAULT_CPU_MILLIS
        } else {
            r.cpu_millis
        },
        memory_bytes: if r.memory_bytes == 0 {
            DEFAULT_MEMORY_BYTES
        } else {
            r.memory_bytes
        },
    }
}

/// Why a node cannot take the pod, in kube-scheduler's words; `None` if it can.
pub fn filter(pod: &PodInfo, info: &NodeInfo) -> Option<String> {
    let node = &info.node;
    let (spec, wanted) = (pod.spec, pod.requests);
    if !kubelab_proto::node_is_ready(node) {
        return Some("node(s) were not ready".into());
    }
    if node.spec.as_ref().is_some_and(|s| s.unschedulable)
        && !tolerates_unschedulable(&spec.tolerations)
    {
        return Some("node(s) were unschedulable".into());
    }
    if !matches_node_selector(&spec.node_selector, node) {
        return Some("node(s) didn't match Pod's node selector".into());
    }
    if let Some(taint) = untolerated(node, &spec.tolerations, |effect| {
        effect == "NoSchedule" || effect == "NoExecute"
    }) {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key, taint.value
        ));
    }
    let alloc = info.allocatable();
    if info.pods + 1 > alloc.pods {
        return Some("Too many pods".into());
    }
    if info.requested.cpu_millis + wanted.cpu_millis > i128::from(alloc.cpu_millis) {
        return Some("Insufficient cpu".into());
    }
    if info.requested.memory_bytes + wanted.memory_bytes > i128::from(alloc.memory_bytes) {
        return Some("Insufficient memory".into());
    }
    None
}

fn matches_node_selector(selector: &HashMap<String, String>, node: &Node) -> bool {
    if selector.is_empty() {
        return true;
    }
    let Some(labels) = node.metadata.as_ref().map(|m| &m.labels) else {
        return false;
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a toleration lets a pod onto a node with this taint (Kubernetes' rules).
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    match t.operator.as_str() {
        "Exists" => t.key.is_empty() || t.key == taint.key,
        // Equal is the default.
        _ => t.key == taint.key && t.value == taint.value,
    }
}

/// The first of the node's taints with a matching effect that no toleration covers.
fn untolerated<'a>(
    node: &'a Node,
    tolerations: &[Toleration],
    effect: impl Fn(&str) -> bool,
) -> Option<&'a Taint> {
    node.spec
        .as_ref()?
        .taints
        .iter()
        .find(|taint| effect(&taint.effect) && !tolerations.iter().any(|t| tolerates(t, taint)))
}

/// A cordoned node takes pods that tolerate node.kubernetes.io/unschedulable, as in Kubernetes.
fn tolerates_unschedulable(tolerations: &[Toleration]) -> bool {
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        value: String::new(),
        effect: "NoSchedule".into(),
        time_added_ms: 0,
    };
    tolerations.iter().any(|t| tolerates(t, &taint))
}

/// The score of a feasible node, higher is better (each plugin 0–100, summed as
/// kube-scheduler does with equal weights).
pub fn score(pod: &PodInfo, info: &NodeInfo, same_labels_max: usize) -> i64 {
    least_allocated(info, pod.scoring)
        + taint_toleration(pod, info)
        + spread(pod, info, same_labels_max)
}

/// NodeResourcesFit with LeastAllocated: the free share of cpu and memory after placing the
/// pod, averaged, 0–100.
fn least_allocated(info: &NodeInfo, wanted: Resources) -> i64 {
    let alloc = info.allocatable();
    // In i128: a node may report any i64 capacity, and 100 × that overflows an i64.
    let free = |used: i128, cap: i64| {
        let cap = i128::from(cap);
        if cap <= 0 {
            0
        } else {
            ((cap - used).clamp(0, cap) * 100) / cap
        }
    };
    let cpu = free(
        info.non_zero.cpu_millis + wanted.cpu_millis,
        alloc.cpu_millis,
    );
    let mem = free(
        info.non_zero.memory_bytes + wanted.memory_bytes,
        alloc.memory_bytes,
    );
    // Both are 0–100.
    ((cpu + mem) / 2) as i64
}

/// 100 with no untolerated PreferNoSchedule taint, 0 with one or more.
fn taint_toleration(pod: &PodInfo, info: &NodeInfo) -> i64 {
    if untolerated(&info.node, &pod.spec.tolerations, |e| {
        e == "PreferNoSchedule"
    })
    .is_some()
    {
        0
    } else {
        100
    }
}

/// Spread: pods with the same labels (a Deployment's replicas, say) prefer the node that
/// has the fewest of them, 0–100 (kube-scheduler's default topology spreading, by node).
fn spread(pod: &PodInfo, info: &NodeInfo, same_labels_max: usize) -> i64 {
    if same_labels_max == 0 {
        return 100;
    }
    let here = info.same_labels(pod.label_set);
    ((same_labels_max - here.min(same_labels_max)) * 100 / same_labels_max) as i64
}

/// Kubernetes' wording: `0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node selector.`
pub fn failure_message(total: usize, reasons: &[String]) -> String {
    if total == 0 {
        return "0/0 nodes are available: no nodes registered (start an agent: kubelabd agent --node-name NAME)".into();
    }
    format!("0/{total} nodes are available: {}.", reason_counts(reasons))
}

/// `1 Insufficient memory, 2 node(s) were not ready`: each reason once, with its count.
pub fn reason_counts(reasons: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in reasons {
        match counts.iter_mut().find(|(x, _)| *x == r.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((r, 1)),
        }
    }
    counts.sort();
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::{
        Container, NodeResources, NodeSpec, NodeStatus, ObjectMeta, PodSpec, ResourceRequirements,
    };

    fn node(labels: &[(&str, &str)], taints: Vec<Taint>, unschedulable: bool) -> NodeInfo {
        let alloc = NodeResources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            pods: 2,
        };
        NodeInfo::new(Node {
            metadata: Some(ObjectMeta {
                name: "n".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                taints,
                unschedulable,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                ready: true,
                allocatable: Some(alloc),
                capacity: Some(alloc),
                ..Default::default()
            }),
        })
    }

    fn pod(memory: i64, selector: &[(&str, &str)], tolerations: Vec<Toleration>) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        memory_request_bytes: memory,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                node_selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                tolerations,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn no_schedule(key: &str, value: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: "NoSchedule".into(),
            time_added_ms: 0,
        }
    }

    #[test]
    fn filters_give_kubernetes_reasons() {
        let check = |p: &Pod, n: &NodeInfo| filter(&PodInfo::new(p), n);
        let plain = pod(0, &[], vec![]);
        assert_eq!(check(&plain, &node(&[], vec![], false)), None);
        assert_eq!(
            check(&plain, &node(&[], vec![], true)).as_deref(),
            Some("node(s) were unschedulable")
        );
        assert_eq!(
            check(
                &pod(0, &[("disk", "ssd")], vec![]),
                &node(&[("disk", "hdd")], vec![], false)
            )
            .as_deref(),
            Some("node(s) didn't match Pod's node selector")
        );
        assert_eq!(
            check(
                &pod(0, &[("disk", "ssd")], vec![]),
                &node(&[("disk", "ssd")], vec![], false)
            ),
            None
        );
        let gpu = node(&[], vec![no_schedule("gpu", "true")], false);
        assert_eq!(
            check(&plain, &gpu).as_deref(),
            Some("node(s) had untolerated taint {gpu: true}")
        );
        let equal = Toleration {
            key: "gpu".into(),
            operator: "Equal".into(),
            value: "true".into(),
            effect: "NoSchedule".into(),
            toleration_seconds: None,
        };
        assert_eq!(check(&pod(0, &[], vec![equal]), &gpu), None);
        let exists_all = Toleration {
            operator: "Exists".into(),
            ..Default::default()
        };
        assert_eq!(check(&pod(0, &[], vec![exists_all]), &gpu), None);
        assert_eq!(
            check(&pod(2 << 30, &[], vec![]), &node(&[], vec![], false)).as_deref(),
            Some("Insufficient memory")
        );
        let mut full = node(&[], vec![], false);
        full.pods = 2;
        assert_eq!(check(&plain, &full).as_deref(), Some("Too many pods"));
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score_but_does_not_filter() {
        let p = pod(0, &[], vec![]);
        let tainted = node(
            &[],
            vec![Taint {
                key: "spot".into(),
                value: String::new(),
                effect: "PreferNoSchedule".into(),
                time_added_ms: 0,
            }],
            false,
        );
        let clean = node(&[], vec![], false);
        let p = PodInfo::new(&p);
        assert_eq!(filter(&p, &tainted), None);
        assert!(score(&p, &tainted, 0) < score(&p, &clean, 0));
    }

    #[test]
    fn failure_message_reads_like_kubernetes() {
        let reasons: Vec<String> = [
            "Insufficient memory",
            "node(s) didn't match Pod's node selector",
            "node(s) didn't match Pod's node selector",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            failure_message(3, &reasons),
            "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node selector."
        );
    }
}
