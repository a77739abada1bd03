//! The admin listener: `GET /health` (alive), `/ready` (config loaded, reload handler
//! installed, the span exporter started when tracing is on), `/metrics` (Prometheus text), `/status` (backends, breakers, reloads and the
//! Redis store as JSON) and `/` (a page showing the status).

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::Ordering;

pub struct Admin {
    pub shared: crate::runtime::Shared,
}

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
                if crate::reload::READY.load(Ordering::Acquire) && crate::telemetry::is_ready() {
                    text(200, "text/plain", "ready\n".into())
                } else {
                    text(503, "text/plain", "starting\n".into())
                }
            }
            "/metrics" => text(200, "text/plain; version=0.0.4", crate::metrics::render()),
            "/status" => text(
                200,
                "application/json",
                crate::status::json(&self.shared.load()),
            ),
            "/" => text(200, "text/html; charset=utf-8", crate::status::PAGE.into()),
            _ => text(404, "text/plain", "not found\n".into()),
        }
    }
}

/// `gatehouse health`: asks the admin listener at `addr` for `GET /health` and says whether
/// it answered 200 within `timeout`. Made for a container's HEALTHCHECK, where no curl is
/// at hand; plain blocking I/O, since it runs alone in its own short-lived process.
pub fn probe_health(addr: &str, timeout: std::time::Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: gatehouse\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 32];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split(' ').nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{addr}: /health answered {:?}",
            line.lines().next().unwrap_or("")
        ))
    }
}
