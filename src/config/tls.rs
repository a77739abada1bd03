//! The edge keys: `server.tls` (HTTPS listeners and their certificates), `server.max_body_size`
//! and a backend's `tls` (HTTPS upstreams). File shapes, typed values and their validation.
//!
//! Certificates and CA files are read during validation, so `gatehouse check` and a SIGHUP
//! reload report an unreadable or mismatched file with its YAML path
//! (`server.tls.certificates[1].key: ...`). The loaded material lives in the typed config;
//! its equality compares the file contents, so a renewed certificate is a changed config.

use super::ConfigError;
use crate::tls::{kx_group, CaCerts, CertSet, KxGroup};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `server.tls` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// HTTPS listeners, as ip:port. Fixed at start.
    pub listen: Vec<String>,
    /// PEM certificates and keys, picked per handshake by SNI; the first is the default.
    pub certificates: Vec<CertFile>,
    /// Lowest TLS version accepted (default "1.2"). Fixed at start.
    #[serde(default)]
    #[schemars(extend("enum" = ["1.2", "1.3", null]))]
    pub min_version: Option<String>,
    /// Key-exchange groups, most preferred first, by name (X25519MLKEM768, X25519, P-256,
    /// P-384, ...; default [X25519MLKEM768, X25519, P-256, P-384]). Fixed at start.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Offer HTTP/2 by ALPN (default true). Fixed at start.
    #[serde(default)]
    pub http2: Option<bool>,
    /// Plain listeners answer 308 to the https URL (default false).
    #[serde(default)]
    pub redirect_http: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    /// PEM certificate file: the leaf first, then its chain.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
}

/// A backend's `tls` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsFile {
    /// Name sent as SNI and verified (default host_header).
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the certificate chain and name (default true).
    #[serde(default)]
    pub verify: Option<bool>,
    /// PEM bundle trusted instead of the system store.
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// The key-exchange groups offered when `server.tls.groups` is not set, most preferred first:
/// the hybrid post-quantum X25519MLKEM768, then X25519, P-256 and P-384 for clients without it
/// (Mozilla's intermediate recommendation).
pub const DEFAULT_GROUPS: [&str; 4] = ["X25519MLKEM768", "X25519", "P-256", "P-384"];

/// The HTTPS listeners. Only `certificates` (the set served by SNI) and `redirect_http` take
/// effect on reload; the listeners, `min_version`, `groups` and `http2` are fixed at start.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub certs: Arc<CertSet>,
    pub min_version: TlsVersion,
    /// Key-exchange groups, most preferred first.
    pub groups: Vec<KxGroup>,
    pub http2: bool,
    pub redirect_http: bool,
}

impl TlsConfig {
    /// The port of the first HTTPS listener: where `redirect_http` sends plain requests.
    pub fn https_port(&self) -> u16 {
        self.listen.first().map(|a| a.port()).unwrap_or(443)
    }
}

/// An HTTPS upstream: the name sent as SNI and verified, and an optional private CA.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendTls {
    pub sni: String,
    pub verify: bool,
    pub ca: Option<Arc<CaCerts>>,
}

fn err(errs: &mut Vec<ConfigError>, path: impl Into<String>, msg: impl Into<String>) {
    errs.push(ConfigError::new(path, msg));
}

/// Validates `server.tls` and loads its certificates.
pub fn server_tls(f: &TlsFile, errs: &mut Vec<ConfigError>) -> Option<TlsConfig> {
    let before = errs.len();
    if f.listen.is_empty() {
        err(errs, "server.tls.listen", "needs at least one address");
    }
    let listen: Vec<SocketAddr> = f
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match a.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                err(
                    errs,
                    format!("server.tls.listen[{i}]"),
                    format!("{a:?} is not an address as ip:port (e.g. 0.0.0.0:8443)"),
                );
                None
            }
        })
        .collect();
    let min_version = match f.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => {
            err(
                errs,
                "server.tls.min_version",
                format!("unsupported TLS version {other:?} (expected \"1.2\" or \"1.3\")"),
            );
            TlsVersion::V1_2
        }
    };
    let groups = match &f.groups {
        Some(list) => key_exchange_groups(list, errs),
        None => DEFAULT_GROUPS.into_iter().filter_map(kx_group).collect(),
    };
    if f.certificates.is_empty() {
        err(
            errs,
            "server.tls.certificates",
            "needs at least one certificate (the first is the default)",
        );
    }
    let files: Vec<(PathBuf, PathBuf)> = f
        .certificates
        .iter()
        .map(|c| (PathBuf::from(&c.cert), PathBuf::from(&c.key)))
        .collect();
    let certs = match CertSet::load(&files) {
        Ok(set) => Some(set),
        Err(list) => {
            for (i, which, msg) in list {
                err(errs, format!("server.tls.certificates[{i}].{which}"), msg);
            }
            None
        }
    };
    if errs.len() > before {
        return None;
    }
    Some(TlsConfig {
        listen,
        certs: Arc::new(certs?),
        min_version,
        groups,
        http2: f.http2.unwrap_or(true),
        redirect_http: f.redirect_http.unwrap_or(false),
    })
}

