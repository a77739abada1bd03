//! Rate-limit configuration: the `rate_limit` blocks (service-wide at the top level and per
//! endpoint), and a backend's `rate_limit` and `max_concurrent`. File shapes, typed values,
//! and their validation (every error with its YAML path).

use super::file::{Dur, FileConfig};
use super::redis::redis_block;
pub use super::redis::{RedisConfig, RedisFile, DEFAULT_REDIS_TIMEOUT};
use super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub const DEFAULT_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- file shapes

/// `rate_limit:` at the top level or on an endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Tokens added per every to the one bucket shared by all clients (default: no shared
    /// bucket).
    #[serde(default)]
    pub max_rate: Option<u64>,
    /// Size of the shared bucket: the burst (default max_rate).
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Tokens added per every to each client's own bucket (default: no client bucket).
    #[serde(default)]
    pub client_max_rate: Option<u64>,
    /// Size of each client's bucket (default client_max_rate).
    #[serde(default)]
    pub client_capacity: Option<u64>,
    /// The period the rates refer to (default 1s).
    #[serde(default)]
    pub every: Option<Dur>,
    /// Who a client is: ip (its address, IPv6 by /64), header (the value of header key) or
    /// param (the path placeholder key; endpoints only) (default ip).
    #[serde(default)]
    #[schemars(extend("enum" = ["ip", "header", "param", null]))]
    pub strategy: Option<String>,
    /// The header name (strategy header) or placeholder name (strategy param).
    #[serde(default)]
    pub key: Option<String>,
    /// Where the buckets live: local (this instance) or redis (shared by a fleet) (default
    /// local).
    #[serde(default)]
    #[schemars(extend("enum" = ["local", "redis", null]))]
    pub store: Option<String>,
    /// store: redis only: what a decision does when Redis fails: allow, deny (503) or local
    /// (this instance's buckets) (default local).
    #[serde(default)]
    #[schemars(extend("enum" = ["allow", "deny", "local", null]))]
    pub on_store_failure: Option<String>,
    /// RateLimit-Policy and RateLimit response headers (default true).
    #[serde(default)]
    pub headers: Option<bool>,
    /// Client limits by plan, read from a request header.
    #[serde(default)]
    pub tiers: Option<TiersFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TiersFile {
    /// The request header carrying the plan.
    pub key: String,
    /// The plans, in order; the first match wins; "*" matches every value.
    pub levels: Vec<TierLevelFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TierLevelFile {
    /// The header value of this plan, or "*".
    pub value: String,
    /// Tokens per every for each client of this plan.
    pub client_max_rate: u64,
    /// Size of each client's bucket (default client_max_rate).
    #[serde(default)]
    pub client_capacity: Option<u64>,
}

/// A backend's `rate_limit:` (one bucket for the backend, no clients).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendRateLimitFile {
    /// Tokens added per every to the backend's bucket.
    pub max_rate: u64,
    /// Size of the bucket: the burst (default max_rate).
    #[serde(default)]
    pub capacity: Option<u64>,
    /// The period max_rate refers to (default 1s).
    #[serde(default)]
    pub every: Option<Dur>,
    /// Where the bucket lives: local or redis (default local).
    #[serde(default)]
    #[schemars(extend("enum" = ["local", "redis", null]))]
    pub store: Option<String>,
    /// store: redis only: allow, deny or local when Redis fails (default local).
    #[serde(default)]
    #[schemars(extend("enum" = ["allow", "deny", "local", null]))]
    pub on_store_failure: Option<String>,
}

// ---------------------------------------------------------------- typed values

/// `max_rate` tokens per `every`, at most `capacity` in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub max_rate: u64,
    pub capacity: u64,
    pub every: Duration,
}

