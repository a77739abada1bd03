//! `server.access_log_format: json` and `X-Request-Id`: one JSON object per request line with
//! every key, and the request's ID made here (or kept from a trusted proxy), sent upstream,
//! returned to the client, logged and written in problem bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{get, read_response, wait_for, Behaviour, Gatehouse, MockUpstream, Response, SERVER};
use serde_json::Value;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Requests from 127.0.0.2 come through a trusted proxy; those from 127.0.0.1 do not.
fn config(up: SocketAddr, format: &str) -> String {
    format!(
        r#"{}
client_ip: {{ trusted_proxies: ["127.0.0.2"] }}
backends:
  app: {{ discovery: {{ static: ["{up}"] }} }}
endpoints:
  - {{ path: "/app/{{*rest}}", backend: app }}
"#,
        SERVER.replace(
            "  listen: [\"LISTEN\"]\n",
            &format!("  listen: [\"LISTEN\"]\n  access_log_format: {format}\n"),
        )
    )
}

/// A GET from the loopback address `from`.
fn get_from(from: &str, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        s.connect(to).await.unwrap()
    });
    let mut stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream), false).unwrap()
}

/// The JSON access-log line of the request with this ID.
fn line_of(g: &Gatehouse, id: &str) -> Value {
    wait_for("the access-log line", Duration::from_secs(5), || {
        g.log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<Value>(l).expect("each JSON line is one object"))
            .find(|v| v["request_id"] == id)
    })
}

fn is_new_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn json_lines_carry_every_key_and_the_request_id() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, "json"));

    // A client's own X-Request-Id is not kept: the request gets a new one, everywhere.
    let r = get(
        g.addr,
        "/app/x?q=1",
        &[("X-Request-Id", "chosen-by-client")],
    );
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(is_new_id(&id), "{id}");
    assert_eq!(up.last().unwrap().header("x-request-id"), Some(id.as_str()));
    let v = line_of(&g, &id);
    let keys: std::collections::BTreeSet<&str> =
        v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        std::collections::BTreeSet::from([
            "ts",
            "client",
            "method",
            "path",
            "route",
            "status",
            "duration_ms",
            "upstream",
            "upstream_ms",
            "bytes_sent",
            "reason",
            "would_reject",
            "request_id",
            "tls",
            "http_version"
        ])
    );
    assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/app/x?q=1");
    assert_eq!(v["route"], "/app/{*rest}");
    assert_eq!(v["status"], 200);
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["upstream"], up.addr.to_string());
    let upstream_ms = v["upstream_ms"].as_f64().unwrap();
    assert!(upstream_ms > 0.0 && upstream_ms <= v["duration_ms"].as_f64().unwrap());
    assert_eq!(v["bytes_sent"], r.body.len());
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["would_reject"], Value::Null);
    assert_eq!(v["tls"], false);
    assert_eq!(v["http_version"], "1.1");

    // An answer made here: the ID in the header, the problem body and the line.
    let r = get(g.addr, "/nowhere", &[]);
    assert_eq!(r.status, 404);
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(is_new_id(&id), "{id}");
    let problem: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(problem["request_id"], id);
    let v = line_of(&g, &id);
    assert_eq!(v["reason"], "not_found");
    assert_eq!(v["route"], Value::Null);
    assert_eq!(v["upstream"], Value::Null);
    assert_eq!(v["upstream_ms"], Value::Null);

    // Every line of the access log is an object: nothing around it.
    let lines: Vec<String> = g
        .log()
        .lines()
        .filter(|l| l.contains("\"request_id\""))
        .map(str::to_string)
        .collect();
    assert!(lines.len() >= 2);
    for l in lines {
        serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn a_trusted_proxy_chooses_the_request_id() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, "json"));
    let sent = [("X-Request-Id", "edge-7f3a")];

    let r = get_from("127.0.0.2", g.addr, "/app/a", &sent);
    assert_eq!(r.header("x-request-id"), Some("edge-7f3a"));
    assert_eq!(up.last().unwrap().header("x-request-id"), Some("edge-7f3a"));
    assert_eq!(line_of(&g, "edge-7f3a")["client"], "127.0.0.2");

    let r = get_from("127.0.0.2", g.addr, "/nowhere", &sent);
    let problem: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(problem["request_id"], "edge-7f3a");

    // Not from a trusted peer, or not a usable ID: a new one.
    let r = get_from("127.0.0.1", g.addr, "/app/a", &sent);
    assert!(is_new_id(r.header("x-request-id").unwrap()));
    let r = get_from("127.0.0.2", g.addr, "/app/a", &[("X-Request-Id", "")]);
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(is_new_id(&id));
    assert_eq!(up.last().unwrap().header("x-request-id"), Some(id.as_str()));
    // Ids differ from request to request.
    let other = get(g.addr, "/app/a", &[]);
    assert_ne!(other.header("x-request-id").unwrap(), id);
}

#[test]
fn text_lines_end_with_the_request_id() {
    let up = MockUpstream::start(Behaviour::Echo);
    let g = Gatehouse::start(&config(up.addr, "text"));
    let r = get(g.addr, "/app/t", &[]);
    let id = r.header("x-request-id").unwrap().to_string();
    let line = wait_for("the access-log line", Duration::from_secs(5), || {
        g.log()
            .lines()
            .find(|l| l.contains("gatehouse::access"))
            .map(str::to_string)
    });
    assert!(
        line.contains("\"GET /app/t\" 200 ") && line.ends_with(&format!(" request_id={id}")),
        "{line}"
    );
}
