//! A compiled `rate_limit` block (the service-wide one or an endpoint's): its client bucket
//! sets (one per tier, or the block's own), its shared bucket, and how a request's client key
//! is found (client address, a header, or a path parameter). The local buckets answer at
//! once; a `store: redis` block asks Redis, one script call for all its buckets.

use super::bucket::{Bucket, Gcra};
use super::concurrency::{Acquired, ClientInflight};
use super::fleet::FleetShare;
use super::headers::RequestLimits;
use super::local::{Key, LocalStore, DEFAULT_MAX_CLIENTS};
use super::redis::{self, RedisClient};
use super::{gcra, limited, policy, store_unavailable, Request};
use crate::config::limits::{
    OnStoreFailure, Rate, RateLimitConfig, Store as StoreKind, Strategy, TierMatch,
};
use crate::filters::ip::CidrSet;
use crate::reject::{Reason, Reject};
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;

/// One client bucket set: its parameters and its in-process store (the buckets of a
/// `store: redis` block live in Redis; these are then its `on_store_failure: local` fallback).
struct ClientSet {
    gcra: Gcra,
    store: LocalStore,
    /// Prefix of its clients' Redis keys: `gatehouse:<limiter>:<set>:` (see `KeyShape`).
    redis_prefix: String,
}

impl ClientSet {
    fn new(rate: &Rate, redis_prefix: String) -> ClientSet {
        ClientSet {
            gcra: gcra(rate),
            store: LocalStore::new(DEFAULT_MAX_CLIENTS),
            redis_prefix,
        }
    }
}

/// How a block's Redis keys are named. On a Redis Cluster the keys of one script call must
/// share a slot, so they carry a hash tag: a block with a shared bucket tags all its keys with
/// its identity (every decision touches the shared key, so they all live in its slot); a
/// block with client buckets only tags each client's key with the client, which spreads
/// clients over the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyShape {
    /// One server or a Sentinel's master: `gatehouse:<limiter>:<set>:<client>`.
    Plain,
    /// `gatehouse:{<hash of limiter>}:<limiter>:<set>:<client>`.
    LimiterTag,
    /// `gatehouse:{<client>}:<limiter>:<set>:`.
    ClientTag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Service = 0,
    Endpoint = 1,
}

/// A compiled `rate_limit` block (service-wide or one endpoint's).
pub struct RouteLimiter {
    /// Stable identity across reloads: `service`, or `endpoint GET,HEAD /path`.
    pub ident: String,
    pub cfg: RateLimitConfig,
    scope: Scope,
    shared: Option<(Gcra, Bucket)>,
    client: Option<ClientSet>,
    tier_header: Option<http::HeaderName>,
    tiers: Vec<(TierMatch, ClientSet)>,
    key_header: Option<http::HeaderName>,
    param: Option<String>,
    /// `store: redis`: the shared store; the local buckets above are then the fallback of
    /// `on_store_failure: local`.
    pub(super) redis: Option<Arc<RedisClient>>,
    /// Redis key of the shared bucket.
    shared_key: String,
    key_shape: KeyShape,
    /// `store: fleet`: this instance's share of the shared bucket.
    pub(super) fleet: Option<Arc<FleetShare>>,
    /// `exempt`: clients this block does not limit.
    exempt: Option<CidrSet>,
    /// In-flight counts per client key, with `client_max_concurrent` (always local).
    inflight: Option<Arc<ClientInflight>>,
}

