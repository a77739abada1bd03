//! Rate limits through the real binary: bursts, refill, per-client buckets (ip, header,
//! param), tiers, service/endpoint/backend buckets, max_concurrent, RateLimit headers,
//! bucket state across reloads, dry runs, in-flight bounds per client and per endpoint, and
//! exemptions. Counts are asserted, never speed.

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

/// gatehouse in front of an echoing upstream, with `service` lines at the top level and the
/// `endpoints` list.
fn echo_gatehouse(service: &str, endpoints: &str) -> (MockUpstream, Gatehouse) {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, service, "", endpoints));
    (up, g)
}

/// gatehouse in front of an upstream that takes 1.5 s per answer, within a 10 s budget and
/// read timeout, so that requests stay in flight: `backend` and `endpoint` are the extra
/// lines of the backend and of the one endpoint (`/{*rest}`).
fn slow_gatehouse(backend: &str, endpoint: &str) -> (MockUpstream, Gatehouse) {
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_millis(1500)));
    let g = Gatehouse::start(&config(
        up.addr,
        "",
        &format!("{backend}    timeouts: {{ read: 10s }}"),
        &format!("  - path: /{{*rest}}\n    backend: app\n    timeout: 10s\n{endpoint}"),
    ));
    (up, g)
}

/// Waits for the upstream to have seen `n` requests.
fn wait_upstream(up: &MockUpstream, n: usize) {
    wait_for("the requests upstream", Duration::from_secs(10), || {
        (up.count() == n).then_some(())
    });
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
    let (up, g) = echo_gatehouse(
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { client_max_rate: 5, every: 1h }",
    );
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
    let (_up, g) = echo_gatehouse(
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { client_max_rate: 1, client_capacity: 1, every: 200ms }",
    );
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
    let (_up, g) = echo_gatehouse(
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { client_max_rate: 2, every: 1h, strategy: header, key: X-Api-Key }",
    );
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
    let (_up, g) = echo_gatehouse(
        "",
        "  - path: /items/{id}\n    backend: app\n    rate_limit: { client_max_rate: 1, every: 1h, strategy: param, key: id }",
    );
    assert_eq!(statuses(g.addr, "/items/a", &[], 3), [200, 429, 429]);
    assert_eq!(statuses(g.addr, "/items/b", &[], 3), [200, 429, 429]);
}

#[test]
fn tiers_pick_client_limits_by_plan() {
    let (_up, g) = echo_gatehouse(
        r#"rate_limit:
  every: 1h
  strategy: header
  key: X-Api-Key
  tiers:
    key: X-Plan
    levels:
      - { value: gold, client_max_rate: 4 }
      - { value: "*", client_max_rate: 1 }"#,
        "  - path: /{*rest}\n    backend: app",
    );
    let gold = statuses(g.addr, "/x", &[("X-Api-Key", "k1"), ("X-Plan", "gold")], 8);
    assert_eq!(count(&gold, 200), 4, "{gold:?}");
    let free = statuses(g.addr, "/x", &[("X-Api-Key", "k2"), ("X-Plan", "free")], 8);
    assert_eq!(count(&free, 200), 1, "{free:?}");
    let none = statuses(g.addr, "/x", &[("X-Api-Key", "k3")], 8);
    assert_eq!(count(&none, 200), 1, "{none:?}");
}

#[test]
fn shared_buckets_reject_with_503_service_then_endpoint() {
    let (_up, g) = echo_gatehouse(
        "rate_limit: { max_rate: 6, every: 1h }",
        "  - path: /a\n    backend: app\n    rate_limit: { max_rate: 2, every: 1h }\n  - path: /b\n    backend: app",
    );
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
    let (_up, g) = echo_gatehouse(
        "",
        r#"  - path: /h
    backend: app
    rate_limit: { max_rate: 10, client_max_rate: 2, every: 10s }
  - path: /quiet
    backend: app
    rate_limit: { max_rate: 10, every: 10s, headers: false }"#,
    );
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
    let (up, g) = slow_gatehouse("    max_concurrent: 1\n", "");
    let addr = g.addr;
    let slow = thread::spawn(move || get(addr, "/slow", &[]).status);
    wait_upstream(&up, 1);
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

#[test]
fn a_dry_run_limit_passes_counts_logs_and_lets_later_buckets_decide() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        "rate_limit: { client_max_rate: 1, every: 1h, dry_run: true }",
        "",
        "  - path: /{*rest}\n    backend: app\n    rate_limit: { max_rate: 3, every: 1h }",
    ));
    let mut c = Conn::open(g.addr).unwrap();
    let first = c.get("/x").unwrap();
    assert_eq!(first.status, 200);
    // the dry-run client bucket is empty now, and says so in the headers; the request
    // passes and takes a token from the endpoint's bucket
    let second = c.get("/x").unwrap();
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        second.header("ratelimit"),
        Some("\"service-client\";r=0;t=3600, \"endpoint\";r=1;t=2400")
    );
    assert_eq!(second.header("retry-after"), None);
    assert_eq!(c.get("/x").unwrap().status, 200);
    // the endpoint's bucket (3) is spent: its rejection is a real one
    let fourth = c.get("/x").unwrap();
    assert_eq!(fourth.status, 503);
    assert!(fourth.text().contains("endpoint_rate_limit"));
    assert_eq!(up.count(), 3);
    wait_metric(
        &g,
        "gatehouse_would_reject_total{reason=\"client_rate_limit\"}",
        3.0,
    );
    assert_eq!(
        g.metric("gatehouse_rejections_total{reason=\"client_rate_limit\"}"),
        0.0
    );
    let log = g.wait_log_lines("\"GET /x", 4);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("\"GET /x")).collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(!lines[0].contains("would_reject"), "{}", lines[0]);
    assert!(
        lines[1].ends_with(" would_reject=client_rate_limit") && lines[1].contains(" reason=- "),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].ends_with(" would_reject=client_rate_limit")
            && lines[3].contains(" reason=endpoint_rate_limit "),
        "{}",
        lines[3]
    );
}

