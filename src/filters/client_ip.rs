//! Client address resolution.
//!
//! The client is the TCP peer, unless the peer is a trusted proxy: then the first configured
//! header present on the request is read, its addresses walked right to left (across repeated
//! header lines too), skipping trusted addresses; the first untrusted one is the client. When
//! every listed address is trusted, the leftmost one is the client. An entry that is not an
//! address (garbage, `unknown`) stops the walk: the client is then the last address walked,
//! so nothing left of a broken entry is ever believed. Headers from untrusted peers are never
//! read.

use super::ip::{canonical, CidrSet};
use http::header::{HeaderMap, HeaderName};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: CidrSet,
    headers: Vec<HeaderName>,
}

impl ClientIpResolver {
    pub fn new(trusted: CidrSet, headers: Vec<HeaderName>) -> ClientIpResolver {
        ClientIpResolver { trusted, headers }
    }

    /// Whether `peer` is one of `client_ip.trusted_proxies` (whose `X-Request-Id` is kept).
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.contains(canonical(peer))
    }

    /// The client address of a request from `peer` with `headers`. No allocation.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.trusted.is_empty() || !self.trusted.contains(peer) {
            return peer;
        }
        for name in &self.headers {
            let mut values = headers.get_all(name).iter().rev().peekable();
            if values.peek().is_none() {
                continue;
            }
            let mut client = peer;
            for v in values {
                let Ok(text) = v.to_str() else {
                    return client;
                };
                for item in text.rsplit(',') {
                    let item = item.trim();
                    if item.is_empty() {
                        continue;
                    }
                    match parse_forwarded_ip(item) {
                        Some(ip) => {
                            client = ip;
                            if !self.trusted.contains(ip) {
                                return ip;
                            }
                        }
                        None => return client,
                    }
                }
            }
            return client;
        }
        peer
    }
}

/// The `X-Forwarded-For` value sent upstream: every line of the request's own header (repeated
/// lines are one list, as in `resolve`), in order, joined by `", "`, then `peer`. Blank lines add
/// nothing. Keeping every line matters: an upstream that trusts gatehouse walks this list right
/// to left, and dropping a later line would let an address forged on an earlier one stand where
/// the real client was.
pub fn forwarded_for(headers: &HeaderMap, peer: IpAddr) -> http::HeaderValue {
    use std::io::Write;
    const NAME: http::header::HeaderName = http::header::HeaderName::from_static("x-forwarded-for");
    // The peer's text first, on the stack (an IPv6 address is at most 45 characters), so the
    // value is one allocation of its exact length: a `Vec` whose length is its capacity
    // becomes `Bytes` without a second allocation for a shared header.
    let mut addr = [0u8; 64];
    let mut cur = std::io::Cursor::new(&mut addr[..]);
    let _ = write!(cur, "{}", canonical(peer));
    let n = cur.position() as usize;
    let addr = &addr[..n];
    let lines = || {
        headers
            .get_all(&NAME)
            .into_iter()
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|b| !b.is_empty())
    };
    let len = lines().map(|b| b.len() + 2).sum::<usize>() + addr.len();
    let mut out: Vec<u8> = Vec::with_capacity(len);
    for b in lines() {
        out.extend_from_slice(b);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(addr);
    // Made of valid header values, ", " and an address: always a valid value (taken
    // without a copy).
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
pub fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::super::ip::Cidr;
    use super::*;

    fn resolver(trusted: &[&str]) -> ClientIpResolver {
        let c: Vec<Cidr> = trusted.iter().map(|s| Cidr::parse(s).unwrap()).collect();
        ClientIpResolver::new(
            CidrSet::new(&c),
            vec![
                HeaderName::from_static("x-forwarded-for"),
                HeaderName::from_static("x-real-ip"),
            ],
        )
    }

    fn hdrs(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_says() {
        let r = resolver(&["10.0.0.0/8"]);
        let h = hdrs(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(r.resolve(ip("198.51.100.7"), &h), ip("198.51.100.7"));
        // No trusted proxies at all: the peer, always.
        assert_eq!(resolver(&[]).resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn walks_right_to_left_skipping_trusted() {
        let r = resolver(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let h = hdrs(&[("x-forwarded-for", "6.6.6.6, 81.2.69.142, 10.0.0.3")]);
        // 6.6.6.6 is whatever the client claimed; 81.2.69.142 is what our proxy saw.
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("81.2.69.142"));
        // Repeated header lines are one list, in order.
        let h = hdrs(&[
            ("x-forwarded-for", "6.6.6.6, 2a02:ff0::7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("2a02:ff0::7"));
        // All trusted: the leftmost.
        let h = hdrs(&[("x-forwarded-for", "10.9.9.9, 10.0.0.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // IPv6 peer inside the trusted /48.
        let h = hdrs(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        assert_eq!(r.resolve(ip("2001:db8:ffff::2"), &h), ip("2001:db8::1"));
    }

    #[test]
    fn ipv4_mapped_peer_is_ipv4() {
        let r = resolver(&["127.0.0.1/32"]);
        let h = hdrs(&[("x-forwarded-for", "::ffff:81.2.69.142")]);
        assert_eq!(r.resolve(ip("::ffff:127.0.0.1"), &h), ip("81.2.69.142"));
        assert_eq!(
            r.resolve(ip("::ffff:192.0.2.1"), &HeaderMap::new()),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn forwarded_for_keeps_every_line_and_appends_the_peer() {
        let f = |h: &HeaderMap, peer: &str| forwarded_for(h, ip(peer));
        assert_eq!(f(&HeaderMap::new(), "::ffff:127.0.0.1"), "127.0.0.1");
        let h = hdrs(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "  "),
            ("x-forwarded-for", "81.2.69.142, [2001:db8::1]:80"),
        ]);
        assert_eq!(
            f(&h, "10.0.0.2"),
            "6.6.6.6, 81.2.69.142, [2001:db8::1]:80, 10.0.0.2"
        );
        assert_eq!(f(&hdrs(&[("x-forwarded-for", "")]), "::1"), "::1");
        // The list read back right to left finds the same client as `resolve`.
        let r = resolver(&["10.0.0.0/8"]);
        let mut up = HeaderMap::new();
        up.insert("x-forwarded-for", f(&h, "10.0.0.2"));
        assert_eq!(
            r.resolve(ip("10.0.0.3"), &up),
            r.resolve(ip("10.0.0.2"), &h)
        );
    }

    #[test]
    fn first_present_header_wins_and_garbage_stops_the_walk() {
        let r = resolver(&["127.0.0.1/32"]);
        let h = hdrs(&[("x-real-ip", "81.2.69.142")]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ip("81.2.69.142"));
        let h = hdrs(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "81.2.69.142")]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ip("1.2.3.4"));
        let h = hdrs(&[("x-forwarded-for", "1.2.3.4, unknown")]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let h = hdrs(&[("x-forwarded-for", "1.2.3.4, , 5.6.7.8:80")]);
        assert_eq!(r.resolve(ip("127.0.0.1"), &h), ip("5.6.7.8"));
        assert_eq!(
            r.resolve(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }
}
