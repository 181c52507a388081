//! The StatusManager: carries pod statuses from the pod workers to the apiserver.
//!
//! Workers hand it the newest status of their pod and go on at once; it writes them in the
//! background, keeping only the newest per pod when the apiserver is slow or down (a
//! status is a snapshot, so older ones are worthless). It never decides what a status is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubelab_proto::v1::{PodStatus, UpdatePodStatusRequest};
use tokio::sync::Notify;

use crate::client::ApiClient;

#[derive(Clone, Default)]
pub struct StatusManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Newest unwritten status per pod uid.
    pending: Mutex<HashMap<String, UpdatePodStatusRequest>>,
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
                    match api.pods.clone().update_status(request.clone()).await {
                        Ok(_) => {}
                        // The pod is gone or replaced: its status no longer matters.
                        Err(e)
                            if matches!(e.code(), tonic::Code::NotFound | tonic::Code::Aborted) => {
                        }
                        Err(e) => {
                            tracing::warn!(pod = %request.name, error = %e.message(), "status not written; will retry");
                            inner
                                .pending
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(uid)
                                .or_insert(request);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            inner.wake.notify_one();
                        }
                    }
                }
            }
        });
        manager
    }

    pub fn set_status(&self, namespace: &str, name: &str, uid: &str, status: PodStatus) {
        let request = UpdatePodStatusRequest {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            status: Some(status),
        };
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), request);
        self.inner.wake.notify_one();
    }
}
