//! Rate limits through the real binary: bursts, refill, per-client buckets (ip, header,
//! param), tiers, service/endpoint/backend buckets, max_concurrent, RateLimit headers,
//! and bucket state across reloads. Counts are asserted, never speed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::*;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

/// A config with `service` (top-level lines), backend `app` (+ `backend` lines) and `endpoints`.
fn config(up: SocketAddr, service: &str, backend: &str, endpoints: &str) -> String {
    format!(
        r#"{SERVER}{service}
backends:
  app:
    discovery: {{ static: ["{up}"] }}
{backend}
endpoints:
{endpoints}
"#
    )
}

/// Sends `n` requests on one keep-alive connection and returns the statuses.
fn statuses(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut c = Conn::open(addr).expect("connect");
    (0..n)
        .map(|_| {
            c.request("GET", path, headers, b"")
                .expect("a response on the same connection")
                .status
        })
        .collect()
}

/// Metrics are counted in the logging phase, just after the response is written: poll.
fn wait_metric(g: &Gatehouse, name: &str, want: f64) {
    wait_for(&format!("{name} = {want}"), Duration::from_secs(10), || {
        (g.metric(name) == want).then_some(())
    });
}

fn count(v: &[u16], status: u16) -> usize {
    v.iter().filter(|s| **s == status).count()
}

#[test]
fn a_burst_admits_exactly_capacity_then_429_on_a_live_connection() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { client_max_rate: 5, every: 1h }",
    ));
    let got = statuses(g.addr, "/x", &[], 30);
    assert_eq!(&got[..5], &[200; 5]);
    assert_eq!(count(&got, 429), 25, "{got:?}");
    assert_eq!(up.count(), 5);
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.text().contains("urn:gatehouse:problem:client_rate_limit"));
    // 5 tokens per hour: the next one is 12 minutes away (to the second, rounded up)
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((700..=720).contains(&retry), "{retry}");
    wait_metric(
        &g,
        "gatehouse_rejections_total{reason=\"client_rate_limit\"}",
        26.0,
    );
}

#[test]
fn refill_admits_again_after_the_interval() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { client_max_rate: 1, client_capacity: 1, every: 200ms }",
    ));
    let mut c = Conn::open(g.addr).unwrap();
    // Spend the token until a rejection is seen, then poll until one is admitted again.
    for round in 0..3 {
        let r = wait_for("a 429", Duration::from_secs(10), || {
            let r = c.get("/x").unwrap();
            (r.status == 429).then_some(r)
        });
        assert_eq!(r.header("retry-after"), Some("1"), "round {round}");
        wait_for("a refilled token", Duration::from_secs(10), || {
            (c.get("/x").unwrap().status == 200).then_some(())
        });
    }
}

#[test]
fn clients_do_not_share_a_bucket() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { client_max_rate: 2, every: 1h, strategy: header, key: X-Api-Key }",
    ));
    let a = statuses(g.addr, "/x", &[("X-Api-Key", "alice")], 5);
    let b = statuses(g.addr, "/x", &[("X-Api-Key", "bob")], 5);
    assert_eq!(a, [200, 200, 429, 429, 429]);
    assert_eq!(b, [200, 200, 429, 429, 429]);
    // no header: the client address is the key (a third bucket)
    let anon = statuses(g.addr, "/x", &[], 5);
    assert_eq!(anon, [200, 200, 429, 429, 429]);
}

#[test]
fn param_strategy_keys_by_path_placeholder() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "",
        "  - path: /items/{id}\n    backend: app\n    rate_limit: { client_max_rate: 1, every: 1h, strategy: param, key: id }",
    ));
    assert_eq!(statuses(g.addr, "/items/a", &[], 3), [200, 429, 429]);
    assert_eq!(statuses(g.addr, "/items/b", &[], 3), [200, 429, 429]);
}

#[test]
fn tiers_pick_client_limits_by_plan() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        r#"rate_limit:
  every: 1h
  strategy: header
  key: X-Api-Key
  tiers:
    key: X-Plan
    levels:
      - { value: gold, client_max_rate: 4 }
      - { value: "*", client_max_rate: 1 }"#,
        "",
        "  - path: /{*rest}\n    backend: app",
    ));
    let gold = statuses(g.addr, "/x", &[("X-Api-Key", "k1"), ("X-Plan", "gold")], 8);
    assert_eq!(count(&gold, 200), 4, "{gold:?}");
    let free = statuses(g.addr, "/x", &[("X-Api-Key", "k2"), ("X-Plan", "free")], 8);
    assert_eq!(count(&free, 200), 1, "{free:?}");
    let none = statuses(g.addr, "/x", &[("X-Api-Key", "k3")], 8);
    assert_eq!(count(&none, 200), 1, "{none:?}");
}

