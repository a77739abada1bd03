//! Per-request state carried between Pingora's hooks.

use crate::proxy::respond::Reason;
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub struct Ctx {
    /// The snapshot this request runs on, loaded once in `request_filter`.
    pub rt: Option<Arc<Runtime>>,
    /// Index of the matched endpoint in `rt.endpoints`.
    pub endpoint: Option<usize>,
    pub start: Instant,
    /// End of the endpoint's time budget.
    pub deadline: Instant,
    /// Path and query to send upstream when it differs from the client's.
    pub upstream_uri: Option<String>,
    /// Hosts tried so far (a retry goes to another one); inline, no allocation per request.
    pub tried: smallvec::SmallVec<[SocketAddr; 2]>,
    pub upstream_start: Option<Instant>,
    /// The resolved client address (SPEC §3.1), set in `request_filter`.
    pub client_ip: Option<std::net::IpAddr>,
    /// Set when gatehouse answered (or will answer) by itself.
    pub reason: Option<Reason>,
    /// Request body bytes seen so far (for `max_body_size`).
    pub body_bytes: u64,
    /// Rate-limit state: RateLimit header numbers, Retry-After, the backend in-flight slot.
    pub limits: crate::limits::RequestLimits,
    /// Retry-After (seconds) of that answer.
    pub retry_after: Option<u64>,
    /// Circuit-breaker admission, until the request's outcome is reported.
    pub breaker: Option<crate::upstream::breaker::Pass>,
}

impl Ctx {
    pub fn new() -> Ctx {
        let now = Instant::now();
        Ctx {
            rt: None,
            endpoint: None,
            start: now,
            deadline: now,
            upstream_uri: None,
            tried: smallvec::SmallVec::new(),
            upstream_start: None,
            reason: None,
            client_ip: None,
            body_bytes: 0,
            limits: Default::default(),
            retry_after: None,
            breaker: None,
        }
    }

    pub fn endpoint(&self) -> Option<&crate::runtime::Endpoint> {
        let rt = self.rt.as_ref()?;
        rt.endpoints.get(self.endpoint?)
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
