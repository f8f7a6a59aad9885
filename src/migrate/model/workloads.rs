//! Slim views of everything that runs pods which may mount a claim: the workload kinds with pod
//! templates (Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicaSets,
//! ReplicationControllers) and the live pods. `scan` keeps one per object it lists (one page of
//! whole objects at most); `migrate` builds the same from the namespace of its claim, so both
//! find the same users ([`super::users`]). Pure.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{
    DaemonSet, Deployment, DeploymentStrategy, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use kube::core::Resource;
use serde::Deserialize;

use crate::policy::{AccessModes, HasAccessModes};

/// What runs the pods that use a claim.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicaSet,
    ReplicationController,
    /// A pod with no controller (a bare pod).
    Pod,
    /// The controller of pods (or of their ReplicaSet or Job) that rwop-guard does not know:
    /// an operator's resource, by its kind.
    Other(String),
}

impl WorkloadKind {
    /// The kind as the API names it.
    pub fn as_str(&self) -> &str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::ReplicationController => "ReplicationController",
            WorkloadKind::Pod => "Pod",
            WorkloadKind::Other(kind) => kind,
        }
    }

    /// The apiVersion of the kinds rwop-guard reads (`None` for another controller's kind).
    pub fn api_version(&self) -> Option<&'static str> {
        match self {
            WorkloadKind::Deployment
            | WorkloadKind::StatefulSet
            | WorkloadKind::DaemonSet
            | WorkloadKind::ReplicaSet => Some("apps/v1"),
            WorkloadKind::Job | WorkloadKind::CronJob => Some("batch/v1"),
            WorkloadKind::ReplicationController | WorkloadKind::Pod => Some("v1"),
            WorkloadKind::Other(_) => None,
        }
    }

    /// The kind of an ownerReference.
    pub fn of_owner(kind: &str) -> WorkloadKind {
        match kind {
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "Job" => WorkloadKind::Job,
            "CronJob" => WorkloadKind::CronJob,
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "ReplicationController" => WorkloadKind::ReplicationController,
            other => WorkloadKind::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A controller, as `Kind/name` from its ownerReference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

fn controller_of(meta: &ObjectMeta) -> Option<Owner> {
    let refs: &[OwnerReference] = meta.owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .find(|r| r.controller == Some(true))
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
}

/// The claim names a pod spec mounts, sorted, once each.
fn claims_of(spec: Option<&PodSpec>) -> Vec<String> {
    let mut claims: Vec<String> = spec
        .and_then(|p| p.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect();
    claims.sort_unstable();
    claims.dedup();
    claims
}

/// What the judgement reads of a StatefulSet besides its pod template.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatefulSetInfo {
    /// The `volumeClaimTemplates` names and modes.
    pub templates: Vec<(String, AccessModes)>,
    /// `persistentVolumeClaimRetentionPolicy.whenScaled: Delete`: scaling to 0 deletes claims.
    pub when_scaled_delete: bool,
    /// `spec.ordinals.start`.
    pub ordinals_start: i32,
}

impl StatefulSetInfo {
    /// Whether every template asks for exactly `[mode]` (no template: false).
    pub fn templates_are(&self, mode: crate::policy::AccessMode) -> bool {
        !self.templates.is_empty() && self.templates.iter().all(|(_, m)| m.is_only(mode))
    }

    /// The ordinal of `claim` if it is one a StatefulSet named `name` makes from these templates
    /// (TEMPLATE-NAME-ORDINAL).
    pub fn ordinal_of(&self, name: &str, claim: &str) -> Option<u32> {
        self.templates.iter().find_map(|(t, _)| {
            let rest = claim.strip_prefix(t.as_str())?.strip_prefix('-')?;
            let digits = rest.strip_prefix(name)?.strip_prefix('-')?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        })
    }
}

/// A workload with a pod template, reduced to what the judgement reads.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadInfo {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// Pods at once: `spec.replicas` (defaulted to 1), a Job's `parallelism`, a CronJob's job
    /// template's `parallelism`; 1 for a DaemonSet (per node).
    pub replicas: i32,
    /// Deployments: `spec.strategy` as stored.
    pub strategy: Option<DeploymentStrategy>,
    /// Claims the pod template mounts, sorted.
    pub claims: Vec<String>,
    /// The workload's own controller (a Deployment's ReplicaSet, a CronJob's Job, an operator).
    pub owner: Option<Owner>,
    /// StatefulSets only.
    pub statefulset: Option<StatefulSetInfo>,
    /// CronJobs: runs may overlap (`concurrencyPolicy: Allow`, the default).
    pub overlapping_runs: bool,
    /// CronJobs: `spec.suspend` (no new runs).
    pub suspended: bool,
}

impl WorkloadInfo {
    fn new(kind: WorkloadKind, meta: &ObjectMeta, replicas: i32, spec: Option<&PodSpec>) -> Self {
        WorkloadInfo {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            replicas,
            strategy: None,
            claims: claims_of(spec),
            owner: controller_of(meta),
            statefulset: None,
            overlapping_runs: false,
            suspended: false,
        }
    }
}

impl From<&Deployment> for WorkloadInfo {
    fn from(d: &Deployment) -> Self {
        let spec = &d.spec;
        let mut w = WorkloadInfo::new(
            WorkloadKind::Deployment,
            &d.metadata,
            spec.replicas.unwrap_or(1),
            spec.template.spec.as_ref(),
        );
        w.strategy = spec.strategy.clone();
        w
    }
}

impl From<&StatefulSet> for WorkloadInfo {
    fn from(s: &StatefulSet) -> Self {
        let spec = &s.spec;
        let mut w = WorkloadInfo::new(
            WorkloadKind::StatefulSet,
            &s.metadata,
            spec.replicas.unwrap_or(1),
            spec.template.spec.as_ref(),
        );
        let templates = spec.volume_claim_templates.as_deref().unwrap_or_default();
        w.statefulset = Some(StatefulSetInfo {
            templates: templates
                .iter()
                .filter_map(|t| Some((t.metadata.name.clone()?, t.access_modes())))
                .collect(),
            when_scaled_delete: spec
                .persistent_volume_claim_retention_policy
                .as_ref()
                .and_then(|p| p.when_scaled.as_deref())
                == Some("Delete"),
            ordinals_start: spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0),
        });
        w
    }
}

