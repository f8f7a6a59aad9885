//! End-to-end cases: serve. What a webhook with failurePolicy Fail must get right while the API
//! server keeps calling it: a pod that terminates (SIGTERM, shutdown delay, drain) and a serving
//! certificate that rotates (the kubelet's `..data` swap). Both cases keep a writer busy against
//! the cluster throughout, and no write may fail.
//!
//! Both re-point the cluster's webhook configurations at a server of their own, so they are
//! exclusive; each points them back at the shared server when it ends, also when it fails.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::Case;
use crate::harness::pki::{Ca, Pair};
use crate::harness::webhook::{Serve, ServeSpec, log_lines};
use crate::harness::{CSI_CLASS, Env, claim, csi_volume, docs, wait_until};

pub fn cases() -> Vec<Case> {
    vec![
        Case::exclusive(
            "serve::sigterm_while_the_api_server_calls_it_fails_no_write",
            sigterm_fails_no_write,
        ),
        Case::exclusive(
            "serve::certificate_rotation_while_the_api_server_calls_it_fails_no_write",
            rotation_fails_no_write,
        ),
    ]
}

/// Every review a server answered (validating and mutating).
const REQUESTS: &str = "rwop_guard_requests_total";
/// Concurrent writer tasks.
const WRITERS: usize = 2;
/// Complete writer rounds (see [`Writer`]) required at each stage of a case.
const ROUNDS: u64 = 20;
/// Reviews of the writer's objects that the terminating server must answer after it logged
/// SIGTERM before the configurations move away from it (the endpoints' propagation delay).
const REVIEWS_AFTER_SIGTERM: usize = 20;
/// `serve`'s default `--drain-timeout` (the chart does not set it).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// SIGTERM to a server the API server is calling, with the chart's `--shutdown-delay`: while it
/// keeps answering (readiness failing), the configurations move to the shared server A, as a
/// Service does when the terminating pod leaves its endpoints. No write may fail, and B must
/// exit 0.
fn sigterm_fails_no_write(env: &Env) -> anyhow::Result<()> {
    let chart_args = chart_serve_args(env)?;
    let delay = shutdown_delay(&chart_args)?;
    let log = env.dir.join("serve-sigterm.log");
    let _ = std::fs::remove_file(&log);
    let extra: Vec<&str> = chart_args.iter().map(String::as_str).collect();
    let mut b = Serve::start(&ServeSpec {
        tls_cert: &env.tls.cert,
        tls_key: &env.tls.key,
        config: &env.policy,
        kubeconfig: &env.plane.kubeconfig,
        log: &log,
        extra_args: &extra,
    })
    .context("starting server B")?;
    let mut restore = Restore::new(env);
    env.register(&env.chart, &b)
        .context("registering the chart's webhooks against server B")?;

    let writer = Writer::start(env, "sigterm")?;
    let b_before = b.metric(REQUESTS)?;
    writer.wait_rounds(ROUNDS, "writes reviewed by B")?;
    let b_reviewed = b.metric(REQUESTS)? - b_before;
    anyhow::ensure!(
        b_reviewed >= ROUNDS as f64,
        "B answered {b_reviewed} reviews during {ROUNDS} writer rounds: the API server is not \
         calling it"
    );

    let rounds_at_sigterm = writer.rounds();
    let sigterm = Instant::now();
    b.process.signal(libc::SIGTERM);
    // What the kubelet's readiness probe sees at once; B keeps serving for `delay`.
    wait_until("B's /readyz to fail after SIGTERM", delay, || {
        Ok(b.get("/readyz").ok().filter(|(code, _)| *code == 503))
    })
    .with_context(|| server_log(&b))?;
    let after = wait_until(
        &format!("B to answer {REVIEWS_AFTER_SIGTERM} reviews of the writer after SIGTERM"),
        delay,
        || {
            Ok(reviews_after_sigterm(&b.process.log, &writer.prefix)
                .filter(|r| r.len() >= REVIEWS_AFTER_SIGTERM))
        },
    )
    .with_context(|| format!("writer: {}; {}", writer.summary(), server_log(&b)))?;
    let until_moved = sigterm.elapsed();
    restore
        .now()
        .context("re-registering the shared server A during B's shutdown delay")?;
    let moved = sigterm.elapsed();

    let status = b
        .process
        .wait_exit(delay + DRAIN_TIMEOUT + Duration::from_secs(10));
    let exited = sigterm.elapsed();
    let rounds_at_exit = writer.rounds();
    let a_at_exit = env.serve().metric(REQUESTS)?;
    writer.wait_rounds(ROUNDS, "writes reviewed by A after B exited")?;
    let a_reviewed = env.serve().metric(REQUESTS)? - a_at_exit;
    let report = writer.finish()?;
    let status = status?;
    eprintln!(
        "serve: SIGTERM at {}; B answered {} writer reviews before the move at +{:.2}s; A \
         registered at +{moved:.2?}; B exited ({status}) at +{exited:.2?} (shutdown delay \
         {delay:?}); {} writer rounds, {} during B's shutdown",
        report.t(sigterm),
        after.len(),
        until_moved.as_secs_f64(),
        report.rounds,
        rounds_at_exit - rounds_at_sigterm,
    );

    report.ensure_no_failure(&format!(
        "SIGTERM to B at {}, A registered at +{moved:.2?}, B exited at +{exited:.2?}; B's log: \
         {}",
        report.t(sigterm),
        server_log(&b)
    ))?;
    anyhow::ensure!(
        status.code() == Some(0),
        "B exited with {status} after SIGTERM, 0 expected; {}",
        server_log(&b)
    );
    anyhow::ensure!(
        exited >= delay,
        "B exited {exited:.2?} after SIGTERM, before its shutdown delay of {delay:?} ended"
    );
    let volume_updates = after
        .iter()
        .filter(|r| r["kind"] == "PersistentVolume" && r["operation"] == "UPDATE")
        .count();
    anyhow::ensure!(
        volume_updates > 0,
        "none of the {} reviews B answered after SIGTERM was a PersistentVolume UPDATE: {after:#?}",
        after.len()
    );
    anyhow::ensure!(
        rounds_at_exit > rounds_at_sigterm,
        "no writer round completed between SIGTERM and B's exit"
    );
    anyhow::ensure!(
        a_reviewed >= ROUNDS as f64,
        "A answered {a_reviewed} reviews during {ROUNDS} writer rounds after B exited"
    );
    Ok(())
}

