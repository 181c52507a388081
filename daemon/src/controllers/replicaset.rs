//! The ReplicaSet controller (kube-controller-manager's `ReplicaSetController`): keeps
//! `spec.replicas` pods of each ReplicaSet's template running, and its status true.
//!
//! A sync of one ReplicaSet, from the informers' caches: claim the pods (adopt orphans
//! its selector matches, release its pods that stopped matching), count the active
//! ones, create the missing ones in slow-start batches (1, 2, 4 …: a template that cannot
//! make pods fails once, not a thousand times) or delete the surplus in Kubernetes'
//! order, then write `status`. Expectations hold back the next sync's count until the
//! informer has seen what this one did. It writes pods, events and ReplicaSet status;
//! it never edits a ReplicaSet's spec.

use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::client::{Api, Client, ClientError};
use super::events::Recorder;
use super::informer::{key_of, Change, Informer};
use super::pod_control::{namespace_of, PodControl, Template};
use super::pod_state::{self, controller_ref, is_active};
use super::queue::{Expectations, WorkQueue};
use crate::apiserver::selector::LabelSelector;

/// Most pods one sync creates or deletes (kube-controller-manager's `burstReplicas`).
const BURST_REPLICAS: usize = 500;

pub struct ReplicaSetController {
    client: Client,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: WorkQueue,
    expectations: Expectations,
    events: Recorder,
    pods_control: PodControl,
}

/// The ReplicaSet a pod's controller reference names, as a queue key.
fn owner_key(pod: &Pod) -> Option<String> {
    let owner = controller_ref(&pod.metadata)?;
    (owner.kind == "ReplicaSet").then(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            owner.name
        )
    })
}

impl ReplicaSetController {
    pub fn new(
        client: Client,
        replicasets: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
    ) -> Arc<Self> {
        let events = Recorder::new(client.clone(), "replicaset-controller");
        let controller = Arc::new(ReplicaSetController {
            pods_control: PodControl::new(client.clone(), events.clone()),
            events,
            client,
            replicasets: replicasets.clone(),
            pods: pods.clone(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
        });
        let (queue, expectations) = (controller.queue.clone(), controller.expectations.clone());
        replicasets.on_change(move |change| match change {
            Change::Applied { new, .. } => queue.add(key_of(&new.metadata)),
            Change::Deleted(rs) => {
                expectations.forget(&key_of(&rs.metadata));
            }
        });
        let weak = Arc::downgrade(&controller);
        pods.on_change(move |change| {
            if let Some(controller) = weak.upgrade() {
                controller.pod_changed(change);
            }
        });
        controller
    }

    /// A pod changed: its ReplicaSet syncs (and, for an orphan, every ReplicaSet that
    /// could adopt it). Its creation or deletion meets an expectation.
    fn pod_changed(&self, change: &Change<Pod>) {
        match change {
            Change::Applied { old, new } => {
                if let Some(key) = owner_key(new) {
                    if old.is_none() {
                        self.expectations.creation_observed(&key);
                    }
                    let started_deleting = new.metadata.deletion_timestamp.is_some()
                        && old
                            .as_ref()
                            .is_some_and(|o| o.metadata.deletion_timestamp.is_none());
                    if started_deleting {
                        self.expectations.deletion_observed(&key);
                    }
                    self.queue.add(key);
                } else {
                    self.queue_adopters(new);
                }
                if let Some(old_key) = old.as_deref().and_then(owner_key) {
                    if Some(&old_key) != owner_key(new).as_ref() {
                        self.queue.add(old_key);
                    }
                }
            }
            Change::Deleted(pod) => {
                if let Some(key) = owner_key(pod) {
                    if pod.metadata.deletion_timestamp.is_none() {
                        self.expectations.deletion_observed(&key);
                    }
                    self.queue.add(key);
                }
            }
        }
    }

    fn queue_adopters(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let labels = pod_state::labels(&pod.metadata);
        for rs in self.replicasets.list_namespace(namespace) {
            let selector = rs.spec.selector.clone();
            if LabelSelector::from_k8s(&selector, "spec.selector")
                .is_ok_and(|s| !s.is_empty() && s.matches(&labels))
            {
                self.queue.add(key_of(&rs.metadata));
            }
        }
    }

    pub async fn run(self: Arc<Self>) {
        self.replicasets.wait_synced().await;
        self.pods.wait_synced().await;
        loop {
            let key = self.queue.next().await;
            let span = tracing::debug_span!("sync_replica_set", replicaset = %key);
            let result = tracing::Instrument::instrument(self.sync(&key), span).await;
            if let Err(e) = result {
                tracing::warn!(replicaset = %key, error = %e, "sync failed; retrying");
                self.queue.add_after(key, std::time::Duration::from_secs(1));
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<(), ClientError> {
        let Some(rs) = self.replicasets.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let spec = rs.spec.clone();
        let Ok(selector) = LabelSelector::from_k8s(&spec.selector, "spec.selector") else {
            return Ok(()); // the apiserver refuses such selectors; nothing to keep
        };
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let mut owned = Vec::new();
        for pod in self.pods.list_namespace(&namespace) {
            let matches = selector.matches(&pod_state::labels(&pod.metadata));
            match controller_ref(&pod.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || deleting {
                        owned.push(pod);
                    } else {
                        self.release(&pod, &uid).await?;
                    }
                }
                Some(_) => {}
                None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                    owned.push(Arc::new(self.adopt(&rs, &pod).await?));
                }
                None => {}
            }
        }
        let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| is_active(p)).collect();
        let mut failure = None;
        if self.expectations.satisfied(key) && !deleting {
            failure = self.manage_replicas(&rs, &active, key).await.err();
        }
        self.update_status(&rs, &active, failure).await
    }

    /// Makes an orphan this ReplicaSet's (its controller reference added).
    async fn adopt(&self, rs: &ReplicaSet, pod: &Pod) -> Result<Pod, ClientError> {
        let mut adopted = pod.clone();
        adopted
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(pod_state::owner_ref(rs));
        let api = Api::<Pod>::namespaced(self.client.clone(), pod_namespace(pod));
        let name = pod.metadata.name.clone().unwrap_or_default();
        let adopted = api.replace(&name, &adopted).await?;
        tracing::info!(pod = %name, "adopted an orphan pod the selector matches");
        Ok(adopted)
    }

    /// A pod that no longer matches the selector stops being this ReplicaSet's.
    async fn release(&self, pod: &Pod, uid: &str) -> Result<(), ClientError> {
        let mut released = pod.clone();
        if let Some(owners) = released.metadata.owner_references.as_mut() {
            owners.retain(|o| o.uid != uid);
        }
        let api = Api::<Pod>::namespaced(self.client.clone(), pod_namespace(pod));
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api.replace(&name, &released).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => {
                other.map(|_| tracing::info!(pod = %name, "released: its labels no longer match"))
            }
        }
    }

