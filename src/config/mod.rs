//! Configuration: read the YAML file (`file.rs`), validate it into typed values (`validate.rs`).
//!
//! `load` reports every semantic error at once, each with its YAML path, e.g.
//! `endpoints[2].timeout: must be > 0`. What only compiling can find (route conflicts,
//! rewrites naming unknown placeholders, an unreadable GeoIP database) is reported, the same
//! way, by `Runtime::compile`.

pub mod file;
pub mod limits;
pub mod redis;
pub mod secret;
pub mod security;
pub mod tls;
pub mod tracing;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One problem in a config file: where (`endpoints[2].backend`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The validated configuration: typed values, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub demo: Option<SocketAddr>,
    pub backends: BTreeMap<String, BackendConfig>,
    pub endpoints: Vec<EndpointConfig>,
    // request filters
    pub client_ip: security::ClientIpConfig,
    pub geoip: Option<security::GeoipConfig>,
    pub security: security::SecurityConfig,
    /// Rate limits and backend concurrency bounds (service, per endpoint, per backend).
    pub limits: limits::LimitsConfig,
    /// Resolver of DNS discovery (`None` = the system's).
    pub dns: Option<DnsConfig>,
    /// Where request spans go (`None` = no tracing).
    pub tracing: Option<tracing::TracingConfig>,
    /// The list files the config reads (`cidrs_file`, `trusted_proxies_file`), each with the
    /// stamp it had just before it was read: a change is seen by comparing stamps.
    pub lists: Vec<(std::path::PathBuf, Option<FileStamp>)>,
    /// The text the config was parsed from, to read its list files again without reading
    /// the config file.
    pub source: Source,
}

/// A config's YAML text. Its `Debug` gives only the size: the text may hold secrets.
#[derive(Clone, PartialEq, Default)]
pub struct Source(pub std::sync::Arc<str>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes of YAML>", self.0.len())
    }
}

/// What identifies a file's content without reading it: device, inode (an atomic rename is
/// a new inode), modification time and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
    len: u64,
}

impl FileStamp {
    /// The stamp of `path`, or `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            len: m.len(),
        })
    }
}

/// The list files a config file names, in a fixed order.
fn list_files(f: &file::FileConfig) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut add = |p: Option<&String>| {
        if let Some(p) = p {
            out.push(std::path::PathBuf::from(p));
        }
    };
    add(f
        .client_ip
        .as_ref()
        .and_then(|c| c.trusted_proxies_file.as_ref()));
    let securities = std::iter::once(f.security.as_ref())
        .chain(f.endpoints.iter().map(|e| e.security.as_ref()))
        .flatten();
    for sec in securities {
        add(sec.ip_filter.as_ref().and_then(|i| i.cidrs_file.as_ref()));
        for v in sec.bot_detector.iter().flat_map(|b| &b.verify) {
            add(v.cidrs_file.as_ref());
        }
    }
    let limits = std::iter::once(f.rate_limit.as_ref())
        .chain(f.endpoints.iter().map(|e| e.rate_limit.as_ref()))
        .flatten();
    for r in limits {
        add(r.exempt.as_ref().and_then(|x| x.cidrs_file.as_ref()));
    }
    out.sort();
    out.dedup();
    out
}

impl Config {
    /// Whether a list file changed since the config read it.
    pub fn lists_changed(&self) -> bool {
        self.lists.iter().any(|(p, s)| FileStamp::of(p) != *s)
    }
}

pub use tracing::TracingConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    /// One work-stealing runtime for all threads (true) or one runtime per thread (false).
    pub work_stealing: bool,
    pub timeout: Duration,
    pub grace_period: Duration,
    pub admin: Option<SocketAddr>,
    pub access_log: bool,
    pub access_log_format: LogFormat,
    pub header_read_timeout: Duration,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// `None` = no limit.
    pub max_body_size: Option<u64>,
    pub tls: Option<tls::TlsConfig>,
    /// Bytes of the read buffer each client connection gets (0 = reads go to the socket).
    pub listener_buffer: usize,
    /// The soft open-file limit to set at start; `None` = the hard limit.
    pub max_open_files: Option<u64>,
    /// PROXY protocol on every listener, read from these peers only.
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    /// Plain listeners also take HTTP/2 by prior knowledge (h2c), as gRPC clients use.
    pub h2c: bool,
    /// The HTTP/2 settings offered to clients.
    pub h2: H2Settings,
}

/// A validated `server.h2` block: what gatehouse announces in its HTTP/2 SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    pub max_concurrent_streams: u32,
    /// Bytes; at most 2^31 - 1.
    pub stream_window: u32,
    pub connection_window: u32,
}

