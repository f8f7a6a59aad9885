//! Load test of the real webhook server against a bare-stack baseline, over TLS on loopback.
//!
//! Two child processes are started, so that their memory and CPU are measured apart from the
//! load generator and from each other:
//!
//! - `rwop-guard serve` (the release binary of this package) with a certificate generated for
//!   this run, `--no-cluster`, `RUST_LOG=warn` unless `LOAD_SERVER_LOG` says otherwise;
//! - a baseline: this bench binary re-executed with `--baseline-server`, serving the same stack
//!   (axum + rustls with `rwop_guard::server::tls::server_config`, the same connection loop
//!   and HTTP/1 settings) whose `POST /validate` reads the body and answers a fixed, pre-serialized
//!   AdmissionReview.
//!
//! At each concurrency level, N keep-alive HTTP/1.1 connections each send the captured
//! AdmissionReview `05-pv-patch-rwo-to-rwop.pv.validate.json` (minified, as the API server sends
//! it) as `POST /validate?timeout=5s`, back to back, for a warm-up and then a measured window.
//! Every answer must be 200 with the request's uid and `"allowed":true`; anything else is a
//! failure, printed, and makes the bench exit non-zero.
//!
//! The client is a minimal HTTP/1.1 exchange over a `rustls::ClientConnection` driven directly
//! on a tokio `TcpStream` (a few allocations per request), so that as much of the two shared
//! cores as possible goes to the servers. `LOAD_CLIENT=hyper` uses hyper's client connection
//! over tokio-rustls instead, to check that the hand-written client does not skew the result.
//!
//! Run: `cargo bench --bench load`. Settings (environment, all bounded):
//! - `LOAD_SECONDS` measured seconds per level (default 6, 1..=60)
//! - `LOAD_WARMUP_SECONDS` warm-up per level (default 1, 0..=10)
//! - `LOAD_CONCURRENCY` connections per level, comma-separated (default `1,16,64`, each 1..=512,
//!   at most 8 levels)
//! - `LOAD_CLIENT_THREADS` load generator threads (default 2, 1..=16)
//! - `LOAD_RATE` total requests per second, spread evenly over the connections (100..=200000);
//!   unset (default): each connection sends its next request as soon as the answer arrives.
//!   A fixed rate below both servers' capacity compares latency without queueing in it; the
//!   throughput ratio is then ~100 % by construction.
//! - `LOAD_SERVER_LOG` `RUST_LOG` of the rwop-guard server (default `warn`; `info` logs one line
//!   per review, as in production)
//! - `LOAD_LOG_FORMAT` `text` (default) or `json`
//! - `LOAD_CLIENT` `raw` (default) or `hyper`
//! - `LOAD_SUBJECT` `guard` (default) or `scan-floor`: what is compared with the baseline. The
//!   scan floor is the baseline server that also parses every body with serde_json (into
//!   `IgnoredAny`, nothing kept) before its fixed answer: the least work any server that reads
//!   the review with serde_json must do, so its ratio bounds what rwop-guard can reach.
//!
//! Without `--bench` (as under `cargo test --benches`), a short smoke run checks that both
//! servers answer correctly and prints no targets.

mod support;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURE: &str = "05-pv-patch-rwo-to-rwop.pv.validate.json";
const PATH: &str = "/validate?timeout=5s";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The baseline exits on its own after this long, whatever happens to its parent.
const BASELINE_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

const TARGET_THROUGHPUT: f64 = 0.85;
const TARGET_P99: f64 = 1.25;
const TARGET_RSS_MIB: f64 = 20.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--baseline-server") {
        return match baseline::run(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    let bench = args.iter().any(|a| a == "--bench");
    match run(bench) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    seconds: Duration,
    warmup: Duration,
    levels: Vec<usize>,
    client_threads: usize,
    /// Fixed total request rate (req/s) instead of back-to-back requests.
    rate: Option<u64>,
    server_log: String,
    log_format: String,
    client: ClientKind,
    subject: Subject,
    bench: bool,
}

/// What is measured against the baseline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// `rwop-guard serve`.
    Guard,
    /// The baseline server, parsing each body with serde_json before its fixed answer.
    ScanFloor,
}

impl Subject {
    /// Column label in the tables.
    fn label(self) -> &'static str {
        match self {
            Subject::Guard => "guard",
            Subject::ScanFloor => "floor",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Subject::Guard => "rwop-guard",
            Subject::ScanFloor => "scan floor",
        }
    }
}

/// What the baseline server does with a body before its fixed answer.
const WORK_NONE: &str = "none";
const WORK_SCAN: &str = "scan";

