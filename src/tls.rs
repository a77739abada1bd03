//! TLS at the edge: the certificate set served by SNI, the handshake callback that picks from
//! it, the listener settings, and the CA bundles of HTTPS upstreams.
//!
//! The set is part of the compiled config (`server.tls.certs`), so a SIGHUP reload that reads
//! renewed files swaps it with the rest of the runtime: the callback loads the live runtime
//! on every handshake, so new handshakes get the new certificate while open connections keep
//! the one they negotiated. Built on Pingora's `openssl` feature (vendored OpenSSL), whose
//! `TlsAccept::certificate_callback` runs after the ClientHello.

use crate::config::tls::{TlsConfig, TlsVersion};
use crate::runtime::Shared;
use async_trait::async_trait;
use log::warn;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{NameType, SslContext, SslMethod, SslMode, SslVersion};
use pingora::tls::x509::X509;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One certificate: the leaf, its chain, its key and the names it serves.
pub struct CertEntry {
    pub names: Vec<String>,
    pub leaf: X509,
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// The files as read: equality of the set compares them.
    raw: (Vec<u8>, Vec<u8>),
    files: (PathBuf, PathBuf),
}

/// The certificates of the HTTPS listeners, indexed by name. The first one is the default.
pub struct CertSet {
    entries: Vec<CertEntry>,
    /// Exact names (lower case) to entry index.
    exact: HashMap<String, usize>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

/// Which file of a `certificates` item failed: `(index, "cert" | "key", message)`.
pub type CertError = (usize, &'static str, String);

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The DNS names of a certificate: its SAN DNS entries, else its subject CN (lower case).
pub fn cert_names(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert
            .subject_name()
            .entries_by_nid(pingora::tls::nid::Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
            .collect();
    }
    names
}

impl CertEntry {
    /// Reads a PEM certificate (leaf first, then its chain) and its PEM private key, and
    /// checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<CertEntry, (&'static str, String)> {
        let cert_pem = read(cert).map_err(|m| ("cert", m))?;
        let mut certs = X509::stack_from_pem(&cert_pem)
            .map_err(|e| {
                (
                    "cert",
                    format!("{} is not a PEM certificate: {e}", cert.display()),
                )
            })?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| ("cert", format!("{} holds no certificate", cert.display())))?;
        let chain: Vec<X509> = certs.collect();
        let key_pem = read(key).map_err(|m| ("key", m))?;
        let pkey = PKey::private_key_from_pem(&key_pem).map_err(|e| {
            (
                "key",
                format!("{} is not a PEM private key: {e}", key.display()),
            )
        })?;
        let matches = leaf
            .public_key()
            .map(|pubkey| pubkey.public_eq(&pkey))
            .unwrap_or(false);
        if !matches {
            return Err((
                "key",
                format!(
                    "{} does not match the certificate {}",
                    key.display(),
                    cert.display()
                ),
            ));
        }
        let names = cert_names(&leaf);
        if names.is_empty() {
            return Err((
                "cert",
                format!("{} names no host (no SAN DNS name, no CN)", cert.display()),
            ));
        }
        Ok(CertEntry {
            names,
            leaf,
            chain,
            key: pkey,
            raw: (cert_pem, key_pem),
            files: (cert.to_path_buf(), key.to_path_buf()),
        })
    }
}

impl CertSet {
    /// Loads every `(cert, key)` pair; reports each failing file.
    pub fn load(files: &[(PathBuf, PathBuf)]) -> Result<CertSet, Vec<CertError>> {
        let mut errs = Vec::new();
        let mut entries = Vec::with_capacity(files.len());
        for (i, (cert, key)) in files.iter().enumerate() {
            match CertEntry::load(cert, key) {
                Ok(e) => entries.push(e),
                Err((which, msg)) => errs.push((i, which, msg)),
            }
        }
        if errs.is_empty() {
            Ok(CertSet::new(entries))
        } else {
            Err(errs)
        }
    }

