//! The Deployment controller (kube-controller-manager's `DeploymentController`): a
//! Deployment's pods are those of its ReplicaSets, one per template (named by the
//! template's hash); a changed template is rolled out by growing the new ReplicaSet and
//! shrinking the old ones — within `maxSurge` and `maxUnavailable` (RollingUpdate), or all
//! old pods gone first (Recreate).
//!
//! A sync, from the informers' caches: claim the ReplicaSets (adopt matching orphans,
//! release those that stopped matching), find or create the new one (with the next
//! revision), scale, prune old empty ReplicaSets beyond `revisionHistoryLimit`, then write
//! the status and the Available and Progressing conditions (`ProgressDeadlineExceeded`
//! once no progress was made for `progressDeadlineSeconds`: `deployment_status.rs`). Rollback (`kubectl rollout
//! undo`) is kubectl's: it puts an old ReplicaSet's template back, which makes that
//! ReplicaSet the new one again. It writes ReplicaSets, events and Deployment status.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};

use super::client::{Api, Client, ClientError};
use super::events::Recorder;
use super::informer::{key_of, Change, Informer};
use super::pod_state::{self, controller_ref};
use super::proportion;
use super::queue::WorkQueue;
use super::rollout::{self, spec_replicas, POD_TEMPLATE_HASH};
use crate::apiserver::selector::LabelSelector;

pub struct DeploymentController {
    pub(super) client: Client,
    deployments: Arc<Informer<Deployment>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    pub(super) queue: WorkQueue,
    events: Recorder,
}

/// The Deployment an object's controller reference names, as a queue key.
fn owner_key(meta: &ObjectMeta) -> Option<String> {
    let owner = controller_ref(meta)?;
    (owner.kind == "Deployment")
        .then(|| format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), owner.name))
}

