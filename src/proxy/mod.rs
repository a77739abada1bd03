//! The Pingora `ProxyHttp` implementation. It stays thin: each hook delegates to the modules
//! that decide (routing, respond, upstream).

pub mod ctx;
pub mod respond;
pub mod route;

use crate::metrics::metrics;
use crate::runtime::Shared;
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
            Routed::To { endpoint, uri }
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

#[async_trait]
impl ProxyHttp for Gatehouse {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.shared.load_full();
        ctx.start = Instant::now();
        let peer = client_addr(session).map(|a| a.ip());
        let (client, routed) = admit(&rt, session.req_header(), peer);
        ctx.client_ip = client;
        ctx.rt = Some(rt);
        match routed {
            Routed::To { endpoint, uri } => {
                ctx.endpoint = Some(endpoint);
                ctx.upstream_uri = uri;
                let timeout = ctx.endpoint().map(|e| e.timeout).unwrap_or_default();
                ctx.deadline = ctx.start + timeout;
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

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
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
        let Some(addr) = backend.select(&ctx.tried) else {
            ctx.reason = Some(Reason::NoHealthyHost);
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no upstream host",
            ));
        };
        ctx.tried.push(addr);
        let c = &backend.cfg;
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        o.connection_timeout = Some(c.connect_timeout.min(remaining));
        o.total_connection_timeout = Some(c.connect_timeout.min(remaining));
        o.read_timeout = Some(c.read_timeout.min(remaining));
        o.write_timeout = Some(c.write_timeout.min(remaining));
        o.idle_timeout = Some(c.idle_timeout);
        ctx.upstream_start = Some(now);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = ctx.endpoint().is_some_and(|ep| {
            let b = &ep.backend;
            (ctx.tried.len() as u32) <= b.cfg.retries
                && b.has_untried(&ctx.tried)
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
        }
        if let Some(peer) = client_addr(session) {
            // A trusted proxy's X-Forwarded-For is kept and our peer appended; an untrusted
            // peer's is replaced by the peer alone, so upstreams never see a forged chain.
            let peer = crate::filters::ip::canonical(peer.ip());
            let trusted = ctx
                .rt
                .as_ref()
                .is_some_and(|rt| rt.filters.client_ip.is_trusted(peer));
            let ip = peer.to_string();
            let xff = match upstream.headers.get("x-forwarded-for") {
                Some(prev) if trusted => match prev.to_str() {
                    Ok(p) if !p.trim().is_empty() => format!("{p}, {ip}"),
                    _ => ip,
                },
                _ => ip,
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        if let Some(rt) = ctx.rt.as_ref() {
            crate::filters::geo_headers(&rt.filters, ctx.client_ip, upstream)?;
        }
        upstream.insert_header("x-forwarded-proto", "http")?;
        if let Some(h) = ctx
            .endpoint()
            .and_then(|e| e.backend.cfg.host_header.clone())
        {
            upstream.insert_header("host", h)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(start), Some(ep)) = (ctx.upstream_start, ctx.endpoint()) {
            metrics()
                .upstream_latency
                .with_label_values(&[ep.backend.name.as_str()])
                .observe(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
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
        let ok = respond::send(session, reason, &Extra::default())
            .await
            .is_ok();
        FailToProxy {
            error_code: reason.status(),
            can_reuse_downstream: ok,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let route = ctx.endpoint().map(|e| e.pattern.as_str()).unwrap_or("");
        let m = metrics();
        let mut buf = itoa_buf(status);
        m.requests.with_label_values(&[route, buf.as_str()]).inc();
        if let Some(r) = ctx.reason {
            m.rejections.with_label_values(&[r.id()]).inc();
        }
        let access = ctx
            .rt
            .as_ref()
            .map(|rt| rt.config.server.access_log)
            .unwrap_or(true);
        if access {
            let req = session.req_header();
            let client = ctx
                .client_ip
                .or_else(|| client_addr(session).map(|a| a.ip()))
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
        buf.clear();
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Rejections we made ourselves are logged (with their reason) by the access log.
        ctx.reason.is_some()
    }
}

fn itoa_buf(n: u16) -> String {
    n.to_string()
}
