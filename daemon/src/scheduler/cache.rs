//! The scheduler's view of the cluster: nodes with what is already placed on each, the
//! pods, and the queue of pods waiting for a node.
//!
//! Kept current from the watches, and by the scheduler's own decisions the moment they are
//! made ("assumed", as kube-scheduler does) so that the next pod of a burst sees them. Every
//! count is updated incrementally: scheduling one pod never walks all pods. It never calls
//! the API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use kubelab_proto::v1::{Node, NodeResources, Pod};

use super::framework::{requests, requests_for_scoring};

/// Sums of requests. i128: each request is an i64 the API accepted, and the sum of every
/// container of every pod on a node cannot overflow it, so adding and taking away stay
/// exact (a saturated sum would not come back down when the pod goes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
}

impl Resources {
    fn add(&mut self, other: Resources, sign: i64) {
        self.cpu_millis += i128::from(sign) * other.cpu_millis;
        self.memory_bytes += i128::from(sign) * other.memory_bytes;
    }
}

/// One node and what the pods bound to it ask for.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub node: Node,
    /// The sum of the requests of the pods placed here (what fits is checked against this).
    pub requested: Resources,
    /// The same with kube-scheduler's non-zero defaults (what scoring uses).
    pub non_zero: Resources,
    pub pods: i64,
    /// How many pods of each label set are here (for spreading).
    label_sets: HashMap<u64, usize>,
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        NodeInfo {
            node,
            ..Default::default()
        }
    }

    pub fn allocatable(&self) -> NodeResources {
        self.node
            .status
            .as_ref()
            .and_then(|s| s.allocatable)
            .unwrap_or_default()
    }

    /// How many pods with exactly these labels (`label_set`) are here.
    pub fn same_labels(&self, label_set: Option<u64>) -> usize {
        label_set
            .and_then(|h| self.label_sets.get(&h).copied())
            .unwrap_or(0)
    }

    fn account(&mut self, pod: &Pod, sign: i64) {
        self.requested.add(requests(pod), sign);
        self.non_zero.add(requests_for_scoring(pod), sign);
        self.pods += sign;
        if let Some(h) = label_set(pod) {
            let n = self.label_sets.entry(h).or_default();
            *n = n.saturating_add_signed(sign as isize);
            if *n == 0 {
                self.label_sets.remove(&h);
            }
        }
    }
}

/// A hash of the pod's labels, sorted; `None` for a pod without labels (nothing to spread).
pub fn label_set(pod: &Pod) -> Option<u64> {
    let labels = &pod.metadata.as_ref()?.labels;
    if labels.is_empty() {
        return None;
    }
    let mut sorted: Vec<_> = labels.iter().collect();
    sorted.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sorted.hash(&mut h);
    Some(h.finish())
}

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .filter(|n| !n.is_empty())
}

fn is_terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

/// Waiting for a node: unbound and not being deleted.
fn is_pending(pod: &Pod) -> bool {
    node_of(pod).is_none()
        && pod
            .metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp_ms == 0)
}

#[derive(Default)]
pub struct ClusterCache {
    pub nodes: HashMap<String, NodeInfo>,
    /// The nodes' names in a fixed order, and where the next search starts: a search that
    /// stops early (see `nodes_to_find`) does not always favour the same nodes.
    pub node_order: Vec<String>,
    pub next_start: usize,
    pods: HashMap<String, Pod>,
    /// Pods to try now, oldest first: (creation time, key).
    active: BTreeSet<(i64, String)>,
    /// Pods that fit nowhere at their last try; moved back to `active` when the cluster
    /// changes in a way that may make room, or on the periodic retry.
    unschedulable: HashSet<String>,
}

