//! The Pingora `ProxyHttp` implementation. It stays thin: each hook delegates to the modules
//! that decide (routing, respond, upstream).

pub mod conn;
pub mod ctx;
pub mod edge;
pub mod respond;
pub mod route;

use crate::metrics::metrics;
use crate::runtime::Shared;
use crate::upstream::backend::Gate;
use crate::upstream::health::clock;
use async_trait::async_trait;
use ctx::Ctx;
use log::{info, warn};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use respond::{Extra, Reason};
use route::Match;
use std::time::Instant;

pub struct Gatehouse {
    pub shared: Shared,
}

impl Gatehouse {
    pub fn new(shared: Shared) -> Self {
        Gatehouse { shared }
    }
}

/// What routing decided, computed before the session is borrowed mutably.
enum Routed {
    To {
        endpoint: usize,
        uri: Option<String>,
        /// The client key of a `param` rate-limit strategy (src/limits).
        limit_key: Option<crate::limits::local::Key>,
    },
    Reject(Reason, Option<String>),
}

fn route_request(rt: &crate::runtime::Runtime, req: &RequestHeader) -> Routed {
    let path = req.uri.path();
    let norm = match route::normalize(path) {
        Ok(p) => p,
        Err(msg) => return Routed::Reject(Reason::BadRequest, Some(msg.to_string())),
    };
    match rt.router.find(&norm, &req.method) {
        Match::Found { endpoint, params } => {
            let ep = &rt.endpoints[endpoint];
            let limit_key = rt.limits.param_key(endpoint, &params);
            let changed = matches!(norm, std::borrow::Cow::Owned(_));
            let uri = if ep.rewrite.is_some() || changed {
                let mut s = String::with_capacity(norm.len() + 16);
                match &ep.rewrite {
                    Some(rw) => rw.render(&params, &mut s),
                    None => s.push_str(&norm),
                }
                if let Some(q) = req.uri.query() {
                    s.push('?');
                    s.push_str(q);
                }
                Some(s)
            } else {
                None
            };
            Routed::To {
                endpoint,
                uri,
                limit_key,
            }
        }
        Match::MethodNotAllowed { allow } => {
            Routed::Reject(Reason::MethodNotAllowed, Some(allow.to_string()))
        }
        Match::NotFound => Routed::Reject(Reason::NotFound, None),
    }
}

/// SPEC §3 steps 1-4: client address, service-wide filters, route, endpoint filters.
/// Returns the resolved client address with the routing (or rejection) decision.
fn admit(
    rt: &crate::runtime::Runtime,
    req: &RequestHeader,
    peer: Option<std::net::IpAddr>,
) -> (Option<std::net::IpAddr>, Routed) {
    use crate::filters::{Decision, Subject};
    let f = &rt.filters;
    let client = peer.map(|p| f.client_ip.resolve(p, &req.headers));
    let ua = req
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| v.as_bytes());
    let mut subject = Subject::new(client, ua, f.geo.as_deref());
    if let Decision::Reject(r) = f.service.check(&mut subject) {
        return (client, Routed::Reject(rejected(r), None));
    }
    let routed = route_request(rt, req);
    if let Routed::To { endpoint, .. } = &routed {
        if let Some(Decision::Reject(r)) = f.endpoints.get(*endpoint).map(|c| c.check(&mut subject))
        {
            return (client, Routed::Reject(rejected(r), None));
        }
    }
    (client, routed)
}

fn rejected(r: crate::filters::Rejected) -> Reason {
    use crate::filters::Rejected as R;
    match r {
        R::IpFilter => Reason::IpFilter,
        R::Geofence => Reason::Geofence,
        R::BotDetector => Reason::BotDetector,
    }
}

fn client_addr(session: &Session) -> Option<std::net::SocketAddr> {
    session.client_addr().and_then(|a| a.as_inet()).copied()
}

/// The client address the limits and the consistent hash key on: the one resolved through
/// `client_ip.trusted_proxies` (SPEC §3.1), else the TCP peer.
fn client_ip(session: &Session, ctx: &Ctx) -> Option<std::net::IpAddr> {
    ctx.client_ip
        .or_else(|| client_addr(session).map(|a| a.ip()))
}

/// The Retry-After and RateLimit headers of a response made by gatehouse.
fn limit_extra<'a>(ctx: &Ctx, headers: &'a Option<(String, String)>) -> Extra<'a> {
    Extra {
        retry_after: ctx.retry_after,
        ratelimit: headers.as_ref().map(|(p, s)| (p.as_str(), s.as_str())),
        ..Default::default()
    }
}

