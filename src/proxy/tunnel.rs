//! WebSocket tunnels, run here instead of by Pingora's proxy loop.
//!
//! Pingora 0.9's HTTP/1 proxy loop ends an upgraded connection when either direction is
//! done, and the end of the upgrade request's (empty) body counts as the client's direction
//! being done. The two halves of that loop race: when the upstream's `101` is read before the
//! empty body's end has been passed on, the body's end arrives after the upgrade and closes
//! the tunnel right after the `101`. An upstream that speaks first, at once, hits this often.
//!
//! So an admitted WebSocket upgrade (an HTTP/1.1 request with `Upgrade: websocket` and no
//! body) is run here: the host is picked as for any request (balancing, passive health,
//! `retries` on connect failures, the backend's timeouts and `tls`), the request head is the
//! one any request sends upstream (`forward::upstream_request`) with the hop-by-hop fields
//! removed and `Connection: Upgrade` / `Upgrade: websocket` kept, and the upstream's answer
//! is reported like any answer (latency, health, breaker). A `101` is written to the client,
//! which switches Pingora's client session to upgraded mode, and bytes are then copied both
//! ways until either side closes, or `timeouts.tunnel_idle` passes without a byte in either
//! direction. Any other answer is relayed as a plain response.

use crate::proxy::ctx::Ctx;
use crate::proxy::{forward, respond};
use crate::reject::{Reason, Reject};
use bytes::Bytes;
use http::header;
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::time::Duration;

/// Whether the request is one that gatehouse tunnels itself: an HTTP/1.1 WebSocket upgrade
/// without a body. Other upgrade requests keep Pingora's path, which forwards no upgrade but
/// WebSocket's.
pub fn takes(session: &mut Session) -> bool {
    let req = session.req_header();
    let websocket = req
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    websocket
        && req.method != http::Method::HEAD
        && session.is_upgrade_req()
        && session.is_body_empty()
}

/// Runs the admitted upgrade request `session` to its end. An error before any answer was
/// written to the client is answered by the caller like a failed proxying attempt.
pub async fn run(
    connector: &TransportConnector,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<()> {
    let head = request_head(session, ctx)?;
    let (mut up, peer) = connect(connector, session, ctx).await?;
    up.read_timeout = peer.options.read_timeout;
    up.write_timeout = peer.options.write_timeout;
    up.write_request_header(head)
        .await
        .map_err(|e| e.into_up())?;
    // A client that goes away while the upstream thinks ends the request at once, as in
    // Pingora's loop (the same idle read of the client connection watches for it).
    let mut head = tokio::select! {
        head = read_head(&mut up) => head?,
        gone = session.read_body_or_idle(true) => {
            let e = gone.err().unwrap_or_else(|| {
                Error::explain(ErrorType::ConnectionClosed, "client gone before the answer")
            });
            return Err(e.into_down());
        }
    };
    forward::responded(ctx, head.status);
    respond::decorate(ctx, &mut head)?;
    if !up.was_upgraded() {
        return relay_response(session, &mut up, head).await;
    }
    session
        .write_response_header(head, false)
        .await
        .map_err(|e| e.into_down())?;
    let idle = ctx
        .endpoint()
        .map(|e| e.backend.cfg.tunnel_idle_timeout)
        .unwrap_or(Duration::from_secs(3600));
    let end = copy(session, &mut up, idle).await;
    if let Some(addr) = ctx.tried.last() {
        log::debug!("tunnel to {addr} ended: {end}");
    }
    let _ = session.finish_body().await;
    up.shutdown().await;
    Ok(())
}

/// The upstream's answer: its first header that is not a 1xx other than `101` (a stray
/// `100 Continue` is not the answer).
async fn read_head(up: &mut Upstream) -> Result<Box<ResponseHeader>> {
    loop {
        let head = up.read_resp_header_parts().await.map_err(|e| e.into_up())?;
        if head.status == 101 || !head.status.is_informational() {
            return Ok(head);
        }
    }
}

/// A connection to the next host, as `upstream_peer` and `fail_to_connect` would have it: a
/// failed connect counts against the host, and another host is tried while `retries`, untried
/// healthy hosts and the budget last.
async fn connect(
    connector: &TransportConnector,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<(Upstream, Box<HttpPeer>)> {
    loop {
        let peer = forward::next_peer(session, ctx)?;
        match connector.new_stream(&*peer).await {
            Ok(stream) => return Ok((Upstream::new_with_options(stream, &*peer), peer)),
            Err(e) => {
                if !forward::retry_connect(ctx) {
                    return Err(e.into_up());
                }
            }
        }
    }
}

/// The head sent upstream: what every request sends (`forward::upstream_request`), over
/// HTTP/1.1, the upgrade kept.
fn request_head(session: &Session, ctx: &Ctx) -> Result<Box<RequestHeader>> {
    let mut req = session.req_header().clone();
    req.set_version(http::Version::HTTP_11);
    strip_hop_by_hop(&mut req).map_err(respond::error)?;
    forward::upstream_request(session, &mut req, ctx)?;
    req.insert_header(header::CONNECTION, "Upgrade")?;
    req.insert_header(header::UPGRADE, "websocket")?;
    Ok(Box::new(req))
}

/// Fields that describe one hop and are not passed on (RFC 9110 §7.6.1). `Connection` and
/// `Upgrade` are set again for the upstream hop.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "http2-settings",
];

/// Removes the hop-by-hop fields, those that the client's `Connection` names included. A
/// `Connection` that names a field gatehouse sets or relies on (`Host`, the `X-Forwarded-*`
/// fields) is refused rather than obeyed.
fn strip_hop_by_hop(req: &mut RequestHeader) -> Result<(), Reject> {
    let mut named = Vec::new();
    for value in req.headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            let name = header::HeaderName::from_bytes(token).map_err(|_| {
                Reject::new(Reason::BadRequest).detail("Connection names an invalid field")
            })?;
            if matches!(
                name.as_str(),
                "host" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
            ) {
                let detail = format!("Connection may not name {name}");
                return Err(Reject::new(Reason::BadRequest).detail(detail));
            }
            named.push(name);
        }
    }
    for name in named.iter().map(|n| n.as_str()).chain(HOP_BY_HOP) {
        req.remove_header(name);
    }
    Ok(())
}