    /// Indexes the entries; on a name served by two certificates the first listed wins.
    pub fn new(entries: Vec<CertEntry>) -> CertSet {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for n in &e.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        CertSet {
            entries,
            exact,
            wildcard,
        }
    }

    pub fn entries(&self) -> &[CertEntry] {
        &self.entries
    }

    /// The certificate for a server name: exact name, then a wildcard one label up, then the
    /// default (first). `None` only for an empty set.
    pub fn pick(&self, sni: Option<&str>) -> Option<&CertEntry> {
        let idx = sni.and_then(|name| {
            let name = name.trim_end_matches('.');
            let lower;
            let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                lower = name.to_ascii_lowercase();
                lower.as_str()
            } else {
                name
            };
            self.exact.get(name).copied().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).copied()
            })
        });
        self.entries.get(idx.unwrap_or(0))
    }
}

impl PartialEq for CertSet {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|(a, b)| a.raw == b.raw && a.files == b.files)
    }
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|e| (e.files.0.display().to_string(), &e.names)),
            )
            .finish()
    }
}

/// A PEM bundle of CA certificates that an HTTPS upstream's certificate must chain to.
pub struct CaCerts {
    pub path: PathBuf,
    pub certs: std::sync::Arc<Box<[X509]>>,
    /// Hash of the bundle: Pingora's connection pool does not key on the CA, so peers with
    /// different CAs are kept apart by `group_key` (a connection verified against one CA is
    /// never reused for a backend that trusts another).
    pub fingerprint: u64,
    raw: Vec<u8>,
}

impl CaCerts {
    pub fn load(path: PathBuf) -> Result<CaCerts, String> {
        let raw = read(&path)?;
        let certs = X509::stack_from_pem(&raw)
            .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        raw.hash(&mut h);
        Ok(CaCerts {
            path,
            certs: std::sync::Arc::new(certs.into_boxed_slice()),
            fingerprint: h.finish(),
            raw,
        })
    }
}

impl PartialEq for CaCerts {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.raw == other.raw
    }
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaCerts({})", self.path.display())
    }
}

/// The handshake callback: picks the certificate for the ClientHello's server name from the
/// live runtime's set.
pub struct SniCallback {
    pub shared: Shared,
}

#[async_trait]
impl TlsAccept for SniCallback {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        use pingora::tls::ext;
        let rt = self.shared.load();
        let Some(tls) = rt.config.server.tls.as_ref() else {
            // TLS removed by a reload: the listener stays until restart, without a certificate.
            return;
        };
        let sni = ssl.servername(NameType::HOST_NAME);
        let Some(entry) = tls.certs.pick(sni) else {
            return;
        };
        let mut ok = ext::ssl_use_certificate(ssl, &entry.leaf).is_ok();
        for c in &entry.chain {
            ok &= ext::ssl_add_chain_cert(ssl, c).is_ok();
        }
        ok &= ext::ssl_use_private_key(ssl, &entry.key).is_ok();
        if !ok {
            warn!(
                "tls: cannot use the certificate {} for this handshake",
                entry.files.0.display()
            );
        }
    }
}

/// Whether this build's OpenSSL can offer the key-exchange group `name` (an OpenSSL name such
/// as `X25519MLKEM768`, `X25519` or `P-256`).
pub fn group_supported(name: &str) -> bool {
    SslContext::builder(SslMethod::tls()).is_ok_and(|mut b| b.set_groups_list(name).is_ok())
}

/// The OpenSSL group list for `groups`, most preferred first: each group is a preference level
/// of its own, so the first group in the list that the client supports is chosen, even when
/// the client sent a key share for a later one only (it is then asked for another share).
pub fn groups_list(groups: &[String]) -> String {
    groups.join("/")
}

