//! A refusal: the one value every stage of the request path returns when gatehouse answers a
//! request by itself (edge checks, client address, filters, routing, limits, the backend's
//! gate, and the failures of proxying). It knows nothing of Pingora: `proxy::respond` turns
//! it into a response.

use std::borrow::Cow;
use std::fmt;

/// Why gatehouse answered by itself. The `type` of the problem body is stable per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    NoHealthyHost,
    CircuitOpen,
    BadGateway,
    UpstreamTimeout,
    EndpointTimeout,
    Internal,
    IpFilter,
    Geofence,
    BotDetector,
    BodyTooLarge,
    RedirectHttps,
    ClientRateLimit,
    ServiceRateLimit,
    EndpointRateLimit,
    BackendRateLimit,
    BackendMaxConcurrent,
    /// The client has `rate_limit.client_max_concurrent` requests in flight already.
    ClientMaxConcurrent,
    /// The endpoint has `max_concurrent` requests in flight already.
    EndpointMaxConcurrent,
    /// The shared rate-limit store (Redis) failed and the limit says `on_store_failure: deny`.
    RateLimitStoreUnavailable,
}

impl Reason {
    /// Stable identifier: the metric label and the tail of the problem `type`.
    pub fn id(self) -> &'static str {
        match self {
            Reason::BadRequest => "bad_request",
            Reason::NotFound => "not_found",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::NoHealthyHost => "no_healthy_host",
            Reason::CircuitOpen => "circuit_open",
            Reason::BadGateway => "bad_gateway",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::EndpointTimeout => "endpoint_timeout",
            Reason::Internal => "internal",
            Reason::IpFilter => "ip_filter",
            Reason::Geofence => "geofence",
            Reason::BotDetector => "bot_detector",
            Reason::BodyTooLarge => "body_too_large",
            Reason::RedirectHttps => "redirect_https",
            Reason::ClientRateLimit => "client_rate_limit",
            Reason::ServiceRateLimit => "service_rate_limit",
            Reason::EndpointRateLimit => "endpoint_rate_limit",
            Reason::BackendRateLimit => "backend_rate_limit",
            Reason::BackendMaxConcurrent => "backend_max_concurrent",
            Reason::ClientMaxConcurrent => "client_max_concurrent",
            Reason::EndpointMaxConcurrent => "endpoint_max_concurrent",
            Reason::RateLimitStoreUnavailable => "rate_limit_store_unavailable",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::NoHealthyHost | Reason::CircuitOpen => 503,
            Reason::BadGateway => 502,
            Reason::UpstreamTimeout | Reason::EndpointTimeout => 504,
            Reason::Internal => 500,
            Reason::IpFilter | Reason::Geofence | Reason::BotDetector => 403,
            Reason::BodyTooLarge => 413,
            Reason::RedirectHttps => 308,
            Reason::ClientRateLimit | Reason::ClientMaxConcurrent => 429,
            Reason::ServiceRateLimit
            | Reason::EndpointRateLimit
            | Reason::BackendRateLimit
            | Reason::BackendMaxConcurrent
            | Reason::EndpointMaxConcurrent
            | Reason::RateLimitStoreUnavailable => 503,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Reason::BadRequest => "Bad request",
            Reason::NotFound => "No route matches this path",
            Reason::MethodNotAllowed => "Method not allowed on this route",
            Reason::NoHealthyHost => "No upstream host available",
            Reason::CircuitOpen => "The backend's circuit breaker is open",
            Reason::BadGateway => "Upstream refused or reset the connection",
            Reason::UpstreamTimeout => "Upstream did not answer in time",
            Reason::EndpointTimeout => "The endpoint's time budget is spent",
            Reason::Internal => "Internal error",
            Reason::IpFilter => "Client address not allowed",
            Reason::Geofence => "Client location not allowed",
            Reason::BotDetector => "Automated client not allowed",
            Reason::BodyTooLarge => "Request body too large",
            Reason::RedirectHttps => "Use HTTPS",
            Reason::ClientRateLimit => "Too many requests from this client",
            Reason::ServiceRateLimit => "The service's request rate limit is reached",
            Reason::EndpointRateLimit => "The endpoint's request rate limit is reached",
            Reason::BackendRateLimit => "The backend's request rate limit is reached",
            Reason::BackendMaxConcurrent => "The backend has too many requests in flight",
            Reason::ClientMaxConcurrent => "Too many requests from this client in flight",
            Reason::EndpointMaxConcurrent => "The endpoint has too many requests in flight",
            Reason::RateLimitStoreUnavailable => "The rate-limit store is unavailable",
        }
    }
}

