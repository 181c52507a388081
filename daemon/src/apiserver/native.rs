//! Objects kept in Kubernetes' own shape: the workloads (apps/v1 ReplicaSets and
//! Deployments, batch/v1 Jobs) and the resources after them.
//!
//! Pods, nodes, namespaces and events are mirrored in proto/ and converted at the edge.
//! Newer kinds are not: their metadata is kubelab's `ObjectMeta`, as for every stored
//! object (names, versions, owners, finalizers, managed fields), and the rest — spec and
//! status — is k8s-openapi's type kept as JSON. No mirror to write, no conversion to keep
//! in step, and a field kubelab does not act on is kept and returned as kube-apiserver
//! keeps it.
//!
//! Each kind gives its rules as a `Strategy` (kube-apiserver's create and update
//! strategies: defaults, validation, what may not change); `NativeRegistry` is the one
//! `Registry` they share: who may read and write, generation, the status subresource,
//! finalizers and the deletion timestamp. Owns no kind's rules.

use std::marker::PhantomData;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as K8sMeta;
use k8s_openapi::Metadata as _;
use kubelab_proto::k8s::ConvertError;
use kubelab_proto::now_ms;
use serde_json::Value;

use super::auth::Identity;
use super::pods::namespace_or_default;
use super::registry::{
    selected, take_metadata, update_object, watch_store, DeleteOptions, ListOptions, Registry,
    WatchEvents, Written,
};
use super::store::{check_version, key, prefix, Object, Store};
use super::validation::{check_annotations, check_dns_subdomain, check_labels};
use super::ApiError;

/// A kind stored natively: its metadata and its Kubernetes JSON body.
pub trait Native: Object + PartialEq + Send + Sync + 'static {
    type K8s: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = K8sMeta>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Default
        + Clone
        + Send
        + Sync
        + 'static;
    fn body(&self) -> &[u8];
    fn from_parts(metadata: kubelab_proto::v1::ObjectMeta, body: Vec<u8>) -> Self;
}

/// `native!(ReplicaSetObject, apps::ReplicaSet, "replicasets")`: the stored type of a
/// native kind (a prost message of two fields: metadata, and the body as JSON).
macro_rules! native {
    ($name:ident, $k8s:ty, $plural:literal) => {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct $name {
            #[prost(message, optional, tag = "1")]
            pub metadata: Option<kubelab_proto::v1::ObjectMeta>,
            /// The object without its metadata, as Kubernetes' JSON.
            #[prost(bytes = "vec", tag = "2")]
            pub body: Vec<u8>,
        }
        $crate::apiserver::store::object!($name, $plural);
        impl $crate::apiserver::native::Native for $name {
            type K8s = $k8s;
            fn body(&self) -> &[u8] {
                &self.body
            }
            fn from_parts(metadata: kubelab_proto::v1::ObjectMeta, body: Vec<u8>) -> Self {
                $name {
                    metadata: Some(metadata),
                    body,
                }
            }
        }
    };
}
pub(crate) use native;

/// The object as Kubernetes' type (what REST returns and strategies work on).
pub fn to_k8s<N: Native>(object: &N) -> N::K8s {
    let mut k8s: N::K8s = serde_json::from_slice(object.body()).unwrap_or_default();
    *k8s.metadata_mut() = kubelab_proto::k8s::meta(&object.meta().cloned().unwrap_or_default());
    k8s
}

/// Kubernetes' type as the stored object.
pub fn from_k8s<N: Native>(mut k8s: N::K8s) -> Result<N, ConvertError> {
    let metadata = kubelab_proto::k8s::meta_from_k8s(std::mem::take(k8s.metadata_mut()))?;
    let body = serde_json::to_vec(&k8s).map_err(|e| ConvertError(e.to_string()))?;
    Ok(N::from_parts(metadata, body))
}