#[test]
fn shared_buckets_reject_with_503_service_then_endpoint() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "rate_limit: { max_rate: 6, every: 1h }",
        "",
        "  - path: /a\n    backend: app\n    rate_limit: { max_rate: 2, every: 1h }\n  - path: /b\n    backend: app",
    ));
    // /a: endpoint bucket of 2 (each also takes a service token)
    let a = statuses(g.addr, "/a", &[], 4);
    assert_eq!(a, [200, 200, 503, 503]);
    // service bucket: 6 - 2 (the endpoint rejections took service tokens too) = 2 left
    let b = statuses(g.addr, "/b", &[], 4);
    assert_eq!(b, [200, 200, 503, 503]);
    let r = get(g.addr, "/b", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("service_rate_limit"));
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // 6 tokens per hour: the next one is 10 minutes after the first was taken
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((590..=600).contains(&retry), "{retry}");
    wait_metric(
        &g,
        "gatehouse_rejections_total{reason=\"endpoint_rate_limit\"}",
        2.0,
    );
    wait_metric(
        &g,
        "gatehouse_rejections_total{reason=\"service_rate_limit\"}",
        3.0,
    );
}

#[test]
fn rate_limit_headers_carry_the_numbers() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "",
        r#"  - path: /h
    backend: app
    rate_limit: { max_rate: 10, client_max_rate: 2, every: 10s }
  - path: /quiet
    backend: app
    rate_limit: { max_rate: 10, every: 10s, headers: false }"#,
    ));
    let r = get(g.addr, "/h", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"endpoint-client\";q=2;w=10, \"endpoint\";q=10;w=10")
    );
    // one token spent from each: back in T (5 s for the client, 1 s for the endpoint)
    assert_eq!(
        r.header("ratelimit"),
        Some("\"endpoint-client\";r=1;t=5, \"endpoint\";r=9;t=1")
    );
    get(g.addr, "/h", &[]);
    let r = get(g.addr, "/h", &[]);
    assert_eq!(r.status, 429);
    let state = r.header("ratelimit").unwrap();
    assert!(state.starts_with("\"endpoint-client\";r=0;t="), "{state}");
    assert!(r.header("retry-after").is_some());
    // the client bucket (2 per 10 s) rejected it: its next token is 5 s after the first
    // request; the shared bucket was not consulted, so it has no entry
    assert_eq!(state, "\"endpoint-client\";r=0;t=5");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"endpoint-client\";q=2;w=10")
    );
    let q = get(g.addr, "/quiet", &[]);
    assert_eq!(q.status, 200);
    assert_eq!(q.header("ratelimit"), None);
    assert_eq!(q.header("ratelimit-policy"), None);
}

#[test]
fn backend_rate_limit_rejects_with_503() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "    rate_limit: { max_rate: 2, every: 1h }",
        "  - path: /{*rest}\n    backend: app",
    ));
    assert_eq!(statuses(g.addr, "/x", &[], 4), [200, 200, 503, 503]);
    assert_eq!(up.count(), 2);
    let r = get(g.addr, "/x", &[]);
    assert!(r.text().contains("backend_rate_limit"), "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=1800).contains(&retry), "{retry}");
    // 2 tokens per hour: the next one is half an hour after the first was taken
    assert!((1790..=1800).contains(&retry), "{retry}");
}

#[test]
fn max_concurrent_rejects_while_the_backend_is_busy() {
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_millis(1500)));
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        "    max_concurrent: 1\n    timeouts: { read: 10s }",
        "  - path: /{*rest}\n    backend: app\n    timeout: 10s",
    ));
    let addr = g.addr;
    let slow = thread::spawn(move || get(addr, "/slow", &[]).status);
    wait_for(
        "the first request upstream",
        Duration::from_secs(10),
        || (up.count() == 1).then_some(()),
    );
    // on a keep-alive connection, which the 503 leaves open for the third request below
    let mut c = Conn::open(g.addr).unwrap();
    let r = c.get("/second").expect("a response");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("backend_max_concurrent"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(slow.join().unwrap(), 200);
    // the slot is released when the first request ends (just after its response is sent)
    wait_for("the slot to be free again", Duration::from_secs(10), || {
        let r = c.get("/third").expect("the same connection, still open");
        (r.status == 200).then_some(())
    });
    assert_eq!(up.count(), 2);
}

#[test]
fn buckets_survive_a_reload_unless_their_policy_changed() {
    let up = MockUpstream::start(Behaviour::Echo);
    let ep = |cap: u32, extra: &str| {
        format!(
            "  - path: /x\n    backend: app\n    rate_limit: {{ client_max_rate: {cap}, every: 1h }}\n{extra}"
        )
    };
    let g = Gatehouse::start(&config(up.addr, "", "", &ep(2, "")));
    assert_eq!(statuses(g.addr, "/x", &[], 3), [200, 200, 429]);
    // an unrelated change: the bucket is kept (still empty)
    assert!(g.reload(&config(
        up.addr,
        "",
        "",
        &ep(2, "  - path: /other\n    backend: app")
    )));
    assert_eq!(statuses(g.addr, "/x", &[], 2), [429, 429]);
    // a changed policy takes effect with fresh buckets
    assert!(g.reload(&config(up.addr, "", "", &ep(3, ""))));
    assert_eq!(statuses(g.addr, "/x", &[], 4), [200, 200, 200, 429]);
}

#[test]
fn a_bad_limit_is_a_config_error_with_its_path() {
    let up = MockUpstream::start(Behaviour::Echo);
    let err = Gatehouse::try_start(&config(
        up.addr,
        "rate_limit: { max_rate: 5, store: redis }",
        "",
        "  - path: /x\n    backend: app",
    ))
    .err()
    .expect("refused");
    assert!(err.contains("rate_limit.store"), "{err}");
}
