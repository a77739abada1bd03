//! WebSocket tunnels through the real binary: the head the upstream receives, a tunnel
//! reported like any request (access log, metrics, the backend's `max_concurrent` slot held
//! for the tunnel's life), an answer other than `101` relayed, connect failures retried on
//! another host, the breaker's outcome, and an HTTPS upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::tls::{ws_echo_upstream, Issued, Pki, WS_KEY};
use common::{dead_addr, simple_config, wait_for, Behaviour, Conn, Gatehouse, MockUpstream};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use tungstenite::Message;

/// A raw upgrade request for `path`, with `extra` header lines (each ending in CRLF).
fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n{extra}\r\n"
    )
}

/// Opens a WebSocket through gatehouse: the socket, or the status of the refusal.
fn ws(addr: SocketAddr, path: &str) -> Result<tungstenite::WebSocket<TcpStream>, (u16, String)> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{addr}{path}");
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            // the 101 is decorated like any answer: the request's ID comes back
            assert!(
                resp.headers()
                    .get("x-request-id")
                    .is_some_and(|v| v.len() == 32),
                "{:?}",
                resp.headers()
            );
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            let body = r.body().as_deref().map(String::from_utf8_lossy);
            Err((r.status().as_u16(), body.unwrap_or_default().into_owned()))
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

/// The echo upstream greets with `hello`; one message goes there and back.
fn echo_once(ws: &mut tungstenite::WebSocket<TcpStream>, msg: &str) {
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::text(msg)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(msg));
}

fn close(mut ws: tungstenite::WebSocket<TcpStream>) {
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
}

/// The head sent upstream is any request's (rewritten path, Host policy, X-Forwarded-*)
/// with the hop-by-hop fields removed and the upgrade kept. An upstream that does not
/// switch protocols gets its answer relayed, and the client connection goes on.
#[test]
fn the_upstream_gets_the_rewritten_head_and_a_refusal_is_relayed() {
    let up = MockUpstream::start(Behaviour::Echo);
    let cfg = simple_config(
        &[up.addr],
        "    host_header: backend.internal",
        "  - path: /chat/{room}\n    backend: app\n    rewrite: /rooms/{room}",
    );
    let g = Gatehouse::start(&cfg);
    let mut c = Conn::open(g.addr).unwrap();
    let extra = "Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.9.9.9\r\nX-Kept: 2\r\n";
    c.send_raw(upgrade("/chat/7?x=1", extra).as_bytes())
        .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("GET /rooms/7?x=1\n"), "{}", r.text());
    let seen = up.last().unwrap();
    // the relayed answer has the ID the upstream was sent
    assert_eq!(r.header("x-request-id"), seen.header("x-request-id"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(seen.target, "/rooms/7?x=1");
    assert_eq!(seen.header("host"), Some("backend.internal"));
    assert_eq!(seen.header("connection"), Some("Upgrade"));
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(seen.header("sec-websocket-key"), Some(WS_KEY));
    assert_eq!(seen.header("x-forwarded-for"), Some("10.9.9.9, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-kept"), Some("2"));
    for gone in ["x-hop", "keep-alive", "te"] {
        assert_eq!(seen.header(gone), None, "{gone} was sent: {seen:?}");
    }
    // The relayed answer kept the connection open: the next request goes on it.
    let r = c.get("/chat/8").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 2);
    // A Connection that names a field gatehouse sets is refused, not obeyed.
    let r = common::request(
        g.addr,
        "GET",
        "/chat/9",
        &[
            ("upgrade", "websocket"),
            ("connection", "upgrade, x-forwarded-for"),
        ],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(up.count(), 2);
}

/// A tunnel holds its `max_concurrent` slot until it closes, and is then counted and logged
/// like any request, its upstream latency observed.
#[test]
fn a_tunnel_is_reported_and_holds_its_slot_until_it_closes() {
    let upstream = ws_echo_upstream();
    let g = Gatehouse::start(&simple_config(&[upstream], "    max_concurrent: 1", ""));
    let mut first = ws(g.addr, "/ws").expect("the first tunnel");
    echo_once(&mut first, "one");
    let (status, body) = ws(g.addr, "/ws").expect_err("refused while the first is open");
    assert_eq!(status, 503);
    assert!(body.contains("backend_max_concurrent"), "{body}");
    close(first);
    let mut second = wait_for("the slot to be free", Duration::from_secs(10), || {
        ws(g.addr, "/ws").ok()
    });
    echo_once(&mut second, "two");
    close(second);
    let route = "route=\"/{*rest}\"";
    wait_for("two tunnels counted", Duration::from_secs(10), || {
        let n = g.metric(&format!(
            "gatehouse_requests_total{{{route},status=\"101\"}}"
        ));
        (n == 2.0).then_some(())
    });
    let latency = g.metric("gatehouse_upstream_latency_seconds_count{backend=\"app\"}");
    assert_eq!(latency, 2.0);
    let line = "\"GET /ws\" 101 ";
    let log = g.wait_log_lines(line, 2);
    let logged: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
    assert_eq!(logged.len(), 2, "{log}");
    assert!(
        logged[0].contains(&format!("upstream={upstream}")),
        "{}",
        logged[0]
    );
}

/// A connect failure counts against its host and the upgrade goes to another; with no
/// host left it is a 502.
#[test]
fn a_failed_connect_is_retried_on_another_host() {
    let upstream = ws_echo_upstream();
    let dead = dead_addr();
    let g = Gatehouse::start(&simple_config(&[dead.addr, upstream], "    retries: 1", ""));
    for i in 0..4 {
        let mut t = ws(g.addr, "/ws").unwrap_or_else(|e| panic!("tunnel {i}: {e:?}"));
        echo_once(&mut t, &format!("round {i}"));
        close(t);
    }
    let only_dead = Gatehouse::start(&simple_config(&[dead.addr], "    retries: 0", ""));
    let (status, body) = ws(only_dead.addr, "/ws").expect_err("no live host");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("bad_gateway"), "{body}");
}