/// The settings of the HTTPS listeners: Mozilla intermediate ciphers, `min_version`, the
/// key-exchange groups, ALPN, and the SNI callback. OpenSSL releases the read and write
/// buffers of idle connections (RELEASE_BUFFERS).
pub fn listener_settings(cfg: &TlsConfig, shared: Shared) -> pingora::Result<TlsSettings> {
    use pingora::{ErrorType, OrErr};
    let mut settings = TlsSettings::with_callbacks(Box::new(SniCallback { shared }))?;
    let min = match cfg.min_version {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    };
    settings
        .set_min_proto_version(Some(min))
        .or_err(ErrorType::InternalError, "set the minimum TLS version")?;
    settings
        .set_groups_list(&groups_list(&cfg.groups))
        .or_err(ErrorType::InternalError, "set the key-exchange groups")?;
    // Already set by the Mozilla profile; kept explicit, as the memory of idle connections
    // depends on it.
    settings.set_mode(SslMode::RELEASE_BUFFERS);
    if cfg.http2 {
        settings.enable_h2();
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str]) -> CertEntry {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let leaf = X509::from_pem(ck.cert.pem().as_bytes()).unwrap();
        let key = PKey::private_key_from_pem(ck.key_pair.serialize_pem().as_bytes()).unwrap();
        CertEntry {
            names: cert_names(&leaf),
            leaf,
            chain: Vec::new(),
            key,
            raw: (Vec::new(), Vec::new()),
            files: (PathBuf::from(names[0]), PathBuf::new()),
        }
    }

    fn picked(set: &CertSet, sni: Option<&str>) -> String {
        set.pick(sni).unwrap().files.0.display().to_string()
    }

    #[test]
    fn sni_prefers_exact_then_wildcard_then_default() {
        let set = CertSet::new(vec![
            entry(&["default.test"]),
            entry(&["*.example.com"]),
            entry(&["api.example.com", "Other.test"]),
        ]);
        assert_eq!(picked(&set, Some("api.example.com")), "api.example.com");
        assert_eq!(picked(&set, Some("API.Example.COM.")), "api.example.com");
        assert_eq!(picked(&set, Some("other.test")), "api.example.com");
        assert_eq!(picked(&set, Some("www.example.com")), "*.example.com");
        // A wildcard covers one label only.
        assert_eq!(picked(&set, Some("a.b.example.com")), "default.test");
        assert_eq!(picked(&set, Some("example.com")), "default.test");
        assert_eq!(picked(&set, Some("unknown.test")), "default.test");
        assert_eq!(picked(&set, None), "default.test");
    }

    #[test]
    fn names_come_from_san() {
        let e = entry(&["a.test", "*.b.test"]);
        assert_eq!(e.names, vec!["a.test", "*.b.test"]);
    }

    #[test]
    fn load_reports_the_failing_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
        let w = |n: &str, s: String| {
            let p = dir.path().join(n);
            std::fs::write(&p, s).unwrap();
            p
        };
        let (ac, ak) = (
            w("a.pem", a.cert.pem()),
            w("a.key", a.key_pair.serialize_pem()),
        );
        let bk = w("b.key", b.key_pair.serialize_pem());
        let ok = CertSet::load(&[(ac.clone(), ak.clone())]).unwrap();
        assert_eq!(ok.entries()[0].names, vec!["a.test"]);
        let errs = CertSet::load(&[
            (ac.clone(), ak.clone()),
            (ac.clone(), bk.clone()),
            (dir.path().join("missing.pem"), ak.clone()),
            (ak.clone(), ak.clone()),
        ])
        .unwrap_err();
        let summary: Vec<(usize, &str)> = errs.iter().map(|(i, w, _)| (*i, *w)).collect();
        assert_eq!(summary, vec![(1, "key"), (2, "cert"), (3, "cert")]);
        assert!(errs[0].2.contains("does not match"), "{}", errs[0].2);
        assert!(errs[1].2.contains("cannot read"), "{}", errs[1].2);
    }
}
