//! What the Job controller reads of a Job's pods, as kube-controller-manager's job
//! controller reads them: the counts, when each finished pod finished, the pod-failure
//! back-off, whether the backoff limit or the deadline is passed, and the conditions.
//! Pure functions of the pods, the Job and the time.
//!
//! Kubernetes keeps a count of finished pods in the Job's status with a finalizer on
//! each pod (`batch.kubernetes.io/job-tracking`), so a pod deleted after it finished
//! still counts. kubelab's pods have no finalizers: the counts are the finished pods
//! present, and never go down (a finished pod deleted by hand stays counted unless a
//! new one finishes meanwhile).

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use kubelab_proto::k8s::{time, time_ms};

use super::pod_state::phase;

/// The pod-failure back-off: 10 s after the first failure, doubling, at most 10 min
/// (`DefaultJobPodFailureBackOff`, `MaxJobPodFailureBackOff`).
const BACKOFF_BASE_MS: i64 = 10_000;
const BACKOFF_MAX_MS: i64 = 600_000;

pub fn succeeded(pod: &Pod) -> bool {
    phase(pod) == "Succeeded"
}

/// Failed, or deleted before it succeeded (with the default podReplacementPolicy, a
/// running pod deleted by hand is a failure, and is replaced at once).
pub fn failed(pod: &Pod) -> bool {
    phase(pod) == "Failed" || (pod.metadata.deletion_timestamp.is_some() && !succeeded(pod))
}

/// Being deleted and not finished yet.
pub fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// When a finished pod finished: its last container's end, else when it stopped being
/// Ready, else when it was deleted, else when it was made.
pub fn finish_ms(pod: &Pod) -> i64 {
    let status = pod.status.clone().unwrap_or_default();
    let ended = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| time_ms(&t.finished_at))
        .max()
        .unwrap_or(0);
    if ended > 0 {
        return ended;
    }
    let not_ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .map(|c| time_ms(&c.last_transition_time))
        .unwrap_or(0);
    if not_ready > 0 {
        return not_ready;
    }
    let deleted = time_ms(&pod.metadata.deletion_timestamp);
    if deleted > 0 {
        return deleted;
    }
    time_ms(&pod.metadata.creation_timestamp)
}

/// How long new pods must still wait after the failures since the last success:
/// `10 s × 2^(n-1)` from the last failure, capped at 10 minutes.
pub fn backoff_remaining_ms(pods: &[&Pod], now: i64) -> i64 {
    let last_success = pods
        .iter()
        .filter(|p| succeeded(p))
        .map(|p| finish_ms(p))
        .max()
        .unwrap_or(0);
    let failures: Vec<i64> = pods
        .iter()
        .filter(|p| failed(p))
        .map(|p| finish_ms(p))
        .filter(|at| *at > last_success)
        .collect();
    let Some(last) = failures.iter().max() else {
        return 0;
    };
    let exponent = u32::try_from(failures.len() - 1)
        .unwrap_or(u32::MAX)
        .min(16);
    let delay = BACKOFF_BASE_MS
        .saturating_mul(1_i64 << exponent)
        .min(BACKOFF_MAX_MS);
    (last.saturating_add(delay) - now).max(0)
}

/// restartPolicy OnFailure: the containers of the running and pending pods restarted
/// `backoffLimit` times in all (or at all, with a limit of 0).
pub fn past_backoff_limit_on_failure(job: &Job, pods: &[&Pod]) -> bool {
    let spec = job.spec.clone().unwrap_or_default();
    let policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("");
    if policy != "OnFailure" {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| i64::from(c.restart_count))
        .sum();
    let limit = i64::from(spec.backoff_limit.unwrap_or(6));
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// The condition of this type, if the Job has it with status True.
pub fn condition<'a>(job: &'a Job, kind: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Complete or Failed: nothing more is done but the TTL.
pub fn is_finished(job: &Job) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

/// When a finished Job finished (its Complete or Failed condition's transition).
pub fn finished_ms(job: &Job) -> Option<i64> {
    condition(job, "Complete")
        .or_else(|| condition(job, "Failed"))
        .map(|c| time_ms(&c.last_transition_time))
}

pub fn new_condition(kind: &str, reason: &str, message: &str, now: i64) -> JobCondition {
    JobCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: time(now),
        last_transition_time: time(now),
    }
}

/// Sets a condition of this type (replacing one of the same type; its transition time
/// kept when its status did not change).
pub fn set_condition(conditions: &mut Vec<JobCondition>, mut new: JobCondition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };

    fn finished(phase: &str, at_ms: i64) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: time(at_ms),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_backoff_doubles_from_the_last_failure_since_the_last_success() {
        let t = 1_700_000_000_000;
        let one = [finished("Failed", t)];
        let refs: Vec<&Pod> = one.iter().collect();
        assert_eq!(backoff_remaining_ms(&refs, t + 4_000), 6_000);
        let three = [
            finished("Failed", t),
            finished("Failed", t + 1_000),
            finished("Failed", t + 2_000),
        ];
        let refs: Vec<&Pod> = three.iter().collect();
        assert_eq!(backoff_remaining_ms(&refs, t + 2_000), 40_000);
        // A success after them resets it.
        let reset = [finished("Failed", t), finished("Succeeded", t + 5_000)];
        let refs: Vec<&Pod> = reset.iter().collect();
        assert_eq!(backoff_remaining_ms(&refs, t + 5_000), 0);
        // Capped at ten minutes.
        let many: Vec<Pod> = (0..30).map(|i| finished("Failed", t + i)).collect();
        let refs: Vec<&Pod> = many.iter().collect();
        assert_eq!(backoff_remaining_ms(&refs, t + 29), 600_000);
    }
}
