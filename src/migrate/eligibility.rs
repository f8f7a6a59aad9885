//! Which claims `migrate` moves, decided without I/O, so `scan` and `migrate` give the same
//! answer for the same claim: `migrate`'s preflight calls [`judge`] on the live objects, `scan`
//! calls it on what it listed, and reports every accepted claim as a migration candidate and
//! every refused one with the reason.
//!
//! The rollout judgement lives here too ([`RolloutRisk`]): what `scan` reports as a rollout
//! deadlock on a ReadWriteOncePod claim is what `migrate` refuses to create.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::consumers::ConsumerKind;
use crate::policy::{AccessMode, AccessModes, HasAccessModes};

/// A workload that uses the claim: a controller of a pod that mounts it, or a Deployment whose
/// pod template mounts it (a Deployment scaled to 0 still rolls once scaled up).
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: ConsumerKind,
    pub name: String,
    /// `spec.replicas` (the API server defaults it to 1); 1 for a StatefulSet whose
    /// `volumeClaimTemplates` make the claim (one claim per pod).
    pub replicas: i32,
    /// Deployments only: `spec.strategy` as stored.
    pub strategy: Option<DeploymentStrategy>,
}

impl Workload {
    pub fn from_deployment(d: &Deployment) -> Workload {
        Workload {
            kind: ConsumerKind::Deployment,
            name: d.metadata.name.clone().unwrap_or_default(),
            replicas: d.spec.replicas.unwrap_or(1),
            strategy: d.spec.strategy.clone(),
        }
    }
}

/// What the user allowed on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowances {
    /// `--allow-non-csi`.
    pub allow_non_csi: bool,
    /// `--switch-to-recreate`: a Deployment whose rollout would surge is switched to `Recreate`.
    pub switch_to_recreate: bool,
}

/// A Deployment `migrate` switches to `Recreate` (`--switch-to-recreate`), or (rolling back)
/// back to the strategy it recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategySwitch {
    pub deployment: String,
    /// The strategy it had, described (`RollingUpdate (the default), maxSurge 25%`).
    pub from: String,
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

/// What [`judge`] reads of a claim, and what `scan` keeps of every claim it lists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClaimInfo {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `spec.volumeName`, when not empty.
    pub volume_name: Option<String>,
    /// `spec.storageClassName`, when not empty.
    pub storage_class: Option<String>,
    pub modes: AccessModes,
}

impl From<&PersistentVolumeClaim> for ClaimInfo {
    fn from(claim: &PersistentVolumeClaim) -> Self {
        let spec = claim.spec.as_ref();
        let not_empty = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
        ClaimInfo {
            namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            name: claim.metadata.name.clone().unwrap_or_default(),
            uid: claim.metadata.uid.clone(),
            deleting: claim.metadata.deletion_timestamp.is_some(),
            phase: claim.status.as_ref().and_then(|s| s.phase.clone()),
            volume_name: not_empty(spec.and_then(|s| s.volume_name.as_ref())),
            storage_class: not_empty(spec.and_then(|s| s.storage_class_name.as_ref())),
            modes: claim.access_modes(),
        }
    }
}

/// What [`judge`] reads of a PersistentVolume, and what `scan` keeps of every volume it lists.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeInfo {
    pub name: String,
    pub uid: Option<String>,
    pub modes: AccessModes,
    /// `spec.csi.driver`; `None` for a volume that is not CSI.
    pub csi_driver: Option<String>,
    /// `spec.claimRef`: namespace and uid of the claim it is bound (or reserved) to.
    pub claim_namespace: Option<String>,
    pub claim_uid: Option<String>,
}

impl From<&PersistentVolume> for VolumeInfo {
    fn from(pv: &PersistentVolume) -> Self {
        let spec = pv.spec.as_ref();
        let claim_ref = spec.and_then(|s| s.claim_ref.as_ref());
        VolumeInfo {
            name: pv.metadata.name.clone().unwrap_or_default(),
            uid: pv.metadata.uid.clone(),
            modes: pv.access_modes(),
            csi_driver: spec.and_then(|s| s.csi.as_ref()).map(|c| c.driver.clone()),
            claim_namespace: claim_ref.and_then(|r| r.namespace.clone()),
            claim_uid: claim_ref.and_then(|r| r.uid.clone()),
        }
    }
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

/// Why a workload cannot run its pods with a single-pod volume: too many replicas, a rolling
/// update that starts new pods before old ones stop, or both.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRisk {
    pub replicas: i32,
    /// The strategy, described, when its rollouts start new pods before old ones stop.
    pub surge: Option<String>,
}

