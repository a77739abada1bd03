//! The file shape of gatehouse.yaml: serde types that mirror the YAML, nothing compiled yet.
//!
//! Every struct rejects unknown keys. Durations and sizes are parsed here (so a bad value is
//! reported with its YAML path by serde_yaml); cross-field rules live in `validate.rs`.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// A duration written as `250ms`, `2s`, `1m`, `1h` (or any humantime form such as `1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dur(pub Duration);

/// The longest duration a config may give. Durations are added to `Instant`s on the request
/// path (the endpoint's deadline, breaker and health timers), which panics past the clock's
/// range; a year is far beyond any sensible timeout, interval or rate-limit window.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .and_then(|d| {
                if d > MAX_DURATION {
                    Err(format!("duration {s:?} is too long (at most 365d)"))
                } else {
                    Ok(d)
                }
            })
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `250ms`, `2s`, `1m`, `1h`, `1m30s`; a bare number is refused (the unit matters).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {s:?}: a unit is required (ms, s, m, h), e.g. \"{t}s\""
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?}: {e} (expected e.g. 250ms, 2s, 1m, 1h)"))
}

impl schemars::JsonSchema for Dur {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*([0-9]+\\s*[a-zµ]+\\s*)+$",
            "description": "A duration with a unit: 250ms, 2s, 1m, 1h, 1m30s (at most 365d).",
            "examples": ["250ms", "2s", "1m"]
        })
    }
}

/// A size written as `512KB`, `10MB`, `1GB` (powers of 1024), or a plain byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for Size {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "integer"],
            "minimum": 0,
            "pattern": "^\\s*[0-9]+\\s*([BbKkMmGg]|[KkMmGg][Bb]|[KkMmGg][Ii][Bb])?\\s*$",
            "description": "A size: 512KB, 10MB, 1GB (powers of 1024) or a number of bytes.",
            "examples": ["512KB", "10MB"]
        })
    }
}

/// Parses `512KB`, `10MB`, `1GB`, `100B` or `4096` (KB = 1024 bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. 512KB, 10MB, 1GB)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" | "KIB" => 1 << 10,
        "MB" | "M" | "MIB" => 1 << 20,
        "GB" | "G" | "GIB" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use B, KB, MB or GB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The config format; the only version is 1.
    pub version: u32,
    /// Listeners and process settings.
    pub server: ServerFile,
    /// The built-in demo upstream, an echo server for trying gatehouse out; remove it in
    /// production.
    #[serde(default)]
    pub demo: Option<DemoFile>,
    /// The upstreams, by name: where their hosts come from, how one is picked, timeouts, health
    /// and limits.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendFile>,
    /// The routes: the most specific path wins (static segment, then {param}, then {*rest}).
    #[serde(default)]
    pub endpoints: Vec<EndpointFile>,
    /// How the client address is found behind trusted proxies (default: the TCP peer).
    // request filters (shapes in security.rs)
    #[serde(default)]
    pub client_ip: Option<super::security::ClientIpFile>,
    /// The MaxMind database that geofences and the X-Geo-* headers read.
    #[serde(default)]
    pub geoip: Option<super::security::GeoipFile>,
    /// Service-wide request filters (ip_filter, geofence, bot_detector), checked before
    /// routing.
    #[serde(default)]
    pub security: Option<super::security::SecurityFile>,
    /// The service-wide rate limit, checked before each endpoint's own.
    #[serde(default)]
    pub rate_limit: Option<super::limits::RateLimitFile>,
    /// The resolver of dns and dns_srv discovery (default: the system's, /etc/resolv.conf).
    #[serde(default)]
    pub dns: Option<DnsFile>,
    /// The Redis that store: redis limits share (required when a limit says store: redis).
    #[serde(default)]
    pub redis: Option<super::limits::RedisFile>,
    /// OpenTelemetry tracing: one span per request, exported over OTLP/HTTP (default: off).
    #[serde(default)]
    pub tracing: Option<super::tracing::TracingFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Plain HTTP listeners, as ip:port. Fixed at start.
    pub listen: Vec<String>,
    /// Worker threads of the proxy (default 1). Fixed at start.
    #[serde(default)]
    pub threads: Option<usize>,
    /// true: one Tokio runtime whose threads steal each other's tasks; false: one single-
    /// threaded runtime per thread (default false). Fixed at start.
    #[serde(default)]
    pub work_stealing: Option<bool>,
    /// Default time budget of a request, from its arrival to the upstream's response header,
    /// retries included; 504 when spent (default 15s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// How long SIGTERM lets requests in flight finish (default 5s). Fixed at start.
    #[serde(default)]
    pub grace_period: Option<Dur>,
    /// The admin listener: /health, /ready, /metrics, /status and the status page /. Keep it
    /// private. Fixed at start.
    #[serde(default)]
    pub admin: Option<AdminFile>,
    /// One access-log line per request (default true).
    #[serde(default)]
    pub access_log: Option<bool>,
    /// Access-log lines as text (for people) or json (one object per line, for log
    /// pipelines) (default text).
    #[serde(default)]
    pub access_log_format: Option<super::LogFormat>,
    /// A request header must be complete within this, or the connection is closed (default
    /// 10s).
    #[serde(default)]
    pub header_read_timeout: Option<Dur>,
    /// Where -d writes the process id (default /tmp/gatehouse.pid).
    #[serde(default)]
    pub pid_file: Option<String>,
    /// The socket the listeners are handed over on with -u (default
    /// /tmp/gatehouse_upgrade.sock).
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    /// Request bodies above this size get 413, by Content-Length or as a streamed body grows
    /// (default: no limit).
    #[serde(default)]
    pub max_body_size: Option<Size>,
    /// HTTPS listeners and their certificates.
    #[serde(default)]
    pub tls: Option<super::tls::TlsFile>,
    /// Bytes of the read buffer each client connection gets for its whole life, on plain and
    /// HTTPS listeners (default 0: none). Fixed at start.
    #[serde(default)]
    pub listener_buffer: Option<Size>,
    /// The soft open-file limit set at start (default: the hard limit). Fixed at start.
    #[serde(default)]
    pub max_open_files: Option<u64>,
    /// Read a PROXY protocol header (v1 or v2) from trusted L4 load balancers on every listener
    /// (default: off).
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolFile>,
    /// Plain listeners also accept HTTP/2 by prior knowledge (h2c), as gRPC clients inside a
    /// network connect; other connections stay HTTP/1.1 (default false).
    #[serde(default)]
    pub h2c: Option<bool>,
    /// HTTP/2 settings offered to clients, over TLS and h2c (restart to change).
    #[serde(default)]
    pub h2: Option<H2File>,
}

