//! In-flight bounds of the request path: `rate_limit.client_max_concurrent` (per client key)
//! and `endpoints[].max_concurrent` (per endpoint). A request holds its slot in its
//! `RequestLimits` until the request ends, however it ends (answered, client gone, upstream
//! error or timeout, WebSocket closed): the slot is released when the request's context is
//! dropped.
//!
//! The per-client table keeps one entry per client with a request in flight (its count),
//! removed when the client's last request ends, and at most `max_clients` of them: past that,
//! a new client is admitted without being counted, so the table never grows beyond its bound.

use super::local::{Key, SHARDS};
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One shard: a client key and its requests in flight.
type Counts = HashTable<(Key, usize)>;

/// In-flight counts per client key, sharded like the client buckets.
pub struct ClientInflight {
    shards: Box<[Mutex<Counts>]>,
    hasher: foldhash::fast::FixedState,
    max_per_shard: usize,
}

/// What a client's request got from `ClientInflight::acquire`.
pub enum Acquired {
    /// Under the bound: the slot to hold (`None` when the table is full and the client is
    /// not counted).
    Admitted(Option<ClientSlot>),
    /// At the bound; with `keep`, the slot is taken anyway (a dry run counts what it lets
    /// through).
    Full(Option<ClientSlot>),
}

impl ClientInflight {
    pub fn new(max_clients: usize) -> ClientInflight {
        ClientInflight {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(fastrand::u64(..)),
            max_per_shard: (max_clients / SHARDS + max_clients / SHARDS / 4).max(1),
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Counts> {
        self.shards[(hash >> 32) as usize & (SHARDS - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `key` when it has fewer than `max` in flight; at the bound, takes
    /// one only with `keep`.
    pub fn acquire(self: &Arc<Self>, key: Key, max: usize, keep: bool) -> Acquired {
        let hash = self.hasher.hash_one(key);
        let mut t = self.shard(hash);
        let slot = || {
            Some(ClientSlot {
                table: Arc::clone(self),
                key,
                hash,
            })
        };
        if let Some((_, n)) = t.find_mut(hash, |(k, _)| *k == key) {
            if *n >= max {
                if keep {
                    *n += 1;
                    return Acquired::Full(slot());
                }
                return Acquired::Full(None);
            }
            *n += 1;
            return Acquired::Admitted(slot());
        }
        if max == 0 {
            return Acquired::Full(None);
        }
        if t.len() >= self.max_per_shard {
            return Acquired::Admitted(None);
        }
        t.insert_unique(hash, (key, 1), |e| self.hasher.hash_one(e.0));
        Acquired::Admitted(slot())
    }

    /// Requests in flight for `key`.
    pub fn in_flight(&self, key: Key) -> usize {
        let hash = self.hasher.hash_one(key);
        self.shard(hash)
            .find(hash, |(k, _)| *k == key)
            .map_or(0, |(_, n)| *n)
    }

    /// Clients with a request in flight.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One in-flight request of a client; released when dropped.
pub struct ClientSlot {
    table: Arc<ClientInflight>,
    key: Key,
    hash: u64,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.shard(self.hash);
        if let Ok(mut e) = t.find_entry(self.hash, |(k, _)| *k == self.key) {
            let n = &mut e.get_mut().1;
            *n = n.saturating_sub(1);
            if *n == 0 {
                e.remove();
            }
        }
    }
}

/// An endpoint's `max_concurrent`.
pub struct EndpointGate {
    pub max: usize,
    inflight: AtomicUsize,
}

/// One in-flight request of an endpoint; released when dropped.
pub struct EndpointSlot(Arc<EndpointGate>);

impl Drop for EndpointSlot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EndpointGate {
    pub fn new(max: usize) -> EndpointGate {
        EndpointGate {
            max,
            inflight: AtomicUsize::new(0),
        }
    }

    /// A slot, or `None` when `max` requests are in flight.
    pub fn acquire(self: &Arc<Self>) -> Option<EndpointSlot> {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        let slot = EndpointSlot(Arc::clone(self));
        (before < self.max).then_some(slot)
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Acquired) -> Option<ClientSlot> {
        match a {
            Acquired::Admitted(s) => s,
            Acquired::Full(_) => panic!("refused"),
        }
    }

    #[test]
    fn clients_are_counted_apart_and_forgotten_when_idle() {
        let t = Arc::new(ClientInflight::new(1000));
        let a = [0, 1];
        let b = [0, 2];
        let s1 = admitted(t.acquire(a, 2, false));
        let s2 = admitted(t.acquire(a, 2, false));
        assert!(matches!(t.acquire(a, 2, false), Acquired::Full(None)));
        assert_eq!(t.in_flight(a), 2, "a refused request holds no slot");
        let _b1 = admitted(t.acquire(b, 2, false));
        drop(s1);
        assert_eq!(t.in_flight(a), 1);
        let s3 = admitted(t.acquire(a, 2, false));
        // a dry run keeps the slot past the bound
        let Acquired::Full(Some(over)) = t.acquire(a, 2, true) else {
            panic!("kept")
        };
        assert_eq!(t.in_flight(a), 3);
        drop((s2, s3, over));
        assert_eq!(t.in_flight(a), 0);
        assert_eq!(t.len(), 1, "only b is left");
    }

    #[test]
    fn the_table_is_bounded() {
        // 64 shards of at most 1 entry each
        let t = Arc::new(ClientInflight::new(1));
        let slots: Vec<_> = (0..1000u64)
            .map(|i| admitted(t.acquire([i, 0], 1, false)))
            .collect();
        assert!(t.len() <= SHARDS, "{}", t.len());
        assert!(slots.iter().filter(|s| s.is_none()).count() >= 1000 - SHARDS);
        drop(slots);
        assert!(t.is_empty());
    }

    #[test]
    fn endpoint_gate() {
        let g = Arc::new(EndpointGate::new(1));
        let s = g.acquire().unwrap();
        assert!(g.acquire().is_none());
        assert_eq!(g.in_flight(), 1, "the refused request gave its slot back");
        drop(s);
        assert_eq!(g.in_flight(), 0);
        assert!(g.acquire().is_some());
    }
}
