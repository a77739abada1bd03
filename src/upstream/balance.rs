//! A backend's current hosts and how one is picked: round robin and random over a weighted
//! wheel, consistent hashing over a Ketama ring (pingora-ketama). Unhealthy hosts and hosts a
//! request already tried are skipped; built once per discovery change, read lock-free.

use super::health::HostHealth;
use crate::config::Balance;
use pingora_ketama::{Bucket, Continuum};
use std::net::SocketAddr;
use std::sync::Arc;

/// Slots of the weighted wheel shared out by weight (then reduced by their GCD).
const WHEEL_RESOLUTION: u64 = 1024;

#[derive(Debug, Clone)]
pub struct Host {
    pub addr: SocketAddr,
    /// As discovered (SRV weight, 1 for static and A/AAAA); 0 = the lowest share.
    pub weight: u32,
    pub health: Arc<HostHealth>,
}

pub struct HostSet {
    pub hosts: Vec<Host>,
    /// Host indices, each repeated by its share, interleaved (smooth weighted round robin).
    wheel: Vec<u16>,
    /// Ketama ring, built only for `consistent_hash`.
    ring: Option<Continuum>,
    /// Points on the ring: bounds a walk over it.
    ring_points: usize,
}

impl std::fmt::Debug for HostSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSet")
            .field("hosts", &self.hosts)
            .field("wheel", &self.wheel.len())
            .finish()
    }
}

