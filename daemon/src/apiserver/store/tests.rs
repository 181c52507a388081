//! The store's guarantees: revisions in order and durable, watches that replay then
//! stream exactly once, expiry and "too large" relists, refused changes that write nothing.

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

/// Opens again once the previous handle's background flusher has let go of the lock.
fn reopen(dir: &std::path::Path, window: u64) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir, window) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen: {e}"),
        }
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
        let store = Store::open(dir.path(), HISTORY_WINDOW).expect("open");
        assert_eq!(put(&store, "a").await, 1);
        assert_eq!(put(&store, "b").await, 2);
        assert_eq!(put(&store, "a").await, 3);
    }
    let store = reopen(dir.path(), HISTORY_WINDOW);
    assert_eq!(store.revision(), 3);
    let (pods, rev) = store
        .list::<Pod>(&prefix::<Pod>("default"))
        .await
        .expect("list");
    assert_eq!((pods.len(), rev), (2, 3));
    assert_eq!(put(&store, "c").await, 4);
}

#[tokio::test]
async fn a_watch_replays_history_then_streams_live_changes_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), HISTORY_WINDOW).expect("open");
    put(&store, "a").await;
    put(&store, "b").await;
    let mut rx = store
        .watch(1, prefix::<Pod>(""), String::new())
        .await
        .expect("watch");
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
async fn a_watch_from_before_the_window_is_told_to_relist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 3).expect("open");
    for name in ["a", "b", "c", "d", "e"] {
        put(&store, name).await;
    }
    let err = store
        .watch(1, prefix::<Pod>(""), String::new())
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired, relist"), "{err}");
    let mut rx = store
        .watch(2, prefix::<Pod>(""), String::new())
        .await
        .expect("within the window");
    let first = rx.recv().await.expect("change").expect("no error");
    assert_eq!(first.revision, 3);
    drop(store);
    // Reopened with a smaller window, the older history is dropped.
    let store = reopen(dir.path(), 1);
    assert!(store
        .watch(3, prefix::<Pod>(""), String::new())
        .await
        .is_err());
    assert!(store
        .watch(4, prefix::<Pod>(""), String::new())
        .await
        .is_ok());
}

/// A watch from a revision the store has not reached is refused (Kubernetes' "Too large
/// resource version"), not held open forever or turned into an overflow.
#[tokio::test]
async fn a_watch_from_the_future_is_told_to_relist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), HISTORY_WINDOW).expect("open");
    put(&store, "a").await;
    for from in [2, u64::MAX] {
        let err = store
            .watch(from, prefix::<Pod>(""), String::new())
            .await
            .expect_err("too large");
        assert!(
            err.to_string()
                .contains(&format!("Too large resource version: {from}, current: 1")),
            "{err}"
        );
    }
}

/// A replay that finds its window compacted away says so instead of skipping changes;
/// the replay runs without the write lock, so writers go on meanwhile.
#[tokio::test]
async fn a_replay_overtaken_by_compaction_is_told_to_relist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 2).expect("open");
    for name in ["a", "b", "c", "d"] {
        put(&store, name).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let history = store.history.clone();
    let err = tokio::task::spawn_blocking(move || replay(&history, 0, 4, "pods/", "", &tx))
        .await
        .expect("join")
        .expect_err("revisions 1 and 2 are gone");
    assert!(matches!(err, ApiError::Expired(0, 2)), "{err}");
    assert!(rx.try_recv().is_err(), "nothing half-replayed");
}

#[tokio::test]
async fn a_refused_change_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), HISTORY_WINDOW).expect("open");
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
