//! TLS test helpers: a private CA that issues certificates at test time (rcgen), an HTTPS/1.1
//! client that reports the certificate it was served (OpenSSL, as built for Pingora), an h2
//! client (the h2 crate over tokio-openssl), an HTTPS upstream, and a WebSocket echo upstream
//! (tungstenite).

use super::{build_request, read_response, Response};
use pingora::tls::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream, SslVersion};
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
}

impl<'a> ClientTls<'a> {
    pub fn new(sni: &'a str, ca_pem: &'a str) -> Self {
        ClientTls {
            sni,
            ca_pem,
            alpn: &[],
            min: None,
            max: None,
        }
    }

    fn connector(&self) -> Result<SslConnector, String> {
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        let ca = X509::from_pem(self.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        b.cert_store_mut().add_cert(ca).map_err(|e| e.to_string())?;
        if self.min == Some(SslVersion::TLS1_1) || self.max == Some(SslVersion::TLS1_1) {
            // OpenSSL 3 only speaks TLS 1.1 at security level 0.
            b.set_cipher_list("DEFAULT@SECLEVEL=0")
                .map_err(|e| e.to_string())?;
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

/// One HTTP/2 request over TLS (ALPN h2): status, headers, body and the negotiated protocol.
pub fn h2_request(
    addr: SocketAddr,
    tls: &ClientTls<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, http::HeaderMap, Vec<u8>), String> {
    h2_request_with(addr, tls, method, path, body, true)
}

/// Like `h2_request`; without `content_length` the body is streamed in 512-byte DATA frames
/// with no declared length.
pub fn h2_request_with(
    addr: SocketAddr,
    tls: &ClientTls<'_>,
    method: &str,
    path: &str,
    body: &[u8],
    content_length: bool,
) -> Result<(u16, http::HeaderMap, Vec<u8>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let tls = ClientTls {
        alpn: &["h2"],
        ..tls.clone()
    };
    rt.block_on(async move {
        let connector = tls.connector()?;
        let ssl = connector
            .configure()
            .and_then(|c| c.into_ssl(tls.sni))
            .map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut s = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
        std::pin::Pin::new(&mut s)
            .connect()
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if s.ssl().selected_alpn_protocol() != Some(b"h2") {
            return Err("the server did not select h2".to_string());
        }
        let (mut client, conn) = h2::client::handshake(s).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", tls.sni));
        if !body.is_empty() && content_length {
            req = req.header("content-length", body.len().to_string());
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        client = client.ready().await.map_err(|e| e.to_string())?;
        let (resp, mut send) = client
            .send_request(req, body.is_empty())
            .map_err(|e| e.to_string())?;
        let chunks: Vec<&[u8]> = body.chunks(512).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            // A refused stream may stop taking data: the answer tells what happened.
            if send
                .send_data(bytes::Bytes::copy_from_slice(c), last)
                .is_err()
            {
                break;
            }
        }
        let resp = resp.await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut recv = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok((status, headers, out))
    })
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

/// A WebSocket upstream: after the handshake it sends `hello` at once (so its 101 and first
/// frame arrive before the client says anything), then echoes every message.
pub fn ws_echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(s) else {
                    return;
                };
                if ws.send(tungstenite::Message::text("hello")).is_err() {
                    return;
                }
                while let Ok(m) = ws.read() {
                    if m.is_close() {
                        return;
                    }
                    if (m.is_text() || m.is_binary()) && ws.send(m).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The key/accept pair of RFC 6455's example handshake.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An upstream that answers `101` (for `WS_KEY`) and a first frame the moment it accepts a
/// connection, before it has even read the request; then reads the request head and echoes
/// the tunnel's bytes. This forces the ordering of Pingora issue #946 (the upstream's 101 read
/// before the proxy drained the upgrade request's empty body).
pub fn early_101_upstream() -> SocketAddr {
    use std::io::Read;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            thread::spawn(move || {
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
                );
                let mut first = head.into_bytes();
                first.extend_from_slice(b"\x81\x05hello");
                if s.write_all(&first).is_err() {
                    return;
                }
                let Ok(read_half) = s.try_clone() else { return };
                let mut r = BufReader::new(read_half);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h.trim_end().is_empty() {
                        break;
                    }
                }
                let mut buf = [0u8; 4096];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}