/// How the generator speaks HTTP.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    /// hyper's HTTP/1.1 client connection over tokio-rustls: the stack reqwest and most Rust
    /// HTTP clients are built on.
    Hyper,
    /// A minimal hand-written HTTP/1.1 exchange over a `rustls::ClientConnection`: about half
    /// the client CPU per request, so the servers get more of the shared cores.
    Raw,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Hyper => "hyper",
            ClientKind::Raw => "raw",
        }
    }
}

fn env_number(name: &str, default: u64, min: u64, max: u64) -> anyhow::Result<u64> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let n: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{name}={text:?} is not a number"))?;
    ensure!(
        (min..=max).contains(&n),
        "{name}={n}: must be {min}..={max}"
    );
    Ok(n)
}

impl Settings {
    /// The client of the `level`-th level: the chosen one, or in a smoke run each in turn.
    fn client_for(&self, level: usize) -> ClientKind {
        match (self.bench, level % 2) {
            (true, _) => self.client,
            (false, 0) => ClientKind::Raw,
            (false, _) => ClientKind::Hyper,
        }
    }

    fn from_env(bench: bool) -> anyhow::Result<Settings> {
        if !bench {
            return Ok(Settings {
                seconds: Duration::from_millis(500),
                warmup: Duration::ZERO,
                levels: vec![1, 4],
                client_threads: 1,
                rate: None,
                server_log: "warn".into(),
                log_format: "text".into(),
                // Both clients, one per level, so neither rots.
                client: ClientKind::Raw,
                subject: Subject::Guard,
                bench,
            });
        }
        let levels = match std::env::var("LOAD_CONCURRENCY") {
            Err(_) => vec![1, 16, 64],
            Ok(text) => text
                .split(',')
                .map(|s| {
                    let n: usize = s
                        .trim()
                        .parse()
                        .with_context(|| format!("LOAD_CONCURRENCY: {s:?} is not a number"))?;
                    ensure!(
                        (1..=512).contains(&n),
                        "LOAD_CONCURRENCY: {n} is not 1..=512"
                    );
                    Ok(n)
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        ensure!(
            (1..=8).contains(&levels.len()),
            "LOAD_CONCURRENCY: 1 to 8 levels"
        );
        let log_format = std::env::var("LOAD_LOG_FORMAT").unwrap_or_else(|_| "text".into());
        ensure!(
            log_format == "text" || log_format == "json",
            "LOAD_LOG_FORMAT must be text or json"
        );
        Ok(Settings {
            seconds: Duration::from_secs(env_number("LOAD_SECONDS", 6, 1, 60)?),
            warmup: Duration::from_secs(env_number("LOAD_WARMUP_SECONDS", 1, 0, 10)?),
            levels,
            client_threads: env_number("LOAD_CLIENT_THREADS", 2, 1, 16)? as usize,
            rate: match std::env::var("LOAD_RATE") {
                Err(_) => None,
                Ok(_) => Some(env_number("LOAD_RATE", 0, 100, 200_000)?),
            },
            server_log: std::env::var("LOAD_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            log_format,
            client: match std::env::var("LOAD_CLIENT").as_deref() {
                Err(_) | Ok("raw") => ClientKind::Raw,
                Ok("hyper") => ClientKind::Hyper,
                Ok(other) => bail!("LOAD_CLIENT={other:?}: must be hyper or raw"),
            },
            subject: match std::env::var("LOAD_SUBJECT").as_deref() {
                Err(_) | Ok("guard") => Subject::Guard,
                Ok("scan-floor") => Subject::ScanFloor,
                Ok(other) => bail!("LOAD_SUBJECT={other:?}: must be guard or scan-floor"),
            },
            bench,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture

fn fixture_body() -> anyhow::Result<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(FIXTURE);
    let raw = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let body = support::minify(&raw);
    let a: serde_json::Value = serde_json::from_slice(&raw)?;
    let b: serde_json::Value = serde_json::from_slice(&body)?;
    ensure!(a == b, "minifying {FIXTURE} changed it");
    Ok(body)
}

/// The answer for the fixture, as the real server computes it (default policy, no cluster).
fn expected_response(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    use rwop_guard::admission::{Webhook, review};
    use rwop_guard::policy::{Facts, Policy};
    let reviewed = review(
        Webhook::Validate,
        &Policy::default(),
        &Facts::default(),
        body,
    )?;
    ensure!(
        reviewed.summary.outcome == "warned",
        "{FIXTURE}: expected an allowed review with the W1 warning, got {}",
        reviewed.summary.outcome
    );
    Ok(reviewed.body)
}

/// What every answer must contain.
struct Check {
    needles: Vec<Vec<u8>>,
}

impl Check {
    fn new(body: &[u8]) -> anyhow::Result<Check> {
        let v: serde_json::Value = serde_json::from_slice(body)?;
        let uid = v["request"]["uid"]
            .as_str()
            .context("fixture has no request.uid")?;
        Ok(Check {
            needles: vec![
                format!("\"uid\":\"{uid}\"").into_bytes(),
                b"\"allowed\":true".to_vec(),
            ],
        })
    }

    fn ok(&self, body: &[u8]) -> bool {
        self.needles.iter().all(|n| find(body, n).is_some())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Kills the child when dropped, so that every exit path (errors and panics included) stops it.
struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    // Bound and released at once: another process could take it before the server binds it,
    // an acceptable race on loopback.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Servers {
    guard: ChildGuard,
    guard_addr: SocketAddr,
    guard_log: PathBuf,
    base: ChildGuard,
    base_addr: SocketAddr,
    base_log: PathBuf,
}

fn start_guard(
    log_dir: &Path,
    cert: &Path,
    key: &Path,
    settings: &Settings,
) -> anyhow::Result<(ChildGuard, SocketAddr, SocketAddr, PathBuf)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let log = log_dir.join("rwop-guard.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rwop-guard"));
    command
        .arg("serve")
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--no-cluster")
        .arg("--log-format")
        .arg(&settings.log_format)
        .env("RUST_LOG", &settings.server_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?);
    // Settings from the caller's environment would change what is measured.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RWOP_GUARD_") {
            command.env_remove(name);
        }
    }
    let guard = ChildGuard {
        child: command
            .spawn()
            .context("cannot start the rwop-guard binary")?,
    };
    Ok((guard, addr, metrics, log))
}

/// Polls `GET /readyz` on the metrics port until it answers 200 (at most ~10 s).
fn wait_ready(guard: &mut ChildGuard, metrics: SocketAddr, log: &Path) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Some(status) = guard.exited() {
            bail!(
                "rwop-guard exited before becoming ready ({status}); its log:\n{}",
                tail(log, 20)
            );
        }
        if readyz(metrics).unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "rwop-guard did not become ready on http://{metrics}/readyz; its log:\n{}",
        tail(log, 20)
    )
}

fn readyz(metrics: SocketAddr) -> io::Result<bool> {
    let mut stream = std::net::TcpStream::connect_timeout(&metrics, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut answer)?;
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}

/// Starts this binary as a baseline server doing `work` (`WORK_NONE` or `WORK_SCAN`).
fn start_baseline(
    log: PathBuf,
    cert: &Path,
    key: &Path,
    work: &str,
) -> anyhow::Result<(ChildGuard, SocketAddr, PathBuf)> {
    let mut guard = ChildGuard {
        child: Command::new(std::env::current_exe()?)
            .arg("--baseline-server")
            .arg(cert)
            .arg(key)
            .arg("0")
            .arg(work)
            // Kept open by us: the baseline exits when it closes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log)?)
            .spawn()
            .context("cannot start the baseline server")?,
    };
    let stdout = guard.child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let addr = line
        .strip_prefix("listening ")
        .and_then(|a| a.trim().parse().ok());
    match addr {
        Some(addr) => Ok((guard, addr, log)),
        None => bail!(
            "the baseline server did not start (said {line:?}); its log:\n{}",
            tail(&log, 20)
        ),
    }
}

/// utime + stime of a process, in clock ticks (USER_HZ, 100 per second on Linux).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After "pid (comm)": state is field 3, utime 14, stime 15.
    field(11) + field(12)
}

const USER_HZ: f64 = 100.0;

/// CPU ticks spent by everything on the machine in user, nice, system and steal time (irq and
/// softirq left out: loopback networking is accounted there).
fn system_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    at(0) + at(1) + at(2) + at(7)
}

