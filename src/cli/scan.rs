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

--apply: the reports (-o openreports, the default, or -o policyreport) are written to the
cluster with server-side apply, field manager rwop-guard, labelled
app.kubernetes.io/managed-by=rwop-guard; then rwop-guard's reports (selected by that label)
that this scan no longer makes are deleted: a namespace without claims or findings any more, or
deleted, loses its report. Reports without that label (other tools') are never touched. A report
holds at most 500 results; more go to rwop-guard.2, rwop-guard.3, ... Writes and deletions run
4 at a time. Before anything is written, discovery checks that the API server serves the
format's two resources; if not, exit 2 naming them (check: kubectl get crd
reports.openreports.io clusterreports.openreports.io, or policyreports.wgpolicyk8s.io
clusterpolicyreports.wgpolicyk8s.io). stdout gets the summary line and what was written and
deleted.
  Scope: without -n, every namespace's report and the cluster report (rwop-guard, the
  volumes) are written and pruned. With -n NS, only the Report rwop-guard of NS is written or
  deleted; the cluster report is left as it is (a whole-cluster run keeps it current).
  RBAC, besides the list permissions above: on reports and clusterreports (openreports.io),
  or policyreports and clusterpolicyreports (wgpolicyk8s.io): list (to find its own stale
  reports), create and patch (server-side apply), delete. The chart's CronJob
  (reports.enabled=true) runs `scan --apply` with exactly that.

Exit status: 0 no V1 violation, 1 V1 violations found (whatever the output format), 2 cannot
scan (bad policy file or kubeconfig, or a list the API server refused; named on stderr). With
--apply: 0 the reports were written (the findings are in them), 2 cannot scan or write
(missing CRDs, a refused request; named on stderr)."#;

#[derive(Debug, Args)]
#[command(after_long_help = LONG_HELP)]
pub struct ScanArgs {
    /// Scan only this namespace (its claims, workloads and pods, and the volumes bound to them).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Scan every namespace (the default; wins over -n, as in kubectl).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format [default: table; with --apply: openreports, the format written].
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<ScanOutput>,
    /// Write the reports to the cluster (server-side apply) and delete rwop-guard's reports
    /// the scan no longer makes, instead of printing them: -o openreports (the default) or
    /// -o policyreport. See below for the scope, the RBAC and the exit status.
    #[arg(long)]
    pub apply: bool,
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

    /// The output format: -o, else openreports with --apply, else the table.
    pub fn output(&self) -> ScanOutput {
        match self.output {
            Some(output) => output,
            None if self.apply => ScanOutput::Openreports,
            None => ScanOutput::Table,
        }
    }

    /// The report format --apply writes; None when -o names no report format.
    fn apply_format(&self) -> Option<scan::ReportFormat> {
        match self.output() {
            ScanOutput::Openreports => Some(scan::ReportFormat::OpenReports),
            ScanOutput::Policyreport => Some(scan::ReportFormat::PolicyReport),
            ScanOutput::Table | ScanOutput::Json => None,
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
    if args.apply {
        let Some(format) = args.apply_format() else {
            eprintln!(
                "rwop-guard scan: --apply writes reports: use -o openreports (the default) or \
                 -o policyreport"
            );
            return ExitCode::from(super::EXIT_UNUSABLE);
        };
        return match runtime.block_on(apply(args, kube, &policy, format)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rwop-guard scan: {}", super::describe(&e));
                ExitCode::from(super::EXIT_UNUSABLE)
            }
        };
    }
    let inventory = match runtime.block_on(collect(args, kube)) {
        Ok(inventory) => inventory,
        Err(e) => {
            eprintln!("rwop-guard scan: {}", super::describe(&e));
            return ExitCode::from(super::EXIT_UNUSABLE);
        }
    };
    let report = scan::analyze(&policy, &inventory, args.scope());
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    if let Err(e) = render(&report, args.output(), &mut stdout) {
        eprintln!("rwop-guard scan: {e}");
        return ExitCode::from(super::EXIT_UNUSABLE);
    }
    if report.has_violations() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A client, and the API server's URL for messages.
async fn connect(kube: &KubeArgs) -> anyhow::Result<(kube::Client, String)> {
    let config = kube.config().await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    Ok((client, server))
}

async fn collect(args: &ScanArgs, kube: &KubeArgs) -> anyhow::Result<scan::Inventory> {
    let (client, server) = connect(kube).await?;
    scan::collect(&client, args.scope(), |line| {
        eprintln!("rwop-guard scan: {line}");
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e} (API server {server})"))
}

/// `scan --apply`: discovery (nothing is written without the CRDs), the scan, the writes and
/// the deletions; a summary of what was done on stdout.
async fn apply(
    args: &ScanArgs,
    kube: &KubeArgs,
    policy: &crate::policy::Policy,
    format: scan::ReportFormat,
) -> anyhow::Result<()> {
    let (client, server) = connect(kube).await?;
    let in_server = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e} (API server {server})");
    scan::check_crds(&client, format)
        .await
        .map_err(|e| in_server(&e))?;
    let mut progress = |line: &str| eprintln!("rwop-guard scan: {line}");
    let inventory = scan::collect(&client, args.scope(), &mut progress)
        .await
        .map_err(|e| in_server(&e))?;
    let report = scan::analyze(policy, &inventory, args.scope());
    drop(inventory);
    // Only the reports are kept while writing.
    let summary = scan::summary_line(&report);
    let planned = scan::plan(scan::reports(&report, now(), format), args.scope());
    drop(report);
    let applied = scan::apply(&client, format, planned, args.scope(), &mut progress)
        .await
        .map_err(|e| in_server(&e))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write!(out, "{}", applied_text(&summary, &applied, format)).context("cannot write stdout")?;
    out.flush().context("cannot write stdout")
}

/// The scan's summary line, then what --apply wrote and deleted.
fn applied_text(summary: &str, applied: &scan::Applied, format: scan::ReportFormat) -> String {
    let (kind, cluster_kind) = format.kinds();
    let count = |n: usize, kind: &str| format!("{n} {kind}{}", if n == 1 { "" } else { "s" });
    let mut text = format!("{summary}\n");
    text.push_str(&format!(
        "wrote {}, {} ({}, field manager {}); deleted {}, {} that the scan no longer makes\n",
        count(applied.written.len(), kind),
        count(applied.written_cluster.len(), cluster_kind),
        format.api_version(),
        scan::FIELD_MANAGER,
        count(applied.deleted.len(), kind),
        count(applied.deleted_cluster.len(), cluster_kind),
    ));
    for name in &applied.deleted {
        text.push_str(&format!("deleted {kind} {name}\n"));
    }
    for name in &applied.deleted_cluster {
        text.push_str(&format!("deleted {cluster_kind} {name}\n"));
    }
    for ns in &applied.terminating {
        text.push_str(&format!(
            "skipped namespace {ns}: it is being deleted or gone\n"
        ));
    }
    text
}

/// Seconds since the epoch.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
            let docs: Result<Vec<Value>, _> = scan::reports(report, now(), format)
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
