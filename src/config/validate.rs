//! Semantic validation: turns the file shape into a typed `Config`, collecting every error
//! with its YAML path instead of stopping at the first.

use super::file::*;
use super::*;

/// The request budget, until the upstream's response header (Envoy's route timeout). It
/// leaves room for a connect that needs SYN retransmissions (at 1 s and 3 s) when an
/// upstream's accept queue overflows in a burst, plus a slow answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// One single-threaded runtime per proxy thread (no work stealing): measured faster with one
/// worker (README "Performance").
pub const DEFAULT_WORK_STEALING: bool = false;
/// Covers the first two SYN retransmissions (1 s and 3 s after the SYN): a burst that
/// overflows an upstream's accept queue is served late, not failed (Envoy's default).
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
/// Each read from the upstream; as long as the default budget, so that by default the
/// budget alone decides how long an answer may take.
pub const DEFAULT_READ: Duration = Duration::from_secs(15);
/// An upgraded connection (WebSocket) is closed after this long without a byte from the
/// upstream.
pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(3600);
pub const DEFAULT_WRITE: Duration = Duration::from_secs(5);
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_IDLE: usize = 250;
/// The read buffer of each client connection (`server.listener_buffer`); see
/// conf/gatehouse.yaml for what it costs and buys.
pub const DEFAULT_LISTENER_BUFFER: usize = 0;
/// Above this a connection's read buffer only costs memory: one read never brings more than
/// a few socket buffers' worth.
pub const MAX_LISTENER_BUFFER: u64 = 1 << 20;
/// The fewest open files `server.max_open_files` may give: the listeners, the log, the
/// config and a few connections.
pub const MIN_OPEN_FILES: u64 = 64;

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
const MAX_H2_WINDOW: u64 = (1 << 31) - 1;

/// `server.h2`, each value checked against what HTTP/2 allows.
fn h2_settings(f: Option<&H2File>, e: &mut Errs) -> H2Settings {
    let d = H2Settings::default();
    let Some(f) = f else { return d };
    let mut window = |key: &str, v: Option<Size>, default: u32| match v {
        Some(Size(n)) if !(65_535..=MAX_H2_WINDOW).contains(&n) => {
            e.push(
                key,
                format!("{n} bytes is outside 65,535 bytes (HTTP/2's initial window) to 2GB - 1"),
            );
            default
        }
        Some(Size(n)) => n as u32,
        None => default,
    };
    let stream_window = window("server.h2.stream_window", f.stream_window, d.stream_window);
    let connection_window = window(
        "server.h2.connection_window",
        f.connection_window,
        d.connection_window,
    );
    let max_concurrent_streams = match f.max_concurrent_streams {
        Some(0) => {
            e.push(
                "server.h2.max_concurrent_streams",
                "0 would refuse every request; at least 1",
            );
            d.max_concurrent_streams
        }
        Some(n) => n,
        None => d.max_concurrent_streams,
    };
    H2Settings {
        max_concurrent_streams,
        stream_window,
        connection_window,
    }
}

struct Errs(Vec<ConfigError>);

impl Errs {
    fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError::new(path, msg));
    }

    fn addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.push(
                    path,
                    format!("{s:?} is not an address as ip:port (e.g. 127.0.0.1:8080, [::1]:8080)"),
                );
                None
            }
        }
    }

    fn positive(&mut self, path: &str, d: Option<Dur>, default: Duration) -> Duration {
        match d {
            Some(Dur(d)) if d.is_zero() => {
                self.push(path, "must be > 0");
                default
            }
            Some(Dur(d)) => d,
            None => default,
        }
    }
}

