//! `rwop-guard serve` as a process, and the chart's webhook configurations pointed at it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::process::Process;
use super::{tool, wait_until};

/// A running `rwop-guard serve`, with cluster access through a kubeconfig as in the chart.
pub struct Serve {
    pub process: Process,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
}

/// What `serve` is started with.
pub struct ServeSpec<'a> {
    pub tls_cert: &'a Path,
    pub tls_key: &'a Path,
    pub config: &'a Path,
    pub kubeconfig: &'a Path,
    pub log: &'a Path,
    pub extra_args: &'a [&'a str],
}

impl Serve {
    /// Starts the server on free loopback ports and waits until `/readyz` answers 200 (caches
    /// synced).
    pub fn start(spec: &ServeSpec<'_>) -> anyhow::Result<Self> {
        // A restart appends to the same log: find this run's "serving" line, not an old one.
        let skip = std::fs::read_to_string(spec.log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let mut command = rwop_test_support::binary::command(rwop_test_support::binary::path());
        command
            .arg("serve")
            .arg("--tls-cert")
            .arg(spec.tls_cert)
            .arg("--tls-key")
            .arg(spec.tls_key)
            .arg("--config")
            .arg(spec.config)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(spec.extra_args)
            .env("KUBECONFIG", spec.kubeconfig)
            .env("RUST_LOG", "info");
        let mut process = Process::spawn("rwop-guard serve", command, spec.log)?;
        let (addr, metrics_addr) = wait_until(
            "rwop-guard serve to log its addresses",
            Duration::from_secs(30),
            || {
                if let Some(status) = process.try_status() {
                    anyhow::bail!("serve exited ({status}):\n{}", process.log_tail());
                }
                let text = std::fs::read_to_string(spec.log).unwrap_or_default();
                Ok(text.lines().skip(skip).find_map(|line| {
                    let v: Value = serde_json::from_str(line).ok()?;
                    (v["message"] == "rwop-guard serving").then_some(())?;
                    Some((
                        v["addr"].as_str()?.parse().ok()?,
                        v["metrics_addr"].as_str()?.parse().ok()?,
                    ))
                }))
            },
        )?;
        let serve = Self {
            process,
            addr,
            metrics_addr,
        };
        serve.wait_ready()?;
        Ok(serve)
    }

    pub fn wait_ready(&self) -> anyhow::Result<()> {
        wait_until("rwop-guard /readyz", Duration::from_secs(60), || {
            Ok((self.get("/readyz").ok().map(|(code, _)| code) == Some(200)).then_some(()))
        })
        .with_context(|| self.process.log_tail())
    }

    /// A plain HTTP GET on the metrics port: (status, body).
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.metrics_addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }

    /// The sum of every sample of a metric family (all label sets).
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = self.get("/metrics")?;
        Ok(body
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The JSON log lines of reviews this server answered.
    pub fn reviews(&self) -> Vec<Value> {
        log_lines(&self.process.log)
            .into_iter()
            .filter(|v| v["target"] == "rwop_guard::review")
            .collect()
    }
}

pub fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The chart, rendered by `helm template` as a user would install it (`tls.mode=secret` with
/// the test CA as the bundle).
pub struct Chart {
    pub documents: Vec<Value>,
}

impl Chart {
    pub fn render(release: &str, ca_file: &Path, set: &[&str]) -> anyhow::Result<Self> {
        Self::render_with(release, ca_file, &[], set)
    }

    /// As [`Chart::render`], with values files (`--values`) before the `--set` values.
    pub fn render_with(
        release: &str,
        ca_file: &Path,
        values: &[&Path],
        set: &[&str],
    ) -> anyhow::Result<Self> {
        let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/rwop-guard");
        let mut command = Command::new(tool("helm"));
        command
            .args(["template", release])
            .arg(&chart)
            .args(["--namespace", "rwop-guard"])
            .args([
                "--set",
                "tls.mode=secret",
                "--set",
                "tls.secretName=e2e-tls",
            ])
            .arg("--set-file")
            .arg(format!("tls.caBundle={}", ca_file.display()));
        for v in values {
            command.arg("--values").arg(v);
        }
        for s in set {
            command.args(["--set", s]);
        }
        let out = command
            .output()
            .context("running helm (scripts/install-tools.sh installs it)")?;
        anyhow::ensure!(
            out.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let documents = serde_saphyr::from_multiple(&String::from_utf8(out.stdout)?)
            .context("helm template printed something that is not YAML")?;
        Ok(Self { documents })
    }

    /// The policy file the chart's ConfigMap gives the pods.
    pub fn policy_yaml(&self) -> anyhow::Result<String> {
        self.documents
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .and_then(|d| d["data"]["policy.yaml"].as_str())
            .map(str::to_owned)
            .context("the chart rendered no policy ConfigMap")
    }

    /// The webhook configurations, with each `clientConfig.service` replaced by the URL of
    /// `addr` (same path) and the caBundle kept: what the API server calls outside a cluster.
    pub fn webhook_configurations(&self, addr: SocketAddr) -> Vec<Value> {
        let mut configs: Vec<Value> = self
            .documents
            .iter()
            .filter(|d| {
                d["kind"] == "ValidatingWebhookConfiguration"
                    || d["kind"] == "MutatingWebhookConfiguration"
            })
            .cloned()
            .collect();
        for config in &mut configs {
            for webhook in config["webhooks"].as_array_mut().into_iter().flatten() {
                let client = &mut webhook["clientConfig"];
                let path = client["service"]["path"].as_str().unwrap_or("/").to_owned();
                if let Some(c) = client.as_object_mut() {
                    c.remove("service");
                    c.insert("url".into(), format!("https://{addr}{path}").into());
                }
            }
        }
        configs
    }
}
