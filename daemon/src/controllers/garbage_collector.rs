//! The garbage collector: objects whose owners are gone are deleted, as Kubernetes'
//! garbage collector does by `ownerReferences`.
//!
//! - Background (a delete's default): the owner goes at once; here, each of its
//!   dependents (whose every owner is gone, checked against the API, not only the cache)
//!   is deleted after.
//! - Foreground: the owner stays, deleting, with the `foregroundDeletion` finalizer; its
//!   dependents are deleted, and once none is left the finalizer is removed and the owner
//!   goes.
//! - Orphan: the owner stays with the `orphan` finalizer until its dependents' references
//!   to it are removed; they live on.
//!
//! Kubernetes keeps a graph of every object; a lab's objects are few enough to look at
//! them all after each batch of changes, which is simpler to read and as correct. The
//! owners it knows are the kinds kubelab serves (ReplicaSets and Jobs of pods,
//! Deployments of ReplicaSets). Owns deletions of dependents and those two finalizers; decides nothing
//! else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{Api, Client, ClientError};
use super::informer::Informer;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// Changes arriving together are looked at once.
const SETTLE: Duration = Duration::from_millis(100);
/// The owner kinds kubelab serves (and so can look up).
const OWNER_KINDS: &[&str] = &["ReplicaSet", "Deployment", "Job"];

pub struct GarbageCollector {
    client: Client,
    pods: Arc<Informer<Pod>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    jobs: Arc<Informer<Job>>,
    wake: Arc<tokio::sync::Notify>,
}

/// An owner as the collector sees it.
struct Owner {
    deleting: bool,
    finalizers: Vec<String>,
}

/// An object that may have owners: a pod (of a ReplicaSet) or a ReplicaSet (of a
/// Deployment).
enum Dependent {
    Pod(Arc<Pod>),
    ReplicaSet(Arc<ReplicaSet>),
}

impl Dependent {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Dependent::Pod(p) => &p.metadata,
            Dependent::ReplicaSet(rs) => &rs.metadata,
        }
    }
}

/// An object's API in its namespace.
fn api<K>(client: &Client, meta: &ObjectMeta) -> Api<K>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
    K: Serialize + DeserializeOwned + Send + 'static,
{
    Api::namespaced(
        client.clone(),
        meta.namespace.as_deref().unwrap_or("default"),
    )
}

/// A 404 or 409 means someone else got there first: nothing to do.
fn settled(result: Result<(), ClientError>) -> Result<(), ClientError> {
    match result {
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        other => other,
    }
}

