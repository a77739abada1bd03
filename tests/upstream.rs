//! Upstream resilience through the real binary: circuit breaker, active and passive health,
//! DNS (A) and SRV discovery following a test DNS server, and a DNS outage keeping the last
//! good hosts. Everything runs on loopback; every wait is a poll with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{DnsMode as Mode, *};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(10);

/// Requests the mock served, health checks left out.
fn traffic(m: &MockUpstream) -> usize {
    m.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.target != "/health")
        .count()
}

/// Polls until `n` requests in a row answer 200.
fn wait_for_clean_run(g: &Gatehouse, n: usize, what: &str) {
    wait_for(what, LONG, || {
        (0..n)
            .all(|_| get(g.addr, "/x", &[]).status == 200)
            .then_some(())
    });
}

#[test]
fn breaker_opens_fails_fast_probes_and_closes() {
    let up = MockUpstream::start(Behaviour::Status(500));
    let cfg = simple_config(
        &[up.addr],
        "    circuit_breaker: { interval: 60s, timeout: 500ms, max_errors: 2 }",
        "",
    );
    let g = Gatehouse::start(&cfg);
    let state = r#"gatehouse_breaker_state{backend="app"}"#;
    // Published from the start (an absent series would also read as 0 below).
    assert!(g.metrics().contains(state), "{}", g.metrics());
    assert_eq!(g.metric(state), 0.0);

    // max_errors + 1 consecutive 5xx open the breaker; the 5xx themselves pass through.
    for _ in 0..3 {
        assert_eq!(get(g.addr, "/x", &[]).status, 500);
    }
    assert_eq!(up.count(), 3);
    assert_eq!(g.metric(state), 2.0);

    // Open: 503 circuit_open with Retry-After, and the upstream is not touched.
    let mut conn = Conn::open(g.addr).unwrap();
    for _ in 0..3 {
        let r = conn.get("/x").unwrap();
        assert_eq!(r.status, 503);
        assert!(r.text().contains("circuit_open"), "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1);
    }
    assert_eq!(up.count(), 3, "an open breaker does not reach the upstream");
    // Metrics are recorded in the logging phase, just after the response is written.
    wait_for("the rejections to be counted", LONG, || {
        (g.metric(r#"gatehouse_rejections_total{reason="circuit_open"}"#) >= 3.0).then_some(())
    });

    // After `timeout` one probe goes through; it fails (500), so the breaker opens again.
    let probe = wait_for("the first probe", LONG, || {
        let r = get(g.addr, "/x", &[]);
        (r.status != 503).then_some(r)
    });
    assert_eq!(probe.status, 500);
    assert_eq!(up.count(), 4, "exactly one probe reached the upstream");
    assert_eq!(get(g.addr, "/x", &[]).status, 503);

    // The upstream recovers: the next probe succeeds and closes the breaker.
    up.set(Behaviour::Echo);
    wait_for("a successful probe", LONG, || {
        (get(g.addr, "/x", &[]).status == 200).then_some(())
    });
    assert_eq!(g.metric(state), 0.0);
    for _ in 0..5 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert!(
        g.log().contains("went from open to half-open"),
        "{}",
        g.log()
    );
}

#[test]
fn a_probe_whose_client_went_away_does_not_wedge_the_breaker() {
    let up = MockUpstream::start(Behaviour::Status(500));
    let cfg = simple_config(
        &[up.addr],
        "    timeouts: { read: 30s }\n    circuit_breaker: { interval: 60s, timeout: 300ms, max_errors: 0 }",
        "    timeout: 30s",
    );
    let g = Gatehouse::start(&cfg);
    assert_eq!(get(g.addr, "/x", &[]).status, 500);
    assert_eq!(get(g.addr, "/x", &[]).status, 503);

    // The probe hangs on a slow upstream, and its client goes away.
    up.set(Behaviour::Slow(Duration::from_secs(20)));
    let probe = wait_for("the probe to be admitted", LONG, || {
        let mut c = Conn::open(g.addr).unwrap();
        c.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        c.send_raw(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        // While open the answer (503) comes at once; the probe hangs on the upstream.
        match c.read_response() {
            Ok(r) => {
                assert_eq!(r.status, 503);
                None
            }
            Err(_) => Some(c),
        }
    });
    wait_for("the probe to reach the upstream", LONG, || {
        (up.count() == 2).then_some(())
    });
    assert_eq!(get(g.addr, "/x", &[]).status, 503, "one probe at a time");
    up.set(Behaviour::Echo);
    probe.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(probe);

    // The slot is freed: the next request probes (and closes the breaker) long before the
    // abandoned probe's 20 s upstream answer.
    wait_for("a new probe", LONG, || {
        (get(g.addr, "/x", &[]).status == 200).then_some(())
    });
}

#[test]
fn connect_failures_count_for_the_breaker() {
    let dead = {
        let m = MockUpstream::start(Behaviour::Echo);
        m.addr
    };
    let cfg = simple_config(
        &[dead],
        "    retries: 0\n    circuit_breaker: { interval: 60s, timeout: 1h, max_errors: 1 }",
        "",
    );
    let g = Gatehouse::start(&cfg);
    assert_eq!(get(g.addr, "/x", &[]).status, 502);
    assert_eq!(get(g.addr, "/x", &[]).status, 502);
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 503);
    assert!(r.text().contains("circuit_open"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 3000, "about an hour left: {retry}");
}

#[test]
fn upstream_timeouts_count_for_the_breaker() {
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_secs(2)));
    let cfg = simple_config(
        &[up.addr],
        "    timeouts: { read: 200ms }\n    circuit_breaker: { interval: 60s, timeout: 1h, max_errors: 0 }",
        "",
    );
    let g = Gatehouse::start(&cfg);
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("upstream_timeout"), "{}", r.text());
    let r = get(g.addr, "/x", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("circuit_open"), "{}", r.text());
    assert_eq!(
        up.count(),
        1,
        "the open breaker kept the second request away"
    );
}

#[test]
fn breaker_state_survives_a_reload_that_keeps_the_backend() {
    let up = MockUpstream::start(Behaviour::Status(502));
    let backend = "    circuit_breaker: { interval: 60s, timeout: 1h, max_errors: 0 }";
    let cfg = simple_config(&[up.addr], backend, "");
    let g = Gatehouse::start(&cfg);
    assert_eq!(get(g.addr, "/x", &[]).status, 502);
    assert_eq!(get(g.addr, "/x", &[]).status, 503);
    // Only the endpoint changes: the backend (and its open breaker) is kept.
    assert!(g.reload(&simple_config(&[up.addr], backend, "    timeout: 3s")));
    assert_eq!(get(g.addr, "/x", &[]).status, 503);
    assert_eq!(up.count(), 1);
}

#[test]
fn unhealthy_host_is_skipped_and_comes_back() {
    let a = MockUpstream::start(Behaviour::Echo);
    let b = MockUpstream::start(Behaviour::Echo);
    let cfg = simple_config(
        &[a.addr, b.addr],
        "    retries: 0\n    health_check: { path: /health, interval: 100ms, timeout: 500ms, unhealthy_after: 2, healthy_after: 2 }",
        "",
    );
    let g = Gatehouse::start(&cfg);
    wait_for("both hosts to get traffic", LONG, || {
        get(g.addr, "/x", &[]);
        (traffic(&a) > 0 && traffic(&b) > 0).then_some(())
    });

    // b fails its health checks (it still accepts connections): it gets no more traffic.
    b.set(Behaviour::Status(503));
    wait_for("b's checks to fail", LONG, || {
        (b.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == "/health")
            .count()
            > 0)
        .then_some(())
    });
    wait_for_clean_run(&g, 10, "b to be skipped");
    let seen = traffic(&b);
    for _ in 0..10 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert_eq!(traffic(&b), seen, "an unhealthy host gets no traffic");

    // b recovers: after `healthy_after` passed checks it is balanced onto again.
    b.set(Behaviour::Echo);
    wait_for("b to come back", LONG, || {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
        (traffic(&b) > seen).then_some(())
    });
}

