//! The token-bucket core, as GCRA (generic cell rate algorithm) on one `u64` of state.
//!
//! A bucket of `capacity` tokens refilled continuously at `max_rate` per `every` is the same
//! thing as a *theoretical arrival time* (TAT): the instant at which the bucket would be full
//! again. With the emission interval `T = every / max_rate` and the burst window
//! `B = capacity * T`, a request at `now` is admitted iff `max(tat, now) + T - now <= B`, and
//! then `tat = max(tat, now) + T`. A rejected request changes nothing.
//!
//! Time is injected: every call takes `now` in nanoseconds since an arbitrary epoch (the
//! proxy passes `clock::now_ns`), so tests are exact and instant. `tat == 0` (or any `tat <= now`) is a full
//! bucket, which is why an absent client is the same as a full one and eviction is exact.
//!
//! `T` is `every / max_rate` truncated to the nanosecond (validation keeps it >= 1 ns), so a
//! rate is exact to within one nanosecond per token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The parameters of a bucket, compiled from `max_rate`, `capacity`, `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval `T` in ns: one token comes back every `interval`.
    pub interval: u64,
    /// Burst window `B = capacity * T` in ns.
    pub burst: u64,
    pub capacity: u64,
}

/// What a check decided, with what the RateLimit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Admitted: the bucket's debt after this request (`tat - now`, ns); rejected: 0.
    /// Whole tokens left are `Gcra::remaining_of` (a division, done only for the headers).
    pub debt: u64,
    /// Rejected: ns until a token is available. Admitted: ns until the next token when no
    /// whole token is left, otherwise until the bucket is full again.
    pub wait: u64,
}

impl Gcra {
    /// `max_rate` tokens per `every`, `capacity` burst. Validation guarantees
    /// `1 <= max_rate <= every in ns`, `capacity >= 1`, and `capacity * T` well inside `u64`;
    /// out-of-range inputs are clamped rather than trusted.
    pub fn new(max_rate: u64, capacity: u64, every: Duration) -> Gcra {
        let every_ns = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
        let interval = (every_ns / max_rate.max(1)).max(1);
        let capacity = capacity.max(1);
        Gcra {
            interval,
            burst: interval.saturating_mul(capacity).min(MAX_BURST),
            capacity,
        }
    }

    /// The decision on a bucket whose state is `tat`: `Ok(new_tat)` or `Err(wait_ns)`.
    #[inline]
    pub fn decide(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let new = tat.max(now).saturating_add(self.interval);
        let used = new - now;
        if used <= self.burst {
            Ok(new)
        } else {
            Err(used - self.burst)
        }
    }

    /// Whole tokens in a bucket with state `tat` at `now`.
    #[inline]
    pub fn remaining(&self, tat: u64, now: u64) -> u64 {
        let debt = tat.saturating_sub(now).min(self.burst);
        (self.burst - debt) / self.interval
    }

    /// Whole tokens left after an outcome.
    #[inline]
    pub fn remaining_of(&self, o: &Outcome) -> u64 {
        if !o.allowed {
            return 0;
        }
        (self.burst - o.debt.min(self.burst)) / self.interval
    }

    /// The outcome of an admitted request that left the bucket at `tat`.
    #[inline]
    pub fn admitted(&self, tat: u64, now: u64) -> Outcome {
        self.admitted_debt(tat.saturating_sub(now))
    }

    /// The outcome of an admitted request that left the bucket with `debt` (`tat - now`, ns):
    /// what a shared store (Redis) reports.
    #[inline]
    pub fn admitted_debt(&self, debt: u64) -> Outcome {
        // no whole token left <=> burst - debt < interval (no division needed)
        let floor = self.burst - self.interval.min(self.burst);
        let wait = if debt > floor {
            // until debt <= burst - interval, i.e. one token is back
            debt - floor
        } else {
            debt
        };
        Outcome {
            allowed: true,
            debt,
            wait,
        }
    }

    #[inline]
    pub fn rejected(wait: u64) -> Outcome {
        Outcome {
            allowed: false,
            debt: 0,
            wait,
        }
    }

    /// The window in whole seconds (rounded up) in which a full bucket refills: the `w` of
    /// the RateLimit-Policy header.
    pub fn window_secs(&self) -> u64 {
        ceil_secs(self.burst).max(1)
    }
}

/// Upper bound of a burst window (validation refuses a larger one).
pub use crate::config::limits::MAX_BURST;

