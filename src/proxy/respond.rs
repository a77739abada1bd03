//! Responses made by gatehouse itself: a `Reject` becomes an RFC 9457 problem+json answer,
//! or for a gRPC call a Trailers-Only answer in gRPC's terms (HTTP 200 with `grpc-status`
//! and `grpc-message`, no body), written so that the client connection stays alive (unlike
//! Pingora's `respond_error`, which closes it); `answer` is the one place that happens. `failure` maps the error of a
//! failed proxying attempt to what the client is told.

use crate::proxy::ctx::Ctx;
use crate::reject::{Reason, Reject};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

pub const PROBLEM_TYPE_PREFIX: &str = "urn:gatehouse:problem:";

/// `RateLimit-Policy` and `RateLimit` values of the limits that applied to the request.
pub type RateLimitHeaders<'a> = Option<(&'a str, &'a str)>;

/// Renders the problem+json body; `request_id` is the request's `X-Request-Id`.
pub fn body(reason: Reason, detail: Option<&str>, request_id: Option<&str>) -> String {
    let mut s = String::with_capacity(160);
    s.push_str("{\"type\":\"");
    s.push_str(PROBLEM_TYPE_PREFIX);
    s.push_str(reason.id());
    s.push_str("\",\"title\":\"");
    s.push_str(reason.title());
    s.push_str("\",\"status\":");
    s.push_str(&reason.status().to_string());
    if let Some(d) = detail {
        s.push_str(",\"detail\":\"");
        escape_json_into(d, &mut s);
        s.push('"');
    }
    if let Some(id) = request_id {
        s.push_str(",\"request_id\":\"");
        escape_json_into(id, &mut s);
        s.push('"');
    }
    s.push('}');
    s
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
pub fn header(
    r: &Reject,
    len: usize,
    ratelimit: RateLimitHeaders<'_>,
    request_id: Option<&http::HeaderValue>,
) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(r.status(), Some(6))?;
    h.insert_header("content-type", "application/problem+json")?;
    h.insert_header("content-length", len.to_string())?;
    extras(&mut h, r, ratelimit, request_id)?;
    Ok(h)
}

/// Builds the Trailers-Only answer of a rejected gRPC call: HTTP 200, its status in
/// `grpc-status` and `grpc-message`, and the header ends the stream. `content_length`: an
/// HTTP/1 connection needs the empty body's length to stay reusable.
pub fn grpc_header(
    r: &Reject,
    ratelimit: RateLimitHeaders<'_>,
    request_id: Option<&http::HeaderValue>,
    content_length: bool,
) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build(200, Some(6))?;
    h.insert_header("content-type", "application/grpc")?;
    let code = crate::grpc::code(r.reason) as u8;
    h.insert_header("grpc-status", code.to_string())?;
    h.insert_header(
        "grpc-message",
        crate::grpc::message(r.reason, r.detail.as_deref()),
    )?;
    if content_length {
        h.insert_header("content-length", "0")?;
    }
    extras(&mut h, r, ratelimit, request_id)?;
    Ok(h)
}

/// What either form of answer carries besides: `Allow`, `Location`, `Retry-After`, the
/// RateLimit headers and the request's ID.
fn extras(
    h: &mut ResponseHeader,
    r: &Reject,
    ratelimit: RateLimitHeaders<'_>,
    request_id: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    if let Some(a) = &r.allow {
        h.insert_header("allow", a.as_str())?;
    }
    if let Some(l) = &r.location {
        h.insert_header("location", l.as_str())?;
    }
    if let Some(s) = r.retry_after {
        h.insert_header("retry-after", s.to_string())?;
    }
    if let Some((policy, state)) = ratelimit {
        h.insert_header("ratelimit-policy", policy)?;
        h.insert_header("ratelimit", state)?;
    }
    if let Some(id) = request_id {
        h.insert_header(crate::request_id::HEADER, id.clone())?;
    }
    Ok(())
}

