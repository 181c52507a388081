//! The apiserver's storage: sled trees, one global revision, and the watch feed.
//!
//! Owns every byte on disk. `objects` maps `kind/namespace/name` to the encoded object,
//! `history` maps each revision to the change it made (a bounded window, for watch
//! replay), `meta` holds the revision counter. A write is acknowledged only after sled has
//! flushed it. Nothing outside the apiserver opens this database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::ApiError;

/// How many past revisions a watch can replay by default; older ones must relist.
pub const HISTORY_WINDOW: u64 = 100_000;
/// sled's page cache: the objects a lab holds fit many times over, and the apiserver
/// stays small (sled's default would be 1 GiB).
const CACHE_BYTES: u64 = 32 << 20;
const REVISION_KEY: &[u8] = b"revision";
const COMPACTED_KEY: &[u8] = b"compacted";

/// What a write did to one key: the API's own watch event type (Added, Modified, Deleted).
pub use kubelab_proto::v1::WatchEventType as ChangeType;

/// One committed write, as watchers see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub revision: u64,
    pub change_type: ChangeType,
    pub key: String,
    /// The object after the write (for a delete: the object as it was last), shared by
    /// every watcher.
    pub value: Arc<[u8]>,
    /// The node the object is bound to (`spec.nodeName`), so that a watch of one node's
    /// pods skips the others without decoding them.
    pub node: std::sync::Arc<str>,
}

/// How a change is kept in the `history` tree.
#[derive(Clone, PartialEq, prost::Message)]
struct HistoryRecord {
    #[prost(enumeration = "ChangeType", tag = "1")]
    change_type: i32,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
    #[prost(string, tag = "4")]
    node: String,
}

/// An object kind kept in the store; the key prefix is its plural name, as in Kubernetes' URLs.
pub trait Object: Message + Default + Clone {
    const KIND: &'static str;
    fn meta(&self) -> Option<&kubelab_proto::v1::ObjectMeta>;
    fn meta_mut(&mut self) -> &mut kubelab_proto::v1::ObjectMeta;
    /// The node the object belongs to, if any (`spec.nodeName` of a pod).
    fn node_name(&self) -> &str {
        ""
    }
    fn resource_version(&self) -> u64 {
        self.meta().map(|m| m.resource_version).unwrap_or(0)
    }
}

/// `object!(Type, "plural")`, and for kinds bound to a node, how to read that node.
macro_rules! object {
    ($ty:ty, $kind:literal $(, node_name: |$o:ident| $node:expr)?) => {
        impl $crate::apiserver::store::Object for $ty {
            const KIND: &'static str = $kind;
            fn meta(&self) -> Option<&kubelab_proto::v1::ObjectMeta> {
                self.metadata.as_ref()
            }
            fn meta_mut(&mut self) -> &mut kubelab_proto::v1::ObjectMeta {
                self.metadata.get_or_insert_with(Default::default)
            }
            $(
                fn node_name(&self) -> &str {
                    let $o = self;
                    $node
                }
            )?
        }
    };
}
pub(crate) use object;
object!(kubelab_proto::v1::Pod, "pods", node_name: |pod| pod
    .spec
    .as_ref()
    .map(|s| s.node_name.as_str())
    .unwrap_or(""));
object!(kubelab_proto::v1::Node, "nodes");
object!(kubelab_proto::v1::Namespace, "namespaces");
object!(kubelab_proto::v1::Event, "events");

/// Kubernetes' words for a write made over a stale read.
pub fn conflict(key: &str) -> ApiError {
    ApiError::Conflict(format!(
        "Operation cannot be fulfilled on {key}: the object has been modified; please apply your changes to the latest version and try again"
    ))
}

/// A conditional write: when the caller names the version it read (`expected` > 0), the
/// object must still be at that version.
pub fn check_version<T: Object>(current: &T, expected: u64, key: &str) -> Result<(), ApiError> {
    if expected != 0 && current.resource_version() != expected {
        return Err(conflict(key));
    }
    Ok(())
}

