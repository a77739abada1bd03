//! gRPC unary load: a tonic server and a tonic load client (hand-written message and
//! service, no code generation), for the gRPC row of benches/compare.sh.
//!
//!   grpc_load serve PORT              # an h2c unary echo server on 127.0.0.1:PORT
//!   grpc_load load ADDR SECONDS CONNS # CONNS connections, one call at a time on each;
//!                                     # prints: rps p50_ms p99_ms ok total
//!
//! Without a mode (`cargo bench`, `cargo test --all-targets`) it serves itself and runs a
//! short load against that, to show the client works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/grpc_service.rs"]
mod grpc_service;

use grpc_service::{msg, Body, Codec, Msg, Serve};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

const PATH: &str = "/bench.Echo/Unary";

/// The unary echo: every call is answered with its own message.
async fn echo(req: http::Request<Body>) -> http::Response<Body> {
    let mut g = tonic::server::Grpc::new(Codec::default());
    let echo = tower::service_fn(|r: Request<Msg>| async move {
        Ok::<_, Status>(Response::new(r.into_inner()))
    });
    g.unary(echo, req).await
}

async fn serve(listener: tokio::net::TcpListener) {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .serve_with_incoming(Serve(echo), incoming)
        .await
        .expect("serve");
}

/// Unary calls on `conns` connections for `secs`: (calls per second, p50 ms, p99 ms, ok,
/// total).
async fn load(addr: SocketAddr, secs: f64, conns: usize) -> (f64, f64, f64, usize, usize) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .expect("connect");
            let mut g = tonic::client::Grpc::new(ch);
            let (mut lat, mut ok, mut total) = (Vec::new(), 0usize, 0usize);
            let path = http::uri::PathAndQuery::from_static(PATH);
            while Instant::now() < end {
                let t = Instant::now();
                g.ready().await.unwrap();
                let r = g
                    .unary(Request::new(msg("hello")), path.clone(), Codec::default())
                    .await;
                lat.push(t.elapsed());
                total += 1;
                ok += usize::from(r.is_ok());
            }
            (lat, ok, total)
        }));
    }
    let (mut lat, mut ok, mut total) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, o, n) = t.await.unwrap();
        lat.extend(l);
        ok += o;
        total += n;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    (total as f64 / elapsed, pct(0.5), pct(0.99), ok, total)
}

fn main() {
    // `cargo bench` and `cargo test` add flags of their own.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["serve", port] => {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", port.parse().unwrap()))
                    .await
                    .expect("bind");
                serve(l).await;
            }
            ["load", addr, secs, conns] => {
                let (rps, p50, p99, ok, total) = load(
                    addr.parse().expect("ADDR is ip:port"),
                    secs.parse().expect("SECONDS"),
                    conns.parse().expect("CONNS"),
                )
                .await;
                println!("{rps:.0} {p50:.3} {p99:.3} {ok} {total}");
            }
            _ => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::spawn(serve(l));
                let (rps, p50, p99, ok, total) = load(addr, 0.5, 4).await;
                assert!(total > 0 && ok == total, "{ok}/{total} calls passed");
                println!("grpc unary, tonic to tonic directly: {rps:.0} calls/s, p50 {p50:.3} ms, p99 {p99:.3} ms");
            }
        }
    });
}