/// How a client is identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// The client address (IPv6 by its /64).
    Ip,
    /// The value of this header (lower-cased name); missing = the client address.
    Header(String),
    /// The value of this path placeholder.
    Param(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Store {
    #[default]
    Local,
    /// Shared by every instance through the `redis` block.
    Redis,
}

/// Largest burst window a Redis bucket keeps exactly: its Lua numbers are doubles, exact
/// to the nanosecond up to 2^53 ns (about 104 days).
pub const MAX_REDIS_BURST: u64 = 1 << 53;

/// Upper bound of a bucket's burst window (about 146 years): keeps `now + burst` far from
/// overflow in the limiters' nanosecond arithmetic.
pub const MAX_BURST: u64 = 1 << 62;

/// What to do when a shared store (Redis) does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreFailure {
    Allow,
    Deny,
    /// Decide with this instance's own buckets (the default).
    #[default]
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierMatch {
    Exact(String),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLevel {
    pub value: TierMatch,
    pub client: Rate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    /// Lower-cased header name carrying the tier.
    pub key: String,
    pub levels: Vec<TierLevel>,
}

/// A validated `rate_limit` block; equality decides whether its buckets survive a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The one bucket shared by all clients.
    pub shared: Option<Rate>,
    /// Each client's own bucket (when no tier matches, or without tiers).
    pub client: Option<Rate>,
    pub strategy: Strategy,
    pub store: Store,
    /// What happens when the shared store (Redis) fails or is late; unused with `local`.
    pub on_store_failure: OnStoreFailure,
    pub headers: bool,
    pub tiers: Option<Tiers>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendLimitConfig {
    pub rate: Option<Rate>,
    pub max_concurrent: Option<usize>,
    /// Where the backend's bucket lives, and what a Redis failure means for it.
    pub store: Store,
    pub on_store_failure: OnStoreFailure,
}

/// The limits of a config that belong to no endpoint (an endpoint's own block is in its
/// `EndpointConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitsConfig {
    pub service: Option<RateLimitConfig>,
    /// Only backends that have a limit.
    pub backends: BTreeMap<String, BackendLimitConfig>,
    /// The `redis` block (required when a limit uses `store: redis`).
    pub redis: Option<RedisConfig>,
}

// ---------------------------------------------------------------- validation

/// Validates every limit of `f`, pushing errors into `errors`. Returns the limits that belong
/// to no endpoint, and each endpoint's own block, in the order of `f.endpoints`.
pub fn validate(
    f: &FileConfig,
    errors: &mut Vec<ConfigError>,
) -> (LimitsConfig, Vec<Option<RateLimitConfig>>) {
    let mut e = Errs(errors);
    // YAML paths of the limits that use store: redis (they need the `redis` block)
    let mut redis_users: Vec<String> = Vec::new();
    if let Some(r) = &f.rate_limit {
        if r.store.as_deref() == Some("redis") {
            redis_users.push("rate_limit".into());
        }
    }
    for (i, ep) in f.endpoints.iter().enumerate() {
        if let Some(r) = &ep.rate_limit {
            if r.store.as_deref() == Some("redis") {
                redis_users.push(format!("endpoints[{i}].rate_limit"));
            }
        }
    }
    let service = f
        .rate_limit
        .as_ref()
        .and_then(|r| rate_limit(&mut e, "rate_limit", r, None));
    let endpoints: Vec<Option<RateLimitConfig>> = f
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            ep.rate_limit.as_ref().and_then(|r| {
                rate_limit(
                    &mut e,
                    &format!("endpoints[{i}].rate_limit"),
                    r,
                    Some(&ep.path),
                )
            })
        })
        .collect();
    let mut backends = BTreeMap::new();
    for (name, b) in &f.backends {
        let p = format!("backends.{name}");
        let mut kind = Store::Local;
        let mut on_failure = OnStoreFailure::Local;
        let rate = b.rate_limit.as_ref().and_then(|r| {
            let p = format!("{p}.rate_limit");
            kind = store(&mut e, &p, r.store.as_deref());
            on_failure = on_store_failure(&mut e, &p, r.on_store_failure.as_deref());
            let every = every(&mut e, &p, r.every);
            let rate = rate(
                &mut e, &p, "max_rate", "capacity", r.max_rate, r.capacity, every,
            );
            if kind == Store::Redis {
                redis_users.push(p.clone());
                redis_burst(&mut e, &p, "capacity", rate.as_ref());
            }
            rate
        });
        let max_concurrent = match b.max_concurrent {
            Some(0) => {
                e.push(format!("{p}.max_concurrent"), "must be >= 1");
                None
            }
            other => other,
        };
        if rate.is_some() || max_concurrent.is_some() {
            backends.insert(
                name.clone(),
                BackendLimitConfig {
                    rate,
                    max_concurrent,
                    store: kind,
                    on_store_failure: on_failure,
                },
            );
        }
    }
    let redis = f.redis.as_ref().and_then(|r| redis_block(e.0, r));
    if f.redis.is_none() {
        for p in &redis_users {
            e.push(
                format!("{p}.store"),
                "redis needs a top-level `redis` block (url, timeout)",
            );
        }
    }
    let limits = LimitsConfig {
        service,
        backends,
        redis,
    };
    (limits, endpoints)
}

