//! A backend: its hosts (static or discovered), their health, the balancing between them and
//! the backend's circuit breaker. The `Backend` value is kept across reloads while its config
//! is unchanged, so all that state survives; when it changed, host health (by address) and the
//! last discovered hosts (when discovery is unchanged) are carried over from the previous one.

use super::balance::{Host, HostSet};
use super::breaker::{Admit, Breaker, Pass};
use super::health::HostHealth;
use crate::config::{BackendConfig, Balance, Discovery};
use crate::reject::{Reason, Reject};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub cfg: BackendConfig,
    rr: AtomicUsize,
    hosts: ArcSwap<HostSet>,
    /// Health by address, shared with the previous `Backend` of the same name.
    health: Mutex<HashMap<SocketAddr, Arc<HostHealth>>>,
    pub breaker: Option<Arc<Breaker>>,
    /// Background work: when discovery and health checks are next due.
    pub(crate) schedule: Mutex<Schedule>,
    /// Its `gatehouse_upstream_latency_seconds` histogram, looked up once.
    pub latency: prometheus::Histogram,
    /// Requests admitted to this backend that have not ended yet (the admin `/status`).
    in_flight: AtomicUsize,
}

/// One request in flight to a backend, counted from the backend's gate to the request's end
/// (when the request's context, which holds it, is dropped).
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn enter(backend: &Arc<Backend>) -> InFlight {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(backend))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub next_discovery: Instant,
    pub discovery_running: bool,
    pub next_health: Instant,
    pub health_running: bool,
}

impl Backend {
    pub fn new(name: &str, cfg: BackendConfig) -> Backend {
        Backend::new_after(name, cfg, None)
    }

