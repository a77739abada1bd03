//! The edge keys: `server.tls` (HTTPS listeners and their certificates), `server.max_body_size`
//! and a backend's `tls` (HTTPS upstreams). File shapes, typed values and their validation.
//!
//! Certificates and CA files are read during validation, so `gatehouse check` and a SIGHUP
//! reload report an unreadable or mismatched file with its YAML path
//! (`server.tls.certificates[1].key: ...`). The loaded material lives in the typed config;
//! its equality compares the file contents, so a renewed certificate is a changed config.

use super::ConfigError;
use crate::tls::{CaCerts, CertSet};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `server.tls` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub listen: Vec<String>,
    pub certificates: Vec<CertFile>,
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub http2: Option<bool>,
    #[serde(default)]
    pub redirect_http: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: String,
    pub key: String,
}

/// A backend's `tls` as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsFile {
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub verify: Option<bool>,
    #[serde(default)]
    pub ca: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// The HTTPS listeners. Only `certificates` (the set served by SNI) and `redirect_http` take
/// effect on reload; the listeners, `min_version` and `http2` are fixed at start.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub certs: Arc<CertSet>,
    pub min_version: TlsVersion,
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
        http2: f.http2.unwrap_or(true),
        redirect_http: f.redirect_http.unwrap_or(false),
    })
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
