//! The gateway core through the real binary: proxying, routing, rewrites, balancing,
//! retries, upstream failures, timeouts, hot reload, admin, graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

fn routes_config(up: SocketAddr, endpoints: &str) -> String {
    format!(
        r#"{SERVER}backends:
  app:
    discovery: {{ static: ["{up}"] }}
endpoints:
{endpoints}
"#
    )
}

#[test]
fn proxies_with_forwarding_headers_and_keeps_host() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    let r = get(
        g.addr,
        "/hello/world?x=1&y=2",
        &[("Host", "api.example.com")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = up.last().expect("upstream saw the request");
    assert_eq!(rec.target, "/hello/world?x=1&y=2");
    assert_eq!(rec.header("host"), Some("api.example.com"));
    assert_eq!(rec.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-proto"), Some("http"));

    // `grpc-timeout` means something only on a gRPC call: on any other request it is the
    // client's own header, passed as it came.
    get(g.addr, "/a", &[("grpc-timeout", "junk")]);
    assert_eq!(up.last().unwrap().header("grpc-timeout"), Some("junk"));

    // An existing X-Forwarded-For is appended to.
    get(g.addr, "/a", &[("X-Forwarded-For", "198.51.100.7")]);
    let rec = up.last().expect("request");
    assert_eq!(
        rec.header("x-forwarded-for"),
        Some("198.51.100.7, 127.0.0.1")
    );
}

#[test]
fn host_header_can_be_overridden_per_backend() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(
        &[up.addr],
        "    host_header: internal.svc",
        "",
    ));
    assert_eq!(get(g.addr, "/x", &[("Host", "public.example")]).status, 200);
    assert_eq!(
        up.last().expect("request").header("host"),
        Some("internal.svc")
    );
}

#[test]
fn most_specific_route_wins_and_rewrites_keep_the_query() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&routes_config(
        up.addr,
        r#"  - { path: "/products/{cat_id}", backend: app, rewrite: "/catalog/category/{cat_id}" }
  - { path: "/products/new", backend: app, rewrite: "/new-product" }
  - { path: "/files/{*rest}", backend: app, rewrite: "/static/{rest}" }
  - { path: "/{*any}", backend: app }"#,
    ));
    assert_eq!(get(g.addr, "/products/42?sort=asc", &[]).status, 200);
    assert_eq!(up.last().unwrap().target, "/catalog/category/42?sort=asc");
    get(g.addr, "/products/new", &[]);
    assert_eq!(up.last().unwrap().target, "/new-product");
    get(g.addr, "/files/a/b/c.txt", &[]);
    assert_eq!(up.last().unwrap().target, "/static/a/b/c.txt");
    get(g.addr, "/other?q=1", &[]);
    assert_eq!(up.last().unwrap().target, "/other?q=1");
}

#[test]
fn not_found_and_wrong_method_are_problems_on_a_kept_alive_connection() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&routes_config(
        up.addr,
        r#"  - { path: /items, backend: app, methods: [GET, HEAD] }
  - { path: /items, backend: app, methods: [POST] }"#,
    ));
    let mut c = Conn::open(g.addr).unwrap();
    let r = c.get("/nothing-here").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.text()
            .contains("\"type\":\"urn:gatehouse:problem:not_found\""),
        "{}",
        r.text()
    );
    assert!(r.text().contains("\"status\":404"));

    let r = c.request("DELETE", "/items", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert!(r.text().contains("method_not_allowed"));

    // Same connection still works after both rejections.
    let r = c.request("POST", "/items", &[], b"payload").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1, "rejected requests never reach the upstream");
    assert_eq!(up.last().unwrap().body, b"payload");
    wait_for(
        "both requests to be counted",
        Duration::from_secs(5),
        || {
            let nf = g.metric("gatehouse_rejections_total{reason=\"not_found\"}");
            let ok = g.metric("gatehouse_requests_total{route=\"/items\",status=\"200\"}");
            (nf == 1.0 && ok == 1.0).then_some(())
        },
    );
}

