//! The ceiling of plain HTTP/1 passthrough on Pingora: a proxy on pingora-core alone, for
//! measurement, not a product. It uses pingora-core's `HttpServerApp`, listener and upstream
//! connector (with its connection pool) and nothing of pingora-proxy: no `ProxyHttp` hooks
//! (each of them a boxed future per request), no channel between an upstream and a
//! downstream task. Per request it reads the client's request, adds X-Forwarded-For and
//! X-Forwarded-Proto as gatehouse passthrough does, sends it on a pooled upstream
//! connection, and copies the response back.
//!
//!   cargo build --release --example h1_ceiling
//!   target/release/examples/h1_ceiling LISTEN_ADDR UPSTREAM_ADDR
//!
//! `benches/ab.sh` measures it beside gatehouse builds (CEILING=path).

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::http::Connector;
use pingora::protocols::http::ServerSession;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;
use std::time::Duration;

struct Passthrough {
    connector: Connector,
    peer: HttpPeer,
}

impl Passthrough {
    async fn proxy(&self, session: &mut ServerSession) -> Option<()> {
        let mut req = session.req_header().clone();
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            let xff = http::HeaderValue::from_str(&addr.ip().to_string()).ok()?;
            req.insert_header("x-forwarded-for", xff).ok()?;
        }
        req.insert_header("x-forwarded-proto", "http").ok()?;
        let (mut up, _reused) = self.connector.get_http_session(&self.peer).await.ok()?;
        up.write_request_header(Box::new(req)).await.ok()?;
        while let Some(body) = session.read_request_body().await.ok()? {
            up.write_request_body(body, false).await.ok()?;
        }
        up.finish_request_body().await.ok()?;
        up.read_response_header().await.ok()?;
        let resp = up.response_header()?.clone();
        session.write_response_header(Box::new(resp)).await.ok()?;
        while let Some(body) = up.read_response_body().await.ok()? {
            session.write_response_body(body, false).await.ok()?;
        }
        self.connector
            .release_http_session(up, &self.peer, Some(Duration::from_secs(60)))
            .await;
        Some(())
    }
}

#[async_trait]
impl HttpServerApp for Passthrough {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        self.proxy(&mut session).await?;
        let settings = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: h1_ceiling LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let Ok(mut server) = Server::new(None) else {
        eprintln!("h1_ceiling: cannot build the server");
        std::process::exit(1);
    };
    server.bootstrap();
    let app = Passthrough {
        connector: Connector::new(None),
        peer: HttpPeer::new(upstream, false, String::new()),
    };
    let mut service = Service::new("h1 ceiling".into(), app);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
