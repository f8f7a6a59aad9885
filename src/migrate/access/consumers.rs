//! Who uses a claim, and the calls that scale them: the controllers of the pods that mount it
//! and the Deployments whose template mounts it, scaled through `/scale`; the strategy switch
//! of `--switch-to-recreate`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

use super::list::list_all;
use crate::migrate::model::eligibility::Workload;
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::rollout::describe_strategy;
use crate::migrate::model::state::{Consumer, ConsumerKind, ORIGINAL_STRATEGY_ANNOTATION};
use crate::migrate::model::templates::{mounts, ordinal_of, template_mounts};

pub struct Found {
    pub scalable: Vec<Consumer>,
    /// The scalable consumers as [`Workload`]s (Deployments with their strategy), for
    /// the judgement.
    pub workloads: Vec<Workload>,
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
    Ok(list_all(&pods, "pods")
        .await?
        .into_iter()
        .filter(|p| mounts(p, claim))
        .collect())
}

/// Finds the controllers of the pods mounting `claim`, and the Deployments whose pod template
/// mounts it (one scaled to 0 has no pod, and would start one), with their current replica
/// counts.
pub async fn find(client: &Client, namespace: &str, claim: &str) -> Result<Found, MigrateError> {
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let deployments: Vec<Deployment> = list_all(
        &Api::<Deployment>::namespaced(client.clone(), namespace),
        "deployments",
    )
    .await?;
    let mut scalable = BTreeSet::new();
    let mut bare_pods = Vec::new();
    let mut unsupported = BTreeSet::new();
    let mut owners = BTreeSet::new();
    for d in deployments.iter().filter(|d| template_mounts(d, claim)) {
        if let Some(name) = &d.metadata.name {
            owners.insert((ConsumerKind::Deployment, name.clone()));
        }
    }
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
    let mut workloads = Vec::new();
    for (kind, name) in owners {
        let replicas = get_replicas(client, namespace, kind, &name).await?;
        // A claim of a StatefulSet's volumeClaimTemplates is mounted by one of its pods only.
        let mut per_pod = false;
        if kind == ConsumerKind::StatefulSet {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let sts = api.get_opt(&name).await.map_err(api_err(format!(
                "cannot read StatefulSet {namespace}/{name}"
            )))?;
            per_pod = sts.is_some_and(|s| ordinal_of(&s, claim).is_some());
        }
        let strategy = deployments
            .iter()
            .filter(|_| kind == ConsumerKind::Deployment)
            .find(|d| d.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|d| d.spec.strategy.clone());
        workloads.push(Workload {
            kind,
            name: name.clone(),
            replicas: if per_pod { 1 } else { replicas },
            strategy,
        });
        scalable.insert(Consumer {
            kind,
            name,
            replicas,
        });
    }
    Ok(Found {
        scalable: scalable.into_iter().collect(),
        workloads,
        bare_pods,
        unsupported: unsupported.into_iter().collect(),
    })
}

/// A consumer's live replica count.
pub async fn replicas_of(
    client: &Client,
    namespace: &str,
    consumer: &Consumer,
) -> Result<i32, MigrateError> {
    get_replicas(client, namespace, consumer.kind, &consumer.name).await
}

async fn get_replicas(
    client: &Client,
    namespace: &str,
    kind: ConsumerKind,
    name: &str,
) -> Result<i32, MigrateError> {
    let what = format!("cannot read the scale of {kind:?} {namespace}/{name}");
    let scale = scalable(client, namespace, kind).get_scale(name).await;
    match scale {
        Ok(scale) => Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0)),
        // Gone (a StatefulSet between its delete and its create again): nothing runs.
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(0),
        Err(e) => Err(api_err(what)(e)),
    }
}

/// The API of a consumer's kind, for its `/scale` subresource.
fn scalable(client: &Client, namespace: &str, kind: ConsumerKind) -> Api<DynamicObject> {
    let resource = match kind {
        ConsumerKind::Deployment => ApiResource::erase::<Deployment>(&()),
        ConsumerKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        ConsumerKind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
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
    scalable(client, namespace, consumer.kind)
        .patch_scale(&consumer.name, &PatchParams::default(), &patch)
        .await
        .map_err(api_err(format!(
            "cannot scale {consumer} in {namespace} to {replicas}"
        )))?;
    Ok(true)
}

fn original_strategy(d: &Deployment) -> Option<&String> {
    d.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORIGINAL_STRATEGY_ANNOTATION))
}

/// Switches Deployment `name` to `Recreate`, keeping its strategy in
/// [`ORIGINAL_STRATEGY_ANNOTATION`] (one merge patch, with the read resourceVersion as
/// precondition). Returns whether it changed anything: a Deployment already switched, or already
/// `Recreate`, is left alone.
pub async fn switch_to_recreate(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, MigrateError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = api.get(name).await.map_err(api_err(format!(
        "cannot read Deployment {namespace}/{name}"
    )))?;
    let strategy = d.spec.strategy.clone().unwrap_or_default();
    if original_strategy(&d).is_some() || strategy.type_.as_deref() == Some("Recreate") {
        return Ok(false);
    }
    let original = serde_json::to_string(&strategy).map_err(|e| {
        MigrateError::Refused(format!(
            "cannot record the strategy of Deployment {namespace}/{name}: {e}"
        ))
    })?;
    let patch = Patch::Merge(serde_json::json!({
        "metadata": {
            "resourceVersion": d.metadata.resource_version,
            "annotations": { ORIGINAL_STRATEGY_ANNOTATION: original },
        },
        "spec": { "strategy": { "type": "Recreate", "rollingUpdate": null } },
    }));
    api.patch(name, &PatchParams::default(), &patch)
        .await
        .map_err(api_err(format!(
            "cannot switch Deployment {namespace}/{name} to strategy Recreate"
        )))?;
    Ok(true)
}

/// Puts back the strategy [`switch_to_recreate`] recorded on Deployment `name`, and removes the
/// record. Returns whether it changed anything (nothing recorded: nothing to do).
pub async fn restore_strategy(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<bool, MigrateError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(d) = api.get_opt(name).await.map_err(api_err(format!(
        "cannot read Deployment {namespace}/{name}"
    )))?
    else {
        return Ok(false);
    };
    let Some(text) = original_strategy(&d) else {
        return Ok(false);
    };
    let mut original: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        MigrateError::Refused(format!(
            "Deployment {namespace}/{name} carries an unreadable {ORIGINAL_STRATEGY_ANNOTATION} \
             annotation ({e}); restore its strategy by hand and remove the annotation"
        ))
    })?;
    if original.get("type").is_none_or(|t| t.is_null()) {
        original["type"] = "RollingUpdate".into();
    }
    let patch = Patch::Merge(serde_json::json!({
        "metadata": {
            "resourceVersion": d.metadata.resource_version,
            "annotations": { ORIGINAL_STRATEGY_ANNOTATION: null },
        },
        "spec": { "strategy": original },
    }));
    api.patch(name, &PatchParams::default(), &patch)
        .await
        .map_err(api_err(format!(
            "cannot restore the strategy of Deployment {namespace}/{name}"
        )))?;
    Ok(true)
}

/// The strategy recorded on Deployment `name`, described, if [`switch_to_recreate`] switched it.
pub async fn recorded_strategy(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, MigrateError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = api.get_opt(name).await.map_err(api_err(format!(
        "cannot read Deployment {namespace}/{name}"
    )))?;
    Ok(d.as_ref().and_then(original_strategy).map(|text| {
        let strategy = serde_json::from_str(text).ok();
        describe_strategy(strategy.as_ref())
    }))
}
