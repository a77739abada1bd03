//! Hostile HTTP through the real binary: ambiguous framing, bad header bytes, oversize
//! headers, odd request targets, slow headers. Each gets a 4xx or a closed connection, and the
//! mock upstream receives exactly the requests it should (no smuggled or desynchronised one).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::*;
use std::time::{Duration, Instant};

fn config(up: std::net::SocketAddr, server_extra: &str) -> String {
    format!(
        r#"{SERVER}{server_extra}
backends:
  app:
    discovery: {{ static: ["{up}"] }}
endpoints:
  - {{ path: "/public/{{*rest}}", backend: app }}
"#
    )
}

/// Sends raw bytes on a fresh connection; returns the first response (if any) and whether the
/// connection was closed afterwards.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (Option<Response>, bool) {
    let mut c = Conn::open(addr).expect("connect");
    c.send_raw(bytes).expect("send");
    let resp = c.read_response().ok();
    let closed = c.is_closed(Duration::from_millis(300));
    (resp, closed)
}

/// The request was refused: a 4xx, or the connection closed without a response.
fn assert_refused(what: &str, resp: &Option<Response>, closed: bool) {
    match resp {
        Some(r) => {
            assert!(
                (400..500).contains(&r.status),
                "{what}: got {} {}",
                r.status,
                r.text()
            );
            assert!(
                closed,
                "{what}: connection must be closed after an ambiguous request"
            );
        }
        None => assert!(closed, "{what}: no response and not closed"),
    }
}

fn no_smuggled(up: &MockUpstream) {
    let reqs = up.requests.lock().unwrap();
    assert!(
        reqs.iter().all(|r| !r.target.contains("smuggled")),
        "a smuggled request reached the upstream: {:?}",
        reqs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    let (resp, closed) = raw(
        g.addr,
        b"POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    // Either refused, or (RFC 9112 6.1, what Pingora does) read by Transfer-Encoding alone
    // with the connection closed after the response: the bytes after the empty chunked body
    // are never taken for a second request.
    match &resp {
        Some(r) if r.status == 200 => {
            assert!(closed, "the connection must close after a CL+TE request");
            assert_eq!(up.count(), 1);
            let rec = up.last().unwrap();
            assert_eq!(rec.target, "/public/a");
            assert!(rec.body.is_empty(), "the body is the empty chunked one");
            assert!(
                rec.header("content-length").is_none() || rec.header("transfer-encoding").is_none()
            );
        }
        _ => {
            assert_refused("CL+TE", &resp, closed);
            assert_eq!(up.count(), 0);
        }
    }
    no_smuggled(&up);
}

#[test]
fn conflicting_content_lengths_are_refused() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    let (resp, closed) = raw(
        g.addr,
        b"POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhelloGET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_refused("duplicate Content-Length", &resp, closed);
    assert_eq!(up.count(), 0);
}

#[test]
fn invalid_chunk_size_does_not_desynchronise() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    let (_resp, closed) = raw(
        g.addr,
        b"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(closed, "a broken chunked body ends the connection");
    no_smuggled(&up);
    // The upstream saw at most the one request, never a second one made of body bytes.
    assert!(up.count() <= 1, "upstream saw {} requests", up.count());
}

#[test]
fn bad_bytes_in_header_values_are_refused() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    for (what, bytes) in [
        (
            "NUL",
            &b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-Evil: a\0b\r\n\r\n"[..],
        ),
        (
            "bare CR",
            &b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-Evil: a\rb\r\n\r\n"[..],
        ),
        (
            "space before colon",
            &b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-Evil : a\r\n\r\n"[..],
        ),
    ] {
        let (resp, closed) = raw(g.addr, bytes);
        assert_refused(what, &resp, closed);
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn oversize_headers_are_refused() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    let mut req = b"GET /public/a HTTP/1.1\r\nHost: x\r\n".to_vec();
    let filler = format!("X-Fill: {}\r\n", "a".repeat(8000));
    while req.len() < 1_200_000 {
        req.extend_from_slice(filler.as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let mut c = Conn::open(g.addr).expect("connect");
    // The proxy may stop reading (and close) before all is sent: a write error is fine.
    let _ = c.send_raw(&req);
    let resp = c.read_response().ok();
    if let Some(r) = &resp {
        assert!((400..500).contains(&r.status), "got {}", r.status);
    }
    assert!(c.is_closed(Duration::from_secs(2)));
    assert_eq!(up.count(), 0);
}

#[test]
fn odd_request_targets() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    // Asterisk-form and a path without a leading slash never reach a route.
    for bytes in [
        &b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET public/a HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let (resp, _) = raw(g.addr, bytes);
        if let Some(r) = resp {
            assert!((400..500).contains(&r.status), "got {}", r.status);
        }
    }
    assert_eq!(up.count(), 0);
    // Absolute-form: Pingora refuses it (400); were it accepted, only its path would route.
    let (resp, _) = raw(
        g.addr,
        b"GET http://elsewhere.example/public/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let r = resp.expect("a response");
    if r.status == 200 {
        assert_eq!(up.last().unwrap().target, "/public/abs?q=1");
    } else {
        assert_eq!(r.status, 400);
        assert_eq!(up.count(), 0);
    }
}

#[test]
fn path_tricks_land_on_the_route_their_normalised_path_names() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    for (sent, status, seen) in [
        ("/public/x/%2e%2e/%2e%2e/admin", 404, None),
        ("/public/..%2Fadmin", 200, Some("/public/..%2Fadmin")),
        ("/public/a%2fb", 200, Some("/public/a%2Fb")),
        ("//public//x", 200, Some("/public/x")),
        ("/PUBLIC/x", 404, None),
        ("/public/%2E%2E/public/y", 200, Some("/public/y")),
    ] {
        let r = get(g.addr, sent, &[]);
        assert_eq!(r.status, status, "{sent}");
        if let Some(seen) = seen {
            assert_eq!(up.last().unwrap().target, seen, "{sent}");
        }
    }
}

/// Pipelined requests, a rejected one among them, are each answered in order and forwarded
/// one by one, never glued to another one.
#[test]
fn pipelined_requests_never_desynchronise() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, ""));
    let mut c = Conn::open(g.addr).expect("connect");
    c.send_raw(b"GET /public/one HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /public/two HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let statuses: Vec<u16> = (0..3).map(|_| c.read_response().unwrap().status).collect();
    assert_eq!(statuses, [200, 404, 200]);
    let targets: Vec<String> = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets, ["/public/one", "/public/two"]);
}

