//! The steps, in order, and what each one changes, said in one line (for the plan, the progress
//! and the Events). Pure: where a step stands is judged from objects the caller read
//! ([`statuses`]); the executor runs them.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::state::{MigrationState, ORIGINAL_STRATEGY_ANNOTATION};
use crate::policy::{AccessMode, HasAccessModes, MIGRATED_FROM_ANNOTATION, OPT_OUT_ANNOTATION};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    RecordState,
    RetainVolume,
    ScaleDown,
    DeleteClaim,
    ReleaseVolume,
    SetVolumeModes,
    CreateClaim,
    WaitBound,
    DeleteStatefulSet,
    CreateStatefulSet,
    ScaleUp,
    RestoreReclaimPolicy,
    ClearState,
}

pub const STEPS: [Step; 11] = [
    Step::RecordState,
    Step::RetainVolume,
    Step::ScaleDown,
    Step::DeleteClaim,
    Step::ReleaseVolume,
    Step::SetVolumeModes,
    Step::CreateClaim,
    Step::WaitBound,
    Step::ScaleUp,
    Step::RestoreReclaimPolicy,
    Step::ClearState,
];

/// The steps of a claim migrated with its StatefulSet: [`STEPS`] with the StatefulSet recreated
/// (with the target in its `volumeClaimTemplates`) once the claims are bound, before it is
/// scaled back. A recorded state counts completed steps of its list, so the order is fixed.
pub const STATEFULSET_STEPS: [Step; 13] = with_statefulset(STEPS);

const fn with_statefulset(steps: [Step; 11]) -> [Step; 13] {
    let mut out = [Step::RecordState; 13];
    let (mut i, mut j) = (0, 0);
    while i < steps.len() {
        if matches!(steps[i], Step::ScaleUp) {
            out[j] = Step::DeleteStatefulSet;
            out[j + 1] = Step::CreateStatefulSet;
            j += 2;
        }
        out[j] = steps[i];
        i += 1;
        j += 1;
    }
    out
}

/// Steps done once the claim is bound again (the same in both lists).
pub const BOUND: usize = 8;

/// Where the claims of a lockstep group wait for each other: after recording, after scaling
/// down, after being bound, after the StatefulSet is recreated, and at the end. The end of phase
/// `phase` in `steps` (a list without a phase's last step ends it where the one before ends).
pub const PHASES: usize = 5;

pub fn phase_end(steps: &[Step], phase: usize) -> usize {
    let ends = [
        Step::RecordState,
        Step::ScaleDown,
        Step::WaitBound,
        Step::CreateStatefulSet,
        Step::ClearState,
    ];
    ends[..=phase.min(PHASES - 1)]
        .iter()
        .filter_map(|end| steps.iter().position(|s| s == end))
        .max()
        .map_or(0, |i| i + 1)
}

impl MigrationState {
    /// The steps of this migration: [`STEPS`], or [`STATEFULSET_STEPS`] with a StatefulSet.
    pub fn steps(&self) -> &'static [Step] {
        if self.statefulset.is_some() {
            &STATEFULSET_STEPS
        } else {
            &STEPS
        }
    }
}

impl Step {
    /// The steps that swap the claim: nothing to do once it is [target] and bound to the volume.
    pub fn swaps(self) -> bool {
        matches!(
            self,
            Step::ScaleDown
                | Step::DeleteClaim
                | Step::ReleaseVolume
                | Step::SetVolumeModes
                | Step::CreateClaim
                | Step::WaitBound
        )
    }

