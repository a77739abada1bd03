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

/// `-` for none: the log line's fields are written straight into the line, no `String` each.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn access_log(session: &Session, ctx: &Ctx, status: u16, now: Instant) {
    let req = session.req_header();
    let client = OrDash(client(session, ctx));
    let upstream = OrDash(ctx.tried.last());
    let route = ctx.endpoint().map(|e| e.pattern.as_str()).unwrap_or("");
    info!(
        target: "gatehouse::access",
        "{client} \"{} {}\" {status} {:.3}ms route={:?} upstream={upstream} reason={}",
        req.method,
        req.uri,
        now.saturating_duration_since(ctx.start).as_secs_f64() * 1000.0,
        route,
        ctx.reason.map(|r| r.id()).unwrap_or("-"),
    );
}

#[cfg(test)]
mod tests {
    use super::OrDash;

    #[test]
    fn or_dash_writes_the_value_or_a_dash() {
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(OrDash(Some(ip)).to_string(), "192.0.2.7");
        assert_eq!(OrDash(None::<std::net::IpAddr>).to_string(), "-");
    }
}
