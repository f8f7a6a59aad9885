//! `migrate --all` / `--selector` / `--from-scan`: many claims, of one namespace or (from a scan
//! of all namespaces) several. Every claim is planned first with the single-claim [`prepare`]
//! (the same judgement on the live objects, the same recorded state), then the accepted ones run
//! with bounded concurrency. With `--rollback` the same flow rolls back every claim with a
//! recorded or finished migration.
//!
//! Claims that share a consumer (a Deployment, StatefulSet, ReplicaSet, or a bare pod mounting
//! several of them) form a group. A group is one unit of concurrency and its claims advance in
//! lockstep: every claim records its state, then every claim scales its consumers down, then each
//! claim is swapped, and only when all are bound are the consumers restored. So a shared consumer
//! goes to zero once and comes back once, and is never restored while another claim of it is
//! still being swapped. Groups never share a consumer, so they run concurrently safely.
//!
//! Resuming: every claim's progress is on its volume; a second run finds the claims again (and
//! claims deleted mid-migration through the state recorded on their volumes) and goes on.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Client;
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::migrate::access::claims::claims_of;
use crate::migrate::access::claims::locate;
/// Runs a fleet plan: its groups with bounded concurrency, each phase by phase.
pub use crate::migrate::lockstep::execute;
use crate::migrate::model::error::MigrateError;
pub use crate::migrate::model::plan::{
    Action, Entry, FleetEvent, FleetOptions, FleetPlan, Outcome, Summary,
};
use crate::migrate::model::plan::{MigrateOptions, Plan, Progress, group};
use crate::migrate::planner::prepare;
use crate::policy::{AccessMode, MIGRATED_FROM_ANNOTATION};
use crate::scan::ScanRule;

/// The part of `rwop-guard scan -o json` output `--from-scan` reads (the rest is ignored).
#[derive(Debug, Deserialize)]
struct ScanOutput {
    /// The namespace scanned; null for all namespaces.
    namespace: Option<String>,
    // Present in every scan output: required, so that other JSON is not taken for a scan.
    #[allow(dead_code)]
    scanned: IgnoredAny,
    #[allow(dead_code)]
    summary: IgnoredAny,
    findings: Vec<ScanFinding>,
}

#[derive(Debug, Deserialize)]
struct ScanFinding {
    rule: String,
    object: ScanObject,
}

#[derive(Debug, Deserialize)]
struct ScanObject {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

/// The migration candidates of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanCandidates {
    /// The namespace the scan covered; `None` for all namespaces.
    pub scanned_namespace: Option<String>,
    /// (namespace, claim), in the scan's order.
    pub claims: Vec<(String, String)>,
    /// (namespace, name) of the StatefulSets the scan names as candidates: their claims move
    /// with `migrate --statefulset`, not in a fleet.
    pub statefulsets: Vec<(String, String)>,
}

/// Why a `--from-scan` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScanFileError {
    #[error(
        "{source_name} is not the output of `rwop-guard scan -o json` ({reason}); run `rwop-guard scan -o json > FILE` and pass that file"
    )]
    NotScanOutput { source_name: String, reason: String },
    #[error(
        "{source_name} is a scan of namespace {scanned}, not of {wanted}: drop --namespace, or scan namespace {wanted}"
    )]
    OtherNamespace {
        source_name: String,
        scanned: String,
        wanted: String,
    },
}

/// Reads the migration candidates (rule `migration-candidate`, PersistentVolumeClaims) out of
/// `scan -o json` output. `namespace`: only that namespace's candidates (a scan of another
/// namespace is an error). `source_name` names the input in errors.
pub fn candidates_from_scan(
    text: &str,
    source_name: &str,
    namespace: Option<&str>,
) -> Result<ScanCandidates, ScanFileError> {
    let not_scan = |reason: String| ScanFileError::NotScanOutput {
        source_name: source_name.to_owned(),
        reason,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let scan: ScanOutput = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            not_scan(inner.to_string())
        } else {
            not_scan(format!("at {path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| not_scan(e.to_string()))?;
    if let (Some(scanned), Some(wanted)) = (&scan.namespace, namespace)
        && scanned != wanted
    {
        return Err(ScanFileError::OtherNamespace {
            source_name: source_name.to_owned(),
            scanned: scanned.clone(),
            wanted: wanted.to_owned(),
        });
    }
    let mut seen = BTreeSet::new();
    let mut claims = Vec::new();
    let mut statefulsets = Vec::new();
    for (i, f) in scan.findings.into_iter().enumerate() {
        if f.rule != ScanRule::MigrationCandidate.as_str() {
            continue;
        }
        let (Some(kind @ ("PersistentVolumeClaim" | "StatefulSet")), Some(ns), Some(name)) = (
            f.object.kind.as_deref(),
            f.object.namespace.filter(|n| !n.is_empty()),
            f.object.name.filter(|n| !n.is_empty()),
        ) else {
            return Err(not_scan(format!(
                "findings[{i}] is a migration candidate but not a PersistentVolumeClaim or StatefulSet with namespace and name"
            )));
        };
        if namespace.is_some_and(|wanted| wanted != ns) {
            continue;
        }
        if kind == "StatefulSet" {
            statefulsets.push((ns, name));
        } else if seen.insert((ns.clone(), name.clone())) {
            claims.push((ns, name));
        }
    }
    Ok(ScanCandidates {
        scanned_namespace: scan.namespace,
        claims,
        statefulsets,
    })
}

/// Whether the volume carries the marker a finished migration leaves.
fn marked(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIGRATED_FROM_ANNOTATION))
        .is_some_and(|v| v == AccessMode::ReadWriteOnce.as_str())
}

/// What happens to one claim: the single-claim [`prepare`]; for a rollback, a claim with
/// neither a recorded state nor the marker of a finished migration is not migrated.
async fn plan_one(
    client: &Client,
    namespace: &str,
    claim: &str,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Action {
    if opts.rollback {
        match locate(client, namespace, claim).await {
            Ok(located) if located.state.is_none() && !marked(&located.volume) => {
                return Action::NotMigrated {
                    volume: located.volume.metadata.name,
                };
            }
            Ok(_) => {}
            // Not found or not bound, and no volume records a migration of it.
            Err(MigrateError::Refused(_)) => return Action::NotMigrated { volume: None },
            Err(e) => {
                return Action::Refused {
                    reason: e.to_string(),
                };
            }
        }
    }
    match prepare(client, namespace, claim, opts, progress).await {
        Ok(Plan::Run(plan)) => Action::Run(plan),
        Ok(Plan::AlreadyMigrated { volume }) => Action::AlreadyMigrated { volume },
        Err(e) => Action::Refused {
            reason: e.to_string(),
        },
    }
}

/// Plans every claim, (namespace, name), through [`prepare`] (read-only): the live objects are
/// judged again, whatever listed the claims. Warnings are reported per claim.
pub async fn plan(
    client: &Client,
    claims: &[(String, String)],
    opts: &MigrateOptions,
    report: &dyn Fn(FleetEvent),
) -> FleetPlan {
    let mut entries = Vec::new();
    for (namespace, claim) in claims {
        let id = format!("{namespace}/{claim}");
        let mut progress = |p| {
            report(FleetEvent::Step {
                claim: id.clone(),
                progress: p,
            })
        };
        let action = plan_one(client, namespace, claim, opts, &mut progress).await;
        entries.push(Entry {
            namespace: namespace.clone(),
            claim: claim.clone(),
            action,
        });
    }
    let groups = group(&mut entries);
    FleetPlan {
        rollback: opts.rollback,
        entries,
        groups,
    }
}