pub fn validate(f: &FileConfig) -> Result<Config, ConfigErrors> {
    let mut e = Errs(Vec::new());
    if f.version != 1 {
        e.push(
            "version",
            format!("unsupported version {} (expected 1)", f.version),
        );
    }

    // server
    let s = &f.server;
    if s.listen.is_empty() {
        e.push("server.listen", "needs at least one address");
    }
    let listen: Vec<SocketAddr> = s
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| e.addr(&format!("server.listen[{i}]"), a))
        .collect();
    let threads = match s.threads {
        Some(0) => {
            e.push("server.threads", "must be >= 1");
            1
        }
        Some(n) => n,
        None => 1,
    };
    let server = ServerConfig {
        listen,
        threads,
        work_stealing: s.work_stealing.unwrap_or(DEFAULT_WORK_STEALING),
        timeout: e.positive("server.timeout", s.timeout, DEFAULT_TIMEOUT),
        grace_period: s.grace_period.map(|d| d.0).unwrap_or(DEFAULT_GRACE),
        admin: s
            .admin
            .as_ref()
            .and_then(|a| e.addr("server.admin.listen", &a.listen)),
        access_log: s.access_log.unwrap_or(true),
        access_log_format: s.access_log_format.unwrap_or_default(),
        header_read_timeout: e.positive(
            "server.header_read_timeout",
            s.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT,
        ),
        pid_file: s
            .pid_file
            .clone()
            .unwrap_or_else(|| "/tmp/gatehouse.pid".into()),
        upgrade_sock: s
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| "/tmp/gatehouse_upgrade.sock".into()),
        max_body_size: match s.max_body_size {
            Some(Size(0)) => {
                e.push("server.max_body_size", "must be > 0 (omit it for no limit)");
                None
            }
            other => other.map(|Size(n)| n),
        },
        tls: s
            .tls
            .as_ref()
            .and_then(|t| super::tls::server_tls(t, &mut e.0)),
        proxy_protocol: s.proxy_protocol.as_ref().map(|p| {
            let trusted =
                super::security::cidrs("server.proxy_protocol.trusted", &p.trusted, &mut e.0);
            if p.trusted.is_empty() {
                e.push(
                    "server.proxy_protocol.trusted",
                    "list the load balancers' addresses (a PROXY header is read from them only)",
                );
            }
            super::ProxyProtocolConfig {
                trusted: crate::filters::ip::CidrSet::new(&trusted),
            }
        }),
        h2c: s.h2c.unwrap_or(false),
        h2: h2_settings(s.h2.as_ref(), &mut e),
        listener_buffer: match s.listener_buffer {
            Some(Size(n)) if n > MAX_LISTENER_BUFFER => {
                e.push(
                    "server.listener_buffer",
                    format!("{n} bytes is too large (at most 1MB; 0 = no buffer)"),
                );
                DEFAULT_LISTENER_BUFFER
            }
            Some(Size(n)) => n as usize,
            None => DEFAULT_LISTENER_BUFFER,
        },
        max_open_files: match s.max_open_files {
            Some(n) if n < MIN_OPEN_FILES => {
                e.push(
                    "server.max_open_files",
                    format!("must be at least {MIN_OPEN_FILES} (omit it for the hard limit)"),
                );
                None
            }
            other => other,
        },
    };
    // A connection is told HTTPS from plain by the port it came in on.
    if let Some(tls) = &server.tls {
        for (i, a) in tls.listen.iter().enumerate() {
            if server.listen.iter().any(|p| p.port() == a.port()) {
                e.push(
                    format!("server.tls.listen[{i}]"),
                    format!(
                        "port {} is also a plain listener's (server.listen)",
                        a.port()
                    ),
                );
            }
        }
    }
    let demo = f
        .demo
        .as_ref()
        .and_then(|d| e.addr("demo.listen", &d.listen));

    // backends
    let mut backends = BTreeMap::new();
    for (name, b) in &f.backends {
        let p = format!("backends.{name}");
        let up = upstream_parts(&mut e, &p, b);
        let t = &b.timeouts;
        let cfg = BackendConfig {
            discovery: up.discovery,
            balance: up.balance,
            hash_key: up.hash_key,
            health_check: up.health_check,
            circuit_breaker: up.circuit_breaker,
            connect_timeout: e.positive(
                &format!("{p}.timeouts.connect"),
                t.connect,
                DEFAULT_CONNECT,
            ),
            read_timeout: e.positive(&format!("{p}.timeouts.read"), t.read, DEFAULT_READ),
            write_timeout: e.positive(&format!("{p}.timeouts.write"), t.write, DEFAULT_WRITE),
            idle_timeout: t.idle.map(|d| d.0).unwrap_or(DEFAULT_IDLE),
            tunnel_idle_timeout: e.positive(
                &format!("{p}.timeouts.tunnel_idle"),
                t.tunnel_idle,
                DEFAULT_TUNNEL_IDLE,
            ),
            max_idle_connections: b.max_idle_connections.unwrap_or(DEFAULT_MAX_IDLE),
            retries: b.retries.unwrap_or(1),
            host_header: match b.host_header.as_deref() {
                Some(h) => match http::HeaderValue::from_str(h) {
                    Ok(v) if !h.is_empty() => Some(v),
                    _ => {
                        e.push(format!("{p}.host_header"), "is not a valid header value");
                        None
                    }
                },
                None => None,
            },
            tls: b
                .tls
                .as_ref()
                .and_then(|t| super::tls::backend_tls(&p, t, b.host_header.as_deref(), &mut e.0)),
            protocol: protocol(&mut e, &p, b),
        };
        if cfg.retries > super::MAX_RETRIES {
            e.push(
                format!("{p}.retries"),
                format!("must be <= {}", super::MAX_RETRIES),
            );
        }
        backends.insert(name.clone(), cfg);
    }

    // request filters (security.rs)
    let client_ip = super::security::client_ip(f.client_ip.as_ref(), &mut e.0);
    let geoip = super::security::geoip(f.geoip.as_ref(), &mut e.0);
    let dbs = super::security::GeoDbs::of(geoip.as_ref());
    let security = super::security::security("security", f.security.as_ref(), dbs, &mut e.0);

    // endpoints
    let mut endpoints = Vec::with_capacity(f.endpoints.len());
    for (i, ep) in f.endpoints.iter().enumerate() {
        let p = format!("endpoints[{i}]");
        if !ep.path.starts_with('/') {
            e.push(
                format!("{p}.path"),
                format!("{:?} must start with '/'", ep.path),
            );
        }
        if !f.backends.contains_key(&ep.backend) {
            let known: Vec<&str> = f.backends.keys().map(|s| s.as_str()).collect();
            e.push(
                format!("{p}.backend"),
                format!(
                    "unknown backend {:?} (defined: {})",
                    ep.backend,
                    known.join(", ")
                ),
            );
        }
        let methods = ep.methods.as_ref().map(|list| {
            if list.is_empty() {
                e.push(
                    format!("{p}.methods"),
                    "must not be empty (omit it to allow every method)",
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(j, m)| {
                    let up = m.to_ascii_uppercase();
                    match http::Method::from_bytes(up.as_bytes()) {
                        Ok(m) if is_known_method(&m) => Some(m),
                        _ => {
                            e.push(format!("{p}.methods[{j}]"), format!("unknown method {m:?}"));
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        endpoints.push(EndpointConfig {
            path: ep.path.clone(),
            methods,
            backend: ep.backend.clone(),
            rewrite: ep.rewrite.clone(),
            timeout: e.positive(&format!("{p}.timeout"), ep.timeout, server.timeout),
            security: super::security::security(
                &format!("{p}.security"),
                ep.security.as_ref(),
                dbs,
                &mut e.0,
            ),
            rate_limit: None,
            max_concurrent: match ep.max_concurrent {
                Some(0) => {
                    e.push(format!("{p}.max_concurrent"), "must be >= 1");
                    None
                }
                other => other,
            },
        });
    }

    let (limits, endpoint_limits) = super::limits::validate(f, &mut e.0);
    for (ep, rate_limit) in endpoints.iter_mut().zip(endpoint_limits) {
        ep.rate_limit = rate_limit;
    }
    let dns = dns_config(&mut e, f.dns.as_ref());
    let tracing = f
        .tracing
        .as_ref()
        .and_then(|t| super::tracing::tracing_block(&mut e.0, t));

    if e.0.is_empty() {
        Ok(Config {
            server,
            demo,
            backends,
            endpoints,
            client_ip,
            geoip,
            security,
            limits,
            dns,
            tracing,
            lists: Vec::new(),
            source: Default::default(),
        })
    } else {
        Err(ConfigErrors(e.0))
    }
}

// Backends' upstream settings: discovery, balancing, health checks, circuit breaker, DNS.

pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(1);

/// How a backend finds and picks its hosts, and judges them: discovery, balancing, health
/// checks, circuit breaker.
struct UpstreamParts {
    discovery: Discovery,
    balance: Balance,
    hash_key: HashKey,
    health_check: Option<HealthCheckConfig>,
    circuit_breaker: Option<BreakerConfig>,
}

fn upstream_parts(e: &mut Errs, p: &str, b: &BackendFile) -> UpstreamParts {
    let d = &b.discovery;
    let given = [
        d.static_hosts.is_some(),
        d.dns.is_some(),
        d.dns_srv.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given > 1 {
        e.push(
            format!("{p}.discovery"),
            "give exactly one of: static, dns, dns_srv",
        );
    }
    let discovery = if let Some(list) = &d.static_hosts {
        if list.is_empty() {
            e.push(format!("{p}.discovery.static"), "needs at least one host");
        }
        Discovery::Static(
            list.iter()
                .enumerate()
                .filter_map(|(i, h)| e.addr(&format!("{p}.discovery.static[{i}]"), h))
                .collect(),
        )
    } else if let Some(dns) = &d.dns {
        let q = format!("{p}.discovery.dns");
        check_dns_name(e, &format!("{q}.name"), &dns.name);
        if dns.port == 0 {
            e.push(format!("{q}.port"), "must be > 0");
        }
        Discovery::Dns {
            name: dns.name.clone(),
            port: dns.port,
            refresh: e.positive(&format!("{q}.refresh"), dns.refresh, DEFAULT_REFRESH),
        }
    } else if let Some(srv) = &d.dns_srv {
        let q = format!("{p}.discovery.dns_srv");
        check_dns_name(e, &format!("{q}.name"), &srv.name);
        Discovery::DnsSrv {
            name: srv.name.clone(),
            refresh: e.positive(&format!("{q}.refresh"), srv.refresh, DEFAULT_REFRESH),
        }
    } else {
        e.push(
            format!("{p}.discovery"),
            "needs one of: static, dns, dns_srv",
        );
        Discovery::Static(Vec::new())
    };
    let balance = match b.balance.as_deref() {
        None | Some("round_robin") => Balance::RoundRobin,
        Some("random") => Balance::Random,
        Some("consistent_hash") => Balance::ConsistentHash,
        Some(other) => {
            e.push(
                format!("{p}.balance"),
                format!(
                    "unknown balance {other:?} (expected round_robin, random or consistent_hash)"
                ),
            );
            Balance::RoundRobin
        }
    };
    let hash_key = match b.hash_key.as_deref() {
        None | Some("ip") => HashKey::ClientIp,
        Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => HashKey::Header(name),
            Err(_) => {
                e.push(
                    format!("{p}.hash_key"),
                    format!("{h:?} is neither `ip` nor a valid header name"),
                );
                HashKey::ClientIp
            }
        },
    };
    if b.hash_key.is_some() && balance != Balance::ConsistentHash {
        e.push(
            format!("{p}.hash_key"),
            "only used with balance: consistent_hash",
        );
    }
    let health_check = b.health_check.as_ref().map(|h| {
        let q = format!("{p}.health_check");
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
            e.push(
                format!("{q}.path"),
                format!("{path:?} must be a path starting with '/'"),
            );
        }
        let mut count = |key: &str, v: Option<u32>| match v {
            Some(0) => {
                e.push(format!("{q}.{key}"), "must be >= 1");
                1
            }
            Some(n) => n,
            None => key_default(key),
        };
        let unhealthy_after = count("unhealthy_after", h.unhealthy_after);
        let healthy_after = count("healthy_after", h.healthy_after);
        HealthCheckConfig {
            path,
            interval: e.positive(&format!("{q}.interval"), h.interval, Duration::from_secs(5)),
            timeout: e.positive(&format!("{q}.timeout"), h.timeout, Duration::from_secs(1)),
            unhealthy_after,
            healthy_after,
        }
    });
    let circuit_breaker = b.circuit_breaker.as_ref().map(|c| {
        let q = format!("{p}.circuit_breaker");
        BreakerConfig {
            interval: e.positive(
                &format!("{q}.interval"),
                c.interval,
                Duration::from_secs(60),
            ),
            timeout: e.positive(&format!("{q}.timeout"), c.timeout, Duration::from_secs(10)),
            max_errors: c.max_errors.unwrap_or(5),
            log_status_change: c.log_status_change.unwrap_or(true),
        }
    });
    UpstreamParts {
        discovery,
        balance,
        hash_key,
        health_check,
        circuit_breaker,
    }
}

fn key_default(key: &str) -> u32 {
    match key {
        "unhealthy_after" => 3,
        _ => 2,
    }
}

fn check_dns_name(e: &mut Errs, path: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
    if !ok {
        e.push(path, format!("{name:?} is not a DNS name"));
    }
}

fn dns_config(e: &mut Errs, d: Option<&DnsFile>) -> Option<DnsConfig> {
    let d = d?;
    let nameservers = d
        .nameservers
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, a)| {
            // A bare IP means port 53.
            match a.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, 53)),
                Err(_) => e.addr(&format!("dns.nameservers[{i}]"), a),
            }
        })
        .collect();
    Some(DnsConfig {
        nameservers,
        timeout: e.positive("dns.timeout", d.timeout, DEFAULT_DNS_TIMEOUT),
    })
}

