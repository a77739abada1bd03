//! `store: redis`: the Lua GCRA against the Rust one, a fleet of two gatehouse
//! instances sharing one Redis, and each `on_store_failure` mode while Redis is down, then
//! recovery once it is back. Each test runs its own redis-server on a free port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::*;
use gatehouse::config::limits::RedisConfig;
use gatehouse::limits::bucket::{Bucket, Gcra};
use gatehouse::limits::redis::RedisClient;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

const S: u64 = 1_000_000_000;

fn client(r: &RedisServer) -> std::sync::Arc<RedisClient> {
    RedisClient::new(&RedisConfig {
        url: gatehouse::config::secret::SecretUrl::new(r.url()),
        timeout: Duration::from_secs(5),
    })
    .expect("valid url")
}

/// The script decides exactly as `bucket.rs` at the same (injected) instants, for random
/// rates, bursts and arrival gaps, and reports the same debt and wait.
#[tokio::test]
async fn the_script_is_the_local_gcra() {
    let redis = RedisServer::start();
    let c = client(&redis);
    let mut rng = fastrand::Rng::with_seed(6);
    for case in 0..30 {
        // intervals of at least 10 ms, so a key never expires (in real time) before the
        // simulated time has moved past its debt
        let every = Duration::from_millis(rng.u64(1000..10_000));
        let g = Gcra::new(rng.u64(1..=100), rng.u64(1..40), every);
        let local = Bucket::new();
        let key = format!("test:gcra:{case}");
        let mut now = 1_790_000_000 * S + rng.u64(..S);
        for step in 0..80 {
            now += rng.u64(0..60_000_000);
            let want = local.check(&g, now);
            let got = c
                .take_at(&[(&key, &g)], Some(now))
                .await
                .expect("redis answers");
            assert_eq!(got, [want], "case {case} step {step} {g:?}");
        }
    }
    // a fractional interval (3 per second) stays exact to the nanosecond
    let g = Gcra::new(3, 3, Duration::from_secs(1));
    let local = Bucket::new();
    let now = 1_790_000_000 * S + 999_999_999;
    for i in 0..5 {
        let t = now + i * 333_333_333;
        for _ in 0..2 {
            let want = local.check(&g, t);
            let got = c.take_at(&[("test:third", &g)], Some(t)).await.unwrap();
            assert_eq!(got, [want]);
        }
    }
    // the largest burst window validation accepts (2^53 ns), with an odd-sized sum of the
    // instant's nanoseconds and the debt: still exact to the nanosecond
    for (i, every) in [(1u64 << 53) - 2, 1 << 53, (1 << 53) - 999_999_999]
        .into_iter()
        .enumerate()
    {
        let g = Gcra::new(1, 1, Duration::from_nanos(every));
        let local = Bucket::new();
        let key = format!("test:edge:{i}");
        let t0 = 1_790_000_000 * S + 999_999_999;
        for t in [
            t0,
            t0,
            t0 + 1,
            t0 + S / 3,
            t0 + every - 1,
            t0 + every,
            t0 + every,
        ] {
            let want = local.check(&g, t);
            let got = c.take_at(&[(&key, &g)], Some(t)).await.unwrap();
            assert_eq!(got, [want], "every {every} at {t}");
        }
    }
}

/// Several buckets in one call: in order, stopping at the first rejection, which takes
/// nothing from the buckets after it; keys expire when the bucket is full again.
#[tokio::test]
async fn one_call_checks_buckets_in_order_and_keys_expire() {
    let redis = RedisServer::start();
    let c = client(&redis);
    let client_g = Gcra::new(1, 2, Duration::from_secs(3600)); // 2 per client
    let shared_g = Gcra::new(1, 3, Duration::from_secs(3600)); // 3 for everyone
    let take = |who: &'static str| {
        let c = c.clone();
        async move {
            c.take(&[(who, &client_g), ("test:shared", &shared_g)])
                .await
                .expect("redis answers")
                .iter()
                .map(|o| o.allowed)
                .collect::<Vec<bool>>()
        }
    };
    assert_eq!(take("test:a").await, [true, true]);
    assert_eq!(take("test:a").await, [true, true]);
    // client a is empty: the shared bucket is not even looked at
    assert_eq!(take("test:a").await, [false]);
    assert_eq!(take("test:b").await, [true, true]);
    // shared empty: b's client token is spent (as in the local store)
    assert_eq!(take("test:b").await, [true, false]);
    assert_eq!(take("test:b").await, [false]);
    // Redis's TIME: the rejection's wait is about an hour minus nothing
    let o = c.take(&[("test:a", &client_g)]).await.unwrap();
    assert!(!o[0].allowed && o[0].wait > 3590 * S && o[0].wait <= 3600 * S);
    // the TTL is when the bucket is full again: a's bucket owes two intervals (2 h)
    let pttl: i64 = redis
        .command(&["PTTL", "test:a"])
        .unwrap()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(pttl > 7_190_000 && pttl <= 7_200_000, "{pttl}");
    // a short bucket's key is gone once it refilled
    let short = Gcra::new(10, 1, Duration::from_millis(200)); // full again after 20 ms
    c.take(&[("test:short", &short)]).await.unwrap();
    wait_for(
        "the full bucket's key to expire",
        Duration::from_secs(5),
        || (redis.command(&["EXISTS", "test:short"]).ok()? == ":0").then_some(()),
    );
}

