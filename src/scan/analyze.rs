//! Every decision of the scan, from the [`Inventory`], without I/O.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;

use super::{
    DeploymentInfo, Finding, Inventory, Note, Passed, ScanReport, ScanRule, Scanned, Summary,
};
use crate::migrate::eligibility::{
    Allowances, Blocker, ClaimInfo, RolloutRisk, Verdict, VolumeInfo, Workload, judge,
};
use crate::policy::{
    AccessMode, AccessModes, ClusterFacts, Facts, Policy, Subject, class_supports_rwop,
    exclusive_rwop_violation,
};

/// Every decision of the scan. `namespace` limits claims and Deployments to that namespace and
/// volumes to those whose `claimRef` is in it.
pub fn analyze(policy: &Policy, inventory: &Inventory, namespace: Option<&str>) -> ScanReport {
    let facts = Facts {
        cluster: Some(ClusterFacts {
            storage_classes: inventory.storage_classes.clone().into_iter().collect(),
            ..ClusterFacts::default()
        }),
    };
    let in_scope = |ns: &str| namespace.is_none_or(|scope| ns == scope);
    let claims: Vec<&ClaimInfo> = inventory
        .claims
        .iter()
        .filter(|c| in_scope(&c.namespace))
        .collect();
    let volumes: Vec<&VolumeInfo> = inventory
        .volumes
        .iter()
        .filter(|pv| namespace.is_none_or(|ns| pv.claim_namespace.as_deref() == Some(ns)))
        .collect();
    let deployments: Vec<&DeploymentInfo> = inventory
        .deployments
        .iter()
        .filter(|d| in_scope(&d.namespace))
        .collect();
    let volumes_by_name: HashMap<&str, &VolumeInfo> = inventory
        .volumes
        .iter()
        .map(|pv| (pv.name.as_str(), pv))
        .collect();
    let claims_by_key: HashMap<(&str, &str), &ClaimInfo> = claims
        .iter()
        .map(|c| ((c.namespace.as_str(), c.name.as_str()), *c))
        .collect();
    // (namespace, claim) -> the Deployments whose pod template mounts it.
    let mut mounted_by: HashMap<(&str, &str), Vec<&DeploymentInfo>> = HashMap::new();
    for d in &deployments {
        for claim in &d.claims {
            mounted_by
                .entry((d.namespace.as_str(), claim.as_str()))
                .or_default()
                .push(*d);
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
        let subject = Subject {
            kind: "PersistentVolume",
            namespace: None,
            name: &pv.name,
        };
        judge_v1(subject, volume_ref(pv), &pv.modes);
    }
    let mut candidates = Vec::new();
    let mut notes = Vec::new();
    for claim in &claims {
        let subject = Subject {
            kind: "PersistentVolumeClaim",
            namespace: Some(claim.namespace.as_str()).filter(|ns| !ns.is_empty()),
            name: &claim.name,
        };
        judge_v1(subject, claim_ref(claim), &claim.modes);
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

fn reference(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    uid: Option<&String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        namespace: namespace.filter(|ns| !ns.is_empty()).map(str::to_owned),
        name: Some(name.to_owned()),
        uid: uid.cloned(),
        ..ObjectReference::default()
    }
}

fn claim_ref(c: &ClaimInfo) -> ObjectReference {
    reference(
        "v1",
        "PersistentVolumeClaim",
        Some(&c.namespace),
        &c.name,
        c.uid.as_ref(),
    )
}

fn volume_ref(pv: &VolumeInfo) -> ObjectReference {
    reference("v1", "PersistentVolume", None, &pv.name, pv.uid.as_ref())
}

/// `shop/orders-db`, or `orders-db` for cluster-scoped objects.
fn qualified(r: &ObjectReference) -> String {
    match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.name.as_deref().unwrap_or("")),
        None => r.name.clone().unwrap_or_default(),
    }
}

fn rollout_deadlock(
    d: &DeploymentInfo,
    claims: &HashMap<(&str, &str), &ClaimInfo>,
) -> Option<Finding> {
    let rwop: Vec<&ClaimInfo> = d
        .claims
        .iter()
        .filter_map(|name| claims.get(&(d.namespace.as_str(), name.as_str())).copied())
        .filter(|c| c.modes.contains(AccessMode::ReadWriteOncePod))
        .collect();
    if rwop.is_empty() {
        return None;
    }
    let risk = RolloutRisk::of_workload(&d.workload)?;
    let names: Vec<String> = rwop.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let detail = format!(
        "mounts ReadWriteOncePod {} {} {}",
        if names.len() == 1 { "claim" } else { "claims" },
        names.join(", "),
        risk.explain()
    );
    let object = reference(
        "apps/v1",
        "Deployment",
        Some(&d.namespace),
        &d.workload.name,
        d.uid.as_ref(),
    );
    Some(Finding {
        rule: ScanRule::RolloutDeadlock,
        message: format!("Deployment \"{}\": {detail}", qualified(&object)),
        object,
        detail,
        command: None,
        related: rwop.iter().map(|c| claim_ref(c)).collect(),
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
    claim: &ClaimInfo,
    volumes: &HashMap<&str, &VolumeInfo>,
    mounted_by: &HashMap<(&str, &str), Vec<&DeploymentInfo>>,
) -> Outcome {
    let volume_name = claim.volume_name.as_deref();
    let pv = volume_name.and_then(|v| volumes.get(v).copied());
    let key = (claim.namespace.as_str(), claim.name.as_str());
    let mut workloads: Vec<Workload> = mounted_by
        .get(&key)
        .into_iter()
        .flatten()
        .map(|d| d.workload.clone())
        .collect();
    workloads.sort_by(|a, b| a.name.cmp(&b.name));
    let allow = Allowances {
        allow_non_csi: false,
        switch_to_recreate: true,
    };
    let object = claim_ref(claim);
    let target = qualified(&object);
    let related = || pv.map(|pv| vec![volume_ref(pv)]).unwrap_or_default();
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
            let driver = pv.csi_driver.as_deref().unwrap_or("");
            let class = claim.storage_class.as_deref();
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
