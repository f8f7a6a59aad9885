//! Slim views of everything that runs pods which may mount a claim: the workload kinds with pod
//! templates (Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicaSets,
//! ReplicationControllers) and the live pods. `scan` keeps one per object it lists (one page of
//! whole objects at most); `migrate` builds the same from the namespace of its claim, so both
//! find the same users ([`super::users`]). Pure.

use std::fmt;

use k8s_openapi::api::apps::v1::{
    DaemonSet, Deployment, DeploymentStrategy, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

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
