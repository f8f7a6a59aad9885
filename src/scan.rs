//! `scan`: read the cluster and report what the webhook would deny (V1), which claims could move
//! to ReadWriteOncePod (migration candidates), and which Deployments cannot roll with the
//! ReadWriteOncePod claims they mount.
//!
//! Two halves: [`collect`] lists the objects (paginated, with progress), and [`analyze`] decides
//! everything from what was listed, without I/O, so every decision is testable without a server.
//! The renderers ([`render_table`], [`reports`]) are pure as well.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::migrate::eligibility::{Allowances, Blocker, RolloutRisk, Verdict, Workload, judge};
use crate::policy::{
    AccessMode, AccessModes, ClusterFacts, Facts, Policy, StorageClassFacts, Subject,
    class_supports_rwop, exclusive_rwop_violation,
};

/// Objects per list request (the page size kubectl uses).
pub const PAGE_SIZE: u32 = 500;

/// `policy` of every PolicyReport result, and its `source`.
pub const REPORT_POLICY: &str = "rwop-guard";

/// What [`collect`] listed. With a namespace, claims and Deployments are those of the namespace;
/// PersistentVolumes and StorageClasses are cluster-scoped and always listed whole.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
    pub storage_classes: Vec<StorageClass>,
    pub deployments: Vec<Deployment>,
}

/// A list request that failed; the scan cannot go on without it.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {resource}: {}", describe(.error))]
pub struct ScanError {
    /// The plural resource name, e.g. `persistentvolumeclaims`.
    pub resource: &'static str,
    /// In the message, so not also a `source()`.
    pub error: kube::Error,
}

/// `Forbidden (403): <the API server's message>` for API errors, else the error and its causes.
fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(status) = e {
        let reason = if status.reason.is_empty() {
            "error"
        } else {
            status.reason.as_str()
        };
        return format!("{reason} ({}): {}", status.code, status.message);
    }
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    crate::one_line(&parts.join(": "))
}

/// Lists claims, volumes, StorageClasses and Deployments, `namespace` limiting the namespaced
/// ones. `progress` gets one line per page (`listed 1500 persistentvolumeclaims, about 300 more…`)
/// and one when a resource is done (`listed 1800 persistentvolumeclaims`).
pub async fn collect(
    client: &Client,
    namespace: Option<&str>,
    mut progress: impl FnMut(&str),
) -> Result<Inventory, ScanError> {
    let claims = list_all(
        &scoped(client, namespace),
        "persistentvolumeclaims",
        &mut progress,
    )
    .await?;
    let volumes = list_all(
        &Api::all(client.clone()),
        "persistentvolumes",
        &mut progress,
    )
    .await?;
    let storage_classes =
        list_all(&Api::all(client.clone()), "storageclasses", &mut progress).await?;
    let deployments = list_all(&scoped(client, namespace), "deployments", &mut progress).await?;
    Ok(Inventory {
        claims,
        volumes,
        storage_classes,
        deployments,
    })
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Lists every object of `api` in pages of [`PAGE_SIZE`].
pub(crate) async fn list_all<K>(
    api: &Api<K>,
    resource: &'static str,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<K>, ScanError>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug,
{
    let fail = |error| ScanError { resource, error };
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = match api.list(&params).await {
            Ok(page) => page,
            // The continue token expired (the listing outlived the API server's history window).
            // Like client-go's pager, fall back to one unpaginated list rather than mixing two
            // snapshots.
            Err(kube::Error::Api(status)) if status.code == 410 && token.is_some() => {
                progress(&format!(
                    "the {resource} list expired after {} objects; listing them again in one request…",
                    items.len()
                ));
                let all = api.list(&ListParams::default()).await.map_err(fail)?;
                progress(&format!("listed {} {resource}", all.items.len()));
                return Ok(all.items);
            }
            Err(e) => return Err(fail(e)),
        };
        items.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            progress(&format!("listed {} {resource}", items.len()));
            return Ok(items);
        }
        match page.metadata.remaining_item_count {
            Some(more) if more > 0 => progress(&format!(
                "listed {} {resource}, about {more} more…",
                items.len()
            )),
            _ => progress(&format!("listed {} {resource}…", items.len())),
        }
    }
}

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
}

impl ScanRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanRule::V1 => "V1",
            ScanRule::RolloutDeadlock => "rollout-deadlock",
            ScanRule::MigrationCandidate => "migration-candidate",
            ScanRule::MigrationBlocked => "migration-blocked",
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
    /// The object to change: the PV or claim, or the Deployment for `rollout-deadlock`.
    pub object: ObjectReference,
    /// One line: `<Kind> "<namespace>/<name>": <detail>`.
    pub message: String,
    /// What was found and what to do, without naming the object.
    pub detail: String,
    /// The command that fixes it, when there is one (`rwop-guard migrate NS/NAME`).
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
    pub deployments: usize,
    pub storage_classes: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub violations: usize,
    pub migration_candidates: usize,
    pub rollout_risks: usize,
    pub migration_blocked: usize,
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
    /// Ordered by rule (V1, rollout-deadlock, migration-candidate, migration-blocked), then
    /// namespace, kind, name.
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