/// The key of an object: `pods/default/hello`. Nodes have no namespace: `nodes//node-1`.
pub fn key<T: Object>(namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", T::KIND)
}

/// The prefix that lists a kind, or one namespace of it.
pub fn prefix<T: Object>(namespace: &str) -> String {
    if namespace.is_empty() {
        format!("{}/", T::KIND)
    } else {
        format!("{}/{namespace}/", T::KIND)
    }
}

pub struct Store {
    /// Dropped first (fields drop in order): writers still waiting are flushed for.
    flusher: super::flusher::Flusher,
    objects: sled::Tree,
    history: sled::Tree,
    meta: sled::Tree,
    /// Serialises writers so that revisions are handed out, committed and broadcast in order.
    /// An async lock: a writer waiting for it yields its thread to the network instead of
    /// blocking it (with two cores, a blocked thread is half the apiserver).
    write_lock: tokio::sync::Mutex<()>,
    history_window: u64,
    revision: AtomicU64,
    compacted: AtomicU64,
    /// Live watchers by the node they follow ("" for all): a write is handed only to the
    /// watchers of its node and to those of all nodes — a thousand agents' watches do not
    /// each look at every pod (the idea of kube-apiserver's watch cache indexers).
    watchers: Mutex<HashMap<Arc<str>, Vec<Watcher>>>,
}

/// How many changes a watcher may fall behind before it is cut off and told to relist.
const WATCHER_BUFFER: usize = 16_384;

struct Watcher {
    prefix: String,
    tx: tokio::sync::mpsc::Sender<Change>,
    /// Set when the watcher fell behind and was dropped.
    lagged: Arc<AtomicBool>,
}

