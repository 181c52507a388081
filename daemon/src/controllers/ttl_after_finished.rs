//! The TTL-after-finished controller (kube-controller-manager's
//! `ttl-after-finished-controller`): a Job with `ttlSecondsAfterFinished` is deleted that
//! many seconds after it finished (its Complete or Failed condition), in the foreground
//! so its pods go first, guarded by its uid. It records no events, as in Kubernetes.
//! Owns only those deletions.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;

use super::client::{Api, Client};
use super::informer::Informer;
use super::job_status;
use super::pod_control::namespace_of;

/// The longest wait before looking again when nothing changed.
const IDLE: Duration = Duration::from_secs(30);

pub struct TtlAfterFinishedController {
    client: Client,
    jobs: Arc<Informer<Job>>,
    wake: Arc<tokio::sync::Notify>,
}

/// When a finished Job with a TTL is due to go.
fn expires_ms(job: &Job) -> Option<i64> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = job_status::finished_ms(job)?;
    Some(finished.saturating_add(i64::from(ttl.max(0)).saturating_mul(1000)))
}

impl TtlAfterFinishedController {
    pub fn new(client: Client, jobs: Arc<Informer<Job>>) -> Arc<Self> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        jobs.on_change(move |_| w.notify_one());
        Arc::new(TtlAfterFinishedController { client, jobs, wake })
    }

    pub async fn run(self: Arc<Self>) {
        self.jobs.wait_synced().await;
        loop {
            let now = kubelab_proto::now_ms();
            let mut next: Option<i64> = None;
            for job in self.jobs.list() {
                match expires_ms(&job) {
                    Some(at) if at <= now => self.delete(&job).await,
                    Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                    None => {}
                }
            }
            let wait = next
                .map(|at| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn delete(&self, job: &Job) {
        let name = job.metadata.name.clone().unwrap_or_default();
        let api = Api::<Job>::namespaced(self.client.clone(), namespace_of(&job.metadata));
        tracing::info!(job = %name, "finished and its ttlSecondsAfterFinished passed: deleting it");
        match api
            .delete(&name, "Foreground", job.metadata.uid.as_deref())
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => tracing::warn!(job = %name, error = %e, "could not delete; trying again"),
        }
    }
}
