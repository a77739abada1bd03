//! The top-level `redis` block: the Redis that `store: redis` limits share and in which
//! `store: fleet` instances announce themselves. It names one server (`url`), the seed nodes
//! of a Redis Cluster (`cluster`) or the Sentinels of a master (`sentinel`), with optional
//! TLS and ACL credentials. URLs may hold a password, so they are kept as `SecretUrl`s; a
//! password read from `password_file` is a `Secret`; both print redacted. Files (password,
//! CA, client certificate and key) are read during validation, so `gatehouse check` and a
//! reload report an unreadable one with its YAML path; nothing connects.

use super::file::Dur;
use super::secret::{Secret, SecretUrl};
use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// The top-level `redis:` block, used by limits with `store: redis` or `store: fleet`.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// One server (or a primary): redis://[user:password@]host:port/db, rediss:// (TLS) or
    /// redis+unix:///path; printed with its password redacted. One of url, cluster, sentinel.
    #[serde(default)]
    pub url: Option<SecretUrl>,
    /// Seed nodes of a Redis Cluster (redis:// or rediss:// URLs).
    #[serde(default)]
    pub cluster: Option<Vec<SecretUrl>>,
    /// A master found through Redis Sentinel, followed across failovers.
    #[serde(default)]
    pub sentinel: Option<SentinelFile>,
    /// ACL user (instead of one in the URL).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (instead of one in the URL); never printed.
    #[serde(default)]
    pub password_file: Option<String>,
    /// TLS to Redis (with rediss:// URLs): CA, optional client certificate, verification.
    #[serde(default)]
    pub tls: Option<RedisTlsFile>,
    /// Budget of one decision, round trip included; past it, on_store_failure decides (default
    /// 20ms).
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// How often store: fleet instances announce themselves and count each other (default
    /// 1s).
    #[serde(default)]
    pub heartbeat: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentinelFile {
    /// The name the Sentinels monitor the master under.
    pub master: String,
    /// The Sentinels (`redis://host:26379`).
    pub nodes: Vec<SecretUrl>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsFile {
    /// PEM file of the CA(s) that sign the servers' certificates (default: the system's).
    #[serde(default)]
    pub ca: Option<String>,
    /// PEM client certificate, for servers that ask for one (with key).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM key of the client certificate.
    #[serde(default)]
    pub key: Option<String>,
    /// Verify the server's certificate and name (default true).
    #[serde(default)]
    pub verify: Option<bool>,
}

/// Default budget of one Redis decision.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);
/// Default period of the `store: fleet` heartbeat.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// Which servers the block names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisServers {
    One(SecretUrl),
    Cluster(Vec<SecretUrl>),
    Sentinel {
        master: String,
        nodes: Vec<SecretUrl>,
    },
}

/// TLS to Redis: the files' contents (PEM), read at validation.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key.
    pub client: Option<(Vec<u8>, Secret)>,
    pub verify: bool,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client", &self.client.is_some())
            .field("verify", &self.verify)
            .finish()
    }
}

/// A validated `redis` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Printed with their passwords redacted.
    pub servers: RedisServers,
    /// ACL user and password for the servers (they override the URLs' own).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<RedisTls>,
    /// Budget of one decision (round trip included); past it, `on_store_failure` decides.
    pub timeout: Duration,
    pub heartbeat: Duration,
}

impl RedisConfig {
    /// A single server at `url`, with the default timeout and heartbeat and no extras.
    pub fn one(url: &str) -> RedisConfig {
        RedisConfig {
            servers: RedisServers::One(SecretUrl::new(url)),
            username: None,
            password: None,
            tls: None,
            timeout: DEFAULT_REDIS_TIMEOUT,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// Every URL the block names, with its YAML path.
    pub fn urls(&self) -> Vec<(String, &SecretUrl)> {
        match &self.servers {
            RedisServers::One(u) => vec![("redis.url".to_string(), u)],
            RedisServers::Cluster(us) => us
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("redis.cluster[{i}]"), u))
                .collect(),
            RedisServers::Sentinel { nodes, .. } => nodes
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("redis.sentinel.nodes[{i}]"), u))
                .collect(),
        }
    }

    /// Removes every secret of the block from `text` (an error message of the client).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (_, u) in self.urls() {
            out = u.scrub(&out);
        }
        if let Some(p) = &self.password {
            out = p.scrub(&out);
        }
        out
    }

    /// What to print for the servers: URLs redacted.
    pub fn describe(&self) -> String {
        match &self.servers {
            RedisServers::One(u) => u.to_string(),
            RedisServers::Cluster(us) => {
                let v: Vec<String> = us.iter().map(|u| u.to_string()).collect();
                format!("cluster [{}]", v.join(", "))
            }
            RedisServers::Sentinel { master, nodes } => {
                let v: Vec<String> = nodes.iter().map(|u| u.to_string()).collect();
                format!("sentinel master {master} [{}]", v.join(", "))
            }
        }
    }
}