impl RouteLimiter {
    pub(super) fn new(
        ident: String,
        cfg: &RateLimitConfig,
        scope: Scope,
        redis: Option<Arc<RedisClient>>,
    ) -> RouteLimiter {
        let redis = redis.filter(|_| cfg.store == StoreKind::Redis);
        let key_shape = match &redis {
            Some(r) if r.is_cluster() && cfg.shared.is_some() => KeyShape::LimiterTag,
            Some(r) if r.is_cluster() => KeyShape::ClientTag,
            _ => KeyShape::Plain,
        };
        let prefix = match key_shape {
            KeyShape::Plain => format!("gatehouse:{ident}:"),
            KeyShape::LimiterTag => format!("gatehouse:{{{}}}:{ident}:", redis::hash_tag(&ident)),
            KeyShape::ClientTag => format!("{ident}:"),
        };
        let (tier_header, tiers) = match &cfg.tiers {
            Some(t) => (
                http::HeaderName::from_bytes(t.key.as_bytes()).ok(),
                t.levels
                    .iter()
                    .map(|l| {
                        let set = match &l.value {
                            TierMatch::Any => format!("{prefix}tier=*:"),
                            TierMatch::Exact(v) => format!("{prefix}tier={v}:"),
                        };
                        (l.value.clone(), ClientSet::new(&l.client, set))
                    })
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        let (key_header, param) = match &cfg.strategy {
            Strategy::Ip => (None, None),
            Strategy::Header(h) => (http::HeaderName::from_bytes(h.as_bytes()).ok(), None),
            Strategy::Param(p) => (None, Some(p.clone())),
        };
        RouteLimiter {
            cfg: cfg.clone(),
            scope,
            shared: cfg.shared.as_ref().map(|r| (gcra(r), Bucket::new())),
            client: cfg
                .client
                .as_ref()
                .map(|r| ClientSet::new(r, format!("{prefix}client:"))),
            tier_header,
            tiers,
            key_header,
            param,
            fleet: match (&cfg.shared, cfg.store) {
                (Some(r), StoreKind::Fleet) => Some(Arc::new(FleetShare::new(&ident, r))),
                _ => None,
            },
            redis,
            shared_key: format!("{prefix}shared"),
            key_shape,
            ident,
            exempt: (!cfg.exempt.is_empty()).then(|| CidrSet::new(&cfg.exempt)),
            inflight: cfg
                .client_max_concurrent
                .map(|_| Arc::new(ClientInflight::new(DEFAULT_MAX_CLIENTS))),
        }
    }

    /// Whether the client is on the block's `exempt` list (counted when it is).
    #[inline(always)]
    pub(super) fn exempts(&self, ip: Option<IpAddr>) -> bool {
        match (&self.exempt, ip) {
            (Some(set), Some(ip)) => self.on_exempt_list(set, ip),
            _ => false,
        }
    }

    /// Out of line: a block without `exempt` pays one test in `exempts`, not this.
    #[inline(never)]
    fn on_exempt_list(&self, set: &crate::filters::ip::CidrSet, ip: IpAddr) -> bool {
        if !set.contains(ip) {
            return false;
        }
        let scope = match self.scope {
            Scope::Service => 0,
            Scope::Endpoint => 1,
        };
        crate::metrics::rate_limit_exempt(scope).inc();
        true
    }

    /// `client_max_concurrent`: takes the client's in-flight slot (kept in `state` until the
    /// request ends) or refuses with 429 and `Retry-After: 1`. With `dry_run`, the slot is
    /// taken and the refusal only noted.
    #[inline(always)]
    pub(super) fn check_concurrency(
        &self,
        r: &Request<'_>,
        param: Option<Key>,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        match (&self.inflight, self.cfg.client_max_concurrent) {
            (Some(table), Some(max)) => self.take_client_slot(table, max, r, param, state),
            _ => Ok(()),
        }
    }

    /// Out of line: a block without `client_max_concurrent` pays one test, not this.
    #[inline(never)]
    fn take_client_slot(
        &self,
        table: &Arc<ClientInflight>,
        max: usize,
        r: &Request<'_>,
        param: Option<Key>,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        let key = self.client_key(r.head, r.ip, param);
        let slot = match table.acquire(key, max, self.cfg.dry_run) {
            Acquired::Admitted(slot) => slot,
            Acquired::Full(slot) => {
                self.refused(Reason::ClientMaxConcurrent, 0, state)?;
                slot
            }
        };
        state.client_slots[self.scope as usize] = slot;
        Ok(())
    }

    /// A limit of this block refused: the rejection, or with `dry_run` a note of it and a pass.
    #[inline]
    fn refused(&self, reason: Reason, wait: u64, state: &mut RequestLimits) -> Result<(), Reject> {
        if self.cfg.dry_run {
            state.would_reject.add(reason);
            return Ok(());
        }
        Err(limited(reason, wait))
    }

    /// The key of the path parameter a `param` strategy names, from the matched route's
    /// parameters (computed at routing time, where the parameters are at hand).
    #[inline]
    pub fn param_key(&self, params: &matchit::Params<'_, '_>) -> Option<Key> {
        let name = self.param.as_deref()?;
        params.get(name).map(|v| self.value_key(v.as_bytes()))
    }

    /// The key of a header or parameter value: per process for the local store, the same on
    /// every instance for Redis.
    #[inline]
    fn value_key(&self, v: &[u8]) -> Key {
        if self.redis.is_some() {
            policy::stable_value_key(v)
        } else {
            policy::value_key(v)
        }
    }

    /// The client bucket set for this request: the first matching tier, else the block's
    /// `client_max_rate`, else none.
    fn client_set(&self, req: &RequestHeader) -> Option<&ClientSet> {
        if let Some(h) = &self.tier_header {
            let value = req.headers.get(h).map(|v| v.as_bytes()).unwrap_or(b"");
            if let Some(set) = policy::pick_tier(self.tiers.iter().map(|(m, s)| (m, s)), value) {
                return Some(set);
            }
        }
        self.client.as_ref()
    }

    fn client_key(&self, req: &RequestHeader, ip: Option<IpAddr>, param: Option<Key>) -> Key {
        if let Some(h) = &self.key_header {
            return match req.headers.get(h) {
                Some(v) if !v.is_empty() => self.value_key(v.as_bytes()),
                _ => policy::ip_key(ip),
            };
        }
        if self.param.is_some() {
            if let Some(k) = param {
                return k;
            }
        }
        policy::ip_key(ip)
    }

    fn names(&self) -> (&'static str, &'static str, Reason) {
        match self.scope {
            Scope::Service => ("service-client", "service", Reason::ServiceRateLimit),
            Scope::Endpoint => ("endpoint-client", "endpoint", Reason::EndpointRateLimit),
        }
    }

    /// The block's limits for a client it does not exempt: `client_max_concurrent`, then the
    /// buckets.
    pub(super) async fn check(
        &self,
        r: &Request<'_>,
        param: Option<Key>,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        self.check_concurrency(r, param, state)?;
        match &self.redis {
            None => self.check_local(r, param, state),
            // boxed: the Redis call's large future stays out of the local path's state
            Some(redis) => Box::pin(self.check_redis(redis, r, param, state)).await,
        }
    }

    /// The local store: synchronous, no allocation.
    #[inline]
    fn check_local(
        &self,
        r: &Request<'_>,
        param: Option<Key>,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        let (client_name, shared_name, shared_reason) = self.names();
        if let Some(set) = self.client_set(r.head) {
            let key = self.client_key(r.head, r.ip, param);
            let o = set.store.check(key, &set.gcra, r.now);
            if self.cfg.headers {
                state.report(client_name, &set.gcra, &o);
            }
            if !o.allowed {
                self.refused(Reason::ClientRateLimit, o.wait, state)?;
            }
        }
        if let Some((whole, b)) = &self.shared {
            // `store: fleet`: this instance's share of the bucket, else the whole of it
            let g = &self.fleet.as_deref().map_or(*whole, FleetShare::gcra);
            let o = b.check(g, r.now);
            if self.cfg.headers {
                state.report(shared_name, g, &o);
            }
            if !o.allowed {
                self.refused(shared_reason, o.wait, state)?;
            }
        }
        Ok(())
    }

    /// The Redis store for this block alone (see `check_redis_blocks`).
    async fn check_redis(
        &self,
        redis: &Arc<RedisClient>,
        r: &Request<'_>,
        param: Option<Key>,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        check_redis_blocks(redis, &[(self, param)], r, state).await
    }
}

/// Blocks on the same Redis (the service-wide block, then the endpoint's, each with its
/// param key), decided in one script call: every client bucket before its block's shared
/// bucket, in order, stopping at the first rejection, exactly as the local store does one
/// after the other. When Redis fails or is late, each block's `on_store_failure` decides, in
/// the same order.
pub(super) async fn check_redis_blocks(
    redis: &Arc<RedisClient>,
    blocks: &[(&RouteLimiter, Option<Key>)],
    r: &Request<'_>,
    state: &mut RequestLimits,
) -> Result<(), Reject> {
    // (key, gcra, block index, is_client), at most a client and a shared bucket per block
    let mut keys: [String; 2] = Default::default();
    let mut meta: [(usize, bool); 4] = [(0, false); 4];
    let mut n = 0;
    let sets: [Option<&ClientSet>; 2] = [
        blocks.first().and_then(|(b, _)| b.client_set(r.head)),
        blocks.get(1).and_then(|(b, _)| b.client_set(r.head)),
    ];
    for (i, (b, param)) in blocks.iter().enumerate().take(2) {
        if let Some(set) = sets[i] {
            keys[i] = redis::client_bucket_key(
                &set.redis_prefix,
                b.client_key(r.head, r.ip, *param),
                b.key_shape == KeyShape::ClientTag,
            );
        }
    }
    let mut buckets: [(&str, &Gcra); 4] = [("", &ZERO); 4];
    for (i, (b, _)) in blocks.iter().enumerate().take(2) {
        if let Some(set) = sets[i] {
            buckets[n] = (keys[i].as_str(), &set.gcra);
            meta[n] = (i, true);
            n += 1;
        }
        if let Some((g, _)) = &b.shared {
            buckets[n] = (b.shared_key.as_str(), g);
            meta[n] = (i, false);
            n += 1;
        }
    }
    // The script stops at the first rejection; a dry-run block's rejection lets the request
    // go on, so the buckets after it are asked in another call.
    let mut start = 0;
    while start < n {
        let outcomes = match redis.take(&buckets[start..n]).await {
            Ok(o) => o,
            Err(_) => {
                let from = meta[start].0;
                for (b, param) in &blocks[from..] {
                    match b.cfg.on_store_failure {
                        OnStoreFailure::Allow => {}
                        OnStoreFailure::Deny => return Err(store_unavailable()),
                        OnStoreFailure::Local => b.check_local(r, *param, state)?,
                    }
                }
                return Ok(());
            }
        };
        let asked = n - start;
        for (j, o) in outcomes.iter().enumerate() {
            let i = start + j;
            let (bi, is_client) = meta[i];
            let b = blocks[bi].0;
            let (client_name, shared_name, shared_reason) = b.names();
            if b.cfg.headers {
                let name = if is_client { client_name } else { shared_name };
                state.report(name, buckets[i].1, o);
            }
            if !o.allowed {
                let reason = if is_client {
                    Reason::ClientRateLimit
                } else {
                    shared_reason
                };
                b.refused(reason, o.wait, state)?;
            }
        }
        if outcomes.is_empty() || outcomes.len() >= asked {
            break;
        }
        start += outcomes.len();
    }
    Ok(())
}

/// A placeholder in the fixed-size bucket list of a Redis call.
static ZERO: Gcra = Gcra {
    interval: 1,
    burst: 1,
    capacity: 1,
};
