//! The in-memory store of per-client buckets: exact, sharded, bounded.
//!
//! - Exact: one entry per client key (no shared sketch, so no client is ever limited by
//!   another's traffic). A key is a `u128` (see `policy::ClientKey`).
//! - Sharded: `SHARDS` maps, each behind its own mutex, chosen by the key's hash; a lock is
//!   held for one hash-map probe and never across an await.
//! - Bounded: an entry is only the bucket's TAT (8 bytes) under its 16-byte key. A bucket whose
//!   TAT has passed is full, which is exactly what an absent entry means, so dropping it is
//!   invisible: a shard sweeps such entries whenever it is about to grow (amortised O(1)).
//!   Past `max_clients` (all of them active at once), the most refilled half-full buckets are
//!   dropped, then, if need be, arbitrary ones: those clients come back with a full bucket.

use super::bucket::{Gcra, Outcome};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;
/// Default bound on tracked clients per bucket set (give or take the shards' imbalance).
pub const DEFAULT_MAX_CLIENTS: usize = 1_000_000;

/// A client key, as two words (8-byte alignment keeps an entry at 24 bytes, not 32).
pub type Key = [u64; 2];

type Hash = foldhash::fast::FixedState;

struct Shard {
    map: HashMap<Key, u64, Hash>,
}

pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard; independent of the maps' own hashing.
    picker: foldhash::fast::RandomState,
    max_per_shard: usize,
}

impl LocalStore {
    pub fn new(max_clients: usize) -> LocalStore {
        let seed = fastrand::u64(..);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_hasher(Hash::with_seed(seed)),
                })
            })
            .collect();
        LocalStore {
            shards,
            picker: foldhash::fast::RandomState::default(),
            // a quarter of slack for the hash's imbalance between shards
            max_per_shard: (max_clients / SHARDS + max_clients / SHARDS / 4).max(1),
        }
    }

    #[inline]
    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let mut h = self.picker.build_hasher();
        h.write_u64(key[0]);
        h.write_u64(key[1]);
        // high bits: the maps use the low ones
        &self.shards[(h.finish() >> 58) as usize & (SHARDS - 1)]
    }

    /// Takes one token from `key`'s bucket at `now`.
    #[inline]
    pub fn check(&self, key: Key, g: &Gcra, now: u64) -> Outcome {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tat) = shard.map.get_mut(&key) {
            return match g.decide(*tat, now) {
                Ok(new) => {
                    *tat = new;
                    g.admitted(new, now)
                }
                Err(wait) => Gcra::rejected(wait),
            };
        }
        // Absent = full bucket: admitted (capacity >= 1).
        let new = match g.decide(0, now) {
            Ok(new) => new,
            Err(wait) => return Gcra::rejected(wait),
        };
        shard.make_room(now, g.burst, self.max_per_shard);
        shard.map.insert(key, new);
        g.admitted(new, now)
    }

    /// Number of clients tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the maps (buckets of 24-byte entries plus one control byte each, plus
    /// the shard headers): what a million clients cost.
    pub fn memory_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<(Key, u64)>() + 1;
        let headers = self.shards.len() * std::mem::size_of::<Mutex<Shard>>();
        headers
            + self
                .shards
                .iter()
                .map(|s| {
                    let cap = s.lock().unwrap_or_else(|e| e.into_inner()).map.capacity();
                    // hashbrown keeps capacity at 7/8 of its power-of-two bucket count
                    if cap == 0 {
                        0
                    } else {
                        (cap * 8 / 7).next_power_of_two() * per_bucket
                    }
                })
                .sum::<usize>()
    }
}

impl Shard {
    /// Before inserting: if the map is about to reallocate, first drop full buckets (they
    /// are equivalent to absent ones); grow only when that did not free enough, so sweeps
    /// stay amortised O(1) per insert. Past the bound, forget the most refilled buckets.
    fn make_room(&mut self, now: u64, burst: u64, max: usize) {
        let len = self.map.len();
        if len < self.map.capacity() && len < max {
            return;
        }
        self.map.retain(|_, tat| *tat > now);
        let len = self.map.len();
        if len >= max {
            // Everyone here is active. Forget those at least half refilled first.
            let half = now.saturating_add(burst / 2);
            self.map.retain(|_, tat| *tat > half);
            while self.map.len() >= max {
                let Some(k) = self.map.keys().next().copied() else {
                    break;
                };
                self.map.remove(&k);
            }
        } else if len * 2 >= self.map.capacity() {
            // The sweep freed little: grow now, so the next sweep is len inserts away.
            self.map.reserve(len.max(16));
        }
        let cap = self.map.capacity();
        if cap > 64 && self.map.len() * 8 < cap {
            self.map.shrink_to(self.map.len() * 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    #[test]
    fn clients_have_their_own_buckets() {
        let g = Gcra::new(1, 2, Duration::from_secs(1));
        let s = LocalStore::new(DEFAULT_MAX_CLIENTS);
        let a = [1, 0];
        let b = [2, 0];
        assert!(s.check(a, &g, 0).allowed);
        assert!(s.check(a, &g, 0).allowed);
        assert!(!s.check(a, &g, 0).allowed);
        assert!(s.check(b, &g, 0).allowed);
        assert!(s.check(b, &g, 0).allowed);
        assert!(!s.check(b, &g, 0).allowed);
        assert!(s.check(a, &g, S).allowed, "refilled after T");
    }

    #[test]
    fn full_buckets_are_swept_when_the_map_would_grow() {
        let g = Gcra::new(1, 1, Duration::from_secs(1));
        let s = LocalStore::new(DEFAULT_MAX_CLIENTS);
        for i in 0..10_000u64 {
            assert!(s.check([i, 7], &g, 0).allowed);
        }
        assert_eq!(s.len(), 10_000);
        // ten seconds later every bucket is full again; new clients push the old ones out
        for i in 0..10_000u64 {
            assert!(s.check([i, 8], &g, 10 * S).allowed);
        }
        assert!(s.len() < 15_000, "swept: {}", s.len());
        // and an old client is back with a full bucket: one token, then rejected
        assert!(s.check([3, 7], &g, 10 * S).allowed);
        assert!(!s.check([3, 7], &g, 10 * S).allowed);
    }

    #[test]
    fn bounded_when_every_client_is_active() {
        let g = Gcra::new(1, 5, Duration::from_secs(3600));
        let max = SHARDS * 100;
        let s = LocalStore::new(max);
        for i in 0..(max as u64 * 3) {
            s.check([i, 1], &g, 0);
        }
        assert!(s.len() <= max * 5 / 4, "{} > {max}", s.len());
        assert!(s.len() >= max / 2, "{}", s.len());
    }

    #[test]
    fn a_million_clients_fit_in_128_mib() {
        let g = Gcra::new(50, 50, Duration::from_secs(1));
        let s = LocalStore::new(DEFAULT_MAX_CLIENTS);
        for i in 0..1_000_000u64 {
            // IPv4-like keys, all active at the same instant
            s.check([0, (1 << 32) | i], &g, 0);
        }
        assert_eq!(s.len(), 1_000_000);
        let bytes = s.memory_bytes();
        assert!(bytes <= 128 << 20, "{bytes} bytes");
        eprintln!(
            "1M clients: {} bytes ({:.1} bytes/client)",
            bytes,
            bytes as f64 / 1e6
        );
    }
}
