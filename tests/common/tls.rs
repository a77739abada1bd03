//! TLS test helpers: a private CA that issues certificates at test time (rcgen), an HTTPS/1.1
//! client that reports the certificate it was served (OpenSSL, as built for Pingora), and an
//! HTTPS upstream. The h2 client and the WebSocket upstreams are re-exported here, where the
//! edge tests look for them.

#[allow(unused_imports)]
pub use super::{
    http2::{h2_request, h2_request_with},
    ws::{early_101_upstream, ws_echo_upstream, WS_ACCEPT, WS_KEY},
};

use super::client::{build_request, read_response, Response};
use pingora::tls::ssl::{
    SslAcceptor, SslConnector, SslFiletype, SslMethod, SslSession, SslStream, SslVersion,
};
use pingora::tls::x509::X509;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

/// A certificate authority made for one test.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A leaf certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Issued {
    /// Writes `name.pem` and `name.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.pem"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, &self.cert).expect("write cert");
        std::fs::write(&k, &self.key).expect("write key");
        (c, k)
    }

    /// DER of the leaf, to compare with what a handshake served.
    pub fn der(&self) -> Vec<u8> {
        X509::from_pem(self.cert.as_bytes())
            .and_then(|c| c.to_der())
            .expect("leaf der")
    }
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gatehouse test CA");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = params.self_signed(&ca_key).expect("ca cert");
        Pki { ca, ca_key }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.ca_pem()).expect("write ca");
        p
    }

    /// A leaf for these DNS names (first name is also the CN), signed by the CA.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign leaf");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// How a test client handshakes.
#[derive(Clone)]
pub struct ClientTls<'a> {
    pub sni: &'a str,
    pub ca_pem: &'a str,
    pub alpn: &'a [&'a str],
    pub min: Option<SslVersion>,
    pub max: Option<SslVersion>,
    /// Key-exchange groups offered, as an OpenSSL group list (`X25519:P-256`); OpenSSL's
    /// default if unset.
    pub groups: Option<&'a str>,
}

impl<'a> ClientTls<'a> {
    pub fn new(sni: &'a str, ca_pem: &'a str) -> Self {
        ClientTls {
            sni,
            ca_pem,
            alpn: &[],
            min: None,
            max: None,
            groups: None,
        }
    }

    pub(crate) fn connector(&self) -> Result<SslConnector, String> {
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        let ca = X509::from_pem(self.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        b.cert_store_mut().add_cert(ca).map_err(|e| e.to_string())?;
        if self.min == Some(SslVersion::TLS1_1) || self.max == Some(SslVersion::TLS1_1) {
            // OpenSSL 3 only speaks TLS 1.1 at security level 0.
            b.set_cipher_list("DEFAULT@SECLEVEL=0")
                .map_err(|e| e.to_string())?;
        }
        if let Some(groups) = self.groups {
            b.set_groups_list(groups).map_err(|e| e.to_string())?;
        }
        b.set_min_proto_version(self.min)
            .map_err(|e| e.to_string())?;
        b.set_max_proto_version(self.max)
            .map_err(|e| e.to_string())?;
        if !self.alpn.is_empty() {
            let mut wire = Vec::new();
            for p in self.alpn {
                wire.push(p.len() as u8);
                wire.extend_from_slice(p.as_bytes());
            }
            b.set_alpn_protos(&wire).map_err(|e| e.to_string())?;
        }
        Ok(b.build())
    }
}

/// An HTTPS/1.1 client connection (keep-alive).
pub struct TlsConn {
    pub reader: BufReader<SslStream<TcpStream>>,
}

impl TlsConn {
    pub fn open(addr: SocketAddr, tls: &ClientTls<'_>) -> Result<TlsConn, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let s = tls
            .connector()?
            .connect(tls.sni, tcp)
            .map_err(|e| format!("handshake: {e}"))?;
        Ok(TlsConn {
            reader: BufReader::new(s),
        })
    }

    pub fn ssl(&self) -> &pingora::tls::ssl::SslRef {
        self.reader.get_ref().ssl()
    }

    /// The leaf certificate the server presented, as DER.
    pub fn peer_der(&self) -> Vec<u8> {
        self.ssl()
            .peer_certificate()
            .and_then(|c| c.to_der().ok())
            .expect("a peer certificate")
    }

    /// The DNS names of the leaf the server presented.
    pub fn peer_names(&self) -> Vec<String> {
        let c = self.ssl().peer_certificate().expect("a peer certificate");
        gatehouse::tls::cert_names(&c)
    }

