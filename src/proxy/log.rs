//! The end of a request: the breaker's outcome when no answer reported one, the request and
//! rejection metrics, and the access log line.

use crate::metrics::metrics;
use crate::proxy::ctx::Ctx;
use crate::proxy::forward::client_addr;
use crate::reject::Reason;
use log::{info, warn};
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
        match crate::metrics::rejection(r as usize, r.id()) {
            Some(c) => c.inc(),
            None => metrics().rejections.with_label_values(&[r.id()]).inc(),
        }
    }
    if ctx.rt.config.server.access_log {
        access_log(session, ctx, status, now);
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
    let client = client(session, ctx)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "-".into());
    let upstream = ctx
        .tried
        .last()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let route = ctx.endpoint().map(|e| e.pattern.as_str()).unwrap_or("");
    info!(
        target: "gatehouse::access",
        "{client} \"{} {}\" {status} {:.3}ms route={:?} upstream={upstream} reason={}{}",
        req.method,
        req.uri,
        now.saturating_duration_since(ctx.start).as_secs_f64() * 1000.0,
        route,
        ctx.reason.map(|r| r.id()).unwrap_or("-"),
        WouldRejectField(ctx.would_reject),
    );
}

/// ` would_reject=<reasons>` when a `dry_run` filter or limit would have refused the request.
struct WouldRejectField(crate::reject::WouldReject);

impl std::fmt::Display for WouldRejectField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, " would_reject={}", self.0)
    }
}
