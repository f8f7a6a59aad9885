//! How the server tests start `rwop_guard::server` in process: a fresh CA and serving certificate
//! for localhost/127.0.0.1 written to a temporary directory, loopback ports of its own, and a
//! rustls client that trusts the CA. Included by path (`#[path = "support/server.rs"]`).

// Not every test crate that includes this uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rwop_guard::certs::{GeneratedCerts, generate};
use rwop_guard::server::{Limits, RunningServer, ServeOptions, TlsSource, start};
use tokio_rustls::TlsConnector;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

/// A new CA and a serving certificate for `localhost` and `127.0.0.1`, valid for a day.
pub fn new_certs() -> GeneratedCerts {
    generate(
        "rwop-guard test",
        &["localhost".to_owned()],
        &["127.0.0.1".parse().unwrap()],
        Duration::from_secs(86_400),
    )
    .unwrap()
}

/// Writes `tls.crt` and `tls.key` into `dir`.
pub fn write_pair(dir: &Path, certs: &GeneratedCerts) {
    std::fs::write(dir.join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &certs.key_pem).unwrap();
}

/// Serving `cert` and `key` on loopback ports picked by the kernel: default limits and policy,
/// no cluster, no reload but on a change notification.
pub fn options(cert: PathBuf, key: PathBuf) -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsSource::Files { cert, key },
        config: None,
        limits: Limits::default(),
        drain_timeout: Duration::from_secs(10),
        shutdown_delay: Duration::ZERO,
        reload_interval: Duration::from_secs(3600),
        cluster: None,
    }
}

/// A running server, the directory of its certificate (and policy), and the CA to trust.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub server: RunningServer,
    pub roots: Vec<String>,
}

/// A server with these limits and, when given, this policy (written to `policy.yaml`).
pub async fn serve_with(limits: Limits, policy: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let certs = new_certs();
    write_pair(dir.path(), &certs);
    let mut opts = options(dir.path().join("tls.crt"), dir.path().join("tls.key"));
    opts.limits = limits;
    opts.config = policy.map(|p| {
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, p).unwrap();
        path
    });
    let server = start(opts).await.unwrap();
    Fixture {
        dir,
        server,
        roots: vec![certs.ca_cert_pem],
    }
}

/// A TLS client trusting the CAs in `roots_pem` and offering only `alpn`.
pub fn connector(roots_pem: &[String], alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// `rwop-guard serve --dev` on loopback ports of its own, its log in a file.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub roots: Vec<String>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    pub async fn start(extra: &[&str]) -> ServeProcess {
        use std::process::Stdio;
        use tokio::io::AsyncBufReadExt;

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let log = dir.path().join("stderr.log");
        // RWOP_GUARD_TEST_BIN: another build to measure, e.g. target/release/rwop-guard.
        let binary = std::env::var_os("RWOP_GUARD_TEST_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_rwop-guard")),
            PathBuf::from,
        );
        let mut child = tokio::process::Command::new(binary)
            .args([
                "serve",
                "--dev",
                "--listen=127.0.0.1:0",
                "--metrics-listen=127.0.0.1:0",
            ])
            .arg("--dev-ca-out")
            .arg(&ca)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("RWOP_GUARD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&log).unwrap()));
        let port: u16 = first
            .split("https://localhost:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        let metrics_addr = first
            .split("metrics: http://")
            .nth(1)
            .unwrap()
            .trim_end_matches(')')
            .parse()
            .unwrap();
        // The rest of stdout is not needed; drain it so the child never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServeProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics_addr,
            roots: vec![std::fs::read_to_string(&ca).unwrap()],
            child,
            log,
            _dir: dir,
        }
    }
}
