//! The StatusManager: carries pod statuses from the pod workers to the apiserver.
//!
//! Workers hand it the newest status of their pod and go on at once; it writes them in the
//! background, keeping only the newest per pod when the apiserver is slow or down (a
//! status is a snapshot, so older ones are worthless). It remembers what it wrote, and
//! writes it again when the API shows something else (the node controller marked the pods
//! not Ready while this agent was cut off). It never decides what a status is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubelab_proto::v1::{PodStatus, UpdatePodStatusRequest};
use tokio::sync::Notify;

use crate::client::ApiClient;

/// How long one status write may take before it is retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
pub struct StatusManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Newest unwritten status per pod uid.
    pending: Mutex<HashMap<String, UpdatePodStatusRequest>>,
    /// Per pod uid: the newest status the worker set, and the resource version our last
    /// successful write produced (a change the watch shows after it is someone else's).
    latest: Mutex<HashMap<String, (UpdatePodStatusRequest, u64)>>,
    wake: Notify,
}

impl StatusManager {
    /// Starts the writer. It runs for as long as the agent does.
    pub fn start(api: ApiClient) -> Self {
        let manager = StatusManager::default();
        let inner = manager.inner.clone();
        tokio::spawn(async move {
            loop {
                inner.wake.notified().await;
                let batch: Vec<_> = {
                    let mut pending = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                    std::mem::take(&mut *pending).into_values().collect()
                };
                for request in batch {
                    let uid = request.uid.clone();
                    // A hung apiserver must not hold every later status: time out, retry.
                    let written = tokio::time::timeout(
                        WRITE_TIMEOUT,
                        api.pods.clone().update_status(request.clone()),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(
                            "the apiserver did not answer within 10s",
                        ))
                    });
                    match written {
                        Ok(written) => {
                            let version = written
                                .get_ref()
                                .metadata
                                .as_ref()
                                .map(|m| m.resource_version)
                                .unwrap_or(0);
                            if let Some(entry) = inner
                                .latest
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_mut(&uid)
                            {
                                entry.1 = entry.1.max(version);
                            }
                        }
                        // The pod is gone or replaced: its status no longer matters.
                        Err(e)
                            if matches!(e.code(), tonic::Code::NotFound | tonic::Code::Aborted) => {
                        }
                        Err(e) => {
                            tracing::warn!(pod = %request.name, error = %e.message(), "status not written; will retry");
                            // Retried only while the pod is still known (not forgotten).
                            let known = inner
                                .latest
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .contains_key(&uid);
                            if known {
                                inner
                                    .pending
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .entry(uid)
                                    .or_insert(request);
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            inner.wake.notify_one();
                        }
                    }
                }
            }
        });
        manager
    }

    /// Called with each version of a pod the watch brings. A version newer than our last
    /// write whose status is not the newest we set was written by someone else (the node
    /// controller, while this agent was cut off): ours is written again. Older versions
    /// are echoes of our own writes and are ignored.
    pub fn reconcile(&self, pod: &kubelab_proto::v1::Pod) {
        let Some(meta) = pod.metadata.as_ref() else {
            return;
        };
        // Compared in place: most events are echoes of our own writes, and cost no copy.
        let latest = {
            let latest = self.inner.latest.lock().unwrap_or_else(|e| e.into_inner());
            match latest.get(&meta.uid) {
                Some((request, written_version))
                    if *written_version != 0
                        && meta.resource_version > *written_version
                        && request.status != pod.status =>
                {
                    request.clone()
                }
                _ => return,
            }
        };
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.contains_key(&meta.uid) {
            return;
        }
        tracing::info!(pod = %latest.name, "the API shows a status this agent did not write: writing its own again");
        pending.insert(meta.uid.clone(), latest);
        self.inner.wake.notify_one();
    }

    /// The pod is gone: nothing more to write or remember for it.
    pub fn forget(&self, uid: &str) {
        self.inner
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// The newest status a worker set for the pod `uid` (for the workers' unit tests).
    #[cfg(test)]
    pub fn newest(&self, uid: &str) -> Option<PodStatus> {
        self.inner
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .and_then(|(request, _)| request.status.clone())
    }

    pub fn set_status(&self, namespace: &str, name: &str, uid: &str, status: PodStatus) {
        let request = UpdatePodStatusRequest {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            status: Some(status),
            resource_version: 0,
        };
        self.inner
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(uid.to_string())
            .and_modify(|e| e.0 = request.clone())
            .or_insert((request.clone(), 0));
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), request);
        self.inner.wake.notify_one();
    }
}