/// VmHWM (peak resident set) in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// Client: HTTP/1.1 over rustls on a tokio TcpStream

struct Conn {
    tcp: TcpStream,
    tls: rustls::ClientConnection,
    net: Vec<u8>,
    out: Vec<u8>,
    plain: Vec<u8>,
}

struct Answer {
    status: u16,
    body_ok: bool,
}

impl Conn {
    async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let tls = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut conn = Conn {
            tcp,
            tls,
            net: vec![0; 32 * 1024],
            out: Vec::with_capacity(8 * 1024),
            plain: Vec::with_capacity(8 * 1024),
        };
        while conn.tls.is_handshaking() {
            conn.flush().await?;
            if conn.tls.is_handshaking() && conn.tls.wants_read() {
                conn.fill().await?;
            }
        }
        conn.flush().await?;
        Ok(conn)
    }

    /// Sends whatever TLS records rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.out.clear();
            self.tls.write_tls(&mut self.out)?;
            self.tcp.write_all(&self.out).await?;
        }
        Ok(())
    }

    /// Reads from the socket once and appends the decrypted bytes to `plain`.
    async fn fill(&mut self) -> io::Result<()> {
        let n = self.tcp.read(&mut self.net).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let mut input = &self.net[..n];
        while !input.is_empty() {
            self.tls.read_tls(&mut input)?;
            let state = self.tls.process_new_packets().map_err(io::Error::other)?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = self.plain.len();
                self.plain.resize(start + ready, 0);
                self.tls.reader().read_exact(&mut self.plain[start..])?;
            }
        }
        Ok(())
    }

    /// One request, one response. Returns the status and whether the body passed the check;
    /// the connection stays usable unless an error is returned.
    async fn exchange(&mut self, request: &[u8], check: &Check) -> io::Result<Answer> {
        self.tls.writer().write_all(request)?;
        self.flush().await?;
        loop {
            if let Some(head) = parse_head(&self.plain)? {
                let answer = Answer {
                    status: head.status,
                    body_ok: check.ok(&self.plain[head.body.clone()]),
                };
                self.plain.drain(..head.body.end);
                if head.close {
                    return Err(io::Error::other("the server asked to close the connection"));
                }
                return Ok(answer);
            }
            self.fill().await?;
            if self.tls.wants_write() {
                self.flush().await?;
            }
        }
    }
}

