//! What a migration records: the state on the PersistentVolume (annotation
//! [`MIGRATION_ANNOTATION`]), the consumers to scale back, the Deployments switched to
//! `Recreate`, the StatefulSet to create again, and the claim as it is created again. Pure: read
//! from and written into objects the caller holds.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::MigrateError;
use crate::policy::{
    AccessMode, MIGRATED_FROM_ANNOTATION, MIGRATION_ANNOTATION, MigrationTarget, OPT_OUT_ANNOTATION,
};

/// What is recorded on the PersistentVolume while a migration or rollback is under way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationState {
    pub version: u32,
    pub namespace: String,
    pub claim: String,
    /// `ReadWriteOncePod` while migrating, `ReadWriteOnce` while rolling back.
    pub target: MigrationTarget,
    /// The reclaim policy to restore at the end.
    pub reclaim_policy: String,
    /// The claim as it will be recreated (metadata and spec only, no status, no uid).
    pub claim_manifest: Value,
    pub consumers: Vec<Consumer>,
    /// Bare pods deleted to release the claim (they are not recreated).
    #[serde(default)]
    pub deleted_pods: Vec<String>,
    /// Deployments switched to `Recreate` (`--switch-to-recreate`) before the scale-down; when
    /// rolling back, those whose recorded strategy is restored before the scale-up.
    #[serde(default)]
    pub switches: Vec<StrategySwitch>,
    /// CronJobs using the claim, suspended (`spec.suspend: true`) for the run and resumed at
    /// its end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cronjobs: Vec<String>,
    /// Migrated with its StatefulSet (`migrate --statefulset`): the StatefulSet to recreate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<StatefulSetRecord>,
    /// Steps of the current direction already done.
    pub completed: usize,
}

impl MigrationState {
    pub fn is_rollback(&self) -> bool {
        self.target == MigrationTarget::ReadWriteOnce
    }

    /// The state recorded on `pv`, if any.
    pub fn read(pv: &PersistentVolume) -> Result<Option<MigrationState>, MigrateError> {
        let Some(text) = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIGRATION_ANNOTATION))
        else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            MigrateError::Refused(format!(
                "PersistentVolume {:?} carries an unreadable {MIGRATION_ANNOTATION} annotation ({e}); \
                 inspect it and remove it by hand if it is stale",
                pv.metadata.name.as_deref().unwrap_or("")
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConsumerKind {
    Deployment,
    StatefulSet,
    ReplicaSet,
}

/// A workload whose pods mount the claim, and the replicas to restore.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Consumer {
    pub kind: ConsumerKind,
    pub name: String,
    pub replicas: i32,
}

impl Consumer {
    /// Whether a reference by API group, kind and name (an autoscaler's target) is this one.
    pub fn is(&self, group: &str, kind: &str, name: &str) -> bool {
        let own_kind = match self.kind {
            ConsumerKind::Deployment => "Deployment",
            ConsumerKind::StatefulSet => "StatefulSet",
            ConsumerKind::ReplicaSet => "ReplicaSet",
        };
        group == "apps" && kind == own_kind && name == self.name
    }
}

impl std::fmt::Display for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.kind, self.name)
    }
}

/// Annotation on a Deployment `migrate --switch-to-recreate` switched to `Recreate`: its
/// original `spec.strategy` as JSON. It stays after the migration, so `--rollback` can restore
/// the strategy also once the migration is complete.
pub const ORIGINAL_STRATEGY_ANNOTATION: &str = "rwop-guard.dev/original-strategy";

/// A Deployment `migrate` switches to `Recreate` (`--switch-to-recreate`), or (rolling back)
/// back to the strategy it recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategySwitch {
    pub deployment: String,
    /// The strategy it had, described (`RollingUpdate (the default), maxSurge 25%`).
    pub from: String,
}

/// The state of a migration (or rollback) of `pvc` and `pv` about to start: nothing done yet.
pub fn new_state(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    target: MigrationTarget,
    consumers: Vec<Consumer>,
    deleted_pods: Vec<String>,
    cronjobs: Vec<String>,
    switches: Vec<StrategySwitch>,
) -> MigrationState {
    MigrationState {
        version: 1,
        namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
        claim: pvc.metadata.name.clone().unwrap_or_default(),
        target,
        reclaim_policy: pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Retain".to_owned()),
        claim_manifest: sanitized_claim(pvc),
        consumers,
        deleted_pods,
        cronjobs,
        switches,
        statefulset: None,
        completed: 0,
    }
}