impl From<&DaemonSet> for WorkloadInfo {
    fn from(d: &DaemonSet) -> Self {
        let template = d.spec.template.spec.as_ref();
        WorkloadInfo::new(WorkloadKind::DaemonSet, &d.metadata, 1, template)
    }
}

impl From<&Job> for WorkloadInfo {
    fn from(j: &Job) -> Self {
        let spec = j.spec.as_ref();
        let parallelism = spec.and_then(|s| s.parallelism).unwrap_or(1);
        let template = spec.and_then(|s| s.template.spec.as_ref());
        WorkloadInfo::new(WorkloadKind::Job, &j.metadata, parallelism, template)
    }
}

impl From<&CronJob> for WorkloadInfo {
    fn from(c: &CronJob) -> Self {
        let spec = &c.spec;
        let job = spec.job_template.spec.as_ref();
        let parallelism = job.and_then(|j| j.parallelism).unwrap_or(1);
        let template = job.and_then(|j| j.template.spec.as_ref());
        let mut w = WorkloadInfo::new(WorkloadKind::CronJob, &c.metadata, parallelism, template);
        let policy = spec.concurrency_policy.as_deref();
        w.overlapping_runs = policy.is_none_or(|p| p == "Allow");
        w.suspended = spec.suspend == Some(true);
        w
    }
}

impl From<&ReplicaSet> for WorkloadInfo {
    fn from(r: &ReplicaSet) -> Self {
        let spec = &r.spec;
        let replicas = spec.replicas.unwrap_or(1);
        let template = spec.template.as_ref().and_then(|t| t.spec.as_ref());
        WorkloadInfo::new(WorkloadKind::ReplicaSet, &r.metadata, replicas, template)
    }
}

impl From<&ReplicationController> for WorkloadInfo {
    fn from(r: &ReplicationController) -> Self {
        let spec = r.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let template = spec
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref());
        WorkloadInfo::new(
            WorkloadKind::ReplicationController,
            &r.metadata,
            replicas,
            template,
        )
    }
}

/// A live pod, reduced to what the judgement reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// Claims it mounts, sorted.
    pub claims: Vec<String>,
    pub owner: Option<Owner>,
    /// `Succeeded` or `Failed`: it holds no volume any more.
    pub finished: bool,
}

impl From<&Pod> for PodInfo {
    fn from(p: &Pod) -> Self {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        PodInfo {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
            claims: claims_of(p.spec.as_ref()),
            owner: controller_of(&p.metadata),
            finished: matches!(phase, Some("Succeeded" | "Failed")),
        }
    }
}

/// Every workload and pod of a namespace (or of the cluster), as listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workloads {
    pub workloads: Vec<WorkloadInfo>,
    pub pods: Vec<PodInfo>,
}

