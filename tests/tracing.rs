//! `tracing`: one span per request, exported over OTLP/HTTP to a collector this test runs
//! (it decodes the protobuf it receives); the client's W3C trace context is continued and
//! passed upstream; `sample_ratio` decides for new traces only; a collector that does not
//! answer slows no request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

mod common;

use common::{get, wait_for, Behaviour, Gatehouse, MockUpstream, SERVER};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the collector got it, with the service name of its resource.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        let v = self.span.attributes.iter().find(|a| a.key == key)?;
        match v.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// An OTLP/HTTP collector on a free port: answers 200 to each POST and keeps the spans; or,
/// `answer: false`, reads requests and never answers.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start(answer: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (spans.clone(), posts.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (s, p) = (s.clone(), p.clone());
                std::thread::spawn(move || serve(conn, answer, s, p));
            }
        });
        Collector { addr, spans, posts }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits for the span whose trace id is `trace` (32 hex digits).
    fn span_of(&self, trace: &str) -> Got {
        wait_for("the span at the collector", Duration::from_secs(15), || {
            self.spans()
                .into_iter()
                .find(|g| hex(&g.span.trace_id) == trace)
        })
    }
}

fn serve(
    conn: TcpStream,
    answer: bool,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<Vec<String>>>,
) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0;
        let mut ctype = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "content-type" => ctype = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        posts
            .lock()
            .unwrap()
            .push(format!("{} {ctype}", line.trim_end()));
        if !answer {
            continue;
        }
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.lock().unwrap().push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        let ok =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if w.write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(up: SocketAddr, tracing: &str) -> String {
    format!(
        r#"{SERVER}tracing: {tracing}
backends:
  app: {{ discovery: {{ static: ["{up}"] }} }}
endpoints:
  - {{ path: "/app/{{*rest}}", backend: app }}
"#
    )
}

/// `traceparent` split: version, trace id, parent id, flags.
fn traceparent(v: &str) -> (String, String, String, String) {
    let p: Vec<&str> = v.split('-').collect();
    assert_eq!(p.len(), 4, "{v}");
    (p[0].into(), p[1].into(), p[2].into(), p[3].into())
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

#[test]
fn a_clients_trace_is_continued_upstream_and_exported() {
    let collector = Collector::start(true);
    let up = MockUpstream::start(Behaviour::Echo);
    let tracing = format!(
        "{{ otlp_endpoint: \"http://{}\", sample_ratio: 0.0, service_name: edge-test }}",
        collector.addr
    );
    let g = Gatehouse::start(&config(up.addr, &tracing));

    // A new trace at sample_ratio 0: passed on, marked not sampled, not exported.
    assert_eq!(get(g.addr, "/app/new", &[]).status, 200);
    let (_, unsampled, _, flags) = traceparent(up.last().unwrap().header("traceparent").unwrap());
    assert_eq!(flags, "00");

    // A sampled trace from the client: continued whatever the ratio.
    let sent = format!("00-{TRACE}-{PARENT}-01");
    let headers = [("traceparent", sent.as_str()), ("tracestate", "vendor=abc")];
    assert_eq!(get(g.addr, "/app/x?q=1", &headers).status, 200);
    let rec = up.last().unwrap();
    let (version, trace, parent, flags) = traceparent(rec.header("traceparent").unwrap());
    assert_eq!(
        (version.as_str(), trace.as_str(), flags.as_str()),
        ("00", TRACE, "01")
    );
    assert_ne!(parent, PARENT, "the upstream's parent is gatehouse's span");
    assert_eq!(rec.header("tracestate"), Some("vendor=abc"));

    let got = collector.span_of(TRACE);
    assert_eq!(got.service, "edge-test");
    assert_eq!(hex(&got.span.span_id), parent);
    assert_eq!(hex(&got.span.parent_span_id), PARENT);
    assert_eq!(got.span.name, "GET /app/{*rest}");
    assert_eq!(got.span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(got.attr("http.route").as_deref(), Some("/app/{*rest}"));
    assert_eq!(
        got.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(got.attr("client.address").as_deref(), Some("127.0.0.1"));
    let upstream = up.addr.to_string();
    assert_eq!(got.attr("gatehouse.upstream.address"), Some(upstream));
    assert_eq!(got.attr("gatehouse.rejection.reason"), None);
    assert_eq!(got.attr("url.path").as_deref(), Some("/app/x"));
    let posts = collector.posts.lock().unwrap().clone();
    assert!(
        posts
            .iter()
            .all(|p| p == "POST /v1/traces HTTP/1.1 application/x-protobuf"),
        "{posts:?}"
    );

    // Spans are sent in order: the unsampled one would have come first.
    assert!(collector
        .spans()
        .iter()
        .all(|s| hex(&s.span.trace_id) != unsampled));

    // An answer made by gatehouse: the reason, no route.
    let other = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent = format!("00-{other}-00f067aa0ba902b7-01");
    assert_eq!(
        get(g.addr, "/nowhere", &[("traceparent", &sent)]).status,
        404
    );
    let got = collector.span_of(other);
    assert_eq!(
        got.attr("gatehouse.rejection.reason").as_deref(),
        Some("not_found")
    );
    assert_eq!(got.attr("http.route"), None);
    assert_eq!(got.span.name, "GET");
}

#[test]
fn new_traces_are_sampled_by_the_ratio() {
    let collector = Collector::start(true);
    let up = MockUpstream::start(Behaviour::Echo);
    let tracing = format!("{{ otlp_endpoint: \"http://{}/\" }}", collector.addr);
    let g = Gatehouse::start(&config(up.addr, &tracing));
    // A malformed traceparent is no context: a new trace.
    let r = get(g.addr, "/app/root", &[("traceparent", "00-zz-yy-01")]);
    assert_eq!(r.status, 200);
    let (_, trace, span, flags) = traceparent(up.last().unwrap().header("traceparent").unwrap());
    assert_eq!(flags, "01", "sample_ratio defaults to 1.0");
    let got = collector.span_of(&trace);
    assert_eq!(got.service, "gatehouse");
    assert_eq!(hex(&got.span.span_id), span);
    assert!(got.span.parent_span_id.is_empty(), "a root span");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(got.attr("gatehouse.request_id").as_deref(), Some(id));
}

#[test]
fn a_collector_that_does_not_answer_slows_no_request() {
    let collector = Collector::start(false);
    let up = MockUpstream::start(Behaviour::Echo);
    let tracing = format!("{{ otlp_endpoint: \"http://{}\" }}", collector.addr);
    let g = Gatehouse::start(&config(up.addr, &tracing));
    // Enough requests for several batches, while each export waits on the collector.
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let start = Instant::now();
        assert_eq!(get(g.addr, &format!("/app/{i}"), &[]).status, 200);
        slowest = slowest.max(start.elapsed());
        if i == 0 {
            wait_for("an export to be under way", Duration::from_secs(10), || {
                (!collector.posts.lock().unwrap().is_empty()).then_some(())
            });
        }
    }
    assert!(!collector.posts.lock().unwrap().is_empty());
    // An export waits up to 5s for the collector; a request that waited on one would too.
    assert!(
        slowest < Duration::from_secs(4),
        "a request took {slowest:?} while the collector hung"
    );
}
