use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::kube_args::KubeArgs;
use crate::{manifests, policy_file, scan};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ScanOutput {
    /// Aligned columns KIND, NAMESPACE, NAME, FINDING, DETAIL, then a summary line.
    #[default]
    Table,
    /// One JSON object: namespace, scanned, summary, findings.
    Json,
    /// wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace) and a ClusterPolicyReport
    /// (volumes), as a YAML stream for `kubectl apply -f -`.
    Policyreport,
    /// openreports.io/v1alpha1 Reports (one per namespace) and a ClusterReport (volumes), the
    /// successor API that Kyverno and Kubewarden write, as a YAML stream for `kubectl apply -f -`.
    Openreports,
}

/// The details of `scan --help`; the one-line summary is the `Scan` variant's doc comment.
const LONG_HELP: &str = r#"What it reports:
  V1                   PersistentVolumes and PersistentVolumeClaims that combine
                       ReadWriteOncePod with other access modes (what the webhook denies).
  rollout-deadlock     Workloads (Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
                       CronJobs, ReplicationControllers, bare pods) whose pod template mounts
                       a ReadWriteOncePod claim they cannot run on: more than one replica, a
                       RollingUpdate whose maxSurge is not 0 (the default), a DaemonSet,
                       overlapping CronJob runs, or a claim another workload also mounts.
                       The words are those the webhook's rule W2 warns with on apply.
  migration-candidate  Claims `rwop-guard migrate` accepts (the same judgement as its
                       preflight): Bound [ReadWriteOnce] claims on a [ReadWriteOnce] CSI
                       volume bound to them, whatever their class (storageClassName ""
                       included; a class not known to support ReadWriteOncePod is a caution
                       in the detail); each names its `rwop-guard migrate NAMESPACE/NAME`
                       command, with --switch-to-recreate when a Deployment's rollout would
                       surge. A StatefulSet's volumeClaimTemplates claims are one finding on
                       the StatefulSet, naming `rwop-guard migrate --statefulset NS/NAME`.
  migration-blocked    Such claims (or StatefulSets) migrate refuses because of the workloads
                       that use them, with migrate's message. Every other claim migrate would
                       refuse gets a note with the reason (--output json).
  migration-in-progress
                       Volumes a `migrate` run left part-way (resume or roll it back).

Scope: without -n, every namespace. With -n, the claims, workloads and pods of that namespace
and the volumes whose claimRef is in it. -A wins over -n, as in kubectl. Lists are paginated
(500 per request), progress goes to stderr. Needs list permission on persistentvolumeclaims,
persistentvolumes, storageclasses, pods and replicationcontrollers, deployments, replicasets,
statefulsets and daemonsets (apps), jobs and cronjobs (batch).

--output json: {"namespace", "scanned", "summary", "findings": [{"rule", "object", "message",
"detail", "command", "related"}], "notes": [{"object", "message"}]}; object and related are
ObjectReferences (apiVersion, kind, namespace, name, uid).

--output policyreport: results with policy and source "rwop-guard"; rule V1 is "fail"
(severity high) per violation and "pass" per compliant volume or claim; rollout-deadlock
(medium) and migration-candidate (low) are unscored "warn". The ClusterPolicyReport is named
rwop-guard, or rwop-guard-NAMESPACE with -n so that it never replaces the full one.

Exit status: 0 no V1 violation, 1 V1 violations found (whatever the output format), 2 cannot
scan (bad policy file or kubeconfig, or a list the API server refused; named on stderr)."#;

#[derive(Debug, Args)]
#[command(after_long_help = LONG_HELP)]
pub struct ScanArgs {
    /// Scan only this namespace (its claims, workloads and pods, and the volumes bound to them).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Scan every namespace (the default; wins over -n, as in kubectl).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ScanOutput,
    /// Policy file (YAML): mutation.storageClasses and mutation.provisioners decide which classes
    /// count as supporting ReadWriteOncePod.
    #[arg(long, value_name = "FILE", env = "RWOP_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

impl ScanArgs {
    /// The namespace to scan, or None for all.
    pub fn scope(&self) -> Option<&str> {
        if self.all_namespaces {
            None
        } else {
            self.namespace.as_deref()
        }
    }
}

pub fn run(args: &ScanArgs, kube: &KubeArgs) -> ExitCode {
    let policy = match policy_file::load(args.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rwop-guard scan: {e}");
            return ExitCode::from(super::EXIT_UNUSABLE);
        }
    };
    let runtime = match super::runtime("scan", false, ExitCode::from(super::EXIT_UNUSABLE)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let inventory = match runtime.block_on(collect(args, kube)) {
        Ok(inventory) => inventory,
        Err(e) => {
            eprintln!("rwop-guard scan: {}", super::describe(&e));
            return ExitCode::from(super::EXIT_UNUSABLE);
        }
    };
    let report = scan::analyze(&policy, &inventory, args.scope());
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    if let Err(e) = render(&report, args.output, &mut stdout) {
        eprintln!("rwop-guard scan: {e}");
        return ExitCode::from(super::EXIT_UNUSABLE);
    }
    if report.has_violations() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn collect(args: &ScanArgs, kube: &KubeArgs) -> anyhow::Result<scan::Inventory> {
    let config = kube.config().await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    scan::collect(&client, args.scope(), |line| {
        eprintln!("rwop-guard scan: {line}");
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e} (API server {server})"))
}

/// Writes the report in the chosen format, ending with a newline. JSON is written as it is
/// serialized (a scan of a large cluster is never held twice).
pub fn render(
    report: &scan::ScanReport,
    output: ScanOutput,
    out: &mut impl Write,
) -> Result<(), String> {
    let text = match output {
        ScanOutput::Table => scan::render_table(report),
        ScanOutput::Json => {
            serde_json::to_writer_pretty(&mut *out, report)
                .map_err(|e| format!("cannot write JSON: {e}"))?;
            "\n".to_owned()
        }
        ScanOutput::Policyreport | ScanOutput::Openreports => {
            let format = if output == ScanOutput::Openreports {
                scan::ReportFormat::OpenReports
            } else {
                scan::ReportFormat::PolicyReport
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            let docs: Result<Vec<Value>, _> = scan::reports(report, now, format)
                .iter()
                .map(serde_json::to_value)
                .collect();
            let docs = docs.map_err(|e| format!("cannot write the reports: {e}"))?;
            manifests::to_yaml_stream(&docs).map_err(|e| format!("cannot write YAML: {e}"))?
        }
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write stdout: {e}"))
}
