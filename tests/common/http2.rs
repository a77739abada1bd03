//! An HTTP/2 test client over TLS (ALPN h2): the h2 crate on tokio-openssl, one request per
//! connection, the body sent whole or streamed in frames without a declared length.

use super::tls::ClientTls;
use std::net::SocketAddr;

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
