//! The edge through the real binary: TLS with SNI and hot-swapped certificates, min_version,
//! HTTP/2 over ALPN, the HTTPS redirect, HTTPS upstreams, WebSocket, body limits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::tls::{
    early_101_upstream, h2_request, h2_request_with, ws_echo_upstream, ClientTls, Issued, Pki,
    TlsConn, TlsUpstream, WS_KEY,
};
use common::{Behaviour, Conn, Gatehouse, MockUpstream, SERVER};
use pingora::tls::ssl::SslVersion;

/// Certificates for `default.test` (the default), `a.test` and `*.wild.test`.
struct Certs {
    pki: Pki,
    default: Issued,
    a: Issued,
    wild: Issued,
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let pki = Pki::new();
        let c = Certs {
            default: pki.issue(&["default.test"]),
            a: pki.issue(&["a.test", "alias.test"]),
            wild: pki.issue(&["*.wild.test"]),
            pki,
            dir: tempfile::tempdir().unwrap(),
        };
        c.default.write(c.dir.path(), "default");
        c.a.write(c.dir.path(), "a");
        c.wild.write(c.dir.path(), "wild");
        c
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A `tls:` block (indented for `server:`) with these extra lines.
    fn block(&self, extra: &str) -> String {
        format!(
            r#"  tls:
    listen: ["TLSADDR"]
    certificates:
      - {{ cert: {d}.pem, key: {d}.key }}
      - {{ cert: {a}.pem, key: {a}.key }}
      - {{ cert: {w}.pem, key: {w}.key }}
{extra}"#,
            d = self.path("default"),
            a = self.path("a"),
            w = self.path("wild"),
        )
    }

    fn ca(&self) -> String {
        self.pki.ca_pem()
    }
}

/// `simple_config` with extra `server:` lines.
fn config(upstream: &str, server_extra: &str, backend_extra: &str) -> String {
    format!(
        r#"{SERVER}{server_extra}
backends:
  app:
    discovery: {{ static: ["{upstream}"] }}
{backend_extra}
endpoints:
  - path: /{{*rest}}
    backend: app
"#
    )
}

#[test]
fn sni_picks_the_certificate_and_sighup_swaps_it() {
    let up = MockUpstream::start(Behaviour::Echo);
    let certs = Certs::new();
    let ca = certs.ca();
    let yaml = config(&up.addr.to_string(), &certs.block(""), "");
    let g = Gatehouse::start(&yaml);

    let served = |sni: &str| {
        let c = TlsConn::open(g.tls_addr, &ClientTls::new(sni, &ca))
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        c.peer_names()
    };
    assert_eq!(served("a.test"), vec!["a.test", "alias.test"]);
    assert_eq!(served("alias.test"), vec!["a.test", "alias.test"]);
    assert_eq!(served("x.wild.test"), vec!["*.wild.test"]);
    assert_eq!(served("default.test"), vec!["default.test"]);
    // Unknown names get the default certificate (the client verifies it for that name only).
    let unknown = ClientTls::new("unknown.test", &ca);
    let err = TlsConn::open(g.tls_addr, &unknown)
        .err()
        .expect("hostname mismatch");
    assert!(err.contains("handshake"), "{err}");

    // A request over TLS goes through the same path, marked https for the upstream.
    let mut keep = TlsConn::open(g.tls_addr, &ClientTls::new("a.test", &ca)).unwrap();
    let r = keep.get("/hello").unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("x-forwarded-proto: https"),
        "{}",
        r.text()
    );
    let old_der = keep.peer_der();
    assert_eq!(old_der, certs.a.der());

    // Renew a.test's certificate on disk and reload: new handshakes get it...
    let renewed = certs.pki.issue(&["a.test", "alias.test"]);
    renewed.write(certs.dir.path(), "a");
    assert!(g.reload(&yaml), "{}", g.log());
    let fresh = TlsConn::open(g.tls_addr, &ClientTls::new("a.test", &ca)).unwrap();
    assert_eq!(fresh.peer_der(), renewed.der());
    // ...while the open keep-alive connection keeps working on the old one.
    let r = keep.get("/again").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(keep.peer_der(), old_der);

    // A broken certificate (key of another certificate) is a reload error: the old set stays.
    std::fs::write(certs.dir.path().join("a.key"), &certs.wild.key).unwrap();
    assert!(!g.reload(&yaml));
    let after = TlsConn::open(g.tls_addr, &ClientTls::new("a.test", &ca)).unwrap();
    assert_eq!(after.peer_der(), renewed.der());
    assert!(
        g.log().contains("server.tls.certificates[1].key"),
        "{}",
        g.log()
    );

    // `gatehouse check` names the file.
    let out = std::process::Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&g.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls.certificates[1].key:") && stderr.contains("does not match"),
        "{stderr}"
    );
}

