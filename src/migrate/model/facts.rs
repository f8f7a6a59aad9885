//! The facts the judgement reads: slim views of a claim, its volume and the workloads that use
//! it. `scan` keeps these for every object it lists (one page of whole objects at most); `migrate`
//! builds them from the live objects, so both judge the same facts.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::state::MigrationState;
use super::workloads::{Owner, StatefulSetInfo, WorkloadInfo, WorkloadKind};
use crate::policy::{AccessModes, HasAccessModes};

/// One user of a claim as the judgement sees it: a workload whose pod template mounts it (one
/// scaled to 0 still starts pods once scaled up), or the controller of a live pod that mounts it,
/// or a bare pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    /// Pods at once (`spec.replicas`, a Job's `parallelism`); 1 for a bare pod and for a
    /// StatefulSet whose `volumeClaimTemplates` make the claim (one claim per pod).
    pub replicas: i32,
    /// Deployments only: `spec.strategy` as stored.
    pub strategy: Option<DeploymentStrategy>,
    /// A StatefulSet whose `volumeClaimTemplates` make the claim: its templates and policies.
    pub claim_template: Option<StatefulSetInfo>,
    /// CronJobs: runs may overlap (`concurrencyPolicy: Allow`, the default).
    pub overlapping_runs: bool,
    /// The workload's own controller: an operator that would undo a scale-down.
    pub managed_by: Option<Owner>,
}

impl Workload {
    pub fn from_deployment(d: &Deployment) -> Workload {
        Workload::of(&WorkloadInfo::from(d))
    }

    /// The user a listed workload is (its own controller is `managed_by`).
    pub fn of(w: &WorkloadInfo) -> Workload {
        Workload {
            kind: w.kind.clone(),
            name: w.name.clone(),
            replicas: w.replicas,
            strategy: w.strategy.clone(),
            claim_template: None,
            overlapping_runs: w.overlapping_runs,
            managed_by: w.owner.clone(),
        }
    }

    /// A user known only by kind and name (a pod's controller that was not listed, a bare pod).
    pub fn named(kind: WorkloadKind, name: &str) -> Workload {
        Workload {
            kind,
            name: name.to_owned(),
            replicas: 1,
            strategy: None,
            claim_template: None,
            overlapping_runs: false,
            managed_by: None,
        }
    }

    /// `Deployment web`, `Pod debug`, `PostgresCluster main`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// What [`judge`](super::eligibility::judge) reads of a claim, and what `scan` keeps of every claim it lists.
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

/// What [`judge`](super::eligibility::judge) reads of a PersistentVolume, and what `scan` keeps of every volume it lists.
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
    /// A migration or rollback under way: the state recorded on the volume.
    pub recorded: Option<Box<MigrationState>>,
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
            // An unreadable state is `migrate`'s to report (it refuses the volume).
            recorded: MigrationState::read(pv).ok().flatten().map(Box::new),
        }
    }
}
