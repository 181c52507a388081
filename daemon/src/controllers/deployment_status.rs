//! A Deployment's status, as kube-controller-manager writes it: the counts summed over
//! its ReplicaSets, the `Available` condition (at least `replicas - maxUnavailable`
//! available) and the `Progressing` one (`NewReplicaSetCreated`, `ReplicaSetUpdated`,
//! `NewReplicaSetAvailable`, `DeploymentPaused`, and `ProgressDeadlineExceeded` once
//! nothing moved for `progressDeadlineSeconds`) — what `kubectl rollout status` reads.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::client::{Api, ClientError};
use super::deployment::DeploymentController;
use super::informer::key_of;
use super::rollout::{self, spec_replicas};

fn now() -> Option<Time> {
    kubelab_proto::k8s::time(kubelab_proto::now_ms())
}

impl DeploymentController {
    pub(super) async fn update_status(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        new: Option<usize>,
        created: Option<String>,
    ) -> Result<(), ClientError> {
        let status_of = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
        let replicas = d.spec.replicas.unwrap_or(1);
        let total: i32 = all.iter().map(|rs| status_of(rs).replicas).sum();
        let spec_total: i32 = all.iter().map(spec_replicas).sum();
        let updated = new.map_or(0, |i| status_of(&all[i]).replicas);
        let ready: i32 = all
            .iter()
            .map(|rs| status_of(rs).ready_replicas.unwrap_or(0))
            .sum();
        let available: i32 = all
            .iter()
            .map(|rs| status_of(rs).available_replicas.unwrap_or(0))
            .sum();
        let old = d.status.clone().unwrap_or_default();
        let (_, max_unavailable) = rollout::fenceposts(d);
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let available_condition = if available >= replicas - max_unavailable {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(&mut conditions, "Available", available_condition, false);
        let new_name = new
            .and_then(|i| all[i].metadata.name.clone())
            .unwrap_or_default();
        let complete = updated == replicas && available == replicas && total == replicas;
        let progressed = created.is_some()
            || updated > old.updated_replicas.unwrap_or(0)
            || available > old.available_replicas.unwrap_or(0)
            || ready > old.ready_replicas.unwrap_or(0)
            || total < old.replicas.unwrap_or(0);
        // Not complete, yet marked as if it were (or not marked at all): a rollout whose
        // start was not written (the controller manager stopped just after creating the
        // new ReplicaSet). It is in progress from now, or its deadline would never run.
        let unmarked = !complete
            && conditions
                .iter()
                .find(|c| c.type_.as_deref() == Some("Progressing"))
                .is_none_or(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        let progressing = if d.spec.paused == Some(true) {
            Some((
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".to_string(),
                true,
            ))
        } else if complete {
            Some((
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet {new_name:?} has successfully progressed."),
                false,
            ))
        } else if let Some(name) = &created {
            Some((
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set {name:?}"),
                true,
            ))
        } else if progressed || unmarked {
            Some((
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet {new_name:?} is progressing."),
                true,
            ))
        } else {
            self.deadline_check(d, &conditions, &new_name)
        };
        if let Some((status, reason, message, moved)) = progressing {
            set_condition(
                &mut conditions,
                "Progressing",
                (status, reason, &message),
                moved,
            );
        }
        let count = |n: i32| Some(n).filter(|n| *n != 0);
        let status = DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: count(total),
            updated_replicas: count(updated),
            ready_replicas: count(ready),
            available_replicas: count(available),
            unavailable_replicas: count((spec_total - available).max(0)),
            conditions: Some(conditions),
            collision_count: old.collision_count,
            ..Default::default()
        };
        if status == old {
            return Ok(());
        }
        let mut written = d.clone();
        written.status = Some(status);
        let api = Api::<Deployment>::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = d.metadata.name.as_deref().unwrap_or("");
        match api.replace_status(name, &written).await {
            Ok(_) => Ok(()),
            // Another write came first (a user's change, say): the status goes onto the
            // Deployment as it is now — a transition such as NewReplicaSetCreated is seen
            // once, and lost if not written.
            Err(e) if e.is_conflict() => {
                let mut fresh = api.get(name).await?;
                fresh.status = written.status;
                match api.replace_status(name, &fresh).await {
                    Err(e) if e.is_conflict() => {
                        self.queue.add(key_of(&d.metadata));
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// No progress since the Progressing condition last moved: past the deadline, the
    /// rollout has failed (`ProgressDeadlineExceeded`); before it, look again then.
    fn deadline_check(
        &self,
        d: &Deployment,
        conditions: &[DeploymentCondition],
        new_name: &str,
    ) -> Option<(&'static str, &'static str, String, bool)> {
        let current = conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some("Progressing"))?;
        let in_progress = matches!(
            current.reason.as_deref(),
            Some("ReplicaSetUpdated" | "NewReplicaSetCreated" | "FoundNewReplicaSet")
        );
        if !in_progress {
            return None;
        }
        let deadline_ms =
            i64::from(d.spec.progress_deadline_seconds.unwrap_or(600)).saturating_mul(1000);
        let since = kubelab_proto::k8s::time_ms(&current.last_update_time);
        let waited = kubelab_proto::now_ms().saturating_sub(since);
        if waited >= deadline_ms {
            return Some((
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {new_name:?} has timed out progressing."),
                true,
            ));
        }
        let left = u64::try_from(deadline_ms - waited).unwrap_or(0);
        self.queue.add_after(
            key_of(&d.metadata),
            std::time::Duration::from_millis(left + 100),
        );
        None
    }
}

/// Sets a condition: its transition time moves only when its status does; its update
/// time when `moved` (progress) or when anything in it changed.
fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    kind: &str,
    (status, reason, message): (&str, &str, &str),
    moved: bool,
) {
    let now = now();
    match conditions
        .iter_mut()
        .find(|c| c.type_.as_deref() == Some(kind))
    {
        Some(c) => {
            let changed = c.status.as_deref() != Some(status)
                || c.reason.as_deref() != Some(reason)
                || c.message.as_deref() != Some(message);
            if c.status.as_deref() != Some(status) {
                c.last_transition_time = now.clone();
            }
            if changed || moved {
                c.last_update_time = now;
            }
            c.status = Some(status.into());
            c.reason = Some(reason.into());
            c.message = Some(message.into());
        }
        None => conditions.push(DeploymentCondition {
            type_: Some(kind.into()),
            status: Some(status.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: now.clone(),
            last_update_time: now,
        }),
    }
}
