//! The operations every resource offers, once: get, list, watch, create, update, delete
//! (kube-apiserver's `rest.Storage` verbs). Each resource (`pods`, `nodes`,
//! `namespaces`, `events`) implements `Registry` with its own rules — who may do what,
//! validation, admission, defaults — and both ways in, `grpc` and `rest`, call these
//! methods: a request reaches the same code whatever its encoding.
//!
//! Owns the shapes of those calls (options, results) and the watch plumbing they share.
//! It decides nothing about any resource.

use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;

use super::auth::Identity;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{ChangeType, Object, Store};
use super::ApiError;

/// Which objects a list or a watch wants.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

/// How a delete is asked for (Kubernetes' `DeleteOptions`).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Unset: the object's own grace period. 0 (with `force`): removed at once.
    pub grace_period_seconds: Option<i64>,
    pub force: bool,
    /// Preconditions: delete only this object (uid) or this version of it.
    pub uid: String,
    pub resource_version: u64,
    pub dry_run: bool,
    pub propagation: Propagation,
}

/// What happens to an object's dependents when it is deleted (`propagationPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes now; the garbage collector deletes its dependents after.
    #[default]
    Background,
    /// The object stays (deleting) until the dependents that block it are gone.
    Foreground,
    /// The dependents stay, their owner reference removed.
    Orphan,
}

impl Propagation {
    pub fn parse(text: &str) -> Option<Propagation> {
        match text {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }

    /// The finalizer that makes the garbage collector act before the object goes.
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_DELETION),
            Propagation::Orphan => Some(ORPHAN),
        }
    }
}

/// Kubernetes' finalizers for the two propagation policies that wait.
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// What a write returns: the object as stored, and warnings for the client.
#[derive(Debug)]
pub struct Written<T> {
    pub object: T,
    pub warnings: Vec<String>,
}

impl<T> Written<T> {
    pub fn new(object: T) -> Self {
        Written {
            object,
            warnings: Vec::new(),
        }
    }
}

/// One change seen by a watch: its type, the store revision, and the object.
pub type WatchEvent<T> = (ChangeType, u64, T);

/// A watch: every change after the revision asked for, then live, until dropped. An
/// `Err` ends it (expired, fell behind).
pub type WatchEvents<T> =
    Pin<Box<dyn futures::Stream<Item = Result<WatchEvent<T>, ApiError>> + Send>>;

/// A resource's operations. `who` is the authenticated caller; each method decides what
/// that caller may do.
pub trait Registry: Send + Sync + 'static {
    type Object: Object + Send + Sync + 'static;
    /// Whether objects live in a namespace (pods, events) or not (nodes, namespaces).
    const NAMESPACED: bool;
    /// The fields a field selector may name (`metadata.name` and `metadata.namespace`
    /// always).
    const FIELDS: &'static [&'static str];

    /// The value of a selectable field of an object.
    fn field(object: &Self::Object, field: &str) -> String;

    fn get(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Self::Object, ApiError>> + Send;

    /// The objects and the revision they were read at.
    fn list(
        &self,
        who: &Identity,
        namespace: &str,
        options: &ListOptions,
    ) -> impl Future<Output = Result<(Vec<Self::Object>, u64), ApiError>> + Send;

    fn watch(
        &self,
        who: &Identity,
        namespace: &str,
        from_revision: u64,
        options: ListOptions,
    ) -> impl Future<Output = Result<WatchEvents<Self::Object>, ApiError>> + Send;

    fn create(
        &self,
        who: &Identity,
        object: Self::Object,
        dry_run: bool,
    ) -> impl Future<Output = Result<Written<Self::Object>, ApiError>> + Send;

    /// Replaces what a client may change; `metadata.resourceVersion`, when set, must be
    /// current (else a conflict).
    fn update(
        &self,
        who: &Identity,
        object: Self::Object,
        dry_run: bool,
    ) -> impl Future<Output = Result<Written<Self::Object>, ApiError>> + Send;

    /// `PUT .../status`: only the status changes (what controllers write). Resources
    /// whose status kubelab writes itself refuse.
    fn update_status(
        &self,
        who: &Identity,
        object: Self::Object,
        dry_run: bool,
    ) -> impl Future<Output = Result<Written<Self::Object>, ApiError>> + Send {
        let _ = (who, object, dry_run);
        async {
            Err(ApiError::MethodNotAllowed(
                "this resource's status is written by kubelab itself".into(),
            ))
        }
    }

    /// Returns the object as deleted, or as marked for a graceful delete.
    fn delete(
        &self,
        who: &Identity,
        namespace: &str,
        name: &str,
        options: DeleteOptions,
    ) -> impl Future<Output = Result<Self::Object, ApiError>> + Send;
}