#[test]
fn dead_host_is_skipped_and_returns_on_the_same_address() {
    let a = MockUpstream::start(Behaviour::Echo);
    let b = MockUpstream::start(Behaviour::Echo);
    let b_addr = b.addr;
    let cfg = simple_config(
        &[a.addr, b.addr],
        "    retries: 0\n    health_check: { path: /health, interval: 100ms, timeout: 300ms, unhealthy_after: 1, healthy_after: 1 }",
        "",
    );
    let g = Gatehouse::start(&cfg);
    drop(b);
    wait_for_clean_run(&g, 10, "the dead host to be skipped");
    // Taken out by its failed checks (passive ejection alone would also skip it, and bring
    // it back after 5 s: the log lines are the active checks' own).
    let down = format!("host {b_addr} is unhealthy");
    wait_for("the failed check to be logged", LONG, || {
        g.log().contains(&down).then_some(())
    });
    let b = MockUpstream::start_on(b_addr, Behaviour::Echo);
    wait_for("the host to come back", LONG, || {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
        (traffic(&b) > 0).then_some(())
    });
    let up = format!("host {b_addr} is healthy again");
    wait_for("the passed check to be logged", LONG, || {
        g.log().contains(&up).then_some(())
    });
}

#[test]
fn repeated_connect_failures_eject_a_host_without_health_checks() {
    let a = MockUpstream::start(Behaviour::Echo);
    let b = MockUpstream::start(Behaviour::Echo);
    let cfg = simple_config(&[a.addr, b.addr], "    retries: 0", "");
    let g = Gatehouse::start(&cfg);
    drop(b);
    let mut failures = 0;
    wait_for("the dead host to be ejected", LONG, || {
        let mut run = 0;
        while run < 10 {
            match get(g.addr, "/x", &[]).status {
                200 => run += 1,
                502 => {
                    failures += 1;
                    return None;
                }
                s => panic!("unexpected status {s}"),
            }
        }
        Some(())
    });
    assert!(
        failures <= 3,
        "ejected after 3 connect failures, saw {failures}"
    );
}

