//! The process's one monotonic clock, as the integer counts the limiters and host health keep
//! in atomics. A hook reads `Instant::now()` once and derives what it needs from that reading,
//! so one request does not read the clock again for each module it passes through. Tests pass
//! their own numbers instead of reading it.

use once_cell::sync::Lazy;
use std::time::Instant;

/// The epoch of both counts: the first use in this process.
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Nanoseconds from the epoch to `at` (the time of the rate-limit buckets).
#[inline]
pub fn now_ns(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds from the epoch to `at`, plus one, so that 0 can mean "never" in an atomic
/// (the time of host health).
#[inline]
pub fn now_ms(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn both_counts_share_the_epoch() {
        let at = *EPOCH + Duration::from_millis(1500);
        assert_eq!(now_ns(at), 1_500_000_000);
        assert_eq!(now_ms(at), 1501);
        // an instant before the epoch counts as the epoch
        let before = EPOCH.checked_sub(Duration::from_secs(1)).unwrap_or(*EPOCH);
        assert_eq!(now_ns(before), 0);
        assert_eq!(now_ms(before), 1);
    }
}
