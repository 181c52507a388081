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
//! them all after each batch of changes, which is simpler to read and as correct. Owns
//! deletions of dependents and those two finalizers; decides nothing else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::client::{Api, Client, ClientError};
use super::informer::{Change, Informer};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// Changes arriving together are looked at once.
const SETTLE: Duration = Duration::from_millis(100);

pub struct GarbageCollector {
    client: Client,
    pods: Arc<Informer<Pod>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    wake: Arc<tokio::sync::Notify>,
}

/// An owner as the collector sees it.
struct Owner {
    namespace: String,
    name: String,
    deleting: bool,
    finalizers: Vec<String>,
}

impl GarbageCollector {
    pub fn new(
        client: Client,
        pods: Arc<Informer<Pod>>,
        replicasets: Arc<Informer<ReplicaSet>>,
    ) -> Arc<Self> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let on_pod = wake.clone();
        pods.on_change(move |_: &Change<Pod>| on_pod.notify_one());
        let on_rs = wake.clone();
        replicasets.on_change(move |_: &Change<ReplicaSet>| on_rs.notify_one());
        Arc::new(GarbageCollector {
            client,
            pods,
            replicasets,
            wake,
        })
    }

    pub async fn run(self: Arc<Self>) {
        self.pods.wait_synced().await;
        self.replicasets.wait_synced().await;
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
        let owners: HashMap<String, Owner> = replicasets
            .iter()
            .map(|rs| {
                (
                    rs.metadata.uid.clone().unwrap_or_default(),
                    owner_of(&rs.metadata),
                )
            })
            .collect();
        let pods = self.pods.list();
        let mut has_dependents: HashSet<String> = HashSet::new();
        for pod in &pods {
            let refs = pod.metadata.owner_references.clone().unwrap_or_default();
            let known: Vec<_> = refs.iter().filter(|r| r.kind == "ReplicaSet").collect();
            if known.is_empty() || known.len() < refs.len() {
                continue; // no owner, or one kubelab cannot look up: left alone
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let api = Api::<Pod>::namespaced(self.client.clone(), &namespace);
            let mut live = false;
            for r in &known {
                has_dependents.insert(r.uid.clone());
                match owners.get(&r.uid) {
                    Some(owner)
                        if owner.deleting && owner.finalizers.iter().any(|f| f == ORPHAN) =>
                    {
                        self.orphan(&api, pod, &r.uid).await?;
                        live = true;
                    }
                    Some(owner)
                        if owner.deleting && owner.finalizers.iter().any(|f| f == FOREGROUND) => {}
                    Some(_) => live = true,
                    None => live |= self.owner_exists(&namespace, &r.name, &r.uid).await?,
                }
            }
            if !live && pod.metadata.deletion_timestamp.is_none() {
                tracing::info!(pod = %name, %namespace, "deleting a pod whose owner is gone");
                match api
                    .delete(&name, "Background", pod.metadata.uid.as_deref())
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Owners waiting on a finalizer whose dependents are all gone (or orphaned).
        for rs in &replicasets {
            let uid = rs.metadata.uid.clone().unwrap_or_default();
            let Some(owner) = owners.get(&uid) else {
                continue;
            };
            if !owner.deleting || has_dependents.contains(&uid) {
                continue;
            }
            if owner
                .finalizers
                .iter()
                .any(|f| f == FOREGROUND || f == ORPHAN)
            {
                let mut done = (**rs).clone();
                if let Some(f) = done.metadata.finalizers.as_mut() {
                    f.retain(|f| f != FOREGROUND && f != ORPHAN);
                }
                let api = Api::<ReplicaSet>::namespaced(self.client.clone(), &owner.namespace);
                match api.replace(&owner.name, &done).await {
                    Ok(_) => {
                        tracing::info!(replicaset = %owner.name, "its dependents are gone: finalizer removed")
                    }
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Whether the owner still exists, asked of the API (the cache may lag behind).
    async fn owner_exists(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<bool, ClientError> {
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
        match api.get(name).await {
            Ok(rs) => Ok(rs.metadata.uid.as_deref() == Some(uid)),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the reference to an owner deleted with the Orphan policy.
    async fn orphan(&self, api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<(), ClientError> {
        let mut orphaned = pod.clone();
        if let Some(refs) = orphaned.metadata.owner_references.as_mut() {
            refs.retain(|r| r.uid != owner_uid);
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api.replace(&name, &orphaned).await {
            Ok(_) => {
                tracing::info!(pod = %name, "orphaned: its owner was deleted with propagationPolicy=Orphan");
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn owner_of(meta: &ObjectMeta) -> Owner {
    Owner {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    }
}