#[test]
fn slow_headers_are_cut_off() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, "  header_read_timeout: 400ms"));
    let mut c = Conn::open(g.addr).expect("connect");
    let start = Instant::now();
    c.send_raw(b"GET /public/a HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Keep dribbling a header byte by byte; each write is well within Pingora's own per-read
    // timeout, so only the total header deadline can end this.
    let mut cut = false;
    for _ in 0..100 {
        if c.send_raw(b"X").is_err() {
            cut = true;
            break;
        }
        if c.is_closed(Duration::from_millis(50)) {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the connection is still open after {:?}",
        start.elapsed()
    );
    assert_eq!(up.count(), 0);
    // A client that sends its header at once on a kept-alive connection is unaffected, also
    // for a second request that starts after more than the header timeout.
    let mut c = Conn::open(g.addr).expect("connect");
    assert_eq!(c.get("/public/a").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(600)); // idle longer than the header timeout
    assert_eq!(c.get("/public/b").unwrap().status, 200);
    // A reload changes the limit for the connections accepted after it: with 60 s, the same
    // dribble outlives the old 400 ms by far.
    assert!(g.reload(&config(up.addr, "  header_read_timeout: 60s")));
    let mut c = Conn::open(g.addr).expect("connect");
    c.send_raw(b"GET /public/a HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for _ in 0..20 {
        c.send_raw(b"X").expect("still open");
        assert!(
            !c.is_closed(Duration::from_millis(50)),
            "cut after the reload"
        );
    }
}

/// Encoding tricks aimed at a route guarded by a filter: each is either refused by that
/// filter (it normalises to the guarded route), or lands on the route its normalised path
/// names; the guarded upstream never sees a request.
#[test]
fn path_tricks_cannot_bypass_an_endpoint_filter() {
    let public = MockUpstream::start(Behaviour::Echo);
    let admin = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&format!(
        r#"version: 1
server:
  listen: ["LISTEN"]
  admin: {{ listen: "ADMIN" }}
  pid_file: TMPDIR/gatehouse.pid
  upgrade_sock: TMPDIR/upgrade.sock
backends:
  public: {{ discovery: {{ static: ["{}"] }} }}
  admin: {{ discovery: {{ static: ["{}"] }} }}
endpoints:
  - {{ path: "/public/{{*rest}}", backend: public }}
  - path: "/admin/{{*rest}}"
    backend: admin
    security: {{ ip_filter: {{ mode: allow, cidrs: ["10.0.0.0/8"] }} }}
"#,
        public.addr, admin.addr
    ));
    for trick in [
        "/admin/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/%2e/admin/x",
        "//admin//x",
        "/%61dmin/x",
        "/%61%64%6d%69%6e/x",
        "/public/./../admin/x?q=1",
        "/./admin/x",
        "/x/../../admin/x",
        // the bare prefix belongs to `/admin/{*rest}` (an empty remainder): guarded too
        "/admin",
        "/admin/",
        "/public/../admin",
    ] {
        let r = get(g.addr, trick, &[]);
        assert_eq!(r.status, 403, "{trick}: {}", r.text());
        assert!(r.text().contains("ip_filter"), "{trick}");
    }
    for (trick, status) in [
        ("/admin%2Fx", 404),
        ("/public/..%2Fadmin/x", 200),
        ("/ADMIN/x", 404),
        ("/administrator", 404),
    ] {
        let r = get(g.addr, trick, &[]);
        assert_eq!(r.status, status, "{trick}");
        if status == 200 {
            assert!(
                public.last().unwrap().target.starts_with("/public/"),
                "{trick}"
            );
        }
    }
    assert_eq!(admin.count(), 0, "the guarded upstream was reached");
}
