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

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub version: u32,
    pub server: ServerFile,
    #[serde(default)]
    pub demo: Option<DemoFile>,
    #[serde(default)]
    pub backends: BTreeMap<String, BackendFile>,
    #[serde(default)]
    pub endpoints: Vec<EndpointFile>,
    // request filters (shapes in security.rs)
    #[serde(default)]
    pub client_ip: Option<super::security::ClientIpFile>,
    #[serde(default)]
    pub geoip: Option<super::security::GeoipFile>,
    #[serde(default)]
    pub security: Option<super::security::SecurityFile>,
    /// Service-wide rate limit (see `config/limits.rs`).
    #[serde(default)]
    pub rate_limit: Option<super::limits::RateLimitFile>,
    /// Resolver used by `dns`/`dns_srv` discovery; default the system's.
    #[serde(default)]
    pub dns: Option<DnsFile>,
    /// The Redis shared by `store: redis` limits (see `config/limits.rs`).
    #[serde(default)]
    pub redis: Option<super::limits::RedisFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Vec<String>,
    #[serde(default)]
    pub threads: Option<usize>,
    /// Tokio work stealing between the proxy's threads.
    #[serde(default)]
    pub work_stealing: Option<bool>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub grace_period: Option<Dur>,
    #[serde(default)]
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub access_log: Option<bool>,
    #[serde(default)]
    pub header_read_timeout: Option<Dur>,
    #[serde(default)]
    pub pid_file: Option<String>,
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    /// Request bodies above this size get 413 (see config/tls.rs).
    #[serde(default)]
    pub max_body_size: Option<Size>,
    /// HTTPS listeners (see config/tls.rs).
    #[serde(default)]
    pub tls: Option<super::tls::TlsFile>,
    /// Read buffer of each client connection (plain and TLS listeners).
    #[serde(default)]
    pub listener_buffer: Option<Size>,
    /// The soft open-file limit set at start (default: the hard limit).
    #[serde(default)]
    pub max_open_files: Option<u64>,
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolFile>,
    /// Plain listeners also accept HTTP/2 by prior knowledge.
    #[serde(default)]
    pub h2c: Option<bool>,
}

/// `server.proxy_protocol`: the peers whose PROXY headers are believed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolFile {
    pub trusted: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: String,
}

/// The built-in demo/echo upstream (for `make run` and trying the proxy out).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemoFile {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    pub discovery: DiscoveryFile,
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub max_idle_connections: Option<usize>,
    #[serde(default)]
    pub retries: Option<u32>,
    /// Host header sent upstream; by default the client's Host is passed through.
    #[serde(default)]
    pub host_header: Option<String>,
    /// HTTPS upstream (see config/tls.rs).
    #[serde(default)]
    pub tls: Option<super::tls::BackendTlsFile>,
    /// `h1` (default), `h2` (over `tls`, by ALPN) or `h2c` (plain, by prior knowledge).
    #[serde(default)]
    pub protocol: Option<String>,
    /// One bucket for this backend (see `config/limits.rs`).
    #[serde(default)]
    pub rate_limit: Option<super::limits::BackendRateLimitFile>,
    /// Bound on in-flight requests to this backend.
    #[serde(default)]
    pub max_concurrent: Option<usize>,
    /// `consistent_hash` key: `ip` (client address) or a header name.
    #[serde(default)]
    pub hash_key: Option<String>,
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    #[serde(default)]
    pub circuit_breaker: Option<BreakerFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    #[serde(default, rename = "static")]
    pub static_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub dns: Option<DnsDiscoveryFile>,
    #[serde(default)]
    pub dns_srv: Option<SrvDiscoveryFile>,
}

/// `discovery.dns`: A/AAAA records of `name`, each on `port`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoveryFile {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub refresh: Option<Dur>,
}

/// `discovery.dns_srv`: SRV records of `name` (targets resolved to A/AAAA).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SrvDiscoveryFile {
    pub name: String,
    #[serde(default)]
    pub refresh: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
    #[serde(default)]
    pub healthy_after: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub max_errors: Option<u32>,
    #[serde(default)]
    pub log_status_change: Option<bool>,
}

/// Top-level `dns`: the resolver of DNS discovery.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsFile {
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default)]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    #[serde(default)]
    pub connect: Option<Dur>,
    #[serde(default)]
    pub read: Option<Dur>,
    #[serde(default)]
    pub write: Option<Dur>,
    #[serde(default)]
    pub idle: Option<Dur>,
    #[serde(default)]
    pub tunnel_idle: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    pub path: String,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub backend: String,
    #[serde(default)]
    pub rewrite: Option<String>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub security: Option<super::security::SecurityFile>,
    /// This endpoint's rate limit (see `config/limits.rs`).
    #[serde(default)]
    pub rate_limit: Option<super::limits::RateLimitFile>,
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
