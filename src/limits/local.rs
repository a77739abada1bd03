//! The in-memory store of per-client buckets: exact, sharded, bounded.
//!
//! - Exact: one entry per client key (no shared sketch, so no client is ever limited by
//!   another's traffic). A key is a `u128` (see `policy::ClientKey`).
//! - Sharded: `SHARDS` hash tables (hashbrown), each behind its own mutex, chosen by the key's
//!   hash (computed once per check); a lock is held for one probe, never across an await.
//! - Bounded: an entry is only the bucket's TAT (8 bytes) under its 16-byte key. A bucket whose
//!   TAT has passed is full, which is exactly what an absent entry means, so dropping it is
//!   invisible: a shard sweeps such entries whenever it is about to grow (amortised O(1)).
//!   Past `max_clients` (all of them active at once), the buckets at least half refilled are
//!   dropped, then, if need be, arbitrary ones down to 7/8 of the shard's bound (so that the
//!   next sweep is many inserts away): those clients come back with a full bucket.

use super::bucket::{Gcra, Outcome};
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;
/// Default bound on tracked clients per bucket set (give or take the shards' imbalance).
pub const DEFAULT_MAX_CLIENTS: usize = 1_000_000;

/// A client key, as two words (8-byte alignment keeps an entry at 24 bytes, not 32).
pub type Key = [u64; 2];

/// One entry: the client's key and its bucket's TAT.
type Entry = (Key, u64);

struct Shard {
    table: HashTable<Entry>,
    /// Full-table sweeps made so far (tests check they stay amortised).
    #[cfg(test)]
    sweeps: usize,
}

pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    /// Seeded per store; one hash per check picks the shard (bits 32..38) and the slot
    /// (hashbrown uses the low bits and the top 7), so the two never correlate.
    hasher: foldhash::fast::FixedState,
    max_per_shard: usize,
}

impl LocalStore {
    pub fn new(max_clients: usize) -> LocalStore {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    table: HashTable::new(),
                    #[cfg(test)]
                    sweeps: 0,
                })
            })
            .collect();
        LocalStore {
            shards,
            hasher: foldhash::fast::FixedState::with_seed(fastrand::u64(..)),
            // a quarter of slack for the hash's imbalance between shards
            max_per_shard: (max_clients / SHARDS + max_clients / SHARDS / 4).max(1),
        }
    }

    #[inline]
    fn hash(&self, key: &Key) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Takes one token from `key`'s bucket at `now`.
    #[inline]
    pub fn check(&self, key: Key, g: &Gcra, now: u64) -> Outcome {
        let hash = self.hash(&key);
        let shard = &self.shards[(hash >> 32) as usize & (SHARDS - 1)];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, tat)) = shard.table.find_mut(hash, |(k, _)| *k == key) {
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
        let rehash = |e: &Entry| self.hash(&e.0);
        shard.make_room(now, g.burst, self.max_per_shard, rehash);
        shard.table.insert_unique(hash, (key, new), rehash);
        g.admitted(new, now)
    }

    /// Number of clients tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).table.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the tables (24-byte entries plus one control byte per bucket, plus the
    /// shard headers): what a million clients cost.
    pub fn memory_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<Entry>() + 1;
        let headers = self.shards.len() * std::mem::size_of::<Mutex<Shard>>();
        headers
            + self
                .shards
                .iter()
                .map(|s| {
                    let cap = s.lock().unwrap_or_else(|e| e.into_inner()).table.capacity();
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
    /// Before inserting: if the table is about to reallocate, first drop full buckets (they
    /// are equivalent to absent ones); grow only when that did not free enough, so sweeps
    /// stay amortised O(1) per insert. Past the bound, forget the buckets at least half
    /// refilled, then arbitrary ones down to 7/8 of the bound (amortised too).
    fn make_room(&mut self, now: u64, burst: u64, max: usize, rehash: impl Fn(&Entry) -> u64) {
        let len = self.table.len();
        if len < self.table.capacity() && len < max {
            return;
        }
        #[cfg(test)]
        {
            self.sweeps += 1;
        }
        let t = &mut self.table;
        t.retain(|(_, tat)| *tat > now);
        let len = t.len();
        if len >= max {
            // Everyone here is active. Forget those at least half refilled first, then any,
            // down to 7/8 of the bound: the next sweep is then max/8 inserts away (evicting
            // only one would scan the whole table again on the very next new client).
            let half = now.saturating_add(burst / 2);
            t.retain(|(_, tat)| *tat > half);
            let low = max - max / 8;
            let mut excess = (t.len() + 1).saturating_sub(low);
            t.retain(|_| {
                let keep = excess == 0;
                excess = excess.saturating_sub(1);
                keep
            });
        } else if len * 2 >= t.capacity() {
            // The sweep freed little: grow now, so the next sweep is len inserts away.
            t.reserve(len.max(16), &rehash);
        }
        let cap = t.capacity();
        if cap > 64 && t.len() * 8 < cap {
            t.shrink_to(t.len() * 2, &rehash);
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
    fn concurrent_checks_of_one_client_admit_exactly_capacity() {
        let g = Gcra::new(1, 500, Duration::from_secs(3600));
        let s = LocalStore::new(DEFAULT_MAX_CLIENTS);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                let (s, g, admitted) = (&s, &g, &admitted);
                sc.spawn(move || {
                    for i in 0..1000u64 {
                        // one shared client, and a private one per thread
                        if s.check([9, 9], g, S).allowed {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        s.check([t, i], g, S);
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 500);
        assert_eq!(s.len(), 4001);
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

    /// At the bound, with clients that stay more than half empty (capacity 1), a new client
    /// must not cost a scan of its whole table every time: sweeps stay amortised.
    #[test]
    fn eviction_at_the_bound_is_amortised() {
        let g = Gcra::new(1, 1, Duration::from_secs(3600));
        let max = SHARDS * 100;
        let s = LocalStore::new(max);
        let inserts = max as u64 * 3;
        for i in 0..inserts {
            assert!(s.check([i, 1], &g, 0).allowed);
        }
        assert!(s.len() <= max * 5 / 4, "{} > {max}", s.len());
        assert!(s.len() >= max / 2, "{}", s.len());
        let sweeps: usize = s.shards.iter().map(|sh| sh.lock().unwrap().sweeps).sum();
        assert!(
            sweeps as u64 <= inserts / 8,
            "{sweeps} sweeps for {inserts} inserts"
        );
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
