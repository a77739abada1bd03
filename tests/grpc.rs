//! gRPC through the real binary: a tonic client and a tonic server (hand-written messages and
//! service, no code generation), h2c from the client, h2c or h2 over TLS to the upstream.
//! Each call kind, status and trailers passing through, deadlines, and gatehouse's own
//! rejections as gRPC statuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{tls::Pki, Gatehouse, SERVER};
use http::uri::PathAndQuery;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

#[path = "common/grpc_service.rs"]
mod grpc_service;
use grpc_service::{msg, Codec, Msg, Serve};

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

// ---------------------------------------------------------------------------------------
// The upstream: `t.Echo` with one method of each kind.

/// Unary: answers `echo: <text>`. `fail` answers NOT_FOUND with a `x-why` trailer;
/// `sleep:<ms>` waits first; `timeout?` answers with the `grpc-timeout` it was sent.
async fn unary(req: Request<Msg>) -> Result<Response<Msg>, Status> {
    let seen_timeout = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let text = req.into_inner().text;
    if text == "fail" {
        let mut s = Status::not_found("no such thing");
        s.metadata_mut().insert("x-why", "because".parse().unwrap());
        return Err(s);
    }
    if let Some(ms) = text.strip_prefix("sleep:") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if text == "timeout?" {
        return Ok(Response::new(msg(&seen_timeout)));
    }
    Ok(Response::new(msg(&format!("echo: {text}"))))
}

/// Server streaming: `n` messages, then OK; with `abort` the trailers say ABORTED.
async fn server_stream(req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
    let text = req.into_inner().text;
    let mut items: Vec<Result<Msg, Status>> =
        (0..3).map(|i| Ok(msg(&format!("{text} {i}")))).collect();
    if text == "abort" {
        let mut s = Status::aborted("stopped after three");
        s.metadata_mut()
            .insert("x-trailer", "kept".parse().unwrap());
        items.push(Err(s));
    }
    Ok(Response::new(Box::pin(tokio_stream::iter(items))))
}

/// Client streaming: joins what it was sent.
async fn client_stream(req: Request<tonic::Streaming<Msg>>) -> Result<Response<Msg>, Status> {
    let mut stream = req.into_inner();
    let mut all = Vec::new();
    while let Some(m) = stream.next().await {
        all.push(m?.text);
    }
    Ok(Response::new(msg(&all.join(","))))
}

/// Bidirectional: answers each message as it comes.
async fn bidi(req: Request<tonic::Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
    let out = req
        .into_inner()
        .map(|m| m.map(|m| msg(&format!("re: {}", m.text))));
    Ok(Response::new(Box::pin(out)))
}

/// `t.Echo`'s methods by path.
async fn echo(req: http::Request<grpc_service::Body>) -> http::Response<grpc_service::Body> {
    let mut g = tonic::server::Grpc::new(Codec::default());
    use tower::service_fn as svc;
    match req.uri().path() {
        "/t.Echo/Unary" => g.unary(svc(unary), req).await,
        "/t.Echo/ServerStream" => g.server_streaming(svc(server_stream), req).await,
        "/t.Echo/ClientStream" => g.client_streaming(svc(client_stream), req).await,
        "/t.Echo/Bidi" => g.streaming(svc(bidi), req).await,
        // Anything else (a health check): 200, so the host stays healthy.
        _ => http::Response::new(grpc_service::Body::empty()),
    }
}

/// A connection the upstream accepted, counted.
fn counted<S>(
    incoming: impl Stream<Item = std::io::Result<S>>,
    accepted: Arc<AtomicUsize>,
) -> impl Stream<Item = std::io::Result<S>> {
    incoming.map(move |s| {
        accepted.fetch_add(1, Ordering::SeqCst);
        s
    })
}

/// The test service over h2c on a free port; returns its address and the count of
/// connections it accepted.
async fn h2c_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let incoming = counted(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        accepted.clone(),
    );
    tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(Serve(echo), incoming));
    (addr, accepted)
}

