//! The end of a request: the breaker's outcome when no answer reported one, the request and
//! rejection metrics, and the access log line.

use crate::proxy::ctx::Ctx;
use crate::proxy::forward::client_addr;
use crate::reject::Reason;
use log::warn;
use pingora::proxy::Session;
use pingora::Error;
use std::net::IpAddr;
use std::time::Instant;

pub fn finish(session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
    let now = Instant::now();
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    report_breaker(ctx, now);
    match ctx.endpoint() {
        Some(ep) => ep.requests.inc(status),
        None => crate::metrics::unrouted().inc(status),
    }
    crate::metrics::would_reject(ctx.would_reject);
    if let Some(r) = ctx.reason {
        crate::metrics::rejection(r).inc();
    }
    if ctx.rt.config.server.access_log {
        access_log(session, ctx, status, now);
    }
    if let Some(span) = ctx.span.take() {
        let req = session.req_header();
        let outcome = crate::telemetry::Outcome {
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.endpoint().map(|e| e.pattern.as_str()),
            status,
            client: client(session, ctx),
            upstream: ctx.tried.last().copied(),
            reason: ctx.reason.map(|r| r.id()),
            request_id: ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
        };
        crate::telemetry::end(span, &outcome);
    }
    if let Some(err) = e {
        if ctx.reason.is_none() {
            warn!("request failed: {err}");
        }
    }
}

/// A pass still held means no upstream answer reported the outcome. An upstream failure is
/// a breaker failure; any other end (client gone, no host) drops the pass, which frees a
/// half-open probe slot.
fn report_breaker(ctx: &mut Ctx, now: Instant) {
    let Some(pass) = ctx.breaker.take() else {
        return;
    };
    let failed = matches!(
        ctx.reason,
        Some(Reason::BadGateway | Reason::UpstreamTimeout | Reason::EndpointTimeout)
    );
    let breaker = ctx.endpoint().and_then(|e| e.backend.breaker.as_ref());
    if let (true, Some(breaker)) = (failed, breaker) {
        breaker.record(pass, false, now);
    }
}

/// The client address of the log line: the resolved one, else (a request refused before
/// admission resolved it) resolved now, else none.
fn client(session: &Session, ctx: &Ctx) -> Option<IpAddr> {
    ctx.client_ip.or_else(|| {
        let peer = client_addr(session)?.ip();
        let headers = &session.req_header().headers;
        Some(ctx.rt.filters.client_ip.resolve(peer, headers))
    })
}

fn access_log(session: &Session, ctx: &Ctx, status: u16, now: Instant) {
    let req = session.req_header();
    let path = req
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_else(|| req.uri.path());
    let entry = crate::access_log::Entry {
        ts: std::time::SystemTime::now(),
        client: client(session, ctx),
        method: req.method.as_str(),
        path,
        route: ctx.endpoint().map(|e| e.pattern.as_str()),
        status,
        duration: now.saturating_duration_since(ctx.start),
        upstream: ctx.tried.last().copied(),
        upstream_time: ctx.upstream_time,
        bytes_sent: session.as_downstream().body_bytes_sent() as u64,
        reason: ctx.reason.map(|r| r.id()),
        would_reject: ctx.would_reject,
        request_id: ctx.request_id.as_ref().and_then(|v| v.to_str().ok()),
        tls: crate::proxy::forward::is_tls(session),
        http_version: crate::access_log::http_version(req.version),
    };
    crate::access_log::emit(ctx.rt.config.server.access_log_format, &entry);
}
