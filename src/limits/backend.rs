//! A backend's limits: `max_concurrent` (an in-flight count, the slot held until the
//! request ends) and its bucket: local, in Redis, or this instance's share of a fleet's.

use super::bucket::{Bucket, Gcra};
use super::fleet::FleetShare;
use super::redis::RedisClient;
use super::{gcra, limited, store_unavailable};
use crate::config::limits::{BackendLimitConfig, OnStoreFailure, Store as StoreKind};
use crate::reject::{Reason, Reject};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A backend's bucket and in-flight bound.
pub struct BackendLimiter {
    pub name: String,
    pub cfg: BackendLimitConfig,
    rate: Option<(Gcra, Bucket)>,
    inflight: AtomicUsize,
    /// `store: redis` for the bucket (the local one is then the `local` fallback).
    pub(super) redis: Option<Arc<RedisClient>>,
    redis_key: String,
    /// `store: fleet`: this instance's share of the bucket.
    pub(super) fleet: Option<Arc<FleetShare>>,
}

/// Holds one in-flight slot of a backend; released when dropped (the request's end).
pub struct InflightGuard(Arc<BackendLimiter>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BackendLimiter {
    pub(super) fn new(
        name: &str,
        cfg: &BackendLimitConfig,
        redis: Option<Arc<RedisClient>>,
    ) -> BackendLimiter {
        BackendLimiter {
            name: name.to_string(),
            cfg: cfg.clone(),
            rate: cfg.rate.as_ref().map(|r| (gcra(r), Bucket::new())),
            inflight: AtomicUsize::new(0),
            redis: redis.filter(|_| cfg.store == StoreKind::Redis),
            redis_key: format!("gatehouse:backend {name}:shared"),
            fleet: match (&cfg.rate, cfg.store) {
                (Some(r), StoreKind::Fleet) => {
                    Some(Arc::new(FleetShare::new(&format!("backend {name}"), r)))
                }
                _ => None,
            },
        }
    }

    /// Requests to this backend in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// `max_concurrent`, then the backend bucket. On success the in-flight
    /// slot (if bounded) is returned, to keep until the request ends.
    pub async fn check(self: &Arc<Self>, now: u64) -> Result<Option<InflightGuard>, Reject> {
        let guard = match self.cfg.max_concurrent {
            Some(max) => {
                let before = self.inflight.fetch_add(1, Ordering::AcqRel);
                let guard = InflightGuard(self.clone());
                if before >= max {
                    return Err(limited(Reason::BackendMaxConcurrent, 0));
                }
                Some(guard)
            }
            None => None,
        };
        if let Some((whole, b)) = &self.rate {
            // `store: fleet`: this instance's share of the bucket, else the whole of it
            let g = &self.fleet.as_deref().map_or(*whole, FleetShare::gcra);
            let o = match &self.redis {
                None => b.check(g, now),
                Some(r) => match Box::pin(r.take(&[(self.redis_key.as_str(), g)])).await {
                    Ok(o) => o.first().copied().unwrap_or(Gcra::rejected(0)),
                    Err(_) => match self.cfg.on_store_failure {
                        OnStoreFailure::Allow => return Ok(guard),
                        OnStoreFailure::Deny => return Err(store_unavailable()),
                        OnStoreFailure::Local => b.check(g, now),
                    },
                },
            };
            if !o.allowed {
                return Err(limited(Reason::BackendRateLimit, o.wait));
            }
        }
        Ok(guard)
    }
}
