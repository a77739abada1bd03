//! What a TLS library keeps for an idle connection: a bare TLS 1.3 server (no proxy, no
//! Pingora) that answers one HTTP/1.1 request per connection and then holds it open, on
//! OpenSSL (the vendored 3.6 gatehouse links for HTTPS upstreams, with `RELEASE_BUFFERS` and
//! read-ahead, the settings of its former OpenSSL listeners) or on rustls (0.23, aws-lc-rs,
//! as gatehouse's HTTPS listeners). For measurement, not a product: `benches/conns.py`
//! opens the connections and prints the server's RSS growth per connection, so the two
//! libraries can be compared with the same task and socket around them.
//!
//!   cargo build --release --example tls_idle
//!   target/release/examples/tls_idle openssl|rustls 127.0.0.1:PORT &
//!   python3 benches/conns.py $! PORT 2000 idle --tls

#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement tool: fail loudly

use pingora::tls::ssl::{SslAcceptor, SslMethod, SslMode, SslVersion};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Reads one request header, answers it, then waits for the peer to close.
async fn serve(mut s: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    drop(seen);
    if s.write_all(ANSWER).await.is_err() || s.flush().await.is_err() {
        return;
    }
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (lib, addr) = match &args[1..] {
        [lib, addr] if lib == "openssl" || lib == "rustls" => (lib.clone(), addr.clone()),
        _ => {
            eprintln!("usage: tls_idle openssl|rustls LISTEN_ADDR");
            std::process::exit(2);
        }
    };
    let ck = rcgen::generate_simple_self_signed(vec!["bench.test".to_string()]).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        if lib == "openssl" {
            let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
            let cert = pingora::tls::x509::X509::from_pem(ck.cert.pem().as_bytes()).unwrap();
            let key = pingora::tls::pkey::PKey::private_key_from_pem(
                ck.key_pair.serialize_pem().as_bytes(),
            )
            .unwrap();
            b.set_certificate(&cert).unwrap();
            b.set_private_key(&key).unwrap();
            b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
            b.set_mode(SslMode::RELEASE_BUFFERS);
            b.set_read_ahead(true);
            let acceptor = Arc::new(b.build());
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let ssl = pingora::tls::ssl::Ssl::new(acceptor.context()).unwrap();
                    let mut s = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                    if std::pin::Pin::new(&mut s).accept().await.is_ok() {
                        serve(s).await;
                    }
                });
            }
        } else {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
            let key =
                rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
            let cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        serve(s).await;
                    }
                });
            }
        }
    });
}
