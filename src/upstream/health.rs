//! Health of one host address: active HTTP checks with thresholds, and passive ejection after
//! repeated connect failures. Time is a millisecond count (`clock::now_ms` in production),
//! so tests drive it exactly.
//!
//! - Active: `unhealthy_after` consecutive failed checks mark a healthy host unhealthy;
//!   `healthy_after` consecutive passed checks bring it back. Hosts start healthy.
//! - Passive: `EJECT_AFTER` consecutive connect failures eject the host for `EJECT_FOR`; then
//!   it is tried again (one more connect failure ejects it again at once). Any response from
//!   the host resets the count. The backend decides whether an ejection may happen at all
//!   (never its last healthy host, never more than half of its hosts: see `Backend`); a host
//!   that may not be ejected keeps its count and is ejected by the first failure after that
//!   changes.
//!
//! A request reads two atomics: no lock on the hot path.

use crate::config::HealthCheckConfig;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Consecutive connect failures that eject a host.
pub const EJECT_AFTER: u32 = 3;
/// How long an ejected host is skipped before it is tried again.
pub const EJECT_FOR_MS: u64 = 5_000;

#[derive(Debug)]
pub struct HostHealth {
    /// Verdict of active checks (true when none run).
    active_ok: AtomicBool,
    /// Consecutive active results that disagree with `active_ok`.
    streak: AtomicU32,
    /// Consecutive connect failures.
    connect_failures: AtomicU32,
    /// Ejected until this `now_ms` (0 = not ejected).
    ejected_until: AtomicU64,
}

impl Default for HostHealth {
    fn default() -> Self {
        HostHealth {
            active_ok: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            connect_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }
}

impl HostHealth {
    /// Whether requests may go to this host at `now_ms`.
    pub fn is_healthy(&self, now_ms: u64) -> bool {
        self.active_ok.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now_ms
    }

    pub fn active_ok(&self) -> bool {
        self.active_ok.load(Ordering::Relaxed)
    }

    /// Records an active check; returns `Some(new verdict)` when it flipped.
    /// Only the backend's single checker task calls this for a host.
    pub fn record_check(&self, ok: bool, cfg: &HealthCheckConfig) -> Option<bool> {
        if ok == self.active_ok.load(Ordering::Relaxed) {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let n = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok {
            cfg.healthy_after
        } else {
            cfg.unhealthy_after
        };
        if n >= needed {
            self.active_ok.store(ok, Ordering::Relaxed);
            self.streak.store(0, Ordering::Relaxed);
            if ok {
                // A host that passes its checks is no longer ejected either.
                self.ejected_until.store(0, Ordering::Relaxed);
                self.connect_failures.store(0, Ordering::Relaxed);
            }
            Some(ok)
        } else {
            None
        }
    }

    /// Forgets active results (the backend no longer has active checks).
    pub fn reset_active(&self) {
        self.active_ok.store(true, Ordering::Relaxed);
        self.streak.store(0, Ordering::Relaxed);
    }

    /// Whether the host is passively ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Records a connect failure at `now_ms`; returns true when it ejects the host, which
    /// happens only when `may_eject`.
    pub fn record_connect_failure(&self, now_ms: u64, may_eject: bool) -> bool {
        let n = self.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= EJECT_AFTER && may_eject {
            self.ejected_until
                .store(now_ms + EJECT_FOR_MS, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The host answered: the connect-failure count starts again.
    pub fn record_response(&self) {
        if self.connect_failures.load(Ordering::Relaxed) != 0 {
            self.connect_failures.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> HealthCheckConfig {
        HealthCheckConfig {
            path: "/health".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
        }
    }

    #[test]
    fn active_thresholds() {
        let h = HostHealth::default();
        let c = cfg();
        assert!(h.is_healthy(1));
        assert_eq!(h.record_check(false, &c), None);
        assert_eq!(h.record_check(false, &c), None);
        assert_eq!(h.record_check(true, &c), None, "a pass breaks the streak");
        assert_eq!(h.record_check(false, &c), None);
        assert_eq!(h.record_check(false, &c), None);
        assert_eq!(h.record_check(false, &c), Some(false));
        assert!(!h.is_healthy(1));
        assert_eq!(h.record_check(true, &c), None);
        assert!(!h.is_healthy(1));
        assert_eq!(h.record_check(true, &c), Some(true));
        assert!(h.is_healthy(1));
    }

    #[test]
    fn passive_ejection_and_return() {
        let h = HostHealth::default();
        assert!(!h.record_connect_failure(100, true));
        assert!(!h.record_connect_failure(100, true));
        h.record_response();
        assert!(!h.record_connect_failure(100, true));
        assert!(!h.record_connect_failure(100, true));
        assert!(h.record_connect_failure(100, true));
        assert!(!h.is_healthy(100));
        assert!(!h.is_healthy(100 + EJECT_FOR_MS - 1));
        assert!(
            h.is_healthy(100 + EJECT_FOR_MS),
            "tried again after the ejection"
        );
        // Still failing: one more failure ejects it again.
        assert!(h.record_connect_failure(100 + EJECT_FOR_MS, true));
        assert!(!h.is_healthy(101 + EJECT_FOR_MS));
    }

    #[test]
    fn a_host_that_may_not_be_ejected_keeps_its_count() {
        let h = HostHealth::default();
        for _ in 0..5 {
            assert!(!h.record_connect_failure(100, false));
        }
        assert!(h.is_healthy(100));
        assert!(
            h.record_connect_failure(100, true),
            "ejected once it may be"
        );
        assert!(h.is_ejected(101));
    }
}
