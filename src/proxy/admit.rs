//! Admission: the checks a request passes, in order, before it may go upstream. Each stage
//! returns `Result<_, Reject>` and the first refusal ends the pipeline:
//!
//! edge checks (`redirect_http`, `max_body_size` by Content-Length) -> client address ->
//! service-wide filters -> route -> the endpoint's filters -> rate limits.
//!
//! A streamed body is counted against `max_body_size` later, as it arrives (`count_body`).

use crate::filters::Subject;
use crate::limits::local::Key;
use crate::proxy::ctx::Ctx;
use crate::proxy::respond;
use crate::reject::{Reason, Reject};
use crate::routing::{self, Match};
use crate::runtime::Runtime;
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;
use std::borrow::Cow;
use std::net::IpAddr;

/// The facts of a request that admission starts from.
pub struct Request<'a> {
    pub head: &'a RequestHeader,
    /// The TCP peer's address (`None` for a non-TCP peer).
    pub peer: Option<IpAddr>,
    /// Whether the client reached us over TLS.
    pub tls: bool,
}

/// Runs the pipeline. A `dry_run` filter or limit that would refuse the request lets it go on
/// to the next check; each such refusal is noted in `ctx.would_reject`. What it learns on the way (the client address, the endpoint, its time
/// budget, the path to send upstream, the limits' header numbers) is kept in `ctx` whether or
/// not the request is admitted: the access log and the metrics report it.
pub async fn admit(rt: &Runtime, req: &Request<'_>, ctx: &mut Ctx) -> Result<(), Reject> {
    edge_checks(&rt.config.server, req.tls, req.head)?;
    let client = req
        .peer
        .map(|p| rt.filters.client_ip.resolve(p, &req.head.headers));
    ctx.client_ip = client;
    let mut subject = Subject::new(client, user_agent(req.head), rt.filters.geo.as_deref())
        .with_networks(rt.filters.networks.as_ref());
    let mut passed = rt.filters.service.check(&mut subject);
    if passed.is_ok() {
        passed = subject.verify_bot(rt.filters.resolver.as_ref()).await;
    }
    ctx.would_reject = subject.would_reject;
    passed?;
    let route = route(rt, req.head)?;
    let ep = &rt.endpoints[route.endpoint];
    let mut passed = ep.filters.check(&mut subject);
    if passed.is_ok() {
        passed = subject.verify_bot(rt.filters.resolver.as_ref()).await;
    }
    ctx.would_reject = subject.would_reject;
    passed?;
    ctx.endpoint = Some(route.endpoint);
    ctx.upstream_uri = route.uri;
    ctx.deadline = ctx.start + ep.timeout;
    if let Some(t) = grpc_timeout(req.head)? {
        ctx.deadline = ctx.deadline.min(ctx.start + t);
        ctx.grpc_deadline = true;
    }
    let asked = crate::limits::Request {
        head: req.head,
        ip: client,
        now: crate::clock::now_ns(ctx.start),
    };
    let limiter = ep.limiter.as_deref();
    let passed = rt
        .limits
        .check_request(
            limiter,
            ep.gate.as_ref(),
            &asked,
            route.limit_key,
            &mut ctx.limits,
        )
        .await;
    ctx.would_reject.merge(ctx.limits.would_reject);
    passed
}

/// The deadline a gRPC client gave its call (`grpc-timeout`); it can only shorten the
/// endpoint's budget. A malformed value is refused.
fn grpc_timeout(req: &RequestHeader) -> Result<Option<std::time::Duration>, Reject> {
    let Some(v) = req.headers.get("grpc-timeout") else {
        return Ok(None);
    };
    if !crate::grpc::is_grpc(&req.headers) {
        return Ok(None);
    }
    match crate::grpc::parse_timeout(v.as_bytes()) {
        Some(t) => Ok(Some(t)),
        None => Err(Reject::new(Reason::BadRequest)
            .detail("grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u or n)")),
    }
}

