//! Responses made by gatehouse itself: RFC 9457 problem+json bodies, written so that the
//! client connection stays alive (unlike Pingora's `respond_error`, which closes it).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

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
    // --- rate limits (src/limits) ---
    ClientRateLimit,
    ServiceRateLimit,
    EndpointRateLimit,
    BackendRateLimit,
    BackendMaxConcurrent,
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
            Reason::ClientRateLimit => 429,
            Reason::ServiceRateLimit
            | Reason::EndpointRateLimit
            | Reason::BackendRateLimit
            | Reason::BackendMaxConcurrent
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
            Reason::RateLimitStoreUnavailable => "The rate-limit store is unavailable",
        }
    }
}

/// A rejection to send: the reason, plus optional headers.
#[derive(Debug, Clone, Default)]
pub struct Extra<'a> {
    pub allow: Option<&'a str>,
    pub retry_after: Option<u64>,
    pub detail: Option<&'a str>,
    /// `Location` of a redirect.
    pub location: Option<&'a str>,
    /// `RateLimit-Policy` and `RateLimit` values (src/limits).
    pub ratelimit: Option<(&'a str, &'a str)>,
}

pub const PROBLEM_TYPE_PREFIX: &str = "urn:gatehouse:problem:";

/// Renders the problem+json body.
pub fn body(reason: Reason, detail: Option<&str>) -> String {
    let mut s = String::with_capacity(160);
    s.push_str("{\"type\":\"");
    s.push_str(PROBLEM_TYPE_PREFIX);
    s.push_str(reason.id());
    s.push_str("\",\"title\":\"");
    s.push_str(reason.title());
    s.push_str("\",\"status\":");
    s.push_str(itoa(reason.status() as u64).as_str());
    if let Some(d) = detail {
        s.push_str(",\"detail\":\"");
        escape_json_into(d, &mut s);
        s.push('"');
    }
    s.push('}');
    s
}

fn itoa(n: u64) -> String {
    n.to_string()
}

fn escape_json_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Builds the response header of a problem.
pub fn header(reason: Reason, len: usize, extra: &Extra<'_>) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(reason.status(), Some(6))?;
    h.insert_header("content-type", "application/problem+json")?;
    h.insert_header("content-length", len.to_string())?;
    if let Some(a) = extra.allow {
        h.insert_header("allow", a)?;
    }
    if let Some(l) = extra.location {
        h.insert_header("location", l)?;
    }
    if let Some(r) = extra.retry_after {
        h.insert_header("retry-after", r.to_string())?;
    }
    if let Some((policy, state)) = extra.ratelimit {
        h.insert_header("ratelimit-policy", policy)?;
        h.insert_header("ratelimit", state)?;
    }
    Ok(h)
}

/// Sends a problem response and keeps the connection reusable.
pub async fn send(session: &mut Session, reason: Reason, extra: &Extra<'_>) -> pingora::Result<()> {
    let b = body(reason, extra.detail);
    let h = header(reason, b.len(), extra)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(b)), true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_is_json() {
        let b = body(Reason::NotFound, Some("no \"route\"\n"));
        assert_eq!(
            b,
            "{\"type\":\"urn:gatehouse:problem:not_found\",\"title\":\"No route matches this path\",\"status\":404,\"detail\":\"no \\\"route\\\"\\n\"}"
        );
    }
}