/// An h2c upstream that takes calls and never answers them (nor keeps their deadline).
async fn silent_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(call)) = conn.accept().await {
                    held.push(call);
                }
            });
        }
    });
    addr
}

/// A TLS server stream, for tonic.
struct TlsIo(tokio_openssl::SslStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The test service over TLS with ALPN h2 only, serving `cert`.
async fn tls_upstream(cert: &common::tls::Issued) -> SocketAddr {
    use pingora::tls::pkey::PKey;
    use pingora::tls::ssl::{AlpnError, SslAcceptor, SslMethod};
    use pingora::tls::x509::X509;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&X509::from_pem(cert.cert.as_bytes()).unwrap())
        .unwrap();
    b.set_private_key(&PKey::private_key_from_pem(cert.key.as_bytes()).unwrap())
        .unwrap();
    b.set_alpn_select_callback(|_, offered| {
        pingora::tls::ssl::select_next_proto(b"\x02h2", offered).ok_or(AlpnError::NOACK)
    });
    let acceptor = Arc::new(b.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsIo>>(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let ssl = pingora::tls::ssl::Ssl::new(acceptor.context()).unwrap();
                let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                if Pin::new(&mut s).accept().await.is_ok() {
                    let _ = tx.send(Ok(TlsIo(s))).await;
                }
            });
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .serve_with_incoming(Serve(echo), tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    addr
}

// ---------------------------------------------------------------------------------------
// The client.

async fn client(addr: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("h2c connection to gatehouse");
    tonic::client::Grpc::new(ch)
}

async fn call(
    g: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    req: Request<Msg>,
) -> Result<Response<Msg>, Status> {
    g.ready().await.unwrap();
    g.unary(req, PathAndQuery::from_static(path), Codec::default())
        .await
}

async fn unary_text(g: &mut tonic::client::Grpc<tonic::transport::Channel>, text: &str) -> String {
    call(g, "/t.Echo/Unary", Request::new(msg(text)))
        .await
        .unwrap()
        .into_inner()
        .text
}

/// Gatehouse with `server.h2c` in front of the backend `app` at `hosts` (`backend` adds
/// keys to it) and the endpoints `endpoints` (YAML list items).
fn gatehouse(hosts: &[SocketAddr], backend: &str, endpoints: &str) -> Gatehouse {
    let hosts: Vec<String> = hosts.iter().map(|a| format!("\"{a}\"")).collect();
    let yaml = format!(
        "{SERVER}  h2c: true\nbackends:\n  app:\n    discovery: {{ static: [{}] }}\n{backend}\nendpoints:\n{endpoints}\n",
        hosts.join(", ")
    );
    // Starting gatehouse blocks while it polls for readiness: off the runtime's threads.
    tokio::task::block_in_place(|| Gatehouse::start(&yaml))
}

const H2C: &str = "    protocol: h2c";
const ALL: &str = "  - path: /t.Echo/{*rest}\n    backend: app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_kind_passes_over_one_upstream_connection() {
    let (up, accepted) = h2c_upstream().await;
    let g = gatehouse(&[up], H2C, ALL);
    let mut c = client(g.addr).await;

    assert_eq!(unary_text(&mut c, "hi").await, "echo: hi");

    c.ready().await.unwrap();
    let mut s = c
        .server_streaming(
            Request::new(msg("n")),
            PathAndQuery::from_static("/t.Echo/ServerStream"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, ["n 0", "n 1", "n 2"]);

    c.ready().await.unwrap();
    let sent = tokio_stream::iter(["a", "b", "c"].map(msg));
    let joined = c
        .client_streaming(
            Request::new(sent),
            PathAndQuery::from_static("/t.Echo/ClientStream"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.text, "a,b,c");

    // Bidirectional, in lock step: each answer arrives before the next message is sent, so
    // neither direction is buffered to its end.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    c.ready().await.unwrap();
    let mut answers = c
        .streaming(
            Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static("/t.Echo/Bidi"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for word in ["one", "two", "three"] {
        tx.send(msg(word)).await.unwrap();
        let a = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("an answer to each message before the next is sent")
            .unwrap()
            .unwrap();
        assert_eq!(a.text, format!("re: {word}"));
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    assert!(
        answers.trailers().await.unwrap().is_some(),
        "the status came in trailers"
    );

    // Every call above went over one upstream connection. Ten calls at once, each held
    // for 200 ms by the upstream (HTTP/1.1 would need ten connections), share it: Pingora
    // may open another when calls race for the pooled connection, never one per call.
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one multiplexed upstream connection"
    );
    let calls = (0..10).map(|_| {
        let mut c = c.clone();
        async move { unary_text(&mut c, "sleep:200").await }
    });
    let answers = futures_join(calls).await;
    assert_eq!(answers, vec!["echo: sleep:200"; 10]);
    let n = accepted.load(Ordering::SeqCst);
    assert!(n <= 3, "{n} upstream connections for ten concurrent calls");
}

/// Runs the futures concurrently on the runtime and collects their outputs.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_and_trailers_pass_through() {
    let (up, _) = h2c_upstream().await;
    let g = gatehouse(&[up], H2C, ALL);
    let mut c = client(g.addr).await;

    let e = call(&mut c, "/t.Echo/Unary", Request::new(msg("fail")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no such thing");
    assert_eq!(e.metadata().get("x-why").unwrap(), "because");

    // Messages, then a status in real trailers (after the body).
    c.ready().await.unwrap();
    let mut s = c
        .server_streaming(
            Request::new(msg("abort")),
            PathAndQuery::from_static("/t.Echo/ServerStream"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        assert_eq!(
            s.message().await.unwrap().unwrap().text,
            format!("abort {i}")
        );
    }
    let e = s.message().await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert_eq!(e.message(), "stopped after three");
    assert_eq!(e.metadata().get("x-trailer").unwrap(), "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_come_from_the_client_capped_by_the_budget() {
    let (up, _) = h2c_upstream().await;
    let endpoints = format!("{ALL}\n    timeout: 1s");
    let g = gatehouse(&[up], H2C, &endpoints);
    let mut c = client(g.addr).await;

    // The upstream is told what is left: the client's 30 s, capped by the endpoint's 1 s.
    let mut r = Request::new(msg("timeout?"));
    r.set_timeout(Duration::from_secs(30));
    let seen = call(&mut c, "/t.Echo/Unary", r)
        .await
        .unwrap()
        .into_inner()
        .text;
    let ms: u64 = seen
        .strip_suffix('m')
        .expect("milliseconds")
        .parse()
        .unwrap();
    assert!(ms > 0 && ms <= 1000, "upstream saw grpc-timeout {seen}");
    // A shorter client deadline is passed on as it is (less the time spent so far).
    let mut r = Request::new(msg("timeout?"));
    r.set_timeout(Duration::from_millis(800));
    let seen = call(&mut c, "/t.Echo/Unary", r)
        .await
        .unwrap()
        .into_inner()
        .text;
    let ms: u64 = seen.strip_suffix('m').unwrap().parse().unwrap();
    assert!(ms > 0 && ms <= 800, "upstream saw grpc-timeout {seen}");

    // A malformed grpc-timeout is refused.
    let mut r = Request::new(msg("x"));
    r.metadata_mut()
        .insert("grpc-timeout", "soon".parse().unwrap());
    let e = call(&mut c, "/t.Echo/Unary", r).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("grpc-timeout"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_ends_calls_at_their_deadline() {
    // The upstream never answers: each call is ended by gatehouse.
    let up = silent_upstream().await;
    let endpoints = format!(
        "{ALL}\n    timeout: 10s\n  - path: /t.Short/{{*rest}}\n    backend: app\n    timeout: 300ms"
    );
    let g = gatehouse(&[up], H2C, &endpoints);
    let mut c = client(g.addr).await;

    // No client deadline: the endpoint's budget ends the call.
    let t = Instant::now();
    let e = call(&mut c, "/t.Short/Unary", Request::new(msg("x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert_eq!(e.message(), "The endpoint's time budget is spent");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // A client deadline shorter than the budget ends the call at that deadline. (A tonic
    // client keeps the deadline itself too, so this call is made with the h2 crate.)
    let t = Instant::now();
    let (status, head, ended) =
        raw_call(g.addr, "/t.Echo/Unary", &[("grpc-timeout", "300m")]).await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    assert!(ended, "a Trailers-Only answer: the header ends the stream");
    assert_eq!(head["content-type"], "application/grpc");
    assert_eq!(head["grpc-status"], "4");
    assert_eq!(head["grpc-message"], "The endpoint's time budget is spent");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// One gRPC call by hand over h2c (prior knowledge), with an empty message: the answer's
/// status, header, and whether the header ended the stream.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, bool) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut client = client.ready().await.unwrap();
    let (resp, mut body) = client.send_request(req.body(()).unwrap(), false).unwrap();
    // One length-prefixed message of 0 bytes.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let resp = resp.await.unwrap();
    let ended = resp.body().is_end_stream();
    (resp.status().as_u16(), resp.headers().clone(), ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_grpc_statuses() {
    let (up, _) = h2c_upstream().await;
    let dead = common::dead_addr();
    let backend = format!(
        "{H2C}\n  down:\n    discovery: {{ static: [\"{}\"] }}\n    protocol: h2c\n    retries: 0",
        dead.addr
    );
    let endpoints = "  - path: /t.Limited/{*rest}\n    backend: app\n    rewrite: /t.Echo/Unary\n    rate_limit: { client_max_rate: 1, every: 1h }\n\
                     \x20 - path: /t.Denied/{*rest}\n    backend: app\n    security: { ip_filter: { mode: deny, cidrs: [\"127.0.0.0/8\"] } }\n\
                     \x20 - path: /t.Down/{*rest}\n    backend: down";
    let g = gatehouse(&[up], &backend, endpoints);
    let mut c = client(g.addr).await;
    let status = |r: Result<Response<Msg>, Status>| r.unwrap_err();

    let e = status(call(&mut c, "/t.Unknown/Unary", Request::new(msg("x"))).await);
    assert_eq!(e.code(), Code::Unimplemented);
    assert_eq!(e.message(), "No route matches this path");

    let e = status(call(&mut c, "/t.Denied/Unary", Request::new(msg("x"))).await);
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "Client address not allowed");

    // The first call takes the only token; the second is refused.
    let first = call(&mut c, "/t.Limited/Unary", Request::new(msg("x"))).await;
    assert_eq!(first.unwrap().into_inner().text, "echo: x");
    let e = status(call(&mut c, "/t.Limited/Unary", Request::new(msg("x"))).await);
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.message(), "Too many requests from this client");
    assert!(
        e.metadata().get("retry-after").is_some(),
        "{:?}",
        e.metadata()
    );
    assert!(
        e.metadata().get("ratelimit").is_some(),
        "{:?}",
        e.metadata()
    );
    // one token an hour, just taken: the next in about an hour, none left
    let retry: u64 = e
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    let ratelimit = e.metadata().get("ratelimit").unwrap().to_str().unwrap();
    assert!(
        ratelimit.starts_with("\"endpoint-client\";r=0;"),
        "{ratelimit}"
    );

    let e = status(call(&mut c, "/t.Down/Unary", Request::new(msg("x"))).await);
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message().starts_with("Upstream refused"),
        "{}",
        e.message()
    );

    // Each answer was a gatehouse rejection, counted by its reason.
    for reason in ["not_found", "ip_filter", "client_rate_limit", "bad_gateway"] {
        let metric = format!("gatehouse_rejections_total{{reason=\"{reason}\"}}");
        common::wait_for(&metric, Duration::from_secs(5), || {
            (g.metric(&metric) >= 1.0).then_some(())
        });
        assert_eq!(g.metric(&metric), 1.0, "{metric} counted once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_listener_still_serves_http1() {
    let (up, _) = h2c_upstream().await;
    let g = gatehouse(&[up], H2C, ALL);
    // A request shorter than the HTTP/2 preface is answered at once, not waited on.
    let answer = tokio::task::block_in_place(|| {
        let mut conn = common::Conn::open(g.addr).unwrap();
        conn.send_raw(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
        conn.read_response().unwrap()
    });
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    // And a gRPC client on the same listener.
    let mut c = client(g.addr).await;
    assert_eq!(unary_text(&mut c, "h2c").await, "echo: h2c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_h2c_a_plain_listener_is_http1_only() {
    let (up, _) = h2c_upstream().await;
    let yaml = format!(
        "{SERVER}backends:\n  app:\n    discovery: {{ static: [\"{up}\"] }}\n{H2C}\nendpoints:\n{ALL}\n"
    );
    let g = tokio::task::block_in_place(|| Gatehouse::start(&yaml));
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", g.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    let outcome = match ch {
        Err(e) => Err(Status::unavailable(e.to_string())),
        Ok(ch) => {
            let mut c = tonic::client::Grpc::new(ch);
            tokio::time::timeout(
                Duration::from_secs(5),
                call(&mut c, "/t.Echo/Unary", Request::new(msg("x"))),
            )
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer")))
        }
    };
    assert!(
        outcome.is_err(),
        "a prior-knowledge h2 call passed without server.h2c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_upstream_over_tls_is_verified() {
    let pki = Pki::new();
    let up = tls_upstream(&pki.issue(&["grpc.internal"])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let other_ca = Pki::new().write_ca(dir.path(), "other.pem");
    let backend = format!(
        "    protocol: h2\n    tls: {{ sni: grpc.internal, ca: \"{}\" }}\n  \
         untrusted:\n    discovery: {{ static: [\"{up}\"] }}\n    protocol: h2\n    retries: 0\n    \
         tls: {{ sni: grpc.internal, ca: \"{}\" }}",
        ca.display(),
        other_ca.display()
    );
    let endpoints = format!("{ALL}\n  - path: /t.Untrusted/{{*rest}}\n    backend: untrusted\n    rewrite: /t.Echo/Unary");
    let g = gatehouse(&[up], &backend, &endpoints);
    let mut c = client(g.addr).await;
    assert_eq!(unary_text(&mut c, "over tls").await, "echo: over tls");

    // The same host, verified against a CA that did not sign its certificate: refused.
    let e = call(&mut c, "/t.Untrusted/Unary", Request::new(msg("x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_speak_http2_to_the_hosts() {
    // Two h2c hosts: the echo answers its checks (sent over HTTP/2, else it would refuse
    // them), the silent one never does and is taken out; then every call reaches the echo.
    let (echo, _) = h2c_upstream().await;
    let silent = silent_upstream().await;
    let backend = format!(
        "{H2C}\n    retries: 0\n    health_check: {{ path: /health, interval: 100ms, timeout: 300ms, unhealthy_after: 1, healthy_after: 1 }}"
    );
    let endpoints = format!("{ALL}\n    timeout: 500ms");
    let g = gatehouse(&[echo, silent], &backend, &endpoints);
    let mut c = client(g.addr).await;
    let end = Instant::now() + Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 6 {
        assert!(Instant::now() < end, "the silent host was never taken out");
        match call(&mut c, "/t.Echo/Unary", Request::new(msg("hc"))).await {
            Ok(_) => in_a_row += 1,
            Err(_) => in_a_row = 0,
        }
    }
    for _ in 0..10 {
        assert_eq!(unary_text(&mut c, "hc").await, "echo: hc");
    }
}
