//! Namespaces in the API: create, read and relabel namespaces (the admin writes, the
//! cluster reads), and the four namespaces every cluster starts with.
//!
//! Owns Namespace objects only: their names and labels, the Pod Security ones checked as
//! Kubernetes checks them. It never touches pods; the Pods service reads a namespace's
//! labels when it admits a pod. Namespaces are never deleted (kubelab has no namespace
//! controller to empty them), and pods may name a namespace without an object.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::{Namespace, NamespaceStatus};

use super::auth::Identity;
use super::pod_security::check_namespace_labels;
use super::registry::{
    selected, update_object, watch_store, DeleteOptions, ListOptions, Registry, WatchEvents,
    Written,
};
use super::store::{check_version, key, prefix, Store};
use super::validation::{check_annotations, check_dns_label, check_labels};
use super::ApiError;

pub struct NamespacesService {
    store: Arc<Store>,
}

impl NamespacesService {
    pub fn new(store: Arc<Store>) -> Self {
        NamespacesService { store }
    }
}

/// Namespaces are read by everyone in the cluster (not by the bootstrap credential).
fn may_read(who: &Identity) -> Result<(), ApiError> {
    if *who == Identity::Bootstrap {
        return Err(who.denied("read namespaces"));
    }
    Ok(())
}

fn namespace_ref(name: &str) -> String {
    format!("namespaces {name:?}")
}

fn namespace_key(name: &str) -> String {
    key::<Namespace>("", name)
}

/// A namespace ready to store: its name checked, its labels too, Active.
fn new_namespace(name: String, labels: std::collections::HashMap<String, String>) -> Namespace {
    Namespace {
        metadata: Some(kubelab_proto::v1::ObjectMeta {
            name,
            labels,
            uid: uuid::Uuid::new_v4().to_string(),
            creation_timestamp_ms: now_ms(),
            ..Default::default()
        }),
        status: Some(NamespaceStatus {
            phase: "Active".into(),
        }),
    }
}

fn check(name: &str, labels: &std::collections::HashMap<String, String>) -> Result<(), ApiError> {
    check_dns_label("namespace", name)?;
    check_labels(labels)?;
    check_namespace_labels(labels)
}

/// Creates the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
/// `kube-node-lease`) when the store lacks them, as kube-apiserver does at start.
pub async fn ensure_default(store: &Store) -> Result<(), ApiError> {
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        store
            .update::<Namespace, _>(&namespace_key(name), |current| match current {
                Some(ns) => Ok(Some(ns)),
                None => Ok(Some(new_namespace(name.into(), Default::default()))),
            })
            .await?;
    }
    Ok(())
}

impl Registry for NamespacesService {
    type Object = Namespace;
    const NAMESPACED: bool = false;
    const FIELDS: &'static [&'static str] = &["metadata.name", "status.phase"];

    fn field(ns: &Namespace, field: &str) -> String {
        match field {
            "status.phase" => ns
                .status
                .as_ref()
                .map(|s| s.phase.clone())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    async fn get(
        &self,
        who: &Identity,
        _namespace: &str,
        name: &str,
    ) -> Result<Namespace, ApiError> {
        may_read(who)?;
        self.store
            .get_durable::<Namespace>(&namespace_key(name))
            .await?
            .ok_or_else(|| ApiError::NotFound(namespace_ref(name)))
    }

    async fn list(
        &self,
        who: &Identity,
        _namespace: &str,
        options: &ListOptions,
    ) -> Result<(Vec<Namespace>, u64), ApiError> {
        may_read(who)?;
        let (mut items, revision) = self
            .store
            .list::<Namespace>(&prefix::<Namespace>(""))
            .await?;
        items.retain(|n| selected(n, options, Self::field));
        Ok((items, revision))
    }

    async fn watch(
        &self,
        who: &Identity,
        _namespace: &str,
        from_revision: u64,
        options: ListOptions,
    ) -> Result<WatchEvents<Namespace>, ApiError> {
        may_read(who)?;
        watch_store(
            &self.store,
            from_revision,
            prefix::<Namespace>(""),
            String::new(),
            options,
            Self::field,
        )
        .await
    }

    async fn create(
        &self,
        who: &Identity,
        namespace: Namespace,
        dry_run: bool,
    ) -> Result<Written<Namespace>, ApiError> {
        who.require(&[Identity::Admin], "create namespaces")?;
        let mut meta = namespace.metadata.unwrap_or_default();
        super::pods::generate_name(&mut meta);
        check(&meta.name, &meta.labels)?;
        check_annotations(&meta.annotations)?;
        let key = namespace_key(&meta.name);
        let mut namespace = new_namespace(meta.name.clone(), meta.labels);
        let stored = namespace.metadata.get_or_insert_with(Default::default);
        stored.annotations = meta.annotations;
        stored.managed_fields = meta.managed_fields;
        if dry_run {
            if self.store.get::<Namespace>(&key)?.is_some() {
                return Err(ApiError::AlreadyExists(namespace_ref(&meta.name)));
            }
            return Ok(Written::new(namespace));
        }
        let namespace = self
            .store
            .update::<Namespace, _>(&key, |current| match current {
                Some(_) => Err(ApiError::AlreadyExists(namespace_ref(&meta.name))),
                None => Ok(Some(namespace)),
            })
            .await?;
        tracing::info!(namespace = %meta.name, "created");
        Ok(Written::new(namespace))
    }

    /// What an admin changes of a namespace: its labels and annotations.
    async fn update(
        &self,
        who: &Identity,
        namespace: Namespace,
        dry_run: bool,
    ) -> Result<Written<Namespace>, ApiError> {
        who.require(&[Identity::Admin], "change namespaces")?;
        let given = namespace.metadata.unwrap_or_default();
        check(&given.name, &given.labels)?;
        check_annotations(&given.annotations)?;
        let key = namespace_key(&given.name);
        let apply = |current: Option<Namespace>| -> Result<Namespace, ApiError> {
            let Some(mut ns) = current else {
                return Err(ApiError::NotFound(namespace_ref(&given.name)));
            };
            check_version(&ns, given.resource_version, &namespace_ref(&given.name))?;
            let meta = ns.metadata.get_or_insert_with(Default::default);
            super::registry::take_metadata(meta, &given);
            Ok(ns)
        };
        let (namespace, written) = update_object(&self.store, &key, dry_run, apply).await?;
        if written {
            tracing::info!(namespace = %given.name, "labels updated by the admin");
        }
        Ok(Written::new(namespace))
    }

    async fn delete(
        &self,
        who: &Identity,
        _namespace: &str,
        name: &str,
        _options: DeleteOptions,
    ) -> Result<Namespace, ApiError> {
        Err(ApiError::Forbidden(format!(
            "{} is forbidden: kubelab does not delete namespaces yet (it has no namespace controller to empty them); {who} may delete its pods instead",
            namespace_ref(name)
        )))
    }
}
