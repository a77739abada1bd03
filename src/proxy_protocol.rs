//! The PROXY protocol (HAProxy's, versions 1 and 2) on client connections. Behind an L4
//! load balancer (AWS NLB, GCP, HAProxy in TCP mode) every TCP peer is the balancer; the
//! balancer can prepend a PROXY header naming the real client, and that address then
//! becomes the connection's peer for everything downstream: `client_ip`, filters, limits,
//! logs.
//!
//! - Read only from peers in `server.proxy_protocol.trusted`; from any other peer nothing is
//!   read, so a client cannot name its own address (its `PROXY ...` line is a malformed
//!   request, answered 400).
//! - From a trusted peer the header is optional: a connection that starts with anything
//!   other than a PROXY signature (a balancer's own health check) is served as it is.
//! - A header that starts with a signature but is malformed, or incomplete within
//!   `server.header_read_timeout`, closes the connection.
//! - `LOCAL` (v2) and `UNKNOWN` (v1) headers keep the TCP peer, as the protocol says.
//!
//! It is read in the application's `process_new` (`proxy::conn::Edge`), before the TLS
//! handshake on HTTPS listeners.

use crate::filters::ip::CidrSet;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes; v2 headers carry TLVs, kept well below this.
const MAX_HEADER: usize = 4096;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Not enough bytes to decide.
    NeedMore,
    /// No PROXY signature: the bytes belong to the application protocol.
    NotProxy,
    /// A complete header of `len` bytes; `source` is the client it names (`None` for
    /// `LOCAL`/`UNKNOWN`, which keep the TCP peer).
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    Malformed(String),
}

/// Decides on the first bytes of a connection (pure, so it is tested byte by byte).
pub fn parse(buf: &[u8]) -> Step {
    let is_prefix_of = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    let v1 = is_prefix_of(V1_PREFIX);
    let v2 = is_prefix_of(V2_SIGNATURE);
    if !v1 && !v2 {
        return Step::NotProxy;
    }
    if (v1 && buf.len() < V1_PREFIX.len()) || (v2 && buf.len() < V2_SIGNATURE.len()) {
        return Step::NeedMore;
    }
    if v2 {
        return match ppp::v2::Header::try_from(buf) {
            Ok(h) => Step::Header {
                len: h.len(),
                source: match (h.command, h.addresses) {
                    (ppp::v2::Command::Local, _) => None,
                    (_, ppp::v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (_, ppp::v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    _ => None,
                },
            },
            Err(ppp::v2::ParseError::Incomplete(_) | ppp::v2::ParseError::Partial(_, _))
                if buf.len() < MAX_HEADER =>
            {
                Step::NeedMore
            }
            Err(e) => Step::Malformed(format!("PROXY v2 header: {e}")),
        };
    }
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() < 107 {
            Step::NeedMore
        } else {
            Step::Malformed("PROXY v1 header: no line end within 107 bytes".into())
        };
    };
    match ppp::v1::Header::try_from(&buf[..=end]) {
        Ok(h) => Step::Header {
            len: end + 1,
            source: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(e) => Step::Malformed(format!("PROXY v1 header: {e}")),
    }
}

/// Reads from `stream` until `parse` decides. Returns the bytes read (to be given back to
/// the stream after the header) and the decision, which is never `NeedMore`.
async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<(Vec<u8>, Step), String> {
    let mut buf = Vec::with_capacity(128);
    let read = async {
        loop {
            let mut chunk = [0u8; 256];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading a PROXY header: {e}"))?;
            if n == 0 {
                return Ok(Step::NotProxy); // closed: the application sees the EOF
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse(&buf) {
                Step::NeedMore => continue,
                step => return Ok(step),
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(step)) => Ok((buf, step)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("PROXY header not complete within header_read_timeout".into()),
    }
}

/// Reads a PROXY header from `stream` if its peer is trusted, gives back the bytes after
/// it, and makes the address it names the stream's peer. An error closes the connection.
pub async fn accept(
    stream: &mut L4Stream,
    trusted: &CidrSet,
    limit: Duration,
) -> Result<(), String> {
    let peer = stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()));
    let Some(peer) = peer else { return Ok(()) };
    if !trusted.contains(crate::filters::ip::canonical(peer.ip())) {
        return Ok(());
    }
    let (buf, step) = read_header(stream, limit).await?;
    match step {
        Step::NotProxy | Step::NeedMore => stream.rewind(&buf),
        Step::Malformed(e) => return Err(format!("{peer}: {e}")),
        Step::Header { len, source } => {
            stream.rewind(&buf[len..]);
            if let Some(source) = source {
                let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                let _ =
                    digest
                        .peer_addr
                        .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(
                            source,
                        )));
                stream.set_socket_digest(digest);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            Step::Header {
                len: 43,
                source: Some("203.0.113.7:51234".parse().unwrap())
            }
        );
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert!(matches!(parse(h6), Step::Header { source: Some(a), .. } if a.ip().is_ipv6()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Step::Header {
                len: 15,
                source: None
            }
        );
        // byte by byte: undecided until the line ends
        for n in 1..43 {
            assert_eq!(parse(&h[..n]), Step::NeedMore, "{n} bytes");
        }
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense\r\n"),
            Step::Malformed(_)
        ));
        assert!(matches!(
            parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'x'].repeat(20)),
            Step::Malformed(_)
        ));
    }

    #[test]
    fn v2_headers() {
        let mut addrs = vec![203, 0, 113, 7, 10, 0, 0, 1];
        addrs.extend_from_slice(&51234u16.to_be_bytes());
        addrs.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &addrs);
        assert_eq!(
            parse(&h),
            Step::Header {
                len: 28,
                source: Some("203.0.113.7:51234".parse().unwrap())
            }
        );
        for n in 1..h.len() {
            assert_eq!(parse(&h[..n]), Step::NeedMore, "{n} bytes");
        }
        assert_eq!(
            parse(&v2(0, 0x00, &[])),
            Step::Header {
                len: 16,
                source: None
            },
            "LOCAL keeps the peer"
        );
        let mut bad = h.clone();
        bad[12] = 0x31; // version 3
        assert!(matches!(parse(&bad), Step::Malformed(_)));
    }

    #[test]
    fn anything_else_is_not_proxy() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Step::NotProxy);
        assert_eq!(parse(b"P"), Step::NeedMore);
        assert_eq!(parse(b"PRI * HTTP/2.0"), Step::NotProxy);
        assert_eq!(parse(b"\x16\x03\x01"), Step::NotProxy, "a TLS ClientHello");
        assert_eq!(parse(b"\r\n\r\nX"), Step::NotProxy);
    }
}
