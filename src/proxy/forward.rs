//! The upstream side of an admitted request: the backend's gate, the host and peer of each
//! attempt within the endpoint's time budget, which failures go again, the request head sent
//! upstream, and what the upstream's answer tells the backend's health and breaker.

use crate::clock;
use crate::proxy::ctx::Ctx;
use crate::proxy::respond;
use crate::reject::{Reason, Reject};
use crate::upstream::peer;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;
use std::time::Instant;

/// Whether the client reached us over TLS.
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The TCP peer of the client connection.
pub fn client_addr(session: &Session) -> Option<SocketAddr> {
    session.client_addr().and_then(|a| a.as_inet()).copied()
}

/// Before the first attempt: a healthy host must exist, then the circuit breaker must admit
/// the request, then the backend's limits (`max_concurrent`, then its bucket). A refusal is
/// answered by the caller, so the client connection stays alive.
pub async fn gate(ctx: &mut Ctx, now: Instant) -> Result<(), Reject> {
    let Some(ep) = ctx.endpoint.and_then(|i| ctx.rt.endpoints.get(i)) else {
        return Ok(());
    };
    let pass = ep.backend.gate(now, clock::now_ms(now))?;
    // A refusal by the limits drops the breaker's pass unreported: a probe slot is released.
    let limiter = ep.backend_limiter.as_ref();
    crate::limits::check_backend(limiter, clock::now_ns(now), &mut ctx.limits).await?;
    ctx.breaker = pass;
    ctx.in_flight = Some(crate::upstream::backend::InFlight::enter(&ep.backend));
    Ok(())
}

/// The peer of the next attempt: a healthy host not tried yet (the gate checked that one
/// exists before the first attempt), its timeouts cut to what is left of the budget.
pub fn next_peer(session: &Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let now = Instant::now();
    let remaining = ctx.deadline.saturating_duration_since(now);
    let Some(ep) = ctx.endpoint.and_then(|i| ctx.rt.endpoints.get(i)) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "no endpoint in context",
        ));
    };
    if remaining.is_zero() {
        return Err(respond::error(Reject::new(Reason::EndpointTimeout)));
    }
    let backend = &ep.backend;
    let mut ip_buf = [0u8; 16];
    let headers = &session.req_header().headers;
    let key = peer::hash_key(headers, ctx.client_ip, &backend.cfg.hash_key, &mut ip_buf);
    let Some(addr) = backend.select(key, &ctx.tried, clock::now_ms(now)) else {
        let none = Reject::new(Reason::NoHealthyHost).retry_after(1);
        return Err(respond::error(none));
    };
    ctx.tried.push(addr);
    ctx.upstream_start = Some(now);
    let upgrade = session.is_upgrade_req();
    Ok(Box::new(peer::peer(addr, &backend.cfg, remaining, upgrade)))
}

/// After a failed connect: passive health counts the failure against the host, and the
/// request goes to another host while `retries`, untried healthy hosts and the budget last.
pub fn retry_connect(ctx: &Ctx) -> bool {
    let now = Instant::now();
    let now_ms = clock::now_ms(now);
    ctx.endpoint().is_some_and(|ep| {
        let b = &ep.backend;
        // Passive health: repeated connect failures eject the host for a while.
        if let Some(addr) = ctx.tried.last() {
            b.connect_failed(*addr, now_ms);
        }
        (ctx.tried.len() as u32) <= b.cfg.retries
            && b.has_untried(&ctx.tried, now_ms)
            && now < ctx.deadline
    })
}

/// An error after the request was (partly) sent. Pingora's policy (the default body of
/// this hook, which an override cannot call): an idempotent request whose reused pooled
/// connection turned out to be closed by the upstream (no response byte read) may go
/// again. The host is not to blame for a stale pooled connection, so it is taken off
/// `tried`: it stays eligible (a one-host backend would otherwise answer 503) and the
/// attempt is not one of the backend's `retries`. Such attempts end with a new connection
/// (never reused, so never retried this way) or with the pool, Pingora's `max_retries`
/// or the endpoint's budget.
pub fn may_retry(session: &Session, mut e: Box<Error>, ctx: &mut Ctx, reused: bool) -> Box<Error> {
    if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
        e.set_retry(false);
    } else {
        e.retry.decide_reuse(reused);
    }
    if e.retry() {
        if Instant::now() < ctx.deadline {
            ctx.tried.pop();
        } else {
            e.set_retry(false);
        }
    }
    e
}

