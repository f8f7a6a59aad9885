//! The end-to-end environment: a real control plane, `rwop-guard serve` watching it, and the
//! chart's own webhook configurations registered against that server.

pub mod control_plane;
pub mod hold;
pub mod pki;
pub mod process;
pub mod webhook;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use control_plane::ControlPlane;
use webhook::{Chart, Serve, ServeSpec};

/// Names the validating and mutating webhooks have in the chart.
pub const VALIDATE: &str = "validate.rwop-guard.dev";
pub const MUTATE: &str = "mutate.rwop-guard.dev";
/// StorageClasses the environment creates before the webhook starts (so its cache has them):
/// a CSI class that is the cluster default, and an in-tree one.
pub const CSI_CLASS: &str = "e2e-csi";
pub const CSI_DRIVER: &str = "hostpath.csi.k8s.io";
pub const INTREE_CLASS: &str = "e2e-intree";
/// Values the shared webhook is installed with: the chart's defaults plus mutation, every rule
/// in the webhook (tests/e2e/intree.rs compares it with the in-tree engine).
pub const CHART_VALUES: &[&str] = &["policy.mutation.enabled=true", "engine.mode=webhook"];

/// The environment every case runs in.
pub struct Env {
    // Fields drop in order: the webhook before the control plane.
    serve: Mutex<Serve>,
    pub plane: ControlPlane,
    pub dir: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub client: kube::Client,
    pub chart: Chart,
    /// The webhook's serving certificate and key, its CA (the chart's caBundle) and policy file.
    pub tls: TlsFiles,
    pub policy: PathBuf,
}

pub struct TlsFiles {
    pub ca: pki::Ca,
    pub ca_file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The control-plane binaries: `$KUBEBUILDER_ASSETS` (the envtest convention).
/// Ok(None) when the variable is not set.
pub fn assets() -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    for b in control_plane::BINARIES {
        anyhow::ensure!(
            dir.join(b).is_file(),
            "KUBEBUILDER_ASSETS={} has no {b}",
            dir.display()
        );
    }
    Ok(Some(dir))
}