/// A Redis bucket's burst window must stay exact in the script's doubles.
fn redis_burst(e: &mut Errs, p: &str, cap_key: &str, rate: Option<&Rate>) {
    if let Some(r) = rate {
        let every_ns = u64::try_from(r.every.as_nanos()).unwrap_or(u64::MAX);
        let burst = (every_ns / r.max_rate.max(1)).saturating_mul(r.capacity);
        if burst > MAX_REDIS_BURST {
            e.push(
                format!("{p}.{cap_key}"),
                "with store: redis, a full bucket must refill within 104 days",
            );
        }
    }
}

fn on_store_failure(e: &mut Errs, p: &str, s: Option<&str>) -> OnStoreFailure {
    match s {
        None | Some("local") => OnStoreFailure::Local,
        Some("allow") => OnStoreFailure::Allow,
        Some("deny") => OnStoreFailure::Deny,
        Some(other) => {
            e.push(
                format!("{p}.on_store_failure"),
                format!("unknown value {other:?} (expected allow, deny or local)"),
            );
            OnStoreFailure::Local
        }
    }
}

struct Errs<'a>(&'a mut Vec<ConfigError>);

impl Errs<'_> {
    fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError::new(path, msg));
    }
}

fn every(e: &mut Errs, p: &str, d: Option<Dur>) -> Duration {
    match d {
        Some(Dur(d)) if d.is_zero() => {
            e.push(format!("{p}.every"), "must be > 0");
            DEFAULT_EVERY
        }
        Some(Dur(d)) => d,
        None => DEFAULT_EVERY,
    }
}

fn store(e: &mut Errs, p: &str, s: Option<&str>) -> Store {
    match s {
        None | Some("local") => Store::Local,
        Some("redis") => Store::Redis,
        Some(other) => {
            e.push(
                format!("{p}.store"),
                format!("unknown store {other:?} (expected local or redis)"),
            );
            Store::Local
        }
    }
}

/// A (rate, capacity) pair; capacity defaults to the rate.
fn rate(
    e: &mut Errs,
    p: &str,
    rate_key: &str,
    cap_key: &str,
    max_rate: u64,
    capacity: Option<u64>,
    every: Duration,
) -> Option<Rate> {
    let mut ok = true;
    if max_rate == 0 {
        e.push(format!("{p}.{rate_key}"), "must be >= 1");
        ok = false;
    }
    let every_ns = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
    if max_rate > every_ns {
        e.push(
            format!("{p}.{rate_key}"),
            "is more than one token per nanosecond of `every`",
        );
        ok = false;
    }
    let explicit = capacity.is_some();
    let capacity = capacity.unwrap_or(max_rate);
    if capacity == 0 && explicit {
        e.push(format!("{p}.{cap_key}"), "must be >= 1");
        ok = false;
    }
    if ok {
        let interval = every_ns / max_rate;
        if interval.checked_mul(capacity).is_none_or(|b| b > MAX_BURST) {
            e.push(
                format!("{p}.{cap_key}"),
                "takes more than a century to refill: lower it or raise the rate",
            );
            ok = false;
        }
    }
    ok.then_some(Rate {
        max_rate,
        capacity,
        every,
    })
}

fn header_name(e: &mut Errs, p: &str, name: &str) -> String {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        e.push(p, format!("{name:?} is not a valid header name"));
    }
    name.to_ascii_lowercase()
}

