//! Which claims `migrate` moves, decided without I/O, so `scan` and `migrate` give the same
//! answer for the same claim: `migrate`'s preflight calls [`judge`] on the live objects, `scan`
//! calls it on what it listed, and reports every accepted claim as a migration candidate and
//! every refused one with the reason.
//!
//! Whether a workload can run on a single-pod claim is [`SinglePod`]'s (`single_pod.rs`): what
//! `migrate` refuses to create is what `scan` and the webhook's W2 report on a ReadWriteOncePod
//! claim.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

pub use super::facts::{ClaimInfo, VolumeInfo, Workload};
pub use super::rollout::{RolloutRisk, describe_strategy};
pub use super::single_pod::{SharedClaim, SinglePod, Trouble, trouble};
pub use super::state::StrategySwitch;
use super::workloads::{Owner, StatefulSetInfo, WorkloadKind};
use crate::policy::{AccessMode, HasAccessModes, MigrationTarget};

/// What the user allowed on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowances {
    /// `--allow-non-csi`.
    pub allow_non_csi: bool,
    /// `--allow-delete-pods`: pods without a controller are deleted (not recreated).
    pub allow_delete_pods: bool,
    /// `--switch-to-recreate`: a Deployment whose rollout would surge is switched to `Recreate`.
    pub switch_to_recreate: bool,
}

/// The answer for one claim.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// `migrate` moves it.
    Accepted {
        /// Said before the plan (`--allow-non-csi`).
        warnings: Vec<String>,
        /// Deployments to switch to `Recreate` first.
        switches: Vec<StrategySwitch>,
        /// The StatefulSet whose `volumeClaimTemplates` make the claim: `scan` reports its
        /// claims as one candidate, `migrate --statefulset` moves them with its templates.
        statefulset: Option<String>,
    },
    /// Claim and volume are already [ReadWriteOncePod], bound to each other.
    AlreadyMigrated,
    Refused(Refusal),
}

/// Why a claim is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub blocker: Blocker,
    /// One line naming the object and saying what to do (what `migrate` prints).
    pub message: String,
}

/// What stands in the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The claim or its volume is not a bound [ReadWriteOnce] pair (not a candidate at all).
    Claim,
    /// The volume is not CSI (`--allow-non-csi` lifts it).
    NotCsi,
    /// A workload cannot run with a single-pod claim: too many replicas, or a rollout that surges.
    Workload,
}

fn refused(blocker: Blocker, message: String) -> Verdict {
    Verdict::Refused(Refusal { blocker, message })
}

/// Whether `migrate NAMESPACE/CLAIM` would start (no migration recorded yet), and why not.
/// `volume` is the PersistentVolume the claim's `spec.volumeName` names, if it exists.
pub fn judge(
    claim: &ClaimInfo,
    volume: Option<&VolumeInfo>,
    workloads: &[Workload],
    allow: Allowances,
) -> Verdict {
    let target = format!("{}/{}", claim.namespace, claim.name);
    // In the order migrate meets them: the volume is located first, then the claim checked.
    let Some(volume_name) = claim.volume_name.as_deref() else {
        return refused(Blocker::Claim, not_bound_message(&target, None));
    };
    let Some(pv) = volume else {
        return refused(
            Blocker::Claim,
            not_bound_message(&target, Some(volume_name)),
        );
    };
    if claim.deleting {
        return refused(
            Blocker::Claim,
            format!("claim {target} is being deleted; only Bound claims can be migrated"),
        );
    }
    let phase = claim.phase.as_deref().unwrap_or("");
    if phase != "Bound" {
        return refused(
            Blocker::Claim,
            format!("claim {target} is {phase:?}, not Bound; only Bound claims can be migrated"),
        );
    }
    let bound_to = pv.claim_uid.as_deref();
    if bound_to.is_none() || bound_to != claim.uid.as_deref() {
        return refused(
            Blocker::Claim,
            format!(
                "PersistentVolume {volume_name} is not bound to claim {target} (claimRef.uid differs)"
            ),
        );
    }
    let pv_modes = &pv.modes;
    let modes = &claim.modes;
    let rwop = AccessMode::ReadWriteOncePod;
    if pv_modes.is_only(rwop) && modes.is_only(rwop) {
        return Verdict::AlreadyMigrated;
    }
    if !pv_modes.is_only(AccessMode::ReadWriteOnce) {
        return refused(
            Blocker::Claim,
            format!(
                "PersistentVolume {volume_name} has access modes {pv_modes}; only [ReadWriteOnce] volumes are migrated"
            ),
        );
    }
    if !modes.is_only(AccessMode::ReadWriteOnce) {
        return refused(
            Blocker::Claim,
            format!(
                "claim {target} has access modes {modes}; only [ReadWriteOnce] claims are migrated"
            ),
        );
    }
    let mut warnings = Vec::new();
    if pv.csi_driver.is_none() {
        let msg = format!(
            "PersistentVolume {volume_name} is not a CSI volume; ReadWriteOncePod is only supported for CSI volumes and pods may fail to start"
        );
        if !allow.allow_non_csi {
            return refused(
                Blocker::NotCsi,
                format!("{msg} (pass --allow-non-csi to continue anyway)"),
            );
        }
        warnings.push(msg);
    }
    let users = match judge_users(&target, workloads, allow, &mut warnings) {
        Ok(users) => users,
        Err(message) => return refused(Blocker::Workload, message),
    };
    let mut switches = Vec::new();
    for w in &users {
        let Some(risk) = SinglePod::of(w).rollout else {
            continue;
        };
        let what = w.describe();
        if risk.replicas > 1 {
            let (many, pods) = match w.kind {
                WorkloadKind::Job | WorkloadKind::CronJob => ("parallelism", "pods"),
                _ => ("replicas", "replicas"),
            };
            return refused(
                Blocker::Workload,
                format!(
                    "claim {target} is used by {what} with {} {many}: only one pod can use a \
                     ReadWriteOncePod claim, so the other {pods} would stay Pending; scale it \
                     to 1 replica first (or use a StatefulSet with volumeClaimTemplates, one \
                     claim per pod)",
                    risk.replicas
                ),
            );
        }
        if let Some(strategy) = risk.surge {
            if !allow.switch_to_recreate {
                return refused(
                    Blocker::Workload,
                    format!(
                        "claim {target} is used by {what} with strategy {strategy}: with \
                         ReadWriteOncePod every rollout would hang (the new pod cannot mount \
                         the claim while the old one holds it); set its strategy to Recreate \
                         (or rollingUpdate.maxSurge: 0) first, or pass --switch-to-recreate to \
                         let migrate switch it (--rollback switches it back)"
                    ),
                );
            }
            switches.push(StrategySwitch {
                deployment: w.name.clone(),
                from: strategy,
            });
        }
    }
    let statefulset = users
        .iter()
        .find(|w| w.claim_template.is_some())
        .map(|w| w.name.clone());
    Verdict::Accepted {
        warnings,
        switches,
        statefulset,
    }
}