/// A problem answer to HEAD has the GET answer's headers and no body: a body would be read
/// as the start of the next response on the connection.
#[test]
fn head_rejections_have_no_body() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&routes_config(
        up.addr,
        r#"  - { path: /items, backend: app, methods: [GET] }"#,
    ));
    let mut c = Conn::open(g.addr).unwrap();
    for (path, status) in [("/nothing-here", 404), ("/items", 405)] {
        let r = c.request("HEAD", path, &[], b"").unwrap();
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.body.is_empty(), "{path}");
        // The next answer on the connection starts where it should.
        let r = c.get("/nothing-here").unwrap();
        assert_eq!(r.status, 404, "after HEAD {path}");
        assert!(r.text().contains("not_found"), "{}", r.text());
    }
}

#[test]
fn paths_are_normalised_before_matching() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&routes_config(
        up.addr,
        r#"  - { path: "/public/{*rest}", backend: app }"#,
    ));
    for (sent, seen) in [
        ("/public//a///b", "/public/a/b"),
        ("/private/../public/x", "/public/x"),
        ("/public/a/%2e%2e/b?k=v", "/public/b?k=v"),
        ("/%70ublic/./c", "/public/c"),
    ] {
        let r = get(g.addr, sent, &[]);
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(up.last().unwrap().target, seen, "{sent}");
    }
    // Dot segments cannot climb out of the route they were aimed at.
    assert_eq!(get(g.addr, "/public/%2e%2e/private/x", &[]).status, 404);
    assert_eq!(get(g.addr, "/public/%zz", &[]).status, 400);
}

#[test]
fn round_robin_spreads_over_hosts() {
    let a = MockUpstream::start(Behaviour::Echo);
    let b = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[a.addr, b.addr], "", ""));
    for _ in 0..10 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert_eq!((a.count(), b.count()), (5, 5));
}

#[test]
fn random_balance_reaches_every_host() {
    let a = MockUpstream::start(Behaviour::Echo);
    let b = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[a.addr, b.addr], "    balance: random", ""));
    // 60 picks: the chance that one host gets none is 2 * 2^-60.
    for _ in 0..60 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert!(
        a.count() > 0 && b.count() > 0,
        "{} / {}",
        a.count(),
        b.count()
    );
}

#[test]
fn connect_failure_is_retried_on_another_host() {
    let live = MockUpstream::start(Behaviour::Echo);
    let dead = dead_addr();
    let g = Gatehouse::start(&simple_config(
        &[dead.addr, live.addr],
        "    retries: 1",
        "",
    ));
    for _ in 0..30 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert_eq!(live.count(), 30);
}

#[test]
fn refused_connection_without_retries_is_502() {
    let dead = dead_addr();
    let g = Gatehouse::start(&simple_config(&[dead.addr], "    retries: 0", ""));
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 502);
    assert!(r.text().contains("bad_gateway"), "{}", r.text());
}

#[test]
fn upstream_closing_without_answer_is_502() {
    let up = MockUpstream::start(Behaviour::Close);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
}

/// Pingora closes the client connection after an upstream failure; the answer must say so
/// (`Connection: close`) rather than promise a keep-alive that resets the next request.
#[test]
fn upstream_failures_announce_that_the_connection_closes() {
    let dead = dead_addr();
    let slow = MockUpstream::start(Behaviour::Slow(Duration::from_secs(3)));
    let g = Gatehouse::start(&format!(
        r#"{SERVER}backends:
  dead:
    discovery: {{ static: ["{}"] }}
    retries: 0
  slow:
    discovery: {{ static: ["{}"] }}
endpoints:
  - {{ path: /dead, backend: dead }}
  - {{ path: /slow, backend: slow, timeout: 300ms }}
"#,
        dead.addr, slow.addr
    ));
    for (path, status) in [("/dead", 502), ("/slow", 504)] {
        let mut c = Conn::open(g.addr).unwrap();
        let r = c.get(path).unwrap();
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{path}");
        assert!(c.is_closed(Duration::from_secs(2)), "{path}");
    }
}

