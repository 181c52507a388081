//! The Job controller (kube-controller-manager's `job-controller`): runs each Job's pods
//! until `completions` of them succeed, or the Job fails.
//!
//! A sync of one Job, from the informers' caches: count its pods (active, ready,
//! terminating, succeeded, failed), decide whether it has failed (more failures than
//! `backoffLimit`, containers of OnFailure pods restarted that often, or
//! `activeDeadlineSeconds` passed: `FailureTarget`, its active pods deleted, then
//! `Failed` once none is left) or succeeded (`SuccessCriteriaMet`, then `Complete` with
//! `completionTime`); otherwise keep `min(parallelism, completions - succeeded)` pods
//! active, creating them in slow-start batches, and after a failure only once the
//! pod-failure back-off (10 s, doubling) has passed. `suspend` deletes the active pods.
//! It writes pods, events and Job status; never a Job's spec.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use kubelab_proto::k8s::{time, time_ms};

use super::client::{Api, Client, ClientError};
use super::events::Recorder;
use super::informer::{key_of, Change, Informer};
use super::job_status::{self as js, new_condition, set_condition};
use super::pod_control::{namespace_of, PodControl, Template};
use super::pod_state::{self, controller_ref, is_active};
use super::queue::{Expectations, WorkQueue};

/// Most pods one sync creates or deletes (`MaxPodCreateDeletePerSync`).
const BURST: usize = 500;

pub struct JobController {
    client: Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    queue: WorkQueue,
    expectations: Expectations,
    events: Recorder,
    pod_control: PodControl,
}

/// The Job a pod's controller reference names, as a queue key.
fn owner_key(pod: &Pod) -> Option<String> {
    let owner = controller_ref(&pod.metadata)?;
    (owner.kind == "Job").then(|| format!("{}/{}", namespace_of(&pod.metadata), owner.name))
}

