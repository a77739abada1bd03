//! The admin listener: `GET /health` (alive), `/ready` (config loaded, reload handler
//! installed), `/metrics` (Prometheus text).

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::Ordering;

pub struct Admin;

fn text(status: u16, ctype: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("content-length", body.len())
        .body(body.into_bytes())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/health" => text(200, "text/plain", "ok\n".into()),
            "/ready" => {
                if crate::reload::READY.load(Ordering::Acquire) {
                    text(200, "text/plain", "ready\n".into())
                } else {
                    text(503, "text/plain", "starting\n".into())
                }
            }
            "/metrics" => text(200, "text/plain; version=0.0.4", crate::metrics::render()),
            _ => text(404, "text/plain", "not found\n".into()),
        }
    }
}