#[test]
fn slow_upstream_past_the_endpoint_timeout_is_504() {
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_secs(3)));
    let g = Gatehouse::start(&simple_config(&[up.addr], "", "    timeout: 300ms"));
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 504);
    assert!(r.text().contains("timeout"), "{}", r.text());
    // The endpoint's 300ms budget ran out, not the backend's 5s read timeout.
    assert!(
        r.text()
            .contains("\"type\":\"urn:gatehouse:problem:endpoint_timeout\""),
        "{}",
        r.text()
    );
    // After a 504 the next request is served normally once the upstream is fast again.
    up.set(Behaviour::Echo);
    assert_eq!(get(g.addr, "/x", &[]).status, 200);
}

#[test]
fn reload_swaps_routes_under_load_without_failing_a_request() {
    let up = MockUpstream::start(Behaviour::Echo);
    let v2 = MockUpstream::start(Behaviour::Echo);
    let base = routes_config(up.addr, r#"  - { path: "/old/{*rest}", backend: app }"#).replace(
        "endpoints:",
        &format!(
            "  v2:\n    discovery: {{ static: [\"{}\"] }}\nendpoints:",
            v2.addr
        ),
    );
    let before = base.clone();
    let after = base.replace(
        "backend: app }",
        "backend: app }\n  - { path: \"/new/{*rest}\", backend: v2, rewrite: \"/v2/{rest}\" }",
    );
    let g = Gatehouse::start(&before);
    assert_eq!(get(g.addr, "/new/x", &[]).status, 404);

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let addr = g.addr;
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut c = Conn::open(addr).expect("connect");
                while !stop.load(Ordering::Acquire) {
                    match c.get("/old/ping") {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => {
                            failures.push(format!("error {e}"));
                            c = Conn::open(addr).expect("reconnect");
                        }
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    wait_for("load to start", Duration::from_secs(5), || {
        (sent.load(Ordering::Relaxed) > 50).then_some(())
    });
    for i in 0..5 {
        let cfg = if i % 2 == 0 { &after } else { &before };
        assert!(g.reload(cfg), "reload {i} should succeed");
    }
    assert!(g.reload(&after));
    let r = get(g.addr, "/new/thing?q=1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(v2.last().unwrap().target, "/v2/thing?q=1");
    let n = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Release);
    let failures: Vec<String> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(
        failures.is_empty(),
        "{} failures of {n}: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(g.generation(), 7);
}

#[test]
fn a_broken_reload_keeps_the_running_config() {
    let up = MockUpstream::start(Behaviour::Echo);
    let good = routes_config(up.addr, r#"  - { path: /kept, backend: app }"#);
    let g = Gatehouse::start(&good);
    let broken = good.replace("backend: app", "backend: missing");
    assert!(!g.reload(&broken), "the broken reload must be refused");
    assert!(
        !g.reload("version: 1\nserver: [oops"),
        "unparsable YAML is refused"
    );
    assert_eq!(get(g.addr, "/kept", &[]).status, 200);
    assert_eq!(g.generation(), 1);
    assert_eq!(g.metric("gatehouse_reloads_total{result=\"error\"}"), 2.0);
    assert!(
        g.log().contains("unknown backend \"missing\""),
        "the log says why"
    );
}

#[test]
fn admin_serves_health_ready_and_metrics() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    assert_eq!(get(g.admin, "/health", &[]).status, 200);
    assert_eq!(get(g.admin, "/ready", &[]).status, 200);
    get(g.addr, "/x", &[]);
    // Metrics are recorded in the logging phase, just after the response is sent.
    let m = wait_for("the request to be counted", Duration::from_secs(5), || {
        let m = g.metrics();
        m.contains("gatehouse_requests_total{").then_some(m)
    });
    assert!(
        m.contains("gatehouse_requests_total{route=\"/{*rest}\",status=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("gatehouse_upstream_latency_seconds_count{backend=\"app\"} 1"),
        "{m}"
    );
    assert!(m.contains("gatehouse_config_generation 1"), "{m}");
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_millis(700)));
    let mut g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    let addr = g.addr;
    let inflight = thread::spawn(move || get(addr, "/slow", &[]));
    wait_for(
        "the upstream to receive the request",
        Duration::from_secs(5),
        || (up.count() == 1).then_some(()),
    );
    g.signal("TERM");
    let r = inflight.join().expect("client thread");
    assert_eq!(
        r.status, 200,
        "the in-flight request completes during the grace period"
    );
    let status = g.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "a graceful stop exits 0: {status}");
}

/// SIGINT exits at once, every time (Pingora's quick shutdown alone could hang, spinning
/// on a failing accept; hence several tries).
#[test]
fn sigint_exits_at_once() {
    let up = MockUpstream::start(Behaviour::Echo);
    // Two worker threads, as in the example config: one thread made it rare.
    let cfg = simple_config(&[up.addr], "", "")
        .replace("  grace_period: 1s\n", "  grace_period: 1s\n  threads: 2\n");
    for _ in 0..8 {
        let mut g = Gatehouse::start(&cfg);
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
        g.signal("INT");
        let status = g.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "{status}");
        assert!(!g.log().contains("Accept() failed"), "{}", g.log());
    }
}