impl Default for H2Settings {
    /// Pingora's bound on streams and the HTTP/2 protocol's initial windows (64 KiB - 1).
    fn default() -> Self {
        H2Settings {
            max_concurrent_streams: 100,
            stream_window: 65_535,
            connection_window: 65_535,
        }
    }
}

/// A validated `server.proxy_protocol` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyProtocolConfig {
    pub trusted: crate::filters::ip::CidrSet,
}

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line for people: client, request, status, duration, route, upstream, reason, ID.
    #[default]
    Text,
    /// One JSON object per line, nothing around it.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Balance {
    RoundRobin,
    Random,
    ConsistentHash,
}

/// A backend's settings; equality decides whether its runtime state survives a reload.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub discovery: Discovery,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub health_check: Option<HealthCheckConfig>,
    pub circuit_breaker: Option<BreakerConfig>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    /// The wait for the `101` of a WebSocket upgrade, then the time its tunnel may carry no
    /// byte in either direction; the request budget does not apply to a tunnel.
    pub tunnel_idle_timeout: Duration,
    pub max_idle_connections: usize,
    pub retries: u32,
    /// The Host sent upstream, checked once at load so the hot path only clones it.
    pub host_header: Option<http::HeaderValue>,
    /// `Some` = the hosts speak HTTPS.
    pub tls: Option<tls::BackendTls>,
    /// The HTTP version spoken to the hosts.
    pub protocol: Protocol,
}

/// The HTTP version a backend's hosts speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (one request per pooled connection at a time).
    #[default]
    H1,
    /// HTTP/2 over TLS, chosen by ALPN (a host that picks HTTP/1.1 is spoken to in it).
    H2,
    /// HTTP/2 over plain TCP by prior knowledge.
    H2c,
}

impl Protocol {
    pub fn is_h2(self) -> bool {
        self != Protocol::H1
    }
}

/// The largest `retries` a backend may have.
pub const MAX_RETRIES: u32 = 16;

/// Where a backend's hosts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Static(Vec<SocketAddr>),
    /// A/AAAA records of `name`, every `refresh`.
    Dns {
        name: String,
        port: u16,
        refresh: Duration,
    },
    /// SRV records of `name` (lowest priority, weights), every `refresh`.
    DnsSrv {
        name: String,
        refresh: Duration,
    },
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// A request header; the client address when the header is absent.
    Header(http::HeaderName),
}

/// Active HTTP health checks of each host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// The backend's circuit breaker (all its hosts together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub max_errors: u32,
    pub log_status_change: bool,
}

/// Top-level `dns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty = the system's resolvers (resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub path: String,
    /// `None` = every method.
    pub methods: Option<Vec<http::Method>>,
    pub backend: String,
    pub rewrite: Option<String>,
    pub timeout: Duration,
    /// Filters of this endpoint, added to the service-wide ones.
    pub security: security::SecurityConfig,
    /// The endpoint's own `rate_limit` block, checked after the service-wide one.
    pub rate_limit: Option<limits::RateLimitConfig>,
    /// Requests in flight on this endpoint, checked before its `rate_limit` buckets.
    pub max_concurrent: Option<usize>,
}

/// Names of the `{param}` / `{*rest}` placeholders in a path pattern.
pub fn placeholders(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        out.push(name.trim_start_matches('*'));
        rest = &rest[start + len + 1..];
    }
    out
}

/// The JSON Schema (draft 2020-12) of the config file, generated from the types the file is
/// read into, each key with its description: what `gatehouse schema` prints, for editors.
/// It checks the shape (keys, types, choices); what only validation knows (an unknown
/// backend, a CIDR, a certificate that does not load) is `gatehouse check`'s.
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<file::FileConfig>();
    schema.insert("title".into(), "gatehouse configuration".into());
    schema.to_value()
}

/// Parses YAML text into a validated `Config`.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let de = serde_yaml::Deserializer::from_str(text);
    let file: file::FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        // The path of the failing key (e.g. `endpoints[2].timeout`), then serde_yaml's
        // message, which ends with the line and column.
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let msg = match inner.split_once(": ") {
            // serde_yaml may prefix its own (shorter) path; keep only the message.
            Some((p, rest)) if !p.contains(' ') => rest.to_string(),
            _ => inner,
        };
        ConfigError::new(if path == "." { String::new() } else { path }, msg)
    })?;
    let lists = list_files(&file)
        .into_iter()
        .map(|p| {
            let stamp = FileStamp::of(&p);
            (p, stamp)
        })
        .collect();
    let mut cfg = validate::validate(&file)?;
    cfg.lists = lists;
    cfg.source = Source(std::sync::Arc::from(text));
    Ok(cfg)
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
    parse(&text)
}
