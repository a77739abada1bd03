//! gRPC's own terms: whether a request is a gRPC call (its `content-type`), its deadline
//! (`grpc-timeout`), and the status code and message gatehouse's rejections carry when it
//! answers a gRPC call itself (a Trailers-Only response, made in `proxy::respond`).

use crate::reject::Reason;
use std::time::Duration;

/// A gRPC call: `content-type: application/grpc` or `application/grpc+<codec>`.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const T: &[u8] = b"application/grpc";
    v.len() >= T.len()
        && v[..T.len()].eq_ignore_ascii_case(T)
        && matches!(v.get(T.len()), None | Some(b'+' | b';'))
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Renders a duration as a `grpc-timeout` value: milliseconds (rounded up, so a deadline
/// that has not passed never becomes 0), or seconds when milliseconds need more than 8 digits.
pub fn format_timeout(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms <= 99_999_999 {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

/// gRPC status codes gatehouse answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

/// The gRPC status of a rejection: limits and concurrency are RESOURCE_EXHAUSTED, the
/// filters PERMISSION_DENIED, an unavailable upstream (breaker, no healthy host, 502, 503)
/// UNAVAILABLE, timeouts DEADLINE_EXCEEDED, no route UNIMPLEMENTED.
pub fn code(reason: Reason) -> Code {
    match reason {
        Reason::ClientRateLimit
        | Reason::ServiceRateLimit
        | Reason::EndpointRateLimit
        | Reason::BackendRateLimit
        | Reason::BackendMaxConcurrent
        | Reason::ClientMaxConcurrent
        | Reason::EndpointMaxConcurrent
        | Reason::BodyTooLarge => Code::ResourceExhausted,
        Reason::IpFilter | Reason::Geofence | Reason::BotDetector => Code::PermissionDenied,
        Reason::NoHealthyHost
        | Reason::CircuitOpen
        | Reason::BadGateway
        | Reason::RateLimitStoreUnavailable => Code::Unavailable,
        Reason::UpstreamTimeout | Reason::EndpointTimeout => Code::DeadlineExceeded,
        Reason::NotFound | Reason::MethodNotAllowed => Code::Unimplemented,
        // A gRPC client does not follow redirects: the call must be made over HTTPS.
        Reason::RedirectHttps => Code::FailedPrecondition,
        Reason::BadRequest | Reason::Internal => Code::Internal,
    }
}

/// The `grpc-message` of a rejection: its title, then the detail, percent-encoded as gRPC
/// asks (every byte outside printable ASCII, and `%`).
pub fn message(reason: Reason, detail: Option<&str>) -> String {
    let mut s = String::with_capacity(64);
    percent_encode_into(reason.title(), &mut s);
    if let Some(d) = detail {
        s.push_str(": ");
        percent_encode_into(d, &mut s);
    }
    s
}

fn percent_encode_into(text: &str, out: &mut String) {
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"Application/GRPC;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpc-web"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert!(!is_grpc_content_type(b"application/grp"));
    }

    #[test]
    fn timeouts_parse_with_their_unit() {
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [&b""[..], b"S", b"5", b"5s", b"-5S", b"123456789S", b"1 S"] {
            assert_eq!(parse_timeout(bad), None, "{:?}", std::str::from_utf8(bad));
        }
    }

    #[test]
    fn timeouts_render_within_eight_digits() {
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(format_timeout(Duration::from_micros(1)), "1m");
        assert_eq!(format_timeout(Duration::ZERO), "0m");
        assert_eq!(format_timeout(Duration::from_secs(200_000)), "200000S");
        let v = format_timeout(Duration::from_secs(3600));
        assert_eq!(parse_timeout(v.as_bytes()), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn rejections_map_to_grpc_codes() {
        assert_eq!(code(Reason::ClientRateLimit), Code::ResourceExhausted);
        assert_eq!(code(Reason::BackendMaxConcurrent), Code::ResourceExhausted);
        assert_eq!(code(Reason::IpFilter), Code::PermissionDenied);
        assert_eq!(code(Reason::CircuitOpen), Code::Unavailable);
        assert_eq!(code(Reason::BadGateway), Code::Unavailable);
        assert_eq!(code(Reason::EndpointTimeout), Code::DeadlineExceeded);
        assert_eq!(code(Reason::NotFound), Code::Unimplemented);
        assert_eq!(Code::Unavailable as u8, 14);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(
            message(Reason::NotFound, Some("100% ü")),
            "No route matches this path: 100%25 %C3%BC"
        );
        assert_eq!(
            message(Reason::IpFilter, None),
            "Client address not allowed"
        );
    }
}