#[test]
fn raising_retries_on_reload_takes_effect() {
    // Two dead hosts and a live one: whatever the round-robin order, some request meets both
    // dead hosts before the live one, so it needs 2 retries (3 attempts) to succeed.
    let live = MockUpstream::start(Behaviour::Echo);
    let dead = [dead_addr(), dead_addr()];
    let hosts = [dead[0].addr, dead[1].addr, live.addr];
    let g = Gatehouse::start(&simple_config(&hosts, "    retries: 1", ""));
    assert!(g.reload(&simple_config(&hosts, "    retries: 2", "")));
    for i in 0..6 {
        let r = get(g.addr, "/x", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(live.count(), 6);
}

/// An upstream that answers the first request of each connection (keep-alive) and closes
/// the connection when the next request arrives on it, without answering: what a pooled
/// connection looks like when the upstream's own keep-alive timer closed it just as gatehouse
/// reused it.
fn closes_kept_alive_connections() -> (SocketAddr, Arc<AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let counter = counter.clone();
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for n in 0.. {
                    // Read one request head (GET, no body).
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    if n > 0 {
                        return; // closes without an answer
                    }
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn a_reused_connection_closed_by_the_upstream_is_retried_on_a_fresh_one() {
    let (up, seen) = closes_kept_alive_connections();
    let g = Gatehouse::start(&simple_config(&[up], "    retries: 0", ""));
    for i in 0..4 {
        let r = get(g.addr, "/x", &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    // Requests 2..4 each met a pooled connection the upstream then closed, and went again
    // once on a fresh connection.
    assert_eq!(seen.load(Ordering::SeqCst), 7);
    // A POST is not idempotent: it is never sent twice, the stale connection is a 502.
    let r = request(g.addr, "POST", "/x", &[], b"data");
    assert_eq!(r.status, 502, "{}", r.text());
}

/// The soft and hard open-file limits of a process (`unlimited` = u64::MAX).
fn open_file_limits(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let n = |s: &str| s.parse().unwrap_or(u64::MAX);
    let f: Vec<&str> = line.split_whitespace().collect();
    (n(f[3]), n(f[4]))
}

#[test]
fn soft_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let dead = dead_addr();
    let (_, hard) = open_file_limits("self");
    let expect = if hard == u64::MAX {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .expect("nr_open")
            .trim()
            .parse()
            .expect("a number")
    } else {
        hard
    };
    let g = Gatehouse::start_with_open_files(&simple_config(&[dead.addr], "", ""), 256);
    let pid = g.child.id().to_string();
    assert_eq!(open_file_limits(&pid).0, expect, "{}", g.log());
    assert!(
        g.log().contains(&format!("open-file limit {expect} ")),
        "{}",
        g.log()
    );
}

#[test]
fn max_open_files_sets_the_soft_limit_and_a_low_one_is_warned_about() {
    let dead = dead_addr();
    let yaml = simple_config(&[dead.addr], "", "").replacen(
        "server:\n",
        "server:\n  max_open_files: 300\n",
        1,
    );
    let g = Gatehouse::start_with_open_files(&yaml, 256);
    let pid = g.child.id().to_string();
    assert_eq!(open_file_limits(&pid).0, 300, "{}", g.log());
    let log = g.log();
    let line = log
        .lines()
        .find(|l| l.contains("open-file limit 300 "))
        .unwrap_or_else(|| panic!("no open-file line in:\n{log}"));
    assert!(line.contains("WARN") && line.contains("is low"), "{line}");
}
