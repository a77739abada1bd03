//! The circuit breaker of a backend (all its hosts together), with injected time.
//!
//! CLOSED counts consecutive failures (connect error, timeout, 5xx); a success resets the
//! count, and so does the end of each `interval` window. More than `max_errors` failures open
//! it. OPEN rejects at once until `timeout` has passed; then the next request becomes the one
//! HALF-OPEN probe (others are still rejected). The probe's success closes the breaker, its
//! failure opens it again for `timeout`. A probe that ends without an outcome (the client went
//! away, no host was available) gives its slot back, so the next request probes instead.
//!
//! The CLOSED fast path is one atomic load on admission and, on success, one more when the
//! failure count is already zero: no lock per request while the backend is healthy.

use crate::config::BreakerConfig;
use log::warn;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Closed,
            1 => State::HalfOpen,
            _ => State::Open,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        }
    }
}

/// Whether a request may go to the backend.
#[derive(Debug)]
pub enum Admit {
    /// Go ahead; report the outcome with the pass.
    Pass(Pass),
    /// Fail fast; retry after this long (at least one second).
    Reject { retry_after: Duration },
}

/// Proof of admission, kept in the request context. Dropping a probe's pass without a
/// reported outcome releases the probe slot.
#[derive(Debug)]
pub struct Pass {
    probe: Option<Probe>,
}

#[derive(Debug)]
struct Probe {
    breaker: Arc<Breaker>,
    generation: u64,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.breaker.release(self.generation);
    }
}

impl Pass {
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

#[derive(Debug)]
struct Inner {
    /// Consecutive failures in the current CLOSED window.
    failures: u32,
    window_start: Instant,
    opened_at: Instant,
    probe_in_flight: bool,
    /// Bumped on each state change: a stale probe's outcome or release is ignored.
    generation: u64,
}

#[derive(Debug)]
pub struct Breaker {
    pub cfg: BreakerConfig,
    /// Backend name, for logs and the state metric.
    name: String,
    state: AtomicU8,
    /// Mirror of `Inner::failures` so a success in CLOSED needs no lock when it is zero.
    failures_hint: AtomicU32,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(name: &str, cfg: BreakerConfig, now: Instant) -> Arc<Breaker> {
        let b = Breaker {
            cfg,
            name: name.to_string(),
            state: AtomicU8::new(State::Closed as u8),
            failures_hint: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                failures: 0,
                window_start: now,
                opened_at: now,
                probe_in_flight: false,
                generation: 0,
            }),
        };
        b.publish(State::Closed);
        Arc::new(b)
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves consistent plain data: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to send a request at `now`.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Admit {
        if self.state() == State::Closed {
            return Admit::Pass(Pass { probe: None });
        }
        let mut inner = self.lock();
        match self.state() {
            State::Closed => Admit::Pass(Pass { probe: None }),
            State::Open => {
                let reopen = inner.opened_at + self.cfg.timeout;
                if now >= reopen {
                    self.transition(&mut inner, State::HalfOpen, now);
                    inner.probe_in_flight = true;
                    Admit::Pass(self.probe_pass(&inner))
                } else {
                    Admit::Reject {
                        retry_after: (reopen - now).max(Duration::from_secs(1)),
                    }
                }
            }
            State::HalfOpen => {
                if inner.probe_in_flight {
                    Admit::Reject {
                        retry_after: Duration::from_secs(1),
                    }
                } else {
                    inner.probe_in_flight = true;
                    Admit::Pass(self.probe_pass(&inner))
                }
            }
        }
    }

    fn probe_pass(self: &Arc<Self>, inner: &Inner) -> Pass {
        Pass {
            probe: Some(Probe {
                breaker: Arc::clone(self),
                generation: inner.generation,
            }),
        }
    }

    /// Reports the outcome of an admitted request.
    pub fn record(&self, pass: Pass, success: bool, now: Instant) {
        match &pass.probe {
            Some(p) => {
                let mut inner = self.lock();
                if inner.generation == p.generation && self.state() == State::HalfOpen {
                    inner.probe_in_flight = false;
                    let to = if success { State::Closed } else { State::Open };
                    self.transition(&mut inner, to, now);
                }
            }
            None if success => {
                if self.failures_hint.load(Ordering::Relaxed) != 0 {
                    let mut inner = self.lock();
                    if self.state() == State::Closed {
                        inner.failures = 0;
                        self.failures_hint.store(0, Ordering::Relaxed);
                    }
                }
            }
            None => {
                let mut inner = self.lock();
                // Outcomes of requests admitted before the breaker opened change nothing.
                if self.state() != State::Closed {
                    return;
                }
                if now.saturating_duration_since(inner.window_start) >= self.cfg.interval {
                    inner.window_start = now;
                    inner.failures = 0;
                }
                inner.failures += 1;
                self.failures_hint.store(inner.failures, Ordering::Relaxed);
                if inner.failures > self.cfg.max_errors {
                    self.transition(&mut inner, State::Open, now);
                }
            }
        }
        // The probe (if any) reported: its drop must not release a new probe's slot.
        drop(pass);
    }

    /// A probe ended without an outcome: let the next request probe.
    fn release(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation == generation && self.state() == State::HalfOpen {
            inner.probe_in_flight = false;
        }
    }

