//! Group commit: one thread makes the store durable for every writer that waits.
//!
//! A writer commits to sled (in memory), then waits in `durable(revision)`. One thread
//! flushes (an fsync) for as long as someone waits, and each flush covers every write
//! committed before it began — so 64 concurrent creates cost a few fsyncs, not 64, and
//! concurrency is not lost to the disk. It also keeps flushes one at a time: sled 0.34's
//! own concurrent `flush_async` calls can deadlock. It owns no data, only the flushing.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::ApiError;

#[derive(Default)]
struct Wanted {
    /// The highest revision a writer waits for.
    revision: u64,
    stop: bool,
}

pub struct Flusher {
    wanted: Arc<(Mutex<Wanted>, Condvar)>,
    /// The highest revision known to be on disk.
    durable: tokio::sync::watch::Receiver<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flushing thread; everything up to `on_disk` is durable already.
    pub fn start(db: sled::Db, on_disk: u64) -> Flusher {
        let wanted = Arc::new((Mutex::new(Wanted::default()), Condvar::new()));
        let (tx, durable) = tokio::sync::watch::channel(on_disk);
        let shared = wanted.clone();
        let thread = std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                let mut flushed = on_disk;
                let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    while state.revision <= flushed && !state.stop {
                        state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
                    }
                    if state.revision <= flushed {
                        return; // stopping, and nobody waits
                    }
                    let target = state.revision;
                    drop(state);
                    let started = std::time::Instant::now();
                    match db.flush() {
                        Ok(_) => {
                            tracing::trace!(
                                revisions = target - flushed,
                                micros = started.elapsed().as_micros() as u64,
                                "flushed"
                            );
                            flushed = target;
                            tx.send_replace(target);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot flush the store; retrying");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                    state = lock.lock().unwrap_or_else(|e| e.into_inner());
                }
            })
            .ok();
        Flusher {
            wanted,
            durable,
            thread,
        }
    }

    /// Returns once every write up to `revision` is on disk.
    pub async fn durable(&self, revision: u64) -> Result<(), ApiError> {
        self.waiter().durable(revision).await
    }

    /// A handle that waits (and asks) for durability, for tasks that outlive a borrow.
    pub fn waiter(&self) -> Waiter {
        Waiter {
            wanted: self.wanted.clone(),
            durable: self.durable.clone(),
        }
    }
}

/// Waits until a revision is on disk, asking the flusher for it.
#[derive(Clone)]
pub struct Waiter {
    wanted: Arc<(Mutex<Wanted>, Condvar)>,
    durable: tokio::sync::watch::Receiver<u64>,
}

impl Waiter {
    /// Returns once every write up to `revision` is on disk.
    pub async fn durable(&self, revision: u64) -> Result<(), ApiError> {
        if *self.durable.borrow() >= revision {
            return Ok(());
        }
        {
            let (lock, wake) = &*self.wanted;
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            state.revision = state.revision.max(revision);
            wake.notify_one();
        }
        let mut durable = self.durable.clone();
        durable
            .wait_for(|d| *d >= revision)
            .await
            .map(|_| ())
            .map_err(|_| ApiError::Storage("the store's flusher stopped".into()))
    }
}

impl Drop for Flusher {
    /// Flushes what writers still wait for, then stops the thread.
    fn drop(&mut self) {
        {
            let (lock, wake) = &*self.wanted;
            lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
