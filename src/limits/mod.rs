//! Rate limits and backend concurrency bounds, compiled from `config::limits` into the
//! runtime, and the per-request decisions.
//!
//! Order: the service-wide block, then the endpoint's; in each, the client bucket before the
//! shared bucket, so a request rejected by its client bucket takes no token from the shared
//! one (but a request the shared bucket rejects has spent its client token, as in KrakenD).
//! A client bucket rejects with 429, a shared or backend bucket with 503, each with
//! `Retry-After`. The backend's limits (`max_concurrent`, then its bucket) are checked once
//! per request, before the first attempt. The buckets of a block, endpoint or backend whose
//! config did not change survive a reload.
//!
//! A block or backend with `store: redis` asks Redis instead (`redis.rs`: one script call per
//! block, time from Redis); its local buckets are then the `on_store_failure: local`
//! fallback. With `store: fleet` the shared bucket stays local at this instance's share
//! (`fleet.rs`). The local path stays synchronous and allocation-free.
//!
//! `route.rs` holds a `rate_limit` block, `backend.rs` a backend's limits, `headers.rs` the
//! per-request state; `local.rs` and `redis.rs` are the stores, `bucket.rs` the GCRA core.

pub mod backend;
pub mod bucket;
pub mod concurrency;
pub mod fleet;
pub mod headers;
pub mod local;
pub mod policy;
pub mod redis;
pub mod route;
pub mod service;

pub use backend::{BackendLimiter, InflightGuard};
pub use concurrency::EndpointGate;
pub use headers::RequestLimits;
pub use route::RouteLimiter;

use crate::config::limits::{Rate, Store as StoreKind};
use crate::config::{Config, EndpointConfig};
use crate::reject::{Reason, Reject};
use bucket::{ceil_secs, Gcra};
use local::Key;
use pingora::http::RequestHeader;
use redis::RedisClient;
use route::{check_redis_blocks, Scope};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The rejection of a limit whose bucket says to wait `wait_ns`: `Retry-After` in seconds,
/// rounded up, at least 1.
fn limited(reason: Reason, wait_ns: u64) -> Reject {
    Reject::new(reason).retry_after(ceil_secs(wait_ns).max(1))
}

/// The rejection of a limit whose Redis store failed with `on_store_failure: deny`.
fn store_unavailable() -> Reject {
    Reject::new(Reason::RateLimitStoreUnavailable).retry_after(1)
}

fn gcra(r: &Rate) -> Gcra {
    Gcra::new(r.max_rate, r.capacity, r.every)
}

/// What the rate limits look at in a request.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub head: &'a RequestHeader,
    /// The resolved client address.
    pub ip: Option<IpAddr>,
    /// The time, as `clock::now_ns`.
    pub now: u64,
}

/// The limiters that belong to neither an endpoint nor a backend (those are in the
/// runtime's `Endpoint` and `Backend`, built by `Limits::endpoint` and `Limits::backend`).
#[derive(Default)]
pub struct Limits {
    pub service: Option<Arc<RouteLimiter>>,
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

/// The endpoint limiters of a previous runtime, by their stable identity.
pub fn by_ident<'a>(
    limiters: impl Iterator<Item = &'a Arc<RouteLimiter>>,
) -> HashMap<&'a str, &'a Arc<RouteLimiter>> {
    limiters.map(|r| (r.ident.as_str(), r)).collect()
}

