//! Who a client is (strategies and their compact keys) and which limits apply to it (tiers).
//!
//! A client key is 128 bits, in three disjoint ranges so that no two kinds can collide:
//! - IPv6 address: its /64 prefix in the high word, low word 0;
//! - IPv4 address (IPv4-mapped IPv6 included): high word 0, low word `1 << 32 | addr`;
//! - header or path-parameter value: SipHash-1-3-128 under a per-process random key, low word
//!   with its top bit set. SipHash is a keyed PRF, so values cannot be crafted to collide;
//!   the chance of an accidental collision among a million clients is about 2^-89.

use super::local::Key;
use crate::config::limits::TierMatch;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;
use std::net::IpAddr;

/// The key of a client address: IPv6 by its /64, IPv4 whole. `None` (no IP address, e.g. a
/// Unix socket) is one shared key.
#[inline]
pub fn ip_key(ip: Option<IpAddr>) -> Key {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => [0, (1 << 32) | u64::from(u32::from(v4))],
        Some(IpAddr::V6(v6)) => [(u128::from(v6) >> 64) as u64, 0],
        None => [0, 0],
    }
}

static SIP_KEY: once_cell::sync::Lazy<(u64, u64)> =
    once_cell::sync::Lazy::new(|| (fastrand::u64(..), fastrand::u64(..)));

/// The key of a header or path-parameter value.
#[inline]
pub fn value_key(value: &[u8]) -> Key {
    let (k0, k1) = *SIP_KEY;
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write(value);
    let h = h.finish128();
    [h.h1, h.h2 | (1 << 63)]
}

/// Picks the tier level for a tier-header value: the first `Exact` equal to it or the first
/// `Any`, in order. A missing header is the empty value, which only `*` (or an explicit `""`)
/// matches.
#[inline]
pub fn pick_tier<'a, T>(
    levels: impl IntoIterator<Item = (&'a TierMatch, T)>,
    value: &[u8],
) -> Option<T> {
    levels.into_iter().find_map(|(m, t)| match m {
        TierMatch::Any => Some(t),
        TierMatch::Exact(v) if v.as_bytes() == value => Some(t),
        TierMatch::Exact(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(Some(a)), ip_key(Some(b)));
        assert_ne!(ip_key(Some(a)), ip_key(Some(c)));
    }

    #[test]
    fn ipv4_whole_and_mapped_alike() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let m: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_ne!(ip_key(Some(a)), ip_key(Some(b)));
        assert_eq!(ip_key(Some(a)), ip_key(Some(m)));
        // v4 never meets the v6 range ::/64 or a hashed value
        let zero6: IpAddr = "::1".parse().unwrap();
        assert_ne!(ip_key(Some(a)), ip_key(Some(zero6)));
        assert_ne!(value_key(b"192.0.2.1"), ip_key(Some(a)));
        assert_eq!(ip_key(None), [0, 0]);
    }

    #[test]
    fn values_are_stable_and_distinct() {
        assert_eq!(value_key(b"k1"), value_key(b"k1"));
        assert_ne!(value_key(b"k1"), value_key(b"k2"));
        assert!(value_key(b"")[1] >> 63 == 1);
    }

    #[test]
    fn first_tier_match_wins() {
        let levels = [
            TierMatch::Exact("gold".into()),
            TierMatch::Any,
            TierMatch::Exact("silver".into()),
        ];
        let pick = |v: &[u8]| pick_tier(levels.iter().zip(0..), v);
        assert_eq!(pick(b"gold"), Some(0));
        assert_eq!(pick(b"silver"), Some(1), "* comes first");
        assert_eq!(pick(b""), Some(1));
        let no_any = [TierMatch::Exact("gold".into())];
        assert_eq!(
            pick_tier(no_any.iter().zip(0..), b"GOLD"),
            None,
            "exact, case-sensitive"
        );
    }
}