/// What a sync found of a Job's pods.
struct Census<'a> {
    owned: Vec<&'a Pod>,
    active: Vec<&'a Pod>,
    ready: usize,
    terminating: usize,
    succeeded: i32,
    failed: i32,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl JobController {
    pub fn new(client: Client, jobs: Arc<Informer<Job>>, pods: Arc<Informer<Pod>>) -> Arc<Self> {
        let events = Recorder::new(client.clone(), "job-controller");
        let controller = Arc::new(JobController {
            pod_control: PodControl::new(client.clone(), events.clone()),
            events,
            client,
            jobs: jobs.clone(),
            pods: pods.clone(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
        });
        let (queue, expectations) = (controller.queue.clone(), controller.expectations.clone());
        jobs.on_change(move |change| match change {
            Change::Applied { new, .. } => queue.add(key_of(&new.metadata)),
            Change::Deleted(job) => expectations.forget(&key_of(&job.metadata)),
        });
        let (queue, expectations) = (controller.queue.clone(), controller.expectations.clone());
        pods.on_change(move |change| {
            let (pod, created, deleting) = match change {
                Change::Applied { old, new } => (
                    new,
                    old.is_none(),
                    new.metadata.deletion_timestamp.is_some()
                        && old
                            .as_ref()
                            .is_some_and(|o| o.metadata.deletion_timestamp.is_none()),
                ),
                Change::Deleted(pod) => (pod, false, pod.metadata.deletion_timestamp.is_none()),
            };
            let Some(key) = owner_key(pod) else { return };
            if created {
                expectations.creation_observed(&key);
            }
            if deleting {
                expectations.deletion_observed(&key);
            }
            queue.add(key);
        });
        controller
    }

    pub async fn run(self: Arc<Self>) {
        self.jobs.wait_synced().await;
        self.pods.wait_synced().await;
        loop {
            let key = self.queue.next().await;
            let span = tracing::debug_span!("sync_job", job = %key);
            let result = tracing::Instrument::instrument(self.sync(&key), span).await;
            if let Err(e) = result {
                tracing::warn!(job = %key, error = %e, "sync failed; retrying");
                self.queue.add_after(key, Duration::from_secs(1));
            }
        }
    }

    fn census<'a>(&self, job: &Job, pods: &'a [Arc<Pod>]) -> Census<'a> {
        let uid = job.metadata.uid.as_deref().unwrap_or("");
        let owned: Vec<&Pod> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
        let old = job.status.clone().unwrap_or_default();
        // Counts never go down (see job_status: no tracking finalizers on pods).
        let succeeded = count(owned.iter().filter(|p| js::succeeded(p)).count());
        let failed = count(owned.iter().filter(|p| js::failed(p)).count());
        Census {
            ready: active.iter().filter(|p| pod_state::is_ready(p)).count(),
            terminating: owned.iter().filter(|p| js::terminating(p)).count(),
            succeeded: succeeded.max(old.succeeded.unwrap_or(0)),
            failed: failed.max(old.failed.unwrap_or(0)),
            active,
            owned,
        }
    }

    async fn sync(&self, key: &str) -> Result<(), ClientError> {
        let Some(job) = self.jobs.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        if js::is_finished(&job) || job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let now = kubelab_proto::now_ms();
        let spec = job.spec.clone().unwrap_or_default();
        let namespace = namespace_of(&job.metadata).to_string();
        let pods = self.pods.list_namespace(&namespace);
        let mut census = self.census(&job, &pods);
        let mut status = job.status.clone().unwrap_or_default();
        let mut conditions = status.conditions.take().unwrap_or_default();
        let suspended = spec.suspend == Some(true);
        if status.start_time.is_none() && !suspended {
            status.start_time = time(now);
        }
        // Said once the status that makes the Job finished is written.
        let mut finish_event = None;
        let failure = self.failure(&job, &census, status.start_time.as_ref(), now);
        if let Some((reason, message)) = &failure {
            set_condition(
                &mut conditions,
                new_condition("FailureTarget", reason, message, now),
            );
            let deleted = self.delete_pods(&job, key, &census.active).await?;
            census.terminating += deleted;
            census.failed = census.failed.saturating_add(count(deleted));
            census.active.clear();
            if census.terminating == 0 {
                set_condition(
                    &mut conditions,
                    new_condition("Failed", reason, message, now),
                );
                finish_event = Some((true, reason.clone(), message.clone()));
            }
        } else if self.expectations.satisfied(key) {
            self.suspension(
                &job,
                key,
                suspended,
                &mut census,
                &mut conditions,
                &mut status,
                now,
            )
            .await?;
            if !suspended {
                self.manage(&job, key, &census).await?;
            }
            let complete = census.active.is_empty()
                && match spec.completions {
                    Some(c) => census.succeeded >= c,
                    None => census.succeeded > 0,
                };
            if complete && census.terminating == 0 {
                let (reason, message) = (
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                set_condition(
                    &mut conditions,
                    new_condition("SuccessCriteriaMet", reason, message, now),
                );
                set_condition(
                    &mut conditions,
                    new_condition("Complete", reason, message, now),
                );
                status.completion_time = time(now);
                finish_event = Some((false, "Completed".into(), "Job completed".into()));
            }
        }
        status.active = Some(count(census.active.len())).filter(|n| *n > 0);
        status.ready = Some(count(census.ready));
        status.terminating = Some(count(census.terminating));
        status.succeeded = Some(census.succeeded).filter(|n| *n > 0);
        status.failed = Some(census.failed).filter(|n| *n > 0);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        if self.write_status(&job, status).await? {
            if let Some((warning, reason, message)) = finish_event {
                self.events.record(&*job, warning, &reason, message);
            }
        }
        Ok(())
    }

    /// Why the Job fails now, if it does: a FailureTarget already set, too many
    /// failures, or its deadline passed (else a sync is queued for when it will pass).
    fn failure(
        &self,
        job: &Job,
        census: &Census,
        started: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
        now: i64,
    ) -> Option<(String, String)> {
        if let Some(c) = js::condition(job, "FailureTarget") {
            return Some((
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ));
        }
        let spec = job.spec.clone().unwrap_or_default();
        if census.failed > spec.backoff_limit.unwrap_or(6)
            || js::past_backoff_limit_on_failure(job, &census.owned)
        {
            return Some((
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        }
        let deadline = spec.active_deadline_seconds?;
        if spec.suspend == Some(true) {
            return None;
        }
        let started = time_ms(&started.cloned());
        let due = started.saturating_add(deadline.saturating_mul(1000));
        if now >= due {
            return Some((
                "DeadlineExceeded".into(),
                "Job was active longer than specified deadline".into(),
            ));
        }
        let wait = u64::try_from(due - now).unwrap_or(0);
        self.queue
            .add_after(key_of(&job.metadata), Duration::from_millis(wait));
        None
    }

    /// `suspend`: the active pods are deleted, and the Suspended condition says so; a
    /// Job resumed starts its clock again.
    #[allow(clippy::too_many_arguments)]
    async fn suspension(
        &self,
        job: &Job,
        key: &str,
        suspended: bool,
        census: &mut Census<'_>,
        conditions: &mut Vec<k8s_openapi::api::batch::v1::JobCondition>,
        status: &mut JobStatus,
        now: i64,
    ) -> Result<(), ClientError> {
        let was = js::condition(job, "Suspended").is_some();
        if suspended {
            let deleted = self.delete_pods(job, key, &census.active).await?;
            census.terminating += deleted;
            census.active.clear();
            if !was {
                set_condition(
                    conditions,
                    new_condition("Suspended", "JobSuspended", "Job suspended", now),
                );
                self.events
                    .record(job, false, "Suspended", "Job suspended".into());
            }
        } else if was {
            let mut resumed = new_condition("Suspended", "JobResumed", "Job resumed", now);
            resumed.status = "False".into();
            set_condition(conditions, resumed);
            status.start_time = time(now);
            self.events
                .record(job, false, "Resumed", "Job resumed".into());
        }
        Ok(())
    }

    /// Keeps `min(parallelism, completions - succeeded)` pods active (with no
    /// completions: parallelism until one succeeds, then no new ones).
    async fn manage(&self, job: &Job, key: &str, census: &Census<'_>) -> Result<(), ClientError> {
        let spec = job.spec.clone().unwrap_or_default();
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let active = count(census.active.len());
        let want = match spec.completions {
            None if census.succeeded > 0 => active,
            None => parallelism,
            Some(c) => c.saturating_sub(census.succeeded).clamp(0, parallelism),
        };
        if active > want {
            let mut surplus: Vec<&Pod> = census.active.clone();
            surplus.sort_by(|a, b| pod_state::deletion_order(a, b));
            surplus.truncate(usize::try_from(active - want).unwrap_or(0).min(BURST));
            self.delete_pods(job, key, &surplus).await?;
            return Ok(());
        }
        let mut missing = want - active;
        if spec.pod_replacement_policy.as_deref() == Some("Failed") {
            missing -= count(census.terminating);
        }
        let missing = usize::try_from(missing).unwrap_or(0).min(BURST);
        if missing == 0 {
            return Ok(());
        }
        let wait = js::backoff_remaining_ms(&census.owned, kubelab_proto::now_ms());
        if wait > 0 {
            tracing::debug!(wait_ms = wait, "pod failure back-off: no new pod yet");
            let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0).max(1_000));
            self.queue.add_after(key.to_string(), wait);
            return Ok(());
        }
        let name = job.metadata.name.clone().unwrap_or_default();
        let from = Template {
            owner: job,
            template: &spec.template,
            generate_name: format!("{name}-"),
        };
        self.expectations.expect(key, missing as i64, 0);
        let (created, error) = self.pod_control.create_in_batches(&from, missing).await;
        for _ in created..missing {
            self.expectations.creation_observed(key);
        }
        if let Some(e) = error {
            self.events
                .record(job, true, "FailedCreate", format!("Error creating: {e}"));
            return Err(e);
        }
        Ok(())
    }

    /// Deletes these pods of the Job; returns how many went.
    async fn delete_pods(&self, job: &Job, key: &str, pods: &[&Pod]) -> Result<usize, ClientError> {
        if pods.is_empty() {
            return Ok(0);
        }
        self.expectations.expect(key, 0, pods.len() as i64);
        let deletes = pods.iter().map(|pod| self.pod_control.delete_pod(job, pod));
        let errors: Vec<ClientError> = join_all(deletes).await.into_iter().flatten().collect();
        for _ in 0..errors.len() {
            self.expectations.deletion_observed(key);
        }
        match errors.into_iter().next() {
            Some(e) => {
                self.events
                    .record(job, true, "FailedDelete", format!("Error deleting: {e}"));
                Err(e)
            }
            None => Ok(pods.len()),
        }
    }

    /// Writes the status when it changed; returns whether it was written.
    async fn write_status(&self, job: &Job, status: JobStatus) -> Result<bool, ClientError> {
        if job.status.as_ref() == Some(&status) {
            return Ok(false);
        }
        let mut updated = job.clone();
        updated.status = Some(status);
        let api = Api::<Job>::namespaced(self.client.clone(), namespace_of(&job.metadata));
        let name = job.metadata.name.clone().unwrap_or_default();
        match api.replace_status(&name, &updated).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            // The informer is behind: the newer Job syncs again when it arrives.
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