#[test]
fn all_hosts_unhealthy_is_503_no_healthy_host() {
    let a = MockUpstream::start(Behaviour::Status(503));
    let cfg = simple_config(
        &[a.addr],
        "    health_check: { path: /health, interval: 100ms, timeout: 300ms, unhealthy_after: 1, healthy_after: 1 }",
        "",
    );
    let g = Gatehouse::start(&cfg);
    let mut conn = Conn::open(g.addr).unwrap();
    let r = wait_for("the host to be marked unhealthy", LONG, || {
        let r = conn.get("/x").unwrap();
        r.text().contains("no_healthy_host").then_some(r)
    });
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    let again = conn.get("/x").unwrap();
    assert_eq!(again.status, 503, "the connection stays usable");
}

fn dns_config(dns: SocketAddr, discovery: &str) -> String {
    format!(
        r#"{SERVER}dns: {{ nameservers: ["{dns}"], timeout: 200ms }}
backends:
  app:
    discovery: {{ {discovery} }}
    retries: 0
endpoints:
  - path: /{{*rest}}
    backend: app
"#
    )
}

/// Two mock upstreams on the same port of two loopback addresses.
fn twin_mocks() -> (MockUpstream, MockUpstream) {
    wait_for("a port free on 127.0.0.2 and 127.0.0.3", LONG, || {
        let one = MockUpstream::start_on("127.0.0.2:0".parse().unwrap(), Behaviour::Echo);
        let other: SocketAddr = format!("127.0.0.3:{}", one.addr.port()).parse().unwrap();
        std::net::TcpListener::bind(other).ok().map(drop)?;
        Some((one, MockUpstream::start_on(other, Behaviour::Echo)))
    })
}

