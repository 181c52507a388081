//! The Namespaces service: create, read and relabel namespaces (the admin writes, the
//! cluster reads), and the `default` namespace every cluster starts with.
//!
//! Owns Namespace objects only: their names and labels, the Pod Security ones checked as
//! Kubernetes checks them. It never touches pods; the Pods service reads a namespace's
//! labels when it admits a pod. Namespaces are never deleted (kubelab has no namespace
//! controller to empty them), and pods may name a namespace without an object.

use std::sync::Arc;

use kubelab_proto::now_ms;
use kubelab_proto::v1::namespaces_server::Namespaces;
use kubelab_proto::v1::{
    ListNamespacesRequest, Namespace, NamespaceList, NamespaceStatus, ObjectKey,
    UpdateNamespaceRequest,
};
use tonic::{Request, Response, Status};

use super::auth::{Authenticator, Identity};
use super::pod_security::check_namespace_labels;
use super::selector::LabelSelector;
use super::store::{check_version, key, prefix, Store};
use super::validation::{check_dns_label, check_labels};
use super::ApiError;

pub struct NamespacesService {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
}

impl NamespacesService {
    pub fn new(store: Arc<Store>, auth: Arc<Authenticator>) -> Self {
        NamespacesService { store, auth }
    }

    /// Namespaces are read by everyone in the cluster (not by the bootstrap credential).
    fn reader<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = self.auth.identify(request)?;
        if who == Identity::Bootstrap {
            return Err(who.denied("read namespaces"));
        }
        Ok(())
    }
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

/// Creates the `default` namespace when the store has none, as kube-apiserver does at start.
pub async fn ensure_default(store: &Store) -> Result<(), ApiError> {
    let key = namespace_key("default");
    store
        .update::<Namespace, _>(&key, |current| match current {
            Some(ns) => Ok(Some(ns)),
            None => Ok(Some(new_namespace("default".into(), Default::default()))),
        })
        .await?;
    Ok(())
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn create(&self, request: Request<Namespace>) -> Result<Response<Namespace>, Status> {
        self.auth
            .identify(&request)?
            .require(&[Identity::Admin], "create namespaces")?;
        let meta = request.into_inner().metadata.unwrap_or_default();
        check(&meta.name, &meta.labels)?;
        let key = namespace_key(&meta.name);
        let namespace = new_namespace(meta.name.clone(), meta.labels);
        let namespace = self
            .store
            .update::<Namespace, _>(&key, |current| match current {
                Some(_) => Err(ApiError::AlreadyExists(format!(
                    "namespaces {:?}",
                    meta.name
                ))),
                None => Ok(Some(namespace)),
            })
            .await?;
        tracing::info!(namespace = %meta.name, "created");
        Ok(Response::new(namespace))
    }

    async fn get(&self, request: Request<ObjectKey>) -> Result<Response<Namespace>, Status> {
        self.reader(&request)?;
        let name = request.into_inner().name;
        match self
            .store
            .get_durable::<Namespace>(&namespace_key(&name))
            .await?
        {
            Some(ns) => Ok(Response::new(ns)),
            None => Err(ApiError::NotFound(format!("namespaces {name:?}")).into()),
        }
    }

    async fn list(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<NamespaceList>, Status> {
        self.reader(&request)?;
        let selector = LabelSelector::parse(&request.get_ref().label_selector)?;
        let (mut items, resource_version) = self
            .store
            .list::<Namespace>(&prefix::<Namespace>(""))
            .await?;
        items.retain(|n| selector.is_empty() || selector.matches(super::labels_of(n)));
        Ok(Response::new(NamespaceList {
            items,
            resource_version,
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<Namespace>, Status> {
        self.auth
            .identify(&request)?
            .require(&[Identity::Admin], "change namespaces")?;
        let r = request.into_inner();
        check(&r.name, &r.labels)?;
        let key = namespace_key(&r.name);
        let namespace = self
            .store
            .update::<Namespace, _>(&key, |current| {
                let Some(mut ns) = current else {
                    return Err(ApiError::NotFound(format!("namespaces {:?}", r.name)));
                };
                check_version(&ns, r.resource_version, &format!("namespaces {:?}", r.name))?;
                ns.metadata.get_or_insert_with(Default::default).labels = r.labels.clone();
                Ok(Some(ns))
            })
            .await?;
        tracing::info!(namespace = %r.name, "labels updated by the admin");
        Ok(Response::new(namespace))
    }
}
