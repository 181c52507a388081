//! Exponential back-off: the one shape every retry in kubelab takes (a container that
//! crashes, an image that will not pull, an agent waiting for the apiserver). Each step
//! waits twice as long as the one before, up to a cap. Owns no timer of its own.

use std::time::Duration;

/// Waits for the apiserver (joining, registering) start here and grow to `API_MAX`.
pub const API_FIRST: Duration = Duration::from_millis(100);
pub const API_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration) -> Backoff {
        Backoff { next: first }
    }

    /// The wait for this failure; the next one waits twice as long (at most `max`).
    pub fn step(&mut self, max: Duration) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(max);
        delay
    }

    /// Sleeps this step's wait.
    pub async fn sleep(&mut self, max: Duration) {
        tokio::time::sleep(self.step(max)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wait_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(20));
        let waits: Vec<_> = (0..5)
            .map(|_| b.step(Duration::from_millis(80)).as_millis())
            .collect();
        assert_eq!(waits, [20, 40, 80, 80, 80]);
        let mut huge = Backoff::new(Duration::MAX);
        assert_eq!(huge.step(Duration::MAX), Duration::MAX);
        assert_eq!(huge.step(Duration::MAX), Duration::MAX);
    }
}