impl Store {
    pub fn open(dir: &std::path::Path, history_window: u64) -> Result<Self, ApiError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(storage)?;
        let objects = db.open_tree("objects").map_err(storage)?;
        let history = db.open_tree("history").map_err(storage)?;
        let meta = db.open_tree("meta").map_err(storage)?;
        let read_u64 = |k: &[u8]| -> Result<u64, ApiError> {
            Ok(meta
                .get(k)
                .map_err(storage)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0))
        };
        let revision = read_u64(REVISION_KEY)?;
        let mut compacted = read_u64(COMPACTED_KEY)?;
        // A smaller window than the last run's: drop the history it no longer keeps.
        let keep_from = revision.saturating_sub(history_window.max(1));
        if keep_from > compacted {
            for entry in history.range(..=keep_from.to_be_bytes()) {
                let (rev, _) = entry.map_err(storage)?;
                history.remove(rev).map_err(storage)?;
            }
            compacted = keep_from;
            meta.insert(COMPACTED_KEY, &compacted.to_be_bytes())
                .map_err(storage)?;
        }
        Ok(Store {
            flusher: super::flusher::Flusher::start(db.clone(), revision),
            objects,
            history,
            meta,
            write_lock: tokio::sync::Mutex::new(()),
            history_window: history_window.max(1),
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            watchers: Mutex::new(HashMap::new()),
        })
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    pub fn get<T: Object>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.objects.get(key).map_err(storage)? {
            Some(bytes) => Ok(Some(T::decode(bytes.as_ref()).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    /// Every object under `prefix`, and the revision the list is consistent with. Only
    /// what is on disk is shown: a reader never sees a write a crash could still lose.
    pub async fn list<T: Object>(&self, prefix: &str) -> Result<(Vec<T>, u64), ApiError> {
        let (items, revision) = {
            // Holding the write lock makes the scan and the revision agree.
            let _guard = self.write_lock.lock().await;
            let mut items = Vec::new();
            for entry in self.objects.scan_prefix(prefix) {
                let (_, bytes) = entry.map_err(storage)?;
                items.push(T::decode(bytes.as_ref()).map_err(corrupt)?);
            }
            (items, self.revision())
        };
        self.flusher.durable(revision).await?;
        Ok((items, revision))
    }

    /// As `get`, for answering clients: the object once its version is on disk (as etcd
    /// shows only committed data, a client never sees a write that a crash could lose).
    pub async fn get_durable<T: Object>(&self, key: &str) -> Result<Option<T>, ApiError> {
        let object = self.get::<T>(key)?;
        if let Some(o) = &object {
            self.flusher.durable(o.resource_version()).await?;
        }
        Ok(object)
    }

    /// Read-modify-write of one object. `change` sees the current object (if any) and
    /// returns the new one, `None` to delete it, or an error to write nothing. The new
    /// object's `resource_version` is set to the write's revision. Returns the object as
    /// written (for a delete: as it was).
    pub async fn update<T, F>(&self, key: &str, change: F) -> Result<T, ApiError>
    where
        T: Object,
        F: FnOnce(Option<T>) -> Result<Option<T>, ApiError>,
    {
        let result = {
            let _guard = self.write_lock.lock().await;
            let current = self.get::<T>(key)?;
            // Kept for a delete, which answers with the object as it was.
            let previous = current.clone();
            let revision = self.revision() + 1;
            let (change_type, object) = match change(current)? {
                Some(mut object) => {
                    object.meta_mut().resource_version = revision;
                    let t = if previous.is_some() {
                        ChangeType::Modified
                    } else {
                        ChangeType::Added
                    };
                    (t, object)
                }
                // As in Kubernetes, the deleted object carries the delete's revision.
                None => match previous {
                    Some(mut previous) => {
                        previous.meta_mut().resource_version = revision;
                        (ChangeType::Deleted, previous)
                    }
                    None => return Err(ApiError::NotFound(key.to_string())),
                },
            };
            let value = object.encode_to_vec();
            self.commit(revision, change_type, key, &value, object.node_name())?;
            object
        };
        // Acknowledge only what is on disk; one flush covers every writer waiting.
        let revision = result.resource_version();
        self.flusher.durable(revision).await?;
        Ok(result)
    }

    /// Writes the object, its history record and the new revision in one transaction,
    /// then tells watchers. Called with the write lock held.
    fn commit(
        &self,
        revision: u64,
        change_type: ChangeType,
        key: &str,
        value: &[u8],
        node: &str,
    ) -> Result<(), ApiError> {
        let record = HistoryRecord {
            change_type: change_type as i32,
            key: key.to_string(),
            value: value.to_vec(),
            node: node.to_string(),
        }
        .encode_to_vec();
        let compact_to = revision.saturating_sub(self.history_window);
        (&self.objects, &self.history, &self.meta)
            .transaction(|(objects, history, meta)| {
                if change_type == ChangeType::Deleted {
                    objects.remove(key.as_bytes())?;
                } else {
                    objects.insert(key.as_bytes(), value)?;
                }
                history.insert(&revision.to_be_bytes(), record.as_slice())?;
                meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
                if compact_to > 0 {
                    history.remove(&compact_to.to_be_bytes())?;
                    meta.insert(COMPACTED_KEY, &compact_to.to_be_bytes())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => storage(e),
                TransactionError::Abort(()) => ApiError::Internal("transaction aborted".into()),
            })?;
        self.revision.store(revision, Ordering::SeqCst);
        self.compacted.fetch_max(compact_to, Ordering::SeqCst);
        let change = Change {
            revision,
            change_type,
            key: key.to_string(),
            value: value.into(),
            node: node.into(),
        };
        self.dispatch(&change);
        Ok(())
    }

    /// Hands a committed change to its watchers, in commit order (we hold the write lock).
    /// A watcher whose buffer is full is dropped, and told to relist: it never slows writers.
    fn dispatch(&self, change: &Change) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let deliver = |list: &mut Vec<Watcher>| {
            list.retain(|w| {
                if !change.key.starts_with(&w.prefix) {
                    return !w.tx.is_closed();
                }
                match w.tx.try_send(change.clone()) {
                    Ok(()) => true,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        w.lagged.store(true, Ordering::SeqCst);
                        false
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                }
            })
        };
        if let Some(list) = watchers.get_mut("") {
            deliver(list);
        }
        if !change.node.is_empty() {
            if let Some(list) = watchers.get_mut(&change.node) {
                deliver(list);
                if list.is_empty() {
                    watchers.remove(&change.node);
                }
            }
        }
    }

    /// Changes after `from_revision` under `prefix` (and bound to `node`, unless empty):
    /// first replayed from history, then live. A revision older than the history window is
    /// `Expired` and one newer than the store's is `TooLarge`: the caller must relist.
    pub async fn watch(
        &self,
        from_revision: u64,
        prefix: String,
        node: String,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Change, ApiError>>, ApiError> {
        // Under the write lock only what must be atomic with writes: the checks, and the
        // registration of the live feed at a known revision `upto`. Every later change is
        // live; the replay of (from_revision, upto] reads history afterwards, off the lock
        // and off the async threads, so a long replay never holds up writers.
        let (live_tx, mut live) = tokio::sync::mpsc::channel(WATCHER_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let upto = {
            let _guard = self.write_lock.lock().await;
            let current = self.revision();
            if from_revision > current {
                return Err(ApiError::TooLarge(from_revision, current));
            }
            let compacted = self.compacted.load(Ordering::SeqCst);
            if from_revision < compacted {
                return Err(ApiError::Expired(from_revision, compacted));
            }
            self.watchers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(node.as_str().into())
                .or_default()
                .push(Watcher {
                    prefix: prefix.clone(),
                    tx: live_tx,
                    lagged: lagged.clone(),
                });
            current
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let history = self.history.clone();
        // Live changes are handed over at commit; each is sent on once it is on disk, so
        // that a watcher, like a reader, never acts on a write a crash could lose.
        let durable = self.flusher.waiter();
        tokio::spawn(async move {
            let mut last = upto;
            if upto > from_revision {
                if let Err(e) = durable.durable(upto).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                let replay_tx = tx.clone();
                let replayed = tokio::task::spawn_blocking(move || {
                    replay(&history, from_revision, upto, &prefix, &node, &replay_tx)
                })
                .await
                .unwrap_or_else(|e| Err(ApiError::Internal(format!("watch replay: {e}"))));
                if let Err(e) = replayed {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            while let Some(change) = live.recv().await {
                last = change.revision;
                if let Err(e) = durable.durable(change.revision).await {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            if lagged.load(Ordering::SeqCst) {
                let _ = tx.send(Err(ApiError::WatchTooSlow(last))).await;
            }
        });
        Ok(rx)
    }
}

/// Sends the changes of revisions (`from`, `upto`] under `prefix` (and `node`) from
/// history, in order; blocking (sled reads, and the channel's back-pressure). Every
/// revision has a record, so a missing one means the window moved past it while this ran:
/// the watcher is told to relist rather than silently miss a change.
fn replay(
    history: &sled::Tree,
    from: u64,
    upto: u64,
    prefix: &str,
    node: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Change, ApiError>>,
) -> Result<(), ApiError> {
    let mut expected = from + 1;
    for entry in history.range(expected.to_be_bytes()..=upto.to_be_bytes()) {
        let (rev, bytes) = entry.map_err(storage)?;
        let revision = u64::from_be_bytes(
            <[u8; 8]>::try_from(rev.as_ref()).map_err(|_| corrupt("history key"))?,
        );
        if revision != expected {
            return Err(ApiError::Expired(from, revision.saturating_sub(1)));
        }
        expected += 1;
        let record = HistoryRecord::decode(bytes.as_ref()).map_err(corrupt)?;
        if record.key.starts_with(prefix) && (node.is_empty() || record.node == node) {
            let change = Change {
                revision,
                change_type: record.change_type(),
                key: record.key,
                value: record.value.into(),
                node: record.node.into(),
            };
            if tx.blocking_send(Ok(change)).is_err() {
                // The watcher went away.
                return Ok(());
            }
        }
    }
    if expected != upto + 1 {
        return Err(ApiError::Expired(from, upto));
    }
    Ok(())
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::Storage(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::Storage(format!("undecodable record: {e}"))
}

#[cfg(test)]
mod tests;
