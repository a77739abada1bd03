//! Rate limits and backend concurrency bounds, compiled from `config::limits` into the
//! runtime, and the per-request decisions (SPEC §3 step 5 and part of step 6).
//!
//! Order: the service-wide block, then the endpoint's; in each, the client bucket before the
//! shared bucket, so a request rejected by its client bucket takes no token from the shared
//! one (but a request the shared bucket rejects has spent its client token, as in KrakenD).
//! A client bucket rejects with 429, a shared or backend bucket with 503, each with
//! `Retry-After`. The buckets of a block, endpoint or backend whose config did not change
//! survive a reload.
//!
//! A block or backend with `store: redis` asks Redis instead (`redis.rs`: one script call per
//! block, time from Redis); its local buckets are then the `on_store_failure: local`
//! fallback. The local path stays synchronous and allocation-free.

pub mod bucket;
pub mod local;
pub mod policy;
pub mod redis;

use crate::config::limits::{
    BackendLimitConfig, OnStoreFailure, Rate, RateLimitConfig, Store as StoreKind, Strategy,
    TierMatch,
};
use crate::config::Config;
use crate::reject::{Reason, Reject};
use bucket::{ceil_secs, Bucket, Gcra, Outcome};
use local::{Key, LocalStore, DEFAULT_MAX_CLIENTS};
use pingora::http::RequestHeader;
use redis::RedisClient;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where client buckets live, one bucket at a time. The local store answers at once. (The
/// Redis store works per block rather than per bucket, so that a block's client and shared
/// buckets are one round trip: see `RouteLimiter::check_redis`.)
pub trait BucketStore: Send + Sync {
    /// Takes one token from `key`'s bucket at `now` (ns), or says how long to wait.
    fn take(&self, key: Key, g: &Gcra, now: u64) -> impl Future<Output = Outcome> + Send;
}

impl BucketStore for LocalStore {
    #[inline]
    fn take(&self, key: Key, g: &Gcra, now: u64) -> impl Future<Output = Outcome> + Send {
        std::future::ready(self.check(key, g, now))
    }
}

/// The in-process store of a client bucket set.
pub enum Store {
    Local(LocalStore),
}

impl BucketStore for Store {
    #[inline]
    fn take(&self, key: Key, g: &Gcra, now: u64) -> impl Future<Output = Outcome> + Send {
        match self {
            Store::Local(s) => s.take(key, g, now),
        }
    }
}

impl Store {
    /// The in-process store. A `store: redis` block keeps one too, for
    /// `on_store_failure: local` (see `RouteLimiter::redis`).
    fn new() -> Store {
        Store::Local(LocalStore::new(DEFAULT_MAX_CLIENTS))
    }
}

/// The rejection of a limit whose bucket says to wait `wait_ns`: `Retry-After` in seconds,
/// rounded up, at least 1.
fn limited(reason: Reason, wait_ns: u64) -> Reject {
    Reject::new(reason).retry_after(ceil_secs(wait_ns).max(1))
}

/// One client bucket set: its parameters and its store.
struct ClientSet {
    gcra: Gcra,
    store: Store,
    /// Prefix of its clients' Redis keys: `gatehouse:<limiter>:<set>:`.
    redis_prefix: String,
}

impl ClientSet {
    fn new(rate: &Rate, redis_prefix: String) -> ClientSet {
        ClientSet {
            gcra: gcra(rate),
            store: Store::new(),
            redis_prefix,
        }
    }
}

/// The rejection of a limit whose Redis store failed with `on_store_failure: deny`.
fn store_unavailable() -> Reject {
    Reject::new(Reason::RateLimitStoreUnavailable).retry_after(1)
}

fn gcra(r: &Rate) -> Gcra {
    Gcra::new(r.max_rate, r.capacity, r.every)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Service,
    Endpoint,
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
    redis: Option<Arc<RedisClient>>,
    /// Redis key of the shared bucket.
    shared_key: String,
}

impl RouteLimiter {
    fn new(
        ident: String,
        cfg: &RateLimitConfig,
        scope: Scope,
        redis: Option<Arc<RedisClient>>,
    ) -> RouteLimiter {
        let prefix = format!("gatehouse:{ident}:");
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
            ident,
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
            redis: redis.filter(|_| cfg.store == StoreKind::Redis),
            shared_key: format!("{prefix}shared"),
        }
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

    async fn check(
        &self,
        req: &RequestHeader,
        ip: Option<IpAddr>,
        param: Option<Key>,
        now: u64,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        match &self.redis {
            None => self.check_local(req, ip, param, now, state),
            // boxed: the Redis call's large future stays out of the local path's state
            Some(r) => Box::pin(self.check_redis(r, req, ip, param, now, state)).await,
        }
    }

    /// The local store: synchronous, no allocation.
    #[inline]
    fn check_local(
        &self,
        req: &RequestHeader,
        ip: Option<IpAddr>,
        param: Option<Key>,
        now: u64,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        let (client_name, shared_name, shared_reason) = self.names();
        if let Some(set) = self.client_set(req) {
            let key = self.client_key(req, ip, param);
            let Store::Local(store) = &set.store;
            let o = store.check(key, &set.gcra, now);
            if self.cfg.headers {
                state.report(client_name, &set.gcra, &o);
            }
            if !o.allowed {
                return Err(limited(Reason::ClientRateLimit, o.wait));
            }
        }
        if let Some((g, b)) = &self.shared {
            let o = b.check(g, now);
            if self.cfg.headers {
                state.report(shared_name, g, &o);
            }
            if !o.allowed {
                return Err(limited(shared_reason, o.wait));
            }
        }
        Ok(())
    }

    /// The Redis store for this block alone (see `check_redis_blocks`).
    async fn check_redis(
        &self,
        redis: &Arc<RedisClient>,
        req: &RequestHeader,
        ip: Option<IpAddr>,
        param: Option<Key>,
        now: u64,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        check_redis_blocks(redis, &[(self, param)], req, ip, now, state).await
    }
}

/// Blocks on the same Redis (the service-wide block, then the endpoint's, each with its
/// param key), decided in one script call: every client bucket before its block's shared
/// bucket, in order, stopping at the first rejection, exactly as the local store does one
/// after the other. When Redis fails or is late, each block's `on_store_failure` decides, in
/// the same order.
async fn check_redis_blocks(
    redis: &Arc<RedisClient>,
    blocks: &[(&RouteLimiter, Option<Key>)],
    req: &RequestHeader,
    ip: Option<IpAddr>,
    now: u64,
    state: &mut RequestLimits,
) -> Result<(), Reject> {
    // (key, gcra, block index, is_client), at most a client and a shared bucket per block
    let mut keys: [String; 2] = Default::default();
    let mut meta: [(usize, bool); 4] = [(0, false); 4];
    let mut n = 0;
    let sets: [Option<&ClientSet>; 2] = [
        blocks.first().and_then(|(b, _)| b.client_set(req)),
        blocks.get(1).and_then(|(b, _)| b.client_set(req)),
    ];
    for (i, (b, param)) in blocks.iter().enumerate().take(2) {
        if let Some(set) = sets[i] {
            keys[i] = redis::client_bucket_key(&set.redis_prefix, b.client_key(req, ip, *param));
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
    if n == 0 {
        return Ok(());
    }
    let outcomes = match redis.take(&buckets[..n]).await {
        Ok(o) => o,
        Err(_) => {
            for (b, param) in blocks {
                match b.cfg.on_store_failure {
                    OnStoreFailure::Allow => {}
                    OnStoreFailure::Deny => return Err(store_unavailable()),
                    OnStoreFailure::Local => b.check_local(req, ip, *param, now, state)?,
                }
            }
            return Ok(());
        }
    };
    for (i, o) in outcomes.iter().enumerate() {
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
            return Err(limited(reason, o.wait));
        }
    }
    Ok(())
}

/// A placeholder in the fixed-size bucket list of a Redis call.
static ZERO: Gcra = Gcra {
    interval: 1,
    burst: 1,
    capacity: 1,
};

/// A backend's bucket and in-flight bound.
pub struct BackendLimiter {
    pub name: String,
    pub cfg: BackendLimitConfig,
    rate: Option<(Gcra, Bucket)>,
    inflight: AtomicUsize,
    /// `store: redis` for the bucket (the local one is then the `local` fallback).
    redis: Option<Arc<RedisClient>>,
    redis_key: String,
}

/// Holds one in-flight slot of a backend; released when dropped (the request's end).
pub struct InflightGuard(Arc<BackendLimiter>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BackendLimiter {
    fn new(
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
        }
    }

    /// Requests to this backend in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// `max_concurrent`, then the backend bucket (SPEC §3 step 6). On success the in-flight
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
        if let Some((g, b)) = &self.rate {
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

/// Every limiter of a runtime.
#[derive(Default)]
pub struct Limits {
    pub service: Option<Arc<RouteLimiter>>,
    /// Indexed like `Runtime::endpoints`.
    pub endpoints: Vec<Option<Arc<RouteLimiter>>>,
    pub backends: BTreeMap<String, Arc<BackendLimiter>>,
    /// The backend limiter of each endpoint's backend, indexed like `endpoints`.
    pub endpoint_backend: Vec<Option<Arc<BackendLimiter>>>,
    /// The Redis of `store: redis` limits, kept across reloads while its block is unchanged.
    pub redis: Option<Arc<RedisClient>>,
}

/// Whether a limiter built with `had` may be kept when the store client is now `want`.
fn same_redis(had: &Option<Arc<RedisClient>>, want: Option<&Arc<RedisClient>>) -> bool {
    match (had, want) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Stable identity of an endpoint across reloads: its methods and path.
pub fn endpoint_ident(ep: &crate::config::EndpointConfig) -> String {
    let mut s = String::from("endpoint ");
    match &ep.methods {
        None => s.push('*'),
        Some(ms) => {
            for (i, m) in ms.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(m.as_str());
            }
        }
    }
    s.push(' ');
    s.push_str(&ep.path);
    s
}

impl Limits {
    /// Compiles the limits of `config`, reusing (same `Arc`, same buckets) every limiter of
    /// `previous` whose identity and config are unchanged.
    pub fn compile(config: &Config, previous: Option<&Limits>) -> Limits {
        let l = &config.limits;
        let redis = l.redis.as_ref().and_then(|cfg| {
            previous
                .and_then(|p| p.redis.as_ref())
                .filter(|r| r.cfg == *cfg)
                .cloned()
                .or_else(|| match RedisClient::new(cfg) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        // validation parsed the same URL: not expected
                        log::error!("redis.url: {e}; store: redis limits stay local");
                        None
                    }
                })
        });
        let redis_for = |kind: StoreKind| match kind {
            StoreKind::Redis => redis.as_ref(),
            StoreKind::Local => None,
        };
        let service = l.service.as_ref().map(|cfg| {
            previous
                .and_then(|p| p.service.as_ref())
                .filter(|p| p.cfg == *cfg && same_redis(&p.redis, redis_for(cfg.store)))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(RouteLimiter::new(
                        "service".into(),
                        cfg,
                        Scope::Service,
                        redis.clone(),
                    ))
                })
        });
        let prev_eps: HashMap<&str, &Arc<RouteLimiter>> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .flatten()
                    .map(|r| (r.ident.as_str(), r))
                    .collect()
            })
            .unwrap_or_default();
        let endpoints = config
            .endpoints
            .iter()
            .zip(l.endpoints.iter().chain(std::iter::repeat(&None)))
            .map(|(ep, cfg)| {
                let cfg = cfg.as_ref()?;
                let ident = endpoint_ident(ep);
                Some(match prev_eps.get(ident.as_str()) {
                    Some(p) if p.cfg == *cfg && same_redis(&p.redis, redis_for(cfg.store)) => {
                        Arc::clone(p)
                    }
                    _ => Arc::new(RouteLimiter::new(
                        ident,
                        cfg,
                        Scope::Endpoint,
                        redis.clone(),
                    )),
                })
            })
            .collect();
        let backends: BTreeMap<String, Arc<BackendLimiter>> = l
            .backends
            .iter()
            .map(|(name, cfg)| {
                let b = previous
                    .and_then(|p| p.backends.get(name))
                    .filter(|p| p.cfg == *cfg && same_redis(&p.redis, redis_for(cfg.store)))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(BackendLimiter::new(name, cfg, redis.clone())));
                (name.clone(), b)
            })
            .collect();
        let endpoint_backend = config
            .endpoints
            .iter()
            .map(|ep| backends.get(&ep.backend).cloned())
            .collect();
        Limits {
            service,
            endpoints,
            backends,
            endpoint_backend,
            redis,
        }
    }

    /// The key of the path parameter an endpoint's `param` strategy names, from the matched
    /// route's parameters (computed at routing time, where the parameters are at hand).
    #[inline]
    pub fn param_key(&self, endpoint: usize, params: &matchit::Params<'_, '_>) -> Option<Key> {
        let limiter = self.endpoints.get(endpoint)?.as_ref()?;
        let name = limiter.param.as_deref()?;
        params.get(name).map(|v| limiter.value_key(v.as_bytes()))
    }

    /// Step 5 of the request path: the service-wide block, then the endpoint's.
    pub async fn check_request(
        &self,
        endpoint: usize,
        req: &RequestHeader,
        ip: Option<IpAddr>,
        param: Option<Key>,
        now: u64,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        let service = self.service.as_deref();
        let endpoint = self.endpoints.get(endpoint).and_then(|e| e.as_deref());
        // --- both blocks on the same Redis: one round trip for the whole decision ---
        if let (Some(s), Some(e)) = (service, endpoint) {
            if let (Some(rs), Some(re)) = (&s.redis, &e.redis) {
                if Arc::ptr_eq(rs, re) {
                    let blocks = [(s, None), (e, param)];
                    return Box::pin(check_redis_blocks(rs, &blocks, req, ip, now, state)).await;
                }
            }
        }
        if let Some(s) = service {
            s.check(req, ip, None, now, state).await?;
        }
        if let Some(e) = endpoint {
            e.check(req, ip, param, now, state).await?;
        }
        Ok(())
    }

    /// Step 6 (max_concurrent, backend bucket), once per request even when it is retried.
    pub async fn check_backend(
        &self,
        endpoint: usize,
        now: u64,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        if state.backend_checked {
            return Ok(());
        }
        state.backend_checked = true;
        if let Some(Some(b)) = self.endpoint_backend.get(endpoint) {
            state.guard = b.check(now).await?;
        }
        Ok(())
    }
}