/// Whether `object` passes `options`, `field` reading its selectable fields.
pub fn selected<T: Object>(
    object: &T,
    options: &ListOptions,
    field: impl Fn(&T, &str) -> String,
) -> bool {
    (options.labels.is_empty() || options.labels.matches(super::labels_of(object)))
        && (options.fields.is_empty()
            || options.fields.matches(|f| match f {
                "metadata.name" => object.meta().map(|m| m.name.clone()).unwrap_or_default(),
                "metadata.namespace" => object
                    .meta()
                    .map(|m| m.namespace.clone())
                    .unwrap_or_default(),
                other => field(object, other),
            }))
}

/// The store's change feed for `prefix` (and `node`, unless empty) as decoded objects
/// that pass `options`.
pub async fn watch_store<T, F>(
    store: &Store,
    from_revision: u64,
    prefix: String,
    node: String,
    options: ListOptions,
    field: F,
) -> Result<WatchEvents<T>, ApiError>
where
    T: Object + Send + 'static,
    F: Fn(&T, &str) -> String + Send + 'static,
{
    let rx = store.watch(from_revision, prefix, node).await?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).filter_map(move |change| {
        let item = match change {
            Err(e) => Some(Err(e)),
            Ok(change) => match T::decode(&change.value[..]) {
                Err(e) => Some(Err(ApiError::Internal(format!("undecodable object: {e}")))),
                Ok(object) if !selected(&object, &options, &field) => None,
                Ok(object) => Some(Ok((change.change_type, change.revision, object))),
            },
        };
        futures::future::ready(item)
    });
    Ok(Box::pin(stream))
}

/// An update as Kubernetes makes one: `apply` turns the stored object into the new one
/// (or refuses); a dry run or a change of nothing writes nothing (the version stays).
/// Returns the object and whether it was written.
pub async fn update_object<T, F>(
    store: &Store,
    key: &str,
    dry_run: bool,
    apply: F,
) -> Result<(T, bool), ApiError>
where
    T: Object + PartialEq,
    F: Fn(Option<T>) -> Result<T, ApiError>,
{
    let current = store.get::<T>(key)?;
    let candidate = apply(current.clone())?;
    if dry_run || current.as_ref() == Some(&candidate) {
        return Ok((candidate, false));
    }
    let written = store
        .update::<T, _>(key, |current| apply(current).map(Some))
        .await?;
    Ok((written, true))
}

/// What a client may change of an object's metadata in an update: its labels,
/// annotations, owners and finalizers, and who set which fields (worked out by the REST
/// side; a client that sends none keeps them).
pub fn take_metadata(
    stored: &mut kubelab_proto::v1::ObjectMeta,
    given: &kubelab_proto::v1::ObjectMeta,
) {
    stored.labels = given.labels.clone();
    stored.annotations = given.annotations.clone();
    stored.owner_references = given.owner_references.clone();
    stored.finalizers = given.finalizers.clone();
    if !given.managed_fields.is_empty() {
        stored.managed_fields = given.managed_fields.clone();
    }
}
