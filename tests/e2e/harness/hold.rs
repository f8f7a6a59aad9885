//! A validating webhook of the test's that holds one kind of write inside the API server: the
//! client that sent it waits for the answer, at a point the test chose, for as long as the test
//! needs (up to the webhook's 30 s timeout). The test kills the client there, then drops the
//! hold: the held writes are refused (they belong to the killed client) and later ones allowed.
//!
//! This is how a SIGKILL lands at an exact step of `migrate` without depending on timing: the
//! run prints that a step starts, and the step's first write is held until the kill.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Env, kubectl_with, wait_until};

/// What a hold matches: the admission `rule`, the namespace (for namespaced resources) and a CEL
/// `condition` on `object`/`oldObject`. Conditions are evaluated for every write the rule
/// matches, cluster-wide: start them with a test on the name, so they never fail on others.
pub struct HoldSpec<'a> {
    pub rule: Value,
    pub namespace: Option<&'a str>,
    pub condition: String,
    /// kubectl arguments of a `--dry-run=server` write that matches: the hold is active once the
    /// API server sends it (dry runs are answered at once, and allowed).
    pub probe: Vec<String>,
    /// Its standard input (a manifest for `create`), or empty.
    pub probe_stdin: String,
}

pub struct Hold {
    name: String,
    kubeconfig: PathBuf,
    held: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

struct Counters {
    probes: AtomicUsize,
    held: Arc<AtomicUsize>,
    released: watch::Receiver<bool>,
}

impl Hold {
    /// Registers the hold `name` and returns once the API server calls it.
    pub fn start(env: &Env, name: &str, spec: HoldSpec<'_>) -> anyhow::Result<Self> {
        let pair = env.tls.ca.loopback_server("e2e hold")?;
        let certs = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = env
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let (release, released) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters {
            probes: AtomicUsize::new(0),
            held: held.clone(),
            released,
        });
        // The server outlives the hold: the API server may call it for a moment after the
        // configuration is deleted, and gets "allowed" then (not a failed call).
        let served = counters.clone();
        env.rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counters) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| answer(req, counters.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });

        let mut webhook = json!({
            "name": "hold.e2e.rwop-guard.dev",
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/hold"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(env.tls.ca.pem()),
            },
            "rules": [spec.rule],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 30,
            "matchConditions": [{"name": "held", "expression": spec.condition}],
        });
        if let Some(ns) = spec.namespace {
            webhook["namespaceSelector"] =
                json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
        }
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [webhook],
        });
        env.kubectl_stdin(&["create", "-f", "-"], &config.to_string())
            .success()?;
        let hold = Self {
            name: name.to_owned(),
            kubeconfig: env.plane.kubeconfig.clone(),
            held,
            release,
        };
        let probe: Vec<&str> = spec.probe.iter().map(String::as_str).collect();
        wait_until(
            &format!("the API server to call hold {name}"),
            Duration::from_secs(30),
            || {
                let before = counters.probes.load(Ordering::SeqCst);
                env.kubectl_stdin(&probe, &spec.probe_stdin);
                Ok((counters.probes.load(Ordering::SeqCst) > before).then_some(()))
            },
        )
        .with_context(|| format!("probe: kubectl {}", spec.probe.join(" ")))?;
        Ok(hold)
    }

    /// Waits until a write is held: its client is blocked inside that write.
    pub fn wait_held(&self, limit: Duration) -> anyhow::Result<()> {
        wait_until(&format!("a write held by {}", self.name), limit, || {
            Ok((self.held.load(Ordering::SeqCst) > 0).then_some(()))
        })
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release.send_replace(true);
        kubectl_with(
            &self.kubeconfig,
            &[
                "delete",
                "validatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ],
            "",
        );
    }
}

/// Dry runs: allowed at once (the probe). Other writes before the release: held until it, then
/// refused. After the release: allowed.
async fn answer(
    req: Request<Incoming>,
    counters: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let request = &review["request"];
    let allowed = if request["dryRun"] == true {
        counters.probes.fetch_add(1, Ordering::SeqCst);
        true
    } else if *counters.released.borrow() {
        true
    } else {
        counters.held.fetch_add(1, Ordering::SeqCst);
        let mut released = counters.released.clone();
        let _ = released.wait_for(|r| *r).await;
        false
    };
    let out = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": allowed,
            "status": {"message": "held by the end-to-end test for a client it killed"},
        },
    });
    Ok(Response::new(Full::new(Bytes::from(out.to_string()))))
}
