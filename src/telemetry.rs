//! Tracing: one OpenTelemetry span per request, exported over OTLP/HTTP (protobuf).
//!
//! - The span continues the W3C trace context (`traceparent`, `tracestate`) of any client
//!   that sends one, as the W3C recommendation intends: a trace context says where a request
//!   belongs, not who may do what. A request without one starts a new trace, sampled at
//!   `tracing.sample_ratio`; a continued trace keeps its parent's sampling decision.
//! - The upstream gets the span's context as its `traceparent` (and the `tracestate`).
//! - Spans are exported by a batch processor on a thread of its own, through a blocking HTTP
//!   client with its own runtime: ending a span only queues it. A full queue drops spans, so
//!   a collector that is slow or down costs no request anything.
//!
//! Started once, after the process has daemonised (the exporter's threads must live in the
//! serving process); `/ready` waits for it. Changing `tracing` needs a restart.

use crate::config::TracingConfig;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use pingora::http::RequestHeader;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Set at start when the config has a `tracing` block: `/ready` then waits for `start`.
static WANTED: AtomicBool = AtomicBool::new(false);

/// How often the batch processor sends what it holds, and how much it holds at most.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
const QUEUE: usize = 4096;
const BATCH: usize = 512;
/// Budget of one export request to the collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells `/ready` to wait for the exporter.
pub fn expect() {
    WANTED.store(true, Ordering::Release);
}

/// Whether tracing is off or started.
pub fn is_ready() -> bool {
    !WANTED.load(Ordering::Acquire) || TRACER.get().is_some()
}

/// Starts the exporter and the tracer (once; a second call does nothing).
pub fn start(cfg: &TracingConfig) -> Result<(), String> {
    if TRACER.get().is_some() {
        return Ok(());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(cfg.endpoint.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("tracing.otlp_endpoint {}: {e}", cfg.endpoint))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(EXPORT_EVERY)
        .with_max_queue_size(QUEUE)
        .with_max_export_batch_size(BATCH)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let _ = TRACER.set(provider.tracer("gatehouse"));
    let _ = PROVIDER.set(provider);
    Ok(())
}

/// Sends the spans still queued (at a graceful stop).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Upstream<'a>(&'a mut RequestHeader);

impl Injector for Upstream<'_> {
    fn set(&mut self, key: &str, value: String) {
        let _ = self.0.insert_header(key.to_string(), value);
    }
}

/// The span of a request with this head, when tracing is on: a child of the client's trace
/// context when it sent a valid one, else the root of a new trace.
pub fn start_span(head: &RequestHeader) -> Option<Span> {
    let tracer = TRACER.get()?;
    let parent = TraceContextPropagator::new().extract(&Headers(&head.headers));
    let span = tracer
        .span_builder(head.method.as_str().to_string())
        .with_kind(SpanKind::Server)
        .start_with_context(tracer, &parent);
    Some(span)
}

/// Sets the upstream request's `traceparent` (and `tracestate`) to the request's span.
pub fn inject(span: &Span, upstream: &mut RequestHeader) {
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let cx = Context::new().with_remote_span_context(sc.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut Upstream(upstream));
}

/// What the span records about a request at its end.
pub struct Outcome<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub client: Option<IpAddr>,
    pub upstream: Option<SocketAddr>,
    pub reason: Option<&'static str>,
    pub request_id: Option<&'a str>,
}

/// Ends the request's span with its attributes: the OpenTelemetry HTTP conventions where
/// they have a name (`http.route`, `http.response.status_code`, `client.address`, ...), and
/// `gatehouse.upstream.address`, `gatehouse.rejection.reason`, `gatehouse.request_id`.
pub fn end(mut span: Span, o: &Outcome<'_>) {
    if span.is_recording() {
        let name = match o.route {
            Some(r) => format!("{} {r}", o.method),
            None => o.method.to_string(),
        };
        span.update_name(name);
        let mut attrs = Vec::with_capacity(8);
        attrs.push(KeyValue::new("http.request.method", o.method.to_string()));
        attrs.push(KeyValue::new("url.path", o.path.to_string()));
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(o.status),
        ));
        if let Some(r) = o.route {
            attrs.push(KeyValue::new("http.route", r.to_string()));
        }
        if let Some(ip) = o.client {
            attrs.push(KeyValue::new("client.address", ip.to_string()));
        }
        if let Some(a) = o.upstream {
            attrs.push(KeyValue::new("gatehouse.upstream.address", a.to_string()));
        }
        if let Some(r) = o.reason {
            attrs.push(KeyValue::new("gatehouse.rejection.reason", r));
        }
        if let Some(id) = o.request_id {
            attrs.push(KeyValue::new("gatehouse.request_id", id.to_string()));
        }
        span.set_attributes(attrs);
        if o.status >= 500 || o.status == 0 {
            span.set_status(Status::error(o.reason.unwrap_or("server error")));
        }
    }
    span.end();
}

/// Starts the exporter in the serving process (after `-d` has daemonised), then, at a
/// graceful stop, sends the spans still queued.
pub struct TracingService {
    pub cfg: TracingConfig,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for TracingService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        // Building the exporter joins a thread of its own: off the runtime's threads.
        let cfg = self.cfg.clone();
        let started = tokio::task::spawn_blocking(move || start(&cfg))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match started {
            Ok(()) => log::info!(
                "tracing: spans go to {} (new traces sampled at {})",
                self.cfg.endpoint,
                self.cfg.sample_ratio
            ),
            Err(e) => {
                log::error!("tracing is off: {e}");
                // Ready all the same: a request is better served untraced than not at all.
                WANTED.store(false, Ordering::Release);
                return;
            }
        }
        let _ = shutdown.changed().await;
        let _ = tokio::task::spawn_blocking(flush).await;
    }
}
