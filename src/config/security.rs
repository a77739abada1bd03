//! Config of the request filters: `client_ip`, `geoip`, and `security` blocks (service-wide
//! and per endpoint). The serde shapes and their validation into typed values live here, so
//! `file.rs`/`validate.rs` only hook them in.

use super::ConfigError;
use crate::filters::bot::{check_pattern, BotConfig, DEFAULT_CACHE_SIZE};
use crate::filters::geo::{CityRef, GeofenceConfig};
use crate::filters::ip::{Cidr, Mode};
use serde::Deserialize;
use std::path::PathBuf;

// ---- file shapes -------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientIpFile {
    /// Peers (CIDRs or bare IPs) whose forwarding headers are believed (default: none).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Headers holding the client address, tried in order (default [X-Forwarded-For, X-Real-
    /// IP]).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoipFile {
    /// Path of a MaxMind DB (GeoIP2/GeoLite2 Country or City).
    pub database: String,
    /// Add X-Geo-Country, X-Geo-Region and X-Geo-City to upstream requests (default false).
    #[serde(default)]
    pub forward: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    /// Allow or deny client addresses by CIDR.
    #[serde(default)]
    pub ip_filter: Option<IpFilterFile>,
    /// Allow or deny clients by country, region or city (needs geoip).
    #[serde(default)]
    pub geofence: Option<GeofenceFile>,
    /// Reject automated clients by User-Agent.
    #[serde(default)]
    pub bot_detector: Option<BotDetectorFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpFilterFile {
    /// allow: only the listed addresses pass; deny: the listed addresses are rejected.
    #[schemars(extend("enum" = ["allow", "deny", null]))]
    pub mode: String,
    /// IPv4/IPv6 CIDRs or bare IPs.
    pub cidrs: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeofenceFile {
    /// ISO 3166-1 alpha-2 codes that pass (case-insensitive).
    #[serde(default)]
    pub allow_countries: Vec<String>,
    /// ISO 3166-1 alpha-2 codes rejected (case-insensitive).
    #[serde(default)]
    pub deny_countries: Vec<String>,
    /// ISO 3166-2 codes (e.g. US-CA) that pass; needs a City database.
    #[serde(default)]
    pub allow_regions: Vec<String>,
    /// ISO 3166-2 codes rejected; needs a City database.
    #[serde(default)]
    pub deny_regions: Vec<String>,
    /// City names (English) or GeoNames ids that pass; needs a City database.
    #[serde(default)]
    pub allow_cities: Vec<String>,
    /// City names (English) or GeoNames ids rejected; needs a City database.
    #[serde(default)]
    pub deny_cities: Vec<String>,
    /// What happens to addresses the database does not know (default allow).
    #[serde(default)]
    #[schemars(extend("enum" = ["allow", "deny", null]))]
    pub unknown: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BotDetectorFile {
    /// Exact User-Agents that always pass.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Exact User-Agents that are always rejected.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Regexes (Rust syntax); a match anywhere in the User-Agent rejects.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// A missing or empty User-Agent is a bot (default false).
    #[serde(default)]
    pub empty_user_agent_is_bot: Option<bool>,
    /// Verdicts cached per User-Agent (default 10000; 0 = off).
    #[serde(default)]
    pub cache_size: Option<usize>,
}

// ---- typed config ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpConfig {
    pub trusted_proxies: Vec<Cidr>,
    /// Lower-case header names, in the order they are tried.
    pub headers: Vec<String>,
}

pub const DEFAULT_CLIENT_IP_HEADERS: [&str; 2] = ["x-forwarded-for", "x-real-ip"];

impl Default for ClientIpConfig {
    fn default() -> Self {
        ClientIpConfig {
            trusted_proxies: Vec::new(),
            headers: DEFAULT_CLIENT_IP_HEADERS.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoipConfig {
    pub database: PathBuf,
    pub forward: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilterConfig {
    pub mode: Mode,
    pub cidrs: Vec<Cidr>,
}

/// One `security` block (service-wide or an endpoint's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    pub ip_filter: Option<IpFilterConfig>,
    pub geofence: Option<GeofenceConfig>,
    pub bot_detector: Option<BotConfig>,
}

impl SecurityConfig {
    pub fn is_empty(&self) -> bool {
        self.ip_filter.is_none() && self.geofence.is_none() && self.bot_detector.is_none()
    }
}

// ---- validation --------------------------------------------------------------------------

fn err(errs: &mut Vec<ConfigError>, path: String, msg: impl Into<String>) {
    errs.push(ConfigError::new(path, msg));
}

pub fn client_ip(f: Option<&ClientIpFile>, errs: &mut Vec<ConfigError>) -> ClientIpConfig {
    let Some(f) = f else {
        return ClientIpConfig::default();
    };
    let trusted_proxies = cidrs("client_ip.trusted_proxies", &f.trusted_proxies, errs);
    let headers = match &f.headers {
        None => ClientIpConfig::default().headers,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => Some(n.as_str().to_string()),
                Err(_) => {
                    err(
                        errs,
                        format!("client_ip.headers[{i}]"),
                        format!("{h:?} is not a header name"),
                    );
                    None
                }
            })
            .collect(),
    };
    ClientIpConfig {
        trusted_proxies,
        headers,
    }
}

pub fn geoip(f: Option<&GeoipFile>, errs: &mut Vec<ConfigError>) -> Option<GeoipConfig> {
    let f = f?;
    if f.database.trim().is_empty() {
        err(errs, "geoip.database".into(), "must name a .mmdb file");
    }
    Some(GeoipConfig {
        database: PathBuf::from(&f.database),
        forward: f.forward.unwrap_or(false),
    })
}

pub(crate) fn cidrs(path: &str, list: &[String], errs: &mut Vec<ConfigError>) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| match Cidr::parse(s) {
            Ok(c) => Some(c),
            Err(m) => {
                err(errs, format!("{path}[{i}]"), m);
                None
            }
        })
        .collect()
}