    /// Builds a backend, carrying over what `previous` (same name, other config) learnt.
    pub fn new_after(name: &str, cfg: BackendConfig, previous: Option<&Backend>) -> Backend {
        let now = Instant::now();
        let health = previous
            .map(|p| p.lock_health().clone())
            .unwrap_or_default();
        if cfg.health_check.is_none() {
            health.values().for_each(|h| h.reset_active());
        }
        let breaker = cfg
            .circuit_breaker
            .clone()
            .map(|c| Breaker::new(name, c, now));
        let mut schedule = Schedule {
            next_discovery: now,
            discovery_running: false,
            next_health: now,
            health_running: false,
        };
        let b = Backend {
            name: name.to_string(),
            rr: AtomicUsize::new(0),
            hosts: ArcSwap::from_pointee(HostSet::empty()),
            health: Mutex::new(health),
            breaker,
            schedule: Mutex::new(schedule.clone()),
            latency: crate::metrics::metrics()
                .upstream_latency
                .with_label_values(&[name]),
            cfg,
            in_flight: AtomicUsize::new(0),
        };
        match (&b.cfg.discovery, previous) {
            (Discovery::Static(list), _) => {
                b.set_hosts(list.iter().map(|a| (*a, 1)).collect());
            }
            (d, Some(p)) if *d == p.cfg.discovery => {
                // Same discovery: keep the last good hosts and the refresh rhythm.
                let hosts: Vec<(SocketAddr, u32)> =
                    p.hosts().hosts.iter().map(|h| (h.addr, h.weight)).collect();
                b.set_hosts(hosts);
                let ps = p.lock_schedule();
                schedule.next_discovery = ps.next_discovery;
            }
            _ => {}
        }
        *b.lock_schedule() = schedule;
        if b.breaker.is_none() {
            // No breaker (any more): the metric says closed.
            crate::metrics::metrics()
                .breaker_state
                .with_label_values(&[name])
                .set(0);
        }
        b
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<HostHealth>>> {
        // Plain data stays consistent even if a holder panicked.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests to this backend in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current hosts (a cheap, lock-free snapshot).
    pub fn hosts(&self) -> arc_swap::Guard<Arc<HostSet>> {
        self.hosts.load()
    }

    /// Replaces the hosts (discovery); health is kept per address.
    pub fn set_hosts(&self, mut list: Vec<(SocketAddr, u32)>) {
        list.sort();
        list.dedup_by_key(|(a, _)| *a);
        let mut reg = self.lock_health();
        let hosts: Vec<Host> = list
            .iter()
            .map(|(addr, weight)| Host {
                addr: *addr,
                weight: *weight,
                health: reg.entry(*addr).or_default().clone(),
            })
            .collect();
        reg.retain(|a, _| list.iter().any(|(b, _)| b == a));
        drop(reg);
        self.hosts
            .store(Arc::new(HostSet::new(hosts, self.cfg.balance)));
    }

    /// Whether a request may go upstream now: a healthy host exists, then the breaker admits
    /// (its pass, if it has one, reports the request's outcome).
    pub fn gate(&self, now: Instant, now_ms: u64) -> Result<Option<Pass>, Reject> {
        if !self.has_untried(&[], now_ms) {
            return Err(Reject::new(Reason::NoHealthyHost).retry_after(1));
        }
        match &self.breaker {
            None => Ok(None),
            Some(b) => match b.admit(now) {
                Admit::Pass(p) => Ok(Some(p)),
                Admit::Reject { retry_after } => Err(Reject::new(Reason::CircuitOpen)
                    .retry_after(retry_after.as_secs_f64().ceil() as u64)),
            },
        }
    }

    /// Picks a healthy host not in `tried` (a retry goes to another host), or `None`.
    /// `key` is the consistent-hash key (ignored by the other strategies).
    pub fn select(&self, key: &[u8], tried: &[SocketAddr], now_ms: u64) -> Option<SocketAddr> {
        let set = self.hosts.load();
        let n = set.len();
        if n == 0 {
            return None;
        }
        let host = match self.cfg.balance {
            Balance::RoundRobin => {
                set.from_wheel(self.rr.fetch_add(1, Ordering::Relaxed), tried, now_ms)
            }
            Balance::Random => set.from_wheel(fastrand::usize(..usize::MAX), tried, now_ms),
            Balance::ConsistentHash => set.from_ring(key, tried, now_ms),
        };
        host.map(|h| h.addr)
    }

    /// Whether a healthy host other than those in `tried` exists.
    pub fn has_untried(&self, tried: &[SocketAddr], now_ms: u64) -> bool {
        self.hosts.load().any_usable(tried, now_ms)
    }

    /// Passive health: a connect to `addr` failed. Returns true when it ejected the host.
    ///
    /// The rule, in the spirit of Envoy's `max_ejection_percent`: an ejection may leave
    /// neither the backend without a healthy host (a one-host backend is never ejected:
    /// failing fast with 503 would turn a burst of slow connects into an outage), nor more
    /// than half of its hosts ejected at once (rounded down). Connect failures of a host
    /// that may not be ejected still count, and still fail their request.
    pub fn connect_failed(&self, addr: SocketAddr, now_ms: u64) -> bool {
        // Serialises ejection decisions, so two hosts failing at once cannot both take the
        // last places.
        let _decide = self.lock_health();
        let set = self.hosts.load();
        let Some(host) = set.hosts.iter().find(|h| h.addr == addr) else {
            return false;
        };
        let ejected = set
            .hosts
            .iter()
            .filter(|h| h.health.is_ejected(now_ms))
            .count();
        let others_healthy = set
            .hosts
            .iter()
            .any(|h| h.addr != addr && h.health.is_healthy(now_ms));
        let may_eject = others_healthy && (ejected + 1) * 2 <= set.hosts.len();
        let ejected = host.health.record_connect_failure(now_ms, may_eject);
        if ejected {
            log::warn!(
                "backend {:?}: host {addr} ejected for {}ms after {} connect failures",
                self.name,
                super::health::EJECT_FOR_MS,
                super::health::EJECT_AFTER
            );
        }
        ejected
    }

    /// Passive health: `addr` answered.
    pub fn responded(&self, addr: SocketAddr) {
        let set = self.hosts.load();
        if let Some(h) = set.hosts.iter().find(|h| h.addr == addr) {
            h.health.record_response();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashKey;
    use std::time::Duration;

    pub(crate) fn cfg(hosts: &[&str], balance: Balance) -> BackendConfig {
        BackendConfig {
            discovery: Discovery::Static(hosts.iter().map(|h| h.parse().unwrap()).collect()),
            balance,
            hash_key: HashKey::ClientIp,
            health_check: None,
            circuit_breaker: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            tunnel_idle_timeout: Duration::from_secs(1),
            max_idle_connections: 1,
            retries: 1,
            host_header: None,
            tls: None,
            protocol: Default::default(),
        }
    }

    #[test]
    fn round_robin_cycles() {
        let b = Backend::new(
            "b",
            cfg(
                &["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                Balance::RoundRobin,
            ),
        );
        let picks: Vec<u16> = (0..6)
            .map(|_| b.select(b"", &[], 1).unwrap().port())
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn retry_skips_tried_hosts() {
        let b = Backend::new("b", cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::Random));
        let first = b.select(b"", &[], 1).unwrap();
        for _ in 0..20 {
            assert_ne!(b.select(b"", &[first], 1).unwrap(), first);
        }
        let other = b.select(b"", &[first], 1).unwrap();
        assert_eq!(b.select(b"", &[first, other], 1), None);
        assert!(!b.has_untried(&[first, other], 1));
    }

    #[test]
    fn ejected_host_is_skipped_until_it_may_be_tried_again() {
        let b = Backend::new(
            "b",
            cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::RoundRobin),
        );
        let bad: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!b.connect_failed(bad, 10));
        assert!(!b.connect_failed(bad, 10));
        assert!(b.connect_failed(bad, 10));
        for _ in 0..4 {
            assert_eq!(b.select(b"", &[], 11).unwrap().port(), 2);
        }
        let later = 10 + super::super::health::EJECT_FOR_MS;
        let picks: Vec<u16> = (0..2)
            .map(|_| b.select(b"", &[], later).unwrap().port())
            .collect();
        assert!(picks.contains(&1));
    }

    #[test]
    fn passive_ejection_never_takes_the_last_host_nor_more_than_half() {
        let fail3 = |b: &Backend, port: u16| {
            let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            (0..3).fold(false, |_, _| b.connect_failed(a, 10))
        };
        // one host: never ejected, however often it fails
        let one = Backend::new("one", cfg(&["127.0.0.1:1"], Balance::RoundRobin));
        assert!(!fail3(&one, 1));
        assert!(!fail3(&one, 1));
        assert_eq!(one.select(b"", &[], 11).map(|a| a.port()), Some(1));
        // four hosts: at most two out at once
        let hosts = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"];
        let four = Backend::new("four", cfg(&hosts, Balance::RoundRobin));
        assert!(fail3(&four, 1));
        assert!(fail3(&four, 2));
        assert!(!fail3(&four, 3), "a third of four may not be ejected");
        let picks: std::collections::HashSet<u16> = (0..8)
            .map(|_| four.select(b"", &[], 11).unwrap().port())
            .collect();
        assert_eq!(picks, [3, 4].into_iter().collect());
        // once the first ones may be tried again, the next failure of 3 ejects it
        let later = 10 + super::super::health::EJECT_FOR_MS;
        let a3: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert!(four.connect_failed(a3, later));
    }

    #[test]
    fn passive_ejection_keeps_the_last_host_that_passes_its_checks() {
        let b = Backend::new(
            "b",
            cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::RoundRobin),
        );
        // host 2 is down by its active checks: host 1 is the last healthy one
        let c = crate::config::HealthCheckConfig {
            path: "/h".into(),
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            unhealthy_after: 1,
            healthy_after: 1,
        };
        let set = b.hosts();
        let h2 = set.hosts.iter().find(|h| h.addr.port() == 2).unwrap();
        assert_eq!(h2.health.record_check(false, &c), Some(false));
        let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            assert!(!b.connect_failed(a1, 10));
        }
        assert_eq!(b.select(b"", &[], 11).map(|a| a.port()), Some(1));
    }

    #[test]
    fn health_survives_discovery_refresh_and_config_change() {
        let mut c = cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::RoundRobin);
        let b = Backend::new("b", c.clone());
        let bad: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..3 {
            b.connect_failed(bad, 10);
        }
        b.set_hosts(vec![(bad, 1), ("127.0.0.1:3".parse().unwrap(), 1)]);
        assert!(b
            .hosts()
            .hosts
            .iter()
            .all(|h| h.addr != bad || !h.health.is_healthy(11)));
        c.retries = 2;
        c.discovery = Discovery::Static(vec![bad, "127.0.0.1:3".parse().unwrap()]);
        let next = Backend::new_after("b", c, Some(&b));
        for _ in 0..4 {
            assert_eq!(next.select(b"", &[], 11).unwrap().port(), 3);
        }
    }

    #[test]
    fn a_changed_dns_backend_keeps_its_discovered_hosts() {
        let mut c = cfg(&[], Balance::RoundRobin);
        c.discovery = Discovery::Dns {
            name: "svc.test".into(),
            port: 80,
            refresh: Duration::from_secs(30),
        };
        let b = Backend::new("b", c.clone());
        assert!(b.hosts().is_empty(), "nothing before the first lookup");
        b.set_hosts(vec![("10.0.0.1:80".parse().unwrap(), 1)]);
        c.retries = 3;
        let same_discovery = Backend::new_after("b", c.clone(), Some(&b));
        assert_eq!(same_discovery.hosts().len(), 1);
        c.discovery = Discovery::Dns {
            name: "other.test".into(),
            port: 80,
            refresh: Duration::from_secs(30),
        };
        let other = Backend::new_after("b", c, Some(&b));
        assert!(other.hosts().is_empty(), "another name is looked up afresh");
    }
}