impl Limits {
    /// The `store: fleet` shares of these limits, the endpoints' and the backends' given.
    pub fn fleet_shares<'a>(
        &'a self,
        endpoints: impl Iterator<Item = &'a Arc<RouteLimiter>>,
        backends: impl Iterator<Item = &'a Arc<BackendLimiter>>,
    ) -> Vec<Arc<fleet::FleetShare>> {
        let mut out: Vec<Arc<fleet::FleetShare>> = Vec::new();
        let routes = self.service.iter().chain(endpoints);
        for f in routes
            .filter_map(|r| r.fleet.as_ref())
            .chain(backends.filter_map(|b| b.fleet.as_ref()))
        {
            if !out.iter().any(|o| o.key == f.key) {
                out.push(f.clone());
            }
        }
        out
    }

    /// Compiles the limits of `config` that belong to neither an endpoint nor a backend, reusing (same `Arc`, same
    /// buckets) every limiter of `previous` whose identity and config are unchanged.
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
                        log::error!("redis: {e}; store: redis limits stay local");
                        None
                    }
                })
        });
        let mut limits = Limits {
            service: None,
            redis,
        };
        limits.service = l.service.as_ref().map(|cfg| {
            previous
                .and_then(|p| p.service.as_ref())
                .filter(|p| p.cfg == *cfg && limits.keeps(&p.redis, cfg.store))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(RouteLimiter::new(
                        "service".into(),
                        cfg,
                        Scope::Service,
                        limits.redis.clone(),
                    ))
                })
        });
        limits
    }

    /// Whether a limiter built on the store client `had` may be kept for a block on `store`.
    fn keeps(&self, had: &Option<Arc<RedisClient>>, store: StoreKind) -> bool {
        let want = match store {
            StoreKind::Redis => self.redis.as_ref(),
            StoreKind::Local | StoreKind::Fleet => None,
        };
        same_redis(had, want)
    }

    /// The limiter of an endpoint's own `rate_limit` block: the one of the previous runtime
    /// with the same identity (`previous`, see `by_ident`) when its block is unchanged.
    pub fn endpoint(
        &self,
        ep: &EndpointConfig,
        previous: &HashMap<&str, &Arc<RouteLimiter>>,
    ) -> Option<Arc<RouteLimiter>> {
        let cfg = ep.rate_limit.as_ref()?;
        let ident = endpoint_ident(ep);
        Some(match previous.get(ident.as_str()) {
            Some(p) if p.cfg == *cfg && self.keeps(&p.redis, cfg.store) => Arc::clone(p),
            _ => Arc::new(RouteLimiter::new(
                ident,
                cfg,
                Scope::Endpoint,
                self.redis.clone(),
            )),
        })
    }

    /// The limiter of a backend that has limits (`config.limits.backends`): `previous`, the
    /// one of the previous runtime, when its config and store are unchanged.
    pub fn backend(
        &self,
        name: &str,
        config: &Config,
        previous: Option<&Arc<BackendLimiter>>,
    ) -> Option<Arc<BackendLimiter>> {
        let cfg = config.limits.backends.get(name)?;
        Some(
            previous
                .filter(|p| p.cfg == *cfg && self.keeps(&p.redis, cfg.store))
                .cloned()
                .unwrap_or_else(|| Arc::new(BackendLimiter::new(name, cfg, self.redis.clone()))),
        )
    }

    /// The request's limits: the service-wide block, then the endpoint's `max_concurrent`
    /// (`gate`), then the endpoint's block (`endpoint`, with the client key of its `param`
    /// strategy). A block skips the clients of its `exempt` list; in a block,
    /// `client_max_concurrent` comes before the buckets.
    pub async fn check_request(
        &self,
        endpoint: Option<&RouteLimiter>,
        gate: Option<&Arc<EndpointGate>>,
        r: &Request<'_>,
        param: Option<Key>,
        state: &mut RequestLimits,
    ) -> Result<(), Reject> {
        let service = self.service.as_deref().filter(|s| !s.exempts(r.ip));
        let endpoint = endpoint.filter(|e| !e.exempts(r.ip));
        // Both blocks on the same Redis: one round trip for every bucket (the in-flight
        // bounds, always local, first); on a cluster, one per block, their keys being in
        // different slots.
        if let (Some(s), Some(e)) = (service, endpoint) {
            if let (Some(rs), Some(re)) = (&s.redis, &e.redis) {
                if Arc::ptr_eq(rs, re) && !rs.is_cluster() {
                    s.check_concurrency(r, None, state)?;
                    check_gate(gate, state)?;
                    e.check_concurrency(r, param, state)?;
                    let blocks = [(s, None), (e, param)];
                    return Box::pin(check_redis_blocks(rs, &blocks, r, state)).await;
                }
            }
        }
        if let Some(s) = service {
            s.check(r, None, state).await?;
        }
        check_gate(gate, state)?;
        if let Some(e) = endpoint {
            e.check(r, param, state).await?;
        }
        Ok(())
    }
}

/// The endpoint's `max_concurrent`: its slot (kept in `state` until the request ends), or 503
/// with `Retry-After: 1`.
#[inline]
fn check_gate(gate: Option<&Arc<EndpointGate>>, state: &mut RequestLimits) -> Result<(), Reject> {
    if let Some(g) = gate {
        match g.acquire() {
            Some(slot) => state.endpoint_slot = Some(slot),
            None => return Err(limited(Reason::EndpointMaxConcurrent, 0)),
        }
    }
    Ok(())
}

