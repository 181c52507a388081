//! kube-apiserver's `--max-requests-inflight`: at most so many REST requests are served
//! at once (watches and exec sessions, which last, are not counted); one more is told
//! `429 TooManyRequests` with `Retry-After: 1`, and clients such as kubectl and client-go
//! wait and retry. It keeps a flood from piling up work the apiserver cannot finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The count of requests being served, and its limit (0: none).
pub struct Inflight {
    limit: usize,
    now: Arc<AtomicUsize>,
}

/// One request's place; given back when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inflight {
    pub fn new(limit: usize) -> Inflight {
        Inflight {
            limit,
            now: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place for one more request, or `None` when all are taken.
    pub fn enter(&self) -> Option<Slot> {
        let before = self.now.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.now.clone());
        if self.limit != 0 && before >= self.limit {
            return None; // the slot's drop gives the count back
        }
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_past_the_limit_waits_its_turn() {
        let inflight = Inflight::new(2);
        let a = inflight.enter().expect("first");
        let _b = inflight.enter().expect("second");
        assert!(inflight.enter().is_none(), "a third is one too many");
        drop(a);
        assert!(inflight.enter().is_some(), "a place was given back");
        let unlimited = Inflight::new(0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.enter()).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
