//! How the server tests start `rwop_guard::server` in process (a fresh CA and serving
//! certificate for localhost/127.0.0.1 written to a temporary directory, loopback ports of its
//! own), or `rwop-guard serve --dev` as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rwop_guard::certs::{GeneratedCerts, generate};
use rwop_guard::server::{Limits, RunningServer, ServeOptions, TlsSource, start};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

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
        let mut command = crate::binary::command(crate::binary::path());
        command
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
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(crate::PATIENCE, lines.next_line())
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

    /// A connection on which `review` was answered 200 (the first one loads what the process
    /// keeps for TLS).
    pub async fn answered(&self, review: &[u8]) -> TlsStream<TcpStream> {
        let mut tls = crate::http::connect(self.addr, &self.roots, b"http/1.1").await;
        let answer = crate::http::send(
            &mut tls,
            "POST",
            "/validate",
            Some("application/json"),
            review,
        )
        .await;
        assert_eq!(answer.status, 200);
        tls
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// A `/proc/<pid>/status` value in bytes (VmRSS, VmHWM).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
            * 1024
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// Waits until the log has a line for which `check` holds; returns the whole log. The log
    /// is a file another process writes, with nothing to block on: it is re-read every 50 ms.
    pub async fn wait_log(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let found = tokio::time::timeout(crate::PATIENCE, async {
            loop {
                let log = std::fs::read_to_string(&self.log).unwrap();
                if log.lines().any(&check) {
                    return log;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no log line {what}:\n{}",
                std::fs::read_to_string(&self.log).unwrap()
            )
        })
    }
}