#[async_trait]
impl ProxyHttp for Gatehouse {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// No downstream modules. Pingora's default adds its response-compression module,
    /// disabled (level 0), which still builds a module context and runs its filters on every
    /// request; gatehouse does not compress, so it is left out.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// HTTP/1.1 pipelining: requests a client sends before reading the previous answer are
    /// served one after another, in order, on the same connection (RFC 9112 §9.3.2). Without
    /// it Pingora answers the first and closes the connection. Set on each request, since the
    /// first one's session exists only from here on.
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        if let pingora::protocols::http::ServerSession::H1(h1) = &mut *session.downstream_session {
            h1.set_pipelining_enabled(true);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.shared.load_full();
        ctx.start = Instant::now();
        let peer = client_addr(session).map(|a| a.ip());
        let (client, routed) = admit(&rt, session.req_header(), peer);
        ctx.client_ip = client;
        ctx.rt = Some(rt);
        // edge: redirect_http and max_body_size by Content-Length.
        if edge::request_filter(session, ctx).await? {
            return Ok(true);
        }
        match routed {
            Routed::To {
                endpoint,
                uri,
                limit_key,
            } => {
                ctx.endpoint = Some(endpoint);
                ctx.upstream_uri = uri;
                let timeout = ctx.endpoint().map(|e| e.timeout).unwrap_or_default();
                ctx.deadline = ctx.start + timeout;
                // --- rate limits (src/limits), SPEC §3 step 5 ---
                let ip = client_ip(session, ctx);
                let now = crate::limits::bucket::now_ns(ctx.start);
                if let Some(rt) = ctx.rt.as_deref() {
                    let req = session.req_header();
                    let checked = rt
                        .limits
                        .check_request(endpoint, req, ip, limit_key, now, &mut ctx.limits)
                        .await;
                    if let Err(rej) = checked {
                        ctx.reason = Some(rej.reason);
                        ctx.retry_after = Some(rej.retry_after);
                        let headers = ctx.limits.headers();
                        respond::send(session, rej.reason, &limit_extra(ctx, &headers)).await?;
                        return Ok(true);
                    }
                }
                // --- end rate limits ---
                Ok(false)
            }
            Routed::Reject(reason, info) => {
                ctx.reason = Some(reason);
                let extra = match reason {
                    Reason::MethodNotAllowed => Extra {
                        allow: info.as_deref(),
                        ..Default::default()
                    },
                    _ => Extra {
                        detail: info.as_deref(),
                        ..Default::default()
                    },
                };
                respond::send(session, reason, &extra).await?;
                Ok(true)
            }
        }
    }

