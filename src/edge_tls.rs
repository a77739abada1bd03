//! The HTTPS listeners' handshake, done by gatehouse on rustls: the listeners are plain TCP
//! listeners to Pingora, and `proxy::conn::Edge` hands a connection accepted on one of them
//! to `TlsEdge::handshake` (after the PROXY protocol header, if any), then gives the proxy a
//! `TlsConn`: the decrypted stream with the digest and ALPN protocol Pingora asks of a TLS
//! stream.
//!
//! - **Groups, in the server's order.** rustls picks the key-exchange group in the client's
//!   order. To honour `server.tls.groups` as a preference list, the ClientHello is read first
//!   and the handshake continues under a config that offers one group only: the first of ours
//!   the client supports. A client without a key share for it is asked for one
//!   (HelloRetryRequest), as an OpenSSL server with one preference level per group does.
//! - **Versions.** `min_version: "1.3"` builds the configs with TLS 1.3 only.
//! - **Resumption.** All configs share one session cache (TLS 1.2 session IDs) and one ticket
//!   key set (rustls's `Ticketer`: keys made at start, rotated every 6 hours, a ticket
//!   accepted for at most 12): sessions resume across threads, not across restarts.
//! - **Time.** The PROXY header and the handshake (ClientHello included) must both be in
//!   within `server.header_read_timeout` of the connection's accept.

use crate::config::tls::{TlsConfig, TlsVersion};
use crate::runtime::Shared;
use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{Peek, Shutdown, Ssl, ALPN};
use rustls::crypto::SupportedKxGroup;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, NamedGroup, ProtocolVersion};
use std::net::SocketAddr;
use std::sync::Arc;

/// TLS 1.2 sessions kept for resumption by session ID (clients without tickets).
const SESSION_CACHE: usize = 4096;

/// Picks the certificate for the ClientHello's server name from the live runtime's set.
struct LiveCerts {
    shared: Shared,
}

impl std::fmt::Debug for LiveCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveCerts")
    }
}

impl ResolvesServerCert for LiveCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let rt = self.shared.load();
        // TLS removed by a reload: the listener stays until restart, without a certificate.
        let tls = rt.config.server.tls.as_ref()?;
        tls.certs
            .pick(hello.server_name())
            .map(|e| e.certified.clone())
    }
}

/// A config with the listeners' ALPN protocols, and the same without ALPN: rustls refuses a
/// client whose ALPN offer shares nothing with the server's, where a client that offers
/// only `http/1.0` (curl --http1.0) or a protocol of its own should be served HTTP/1.
struct Configs {
    alpn: Arc<ServerConfig>,
    no_alpn: Arc<ServerConfig>,
}

impl Configs {
    fn pick(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let ours = &self.alpn.alpn_protocols;
        let shared = hello
            .alpn()
            .map(|mut offered| offered.any(|p| ours.iter().any(|o| o == p)));
        if shared == Some(false) {
            self.no_alpn.clone()
        } else {
            self.alpn.clone()
        }
    }
}

