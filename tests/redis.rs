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
        timeout: Duration::from_secs(5),
        ..RedisConfig::one(&r.url())
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
        "1s",
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
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(
        g.metric("gatehouse_redis_errors_total{kind=\"timeout\"}"),
        1.0,
        "{}",
        g.metrics()
    );
    // while the probe waits, decisions fail over at once
    let started = std::time::Instant::now();
    assert_eq!(status(&g, "/deny", &[]), 503);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "failed over without waiting for the 1 s timeout"
    );
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

/// The endpoints of the TLS, cluster and Sentinel tests: a shared bucket with client
/// buckets (one slot per decision on a cluster), client buckets alone (spread over slots),
/// and a roomy one that denies when Redis fails.
const SHARED_ENDPOINTS: &str = r#"  - path: /shared
    backend: app
    rate_limit: { max_rate: 10, client_max_rate: 5, every: 1h, strategy: header, key: X-Api-Key, store: redis }
  - path: /clients
    backend: app
    rate_limit: { client_max_rate: 1, every: 1h, strategy: header, key: X-Api-Key, store: redis }
  - path: /deny
    backend: app
    rate_limit: { max_rate: 100000, every: 1s, store: redis, on_store_failure: deny }
"#;

fn app_config(redis_block: &str, up: SocketAddr, endpoints: &str) -> String {
    format!(
        r#"{SERVER}redis: {redis_block}
backends:
  app:
    discovery: {{ static: ["{up}"] }}
endpoints:
{endpoints}
"#
    )
}

/// Ten requests alternating over the pair pass /shared, the eleventh fails on either, and
/// no decision went through a fallback.
fn pair_shares_exactly(pair: [&Gatehouse; 2]) {
    for i in 0..10 {
        let who = format!("client-{}", i / 5);
        let r = get(pair[i % 2].addr, "/shared", &[("X-Api-Key", &who)]);
        assert_eq!(
            r.status,
            200,
            "request {i}: {}\n{}",
            r.text(),
            pair[i % 2].log()
        );
    }
    for g in pair {
        let r = get(g.addr, "/shared", &[]);
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("endpoint_rate_limit"), "{}", r.text());
    }
    for g in pair {
        assert_eq!(
            g.metric("gatehouse_redis_errors_total"),
            0.0,
            "{}\n{}",
            g.metrics(),
            g.log()
        );
    }
}

/// Polls until a /deny request is decided by Redis (200), counting the 503s of
/// `on_store_failure: deny` seen until then.
fn denied_until_back(g: &Gatehouse, within: Duration) -> usize {
    let mut denied = 0;
    wait_for("a /deny request decided by Redis", within, || {
        let r = get(g.addr, "/deny", &[]);
        if r.status == 503 {
            assert!(
                r.text().contains("rate_limit_store_unavailable"),
                "{}",
                r.text()
            );
            denied += 1;
        }
        (r.status == 200).then_some(())
    });
    denied
}

/// The `redis-server` arguments that make `app` an ACL user with `password` and every right.
fn app_user(password: &str) -> Vec<String> {
    let pass = format!(">{password}");
    ["--user", "app", "on", &pass, "~*", "&*", "+@all"]
        .map(String::from)
        .to_vec()
}