fn user_agent(req: &RequestHeader) -> Option<&[u8]> {
    req.headers
        .get(http::header::USER_AGENT)
        .map(|v| v.as_bytes())
}

/// Where routing sends a request.
struct Route {
    endpoint: usize,
    /// Path and query to send upstream, when normalisation or a rewrite changed them.
    uri: Option<http::Uri>,
    /// The client key of a `param` rate-limit strategy, from the matched path.
    limit_key: Option<Key>,
}

/// Normalises the path and matches it: 400 for a path that cannot be normalised, 404 when no
/// route matches, 405 (with `Allow`) when the path is routed for other methods.
fn route(rt: &Runtime, req: &RequestHeader) -> Result<Route, Reject> {
    let norm = routing::normalize(req.uri.path())
        .map_err(|msg| Reject::new(Reason::BadRequest).detail(msg))?;
    let (endpoint, params) = match rt.router.find(&norm, &req.method) {
        Match::Found { endpoint, params } => (endpoint, params),
        Match::MethodNotAllowed { allow } => {
            return Err(Reject::new(Reason::MethodNotAllowed).allow(allow))
        }
        Match::NotFound => return Err(Reject::new(Reason::NotFound)),
    };
    let ep = &rt.endpoints[endpoint];
    let limit_key = ep.limiter.as_ref().and_then(|l| l.param_key(&params));
    let changed = matches!(norm, Cow::Owned(_));
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
        let uri = http::Uri::try_from(s).map_err(|_| Reject::new(Reason::BadRequest))?;
        Some(uri)
    } else {
        None
    };
    Ok(Route {
        endpoint,
        uri,
        limit_key,
    })
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

/// The edge checks, on the request head alone: an HTTP/1.1 request must carry `Host` (RFC
/// 9112 §3.2: the server must answer 400), then `redirect_http` (308 to the https URL), then
/// `max_body_size` by Content-Length (413).
pub fn edge_checks(
    server: &crate::config::ServerConfig,
    tls: bool,
    req: &pingora::http::RequestHeader,
) -> Result<(), Reject> {
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        let detail = "An HTTP/1.1 request must carry a Host header";
        return Err(Reject::new(Reason::BadRequest).detail(detail));
    }
    if let Some(t) = server.tls.as_ref().filter(|t| t.redirect_http && !tls) {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let url = https_url(host, t.https_port(), pq);
            return Err(Reject::new(Reason::RedirectHttps).location(url));
        }
    }
    if let Some(limit) = server.max_body_size {
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(declared) = declared.filter(|&n| n > limit) {
            let detail = format!("Content-Length {declared} is above the limit of {limit} bytes");
            return Err(Reject::new(Reason::BodyTooLarge).detail(detail));
        }
    }
    Ok(())
}

