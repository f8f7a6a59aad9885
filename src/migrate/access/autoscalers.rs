//! Autoscalers that would start a consumer's pods in the middle of a migration.
//!
//! A HorizontalPodAutoscaler leaves a target scaled to 0 alone (`ScalingDisabled`) until the
//! replicas are restored, unless its `minReplicas` is 0 (the `HPAScaleToZero` feature gate):
//! then it keeps scaling from zero on its metrics. KEDA does the same: a `ScaledObject`
//! activates its target from zero when its triggers fire, so pods could start while the claim
//! is deleted and recreated, and a `paused-replicas` annotation makes KEDA hold the target at
//! that count, undoing the scale-down or the restore. Only `autoscaling.keda.sh/paused: "true"`
//! freezes a ScaledObject's target as it is.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;

use super::list::list_all;
use crate::migrate::model::error::MigrateError;
use crate::migrate::model::state::Consumer;

const PAUSED: &str = "autoscaling.keda.sh/paused";
const PAUSED_REPLICAS: &str = "autoscaling.keda.sh/paused-replicas";

/// What the KEDA check found.
#[derive(Debug, Default)]
pub struct Scalers {
    /// Why the migration cannot start, one line per ScaledObject.
    pub blocking: Vec<String>,
    /// Worth saying, not worth refusing (paused ScaledObjects, an unreadable list).
    pub warnings: Vec<String>,
}

/// Checks the autoscalers of `namespace` that target one of `consumers`: HPAs that can scale
/// from zero, and KEDA ScaledObjects (when KEDA is installed).
pub async fn check(
    client: &Client,
    namespace: &str,
    consumers: &[Consumer],
) -> Result<Scalers, MigrateError> {
    let mut found = Scalers::default();
    if consumers.is_empty() {
        return Ok(found);
    }
    hpas(client, namespace, consumers, &mut found).await?;
    keda(client, namespace, consumers, &mut found).await?;
    Ok(found)
}

/// A list the user may not read is a warning: the migration itself does not need it.
fn forbidden(error: &MigrateError) -> bool {
    matches!(error, MigrateError::Api { error: kube::Error::Api(status), .. } if status.is_forbidden())
}

async fn hpas(
    client: &Client,
    namespace: &str,
    consumers: &[Consumer],
    found: &mut Scalers,
) -> Result<(), MigrateError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let hpas = match list_all(&api, "HorizontalPodAutoscalers").await {
        Ok(hpas) => hpas,
        Err(e) if forbidden(&e) => {
            found.warnings.push(format!(
                "cannot list HorizontalPodAutoscalers in {namespace} (forbidden); one with \
                 minReplicas: 0 targeting {} would start pods during the migration",
                names(consumers)
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for hpa in &hpas {
        let spec = &hpa.spec;
        if spec.min_replicas != Some(0) {
            continue;
        }
        let target = &spec.scale_target_ref;
        let group = group_of(target.api_version.as_deref());
        let Some(consumer) = consumers
            .iter()
            .find(|c| c.is(group, &target.kind, &target.name))
        else {
            continue;
        };
        let name = hpa.metadata.name.as_deref().unwrap_or_default();
        found.blocking.push(format!(
            "HorizontalPodAutoscaler {namespace}/{name} scales {consumer} with minReplicas: 0 \
             and would start its pods during the migration; set its minReplicas to 1 or delete \
             it for the migration"
        ));
    }
    Ok(())
}

/// Checks the KEDA ScaledObjects. Without KEDA installed (the resource does not exist) there
/// is nothing to check.
async fn keda(
    client: &Client,
    namespace: &str,
    consumers: &[Consumer],
    found: &mut Scalers,
) -> Result<(), MigrateError> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let objects = match list_all(&api, "KEDA ScaledObjects").await {
        Ok(objects) => objects,
        // KEDA is not installed. By code: for a resource it does not serve the API server
        // answers a plain "404 page not found", not a NotFound Status, and is_not_found() reads
        // the reason.
        Err(MigrateError::Api {
            error: kube::Error::Api(status),
            ..
        }) if status.code == 404 => return Ok(()),
        Err(e) if forbidden(&e) => {
            found.warnings.push(format!(
                "cannot list KEDA ScaledObjects in {namespace} (forbidden); if KEDA scales {}, \
                 pause it first (annotation {PAUSED}=true)",
                names(consumers)
            ));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for object in &objects {
        let name = object.metadata.name.as_deref().unwrap_or_default();
        let Some(consumer) = consumers.iter().find(|c| targets(&object.data, c)) else {
            continue;
        };
        let annotations = object.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        if let Some(replicas) = annotation(PAUSED_REPLICAS) {
            found.blocking.push(format!(
                "KEDA ScaledObject {namespace}/{name} holds {consumer} at {PAUSED_REPLICAS}={replicas} \
                 and would undo the scale-down or the restore; pause it with {PAUSED}=true instead \
                 (kubectl annotate scaledobject -n {namespace} {name} {PAUSED_REPLICAS}- {PAUSED}=true)"
            ));
        } else if annotation(PAUSED) == Some("true") {
            found.warnings.push(format!(
                "KEDA ScaledObject {namespace}/{name} (scales {consumer}) is paused; remove \
                 {PAUSED} after the migration to resume autoscaling"
            ));
        } else {
            found.blocking.push(format!(
                "KEDA ScaledObject {namespace}/{name} scales {consumer} and can start its pods \
                 during the migration; pause it first (kubectl annotate scaledobject -n \
                 {namespace} {name} {PAUSED}=true) and remove the annotation afterwards"
            ));
        }
    }
    Ok(())
}

/// Whether a ScaledObject's `spec.scaleTargetRef` is `consumer`. KEDA defaults the kind to
/// Deployment and the apiVersion to apps/v1.
fn targets(data: &Value, consumer: &Consumer) -> bool {
    let target = &data["spec"]["scaleTargetRef"];
    consumer.is(
        group_of(target["apiVersion"].as_str()),
        target["kind"].as_str().unwrap_or("Deployment"),
        target["name"].as_str().unwrap_or_default(),
    )
}

/// The API group of a target's apiVersion; both autoscalers default it to apps/v1.
fn group_of(api_version: Option<&str>) -> &str {
    match api_version.unwrap_or("apps/v1").split_once('/') {
        Some((group, _)) => group,
        None => "",
    }
}

fn names(consumers: &[Consumer]) -> String {
    consumers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
