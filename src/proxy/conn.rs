//! Client connections: a total time limit on reading request headers (slowloris defence).
//!
//! Pingora bounds each *read* of a request header (60 s), so a client that dribbles one byte
//! at a time can hold a connection for ever. `Edge` wraps the proxy application and gives each
//! HTTP/1 connection a `HeaderDeadline` stream: from the moment a request is expected, its
//! header must be complete (an empty line seen) within `server.header_read_timeout`, or the
//! read fails and the connection is closed. On a kept-alive connection the `logging` hook
//! re-arms it (`rearm`): the next request's header must then complete within the limit from
//! its first byte (idle time between requests is bounded by Pingora's keep-alive timeout).
//! HTTP/2 connections are not given the deadline (h2 has its own framing and Pingora's h2
//! handshake timeouts). With `server.h2c`, a plain connection that opens with the HTTP/2
//! preface is HTTP/2 by prior knowledge (`PriorKnowledge`); any other is HTTP/1.
//!
//! Before any of that, `Edge` reads a connection's PROXY protocol header
//! (`crate::proxy_protocol`) and, on an HTTPS listener, runs its TLS handshake
//! (`crate::edge_tls`), both within `server.header_read_timeout` of the accept.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A client stream whose request headers must arrive within a deadline.
pub struct HeaderDeadline {
    inner: Stream,
    limit: Duration,
    /// The deadline's timer, allocated once per connection and reset for each request.
    sleep: Pin<Box<Sleep>>,
    /// True while a request header is being waited for (only then is `sleep` polled).
    armed: bool,
    /// Consecutive line feeds seen (carriage returns ignored): 2 = end of the header.
    newlines: u8,
    /// Set by `rearm` when a request is finished and the next may start.
    rearm: AtomicBool,
    /// After a re-arm: the deadline starts with the next request's first byte (an idle
    /// kept-alive connection is Pingora's keep-alive timeout's business).
    waiting_first_byte: bool,
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("armed", &self.armed)
            .finish()
    }
}

impl HeaderDeadline {
    pub fn new(inner: Stream, limit: Duration) -> Self {
        HeaderDeadline {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: true,
            newlines: 0,
            rearm: AtomicBool::new(false),
            waiting_first_byte: false,
        }
    }

    /// Asks for a fresh deadline for the next request on this connection.
    pub fn rearm(&self) {
        self.rearm.store(true, Ordering::Relaxed);
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => {
                    self.newlines += 1;
                    if self.newlines >= 2 {
                        self.armed = false;
                        self.newlines = 0;
                        return;
                    }
                }
                b'\r' => {}
                _ => self.newlines = 0,
            }
        }
    }
}

/// Re-arms the header deadline of the connection `stream` belongs to, if it has one.
pub fn rearm(stream: Option<&Stream>) {
    if let Some(d) = stream.and_then(|s| s.as_any().downcast_ref::<HeaderDeadline>()) {
        d.rearm();
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.rearm.swap(false, Ordering::Relaxed) {
            this.armed = false;
            this.waiting_first_byte = true;
            this.newlines = 0;
        }
        if this.armed && this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request header not complete within header_read_timeout",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let first_byte = this.waiting_first_byte && buf.filled().len() > before;
            if first_byte {
                this.waiting_first_byte = false;
                this.armed = true;
            }
            if this.armed {
                this.scan(&buf.filled()[before..]);
                // The timer is only set when the header did not come whole with its first
                // byte (the usual case needs no timer at all); it starts now, within the same
                // poll as that first byte.
                if first_byte && this.armed {
                    this.sleep.as_mut().reset(Instant::now() + this.limit);
                }
            }
        }
        res
    }
}

/// Reading, for a client stream wrapper that adds nothing to it: passed to its `inner` field.
macro_rules! delegate_read {
    ($t:ty) => {
        impl ::tokio::io::AsyncRead for $t {
            fn poll_read(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
            }
        }
    };
}