    /// The backend's gate (issue 5): a healthy host must exist, then the circuit breaker must
    /// admit the request; then the backend's limits (src/limits): max_concurrent, then its
    /// bucket (SPEC §3 step 6). Rejections are answered here, so the client connection stays
    /// alive.
    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let gate = match ctx.endpoint() {
            Some(ep) => ep.backend.gate(Instant::now(), clock::now_ms()),
            None => return Ok(true),
        };
        let (reason, retry_after) = match gate {
            Gate::Go(pass) => {
                // --- backend limits (src/limits) ---
                let limited = match (ctx.rt.as_deref(), ctx.endpoint) {
                    (Some(rt), Some(i)) => {
                        let now = crate::limits::bucket::now_ns(ctx.start);
                        rt.limits.check_backend(i, now, &mut ctx.limits).await.err()
                    }
                    _ => None,
                };
                match limited {
                    // the breaker's pass is dropped unreported: a probe slot is released
                    Some(rej) => (rej.reason, rej.retry_after),
                    None => {
                        ctx.breaker = pass;
                        return Ok(true);
                    }
                }
                // --- end backend limits ---
            }
            Gate::NoHost => (Reason::NoHealthyHost, 1),
            Gate::Open { retry_after } => {
                (Reason::CircuitOpen, retry_after.as_secs_f64().ceil() as u64)
            }
        };
        ctx.reason = Some(reason);
        ctx.retry_after = Some(retry_after);
        let headers = ctx.limits.headers();
        respond::send(session, reason, &limit_extra(ctx, &headers)).await?;
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let now = Instant::now();
        let remaining = ctx.deadline.saturating_duration_since(now);
        let Some(ep) = ctx.endpoint() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no endpoint in context",
            ));
        };
        if remaining.is_zero() {
            ctx.reason = Some(Reason::EndpointTimeout);
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "endpoint timeout",
            ));
        }
        let backend = ep.backend.clone();
        // --- upstream resilience (issue 5): a healthy host (the gate ran in proxy_upstream_filter) ---
        let mut ip_buf = [0u8; 16];
        let client = client_ip(session, ctx);
        let key = hash_key(session, client, &backend.cfg.hash_key, &mut ip_buf);
        let Some(addr) = backend.select(key, &ctx.tried, clock::now_ms()) else {
            ctx.reason = Some(Reason::NoHealthyHost);
            ctx.retry_after = Some(1);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no upstream host",
            ));
        };
        // --- end upstream resilience ---
        ctx.tried.push(addr);
        let c = &backend.cfg;
        let mut peer = edge::new_peer(addr, c);
        let o = &mut peer.options;
        o.connection_timeout = Some(c.connect_timeout.min(remaining));
        o.total_connection_timeout = Some(c.connect_timeout.min(remaining));
        // The budget bounds the wait for the response header. Pingora uses one read timeout
        // for the header and for everything after it, so an upgrade request (WebSocket)
        // gets the tunnel's idle timeout instead: the budget must not cut a tunnel.
        // Pingora takes the read timeout before connecting, so an attempt may end as late as
        // the budget plus the time its connect took.
        o.read_timeout = Some(if session.is_upgrade_req() {
            c.tunnel_idle_timeout
        } else {
            c.read_timeout.min(remaining)
        });
        o.write_timeout = Some(c.write_timeout.min(remaining));
        o.idle_timeout = Some(c.idle_timeout);
        ctx.upstream_start = Some(now);
        Ok(Box::new(peer))
    }

    /// An error after the request was (partly) sent. Pingora's policy (the default body of
    /// this hook, which an override cannot call): an idempotent request whose reused pooled
    /// connection turned out to be closed by the upstream (no response byte read) may go
    /// again. The host is not to blame for a stale pooled connection, so it is taken off
    /// `tried`: it stays eligible (a one-host backend would otherwise answer 503) and the
    /// attempt is not one of the backend's `retries`. Such attempts end with a new connection
    /// (never reused, so never retried this way) or with the pool, Pingora's `max_retries`
    /// or the endpoint's budget.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
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

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let now_ms = clock::now_ms();
        let retry = ctx.endpoint().is_some_and(|ep| {
            let b = &ep.backend;
            // Passive health: repeated connect failures eject the host for a while.
            if let Some(addr) = ctx.tried.last() {
                b.connect_failed(*addr, now_ms);
            }
            (ctx.tried.len() as u32) <= b.cfg.retries
                && b.has_untried(&ctx.tried, now_ms)
                && Instant::now() < ctx.deadline
        });
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(uri) = ctx.upstream_uri.as_deref() {
            let parsed: http::Uri = uri
                .parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad rewritten uri"))?;
            upstream.set_uri(parsed);
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
        if let Some(rt) = ctx.rt.as_ref() {
            crate::filters::geo_headers(&rt.filters, ctx.client_ip, upstream)?;
        }
        let proto = http::HeaderValue::from_static(edge::forwarded_proto(session));
        upstream.insert_header("x-forwarded-proto", proto)?;
        if let Some(h) = ctx
            .endpoint()
            .and_then(|e| e.backend.cfg.host_header.as_ref())
        {
            upstream.insert_header(http::header::HOST, h.clone())?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        edge::count_body(session, body, ctx)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let backend = ctx.endpoint().map(|e| e.backend.clone());
        if let (Some(start), Some(backend)) = (ctx.upstream_start, backend) {
            backend.latency.observe(start.elapsed().as_secs_f64());
            // --- upstream resilience (issue 5): the host answered; 5xx is a breaker failure ---
            if let Some(addr) = ctx.tried.last() {
                backend.responded(*addr);
            }
            if let (Some(pass), Some(breaker)) = (ctx.breaker.take(), &backend.breaker) {
                let ok = !upstream_response.status.is_server_error();
                breaker.record(pass, ok, Instant::now());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut pingora::http::ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // RateLimit headers go on the final response, not on a 1xx interim one.
        if response.status.is_informational() {
            return Ok(());
        }
        if let Some((policy, state)) = ctx.limits.headers() {
            response.insert_header("ratelimit-policy", policy)?;
            response.insert_header("ratelimit", state)?;
        }
        Ok(())
    }

    /// Every answer made here closes the client connection, and says so (`Connection:
    /// close`): Pingora 0.9 drops the client connection after any error of the proxying
    /// phase (`process_request` finishes with `server_reuse = false` and ignores
    /// `can_reuse_downstream`), and its other callers are hooks that failed because writing
    /// to the client failed. Without this the answer promised keep-alive and the client's
    /// next request on the connection was reset.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        session.set_keepalive(None);
        let reason = match e.etype() {
            ErrorType::HTTPStatus(code) => ctx.reason.unwrap_or(match code {
                400 => Reason::BadRequest,
                503 => Reason::NoHealthyHost,
                504 => Reason::EndpointTimeout,
                _ => Reason::Internal,
            }),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if *e.esource() != ErrorSource::Downstream =>
            {
                if Instant::now() >= ctx.deadline {
                    Reason::EndpointTimeout
                } else {
                    Reason::UpstreamTimeout
                }
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Reason::BadGateway,
                ErrorSource::Downstream => {
                    let code = match e.etype() {
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => 0,
                        _ => 400,
                    };
                    if code > 0 && session.response_written().is_none() {
                        ctx.reason = Some(Reason::BadRequest);
                        let _ = respond::send(session, Reason::BadRequest, &Extra::default()).await;
                    }
                    return FailToProxy {
                        error_code: code,
                        can_reuse_downstream: false,
                    };
                }
                _ => Reason::Internal,
            },
        };
        ctx.reason = Some(reason);
        if session.response_written().is_some() {
            // Too late for a status: the response is already under way.
            return FailToProxy {
                error_code: reason.status(),
                can_reuse_downstream: false,
            };
        }
        let headers = ctx.limits.headers();
        let _ = respond::send(session, reason, &limit_extra(ctx, &headers)).await;
        FailToProxy {
            error_code: reason.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // The next request on this connection gets a fresh header deadline.
        conn::rearm(session.as_downstream().stream());
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        // --- upstream resilience (issue 5): an upstream error is a breaker failure; any
        // other end without an outcome (client gone, no host) drops the pass, which frees a
        // half-open probe slot.
        if let Some(pass) = ctx.breaker.take() {
            let failed = matches!(
                ctx.reason,
                Some(Reason::BadGateway | Reason::UpstreamTimeout | Reason::EndpointTimeout)
            );
            if let (true, Some(breaker)) = (
                failed,
                ctx.endpoint().and_then(|e| e.backend.breaker.as_ref()),
            ) {
                breaker.record(pass, false, Instant::now());
            }
        }
        // --- end upstream resilience ---
        let route = ctx.endpoint().map(|e| e.pattern.as_str()).unwrap_or("");
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
        let access = ctx
            .rt
            .as_ref()
            .map(|rt| rt.config.server.access_log)
            .unwrap_or(true);
        if access {
            let req = session.req_header();
            let client = client_ip(session, ctx)
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".into());
            let upstream = ctx
                .tried
                .last()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into());
            info!(
                target: "gatehouse::access",
                "{client} \"{} {}\" {status} {:.3}ms route={:?} upstream={upstream} reason={}",
                req.method,
                req.uri,
                ctx.start.elapsed().as_secs_f64() * 1000.0,
                route,
                ctx.reason.map(|r| r.id()).unwrap_or("-"),
            );
        }
        if let Some(err) = e {
            if ctx.reason.is_none() {
                warn!("request failed: {err}");
            }
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Rejections we made ourselves are logged (with their reason) by the access log.
        ctx.reason.is_some()
    }
}

/// The consistent-hash key: the configured header, else the client address (`buf` holds it).
fn hash_key<'a>(
    session: &'a Session,
    client: Option<std::net::IpAddr>,
    key: &crate::config::HashKey,
    buf: &'a mut [u8; 16],
) -> &'a [u8] {
    if let crate::config::HashKey::Header(name) = key {
        if let Some(v) = session.req_header().headers.get(name) {
            return v.as_bytes();
        }
    }
    match client {
        Some(std::net::IpAddr::V4(ip)) => {
            buf[..4].copy_from_slice(&ip.octets());
            &buf[..4]
        }
        Some(std::net::IpAddr::V6(ip)) => {
            *buf = ip.octets();
            &buf[..]
        }
        None => &[],
    }
}