/// Sends a problem response and keeps the connection reusable. A HEAD request gets the
/// header alone; a gRPC call (by its `content-type`) gets the gRPC form.
pub async fn send(
    session: &mut Session,
    r: &Reject,
    ratelimit: RateLimitHeaders<'_>,
    request_id: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    if crate::grpc::is_grpc(&session.req_header().headers) {
        let h = grpc_header(r, ratelimit, request_id, !session.is_http2())?;
        // Over HTTP/2 the answer is one HEADERS frame that ends the stream. Pingora's
        // session would send the header open and end the stream with an empty DATA frame,
        // so the HTTP/2 stream is written to directly (gatehouse has no response modules
        // that the session would run).
        if let ServerSession::H2(h2) = &mut *session.downstream_session {
            return h2.write_response_header(Box::new(h), true);
        }
        return session.write_response_header(Box::new(h), true).await;
    }
    let id = request_id.and_then(|v| v.to_str().ok());
    let b = body(r.reason, r.detail.as_deref(), id);
    let h = header(r, b.len(), ratelimit, request_id)?;
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

/// Answers the request with `r`: the one place a rejection becomes a response. It records
/// the reason for the access log and the metrics, and adds the RateLimit headers of the
/// limits that applied. A request refused for its declared body size is not read: the
/// connection closes after the answer instead of draining the body.
pub async fn answer(session: &mut Session, ctx: &mut Ctx, r: Reject) -> pingora::Result<()> {
    ctx.reason = Some(r.reason);
    if r.reason == Reason::BodyTooLarge {
        session.set_keepalive(None);
    }
    let headers = ctx.limits.headers();
    let ratelimit = headers.as_ref().map(|(p, s)| (p.as_str(), s.as_str()));
    // A request refused before admission (a malformed one) gets its ID here.
    let id = ctx
        .request_id
        .get_or_insert_with(crate::request_id::new_value);
    send(session, &r, ratelimit, Some(id)).await
}

/// Adds the RateLimit headers of the limits that applied to an answer from the upstream
/// (not on a 1xx answer, `101` included).
pub fn add_ratelimit(ctx: &Ctx, response: &mut ResponseHeader) -> pingora::Result<()> {
    if response.status.is_informational() {
        return Ok(());
    }
    if let Some((policy, state)) = ctx.limits.headers() {
        response.insert_header("ratelimit-policy", policy)?;
        response.insert_header("ratelimit", state)?;
    }
    Ok(())
}

/// What gatehouse adds to an upstream's answer before it goes to the client, whichever path
/// relays it (the proxy's `response_filter`, or a WebSocket tunnel's): the RateLimit fields
/// and the request's `X-Request-Id`.
pub fn decorate(ctx: &Ctx, response: &mut ResponseHeader) -> pingora::Result<()> {
    add_ratelimit(ctx, response)?;
    if let Some(id) = &ctx.request_id {
        response.insert_header(crate::request_id::HEADER, id.clone())?;
    }
    Ok(())
}

/// A Pingora error that carries a rejection, for the hooks that can only fail: the answer is
/// made by `fail_to_proxy`, which finds the rejection again with `failure`.
pub fn error(r: Reject) -> Box<Error> {
    let status = r.status();
    Error::because(ErrorType::HTTPStatus(status), "rejected", r)
}

/// What a failed proxying attempt means for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this problem (if no response is under way yet).
    Answer(Reject),
    /// The client's side failed. A malformed request (`bad_request`) is answered with 400;
    /// a connection that failed while being read or written gets nothing.
    Client { bad_request: bool },
}