/// Relays an answer other than `101`: its header (with a chunked framing when it has none,
/// so the client connection can stay open), then its body.
async fn relay_response(
    session: &mut Session,
    up: &mut Upstream,
    mut head: Box<ResponseHeader>,
) -> Result<()> {
    let no_body = matches!(head.status.as_u16(), 204 | 304);
    let framed = head.headers.contains_key(header::CONTENT_LENGTH)
        || head.headers.contains_key(header::TRANSFER_ENCODING);
    if !no_body && !framed {
        head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    session
        .write_response_header(head, no_body)
        .await
        .map_err(|e| e.into_down())?;
    if no_body {
        return Ok(());
    }
    while let Some(chunk) = up.read_body_bytes().await.map_err(|e| e.into_up())? {
        session
            .write_response_body(Some(chunk), false)
            .await
            .map_err(|e| e.into_down())?;
    }
    session
        .write_response_body(None, true)
        .await
        .map_err(|e| e.into_down())
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    ClientClosed,
    UpstreamClosed,
    Idle,
    Failed(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::ClientClosed => f.write_str("the client closed"),
            End::UpstreamClosed => f.write_str("the upstream closed"),
            End::Idle => f.write_str("idle"),
            End::Failed(e) => write!(f, "{e}"),
        }
    }
}

enum Read {
    Client(Result<Option<Bytes>>),
    Upstream(Result<Option<Bytes>>),
}

/// Copies bytes both ways until either side closes or fails, or `idle` passes without a
/// byte in either direction (a write that cannot finish within `idle` ends it too). The
/// bytes the upstream sent along with its `101` come first.
async fn copy(session: &mut Session, up: &mut Upstream, idle: Duration) -> End {
    // The idle bound is the tunnel's own: no per-read timeout of either session applies.
    session.set_read_timeout(None);
    up.read_timeout = None;
    up.write_timeout = None;
    up.maybe_upgrade_body_writer();
    loop {
        let read = tokio::time::timeout(idle, async {
            tokio::select! {
                r = session.read_request_body() => Read::Client(r),
                r = up.read_body_bytes() => Read::Upstream(r),
            }
        })
        .await;
        let written = match read {
            Err(_) => return End::Idle,
            Ok(Read::Client(Ok(None))) => return End::ClientClosed,
            Ok(Read::Upstream(Ok(None))) => return End::UpstreamClosed,
            Ok(Read::Client(Err(e)) | Read::Upstream(Err(e))) => return End::Failed(e.to_string()),
            Ok(Read::Client(Ok(Some(b)))) => tokio::time::timeout(idle, up.write_body(&b))
                .await
                .map(|r| r.map(|_| ())),
            Ok(Read::Upstream(Ok(Some(b)))) => {
                tokio::time::timeout(idle, session.write_response_body(Some(b), false)).await
            }
        };
        match written {
            Err(_) => return End::Idle,
            Ok(Err(e)) => return End::Failed(e.to_string()),
            Ok(Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/ws", None).unwrap();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut r = head(&[
            ("connection", "Upgrade, X-Hop"),
            ("connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("sec-websocket-key", "k"),
            ("x-end-to-end", "2"),
        ]);
        strip_hop_by_hop(&mut r).unwrap();
        let left: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["sec-websocket-key", "x-end-to-end"]);
    }

    #[test]
    fn connection_may_not_name_what_gatehouse_sets() {
        for named in ["Host", "x-forwarded-for", "X-Forwarded-Proto"] {
            let mut r = head(&[("connection", &format!("upgrade, {named}"))]);
            let err = strip_hop_by_hop(&mut r).unwrap_err();
            assert_eq!(err.reason, Reason::BadRequest, "{named}");
        }
        let mut r = head(&[("connection", "upgrade, bad field")]);
        assert_eq!(
            strip_hop_by_hop(&mut r).unwrap_err().reason,
            Reason::BadRequest
        );
    }
}