/// The same exchange through hyper's client connection.
struct HyperConn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl HyperConn {
    async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(io::Error::other)?;
        // Runs until `send` is dropped or the server closes the connection.
        tokio::spawn(connection);
        Ok(Self { send })
    }

    async fn exchange(&mut self, request: &HyperRequest, check: &Check) -> io::Result<Answer> {
        self.send.ready().await.map_err(io::Error::other)?;
        let message = hyper::Request::post(PATH)
            .header(hyper::header::HOST, request.host.clone())
            .header(hyper::header::USER_AGENT, "rwop-guard-load")
            .header(hyper::header::ACCEPT, "application/json, */*")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(request.body.clone()))
            .map_err(io::Error::other)?;
        let response = self
            .send
            .send_request(message)
            .await
            .map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        Ok(Answer {
            status,
            body_ok: check.ok(&body),
        })
    }
}

struct HyperRequest {
    host: hyper::header::HeaderValue,
    body: Bytes,
}

/// A keep-alive connection of either kind.
enum Client {
    Raw(Box<Conn>),
    Hyper(HyperConn),
}

impl Client {
    async fn connect(job: &Job) -> io::Result<Client> {
        Ok(match job.client {
            ClientKind::Raw => {
                Client::Raw(Box::new(Conn::connect(job.addr, job.config.clone()).await?))
            }
            ClientKind::Hyper => {
                Client::Hyper(HyperConn::connect(job.addr, job.config.clone()).await?)
            }
        })
    }

    async fn exchange(&mut self, job: &Job) -> io::Result<Answer> {
        match self {
            Client::Raw(c) => c.exchange(&job.request, &job.check).await,
            Client::Hyper(c) => c.exchange(&job.hyper_request, &job.check).await,
        }
    }
}