impl std::fmt::Display for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn read(errors: &mut Vec<ConfigError>, path: &str, file: &str) -> Option<Vec<u8>> {
    match std::fs::read(file) {
        Ok(b) => Some(b),
        Err(e) => {
            errors.push(ConfigError::new(path, format!("cannot read {file}: {e}")));
            None
        }
    }
}

/// The `redis` block: exactly one of `url`, `cluster`, `sentinel`, each URL one the client
/// understands (checked offline: nothing connects before a request needs it), `rediss://`
/// URLs when `tls` is given, readable files, and positive durations.
pub(super) fn redis_block(errors: &mut Vec<ConfigError>, r: &RedisFile) -> Option<RedisConfig> {
    let before = errors.len();
    let named = [r.url.is_some(), r.cluster.is_some(), r.sentinel.is_some()];
    let servers = match (&r.url, &r.cluster, &r.sentinel) {
        _ if named.iter().filter(|n| **n).count() != 1 => {
            errors.push(ConfigError::new(
                "redis",
                "names its servers with exactly one of url, cluster, sentinel",
            ));
            None
        }
        (Some(u), _, _) => Some(RedisServers::One(u.clone())),
        (_, Some(c), _) if c.is_empty() => {
            errors.push(ConfigError::new("redis.cluster", "needs at least one node"));
            None
        }
        (_, Some(c), _) => Some(RedisServers::Cluster(c.clone())),
        (_, _, Some(s)) => {
            if s.master.is_empty() {
                errors.push(ConfigError::new(
                    "redis.sentinel.master",
                    "must not be empty",
                ));
            }
            if s.nodes.is_empty() {
                errors.push(ConfigError::new(
                    "redis.sentinel.nodes",
                    "needs at least one Sentinel",
                ));
            }
            Some(RedisServers::Sentinel {
                master: s.master.clone(),
                nodes: s.nodes.clone(),
            })
        }
        _ => None,
    };
    let password = r.password_file.as_ref().and_then(|f| {
        let b = read(errors, "redis.password_file", f)?;
        match String::from_utf8(b) {
            // one line: the trailing newline of `echo secret > file` is not part of it
            Ok(s) => Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
            Err(_) => {
                errors.push(ConfigError::new("redis.password_file", "is not UTF-8 text"));
                None
            }
        }
    });
    if let Some(p) = &password {
        if p.expose().is_empty() {
            errors.push(ConfigError::new("redis.password_file", "is empty"));
        }
    }
    if matches!(&r.username, Some(u) if u.is_empty()) {
        errors.push(ConfigError::new("redis.username", "must not be empty"));
    }
    let tls = r.tls.as_ref().map(|t| {
        let ca = t.ca.as_ref().and_then(|f| read(errors, "redis.tls.ca", f));
        let client = match (&t.cert, &t.key) {
            (Some(c), Some(k)) => {
                let cert = read(errors, "redis.tls.cert", c);
                let key = read(errors, "redis.tls.key", k);
                cert.zip(key)
                    .map(|(c, k)| (c, Secret::new(String::from_utf8_lossy(&k))))
            }
            (None, None) => None,
            _ => {
                errors.push(ConfigError::new(
                    "redis.tls",
                    "cert and key go together (a client certificate needs its key)",
                ));
                None
            }
        };
        RedisTls {
            ca,
            client,
            verify: t.verify.unwrap_or(true),
        }
    });
    let timeout = match r.timeout {
        Some(Dur(d)) if d.is_zero() => {
            errors.push(ConfigError::new("redis.timeout", "must be > 0"));
            DEFAULT_REDIS_TIMEOUT
        }
        Some(Dur(d)) => d,
        None => DEFAULT_REDIS_TIMEOUT,
    };
    let heartbeat = match r.heartbeat {
        Some(Dur(d)) if d < Duration::from_millis(10) => {
            errors.push(ConfigError::new("redis.heartbeat", "must be at least 10ms"));
            DEFAULT_HEARTBEAT
        }
        Some(Dur(d)) => d,
        None => DEFAULT_HEARTBEAT,
    };
    let cfg = RedisConfig {
        servers: servers?,
        username: r.username.clone(),
        password,
        tls,
        timeout,
        heartbeat,
    };
    for (path, url) in cfg.urls() {
        if let Err(err) = ::redis::Client::open(url.expose()) {
            errors.push(ConfigError::new(
                path,
                format!(
                    "\"{url}\" is not a Redis URL: {}",
                    url.scrub(&err.to_string())
                ),
            ));
            continue;
        }
        let tls_url = url.expose().starts_with("rediss://");
        // a Sentinel may be reached in the clear while the master is not, and vice versa,
        // but a `tls` block with no TLS URL is a mistake
        if cfg.tls.is_some() && !tls_url && !matches!(cfg.servers, RedisServers::Sentinel { .. }) {
            errors.push(ConfigError::new(
                path,
                format!("\"{url}\": redis.tls needs rediss:// URLs"),
            ));
        }
    }
    (errors.len() == before).then_some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(yaml: &str) -> (Option<RedisConfig>, Vec<String>) {
        let f: RedisFile = serde_yaml::from_str(yaml).unwrap();
        let mut e = Vec::new();
        let c = redis_block(&mut e, &f);
        (c, e.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn one_of_url_cluster_sentinel() {
        let (c, e) = block("{ url: \"redis://h:1/0\" }");
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.timeout, DEFAULT_REDIS_TIMEOUT);
        assert_eq!(c.heartbeat, DEFAULT_HEARTBEAT);
        let (_, e) = block("{ url: \"redis://h:1\", cluster: [\"redis://h:2\"] }");
        assert_eq!(
            e,
            ["redis: names its servers with exactly one of url, cluster, sentinel"]
        );
        let (_, e) = block("{ timeout: 1s }");
        assert_eq!(e.len(), 1);
        let (c, e) = block("{ cluster: [\"redis://h:7000\", \"redis://h:7001\"] }");
        assert!(e.is_empty(), "{e:?}");
        assert!(matches!(c.unwrap().servers, RedisServers::Cluster(v) if v.len() == 2));
        let (_, e) = block("{ cluster: [] }");
        assert_eq!(e, ["redis.cluster: needs at least one node"]);
        let (c, e) = block("{ sentinel: { master: m, nodes: [\"redis://h:26379\"] } }");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.unwrap().describe(), "sentinel master m [redis://h:26379]");
        let (_, e) = block("{ cluster: [\"http://x\"], heartbeat: 1ms }");
        assert!(
            e.iter().any(|e| e.starts_with("redis.cluster[0]: ")),
            "{e:?}"
        );
        assert!(e.contains(&"redis.heartbeat: must be at least 10ms".to_string()));
    }

    #[test]
    fn tls_files_and_password_are_read_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "CA").unwrap();
        let yaml = format!(
            "{{ url: \"rediss://app:s3cret@h:6380/0\", username: app, password_file: {}, tls: {{ ca: {} }} }}",
            pw.display(),
            ca.display()
        );
        let (c, e) = block(&yaml);
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.password.as_ref().unwrap().expose(), "hunter2");
        let tls = c.tls.as_ref().unwrap();
        assert!(tls.verify && tls.client.is_none());
        assert_eq!(tls.ca.as_deref(), Some(&b"CA"[..]));
        let shown = format!("{c:?} {c}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(
            c.scrub("auth hunter2 for rediss://app:s3cret@h:6380/0"),
            "auth *** for rediss://app:***@h:6380/0"
        );
        // every way of naming a server prints its password redacted
        for yaml in [
            "{ cluster: [\"redis://app:pw-1@h:7000\", \"rediss://:pw-1@h:7001\"] }",
            "{ sentinel: { master: m, nodes: [\"redis://:pw-1@h:26379\"] } }",
        ] {
            let (c, e) = block(yaml);
            assert!(e.is_empty(), "{e:?}");
            let c = c.unwrap();
            let shown = format!("{c:?} {c}");
            assert!(!shown.contains("pw-1") && shown.contains("***"), "{shown}");
        }
        let (_, e) = block("{ cluster: [\"redis://app:pw-1@h:bad\"] }");
        assert!(!e.concat().contains("pw-1") && !e.is_empty(), "{e:?}");
        // tls needs rediss://, files must exist, cert needs key
        let (_, e) = block("{ url: \"redis://h/0\", tls: { cert: /nonexistent/c } }");
        assert!(
            e.iter().any(|e| e.contains("cert and key go together")),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.contains("needs rediss://")), "{e:?}");
        let (_, e) = block("{ url: \"rediss://h/0\", password_file: /nonexistent/pw }");
        assert!(
            e.iter()
                .any(|e| e.starts_with("redis.password_file: cannot read /nonexistent/pw")),
            "{e:?}"
        );
    }
}
