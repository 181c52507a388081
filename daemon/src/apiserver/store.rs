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
use tokio::sync::broadcast;

use super::ApiError;

/// How many past revisions a watch can replay; older ones must relist.
pub const HISTORY_WINDOW: u64 = 100_000;
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
    /// The object after the write (for a delete: the object as it was last).
    pub value: Vec<u8>,
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
}

/// An object kind kept in the store; the key prefix is its plural name, as in Kubernetes' URLs.
pub trait Object: Message + Default + Clone {
    const KIND: &'static str;
    fn meta_mut(&mut self) -> &mut kubelab_proto::v1::ObjectMeta;
}

macro_rules! object {
    ($ty:ty, $kind:literal) => {
        impl Object for $ty {
            const KIND: &'static str = $kind;
            fn meta_mut(&mut self) -> &mut kubelab_proto::v1::ObjectMeta {
                self.metadata.get_or_insert_with(Default::default)
            }
        }
    };
}
object!(kubelab_proto::v1::Pod, "pods");
object!(kubelab_proto::v1::Node, "nodes");
object!(kubelab_proto::v1::Event, "events");

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
    db: sled::Db,
    objects: sled::Tree,
    history: sled::Tree,
    meta: sled::Tree,
    /// Serialises writers so that revisions are handed out, committed and broadcast in order.
    write_lock: Mutex<()>,
    revision: AtomicU64,
    compacted: AtomicU64,
    feed: broadcast::Sender<Change>,
}

impl Store {
    pub fn open(dir: &std::path::Path) -> Result<Self, ApiError> {
        let db = sled::Config::new().path(dir).open().map_err(storage)?;
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
        let compacted = read_u64(COMPACTED_KEY)?;
        // A lagging watcher is cut off (and told to relist) rather than slowing writers.
        let (feed, _) = broadcast::channel(16_384);
        Ok(Store {
            db,
            objects,
            history,
            meta,
            write_lock: Mutex::new(()),
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            feed,
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

    /// Every object under `prefix`, and the revision the list is consistent with.
    pub fn list<T: Object>(&self, prefix: &str) -> Result<(Vec<T>, u64), ApiError> {
        // Holding the write lock makes the scan and the revision agree.
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut items = Vec::new();
        for entry in self.objects.scan_prefix(prefix) {
            let (_, bytes) = entry.map_err(storage)?;
            items.push(T::decode(bytes.as_ref()).map_err(corrupt)?);
        }
        Ok((items, self.revision()))
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
            let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
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
                None => match previous {
                    Some(previous) => (ChangeType::Deleted, previous),
                    None => return Err(ApiError::NotFound(key.to_string())),
                },
            };
            let value = object.encode_to_vec();
            self.commit(revision, change_type, key, &value)?;
            object
        };
        // Acknowledge only what is on disk. sled groups concurrent flushes into one.
        self.db.flush_async().await.map_err(storage)?;
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
    ) -> Result<(), ApiError> {
        let record = HistoryRecord {
            change_type: change_type as i32,
            key: key.to_string(),
            value: value.to_vec(),
        }
        .encode_to_vec();
        let compact_to = revision.saturating_sub(HISTORY_WINDOW);
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
        // No receiver is not an error: nobody is watching.
        let _ = self.feed.send(Change {
            revision,
            change_type,
            key: key.to_string(),
            value: value.to_vec(),
        });
        Ok(())
    }

    /// Changes after `from_revision` under `prefix`: first replayed from history, then live.
    /// A revision older than the history window is `Expired`: the caller must relist.
    pub fn watch(
        &self,
        from_revision: u64,
        prefix: String,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Change, ApiError>>, ApiError> {
        // Subscribe before reading history, so a write landing in between is seen once
        // (replay covers it, and the live part skips what replay already sent).
        let mut live = self.feed.subscribe();
        let replay = {
            let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            let compacted = self.compacted.load(Ordering::SeqCst);
            if from_revision < compacted {
                return Err(ApiError::Expired(from_revision, compacted));
            }
            let mut changes = Vec::new();
            for entry in self.history.range((from_revision + 1).to_be_bytes()..) {
                let (rev, bytes) = entry.map_err(storage)?;
                let revision = u64::from_be_bytes(
                    <[u8; 8]>::try_from(rev.as_ref()).map_err(|_| corrupt("history key"))?,
                );
                let record = HistoryRecord::decode(bytes.as_ref()).map_err(corrupt)?;
                if record.key.starts_with(&prefix) {
                    changes.push(Change {
                        revision,
                        change_type: record.change_type(),
                        key: record.key,
                        value: record.value,
                    });
                }
            }
            (changes, self.revision())
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let (changes, mut last) = replay;
            last = last.max(from_revision);
            for change in changes {
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(change) => {
                        if change.revision <= last || !change.key.starts_with(&prefix) {
                            continue;
                        }
                        last = change.revision;
                        if tx.send(Ok(change)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(ApiError::WatchTooSlow(last))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::Storage(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> ApiError {
    ApiError::Storage(format!("undecodable record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelab_proto::v1::{ObjectMeta, Pod};

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn put(store: &Store, name: &str) -> u64 {
        let p = pod(name);
        let written = store
            .update::<Pod, _>(&key::<Pod>("default", name), |_| Ok(Some(p)))
            .await
            .expect("write");
        written.metadata.expect("meta").resource_version
    }

    #[tokio::test]
    async fn every_write_takes_the_next_revision_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            assert_eq!(put(&store, "a").await, 1);
            assert_eq!(put(&store, "b").await, 2);
            assert_eq!(put(&store, "a").await, 3);
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.revision(), 3);
        let (pods, rev) = store.list::<Pod>(&prefix::<Pod>("default")).expect("list");
        assert_eq!((pods.len(), rev), (2, 3));
        assert_eq!(put(&store, "c").await, 4);
    }

    #[tokio::test]
    async fn a_watch_replays_history_then_streams_live_changes_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        put(&store, "a").await;
        put(&store, "b").await;
        let mut rx = store.watch(1, prefix::<Pod>("")).expect("watch");
        put(&store, "c").await;
        store
            .update::<Pod, _>(&key::<Pod>("default", "a"), |_| Ok(None))
            .await
            .expect("delete");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let change = rx.recv().await.expect("change").expect("no error");
            seen.push((change.revision, change.change_type, change.key));
        }
        assert_eq!(
            seen,
            [
                (2, ChangeType::Added, "pods/default/b".to_string()),
                (3, ChangeType::Added, "pods/default/c".to_string()),
                (4, ChangeType::Deleted, "pods/default/a".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_change_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        put(&store, "a").await;
        let refused = store
            .update::<Pod, _>(&key::<Pod>("default", "a"), |_| {
                Err(ApiError::AlreadyExists("a".into()))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(store.revision(), 1);
        let missing = store
            .update::<Pod, _>(&key::<Pod>("default", "zz"), |_| Ok(None))
            .await;
        assert!(matches!(missing, Err(ApiError::NotFound(_))));
    }
}
