//! What the admin listener's `GET /status` (JSON) and `GET /` (an HTML page of the same data)
//! show: the running config's generation, the last reload, each backend's hosts with their
//! health, its circuit breaker and its requests in flight, and the Redis store.
//!
//! Everything is read from the live runtime at the moment of the request, from the same
//! atomics the request path uses: building a status takes no lock a request waits on.

use crate::runtime::Runtime;
use serde::Serialize;
use std::sync::OnceLock;
use std::time::SystemTime;

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records the process's start time (the first call wins).
pub fn mark_started() {
    STARTED.get_or_init(SystemTime::now);
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// RFC 3339, UTC.
    pub started_at: Option<String>,
    /// 1 at start, +1 per successful reload.
    pub config_generation: u64,
    /// `None` until the first reload.
    pub last_reload: Option<Reload>,
    pub backends: Vec<BackendStatus>,
    /// `None` when no `redis` block is configured.
    pub redis: Option<RedisStatus>,
}

#[derive(Debug, Serialize)]
pub struct Reload {
    /// `ok` or `error`.
    pub result: &'static str,
    pub at: String,
    /// The generation an `ok` reload swapped in.
    pub generation: Option<u64>,
    /// Why an `error` reload kept the running config.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus {
    pub name: String,
    /// `closed`, `half-open`, `open`, or `None` for a backend without a circuit breaker.
    pub breaker: Option<&'static str>,
    pub in_flight: usize,
    pub hosts: Vec<HostStatus>,
}

#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub address: String,
    pub weight: u32,
    /// `healthy`, `unhealthy` (failed its active checks) or `ejected` (passively, after
    /// repeated connect failures, for a few seconds).
    pub health: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RedisStatus {
    /// With its password redacted.
    pub url: String,
    /// `idle` (no decision asked yet), `up` or `down`.
    pub state: &'static str,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The status of `rt`, now.
pub fn status(rt: &Runtime) -> Status {
    let now_ms = crate::clock::now_ms(std::time::Instant::now());
    let backends = rt
        .backends
        .values()
        .map(|b| {
            let up = &b.upstream;
            let hosts = up
                .hosts()
                .hosts
                .iter()
                .map(|h| HostStatus {
                    address: h.addr.to_string(),
                    weight: h.weight,
                    health: if !h.health.active_ok() {
                        "unhealthy"
                    } else if h.health.is_ejected(now_ms) {
                        "ejected"
                    } else {
                        "healthy"
                    },
                })
                .collect();
            BackendStatus {
                name: up.name.clone(),
                breaker: up.breaker.as_ref().map(|br| br.state().name()),
                in_flight: up.in_flight(),
                hosts,
            }
        })
        .collect();
    let last_reload = crate::reload::last().map(|l| Reload {
        at: rfc3339(l.at),
        result: if l.result.is_ok() { "ok" } else { "error" },
        generation: l.result.as_ref().ok().copied(),
        error: l.result.err(),
    });
    Status {
        version: env!("CARGO_PKG_VERSION"),
        started_at: STARTED.get().copied().map(rfc3339),
        config_generation: rt.generation,
        last_reload,
        backends,
        redis: rt.limits.redis.as_ref().map(|r| RedisStatus {
            url: r.cfg.url.to_string(),
            state: r.state(),
        }),
    }
}

/// `GET /status`: the status as JSON.
pub fn json(rt: &Runtime) -> String {
    serde_json::to_string_pretty(&status(rt))
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the status: {e}\"}}"))
}

/// `GET /`: a page that reads `/status` every few seconds and shows it. Self-contained: no
/// external script, style sheet, font or image.
pub const PAGE: &str = include_str!("status.html");