/// TLS with client certificates, and an ACL user whose password is in the URL for one
/// instance and in `password_file` for the other: the pair shares its limits exactly, and the
/// password shows in no log, metric or `check` output.
#[test]
fn tls_and_acl_user_share_a_limit_exactly() {
    let pki = tls::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(&["127.0.0.1"]).write(dir.path(), "server");
    let (ccert, ckey) = pki.issue(&["gatehouse"]).write(dir.path(), "client");
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let files = RedisTlsFiles {
        cert: &cert,
        key: &key,
        ca: &ca,
        client_certs: true,
    };
    let redis = RedisServer::start_with(|_| app_user("s3cret-pw"), Some(&files));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let up = MockUpstream::start(Behaviour::Echo);
    let tls = format!(
        "tls: {{ ca: \"{}\", cert: \"{}\", key: \"{}\" }}",
        ca.display(),
        ccert.display(),
        ckey.display()
    );
    let in_url = app_config(
        &format!(
            "{{ url: \"{}\", timeout: 500ms, {tls} }}",
            redis.tls_url("app:s3cret-pw")
        ),
        up.addr,
        SHARED_ENDPOINTS,
    );
    let in_file = app_config(
        &format!(
            "{{ url: \"{}\", username: app, password_file: \"{}\", timeout: 500ms, {tls} }}",
            redis.tls_url(""),
            pw.display()
        ),
        up.addr,
        SHARED_ENDPOINTS,
    );
    let a = Gatehouse::start(&in_url);
    let b = Gatehouse::start(&in_file);
    pair_shares_exactly([&a, &b]);
    // the decisions were the ACL user's, and no authentication failed
    assert!(
        redis.cli(&["ACL", "LOG"]).trim().is_empty(),
        "{}",
        redis.cli(&["ACL", "LOG"])
    );
    assert!(
        redis.calls("evalsha") >= 12,
        "{}",
        redis.cli(&["INFO", "commandstats"])
    );
    assert!(
        redis.cli(&["CLIENT", "LIST"]).contains("user=app"),
        "{}",
        redis.cli(&["CLIENT", "LIST"])
    );
    for g in [&a, &b] {
        assert!(!g.log().contains("s3cret-pw"), "{}", g.log());
        assert!(!g.metrics().contains("s3cret-pw"));
    }
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        in_url
            .replace("LISTEN", "127.0.0.1:0")
            .replace("ADMIN", "127.0.0.1:0"),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

/// A wrong password and a server certificate from another CA: each failed decision is
/// counted under its own kind (`auth`, `tls`) and follows `on_store_failure`.
#[test]
fn a_wrong_password_or_certificate_is_counted_and_fails_over() {
    let pki = tls::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(&["127.0.0.1"]).write(dir.path(), "server");
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let other_ca = tls::Pki::new().write_ca(dir.path(), "other.pem");
    let files = RedisTlsFiles {
        cert: &cert,
        key: &key,
        ca: &ca,
        client_certs: false,
    };
    let redis = RedisServer::start_with(|_| app_user("right"), Some(&files));
    let up = MockUpstream::start(Behaviour::Echo);
    let wrong_pw = app_config(
        &format!(
            "{{ url: \"{}\", timeout: 500ms, tls: {{ ca: \"{}\" }} }}",
            redis.tls_url("app:wrong"),
            ca.display()
        ),
        up.addr,
        SHARED_ENDPOINTS,
    );
    let wrong_ca = app_config(
        &format!(
            "{{ url: \"{}\", timeout: 500ms, tls: {{ ca: \"{}\" }} }}",
            redis.tls_url("app:right"),
            other_ca.display()
        ),
        up.addr,
        SHARED_ENDPOINTS,
    );
    for (yaml, kind) in [(wrong_pw, "auth"), (wrong_ca, "tls")] {
        let g = Gatehouse::start(&yaml);
        // deny: 503 rate_limit_store_unavailable; local (/shared): the instance's own bucket
        for _ in 0..3 {
            let r = get(g.addr, "/deny", &[]);
            assert_eq!(r.status, 503, "{kind}: {}\n{}", r.text(), g.log());
            assert!(
                r.text().contains("rate_limit_store_unavailable"),
                "{}",
                r.text()
            );
        }
        assert_eq!(status(&g, "/shared", &[]), 200);
        let m = format!("gatehouse_redis_errors_total{{kind=\"{kind}\"}}");
        assert!(g.metric(&m) >= 4.0, "{kind}: {}", g.metrics());
        assert_eq!(
            g.metric("gatehouse_redis_errors_total{kind=\"connection\"}"),
            0.0,
            "{kind}: {}",
            g.metrics()
        );
        assert!(
            !g.log().contains("right") && !g.log().contains(":wrong"),
            "{}",
            g.log()
        );
    }
}

/// A 3-master, 3-replica cluster: the pair shares its limits exactly; the keys of one
/// decision are in one slot and different clients' keys in different slots. Then the master
/// of a limit's slot dies: decisions follow `on_store_failure` until its replica takes over,
/// then go to the cluster again by themselves.
#[test]
fn a_cluster_shares_limits_and_survives_a_master_failover() {
    let mut cluster = RedisCluster::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let seeds: Vec<String> = cluster
        .urls(false)
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let yaml = app_config(
        &format!("{{ cluster: [{}], timeout: 500ms }}", seeds.join(", ")),
        up.addr,
        SHARED_ENDPOINTS,
    );
    let a = Gatehouse::start(&yaml);
    let b = Gatehouse::start(&yaml);
    pair_shares_exactly([&a, &b]);
    // twenty clients on /clients, one token each across the pair
    for i in 0..20 {
        let k = format!("client-{i}");
        assert_eq!(status(&a, "/clients", &[("X-Api-Key", &k)]), 200);
        assert_eq!(status(&b, "/clients", &[("X-Api-Key", &k)]), 429);
    }
    let keys = cluster.keys();
    let shared: Vec<&(u16, String)> = keys
        .iter()
        .filter(|(_, k)| k.contains("/shared:"))
        .collect();
    // the shared bucket, the two keyed clients and the address of the requests without a key
    assert_eq!(shared.len(), 4, "{keys:?}");
    assert!(shared.iter().all(|(s, _)| *s == shared[0].0), "{shared:?}");
    let clients: std::collections::BTreeSet<u16> = keys
        .iter()
        .filter(|(_, k)| k.contains("/clients:"))
        .map(|(s, _)| *s)
        .collect();
    assert!(
        clients.len() >= 15,
        "20 clients in {} slots: {keys:?}",
        clients.len()
    );

    // the master of /deny's slot dies (its key expires at once: the slot of its name)
    assert_eq!(status(&a, "/deny", &[]), 200);
    let tag = gatehouse::limits::redis::hash_tag("endpoint * /deny");
    let deny_slot = cluster.slot(&format!("gatehouse:{{{tag}}}:endpoint * /deny:shared"));
    let victim = cluster.master_of(deny_slot).expect("a master");
    cluster.nodes[victim].stop();
    let started = std::time::Instant::now();
    let denied = denied_until_back(&a, Duration::from_secs(30));
    eprintln!(
        "cluster failover: decisions back after {:?}, {denied} denied meanwhile",
        started.elapsed()
    );
    assert!(
        denied >= 1,
        "the dead master's slot was denied until its replica took over"
    );
    // The surviving nodes' view of the slot follows by gossip, maybe after the client's.
    common::wait_for(
        "the replica to serve the slot",
        Duration::from_secs(15),
        || {
            cluster
                .master_of(deny_slot)
                .is_some_and(|m| m != victim)
                .then_some(())
        },
    );
    assert!(a.metric("gatehouse_redis_errors_total") >= 1.0);
    // both instances decide on the cluster again
    denied_until_back(&b, Duration::from_secs(30));
}

/// A master, a replica and a Sentinel: the master dies, the Sentinel promotes the replica,
/// and decisions move to it by themselves (following `on_store_failure` until then).
#[test]
fn sentinel_failover_moves_decisions_to_the_new_master() {
    let mut s = RedisSentinel::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let yaml = app_config(
        &format!(
            "{{ sentinel: {{ master: {SENTINEL_MASTER}, nodes: [\"{}\"] }}, timeout: 500ms }}",
            s.sentinel.url()
        ),
        up.addr,
        SHARED_ENDPOINTS,
    );
    let g = Gatehouse::start(&yaml);
    denied_until_back(&g, Duration::from_secs(10));
    assert!(s.master.calls("evalsha") + s.master.calls("eval") > 0);
    s.master.stop();
    let started = std::time::Instant::now();
    let denied = denied_until_back(&g, Duration::from_secs(30));
    eprintln!(
        "sentinel failover: decisions back after {:?}, {denied} denied meanwhile",
        started.elapsed()
    );
    assert!(denied >= 1);
    assert_eq!(
        s.master_port(),
        s.replica.port,
        "the Sentinel promoted the replica"
    );
    assert!(s.replica.calls("evalsha") + s.replica.calls("eval") > 0);
}

fn fleet_yaml(redis: &RedisServer, up: SocketAddr, heartbeat: &str) -> String {
    app_config(
        &format!("{{ url: \"{}\", heartbeat: {heartbeat} }}", redis.url()),
        up,
        r#"  - path: /f
    backend: app
    rate_limit: { max_rate: 100, client_max_rate: 1000000, every: 1s, store: fleet }
"#,
    )
}

const FLEET_LIMIT: &str = "gatehouse_fleet_instances{limit=\"endpoint * /f\"}";

/// Requests sent to each instance over several connections, as fast as they go, for `dur`;
/// the admitted ones. Every instance must also have rejected some (more offered than its
/// share), or the count would measure the clients, not the limit.
fn hammer(instances: &[&Gatehouse], dur: Duration) -> usize {
    const CONNS: usize = 6;
    std::thread::scope(|sc| {
        let hs: Vec<_> = instances
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.addr, CONNS))
            .map(|addr| {
                sc.spawn(move || {
                    let end = std::time::Instant::now() + dur;
                    let mut c = Conn::open(addr).unwrap();
                    let (mut ok, mut rejected) = (0, 0);
                    while std::time::Instant::now() < end {
                        let r = c.get("/f").expect("a response");
                        if r.status == 200 {
                            ok += 1;
                        } else {
                            assert_eq!(r.status, 503, "{}", r.text());
                            rejected += 1;
                        }
                    }
                    (ok, rejected)
                })
            })
            .collect();
        let got: Vec<(usize, usize)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        for (i, per) in got.chunks(CONNS).enumerate() {
            let rejected: usize = per.iter().map(|p| p.1).sum();
            assert!(rejected > 0, "instance {i} was never saturated: {per:?}");
        }
        got.iter().map(|p| p.0).sum()
    })
}

