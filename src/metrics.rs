//! Prometheus metrics, registered once. Labels are bounded: route patterns, backend names,
//! status codes, fixed reasons; never a client address or a raw path.

use crate::reject::Reason;
use once_cell::sync::Lazy;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    /// route = endpoint path pattern ("" when no route matched), status = code.
    pub requests: IntCounterVec,
    /// reason = the problem type of the rejection (not_found, upstream_timeout, ...).
    pub rejections: IntCounterVec,
    /// reason = what a `dry_run` filter or limit would have refused.
    pub would_reject: IntCounterVec,
    /// scope = service | endpoint: requests a `rate_limit.exempt` list let skip the block.
    pub rate_limit_exempt: IntCounterVec,
    pub upstream_latency: HistogramVec,
    /// result = ok | error
    pub reloads: IntCounterVec,
    /// result = ok | error: a list file changed and was read again.
    pub list_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    /// backend = name; 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// kind = timeout | connection | script | auth | tls (src/limits/redis.rs).
    pub redis_errors: IntCounterVec,
    pub redis_latency: Histogram,
    /// limit = a `store: fleet` limit's identity (service, endpoint ..., backend ...).
    pub fleet_instances: IntGaugeVec,
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
    let would_reject = IntCounterVec::new(
        Opts::new(
            "gatehouse_would_reject_total",
            "Refusals of dry_run filters and limits, which let the request pass, by reason",
        ),
        &["reason"],
    )?;
    let rate_limit_exempt = IntCounterVec::new(
        Opts::new(
            "gatehouse_rate_limit_exempt_total",
            "Requests that skipped a rate_limit block by its exempt list, by scope (service, endpoint)",
        ),
        &["scope"],
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
    let list_reloads = IntCounterVec::new(
        Opts::new(
            "gatehouse_list_reloads_total",
            "Re-reads of changed list files (cidrs_file, trusted_proxies_file) by result",
        ),
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
    let redis_errors = IntCounterVec::new(
        Opts::new(
            "gatehouse_redis_errors_total",
            "Redis calls (decisions, fleet heartbeats) that failed, by kind (timeout, connection, script, auth, tls)",
        ),
        &["kind"],
    )?;
    let redis_latency = Histogram::with_opts(
        HistogramOpts::new(
            "gatehouse_redis_latency_seconds",
            "Round trip of one rate-limit decision to the Redis store",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        ]),
    )?;
    let fleet_instances = IntGaugeVec::new(
        Opts::new(
            "gatehouse_fleet_instances",
            "Live instances sharing a store: fleet limit, as last counted",
        ),
        &["limit"],
    )?;
    registry.register(Box::new(fleet_instances.clone()))?;
    registry.register(Box::new(redis_errors.clone()))?;
    registry.register(Box::new(redis_latency.clone()))?;
    registry.register(Box::new(breaker_state.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(rejections.clone()))?;
    registry.register(Box::new(would_reject.clone()))?;
    registry.register(Box::new(rate_limit_exempt.clone()))?;
    registry.register(Box::new(upstream_latency.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(list_reloads.clone()))?;
    registry.register(Box::new(config_generation.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        rejections,
        would_reject,
        rate_limit_exempt,
        upstream_latency,
        reloads,
        list_reloads,
        config_generation,
        breaker_state,
        redis_errors,
        redis_latency,
        fleet_instances,
    })
}

/// The definitions above are constants: `build` fails only if one of them is malformed or
/// registered twice, which the first test that starts the proxy would show.
#[allow(clippy::expect_used)]
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

/// Status codes whose `gatehouse_requests_total` counter a [`RouteCounters`] keeps at hand.
/// (0 is a request whose client went away before an answer; 101, 308, 405 and 413 are answers
/// gatehouse itself makes.)
const CACHED_STATUSES: [(u16, &str); 21] = [
    (0, "0"),
    (101, "101"),
    (200, "200"),
    (201, "201"),
    (204, "204"),
    (206, "206"),
    (301, "301"),
    (302, "302"),
    (304, "304"),
    (308, "308"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

/// The `gatehouse_requests_total{route,status}` counters of one route, looked up once per
/// status and then kept: `with_label_values` hashes the labels and takes the vector's lock
/// on every call, too much for every request. The counters are the registry's own (the same
/// series as `with_label_values` returns); other statuses fall back to the lookup.
pub struct RouteCounters {
    route: String,
    cells: [std::sync::OnceLock<prometheus::IntCounter>; CACHED_STATUSES.len()],
}

impl RouteCounters {
    pub fn new(route: &str) -> RouteCounters {
        RouteCounters {
            route: route.to_string(),
            cells: Default::default(),
        }
    }

    /// Counts one request of this route answered with `status`.
    pub fn inc(&self, status: u16) {
        let m = metrics();
        match CACHED_STATUSES.iter().position(|&(s, _)| s == status) {
            Some(i) => self.cells[i]
                .get_or_init(|| {
                    m.requests
                        .with_label_values(&[self.route.as_str(), CACHED_STATUSES[i].1])
                })
                .inc(),
            None => m
                .requests
                .with_label_values(&[self.route.as_str(), status.to_string().as_str()])
                .inc(),
        }
    }
}

/// The counters of requests no endpoint matched (route label "").
pub fn unrouted() -> &'static RouteCounters {
    static UNROUTED: Lazy<RouteCounters> = Lazy::new(|| RouteCounters::new(""));
    &UNROUTED
}

/// One counter per reason, looked up in its vector once and then kept.
type ByReason = [std::sync::OnceLock<prometheus::IntCounter>; Reason::ALL.len()];

fn by_reason(
    cells: &'static ByReason,
    vec: &prometheus::IntCounterVec,
    r: Reason,
) -> &'static prometheus::IntCounter {
    cells[r as usize].get_or_init(|| vec.with_label_values(&[r.id()]))
}

/// `gatehouse_rejections_total{reason}`.
pub fn rejection(r: Reason) -> &'static prometheus::IntCounter {
    static CELLS: ByReason = [const { std::sync::OnceLock::new() }; Reason::ALL.len()];
    by_reason(&CELLS, &metrics().rejections, r)
}

/// Counts each refusal of a `dry_run` filter or limit in `gatehouse_would_reject_total`.
pub fn would_reject(w: crate::reject::WouldReject) {
    static CELLS: ByReason = [const { std::sync::OnceLock::new() }; Reason::ALL.len()];
    for r in w.iter() {
        by_reason(&CELLS, &metrics().would_reject, r).inc();
    }
}

/// `gatehouse_rate_limit_exempt_total{scope}` of the service-wide block (0) or an endpoint's (1).
pub fn rate_limit_exempt(scope: usize) -> &'static prometheus::IntCounter {
    static CELLS: [std::sync::OnceLock<prometheus::IntCounter>; 2] =
        [const { std::sync::OnceLock::new() }; 2];
    let name = if scope == 0 { "service" } else { "endpoint" };
    CELLS[scope.min(1)].get_or_init(|| metrics().rate_limit_exempt.with_label_values(&[name]))
}
