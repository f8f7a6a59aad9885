//! Every decision of the scan, from the [`Inventory`], without I/O.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ObjectReference;

use super::{Finding, Inventory, Note, Passed, ScanReport, ScanRule, Scanned, Summary};
use crate::migrate::MigrationState;
use crate::migrate::eligibility::{
    Allowances, Blocker, ClaimInfo, SharedClaim, Verdict, VolumeInfo, Workload, claims_refused,
    judge, missing_claims, statefulset_blocker, trouble,
};
use crate::migrate::model::history::resume_command;
use crate::migrate::model::users::ClaimUsers;
use crate::migrate::model::workloads::{WorkloadInfo, WorkloadKind};
use crate::policy::MigrationTarget;
use crate::policy::{
    AccessMode, AccessModes, ClusterFacts, Facts, Policy, Subject, class_supports_rwop,
    exclusive_rwop_violation,
};

/// Every decision of the scan. `namespace` limits claims and workloads to that namespace and
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
    let workloads: Vec<&WorkloadInfo> = inventory
        .workloads
        .workloads
        .iter()
        .filter(|w| in_scope(&w.namespace))
        .collect();
    let pods = inventory
        .workloads
        .pods
        .iter()
        .filter(|p| in_scope(&p.namespace))
        .count();
    let volumes_by_name: HashMap<&str, &VolumeInfo> = inventory
        .volumes
        .iter()
        .map(|pv| (pv.name.as_str(), pv))
        .collect();
    let claims_by_key: HashMap<(&str, &str), &ClaimInfo> = claims
        .iter()
        .map(|c| ((c.namespace.as_str(), c.name.as_str()), *c))
        .collect();
    let users = ClaimUsers::index(
        &inventory.workloads,
        claims
            .iter()
            .map(|c| (c.namespace.as_str(), c.name.as_str())),
    );
    // Claims whose migration is under way: reported as such, not judged again.
    let in_progress: HashMap<(&str, &str), &VolumeInfo> = volumes
        .iter()
        .filter_map(|pv| {
            let state = pv.recorded.as_ref()?;
            Some(((state.namespace.as_str(), state.claim.as_str()), *pv))
        })
        .collect();

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
    // StatefulSet -> its template claims' verdicts, judged as a group below.
    let mut groups: BTreeMap<(&str, &str), Vec<(&ClaimInfo, Verdict)>> = BTreeMap::new();
    for claim in &claims {
        let subject = Subject {
            kind: "PersistentVolumeClaim",
            namespace: Some(claim.namespace.as_str()).filter(|ns| !ns.is_empty()),
            name: &claim.name,
        };
        judge_v1(subject, claim_ref(claim), &claim.modes);
        if in_progress.contains_key(&(claim.namespace.as_str(), claim.name.as_str())) {
            continue;
        }
        let of_claim = users.of(&claim.namespace, &claim.name);
        let pv = claim
            .volume_name
            .as_deref()
            .and_then(|v| volumes_by_name.get(v).copied());
        let verdict = judge(claim, pv, of_claim, SCAN);
        if let Some(sts) = of_claim.iter().find(|w| w.claim_template.is_some()) {
            groups
                .entry((claim.namespace.as_str(), sts.name.as_str()))
                .or_default()
                .push((claim, verdict));
            continue;
        }
        match migration_finding(policy, &facts, claim, pv, verdict) {
            Outcome::Finding(f) => candidates.push(f),
            Outcome::Note(n) => notes.push(n),
            Outcome::Nothing => {}
        }
    }
    findings.extend(candidates);
    for w in workloads
        .iter()
        .filter(|w| w.kind == WorkloadKind::StatefulSet)
    {
        let claims = groups
            .remove(&(w.namespace.as_str(), w.name.as_str()))
            .unwrap_or_default();
        if let Some(f) = statefulset_finding(w, &claims, &claims_by_key) {
            findings.push(f);
        }
    }
    for pv in &volumes {
        if let Some(state) = &pv.recorded {
            findings.push(in_progress_finding(pv, state, &claims_by_key));
        }
    }
    for w in &workloads {
        if let Some(f) = rollout_deadlock(w, &claims_by_key, &users) {
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
            // A Deployment's ReplicaSets and a CronJob's Jobs are counted as their owner.
            workloads: workloads
                .iter()
                .filter(|w| {
                    !matches!(w.kind, WorkloadKind::ReplicaSet | WorkloadKind::Job)
                        || w.owner.is_none()
                })
                .count(),
            pods,
            storage_classes: inventory.storage_classes.len(),
        },
        summary: Summary {
            violations: count(ScanRule::V1),
            migration_candidates: count(ScanRule::MigrationCandidate),
            rollout_risks: count(ScanRule::RolloutDeadlock),
            migration_blocked: count(ScanRule::MigrationBlocked),
            migrations_in_progress: count(ScanRule::MigrationInProgress),
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

/// A workload that mounts ReadWriteOncePod claims and cannot run on them (the judgement W2 and
/// `migrate` share: [`trouble`]), with every other user of those claims. A Deployment's
/// ReplicaSets and a CronJob's Jobs run their owner's template and are judged as the owner.
fn rollout_deadlock(
    w: &WorkloadInfo,
    claims: &HashMap<(&str, &str), &ClaimInfo>,
    users: &ClaimUsers,
) -> Option<Finding> {
    let owned = matches!(w.kind, WorkloadKind::ReplicaSet | WorkloadKind::Job) && w.owner.is_some();
    let api_version = w.kind.api_version()?;
    if owned {
        return None;
    }
    let rwop: Vec<&ClaimInfo> = w
        .claims
        .iter()
        .filter_map(|name| claims.get(&(w.namespace.as_str(), name.as_str())).copied())
        .filter(|c| c.modes.contains(AccessMode::ReadWriteOncePod))
        .collect();
    let shared: Vec<SharedClaim<'_>> = rwop
        .iter()
        .map(|c| SharedClaim {
            name: &c.name,
            others: users
                .of(&w.namespace, &c.name)
                .iter()
                .filter(|u| !(u.kind == w.kind && u.name == w.name))
                .collect(),
        })
        .collect();
    let detail = trouble(&Workload::of(w), &shared)?.detail();
    let kind = w.kind.as_str();
    let object = reference(
        api_version,
        kind,
        Some(&w.namespace),
        &w.name,
        w.uid.as_ref(),
    );
    Some(Finding {
        rule: ScanRule::RolloutDeadlock,
        message: format!("{kind} \"{}\": {detail}", qualified(&object)),
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

/// What `migrate`'s preflight and `scan` judge with, for `scan`: it names the command with
/// `--switch-to-recreate` when a Deployment's rollout would surge.
const SCAN: Allowances = Allowances {
    allow_non_csi: false,
    allow_delete_pods: false,
    switch_to_recreate: true,
};

/// What `rwop-guard migrate` would answer for `claim`: `verdict`, from the same function its
/// preflight calls ([`judge`]) on the same users (every workload and pod that mounts the claim).
/// The candidate's command carries `--switch-to-recreate` when a Deployment's rollout would
/// surge. The class is not part of the verdict (migrate needs a CSI volume, not a class); a
/// class that is not known to support ReadWriteOncePod is said in the detail.
fn migration_finding(
    policy: &Policy,
    facts: &Facts,
    claim: &ClaimInfo,
    pv: Option<&VolumeInfo>,
    verdict: Verdict,
) -> Outcome {
    let volume_name = claim.volume_name.as_deref();
    let object = claim_ref(claim);
    let target = qualified(&object);
    let related = || pv.map(|pv| vec![volume_ref(pv)]).unwrap_or_default();
    match verdict {
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

/// The claims of a StatefulSet's `volumeClaimTemplates`, judged as `migrate --statefulset` judges
/// them: the StatefulSet's own blockers, claims its replicas lack, then each claim's verdict. One
/// finding on the StatefulSet: a candidate with the `--statefulset` command, or blocked with
/// `migrate`'s words; none when every claim and the templates are done.
fn statefulset_finding(
    w: &WorkloadInfo,
    claims: &[(&ClaimInfo, Verdict)],
    existing: &HashMap<(&str, &str), &ClaimInfo>,
) -> Option<Finding> {
    let sts = w.statefulset.as_ref()?;
    if sts.templates.is_empty() {
        return None;
    }
    let (ns, name) = (w.namespace.as_str(), w.name.as_str());
    let target = MigrationTarget::ReadWriteOncePod;
    let related: Vec<ObjectReference> = claims.iter().map(|(c, _)| claim_ref(c)).collect();
    let object = reference("apps/v1", "StatefulSet", Some(ns), name, w.uid.as_ref());
    let blocked = |message: String| {
        let detail = format!("{} migrate refuses it: {message}", crate::program_name());
        Some(Finding {
            rule: ScanRule::MigrationBlocked,
            message: format!("StatefulSet \"{ns}/{name}\": {detail}"),
            object: object.clone(),
            detail,
            command: None,
            related: related.clone(),
        })
    };
    if let Some(why) = statefulset_blocker(ns, name, sts, w.owner.as_ref(), Some(target)) {
        return blocked(why);
    }
    let start = sts.ordinals_start;
    let mut missing = Vec::new();
    for ordinal in start..start.saturating_add(w.replicas.max(0)) {
        for (t, _) in &sts.templates {
            let claim = format!("{t}-{name}-{ordinal}");
            if !existing.contains_key(&(ns, claim.as_str())) {
                missing.push(claim);
            }
        }
    }
    if !missing.is_empty() {
        return blocked(missing_claims(ns, name, &missing));
    }
    let refusals: Vec<String> = claims
        .iter()
        .filter_map(|(_, v)| match v {
            Verdict::Refused(r) => Some(r.message.clone()),
            _ => None,
        })
        .collect();
    if !refusals.is_empty() {
        return blocked(claims_refused(ns, name, &refusals));
    }
    let done = claims
        .iter()
        .all(|(_, v)| matches!(v, Verdict::AlreadyMigrated));
    if done && sts.templates_are(target.mode()) {
        return None;
    }
    let command = format!(
        "{} migrate --statefulset {ns}/{name}",
        crate::program_name()
    );
    let names: Vec<&str> = claims.iter().map(|(c, _)| c.name.as_str()).collect();
    let detail = format!(
        "its volumeClaimTemplates and claims ({}) are [ReadWriteOnce] on CSI volumes: they move \
         together, with one scale-down and one scale-up, and the templates become \
         [ReadWriteOncePod] so new replicas get single-pod claims; run: {command}",
        names.join(", ")
    );
    Some(Finding {
        rule: ScanRule::MigrationCandidate,
        message: format!("StatefulSet \"{ns}/{name}\": {detail}"),
        object,
        detail,
        command: Some(command),
        related,
    })
}

/// A migration recorded on `pv` and not finished: where it stands, and how to finish or undo it.
fn in_progress_finding(
    pv: &VolumeInfo,
    state: &MigrationState,
    claims: &HashMap<(&str, &str), &ClaimInfo>,
) -> Finding {
    let (ns, claim) = (state.namespace.as_str(), state.claim.as_str());
    let uid = claims.get(&(ns, claim)).and_then(|c| c.uid.as_ref());
    let object = reference("v1", "PersistentVolumeClaim", Some(ns), claim, uid);
    let total = state.steps().len();
    let resume = resume_command(state);
    let (what, undo) = if state.is_rollback() {
        ("a rollback to [ReadWriteOnce]", String::new())
    } else {
        let mut rollback = state.clone();
        rollback.target = MigrationTarget::ReadWriteOnce;
        (
            "a migration to [ReadWriteOncePod]",
            format!("; to undo it: {}", resume_command(&rollback)),
        )
    };
    let detail = format!(
        "{what} is under way on PersistentVolume \"{}\" ({} of {total} steps done); to finish \
         it: {resume}{undo}",
        pv.name, state.completed
    );
    Finding {
        rule: ScanRule::MigrationInProgress,
        message: format!("PersistentVolumeClaim \"{ns}/{claim}\": {detail}"),
        object,
        detail,
        command: Some(resume),
        related: vec![volume_ref(pv)],
    }
}