/// One policy's numbers for the RateLimit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Report {
    name: &'static str,
    quota: u64,
    window: u64,
    remaining: u64,
    reset: u64,
}

/// Per-request limit state, kept in the proxy's `Ctx`.
#[derive(Default)]
pub struct RequestLimits {
    reports: [Report; 4],
    len: usize,
    backend_checked: bool,
    /// The backend's in-flight slot, released when the request ends (with the `Ctx`).
    pub guard: Option<InflightGuard>,
}

impl RequestLimits {
    fn report(&mut self, name: &'static str, g: &Gcra, o: &Outcome) {
        if let Some(slot) = self.reports.get_mut(self.len) {
            *slot = Report {
                name,
                quota: g.capacity,
                window: g.window_secs(),
                remaining: g.remaining_of(o),
                reset: ceil_secs(o.wait),
            };
            self.len += 1;
        }
    }

    /// The `RateLimit-Policy` and `RateLimit` header values (IETF draft), or `None` when no
    /// limit with `headers: true` applied to the request.
    pub fn headers(&self) -> Option<(String, String)> {
        let reports = &self.reports[..self.len];
        if reports.is_empty() {
            return None;
        }
        let mut policy = String::with_capacity(40 * reports.len());
        let mut state = String::with_capacity(40 * reports.len());
        for (i, r) in reports.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            let _ = write!(policy, "{sep}\"{}\";q={};w={}", r.name, r.quota, r.window);
            let _ = write!(state, "{sep}\"{}\";r={};t={}", r.name, r.remaining, r.reset);
        }
        Some((policy, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    const S: u64 = 1_000_000_000;

    fn config(limits: &str, endpoint_limit: &str, backend_extra: &str) -> Config {
        parse(&format!(
            r#"
version: 1
server: {{ listen: ["127.0.0.1:0"] }}
{limits}
backends:
  a:
    discovery: {{ static: ["127.0.0.1:9001"] }}
{backend_extra}
endpoints:
  - path: "/p/{{id}}"
    backend: a
{endpoint_limit}
  - path: /q
    backend: a
"#
        ))
        .unwrap()
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/p/1", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // every local store answers at once: one poll is enough
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("local limits never wait"),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn run(l: &Limits, r: &RequestHeader, ip: Option<IpAddr>, now: u64) -> Result<(), Reason> {
        let mut st = RequestLimits::default();
        block_on(l.check_request(0, r, ip, None, now, &mut st)).map_err(|e| e.reason)
    }

    #[test]
    fn client_bucket_first_and_it_spares_the_shared_one() {
        let cfg = config(
            "rate_limit: { max_rate: 3, client_max_rate: 2, every: 1h }",
            "",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let r = req(&[]);
        assert_eq!(run(&l, &r, ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(run(&l, &r, ip("10.0.0.1"), 0), Ok(()));
        // client empty: 429, and the shared bucket (1 token left) is untouched
        for _ in 0..5 {
            assert_eq!(run(&l, &r, ip("10.0.0.1"), 0), Err(Reason::ClientRateLimit));
        }
        assert_eq!(run(&l, &r, ip("10.0.0.2"), 0), Ok(()));
        assert_eq!(
            run(&l, &r, ip("10.0.0.3"), 0),
            Err(Reason::ServiceRateLimit)
        );
    }

    #[test]
    fn service_then_endpoint() {
        let cfg = config(
            "rate_limit: { max_rate: 10, every: 1h }",
            "    rate_limit: { max_rate: 1, every: 1h }",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let r = req(&[]);
        assert_eq!(run(&l, &r, None, 0), Ok(()));
        assert_eq!(run(&l, &r, None, 0), Err(Reason::EndpointRateLimit));
        // endpoint 1 has no limit of its own, only the service-wide one (8 tokens left)
        let mut st = RequestLimits::default();
        let n = (0..20)
            .filter(|_| block_on(l.check_request(1, &r, None, None, 0, &mut st)).is_ok())
            .count();
        assert_eq!(n, 8);
    }

    #[test]
    fn header_strategy_and_fallback_to_ip() {
        let cfg = config(
            "rate_limit: { client_max_rate: 1, every: 1h, strategy: header, key: X-Api-Key }",
            "",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let a = req(&[("x-api-key", "a")]);
        let b = req(&[("X-Api-Key", "b")]);
        let none = req(&[]);
        assert_eq!(run(&l, &a, ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(run(&l, &a, ip("10.0.0.2"), 0), Err(Reason::ClientRateLimit));
        assert_eq!(run(&l, &b, ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(run(&l, &none, ip("10.0.0.1"), 0), Ok(()));
        assert_eq!(
            run(&l, &none, ip("10.0.0.1"), 0),
            Err(Reason::ClientRateLimit)
        );
        assert_eq!(run(&l, &none, ip("10.0.0.2"), 0), Ok(()));
    }

    #[test]
    fn tiers_pick_the_client_limits() {
        let cfg = config(
            r#"rate_limit:
  every: 1h
  client_max_rate: 1
  tiers: { key: X-Plan, levels: [ { value: gold, client_max_rate: 3 }, { value: silver, client_max_rate: 2 } ] }"#,
            "",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let count = |plan: Option<&str>, who: &str| {
            let r = match plan {
                Some(p) => req(&[("x-plan", p)]),
                None => req(&[]),
            };
            (0..10).filter(|_| run(&l, &r, ip(who), 0).is_ok()).count()
        };
        assert_eq!(count(Some("gold"), "10.0.0.1"), 3);
        assert_eq!(count(Some("silver"), "10.0.0.2"), 2);
        // no tier matches: the block's own client_max_rate
        assert_eq!(count(Some("bronze"), "10.0.0.3"), 1);
        assert_eq!(count(None, "10.0.0.4"), 1);
        // each tier has its own buckets: the gold client still has silver tokens
        assert_eq!(count(Some("silver"), "10.0.0.1"), 2);
    }

    #[test]
    fn tiers_without_default_leave_unmatched_clients_unlimited() {
        let cfg = config(
            "rate_limit: { every: 1h, tiers: { key: X-Plan, levels: [ { value: gold, client_max_rate: 1 } ] } }",
            "",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let r = req(&[("x-plan", "free")]);
        assert!((0..50).all(|_| run(&l, &r, ip("10.0.0.1"), 0).is_ok()));
    }

    #[test]
    fn rate_limit_headers() {
        let cfg = config(
            "rate_limit: { max_rate: 100, client_max_rate: 10, client_capacity: 5, every: 1s }",
            "    rate_limit: { max_rate: 1, every: 1m, headers: false }",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let mut st = RequestLimits::default();
        block_on(l.check_request(0, &req(&[]), None, None, 0, &mut st)).unwrap();
        let (policy, state) = st.headers().unwrap();
        assert_eq!(policy, "\"service-client\";q=5;w=1, \"service\";q=100;w=1");
        assert_eq!(state, "\"service-client\";r=4;t=1, \"service\";r=99;t=1");
        // second request on the endpoint (1/min): rejected, Retry-After 60 s, no header for it
        let mut st = RequestLimits::default();
        let rej = block_on(l.check_request(0, &req(&[]), None, None, 0, &mut st)).unwrap_err();
        assert_eq!(rej, limited(Reason::EndpointRateLimit, 60 * S));
        assert_eq!(rej.retry_after, Some(60));
    }

    #[test]
    fn backend_bounds() {
        let cfg = config(
            "",
            "",
            "    rate_limit: { max_rate: 2, every: 1h }\n    max_concurrent: 1",
        );
        let l = Limits::compile(&cfg, None);
        let b = &l.backends["a"];
        let mut st = RequestLimits::default();
        assert!(block_on(l.check_backend(0, 0, &mut st)).is_ok());
        assert_eq!(b.in_flight(), 1);
        // a retry of the same request is not counted again
        assert!(block_on(l.check_backend(0, 0, &mut st)).is_ok());
        let mut other = RequestLimits::default();
        assert_eq!(
            block_on(l.check_backend(1, 0, &mut other))
                .unwrap_err()
                .reason,
            Reason::BackendMaxConcurrent
        );
        assert_eq!(b.in_flight(), 1, "the rejected request holds no slot");
        drop(st);
        assert_eq!(b.in_flight(), 0);
        let mut st = RequestLimits::default();
        assert!(block_on(l.check_backend(0, 0, &mut st)).is_ok());
        drop(st);
        let mut st = RequestLimits::default();
        let rej = block_on(l.check_backend(0, 0, &mut st)).unwrap_err();
        assert_eq!(rej.reason, Reason::BackendRateLimit);
        assert_eq!(rej.retry_after, Some(1800));
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn reload_keeps_unchanged_buckets() {
        let base = config(
            "rate_limit: { max_rate: 10 }",
            "    rate_limit: { client_max_rate: 5 }",
            "    rate_limit: { max_rate: 2 }",
        );
        let first = Limits::compile(&base, None);
        let same = Limits::compile(&base, Some(&first));
        assert!(Arc::ptr_eq(
            first.service.as_ref().unwrap(),
            same.service.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            first.endpoints[0].as_ref().unwrap(),
            same.endpoints[0].as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&first.backends["a"], &same.backends["a"]));
        assert!(Arc::ptr_eq(
            &same.backends["a"],
            same.endpoint_backend[1].as_ref().unwrap()
        ));

        let changed = config(
            "rate_limit: { max_rate: 11 }",
            "    rate_limit: { client_max_rate: 5 }",
            "    rate_limit: { max_rate: 3 }",
        );
        let next = Limits::compile(&changed, Some(&same));
        assert!(!Arc::ptr_eq(
            same.service.as_ref().unwrap(),
            next.service.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            same.endpoints[0].as_ref().unwrap(),
            next.endpoints[0].as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(&same.backends["a"], &next.backends["a"]));
    }

    #[test]
    fn reload_keeps_the_redis_client_while_its_block_is_unchanged() {
        let yaml = |port: u16| {
            config(
                &format!(
                    "redis: {{ url: \"redis://127.0.0.1:{port}/0\" }}\nrate_limit: {{ max_rate: 10, store: redis }}"
                ),
                "    rate_limit: { client_max_rate: 5 }",
                "    rate_limit: { max_rate: 2, store: redis }",
            )
        };
        let first = Limits::compile(&yaml(1), None);
        let r = first.redis.as_ref().unwrap();
        assert!(same_redis(&first.service.as_ref().unwrap().redis, Some(r)));
        assert!(same_redis(&first.backends["a"].redis, Some(r)));
        assert!(
            first.endpoints[0].as_ref().unwrap().redis.is_none(),
            "local"
        );
        let same = Limits::compile(&yaml(1), Some(&first));
        assert!(Arc::ptr_eq(r, same.redis.as_ref().unwrap()));
        assert!(Arc::ptr_eq(
            first.service.as_ref().unwrap(),
            same.service.as_ref().unwrap()
        ));
        // another Redis: the limits on it are rebuilt, the local one is kept
        let moved = Limits::compile(&yaml(2), Some(&same));
        assert!(!Arc::ptr_eq(r, moved.redis.as_ref().unwrap()));
        assert!(!Arc::ptr_eq(
            same.service.as_ref().unwrap(),
            moved.service.as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(&same.backends["a"], &moved.backends["a"]));
        assert!(Arc::ptr_eq(
            same.endpoints[0].as_ref().unwrap(),
            moved.endpoints[0].as_ref().unwrap()
        ));
    }

    /// Without a runtime (or a Redis), a redis block fails over: here to its local buckets.
    #[test]
    fn a_redis_block_without_redis_uses_on_store_failure() {
        let cfg = config(
            "redis: { url: \"redis://127.0.0.1:1/0\" }\nrate_limit: { max_rate: 1, every: 1h, store: redis }",
            "    rate_limit: { max_rate: 5, store: redis, on_store_failure: deny }",
            "",
        );
        let l = Limits::compile(&cfg, None);
        let r = req(&[]);
        let mut st = RequestLimits::default();
        // service: local fallback admits once; endpoint: deny
        let rej = block_on(l.check_request(0, &r, None, None, 0, &mut st)).unwrap_err();
        assert_eq!(rej.reason, Reason::RateLimitStoreUnavailable);
        assert_eq!(rej.retry_after, Some(1));
        let rej = block_on(l.check_request(1, &r, None, None, 0, &mut st)).unwrap_err();
        assert_eq!(
            rej.reason,
            Reason::ServiceRateLimit,
            "local bucket of 1 spent"
        );
    }

    /// The same for a backend's bucket: each `on_store_failure` mode, and a denied request
    /// gives its in-flight slot back.
    #[test]
    fn a_redis_backend_without_redis_uses_on_store_failure() {
        let decide = |mode: &str| {
            let cfg = config(
                "redis: { url: \"redis://127.0.0.1:1/0\" }",
                "",
                &format!(
                    "    rate_limit: {{ max_rate: 1, every: 1h, store: redis, on_store_failure: {mode} }}\n    max_concurrent: 5"
                ),
            );
            let l = Limits::compile(&cfg, None);
            let got: Vec<Result<(), Reject>> = (0..3)
                .map(|_| {
                    let mut st = RequestLimits::default();
                    block_on(l.check_backend(0, 0, &mut st))
                })
                .collect();
            assert_eq!(l.backends["a"].in_flight(), 0, "{mode}");
            got
        };
        assert_eq!(decide("allow"), [Ok(()), Ok(()), Ok(())]);
        assert_eq!(decide("deny"), vec![Err(store_unavailable()); 3]);
        let local = decide("local");
        assert_eq!(
            local[..2],
            [Ok(()), Err(limited(Reason::BackendRateLimit, 3600 * S))]
        );
        assert_eq!(
            local[2].clone().unwrap_err().reason,
            Reason::BackendRateLimit
        );
    }

    #[test]
    fn ident_is_methods_and_path() {
        let cfg = config("", "    methods: [GET, HEAD]", "");
        assert_eq!(
            endpoint_ident(&cfg.endpoints[0]),
            "endpoint GET,HEAD /p/{id}"
        );
        assert_eq!(endpoint_ident(&cfg.endpoints[1]), "endpoint * /q");
    }
}