struct Head {
    status: u16,
    body: std::ops::Range<usize>,
    close: bool,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A complete response at the start of `buf`, or None when more bytes are needed.
fn parse_head(buf: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(invalid("response headers larger than 64 KiB"));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("headers are not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let (mut length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(format!("unsupported transfer-encoding {value}")));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.ok_or_else(|| invalid("response without content-length"))?;
    let body = end + 4..end + 4 + length;
    if buf.len() < body.end {
        return Ok(None);
    }
    Ok(Some(Head {
        status,
        body,
        close,
    }))
}

fn client_config(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(rwop_guard::server::tls::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// One level against one server

#[derive(Default)]
struct WorkerStats {
    /// Latencies (ns) of successful requests started in the measured window.
    latencies: Vec<u64>,
    failures: u64,
    errors: Vec<String>,
}

impl WorkerStats {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.errors.len() < 3 {
            self.errors.push(what);
        }
    }
}

struct Job {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    client: ClientKind,
    request: Arc<[u8]>,
    hyper_request: HyperRequest,
    check: Arc<Check>,
    measure_from: Instant,
    until: Instant,
    /// Fixed-rate mode: time between two requests on one connection.
    interval: Option<Duration>,
}

async fn worker(job: Arc<Job>, index: usize, concurrency: usize) -> WorkerStats {
    let mut stats = WorkerStats {
        latencies: Vec::with_capacity(64 * 1024),
        ..WorkerStats::default()
    };
    let mut conn: Option<Client> = None;
    // Fixed rate: connections take turns, evenly spread over one interval.
    let mut next_send = job
        .interval
        .map(|i| Instant::now() + i.mul_f64(index as f64 / concurrency as f64));
    while Instant::now() < job.until {
        if let (Some(next), Some(interval)) = (next_send.as_mut(), job.interval) {
            // Latency is measured from the actual send: the timer is only ms-precise.
            tokio::time::sleep_until((*next).into()).await;
            *next += interval;
            if Instant::now() >= job.until {
                break;
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&job)).await {
                Ok(Ok(c)) => conn.insert(c),
                Ok(Err(e)) => {
                    stats.fail(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(_) => {
                    stats.fail("connect: timed out".into());
                    continue;
                }
            },
        };
        let started = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, c.exchange(&job)).await;
        let elapsed = started.elapsed();
        match result {
            Ok(Ok(Answer {
                status: 200,
                body_ok: true,
            })) => {
                if started >= job.measure_from {
                    stats.latencies.push(elapsed.as_nanos() as u64);
                }
            }
            Ok(Ok(Answer { status, body_ok })) => {
                stats.fail(format!("answer: status {status}, expected body: {body_ok}"));
            }
            Ok(Err(e)) => {
                stats.fail(format!("request: {e}"));
                conn = None;
            }
            Err(_) => {
                stats.fail("request: no answer within 5 s".into());
                conn = None;
            }
        }
    }
    stats
}

struct LevelResult {
    requests: u64,
    failures: u64,
    errors: Vec<String>,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    server_cpu_us_per_req: f64,
    client_cpu_us_per_req: f64,
    /// CPU used by other processes during the window, % of one CPU (noise on a shared machine).
    others_cpu_percent: f64,
    peak_rss_mib: f64,
}

async fn run_level(job: Job, concurrency: usize, server_pid: u32) -> anyhow::Result<LevelResult> {
    let job = Arc::new(job);
    let workers: Vec<_> = (0..concurrency)
        .map(|i| tokio::spawn(worker(job.clone(), i, concurrency)))
        .collect();
    let (pid, me) = (server_pid.to_string(), "self");
    tokio::time::sleep_until(job.measure_from.into()).await;
    let (server0, client0, all0) = (cpu_ticks(&pid), cpu_ticks(me), system_ticks());
    tokio::time::sleep_until(job.until.into()).await;
    let (server1, client1, all1) = (cpu_ticks(&pid), cpu_ticks(me), system_ticks());
    let window = job.until - job.measure_from;

    let mut latencies = Vec::new();
    let (mut failures, mut errors) = (0, Vec::new());
    for w in workers {
        let stats = w.await.context("load worker panicked")?;
        latencies.extend_from_slice(&stats.latencies);
        failures += stats.failures;
        errors.extend(stats.errors);
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    let per_req = |ticks: u64| ticks as f64 / USER_HZ * 1e6 / requests.max(1) as f64;
    let (server, client) = (
        server1.saturating_sub(server0),
        client1.saturating_sub(client0),
    );
    let others = all1.saturating_sub(all0).saturating_sub(server + client);
    Ok(LevelResult {
        requests,
        failures,
        errors,
        rps: requests as f64 / window.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        server_cpu_us_per_req: per_req(server),
        client_cpu_us_per_req: per_req(client),
        others_cpu_percent: others as f64 / USER_HZ / window.as_secs_f64() * 100.0,
        peak_rss_mib: peak_rss_mib(server_pid),
    })
}

// ---------------------------------------------------------------------------------------------
// The run

fn run(bench: bool) -> anyhow::Result<bool> {
    let settings = Settings::from_env(bench)?;
    let body = fixture_body()?;
    expected_response(&body)?;
    let check = Arc::new(Check::new(&body)?);

    let dir = tempfile::tempdir()?;
    let certs = rwop_guard::certs::generate(
        "rwop-guard bench",
        &["localhost".to_owned()],
        &[Ipv4Addr::LOCALHOST.into()],
        Duration::from_secs(86_400),
    )?;
    // Separate directories: the server watches the certificate's directory, and log writes
    // next to it would wake its watcher on every request.
    let (tls_dir, log_dir) = (dir.path().join("tls"), dir.path().join("logs"));
    std::fs::create_dir(&tls_dir)?;
    std::fs::create_dir(&log_dir)?;
    let (cert, key) = (tls_dir.join("tls.crt"), tls_dir.join("tls.key"));
    std::fs::write(&cert, &certs.cert_pem)?;
    std::fs::write(&key, &certs.key_pem)?;
    let config = client_config(&certs.ca_cert_pem)?;

    let (guard, guard_addr, guard_log) = match settings.subject {
        Subject::Guard => {
            let (mut guard, addr, metrics, log) = start_guard(&log_dir, &cert, &key, &settings)?;
            wait_ready(&mut guard, metrics, &log)?;
            (guard, addr, log)
        }
        Subject::ScanFloor => start_baseline(log_dir.join("floor.log"), &cert, &key, WORK_SCAN)?,
    };
    // A smoke run judges nothing, so its baseline also scans: both paths of the baseline stay
    // exercised under `cargo test --benches`.
    let base_work = if settings.bench { WORK_NONE } else { WORK_SCAN };
    let (base, base_addr, base_log) =
        start_baseline(log_dir.join("baseline.log"), &cert, &key, base_work)?;
    let mut servers = Servers {
        guard,
        guard_addr,
        guard_log,
        base,
        base_addr,
        base_log,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(&settings, &mut servers, &body, &check, &config));
    if !matches!(result, Ok(true)) {
        eprintln!(
            "--- {} log (last lines):\n{}",
            settings.subject.name(),
            tail(&servers.guard_log, 10)
        );
        eprintln!(
            "--- baseline log (last lines):\n{}",
            tail(&servers.base_log, 10)
        );
    }
    if settings.subject == Subject::Guard && settings.server_log != "warn" {
        let size = std::fs::metadata(&servers.guard_log).map_or(0, |m| m.len());
        println!(
            "rwop-guard wrote {:.1} MiB of logs (RUST_LOG={}, --log-format {}) to a file",
            size as f64 / (1024.0 * 1024.0),
            settings.server_log,
            settings.log_format
        );
    }
    drop(servers); // kills both children
    result
}

async fn measure(
    settings: &Settings,
    servers: &mut Servers,
    body: &[u8],
    check: &Arc<Check>,
    config: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<bool> {
    let request = |addr: SocketAddr| -> Arc<[u8]> {
        let mut r = format!(
            "POST {PATH} HTTP/1.1\r\nHost: localhost:{}\r\nUser-Agent: rwop-guard-load\r\n\
             Accept: application/json, */*\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            addr.port(),
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r.into()
    };
    let (guard_request, base_request) = (request(servers.guard_addr), request(servers.base_addr));

    // What the connection negotiates, for the report.
    let probe = Conn::connect(servers.guard_addr, config.clone()).await?;
    let protocol = format!(
        "{:?}, {:?}, ALPN {}",
        probe.tls.protocol_version().context("no TLS version")?,
        probe
            .tls
            .negotiated_cipher_suite()
            .context("no cipher suite")?
            .suite(),
        probe
            .tls
            .alpn_protocol()
            .map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned())
    );
    drop(probe);

    println!();
    println!(
        "load: POST {PATH}, {FIXTURE} ({} bytes minified), HTTP/1.1 keep-alive over {protocol}",
        body.len()
    );
    let baseline = if settings.bench {
        "same stack, fixed answer"
    } else {
        "same stack, body parsed, fixed answer (smoke run)"
    };
    match settings.subject {
        Subject::Guard => println!(
            "rwop-guard: RUST_LOG={} --log-format {} --no-cluster; baseline: {baseline}",
            settings.server_log, settings.log_format
        ),
        Subject::ScanFloor => println!(
            "subject: the scan floor (the baseline, also parsing each body with serde_json), \
             not rwop-guard; baseline: {baseline}"
        ),
    }
    println!(
        "per level: {:.0} s warm-up + {:.1} s measured, each server in turn; generator: {} client, {} thread(s); {} CPU(s)",
        settings.warmup.as_secs_f64(),
        settings.seconds.as_secs_f64(),
        if settings.bench {
            settings.client.name()
        } else {
            "raw and hyper"
        },
        settings.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    match settings.rate {
        None => println!("mode: closed loop, each connection sends as soon as it has its answer"),
        Some(rate) => println!(
            "mode: fixed rate, {rate} req/s in total spread over the connections \
             (the throughput ratio is ~100 % by construction)"
        ),
    }
    if !settings.bench {
        println!("(smoke run: run `cargo bench --bench load` for numbers)");
    }
    println!();
    println!(
        "{:>5} | {:>9} {:>8} {:>8} {:>5} | {:>9} {:>8} {:>8} {:>5} | {:>13} | {:>12}",
        "conns",
        format!("{} r/s", settings.subject.label()),
        "p50 µs",
        "p99 µs",
        "fail",
        "base r/s",
        "p50 µs",
        "p99 µs",
        "fail",
        "thrpt % base",
        "p99 × base"
    );

    // A smoke run is too short to judge the targets.
    let mark = |pass: bool| if settings.bench { verdict(pass) } else { "" };
    let mut all_ok = true;
    let mut rows = Vec::new();
    for (i, &concurrency) in settings.levels.iter().enumerate() {
        if let Some(status) = servers.guard.exited() {
            bail!("{} exited ({status})", settings.subject.name());
        }
        if let Some(status) = servers.base.exited() {
            bail!("the baseline server exited ({status})");
        }
        // Alternate which server goes first, so drift on a shared machine does not always
        // favour the same one.
        let order: [bool; 2] = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let (mut g, mut b) = (None, None);
        for is_guard in order {
            let (addr, pid, request) = if is_guard {
                (
                    servers.guard_addr,
                    servers.guard.pid(),
                    guard_request.clone(),
                )
            } else {
                (servers.base_addr, servers.base.pid(), base_request.clone())
            };
            let start = Instant::now();
            let job = Job {
                addr,
                config: config.clone(),
                client: settings.client_for(i),
                request,
                hyper_request: HyperRequest {
                    host: hyper::header::HeaderValue::from_str(&format!(
                        "localhost:{}",
                        addr.port()
                    ))?,
                    body: Bytes::copy_from_slice(body),
                },
                check: check.clone(),
                measure_from: start + settings.warmup,
                until: start + settings.warmup + settings.seconds,
                interval: settings
                    .rate
                    .map(|rate| Duration::from_secs_f64(concurrency as f64 / rate as f64)),
            };
            let r = run_level(job, concurrency, pid).await?;
            if is_guard {
                g = Some(r);
            } else {
                b = Some(r);
            }
        }
        let (g, b) = (g.context("no result")?, b.context("no result")?);
        let thrpt = g.rps / b.rps;
        let p99 = g.p99_us / b.p99_us;
        println!(
            "{:>5} | {:>9.0} {:>8.1} {:>8.1} {:>5} | {:>9.0} {:>8.1} {:>8.1} {:>5} | {:>6.1} % {:<4} | {:>6.2} {:<4}",
            concurrency,
            g.rps,
            g.p50_us,
            g.p99_us,
            g.failures,
            b.rps,
            b.p50_us,
            b.p99_us,
            b.failures,
            thrpt * 100.0,
            if settings.rate.is_some() {
                "n/a"
            } else {
                mark(thrpt >= TARGET_THROUGHPUT)
            },
            p99,
            mark(p99 <= TARGET_P99),
        );
        for (who, r) in [(settings.subject.name(), &g), ("baseline", &b)] {
            for e in &r.errors {
                println!("      {who} failure: {e}");
            }
            if r.requests == 0 {
                println!("      {who}: no successful request");
                all_ok = false;
            }
        }
        all_ok &= g.failures == 0 && b.failures == 0;
        rows.push((concurrency, g, b));
    }

    println!();
    println!(
        "{:>5} | {:>22} | {:>22} | {:>18} | {:>17} | {:>14}",
        "conns",
        format!("{} CPU µs/req", settings.subject.label()),
        "base CPU µs/req",
        format!("{} peak RSS MiB", settings.subject.label()),
        "base peak RSS MiB",
        "other CPU g/b %"
    );
    for (concurrency, g, b) in &rows {
        println!(
            "{:>5} | {:>10.1} (gen {:>5.1}) | {:>10.1} (gen {:>5.1}) | {:>18.1} | {:>17.1} | {:>6.0} / {:<5.0}",
            concurrency,
            g.server_cpu_us_per_req,
            g.client_cpu_us_per_req,
            b.server_cpu_us_per_req,
            b.client_cpu_us_per_req,
            g.peak_rss_mib,
            b.peak_rss_mib,
            g.others_cpu_percent,
            b.others_cpu_percent
        );
    }
    let guard_rss = peak_rss_mib(servers.guard.pid());
    let base_rss = peak_rss_mib(servers.base.pid());
    println!();
    println!(
        "peak RSS (VmHWM at the end): {} {guard_rss:.1} MiB, baseline {base_rss:.1} MiB",
        settings.subject.name()
    );
    if settings.bench {
        println!();
        match settings.subject {
            Subject::Guard => println!("targets:"),
            Subject::ScanFloor => println!("targets, applied to the scan floor:"),
        }
        for (concurrency, g, b) in &rows {
            let thrpt = g.rps / b.rps;
            let p99 = g.p99_us / b.p99_us;
            let thrpt_verdict = if settings.rate.is_some() {
                "n/a at a fixed rate"
            } else {
                verdict(thrpt >= TARGET_THROUGHPUT)
            };
            println!(
                "  {concurrency:>3} conns: throughput {:.1} % of baseline (≥ 85 %) {}; p99 {:.2} × baseline (≤ 1.25) {}",
                thrpt * 100.0,
                thrpt_verdict,
                p99,
                verdict(p99 <= TARGET_P99)
            );
        }
        println!(
            "  peak RSS {guard_rss:.1} MiB (≤ {TARGET_RSS_MIB} MiB) {}",
            verdict(guard_rss <= TARGET_RSS_MIB)
        );
    }
    let failures: u64 = rows.iter().map(|(_, g, b)| g.failures + b.failures).sum();
    println!("failures: {failures}");
    Ok(all_ok)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

// ---------------------------------------------------------------------------------------------
// The baseline server (runs in its own process)

mod baseline {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::Arc;

    use anyhow::{Context, bail};
    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use rwop_guard::policy::Policy;
    use rwop_guard::server::connections::{self, Endpoint};
    use rwop_guard::server::tls::{self, CertReloader};
    use rwop_guard::server::{AppState, Limits};
    use serde::de::IgnoredAny;

    /// `--baseline-server <cert> <key> <port> <work>`: serves until stdin closes (the parent is
    /// gone) or for at most [`super::BASELINE_MAX_LIFETIME`]. Prints `listening <addr>` when
    /// ready. `work` is `none` (read the body, answer) or `scan` (also parse the body with
    /// serde_json, keeping nothing).
    pub fn run(args: &[String]) -> anyhow::Result<()> {
        let [cert, key, port, work] = args else {
            bail!("usage: --baseline-server <cert.pem> <key.pem> <port> none|scan");
        };
        let port: u16 = port.parse().context("bad port")?;
        let scan = match work.as_str() {
            super::WORK_NONE => false,
            super::WORK_SCAN => true,
            other => bail!("unknown work {other:?}: none or scan"),
        };
        std::thread::spawn(|| {
            let mut byte = [0u8; 1];
            let _ = std::io::stdin().read(&mut byte);
            std::process::exit(0);
        });
        std::thread::spawn(|| {
            std::thread::sleep(super::BASELINE_MAX_LIFETIME);
            std::process::exit(0);
        });

        let answer = Bytes::from(super::expected_response(&super::fixture_body()?)?);
        let pair = tls::parse_pair(&std::fs::read(cert)?, &std::fs::read(key)?)?;
        let acceptor =
            tokio_rustls::TlsAcceptor::from(tls::server_config(Arc::new(CertReloader::new(pair)))?);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;

        // The same runtime as `rwop-guard serve`.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let app = Router::new().route(
                "/validate",
                post(move |body: Bytes| {
                    let answer = answer.clone();
                    async move {
                        if scan && serde_json::from_slice::<IgnoredAny>(&body).is_err() {
                            return StatusCode::BAD_REQUEST.into_response();
                        }
                        drop(body);
                        (
                            [(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            )],
                            answer,
                        )
                            .into_response()
                    }
                }),
            );
            // The same connection handling (TLS accept, HTTP settings, limits) as
            // rwop_guard::server::start, without its request layers.
            let limits = Limits::default();
            let endpoint = Endpoint {
                name: "webhook",
                listener: tokio::net::TcpListener::from_std(listener)?,
                tls: Some(acceptor),
                limits: connections::ConnectionLimits {
                    max_connections: limits.max_connections,
                    header_timeout: limits.header_timeout,
                    idle_timeout: limits.idle_timeout,
                    request_timeout: limits.request_timeout,
                },
            };
            println!("listening {addr}");
            std::io::stdout().flush()?;
            // Never drained: the process exits instead.
            let (_drain, drained) = tokio::sync::watch::channel(None);
            let state = Arc::new(AppState::new(Policy::default()));
            connections::serve(endpoint, app, state, drained).await;
            Ok(())
        })
    }
}