/// A kind's rules.
pub trait Strategy: Send + Sync + 'static {
    type Object: Native;
    /// How messages name the resource: `replicasets.apps`.
    const RESOURCE: &'static str;
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    const FIELDS: &'static [&'static str] = &["metadata.name", "metadata.namespace"];

    fn field(_object: &<Self::Object as Native>::K8s, _field: &str) -> String {
        String::new()
    }
    /// Kubernetes' defaults for what the client left out.
    fn default(object: &mut <Self::Object as Native>::K8s);
    /// Refuses what Kubernetes refuses, in its words; returns warnings.
    fn validate(object: &<Self::Object as Native>::K8s) -> Result<Vec<String>, ApiError>;
    /// Refuses changes Kubernetes does not allow (an immutable selector, say).
    fn validate_update(
        _new: &<Self::Object as Native>::K8s,
        _old: &<Self::Object as Native>::K8s,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Whether nodes (and the cluster DNS) may read the kind (as the kubelet, kube-proxy
    /// and CoreDNS read Services).
    const NODES_READ: bool = false;
    /// Who may create, update or delete objects of the kind in `namespace`: the admin
    /// and the controller manager.
    fn may_write(who: &Identity, _namespace: &str, what: &str) -> Result<(), ApiError> {
        who.require_workloads(what)
    }
    /// What the kind's rules take from the apiserver's flags (a Service's IP range).
    type Config: Send + Sync + 'static;
    /// Whether `allocate` has anything to do (it then runs under a lock, with every
    /// object of the kind read).
    const ALLOCATES: bool = false;
    /// Fills in what depends on the kind's other objects — a Service's cluster IP and
    /// node ports — after the defaults and before validation; `old` is the stored object
    /// on update. The registry holds its allocation lock until the write is stored, so two
    /// writes never take the same value.
    fn allocate(
        _config: &Self::Config,
        _object: &mut <Self::Object as Native>::K8s,
        _old: Option<&<Self::Object as Native>::K8s>,
        _others: &[<Self::Object as Native>::K8s],
    ) -> Result<(), ApiError> {
        Ok(())
    }
}

/// The registry of a native kind.
pub struct NativeRegistry<S: Strategy> {
    store: Arc<Store>,
    config: S::Config,
    allocating: tokio::sync::Mutex<()>,
    strategy: PhantomData<S>,
}

impl<S: Strategy> NativeRegistry<S>
where
    S::Config: Default,
{
    pub fn new(store: Arc<Store>) -> Self {
        Self::with_config(store, S::Config::default())
    }
}

impl<S: Strategy> NativeRegistry<S> {
    pub fn with_config(store: Arc<Store>, config: S::Config) -> Self {
        NativeRegistry {
            store,
            config,
            allocating: tokio::sync::Mutex::new(()),
            strategy: PhantomData,
        }
    }

    /// For `allocate`: the lock, and every other object of the kind (all but
    /// `namespace/name`) as Kubernetes' type; nothing when the kind allocates nothing.
    async fn allocation(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<
        (
            Option<tokio::sync::MutexGuard<'_, ()>>,
            Vec<<S::Object as Native>::K8s>,
        ),
        ApiError,
    > {
        if !S::ALLOCATES {
            return Ok((None, Vec::new()));
        }
        let guard = self.allocating.lock().await;
        let (all, _) = self
            .store
            .list::<S::Object>(&prefix::<S::Object>(""))
            .await?;
        let others = all
            .iter()
            .filter(|o| {
                o.meta().is_none_or(|m| {
                    m.name != name
                        || namespace_or_default(&m.namespace) != namespace_or_default(namespace)
                })
            })
            .map(to_k8s)
            .collect();
        Ok((Some(guard), others))
    }

    fn reference(name: &str) -> String {
        format!("{} {name:?}", S::RESOURCE)
    }
}

/// The cluster's components read every kind; nodes only those their agent needs
/// (Services and EndpointSlices, for service links and the service proxy).
fn may_read<S: Strategy>(who: &Identity, verb: &str) -> Result<(), ApiError> {
    if S::NODES_READ && matches!(who, Identity::Node(_) | Identity::ClusterDns) {
        return Ok(());
    }
    who.require_cluster(&format!("{verb} {}", S::RESOURCE))
}

/// The body (without metadata) as JSON.
fn json_of<N: Native>(object: &N) -> Value {
    serde_json::from_slice(object.body()).unwrap_or(Value::Null)
}

/// A stored object from its metadata and a JSON body (checked to be the kind's shape).
fn rebuild<N: Native>(meta: kubelab_proto::v1::ObjectMeta, body: &Value) -> Result<N, ApiError> {
    let typed: N::K8s = serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::Invalid(format!("{}: {e}", <N::K8s as k8s_openapi::Resource>::KIND))
    })?;
    let body = serde_json::to_vec(&typed).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(N::from_parts(meta, body))
}