/// Redis's commands so far (those run by scripts included), `INFO` itself left out.
fn commands(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `store: fleet`: three instances admit the fleet-wide limit between them (each a third),
/// with no Redis command per request; one stops and the other two take over its share
/// within three heartbeats.
#[test]
fn fleet_instances_share_the_limit_locally() {
    let redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let hb = Duration::from_millis(300);
    let yaml = fleet_yaml(&redis, up.addr, "300ms");
    let a = Gatehouse::start(&yaml);
    let b = Gatehouse::start(&yaml);
    let mut c = Some(Gatehouse::start(&yaml));
    let all = [&a, &b, c.as_ref().unwrap()];
    wait_for("three instances counted", Duration::from_secs(10), || {
        all.iter()
            .all(|g| g.metric(FLEET_LIMIT) == 3.0)
            .then_some(())
    });
    // no request yet: every bucket is full
    let before = commands(&redis);
    let dur = Duration::from_secs(5);
    let admitted = hammer(&all, dur);
    let calls = commands(&redis) - before;
    // 100/s for 5 s plus each instance's burst of ceil(100/3) = 34: 602
    let want = 500.0 + 3.0 * 34.0;
    assert!(
        (admitted as f64 - want).abs() <= want * 0.1,
        "admitted {admitted}, want {want} ± 10%"
    );
    // heartbeats only: 3 instances, one script per heartbeat (~17 each in 5 s), each
    // counted with the 5 commands it runs, however many requests were offered
    let beats = 3 * (dur.as_millis() / hb.as_millis() + 3) as u64;
    assert!(
        calls <= 6 * beats,
        "{calls} Redis commands for {admitted} admissions"
    );
    for g in all {
        assert_eq!(g.metric("gatehouse_redis_errors_total"), 0.0, "{}", g.log());
    }

    // one instance stops (killed, no goodbye): its announcement lives two heartbeats
    let stopped = std::time::Instant::now();
    drop(c.take());
    wait_for(
        "the others to count two",
        3 * hb + Duration::from_secs(3),
        || {
            [&a, &b]
                .iter()
                .all(|g| g.metric(FLEET_LIMIT) == 2.0)
                .then_some(())
        },
    );
    eprintln!("two counted {:?} after the stop", stopped.elapsed());
    // a share of two refills in one second (50 tokens at 50/s): that time is part of what the
    // next count measures, not a wait for readiness
    std::thread::sleep(Duration::from_secs(1));
    let dur = Duration::from_secs(3);
    let admitted = hammer(&[&a, &b], dur);
    // 100/s for 3 s plus two bursts of 50: 400
    let want = 300.0 + 2.0 * 50.0;
    assert!(
        (admitted as f64 - want).abs() <= want * 0.1,
        "admitted {admitted}, want {want} ± 10%"
    );
}

/// Redis away: a fleet instance keeps its last count, and its limit keeps working.
#[test]
fn a_fleet_instance_keeps_its_count_without_redis() {
    let mut redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let yaml = fleet_yaml(&redis, up.addr, "100ms");
    let a = Gatehouse::start(&yaml);
    let b = Gatehouse::start(&yaml);
    wait_for("two instances counted", Duration::from_secs(10), || {
        [&a, &b]
            .iter()
            .all(|g| g.metric(FLEET_LIMIT) == 2.0)
            .then_some(())
    });
    redis.stop();
    wait_for("a failed heartbeat", Duration::from_secs(10), || {
        (a.metric("gatehouse_redis_errors_total") > 0.0).then_some(())
    });
    assert_eq!(a.metric(FLEET_LIMIT), 2.0);
    // the share of two: capacity 50, then 503
    let mut c = Conn::open(a.addr).unwrap();
    let started = std::time::Instant::now();
    let ok = (0..80)
        .filter(|_| c.get("/f").unwrap().status == 200)
        .count();
    let refilled = (started.elapsed().as_secs_f64() * 50.0).ceil() as usize;
    assert!(
        (50..=50 + refilled).contains(&ok),
        "{ok} (refilled {refilled})"
    );
}