/// `server.h2`: the HTTP/2 settings gatehouse offers its clients.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct H2File {
    /// Streams a client may have open at once on one connection (default 100).
    #[schemars(range(min = 1))]
    pub max_concurrent_streams: Option<u32>,
    /// Flow-control window of each stream: request body bytes a client may send before
    /// gatehouse has passed them on (default 65,535 bytes, HTTP/2's initial window).
    pub stream_window: Option<Size>,
    /// Flow-control window of the whole connection (default 65,535 bytes).
    pub connection_window: Option<Size>,
}

/// `server.proxy_protocol`: the peers whose PROXY headers are believed.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolFile {
    /// Peers (CIDRs or addresses) whose PROXY header is read; from any other peer it is not
    /// read.
    pub trusted: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address of the admin listener, as ip:port.
    pub listen: String,
}

/// The built-in demo/echo upstream (for `make run` and trying the proxy out).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoFile {
    /// Address of the demo upstream, as ip:port.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// Where the hosts come from: exactly one of static, dns, dns_srv.
    pub discovery: DiscoveryFile,
    /// How a host is picked (default round_robin).
    #[serde(default)]
    #[schemars(extend("enum" = ["round_robin", "random", "consistent_hash", null]))]
    pub balance: Option<String>,
    /// Timeouts of the connections to the hosts.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    /// Idle upstream connections kept; the pool is shared by all backends and sized by their
    /// sum at start (default 250).
    #[serde(default)]
    pub max_idle_connections: Option<usize>,
    /// Further attempts on another host, after a connect failure only (default 1, at most 16).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Host header sent upstream (default: the client's Host, unchanged).
    #[serde(default)]
    pub host_header: Option<String>,
    /// The hosts speak HTTPS.
    #[serde(default)]
    pub tls: Option<super::tls::BackendTlsFile>,
    /// The HTTP version spoken to the hosts: `h1` (default), `h2` (over `tls`, by ALPN) or `h2c`
    /// (plain, by prior knowledge).
    #[serde(default)]
    pub protocol: Option<String>,
    /// One bucket for all requests to this backend; empty = 503 with Retry-After.
    #[serde(default)]
    pub rate_limit: Option<super::limits::BackendRateLimitFile>,
    /// Requests in flight to this backend; more get 503 (default: no bound).
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// consistent_hash only: ip (the client address, default) or a request header name.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// Active HTTP checks of every host (default: none; passive ejection always applies).
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    /// One circuit breaker for all hosts of this backend (default: none).
    #[serde(default)]
    pub circuit_breaker: Option<BreakerFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    /// Fixed hosts, as ip:port.
    #[serde(default, rename = "static")]
    pub static_hosts: Option<Vec<String>>,
    /// A/AAAA records of a name, each address on one port.
    #[serde(default)]
    pub dns: Option<DnsDiscoveryFile>,
    /// SRV records of a name: the lowest priority, weights share the traffic.
    #[serde(default)]
    pub dns_srv: Option<SrvDiscoveryFile>,
}

