//! HTTP/1.1 conformance at the edge, as raw bytes through the real binary: `Host` is
//! required, absolute-form targets go upstream in origin-form, 1xx interim responses carry
//! no RateLimit fields, and pipelined requests are answered in order on one connection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{read_response, simple_config, Behaviour, Gatehouse, MockUpstream};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn an_http11_request_without_host_is_a_400() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    let (mut s, mut r) = connect(g.addr);
    s.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
    assert!(resp.text().contains("Host"), "{}", resp.text());
    assert_eq!(up.count(), 0, "not forwarded");
    // HTTP/1.0 has no such rule.
    let (mut s, mut r) = connect(g.addr);
    s.write_all(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    assert_eq!(up.count(), 1);
}

#[test]
fn an_absolute_form_target_goes_upstream_in_origin_form() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    let (mut s, mut r) = connect(g.addr);
    s.write_all(b"GET http://api.example/p/x?q=1 HTTP/1.1\r\nHost: api.example\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last().unwrap();
    assert_eq!(seen.target, "/p/x?q=1");
    assert_eq!(seen.header("host"), Some("api.example"));
    // An authority that differs from Host is refused (Pingora's rule, stricter than RFC 9112).
    let (mut s, mut r) = connect(g.addr);
    s.write_all(b"GET http://other.example/p HTTP/1.1\r\nHost: api.example\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(up.count(), 1);
}

/// An upstream that answers `100 Continue`, reads the body, then answers 200.
fn continue_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            });
        }
    });
    addr
}

#[test]
fn interim_responses_carry_no_ratelimit_fields() {
    let up = continue_upstream();
    let cfg = simple_config(&[up], "", "").replace(
        "    backend: app\n",
        "    backend: app\n    rate_limit: { client_max_rate: 100 }\n",
    );
    let g = Gatehouse::start(&cfg);
    let (mut s, mut r) = connect(g.addr);
    s.write_all(
        b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    // The interim response, as raw lines.
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push(line.to_ascii_lowercase());
    }
    assert!(head[0].starts_with("http/1.1 100"), "{head:?}");
    assert!(
        !head.iter().any(|l| l.starts_with("ratelimit")),
        "RateLimit fields on a 1xx: {head:?}"
    );
    s.write_all(b"hello").unwrap();
    let fin = read_response(&mut r, false).unwrap();
    assert_eq!(fin.status, 200);
    assert!(
        fin.header("ratelimit").is_some(),
        "the final response has them"
    );
    let ratelimit = fin.header("ratelimit").unwrap();
    assert!(
        ratelimit.starts_with("\"endpoint-client\";r=99;"),
        "{ratelimit}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&simple_config(&[up.addr], "", ""));
    let (mut s, mut r) = connect(g.addr);
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: t\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\nPOST /third HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    )
    .unwrap();
    for (path, body) in [("/first", ""), ("/second", ""), ("/third", "abc")] {
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200);
        let text = resp.text();
        assert!(text.contains(path), "in order: wanted {path}, got {text}");
        assert!(text.ends_with(body), "{text}");
    }
    // The connection is still usable.
    s.write_all(b"GET /fourth HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert!(resp.text().contains("/fourth"));
    assert_eq!(up.count(), 4);
}