impl DeploymentController {
    pub fn new(
        client: Client,
        deployments: Arc<Informer<Deployment>>,
        replicasets: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
    ) -> Arc<Self> {
        let controller = Arc::new(DeploymentController {
            events: Recorder::new(client.clone(), "deployment-controller"),
            client,
            deployments: deployments.clone(),
            replicasets: replicasets.clone(),
            pods: pods.clone(),
            queue: WorkQueue::default(),
        });
        let queue = controller.queue.clone();
        deployments.on_change(move |change| {
            if let Change::Applied { new, .. } = change {
                queue.add(key_of(&new.metadata));
            }
        });
        let weak = Arc::downgrade(&controller);
        replicasets.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let rs = match change {
                Change::Applied { new, .. } => new,
                Change::Deleted(rs) => rs,
            };
            match owner_key(&rs.metadata) {
                Some(key) => c.queue.add(key),
                None => c.queue_adopters(&rs.metadata),
            }
        });
        // Recreate waits for the old pods to be gone: their deletion is news.
        let weak = Arc::downgrade(&controller);
        pods.on_change(move |change| {
            let (Some(c), Change::Deleted(pod)) = (weak.upgrade(), change) else {
                return;
            };
            let Some(rs_ref) = controller_ref(&pod.metadata) else {
                return;
            };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
            if let Some(key) = c
                .replicasets
                .get(&format!("{namespace}/{}", rs_ref.name))
                .and_then(|rs| owner_key(&rs.metadata))
            {
                c.queue.add(key);
            }
        });
        controller
    }

    fn queue_adopters(&self, meta: &ObjectMeta) {
        let labels = pod_state::labels(meta);
        for d in self
            .deployments
            .list_namespace(meta.namespace.as_deref().unwrap_or(""))
        {
            if selector_of(&d.spec.selector).is_some_and(|s| s.matches(&labels)) {
                self.queue.add(key_of(&d.metadata));
            }
        }
    }

    pub async fn run(self: Arc<Self>) {
        self.deployments.wait_synced().await;
        self.replicasets.wait_synced().await;
        self.pods.wait_synced().await;
        loop {
            let key = self.queue.next().await;
            let span = tracing::debug_span!("sync_deployment", deployment = %key);
            if let Err(e) = tracing::Instrument::instrument(self.sync(&key), span).await {
                tracing::warn!(deployment = %key, error = %e, "sync failed; retrying");
                self.queue.add_after(key, std::time::Duration::from_secs(1));
            }
        }
    }

    fn rs_api(&self, d: &Deployment) -> Api<ReplicaSet> {
        Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    async fn sync(&self, key: &str) -> Result<(), ClientError> {
        let Some(mut d) = self.deployments.get(key) else {
            return Ok(());
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(()); // the garbage collector takes its ReplicaSets
        }
        let Some(selector) = selector_of(&d.spec.selector) else {
            return Ok(());
        };
        let mut all = self.claim(&d, &selector).await?;
        let template = serde_json::to_value(&d.spec.template).unwrap_or_default();
        let is_new = |rs: &ReplicaSet| {
            rs.spec
                .template
                .as_ref()
                .map(|t| serde_json::to_value(rollout::without_hash(t)).unwrap_or_default())
                == Some(template.clone())
        };
        let paused = d.spec.paused == Some(true);
        let mut created = None;
        let mut new = all.iter().position(is_new);
        // A new size (or a paused rollout): the ReplicaSets are resized in proportion,
        // and the rollout goes on at the next sync.
        if paused || proportion::is_scaling_event(&d, &all) {
            let sizes = proportion::sizes(&d, &all, new);
            for (i, size) in sizes.into_iter().enumerate() {
                if size != spec_replicas(&all[i]) || size > 0 {
                    let mut rs = all[i].clone();
                    self.scale(&d, &mut rs, size).await?;
                    all[i] = rs;
                }
            }
            return self.update_status(&d, &all, new, None).await;
        }
        if new.is_none() && !paused {
            let rs = self.create_new(&d, &all).await?;
            created = rs.metadata.name.clone();
            all.push(rs);
            new = Some(all.len() - 1);
        } else if let Some(i) = new {
            if let Some(updated) = self.bump_revision(&d, &all, i).await? {
                all[i] = updated;
            }
        }
        if let Some(i) = new {
            if let Some(annotated) = self
                .annotate_revision(&d, rollout::revision(&all[i]))
                .await?
            {
                d = Arc::new(annotated);
            }
        }
        if !paused {
            if rollout::is_recreate(&d) {
                self.recreate(&d, &mut all, new).await?;
            } else {
                self.rolling_update(&d, &mut all, new).await?;
            }
            self.prune_history(&d, &all, new).await?;
        }
        self.update_status(&d, &all, new, created).await
    }

    /// The Deployment's ReplicaSets: its own that still match, and matching orphans
    /// (adopted).
    async fn claim(
        &self,
        d: &Deployment,
        selector: &LabelSelector,
    ) -> Result<Vec<ReplicaSet>, ClientError> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let api = self.rs_api(d);
        let mut owned = Vec::new();
        for rs in self
            .replicasets
            .list_namespace(d.metadata.namespace.as_deref().unwrap_or(""))
        {
            let matches = selector.matches(&pod_state::labels(&rs.metadata));
            let name = rs.metadata.name.clone().unwrap_or_default();
            match controller_ref(&rs.metadata) {
                Some(r) if r.uid == uid && matches => owned.push((*rs).clone()),
                Some(r) if r.uid == uid => {
                    let mut released = (*rs).clone();
                    if let Some(refs) = released.metadata.owner_references.as_mut() {
                        refs.retain(|r| r.uid != uid);
                    }
                    api.replace(&name, &released).await?;
                }
                None if matches && rs.metadata.deletion_timestamp.is_none() => {
                    let mut adopted = (*rs).clone();
                    adopted
                        .metadata
                        .owner_references
                        .get_or_insert_with(Vec::new)
                        .push(pod_state::owner_ref(d));
                    owned.push(api.replace(&name, &adopted).await?);
                }
                _ => {}
            }
        }
        Ok(owned)
    }

    /// The ReplicaSet for the current template: `<deployment>-<hash>`, the next revision.
    async fn create_new(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
    ) -> Result<ReplicaSet, ClientError> {
        let hash = rollout::template_hash(
            &d.spec.template,
            d.status.as_ref().and_then(|s| s.collision_count),
        );
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let mut template = d.spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash);
        let revision = all.iter().map(rollout::revision).max().unwrap_or(0) + 1;
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: meta.labels.clone(),
                annotations: Some(annotations(d, revision)),
                owner_references: Some(vec![pod_state::owner_ref(d)]),
                ..Default::default()
            },
            spec: k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let replicas = if rollout::is_recreate(d) && all.iter().any(|rs| spec_replicas(rs) > 0) {
            0
        } else {
            rollout::new_rs_replicas(d, &refs, &rs)
        };
        rs.spec.replicas = Some(replicas);
        let created = match self.rs_api(d).create(&rs).await {
            Ok(created) => created,
            Err(e) if e.reason_is("AlreadyExists") => {
                let existing = self.rs_api(d).get(&name).await?;
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing.spec.template.as_ref().map(rollout::without_hash)
                    == Some(d.spec.template.clone());
                if ours && same {
                    existing // ours from before: the informer had not seen it yet
                } else {
                    // Another ReplicaSet has this name (a hash collision): count it, as
                    // Kubernetes does, so that the next sync hashes to another name.
                    self.count_collision(d).await?;
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        };
        tracing::info!(replicaset = %name, replicas, revision, "created the new ReplicaSet");
        if replicas > 0 {
            self.events.record(
                d,
                false,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {replicas}"),
            );
        }
        Ok(created)
    }

    /// The Deployment carries its new ReplicaSet's revision, as in Kubernetes.
    /// Returns the Deployment as written, when it wrote it (the status written next must
    /// name this version, or it would conflict with this very write).
    async fn annotate_revision(
        &self,
        d: &Deployment,
        revision: i64,
    ) -> Result<Option<Deployment>, ClientError> {
        let current = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(rollout::REVISION));
        if revision == 0 || current == Some(&revision.to_string()) {
            return Ok(None);
        }
        let mut annotated = d.clone();
        annotated
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(rollout::REVISION.into(), revision.to_string());
        let api = Api::<Deployment>::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or("default"),
        );
        match api
            .replace(d.metadata.name.as_deref().unwrap_or(""), &annotated)
            .await
        {
            // The next sync sees the newer Deployment and tries again.
            Err(e) if e.is_conflict() => Ok(None),
            other => other.map(Some),
        }
    }

    async fn count_collision(&self, d: &Deployment) -> Result<(), ClientError> {
        let mut counted = d.clone();
        let status = counted.status.get_or_insert_with(Default::default);
        status.collision_count = Some(status.collision_count.unwrap_or(0).saturating_add(1));
        let api = Api::<Deployment>::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or("default"),
        );
        api.replace_status(d.metadata.name.as_deref().unwrap_or(""), &counted)
            .await
            .map(|_| ())
    }

    /// A ReplicaSet that becomes new again (a rollback) takes the next revision.
    async fn bump_revision(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        i: usize,
    ) -> Result<Option<ReplicaSet>, ClientError> {
        let newest = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, rs)| rollout::revision(rs))
            .max()
            .unwrap_or(0);
        if rollout::revision(&all[i]) > newest {
            return Ok(None);
        }
        let mut rs = all[i].clone();
        rs.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(annotations(d, newest + 1));
        let name = rs.metadata.name.clone().unwrap_or_default();
        Ok(Some(self.rs_api(d).replace(&name, &rs).await?))
    }

    /// Sets one ReplicaSet's replicas (and the annotations that record the Deployment's
    /// size), saying so as kube-controller-manager does.
    async fn scale(&self, d: &Deployment, rs: &mut ReplicaSet, to: i32) -> Result<(), ClientError> {
        let from = spec_replicas(rs);
        let wanted = annotations(d, rollout::revision(rs));
        let current = rs.metadata.annotations.clone().unwrap_or_default();
        let annotated = wanted.iter().all(|(k, v)| current.get(k) == Some(v));
        if from == to && annotated {
            return Ok(());
        }
        let mut scaled = rs.clone();
        scaled.spec.replicas = Some(to);
        scaled
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(wanted);
        let name = rs.metadata.name.clone().unwrap_or_default();
        *rs = self.rs_api(d).replace(&name, &scaled).await?;
        if from == to {
            return Ok(()); // only its annotations were behind
        }
        let way = if to > from { "up" } else { "down" };
        tracing::info!(replicaset = %name, from, to, "scaled {way}");
        self.events.record(
            d,
            false,
            "ScalingReplicaSet",
            format!("Scaled {way} replica set {name} from {from} to {to}"),
        );
        Ok(())
    }

    async fn rolling_update(
        &self,
        d: &Deployment,
        all: &mut [ReplicaSet],
        new: Option<usize>,
    ) -> Result<(), ClientError> {
        let replicas = d.spec.replicas.unwrap_or(1);
        if let Some(i) = new {
            let target = if spec_replicas(&all[i]) > replicas {
                replicas
            } else {
                let refs: Vec<&ReplicaSet> = all.iter().collect();
                rollout::new_rs_replicas(d, &refs, &all[i])
            };
            let mut rs = all[i].clone();
            self.scale(d, &mut rs, target).await?;
            all[i] = rs;
        }
        // Old ReplicaSets, oldest first: their unhealthy pods go first, then available
        // ones while enough stay available.
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let mut room = rollout::old_scale_down_room(d, &refs, new.map(|i| &all[i]));
        let mut olds: Vec<usize> = (0..all.len())
            .filter(|i| Some(*i) != new && spec_replicas(&all[*i]) > 0)
            .collect();
        olds.sort_by_key(|i| {
            (
                kubelab_proto::k8s::time_ms(&all[*i].metadata.creation_timestamp),
                rollout::revision(&all[*i]),
            )
        });
        for &i in &olds {
            if room <= 0 {
                break;
            }
            let unhealthy = spec_replicas(&all[i])
                - all[i]
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
            let take = unhealthy.min(room);
            if take > 0 {
                let mut rs = all[i].clone();
                self.scale(d, &mut rs, spec_replicas(&all[i]) - take)
                    .await?;
                all[i] = rs;
                room -= take;
            }
        }
        let refs: Vec<&ReplicaSet> = all.iter().collect();
        let mut surplus = rollout::available_surplus(d, &refs).min(room);
        for &i in &olds {
            if surplus <= 0 {
                break;
            }
            let take = spec_replicas(&all[i]).min(surplus);
            if take > 0 {
                let mut rs = all[i].clone();
                self.scale(d, &mut rs, spec_replicas(&all[i]) - take)
                    .await?;
                all[i] = rs;
                surplus -= take;
            }
        }
        Ok(())
    }

    /// Recreate: every old pod gone before the new ReplicaSet grows.
    async fn recreate(
        &self,
        d: &Deployment,
        all: &mut [ReplicaSet],
        new: Option<usize>,
    ) -> Result<(), ClientError> {
        let mut old_left = false;
        for i in (0..all.len()).filter(|i| Some(*i) != new) {
            if spec_replicas(&all[i]) > 0 {
                let mut rs = all[i].clone();
                self.scale(d, &mut rs, 0).await?;
                all[i] = rs;
                old_left = true;
            }
            let uid = all[i].metadata.uid.clone().unwrap_or_default();
            let namespace = d.metadata.namespace.as_deref().unwrap_or("");
            old_left |= self
                .pods
                .list_namespace(namespace)
                .iter()
                .any(|p| controller_ref(&p.metadata).is_some_and(|r| r.uid == uid));
        }
        if let (false, Some(i)) = (old_left, new) {
            let mut rs = all[i].clone();
            self.scale(d, &mut rs, d.spec.replicas.unwrap_or(1)).await?;
            all[i] = rs;
        }
        Ok(())
    }

    /// Old ReplicaSets with no pods, beyond `revisionHistoryLimit`, oldest revision first.
    async fn prune_history(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        new: Option<usize>,
    ) -> Result<(), ClientError> {
        let limit = usize::try_from(d.spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let mut empty: Vec<&ReplicaSet> = all
            .iter()
            .enumerate()
            .filter(|(i, rs)| {
                Some(*i) != new
                    && spec_replicas(rs) == 0
                    && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            })
            .map(|(_, rs)| rs)
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        empty.sort_by_key(|rs| rollout::revision(rs));
        for rs in &empty[..empty.len() - limit] {
            let name = rs.metadata.name.clone().unwrap_or_default();
            match self
                .rs_api(d)
                .delete(&name, "Background", rs.metadata.uid.as_deref())
                .await
            {
                Ok(()) => tracing::info!(replicaset = %name, "pruned: beyond revisionHistoryLimit"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The annotations kube-controller-manager keeps on a Deployment's ReplicaSets.
fn annotations(d: &Deployment, revision: i64) -> std::collections::BTreeMap<String, String> {
    let replicas = d.spec.replicas.unwrap_or(1);
    let (surge, _) = rollout::fenceposts(d);
    [
        (rollout::REVISION, revision.to_string()),
        (rollout::DESIRED_REPLICAS, replicas.to_string()),
        (
            rollout::MAX_REPLICAS,
            replicas.saturating_add(surge).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn selector_of(selector: &K8sSelector) -> Option<LabelSelector> {
    LabelSelector::from_k8s(selector, "spec.selector")
        .ok()
        .filter(|s| !s.is_empty())
}