#[test]
fn h2_and_h1_over_tls_share_the_request_path() {
    let up = MockUpstream::start(Behaviour::Echo);
    let certs = Certs::new();
    let ca = certs.ca();
    let server = format!("  max_body_size: 1KB\n{}", certs.block("    http2: true\n"));
    let g = Gatehouse::start(&config(&up.addr.to_string(), &server, ""));
    let tls = ClientTls::new("a.test", &ca);

    let (status, _, body) = h2_request(g.tls_addr, &tls, "GET", "/h2?q=1", b"").unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("GET /h2?q=1\n"), "{text}");
    assert!(text.contains("x-forwarded-proto: https"), "{text}");

    // The body limit applies to h2 too.
    let (status, headers, body) =
        h2_request(g.tls_addr, &tls, "POST", "/big", &[b'x'; 2048]).unwrap();
    assert_eq!(status, 413);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(String::from_utf8_lossy(&body).contains("body_too_large"));
    // A streamed h2 body without a declared length is counted and cut.
    let (status, _, body) =
        h2_request_with(g.tls_addr, &tls, "POST", "/streamed", &[b'x'; 4096], false).unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) =
        h2_request_with(g.tls_addr, &tls, "POST", "/small", &[b'x'; 600], false).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // h1 over TLS when the client offers only http/1.1.
    let h1 = ClientTls {
        alpn: &["http/1.1"],
        ..tls.clone()
    };
    let mut c = TlsConn::open(g.tls_addr, &h1).unwrap();
    assert_eq!(c.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let r = c.get("/h1").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("x-forwarded-proto: https"));
    let r = c.request("POST", "/big", &[], &[b'x'; 2048]).unwrap();
    assert_eq!(r.status, 413);
    // A client that offers only protocols gatehouse does not name (curl --http1.0 offers
    // http/1.0) gets no ALPN answer rather than a refused handshake, and HTTP/1.
    let h10 = ClientTls {
        alpn: &["http/1.0"],
        ..tls.clone()
    };
    let mut c = TlsConn::open(g.tls_addr, &h10).unwrap();
    assert_eq!(c.alpn(), None);
    assert_eq!(c.get("/h10").unwrap().status, 200);
    // Plain HTTP is still http for the upstream.
    let r = common::get(g.addr, "/plain", &[]);
    assert!(
        r.text().contains("x-forwarded-proto: http\n"),
        "{}",
        r.text()
    );
}

/// The TLS handshake, ClientHello included, must finish within `server.header_read_timeout`:
/// a client that opens the connection and stalls is cut off, whatever it has sent.
#[test]
fn a_stalled_tls_handshake_is_cut_off() {
    use std::io::{Read, Write};
    let up = MockUpstream::start(Behaviour::Echo);
    let certs = Certs::new();
    let ca = certs.ca();
    let g = Gatehouse::start(&config(
        &up.addr.to_string(),
        &format!("  header_read_timeout: 1s\n{}", certs.block("")),
        "",
    ));
    // Nothing sent; a record header promising a ClientHello that never comes.
    for sent in [&b""[..], &b"\x16\x03\x01\x01\x00\x01"[..]] {
        let mut s = std::net::TcpStream::connect(g.tls_addr).unwrap();
        s.write_all(sent).unwrap();
        // Well below Pingora's own 60 s bound on a TLS listener's handshake.
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("after {sent:?}: the connection is still open: {other:?}"),
        }
    }
    // A client that handshakes at once is served.
    let mut c = TlsConn::open(g.tls_addr, &ClientTls::new("a.test", &ca)).unwrap();
    assert_eq!(c.get("/x").unwrap().status, 200);
}

#[test]
fn min_version_refuses_older_clients() {
    let up = MockUpstream::start(Behaviour::Echo);
    let certs = Certs::new();
    let ca = certs.ca();
    let g = Gatehouse::start(&config(
        &up.addr.to_string(),
        &certs.block("    min_version: \"1.2\"\n"),
        "",
    ));
    let v = |min, max| ClientTls {
        min: Some(min),
        max: Some(max),
        ..ClientTls::new("a.test", &ca)
    };
    let err = TlsConn::open(g.tls_addr, &v(SslVersion::TLS1_1, SslVersion::TLS1_1))
        .err()
        .expect("TLS 1.1 refused");
    assert!(err.contains("handshake"), "{err}");
    let c = TlsConn::open(g.tls_addr, &v(SslVersion::TLS1_2, SslVersion::TLS1_2)).unwrap();
    assert_eq!(c.ssl().version_str(), "TLSv1.2");
    drop(g);

    let g = Gatehouse::start(&config(
        &up.addr.to_string(),
        &certs.block("    min_version: \"1.3\"\n"),
        "",
    ));
    assert!(TlsConn::open(g.tls_addr, &v(SslVersion::TLS1_2, SslVersion::TLS1_2)).is_err());
    let c = TlsConn::open(g.tls_addr, &v(SslVersion::TLS1_3, SslVersion::TLS1_3)).unwrap();
    assert_eq!(c.ssl().version_str(), "TLSv1.3");
}

