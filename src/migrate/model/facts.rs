//! The facts the judgement reads: slim views of a claim, its volume and the workloads that use
//! it. `scan` keeps these for every object it lists (one page of whole objects at most); `migrate`
//! builds them from the live objects, so both judge the same facts.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::state::ConsumerKind;
use crate::policy::{AccessModes, HasAccessModes};

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