impl GarbageCollector {
    pub fn new(
        client: Client,
        pods: Arc<Informer<Pod>>,
        replicasets: Arc<Informer<ReplicaSet>>,
        deployments: Arc<Informer<Deployment>>,
        jobs: Arc<Informer<Job>>,
    ) -> Arc<Self> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        pods.on_change(move |_| w.notify_one());
        let w = wake.clone();
        replicasets.on_change(move |_| w.notify_one());
        let w = wake.clone();
        deployments.on_change(move |_| w.notify_one());
        let w = wake.clone();
        jobs.on_change(move |_| w.notify_one());
        Arc::new(GarbageCollector {
            jobs,
            client,
            pods,
            replicasets,
            deployments,
            wake,
        })
    }

    pub async fn run(self: Arc<Self>) {
        self.pods.wait_synced().await;
        self.replicasets.wait_synced().await;
        self.deployments.wait_synced().await;
        self.jobs.wait_synced().await;
        loop {
            if let Err(e) = self.collect().await {
                tracing::warn!(error = %e, "garbage collection failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            self.wake.notified().await;
            tokio::time::sleep(SETTLE).await;
        }
    }

    async fn collect(&self) -> Result<(), ClientError> {
        let replicasets = self.replicasets.list();
        let deployments = self.deployments.list();
        let jobs = self.jobs.list();
        let owner = |meta: &ObjectMeta| {
            (
                meta.uid.clone().unwrap_or_default(),
                Owner {
                    deleting: meta.deletion_timestamp.is_some(),
                    finalizers: meta.finalizers.clone().unwrap_or_default(),
                },
            )
        };
        let owners: HashMap<String, Owner> = replicasets
            .iter()
            .map(|rs| owner(&rs.metadata))
            .chain(deployments.iter().map(|d| owner(&d.metadata)))
            .chain(jobs.iter().map(|j| owner(&j.metadata)))
            .collect();
        let dependents = self
            .pods
            .list()
            .into_iter()
            .map(Dependent::Pod)
            .chain(replicasets.iter().cloned().map(Dependent::ReplicaSet));
        let mut has_dependents: HashSet<String> = HashSet::new();
        for dependent in dependents {
            let meta = dependent.meta();
            let refs = meta.owner_references.clone().unwrap_or_default();
            if refs.is_empty() || refs.iter().any(|r| !OWNER_KINDS.contains(&r.kind.as_str())) {
                continue; // no owner, or one kubelab cannot look up: left alone
            }
            has_dependents.extend(refs.iter().map(|r| r.uid.clone()));
            if meta.deletion_timestamp.is_some() {
                continue; // going already: nothing to decide, no owner to ask the API about
            }
            let mut live = false;
            for r in &refs {
                match owners.get(&r.uid) {
                    Some(o) if o.deleting && o.finalizers.iter().any(|f| f == ORPHAN) => {
                        self.orphan(&dependent, &r.uid).await?;
                        live = true;
                    }
                    // Foreground: the owner waits for this dependent to be deleted.
                    Some(o) if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) => {}
                    Some(_) => live = true,
                    None => live |= self.owner_exists(meta, &r.kind, &r.name, &r.uid).await?,
                }
            }
            if !live {
                self.delete(&dependent).await?;
            }
        }
        // Owners waiting on a finalizer whose dependents are all gone (or orphaned).
        self.finish(&replicasets, &has_dependents).await?;
        self.finish(&deployments, &has_dependents).await?;
        self.finish(&jobs, &has_dependents).await?;
        Ok(())
    }

    /// Removes the collector's finalizers from the deleting owners with no dependent left
    /// (the last one removed, the apiserver deletes the owner).
    async fn finish<K>(
        &self,
        owners: &[Arc<K>],
        has_dependents: &HashSet<String>,
    ) -> Result<(), ClientError>
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
        K: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        for owner in owners {
            let meta = owner.metadata();
            if self.finished(meta, has_dependents) {
                let mut done = (**owner).clone();
                drop_finalizers(done.metadata_mut());
                let name = meta.name.clone().unwrap_or_default();
                settled(
                    api::<K>(&self.client, meta)
                        .replace(&name, &done)
                        .await
                        .map(|_| ()),
                )?;
            }
        }
        Ok(())
    }

    /// A deleting owner with one of the collector's finalizers and no dependent left.
    fn finished(&self, meta: &ObjectMeta, has_dependents: &HashSet<String>) -> bool {
        let uid = meta.uid.clone().unwrap_or_default();
        meta.deletion_timestamp.is_some()
            && !has_dependents.contains(&uid)
            && meta
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == FOREGROUND || f == ORPHAN)
    }

    /// Whether the owner still exists, asked of the API (the cache may lag behind).
    async fn owner_exists(
        &self,
        dependent: &ObjectMeta,
        kind: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool, ClientError> {
        let found = match kind {
            "ReplicaSet" => self.uid_of::<ReplicaSet>(dependent, name).await,
            "Job" => self.uid_of::<Job>(dependent, name).await,
            _ => self.uid_of::<Deployment>(dependent, name).await,
        };
        match found {
            Ok(found) => Ok(found.as_deref() == Some(uid)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The uid of the object of kind `K` with this name, in the dependent's namespace.
    async fn uid_of<K>(
        &self,
        dependent: &ObjectMeta,
        name: &str,
    ) -> Result<Option<String>, ClientError>
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
        K: Serialize + DeserializeOwned + Send + 'static,
    {
        api::<K>(&self.client, dependent)
            .get(name)
            .await
            .map(|o| o.metadata().uid.clone())
    }

    async fn delete(&self, dependent: &Dependent) -> Result<(), ClientError> {
        let meta = dependent.meta();
        let name = meta.name.clone().unwrap_or_default();
        let uid = meta.uid.as_deref();
        tracing::info!(object = %name, "deleting: its owner is gone");
        settled(match dependent {
            Dependent::Pod(_) => {
                api::<Pod>(&self.client, meta)
                    .delete(&name, "Background", uid)
                    .await
            }
            Dependent::ReplicaSet(_) => {
                api::<ReplicaSet>(&self.client, meta)
                    .delete(&name, "Background", uid)
                    .await
            }
        })
    }

    /// Removes the reference to an owner deleted with the Orphan policy.
    async fn orphan(&self, dependent: &Dependent, owner_uid: &str) -> Result<(), ClientError> {
        let name = dependent.meta().name.clone().unwrap_or_default();
        let result = match dependent {
            Dependent::Pod(p) => {
                let mut o = (**p).clone();
                drop_owner(&mut o.metadata, owner_uid);
                api::<Pod>(&self.client, &p.metadata)
                    .replace(&name, &o)
                    .await
                    .map(|_| ())
            }
            Dependent::ReplicaSet(rs) => {
                let mut o = (**rs).clone();
                drop_owner(&mut o.metadata, owner_uid);
                api::<ReplicaSet>(&self.client, &rs.metadata)
                    .replace(&name, &o)
                    .await
                    .map(|_| ())
            }
        };
        tracing::info!(object = %name, "orphaned: its owner was deleted with propagationPolicy=Orphan");
        settled(result)
    }
}

fn drop_owner(meta: &mut ObjectMeta, owner_uid: &str) {
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|r| r.uid != owner_uid);
    }
}

fn drop_finalizers(meta: &mut ObjectMeta) {
    if let Some(f) = meta.finalizers.as_mut() {
        f.retain(|f| f != FOREGROUND && f != ORPHAN);
    }
}