/// The certificate of a server the API server is calling is rotated the way the kubelet updates
/// a Secret volume. The server must reload it (new handshakes get the new certificate) without a
/// failed write, on the API server's open connections and on new ones.
fn rotation_fails_no_write(env: &Env) -> anyhow::Result<()> {
    let chart_args = chart_serve_args(env)?;
    let extra: Vec<&str> = chart_args.iter().map(String::as_str).collect();
    let ca = &env.tls.ca;
    let first = ca.loopback_server("rwop-guard rotation first")?;
    let second = ca.loopback_server("rwop-guard rotation second")?;
    let (first_der, second_der) = (leaf_der(&first)?, leaf_der(&second)?);
    anyhow::ensure!(first_der != second_der, "the two certificates are the same");

    let mut volume = SecretVolume::create(&env.dir.join("rotation-tls"), &first)?;
    let log = env.dir.join("serve-rotation.log");
    let _ = std::fs::remove_file(&log);
    let c = Serve::start(&ServeSpec {
        tls_cert: &volume.dir.join("tls.crt"),
        tls_key: &volume.dir.join("tls.key"),
        config: &env.policy,
        kubeconfig: &env.plane.kubeconfig,
        log: &log,
        extra_args: &extra,
    })
    .context("starting server C on a Secret-like certificate directory")?;
    anyhow::ensure!(
        served_certificate(c.addr, ca)? == first_der,
        "C does not serve the certificate of {}",
        volume.dir.display()
    );
    let mut restore = Restore::new(env);
    env.register(&env.chart, &c)
        .context("registering the chart's webhooks against server C")?;

    let writer = Writer::start(env, "rotation")?;
    writer.wait_rounds(ROUNDS, "writes reviewed by C before the rotation")?;
    let (ok_before, failed_before) = (tls_reloads(&c, "ok")?, tls_reloads(&c, "failed")?);

    let rotated = Instant::now();
    volume.update(&second)?;
    let reloaded = wait_until(
        "C to reload its certificate and serve the new one to a new handshake",
        // Well within the 30 s periodic re-read: the `..data` swap's notification must do it.
        Duration::from_secs(10),
        || {
            if tls_reloads(&c, "ok")? <= ok_before {
                return Ok(None);
            }
            Ok((served_certificate(c.addr, ca)? == second_der).then(|| rotated.elapsed()))
        },
    )
    .with_context(|| server_log(&c))?;

    // The API server's open connections negotiated with the old certificate and stay open.
    let old_connections = connections_to(c.addr)?;
    let c_at_rotation = c.metric(REQUESTS)?;
    writer.wait_rounds(ROUNDS, "writes reviewed by C after the rotation")?;
    let c_after_rotation = c.metric(REQUESTS)? - c_at_rotation;

    // A client with another cache key (the same CA, other bytes) makes the API server open new
    // connections to C, which must accept the rotated certificate: what a restarted API server,
    // or one whose connections dropped, does.
    register_with_ca_bundle(env, &c, format!("{}\n", ca.pem()).as_bytes())
        .context("re-registering C with a new caBundle (the same CA)")?;
    let c_at_new_client = c.metric(REQUESTS)?;
    writer.wait_rounds(ROUNDS, "writes reviewed by C on new connections")?;
    let c_after_new_client = c.metric(REQUESTS)? - c_at_new_client;
    let new_connections: Vec<u16> = connections_to(c.addr)?
        .difference(&old_connections)
        .copied()
        .collect();
    let report = writer.finish()?;
    let (ok_after, failed_after) = (tls_reloads(&c, "ok")?, tls_reloads(&c, "failed")?);
    restore.now()?;
    eprintln!(
        "serve: certificate swapped at {}, served {reloaded:.2?} later; {} writer rounds; C \
         answered {c_after_rotation} reviews on old connections {old_connections:?}, \
         {c_after_new_client} after the API server opened {new_connections:?}",
        report.t(rotated),
        report.rounds,
    );

    report.ensure_no_failure(&format!(
        "certificate swapped at {}, served {reloaded:.2?} later; C's log: {}",
        report.t(rotated),
        server_log(&c)
    ))?;
    anyhow::ensure!(
        failed_after == failed_before && ok_after == ok_before + 1.0,
        "rwop_guard_tls_reloads_total: ok {ok_before} -> {ok_after}, failed {failed_before} -> \
         {failed_after}; one ok reload expected for one atomic swap; {}",
        server_log(&c)
    );
    anyhow::ensure!(
        c_after_rotation >= ROUNDS as f64,
        "C answered {c_after_rotation} reviews during {ROUNDS} writer rounds after the rotation"
    );
    anyhow::ensure!(
        !new_connections.is_empty(),
        "the API server opened no connection to C after the rotation (open before: \
         {old_connections:?}): no handshake with the new certificate was tested"
    );
    anyhow::ensure!(
        c_after_new_client >= ROUNDS as f64,
        "C answered {c_after_new_client} reviews during {ROUNDS} writer rounds on new connections"
    );
    Ok(())
}