    /// One line saying exactly what the step changes.
    pub fn describe(self, state: &MigrationState, volume: &str) -> String {
        let claim = format!("{}/{}", state.namespace, state.claim);
        let (target, source) = (state.target, state.target.source());
        let retained = state.reclaim_policy == "Retain";
        match self {
            Step::RecordState => format!(
                "record the migration state on PersistentVolume {volume} (annotation rwop-guard.dev/migration, target [{target}])"
            ),
            Step::RetainVolume if retained => format!(
                "keep PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: Retain (it is Retain), so deleting the claim keeps the volume"
            ),
            Step::RetainVolume => format!(
                "set PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: {} -> Retain, so deleting the claim keeps the volume",
                state.reclaim_policy
            ),
            Step::ScaleDown => {
                let mut what: Vec<String> = state
                    .consumers
                    .iter()
                    .map(|c| format!("{c} replicas {} -> 0", c.replicas))
                    .collect();
                what.extend(
                    state
                        .deleted_pods
                        .iter()
                        .map(|p| format!("delete bare Pod {p}")),
                );
                what.extend(
                    state
                        .cronjobs
                        .iter()
                        .map(|c| format!("suspend CronJob {c}")),
                );
                if what.is_empty() {
                    what.push("no consumers found".to_owned());
                }
                let scale = format!(
                    "scale consumers of {claim} down ({}); wait until no pod mounts the claim",
                    what.join(", ")
                );
                if state.is_rollback() || state.switches.is_empty() {
                    return scale;
                }
                let switches: Vec<String> = state
                    .switches
                    .iter()
                    .map(|s| {
                        format!(
                            "switch Deployment {} spec.strategy: {} -> Recreate (the original kept in annotation {ORIGINAL_STRATEGY_ANNOTATION})",
                            s.deployment, s.from
                        )
                    })
                    .collect();
                format!("{}; {scale}", switches.join(", "))
            }
            Step::DeleteClaim => format!(
                "delete PersistentVolumeClaim {claim} (precondition: its uid), wait until it is gone (the volume is retained)"
            ),
            Step::ReleaseVolume => format!(
                "clear PersistentVolume {volume} spec.claimRef.uid and resourceVersion (keep namespace/name, so only {claim} can bind it)"
            ),
            Step::SetVolumeModes if state.is_rollback() => format!(
                "set PersistentVolume {volume} spec.accessModes: [{source}] -> [{target}], remove annotation {MIGRATED_FROM_ANNOTATION}"
            ),
            Step::SetVolumeModes => format!(
                "set PersistentVolume {volume} spec.accessModes: [{source}] -> [{target}], annotation {MIGRATED_FROM_ANNOTATION}: {source}"
            ),
            Step::CreateClaim if state.is_rollback() => format!(
                "create PersistentVolumeClaim {claim} with accessModes [{target}] and volumeName {volume} (annotation {OPT_OUT_ANNOTATION}: \"false\", so the mutating webhook leaves it [{target}])"
            ),
            Step::CreateClaim => format!(
                "create PersistentVolumeClaim {claim} with accessModes [{target}] and volumeName {volume} (annotation {MIGRATED_FROM_ANNOTATION}: {source})"
            ),
            Step::WaitBound => {
                format!("wait until PersistentVolumeClaim {claim} is Bound to {volume}")
            }
            Step::ScaleUp => {
                let mut what: Vec<String> = state
                    .consumers
                    .iter()
                    .map(|c| format!("{c} replicas 0 -> {}", c.replicas))
                    .collect();
                what.extend(state.cronjobs.iter().map(|c| format!("resume CronJob {c}")));
                let restore = if what.is_empty() {
                    "restore consumers (none recorded)".to_owned()
                } else {
                    format!("restore consumers ({})", what.join(", "))
                };
                if !state.is_rollback() || state.switches.is_empty() {
                    return restore;
                }
                let switches: Vec<String> = state
                    .switches
                    .iter()
                    .map(|s| {
                        format!(
                            "restore Deployment {} spec.strategy: Recreate -> {} (from annotation {ORIGINAL_STRATEGY_ANNOTATION})",
                            s.deployment, s.from
                        )
                    })
                    .collect();
                format!("{}; {restore}", switches.join(", "))
            }
            Step::RestoreReclaimPolicy if retained => format!(
                "keep PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: Retain (it was Retain before)"
            ),
            Step::RestoreReclaimPolicy => format!(
                "set PersistentVolume {volume} spec.persistentVolumeReclaimPolicy: Retain -> {}",
                state.reclaim_policy
            ),
            Step::ClearState => {
                format!("remove the migration state from PersistentVolume {volume}")
            }
            Step::DeleteStatefulSet => {
                let name = state.statefulset.as_ref().map_or("", |s| s.name.as_str());
                format!(
                    "delete StatefulSet {}/{name} with propagationPolicy: Orphan (its pods, claims and revisions are kept), wait until it is gone (its manifest is in the migration state)",
                    state.namespace
                )
            }
            Step::CreateStatefulSet => {
                let name = state.statefulset.as_ref().map_or("", |s| s.name.as_str());
                format!(
                    "create StatefulSet {}/{name} again from the recorded manifest, volumeClaimTemplates accessModes [{target}], replicas 0 (restored next)",
                    state.namespace
                )
            }
        }
    }
}