impl ClusterCache {
    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.pods.get(key)
    }

    /// Adds or replaces a node; returns whether the change can make room for a waiting pod
    /// (a heartbeat alone cannot).
    pub fn set_node(&mut self, node: Node) -> bool {
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        match self.nodes.get_mut(&name) {
            Some(info) => {
                let old = &info.node;
                let matters = old.spec != node.spec
                    || old.metadata.as_ref().map(|m| &m.labels)
                        != node.metadata.as_ref().map(|m| &m.labels)
                    || kubelab_proto::node_is_ready(old) != kubelab_proto::node_is_ready(&node)
                    || info.allocatable()
                        != node
                            .status
                            .as_ref()
                            .and_then(|s| s.allocatable)
                            .unwrap_or_default();
                info.node = node;
                matters
            }
            None => {
                // Pods already bound to it (listed before the node) are counted now.
                let mut info = NodeInfo::new(node);
                for pod in self.pods.values() {
                    if node_of(pod) == Some(name.as_str()) && !is_terminal(pod) {
                        info.account(pod, 1);
                    }
                }
                self.nodes.insert(name.clone(), info);
                self.node_order.push(name);
                true
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.node_order.retain(|n| n != name);
    }

    /// Adds or replaces a pod, moving its counts and its place in the queue.
    pub fn set_pod(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        self.forget_pod(&key);
        if let Some(node) = node_of(&pod).filter(|_| !is_terminal(&pod)) {
            if let Some(info) = self.nodes.get_mut(node) {
                info.account(&pod, 1);
            }
        }
        if is_pending(&pod) {
            self.active.insert((created(&pod), key.clone()));
        }
        self.pods.insert(key, pod);
    }

    /// Removes a pod and its counts; returns it.
    pub fn remove_pod(&mut self, key: &str) -> Option<Pod> {
        let pod = self.forget_pod(key);
        self.unschedulable.remove(key);
        pod
    }

    /// Takes the pod out, with its counts and its place in the queue.
    fn forget_pod(&mut self, key: &str) -> Option<Pod> {
        let old = self.pods.remove(key)?;
        if let Some(node) = node_of(&old).filter(|_| !is_terminal(&old)) {
            if let Some(info) = self.nodes.get_mut(node) {
                info.account(&old, -1);
            }
        }
        self.active.remove(&(created(&old), key.to_string()));
        Some(old)
    }

    /// The next pod to schedule, oldest first.
    pub fn pop_active(&mut self) -> Option<Pod> {
        while let Some((_, key)) = self.active.pop_first() {
            match self.pods.get(&key) {
                Some(pod) if is_pending(pod) => return Some(pod.clone()),
                _ => continue,
            }
        }
        None
    }

    /// Puts the pod back unbound, to be tried again later (with the unschedulable ones).
    pub fn set_pod_to_retry(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        let queued = (created(&pod), key.clone());
        self.set_pod(pod);
        self.active.remove(&queued);
        self.unschedulable.insert(key);
    }

    pub fn mark_unschedulable(&mut self, key: String) {
        self.unschedulable.insert(key);
    }

    /// Every waiting pod is tried again (kube-scheduler's MoveAllToActiveQueue).
    pub fn retry_unschedulable(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            if let Some(pod) = self.pods.get(&key).filter(|p| is_pending(p)) {
                self.active.insert((created(pod), key));
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.active.len() + self.unschedulable.len()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

fn created(pod: &Pod) -> i64 {
    pod.metadata
        .as_ref()
        .map(|m| m.creation_timestamp_ms)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::{ObjectMeta, PodSpec};

    fn pod(name: &str, node: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn counts_follow_pods_as_they_are_bound_and_removed() {
        let mut cache = ClusterCache::default();
        cache.set_node(node("n1"));
        cache.set_pod(pod("a", ""));
        assert_eq!(cache.pending(), 1);
        let a = cache.pop_active().expect("a waits");
        assert_eq!(pod_key(&a), "default/a");
        cache.set_pod(pod("a", "n1"));
        cache.set_pod(pod("b", "n1"));
        let info = &cache.nodes["n1"];
        assert_eq!((info.pods, info.same_labels(label_set(&a))), (2, 2));
        assert_eq!(info.non_zero.cpu_millis, 200);
        cache.remove_pod("default/a");
        assert_eq!(cache.nodes["n1"].pods, 1);
        // A node seen after its pods counts them.
        cache.set_pod(pod("c", "n2"));
        cache.set_node(node("n2"));
        assert_eq!(cache.nodes["n2"].pods, 1);
        assert_eq!(cache.pending(), 0);
        // A refused bind puts the pod back to wait, and leaves the others' places alone.
        cache.set_pod(pod("d", ""));
        cache.set_pod(pod("e", "n1"));
        cache.set_pod_to_retry(pod("e", ""));
        assert_eq!(cache.nodes["n1"].pods, 1);
        assert_eq!(pod_key(&cache.pop_active().expect("d waits")), "default/d");
        assert!(cache.pop_active().is_none());
        cache.retry_unschedulable();
        assert_eq!(pod_key(&cache.pop_active().expect("e again")), "default/e");
    }
}