/// The flags of `rwop-guard serve` that the chart's Deployment passes and that matter here:
/// `--shutdown-delay` and `--request-timeout` (the harness sets the files, ports and format).
fn chart_serve_args(env: &Env) -> anyhow::Result<Vec<String>> {
    let deployment = env
        .chart
        .documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .context("the chart rendered no Deployment")?;
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .context("the chart's Deployment has no container args")?
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.starts_with("--shutdown-delay=") || a.starts_with("--request-timeout="))
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        args.len() == 2,
        "the chart's Deployment does not pass --shutdown-delay and --request-timeout: {args:?}"
    );
    Ok(args)
}

/// `--shutdown-delay=Ns` among the chart's flags.
fn shutdown_delay(args: &[String]) -> anyhow::Result<Duration> {
    let arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--shutdown-delay="))
        .context("no --shutdown-delay")?;
    let secs: u64 = arg
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("--shutdown-delay={arg}: whole seconds expected"))?;
    anyhow::ensure!(
        secs >= 2,
        "the chart's shutdown delay ({secs}s) leaves no time to move the configurations"
    );
    Ok(Duration::from_secs(secs))
}

/// The review lines of the writer's objects after a server logged "SIGTERM received"; None
/// before that line.
fn reviews_after_sigterm(log: &Path, prefix: &str) -> Option<Vec<Value>> {
    let lines = log_lines(log);
    let at = lines
        .iter()
        .position(|v| v["message"] == "SIGTERM received")?;
    Some(
        lines[at + 1..]
            .iter()
            .filter(|v| {
                v["target"] == "rwop_guard::review"
                    && v["name"].as_str().is_some_and(|n| n.starts_with(prefix))
            })
            .cloned()
            .collect(),
    )
}

