//! A disposable control plane: etcd, kube-apiserver and kube-controller-manager on free
//! loopback ports, from a directory of binaries in the envtest convention
//! (`KUBEBUILDER_ASSETS`). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::pki::{self, Ca};
use super::process::Process;
use super::{free_ports, wait_until};

pub const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// What the API server audits: writes of volumes and claims, with their audit annotations
/// (level Metadata), nothing else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch]
    resources:
      - group: \"\"
        resources: [persistentvolumes, persistentvolumeclaims]
  - level: None
";

pub struct ControlPlane {
    pub dir: PathBuf,
    /// The API server's audit log (JSON lines, level Metadata, PersistentVolumes and claims
    /// only): where audit annotations of admission show.
    pub audit_log: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    // Dropped in reverse order of start: controller manager, API server, etcd.
    processes: Vec<Process>,
}

impl ControlPlane {
    pub fn start(assets: &Path, dir: &Path) -> anyhow::Result<Self> {
        for b in BINARIES {
            let path = assets.join(b);
            anyhow::ensure!(path.is_file(), "{} is missing", path.display());
        }
        let pki = dir.join("pki");
        let logs = dir.join("logs");
        std::fs::create_dir_all(&pki)?;
        std::fs::create_dir_all(&logs)?;

        let ca = Ca::new("e2e-ca")?;
        std::fs::write(pki.join("ca.crt"), ca.pem())?;
        ca.loopback_server("kube-apiserver")?
            .write(&pki, "apiserver")?;
        ca.client("e2e-admin", "system:masters")?
            .write(&pki, "admin")?;
        ca.client("system:kube-controller-manager", "system:masters")?
            .write(&pki, "kcm")?;
        let (sa_key, sa_pub) = pki::signing_key_pem()?;
        std::fs::write(pki.join("sa.key"), sa_key)?;
        std::fs::write(pki.join("sa.pub"), sa_pub)?;

        let [etcd_client, etcd_peer, api, kcm] = free_ports::<4>()?;
        let server = format!("https://127.0.0.1:{api}");
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki, "admin")?;
        let kcm_kubeconfig = dir.join("kcm.kubeconfig");
        write_kubeconfig(&kcm_kubeconfig, &server, &pki, "kcm")?;

        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        let audit_log = logs.join("audit.log");
        let mut plane = Self {
            dir: dir.to_owned(),
            audit_log: audit_log.clone(),
            kubeconfig,
            server,
            processes: Vec::new(),
        };
        let p = |name: &str| pki.join(name).display().to_string();

        let mut etcd = Command::new(assets.join("etcd"));
        let client_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        etcd.args(["--name", "e2e", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e2e={peer_url}")])
            // A test cluster: durability does not matter, write latency does.
            .arg("--unsafe-no-fsync");
        plane
            .processes
            .push(Process::spawn("etcd", etcd, &logs.join("etcd.log"))?);

        let mut apiserver = Command::new(assets.join("kube-apiserver"));
        apiserver
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={api}"))
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--etcd-servers={client_url}"))
            .arg(format!("--service-account-issuer=https://127.0.0.1:{api}"))
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .args([
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
            ])
            // MutatingAdmissionPolicy (v1beta1 in 1.34-1.35, behind its gate): the in-tree engine.
            .args([
                "--feature-gates=MutatingAdmissionPolicy=true",
                "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
            ])
            .arg(format!("--audit-policy-file={}", audit_policy.display()))
            .arg(format!("--audit-log-path={}", audit_log.display()))
            .args(["--audit-log-format=json", "--audit-log-maxsize=0"]);
        plane.processes.push(Process::spawn(
            "kube-apiserver",
            apiserver,
            &logs.join("kube-apiserver.log"),
        )?);
        plane.wait_for_kubectl(
            "kube-apiserver /readyz",
            90,
            &["get", "--raw", "/readyz"],
            |o| o == b"ok",
        )?;

        let mut controller_manager = Command::new(assets.join("kube-controller-manager"));
        let kc = kcm_kubeconfig.display().to_string();
        controller_manager
            .arg(format!("--kubeconfig={kc}"))
            .arg(format!("--authentication-kubeconfig={kc}"))
            .arg(format!("--authorization-kubeconfig={kc}"))
            .args(["--bind-address=127.0.0.1", "--controllers=*"])
            .arg(format!("--secure-port={kcm}"))
            .arg("--leader-elect=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                p("sa.key")
            ))
            .arg(format!("--root-ca-file={}", p("ca.crt")))
            .args([
                "--use-service-account-credentials=false",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ]);
        plane.processes.push(Process::spawn(
            "kube-controller-manager",
            controller_manager,
            &logs.join("kube-controller-manager.log"),
        )?);
        // The service-account controller creating "default" in "default" shows the controller
        // manager is running its controllers.
        plane.wait_for_kubectl(
            "kube-controller-manager to create serviceaccount default/default",
            60,
            &[
                "get",
                "serviceaccount",
                "default",
                "-n",
                "default",
                "-o",
                "name",
            ],
            |_| true,
        )?;
        Ok(plane)
    }

    /// Waits until `kubectl ARGS` succeeds with an output `done` accepts, failing early if a
    /// control-plane process exits.
    fn wait_for_kubectl(
        &mut self,
        what: &str,
        seconds: u64,
        args: &[&str],
        done: impl Fn(&[u8]) -> bool,
    ) -> anyhow::Result<()> {
        wait_until(what, Duration::from_secs(seconds), || {
            self.check_alive()?;
            let out = Command::new(super::tool("kubectl"))
                .env("KUBECONFIG", &self.kubeconfig)
                .args(args)
                .output()
                .context("running kubectl")?;
            Ok((out.status.success() && done(&out.stdout)).then_some(()))
        })
    }

    /// Fails if a control-plane process has exited, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.processes {
            if let Some(status) = p.try_status() {
                anyhow::bail!("{} exited ({status}):\n{}", p.name, p.log_tail());
            }
        }
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.kill();
        }
    }
}

fn write_kubeconfig(path: &Path, server: &str, pki: &Path, user: &str) -> anyhow::Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server,
            "certificate-authority": pki.join("ca.crt"),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate": pki.join(format!("{user}.crt")),
            "client-key": pki.join(format!("{user}.key")),
        }}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}
