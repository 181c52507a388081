//! Deadlines computed from durations that came from outside (a pod's grace period, a
//! probe's period, a back-off): never an overflow, never a panic.
//!
//! `Instant + Duration` panics when the sum does not fit; a hostile or old stored number
//! must not kill a pod worker and leave its pod Terminating. Owns no state.

use std::time::{Duration, Instant};

/// The longest grace period or probe delay, in seconds: a day. The apiserver refuses
/// more (Kubernetes takes any int64; kubelab bounds it so that no deadline computed from
/// one can overflow), and the agent clamps to it what an older apiserver stored.
pub const MAX_SECONDS: i64 = 86_400;

/// The longest wait any deadline here stands for: further than anything kubelab waits for
/// (the apiserver accepts grace periods and probe delays of at most a day).
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// A pod's or a delete's grace period, in seconds as the API carries it, as a wait:
/// negative counts as 0 and anything past a day as a day (the apiserver's own limit).
pub fn grace_period(seconds: i64) -> Duration {
    Duration::from_secs(seconds.clamp(0, MAX_SECONDS) as u64)
}

/// Seconds from the API (probe delays and periods) as a wait, negative as 0.
pub fn seconds(seconds: i32) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// `from + wait`, or a year from `from` where the sum would not fit.
pub fn after(from: Instant, wait: Duration) -> Instant {
    from.checked_add(wait.min(FAR))
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// Now + `wait`, for tokio's timers.
pub fn tokio_after(wait: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(after(Instant::now(), wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_durations_give_deadlines_not_panics() {
        let now = Instant::now();
        assert_eq!(grace_period(i64::MAX), Duration::from_secs(86_400));
        assert_eq!(grace_period(-5), Duration::ZERO);
        assert_eq!(seconds(-1), Duration::ZERO);
        assert!(after(now, Duration::MAX) > now);
        assert!(after(now, Duration::from_secs(u64::MAX)) <= now + FAR);
        assert_eq!(
            after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let _ = tokio_after(Duration::MAX);
    }
}