/// For failure messages: where a server's log is, and its last lines other than reviews (one
/// per request, they would hide the rest).
fn server_log(serve: &Serve) -> String {
    let text = std::fs::read_to_string(&serve.process.log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(r#""target":"rwop_guard::review""#))
        .collect();
    format!(
        "{} (last lines other than reviews):\n{}",
        serve.process.log.display(),
        lines[lines.len().saturating_sub(15)..].join("\n")
    )
}

/// `rwop_guard_tls_reloads_total{result="RESULT"}` (0 before the first reload of that result).
fn tls_reloads(serve: &Serve, result: &str) -> anyhow::Result<f64> {
    let (code, body) = serve.get("/metrics")?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let sample = format!("rwop_guard_tls_reloads_total{{result=\"{result}\"}} ");
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// The client ports of the TCP connections established to `addr` (an IPv4 listener of this
/// machine), from /proc/net/tcp: which connections the API server holds open to a server.
fn connections_to(addr: SocketAddr) -> anyhow::Result<BTreeSet<u16>> {
    anyhow::ensure!(
        addr.is_ipv4(),
        "{addr}: /proc/net/tcp lists IPv4 sockets only"
    );
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    let listener = format!(":{:04X}", addr.port());
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st ...; addresses are HEXIP:HEXPORT, 01 is ESTABLISHED.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            (local.ends_with(&listener) && *state == "01")
                .then(|| u16::from_str_radix(remote.rsplit(':').next()?, 16).ok())?
        })
        .collect())
}

/// The DER of a pair's leaf certificate.
fn leaf_der(pair: &Pair) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pair.cert_pem.as_bytes())
        .context("the generated certificate is not PEM")?
        .to_vec())
}

/// The leaf certificate a new TLS handshake with `addr` (loopback only) gets, verified against
/// `ca` for the address as the API server verifies it.
fn served_certificate(addr: SocketAddr, ca: &Ca) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into()))?;
    let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.set_write_timeout(Some(Duration::from_secs(5)))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut socket)
            .with_context(|| format!("TLS handshake with {addr}"))?;
    }
    let leaf = tls
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("the server presented no certificate")?
        .to_vec();
    tls.send_close_notify();
    let _ = tls.complete_io(&mut socket);
    Ok(leaf)
}

/// Applies the chart's configurations against `serve` with `bundle` as every caBundle, and
/// waits until the API server calls it.
fn register_with_ca_bundle(env: &Env, serve: &Serve, bundle: &[u8]) -> anyhow::Result<()> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let mut configs = env.chart.webhook_configurations(serve.addr);
    for config in &mut configs {
        for webhook in config["webhooks"].as_array_mut().into_iter().flatten() {
            webhook["clientConfig"]["caBundle"] = encoded.clone().into();
        }
    }
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(&configs))
        .success()?;
    let mutating = configs
        .iter()
        .any(|c| c["kind"] == "MutatingWebhookConfiguration");
    env.wait_called(serve, mutating)
}

