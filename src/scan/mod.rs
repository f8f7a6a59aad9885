//! `scan`: read the cluster and report what the webhook would deny (V1), which claims could move
//! to ReadWriteOncePod (migration candidates), and which Deployments cannot roll with the
//! ReadWriteOncePod claims they mount.
//!
//! Three steps, one module each: [`collect`] lists the objects page by page and keeps of each
//! only what the analysis reads ([`Inventory`]); [`analyze`] decides everything from that,
//! without I/O, so every decision is testable without a server; the renderers
//! ([`render_table`], [`reports`]) are pure as well.

use std::fmt;

use k8s_openapi::api::core::v1::ObjectReference;
use serde::Serialize;

use crate::policy::AccessModes;

mod analyze;
mod apply;
mod inventory;
mod output;
mod reports;

pub use analyze::analyze;
pub use apply::{
    Applied, ApplyError, CONCURRENCY, FIELD_MANAGER, MAX_RESULTS, apply, check_crds, plan,
};
pub(crate) use inventory::list_all;
pub use inventory::{Inventory, PAGE_SIZE, ScanError, collect, collect_workloads};
pub use output::{render_table, summary_line};
pub use reports::{
    MANAGED_BY, REPORT_POLICY, Report, ReportFormat, ReportMeta, ReportResult, ReportSummary,
    ReportTimestamp, ResultStatus, Severity, policy_reports, reports,
};

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ScanRule {
    /// ReadWriteOncePod combined with other access modes (rule V1): the webhook would deny it.
    #[serde(rename = "V1")]
    V1,
    /// A Deployment mounting a ReadWriteOncePod claim with more than one replica or a rolling
    /// update that surges: its pods cannot all get the volume, so rollouts hang.
    #[serde(rename = "rollout-deadlock")]
    RolloutDeadlock,
    /// A claim `rwop-guard migrate` accepts: bound [ReadWriteOnce] on a CSI [ReadWriteOnce]
    /// volume, no workload that cannot run with a single-pod claim.
    #[serde(rename = "migration-candidate")]
    MigrationCandidate,
    /// A bound [ReadWriteOnce] claim on a CSI volume that `migrate` refuses because of a
    /// workload (more than one replica, or a rollout that surges and no --switch-to-recreate).
    #[serde(rename = "migration-blocked")]
    MigrationBlocked,
    /// A migration (or rollback) recorded on a volume and not finished: where it stands and the
    /// command that finishes it or undoes it.
    #[serde(rename = "migration-in-progress")]
    MigrationInProgress,
}

impl ScanRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanRule::V1 => "V1",
            ScanRule::RolloutDeadlock => "rollout-deadlock",
            ScanRule::MigrationCandidate => "migration-candidate",
            ScanRule::MigrationBlocked => "migration-blocked",
            ScanRule::MigrationInProgress => "migration-in-progress",
        }
    }
}

impl fmt::Display for ScanRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to look at or fix.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub rule: ScanRule,
    /// The object to change: the PV or claim; the Deployment for `rollout-deadlock`; the
    /// StatefulSet for the claims of its `volumeClaimTemplates`.
    pub object: ObjectReference,
    /// One line: `<Kind> "<namespace>/<name>": <detail>`.
    pub message: String,
    /// What was found and what to do, without naming the object.
    pub detail: String,
    /// The command that fixes it, when there is one (`rwop-guard migrate NS/NAME`,
    /// `rwop-guard migrate --statefulset NS/NAME`, the command that resumes a migration).
    pub command: Option<String>,
    /// Other objects involved: the claims a Deployment mounts, the volume of a claim.
    pub related: Vec<ObjectReference>,
}

/// A PV or claim that passed V1 (a `pass` result in PolicyReports).
#[derive(Clone, Debug, PartialEq)]
pub struct Passed {
    pub object: ObjectReference,
    pub access_modes: AccessModes,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scanned {
    pub claims: usize,
    pub volumes: usize,
    /// Workloads whose pod template mounts a claim, or that make claims from templates, or
    /// whose pods mount one (a Deployment's ReplicaSets and a CronJob's Jobs count as their
    /// owner).
    pub workloads: usize,
    /// Pods that mount a claim.
    pub pods: usize,
    pub storage_classes: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub violations: usize,
    pub migration_candidates: usize,
    pub rollout_risks: usize,
    pub migration_blocked: usize,
    pub migrations_in_progress: usize,
}

/// Why `migrate` would refuse a claim that is no finding (not [ReadWriteOnce], not bound, not
/// CSI, …): every scanned claim is a candidate, a finding, or carries a note.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub object: ObjectReference,
    /// What `rwop-guard migrate` would answer.
    pub message: String,
}

/// The result of [`analyze`]; serialized as is for `--output json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// The namespace scanned, or null for all namespaces.
    pub namespace: Option<String>,
    pub scanned: Scanned,
    pub summary: Summary,
    /// Ordered by rule (V1, rollout-deadlock, migration-candidate, migration-blocked,
    /// migration-in-progress), then namespace, kind, name.
    pub findings: Vec<Finding>,
    /// Claims `migrate` would refuse that are no finding, with its reason; claims already
    /// [ReadWriteOncePod] on a [ReadWriteOncePod] volume have none.
    pub notes: Vec<Note>,
    #[serde(skip)]
    pub passed: Vec<Passed>,
}

impl ScanReport {
    /// True when V1 violations were found (exit status 1).
    pub fn has_violations(&self) -> bool {
        self.summary.violations > 0
    }
}
