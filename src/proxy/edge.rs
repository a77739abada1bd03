//! The edge checks of the request path: `redirect_http` (308 to the https URL),
//! `max_body_size` (413 by Content-Length, then by counting a streamed body), and the peer of
//! an HTTPS upstream. Called from small hooks in `proxy/mod.rs`.

use crate::config::BackendConfig;
use crate::proxy::ctx::Ctx;
use crate::proxy::respond::{self, Extra, Reason};
use bytes::Bytes;
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;

/// Whether the client reached us over TLS.
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The `X-Forwarded-Proto` value for this request.
pub fn forwarded_proto(session: &Session) -> &'static str {
    if is_tls(session) {
        "https"
    } else {
        "http"
    }
}

/// What the edge decided before routing takes effect.
#[derive(Debug, PartialEq, Eq)]
pub enum EdgeDecision {
    Pass,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2: the server must answer 400).
    NoHost,
    /// 308 to this https URL.
    Redirect(String),
    /// Content-Length above the limit.
    TooLarge {
        declared: u64,
        limit: u64,
    },
}

/// The https URL of a plain request: the host of `Host` (or the request's authority), the
/// port of the first HTTPS listener (omitted when 443), path and query kept.
pub fn https_url(host: &str, port: u16, path_and_query: &str) -> String {
    // Strip a port, keeping an IPv6 literal in brackets whole.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let mut s = String::with_capacity(name.len() + path_and_query.len() + 16);
    s.push_str("https://");
    s.push_str(name);
    if port != 443 {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s.push_str(if path_and_query.is_empty() {
        "/"
    } else {
        path_and_query
    });
    s
}

/// Decides on the request head alone (pure: the hook below applies it).
pub fn decide(
    server: &crate::config::ServerConfig,
    tls: bool,
    req: &pingora::http::RequestHeader,
) -> EdgeDecision {
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return EdgeDecision::NoHost;
    }
    if let Some(t) = server.tls.as_ref().filter(|t| t.redirect_http && !tls) {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            return EdgeDecision::Redirect(https_url(host, t.https_port(), pq));
        }
    }
    if let Some(limit) = server.max_body_size {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(declared) = declared.filter(|&n| n > limit) {
            return EdgeDecision::TooLarge { declared, limit };
        }
    }
    EdgeDecision::Pass
}

/// Runs in `request_filter` once `ctx.rt` is set; returns true when it answered.
pub async fn request_filter(session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let Some(rt) = ctx.rt.as_ref() else {
        return Ok(false);
    };
    match decide(&rt.config.server, is_tls(session), session.req_header()) {
        EdgeDecision::Pass => Ok(false),
        EdgeDecision::NoHost => {
            ctx.reason = Some(Reason::BadRequest);
            let extra = Extra {
                detail: Some("An HTTP/1.1 request must carry a Host header"),
                ..Default::default()
            };
            respond::send(session, Reason::BadRequest, &extra).await?;
            Ok(true)
        }
        EdgeDecision::Redirect(url) => {
            ctx.reason = Some(Reason::RedirectHttps);
            let extra = Extra {
                location: Some(&url),
                ..Default::default()
            };
            respond::send(session, Reason::RedirectHttps, &extra).await?;
            Ok(true)
        }
        EdgeDecision::TooLarge { declared, limit } => {
            ctx.reason = Some(Reason::BodyTooLarge);
            // The body is not read: close after the answer instead of draining it.
            session.set_keepalive(None);
            let detail = format!("Content-Length {declared} is above the limit of {limit} bytes");
            let extra = Extra {
                detail: Some(&detail),
                ..Default::default()
            };
            respond::send(session, Reason::BodyTooLarge, &extra).await?;
            Ok(true)
        }
    }
}

/// Runs in `request_body_filter`: counts the bytes of a request body and fails with 413 once
/// they pass `max_body_size`. The tunnel of an upgraded (WebSocket) session is not counted.
pub fn count_body(session: &Session, body: &Option<Bytes>, ctx: &mut Ctx) -> Result<()> {
    let Some(limit) = ctx
        .rt
        .as_ref()
        .and_then(|rt| rt.config.server.max_body_size)
    else {
        return Ok(());
    };
    if session.was_upgraded() {
        return Ok(());
    }
    ctx.body_bytes += body.as_ref().map(|b| b.len() as u64).unwrap_or(0);
    if ctx.body_bytes > limit {
        ctx.reason = Some(Reason::BodyTooLarge);
        return Err(Error::explain(
            ErrorType::HTTPStatus(413),
            "request body above max_body_size",
        ));
    }
    Ok(())
}

/// The peer for a host of this backend: plain, or HTTPS with SNI, verification and CA.
pub fn new_peer(addr: SocketAddr, cfg: &BackendConfig) -> HttpPeer {
    match &cfg.tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(t) => {
            // `apply_tls` sets the SNI: one copy of it per request, not two.
            let mut peer = HttpPeer::new(addr, true, String::new());
            apply_tls(&mut peer, t);
            peer
        }
    }
}

/// Makes `peer` an HTTPS peer as a backend's `tls` says (also used by health checks).
pub fn apply_tls(peer: &mut HttpPeer, t: &crate::config::tls::BackendTls) {
    peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
    peer.sni = t.sni.clone();
    peer.options.verify_cert = t.verify;
    peer.options.verify_hostname = t.verify;
    if let Some(ca) = &t.ca {
        peer.options.ca = Some(ca.certs.clone());
        // Pingora's pool does not key on the CA: keep peers with different CAs apart.
        peer.group_key = ca.fingerprint;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    fn server(yaml_server: &str) -> crate::config::ServerConfig {
        let text = format!("version: 1\nserver: {yaml_server}\n");
        crate::config::parse(&text).unwrap().server
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        r.insert_header("host", "t").unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn https_urls() {
        assert_eq!(
            https_url("example.com:8080", 8443, "/a?b=1"),
            "https://example.com:8443/a?b=1"
        );
        assert_eq!(https_url("example.com", 443, "/"), "https://example.com/");
        assert_eq!(https_url("[::1]:80", 443, "/x"), "https://[::1]/x");
        assert_eq!(https_url("[::1]", 8443, "/x"), "https://[::1]:8443/x");
    }

    #[test]
    fn http11_needs_host() {
        let s = server("{ listen: [\"127.0.0.1:1\"] }");
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(decide(&s, false, &r), EdgeDecision::NoHost);
        r.set_version(http::Version::HTTP_10);
        assert_eq!(decide(&s, false, &r), EdgeDecision::Pass);
        r.set_version(http::Version::HTTP_2);
        assert_eq!(
            decide(&s, false, &r),
            EdgeDecision::Pass,
            "h2 has :authority"
        );
    }

    #[test]
    fn body_limit_by_content_length() {
        let s = server("{ listen: [\"127.0.0.1:1\"], max_body_size: 1KB }");
        let small = req("/", &[("content-length", "1024")]);
        assert_eq!(decide(&s, false, &small), EdgeDecision::Pass);
        let big = req("/", &[("content-length", "1025")]);
        assert_eq!(
            decide(&s, true, &big),
            EdgeDecision::TooLarge {
                declared: 1025,
                limit: 1024
            }
        );
        let unlimited = server("{ listen: [\"127.0.0.1:1\"] }");
        assert_eq!(decide(&unlimited, false, &big), EdgeDecision::Pass);
    }
}