/// Points the cluster's webhook configurations back at the shared server: explicitly with
/// [`Restore::now`], else when dropped (a failing case), so that the cases after this one find
/// the environment as it was.
struct Restore<'a> {
    env: &'a Env,
    armed: bool,
}

impl<'a> Restore<'a> {
    fn new(env: &'a Env) -> Self {
        Self { env, armed: true }
    }

    fn now(&mut self) -> anyhow::Result<()> {
        let env = self.env;
        env.register(&env.chart, &env.serve())
            .context("re-registering the shared server")?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.now()
        {
            eprintln!("serve: the shared server could not be registered again: {e:#}");
        }
    }
}

/// A directory laid out as the kubelet lays out a Secret volume: the files live in a
/// timestamped directory, `..data` is a symlink to it, and `tls.crt` and `tls.key` are symlinks
/// through `..data`. An update writes a new timestamped directory, renames a new symlink over
/// `..data` (the one atomic step), then removes the old directory.
struct SecretVolume {
    dir: PathBuf,
    current: String,
    generation: u32,
}

impl SecretVolume {
    fn create(dir: &Path, pair: &Pair) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut volume = Self {
            dir: dir.to_owned(),
            current: String::new(),
            generation: 0,
        };
        volume.current = volume.write_generation(pair)?;
        symlink(&volume.current, dir.join("..data"))?;
        for file in ["tls.crt", "tls.key"] {
            symlink(format!("..data/{file}"), dir.join(file))?;
        }
        Ok(volume)
    }

    fn update(&mut self, pair: &Pair) -> anyhow::Result<()> {
        let next = self.write_generation(pair)?;
        let tmp = self.dir.join("..data_tmp");
        symlink(&next, &tmp)?;
        std::fs::rename(&tmp, self.dir.join("..data")).context("swapping ..data")?;
        let old = std::mem::replace(&mut self.current, next);
        std::fs::remove_dir_all(self.dir.join(old))?;
        Ok(())
    }

    /// Writes the pair into a new timestamped directory, returning its name.
    fn write_generation(&mut self, pair: &Pair) -> anyhow::Result<String> {
        self.generation += 1;
        let name = format!("..2026_01_01_00_00_{:02}.000000000", self.generation);
        let path = self.dir.join(&name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        pair.write(&path, "tls")?;
        Ok(name)
    }
}

/// Label on the writer's volumes, whose value names the case.
const WRITER_LABEL: &str = "e2e.rwop-guard.dev/serve-writer";
/// The writer's volumes' class: no claim asks for it, so the PV controller binds none of them.
const WRITER_CLASS: &str = "e2e-serve-writer";
/// Bounds of one writer task, far beyond what a case needs: the writer stops by itself.
const WRITER_ROUNDS: u64 = 5_000;
const WRITER_TIME: Duration = Duration::from_secs(180);
/// A task gives up after this many failed rounds (each leaves a volume behind for cleanup).
const WRITER_FAILURES: u64 = 100;

/// Writes that the webhooks review, made over and over by [`WRITERS`] concurrent tasks until
/// stopped, so that any moment the webhook cannot be reached shows as a failed write. One round
/// of a task, each step through `kube::Client` as the cluster admin:
///   - create a CSI PersistentVolume with [ReadWriteOnce] (reviewed only with the chart's
///     `webhooks.scope=all`);
///   - patch its accessModes to [ReadWriteOncePod]: a PV UPDATE that changes access modes, which
///     the validating webhook (failurePolicy Fail) reviews in every scope of the chart;
///   - create, dry-run, a claim with exactly [ReadWriteOnce] of a CSI class, which the mutating
///     webhook reviews in every scope: the answer must come back mutated to [ReadWriteOncePod],
///     since its failurePolicy Ignore would otherwise hide that it was not reached;
///   - delete the volume (not reviewed).
struct Writer<'a> {
    env: &'a Env,
    /// Start of every object name the writer makes.
    prefix: String,
    label: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<Ended>>,
}