/// Nanoseconds rounded up to whole seconds.
#[inline]
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// One bucket shared by every request (service, endpoint or backend): a lock-free CAS loop
/// on the TAT. No allocation, no lock.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket::default()
    }

    /// Takes one token at `now`, or says how long to wait.
    #[inline]
    pub fn check(&self, g: &Gcra, now: u64) -> Outcome {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            match g.decide(tat, now) {
                Err(wait) => return Gcra::rejected(wait),
                Ok(new) => {
                    match self.tat.compare_exchange_weak(
                        tat,
                        new,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return g.admitted(new, now),
                        Err(current) => tat = current,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    /// The reference: a textbook token bucket with lazy refill, counted in "ns of credit"
    /// (one token = `interval` ns) so that it is exact in integers.
    struct Reference {
        credit: u64,
        max: u64,
        interval: u64,
        last: u64,
    }

    impl Reference {
        fn new(g: &Gcra) -> Reference {
            Reference {
                credit: g.burst,
                max: g.burst,
                interval: g.interval,
                last: 0,
            }
        }
        fn take(&mut self, now: u64) -> bool {
            let now = now.max(self.last);
            self.credit = (self.credit + (now - self.last)).min(self.max);
            self.last = now;
            if self.credit >= self.interval {
                self.credit -= self.interval;
                true
            } else {
                false
            }
        }
        fn tokens(&self) -> u64 {
            self.credit / self.interval
        }
    }

    #[test]
    fn burst_then_spike_arrest() {
        // 10 per second, burst 5: T = 100ms
        let g = Gcra::new(10, 5, Duration::from_secs(1));
        let b = Bucket::new();
        let t0 = 1000 * S;
        let got: Vec<bool> = (0..7).map(|_| b.check(&g, t0).allowed).collect();
        assert_eq!(got, [true, true, true, true, true, false, false]);
        // one token back after exactly T, not before
        assert!(!b.check(&g, t0 + 100_000_000 - 1).allowed);
        let o = b.check(&g, t0 + 100_000_000);
        assert!(o.allowed);
        assert_eq!(g.remaining_of(&o), 0);
        assert_eq!(o.wait, 100_000_000);
        // a rejection says how long to wait
        let r = b.check(&g, t0 + 150_000_000);
        assert_eq!(r, Gcra::rejected(50_000_000));
        assert_eq!(g.remaining_of(&r), 0);
    }

    #[test]
    fn headers_numbers() {
        let g = Gcra::new(10, 5, Duration::from_secs(1));
        let b = Bucket::new();
        let o = b.check(&g, 0);
        assert_eq!(
            (g.remaining_of(&o), o.wait),
            (4, 100_000_000),
            "4 left, full in T"
        );
        assert_eq!(g.window_secs(), 1);
        let g = Gcra::new(1, 3, Duration::from_secs(60));
        assert_eq!(g.window_secs(), 180);
    }

    #[test]
    fn fractional_interval_truncates_to_the_nanosecond() {
        let g = Gcra::new(3, 3, Duration::from_secs(1));
        assert_eq!(g.interval, 333_333_333);
        assert_eq!(g.burst, 999_999_999);
    }

    #[test]
    fn concurrent_checks_admit_exactly_capacity() {
        let g = Gcra::new(1, 1000, Duration::from_secs(3600));
        let b = Bucket::new();
        let admitted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if b.check(&g, 5 * S).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 1000);
    }

    proptest! {
        /// The GCRA agrees with the reference bucket on every decision and on the number of
        /// tokens left, for any rate, burst and sequence of (non-decreasing) arrival times.
        #[test]
        fn matches_reference(
            max_rate in 1u64..1000,
            capacity in 1u64..50,
            every_ms in 1u64..10_000,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..300),
        ) {
            let g = Gcra::new(max_rate, capacity, Duration::from_millis(every_ms));
            let b = Bucket::new();
            let mut r = Reference::new(&g);
            let mut now = 0;
            for gap in gaps {
                now += gap;
                let o = b.check(&g, now);
                let want = r.take(now);
                prop_assert_eq!(o.allowed, want, "at {}", now);
                if o.allowed {
                    prop_assert_eq!(g.remaining_of(&o), r.tokens());
                    prop_assert_eq!(g.remaining_of(&o), g.remaining(now + o.debt, now));
                }
            }
        }

        /// Burst: a full bucket admits exactly `capacity` requests at one instant.
        #[test]
        fn burst_is_capacity(max_rate in 1u64..10_000, capacity in 1u64..500, now in 0u64..1<<50) {
            let g = Gcra::new(max_rate, capacity, Duration::from_secs(1));
            let b = Bucket::new();
            let n = (0..capacity + 10).filter(|_| b.check(&g, now).allowed).count() as u64;
            prop_assert_eq!(n, capacity);
        }

        /// Refill: from a full bucket, over any window `w` the admitted count never exceeds
        /// `capacity + floor(w / T)`, and a client that asks often enough gets exactly that.
        #[test]
        fn refill_bound(
            max_rate in 1u64..100,
            capacity in 1u64..20,
            window_ms in 0u64..5_000,
            step_us in 100u64..20_000,
        ) {
            let g = Gcra::new(max_rate, capacity, Duration::from_secs(1));
            let b = Bucket::new();
            let end = window_ms * 1_000_000;
            let mut admitted = 0u64;
            let mut now = 0;
            while now <= end {
                while b.check(&g, now).allowed { admitted += 1; }
                now += step_us * 1000;
            }
            // the last poll happened at `now - step`: never more than the burst plus what
            // refilled by then, and exactly that when polls come before the bucket is full
            // again (a full bucket holds no more: time spent full is not banked)
            let last = now - step_us * 1000;
            let bound = capacity + last / g.interval;
            prop_assert!(admitted <= bound);
            if capacity >= 2 && step_us * 1000 <= g.interval {
                prop_assert_eq!(admitted, bound);
            }
        }

        /// Spike arrest: once the burst is spent, requests spaced by T are all admitted and
        /// one arriving sooner than T after the previous admission is rejected.
        #[test]
        fn spike_arrest(max_rate in 1u64..1000, capacity in 1u64..20, n in 1usize..50) {
            let g = Gcra::new(max_rate, capacity, Duration::from_secs(1));
            let b = Bucket::new();
            for _ in 0..capacity { prop_assert!(b.check(&g, 0).allowed); }
            let mut now = 0;
            for _ in 0..n {
                prop_assert!(!b.check(&g, now + g.interval - 1).allowed);
                now += g.interval;
                prop_assert!(b.check(&g, now).allowed);
            }
        }
    }
}