/// Validates a `security` block found at `path` (`security` or `endpoints[2].security`).
/// `has_geoip` says whether `geoip.database` is configured.
pub fn security(
    path: &str,
    f: Option<&SecurityFile>,
    has_geoip: bool,
    errs: &mut Vec<ConfigError>,
) -> SecurityConfig {
    let Some(f) = f else {
        return SecurityConfig::default();
    };
    let ip_filter = f.ip_filter.as_ref().map(|ipf| {
        let p = format!("{path}.ip_filter");
        let mode = match ipf.mode.as_str() {
            "allow" => Mode::Allow,
            "deny" => Mode::Deny,
            other => {
                err(
                    errs,
                    format!("{p}.mode"),
                    format!("unknown mode {other:?} (expected allow or deny)"),
                );
                Mode::Deny
            }
        };
        IpFilterConfig {
            mode,
            cidrs: cidrs(&format!("{p}.cidrs"), &ipf.cidrs, errs),
        }
    });
    let geofence = f
        .geofence
        .as_ref()
        .map(|g| geofence(&format!("{path}.geofence"), g, has_geoip, errs));
    let bot_detector = f
        .bot_detector
        .as_ref()
        .map(|b| bot(&format!("{path}.bot_detector"), b, errs));
    SecurityConfig {
        ip_filter,
        geofence,
        bot_detector,
    }
}

fn countries(path: &str, list: &[String], errs: &mut Vec<ConfigError>) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let t = c.trim();
            if t.len() == 2 && t.bytes().all(|b| b.is_ascii_alphabetic()) {
                Some(t.to_ascii_uppercase())
            } else {
                err(
                    errs,
                    format!("{path}[{i}]"),
                    format!("{c:?} is not an ISO 3166-1 alpha-2 country code (e.g. DE, US)"),
                );
                None
            }
        })
        .collect()
}

fn regions(path: &str, list: &[String], errs: &mut Vec<ConfigError>) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let t = r.trim();
            let ok = match t.split_once('-') {
                Some((c, s)) => {
                    c.len() == 2
                        && c.bytes().all(|b| b.is_ascii_alphabetic())
                        && (1..=3).contains(&s.len())
                        && s.bytes().all(|b| b.is_ascii_alphanumeric())
                }
                None => false,
            };
            if ok {
                Some(t.to_ascii_uppercase())
            } else {
                err(
                    errs,
                    format!("{path}[{i}]"),
                    format!("{r:?} is not an ISO 3166-2 region code (e.g. US-CA, DE-BY)"),
                );
                None
            }
        })
        .collect()
}

fn cities(path: &str, list: &[String], errs: &mut Vec<ConfigError>) -> Vec<CityRef> {
    list.iter()
        .enumerate()
        .filter_map(|(i, c)| {
            if c.trim().is_empty() {
                err(
                    errs,
                    format!("{path}[{i}]"),
                    "must be a city's English name or GeoNames id",
                );
                None
            } else {
                Some(CityRef::parse(c))
            }
        })
        .collect()
}

fn geofence(
    p: &str,
    g: &GeofenceFile,
    has_geoip: bool,
    errs: &mut Vec<ConfigError>,
) -> GeofenceConfig {
    if !has_geoip {
        err(
            errs,
            p.to_string(),
            "needs a GeoIP database: set geoip.database (a MaxMind .mmdb file)",
        );
    }
    let unknown_allows = match g.unknown.as_deref() {
        None | Some("allow") => true,
        Some("deny") => false,
        Some(other) => {
            err(
                errs,
                format!("{p}.unknown"),
                format!("unknown value {other:?} (expected allow or deny)"),
            );
            true
        }
    };
    GeofenceConfig {
        allow_countries: countries(&format!("{p}.allow_countries"), &g.allow_countries, errs),
        deny_countries: countries(&format!("{p}.deny_countries"), &g.deny_countries, errs),
        allow_regions: regions(&format!("{p}.allow_regions"), &g.allow_regions, errs),
        deny_regions: regions(&format!("{p}.deny_regions"), &g.deny_regions, errs),
        allow_cities: cities(&format!("{p}.allow_cities"), &g.allow_cities, errs),
        deny_cities: cities(&format!("{p}.deny_cities"), &g.deny_cities, errs),
        unknown_allows,
    }
}