/// The backend's limits (`max_concurrent`, then its bucket), once per request even when it
/// is retried. The in-flight slot is kept in `state` until the request ends.
pub async fn check_backend(
    limiter: Option<&Arc<BackendLimiter>>,
    now: u64,
    state: &mut RequestLimits,
) -> Result<(), Reject> {
    if state.backend_checked {
        return Ok(());
    }
    state.backend_checked = true;
    if let Some(b) = limiter {
        state.guard = b.check(now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::collections::BTreeMap;
    use std::future::Future;

    /// The limits of `cfg` as the runtime assembles them: those of no endpoint, each
    /// endpoint's block, and each endpoint's backend limiter.
    struct Built {
        l: Limits,
        eps: Vec<Option<Arc<RouteLimiter>>>,
        eb: Vec<Option<Arc<BackendLimiter>>>,
        backends: BTreeMap<String, Arc<BackendLimiter>>,
    }

    fn build(cfg: &Config, prev: Option<&Built>) -> Built {
        let l = Limits::compile(cfg, prev.map(|p| &p.l));
        let old = by_ident(prev.iter().flat_map(|p| p.eps.iter().flatten()));
        let eps = cfg
            .endpoints
            .iter()
            .map(|ep| l.endpoint(ep, &old))
            .collect();
        let backends: BTreeMap<String, Arc<BackendLimiter>> = cfg
            .backends
            .keys()
            .filter_map(|name| {
                let old = prev.and_then(|p| p.backends.get(name));
                Some((name.clone(), l.backend(name, cfg, old)?))
            })
            .collect();
        let eb = cfg
            .endpoints
            .iter()
            .map(|ep| backends.get(&ep.backend).cloned())
            .collect();
        Built {
            l,
            eps,
            eb,
            backends,
        }
    }

    impl Built {
        async fn check_request(
            &self,
            i: usize,
            req: &RequestHeader,
            ip: Option<IpAddr>,
            param: Option<Key>,
            now: u64,
            state: &mut RequestLimits,
        ) -> Result<(), Reject> {
            let r = Request { head: req, ip, now };
            let ep = self.eps[i].as_deref();
            self.l.check_request(ep, None, &r, param, state).await
        }

        async fn check_backend(
            &self,
            i: usize,
            now: u64,
            state: &mut RequestLimits,
        ) -> Result<(), Reject> {
            check_backend(self.eb[i].as_ref(), now, state).await
        }
    }

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

    fn run(l: &Built, r: &RequestHeader, ip: Option<IpAddr>, now: u64) -> Result<(), Reason> {
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
        let l = build(&cfg, None);
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
        let l = build(&cfg, None);
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
        let l = build(&cfg, None);
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
        let l = build(&cfg, None);
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
        let l = build(&cfg, None);
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
        let l = build(&cfg, None);
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
        let l = build(&cfg, None);
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
        let first = build(&base, None);
        let same = build(&base, Some(&first));
        assert!(Arc::ptr_eq(
            first.l.service.as_ref().unwrap(),
            same.l.service.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            first.eps[0].as_ref().unwrap(),
            same.eps[0].as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&first.backends["a"], &same.backends["a"]));
        assert!(Arc::ptr_eq(
            &same.backends["a"],
            same.eb[1].as_ref().unwrap()
        ));

        let changed = config(
            "rate_limit: { max_rate: 11 }",
            "    rate_limit: { client_max_rate: 5 }",
            "    rate_limit: { max_rate: 3 }",
        );
        let next = build(&changed, Some(&same));
        assert!(!Arc::ptr_eq(
            same.l.service.as_ref().unwrap(),
            next.l.service.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            same.eps[0].as_ref().unwrap(),
            next.eps[0].as_ref().unwrap()
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
        let first = build(&yaml(1), None);
        let r = first.l.redis.as_ref().unwrap();
        assert!(same_redis(
            &first.l.service.as_ref().unwrap().redis,
            Some(r)
        ));
        assert!(same_redis(&first.backends["a"].redis, Some(r)));
        assert!(first.eps[0].as_ref().unwrap().redis.is_none(), "local");
        let same = build(&yaml(1), Some(&first));
        assert!(Arc::ptr_eq(r, same.l.redis.as_ref().unwrap()));
        assert!(Arc::ptr_eq(
            first.l.service.as_ref().unwrap(),
            same.l.service.as_ref().unwrap()
        ));
        // another Redis: the limits on it are rebuilt, the local one is kept
        let moved = build(&yaml(2), Some(&same));
        assert!(!Arc::ptr_eq(r, moved.l.redis.as_ref().unwrap()));
        assert!(!Arc::ptr_eq(
            same.l.service.as_ref().unwrap(),
            moved.l.service.as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(&same.backends["a"], &moved.backends["a"]));
        assert!(Arc::ptr_eq(
            same.eps[0].as_ref().unwrap(),
            moved.eps[0].as_ref().unwrap()
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
        let l = build(&cfg, None);
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
            let l = build(&cfg, None);
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
