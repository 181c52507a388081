//! Stopping a pod's containers, for its worker: SIGTERM, the grace period, SIGKILL, the
//! wait for their shims; then the delete finished in the API. Starts nothing.

use super::*;

impl PodWorker {
    /// Stops the named running containers: SIGTERM, then SIGKILL once `grace` has passed.
    /// Their exits are handled as any exit (`may_restart`: whether the policy may restart them).
    pub(super) async fn kill_containers(
        &mut self,
        names: &[String],
        grace: Duration,
        may_restart: bool,
    ) {
        let running: Vec<(String, i32)> = names
            .iter()
            .filter_map(|n| {
                let pid = self.containers.get(n)?.running.as_ref()?.pid;
                Some((n.clone(), pid))
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let first = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        for (name, pid) in &running {
            tracing::info!(container = %name, ?grace, "stopping container");
            if !may_restart {
                self.k.events.pod_event(
                    &self.pod,
                    "Normal",
                    "Killing",
                    format!("Stopping container {name}"),
                );
            }
            self.k.node.signal(*pid, first);
        }
        let mut killed = first == Signal::SIGKILL;
        // Until the grace period ends; once SIGKILL is sent, until the reaping should be done.
        let mut deadline = crate::deadline::tokio_after(if killed { KILL_TIMEOUT } else { grace });
        let still_running = |w: &PodWorker| {
            running
                .iter()
                .filter_map(|(n, _)| w.containers.get(n)?.running.as_ref().map(|s| s.pid))
                .collect::<Vec<i32>>()
        };
        // Probe verdicts of other containers wait until these are stopped; they are only
        // sent on a change, so none may be lost.
        let mut deferred = Vec::new();
        while !still_running(self).is_empty() {
            tokio::select! {
                Some(msg) = self.msgs_rx.recv() => match msg {
                    WorkerMsg::Exited(name, exit) => self.on_exit(&name, exit, may_restart),
                    probe @ WorkerMsg::Probe(..) => deferred.push(probe),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if killed {
                        tracing::warn!("containers did not die after SIGKILL; giving up on them");
                        break;
                    }
                    for pid in still_running(self) {
                        self.k.node.signal(pid, Signal::SIGKILL);
                    }
                    killed = true;
                    deadline = crate::deadline::tokio_after(KILL_TIMEOUT);
                }
            }
        }
        for msg in deferred {
            let _ = self.msgs_tx.try_send(msg);
        }
    }

    /// The containers are stopped and their files gone: let the apiserver remove the pod.
    pub(super) async fn finish_delete(&self) {
        let meta = self.pod.metadata.clone().unwrap_or_default();
        let request = DeletePodRequest {
            resource_version: 0,
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            grace_period_seconds: Some(0),
            force: true,
        };
        // A hung apiserver must not hold the worker (and its pod's slot) forever: the
        // delete is retried on the next relist, which finds the pod stopped.
        let asked = tokio::time::timeout(
            Duration::from_secs(10),
            self.k.api.pods.clone().delete(request),
        )
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(
                "the apiserver did not answer within 10s",
            ))
        });
        match asked {
            Ok(_) => tracing::info!("pod deleted"),
            Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::Aborted) => {}
            Err(e) => {
                tracing::warn!(error = %e.message(), "could not finish the delete; it will be retried on relist")
            }
        }
    }
}