fn bot(p: &str, b: &BotDetectorFile, errs: &mut Vec<ConfigError>) -> BotConfig {
    for (i, pat) in b.patterns.iter().enumerate() {
        if let Err(m) = check_pattern(pat) {
            err(
                errs,
                format!("{p}.patterns[{i}]"),
                format!("invalid regex {pat:?}: {m}"),
            );
        }
    }
    for (key, list) in [("allow", &b.allow), ("deny", &b.deny)] {
        for (i, ua) in list.iter().enumerate() {
            if ua.is_empty() {
                err(
                    errs,
                    format!("{p}.{key}[{i}]"),
                    "must not be empty (use empty_user_agent_is_bot)",
                );
            }
        }
    }
    BotConfig {
        allow: b.allow.clone(),
        deny: b.deny.clone(),
        patterns: b.patterns.clone(),
        empty_user_agent_is_bot: b.empty_user_agent_is_bot.unwrap_or(false),
        cache_size: b.cache_size.unwrap_or(DEFAULT_CACHE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = r#"
version: 1
server: { listen: ["127.0.0.1:0"] }
backends:
  a: { discovery: { static: ["127.0.0.1:9001"] } }
"#;

    fn errors(extra: &str) -> Vec<String> {
        match parse(&format!("{BASE}{extra}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn full_shape_parses() {
        let cfg = parse(&format!(
            "{BASE}{}",
            r#"
client_ip: { trusted_proxies: ["127.0.0.1/32", "::1"], headers: [X-Forwarded-For] }
geoip: { database: geoip-fixtures/cities.mmdb, forward: true }
security:
  ip_filter: { mode: deny, cidrs: ["203.0.113.0/24", "2001:db8::/32", "192.0.2.1"] }
  geofence: { deny_countries: [kp], allow_regions: [us-ca], deny_cities: [London, "2950159"], unknown: deny }
  bot_detector: { allow: [a], deny: [b], patterns: ["(?i)scrapy"], empty_user_agent_is_bot: true, cache_size: 5 }
endpoints:
  - path: /x
    backend: a
    security: { bot_detector: { patterns: ["(?i)python-requests"] } }
"#
        ))
        .unwrap();
        assert_eq!(cfg.client_ip.headers, vec!["x-forwarded-for"]);
        assert_eq!(cfg.client_ip.trusted_proxies.len(), 2);
        assert!(cfg.geoip.as_ref().unwrap().forward);
        let g = cfg.security.geofence.as_ref().unwrap();
        assert_eq!(g.deny_countries, vec!["KP"]);
        assert_eq!(g.allow_regions, vec!["US-CA"]);
        assert!(!g.unknown_allows);
        assert_eq!(cfg.security.ip_filter.as_ref().unwrap().cidrs.len(), 3);
        assert_eq!(cfg.security.bot_detector.as_ref().unwrap().cache_size, 5);
        assert!(cfg.endpoints[0].security.bot_detector.is_some());
        assert!(cfg.endpoints[0].security.ip_filter.is_none());
    }

    #[test]
    fn errors_name_their_path() {
        let e = errors(
            r#"
security:
  ip_filter: { mode: block, cidrs: ["10.0.0.0/33", "nope"] }
  geofence: { deny_countries: [KPX], allow_regions: [California], unknown: maybe }
  bot_detector: { patterns: ["a", "b", "c", "(unclosed"], deny: [""] }
client_ip: { trusted_proxies: ["x"], headers: ["bad header"] }
"#,
        );
        let want = [
            "security.ip_filter.mode: unknown mode \"block\"",
            "security.ip_filter.cidrs[0]:",
            "security.ip_filter.cidrs[1]:",
            "security.geofence: needs a GeoIP database",
            "security.geofence.unknown:",
            "security.geofence.deny_countries[0]:",
            "security.geofence.allow_regions[0]:",
            "security.bot_detector.patterns[3]: invalid regex",
            "security.bot_detector.deny[0]:",
            "client_ip.trusted_proxies[0]:",
            "client_ip.headers[0]:",
        ];
        for w in want {
            assert!(
                e.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
        let e = errors("security: { geofence: { bogus: 1 } }\n");
        assert!(e[0].contains("unknown field `bogus`"), "{e:?}");
        let e = errors(
            "endpoints:\n  - { path: /x, backend: a, security: { geofence: { deny_countries: [KP] } } }\n",
        );
        assert!(
            e[0].starts_with("endpoints[0].security.geofence: needs"),
            "{e:?}"
        );
    }
}