/// The request head sent upstream: the rewritten or normalised path (origin-form),
/// X-Forwarded-For and -Proto, the X-Geo headers, the backend's `host_header`, and a gRPC
/// call's `grpc-timeout` set to what is left of its deadline.
pub fn upstream_request(session: &Session, upstream: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    // An HTTP/2 client's `:authority`, before a rewrite replaces the URI.
    let client_authority = upstream.uri.authority().cloned();
    if let Some(uri) = &ctx.upstream_uri {
        upstream.set_uri(uri.clone());
    } else if !matches!(upstream.raw_path().first(), Some(b'/' | b'*')) {
        // An absolute-form target (`GET http://host/p`): Pingora keeps its bytes for the
        // wire and gives the URI (which routing read) only its path. An origin server gets
        // origin-form (RFC 9112 §3.2.1), so the URI becomes the target. Pingora has
        // already refused one whose authority differs from Host.
        let origin = upstream.uri.clone();
        upstream.set_uri(origin);
    }
    if let Some(peer) = client_addr(session) {
        // Always appended (like nginx's $proxy_add_x_forwarded_for): the rightmost entry
        // is the peer gatehouse saw, so an upstream that trusts gatehouse and walks the
        // list right to left finds the same client as gatehouse did.
        // Every line the client sent is kept (see `forwarded_for`).
        let xff = crate::filters::client_ip::forwarded_for(&upstream.headers, peer.ip());
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    crate::filters::geo_headers(&ctx.rt.filters, ctx.client_ip, upstream)?;
    if ctx.grpc_deadline {
        // What is left of the call's deadline (the client's, capped by the budget): the
        // upstream can stop working on a call nobody waits for any more.
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        upstream.insert_header("grpc-timeout", crate::grpc::format_timeout(left))?;
    }
    let proto = if is_tls(session) { "https" } else { "http" };
    upstream.insert_header("x-forwarded-proto", http::HeaderValue::from_static(proto))?;
    if let Some(h) = ctx
        .endpoint()
        .and_then(|e| e.backend.cfg.host_header.as_ref())
    {
        upstream.insert_header(http::header::HOST, h.clone())?;
    }
    if let Some(id) = &ctx.request_id {
        upstream.insert_header(crate::request_id::HEADER, id.clone())?;
    }
    if let Some(span) = &ctx.span {
        crate::telemetry::inject(span, upstream);
    }
    if let Some(protocol) = ctx.endpoint().map(|e| e.backend.cfg.protocol) {
        if protocol.is_h2() {
            h2_target(upstream, client_authority, protocol)?;
        }
    }
    Ok(())
}

/// An HTTP/2 request names its host in `:authority`, and Pingora refuses one whose `Host`
/// differs from it: the host chosen above (the `Host` header, from `host_header` or an
/// HTTP/1 client, else the HTTP/2 client's `:authority`) becomes the authority, with the
/// path and query sent upstream, and the `Host` header goes.
fn h2_target(
    upstream: &mut RequestHeader,
    client_authority: Option<http::uri::Authority>,
    protocol: crate::config::Protocol,
) -> Result<()> {
    let authority = match upstream.headers.get(http::header::HOST) {
        Some(h) => http::uri::Authority::try_from(h.as_bytes()).ok(),
        None => client_authority,
    };
    let Some(authority) = authority else {
        return Ok(()); // no host at all: Pingora refuses the request
    };
    let scheme = if protocol == crate::config::Protocol::H2c {
        http::uri::Scheme::HTTP
    } else {
        http::uri::Scheme::HTTPS
    };
    let path = upstream
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "h2 request target", e))?;
    upstream.set_uri(uri);
    upstream.remove_header(&http::header::HOST);
    Ok(())
}

/// The upstream answered: its latency, the host's passive health (any answer resets its
/// count of connect failures), and the breaker's outcome (a 5xx is a failure).
pub fn responded(ctx: &mut Ctx, status: http::StatusCode) {
    let now = Instant::now();
    let Some(start) = ctx.upstream_start else {
        return;
    };
    let Some(ep) = ctx.endpoint.and_then(|i| ctx.rt.endpoints.get(i)) else {
        return;
    };
    let backend = &ep.backend;
    let took = now.saturating_duration_since(start);
    ctx.upstream_time = Some(took);
    backend.latency.observe(took.as_secs_f64());
    if let Some(addr) = ctx.tried.last() {
        backend.responded(*addr);
    }
    if let (Some(pass), Some(breaker)) = (ctx.breaker.take(), &backend.breaker) {
        breaker.record(pass, !status.is_server_error(), now);
    }
}
