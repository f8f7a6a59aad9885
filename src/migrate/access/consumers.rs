//! Who uses a claim, and the calls that scale them: the controllers of the pods that mount it
//! and the Deployments whose template mounts it, scaled through `/scale`; the strategy switch
//! of `--switch-to-recreate`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

use crate::migrate::model::eligibility::Workload;
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::rollout::describe_strategy;
use crate::migrate::model::state::{Consumer, ConsumerKind, ORIGINAL_STRATEGY_ANNOTATION};
use crate::migrate::model::users::ClaimUsers;
use crate::migrate::model::workloads::WorkloadKind;
use crate::scan::collect_workloads;

pub struct Found {
    pub scalable: Vec<Consumer>,
    /// Every user of the claim, as the judgement reads them.
    pub workloads: Vec<Workload>,
    /// Pods with no controller.
    pub bare_pods: Vec<String>,
    /// CronJobs that use the claim and are not suspended: suspended for the run.
    pub cronjobs: Vec<String>,
}

/// Who uses `claim`: every workload of the namespace whose pod template mounts it and the
/// controllers of the pods that mount it (the judgement's users, found as `scan` finds them),
/// and of them what a run stops: Deployments, StatefulSets and ReplicaSets at their live replica
/// counts, bare pods, and CronJobs to suspend.
pub async fn find(client: &Client, namespace: &str, claim: &str) -> Result<Found, MigrateError> {
    let listed = collect_workloads(client, Some(namespace), &mut |_| {})
        .await
        .map_err(|e| MigrateError::Api {
            what: format!("cannot list {}", e.resource),
            error: e.error,
        })?;
    let users = ClaimUsers::index(&listed, [(namespace, claim)]);
    let workloads = users.of(namespace, claim).to_vec();
    let mut scalable = BTreeSet::new();
    let mut bare_pods = Vec::new();
    let mut cronjobs = Vec::new();
    for w in &workloads {
        let kind = match w.kind {
            WorkloadKind::Deployment => ConsumerKind::Deployment,
            WorkloadKind::StatefulSet => ConsumerKind::StatefulSet,
            WorkloadKind::ReplicaSet => ConsumerKind::ReplicaSet,
            WorkloadKind::Pod => {
                bare_pods.push(w.name.clone());
                continue;
            }
            WorkloadKind::CronJob => {
                let suspended = listed
                    .workloads
                    .iter()
                    .any(|l| l.kind == WorkloadKind::CronJob && l.name == w.name && l.suspended);
                if !suspended {
                    cronjobs.push(w.name.clone());
                }
                continue;
            }
            // Jobs run to their end (the scale-down waits for their pods); the judgement
            // refuses the others.
            _ => continue,
        };
        let replicas = get_replicas(client, namespace, kind, &w.name).await?;
        scalable.insert(Consumer {
            kind,
            name: w.name.clone(),
            replicas,
        });
    }
    Ok(Found {
        scalable: scalable.into_iter().collect(),
        workloads,
        bare_pods,
        cronjobs,
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

/// Sets CronJob `name`'s `spec.suspend` (a merge patch). Returns whether it changed anything.
pub async fn suspend_cronjob(
    client: &Client,
    namespace: &str,
    name: &str,
    suspend: bool,
) -> Result<bool, MigrateError> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let Some(c) = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("cannot read CronJob {namespace}/{name}")))?
    else {
        return Ok(false);
    };
    if c.spec.suspend.unwrap_or(false) == suspend {
        return Ok(false);
    }
    let patch = Patch::Merge(serde_json::json!({ "spec": { "suspend": suspend } }));
    api.patch(name, &PatchParams::default(), &patch)
        .await
        .map_err(api_err(format!(
            "cannot set spec.suspend: {suspend} on CronJob {namespace}/{name}"
        )))?;
    Ok(true)
}
