//! The work queue and the expectations every controller uses (client-go's workqueue and
//! kube-controller-manager's `ControllerExpectations`).
//!
//! The queue holds object keys, each at most once: ten changes to one ReplicaSet before
//! its controller gets to it are one sync. A key taken off the queue and changed again
//! while it is synced is queued again. Expectations remember the creations and deletions a
//! controller asked for and has not yet seen in its informer, so that a sync made before
//! the watch caught up does not create or delete the same pods twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Pending {
    queue: VecDeque<String>,
    queued: HashSet<String>,
}

#[derive(Clone, Default)]
pub struct WorkQueue {
    pending: Arc<Mutex<Pending>>,
    ready: Arc<tokio::sync::Notify>,
}

impl WorkQueue {
    pub fn add(&self, key: String) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.queued.insert(key.clone()) {
            pending.queue.push_back(key);
            self.ready.notify_one();
        }
    }

    /// Queues `key` again after `delay` (a pod that becomes available later, say).
    pub fn add_after(&self, key: String, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// The next key to sync; waits while there is none.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.ready.notified();
            {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(key) = pending.queue.pop_front() {
                    pending.queued.remove(&key);
                    return key;
                }
            }
            notified.await;
        }
    }
}

/// An expectation left unmet this long is given up (a watch event lost for good): the
/// controller then trusts its cache again, as Kubernetes does after five minutes.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

struct Expected {
    adds: i64,
    deletes: i64,
    since: Instant,
}

#[derive(Clone, Default)]
pub struct Expectations {
    by_key: Arc<Mutex<HashMap<String, Expected>>>,
}

impl Expectations {
    /// The controller is about to create `adds` and delete `deletes` objects for `key`.
    pub fn expect(&self, key: &str, adds: i64, deletes: i64) {
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.to_string(),
                Expected {
                    adds,
                    deletes,
                    since: Instant::now(),
                },
            );
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            e.adds -= 1;
        }
    }

    pub fn deletion_observed(&self, key: &str) {
        if let Some(e) = self
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
        {
            e.deletes -= 1;
        }
    }

    /// Whether everything expected for `key` was seen (or waited for too long).
    pub fn satisfied(&self, key: &str) -> bool {
        match self
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes <= 0) || e.since.elapsed() > EXPECTATIONS_TIMEOUT,
        }
    }

    pub fn forget(&self, key: &str) {
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
