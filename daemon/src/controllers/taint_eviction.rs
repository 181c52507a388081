//! The taint eviction controller (kube-controller-manager's `taint-eviction-controller`):
//! a pod bound to a node with a `NoExecute` taint it does not tolerate is deleted at once;
//! one that tolerates it for `tolerationSeconds` is deleted when those have run out,
//! counted from the taint's `timeAdded`; one that tolerates it without a limit stays.
//!
//! The taints come from users (`kubectl taint node n k=v:NoExecute`) and from the
//! apiserver's node lifecycle (`node.kubernetes.io/unreachable` when an agent stops
//! heartbeating; every pod tolerates it for 300 s unless the lab chose otherwise). The
//! deletion is an ordinary graceful one: the pod's ReplicaSet makes a replacement, and the
//! node's agent, if it ever comes back, stops the old pod's containers and finishes the
//! delete. Owns only those deletions and their `TaintManagerEviction` events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

use super::client::{Api, Client};
use super::events::Recorder;
use super::informer::Informer;

/// The longest wait before looking again, even when nothing changed and no eviction is
/// due (a clock that jumped is noticed).
const IDLE: Duration = Duration::from_secs(30);

pub struct TaintEvictionController {
    client: Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    recorder: Recorder,
    wake: Arc<tokio::sync::Notify>,
}

/// What becomes of a pod on a tainted node.
#[derive(Debug, PartialEq)]
enum Verdict {
    Stays,
    EvictAt(i64),
}

impl TaintEvictionController {
    pub fn new(client: Client, pods: Arc<Informer<Pod>>, nodes: Arc<Informer<Node>>) -> Arc<Self> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        pods.on_change(move |_| w.notify_one());
        let w = wake.clone();
        nodes.on_change(move |_| w.notify_one());
        Arc::new(TaintEvictionController {
            recorder: Recorder::new(client.clone(), "taint-eviction-controller"),
            client,
            pods,
            nodes,
            wake,
        })
    }

    pub async fn run(self: Arc<Self>) {
        self.pods.wait_synced().await;
        self.nodes.wait_synced().await;
        // Pods with an eviction pending (by uid), to say so when it is cancelled.
        let mut pending = HashSet::new();
        loop {
            let now = kubelab_proto::now_ms();
            let next = self.pass(now, &mut pending).await;
            let wait = next
                .map(|at| Duration::from_millis(at.saturating_sub(now).max(0) as u64))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Evicts what is due; returns when the next eviction falls due.
    async fn pass(&self, now: i64, pending: &mut HashSet<String>) -> Option<i64> {
        let taints: HashMap<String, Vec<Taint>> = self
            .nodes
            .list()
            .iter()
            .filter_map(|node| {
                let no_execute: Vec<Taint> = node
                    .spec
                    .as_ref()?
                    .taints
                    .iter()
                    .flatten()
                    .filter(|t| t.effect == "NoExecute")
                    .cloned()
                    .collect();
                let name = node.metadata.name.clone()?;
                (!no_execute.is_empty()).then_some((name, no_execute))
            })
            .collect();
        if taints.is_empty() && pending.is_empty() {
            return None; // the usual case: no pod to look at
        }
        let mut next: Option<i64> = None;
        let mut still_pending = HashSet::new();
        for pod in self.pods.list() {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let spec = pod.spec.as_ref();
            let on = spec.and_then(|s| s.node_name.as_deref()).unwrap_or("");
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
            match taints.get(on).map(|t| verdict(tolerations, t, now)) {
                Some(Verdict::EvictAt(at)) if at <= now => self.evict(&pod).await,
                Some(Verdict::EvictAt(at)) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    still_pending.insert(uid);
                }
                Some(Verdict::Stays) | None => {
                    if pending.contains(&uid) {
                        self.recorder.record(
                            &*pod,
                            false,
                            "TaintManagerEviction",
                            format!("Cancelling deletion of Pod {}", pod_name(&pod)),
                        );
                    }
                }
            }
        }
        *pending = still_pending;
        next
    }

    async fn evict(&self, pod: &Pod) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        tracing::info!(pod = %pod_name(pod), node = ?pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), "evicting: a NoExecute taint it does not tolerate (any more)");
        self.recorder.record(
            pod,
            false,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {}", pod_name(pod)),
        );
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        match api
            .delete(&name, "Background", pod.metadata.uid.as_deref())
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "eviction failed; trying again"),
        }
    }
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Kubernetes' rules: a pod stays for ever when every NoExecute taint is tolerated
/// without `tolerationSeconds`; a taint nothing tolerates evicts it now; otherwise it
/// goes when the shortest `tolerationSeconds` of a tolerating toleration has run out
/// since its taint was added (0 or less: at once).
fn verdict(tolerations: &[Toleration], taints: &[Taint], now: i64) -> Verdict {
    let mut at: Option<i64> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Verdict::EvictAt(now);
        }
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = kubelab_proto::k8s::time_ms(&taint.time_added);
        let since = if added > 0 { added } else { now };
        let due = since.saturating_add(seconds.max(0).saturating_mul(1000));
        at = Some(at.map_or(due, |a| a.min(due)));
    }
    at.map_or(Verdict::Stays, Verdict::EvictAt)
}

/// Whether a toleration covers a taint: same effect (or any), and the key with
/// `Exists`, or the key and value with `Equal` (the default); an empty key with
/// `Exists` covers every taint.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_matches = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => effect_matches && (key.is_empty() || key == taint.key),
        _ => {
            effect_matches
                && key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, added_ms: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            time_added: kubelab_proto::k8s::time(added_ms),
            value: None,
        }
    }

    fn exists(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn an_untolerated_taint_evicts_now() {
        let now = 1_700_000_000_000;
        let taints = [taint("dedicated", now - 5)];
        assert_eq!(verdict(&[], &taints, now), Verdict::EvictAt(now));
    }

    #[test]
    fn toleration_seconds_count_from_the_taint() {
        let added = 1_700_000_000_000;
        let taints = [taint("node.kubernetes.io/unreachable", added)];
        let tolerations = [
            exists("node.kubernetes.io/unreachable", Some(300)),
            exists("node.kubernetes.io/unreachable", Some(5)),
        ];
        assert_eq!(
            verdict(&tolerations, &taints, added + 1),
            Verdict::EvictAt(added + 5_000)
        );
        // Tolerated for ever.
        let forever = [exists("", None)];
        assert_eq!(verdict(&forever, &taints, added), Verdict::Stays);
    }

    #[test]
    fn equal_needs_the_value() {
        let mut t = taint("gpu", 1_000);
        t.value = Some("a100".into());
        let equal = Toleration {
            key: Some("gpu".into()),
            value: Some("a100".into()),
            ..Default::default()
        };
        assert!(tolerates(&equal, &t));
        t.value = Some("h100".into());
        assert!(!tolerates(&equal, &t));
    }
}