#[derive(Default)]
struct Tally {
    /// Rounds whose every request succeeded.
    rounds: AtomicU64,
    failed: AtomicU64,
    /// The first failures, with when they happened.
    failures: Mutex<Vec<(Instant, String)>>,
}

/// Why a writer task ended.
enum Ended {
    Stopped,
    Bounded(String),
}

/// What a stopped writer did.
struct Report {
    started: Instant,
    rounds: u64,
    failed: u64,
    failures: Vec<(Instant, String)>,
    ended: Vec<Ended>,
}

impl<'a> Writer<'a> {
    fn start(env: &'a Env, case: &str) -> anyhow::Result<Self> {
        let label = format!("serve-{case}");
        let prefix = format!("e2e-{label}-");
        cleanup(env, &label)?;
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let started = Instant::now();
        let tasks = (0..WRITERS)
            .map(|task| {
                env.rt.spawn(write_loop(
                    env.client.clone(),
                    label.clone(),
                    format!("{prefix}{task}"),
                    stop.clone(),
                    tally.clone(),
                    started,
                ))
            })
            .collect();
        Ok(Self {
            env,
            prefix,
            label,
            started,
            stop,
            tally,
            tasks,
        })
    }

    fn rounds(&self) -> u64 {
        self.tally.rounds.load(Ordering::SeqCst)
    }

    fn summary(&self) -> String {
        let failures = self
            .tally
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        format!(
            "{} rounds, {} failed requests{}",
            self.rounds(),
            self.tally.failed.load(Ordering::SeqCst),
            failures
                .first()
                .map(|(at, e)| format!(", the first at {}: {e}", t(self.started, *at)))
                .unwrap_or_default()
        )
    }

    /// Waits until `more` further rounds have completed.
    fn wait_rounds(&self, more: u64, what: &str) -> anyhow::Result<()> {
        let target = self.rounds() + more;
        wait_until(
            &format!("{more} rounds of {what}"),
            Duration::from_secs(60),
            || {
                anyhow::ensure!(
                    self.tasks.iter().all(|t| !t.is_finished()),
                    "a writer task ended by itself"
                );
                Ok((self.rounds() >= target).then_some(()))
            },
        )
        .with_context(|| format!("writer: {}", self.summary()))
    }

    /// Stops the tasks, waits for them and removes what they left.
    fn finish(mut self) -> anyhow::Result<Report> {
        let ended = self.stop_tasks()?;
        cleanup(self.env, &self.label)?;
        let failures = std::mem::take(
            &mut *self
                .tally
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        Ok(Report {
            started: self.started,
            rounds: self.rounds(),
            failed: self.tally.failed.load(Ordering::SeqCst),
            failures,
            ended,
        })
    }

    fn stop_tasks(&mut self) -> anyhow::Result<Vec<Ended>> {
        self.stop.store(true, Ordering::SeqCst);
        let tasks = std::mem::take(&mut self.tasks);
        self.env.rt.block_on(async {
            let mut ended = Vec::new();
            for task in tasks {
                let end = tokio::time::timeout(Duration::from_secs(30), task)
                    .await
                    .context("a writer task did not stop within 30 s")?
                    .context("a writer task panicked")?;
                ended.push(end);
            }
            Ok(ended)
        })
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            let _ = self.stop_tasks();
            let _ = cleanup(self.env, &self.label);
        }
    }
}

impl Report {
    /// A moment on the writer's clock, `t+1.234s`.
    fn t(&self, at: Instant) -> String {
        t(self.started, at)
    }

    fn ensure_no_failure(&self, context: &str) -> anyhow::Result<()> {
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(at, e)| format!("{}: {e}", self.t(*at)))
            .collect();
        anyhow::ensure!(
            self.failed == 0,
            "{} of the writer's requests failed ({} rounds succeeded; {context}):\n{}",
            self.failed,
            self.rounds,
            failures.join("\n")
        );
        let bounded: Vec<&str> = self
            .ended
            .iter()
            .filter_map(|e| match e {
                Ended::Stopped => None,
                Ended::Bounded(why) => Some(why.as_str()),
            })
            .collect();
        anyhow::ensure!(
            bounded.is_empty(),
            "the writer stopped by itself before the case ended: {bounded:?}"
        );
        Ok(())
    }
}

