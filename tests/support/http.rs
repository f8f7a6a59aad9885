//! HTTP by hand for the server tests: a TLS client trusting given CAs, one request written and
//! one HTTP/1.1 response read off a raw stream, each wait bounded by [`PATIENCE`].

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::PATIENCE;

/// A TLS client trusting the CAs in `roots_pem` and offering only `alpn`.
pub fn connector(roots_pem: &[String], alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.expect("a PEM certificate"))
                .expect("a usable CA");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("rustls' default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` for the name `localhost`, trusting `roots`, that negotiated
/// `alpn` (`b"http/1.1"` or `b"h2"`).
pub async fn connect(addr: SocketAddr, roots: &[String], alpn: &[u8]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio::time::timeout(
        PATIENCE,
        connector(roots, alpn).connect(ServerName::try_from("localhost").expect("a name"), tcp),
    )
    .await
    .expect("a TLS handshake in time")
    .expect("a TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
    tls
}

/// Writes one HTTP/1.1 request (`Content-Type` when given) and reads its response.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write the head");
    stream.write_all(body).await.expect("write the body");
    tokio::time::timeout(PATIENCE, read_response(stream))
        .await
        .expect("a response in time")
        .expect("a response")
}

/// `GET path` over plain HTTP (the metrics port).
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    send(&mut tcp, "GET", path, None, b"").await
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response with a Content-Length body; None if the stream ends first.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let headers = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status = headers.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(HttpResponse {
        status,
        headers,
        body: buf[header_end..header_end + length].to_vec(),
    })
}