    fn transition(&self, inner: &mut Inner, to: State, now: Instant) {
        let from = self.state();
        inner.generation += 1;
        inner.failures = 0;
        self.failures_hint.store(0, Ordering::Relaxed);
        match to {
            State::Open => inner.opened_at = now,
            State::Closed => inner.window_start = now,
            State::HalfOpen => {}
        }
        self.state.store(to as u8, Ordering::Release);
        if from != to {
            self.publish(to);
            if self.cfg.log_status_change {
                warn!(
                    "circuit breaker of backend {:?} went from {} to {}",
                    self.name,
                    from.name(),
                    to.name()
                );
            }
        }
    }

    fn publish(&self, s: State) {
        crate::metrics::metrics()
            .breaker_state
            .with_label_values(&[self.name.as_str()])
            .set(s as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(max_errors: u32) -> (Arc<Breaker>, Instant) {
        let t0 = Instant::now();
        let cfg = BreakerConfig {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            max_errors,
            log_status_change: false,
        };
        (Breaker::new("test", cfg, t0), t0)
    }

    fn pass(b: &Arc<Breaker>, now: Instant) -> Pass {
        match b.admit(now) {
            Admit::Pass(p) => p,
            Admit::Reject { .. } => panic!("rejected in state {:?}", b.state()),
        }
    }

    fn fail(b: &Arc<Breaker>, now: Instant) {
        let p = pass(b, now);
        b.record(p, false, now);
    }

    #[test]
    fn opens_after_more_than_max_errors() {
        let (b, t0) = breaker(2);
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), State::Closed);
        fail(&b, t0);
        assert_eq!(b.state(), State::Open);
        match b.admit(t0 + Duration::from_millis(2500)) {
            Admit::Reject { retry_after } => assert_eq!(retry_after, Duration::from_millis(7500)),
            Admit::Pass(_) => panic!("open breaker let a request through"),
        }
        // Retry-After never goes below one second.
        match b.admit(t0 + Duration::from_millis(9900)) {
            Admit::Reject { retry_after } => assert_eq!(retry_after, Duration::from_secs(1)),
            Admit::Pass(_) => panic!(),
        }
    }

    #[test]
    fn success_resets_the_count() {
        let (b, t0) = breaker(1);
        fail(&b, t0);
        let p = pass(&b, t0);
        b.record(p, true, t0);
        fail(&b, t0);
        assert_eq!(b.state(), State::Closed, "failures are consecutive only");
        fail(&b, t0);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn interval_resets_the_count() {
        let (b, t0) = breaker(1);
        fail(&b, t0);
        fail(&b, t0 + Duration::from_secs(61));
        assert_eq!(b.state(), State::Closed, "a new window starts at 61s");
        fail(&b, t0 + Duration::from_secs(62));
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn half_open_lets_exactly_one_probe() {
        let (b, t0) = breaker(0);
        fail(&b, t0);
        assert_eq!(b.state(), State::Open);
        let t1 = t0 + Duration::from_secs(10);
        let probe = pass(&b, t1);
        assert!(probe.is_probe());
        assert_eq!(b.state(), State::HalfOpen);
        assert!(matches!(b.admit(t1), Admit::Reject { .. }));
        b.record(probe, true, t1);
        assert_eq!(b.state(), State::Closed);
        assert!(!pass(&b, t1).is_probe());
    }

    #[test]
    fn failed_probe_reopens_for_timeout() {
        let (b, t0) = breaker(0);
        fail(&b, t0);
        let t1 = t0 + Duration::from_secs(10);
        let probe = pass(&b, t1);
        b.record(probe, false, t1);
        assert_eq!(b.state(), State::Open);
        match b.admit(t1 + Duration::from_secs(4)) {
            Admit::Reject { retry_after } => assert_eq!(retry_after, Duration::from_secs(6)),
            Admit::Pass(_) => panic!(),
        }
        assert!(pass(&b, t1 + Duration::from_secs(10)).is_probe());
    }

    #[test]
    fn probe_without_outcome_releases_its_slot() {
        let (b, t0) = breaker(0);
        fail(&b, t0);
        let t1 = t0 + Duration::from_secs(10);
        let probe = pass(&b, t1);
        assert!(matches!(b.admit(t1), Admit::Reject { .. }));
        drop(probe); // e.g. the client went away
        assert_eq!(b.state(), State::HalfOpen);
        let next = pass(&b, t1);
        assert!(next.is_probe(), "the next request probes");
        b.record(next, true, t1);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn late_outcomes_do_not_disturb() {
        let (b, t0) = breaker(0);
        let early = pass(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), State::Open);
        // A request admitted while closed reports success after the breaker opened.
        b.record(early, true, t0);
        assert_eq!(b.state(), State::Open);
        // A stale probe released after a newer transition does not free the new probe slot.
        let t1 = t0 + Duration::from_secs(10);
        let probe = pass(&b, t1);
        b.record(probe, false, t1);
        let t2 = t1 + Duration::from_secs(10);
        let probe2 = pass(&b, t2);
        assert!(matches!(b.admit(t2), Admit::Reject { .. }));
        b.record(probe2, true, t2);
        assert_eq!(b.state(), State::Closed);
    }
}