/// A workload object (any kind with a pod template, or a pod) decoded for what the judgement
/// reads and nothing else: the rest of the object, `managedFields` and the containers included,
/// is skipped by the parser, never allocated. The webhook decodes workload writes with it and
/// the cluster caches watch with it; `K` is the kind it stands for (its API path).
#[derive(Clone, Debug, Deserialize)]
#[serde(bound = "")]
pub struct WorkloadView<K> {
    #[serde(default, deserialize_with = "view_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<ViewSpec>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

/// The fields of every kind's `spec` the judgement reads; a kind has some of them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewSpec {
    replicas: Option<i32>,
    parallelism: Option<i32>,
    strategy: Option<DeploymentStrategy>,
    concurrency_policy: Option<String>,
    suspend: Option<bool>,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, ReplicationControllers.
    template: Option<ViewTemplate>,
    /// CronJobs.
    job_template: Option<ViewJobTemplate>,
    /// Pods.
    volumes: Option<Vec<ViewVolume>>,
    /// StatefulSets.
    volume_claim_templates: Option<Vec<ViewClaimTemplate>>,
    persistent_volume_claim_retention_policy:
        Option<k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy>,
    ordinals: Option<k8s_openapi::api::apps::v1::StatefulSetOrdinals>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewTemplate {
    spec: Option<ViewPodSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewPodSpec {
    volumes: Option<Vec<ViewVolume>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewJobTemplate {
    spec: Option<ViewJobSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewJobSpec {
    parallelism: Option<i32>,
    template: Option<ViewTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewVolume {
    persistent_volume_claim: Option<k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ViewClaimTemplate {
    #[serde(default, deserialize_with = "view_metadata")]
    metadata: ObjectMeta,
    spec: Option<ViewClaimSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ViewClaimSpec {
    access_modes: Option<Vec<String>>,
}

/// Name, namespace, uid, resourceVersion (for the watch) and the controller reference.
fn view_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Kept {
        name: Option<String>,
        generate_name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        owner_references: Option<Vec<OwnerReference>>,
    }
    let kept = Option::<Kept>::deserialize(d)?;
    Ok(kept.map_or_else(ObjectMeta::default, |k| ObjectMeta {
        name: k.name,
        generate_name: k.generate_name,
        namespace: k.namespace,
        uid: k.uid,
        resource_version: k.resource_version,
        owner_references: k.owner_references.map(|refs| {
            refs.into_iter()
                .filter(|r| r.controller == Some(true))
                .collect()
        }),
        ..ObjectMeta::default()
    }))
}

fn pod_spec(t: Option<&ViewTemplate>) -> Option<&Vec<ViewVolume>> {
    t.and_then(|t| t.spec.as_ref())
        .and_then(|s| s.volumes.as_ref())
}

fn claim_names(volumes: Option<&Vec<ViewVolume>>) -> Vec<String> {
    let mut claims: Vec<String> = volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect();
    claims.sort_unstable();
    claims.dedup();
    claims
}

impl<K> WorkloadView<K> {
    /// What the judgement reads, as a workload of `kind` (a pod's `replicas` is 1).
    pub fn info(&self, kind: WorkloadKind) -> WorkloadInfo {
        let spec = self.spec.clone().unwrap_or_default();
        let job = spec.job_template.and_then(|t| t.spec);
        let volumes = match &kind {
            WorkloadKind::Pod => spec.volumes.as_ref(),
            WorkloadKind::CronJob => pod_spec(job.as_ref().and_then(|j| j.template.as_ref())),
            _ => pod_spec(spec.template.as_ref()),
        };
        let replicas = match &kind {
            WorkloadKind::Job => spec.parallelism,
            WorkloadKind::CronJob => job.as_ref().and_then(|j| j.parallelism),
            WorkloadKind::DaemonSet | WorkloadKind::Pod => Some(1),
            _ => spec.replicas,
        }
        .unwrap_or(1);
        let mut w = WorkloadInfo {
            kind,
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: self.metadata.name.clone().unwrap_or_default(),
            uid: self.metadata.uid.clone(),
            replicas,
            strategy: None,
            claims: claim_names(volumes),
            owner: controller_of(&self.metadata),
            statefulset: None,
            overlapping_runs: false,
            suspended: false,
        };
        match w.kind {
            WorkloadKind::Deployment => w.strategy = spec.strategy,
            WorkloadKind::CronJob => {
                w.overlapping_runs = spec
                    .concurrency_policy
                    .as_deref()
                    .is_none_or(|p| p == "Allow");
                w.suspended = spec.suspend == Some(true);
            }
            WorkloadKind::StatefulSet => {
                w.statefulset = Some(StatefulSetInfo {
                    templates: spec
                        .volume_claim_templates
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|t| {
                            let modes = AccessModes::from_optional(
                                t.spec.and_then(|s| s.access_modes).as_ref(),
                            );
                            Some((t.metadata.name?, modes))
                        })
                        .collect(),
                    when_scaled_delete: spec
                        .persistent_volume_claim_retention_policy
                        .and_then(|p| p.when_scaled)
                        .as_deref()
                        == Some("Delete"),
                    ordinals_start: spec.ordinals.and_then(|o| o.start).unwrap_or(0),
                });
            }
            _ => {}
        }
        w
    }
}

impl<K: Resource<DynamicType = ()>> Resource for WorkloadView<K> {
    type DynamicType = ();
    type Scope = K::Scope;
    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}