/// The facts the policy reads, from the listed StorageClasses.
pub fn facts_from(storage_classes: &[StorageClass]) -> Facts {
    Facts {
        cluster: Some(ClusterFacts {
            storage_classes: storage_classes
                .iter()
                .filter_map(|sc| {
                    let name = sc.metadata.name.clone()?;
                    Some((
                        name,
                        StorageClassFacts {
                            provisioner: sc.provisioner.clone(),
                        },
                    ))
                })
                .collect(),
            ..ClusterFacts::default()
        }),
    }
}

/// Every decision of the scan. `namespace` limits claims and Deployments to that namespace and
/// volumes to those whose `claimRef` is in it.
pub fn analyze(policy: &Policy, inventory: &Inventory, namespace: Option<&str>) -> ScanReport {
    let facts = facts_from(&inventory.storage_classes);
    let in_scope =
        |meta: &ObjectMeta| namespace.is_none_or(|ns| meta.namespace.as_deref() == Some(ns));
    let claims: Vec<&PersistentVolumeClaim> = inventory
        .claims
        .iter()
        .filter(|c| in_scope(&c.metadata))
        .collect();
    let volumes: Vec<&PersistentVolume> = inventory
        .volumes
        .iter()
        .filter(|pv| {
            namespace.is_none_or(|ns| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|r| r.namespace.as_deref())
                    == Some(ns)
            })
        })
        .collect();
    let deployments: Vec<&Deployment> = inventory
        .deployments
        .iter()
        .filter(|d| in_scope(&d.metadata))
        .collect();
    let volumes_by_name: HashMap<&str, &PersistentVolume> = inventory
        .volumes
        .iter()
        .filter_map(|pv| Some((pv.metadata.name.as_deref()?, pv)))
        .collect();
    let claims_by_key: HashMap<(&str, &str), &PersistentVolumeClaim> = claims
        .iter()
        .filter_map(|c| {
            Some((
                (
                    c.metadata.namespace.as_deref()?,
                    c.metadata.name.as_deref()?,
                ),
                *c,
            ))
        })
        .collect();
    // (namespace, claim) -> the Deployments whose pod template mounts it.
    let mut mounted_by: HashMap<(&str, &str), Vec<&Deployment>> = HashMap::new();
    for d in &deployments {
        let Some(ns) = d.metadata.namespace.as_deref() else {
            continue;
        };
        for claim in template_claims(d) {
            mounted_by.entry((ns, claim)).or_default().push(*d);
        }
    }

    let mut findings = Vec::new();
    let mut passed = Vec::new();
    // V1 for every volume and claim: a finding, or a pass for the reports.
    let mut judge_v1 = |subject: Subject<'_>, object: ObjectReference, modes: &AccessModes| {
        match exclusive_rwop_violation(subject, modes) {
            Some(v) => findings.push(Finding {
                rule: ScanRule::V1,
                object,
                message: v.message,
                detail: v.detail,
                command: None,
                related: Vec::new(),
            }),
            None => passed.push(Passed {
                object,
                access_modes: modes.clone(),
            }),
        }
    };
    for pv in &volumes {
        let modes =
            AccessModes::from_optional(pv.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
        let object = reference("v1", "PersistentVolume", &pv.metadata);
        judge_v1(Subject::volume(&pv.metadata), object, &modes);
    }
    let mut candidates = Vec::new();
    let mut notes = Vec::new();
    for claim in &claims {
        let modes = claim_modes(claim);
        let object = reference("v1", "PersistentVolumeClaim", &claim.metadata);
        judge_v1(Subject::claim(&claim.metadata), object, &modes);
        match migration_finding(policy, &facts, claim, &volumes_by_name, &mounted_by) {
            Outcome::Finding(f) => candidates.push(f),
            Outcome::Note(n) => notes.push(n),
            Outcome::Nothing => {}
        }
    }
    findings.extend(candidates);
    for d in &deployments {
        if let Some(f) = rollout_deadlock(d, &claims_by_key) {
            findings.push(f);
        }
    }

    findings.sort_by(|a, b| {
        (a.rule, &a.object.namespace, &a.object.kind, &a.object.name).cmp(&(
            b.rule,
            &b.object.namespace,
            &b.object.kind,
            &b.object.name,
        ))
    });
    let count = |rule| findings.iter().filter(|f| f.rule == rule).count();
    ScanReport {
        namespace: namespace.map(str::to_owned),
        scanned: Scanned {
            claims: claims.len(),
            volumes: volumes.len(),
            deployments: deployments.len(),
            storage_classes: inventory.storage_classes.len(),
        },
        summary: Summary {
            violations: count(ScanRule::V1),
            migration_candidates: count(ScanRule::MigrationCandidate),
            rollout_risks: count(ScanRule::RolloutDeadlock),
            migration_blocked: count(ScanRule::MigrationBlocked),
        },
        findings,
        notes,
        passed,
    }
}