/// Starts `GET path` on its own connection in a thread; returns its status when joined.
fn in_flight(
    addr: SocketAddr,
    path: &'static str,
    headers: &'static [(&str, &str)],
) -> thread::JoinHandle<u16> {
    thread::spawn(move || get(addr, path, headers).status)
}

#[test]
fn client_max_concurrent_refuses_with_429_before_the_bucket() {
    let (up, g) = slow_gatehouse(
        "",
        "    rate_limit: { client_max_rate: 2, every: 1h, client_max_concurrent: 1, strategy: header, key: X-Client }",
    );
    const A: &[(&str, &str)] = &[("X-Client", "a")];
    let slow = in_flight(g.addr, "/1", A);
    wait_upstream(&up, 1);
    let r = get(g.addr, "/2", A);
    assert_eq!(r.status, 429);
    assert!(r.text().contains("client_max_concurrent"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    // another client key has its own count
    let other = in_flight(g.addr, "/3", &[("X-Client", "b")]);
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(other.join().unwrap(), 200);
    // the refused request took no token: the bucket of 2 still has one
    let r = wait_for("a's slot to be free", Duration::from_secs(10), || {
        let r = get(g.addr, "/4", A);
        (!r.text().contains("client_max_concurrent")).then_some(r)
    });
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(g.addr, "/5", A);
    assert_eq!(r.status, 429);
    assert!(r.text().contains("client_rate_limit"), "{}", r.text());
    wait_metric(
        &g,
        "gatehouse_rejections_total{reason=\"client_max_concurrent\"}",
        1.0,
    );
}

/// A slot is given back however the request ends: an upstream error, a timeout, a client
/// gone before the answer.
#[test]
fn client_slots_are_released_on_errors_timeouts_and_gone_clients() {
    let dead = dead_addr();
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_millis(3000)));
    let g = Gatehouse::start(&format!(
        r#"{SERVER}
rate_limit: {{ client_max_concurrent: 1 }}
backends:
  dead: {{ discovery: {{ static: ["{dead}"] }} }}
  slow:
    discovery: {{ static: ["{up}"] }}
    timeouts: {{ read: 10s }}
endpoints:
  - {{ path: /dead, backend: dead }}
  - {{ path: /timeout, backend: slow, timeout: 200ms }}
  - {{ path: /slow, backend: slow, timeout: 10s }}
"#,
        dead = dead.addr,
        up = up.addr
    ));
    for _ in 0..3 {
        assert_eq!(get(g.addr, "/dead", &[]).status, 502);
    }
    for _ in 0..3 {
        assert_eq!(get(g.addr, "/timeout", &[]).status, 504);
    }
    // a client that leaves while its request waits for the upstream
    let before = up.count();
    let mut c = Conn::open(g.addr).unwrap();
    c.send_raw(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    wait_for("the request upstream", Duration::from_secs(10), || {
        (up.count() > before).then_some(())
    });
    assert_eq!(get(g.addr, "/dead", &[]).status, 429, "the slot is held");
    drop(c);
    wait_for(
        "the slot of the gone client",
        Duration::from_secs(10),
        || (get(g.addr, "/dead", &[]).status == 502).then_some(()),
    );
}

#[test]
fn endpoint_max_concurrent_refuses_with_503_before_the_endpoint_bucket() {
    let (up, g) = slow_gatehouse(
        "",
        "    max_concurrent: 1\n    rate_limit: { max_rate: 2, every: 1h }",
    );
    let slow = in_flight(g.addr, "/1", &[]);
    wait_upstream(&up, 1);
    let r = get(g.addr, "/2", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("endpoint_max_concurrent"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(slow.join().unwrap(), 200);
    let r = wait_for("the endpoint's slot", Duration::from_secs(10), || {
        let r = get(g.addr, "/3", &[]);
        (!r.text().contains("endpoint_max_concurrent")).then_some(r)
    });
    assert_eq!(r.status, 200, "{}", r.text());
    // the refused request took no token: the third request had the second one
    let r = get(g.addr, "/4", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("endpoint_rate_limit"), "{}", r.text());
}

#[test]
fn a_websocket_holds_its_slot_until_it_closes() {
    let upstream = common::tls::ws_echo_upstream();
    let g = Gatehouse::start(&format!(
        r#"{SERVER}backends:
  app: {{ discovery: {{ static: ["{upstream}"] }} }}
endpoints:
  - path: /ws
    backend: app
    rate_limit: {{ client_max_concurrent: 1 }}
"#
    ));
    let ws = || {
        let stream = std::net::TcpStream::connect(g.addr).unwrap();
        let url = format!("ws://{}/ws", g.addr);
        match tungstenite::client(url.as_str(), stream) {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(r.status().as_u16())
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut open = ws().expect("the first upgrade passes");
    assert_eq!(open.read().unwrap(), tungstenite::Message::text("hello"));
    assert_eq!(ws().err(), Some(429), "one WebSocket in flight already");
    open.close(None).unwrap();
    while open.read().is_ok() {}
    drop(open);
    let again = wait_for(
        "the slot of the closed WebSocket",
        Duration::from_secs(10),
        || ws().ok(),
    );
    drop(again);
}

#[test]
fn exempt_clients_skip_the_block_but_not_the_filters() {
    let up = MockUpstream::start(Behaviour::Echo);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exempt.txt");
    std::fs::write(&file, "# office\n10.0.0.0/8\n").unwrap();
    let yaml = |file: &std::path::Path| {
        config(
            up.addr,
            "rate_limit: { client_max_rate: 1, every: 1h, exempt: { cidrs: [127.0.0.0/8] } }",
            "",
            &format!(
                r#"  - path: /a
    backend: app
  - path: /b
    backend: app
    rate_limit: {{ max_rate: 1, every: 1h, exempt: {{ cidrs_file: "{}" }} }}
  - path: /c
    backend: app
    security: {{ ip_filter: {{ mode: deny, cidrs: [127.0.0.1] }} }}"#,
                file.display()
            ),
        )
    };
    let g = Gatehouse::start(&yaml(&file));
    assert_eq!(statuses(g.addr, "/a", &[], 3), [200, 200, 200]);
    wait_metric(
        &g,
        "gatehouse_rate_limit_exempt_total{scope=\"service\"}",
        3.0,
    );
    // the endpoint's list does not name 127.0.0.1: its bucket applies
    assert_eq!(statuses(g.addr, "/b", &[], 2), [200, 503]);
    assert_eq!(get(g.addr, "/c", &[]).status, 403);
    // the list file is read again on reload; a bad line names the file and the line
    std::fs::write(&file, "10.0.0.0/8\n127.0.0.1\n").unwrap();
    assert!(g.reload(&yaml(&file)));
    assert_eq!(statuses(g.addr, "/b", &[], 2), [200, 200]);
    std::fs::write(&file, "10.0.0.0/8\nnot-an-address\n").unwrap();
    let err = Gatehouse::try_start(&yaml(&file)).err().expect("refused");
    let want = format!("{}:2:", file.display());
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("endpoints[1].rate_limit.exempt.cidrs_file"),
        "{err}"
    );
    // the running instance refuses the bad file too, and keeps its list
    assert!(!g.reload(&yaml(&file)));
    assert_eq!(statuses(g.addr, "/b", &[], 2), [200, 200]);
    // and reads the file again when it changes, without a reload: 127.0.0.1 leaves the list,
    // and the spent bucket applies again
    std::fs::write(
        &file,
        "10.0.0.0/8
",
    )
    .unwrap();
    wait_for("the changed list", Duration::from_secs(10), || {
        (get(g.addr, "/b", &[]).status == 503).then_some(())
    });
}

/// In Redis, the script stops at the first bucket that refuses; a dry-run block asks again
/// for the buckets after it, so its would-be refusals take the same tokens as locally.
#[test]
fn a_dry_run_redis_block_goes_on_to_the_later_buckets() {
    let redis = RedisServer::start();
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(
        up.addr,
        &format!(
            "redis: {{ url: \"{}\", timeout: 1s }}\nrate_limit: {{ client_max_rate: 1, max_rate: 3, every: 1h, store: redis, on_store_failure: deny, dry_run: true }}",
            redis.url()
        ),
        "",
        "  - path: /{*rest}\n    backend: app",
    ));
    assert_eq!(statuses(g.addr, "/x", &[], 5), [200; 5]);
    // the client bucket refused requests 2 to 5; the shared one (3) took requests 1 to 3
    wait_metric(
        &g,
        "gatehouse_would_reject_total{reason=\"client_rate_limit\"}",
        4.0,
    );
    wait_metric(
        &g,
        "gatehouse_would_reject_total{reason=\"service_rate_limit\"}",
        2.0,
    );
    assert_eq!(up.count(), 5);
}
