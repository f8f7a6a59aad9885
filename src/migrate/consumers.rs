//! Who uses a claim: the controllers of the pods that mount it, scaled through `/scale`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::{MigrateError, api_err};

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

pub struct Found {
    pub scalable: Vec<Consumer>,
    /// Pods with no controller.
    pub bare_pods: Vec<String>,
    /// Controllers rwop-guard does not scale (DaemonSet, Job, operators…), as `Kind/name`.
    pub unsupported: Vec<String>,
}

fn controller(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true))
}

/// The pods of `namespace` that mount `claim` and are not finished.
async fn pods_mounting(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<Vec<Pod>, MigrateError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(super::list_all(&pods, "pods")
        .await?
        .into_iter()
        .filter(|p| mounts(p, claim))
        .collect())
}

fn mounts(pod: &Pod, claim: &str) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !finished
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vols| {
                vols.iter().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
            })
}

/// Names of the pods that still mount the claim.
pub async fn mounting_pods(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<Vec<String>, MigrateError> {
    Ok(pods_mounting(client, namespace, claim)
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// Finds the controllers of the pods mounting `claim`, with their current replica counts.
pub async fn find(client: &Client, namespace: &str, claim: &str) -> Result<Found, MigrateError> {
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let mut scalable = BTreeSet::new();
    let mut bare_pods = Vec::new();
    let mut unsupported = BTreeSet::new();
    let mut owners = BTreeSet::new();
    for pod in pods_mounting(client, namespace, claim).await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match controller(pod.metadata.owner_references.as_ref()) {
            None => bare_pods.push(name),
            Some(r) if r.kind == "ReplicaSet" => {
                let rs = replicasets.get(&r.name).await.map_err(api_err(format!(
                    "cannot read ReplicaSet {namespace}/{}",
                    r.name
                )))?;
                match controller(rs.metadata.owner_references.as_ref()) {
                    Some(d) if d.kind == "Deployment" => {
                        owners.insert((ConsumerKind::Deployment, d.name.clone()));
                    }
                    Some(other) => {
                        unsupported.insert(format!("{}/{}", other.kind, other.name));
                    }
                    None => {
                        owners.insert((ConsumerKind::ReplicaSet, r.name.clone()));
                    }
                }
            }
            Some(r) if r.kind == "StatefulSet" => {
                owners.insert((ConsumerKind::StatefulSet, r.name.clone()));
            }
            Some(r) => {
                unsupported.insert(format!("{}/{}", r.kind, r.name));
            }
        }
    }
    for (kind, name) in owners {
        let replicas = get_replicas(client, namespace, kind, &name).await?;
        scalable.insert(Consumer {
            kind,
            name,
            replicas,
        });
    }
    Ok(Found {
        scalable: scalable.into_iter().collect(),
        bare_pods,
        unsupported: unsupported.into_iter().collect(),
    })
}

async fn get_replicas(
    client: &Client,
    namespace: &str,
    kind: ConsumerKind,
    name: &str,
) -> Result<i32, MigrateError> {
    let what = format!("cannot read the scale of {kind:?} {namespace}/{name}");
    let scale = match kind {
        ConsumerKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_scale(name)
                .await
        }
        ConsumerKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_scale(name)
                .await
        }
        ConsumerKind::ReplicaSet => {
            Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .get_scale(name)
                .await
        }
    }
    .map_err(api_err(what))?;
    Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
}

/// Sets a consumer's replicas through its `/scale` subresource (when they differ).
pub async fn scale(
    client: &Client,
    namespace: &str,
    consumer: &Consumer,
    replicas: i32,
) -> Result<bool, MigrateError> {
    if get_replicas(client, namespace, consumer.kind, &consumer.name).await? == replicas {
        return Ok(false);
    }
    let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
    let params = PatchParams::default();
    let name = consumer.name.as_str();
    match consumer.kind {
        ConsumerKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .patch_scale(name, &params, &patch)
                .await
        }
        ConsumerKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch_scale(name, &params, &patch)
                .await
        }
        ConsumerKind::ReplicaSet => {
            Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .patch_scale(name, &params, &patch)
                .await
        }
    }
    .map_err(api_err(format!(
        "cannot scale {consumer} in {namespace} to {replicas}"
    )))?;
    Ok(true)
}