#[test]
fn plain_requests_are_redirected_to_https() {
    let up = MockUpstream::start(Behaviour::Echo);
    let certs = Certs::new();
    let ca = certs.ca();
    let g = Gatehouse::start(&config(
        &up.addr.to_string(),
        &certs.block("    redirect_http: true\n"),
        "",
    ));
    let mut c = Conn::open(g.addr).unwrap();
    let r = c
        .request("GET", "/a/b?x=1&y=2", &[("Host", "shop.test:8080")], b"")
        .unwrap();
    assert_eq!(r.status, 308);
    let expected = format!("https://shop.test:{}/a/b?x=1&y=2", g.tls_addr.port());
    assert_eq!(r.header("location"), Some(expected.as_str()));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // The connection stays usable, and nothing reached the upstream.
    let r = c
        .request("POST", "/p", &[("Host", "shop.test")], b"data")
        .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(up.count(), 0);
    // Over TLS the same request is proxied.
    let mut t = TlsConn::open(g.tls_addr, &ClientTls::new("a.test", &ca)).unwrap();
    assert_eq!(t.get("/a/b?x=1").unwrap().status, 200);
    assert_eq!(up.count(), 1);
}

#[test]
fn https_upstream_with_a_private_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let up = TlsUpstream::start(&pki.issue(&["upstream.test"]));
    let good_ca = pki.write_ca(dir.path(), "ca.pem");
    let wrong_ca = other.write_ca(dir.path(), "wrong.pem");
    let yaml = format!(
        r#"version: 1
server:
  listen: ["LISTEN"]
  admin: {{ listen: "ADMIN" }}
  pid_file: TMPDIR/gatehouse.pid
  upgrade_sock: TMPDIR/upgrade.sock
backends:
  good:
    discovery: {{ static: ["{up}"] }}
    tls: {{ sni: upstream.test, ca: {good} }}
    health_check: {{ path: /health, interval: 100ms, unhealthy_after: 1 }}
  wrong_ca:
    discovery: {{ static: ["{up}"] }}
    retries: 0
    tls: {{ sni: upstream.test, ca: {wrong} }}
  wrong_name:
    discovery: {{ static: ["{up}"] }}
    retries: 0
    tls: {{ sni: other.test, ca: {good} }}
  unverified:
    discovery: {{ static: ["{up}"] }}
    tls: {{ sni: upstream.test, verify: false }}
endpoints:
  - {{ path: "/good/{{*r}}", backend: good }}
  - {{ path: "/wrong_ca/{{*r}}", backend: wrong_ca }}
  - {{ path: "/wrong_name/{{*r}}", backend: wrong_name }}
  - {{ path: "/unverified/{{*r}}", backend: unverified }}
"#,
        up = up.addr,
        good = good_ca.display(),
        wrong = wrong_ca.display(),
    );
    let g = Gatehouse::start(&yaml);
    // Health checks of an HTTPS backend speak TLS too (a failed probe would take the only
    // host out: 503).
    common::wait_for(
        "two TLS health probes",
        std::time::Duration::from_secs(10),
        || (up.seen("/health") >= 2).then_some(()),
    );
    let r = common::get(g.addr, "/good/x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls upstream /good/x\n");
    let r = common::get(g.addr, "/wrong_ca/x", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let r = common::get(g.addr, "/wrong_name/x", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let r = common::get(g.addr, "/unverified/x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn backend_tls_errors_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let yaml = format!(
        r#"version: 1
server: {{ listen: ["127.0.0.1:1"] }}
backends:
  a:
    discovery: {{ static: ["127.0.0.1:2"] }}
    tls: {{ ca: {missing} }}
"#,
        missing = missing.display()
    );
    let errs = gatehouse::config::parse(&yaml).unwrap_err().to_string();
    assert!(errs.contains("backends.a.tls.sni: needs"), "{errs}");
    assert!(errs.contains("backends.a.tls.ca: cannot read"), "{errs}");
}

fn ws_roundtrips(mut ws: tungstenite::WebSocket<impl std::io::Read + std::io::Write>, n: usize) {
    use tungstenite::Message;
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    for i in 0..n {
        let big = format!("{i}:{}", "x".repeat(4096));
        ws.send(Message::text(big.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(big));
    }
    ws.close(None).unwrap();
    // Drain until the close handshake completes.
    while ws.read().is_ok() {}
}

#[test]
fn websocket_passes_through_after_the_filters() {
    let upstream = ws_echo_upstream();
    // A body limit smaller than the messages: WebSocket traffic is not counted.
    let g = Gatehouse::start(&config(&upstream.to_string(), "  max_body_size: 1KB\n", ""));
    // The upstream answers 101 and speaks at once, which can come before the upgrade
    // request's empty body is done with: repeat to catch that ordering.
    for i in 0..30 {
        let stream = std::net::TcpStream::connect(g.addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let url = format!("ws://{}/ws", g.addr);
        let (ws, resp) = tungstenite::client(url.as_str(), stream).unwrap_or_else(|e| {
            let detail = match &e {
                tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => format!(
                    "{} {:?}",
                    r.status(),
                    r.body().as_deref().map(String::from_utf8_lossy)
                ),
                other => other.to_string(),
            };
            panic!("websocket handshake {i}: {detail}")
        });
        assert_eq!(resp.status(), 101);
        ws_roundtrips(ws, 3);
    }
}

/// An upstream that answers `101` and speaks before it has even read the request: its `101`
/// reaches gatehouse before the upgrade request's (empty) body is done with, the ordering in
/// which Pingora 0.9's own proxy loop ends the tunnel right after the `101`. Gatehouse runs
/// the tunnel itself (src/proxy/tunnel.rs), so it carries bytes both ways.
#[test]
fn websocket_survives_an_early_101() {
    use std::io::Read;
    let upstream = early_101_upstream();
    let g = Gatehouse::start(&config(&upstream.to_string(), "", ""));
    for i in 0..50 {
        let mut c = Conn::open(g.addr).unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n"
        );
        c.send_raw(req.as_bytes()).unwrap();
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 101);
        let mut first = [0u8; 7];
        c.reader.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"\x81\x05hello");
        // The tunnel carries bytes both ways after the early 101.
        let msg = format!("round {i}");
        c.send_raw(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.reader
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("round {i}: tunnel closed after the 101: {e}"));
        assert_eq!(back, msg.as_bytes());
    }
}