#[test]
fn dns_discovery_follows_answers_and_survives_an_outage() {
    let (one, two) = twin_mocks();
    let dns = FakeDns::start();
    dns.set_a("svc.test.", &[Ipv4Addr::new(127, 0, 0, 2)]);
    let discovery = format!(
        "dns: {{ name: svc.test, port: {}, refresh: 200ms }}",
        one.addr.port()
    );
    let g = Gatehouse::start(&dns_config(dns.addr, &discovery));
    wait_for("the first lookup to route", LONG, || {
        (get(g.addr, "/x", &[]).status == 200).then_some(())
    });
    assert!(traffic(&one) > 0);
    assert_eq!(traffic(&two), 0);

    // The answer changes: routing follows.
    dns.set_a("svc.test.", &[Ipv4Addr::new(127, 0, 0, 3)]);
    wait_for("routing to follow the new A record", LONG, || {
        (get(g.addr, "/x", &[]).status == 200 && traffic(&two) > 0).then_some(())
    });
    let before = traffic(&one);
    for _ in 0..5 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert_eq!(traffic(&one), before, "the old host left the set");

    // SERVFAIL for several refreshes: the last good hosts stay.
    dns.set_mode(Mode::ServFail);
    dns.wait_failed_queries(3);
    let seen = traffic(&two);
    for _ in 0..5 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert_eq!(traffic(&two), seen + 5);
    wait_for("the failed refresh to be logged", LONG, || {
        g.log()
            .contains("discovery failed, keeping 1 known host")
            .then_some(())
    });
}

#[test]
fn srv_discovery_uses_lowest_priority_and_survives_a_dead_server() {
    let a = MockUpstream::start(Behaviour::Echo);
    let b = MockUpstream::start(Behaviour::Echo);
    let fallback = MockUpstream::start(Behaviour::Echo);
    let dns = FakeDns::start();
    dns.set_a("a.test.", &[Ipv4Addr::LOCALHOST]);
    dns.set_a("b.test.", &[Ipv4Addr::LOCALHOST]);
    // Weight 0 is the lowest share, never "no hosts"; priority 20 is only a fallback.
    dns.set_srv(
        "_http._tcp.svc.test.",
        &[
            (10, 0, a.addr.port(), "a.test."),
            (20, 5, fallback.addr.port(), "b.test."),
        ],
    );
    let g = Gatehouse::start(&dns_config(
        dns.addr,
        "dns_srv: { name: _http._tcp.svc.test, refresh: 200ms }",
    ));
    wait_for_clean_run(&g, 5, "the SRV hosts to route");
    assert!(traffic(&a) >= 5);
    assert_eq!(traffic(&fallback), 0, "a higher priority is not used");

    dns.set_srv("_http._tcp.svc.test.", &[(10, 1, b.addr.port(), "b.test.")]);
    wait_for("routing to follow the new SRV record", LONG, || {
        (get(g.addr, "/x", &[]).status == 200 && traffic(&b) > 0).then_some(())
    });

    // The DNS server stops answering: lookups time out, the last good hosts stay.
    dns.set_mode(Mode::Silent);
    dns.wait_failed_queries(3);
    let seen = traffic(&b);
    for _ in 0..5 {
        assert_eq!(get(g.addr, "/x", &[]).status, 200);
    }
    assert_eq!(traffic(&b), seen + 5);
}

#[test]
fn consistent_hash_keeps_a_client_on_one_host() {
    let ups: Vec<MockUpstream> = (0..3)
        .map(|_| MockUpstream::start(Behaviour::Echo))
        .collect();
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let cfg = simple_config(
        &addrs,
        "    balance: consistent_hash\n    hash_key: X-User",
        "",
    );
    let g = Gatehouse::start(&cfg);
    let mut homes = std::collections::BTreeSet::new();
    for user in 0..12 {
        let u = user.to_string();
        let before: Vec<usize> = ups.iter().map(|m| m.count()).collect();
        for _ in 0..4 {
            assert_eq!(get(g.addr, "/x", &[("X-User", &u)]).status, 200);
        }
        let hit: Vec<usize> = ups
            .iter()
            .zip(&before)
            .filter(|(m, b)| m.count() > **b)
            .map(|(m, b)| m.count() - b)
            .collect();
        assert_eq!(hit, vec![4], "user {u}: all four requests on one host");
        homes.insert(ups.iter().zip(&before).position(|(m, b)| m.count() > *b));
    }
    assert!(homes.len() >= 2, "users spread over hosts: {homes:?}");
}
