//! Per-request state carried between Pingora's hooks.

use crate::reject::{Reason, WouldReject};
use crate::runtime::{Endpoint, Runtime};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub struct Ctx {
    /// The snapshot this request runs on, loaded once when the request's context is made.
    pub rt: Arc<Runtime>,
    /// Index of the matched endpoint in `rt.endpoints`, once routed.
    pub endpoint: Option<usize>,
    /// When the request's header had been read.
    pub start: Instant,
    /// End of the endpoint's time budget.
    pub deadline: Instant,
    /// A gRPC call whose `grpc-timeout` was read (and may have shortened `deadline`): the
    /// upstream is sent what is left of it.
    pub grpc_deadline: bool,
    /// Path and query to send upstream when they differ from the client's.
    pub upstream_uri: Option<http::Uri>,
    /// Hosts tried so far (a retry goes to another one); inline, no allocation per request.
    pub tried: smallvec::SmallVec<[SocketAddr; 2]>,
    pub upstream_start: Option<Instant>,
    /// The last attempt's time from choosing its host to the upstream's response header.
    pub upstream_time: Option<std::time::Duration>,
    /// `X-Request-Id`: kept from a trusted proxy or made here (src/request_id.rs).
    pub request_id: Option<http::HeaderValue>,
    /// The request's span, when tracing is on (src/telemetry.rs).
    pub span: Option<opentelemetry_sdk::trace::Span>,
    /// The client address resolved through `client_ip.trusted_proxies` (set by admission).
    pub client_ip: Option<IpAddr>,
    /// Why gatehouse answered by itself, once it has: the access log, the rejection metric
    /// and the breaker's outcome read it.
    pub reason: Option<Reason>,
    /// What the `dry_run` filters and limits would have refused (set by admission).
    pub would_reject: WouldReject,
    /// Request body bytes seen so far (for `max_body_size`).
    pub body_bytes: u64,
    /// Rate-limit state: RateLimit header numbers, the backend in-flight slot.
    pub limits: crate::limits::RequestLimits,
    /// Circuit-breaker admission, until the request's outcome is reported.
    pub breaker: Option<crate::upstream::breaker::Pass>,
    /// Counts the request in its backend's in-flight number until the request ends.
    pub in_flight: Option<crate::upstream::backend::InFlight>,
}

impl Ctx {
    pub fn new(rt: Arc<Runtime>) -> Ctx {
        let now = Instant::now();
        Ctx {
            rt,
            endpoint: None,
            start: now,
            deadline: now,
            grpc_deadline: false,
            upstream_uri: None,
            tried: smallvec::SmallVec::new(),
            upstream_start: None,
            upstream_time: None,
            request_id: None,
            span: None,
            reason: None,
            would_reject: WouldReject::default(),
            client_ip: None,
            body_bytes: 0,
            limits: Default::default(),
            breaker: None,
            in_flight: None,
        }
    }

    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.rt.endpoints.get(self.endpoint?)
    }
}