    /// The key-exchange group of the handshake, by OpenSSL's name (`X25519MLKEM768`, `x25519`,
    /// `secp384r1`).
    pub fn group(&self) -> Option<String> {
        // The safe API has no accessor for it. An `&SslRef` is the `SSL *` it wraps.
        let ssl = self.ssl() as *const pingora::tls::ssl::SslRef as *mut pingora::tls::ssl_sys::SSL;
        // SAFETY: `ssl` is a live SSL for the duration of the call; the name is a static
        // string owned by OpenSSL, copied before returning.
        let name = unsafe { pingora::tls::ssl_sys::SSL_get0_group_name(ssl) };
        if name.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, owned by OpenSSL.
        let name = unsafe { std::ffi::CStr::from_ptr(name) };
        Some(name.to_string_lossy().into_owned())
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.ssl().selected_alpn_protocol().map(|p| p.to_vec())
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.reader
            .get_mut()
            .write_all(&build_request(method, path, headers, body))?;
        read_response(&mut self.reader, method == "HEAD")
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, &[], b"")
    }
}
/// A client that offers the session of its previous connection on the next one, as a browser
/// resumes: each `get` opens a connection, asks once (`Connection: close`) and keeps the
/// session it ends with.
pub struct ResumingClient {
    connector: SslConnector,
    sni: String,
    session: Option<SslSession>,
}

impl ResumingClient {
    pub fn new(tls: &ClientTls<'_>) -> Result<ResumingClient, String> {
        Ok(ResumingClient {
            connector: tls.connector()?,
            sni: tls.sni.to_string(),
            session: None,
        })
    }

    /// One GET on a new connection: the response and whether the session was resumed.
    pub fn get(&mut self, addr: SocketAddr, path: &str) -> Result<(Response, bool), String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut cfg = self.connector.configure().map_err(|e| e.to_string())?;
        if let Some(s) = &self.session {
            // SAFETY: every kept session comes from a connection of `self.connector`.
            unsafe { cfg.set_session(s) }.map_err(|e| e.to_string())?;
        }
        let s = cfg
            .connect(&self.sni, tcp)
            .map_err(|e| format!("handshake: {e}"))?;
        let mut c = TlsConn {
            reader: BufReader::new(s),
        };
        let r = c
            .request("GET", path, &[("Connection", "close")], b"")
            .map_err(|e| e.to_string())?;
        // TLS 1.3 tickets may follow the response: read up to the close to have them, and
        // close cleanly (OpenSSL does not resume a session whose connection was cut).
        let _ = std::io::Read::read_to_end(&mut c.reader, &mut Vec::new());
        let _ = c.reader.get_mut().shutdown();
        self.session = c.ssl().session().map(|s| s.to_owned());
        Ok((r, c.ssl().session_reused()))
    }

    /// The lifetime the server gave the kept session's ticket (its lifetime hint), in
    /// seconds: read from the session's DER, as the openssl crate has no accessor for it.
    pub fn ticket_lifetime(&self) -> Option<u64> {
        let der = self.session.as_ref()?.to_der().ok()?;
        ticket_lifetime_hint(&der)
    }
}

/// An HTTPS/1.1 upstream answering `200 tls upstream <target>` on every request.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    /// Request targets seen (after a successful handshake).
    pub targets: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TlsUpstream {
    pub fn seen(&self, target: &str) -> usize {
        let t = self.targets.lock().expect("lock");
        t.iter().filter(|x| x.as_str() == target).count()
    }
}

impl TlsUpstream {
    pub fn start(leaf: &Issued) -> TlsUpstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, k) = leaf.write(dir.path(), "upstream");
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate_chain_file(&c).expect("upstream cert");
        b.set_private_key_file(&k, SslFiletype::PEM)
            .expect("upstream key");
        let acceptor = std::sync::Arc::new(b.build());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let targets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = targets.clone();
        thread::spawn(move || {
            let _keep = dir;
            for s in listener.incoming().flatten() {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                thread::spawn(move || {
                    let Ok(tls) = acceptor.accept(s) else { return };
                    let mut r = BufReader::new(tls);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        seen.lock().expect("lock").push(target.clone());
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h.trim_end().is_empty() {
                                break;
                            }
                        }
                        let body = format!("tls upstream {target}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if r.get_mut().write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsUpstream { addr, targets }
    }
}

/// One DER element at the start of `b`: (tag, contents, rest).
fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (l, rest) = b.split_at(n);
        b = rest;
        l.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize)
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The ticket lifetime hint of an OpenSSL session in DER: the field tagged `[9]` of the
/// session's SEQUENCE, an INTEGER.
fn ticket_lifetime_hint(der: &[u8]) -> Option<u64> {
    let (0x30, mut fields, _) = der_element(der)? else {
        return None;
    };
    while !fields.is_empty() {
        let (tag, contents, rest) = der_element(fields)?;
        if tag == 0xa9 {
            let (0x02, int, _) = der_element(contents)? else {
                return None;
            };
            return Some(int.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64));
        }
        fields = rest;
    }
    None
}
