//! Per-request limit state: the numbers of the `RateLimit-Policy` and `RateLimit` headers
//! (IETF draft) of every limit with `headers: true` that applied, and the backend's in-flight
//! slot.

use super::backend::InflightGuard;
use super::bucket::{ceil_secs, Gcra, Outcome};
use super::concurrency::{ClientSlot, EndpointSlot};
use crate::reject::WouldReject;
use std::fmt::Write as _;

/// One policy's numbers for the RateLimit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Report {
    name: &'static str,
    quota: u64,
    window: u64,
    remaining: u64,
    reset: u64,
}

/// Per-request limit state, kept in the proxy's `Ctx`.
#[derive(Default)]
pub struct RequestLimits {
    reports: [Report; 4],
    len: usize,
    pub(super) backend_checked: bool,
    /// The backend's in-flight slot, released when the request ends (with the `Ctx`).
    pub guard: Option<InflightGuard>,
    /// The client's in-flight slots of the service-wide block and the endpoint's.
    pub(super) client_slots: [Option<ClientSlot>; 2],
    /// The endpoint's in-flight slot (`max_concurrent`).
    pub(super) endpoint_slot: Option<EndpointSlot>,
    /// What the `dry_run` limits would have refused.
    pub would_reject: WouldReject,
}

impl RequestLimits {
    pub(super) fn report(&mut self, name: &'static str, g: &Gcra, o: &Outcome) {
        if let Some(slot) = self.reports.get_mut(self.len) {
            *slot = Report {
                name,
                quota: g.capacity,
                window: g.window_secs(),
                remaining: g.remaining_of(o),
                reset: ceil_secs(o.wait),
            };
            self.len += 1;
        }
    }

    /// The `RateLimit-Policy` and `RateLimit` header values (IETF draft), or `None` when no
    /// limit with `headers: true` applied to the request.
    pub fn headers(&self) -> Option<(String, String)> {
        let reports = &self.reports[..self.len];
        if reports.is_empty() {
            return None;
        }
        let mut policy = String::with_capacity(40 * reports.len());
        let mut state = String::with_capacity(40 * reports.len());
        for (i, r) in reports.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            let _ = write!(policy, "{sep}\"{}\";q={};w={}", r.name, r.quota, r.window);
            let _ = write!(state, "{sep}\"{}\";r={};t={}", r.name, r.remaining, r.reset);
        }
        Some((policy, state))
    }
}
