//! The built-in demo upstream (`demo.listen` in the config), so that the example config
//! answers with nothing else running. It echoes the request as JSON; `/status/{code}`
//! answers with that status and `/delay/{duration}` waits before answering.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub struct Demo;

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[async_trait]
impl ServeHttp for Demo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body_bytes = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
        }
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let mut status = 200u16;
        if let Some(code) = path.strip_prefix("/status/") {
            status = code
                .parse()
                .ok()
                .filter(|c| (200..600).contains(c))
                .unwrap_or(400);
        }
        if let Some(d) = path.strip_prefix("/delay/") {
            if let Ok(d) = crate::config::file::parse_duration(d) {
                tokio::time::sleep(d.min(std::time::Duration::from_secs(30))).await;
            }
        }
        let headers: Vec<String> = req
            .headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}",
                    json_str(k.as_str()),
                    json_str(&String::from_utf8_lossy(v.as_bytes()))
                )
            })
            .collect();
        let body = format!(
            "{{\"service\":\"gatehouse demo upstream\",\"method\":{},\"uri\":{},\"headers\":{{{}}},\"body_bytes\":{}}}\n",
            json_str(req.method.as_str()),
            json_str(&req.uri.to_string()),
            headers.join(","),
            body_bytes
        );
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body.into_bytes())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
