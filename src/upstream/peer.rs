//! The Pingora peer of one attempt at a backend host: plain or HTTPS (SNI, verification, CA),
//! HTTP/1.1 or HTTP/2,
//! its timeouts bounded by what is left of the endpoint's time budget, and the key a
//! consistent-hash backend picks its host by.

use crate::config::{BackendConfig, HashKey};
use pingora::prelude::HttpPeer;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The peer for a host of this backend. Connect, read and write timeouts are the backend's,
/// each cut to `remaining` (the endpoint's budget); the idle timeout of a pooled connection is
/// the backend's own. An `upgrade` request (WebSocket) reads with the tunnel's idle timeout.
pub fn peer(addr: SocketAddr, cfg: &BackendConfig, remaining: Duration, upgrade: bool) -> HttpPeer {
    let mut peer = match &cfg.tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(t) => {
            // `apply_tls` sets the SNI: one copy of it per request, not two.
            let mut peer = HttpPeer::new(addr, true, String::new());
            apply_tls(&mut peer, t);
            peer
        }
    };
    let o = &mut peer.options;
    o.connection_timeout = Some(cfg.connect_timeout.min(remaining));
    o.total_connection_timeout = Some(cfg.connect_timeout.min(remaining));
    // The budget bounds the wait for the response header. Pingora uses one read timeout
    // for the header and for everything after it, so an upgrade request (WebSocket)
    // gets the tunnel's idle timeout instead: the budget must not cut a tunnel.
    // Pingora takes the read timeout before connecting, so an attempt may end as late as
    // the budget plus the time its connect took.
    o.read_timeout = Some(if upgrade {
        cfg.tunnel_idle_timeout
    } else {
        cfg.read_timeout.min(remaining)
    });
    o.write_timeout = Some(cfg.write_timeout.min(remaining));
    o.idle_timeout = Some(cfg.idle_timeout);
    apply_protocol(&mut peer, cfg.protocol);
    peer
}

/// Concurrent streams gatehouse opens on one HTTP/2 connection to a host (fewer when the
/// host's SETTINGS say so); more requests open more connections.
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

/// The HTTP version spoken to the host (also used by health checks): `h2` is offered by
/// ALPN alone, `h2c` is spoken on a plain connection by prior knowledge. Requests to an
/// HTTP/2 host share its connections, up to `H2_STREAMS_PER_CONNECTION` at once on each.
pub fn apply_protocol(peer: &mut HttpPeer, protocol: crate::config::Protocol) {
    if protocol.is_h2() {
        peer.options.alpn = pingora::protocols::ALPN::H2;
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
}

/// Makes `peer` an HTTPS peer as a backend's `tls` says (also used by health checks).
pub fn apply_tls(peer: &mut HttpPeer, t: &crate::config::tls::BackendTls) {
    peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
    peer.sni = t.sni.clone();
    peer.options.verify_cert = t.verify;
    peer.options.verify_hostname = t.verify;
    if let Some(ca) = &t.ca {
        peer.options.ca = Some(ca.certs.clone());
        // Pingora's pool does not key on the CA: keep peers with different CAs apart.
        peer.group_key = ca.fingerprint;
    }
}

/// The consistent-hash key: the configured header, else the client address (`buf` holds it).
pub fn hash_key<'a>(
    headers: &'a http::HeaderMap,
    client: Option<IpAddr>,
    key: &HashKey,
    buf: &'a mut [u8; 16],
) -> &'a [u8] {
    if let HashKey::Header(name) = key {
        if let Some(v) = headers.get(name) {
            return v.as_bytes();
        }
    }
    match client {
        Some(IpAddr::V4(ip)) => {
            buf[..4].copy_from_slice(&ip.octets());
            &buf[..4]
        }
        Some(IpAddr::V6(ip)) => {
            *buf = ip.octets();
            &buf[..]
        }
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_is_the_header_else_the_client() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "u1".parse().unwrap());
        let by_header = HashKey::Header(http::HeaderName::from_static("x-user"));
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(hash_key(&headers, Some(v4), &by_header, &mut buf), b"u1");
        let empty = http::HeaderMap::new();
        assert_eq!(
            hash_key(&empty, Some(v4), &by_header, &mut buf),
            &[10, 1, 2, 3]
        );
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            hash_key(&empty, Some(v6), &HashKey::ClientIp, &mut buf).len(),
            16
        );
        assert!(hash_key(&empty, None, &HashKey::ClientIp, &mut buf).is_empty());
    }
}