/// The users that decide a claim's fate: who would stay Pending with a single-pod claim, and
/// who rwop-guard cannot stop for the swap. Bare pods are deleted with `--allow-delete-pods`
/// (and are no users after), else they refuse the claim. Returns the users that stay, or the
/// refusal.
fn judge_users<'w>(
    target: &str,
    users: &'w [Workload],
    allow: Allowances,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'w Workload>, String> {
    for w in users {
        if SinglePod::of(w).every_node {
            return Err(format!(
                "claim {target} is mounted by {}/{}: ReadWriteOncePod lets one pod in the \
                 whole cluster use it, so the DaemonSet's pods on every other node would stay \
                 Pending; keep it ReadWriteOnce (or give each node a claim of its own)",
                w.kind, w.name
            ));
        }
    }
    let users = stoppable(target, users, allow, warnings)?;
    if users.len() > 1 {
        return Err(shared(target, &users));
    }
    for w in &users {
        if let Some(sts) = &w.claim_template
            && let Some(why) = statefulset_blocker(
                target.split_once('/').map_or("", |(ns, _)| ns),
                &w.name,
                sts,
                w.managed_by.as_ref(),
                None,
            )
        {
            return Err(why);
        }
        if let Some(owner) = &w.managed_by
            && w.claim_template.is_none()
        {
            return Err(format!(
                "claim {target} is used by {}, which is managed by {owner}: it would undo the \
                 scale-down; migrate through its operator",
                w.describe()
            ));
        }
        if SinglePod::of(w).overlapping_runs {
            warnings.push(format!(
                "runs of CronJob {} can overlap (concurrencyPolicy: Allow, the default): with \
                 ReadWriteOncePod a run that starts while the previous one still runs stays \
                 Pending until it ends; set concurrencyPolicy: Forbid",
                w.name
            ));
        }
    }
    Ok(users)
}

/// The users a run can stop for the swap (bare pods are deleted with `--allow-delete-pods`, and
/// are no users after): in both directions, every other kind is one rwop-guard cannot scale.
pub fn stoppable<'w>(
    target: &str,
    users: &'w [Workload],
    allow: Allowances,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'w Workload>, String> {
    let bare: Vec<&str> = users
        .iter()
        .filter(|w| w.kind == WorkloadKind::Pod)
        .map(|w| w.name.as_str())
        .collect();
    if !bare.is_empty() {
        let list = bare.join(", ");
        if !allow.allow_delete_pods {
            return Err(format!(
                "claim {target} is mounted by pods without a controller ({list}); they would have \
                 to be deleted and are not recreated (pass --allow-delete-pods to do so)"
            ));
        }
        warnings.push(format!(
            "pods {list} have no controller: they will be deleted and not recreated"
        ));
    }
    let users: Vec<&Workload> = users
        .iter()
        .filter(|w| w.kind != WorkloadKind::Pod)
        .collect();
    let cannot: Vec<String> = users
        .iter()
        .filter(|w| {
            matches!(
                w.kind,
                WorkloadKind::Other(_)
                    | WorkloadKind::ReplicationController
                    | WorkloadKind::DaemonSet
            )
        })
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    if !cannot.is_empty() {
        return Err(format!(
            "claim {target} is used by {}, which rwop-guard cannot scale; scale them down \
             yourself (or migrate through their operator) and run again",
            cannot.join(", ")
        ));
    }
    Ok(users)
}

