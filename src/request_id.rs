//! Request IDs: the `X-Request-Id` that ties a request's access-log line to the logs of its
//! upstream and to what the client saw.
//!
//! - A request that comes through a trusted proxy (its peer is in `client_ip.trusted_proxies`)
//!   keeps the `X-Request-Id` it carries, if that is 1 to 128 visible ASCII characters. Any
//!   other request gets a new one: a client cannot choose the ID an operator will search by.
//! - The ID is sent upstream, returned to the client on every answer, and written in the
//!   access log and in problem+json bodies.
//! - A new ID is 32 hex digits: a 64-bit prefix drawn once per process from the OS's random
//!   source, then a per-process counter passed through a keyed bijection of 64-bit integers,
//!   so IDs never repeat within a process (the counter does not), do not repeat across
//!   processes in practice (the prefix), and do not show the request rate. Making one takes
//!   an atomic increment and a few multiplications: no system call, no lock.

use http::HeaderValue;
use once_cell::sync::Lazy;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub const HEADER: &str = "x-request-id";

/// The longest ID kept from a trusted proxy.
pub const MAX_LEN: usize = 128;

struct Keys {
    prefix: u64,
    key: u64,
}

/// Drawn once: std's `RandomState` keys come from the OS's random source.
static KEYS: Lazy<Keys> = Lazy::new(|| {
    let draw = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.finish()
    };
    Keys {
        prefix: draw(1),
        key: draw(2),
    }
});

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A bijection of u64 (the finaliser of SplitMix64: xor-shifts and odd multipliers are each
/// invertible), so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A new ID: 32 lower-case hex digits, in a buffer of its own.
pub fn generate() -> [u8; 32] {
    let keys = &*KEYS;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let low = mix(n ^ keys.key);
    let mut out = [0u8; 32];
    hex_into(keys.prefix, &mut out[..16]);
    hex_into(low, &mut out[16..]);
    out
}

fn hex_into(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Whether an ID a proxy sent is kept: 1 to `MAX_LEN` visible ASCII characters.
pub fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (0x21..0x7f).contains(c))
}

/// The ID of a request from `peer` (`None`: not a TCP peer) carrying `headers`: the one it
/// carries when the peer is a trusted proxy and the ID is acceptable, else a new one.
pub fn of(
    resolver: &crate::filters::client_ip::ClientIpResolver,
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
) -> HeaderValue {
    if peer.is_some_and(|p| resolver.is_trusted(p)) {
        if let Some(v) = headers.get(HEADER).filter(|v| acceptable(v)) {
            return v.clone();
        }
    }
    new_value()
}

/// A new ID as a header value.
pub fn new_value() -> HeaderValue {
    let id = generate();
    // 32 hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_hex_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = generate();
            assert!(id
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(seen.insert(id), "repeated {}", String::from_utf8_lossy(&id));
        }
        // not the counter in plain sight
        let (a, b) = (generate(), generate());
        assert_eq!(a[..16], b[..16], "one prefix per process");
        assert_ne!(a[16..31], b[16..31]);
    }

    #[test]
    fn mix_is_a_bijection_on_a_sample() {
        let outs: std::collections::HashSet<u64> = (0..100_000u64).map(mix).collect();
        assert_eq!(outs.len(), 100_000);
    }

    #[test]
    fn only_a_trusted_proxy_chooses_the_id() {
        use crate::filters::client_ip::ClientIpResolver;
        use crate::filters::ip::{Cidr, CidrSet};
        let trusted = CidrSet::new(&[Cidr::parse("10.0.0.0/8").unwrap()]);
        let r = ClientIpResolver::new(trusted, vec![]);
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        let proxy = Some("10.1.2.3".parse().unwrap());
        let client = Some("192.0.2.1".parse().unwrap());
        assert_eq!(of(&r, proxy, &h), "abc-123");
        let other = of(&r, client, &h);
        assert_ne!(other, "abc-123");
        assert_eq!(other.len(), 32);
        assert_ne!(of(&r, None, &h), "abc-123");
        // an unacceptable ID from a trusted proxy is replaced
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert_ne!(of(&r, proxy, &h), "has space");
        h.insert(HEADER, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(of(&r, proxy, &h).len(), 32);
        h.insert(HEADER, HeaderValue::from_str(&"x".repeat(128)).unwrap());
        assert_eq!(of(&r, proxy, &h).len(), 128);
    }
}