impl RolloutRisk {
    pub fn of(d: &Deployment) -> Option<RolloutRisk> {
        Self::of_workload(&Workload::from_deployment(d))
    }

    /// StatefulSets replace a pod only after the old one is gone, and ReplicaSets do not roll:
    /// for them only the replica count matters.
    pub fn of_workload(w: &Workload) -> Option<RolloutRisk> {
        let surge = match w.kind {
            ConsumerKind::Deployment => surge_of(w.strategy.as_ref(), w.replicas),
            ConsumerKind::StatefulSet | ConsumerKind::ReplicaSet => None,
        };
        (w.replicas > 1 || surge.is_some()).then_some(RolloutRisk {
            replicas: w.replicas,
            surge,
        })
    }

    /// What happens and what to do, after "mounts ReadWriteOncePod claim(s) …".
    pub fn explain(&self) -> String {
        match (&self.surge, self.replicas > 1) {
            (Some(strategy), true) => format!(
                "with {} replicas and strategy {strategy}: only one pod at a time can use the \
                 volume, so the other replicas stay Pending and rollouts hang; set replicas: 1 and \
                 strategy: Recreate, or use a StatefulSet with volumeClaimTemplates (one claim per pod)",
                self.replicas
            ),
            (None, _) => format!(
                "with {} replicas: only one pod at a time can use the volume, so the other \
                 replicas stay Pending; set replicas: 1, or use a StatefulSet with \
                 volumeClaimTemplates (one claim per pod)",
                self.replicas
            ),
            (Some(strategy), false) => format!(
                "with strategy {strategy}: a rollout starts the new pod while the old one still \
                 holds the volume, and the new pod cannot mount it, so the rollout hangs; set \
                 strategy: Recreate (or rollingUpdate.maxSurge: 0)"
            ),
        }
    }

    /// The same, short.
    pub fn short(&self) -> String {
        match (&self.surge, self.replicas > 1) {
            (Some(strategy), true) => {
                format!("{} replicas, strategy {strategy}", self.replicas)
            }
            (None, _) => format!("{} replicas", self.replicas),
            (Some(strategy), false) => format!("strategy {strategy}"),
        }
    }
}

/// The strategy, described, when a rollout of a Deployment with `replicas` surges.
fn surge_of(strategy: Option<&DeploymentStrategy>, replicas: i32) -> Option<String> {
    let kind = strategy.and_then(|s| s.type_.as_deref());
    if kind == Some("Recreate") {
        return None;
    }
    let raw = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone())
        .unwrap_or_else(|| IntOrString::String("25%".to_owned()));
    // Scaled like the Deployment controller (percentages round up), on at least one replica: a
    // Deployment scaled to 0 rolls again once it is scaled back up.
    let value = scaled_surge(&raw, replicas.max(1));
    let shown = match &raw {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let name = match kind {
        None => "RollingUpdate (the default)".to_owned(),
        Some(k) => k.to_owned(),
    };
    (value != 0).then(|| format!("{name}, maxSurge {shown}"))
}

/// A strategy, described (`Recreate`, `RollingUpdate, maxSurge 25%`).
pub fn describe_strategy(strategy: Option<&DeploymentStrategy>) -> String {
    match strategy.and_then(|s| s.type_.as_deref()) {
        Some("Recreate") => "Recreate".to_owned(),
        kind => {
            let surge = strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_surge.clone());
            let name = kind.unwrap_or("RollingUpdate (the default)");
            match surge {
                Some(IntOrString::Int(n)) => format!("{name}, maxSurge {n}"),
                Some(IntOrString::String(s)) => format!("{name}, maxSurge {s}"),
                None => format!("{name}, maxSurge 25%"),
            }
        }
    }
}

/// maxSurge as a number of pods: `IntOrString` scaled on `replicas`, percentages rounded up.
/// An unreadable value counts as surging (the safe assumption).
fn scaled_surge(value: &IntOrString, replicas: i32) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(percent) => {
                let pods = (percent * i64::from(replicas) + 99).div_euclid(100);
                i32::try_from(pods).unwrap_or(i32::MAX)
            }
            None => 1,
        },
    }
}
