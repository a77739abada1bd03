//! A backend: its hosts and the balancing between them. The `Backend` value is kept across
//! reloads while its config is unchanged, so its state (round-robin position, and later
//! breakers, buckets, health) survives.

use crate::config::{BackendConfig, Balance};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub cfg: BackendConfig,
    rr: AtomicUsize,
}

impl Backend {
    pub fn new(name: &str, cfg: BackendConfig) -> Backend {
        Backend {
            name: name.to_string(),
            cfg,
            rr: AtomicUsize::new(0),
        }
    }

    /// Picks a host not in `tried` (a retry goes to another host), or `None`.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let hosts = &self.cfg.hosts;
        let n = hosts.len();
        if n == 0 {
            return None;
        }
        let start = match self.cfg.balance {
            Balance::RoundRobin => self.rr.fetch_add(1, Ordering::Relaxed),
            Balance::Random => fastrand::usize(..n),
        };
        (0..n)
            .map(|i| hosts[(start + i) % n])
            .find(|h| !tried.contains(h))
    }

    /// Whether a host other than those in `tried` exists.
    pub fn has_untried(&self, tried: &[SocketAddr]) -> bool {
        self.cfg.hosts.iter().any(|h| !tried.contains(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(hosts: &[&str], balance: Balance) -> BackendConfig {
        BackendConfig {
            hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
            balance,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_idle_connections: 1,
            retries: 1,
            host_header: None,
            tls: None,
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
        let picks: Vec<u16> = (0..6).map(|_| b.select(&[]).unwrap().port()).collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn retry_skips_tried_hosts() {
        let b = Backend::new("b", cfg(&["127.0.0.1:1", "127.0.0.1:2"], Balance::Random));
        let first = b.select(&[]).unwrap();
        for _ in 0..20 {
            assert_ne!(b.select(&[first]).unwrap(), first);
        }
        let other = b.select(&[first]).unwrap();
        assert_eq!(b.select(&[first, other]), None);
        assert!(!b.has_untried(&[first, other]));
    }
}