/// A 5xx answer to an upgrade is a failure for the breaker, as for any request.
#[test]
fn a_5xx_answer_to_an_upgrade_counts_for_the_breaker() {
    let up = MockUpstream::start(Behaviour::Status(500));
    let breaker = "    circuit_breaker: { interval: 60s, timeout: 1h, max_errors: 0 }";
    let g = Gatehouse::start(&simple_config(&[up.addr], breaker, ""));
    let (status, body) = ws(g.addr, "/ws").unwrap_err();
    assert_eq!((status, body.as_str()), (500, "status 500\n"));
    let (status, body) = ws(g.addr, "/ws").unwrap_err();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("circuit_open"), "{body}");
    assert_eq!(up.count(), 1);
}

/// An HTTPS WebSocket upstream with the certificate `leaf`: greets with `hello`, then echoes.
fn tls_ws_upstream(leaf: &Issued) -> SocketAddr {
    use pingora::tls::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(dir.path(), "upstream");
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&cert).unwrap();
    b.set_private_key_file(&key, SslFiletype::PEM).unwrap();
    let acceptor = std::sync::Arc::new(b.build());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let Ok(tls) = acceptor.accept(s) else { return };
                let Ok(mut ws) = tungstenite::accept(tls) else {
                    return;
                };
                if ws.send(Message::text("hello")).is_err() {
                    return;
                }
                while let Ok(m) = ws.read() {
                    if m.is_close() || (m.is_text() && ws.send(m).is_err()) {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A backend with `tls` is tunnelled over TLS, verified against its CA.
#[test]
fn a_tunnel_to_an_https_upstream() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let upstream = tls_ws_upstream(&pki.issue(&["upstream.test"]));
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let tls = format!("    tls: {{ sni: upstream.test, ca: {} }}", ca.display());
    let g = Gatehouse::start(&simple_config(&[upstream], &tls, ""));
    let mut t = ws(g.addr, "/ws").expect("a tunnel over TLS");
    echo_once(&mut t, "secure");
    close(t);
    let wrong = Pki::new().write_ca(dir.path(), "wrong.pem");
    let tls = format!(
        "    retries: 0\n    tls: {{ sni: upstream.test, ca: {} }}",
        wrong.display()
    );
    let g = Gatehouse::start(&simple_config(&[upstream], &tls, ""));
    let (status, body) = ws(g.addr, "/ws").expect_err("an unverified upstream");
    assert_eq!(status, 502, "{body}");
}

/// An upstream that switches protocols and then only reads: it counts the tunnel's bytes
/// and never answers them.
fn silent_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    common::tls::WS_ACCEPT
                );
                let mut w = s;
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (addr, seen)
}

/// `tunnel_idle` counts bytes either way: a client that keeps talking to a silent upstream
/// keeps its tunnel; once both are quiet for that long, gatehouse closes it.
#[test]
fn a_tunnel_is_idle_only_when_neither_side_sends() {
    use std::io::Read;
    let (upstream, seen) = silent_upstream();
    let idle = Duration::from_secs(1);
    let g = Gatehouse::start(&simple_config(
        &[upstream],
        "    timeouts: { tunnel_idle: 1s }",
        "",
    ));
    let mut c = Conn::open(g.addr).unwrap();
    c.send_raw(upgrade("/ws", "").as_bytes()).unwrap();
    assert_eq!(c.read_response().unwrap().status, 101);
    // Talking for more than twice the idle time, a byte every fifth of it.
    let mut quiet = std::time::Instant::now();
    for _ in 0..12 {
        c.send_raw(b"x").unwrap();
        quiet = std::time::Instant::now();
        std::thread::sleep(idle / 5);
    }
    wait_for("the bytes upstream", Duration::from_secs(5), || {
        (seen.load(std::sync::atomic::Ordering::SeqCst) == 12).then_some(())
    });
    let mut b = [0u8; 1];
    assert_eq!(
        c.reader.read(&mut b).unwrap_or(0),
        0,
        "closed, nothing sent"
    );
    let after = quiet.elapsed();
    assert!(
        after >= idle / 2 && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
}

/// A client that goes away while the upstream has not answered its upgrade ends the request
/// then, not when the upstream answers: its `max_concurrent` slot is free for the next one.
#[test]
fn a_client_gone_before_the_answer_frees_its_slot() {
    let up = MockUpstream::start(Behaviour::Slow(Duration::from_secs(30)));
    let g = Gatehouse::start(&simple_config(&[up.addr], "    max_concurrent: 1", ""));
    let mut first = Conn::open(g.addr).unwrap();
    first.send_raw(upgrade("/ws", "").as_bytes()).unwrap();
    wait_for("the first upgrade upstream", Duration::from_secs(5), || {
        (up.count() == 1).then_some(())
    });
    drop(first);
    wait_for("the next upgrade upstream", Duration::from_secs(5), || {
        let mut next = Conn::open(g.addr).unwrap();
        next.send_raw(upgrade("/ws", "").as_bytes()).unwrap();
        next.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match next.read_response() {
            Ok(r) => {
                assert_eq!(r.status, 503, "{}", r.text());
                None
            }
            // No answer yet: this one is waiting on the upstream.
            Err(_) => (up.count() == 2).then_some(()),
        }
    });
}
