//! Config of the request filters: `client_ip`, `geoip`, and `security` blocks (service-wide
//! and per endpoint). The serde shapes and their validation into typed values live here, so
//! `file.rs`/`validate.rs` only hook them in.

use super::ConfigError;
use crate::filters::bot::{
    check_pattern, BotConfig, VerifiedBot, VerifyConfig, DEFAULT_CACHE_SIZE,
    DEFAULT_VERIFY_TIMEOUT, DEFAULT_VERIFY_TTL,
};
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
    /// A file of trusted proxies, one CIDR or address per line, # comments; re-read on SIGHUP
    /// and when it changes.
    #[serde(default)]
    pub trusted_proxies_file: Option<String>,
    /// Headers holding the client address, tried in order (default [X-Forwarded-For, X-Real-
    /// IP]).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoipFile {
    /// Path of a MaxMind DB (GeoIP2/GeoLite2 Country or City) for geofence countries, regions
    /// and cities (optional when asn_database or anonymous_database is set).
    #[serde(default)]
    pub database: Option<String>,
    /// Path of a GeoLite2-ASN database, for allow_asns/deny_asns and X-Geo-ASN.
    #[serde(default)]
    pub asn_database: Option<String>,
    /// Path of a GeoIP2-Anonymous-IP database, for deny_anonymous.
    #[serde(default)]
    pub anonymous_database: Option<String>,
    /// Add X-Geo-Country, X-Geo-Region, X-Geo-City (and X-Geo-ASN) to upstream requests
    /// (default false).
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
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// A file of CIDRs or addresses, one per line, # comments; re-read on SIGHUP and when it changes.
    #[serde(default)]
    pub cidrs_file: Option<String>,
    /// Decide, but let refused requests pass; counted in gatehouse_would_reject_total (default false).
    #[serde(default)]
    pub dry_run: Option<bool>,
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
    /// Autonomous system numbers admitted (needs geoip.asn_database).
    #[serde(default)]
    pub allow_asns: Vec<u32>,
    /// Autonomous system numbers refused (needs geoip.asn_database).
    #[serde(default)]
    pub deny_asns: Vec<u32>,
    /// Anonymous networks refused: vpn, tor, hosting, public_proxy, residential_proxy, any (needs geoip.anonymous_database).
    #[serde(default)]
    pub deny_anonymous: Vec<String>,
    /// Decide, but let refused requests pass; counted in gatehouse_would_reject_total (default false).
    #[serde(default)]
    pub dry_run: Option<bool>,
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
    /// Decide, but let refused requests pass; counted in gatehouse_would_reject_total (default false).
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Crawlers verified by forward-confirmed reverse DNS or published ranges.
    #[serde(default)]
    pub verify: Vec<VerifyFile>,
    /// What a failed verification lookup decides: allow or deny (default deny).
    #[serde(default)]
    pub on_dns_failure: Option<String>,
    /// How long a verification verdict is cached per address (default 1h).
    #[serde(default)]
    pub verify_cache_ttl: Option<super::file::Dur>,
    /// Bound of one verification lookup (default 2s).
    #[serde(default)]
    pub verify_timeout: Option<super::file::Dur>,
}

/// One `bot_detector.verify` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyFile {
    /// The crawler's name.
    pub name: String,
    /// Regex of the User-Agents that claim to be this crawler.
    pub user_agent: String,
    /// Domains its reverse DNS names must end in.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Address ranges its operator publishes.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// A file of CIDRs or addresses, one per line, # comments; re-read on SIGHUP and when it changes.
    #[serde(default)]
    pub cidrs_file: Option<String>,
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
    /// Country or City layout: the location rules of a geofence.
    pub database: Option<PathBuf>,
    /// GeoLite2-ASN layout: `allow_asns`, `deny_asns`, `X-Geo-ASN`.
    pub asn_database: Option<PathBuf>,
    /// GeoIP2-Anonymous-IP layout: `deny_anonymous`.
    pub anonymous_database: Option<PathBuf>,
    pub forward: bool,
}

/// Which GeoIP databases a config has, for the validation of its geofences.
#[derive(Debug, Clone, Copy, Default)]
pub struct GeoDbs {
    pub location: bool,
    pub asn: bool,
    pub anonymous: bool,
}

