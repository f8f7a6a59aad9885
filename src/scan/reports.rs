//! The scan as PolicyReports or OpenReports: typed objects of the fields rwop-guard writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use serde::Serialize;
use serde_json::Value;

use super::{ScanReport, ScanRule};

/// `policy` of every PolicyReport result, and its `source`.
pub const REPORT_POLICY: &str = "rwop-guard";

/// Which report API to write: the two have the same results, under other names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport` and `ClusterPolicyReport`.
    PolicyReport,
    /// `openreports.io/v1alpha1` `Report` and `ClusterReport`, which Kyverno and Kubewarden
    /// write now.
    OpenReports,
}

impl ReportFormat {
    /// `group/version`.
    pub fn api_version(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "wgpolicyk8s.io/v1alpha2",
            ReportFormat::OpenReports => "openreports.io/v1alpha1",
        }
    }

    /// The API group: `wgpolicyk8s.io` or `openreports.io`.
    pub fn group(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "wgpolicyk8s.io",
            ReportFormat::OpenReports => "openreports.io",
        }
    }

    /// (namespaced kind, cluster kind)
    pub fn kinds(self) -> (&'static str, &'static str) {
        match self {
            ReportFormat::PolicyReport => ("PolicyReport", "ClusterPolicyReport"),
            ReportFormat::OpenReports => ("Report", "ClusterReport"),
        }
    }

    /// (namespaced resource, cluster resource): the plural names RBAC rules and CRDs use.
    pub fn resources(self) -> (&'static str, &'static str) {
        match self {
            ReportFormat::PolicyReport => ("policyreports", "clusterpolicyreports"),
            ReportFormat::OpenReports => ("reports", "clusterreports"),
        }
    }
}

/// The label every report rwop-guard writes carries; `scan --apply` prunes only reports with it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", REPORT_POLICY);

impl ReportSummary {
    /// The counts of `results`.
    pub fn of(results: &[ReportResult]) -> ReportSummary {
        let mut summary = ReportSummary::default();
        for r in results {
            match r.result {
                ResultStatus::Pass => summary.pass += 1,
                ResultStatus::Fail => summary.fail += 1,
                ResultStatus::Warn => summary.warn += 1,
            }
        }
        summary
    }
}

/// A report object, as both APIs define it (the fields rwop-guard writes).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ReportMeta,
    /// Report-level source: only OpenReports has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    pub summary: ReportSummary,
    pub results: Vec<ReportResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: BTreeMap<&'static str, &'static str>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReportSummary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub error: usize,
    pub skip: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    Pass,
    Fail,
    Warn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Medium,
    Low,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportResult {
    pub policy: &'static str,
    pub rule: &'static str,
    pub result: ResultStatus,
    pub scored: bool,
    pub severity: Severity,
    pub category: &'static str,
    pub source: &'static str,
    pub timestamp: ReportTimestamp,
    pub message: String,
    pub resources: Vec<ObjectReference>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<&'static str, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ReportTimestamp {
    pub seconds: i64,
    pub nanos: i32,
}

/// The scan as reports: one namespaced report named `rwop-guard` per namespace with scanned
/// claims or findings (always one for the scanned namespace), and one cluster report for the
/// volumes, named `rwop-guard` (`rwop-guard-<namespace>` for a one-namespace scan, so it does
/// not replace the whole-cluster report).
///
/// Results: V1 `fail` (severity high) per violation and `pass` per PV/claim that complies;
/// `rollout-deadlock` `warn` (medium) and `migration-candidate` `warn` (low), both unscored.
/// `timestamp` is the scan time, in seconds since the epoch.
pub fn reports(report: &ScanReport, timestamp: i64, format: ReportFormat) -> Vec<Report> {
    let mut namespaced: BTreeMap<String, Vec<ReportResult>> = BTreeMap::new();
    let mut cluster: Vec<ReportResult> = Vec::new();
    if let Some(ns) = &report.namespace {
        namespaced.entry(ns.clone()).or_default();
    }
    let mut push = |object: &ObjectReference, result: ReportResult| match &object.namespace {
        Some(ns) => namespaced.entry(ns.clone()).or_default().push(result),
        None => cluster.push(result),
    };
    let timestamp = ReportTimestamp {
        seconds: timestamp,
        nanos: 0,
    };
    let result = |rule: ScanRule, message: String, resources: Vec<ObjectReference>| {
        let (result, severity, scored) = match rule {
            ScanRule::V1 => (ResultStatus::Fail, Severity::High, true),
            ScanRule::RolloutDeadlock => (ResultStatus::Warn, Severity::Medium, false),
            ScanRule::MigrationCandidate => (ResultStatus::Warn, Severity::Low, false),
            ScanRule::MigrationBlocked => (ResultStatus::Warn, Severity::Medium, false),
            ScanRule::MigrationInProgress => (ResultStatus::Warn, Severity::Medium, false),
        };
        ReportResult {
            policy: REPORT_POLICY,
            rule: rule.as_str(),
            result,
            scored,
            severity,
            category: "ReadWriteOncePod",
            source: REPORT_POLICY,
            timestamp,
            message,
            resources,
            properties: BTreeMap::new(),
        }
    };
    for f in &report.findings {
        let mut resources = vec![f.object.clone()];
        resources.extend(f.related.iter().cloned());
        let mut r = result(f.rule, f.detail.clone(), resources);
        if let Some(command) = &f.command {
            r.properties.insert("command", command.clone());
        }
        push(&f.object, r);
    }
    for p in &report.passed {
        let mut r = result(
            ScanRule::V1,
            format!(
                "access modes {} comply: ReadWriteOncePod, where used, is the only mode",
                p.access_modes
            ),
            vec![p.object.clone()],
        );
        r.result = ResultStatus::Pass;
        push(&p.object, r);
    }
    let cluster_name = match &report.namespace {
        Some(ns) => format!("{REPORT_POLICY}-{ns}"),
        None => REPORT_POLICY.to_owned(),
    };
    let (namespaced_kind, cluster_kind) = format.kinds();
    let object = |kind, namespace: Option<String>, name: String, results: Vec<ReportResult>| {
        let summary = ReportSummary::of(&results);
        Report {
            api_version: format.api_version(),
            kind,
            metadata: ReportMeta {
                name,
                namespace,
                labels: BTreeMap::from([MANAGED_BY]),
            },
            source: (format == ReportFormat::OpenReports).then_some(REPORT_POLICY),
            summary,
            results,
        }
    };
    let mut docs: Vec<Report> = namespaced
        .into_iter()
        .map(|(ns, results)| object(namespaced_kind, Some(ns), REPORT_POLICY.to_owned(), results))
        .collect();
    docs.push(object(cluster_kind, None, cluster_name, cluster));
    docs
}

/// [`reports`] in the `wgpolicyk8s.io/v1alpha2` format, as JSON values.
pub fn policy_reports(report: &ScanReport, timestamp: i64) -> Vec<Value> {
    reports(report, timestamp, ReportFormat::PolicyReport)
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
}
