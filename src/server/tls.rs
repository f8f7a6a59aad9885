//! TLS: a certificate resolver whose key pair can be swapped while connections stay open, the
//! rustls server configuration, and an accept step that answers plain HTTP with a clear error.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

fn invalid(what: &str, message: impl ToString) -> TlsError {
    TlsError::Invalid {
        what: what.to_owned(),
        message: message.to_string(),
    }
}

pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key that belong together, with the leaf's notAfter.
pub struct KeyPairPem {
    pub certified: CertifiedKey,
    /// Unix seconds.
    pub not_after: i64,
}

/// Parses and checks a PEM chain and key: at least one certificate, a supported key, and a key
/// that matches the leaf certificate.
pub fn parse_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<KeyPairPem, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("certificate", format!("not PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid("certificate", "no CERTIFICATE block in the PEM"));
    };
    let not_after =
        not_after(leaf).ok_or_else(|| invalid("certificate", "cannot read the validity period"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid("private key", format!("no usable PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, &crypto_provider())
        .map_err(|e| invalid("certificate and key", format!("do not form a pair: {e}")))?;
    Ok(KeyPairPem {
        certified,
        not_after,
    })
}

/// Reads and checks the pair from files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<(KeyPairPem, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let pair = parse_pair(&cert_pem, &key_pem)?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((pair, fingerprint))
}

/// Serves whichever key pair was stored last. New handshakes pick up a reload at once; open
/// connections keep the keys they negotiated.
#[derive(Debug)]
pub struct CertReloader {
    current: ArcSwap<CertifiedKey>,
}

impl CertReloader {
    pub fn new(pair: KeyPairPem) -> Self {
        Self {
            current: ArcSwap::from_pointee(pair.certified),
        }
    }

    pub fn store(&self, pair: KeyPairPem) {
        self.current.store(Arc::new(pair.certified));
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 with the ring provider, HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(resolver: Arc<CertReloader>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS configuration", e))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// notAfter of a DER certificate, in Unix seconds.
fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// What a plain-HTTP client on the TLS port gets, instead of a reset it cannot explain.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 49\r\n\r\nThis port speaks HTTPS: use https:// to reach it\n";

/// Why a connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("plain HTTP on the TLS port (answered 400)")]
    PlainHttp,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
}

/// Accepts a TCP connection whose first byte opens a TLS handshake; anything else (plain HTTP)
/// gets a short 400 answer and is closed. The caller bounds the time this takes.
pub async fn accept(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
) -> Result<TlsStream<TcpStream>, AcceptError> {
    stream.set_nodelay(true).map_err(AcceptError::Handshake)?;
    let mut first = [0u8; 1];
    let n = stream
        .peek(&mut first)
        .await
        .map_err(AcceptError::Handshake)?;
    // 0x16: a TLS handshake record.
    if n == 1 && first[0] != 0x16 {
        let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
        let _ = stream.shutdown().await;
        return Err(AcceptError::PlainHttp);
    }
    acceptor
        .accept(stream)
        .await
        .map_err(AcceptError::Handshake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn not_after_of_a_generated_certificate() {
        let validity = Duration::from_secs(30 * 86_400);
        let g = crate::certs::generate("t", &["localhost".to_owned()], &[], validity).unwrap();
        let pair = parse_pair(g.cert_pem.as_bytes(), g.key_pem.as_bytes()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expected = now + validity.as_secs() as i64;
        assert!(
            (pair.not_after - expected).abs() <= 5,
            "{} vs {expected}",
            pair.not_after
        );
    }

    #[test]
    fn mismatched_or_garbage_pairs_are_rejected() {
        let a =
            crate::certs::generate("a", &["a".to_owned()], &[], Duration::from_secs(3600)).unwrap();
        let b =
            crate::certs::generate("b", &["b".to_owned()], &[], Duration::from_secs(3600)).unwrap();
        let err = parse_pair(a.cert_pem.as_bytes(), b.key_pem.as_bytes())
            .err()
            .unwrap();
        assert!(err.to_string().contains("do not form a pair"), "{err}");
        let err = parse_pair(b"hello", a.key_pem.as_bytes()).err().unwrap();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        let err = parse_pair(a.cert_pem.as_bytes(), b"").err().unwrap();
        assert!(err.to_string().contains("private key"), "{err}");
        assert!(not_after(&[0x30, 0x82]).is_none());
    }
}