fn t(start: Instant, at: Instant) -> String {
    format!(
        "t+{:.3}s",
        at.saturating_duration_since(start).as_secs_f64()
    )
}

/// Deletes the volumes a writer left behind (a round that failed half-way).
fn cleanup(env: &Env, label: &str) -> anyhow::Result<()> {
    env.kubectl(&[
        "delete",
        "pv",
        "-l",
        &format!("{WRITER_LABEL}={label}"),
        "--ignore-not-found",
        "--wait=false",
    ])
    .success()
    .map(drop)
}

async fn write_loop(
    client: kube::Client,
    label: String,
    prefix: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    started: Instant,
) -> Ended {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let mut failed = 0;
    for round in 0..WRITER_ROUNDS {
        if stop.load(Ordering::SeqCst) {
            return Ended::Stopped;
        }
        if started.elapsed() > WRITER_TIME {
            return Ended::Bounded(format!("ran for {WRITER_TIME:?}"));
        }
        match write_round(&volumes, &claims, &label, &prefix, round).await {
            Ok(()) => {
                tally.rounds.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                failed += 1;
                tally.failed.fetch_add(1, Ordering::SeqCst);
                let mut failures = tally.failures.lock().unwrap_or_else(|e| e.into_inner());
                if failures.len() < 50 {
                    failures.push((Instant::now(), e));
                }
                if failed >= WRITER_FAILURES {
                    return Ended::Bounded(format!("{failed} failed rounds"));
                }
            }
        }
    }
    Ended::Bounded(format!("made {WRITER_ROUNDS} rounds"))
}

/// One round (see [`Writer`]); the first failed step ends it.
async fn write_round(
    volumes: &Api<PersistentVolume>,
    claims: &Api<PersistentVolumeClaim>,
    label: &str,
    prefix: &str,
    round: u64,
) -> Result<(), String> {
    let name = format!("{prefix}-{round}");
    let mut manifest = csi_volume(&name, &["ReadWriteOnce"]);
    manifest["metadata"]["labels"] = json!({ WRITER_LABEL: label });
    manifest["spec"]["storageClassName"] = WRITER_CLASS.into();
    let volume: PersistentVolume = serde_json::from_value(manifest).map_err(|e| e.to_string())?;
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .map_err(|e| format!("create pv {name}: {e}"))?;

    let patch = json!({"spec": {"accessModes": ["ReadWriteOncePod"]}});
    let patched = volumes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("patch pv {name} [ReadWriteOnce] -> [ReadWriteOncePod]: {e}"))?;
    let modes = patched
        .spec
        .and_then(|s| s.access_modes)
        .unwrap_or_default();
    if modes != ["ReadWriteOncePod"] {
        return Err(format!("patch pv {name}: accessModes are {modes:?}"));
    }

    let manifest = claim(prefix, "default", &["ReadWriteOnce"], Some(CSI_CLASS));
    let pending: PersistentVolumeClaim =
        serde_json::from_value(manifest).map_err(|e| e.to_string())?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = claims
        .create(&dry_run, &pending)
        .await
        .map_err(|e| format!("create (dry run) pvc default/{prefix}: {e}"))?;
    let modes = created
        .spec
        .and_then(|s| s.access_modes)
        .unwrap_or_default();
    if modes != ["ReadWriteOncePod"] {
        return Err(format!(
            "create (dry run) pvc default/{prefix}: admitted with accessModes {modes:?}, not \
             mutated to [ReadWriteOncePod]: the mutating webhook (failurePolicy Ignore) was not \
             reached"
        ));
    }

    volumes
        .delete(&name, &DeleteParams::default())
        .await
        .map_err(|e| format!("delete pv {name}: {e}"))?;
    Ok(())
}