/// Annotations the API server and controllers manage; a recreated claim must not carry them.
const MANAGED_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// The claim as it can be created again: name, namespace, labels, user annotations, and the spec
/// without selector and data source (the data is already on the volume).
fn sanitized_claim(pvc: &PersistentVolumeClaim) -> Value {
    let mut annotations = pvc.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !MANAGED_ANNOTATIONS.contains(&k.as_str()));
    let mut spec = pvc.spec.clone().unwrap_or_default();
    spec.selector = None;
    spec.data_source = None;
    spec.data_source_ref = None;
    let mut manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": pvc.metadata.name,
            "namespace": pvc.metadata.namespace,
        },
        "spec": spec,
    });
    if let Some(labels) = pvc.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        manifest["metadata"]["labels"] = serde_json::json!(labels);
    }
    if !annotations.is_empty() {
        manifest["metadata"]["annotations"] = serde_json::json!(annotations);
    }
    manifest
}

/// The claim to create for `state`: the recorded manifest with the target mode and the volume.
pub fn claim_to_create(
    state: &MigrationState,
    volume: &str,
) -> Result<PersistentVolumeClaim, MigrateError> {
    let mut manifest = state.claim_manifest.clone();
    manifest["spec"]["accessModes"] = serde_json::json!([state.target.mode().as_str()]);
    manifest["spec"]["volumeName"] = Value::from(volume);
    let mut claim: PersistentVolumeClaim = serde_json::from_value(manifest).map_err(|e| {
        MigrateError::Refused(format!("the recorded claim manifest does not decode: {e}"))
    })?;
    let annotations = claim
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    let rwo = AccessMode::ReadWriteOnce.as_str().to_owned();
    if state.is_rollback() {
        // The mutating webhook's cache may still see the volume as [ReadWriteOncePod] and would
        // rewrite the claim to match, which then never binds: opt out of mutation.
        annotations.remove(MIGRATED_FROM_ANNOTATION);
        annotations.insert(OPT_OUT_ANNOTATION.to_owned(), "false".to_owned());
    } else {
        // For good: M2 keeps [ReadWriteOncePod] when the old [ReadWriteOnce] manifest comes back.
        annotations.insert(MIGRATED_FROM_ANNOTATION.to_owned(), rwo);
    }
    Ok(claim)
}

/// The StatefulSet as it is created again, recorded in the state of every claim it migrates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatefulSetRecord {
    pub name: String,
    /// Metadata (without what the server sets) and spec, before the run.
    pub manifest: Value,
}

/// Metadata the API server sets, and the finalizers of the old object's deletion: a recreated
/// StatefulSet must not carry them.
const SERVER_SET: &[&str] = &[
    "finalizers",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "managedFields",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

impl StatefulSetRecord {
    /// The record of a StatefulSet as the server stores it (read untyped: a typed read would add
    /// `apiVersion`/`kind` to every template), without what the server sets.
    pub fn of_stored(
        namespace: &str,
        name: &str,
        stored: DynamicObject,
    ) -> Result<Self, MigrateError> {
        let mut manifest = serde_json::to_value(stored).map_err(|e| {
            MigrateError::Refused(format!("cannot record StatefulSet {namespace}/{name}: {e}"))
        })?;
        if let Some(meta) = manifest["metadata"].as_object_mut() {
            meta.retain(|k, v| !SERVER_SET.contains(&k.as_str()) && !v.is_null());
        }
        if let Some(obj) = manifest.as_object_mut() {
            obj.remove("status");
        }
        Ok(StatefulSetRecord {
            name: name.to_owned(),
            manifest,
        })
    }

    /// The recorded StatefulSet, typed.
    pub fn decode(&self) -> Result<StatefulSet, MigrateError> {
        serde_json::from_value(self.manifest.clone()).map_err(|e| {
            MigrateError::Refused(format!(
                "the recorded manifest of StatefulSet {} does not decode: {e}",
                self.name
            ))
        })
    }

    /// The StatefulSet to create: the recorded one, its templates `[target]`, at 0 replicas.
    pub fn to_create(&self, target: MigrationTarget) -> Result<DynamicObject, MigrateError> {
        let mut manifest = self.manifest.clone();
        if let Some(templates) = manifest["spec"]["volumeClaimTemplates"].as_array_mut() {
            for t in templates {
                t["spec"]["accessModes"] = serde_json::json!([target.mode().as_str()]);
            }
        }
        manifest["spec"]["replicas"] = 0.into();
        serde_json::from_value(manifest).map_err(|e| {
            MigrateError::Refused(format!(
                "the recorded manifest of StatefulSet {} does not decode: {e}",
                self.name
            ))
        })
    }
}