    /// Creates or deletes pods until `spec.replicas` are active.
    async fn manage_replicas(
        &self,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
        key: &str,
    ) -> Result<(), (String, String)> {
        let want = usize::try_from(rs.spec.replicas.unwrap_or(1)).unwrap_or(0);
        if active.len() < want {
            let missing = (want - active.len()).min(BURST_REPLICAS);
            self.expectations.expect(key, missing as i64, 0);
            let template = rs.spec.template.clone().unwrap_or_default();
            let from = Template {
                owner: rs,
                template: &template,
                generate_name: format!("{}-", rs.metadata.name.as_deref().unwrap_or("")),
            };
            let (created, error) = self.pods_control.create_in_batches(&from, missing).await;
            for _ in created..missing {
                self.expectations.creation_observed(key);
            }
            if let Some(e) = error {
                self.events
                    .record(rs, true, "FailedCreate", format!("Error creating: {e}"));
                return Err(("FailedCreate".into(), e.to_string()));
            }
        } else if active.len() > want {
            let surplus = (active.len() - want).min(BURST_REPLICAS);
            let mut victims: Vec<&Arc<Pod>> = active.iter().collect();
            victims.sort_by(|a, b| pod_state::deletion_order(a, b));
            victims.truncate(surplus);
            self.expectations.expect(key, 0, surplus as i64);
            let deletes = victims
                .iter()
                .map(|pod| self.pods_control.delete_pod(rs, pod));
            let errors: Vec<ClientError> = join_all(deletes).await.into_iter().flatten().collect();
            for _ in 0..errors.len() {
                self.expectations.deletion_observed(key);
            }
            if let Some(e) = errors.into_iter().next() {
                self.events
                    .record(rs, true, "FailedDelete", format!("Error deleting: {e}"));
                return Err(("FailedDelete".into(), e.to_string()));
            }
        }
        Ok(())
    }

    /// Writes the counts and conditions the pods show, when they changed.
    async fn update_status(
        &self,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
        failure: Option<(String, String)>,
    ) -> Result<(), ClientError> {
        let spec = rs.spec.clone();
        let now = kubelab_proto::now_ms();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let fully_labeled = active
            .iter()
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                template_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .count();
        let ready = active.iter().filter(|p| pod_state::is_ready(p)).count();
        let mut available = 0;
        let mut recheck: Option<i64> = None;
        for pod in active {
            match pod_state::availability(pod, spec.min_ready_seconds.unwrap_or(0), now) {
                Ok(()) => available += 1,
                Err(Some(after)) => recheck = Some(recheck.map_or(after, |r| r.min(after))),
                Err(None) => {}
            }
        }
        if let Some(after) = recheck {
            let after = std::time::Duration::from_millis(u64::try_from(after).unwrap_or(0));
            self.queue.add_after(key_of(&rs.metadata), after);
        }
        let old = rs.status.clone().unwrap_or_default();
        let mut conditions: Vec<ReplicaSetCondition> = old
            .conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_.as_deref() != Some("ReplicaFailure"))
            .collect();
        if let Some((reason, message)) = failure {
            conditions.push(ReplicaSetCondition {
                type_: Some("ReplicaFailure".into()),
                status: Some("True".into()),
                reason: Some(reason),
                message: Some(message),
                last_transition_time: kubelab_proto::k8s::time(kubelab_proto::now_ms()),
            });
        }
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let status = ReplicaSetStatus {
            replicas: count(active.len()),
            fully_labeled_replicas: Some(count(fully_labeled)).filter(|n| *n > 0),
            ready_replicas: Some(count(ready)).filter(|n| *n > 0),
            available_replicas: Some(count(available)).filter(|n| *n > 0),
            observed_generation: rs.metadata.generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
            ..Default::default()
        };
        if status == old {
            return Ok(());
        }
        let mut updated = rs.clone();
        updated.status = Some(status);
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace_of(&rs.metadata));
        let name = rs.metadata.name.clone().unwrap_or_default();
        match api.replace_status(&name, &updated).await {
            Ok(_) | Err(ClientError::Api { code: 404, .. }) => Ok(()),
            // The informer is behind: the newer ReplicaSet syncs again when it arrives.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn pod_namespace(pod: &Pod) -> &str {
    namespace_of(&pod.metadata)
}
