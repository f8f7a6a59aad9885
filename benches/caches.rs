//! The cluster caches of `rwop-guard serve` at cluster scale, through the real `kube::Client`
//! against the in-process fake API server (tests/support/fake_apiserver/), on loopback.
//!
//! The fake is seeded with N PersistentVolumes (as a CSI provisioner writes them, ~1.3 KiB of
//! JSON each), a bound claim per volume (N PersistentVolumeClaims), N/4 Deployments that mount
//! one of them each (1 replica, `Recreate`, a pod template of ~1.5 KiB) with a ReplicaSet each,
//! N/4 Deployments that mount none (W2's caches keep only the first quarter), 10,000 namespaces
//! (two labels) and 100 StorageClasses. `rwop-guard serve` (the
//! release binary) runs as a child process with a kubeconfig pointing at the fake, so its CPU
//! (`/proc/PID/stat` utime+stime) and peak memory (`/proc/PID/status` VmHWM) are its own. For
//! each size:
//!
//! 1. ready: from the spawn until `/readyz` answers 200 (all caches listed, in pages of 500);
//! 2. CPU per event: E updates of PV access modes (each one changes the facts: the costly
//!    case), paced at R per second, until `rwop_guard_watch_events_total` has counted them all;
//!    the child's CPU over that window divided by E; then the same for E claim updates (a status
//!    condition, as a resize writes) and E Deployment status updates (as every rollout and
//!    scale writes), the most frequent events of the claim and workload watches;
//! 3. burst (largest size only): B new PVs created as fast as the fake takes them; the time
//!    from the last write until `rwop_guard_cache_objects` counts them all;
//! 4. peak RSS before the burst, and after it;
//! 5. `rwop-guard scan -A -o json` (largest size only): wall time and peak RSS (`VmHWM`,
//!    sampled), reported, not judged.
//!
//! Run: `cargo bench --bench caches`. Settings (environment, bounded): `CACHES_SIZES` volumes
//! per run, comma-separated (default `1000,100000`), `CACHES_EVENTS` E (default 10000),
//! `CACHES_RATE` R (default 2000), `CACHES_BURST` B (default 50000). Without `--bench` (as
//! under `cargo test --benches`), a smoke run at small sizes checks that every step works and
//! judges no target.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rwop_test_support::fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

const VOLUMES: &str = "/api/v1/persistentvolumes";
const NAMESPACES: &str = "/api/v1/namespaces";
const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";
const CLAIMS: &str = "/api/v1/persistentvolumeclaims";
const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const REPLICASETS: &str = "/apis/apps/v1/replicasets";

/// The child's CPU until ready (its lists and the facts built from them) at the largest size.
/// The wall time is reported, not judged: most of it is the fake rendering pages on the same
/// two cores.
const TARGET_LIST_CPU_S: f64 = 3.0;
/// Peak RSS at the largest size, with volumes, claims and workloads: three quarters of the
/// chart's memory limit (128Mi), the rest left for reviews and the bounds of the server.
const TARGET_RSS_MIB: f64 = 96.0;
const TARGET_CPU_PER_EVENT_US: f64 = 50.0;
const TARGET_CATCH_UP: Duration = Duration::from_secs(5);
/// Longest wait for anything; the bench fails past it.
const PATIENCE: Duration = Duration::from_secs(120);
const USER_HZ: f64 = 100.0;

struct Settings {
    sizes: Vec<usize>,
    namespaces: usize,
    classes: usize,
    events: usize,
    rate: usize,
    burst: usize,
}

fn env_number(name: &str, default: usize, max: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => {
            let n: usize = v.trim().parse().with_context(|| format!("{name}={v}"))?;
            if n == 0 || n > max {
                bail!("{name}={v}: must be 1..={max}");
            }
            Ok(n)
        }
    }
}