fn fleet_config(redis: &str, up: SocketAddr, timeout: &str, extra_endpoints: &str) -> String {
    service_config(redis, up, timeout, "", extra_endpoints)
}

fn service_config(
    redis: &str,
    up: SocketAddr,
    timeout: &str,
    service: &str,
    extra_endpoints: &str,
) -> String {
    format!(
        r#"{SERVER}redis: {{ url: "{redis}", timeout: {timeout} }}
{service}
backends:
  app:
    discovery: {{ static: ["{up}"] }}
  limited:
    discovery: {{ static: ["{up}"] }}
    rate_limit: {{ max_rate: 4, every: 1h, store: redis }}
endpoints:
{extra_endpoints}
"#
    )
}

fn status(g: &Gatehouse, path: &str, headers: &[(&str, &str)]) -> u16 {
    get(g.addr, path, headers).status
}

/// Two instances, one Redis: every kind of limit is admitted once for the pair, not once
/// per instance.
#[test]
fn a_fleet_shares_its_limits() {
    let redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let yaml = fleet_config(
        &redis.url(),
        up.addr,
        "500ms",
        r#"  - path: /shared
    backend: app
    rate_limit: { max_rate: 10, every: 1h, store: redis }
  - path: /client
    backend: app
    rate_limit: { client_max_rate: 3, every: 1h, strategy: header, key: X-Api-Key, store: redis }
  - path: /item/{id}
    backend: app
    rate_limit: { client_max_rate: 2, every: 1h, strategy: param, key: id, store: redis }
  - path: /tiered
    backend: app
    rate_limit:
      every: 1h
      store: redis
      tiers: { key: X-Plan, levels: [ { value: gold, client_max_rate: 3 }, { value: "*", client_max_rate: 1 } ] }
  - path: /backend
    backend: limited
"#,
    );
    let a = Gatehouse::start(&yaml);
    let b = Gatehouse::start(&yaml);
    let pair = [&a, &b];

    // shared bucket of 10: ten requests alternating between the instances pass
    for i in 0..10 {
        let r = get(pair[i % 2].addr, "/shared", &[]);
        assert_eq!(
            r.status,
            200,
            "request {i}: {}\n{}",
            r.text(),
            pair[i % 2].log()
        );
    }
    // the 11th fails on either instance
    assert_eq!(status(&a, "/shared", &[]), 503);
    let r = get(b.addr, "/shared", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("endpoint_rate_limit"), "{}", r.text());
    assert!(r.header("retry-after").is_some());
    // 10 per hour: the next token is 6 minutes after the first request (Redis's time)
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((350..=360).contains(&retry), "{retry}");

    // per-client bucket by header: the same key on both instances is one client
    let k = [("X-Api-Key", "key-1")];
    assert_eq!(status(&a, "/client", &k), 200);
    assert_eq!(status(&b, "/client", &k), 200);
    let r = get(a.addr, "/client", &k);
    assert_eq!(r.status, 200);
    // RateLimit headers come from Redis's numbers
    assert_eq!(
        r.header("ratelimit"),
        Some("\"endpoint-client\";r=0;t=1200")
    );
    assert_eq!(status(&b, "/client", &k), 429);
    let r = get(a.addr, "/client", &k);
    assert_eq!(r.status, 429);
    // 3 per hour: the next token is 20 minutes after the first request
    assert_eq!(
        r.header("ratelimit"),
        Some("\"endpoint-client\";r=0;t=1200")
    );
    assert_eq!(r.header("retry-after"), Some("1200"));
    assert_eq!(status(&b, "/client", &[("X-Api-Key", "key-2")]), 200);

    // per-client bucket by path parameter
    assert_eq!(status(&a, "/item/7", &[]), 200);
    assert_eq!(status(&b, "/item/7", &[]), 200);
    assert_eq!(status(&a, "/item/7", &[]), 429);
    assert_eq!(status(&b, "/item/8", &[]), 200);

    // tiers: gold gets 3 across the pair, the rest 1
    let gold = [("X-Plan", "gold")];
    let n = (0..6)
        .filter(|i| status(pair[i % 2], "/tiered", &gold) == 200)
        .count();
    assert_eq!(n, 3);
    assert_eq!(status(&b, "/tiered", &[]), 200);
    assert_eq!(status(&a, "/tiered", &[]), 429);

    // backend bucket of 4
    let n = (0..8)
        .filter(|i| status(pair[i % 2], "/backend", &[]) == 200)
        .count();
    assert_eq!(n, 4);
    let r = get(a.addr, "/backend", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("backend_rate_limit"), "{}", r.text());
    // 4 per hour: the next token is 15 minutes after the first request
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((890..=900).contains(&retry), "{retry}");

    // the keys are prefixed; nothing went through a fallback
    let keys = redis.command(&["DBSIZE"]).unwrap();
    assert_ne!(keys, ":0");
    assert!(redis
        .command(&["EXISTS", "gatehouse:endpoint * /shared:shared"])
        .is_ok_and(|r| r == ":1"));
    for g in pair {
        assert_eq!(g.metric("gatehouse_redis_errors_total"), 0.0, "{}", g.log());
        assert!(g.metric("gatehouse_redis_latency_seconds_count") > 0.0);
    }
}