fn is_known_method(m: &http::Method) -> bool {
    use http::Method as M;
    [
        M::GET,
        M::HEAD,
        M::POST,
        M::PUT,
        M::DELETE,
        M::PATCH,
        M::OPTIONS,
        M::TRACE,
        M::CONNECT,
    ]
    .contains(m)
}

/// A backend's `protocol`: `h2` needs `tls` (ALPN chooses it), `h2c` is for plain hosts.
fn protocol(e: &mut Errs, p: &str, b: &BackendFile) -> super::Protocol {
    let path = format!("{p}.protocol");
    let proto = match b.protocol.as_deref() {
        None | Some("h1") => Protocol::H1,
        Some("h2") => Protocol::H2,
        Some("h2c") => Protocol::H2c,
        Some(other) => {
            e.push(path, format!("unknown protocol {other:?} (h1, h2 or h2c)"));
            return Protocol::H1;
        }
    };
    match (proto, b.tls.is_some()) {
        (Protocol::H2, false) => e.push(
            path,
            "h2 is negotiated over TLS: add `tls`, or use h2c for plain hosts",
        ),
        (Protocol::H2c, true) => e.push(
            path,
            "h2c is HTTP/2 without TLS: use h2 for a backend with `tls`",
        ),
        _ => {}
    }
    proto
}