/// Two or more workloads mount the claim: with ReadWriteOncePod all but one stay Pending.
fn shared(target: &str, users: &[&Workload]) -> String {
    let names: Vec<String> = users.iter().map(|w| w.describe()).collect();
    let batch = users
        .iter()
        .any(|w| matches!(w.kind, WorkloadKind::Job | WorkloadKind::CronJob));
    let advice = if batch {
        "run the job's work inside the other workload's pod (a sidecar, or kubectl exec from a \
         CronJob), or keep ReadWriteOnce"
    } else {
        "run them in one pod, or keep ReadWriteOnce"
    };
    format!(
        "claim {target} is used by {}: ReadWriteOncePod lets one pod in the whole cluster use it, \
         so whichever starts second would stay Pending while the other runs; {advice}",
        names.join(" and ")
    )
}

/// What stands in the way of migrating the claims of StatefulSet `namespace/name`, in the order
/// `migrate --statefulset` checks it (the same words for a single claim of it). `group`: the
/// target of a `--statefulset` run, which also needs templates to recreate, all `[source]`.
pub fn statefulset_blocker(
    namespace: &str,
    name: &str,
    sts: &StatefulSetInfo,
    managed_by: Option<&Owner>,
    group: Option<MigrationTarget>,
) -> Option<String> {
    let why = if group.is_some() && sts.templates.is_empty() {
        "has no volumeClaimTemplates; migrate its claims one by one".to_owned()
    } else if let Some(owner) = managed_by {
        format!(
            "is managed by {owner}, which would fight a recreated StatefulSet; migrate through its operator"
        )
    } else if sts.when_scaled_delete {
        "has persistentVolumeClaimRetentionPolicy.whenScaled: Delete, so scaling it to 0 would delete its claims; set it to Retain first".to_owned()
    } else {
        let target = group?;
        let source = target.source();
        if sts.templates_are(source) || sts.templates_are(target.mode()) {
            return None;
        }
        format!("its volumeClaimTemplates are not all [{source}]")
    };
    Some(format!("StatefulSet {namespace}/{name}: {why}"))
}

/// Why a claim has no volume to migrate: `spec.volumeName` empty, or naming a missing volume.
pub fn not_bound_message(target: &str, volume_name: Option<&str>) -> String {
    match volume_name {
        None => format!(
            "claim {target} is not bound to a PersistentVolume (spec.volumeName is empty); only Bound claims can be migrated"
        ),
        Some(v) => format!(
            "claim {target} names PersistentVolume {v} (spec.volumeName), which does not exist; only claims bound to an existing volume can be migrated"
        ),
    }
}

/// Whether `migrate --rollback` can undo a finished migration: claim and volume
/// [ReadWriteOncePod], bound to each other, the volume marked as moved by `migrate`. Returns the
/// refusal otherwise.
pub fn judge_rollback(
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
    marker: &str,
) -> Result<(), String> {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let pv_name = volume.metadata.name.as_deref().unwrap_or_default();
    let spec = volume.spec.clone().unwrap_or_default();
    let pv_modes = volume.access_modes();
    let marked = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(marker))
            .is_some_and(|v| v == AccessMode::ReadWriteOnce.as_str())
    };
    if !pv_modes.is_only(AccessMode::ReadWriteOncePod) || !marked(&volume.metadata) {
        return Err(format!(
            "no migration of {namespace}/{name} is recorded on PersistentVolume {pv_name}, and it \
             is {pv_modes} without the {marker}: ReadWriteOnce annotation that migrate leaves; \
             nothing to roll back (only volumes rwop-guard migrate moved are rolled back)"
        ));
    }
    let modes = claim.access_modes();
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let bound = phase == Some("Bound")
        && spec.claim_ref.as_ref().and_then(|c| c.uid.as_deref()) == claim.metadata.uid.as_deref();
    if !modes.is_only(AccessMode::ReadWriteOncePod) || !bound || !marked(&claim.metadata) {
        return Err(format!(
            "claim {namespace}/{name} is not the {marker}: ReadWriteOnce [ReadWriteOncePod] claim \
             bound to PersistentVolume {pv_name} that migrate created (modes {modes}, phase \
             {:?}); refusing to roll it back",
            phase.unwrap_or("")
        ));
    }
    Ok(())
}

/// Claims of the replicas of StatefulSet `namespace/name` that do not exist.
pub fn missing_claims(namespace: &str, name: &str, missing: &[String]) -> String {
    format!(
        "StatefulSet {namespace}/{name}: claims {} of its replicas do not exist; only Bound claims \
         can be migrated",
        missing.join(", ")
    )
}

/// Claims of StatefulSet `namespace/name` that `migrate` refuses, each with its reason.
pub fn claims_refused(namespace: &str, name: &str, refusals: &[String]) -> String {
    format!(
        "StatefulSet {namespace}/{name}: cannot be migrated: {}",
        refusals.join("; ")
    )
}