/// Runs in `request_body_filter`: counts the bytes of a request body and fails with 413 once
/// they pass `max_body_size`. The tunnel of an upgraded (WebSocket) session is not counted.
pub fn count_body(session: &Session, body: &Option<Bytes>, ctx: &mut Ctx) -> Result<()> {
    let Some(limit) = ctx.rt.config.server.max_body_size else {
        return Ok(());
    };
    if session.was_upgraded() {
        return Ok(());
    }
    ctx.body_bytes += body.as_ref().map(|b| b.len() as u64).unwrap_or(0);
    if ctx.body_bytes > limit {
        return Err(respond::error(Reject::new(Reason::BodyTooLarge)));
    }
    Ok(())
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
        let no_host =
            Reject::new(Reason::BadRequest).detail("An HTTP/1.1 request must carry a Host header");
        assert_eq!(edge_checks(&s, false, &r), Err(no_host));
        r.set_version(http::Version::HTTP_10);
        assert_eq!(edge_checks(&s, false, &r), Ok(()));
        r.set_version(http::Version::HTTP_2);
        assert_eq!(edge_checks(&s, false, &r), Ok(()), "h2 has :authority");
    }

    #[test]
    fn body_limit_by_content_length() {
        let s = server("{ listen: [\"127.0.0.1:1\"], max_body_size: 1KB }");
        let small = req("/", &[("content-length", "1024")]);
        assert_eq!(edge_checks(&s, false, &small), Ok(()));
        let big = req("/", &[("content-length", "1025")]);
        let too_large = Reject::new(Reason::BodyTooLarge)
            .detail("Content-Length 1025 is above the limit of 1024 bytes");
        assert_eq!(edge_checks(&s, true, &big), Err(too_large));
        let unlimited = server("{ listen: [\"127.0.0.1:1\"] }");
        assert_eq!(edge_checks(&unlimited, false, &big), Ok(()));
    }

    fn runtime(security: &str) -> std::sync::Arc<Runtime> {
        let yaml = format!(
            r#"
version: 1
server: {{ listen: ["127.0.0.1:0"], max_body_size: 1KB }}
security: {security}
backends:
  a: {{ discovery: {{ static: ["127.0.0.1:9001"] }} }}
endpoints:
  - path: "/p/{{id}}"
    methods: [GET]
    backend: a
    rewrite: "/q/{{id}}"
    rate_limit: {{ max_rate: 1, every: 1h }}
"#
        );
        let cfg = crate::config::parse(&yaml).unwrap();
        std::sync::Arc::new(Runtime::compile(cfg, None).unwrap())
    }

    async fn run(rt: &std::sync::Arc<Runtime>, head: &RequestHeader) -> (Result<(), Reject>, Ctx) {
        let mut ctx = Ctx::new(rt.clone());
        let req = Request {
            head,
            peer: Some("10.0.0.1".parse().unwrap()),
            tls: false,
        };
        let r = admit(rt, &req, &mut ctx).await;
        (r, ctx)
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = req(path, headers);
        r.set_method(http::Method::GET);
        r
    }

    /// The stages answer in the order they run: the edge before the filters, the filters
    /// before routing.
    #[tokio::test]
    async fn the_first_stage_that_refuses_answers() {
        let open = runtime("{}");
        let deny = runtime("{ ip_filter: { mode: deny, cidrs: [10.0.0.0/8] } }");
        let big_unrouted = get("/nowhere", &[("content-length", "2048")]);
        let (r, ctx) = run(&deny, &big_unrouted).await;
        assert_eq!(r.unwrap_err().reason, Reason::BodyTooLarge);
        assert_eq!(ctx.client_ip, None, "refused before the client address");
        let (r, ctx) = run(&deny, &get("/nowhere", &[])).await;
        assert_eq!(r.unwrap_err().reason, Reason::IpFilter);
        assert_eq!(ctx.client_ip, Some("10.0.0.1".parse().unwrap()));
        let (r, _) = run(&open, &get("/nowhere", &[])).await;
        assert_eq!(r.unwrap_err().reason, Reason::NotFound);
        let (r, ctx) = run(&open, &req("/p/7", &[])).await;
        assert_eq!(
            r.unwrap_err(),
            Reject::new(Reason::MethodNotAllowed).allow("GET")
        );
        assert_eq!(ctx.endpoint, None);
        let (r, _) = run(&open, &get("/p/%zz", &[])).await;
        assert_eq!(r.unwrap_err().reason, Reason::BadRequest);
    }

    /// An admitted request carries its endpoint, budget and upstream path; one refused by
    /// the rate limits keeps its endpoint for the metrics and the access log.
    #[tokio::test]
    async fn routing_is_kept_whatever_the_limits_say() {
        let rt = runtime("{}");
        let (r, ctx) = run(&rt, &get("/p/7?x=1", &[])).await;
        assert_eq!(r, Ok(()));
        assert_eq!(ctx.endpoint, Some(0));
        assert_eq!(ctx.upstream_uri.unwrap(), "/q/7?x=1");
        assert!(ctx.deadline > ctx.start);
        let (r, ctx) = run(&rt, &get("/p/8", &[])).await;
        assert_eq!(r.unwrap_err().reason, Reason::EndpointRateLimit);
        assert_eq!(ctx.endpoint, Some(0));
    }
}