/// Redis goes away mid-run: allow admits, deny answers 503 rate_limit_store_unavailable,
/// local falls back to this instance's own bucket. Redis comes back (empty): decisions go to
/// it again by themselves.
#[test]
fn on_store_failure_modes_and_recovery() {
    let mut redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let yaml = fleet_config(
        &redis.url(),
        up.addr,
        "500ms",
        r#"  - path: /allow
    backend: app
    rate_limit: { max_rate: 2, every: 1h, store: redis, on_store_failure: allow }
  - path: /deny
    backend: app
    rate_limit: { max_rate: 2, every: 1h, store: redis, on_store_failure: deny }
  - path: /local
    backend: app
    rate_limit: { max_rate: 2, every: 1h, store: redis, on_store_failure: local }
"#,
    );
    let g = Gatehouse::start(&yaml);

    // Redis up: /local spends its Redis bucket
    assert_eq!(status(&g, "/local", &[]), 200);
    assert_eq!(status(&g, "/local", &[]), 200);
    assert_eq!(status(&g, "/local", &[]), 503);
    assert_eq!(g.metric("gatehouse_redis_errors_total"), 0.0);

    redis.stop();
    // allow: no limit while Redis is away (more than the 2 tokens)
    for _ in 0..5 {
        assert_eq!(status(&g, "/allow", &[]), 200);
    }
    // deny: 503 with its own reason and a Retry-After, on a connection it leaves open
    let mut c = Conn::open(g.addr).unwrap();
    let r = c.get("/deny").expect("a response");
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("rate_limit_store_unavailable"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // local: this instance's own bucket, full since it was never used: 2 then 503
    assert_eq!(c.get("/local").expect("the same connection").status, 200);
    assert_eq!(status(&g, "/local", &[]), 200);
    let r = get(g.addr, "/local", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("endpoint_rate_limit"), "{}", r.text());
    assert!(g.metric("gatehouse_redis_errors_total") >= 1.0);
    assert!(g
        .metrics()
        .contains("gatehouse_rejections_total{reason=\"rate_limit_store_unavailable\"}"));

    // back, empty: deny passes again only once Redis decides
    redis.restart();
    wait_for(
        "a /deny request decided by Redis",
        Duration::from_secs(15),
        || (status(&g, "/deny", &[]) == 200).then_some(()),
    );
    assert!(redis
        .command(&["EXISTS", "gatehouse:endpoint * /deny:shared"])
        .is_ok_and(|r| r == ":1"));
    // the shared count is Redis's: one more token, then empty
    assert_eq!(status(&g, "/deny", &[]), 200);
    assert_eq!(status(&g, "/deny", &[]), 503);
    // /local is decided by the fresh Redis bucket too, not the spent local one
    assert_eq!(status(&g, "/local", &[]), 200);
    assert_eq!(status(&g, "/local", &[]), 200);
    assert_eq!(status(&g, "/local", &[]), 503);
}

/// Service-wide and endpoint blocks on the same Redis: one round trip per request, with the
/// local store's order (a client rejection takes no shared token; a shared rejection has
/// spent the client's).
#[test]
fn service_and_endpoint_blocks_are_one_round_trip() {
    let redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let yaml = service_config(
        &redis.url(),
        up.addr,
        "500ms",
        "rate_limit: { client_max_rate: 2, every: 1h, strategy: header, key: X-Api-Key, store: redis }",
        r#"  - path: /both
    backend: app
    rate_limit: { max_rate: 3, every: 1h, store: redis }
"#,
    );
    let a = Gatehouse::start(&yaml);
    let b = Gatehouse::start(&yaml);
    let key = |k: &'static str| [("X-Api-Key", k)];
    assert_eq!(status(&a, "/both", &key("A")), 200);
    let r = get(b.addr, "/both", &key("A"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit"),
        Some("\"service-client\";r=0;t=1800, \"endpoint\";r=1;t=2400")
    );
    // A's own bucket is empty: 429, and the endpoint keeps its last token
    assert_eq!(status(&a, "/both", &key("A")), 429);
    assert_eq!(status(&b, "/both", &key("B")), 200);
    // the endpoint is empty: B's second request is a 503, its client token spent
    let r = get(a.addr, "/both", &key("B"));
    assert_eq!(r.status, 503);
    assert!(r.text().contains("endpoint_rate_limit"));
    assert_eq!(status(&b, "/both", &key("B")), 429);
    // six requests, six script calls, no failure
    let calls = a.metric("gatehouse_redis_latency_seconds_count")
        + b.metric("gatehouse_redis_latency_seconds_count");
    assert_eq!(calls, 6.0);
    assert_eq!(a.metric("gatehouse_redis_errors_total"), 0.0);
}

/// A Redis that stops answering (frozen, connection still open): each decision gives up
/// after `redis.timeout`, counted as a timeout, and the limit falls back; once it answers
/// again, decisions go back to it.
#[test]
fn a_silent_redis_times_out_then_recovers() {
    let redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let yaml = fleet_config(
        &redis.url(),
        up.addr,
        "200ms",
        r#"  - path: /deny
    backend: app
    rate_limit: { max_rate: 100, every: 1h, store: redis, on_store_failure: deny }
"#,
    );
    let g = Gatehouse::start(&yaml);
    assert_eq!(status(&g, "/deny", &[]), 200);
    redis.pause(true);
    let started = std::time::Instant::now();
    let r = get(g.addr, "/deny", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("rate_limit_store_unavailable"));
    // it waited for the budget (not for a reconnect), then gave up
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        g.metric("gatehouse_redis_errors_total{kind=\"timeout\"}"),
        1.0,
        "{}",
        g.metrics()
    );
    // while the probe waits, decisions fail over at once
    let started = std::time::Instant::now();
    assert_eq!(status(&g, "/deny", &[]), 503);
    assert!(started.elapsed() < Duration::from_millis(200));
    redis.pause(false);
    wait_for(
        "a /deny request decided by Redis",
        Duration::from_secs(15),
        || (status(&g, "/deny", &[]) == 200).then_some(()),
    );
}

/// A config naming Redis is valid without a Redis; a redis limit without the block is not.
#[test]
fn config_needs_the_block_but_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: &str| {
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        let out = Command::new(bin())
            .args(["check", "-c"])
            .arg(&p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let port = free_port(); // nothing listens there
    let base = r#"version: 1
server: { listen: ["127.0.0.1:0"] }
backends:
  a:
    discovery: { static: ["127.0.0.1:9"] }
    rate_limit: { max_rate: 5, store: redis, on_store_failure: deny }
endpoints:
  - path: /x
    backend: a
    rate_limit: { client_max_rate: 5, store: redis }
"#;
    let (ok, text) = check(&format!(
        "{base}redis: {{ url: \"redis://127.0.0.1:{port}/0\", timeout: 20ms }}\n"
    ));
    assert!(ok, "{text}");
    let (ok, text) = check(base);
    assert!(!ok);
    assert!(
        text.contains("endpoints[0].rate_limit.store: redis needs a top-level `redis` block"),
        "{text}"
    );
    assert!(
        text.contains("backends.a.rate_limit.store: redis needs a top-level `redis` block"),
        "{text}"
    );
    let (ok, text) = check(&format!(
        "{base}redis: {{ url: \"http://nope\", timeout: 0s }}\n"
    ));
    assert!(!ok);
    assert!(
        text.contains("redis.url: \"http://nope\" is not a Redis URL"),
        "{text}"
    );
    assert!(text.contains("redis.timeout: must be > 0"), "{text}");
}