/// Validates `server.tls.groups`: each entry one group name that this build offers, none
/// twice.
fn key_exchange_groups(list: &[String], errs: &mut Vec<ConfigError>) -> Vec<KxGroup> {
    if list.is_empty() {
        err(
            errs,
            "server.tls.groups",
            "needs at least one key-exchange group (or leave it out for the default)",
        );
    }
    let mut seen: Vec<KxGroup> = Vec::new();
    for (i, g) in list.iter().enumerate() {
        let p = format!("server.tls.groups[{i}]");
        let plain = !g.is_empty()
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            err(
                errs,
                p,
                format!("{g:?} is not a group name (one name per entry, e.g. X25519)"),
            );
        } else if g.to_ascii_uppercase().starts_with("DEFAULT") {
            err(
                errs,
                p,
                format!("{g:?} is a list name, not a group: name the groups one by one"),
            );
        } else if let Some(group) = kx_group(g) {
            if seen.contains(&group) {
                err(errs, p, format!("{g:?} is listed twice"));
            } else {
                seen.push(group);
            }
        } else {
            err(
                errs,
                p,
                format!(
                    "unknown key-exchange group {g:?}: this build offers X25519MLKEM768, \
                     SecP256r1MLKEM768, MLKEM768, MLKEM1024, X25519, P-256 (secp256r1), \
                     P-384 (secp384r1)"
                ),
            );
        }
    }
    seen
}

/// Validates a backend's `tls` and loads its CA file.
pub fn backend_tls(
    p: &str,
    f: &BackendTlsFile,
    host_header: Option<&str>,
    errs: &mut Vec<ConfigError>,
) -> Option<BackendTls> {
    let verify = f.verify.unwrap_or(true);
    let sni = f
        .sni
        .clone()
        .or_else(|| host_header.map(|h| h.split(':').next().unwrap_or(h).to_string()))
        .unwrap_or_default();
    if sni.is_empty() && verify {
        err(
            errs,
            format!("{p}.tls.sni"),
            "needs the upstream's name to verify its certificate (or set verify: false)",
        );
    }
    let ca = match &f.ca {
        Some(path) => match CaCerts::load(PathBuf::from(path)) {
            Ok(ca) => Some(Arc::new(ca)),
            Err(msg) => {
                err(errs, format!("{p}.tls.ca"), msg);
                None
            }
        },
        None => None,
    };
    Some(BackendTls { sni, verify, ca })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(list: &[&str]) -> (Vec<KxGroup>, Vec<String>) {
        let mut errs = Vec::new();
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        let ok = key_exchange_groups(&list, &mut errs);
        (ok, errs.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn the_build_offers_the_default_groups() {
        for g in DEFAULT_GROUPS {
            assert!(kx_group(g).is_some(), "{g}");
        }
        let all: Vec<KxGroup> = DEFAULT_GROUPS.into_iter().filter_map(kx_group).collect();
        assert_eq!(all.len(), DEFAULT_GROUPS.len());
        assert_eq!(groups(&DEFAULT_GROUPS), (all, vec![]));
    }

    #[test]
    fn bad_groups_are_named_by_their_index() {
        let (ok, errs) = groups(&["X25519", "NOPE-1", "P-384:P-256", "x25519", "DEFAULT", ""]);
        assert_eq!(ok, [kx_group("X25519").unwrap()]);
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs[0].starts_with("server.tls.groups[1]: unknown key-exchange group \"NOPE-1\""));
        assert!(errs[1].starts_with("server.tls.groups[2]: \"P-384:P-256\" is not a group name"));
        assert!(errs[2].starts_with("server.tls.groups[3]: \"x25519\" is listed twice"));
        assert!(errs[3].starts_with("server.tls.groups[4]: \"DEFAULT\" is a list name"));
        assert!(errs[4].starts_with("server.tls.groups[5]: \"\" is not a group name"));
        // Two names of one group are one group.
        let (ok, errs) = groups(&["P-256", "secp256r1"]);
        assert_eq!(ok.len(), 1);
        assert!(errs[0].starts_with("server.tls.groups[1]: \"secp256r1\" is listed twice"));
        let (_, errs) = groups(&[]);
        assert!(
            errs[0].starts_with("server.tls.groups: needs at least one"),
            "{errs:?}"
        );
    }
}