/// The upgrade request goes through routing, filters and limits like any request.
#[test]
fn websocket_upgrades_meet_routing_and_limits() {
    let upstream = ws_echo_upstream();
    let yaml = format!(
        r#"version: 1
server:
  listen: ["LISTEN"]
  admin: {{ listen: "ADMIN" }}
  pid_file: TMPDIR/gatehouse.pid
  upgrade_sock: TMPDIR/upgrade.sock
backends:
  app:
    discovery: {{ static: ["{upstream}"] }}
endpoints:
  - path: /ws
    backend: app
    methods: [GET]
    rate_limit: {{ client_max_rate: 1, client_capacity: 1, every: 1h }}
"#
    );
    let g = Gatehouse::start(&yaml);
    let ws = |path: &str| {
        let stream = std::net::TcpStream::connect(g.addr).unwrap();
        let url = format!("ws://{}{path}", g.addr);
        match tungstenite::client(url.as_str(), stream) {
            Ok((ws, resp)) => Ok((ws, resp.status().as_u16())),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                Err(r.status().as_u16())
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(ws("/elsewhere").err(), Some(404));
    let (socket, status) = ws("/ws").expect("the first upgrade passes");
    assert_eq!(status, 101);
    ws_roundtrips(socket, 1);
    // The client's bucket is empty: the next upgrade is refused before any upstream.
    assert_eq!(ws("/ws").err(), Some(429));
}

#[test]
fn http2_off_offers_only_http1() {
    let up = MockUpstream::start(Behaviour::Echo);
    let certs = Certs::new();
    let ca = certs.ca();
    let g = Gatehouse::start(&config(
        &up.addr.to_string(),
        &certs.block("    http2: false\n"),
        "",
    ));
    let tls = ClientTls::new("a.test", &ca);
    let err = h2_request(g.tls_addr, &tls, "GET", "/", b"").unwrap_err();
    assert!(err.contains("did not select h2"), "{err}");
    let mut c = TlsConn::open(g.tls_addr, &tls).unwrap();
    assert_eq!(c.get("/h1").unwrap().status, 200);
}

#[test]
fn websocket_over_tls() {
    let upstream = ws_echo_upstream();
    let certs = Certs::new();
    let ca = certs.ca();
    let g = Gatehouse::start(&config(&upstream.to_string(), &certs.block(""), ""));
    let c = TlsConn::open(
        g.tls_addr,
        &ClientTls {
            alpn: &["http/1.1"],
            ..ClientTls::new("a.test", &ca)
        },
    )
    .unwrap();
    let stream = c.reader.into_inner();
    let (ws, resp) = tungstenite::client("wss://a.test/ws", stream).expect("wss handshake");
    assert_eq!(resp.status(), 101);
    ws_roundtrips(ws, 3);
}

#[test]
fn body_limit_by_length_and_by_count() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(&up.addr.to_string(), "  max_body_size: 1KB\n", ""));

    // Declared too large: 413 before any upstream is chosen (only the head is sent).
    let mut c = Conn::open(g.addr).unwrap();
    c.send_raw(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 20000000\r\n\r\n")
        .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(
        r.text().contains("urn:gatehouse:problem:body_too_large"),
        "{}",
        r.text()
    );
    assert_eq!(up.count(), 0);

    // At the limit: passes.
    let r = common::request(g.addr, "POST", "/ok", &[], &[b'x'; 1024]);
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1);

    // A chunked body that grows past the limit is cut with 413.
    let mut c = Conn::open(g.addr).unwrap();
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let mut raw =
        b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(chunk.as_bytes());
    raw.extend_from_slice(chunk.as_bytes());
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send_raw(&raw).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("body_too_large"));

    // A small chunked body passes.
    let mut c = Conn::open(g.addr).unwrap();
    c.send_raw(b"POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("hello"), "{}", r.text());

    common::wait_for(
        "the rejections metric",
        std::time::Duration::from_secs(5),
        || (g.metric("gatehouse_rejections_total{reason=\"body_too_large\"}") >= 2.0).then_some(()),
    );
}

