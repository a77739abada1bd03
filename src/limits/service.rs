//! The background service of the Redis store: it connects to Redis before the first request
//! needs it, and runs the heartbeat of `store: fleet` limits. Each heartbeat announces this
//! instance in every fleet limit's set for two heartbeats and reads back the number of live
//! instances, which sets that limit's share (`fleet.rs`). A heartbeat Redis does not answer
//! leaves the last count in place. On a clean stop the instance withdraws its announcements,
//! so the others take over its share at their next heartbeat.

use crate::runtime::Shared;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

/// How often the service looks for a `redis` block when the config has none.
const IDLE: Duration = Duration::from_secs(1);

pub struct RedisService {
    pub shared: Shared,
    /// This instance's name in the fleet sets: random, per process.
    pub instance: String,
}

impl RedisService {
    pub fn new(shared: Shared) -> RedisService {
        RedisService {
            shared,
            instance: format!("{:016x}", fastrand::u64(..)),
        }
    }

    /// One round: connect if need be, then beat for every fleet limit. Returns the period
    /// until the next round.
    pub async fn round(&self) -> Duration {
        let (redis, shares) = {
            let rt = self.shared.load();
            (rt.limits.redis.clone(), rt.fleet_shares())
        };
        let Some(redis) = redis else {
            return IDLE;
        };
        redis.warm().await;
        let ttl = redis.cfg.heartbeat * 2;
        for s in &shares {
            if let Ok(n) = redis.beat(&s.key, &self.instance, ttl).await {
                s.set_instances(n);
            }
        }
        redis.cfg.heartbeat
    }

    async fn leave(&self) {
        let (redis, shares) = {
            let rt = self.shared.load();
            (rt.limits.redis.clone(), rt.fleet_shares())
        };
        if let Some(redis) = redis {
            for s in &shares {
                redis.leave(&s.key, &self.instance).await;
            }
        }
    }
}

#[async_trait]
impl BackgroundService for RedisService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut next = tokio::time::Instant::now();
        loop {
            let period = tokio::select! {
                _ = shutdown.changed() => break,
                p = self.round() => p,
            };
            next += period;
            let now = tokio::time::Instant::now();
            if next < now {
                next = now;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
        self.leave().await;
    }
}