impl Env {
    pub fn start(assets: &Path, dir: &Path) -> anyhow::Result<Self> {
        let plane = ControlPlane::start(assets, &dir.join("k8s")).context("control plane")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = rt.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&plane.kubeconfig)?,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            anyhow::Ok(kube::Client::try_from(config)?)
        })?;

        // The classes must exist before serve starts: its readiness means "caches synced".
        let setup = [
            storage_class(CSI_CLASS, CSI_DRIVER, true),
            storage_class(INTREE_CLASS, "kubernetes.io/no-provisioner", false),
            // The volume whose dry-run update proves the validating webhook is called.
            json!({"apiVersion": "v1", "kind": "PersistentVolume",
                   "metadata": {"name": "e2e-probe"},
                   "spec": {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "1Gi"},
                            "hostPath": {"path": "/e2e/probe"}}}),
        ];
        let setup_yaml = setup
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n");
        kubectl_with(&plane.kubeconfig, &["apply", "-f", "-"], &setup_yaml).success()?;

        let tls_dir = dir.join("webhook");
        std::fs::create_dir_all(&tls_dir)?;
        let ca = pki::Ca::new("rwop-guard e2e CA")?;
        let ca_file = tls_dir.join("ca.crt");
        std::fs::write(&ca_file, ca.pem())?;
        ca.loopback_server("rwop-guard")?.write(&tls_dir, "tls")?;
        let tls = TlsFiles {
            ca,
            ca_file,
            cert: tls_dir.join("tls.crt"),
            key: tls_dir.join("tls.key"),
        };

        let chart = Chart::render("e2e", &tls.ca_file, CHART_VALUES)?;
        let policy = tls_dir.join("policy.yaml");
        std::fs::write(&policy, chart.policy_yaml()?)?;
        let serve = Serve::start(&ServeSpec {
            tls_cert: &tls.cert,
            tls_key: &tls.key,
            config: &policy,
            kubeconfig: &plane.kubeconfig,
            log: &dir.join("serve.log"),
            extra_args: &[],
        })?;

        let env = Self {
            serve: Mutex::new(serve),
            plane,
            dir: dir.to_owned(),
            rt,
            client,
            chart,
            tls,
            policy,
        };
        let serve = env.serve();
        env.register(&env.chart, &serve)?;
        drop(serve);
        Ok(env)
    }

    /// The shared webhook server. Cases that replace it run in the exclusive phase.
    pub fn serve(&self) -> MutexGuard<'_, Serve> {
        self.serve.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the shared server (exclusive cases only), returning the old one.
    pub fn replace_serve(&self, new: Serve) -> Serve {
        std::mem::replace(&mut *self.serve(), new)
    }

    /// Registers `chart`'s webhook configurations against `serve` and waits until the API
    /// server calls it (a dry-run write that only the webhook can answer, counted by `serve`).
    pub fn register(&self, chart: &Chart, serve: &Serve) -> anyhow::Result<()> {
        let configs = chart.webhook_configurations(serve.addr);
        let yaml = configs
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n");
        self.kubectl_stdin(&["apply", "-f", "-"], &yaml).success()?;
        let mutating = configs
            .iter()
            .any(|c| c["kind"] == "MutatingWebhookConfiguration");
        self.wait_called(serve, mutating)
    }

    /// Waits until the API server sends reviews to `serve` (validating, and mutating if asked).
    pub fn wait_called(&self, serve: &Serve, mutating: bool) -> anyhow::Result<()> {
        wait_until(
            "the API server to call the registered webhook",
            Duration::from_secs(30),
            || {
                let before = serve.metric("rwop_guard_requests_total")?;
                let v = self.kubectl(&[
                    "patch",
                    "pv",
                    "e2e-probe",
                    "--dry-run=server",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"accessModes":["ReadWriteOncePod"]}}"#,
                ]);
                let denied = v
                    .stderr
                    .contains(&format!("admission webhook \"{VALIDATE}\" denied"));
                let after = serve.metric("rwop_guard_requests_total")?;
                if !denied || after <= before {
                    return Ok(None);
                }
                if !mutating {
                    return Ok(Some(()));
                }
                let m = self.kubectl_stdin(
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    &claim("e2e-probe", "default", &["ReadWriteOnce"], Some(CSI_CLASS)).to_string(),
                );
                let mutated = serde_json::from_str::<Value>(&m.stdout)
                    .is_ok_and(|c| c["spec"]["accessModes"] == json!(["ReadWriteOncePod"]));
                let after_mutate = serve.metric("rwop_guard_requests_total")?;
                Ok((mutated && after_mutate > after).then_some(()))
            },
        )
    }

    /// Reviews the shared server logged for objects named `name`, once everything reviewed so far
    /// is in its log: a dry-run claim created in `namespace` is reviewed after every earlier
    /// request, and the log is written in batches, so this waits for that claim's line.
    pub fn reviews_of(&self, namespace: &str, name: &str) -> anyhow::Result<Vec<Value>> {
        static BARRIERS: AtomicUsize = AtomicUsize::new(0);
        let barrier = format!("barrier-{}", BARRIERS.fetch_add(1, Ordering::Relaxed));
        self.kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &docs(&[claim(
                &barrier,
                namespace,
                &["ReadWriteOnce"],
                Some(CSI_CLASS),
            )]),
        )
        .success()?;
        wait_until(
            "the review log to catch up",
            Duration::from_secs(10),
            || {
                let reviews = self.serve().reviews();
                Ok(reviews
                    .iter()
                    .any(|r| r["name"] == barrier.as_str() && r["namespace"] == namespace)
                    .then(|| reviews.into_iter().filter(|r| r["name"] == name).collect()))
            },
        )
    }

    /// `kubectl apply -f -` of `items`; an error unless it succeeded.
    pub fn apply(&self, items: &[Value]) -> anyhow::Result<Out> {
        self.kubectl_stdin(&["apply", "-f", "-"], &docs(items))
            .success()
    }

    pub fn kubectl(&self, args: &[&str]) -> Out {
        kubectl_with(&self.plane.kubeconfig, args, "")
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Out {
        kubectl_with(&self.plane.kubeconfig, args, stdin)
    }

    /// Runs the rwop-guard binary (scan, migrate, …) as an admin would, with this cluster's
    /// kubeconfig.
    pub fn rwop(&self, args: &[&str], stdin: &str) -> Out {
        run(
            rwop_test_support::binary::command(rwop_test_support::binary::path())
                .args(args)
                .env("KUBECONFIG", &self.plane.kubeconfig),
            stdin,
        )
    }

    /// Runs `script` with `bash -e -o pipefail` in `dir`, as an admin's shell would: kubectl,
    /// helm and rwop-guard first on `PATH`, this cluster's kubeconfig (documented commands,
    /// run as written).
    pub fn shell(&self, script: &str, dir: &Path) -> Out {
        let tools = [
            tool("kubectl"),
            tool("helm"),
            rwop_test_support::binary::path(),
        ];
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = tools
            .iter()
            .filter_map(|p| p.parent().map(Path::to_owned))
            .chain(std::env::split_paths(&path));
        let mut command = rwop_test_support::binary::command("bash");
        command
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(dir)
            .env("PATH", std::env::join_paths(dirs).unwrap_or_default())
            .env("KUBECONFIG", &self.plane.kubeconfig);
        run(&mut command, "")
    }

    /// Runs the rwop-guard binary with another identity's kubeconfig (an RBAC check).
    pub fn rwop_as(&self, kubeconfig: &Path, args: &[&str]) -> Out {
        run(
            rwop_test_support::binary::command(rwop_test_support::binary::path())
                .args(args)
                .env("KUBECONFIG", kubeconfig),
            "",
        )
    }

    /// A kubeconfig for this cluster that authenticates with `token` (from `kubectl create
    /// token`) instead of the admin's client certificate, written to `path`.
    pub fn token_kubeconfig(&self, token: &str, path: &Path) -> anyhow::Result<()> {
        let out = self
            .kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])
            .success()?;
        let mut config: Value = serde_json::from_str(&out.stdout)?;
        let users = config["users"]
            .as_array_mut()
            .context("the kubeconfig has no users")?;
        for user in users {
            user["user"] = serde_json::json!({ "token": token });
        }
        std::fs::write(path, config.to_string())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Creates a namespace for one case (deleted first if a previous run left it) and waits
    /// for its default ServiceAccount, without which controllers cannot create pods in it.
    pub fn namespace(&self, name: &str) -> anyhow::Result<()> {
        let _ = self.kubectl(&["delete", "namespace", name, "--ignore-not-found", "--wait"]);
        self.kubectl(&["create", "namespace", name]).success()?;
        wait_until(
            &format!("serviceaccount {name}/default"),
            Duration::from_secs(30),
            || {
                Ok(self
                    .kubectl(&["get", "sa", "default", "-n", name])
                    .ok()
                    .then_some(()))
            },
        )
    }

    /// Reads one object as JSON (`kubectl get -o json`).
    pub fn get(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<Value> {
        let mut args = vec!["get", resource, name, "-o", "json"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let out = self.kubectl(&args).success()?;
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// Waits until `kubectl get` of the object satisfies `done`, returning it.
    pub fn wait_for(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        wait_until(
            &format!("{resource} {name}: {what}"),
            Duration::from_secs(60),
            || Ok(self.get(resource, namespace, name).ok().filter(|v| done(v))),
        )
    }

    /// Waits until a claim is Bound, returning it.
    pub fn wait_bound(&self, namespace: &str, name: &str) -> anyhow::Result<Value> {
        self.wait_for("pvc", Some(namespace), name, "Bound", |c| {
            c["status"]["phase"] == "Bound"
        })
    }
}

/// What a command printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Ok(self) if the command exited 0, else an error with what it printed.
    pub fn success(self) -> anyhow::Result<Self> {
        anyhow::ensure!(self.ok(), "command failed: {self:#?}");
        Ok(self)
    }

    /// Ok(self) if the command failed, else an error.
    pub fn failure(self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !self.ok(),
            "command succeeded, a failure was expected: {self:#?}"
        );
        Ok(self)
    }
}

pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: &str) -> Out {
    run(
        Command::new(tool("kubectl"))
            .args(args)
            .env("KUBECONFIG", kubeconfig),
        stdin,
    )
}

/// Runs a tool with no input.
pub fn run_tool(command: &mut Command) -> Out {
    run(command, "")
}

fn run(command: &mut Command, stdin: &str) -> Out {
    let child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Out {
                code: -1,
                stdout: String::new(),
                stderr: format!("cannot run {:?}: {e}", command.get_program()),
            };
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A command may exit without reading its input.
        let _ = input.write_all(stdin.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) => Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Err(e) => Out {
            code: -1,
            stdout: String::new(),
            stderr: e.to_string(),
        },
    }
}

/// The tools the suite runs; `main` checks them before anything starts.
pub const TOOLS: [&str; 2] = ["kubectl", "helm"];

/// A tool of [`TOOLS`], found by the rule of every suite (`rwop_test_support::tools::find`).
pub fn tool(name: &str) -> PathBuf {
    rwop_test_support::tools::find(name).unwrap_or_else(|| name.into())
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports::<1>()?[0])
}

/// `N` distinct free loopback ports: all bound at once, then released (ports picked one at a
/// time can repeat).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

/// Checks `condition` until it gives a value or `limit` passes. The condition is re-checked
/// every 50 ms: the waits here are for other processes, which offer nothing to block on.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = condition()? {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn storage_class(name: &str, provisioner: &str, default: bool) -> Value {
    let mut class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": provisioner,
        "volumeBindingMode": "Immediate",
    });
    if default {
        class["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    class
}

/// A claim manifest; `class` None leaves `storageClassName` out (the cluster default applies).
pub fn claim(name: &str, namespace: &str, modes: &[&str], class: Option<&str>) -> Value {
    let mut c = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let Some(class) = class {
        c["spec"]["storageClassName"] = class.into();
    }
    c
}

/// A static CSI volume of `CSI_CLASS`, reclaim policy Retain unless changed by the caller.
pub fn csi_volume(name: &str, modes: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "accessModes": modes, "capacity": {"storage": "1Gi"},
            "storageClassName": CSI_CLASS,
            "persistentVolumeReclaimPolicy": "Retain",
            "csi": {"driver": CSI_DRIVER, "volumeHandle": name},
        },
    })
}

/// Several manifests as one kubectl input.
pub fn docs(items: &[Value]) -> String {
    items
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}