/// Slots per host: proportional to weight, weight 0 gets one slot (lowest share, never
/// none), all-zero weights share equally. Reduced by the GCD so equal weights give one each.
pub fn shares(weights: &[u32]) -> Vec<u64> {
    let total: u64 = weights.iter().map(|w| *w as u64).sum();
    let raw: Vec<u64> = weights
        .iter()
        .map(|w| {
            // All-zero weights (total 0): one slot each.
            (*w as u64 * WHEEL_RESOLUTION)
                .checked_div(total)
                .map_or(1, |s| s.max(1))
        })
        .collect();
    let g = raw.iter().copied().fold(0, gcd).max(1);
    raw.into_iter().map(|s| s / g).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Interleaves hosts by share (nginx's smooth weighted round robin, run once).
fn build_wheel(shares: &[u64]) -> Vec<u16> {
    let total: u64 = shares.iter().sum();
    let mut current = vec![0i64; shares.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, s) in shares.iter().enumerate() {
            current[i] += *s as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        wheel.push(best as u16);
    }
    wheel
}

impl HostSet {
    pub fn empty() -> HostSet {
        HostSet {
            hosts: Vec::new(),
            wheel: Vec::new(),
            ring: None,
            ring_points: 0,
        }
    }

    /// Builds the set; at most `u16::MAX` hosts are kept.
    pub fn new(mut hosts: Vec<Host>, balance: Balance) -> HostSet {
        hosts.truncate(u16::MAX as usize);
        let weights: Vec<u32> = hosts.iter().map(|h| h.weight).collect();
        let shares = shares(&weights);
        let wheel = build_wheel(&shares);
        let (ring, ring_points) = if balance == Balance::ConsistentHash && !hosts.is_empty() {
            let buckets: Vec<Bucket> = hosts
                .iter()
                .zip(&shares)
                .map(|(h, s)| Bucket::new(h.addr, (*s).clamp(1, 64) as u32))
                .collect();
            let points = buckets.len() * 64 * 160;
            (Some(Continuum::new(&buckets)), points)
        } else {
            (None, 0)
        };
        HostSet {
            hosts,
            wheel,
            ring,
            ring_points,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn usable(&self, i: usize, tried: &[SocketAddr], now_ms: u64) -> bool {
        let h = &self.hosts[i];
        h.health.is_healthy(now_ms) && !tried.contains(&h.addr)
    }

    /// Walks the wheel from `start` to the first usable host.
    pub fn from_wheel(&self, start: usize, tried: &[SocketAddr], now_ms: u64) -> Option<&Host> {
        let n = self.wheel.len();
        (0..n)
            .map(|k| self.wheel[(start.wrapping_add(k)) % n] as usize)
            .find(|i| self.usable(*i, tried, now_ms))
            .map(|i| &self.hosts[i])
    }

    /// The first usable host on the ring from `key`'s point (then any usable host).
    pub fn from_ring(&self, key: &[u8], tried: &[SocketAddr], now_ms: u64) -> Option<&Host> {
        if let Some(ring) = &self.ring {
            let found = ring.node_iter(key).take(self.ring_points).find_map(|addr| {
                let i = self.hosts.iter().position(|h| h.addr == *addr)?;
                self.usable(i, tried, now_ms).then_some(i)
            });
            if let Some(i) = found {
                return Some(&self.hosts[i]);
            }
        }
        self.from_wheel(0, tried, now_ms)
    }

    /// Whether any usable host exists.
    pub fn any_usable(&self, tried: &[SocketAddr], now_ms: u64) -> bool {
        (0..self.hosts.len()).any(|i| self.usable(i, tried, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(weights: &[u32], balance: Balance) -> HostSet {
        let hosts = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Host {
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                weight: *w,
                health: Arc::new(HostHealth::default()),
            })
            .collect();
        HostSet::new(hosts, balance)
    }

    fn counts(s: &HostSet) -> Vec<usize> {
        let mut c = vec![0; s.len()];
        for k in 0..s.wheel.len() {
            let h = s.from_wheel(k, &[], 1).unwrap();
            c[(h.addr.port() - 1000) as usize] += 1;
        }
        c
    }

    #[test]
    fn weights_share_the_wheel() {
        assert_eq!(shares(&[1, 1, 1]), vec![1, 1, 1]);
        assert_eq!(shares(&[1, 2]), vec![1, 2]);
        assert_eq!(shares(&[0, 0]), vec![1, 1], "all zero = equal shares");
        let s = shares(&[0, 10]);
        assert_eq!(s[0], 1, "weight 0 keeps one slot");
        assert!(s[1] > 100 * s[0]);
        assert_eq!(counts(&set(&[1, 3], Balance::RoundRobin)), vec![1, 3]);
    }

    #[test]
    fn wheel_is_interleaved() {
        let s = set(&[1, 1, 2], Balance::RoundRobin);
        let order: Vec<usize> = s.wheel.iter().map(|i| *i as usize).collect();
        assert_eq!(order.len(), 4);
        assert_ne!(
            order[0], order[1],
            "no two picks of the heavy host in a row"
        );
    }

    #[test]
    fn unhealthy_and_tried_hosts_are_skipped() {
        let s = set(&[1, 1, 1], Balance::RoundRobin);
        s.hosts[1].health.record_connect_failure(1, true);
        s.hosts[1].health.record_connect_failure(1, true);
        s.hosts[1].health.record_connect_failure(1, true);
        for k in 0..6 {
            assert_ne!(s.from_wheel(k, &[], 2).unwrap().addr.port(), 1001);
        }
        let a0 = s.hosts[0].addr;
        let a2 = s.hosts[2].addr;
        assert_eq!(s.from_wheel(0, &[a0], 2).unwrap().addr, a2);
        assert!(s.from_wheel(0, &[a0, a2], 2).is_none());
        assert!(!s.any_usable(&[a0, a2], 2));
    }

    #[test]
    fn consistent_hash_is_sticky_and_fails_over() {
        let s = set(&[1, 1, 1, 1], Balance::ConsistentHash);
        let first = s.from_ring(b"client-7", &[], 1).unwrap().addr;
        for _ in 0..10 {
            assert_eq!(s.from_ring(b"client-7", &[], 1).unwrap().addr, first);
        }
        // Keys spread over several hosts.
        let distinct: std::collections::BTreeSet<_> = (0..64)
            .map(|k| {
                s.from_ring(format!("k{k}").as_bytes(), &[], 1)
                    .unwrap()
                    .addr
            })
            .collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
        // The chosen host fails: another one, and the same one for every retry of this key.
        let other = s.from_ring(b"client-7", &[first], 1).unwrap().addr;
        assert_ne!(other, first);
        assert_eq!(s.from_ring(b"client-7", &[first], 1).unwrap().addr, other);
    }
}