/// The server side of the HTTPS listeners, fixed at start.
pub struct TlsEdge {
    listen: Vec<SocketAddr>,
    /// One config per group of `server.tls.groups`, in its order, each offering that group
    /// only (never empty: the config has at least one group). A client that shares none of
    /// them gets the first, and rustls refuses it.
    by_group: Vec<(&'static dyn SupportedKxGroup, Configs)>,
    /// What Pingora reads of a TLS connection: one per cipher suite (a suite names its TLS
    /// version), shared by the connections that negotiate it (no allocation per connection).
    digests: Vec<(CipherSuite, Arc<SslDigest>)>,
}

impl TlsEdge {
    pub fn new(cfg: &TlsConfig, shared: Shared) -> Result<TlsEdge, String> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let resolver: Arc<dyn ResolvesServerCert> = Arc::new(LiveCerts { shared });
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| format!("cannot make session ticket keys: {e}"))?;
        let alpn: Vec<Vec<u8>> = if cfg.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let build = |kx: Vec<&'static dyn SupportedKxGroup>| -> Result<Configs, String> {
            let p = rustls::crypto::CryptoProvider {
                kx_groups: kx,
                ..provider.clone()
            };
            let mut c = ServerConfig::builder_with_provider(Arc::new(p))
                .with_protocol_versions(versions)
                .map_err(|e| format!("TLS settings: {e}"))?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            c.session_storage = sessions.clone();
            c.ticketer = ticketer.clone();
            let no_alpn = Arc::new(c.clone());
            c.alpn_protocols = alpn.clone();
            Ok(Configs {
                alpn: Arc::new(c),
                no_alpn,
            })
        };
        let by_group = cfg
            .groups
            .iter()
            .map(|g| Ok((g.0, build(vec![g.0])?)))
            .collect::<Result<Vec<_>, String>>()?;
        if by_group.is_empty() {
            return Err("no key-exchange group".into());
        }
        let digests = provider
            .cipher_suites
            .iter()
            .map(|suite| {
                let version = match suite.version().version {
                    ProtocolVersion::TLSv1_3 => "TLSv1.3",
                    _ => "TLSv1.2",
                };
                let cipher = suite.suite().as_str().unwrap_or("unknown");
                let digest = SslDigest::new(cipher, version, None, None, Vec::new());
                (suite.suite(), Arc::new(digest))
            })
            .collect();
        Ok(TlsEdge {
            listen: cfg.listen.clone(),
            by_group,
            digests,
        })
    }

    /// Whether a connection accepted on `local` came in through an HTTPS listener. An
    /// unspecified address covers its family (`0.0.0.0` IPv4, `::` both, as a dual-stack
    /// socket does); config validation keeps plain and HTTPS listeners on distinct ports.
    pub fn serves(&self, local: Option<SocketAddr>) -> bool {
        local.is_some_and(|local| listens_on(&self.listen, local))
    }

    /// The config to continue a handshake with: the one of the first group in our order
    /// that the client supports (a group for TLS 1.3 only if the client offers TLS 1.3),
    /// with ALPN unless the client offers none of our protocols.
    ///
    /// rustls shows no supported_versions here, so a client is taken to offer TLS 1.3 when it
    /// lists a TLS 1.3 cipher suite: a TLS 1.2-only client that lists them anyway and names a
    /// TLS 1.3-only group first (no such client is known) would be refused.
    fn config_for(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let offered: &[NamedGroup] = hello.named_groups().unwrap_or(&[]);
        let tls13 = hello.cipher_suites().iter().any(|s| {
            matches!(
                s,
                CipherSuite::TLS13_AES_128_GCM_SHA256
                    | CipherSuite::TLS13_AES_256_GCM_SHA384
                    | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            )
        });
        let chosen = self.by_group.iter().find(|(g, _)| {
            offered.contains(&g.name()) && (tls13 || g.usable_for_version(ProtocolVersion::TLSv1_2))
        });
        chosen.unwrap_or(&self.by_group[0]).1.pick(hello)
    }

    /// Runs the server handshake on `stream`, to be done by `deadline`.
    pub async fn handshake(
        &self,
        stream: L4Stream,
        deadline: tokio::time::Instant,
    ) -> Result<TlsConn, String> {
        let run = async {
            let lazy = tokio_rustls::LazyConfigAcceptor::new(Default::default(), stream);
            let start = lazy.await.map_err(|e| format!("TLS ClientHello: {e}"))?;
            let config = self.config_for(&start.client_hello());
            start
                .into_stream(config)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))
        };
        let inner = tokio::time::timeout_at(deadline, run)
            .await
            .map_err(|_| "TLS handshake not complete within header_read_timeout".to_string())??;
        let conn = inner.get_ref().1;
        let alpn = match conn.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        let digest = conn
            .negotiated_cipher_suite()
            .and_then(|s| self.digests.iter().find(|(c, _)| *c == s.suite()))
            .map(|(_, d)| d.clone())
            .ok_or("TLS handshake: no cipher suite negotiated")?;
        Ok(TlsConn {
            inner,
            digest,
            alpn,
        })
    }
}

/// Whether `local`, a connection's local address, is one of the `listen` addresses.
fn listens_on(listen: &[SocketAddr], local: SocketAddr) -> bool {
    let ip = crate::filters::ip::canonical(local.ip());
    listen.iter().any(|l| {
        let a = l.ip();
        l.port() == local.port()
            && (a == ip || (a.is_unspecified() && (a.is_ipv6() || ip.is_ipv4())))
    })
}

/// A client connection after the TLS handshake.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<L4Stream>,
    digest: Arc<SslDigest>,
    alpn: Option<ALPN>,
}

impl TlsConn {
    fn l4(&self) -> &L4Stream {
        self.inner.get_ref().0
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("l4", self.l4())
            .field("version", &self.digest.version)
            .field("alpn", &self.alpn)
            .finish()
    }
}

crate::proxy::conn::delegate_read!(TlsConn);
crate::proxy::conn::delegate_write!(TlsConn);
crate::proxy::conn::delegate_digests!(TlsConn, l4);

#[async_trait]
impl Shutdown for TlsConn {
    /// Sends close_notify, then closes the write side.
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl Ssl for TlsConn {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl Peek for TlsConn {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_https_by_its_local_address() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let listen = [a("0.0.0.0:443"), a("[::1]:8443")];
        assert!(listens_on(&listen, a("10.0.0.5:443")));
        // IPv4 on a dual-stack socket is seen as IPv4-mapped IPv6.
        assert!(listens_on(&listen, a("[::ffff:10.0.0.5]:443")));
        // 0.0.0.0 covers IPv4 only: [::1]:443 may be a plain listener.
        assert!(!listens_on(&listen, a("[::1]:443")));
        assert!(listens_on(&listen, a("[::1]:8443")));
        assert!(!listens_on(&listen, a("127.0.0.1:8443")));
        assert!(!listens_on(&listen, a("10.0.0.5:80")));
        // :: takes both families, as a dual-stack socket does.
        let dual = [a("[::]:443")];
        assert!(listens_on(&dual, a("[2001:db8::1]:443")));
        assert!(listens_on(&dual, a("192.0.2.1:443")));
    }
}