impl Settings {
    fn from_env(bench: bool) -> anyhow::Result<Self> {
        if !bench {
            return Ok(Settings {
                sizes: vec![50, 600],
                namespaces: 20,
                classes: 5,
                events: 100,
                rate: 1000,
                burst: 200,
            });
        }
        let sizes = match std::env::var("CACHES_SIZES") {
            Err(_) => vec![1_000, 100_000],
            Ok(v) => v
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .with_context(|| format!("CACHES_SIZES={v}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        if sizes.is_empty() || sizes.len() > 4 || sizes.iter().any(|&n| n == 0 || n > 200_000) {
            bail!("CACHES_SIZES: 1 to 4 sizes, each 1..=200000");
        }
        Ok(Settings {
            sizes,
            namespaces: 10_000,
            classes: 100,
            events: env_number("CACHES_EVENTS", 10_000, 100_000)?,
            rate: env_number("CACHES_RATE", 2_000, 20_000)?,
            burst: env_number("CACHES_BURST", 50_000, 100_000)?,
        })
    }
}

fn main() -> ExitCode {
    let bench = std::env::args().any(|a| a == "--bench");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("caches: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(bench)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("caches: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

/// Named as the CSI provisioner names them (`pvc-` and the claim's uid).
fn volume_name(i: usize) -> String {
    format!("pvc-{i:08}-5a3e-4f7b-9c1d-{:012}", i * 7919)
}

fn volume(i: usize, modes: &str) -> Value {
    let name = volume_name(i);
    json!({
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com",
                            "volume.kubernetes.io/provisioner-deletion-secret-name": ""},
            "finalizers": ["external-provisioner.volume.kubernetes.io/finalizer",
                           "kubernetes.io/pv-protection"]
        },
        "spec": {
            "accessModes": [modes],
            "capacity": {"storage": "10Gi"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": format!("ns-{:05}", i % 10_000), "name": format!("data-{i}"),
                         "uid": format!("{i:08}-0000-4000-8000-000000000000"),
                         "resourceVersion": "12345"},
            "csi": {"driver": "ebs.csi.aws.com", "fsType": "ext4",
                    "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "1700000000000-8081-ebs.csi.aws.com"},
                    "volumeHandle": format!("vol-{i:017x}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["eu-west-1a"]}]}]}},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": format!("class-{:03}", i % 100),
            "volumeMode": "Filesystem"
        },
        "status": {"phase": "Bound", "lastPhaseTransitionTime": "2026-01-01T00:00:00Z"}
    })
}

fn namespace_of(i: usize, settings: &Settings) -> String {
    format!("ns-{:05}", i % settings.namespaces)
}

/// The bound claim of volume `i`.
fn claim(i: usize, settings: &Settings) -> Value {
    json!({"metadata": {"name": format!("data-{i}"), "namespace": namespace_of(i, settings),
                        "uid": format!("{i:08}-0000-4000-8000-000000000000"),
                        "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                        "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com"},
                        "finalizers": ["kubernetes.io/pvc-protection"]},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                    "storageClassName": format!("class-{:03}", i % 100),
                    "volumeName": volume_name(i), "volumeMode": "Filesystem"},
           "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "10Gi"}}})
}

/// A Deployment's pod template, mounting `claim` if given.
fn template(app: &str, claim: Option<&str>) -> Value {
    let mut spec = json!({
        "containers": [{"name": "app", "image": "registry.example.com/team/app:1.42.0",
                        "args": ["--config=/etc/app/config.yaml", "--port=8080"],
                        "env": [{"name": "LOG_LEVEL", "value": "info"},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"memory": "256Mi"}},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 10},
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}],
        "volumes": [{"name": "config", "configMap": {"name": format!("{app}-config")}}],
        "securityContext": {"runAsNonRoot": true, "fsGroup": 1000},
        "terminationGracePeriodSeconds": 30
    });
    if let Some(claim) = claim {
        if let Some(mounts) = spec["containers"][0]["volumeMounts"].as_array_mut() {
            mounts.push(json!({"name": "data", "mountPath": "/data"}));
        }
        if let Some(volumes) = spec["volumes"].as_array_mut() {
            volumes.push(json!({"name": "data", "persistentVolumeClaim": {"claimName": claim}}));
        }
    }
    json!({"metadata": {"labels": {"app": app}}, "spec": spec})
}

/// Deployment `d`: the first half mount claim `data-{2d}`... every fourth claim, the rest none.
fn deployment(d: usize, settings: &Settings, with_claim: bool) -> Value {
    let claim_index = d * 4;
    let name = format!("app-{d}");
    let claim = with_claim.then(|| format!("data-{claim_index}"));
    json!({"metadata": {"name": name, "namespace": namespace_of(claim_index, settings),
                        "uid": format!("{d:08}-1111-4000-8000-000000000000"),
                        "labels": {"app": name}, "generation": 1},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "strategy": {"type": "Recreate"},
                    "template": template(&name, claim.as_deref())},
           "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
                      "availableReplicas": 1, "updatedReplicas": 1}})
}

/// The ReplicaSet a Deployment's controller makes of it.
fn replicaset(deployment: &Value) -> Value {
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
    json!({"metadata": {"name": format!("{name}-7d4b9c8f6d"),
                        "namespace": deployment["metadata"]["namespace"],
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": name, "uid": deployment["metadata"]["uid"],
                                             "controller": true, "blockOwnerDeletion": true}]},
           "spec": {"replicas": 1, "selector": deployment["spec"]["selector"],
                    "template": deployment["spec"]["template"]},
           "status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}})
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> String {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": items})
        .to_string()
}

fn seed(fake: &FakeApiServer, settings: &Settings, volumes: usize) {
    let pvs = (0..volumes).map(|i| volume(i, "ReadWriteOnce")).collect();
    fake.seed_list_fixture(VOLUMES, &list("PersistentVolumeList", "v1", pvs));
    let claims = (0..volumes).map(|i| claim(i, settings)).collect();
    fake.seed_list_fixture(CLAIMS, &list("PersistentVolumeClaimList", "v1", claims));
    let quarter = volumes / 4;
    let deployments: Vec<Value> = (0..2 * quarter)
        .map(|d| deployment(d, settings, d < quarter))
        .collect();
    let replicasets = deployments[..quarter].iter().map(replicaset).collect();
    fake.seed_list_fixture(DEPLOYMENTS, &list("DeploymentList", "apps/v1", deployments));
    fake.seed_list_fixture(REPLICASETS, &list("ReplicaSetList", "apps/v1", replicasets));
    let namespaces = (0..settings.namespaces)
        .map(|i| {
            let name = format!("ns-{i:05}");
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name,
                                                         "team": format!("team-{}", i % 50)}},
                   "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        })
        .collect();
    fake.seed_list_fixture(NAMESPACES, &list("NamespaceList", "v1", namespaces));
    let classes = (0..settings.classes)
        .map(|i| {
            json!({"metadata": {"name": format!("class-{i:03}"),
                                "annotations": {"storageclass.kubernetes.io/is-default-class": (i == 0).to_string()}},
                   "provisioner": "ebs.csi.aws.com", "reclaimPolicy": "Delete",
                   "volumeBindingMode": "WaitForFirstConsumer", "parameters": {"type": "gp3"}})
        })
        .collect();
    fake.seed_list_fixture(
        CLASSES,
        &list("StorageClassList", "storage.k8s.io/v1", classes),
    );
}

// ---------------------------------------------------------------------------------------------
// The child process

/// Kills the child when dropped, so that every exit path stops it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn start_guard(dir: &Path, fake: &FakeApiServer) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let kubeconfig = rwop_test_support::kubeconfig::write(dir, &fake.url(), "default", "fake");
    let certs = rwop_guard::certs::generate(
        "caches bench",
        &["localhost".to_owned()],
        &[Ipv4Addr::LOCALHOST.into()],
        Duration::from_secs(86_400),
    )?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, &certs.cert_pem)?;
    std::fs::write(&key, &certs.key_pem)?;
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut command = rwop_test_support::binary::command(rwop_test_support::binary::path());
    command
        .arg("serve")
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()?))
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("rwop-guard.log"))?);
    let child = command
        .spawn()
        .context("cannot start the rwop-guard binary")?;
    Ok((ChildGuard(child), metrics))
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.take(1 << 20).read_to_string(&mut answer)?;
    Ok(answer)
}