/// Whether the claim is Bound to `volume`.
pub fn bound_to(pvc: &PersistentVolumeClaim, volume: &str) -> bool {
    pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(volume)
        && pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// Whether claim and volume are already swapped: both `target`, the claim bound to the volume.
pub fn swap_done(
    pv: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    volume: &str,
    target: AccessMode,
) -> bool {
    let pv_ok = pv.access_modes().is_only(target);
    let claim_ok = claim.is_some_and(|c| {
        c.access_modes().is_only(target)
            && bound_to(c, volume)
            && c.metadata.deletion_timestamp.is_none()
    });
    pv_ok && claim_ok
}

/// Where each step stands on the live objects, for the plan: done (recorded), already in place
/// (the run will skip it, and why), or to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    ToDo,
    /// Recorded as done in the migration state.
    Done,
    /// Not recorded, but what it does is already true of the live objects.
    InPlace(String),
}

/// Where each step of `state` stands, judged without I/O on objects the planner read:
/// `replicas` are the consumers' live replica counts, in order.
pub fn statuses(
    state: &MigrationState,
    volume: &str,
    pv: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    replicas: &[i32],
) -> Vec<StepStatus> {
    let target = state.target.mode();
    let swapped = swap_done(pv, claim, volume, target);
    let swap_why = || {
        format!(
            "claim {}/{} is already [{}] and bound to {volume}",
            state.namespace,
            state.claim,
            target.as_str()
        )
    };
    let spec = pv.spec.as_ref();
    let policy = spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    let restored = state
        .consumers
        .iter()
        .zip(replicas)
        .all(|(c, live)| c.replicas == *live);
    state
        .steps()
        .iter()
        .enumerate()
        .map(|(i, step)| {
            if i < state.completed {
                return StepStatus::Done;
            }
            if swapped && step.swaps() {
                return StepStatus::InPlace(swap_why());
            }
            let claim_uid = spec
                .and_then(|s| s.claim_ref.as_ref())
                .and_then(|c| c.uid.as_deref());
            let modes = pv.access_modes();
            let why = match step {
                Step::RetainVolume => (policy == Some("Retain"))
                    .then(|| "reclaim policy is already Retain".to_owned()),
                Step::DeleteClaim => claim
                    .is_none()
                    .then(|| "the claim is already deleted".to_owned()),
                Step::ReleaseVolume => claim_uid
                    .is_none_or(str::is_empty)
                    .then(|| "the volume is not bound to a claim".to_owned()),
                Step::SetVolumeModes => modes
                    .is_only(target)
                    .then(|| format!("the volume is already [{}]", target.as_str())),
                Step::CreateClaim => claim
                    .filter(|c| {
                        c.access_modes().is_only(target) && c.metadata.deletion_timestamp.is_none()
                    })
                    .map(|_| "the claim exists".to_owned()),
                Step::ScaleUp => (swapped
                    && restored
                    && state.cronjobs.is_empty()
                    && (!state.is_rollback() || state.switches.is_empty()))
                .then(|| "consumers already at their replica counts".to_owned()),
                Step::RestoreReclaimPolicy => (swapped
                    && policy == Some(state.reclaim_policy.as_str()))
                .then(|| format!("reclaim policy is already {}", state.reclaim_policy)),
                Step::RecordState
                | Step::ScaleDown
                | Step::WaitBound
                | Step::DeleteStatefulSet
                | Step::CreateStatefulSet
                | Step::ClearState => None,
            };
            why.map_or(StepStatus::ToDo, StepStatus::InPlace)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state recorded by a StatefulSet run counts steps of this list: they are the claim's
    /// steps with the StatefulSet's two as steps 9 and 10.
    #[test]
    fn statefulset_steps_are_the_claim_steps_with_two_before_scale_up() {
        assert_eq!(
            STATEFULSET_STEPS[8..10],
            [Step::DeleteStatefulSet, Step::CreateStatefulSet]
        );
        let mut rest = STATEFULSET_STEPS.to_vec();
        rest.drain(8..10);
        assert_eq!(rest, STEPS);
        assert_eq!(STATEFULSET_STEPS[BOUND - 1], Step::WaitBound);
    }
}