/// `discovery.dns`: A/AAAA records of `name`, each on `port`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoveryFile {
    /// The name looked up.
    pub name: String,
    /// The port of every address found.
    pub port: u16,
    /// How often the name is looked up again (default 30s).
    #[serde(default)]
    pub refresh: Option<Dur>,
}

/// `discovery.dns_srv`: SRV records of `name` (targets resolved to A/AAAA).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SrvDiscoveryFile {
    /// The SRV name looked up, e.g. _http._tcp.api.internal.
    pub name: String,
    /// How often the name is looked up again (default 30s).
    #[serde(default)]
    pub refresh: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// Path of the GET check; a 2xx passes (default /).
    #[serde(default)]
    pub path: Option<String>,
    /// Time between two rounds of checks (default 5s).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Budget of one check, connect and answer (default 1s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Consecutive failed checks that take a host out (default 3).
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
    /// Consecutive passed checks that bring it back (default 2).
    #[serde(default)]
    pub healthy_after: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// The count of consecutive failures restarts every interval (default 60s).
    #[serde(default)]
    pub interval: Option<Dur>,
    /// How long the breaker stays open before one probe request is let through (default 10s).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// More consecutive failures than this open the breaker (default 5).
    #[serde(default)]
    pub max_errors: Option<u32>,
    /// Log each state change (default true).
    #[serde(default)]
    pub log_status_change: Option<bool>,
}

/// Top-level `dns`: the resolver of DNS discovery.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    /// Nameservers, as ip:port or a bare ip (port 53) (default: the system's).
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    /// Budget of one lookup (default 1s).
    #[serde(default)]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// TCP connect (and TLS handshake) to a host (default 5s).
    #[serde(default)]
    pub connect: Option<Dur>,
    /// Each read from the upstream (default 15s).
    #[serde(default)]
    pub read: Option<Dur>,
    /// Each write to the upstream (default 5s).
    #[serde(default)]
    pub write: Option<Dur>,
    /// Life of an idle pooled connection (default 60s).
    #[serde(default)]
    pub idle: Option<Dur>,
    /// An upgraded (WebSocket) connection is closed after this long without a byte from the
    /// upstream; also bounds the wait for its 101 (default 1h).
    #[serde(default)]
    pub tunnel_idle: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    /// Path pattern: {name} matches one segment, {*rest} the remainder.
    pub path: String,
    /// Methods routed here (default: every method); others get 405 with Allow.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// The backend requests go to: a name from backends.
    pub backend: String,
    /// Path sent upstream, with the placeholders of path; the query is kept (default: the path
    /// unchanged).
    #[serde(default)]
    pub rewrite: Option<String>,
    /// This endpoint's time budget (default server.timeout).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// This endpoint's filters, added to the service-wide ones.
    #[serde(default)]
    pub security: Option<super::security::SecurityFile>,
    /// This endpoint's rate limit, checked after the service-wide one.
    #[serde(default)]
    pub rate_limit: Option<super::limits::RateLimitFile>,
    /// Requests in flight at most; 503 when reached.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5")
            .unwrap_err()
            .contains("unit is required"));
        assert!(parse_duration("2x").is_err());
    }

    #[test]
    fn durations_are_bounded() {
        let dur = |s: &str| serde_yaml::from_str::<Dur>(s).map(|d| d.0);
        assert_eq!(dur("365d").unwrap(), MAX_DURATION);
        let err = dur("366d").unwrap_err().to_string();
        assert!(err.contains("is too long (at most 365d)"), "{err}");
        assert!(dur("10000000000000000000s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KB").unwrap(), 512 * 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("MB").is_err());
    }
}