/// What an h2c client learns from gatehouse's SETTINGS and WINDOW_UPDATE frames: the
/// stream limit, and how many request body bytes it may send before gatehouse has read any.
fn h2_settings_seen(addr: std::net::SocketAddr) -> (usize, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // (the client's own send buffer, 400 KiB by default, would cap the grant)
        let (mut client, mut conn) = h2::client::Builder::new()
            .max_send_buffer_size(8 << 20)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let req = http::Request::post("http://t/x").body(()).unwrap();
        let (_resp, mut send) = client.send_request(req, false).unwrap();
        // Ask for 4 MiB: the grant is the smaller of the stream's and the connection's window.
        send.reserve_capacity(4 << 20);
        let grant = async {
            let mut best = 0;
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout_at(deadline, std::future::poll_fn(|cx| send.poll_capacity(cx)))
                    .await
            {
                best = best.max(send.capacity());
                if best >= 1 << 20 {
                    break;
                }
            }
            best.max(send.capacity())
        };
        let granted = tokio::select! {
            g = grant => g,
            _ = &mut conn => panic!("the connection ended"),
        };
        (conn.max_concurrent_send_streams(), granted)
    })
}

#[test]
fn h2_settings_are_offered_to_clients() {
    let up = MockUpstream::start(Behaviour::Echo);
    let addr = up.addr.to_string();
    // The defaults: Pingora's 100 streams and HTTP/2's initial 64 KiB - 1 windows.
    let g = Gatehouse::start(&config(&addr, "  h2c: true", ""));
    assert_eq!(h2_settings_seen(g.addr), (100, 65_535));
    drop(g);
    let g = Gatehouse::start(&config(
        &addr,
        "  h2c: true\n  h2: { max_concurrent_streams: 7, stream_window: 1MB, connection_window: 2MB }",
        "",
    ));
    assert_eq!(h2_settings_seen(g.addr), (7, 1 << 20));
    drop(g);
    // The other way round: now the connection's window is the smaller.
    let g = Gatehouse::start(&config(
        &addr,
        "  h2c: true\n  h2: { stream_window: 2MB, connection_window: 1MB }",
        "",
    ));
    assert_eq!(h2_settings_seen(g.addr).1, 1 << 20);
    // A window below gatehouse's minimum (HTTP/2's initial 65,535 bytes) is a config error
    // naming the key.
    let err = Gatehouse::try_start(&config(&addr, "  h2: { stream_window: 1KB }", ""))
        .err()
        .expect("refused");
    assert!(err.contains("server.h2.stream_window"), "{err}");
}
