//! The PROXY protocol through the real binary: v1 and v2 headers from a trusted peer, over
//! plain and TLS listeners, name the client for forwarding headers, filters and logs; an
//! untrusted peer's header is not believed; a malformed one closes the connection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::tls::Pki;
use common::{read_response, Behaviour, Gatehouse, MockUpstream, SERVER};
use pingora::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

fn config(up: SocketAddr, trusted: &str, tls: &str) -> String {
    format!(
        r#"{SERVER}  proxy_protocol: {{ trusted: ["{trusted}"] }}
{tls}
security:
  ip_filter: {{ mode: deny, cidrs: ["198.51.100.0/24"] }}
backends:
  app:
    discovery: {{ static: ["{up}"] }}
endpoints:
  - path: /{{*rest}}
    backend: app
"#
    )
}

fn v1(ip: &str) -> Vec<u8> {
    format!("PROXY TCP4 {ip} 127.0.0.1 40000 80\r\n").into_bytes()
}

fn v2(ip: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&ip);
    h.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0, 80]);
    h
}

/// Sends `bytes` on a new plain connection; the status, or `None` when it was closed.
fn send(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(s), false)
        .ok()
        .map(|r| r.status)
}

/// Whether the peer at `stream` closed it without sending a byte (not a read timeout: a
/// server that waits for more counts as open).
fn closed_without_a_byte(mut stream: impl Read) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && rest.is_empty(),
    }
}

/// Sends `bytes` on a new connection to `addr`: closed by gatehouse without an answer?
fn refused_silently(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    closed_without_a_byte(s)
}

#[test]
fn a_trusted_peer_names_the_client_in_v1_and_v2() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, "127.0.0.1/32", ""));
    for header in [v1("203.0.113.7"), v2([203, 0, 113, 7])] {
        let mut bytes = header;
        bytes.extend_from_slice(REQUEST);
        assert_eq!(send(g.addr, &bytes), Some(200));
        let seen = up.last().unwrap();
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("203.0.113.7"),
            "{seen:?}"
        );
    }
    // The address it names meets the filters.
    let mut denied = v1("198.51.100.9");
    denied.extend_from_slice(REQUEST);
    assert_eq!(send(g.addr, &denied), Some(403));
    let mut denied = v2([198, 51, 100, 9]);
    denied.extend_from_slice(REQUEST);
    assert_eq!(send(g.addr, &denied), Some(403));
    // Without a header, a trusted peer is served as itself (a balancer's health check).
    assert_eq!(send(g.addr, REQUEST), Some(200));
    assert_eq!(
        up.last().unwrap().header("x-forwarded-for"),
        Some("127.0.0.1")
    );
    // The access log has the named client.
    g.wait_log_lines("203.0.113.7 \"GET /x", 1);
    // Malformed headers close the connection without an answer.
    let mut bad = b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n".to_vec();
    bad.extend_from_slice(REQUEST);
    assert!(refused_silently(g.addr, &bad), "a malformed v1 header");
    let mut bad = v2([203, 0, 113, 7]);
    bad[12] = 0x31;
    bad.extend_from_slice(REQUEST);
    assert!(refused_silently(g.addr, &bad), "a malformed v2 header");
}

#[test]
fn an_untrusted_peer_is_not_believed() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, "10.0.0.0/8", ""));
    let mut bytes = v1("203.0.113.7");
    bytes.extend_from_slice(REQUEST);
    assert_eq!(
        send(g.addr, &bytes),
        Some(400),
        "a PROXY line from a client is a bad request"
    );
    assert_eq!(up.count(), 0);
    assert_eq!(send(g.addr, REQUEST), Some(200));
    assert_eq!(
        up.last().unwrap().header("x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[test]
fn the_header_comes_before_the_tls_handshake() {
    let up = MockUpstream::start(Behaviour::Echo);
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(&["localhost"]).write(dir.path(), "leaf");
    let tls = format!(
        "  tls:\n    listen: [\"TLSADDR\"]\n    certificates:\n      - {{ cert: {}, key: {} }}\n",
        cert.display(),
        key.display()
    );
    let g = Gatehouse::start(&config(up.addr, "127.0.0.1/32", &tls));
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let connector = b.build();
    let over_tls = |header: &[u8]| -> Option<u16> {
        let mut tcp = TcpStream::connect(g.tls_addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(header).unwrap();
        let mut s = connector.connect("localhost", tcp).ok()?;
        s.write_all(REQUEST).unwrap();
        read_response(&mut BufReader::new(s), false)
            .ok()
            .map(|r| r.status)
    };
    assert_eq!(over_tls(&v1("203.0.113.7")), Some(200));
    assert_eq!(
        up.last().unwrap().header("x-forwarded-for"),
        Some("203.0.113.7")
    );
    assert_eq!(over_tls(&v2([198, 51, 100, 9])), Some(403));
    assert_eq!(over_tls(b""), Some(200), "no header: the peer itself");
    assert_eq!(
        up.last().unwrap().header("x-forwarded-for"),
        Some("127.0.0.1")
    );
    // A malformed header: closed before any handshake.
    let mut tcp = TcpStream::connect(g.tls_addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"PROXY TCP4 x y 1 2\r\n").unwrap();
    assert!(closed_without_a_byte(tcp), "closed without a byte");
}
