//! The access-log line of a request, as text or as one JSON object (`server.access_log_format`).
//!
//! A line is written into a buffer kept per thread and reused, then handed to the output in
//! one write: formatting a line allocates nothing (numbers, addresses and the timestamp are
//! written in place, strings are escaped in place).
//!
//! JSON keys, in this order: `ts` (RFC 3339, UTC, milliseconds), `client`, `method`, `path`
//! (path and query as the client sent them), `route` (the endpoint's pattern, `null` when none
//! matched), `status` (0 when no response was sent), `duration_ms`, `upstream` (the last host
//! tried), `upstream_ms` (its time to the response header), `bytes_sent` (response body
//! bytes), `reason` (the problem type of an answer made by gatehouse), `would_reject` (always
//! `null`: reserved for a dry-run mode that reports what a filter would have refused),
//! `request_id`, `tls`, `http_version`. A value that is not known is `null`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

/// What one line says about a request.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub ts: SystemTime,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// Path and query, as the client sent them.
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub bytes_sent: u64,
    pub reason: Option<&'static str>,
    pub request_id: Option<&'a str>,
    pub tls: bool,
    /// `1.0`, `1.1`, `2`.
    pub http_version: &'static str,
}

/// `1.0`, `1.1`, `2`, `3` or `0.9`.
pub fn http_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The text line: `client "METHOD path" status duration route=".." upstream=.. reason=..
/// request_id=..`.
pub fn write_text(e: &Entry<'_>, out: &mut String) {
    match e.client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push('-'),
    }
    let _ = write!(
        out,
        " \"{} {}\" {} {:.3}ms route={:?} upstream=",
        e.method,
        e.path,
        e.status,
        ms(e.duration),
        e.route.unwrap_or("")
    );
    match e.upstream {
        Some(a) => {
            let _ = write!(out, "{a}");
        }
        None => out.push('-'),
    }
    out.push_str(" reason=");
    out.push_str(e.reason.unwrap_or("-"));
    out.push_str(" request_id=");
    out.push_str(e.request_id.unwrap_or("-"));
}

/// The JSON object, on one line, without a newline.
pub fn write_json(e: &Entry<'_>, out: &mut String) {
    out.push_str("{\"ts\":\"");
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(e.ts));
    out.push_str("\",\"client\":");
    match e.client {
        Some(ip) => {
            let _ = write!(out, "\"{ip}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"method\":");
    string(out, Some(e.method));
    out.push_str(",\"path\":");
    string(out, Some(e.path));
    out.push_str(",\"route\":");
    string(out, e.route);
    let _ = write!(
        out,
        ",\"status\":{},\"duration_ms\":{:.3},\"upstream\":",
        e.status,
        ms(e.duration)
    );
    match e.upstream {
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"upstream_ms\":");
    match e.upstream_time {
        Some(d) => {
            let _ = write!(out, "{:.3}", ms(d));
        }
        None => out.push_str("null"),
    }
    let _ = write!(out, ",\"bytes_sent\":{},\"reason\":", e.bytes_sent);
    string(out, e.reason);
    out.push_str(",\"would_reject\":null,\"request_id\":");
    string(out, e.request_id);
    let _ = write!(
        out,
        ",\"tls\":{},\"http_version\":\"{}\"}}",
        e.tls, e.http_version
    );
}

/// A JSON string (escaped in place), or `null`.
fn string(out: &mut String, s: Option<&str>) {
    let Some(s) = s else {
        out.push_str("null");
        return;
    };
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || c == '\u{7f}' => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(esc);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// Writes the line of `e` in `format`: a text line goes through the logger (target
/// `gatehouse::access`, after its timestamp and level); a JSON line goes to stderr alone,
/// so each line is exactly one object. Both follow `RUST_LOG` for that target.
pub fn emit(format: crate::config::LogFormat, e: &Entry<'_>) {
    if !log::log_enabled!(target: "gatehouse::access", log::Level::Info) {
        return;
    }
    LINE.with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return;
        };
        line.clear();
        match format {
            crate::config::LogFormat::Text => {
                write_text(e, &mut line);
                log::info!(target: "gatehouse::access", "{}", line.as_str());
            }
            crate::config::LogFormat::Json => {
                write_json(e, &mut line);
                line.push('\n');
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
        // A rare huge line (a long path) does not keep its buffer.
        if line.capacity() > 16 * 1024 {
            *line = String::with_capacity(512);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn entry() -> Entry<'static> {
        Entry {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_123),
            client: Some("192.0.2.7".parse().unwrap()),
            method: "GET",
            path: "/a/\"b\"?q=\\\u{1}",
            route: Some("/a/{*rest}"),
            status: 200,
            duration: Duration::from_micros(1500),
            upstream: Some("127.0.0.1:9001".parse().unwrap()),
            upstream_time: Some(Duration::from_micros(1200)),
            bytes_sent: 42,
            reason: None,
            request_id: Some("abc"),
            tls: true,
            http_version: "1.1",
        }
    }

    #[test]
    fn json_is_one_object_with_every_key() {
        let mut s = String::new();
        write_json(&entry(), &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["ts"], "2026-05-28T20:26:40.123Z");
        assert_eq!(v["client"], "192.0.2.7");
        assert_eq!(v["path"], "/a/\"b\"?q=\\\u{1}");
        assert_eq!(v["route"], "/a/{*rest}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream"], "127.0.0.1:9001");
        assert_eq!(v["upstream_ms"], 1.2);
        assert_eq!(v["bytes_sent"], 42);
        assert_eq!(v["reason"], serde_json::Value::Null);
        assert_eq!(v["would_reject"], serde_json::Value::Null);
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["tls"], true);
        assert_eq!(v["http_version"], "1.1");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 15);
        let mut e = entry();
        e.client = None;
        e.route = None;
        e.upstream = None;
        e.upstream_time = None;
        e.reason = Some("not_found");
        s.clear();
        write_json(&e, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["client"], serde_json::Value::Null);
        assert_eq!(v["upstream_ms"], serde_json::Value::Null);
        assert_eq!(v["reason"], "not_found");
    }

    #[test]
    fn text_keeps_its_shape() {
        let mut s = String::new();
        let mut e = entry();
        e.path = "/a";
        write_text(&e, &mut s);
        assert_eq!(
            s,
            "192.0.2.7 \"GET /a\" 200 1.500ms route=\"/a/{*rest}\" upstream=127.0.0.1:9001 reason=- request_id=abc"
        );
    }
}
