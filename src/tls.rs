//! TLS at the edge: the certificate set served by SNI, the CA bundles of HTTPS upstreams,
//! and the server side of the HTTPS listeners (the handshake itself is in `crate::edge_tls`).
//!
//! The set is part of the compiled config (`server.tls.certs`), so a SIGHUP reload that reads
//! renewed files swaps it with the rest of the runtime: the certificate resolver loads the
//! live runtime on every handshake, so new handshakes get the new certificate while open
//! connections keep the one they negotiated.
//!
//! Two TLS libraries, each where it serves best: the HTTPS listeners are rustls (with the
//! aws-lc-rs provider), which keeps about half of what OpenSSL keeps per idle connection;
//! HTTPS upstreams go through Pingora's connector on its vendored OpenSSL. Files are parsed
//! and checked with OpenSSL (names, key against certificate) and handed to rustls as DER.

use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::crypto::SupportedKxGroup;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One certificate: the leaf, its chain, its key and the names it serves.
pub struct CertEntry {
    pub names: Vec<String>,
    /// The chain and signing key as the handshake uses them.
    pub certified: Arc<CertifiedKey>,
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
        let certified = certified_key(&leaf, &chain, &pkey)
            .map_err(|m| ("key", format!("{}: {m}", key.display())))?;
        Ok(CertEntry {
            names,
            certified,
            raw: (cert_pem, key_pem),
            files: (cert.to_path_buf(), key.to_path_buf()),
        })
    }
}

/// The chain (leaf first) and key as rustls takes them: DER, the key as PKCS#8.
pub fn certified_key(
    leaf: &X509,
    chain: &[X509],
    key: &PKey<Private>,
) -> Result<Arc<CertifiedKey>, String> {
    let der = |c: &X509| {
        c.to_der()
            .map(CertificateDer::from)
            .map_err(|e| format!("cannot encode the certificate: {e}"))
    };
    let mut certs = vec![der(leaf)?];
    for c in chain {
        certs.push(der(c)?);
    }
    let pkcs8 = key
        .private_key_to_pkcs8()
        .map_err(|e| format!("cannot encode the key as PKCS#8: {e}"))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(pkcs8),
    ))
    .map_err(|e| {
        format!(
            "a key TLS cannot sign with (RSA of 2048 to 8192 bits, ECDSA P-256/P-384/P-521, \
                 Ed25519): {e}"
        )
    })?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
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

/// A key-exchange group of `server.tls.groups`, resolved when the config is compiled. Two
/// names of one group (`P-256`, `secp256r1`) are equal.
#[derive(Clone, Copy)]
pub struct KxGroup(pub &'static dyn SupportedKxGroup);

impl PartialEq for KxGroup {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}

impl fmt::Debug for KxGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.name())
    }
}

/// The key-exchange group of a name in `server.tls.groups`: OpenSSL's names (`X25519MLKEM768`,
/// `X25519`, `P-256`, `P-384`) and the IETF ones (`secp256r1`, `secp384r1`), any case.
/// `None` for a group this build cannot offer.
pub fn kx_group(name: &str) -> Option<KxGroup> {
    Some(KxGroup(match name.to_ascii_uppercase().as_str() {
        "X25519MLKEM768" => kx_group::X25519MLKEM768,
        "SECP256R1MLKEM768" => kx_group::SECP256R1MLKEM768,
        "MLKEM768" => kx_group::MLKEM768,
        "MLKEM1024" => kx_group::MLKEM1024,
        "X25519" => kx_group::X25519,
        "P-256" | "SECP256R1" | "PRIME256V1" => kx_group::SECP256R1,
        "P-384" | "SECP384R1" => kx_group::SECP384R1,
        _ => return None,
    }))
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
            certified: certified_key(&leaf, &[], &key).unwrap(),
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