/// Maps the error that ended proxying to what the client is told. `budget_spent`: the
/// endpoint's time budget ran out, which turns an upstream timeout into `endpoint_timeout`.
pub fn failure(e: &Error, budget_spent: bool) -> Failure {
    if let Some(r) = e.root_cause().downcast_ref::<Reject>() {
        return Failure::Answer(r.clone());
    }
    let reason = match e.etype() {
        ErrorType::HTTPStatus(code) => match code {
            400 => Reason::BadRequest,
            503 => Reason::NoHealthyHost,
            504 => Reason::EndpointTimeout,
            _ => Reason::Internal,
        },
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if *e.esource() != ErrorSource::Downstream =>
        {
            if budget_spent {
                Reason::EndpointTimeout
            } else {
                Reason::UpstreamTimeout
            }
        }
        etype => match e.esource() {
            ErrorSource::Upstream => Reason::BadGateway,
            ErrorSource::Downstream => {
                let gone = matches!(
                    etype,
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
                );
                return Failure::Client { bad_request: !gone };
            }
            _ => Reason::Internal,
        },
    };
    Failure::Answer(Reject::new(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_is_json() {
        let b = body(Reason::NotFound, Some("no \"route\"\n"), Some("id-1"));
        assert_eq!(
            b,
            "{\"type\":\"urn:gatehouse:problem:not_found\",\"title\":\"No route matches this path\",\"status\":404,\"detail\":\"no \\\"route\\\"\\n\",\"request_id\":\"id-1\"}"
        );
    }

    #[test]
    fn grpc_header_is_trailers_only() {
        let r = Reject::new(Reason::ClientRateLimit)
            .retry_after(2)
            .detail("slow down");
        let h = grpc_header(&r, Some(("p", "s")), None, false).unwrap();
        assert_eq!(h.status.as_u16(), 200);
        assert_eq!(h.headers["content-type"], "application/grpc");
        assert_eq!(h.headers["grpc-status"], "8");
        assert_eq!(
            h.headers["grpc-message"],
            "Too many requests from this client: slow down"
        );
        assert_eq!(h.headers["retry-after"], "2");
        assert_eq!(h.headers["ratelimit"], "s");
        assert!(h.headers.get("content-length").is_none());
        let h = grpc_header(&Reject::new(Reason::NotFound), None, None, true).unwrap();
        assert_eq!(h.headers["grpc-status"], "12");
        assert_eq!(h.headers["content-length"], "0");
    }

    #[test]
    fn header_carries_the_rejection() {
        let r = Reject::new(Reason::MethodNotAllowed).allow("GET, HEAD");
        let id = http::HeaderValue::from_static("id-1");
        let h = header(&r, 10, Some(("p", "s")), Some(&id)).unwrap();
        assert_eq!(h.headers["x-request-id"], "id-1");
        assert_eq!(h.status.as_u16(), 405);
        assert_eq!(h.headers["allow"], "GET, HEAD");
        assert_eq!(h.headers["content-length"], "10");
        assert_eq!(h.headers["ratelimit-policy"], "p");
        assert!(h.headers.get("retry-after").is_none());
        let r = Reject::new(Reason::RedirectHttps).location("https://a/");
        let h = header(&r, 0, None, None).unwrap();
        assert_eq!(h.status.as_u16(), 308);
        assert_eq!(h.headers["location"], "https://a/");
    }

    fn answer(e: &Error, spent: bool) -> Reject {
        match failure(e, spent) {
            Failure::Answer(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn reason(etype: ErrorType, source: ErrorSource, spent: bool) -> Reason {
        let mut e = Error::new(etype);
        e.esource = source;
        answer(&e, spent).reason
    }

    #[test]
    fn a_carried_rejection_is_answered_as_it_is() {
        let r = Reject::new(Reason::NoHealthyHost).retry_after(1);
        assert_eq!(answer(&error(r.clone()), false), r);
        let body = Reject::new(Reason::BodyTooLarge);
        let wrapped = error(body.clone()).more_context("while reading the body");
        assert_eq!(answer(&wrapped, true), body);
    }

    #[test]
    fn statuses_map_to_reasons() {
        let status = |code| reason(ErrorType::HTTPStatus(code), ErrorSource::Unset, false);
        assert_eq!(status(400), Reason::BadRequest);
        assert_eq!(status(503), Reason::NoHealthyHost);
        assert_eq!(status(504), Reason::EndpointTimeout);
        assert_eq!(status(413), Reason::Internal);
    }

    #[test]
    fn upstream_timeouts_depend_on_the_budget() {
        use ErrorSource::{Unset, Upstream};
        for t in [
            ErrorType::ConnectTimedout,
            ErrorType::ReadTimedout,
            ErrorType::WriteTimedout,
        ] {
            assert_eq!(reason(t.clone(), Upstream, false), Reason::UpstreamTimeout);
            assert_eq!(reason(t.clone(), Upstream, true), Reason::EndpointTimeout);
            assert_eq!(reason(t, Unset, false), Reason::UpstreamTimeout);
        }
    }

    #[test]
    fn other_failures_by_source() {
        let up = || ErrorSource::Upstream;
        assert_eq!(
            reason(ErrorType::ConnectRefused, up(), false),
            Reason::BadGateway
        );
        assert_eq!(
            reason(ErrorType::ConnectionClosed, up(), false),
            Reason::BadGateway
        );
        assert_eq!(
            reason(ErrorType::InternalError, ErrorSource::Internal, false),
            Reason::Internal
        );
        let client = |etype| {
            let mut e = Error::new(etype);
            e.esource = ErrorSource::Downstream;
            failure(&e, false)
        };
        let gone = Failure::Client { bad_request: false };
        assert_eq!(client(ErrorType::ReadError), gone);
        assert_eq!(client(ErrorType::WriteError), gone);
        assert_eq!(client(ErrorType::ConnectionClosed), gone);
        assert_eq!(
            client(ErrorType::InvalidHTTPHeader),
            Failure::Client { bad_request: true }
        );
        // a client-side timeout is the client's failure, not the upstream's
        assert_eq!(
            client(ErrorType::ReadTimedout),
            Failure::Client { bad_request: true }
        );
    }
}
