//! WebSocket upstreams: an echo server (tungstenite) and one that answers `101` before it has
//! read the upgrade request, to test the order in which a proxy sees the two.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;

/// A WebSocket upstream: after the handshake it sends `hello` at once (so its 101 and first
/// frame arrive before the client says anything), then echoes every message.
pub fn ws_echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(s) else {
                    return;
                };
                if ws.send(tungstenite::Message::text("hello")).is_err() {
                    return;
                }
                while let Ok(m) = ws.read() {
                    if m.is_close() {
                        return;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The key/accept pair of RFC 6455's example handshake.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An upstream that answers `101` (for `WS_KEY`) and a first frame the moment it accepts a
/// connection, before it has even read the request; then reads the request head and echoes
/// the tunnel's bytes. This forces the proxy to read the upstream's 101 before it has drained
/// the upgrade request's empty body.
pub fn early_101_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            thread::spawn(move || {
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
                );
                let mut first = head.into_bytes();
                first.extend_from_slice(b"\x81\x05hello");
                if s.write_all(&first).is_err() {
                    return;
                }
                let Ok(read_half) = s.try_clone() else { return };
                let mut r = BufReader::new(read_half);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h.trim_end().is_empty() {
                        break;
                    }
                }
                let mut buf = [0u8; 4096];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}
