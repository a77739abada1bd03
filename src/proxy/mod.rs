//! The Pingora `ProxyHttp` implementation. It stays thin: each hook delegates to the module
//! that decides (`admit` before the upstream, `forward` for the upstream side, `respond` for
//! answers made here, `log` at the end).

pub mod admit;
pub mod conn;
pub mod ctx;
pub mod forward;
pub mod log;
pub mod respond;
pub mod tunnel;

use crate::reject::{Reason, Reject};
use crate::runtime::Shared;
use async_trait::async_trait;
use ctx::Ctx;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::Error;
use respond::Failure;
use std::sync::Arc;
use std::time::Instant;

pub struct Gatehouse {
    pub shared: Shared,
    /// Opens the upstream connections of the tunnels run by `tunnel`, with the options
    /// Pingora gives its own upstream connector.
    tunnels: TransportConnector,
}

impl Gatehouse {
    pub fn new(shared: Shared, conf: &ServerConf) -> Self {
        Gatehouse {
            shared,
            tunnels: TransportConnector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gatehouse {
    type CTX = Ctx;

    /// The request's context, on the runtime snapshot of the moment: a reload during the
    /// request does not change what it runs on.
    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.shared.load_full())
    }

    /// No downstream modules. Pingora's default adds its response-compression module,
    /// disabled (level 0), which still builds a module context and runs its filters on every
    /// request; gatehouse does not compress, so it is left out.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Admission (`admit`); a refusal is answered here and ends the request.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = Arc::clone(&ctx.rt);
        let req = admit::Request {
            head: session.req_header(),
            peer: forward::client_addr(session).map(|a| a.ip()),
            tls: forward::is_tls(session),
        };
        let id = crate::request_id::of(&rt.filters.client_ip, req.peer, &req.head.headers);
        ctx.request_id = Some(id);
        ctx.span = crate::telemetry::start_span(req.head);
        match admit::admit(&rt, &req, ctx).await {
            Ok(()) => Ok(false),
            Err(r) => {
                respond::answer(session, ctx, r).await?;
                Ok(true)
            }
        }
    }

    /// The backend's gate and limits, once per request. A refusal is answered here, so the
    /// client connection stays alive. An admitted WebSocket upgrade is then run by `tunnel`
    /// instead of Pingora's proxy loop (answered, so Pingora goes on to `logging`).
    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match forward::gate(ctx, Instant::now()).await {
            Ok(()) if tunnel::takes(session) => {
                tunnel::run(&self.tunnels, session, ctx).await?;
                Ok(false)
            }
            Ok(()) => Ok(true),
            Err(r) => {
                respond::answer(session, ctx, r).await?;
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        forward::next_peer(session, ctx)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let e = e.more_context(format!("Peer: {peer}"));
        forward::may_retry(session, e, ctx, client_reused)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        e.set_retry(forward::retry_connect(ctx));
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward::upstream_request(session, upstream, ctx)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        admit::count_body(session, body, ctx)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        forward::responded(ctx, upstream_response.status);
        Ok(())
    }

    /// The RateLimit headers of the limits that applied (not on a 1xx interim answer) and
    /// the request ID, on the upstream's answer.
    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        respond::decorate(ctx, response)
    }

    /// Every answer made here closes the client connection, and says so (`Connection:
    /// close`): Pingora 0.9 drops the client connection after any error of the proxying
    /// phase (`process_request` finishes with `server_reuse = false` and ignores
    /// `can_reuse_downstream`), and its other callers are hooks that failed because writing
    /// to the client failed. Without this the answer promised keep-alive and the client's
    /// next request on the connection was reset.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        session.set_keepalive(None);
        let unanswered = session.response_written().is_none();
        let error_code = match respond::failure(e, Instant::now() >= ctx.deadline) {
            Failure::Client { bad_request } => {
                if bad_request && unanswered {
                    let _ = respond::answer(session, ctx, Reject::new(Reason::BadRequest)).await;
                }
                if bad_request {
                    400
                } else {
                    0
                }
            }
            Failure::Answer(r) => {
                let status = r.status();
                if unanswered {
                    let _ = respond::answer(session, ctx, r).await;
                } else {
                    // Too late for a status: the response is already under way.
                    ctx.reason = Some(r.reason);
                }
                status
            }
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // The next request on this connection gets a fresh header deadline.
        conn::rearm(session.as_downstream().stream());
        log::finish(session, e, ctx);
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Rejections we made ourselves are logged (with their reason) by the access log.
        ctx.reason.is_some()
    }
}