/// Writing, for a client stream wrapper: passed to its `inner` field.
macro_rules! delegate_write {
    ($t:ty) => {
        impl ::tokio::io::AsyncWrite for $t {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}

/// What a client stream wrapper tells of its connection (id, timings, socket and proxy
/// digests): what the stream `self.$under()` tells.
macro_rules! delegate_digests {
    ($t:ty, $under:ident) => {
        impl ::pingora::protocols::UniqueID for $t {
            fn id(&self) -> ::pingora::protocols::UniqueIDType {
                self.$under().id()
            }
        }

        impl ::pingora::protocols::GetTimingDigest for $t {
            fn get_timing_digest(&self) -> Vec<Option<::pingora::protocols::TimingDigest>> {
                self.$under().get_timing_digest()
            }

            fn get_read_pending_time(&self) -> ::std::time::Duration {
                self.$under().get_read_pending_time()
            }

            fn get_write_pending_time(&self) -> ::std::time::Duration {
                self.$under().get_write_pending_time()
            }
        }

        impl ::pingora::protocols::GetProxyDigest for $t {
            fn get_proxy_digest(
                &self,
            ) -> Option<::std::sync::Arc<::pingora::protocols::raw_connect::ProxyDigest>> {
                self.$under().get_proxy_digest()
            }
        }

        impl ::pingora::protocols::GetSocketDigest for $t {
            fn get_socket_digest(
                &self,
            ) -> Option<::std::sync::Arc<::pingora::protocols::SocketDigest>> {
                self.$under().get_socket_digest()
            }
        }
    };
}

pub(crate) use {delegate_digests, delegate_read, delegate_write};

/// The traits of a client stream that a wrapper passes to the stream it wraps (all but
/// reading and TLS).
macro_rules! delegate_stream {
    ($t:ty) => {
        delegate_write!($t);
        delegate_digests!($t, stream);

        impl $t {
            fn stream(&self) -> &Stream {
                &self.inner
            }
        }

        #[async_trait]
        impl Shutdown for $t {
            async fn shutdown(&mut self) {
                self.inner.shutdown().await
            }
        }

        #[async_trait]
        impl Peek for $t {
            async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
                self.inner.try_peek(buf).await
            }
        }
    };
}

delegate_stream!(HeaderDeadline);
delegate_stream!(PriorKnowledge);

/// A plain client stream that opened with the HTTP/2 preface (h2c by prior knowledge): it
/// reports HTTP/2 as its protocol, as ALPN does for TLS, so the proxy speaks HTTP/2 on it.
#[derive(Debug)]
pub struct PriorKnowledge {
    inner: Stream,
}

delegate_read!(PriorKnowledge);

impl Ssl for PriorKnowledge {
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        Some(ALPN::H2)
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain client connection opens with the HTTP/2 preface. Bytes are read only
/// while they match it (so a short HTTP/1 request is never waited on), within `limit`, and
/// are put back for the proxy to read.
async fn opens_with_h2_preface(
    l4: &mut pingora::protocols::l4::stream::Stream,
    limit: Duration,
) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let sniff = tokio::time::timeout(limit, async {
        while n < buf.len() {
            let got = l4.read(&mut buf[n..]).await?;
            if got == 0 {
                return Ok(false);
            }
            n += got;
            if buf[..n] != H2_PREFACE[..n] {
                return Ok(false);
            }
        }
        Ok::<bool, std::io::Error>(true)
    })
    .await;
    l4.rewind(&buf[..n]);
    match sniff {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "request not started within header_read_timeout",
        )),
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

/// The proxy application with the header deadline on its HTTP/1 connections, the PROXY
/// protocol, the TLS handshake of the HTTPS listeners and h2c by prior knowledge.
pub struct Edge<A> {
    pub inner: Arc<A>,
    /// The live config: each new connection takes `server.header_read_timeout` from it, so a
    /// reload applies to the connections accepted after it.
    pub shared: crate::runtime::Shared,
    /// The HTTPS listeners (fixed at start), if any.
    pub tls: Option<crate::edge_tls::TlsEdge>,
}

impl<A> Edge<A> {
    /// Reads what comes before HTTP on a new connection: the PROXY header, the TLS
    /// handshake, the h2c preface. `Err` closes the connection.
    async fn open(&self, stream: Stream) -> Result<Stream, String> {
        use pingora::protocols::l4::stream::Stream as L4Stream;
        let tls = self.tls.as_ref().filter(|t| {
            t.serves(
                stream
                    .get_socket_digest()
                    .and_then(|d| d.local_addr().and_then(|a| a.as_inet().copied())),
            )
        });
        // The live config, read once for the connection's start.
        let rt = self.shared.load_full();
        let server = &rt.config.server;
        let (limit, h2c) = (server.header_read_timeout, server.h2c);
        if tls.is_none() && !h2c && server.proxy_protocol.is_none() {
            return Ok(Box::new(HeaderDeadline::new(stream, limit)));
        }
        // The PROXY header and the TLS handshake share one deadline from here.
        let accepted = Instant::now();
        let mut l4 = stream
            .into_any()
            .downcast::<L4Stream>()
            .map_err(|_| "not a TCP stream".to_string())?;
        if let Some(pp) = &server.proxy_protocol {
            if let Err(e) = crate::proxy_protocol::accept(&mut l4, &pp.trusted, limit).await {
                // A balancer that sends a broken header is worth an operator's look.
                log::info!("closing connection: {e}");
                return Err(e);
            }
        }
        drop(rt);
        if let Some(tls) = tls {
            let conn = tls.handshake(*l4, accepted + limit).await?;
            if matches!(conn.selected_alpn_proto(), Some(ALPN::H2)) {
                return Ok(Box::new(conn));
            }
            return Ok(Box::new(HeaderDeadline::new(Box::new(conn), limit)));
        }
        if h2c
            && opens_with_h2_preface(&mut l4, limit)
                .await
                .map_err(|e| e.to_string())?
        {
            return Ok(Box::new(PriorKnowledge { inner: l4 }));
        }
        Ok(Box::new(HeaderDeadline::new(l4, limit)))
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Edge<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Boxed: the TLS handshake's state is large, and an unboxed `open` would size this
        // future (which lives as long as the connection) for it, on plain connections too.
        match Box::pin(self.open(stream)).await {
            Ok(stream) => self.inner.process_new(stream, shutdown).await,
            Err(e) => {
                log::debug!("closing connection: {e}");
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A wrapped stream fed by the test through the other end of a duplex pipe.
    fn pipe(limit: Duration) -> (HeaderDeadline, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        (HeaderDeadline::new(Box::new(server), limit), client)
    }

    #[tokio::test(start_paused = true)]
    async fn header_must_complete_before_the_deadline() {
        use tokio::io::AsyncWriteExt;
        let (mut s, mut client) = pipe(Duration::from_secs(10));
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(s.read(&mut buf).await.is_ok());
        tokio::time::advance(Duration::from_secs(5)).await;
        client.write_all(b"Host: x\r\n").await.unwrap();
        assert!(s.read(&mut buf).await.is_ok());
        // Nothing more arrives: the read fails when the 10 s are up.
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn complete_header_disarms_and_rearm_restarts() {
        use tokio::io::AsyncWriteExt;
        let (mut s, mut client) = pipe(Duration::from_secs(10));
        let mut buf = [0u8; 64];
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r")
            .await
            .unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        client.write_all(b"\n\r\n").await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        assert!(!s.armed, "header complete across reads");
        // A body may take its time: no deadline once the header is in.
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"body after a long pause").await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        s.rearm();
        // An idle connection is not cut: the deadline starts with the next request's first
        // byte, and then its header must complete in time.
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"GET /next HTTP/1.1\r\n").await.unwrap();
        assert!(s.read(&mut buf).await.unwrap() > 0);
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn bare_line_feeds_end_a_header_too() {
        let (_client, server) = tokio::io::duplex(16);
        let mut s = HeaderDeadline {
            inner: Box::new(server),
            limit: Duration::from_secs(1),
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
            armed: false,
            newlines: 0,
            rearm: AtomicBool::new(false),
            waiting_first_byte: false,
        };
        s.armed = true;
        s.scan(b"GET / HTTP/1.1\nHost: a\n");
        assert!(s.armed);
        s.scan(b"\n");
        assert!(!s.armed);
    }
}
