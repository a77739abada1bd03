//! Prometheus metrics, registered once. Labels are bounded: route patterns, backend names,
//! status codes, fixed reasons; never a client address or a raw path.

use once_cell::sync::Lazy;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// route = endpoint path pattern ("" when no route matched), status = code.
    pub requests: IntCounterVec,
    /// reason = the problem type of the rejection (not_found, upstream_timeout, ...).
    pub rejections: IntCounterVec,
    pub upstream_latency: HistogramVec,
    /// result = ok | error
    pub reloads: IntCounterVec,
    pub config_generation: IntGauge,
    /// backend = name; 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("gatehouse_requests_total", "Requests by route and status"),
        &["route", "status"],
    )?;
    let rejections = IntCounterVec::new(
        Opts::new(
            "gatehouse_rejections_total",
            "Responses made by gatehouse itself, by reason",
        ),
        &["reason"],
    )?;
    let upstream_latency = HistogramVec::new(
        HistogramOpts::new(
            "gatehouse_upstream_latency_seconds",
            "Time from choosing a host to the upstream's response header, by backend",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["backend"],
    )?;
    let reloads = IntCounterVec::new(
        Opts::new("gatehouse_reloads_total", "Config reloads by result"),
        &["result"],
    )?;
    let config_generation = IntGauge::new(
        "gatehouse_config_generation",
        "Generation of the running config (1 at start, +1 per successful reload)",
    )?;
    let breaker_state = IntGaugeVec::new(
        Opts::new(
            "gatehouse_breaker_state",
            "Circuit breaker state by backend: 0 closed, 1 half-open, 2 open",
        ),
        &["backend"],
    )?;
    registry.register(Box::new(breaker_state.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(rejections.clone()))?;
    registry.register(Box::new(upstream_latency.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(config_generation.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        rejections,
        upstream_latency,
        reloads,
        config_generation,
        breaker_state,
    })
}

static METRICS: Lazy<Metrics> =
    Lazy::new(|| build().expect("metric definitions are static and valid"));

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    TextEncoder::new()
        .encode_to_string(&METRICS.registry.gather())
        .unwrap_or_else(|e| format!("# encoding error: {e}\n"))
}
