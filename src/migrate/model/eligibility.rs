//! Which claims `migrate` moves, decided without I/O, so `scan` and `migrate` give the same
//! answer for the same claim: `migrate`'s preflight calls [`judge`] on the live objects, `scan`
//! calls it on what it listed, and reports every accepted claim as a migration candidate and
//! every refused one with the reason.
//!
//! The rollout judgement lives here too ([`RolloutRisk`]): what `scan` reports as a rollout
//! deadlock on a ReadWriteOncePod claim is what `migrate` refuses to create.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

pub use super::facts::{ClaimInfo, VolumeInfo, Workload};
pub use super::rollout::{RolloutRisk, describe_strategy};
pub use super::state::StrategySwitch;
use crate::policy::{AccessMode, HasAccessModes};

/// What the user allowed on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowances {
    /// `--allow-non-csi`.
    pub allow_non_csi: bool,
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
    let mut switches = Vec::new();
    for w in workloads {
        let Some(risk) = RolloutRisk::of_workload(w) else {
            continue;
        };
        let what = format!("{:?} {}", w.kind, w.name);
        if risk.replicas > 1 {
            return refused(
                Blocker::Workload,
                format!(
                    "claim {target} is used by {what} with {} replicas: only one pod can use a \
                     ReadWriteOncePod claim, so the other replicas would stay Pending; scale it \
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
    Verdict::Accepted { warnings, switches }
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