fn rate_limit(
    e: &mut Errs,
    p: &str,
    r: &RateLimitFile,
    path: Option<&str>,
) -> Option<RateLimitConfig> {
    let before = e.0.len();
    let every = every(e, p, r.every);
    let shared = match (r.max_rate, r.capacity) {
        (Some(m), c) => rate(e, p, "max_rate", "capacity", m, c, every),
        (None, Some(_)) => {
            e.push(format!("{p}.capacity"), "needs max_rate");
            None
        }
        (None, None) => None,
    };
    let client = match (r.client_max_rate, r.client_capacity) {
        (Some(m), c) => rate(e, p, "client_max_rate", "client_capacity", m, c, every),
        (None, Some(_)) => {
            e.push(format!("{p}.client_capacity"), "needs client_max_rate");
            None
        }
        (None, None) => None,
    };
    let tiers = r.tiers.as_ref().map(|t| {
        let tp = format!("{p}.tiers");
        if t.levels.is_empty() {
            e.push(format!("{tp}.levels"), "needs at least one level");
        }
        let levels = t
            .levels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let lp = format!("{tp}.levels[{i}]");
                let value = if l.value == "*" {
                    TierMatch::Any
                } else {
                    TierMatch::Exact(l.value.clone())
                };
                rate(
                    e,
                    &lp,
                    "client_max_rate",
                    "client_capacity",
                    l.client_max_rate,
                    l.client_capacity,
                    every,
                )
                .map(|client| TierLevel { value, client })
            })
            .collect();
        Tiers {
            key: header_name(e, &format!("{tp}.key"), &t.key),
            levels,
        }
    });
    let per_client = r.client_max_rate.is_some() || r.tiers.is_some();
    if r.max_rate.is_none() && !per_client {
        e.push(p, "sets no limit: give max_rate, client_max_rate or tiers");
    }
    let strategy = match (r.strategy.as_deref(), r.key.as_deref()) {
        (None | Some("ip"), None) => Strategy::Ip,
        (None | Some("ip"), Some(_)) => {
            e.push(
                format!("{p}.key"),
                "is for the header and param strategies (ip uses the client address)",
            );
            Strategy::Ip
        }
        (Some("header"), Some(k)) => Strategy::Header(header_name(e, &format!("{p}.key"), k)),
        (Some("param"), Some(k)) => {
            match path {
                None => e.push(
                    format!("{p}.strategy"),
                    "param needs an endpoint path: use it on an endpoint's rate_limit",
                ),
                Some(path) => {
                    if !super::placeholders(path).contains(&k) {
                        e.push(
                            format!("{p}.key"),
                            format!("{{{k}}} is not a placeholder of the path {path:?}"),
                        );
                    }
                }
            }
            Strategy::Param(k.to_string())
        }
        (Some(s @ ("header" | "param")), None) => {
            e.push(format!("{p}.key"), format!("is required with strategy {s}"));
            Strategy::Ip
        }
        (Some(other), _) => {
            e.push(
                format!("{p}.strategy"),
                format!("unknown strategy {other:?} (expected ip, header or param)"),
            );
            Strategy::Ip
        }
    };
    if r.strategy.is_some() && !per_client {
        e.push(
            format!("{p}.strategy"),
            "identifies clients, but no client limit is set (client_max_rate or tiers)",
        );
    }
    let store = store(e, p, r.store.as_deref());
    let on_store_failure = on_store_failure(e, p, r.on_store_failure.as_deref());
    if store == Store::Redis {
        redis_burst(e, p, "capacity", shared.as_ref());
        redis_burst(e, p, "client_capacity", client.as_ref());
        if let Some(t) = &tiers {
            for (i, l) in t.levels.iter().enumerate() {
                redis_burst(
                    e,
                    &format!("{p}.tiers.levels[{i}]"),
                    "client_capacity",
                    Some(&l.client),
                );
            }
        }
    }
    if e.0.len() > before {
        return None;
    }
    Some(RateLimitConfig {
        shared,
        client,
        strategy,
        store,
        on_store_failure,
        headers: r.headers.unwrap_or(true),
        tiers,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn errors(yaml_limits: &str) -> Vec<String> {
        let text = format!(
            r#"
version: 1
server: {{ listen: ["127.0.0.1:0"] }}
backends:
  a: {{ discovery: {{ static: ["127.0.0.1:9001"] }} }}
{yaml_limits}
"#
        );
        match parse(&text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_full_block_parses_with_defaults() {
        let cfg = parse(
            r#"
version: 1
server: { listen: ["127.0.0.1:0"] }
rate_limit:
  max_rate: 5000
  client_max_rate: 50
  every: 1s
  strategy: header
  key: X-Api-Key
  tiers:
    key: X-Plan
    levels:
      - { value: gold, client_max_rate: 1000, client_capacity: 2000 }
      - { value: "*",  client_max_rate: 10 }
backends:
  a:
    discovery: { static: ["127.0.0.1:9001"] }
    rate_limit: { max_rate: 100, every: 1s }
    max_concurrent: 10
endpoints:
  - path: /p/{id}
    backend: a
    rate_limit: { client_max_rate: 5, strategy: param, key: id, headers: false }
  - { path: /q, backend: a }
"#,
        )
        .unwrap();
        let l = &cfg.limits;
        let s = l.service.as_ref().unwrap();
        assert_eq!(s.shared.unwrap().capacity, 5000);
        assert_eq!(s.client.unwrap().capacity, 50);
        assert_eq!(s.strategy, super::Strategy::Header("x-api-key".into()));
        let t = s.tiers.as_ref().unwrap();
        assert_eq!(t.key, "x-plan");
        assert_eq!(t.levels[0].client.capacity, 2000);
        assert_eq!(t.levels[1].value, super::TierMatch::Any);
        assert_eq!(t.levels[1].client.capacity, 10);
        assert!(s.headers);
        let ep = cfg.endpoints[0].rate_limit.as_ref().unwrap();
        assert_eq!(ep.strategy, super::Strategy::Param("id".into()));
        assert!(!ep.headers);
        assert!(cfg.endpoints[1].rate_limit.is_none());
        assert_eq!(l.backends["a"].rate.unwrap().capacity, 100);
        assert_eq!(l.backends["a"].max_concurrent, Some(10));
    }

    #[test]
    fn bad_blocks_name_their_paths() {
        let e = errors("rate_limit: { every: 0s, max_rate: 0 }");
        assert!(
            e.contains(&"rate_limit.every: must be > 0".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"rate_limit.max_rate: must be >= 1".to_string()),
            "{e:?}"
        );
        let e = errors("rate_limit: { every: 1s }");
        assert!(e[0].starts_with("rate_limit: sets no limit"), "{e:?}");
        let e = errors("rate_limit: { client_max_rate: 1, strategy: param, key: id }");
        assert!(
            e[0].starts_with("rate_limit.strategy: param needs"),
            "{e:?}"
        );
        let e = errors("rate_limit: { client_max_rate: 1, strategy: header }");
        assert_eq!(e, ["rate_limit.key: is required with strategy header"]);
        let e = errors("rate_limit: { max_rate: 1, store: redis }");
        assert_eq!(
            e,
            ["rate_limit.store: redis needs a top-level `redis` block (url, timeout)"]
        );
        let e = errors("rate_limit: { max_rate: 1, on_store_failure: maybe }");
        assert!(
            e[0].starts_with("rate_limit.on_store_failure: unknown value"),
            "{e:?}"
        );
        assert!(errors("rate_limit: { max_rate: 1, on_store_failure: deny }").is_empty());
        let e = errors("rate_limit: { max_rate: 1, strategy: ip }");
        assert!(
            e[0].starts_with("rate_limit.strategy: identifies clients"),
            "{e:?}"
        );
        let e = errors("rate_limit: { max_rate: 1, burst: 3 }");
        assert!(e[0].contains("unknown field `burst`"), "{e:?}");
        let e = errors(
            "endpoints:\n  - { path: \"/p/{id}\", backend: a, rate_limit: { client_max_rate: 1, strategy: param, key: nope } }",
        );
        assert!(
            e[0].starts_with("endpoints[0].rate_limit.key: {nope} is not a placeholder"),
            "{e:?}"
        );
        let e = errors("rate_limit: { max_rate: 2000000000, every: 1s }");
        assert!(e[0].contains("more than one token per nanosecond"), "{e:?}");
        let e = errors(
            "rate_limit: { client_max_rate: 5, tiers: { key: X-Plan, levels: [ { value: gold, client_max_rate: 0 } ] } }",
        );
        assert_eq!(
            e,
            ["rate_limit.tiers.levels[0].client_max_rate: must be >= 1"]
        );
    }

    #[test]
    fn backend_limits_are_checked() {
        let text = r#"
version: 1
server: { listen: ["127.0.0.1:0"] }
backends:
  a:
    discovery: { static: ["127.0.0.1:9001"] }
    rate_limit: { max_rate: 0 }
    max_concurrent: 0
"#;
        let e: Vec<String> = parse(text)
            .unwrap_err()
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            e,
            [
                "backends.a.rate_limit.max_rate: must be >= 1",
                "backends.a.max_concurrent: must be >= 1"
            ]
        );
    }
}
