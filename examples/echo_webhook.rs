//! The baseline of `scripts/load.sh`: the least any webhook must do, on rwop-guard's own stack
//! (tokio, rustls with ring, hyper, axum). `POST /validate` parses the AdmissionReview with
//! serde_json and answers `allowed: true` with the request's uid; no policy, limits, metrics or
//! logging.
//!
//! `cargo run --release --example echo_webhook -- CERT.pem KEY.pem 127.0.0.1:PORT`
//! Serves until killed.

use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Review {
    request: Request,
}

#[derive(Deserialize)]
struct Request {
    uid: String,
}

async fn echo(Json(review): Json<Review>) -> Json<Value> {
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": review.request.uid, "allowed": true},
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let [_, cert, key, addr] = <[String; 4]>::try_from(std::env::args().collect::<Vec<_>>())
        .map_err(|_| anyhow::anyhow!("usage: echo_webhook CERT.pem KEY.pem ADDR"))?;
    let certs = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {key}"))?;
    // The same TLS settings as the server (src/server/tls.rs): ring, TLS 1.2/1.3, h2 + http/1.1.
    let mut config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = axum::Router::new().route("/validate", post(echo));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let service = TowerToHyperService::new(app);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            }
        });
    }
}