/// Defaults and validation of a client's object; its body as the kind's type again.
struct Prepared {
    body: Vec<u8>,
    warnings: Vec<String>,
    /// The labels after defaulting (a Job without labels takes its template's).
    labels: std::collections::HashMap<String, String>,
}

/// What `allocate` is given: the config, the stored object (on update), the others.
type Allocation<'a, S> = (
    &'a <S as Strategy>::Config,
    Option<&'a <<S as Strategy>::Object as Native>::K8s>,
    &'a [<<S as Strategy>::Object as Native>::K8s],
);

fn prepare<S: Strategy>(
    object: &S::Object,
    allocation: Allocation<'_, S>,
) -> Result<Prepared, ApiError> {
    let mut typed = to_k8s(object);
    S::default(&mut typed);
    if S::ALLOCATES {
        let (config, old, others) = allocation;
        S::allocate(config, &mut typed, old, others)?;
    }
    let warnings = S::validate(&typed)?;
    let meta = std::mem::take(k8s_openapi::Metadata::metadata_mut(&mut typed));
    let labels = meta.labels.unwrap_or_default().into_iter().collect();
    let body = serde_json::to_vec(&typed).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Prepared {
        body,
        warnings,
        labels,
    })
}

impl<S: Strategy> Registry for NativeRegistry<S> {
    type Object = S::Object;
    const NAMESPACED: bool = true;
    const FIELDS: &'static [&'static str] = S::FIELDS;

    fn field(object: &S::Object, field: &str) -> String {
        S::field(&to_k8s(object), field)
    }

    async fn get(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
    ) -> Result<S::Object, ApiError> {
        may_read::<S>(who, "read")?;
        self.store
            .get_durable::<S::Object>(&key::<S::Object>(namespace, name))
            .await?
            .ok_or_else(|| ApiError::NotFound(Self::reference(name)))
    }

    async fn list(
        &self,
        who: &Identity,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<(Vec<S::Object>, u64), ApiError> {
        may_read::<S>(who, "list")?;
        let (mut items, revision) = self
            .store
            .list::<S::Object>(&prefix::<S::Object>(namespace))
            .await?;
        if !options.labels.is_empty() || !options.fields.is_empty() {
            items.retain(|o| selected(o, options, Self::field));
        }
        Ok((items, revision))
    }

    async fn watch(
        &self,
        who: &Identity,
        namespace: &str,
        from_revision: u64,
        options: ListOptions,
    ) -> Result<WatchEvents<S::Object>, ApiError> {
        may_read::<S>(who, "watch")?;
        watch_store(
            &self.store,
            from_revision,
            prefix::<S::Object>(namespace),
            String::new(),
            options,
            Self::field,
        )
        .await
    }

    async fn create(
        &self,
        who: &Identity,
        object: S::Object,
        dry_run: bool,
    ) -> Result<Written<S::Object>, ApiError> {
        let mut meta = object.meta().cloned().unwrap_or_default();
        S::may_write(who, &meta.namespace, &format!("create {}", S::RESOURCE))?;
        super::pods::generate_name(&mut meta);
        check_dns_subdomain("metadata.name", &meta.name)?;
        check_labels(&meta.labels)?;
        check_annotations(&meta.annotations)?;
        if meta.resource_version != 0 {
            return Err(ApiError::Invalid(
                "metadata.resourceVersion: Invalid value: must be empty on create (resourceVersion should not be set on objects to be created)".into(),
            ));
        }
        // Held until the object is stored: no two creates take the same cluster IP.
        let (_allocating, others) = self.allocation(&meta.namespace, &meta.name).await?;
        // The uid comes before the defaults: a Job's generated selector names it.
        meta.uid = uuid::Uuid::new_v4().to_string();
        let object = S::Object::from_parts(meta.clone(), object.body().to_vec());
        let Prepared {
            body,
            warnings,
            labels,
        } = prepare::<S>(&object, (&self.config, None, &others))?;
        meta.labels = labels;
        let mut body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        // A new object has no status yet: its controller writes the first one.
        if let Some(map) = body.as_object_mut() {
            map.remove("status");
        }
        meta.creation_timestamp_ms = now_ms();
        meta.deletion_timestamp_ms = 0;
        meta.deletion_grace_period_seconds = 0;
        meta.generation = 1;
        let name = meta.name.clone();
        let key = key::<S::Object>(&meta.namespace, &name);
        let object = rebuild::<S::Object>(meta, &body)?;
        if dry_run {
            if self.store.get::<S::Object>(&key)?.is_some() {
                return Err(ApiError::AlreadyExists(Self::reference(&name)));
            }
            return Ok(Written { object, warnings });
        }
        let object = self
            .store
            .update::<S::Object, _>(&key, |current| match current {
                Some(_) => Err(ApiError::AlreadyExists(Self::reference(&name))),
                None => Ok(Some(object)),
            })
            .await?;
        tracing::info!(object = %key, "created");
        Ok(Written { object, warnings })
    }

    /// Spec and metadata as given, status as stored; a changed spec is a new generation.
    /// An object being deleted goes once its last finalizer is removed.
    async fn update(
        &self,
        who: &Identity,
        object: S::Object,
        dry_run: bool,
    ) -> Result<Written<S::Object>, ApiError> {
        let mut given = object.meta().cloned().unwrap_or_default();
        S::may_write(who, &given.namespace, &format!("update {}", S::RESOURCE))?;
        check_labels(&given.labels)?;
        check_annotations(&given.annotations)?;
        let (_allocating, others) = self.allocation(&given.namespace, &given.name).await?;
        let Prepared {
            body,
            warnings,
            labels,
        } = {
            // Only `allocate` reads the stored object here (its cluster IP to keep).
            let stored = match S::ALLOCATES {
                true => self
                    .store
                    .get::<S::Object>(&key::<S::Object>(&given.namespace, &given.name))?
                    .as_ref()
                    .map(to_k8s),
                false => None,
            };
            prepare::<S>(&object, (&self.config, stored.as_ref(), &others))?
        };
        given.labels = labels;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let key = key::<S::Object>(&given.namespace, &given.name);
        let name = given.name.clone();
        let decide = |current: Option<S::Object>| -> Result<Option<S::Object>, ApiError> {
            let current = current.ok_or_else(|| ApiError::NotFound(Self::reference(&name)))?;
            check_version(&current, given.resource_version, &Self::reference(&name))?;
            let old = json_of::<S::Object>(&current);
            S::validate_update(
                &serde_json::from_value(body.clone()).unwrap_or_default(),
                &to_k8s(&current),
            )?;
            let mut meta = current.meta().cloned().unwrap_or_default();
            if meta.deletion_timestamp_ms != 0 && given.finalizers.len() > meta.finalizers.len() {
                return Err(ApiError::Forbidden(format!(
                    "{}: no new finalizers can be added if the object is being deleted",
                    Self::reference(&name)
                )));
            }
            take_metadata(&mut meta, &given);
            if meta.deletion_timestamp_ms != 0 && meta.finalizers.is_empty() {
                return Ok(None);
            }
            let mut new = body.clone();
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            if new.get("spec") != old.get("spec") {
                meta.generation = meta.generation.saturating_add(1);
            }
            rebuild::<S::Object>(meta, &new).map(Some)
        };
        if dry_run {
            let current = self.store.get::<S::Object>(&key)?;
            let object = match decide(current.clone())? {
                Some(o) => o,
                None => current.ok_or_else(|| ApiError::NotFound(Self::reference(&name)))?,
            };
            return Ok(Written { object, warnings });
        }
        let current = self.store.get::<S::Object>(&key)?;
        let candidate = decide(current.clone())?;
        if candidate.is_some() && candidate == current {
            let object = candidate.unwrap_or_default();
            return Ok(Written { object, warnings });
        }
        let object = self.store.update::<S::Object, _>(&key, decide).await?;
        Ok(Written { object, warnings })
    }

    /// `PUT .../status`: the status given, everything else as stored (what controllers
    /// write).
    async fn update_status(
        &self,
        who: &Identity,
        object: S::Object,
        dry_run: bool,
    ) -> Result<Written<S::Object>, ApiError> {
        who.require_workloads(&format!("update the status of {}", S::RESOURCE))?;
        let given_meta = object.meta().cloned().unwrap_or_default();
        let given = json_of::<S::Object>(&object);
        let key = key::<S::Object>(&given_meta.namespace, &given_meta.name);
        let apply = |current: Option<S::Object>| -> Result<S::Object, ApiError> {
            let current =
                current.ok_or_else(|| ApiError::NotFound(Self::reference(&given_meta.name)))?;
            check_version(
                &current,
                given_meta.resource_version,
                &Self::reference(&given_meta.name),
            )?;
            let mut body = json_of::<S::Object>(&current);
            body["status"] = given.get("status").cloned().unwrap_or(Value::Null);
            rebuild::<S::Object>(current.meta().cloned().unwrap_or_default(), &body)
        };
        let (object, _) = update_object(&self.store, &key, dry_run, apply).await?;
        Ok(Written::new(object))
    }

    /// Removes the object, or, while it has finalizers, marks it deleted: whoever owns a
    /// finalizer removes it when done (the garbage collector for `foregroundDeletion` and
    /// `orphan`), and the last removal deletes the object.
    async fn delete(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
        options: DeleteOptions,
    ) -> Result<S::Object, ApiError> {
        S::may_write(who, namespace, &format!("delete {}", S::RESOURCE))?;
        let key = key::<S::Object>(namespace, name);
        let mut removed = false;
        let decide = |current: Option<S::Object>, removed: &mut bool| {
            let mut object = current.ok_or_else(|| ApiError::NotFound(Self::reference(name)))?;
            let meta = object.meta_mut();
            if !options.uid.is_empty() && meta.uid != options.uid {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    options.uid, meta.uid
                )));
            }
            check_version(&object, options.resource_version, &Self::reference(name))?;
            let meta = object.meta_mut();
            if let Some(finalizer) = options.propagation.finalizer() {
                if !meta.finalizers.iter().any(|f| f == finalizer) {
                    meta.finalizers.push(finalizer.to_string());
                }
            }
            if meta.finalizers.is_empty() {
                *removed = true;
            } else if meta.deletion_timestamp_ms == 0 {
                meta.deletion_timestamp_ms = now_ms();
            }
            Ok::<_, ApiError>(Some(object))
        };
        if options.dry_run {
            let object = decide(self.store.get::<S::Object>(&key)?, &mut removed)?;
            return object.ok_or_else(|| ApiError::NotFound(Self::reference(name)));
        }
        let object = self
            .store
            .update::<S::Object, _>(&key, |current| {
                let decided = decide(current, &mut removed)?;
                Ok(if removed { None } else { decided })
            })
            .await?;
        tracing::info!(object = %key, removed, "deleted");
        Ok(object)
    }
}