impl GeoDbs {
    pub fn of(g: Option<&GeoipConfig>) -> GeoDbs {
        GeoDbs {
            location: g.is_some_and(|g| g.database.is_some()),
            asn: g.is_some_and(|g| g.asn_database.is_some()),
            anonymous: g.is_some_and(|g| g.anonymous_database.is_some()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFilterConfig {
    pub mode: Mode,
    /// Address ranges its operator publishes.
    pub cidrs: Vec<Cidr>,
    /// Decide and count, but let the request pass.
    pub dry_run: bool,
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
    let mut trusted_proxies = cidrs("client_ip.trusted_proxies", &f.trusted_proxies, errs);
    if let Some(file) = &f.trusted_proxies_file {
        trusted_proxies.extend(cidrs_file("client_ip.trusted_proxies_file", file, errs));
    }
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
    let mut file = |key: &str, v: &Option<String>| {
        let v = v.as_ref()?;
        if v.trim().is_empty() {
            err(errs, format!("geoip.{key}"), "must name a .mmdb file");
        }
        Some(PathBuf::from(v))
    };
    let database = file("database", &f.database);
    let asn_database = file("asn_database", &f.asn_database);
    let anonymous_database = file("anonymous_database", &f.anonymous_database);
    if f.database.is_none() && f.asn_database.is_none() && f.anonymous_database.is_none() {
        err(
            errs,
            "geoip.database".into(),
            "must name a .mmdb file (or give asn_database or anonymous_database)",
        );
    }
    Some(GeoipConfig {
        database,
        asn_database,
        anonymous_database,
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

/// Reads a list file at YAML path `path`: one CIDR or address per line; blank lines and `#`
/// comments (whole-line or trailing) are skipped. A bad line is an error naming the file and
/// the line.
pub(crate) fn cidrs_file(path: &str, file: &str, errs: &mut Vec<ConfigError>) -> Vec<Cidr> {
    match crate::filters::ip::read_list(std::path::Path::new(file)) {
        Ok(list) => list,
        Err(m) => {
            err(errs, path.to_string(), m);
            Vec::new()
        }
    }
}

/// Validates a `security` block found at `path` (`security` or `endpoints[2].security`).
/// `dbs` says which GeoIP databases are configured.
pub fn security(
    path: &str,
    f: Option<&SecurityFile>,
    dbs: GeoDbs,
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
        let mut list = cidrs(&format!("{p}.cidrs"), &ipf.cidrs, errs);
        match &ipf.cidrs_file {
            Some(file) => list.extend(cidrs_file(&format!("{p}.cidrs_file"), file, errs)),
            None if ipf.cidrs.is_empty() => {
                err(errs, format!("{p}.cidrs"), "needs cidrs or cidrs_file");
            }
            None => {}
        }
        IpFilterConfig {
            mode,
            cidrs: list,
            dry_run: ipf.dry_run.unwrap_or(false),
        }
    });
    let geofence = f
        .geofence
        .as_ref()
        .map(|g| geofence(&format!("{path}.geofence"), g, dbs, errs));
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

fn geofence(p: &str, g: &GeofenceFile, dbs: GeoDbs, errs: &mut Vec<ConfigError>) -> GeofenceConfig {
    let location_rules = !(g.allow_countries.is_empty()
        && g.deny_countries.is_empty()
        && g.allow_regions.is_empty()
        && g.deny_regions.is_empty()
        && g.allow_cities.is_empty()
        && g.deny_cities.is_empty());
    let asn_rules = !(g.allow_asns.is_empty() && g.deny_asns.is_empty());
    let anonymous_rules = !g.deny_anonymous.is_empty();
    // A geofence of location rules (or of none at all) needs the location database.
    if (location_rules || !(asn_rules || anonymous_rules)) && !dbs.location {
        err(
            errs,
            p.to_string(),
            "needs a GeoIP database: set geoip.database (a MaxMind .mmdb file)",
        );
    }
    if asn_rules && !dbs.asn {
        err(
            errs,
            p.to_string(),
            "allow_asns and deny_asns need geoip.asn_database (a GeoLite2-ASN .mmdb file)",
        );
    }
    if anonymous_rules && !dbs.anonymous {
        err(
            errs,
            p.to_string(),
            "deny_anonymous needs geoip.anonymous_database (a GeoIP2-Anonymous-IP .mmdb file)",
        );
    }
    let mut deny_anonymous = 0u8;
    for (i, kind) in g.deny_anonymous.iter().enumerate() {
        match crate::filters::geo::anonymous_kind(kind) {
            Some(bit) => deny_anonymous |= bit,
            None => err(
                errs,
                format!("{p}.deny_anonymous[{i}]"),
                format!(
                    "unknown kind {kind:?} (expected vpn, tor, hosting, public_proxy, residential_proxy or any)"
                ),
            ),
        }
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
        allow_asns: g.allow_asns.clone(),
        deny_asns: g.deny_asns.clone(),
        deny_anonymous,
        dry_run: g.dry_run.unwrap_or(false),
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
    let mut bots = Vec::with_capacity(b.verify.len());
    for (i, v) in b.verify.iter().enumerate() {
        let vp = format!("{p}.verify[{i}]");
        if v.name.trim().is_empty() {
            err(errs, format!("{vp}.name"), "must name the crawler");
        }
        if let Err(m) = check_pattern(&v.user_agent) {
            err(
                errs,
                format!("{vp}.user_agent"),
                format!("invalid regex {:?}: {m}", v.user_agent),
            );
        }
        let mut list = cidrs(&format!("{vp}.cidrs"), &v.cidrs, errs);
        if let Some(file) = &v.cidrs_file {
            list.extend(cidrs_file(&format!("{vp}.cidrs_file"), file, errs));
        }
        let domains: Vec<String> = v
            .domains
            .iter()
            .map(|d| d.trim().trim_matches('.').to_ascii_lowercase())
            .collect();
        for (j, d) in domains.iter().enumerate() {
            if d.is_empty() || !d.contains('.') {
                err(
                    errs,
                    format!("{vp}.domains[{j}]"),
                    format!("{:?} is not a domain (e.g. googlebot.com)", v.domains[j]),
                );
            }
        }
        if domains.is_empty() && v.cidrs.is_empty() && v.cidrs_file.is_none() {
            err(errs, vp.clone(), "needs domains, cidrs or cidrs_file");
        }
        bots.push(VerifiedBot {
            name: v.name.clone(),
            user_agent: v.user_agent.clone(),
            domains,
            cidrs: list,
        });
    }
    let dns_failure_allows = match b.on_dns_failure.as_deref() {
        None | Some("deny") => false,
        Some("allow") => true,
        Some(other) => {
            err(
                errs,
                format!("{p}.on_dns_failure"),
                format!("unknown value {other:?} (expected allow or deny)"),
            );
            false
        }
    };
    let timeout = b
        .verify_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_VERIFY_TIMEOUT);
    if timeout.is_zero() {
        err(errs, format!("{p}.verify_timeout"), "must be > 0");
    }
    BotConfig {
        verify: VerifyConfig {
            bots,
            dns_failure_allows,
            ttl: b
                .verify_cache_ttl
                .map(|d| d.0)
                .unwrap_or(DEFAULT_VERIFY_TTL),
            timeout,
        },
        allow: b.allow.clone(),
        deny: b.deny.clone(),
        patterns: b.patterns.clone(),
        empty_user_agent_is_bot: b.empty_user_agent_is_bot.unwrap_or(false),
        cache_size: b.cache_size.unwrap_or(DEFAULT_CACHE_SIZE),
        dry_run: b.dry_run.unwrap_or(false),
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
        let e = errors(
            r#"
security:
  bot_detector:
    on_dns_failure: maybe
    verify_timeout: 0s
    verify:
      - { name: "", user_agent: "(x", domains: [com] }
      - { name: b, user_agent: b }
"#,
        );
        let want = [
            "security.bot_detector.verify[0].name:",
            "security.bot_detector.verify[0].user_agent: invalid regex",
            "security.bot_detector.verify[0].domains[0]: \"com\" is not a domain",
            "security.bot_detector.verify[1]: needs domains, cidrs or cidrs_file",
            "security.bot_detector.on_dns_failure: unknown value",
            "security.bot_detector.verify_timeout: must be > 0",
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