impl Reason {
    /// Every reason, in declaration order (`r as usize` is its index).
    pub const ALL: [Reason; 22] = [
        Reason::BadRequest,
        Reason::NotFound,
        Reason::MethodNotAllowed,
        Reason::NoHealthyHost,
        Reason::CircuitOpen,
        Reason::BadGateway,
        Reason::UpstreamTimeout,
        Reason::EndpointTimeout,
        Reason::Internal,
        Reason::IpFilter,
        Reason::Geofence,
        Reason::BotDetector,
        Reason::BodyTooLarge,
        Reason::RedirectHttps,
        Reason::ClientRateLimit,
        Reason::ServiceRateLimit,
        Reason::EndpointRateLimit,
        Reason::BackendRateLimit,
        Reason::BackendMaxConcurrent,
        Reason::ClientMaxConcurrent,
        Reason::EndpointMaxConcurrent,
        Reason::RateLimitStoreUnavailable,
    ];
}

/// The refusals a request met in `dry_run` filters and limits, which let it pass: a set of
/// reasons (each at most once), kept without allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WouldReject(u32);

impl WouldReject {
    pub fn add(&mut self, r: Reason) {
        self.0 |= 1 << (r as u32);
    }

    pub fn merge(&mut self, other: WouldReject) {
        self.0 |= other.0;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, r: Reason) -> bool {
        self.0 & (1 << (r as u32)) != 0
    }

    /// The reasons, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Reason> {
        Reason::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for WouldReject {
    /// `ip_filter,client_rate_limit`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.id())?;
        }
        Ok(())
    }
}

/// Why and how gatehouse answers a request by itself: the reason (which gives the status and
/// the problem `type`), with what the answer carries besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: Reason,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// The problem body's `detail`.
    pub detail: Option<Cow<'static, str>>,
    /// `Allow` of a 405: the methods the path takes.
    pub allow: Option<String>,
    /// `Location` of a redirect.
    pub location: Option<String>,
}

impl Reject {
    pub fn new(reason: Reason) -> Reject {
        Reject {
            reason,
            retry_after: None,
            detail: None,
            allow: None,
            location: None,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        self.reason.status()
    }

    pub fn retry_after(mut self, secs: u64) -> Reject {
        self.retry_after = Some(secs);
        self
    }

    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Reject {
        self.detail = Some(detail.into());
        self
    }

    pub fn allow(mut self, methods: impl Into<String>) -> Reject {
        self.allow = Some(methods.into());
        self
    }

    pub fn location(mut self, url: impl Into<String>) -> Reject {
        self.location = Some(url.into());
        self
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason.id(), self.status())?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// A `Reject` travels as the cause of a Pingora error from the hooks that can only fail
/// (choosing the upstream, counting the body) to the answer made in `fail_to_proxy`.
impl std::error::Error for Reject {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_reason() {
        let r = Reject::new(Reason::CircuitOpen).retry_after(3);
        assert_eq!(r.status(), 503);
        assert_eq!(r.retry_after, Some(3));
        assert_eq!(Reject::new(Reason::ClientRateLimit).status(), 429);
        assert_eq!(
            Reject::new(Reason::NotFound).detail("x").to_string(),
            "not_found (404): x"
        );
    }

    #[test]
    fn every_reason_is_listed_once_at_its_index() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.id());
        }
        assert!(Reason::ALL.len() <= 32, "WouldReject is a u32 bitset");
    }

    #[test]
    fn would_reject_is_a_set() {
        let mut w = WouldReject::default();
        assert_eq!(w.to_string(), "-");
        w.add(Reason::ClientRateLimit);
        w.add(Reason::IpFilter);
        w.add(Reason::ClientRateLimit);
        assert_eq!(w.to_string(), "ip_filter,client_rate_limit");
        assert_eq!(w.iter().count(), 2);
        let mut other = WouldReject::default();
        other.add(Reason::EndpointMaxConcurrent);
        w.merge(other);
        assert!(w.contains(Reason::EndpointMaxConcurrent));
        assert!(!w.contains(Reason::Geofence));
    }
}
