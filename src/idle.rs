//! HTTP/1 connections while no request is being served: waiting for the next request, or for
//! the rest of a request header, a connection is held by a small future and a buffer only as
//! large as the bytes that have arrived.
//!
//! Pingora's own keep-alive loop waits for a request inside the proxy's per-request future
//! (kilobytes of state for the proxy phases) with a 4 KiB header buffer, so every idle or
//! slow connection costs that. `Lean` runs the HTTP/1 loop itself: it gathers the start of
//! each request (until its header is complete, or `HEAD_GATHER` bytes) and only then builds
//! the session and hands it to the proxy, the gathered bytes as the session's first input,
//! which Pingora parses before reading more. HTTP/2 and other ALPN protocols go to Pingora
//! unchanged.
//!
//! HTTP/1.1 pipelining (RFC 9112 §9.3.2): when the gathered bytes go past the request (past
//! its header and `Content-Length` body), the client has sent the next request already, and
//! the session is switched to Pingora's pipelining, which answers the requests in order and
//! keeps the bytes read past each one for the next. Those bytes live in Pingora's persistent
//! settings, where this loop cannot see them, so from then on that connection's requests are
//! read by Pingora itself (its wait costs more memory; only pipelining clients pay it).

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

/// How long a connection may wait for its next request (and take to send a request header,
/// at most): Pingora's own keep-alive timeout, which the proxy does not change.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// Bytes of a request gathered before the proxy takes over reading (a larger header goes on
/// in Pingora's own buffer). Also the most one read takes while gathering.
pub const HEAD_GATHER: usize = 4096;

/// The HTTP/1 loop of `inner` with lean waits between and at the start of requests.
pub struct Lean<A> {
    pub inner: Arc<A>,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Lean<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let opts = self.inner.server_options();
        let other = matches!(
            stream.selected_alpn_proto(),
            Some(ALPN::H2) | Some(ALPN::Custom(_))
        ) || opts.is_some_and(|o| o.h2c || o.force_custom);
        if other {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let reuse_limit = opts.and_then(|o| o.keepalive_request_limit);
        let mut stopping = shutdown.clone();
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut pipelining = false;
        loop {
            if pipelining {
                let mut session = ServerSession::new_http1(stream);
                if let Some(s) = settings.take() {
                    s.apply_to_session(&mut session);
                }
                let reused = self.inner.process_new_http(session, shutdown).await?;
                (stream, settings) = reused.consume();
                continue;
            }
            // The request's bytes first (biased): a request already sent is served even when
            // the service is stopping; a connection still waiting is closed then.
            let head = tokio::select! {
                biased;
                head = tokio::time::timeout(KEEPALIVE, gather_head(&mut stream)) => head,
                _ = stopping.wait_for(|stop| *stop) => return None,
            };
            let head = match head {
                Ok(Ok(head)) if !head.is_empty() => head,
                // Idle too long, closed by the client, or a read error (the header deadline).
                _ => return None,
            };
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE.as_secs());
                    session.set_keepalive(keepalive);
                    session.set_keepalive_reuses_remaining(reuse_limit);
                }
            }
            if goes_past_the_request(&head) {
                session.set_pipelining_enabled(true);
                pipelining = true;
            }
            session.set_pipelined_prefix(head);
            let reused = self.inner.process_new_http(session, shutdown).await?;
            let (next, next_settings) = reused.consume();
            stream = next;
            settings = next_settings;
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await
    }
}

/// Reads the start of the next request: returns once the header is complete (an empty line),
/// `HEAD_GATHER` bytes are in, or the peer closed (then with what came, maybe nothing). While
/// it waits it holds only the bytes received; each read goes through a buffer on the stack.
pub async fn gather_head(stream: &mut Stream) -> std::io::Result<BytesMut> {
    let mut head = BytesMut::new();
    std::future::poll_fn(|cx| loop {
        let mut space = [MaybeUninit::<u8>::uninit(); HEAD_GATHER];
        let want = HEAD_GATHER - head.len();
        let mut buf = ReadBuf::uninit(&mut space[..want]);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                return Poll::Ready(Ok(std::mem::take(&mut head)))
            }
            Poll::Ready(Ok(())) => {
                let from = head.len().saturating_sub(2);
                head.extend_from_slice(buf.filled());
                if head.len() >= HEAD_GATHER || header_ends(&head[from..]) {
                    return Poll::Ready(Ok(std::mem::take(&mut head)));
                }
            }
        }
    })
    .await
}

/// Whether `head` holds more than one request: bytes past its header and its `Content-Length`
/// body. A chunked body is not measured (pipelining behind one is left to Pingora's default,
/// which answers and closes).
fn goes_past_the_request(head: &[u8]) -> bool {
    let Some(end) = header_len(head) else {
        return false;
    };
    if head.len() == end {
        // nothing after the header (every bodiless request sent alone): no need to read it
        return false;
    }
    let mut body = 0usize;
    for line in head[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return false;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value).unwrap_or("").trim();
            match v.parse::<usize>() {
                Ok(n) => body = n,
                Err(_) => return false,
            }
        }
    }
    head.len() > end.saturating_add(body)
}

/// The length of the header at the start of `bytes` (through its empty line), if complete.
fn header_len(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| match &bytes[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// Whether `bytes` hold the end of a header: a line feed, maybe a carriage return, then a line
/// feed (bare line feeds end lines too).
fn header_ends(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn a_second_request_in_the_gathered_bytes_is_pipelining() {
        let one = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
        assert!(!goes_past_the_request(one));
        assert!(goes_past_the_request(
            b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b"
        ));
        let post = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        assert!(!goes_past_the_request(post), "its own body");
        assert!(goes_past_the_request(
            b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET"
        ));
        assert!(!goes_past_the_request(
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc"
        ));
        assert!(
            !goes_past_the_request(b"GET /a HTTP/1.1\r\nHost: t\r\n"),
            "incomplete"
        );
        assert!(
            goes_past_the_request(b"GET /a HTTP/1.1\nHost: t\n\nGET"),
            "bare line feeds"
        );
    }

    #[test]
    fn header_end_is_found_with_and_without_carriage_returns() {
        assert!(header_ends(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(header_ends(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(header_ends(b"\r\n\r\nbody"));
        assert!(!header_ends(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!header_ends(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
    }

    #[tokio::test]
    async fn gathers_until_the_header_is_complete() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream: Stream = Box::new(server);
        let reader = tokio::spawn(async move { gather_head(&mut stream).await.unwrap() });
        client.write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(b": a\r\n\r").await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(b"\n").await.unwrap();
        assert_eq!(
            &reader.await.unwrap()[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn stops_at_the_gather_limit_and_at_end_of_stream() {
        let (mut client, server) = tokio::io::duplex(2 * HEAD_GATHER);
        let mut stream: Stream = Box::new(server);
        client.write_all(&[b'a'; HEAD_GATHER + 10]).await.unwrap();
        assert_eq!(gather_head(&mut stream).await.unwrap().len(), HEAD_GATHER);
        drop(client);
        // The rest, then the end of the stream.
        assert_eq!(gather_head(&mut stream).await.unwrap().len(), 10);
        assert!(gather_head(&mut stream).await.unwrap().is_empty());
    }
}