/// A sample of the child's metrics for one resource, 0 when absent.
fn metric(addr: SocketAddr, name: &str, resource: &str) -> u64 {
    let text = http_get(addr, "/metrics").unwrap_or_default();
    let prefix = format!("{name}{{resource=\"{resource}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
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
    field(11) + field(12)
}

fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A `kB` field of `/proc/PID/status` (`VmHWM:`, `VmRSS:`), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Polls `what` every 20 ms until it holds, at most [`PATIENCE`].
async fn until(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        if ok() {
            return Ok(Instant::now());
        }
        if start.elapsed() > PATIENCE {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// One size

struct Figures {
    volumes: usize,
    ready: Duration,
    /// CPU seconds of the child until ready (start-up and the lists).
    list_cpu: f64,
    cpu_per_event_us: f64,
    claim_cpu_per_event_us: f64,
    workload_cpu_per_event_us: f64,
    burst: Option<(usize, Duration, Duration)>,
    peak_rss_mib: f64,
    /// RSS after the events (the caches as they stay; the peak is during the lists).
    rss_mib: f64,
    /// Peak RSS at the end, after the burst (with `volumes` + burst volumes).
    burst_peak_rss_mib: f64,
    /// `scan` of the cluster after the burst: wall time, CPU seconds and peak RSS (MiB).
    scan: Option<(Duration, f64, f64)>,
}

/// `settings.events` merge patches from `patch(n)` (path, patch), paced at `settings.rate` per
/// second in 10 ms slices, until the child's `rwop_guard_watch_events_total` for `resource` has
/// counted them all: the child's CPU over that window per event, in µs.
async fn cpu_per_event(
    fake: &FakeApiServer,
    metrics: SocketAddr,
    pid: u32,
    settings: &Settings,
    resource: &str,
    mut patch: impl FnMut(usize) -> (String, Value),
) -> anyhow::Result<f64> {
    let events = "rwop_guard_watch_events_total";
    let events_before = metric(metrics, events, resource);
    let cpu_before = cpu_ticks(pid);
    let per_slice = (settings.rate / 100).max(1);
    let started = Instant::now();
    let mut sent = 0;
    while sent < settings.events {
        for _ in 0..per_slice.min(settings.events - sent) {
            let (path, body) = patch(sent);
            fake.patch(&path, body)
                .map_err(|e| anyhow::anyhow!("patch {path}: {e}"))?;
            sent += 1;
        }
        let next = started + Duration::from_millis(10) * u32::try_from(sent / per_slice)?;
        tokio::time::sleep_until(next.into()).await;
    }
    let wanted = events_before + settings.events as u64;
    until(&format!("the {resource} updates in the caches"), || {
        metric(metrics, events, resource) >= wanted
    })
    .await?;
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / USER_HZ;
    Ok(cpu * 1e6 / settings.events as f64)
}

async fn measure(settings: &Settings, volumes: usize, burst: bool) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let fake = FakeApiServer::start().await;
    seed(&fake, settings, volumes);
    let spawned = Instant::now();
    let (mut guard, metrics) = start_guard(dir.path(), &fake)?;
    let pid = guard.0.id();
    let log = dir.path().join("rwop-guard.log");
    let ready = until("/readyz", || {
        http_get(metrics, "/readyz").is_ok_and(|a| a.starts_with("HTTP/1.1 200"))
    })
    .await
    .with_context(|| {
        format!(
            "not ready; exited: {:?}; log:\n{}",
            guard.0.try_wait().ok().flatten(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?
    .duration_since(spawned);
    let list_cpu = cpu_ticks(pid) as f64 / USER_HZ;

    // CPU per event: each update flips one volume's modes.
    let cpu_per_event_us = cpu_per_event(&fake, metrics, pid, settings, "persistentvolumes", |n| {
        let modes = if (n / volumes).is_multiple_of(2) {
            "ReadWriteOncePod"
        } else {
            "ReadWriteOnce"
        };
        (
            format!("{VOLUMES}/{}", volume_name(n % volumes)),
            json!({"spec": {"accessModes": [modes]}}),
        )
    })
    .await?;
    // A claim's status condition, as a resize writes it.
    let claim_cpu_per_event_us =
        cpu_per_event(&fake, metrics, pid, settings, "persistentvolumeclaims", |n| {
            let i = n % volumes;
            (
                format!("/api/v1/namespaces/{}/persistentvolumeclaims/data-{i}", namespace_of(i, settings)),
                json!({"status": {"conditions": [{"type": "Resizing", "status": (n / volumes).is_multiple_of(2).to_string()}]}}),
            )
        })
        .await?;
    // A Deployment's status, as every rollout and scale writes it (one that mounts a claim).
    let quarter = (volumes / 4).max(1);
    let workload_cpu_per_event_us =
        cpu_per_event(&fake, metrics, pid, settings, "deployments", |n| {
            let d = n % quarter;
            (
                format!(
                    "/apis/apps/v1/namespaces/{}/deployments/app-{d}",
                    namespace_of(d * 4, settings)
                ),
                json!({"status": {"observedGeneration": 2 + n / quarter}}),
            )
        })
        .await?;
    // Before the burst adds volumes: the figures for `volumes`.
    let peak_rss_mib = peak_rss_mib(pid);
    let rss_mib = status_mib(pid, "VmRSS:");

    let burst = if burst {
        let first = Instant::now();
        for i in volumes..volumes + settings.burst {
            fake.create(VOLUMES, volume(i, "ReadWriteOnce"))
                .map_err(|e| anyhow::anyhow!("create: {e}"))?;
        }
        let last = Instant::now();
        let total = (volumes + settings.burst) as u64;
        let current = until("the burst in the facts", || {
            metric(metrics, "rwop_guard_cache_objects", "persistentvolumes") >= total
        })
        .await?;
        Some((settings.burst, current - last, current - first))
    } else {
        None
    };
    let burst_peak_rss_mib = self::peak_rss_mib(pid);
    if let Ok(Some(status)) = guard.0.try_wait() {
        bail!("rwop-guard exited during the run: {status}");
    }
    drop(guard);
    // `scan` of the same cluster (largest size only).
    let scan = if burst.is_some() {
        Some(run_scan(dir.path())?)
    } else {
        None
    };
    Ok(Figures {
        volumes,
        ready,
        list_cpu,
        cpu_per_event_us,
        claim_cpu_per_event_us,
        workload_cpu_per_event_us,
        burst,
        peak_rss_mib,
        rss_mib,
        burst_peak_rss_mib,
        scan,
    })
}

/// Runs `rwop-guard scan -A -o json` to its end: (wall time, its CPU time, peak RSS in MiB).
///
/// The peak is the child's `VmHWM`, read every 5 ms while it runs (a high-water mark, so only
/// growth in its last 5 ms could be missed). Not `wait4`'s `ru_maxrss`: Linux carries that over
/// from the forking process across `exec`, so it would report this process (the fake API server
/// holding every object) instead of the scan.
fn run_scan(dir: &Path) -> anyhow::Result<(Duration, f64, f64)> {
    let started = Instant::now();
    let mut child = rwop_test_support::binary::command(rwop_test_support::binary::path())
        .args(["scan", "-A", "-o", "json", "--kubeconfig"])
        .arg(dir.join("kubeconfig"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("scan.log"))?)
        .spawn()
        .context("cannot start rwop-guard scan")?;
    let (mut peak, mut cpu) = (0f64, 0);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(peak_rss_mib(child.id()));
        cpu = cpu.max(cpu_ticks(child.id()));
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    if !matches!(status.code(), Some(0 | 1)) {
        bail!(
            "scan failed ({status}); its log:\n{}",
            std::fs::read_to_string(dir.join("scan.log")).unwrap_or_default()
        );
    }
    Ok((elapsed, cpu as f64 / USER_HZ, peak))
}

fn verdict(pass: bool) -> &'static str {
    if pass { "ok" } else { "MISSED" }
}

async fn run(bench: bool) -> anyhow::Result<bool> {
    let settings = Settings::from_env(bench)?;
    println!(
        "caches: {} namespaces, {} StorageClasses; {} updates at {}/s; burst of {} volumes{}",
        settings.namespaces,
        settings.classes,
        settings.events,
        settings.rate,
        settings.burst,
        if bench { "" } else { " (smoke run)" }
    );
    let mut all = Vec::new();
    let largest = settings.sizes.iter().copied().max().unwrap_or(0);
    for &volumes in &settings.sizes {
        let f = measure(&settings, volumes, volumes == largest).await?;
        println!(
            "{:>7} volumes and claims, {} Deployments ({} mount a claim), {} ReplicaSets: ready \
             {:>6.2} s ({:.2} s CPU), CPU/event {:>6.1} µs (claims {:.1} µs, Deployments {:.1} \
             µs), peak RSS {:>5.1} MiB ({:.1} MiB after the events){}",
            f.volumes,
            f.volumes / 4 * 2,
            f.volumes / 4,
            f.volumes / 4,
            f.ready.as_secs_f64(),
            f.list_cpu,
            f.cpu_per_event_us,
            f.claim_cpu_per_event_us,
            f.workload_cpu_per_event_us,
            f.peak_rss_mib,
            f.rss_mib,
            match f.burst {
                Some((n, after, total)) => format!(
                    "\n         burst of {n}: current {:.2} s after its last write ({:.2} s after its \
                     first); peak RSS then {:.1} MiB",
                    after.as_secs_f64(),
                    total.as_secs_f64(),
                    f.burst_peak_rss_mib
                ),
                None => String::new(),
            }
        );
        if let Some((took, cpu, rss)) = f.scan {
            println!(
                "         scan -A of {} volumes, {} claims and the workloads: {:.2} s ({cpu:.2} s CPU), peak RSS {rss:.1} MiB",
                f.volumes + settings.burst,
                f.volumes,
                took.as_secs_f64()
            );
        }
        all.push(f);
    }
    if !bench {
        println!("(smoke run: run `cargo bench --bench caches` for numbers)");
        return Ok(true);
    }
    let mut pass = true;
    let mut judge = |what: String, ok: bool| {
        println!("  {:<58} {}", what, verdict(ok));
        pass &= ok;
    };
    for f in &all {
        judge(
            format!(
                "{} volumes: CPU/event {:.1} µs <= {TARGET_CPU_PER_EVENT_US} µs",
                f.volumes, f.cpu_per_event_us
            ),
            f.cpu_per_event_us <= TARGET_CPU_PER_EVENT_US,
        );
        for (what, us) in [
            ("claim", f.claim_cpu_per_event_us),
            ("Deployment", f.workload_cpu_per_event_us),
        ] {
            judge(
                format!(
                    "{} volumes: CPU/{what} event {us:.1} µs <= {TARGET_CPU_PER_EVENT_US} µs",
                    f.volumes
                ),
                us <= TARGET_CPU_PER_EVENT_US,
            );
        }
    }
    if let Some(f) = all.iter().find(|f| f.volumes == largest) {
        judge(
            format!(
                "{} volumes: CPU until ready {:.2} s <= {TARGET_LIST_CPU_S} s",
                f.volumes, f.list_cpu
            ),
            f.list_cpu <= TARGET_LIST_CPU_S,
        );
        judge(
            format!(
                "{} volumes: peak RSS {:.1} MiB <= {TARGET_RSS_MIB} MiB",
                f.volumes, f.peak_rss_mib
            ),
            f.peak_rss_mib <= TARGET_RSS_MIB,
        );
        if let Some((_, after, _)) = f.burst {
            judge(
                format!(
                    "burst: current {:.2} s after it <= {} s",
                    after.as_secs_f64(),
                    TARGET_CATCH_UP.as_secs()
                ),
                after <= TARGET_CATCH_UP,
            );
        }
    }
    Ok(pass)
}
