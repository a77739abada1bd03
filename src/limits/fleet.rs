//! `store: fleet`: a block's shared bucket kept in this instance, as with `store: local`,
//! but at `1/N` of the limit: refilled at `max_rate / N` with `capacity / N` tokens (rounded
//! up, at least 1), N being the number of live instances that share the limit's identity.
//!
//! N comes from Redis, off the request path: the background service (`service.rs`)
//! announces this instance in each fleet limit's set every `redis.heartbeat` and reads the
//! count back; an announcement lives two heartbeats. The request path only loads the
//! current bucket parameters (one atomic pointer load). When Redis does not answer, the last
//! N stays. Client buckets are not divided: a load balancer usually pins a client to one
//! instance, which must then grant it the whole client rate.

use super::bucket::Gcra;
use crate::config::limits::Rate;
use crate::metrics::metrics;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// This instance's share of a fleet limit's shared bucket.
pub struct FleetShare {
    /// The limit's identity (`service`, `endpoint GET /p`, `backend a`): its metric label.
    pub ident: String,
    /// Redis key of the set of live instances.
    pub key: String,
    rate: Rate,
    instances: AtomicU64,
    gcra: ArcSwap<Gcra>,
}

/// The bucket of one instance out of `n`: `max_rate / n` (as a longer interval, exact),
/// `capacity / n` rounded up, at least 1.
pub fn share(rate: &Rate, n: u64) -> Gcra {
    let n = n.max(1);
    let every = rate
        .every
        .checked_mul(u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(std::time::Duration::MAX);
    Gcra::new(rate.max_rate, rate.capacity.div_ceil(n).max(1), every)
}

impl FleetShare {
    pub fn new(ident: &str, rate: &Rate) -> FleetShare {
        // alone until the first heartbeat says otherwise
        metrics().fleet_instances.with_label_values(&[ident]).set(1);
        FleetShare {
            ident: ident.to_string(),
            key: format!("gatehouse:fleet:{ident}"),
            rate: *rate,
            instances: AtomicU64::new(1),
            gcra: ArcSwap::from_pointee(share(rate, 1)),
        }
    }

    /// The bucket parameters for now.
    #[inline]
    pub fn gcra(&self) -> Gcra {
        **self.gcra.load()
    }

    /// Live instances, as last counted (1 before the first count).
    pub fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed)
    }

    /// A new count of live instances (this one included).
    pub fn set_instances(&self, n: u64) {
        let n = n.max(1);
        metrics()
            .fleet_instances
            .with_label_values(&[self.ident.as_str()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        if self.instances.swap(n, Ordering::Relaxed) != n {
            self.gcra.store(Arc::new(share(&self.rate, n)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::bucket::Bucket;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn rate(max_rate: u64, capacity: u64, every: Duration) -> Rate {
        Rate {
            max_rate,
            capacity,
            every,
        }
    }

    #[test]
    fn a_share_is_the_rate_and_capacity_over_n_rounded_up() {
        let r = rate(1000, 100, Duration::from_secs(1));
        assert_eq!(share(&r, 1), Gcra::new(1000, 100, Duration::from_secs(1)));
        let third = share(&r, 3);
        assert_eq!(third.interval, 3_000_000, "333.3/s");
        assert_eq!(third.capacity, 34);
        // never below one token
        assert_eq!(share(&rate(2, 2, Duration::from_secs(1)), 5).capacity, 1);
        assert_eq!(share(&r, 0), share(&r, 1));
    }

    #[test]
    fn n_instances_admit_the_limit_between_them() {
        // 3 instances, each with its share, over 10 s at a steady 1000 offers/s each
        let r = rate(300, 30, Duration::from_secs(1));
        let f = FleetShare::new("test fleet", &r);
        f.set_instances(3);
        assert_eq!(f.instances(), 3);
        let g = f.gcra();
        let buckets: Vec<Bucket> = (0..3).map(|_| Bucket::new()).collect();
        let mut admitted = 0;
        for ms in 0..10_000u64 {
            for b in &buckets {
                if b.check(&g, ms * S / 1000).allowed {
                    admitted += 1;
                }
            }
        }
        // 300/s for 10 s, plus the three initial bursts of 10
        assert!((2990..=3040).contains(&admitted), "{admitted}");
        f.set_instances(1);
        assert_eq!(f.gcra(), Gcra::new(300, 30, Duration::from_secs(1)));
    }
}
