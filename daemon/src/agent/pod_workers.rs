//! PodWorkers: one task per pod, so that syncs of one pod never overlap.
//!
//! The agent's watch hands every change of a pod bound to this node to `PodWorkers`,
//! which passes the newest desired state to that pod's worker (`pod_worker`), starting
//! one for a pod it has not seen. It decides nothing about containers itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kubelab_proto::v1::Pod;
use tokio::sync::watch;
use tracing::Instrument;

use super::pod_worker::PodWorker;
use super::Kubelet;

/// What the agent wants of a pod's worker.
#[derive(Clone, Debug)]
pub enum Desired {
    /// The pod as last seen in the API (it may carry a deletion timestamp).
    Pod(Box<Pod>),
    /// The pod is gone from the API (a forced delete): stop everything.
    Gone,
    /// The agent is stopping: stop everything now, leave the API alone.
    Shutdown,
}

struct Worker {
    desired: watch::Sender<Desired>,
    task: tokio::task::JoinHandle<()>,
}

pub struct PodWorkers {
    kubelet: Arc<Kubelet>,
    workers: Mutex<HashMap<String, Worker>>,
}

impl PodWorkers {
    pub fn new(kubelet: Arc<Kubelet>) -> Self {
        PodWorkers {
            kubelet,
            workers: Mutex::new(HashMap::new()),
        }
    }

    /// A pod bound to this node was added or changed.
    pub fn update_pod(&self, pod: Pod) {
        let uid = uid_of(&pod);
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers.retain(|_, w| !w.task.is_finished());
        if let Some(worker) = workers.get(&uid) {
            // Our own status writes come back through the watch: only a change of what the
            // pod asks for (its spec, or a delete) is news to the worker.
            worker.desired.send_if_modified(|current| match current {
                Desired::Pod(old) if old.spec == pod.spec && deletion(old) == deletion(&pod) => {
                    false
                }
                Desired::Pod(_) => {
                    *current = Desired::Pod(Box::new(pod));
                    true
                }
                _ => false,
            });
            return;
        }
        let span = tracing::info_span!("pod", pod = %name_of(&pod), uid = %uid);
        let (tx, rx) = watch::channel(Desired::Pod(Box::new(pod.clone())));
        let worker = PodWorker::new(self.kubelet.clone(), pod, rx);
        let task = tokio::spawn(worker.run().instrument(span));
        workers.insert(uid, Worker { desired: tx, task });
    }

    /// A pod bound to this node is gone from the API.
    pub fn remove_pod(&self, pod: &Pod) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(worker) = workers.get(&uid_of(pod)) {
            let _ = worker.desired.send(Desired::Gone);
        }
    }

    /// Pods this agent runs that the API no longer has (missed while the watch was down).
    pub fn remove_missing(&self, present: &std::collections::HashSet<String>) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for (uid, worker) in workers.iter() {
            if !present.contains(uid) {
                let _ = worker.desired.send(Desired::Gone);
            }
        }
    }

    /// Stops every pod's containers and waits for the workers to finish cleaning up.
    pub async fn shutdown(&self) {
        let workers: Vec<Worker> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        for worker in &workers {
            let _ = worker.desired.send(Desired::Shutdown);
        }
        for worker in workers {
            let _ = worker.task.await;
        }
    }
}

pub fn deletion(pod: &Pod) -> i64 {
    pod.metadata
        .as_ref()
        .map(|m| m.deletion_timestamp_ms)
        .unwrap_or(0)
}

pub fn uid_of(pod: &Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default()
}

pub fn name_of(pod: &Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_default()
}