fn claim_modes(claim: &PersistentVolumeClaim) -> AccessModes {
    AccessModes::from_optional(claim.spec.as_ref().and_then(|s| s.access_modes.as_ref()))
}

fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    }
}

/// `shop/orders-db`, or `orders-db` for cluster-scoped objects.
fn qualified(r: &ObjectReference) -> String {
    match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.name.as_deref().unwrap_or("")),
        None => r.name.clone().unwrap_or_default(),
    }
}

/// Claim names the Deployment's pod template mounts.
fn template_claims(d: &Deployment) -> Vec<&str> {
    let mut names: Vec<&str> = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn rollout_deadlock(
    d: &Deployment,
    claims: &HashMap<(&str, &str), &PersistentVolumeClaim>,
) -> Option<Finding> {
    let ns = d.metadata.namespace.as_deref()?;
    let rwop: Vec<&PersistentVolumeClaim> = template_claims(d)
        .into_iter()
        .filter_map(|name| claims.get(&(ns, name)).copied())
        .filter(|c| claim_modes(c).contains(AccessMode::ReadWriteOncePod))
        .collect();
    if rwop.is_empty() {
        return None;
    }
    let risk = RolloutRisk::of(d)?;
    let names: Vec<String> = rwop
        .iter()
        .map(|c| format!("\"{}\"", c.metadata.name.as_deref().unwrap_or("")))
        .collect();
    let detail = format!(
        "mounts ReadWriteOncePod {} {} {}",
        if names.len() == 1 { "claim" } else { "claims" },
        names.join(", "),
        risk.explain()
    );
    let object = reference("apps/v1", "Deployment", &d.metadata);
    Some(Finding {
        rule: ScanRule::RolloutDeadlock,
        message: format!("Deployment \"{}\": {detail}", qualified(&object)),
        object,
        detail,
        command: None,
        related: rwop
            .iter()
            .map(|c| reference("v1", "PersistentVolumeClaim", &c.metadata))
            .collect(),
    })
}

enum Outcome {
    Finding(Finding),
    Note(Note),
    Nothing,
}

/// What `rwop-guard migrate` would answer for `claim`, decided by the same function its
/// preflight calls ([`judge`]), on the Deployments whose pod template mounts the claim. The
/// candidate's command carries `--switch-to-recreate` when a Deployment's rollout would surge.
/// The class is not part of the verdict (migrate needs a CSI volume, not a class); a class that
/// is not known to support ReadWriteOncePod is said in the detail.
fn migration_finding(
    policy: &Policy,
    facts: &Facts,
    claim: &PersistentVolumeClaim,
    volumes: &HashMap<&str, &PersistentVolume>,
    mounted_by: &HashMap<(&str, &str), Vec<&Deployment>>,
) -> Outcome {
    let ns = claim.metadata.namespace.as_deref().unwrap_or("");
    let name = claim.metadata.name.as_deref().unwrap_or("");
    let spec = claim.spec.as_ref();
    let volume_name = spec
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let pv = volume_name.and_then(|v| volumes.get(v).copied());
    let mut deployments: Vec<&&Deployment> =
        mounted_by.get(&(ns, name)).into_iter().flatten().collect();
    deployments.sort_by_key(|d| d.metadata.name.as_deref());
    let workloads: Vec<Workload> = deployments
        .iter()
        .map(|d| Workload::from_deployment(d))
        .collect();
    let allow = Allowances {
        allow_non_csi: false,
        switch_to_recreate: true,
    };
    let object = reference("v1", "PersistentVolumeClaim", &claim.metadata);
    let target = qualified(&object);
    let related = || {
        pv.map(|pv| vec![reference("v1", "PersistentVolume", &pv.metadata)])
            .unwrap_or_default()
    };
    match judge(claim, pv, &workloads, allow) {
        Verdict::AlreadyMigrated => Outcome::Nothing,
        Verdict::Refused(r) if r.blocker == Blocker::Workload => {
            let detail = format!(
                "{} migrate refuses it: {}",
                crate::program_name(),
                r.message
            );
            Outcome::Finding(Finding {
                rule: ScanRule::MigrationBlocked,
                message: format!("PersistentVolumeClaim \"{target}\": {detail}"),
                object,
                detail,
                command: None,
                related: related(),
            })
        }
        Verdict::Refused(r) => Outcome::Note(Note {
            object,
            message: r.message,
        }),
        Verdict::Accepted { switches, .. } => {
            let Some(pv) = pv else {
                return Outcome::Nothing;
            };
            let mut command = format!("{} migrate {target}", crate::program_name());
            if !switches.is_empty() {
                command.push_str(" --switch-to-recreate");
            }
            let driver = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.driver.as_str())
                .unwrap_or("");
            let class = spec
                .and_then(|s| s.storage_class_name.as_deref())
                .filter(|c| !c.is_empty());
            let class_text = match class {
                None => "with no storage class (bound to a volume made by hand)".to_owned(),
                Some(c) => match class_supports_rwop(policy, facts, c) {
                    Ok(_) => format!("of storage class \"{c}\", which supports ReadWriteOncePod"),
                    Err(why) => format!(
                        "of storage class \"{c}\" (caution: {why}; check that the driver \
                         supports ReadWriteOncePod)"
                    ),
                },
            };
            let mut detail = format!(
                "[ReadWriteOnce] claim bound to CSI volume \"{}\" (driver {driver}) {class_text}; \
                 to let only one pod use it, run: {command}",
                volume_name.unwrap_or("")
            );
            for s in &switches {
                detail.push_str(&format!(
                    "; Deployment \"{}\" ({}) cannot roll with ReadWriteOncePod: \
                     --switch-to-recreate sets its strategy to Recreate (--rollback restores it), \
                     or set strategy: Recreate yourself and run migrate without the flag",
                    s.deployment, s.from
                ));
            }
            Outcome::Finding(Finding {
                rule: ScanRule::MigrationCandidate,
                message: format!("PersistentVolumeClaim \"{target}\": {detail}"),
                object,
                detail,
                command: Some(command),
                related: related(),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `1 violation, 2 migration candidates, 0 rollout risks; scanned 9 claims, 6 volumes, 1 deployment in all namespaces`
/// (`, 1 blocked migration` after the rollout risks when there are any).
pub fn summary_line(report: &ScanReport) -> String {
    let s = &report.summary;
    let n = &report.scanned;
    let scope = match &report.namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".to_owned(),
    };
    let blocked = if s.migration_blocked > 0 {
        format!(
            ", {}",
            plural(
                s.migration_blocked,
                "blocked migration",
                "blocked migrations"
            )
        )
    } else {
        String::new()
    };
    format!(
        "{}, {}, {}{blocked}; scanned {}, {}, {} in {scope}",
        plural(s.violations, "violation", "violations"),
        plural(
            s.migration_candidates,
            "migration candidate",
            "migration candidates"
        ),
        plural(s.rollout_risks, "rollout risk", "rollout risks"),
        plural(n.claims, "claim", "claims"),
        plural(n.volumes, "volume", "volumes"),
        plural(n.deployments, "deployment", "deployments"),
    )
}

/// Aligned columns KIND, NAMESPACE, NAME, FINDING, DETAIL (one row per finding; `-` for
/// cluster-scoped objects), then the summary line.
pub fn render_table(report: &ScanReport) -> String {
    let mut out = String::new();
    if !report.findings.is_empty() {
        let header = ["KIND", "NAMESPACE", "NAME", "FINDING", "DETAIL"].map(str::to_owned);
        let rows: Vec<[String; 5]> = std::iter::once(header)
            .chain(report.findings.iter().map(|f| {
                [
                    f.object.kind.clone().unwrap_or_default(),
                    f.object.namespace.clone().unwrap_or_else(|| "-".to_owned()),
                    f.object.name.clone().unwrap_or_default(),
                    f.rule.to_string(),
                    f.detail.clone(),
                ]
            }))
            .collect();
        let mut widths = [0usize; 4];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            for (cell, w) in row.iter().zip(widths) {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
            out.push_str(&row[4]);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&summary_line(report));
    out.push('\n');
    out
}

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
    fn api_version(self) -> &'static str {
        match self {
            ReportFormat::PolicyReport => "wgpolicyk8s.io/v1alpha2",
            ReportFormat::OpenReports => "openreports.io/v1alpha1",
        }
    }

    /// (namespaced kind, cluster kind)
    fn kinds(self) -> (&'static str, &'static str) {
        match self {
            ReportFormat::PolicyReport => ("PolicyReport", "ClusterPolicyReport"),
            ReportFormat::OpenReports => ("Report", "ClusterReport"),
        }
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
        let mut summary = ReportSummary::default();
        for r in &results {
            match r.result {
                ResultStatus::Pass => summary.pass += 1,
                ResultStatus::Fail => summary.fail += 1,
                ResultStatus::Warn => summary.warn += 1,
            }
        }
        Report {
            api_version: format.api_version(),
            kind,
            metadata: ReportMeta {
                name,
                namespace,
                labels: BTreeMap::from([("app.kubernetes.io/managed-by", REPORT_POLICY)]),
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
