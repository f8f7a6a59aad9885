//! StatefulSets: read one as stored (for the record), orphan-delete it and create it again from
//! the record, and the warning for a claim of one migrated on its own.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, PostParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client};

use super::list::list_all;
use super::waits::await_object;
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::plan::MigrateOptions;
use crate::migrate::model::state::{MigrationState, StatefulSetRecord};
use crate::migrate::model::templates::{ordinal_of, templates_are};
use crate::policy::{AccessMode, MigrationTarget};

/// StatefulSets, untyped (as stored).
fn raw_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<StatefulSet>(&()),
    )
}

/// The record of StatefulSet `namespace/name` as the server stores it.
pub async fn read_record(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<StatefulSetRecord, MigrateError> {
    let live = raw_api(client, namespace)
        .get(name)
        .await
        .map_err(api_err(format!(
            "cannot read StatefulSet {namespace}/{name}"
        )))?;
    StatefulSetRecord::of_stored(namespace, name, live)
}

/// Whether `claim` of `namespace` is a claim of a StatefulSet's template and that StatefulSet's
/// templates still say `[ReadWriteOnce]`: then the warning for a claim migrated on its own.
pub async fn template_warning(
    client: &Client,
    state: &MigrationState,
) -> Result<Option<String>, MigrateError> {
    if state.is_rollback() || state.statefulset.is_some() {
        return Ok(None);
    }
    let ns = &state.namespace;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    for sts in list_all(&api, "statefulsets").await? {
        if ordinal_of(&sts, &state.claim).is_none()
            || templates_are(&sts, AccessMode::ReadWriteOncePod)
        {
            continue;
        }
        let name = sts.metadata.name.unwrap_or_default();
        return Ok(Some(format!(
            "claim {ns}/{} belongs to StatefulSet {name}, whose volumeClaimTemplates still say [ReadWriteOnce]: \
             claims of replicas created later will be [ReadWriteOnce]; to migrate all its claims and the \
             template, run: rwop-guard migrate --statefulset {ns}/{name}",
            state.claim
        )));
    }
    Ok(None)
}

/// Step DeleteStatefulSet: delete the StatefulSet unless it already has `[target]` templates
/// (then it is the recreated one), with `propagationPolicy: Orphan`, and wait until it is gone.
pub async fn delete(
    client: &Client,
    namespace: &str,
    record: &StatefulSetRecord,
    target: MigrationTarget,
    opts: &MigrateOptions,
) -> Result<Option<String>, MigrateError> {
    let name = &record.name;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let read = || async {
        api.get_opt(name).await.map_err(api_err(format!(
            "cannot read StatefulSet {namespace}/{name}"
        )))
    };
    let Some(live) = read().await? else {
        return Ok(Some("the StatefulSet is already deleted".to_owned()));
    };
    if live.metadata.deletion_timestamp.is_none() {
        if templates_are(&live, target.mode()) {
            return Ok(Some(format!(
                "the StatefulSet already has [{target}] volumeClaimTemplates"
            )));
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            preconditions: Some(Preconditions {
                uid: live.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => {
                return Err(api_err(format!(
                    "cannot delete StatefulSet {namespace}/{name}"
                ))(e));
            }
        }
    }
    let uid = live.metadata.uid;
    let what = format!("StatefulSet {namespace}/{name} to be gone (its dependents orphaned)");
    let gone = kube::runtime::wait::conditions::is_deleted(uid.as_deref().unwrap_or_default());
    await_object(&api, name, gone, opts, &what).await?;
    Ok(None)
}

/// Step CreateStatefulSet: create the recorded StatefulSet with `[target]` templates at 0
/// replicas, unless it exists with them.
pub async fn create(
    client: &Client,
    namespace: &str,
    record: &StatefulSetRecord,
    target: MigrationTarget,
) -> Result<Option<String>, MigrateError> {
    let name = &record.name;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let existing = api.get_opt(name).await.map_err(api_err(format!(
        "cannot read StatefulSet {namespace}/{name}"
    )))?;
    let (sts, skipped) = match existing {
        Some(s) => (
            s,
            Some(format!(
                "the StatefulSet exists with [{target}] volumeClaimTemplates"
            )),
        ),
        None => match raw_api(client, namespace)
            .create(&PostParams::default(), &record.to_create(target)?)
            .await
        {
            // Created (or by a run that crashed before it could record so): read it typed.
            Ok(_) => (
                api.get(name).await.map_err(api_err(format!(
                    "cannot read StatefulSet {namespace}/{name}"
                )))?,
                None,
            ),
            Err(kube::Error::Api(s)) if s.is_already_exists() => (
                api.get(name).await.map_err(api_err(format!(
                    "cannot read StatefulSet {namespace}/{name}"
                )))?,
                None,
            ),
            Err(e) => {
                return Err(api_err(format!(
                    "cannot create StatefulSet {namespace}/{name}"
                ))(e));
            }
        },
    };
    // Whatever exists where the recreated one should be must have [target] templates.
    if !templates_are(&sts, target.mode()) {
        return Err(MigrateError::Refused(format!(
            "StatefulSet {namespace}/{name} exists with volumeClaimTemplates other than [{target}]: it was \
             created by someone else; delete it with --cascade=orphan and run the same command again"
        )));
    }
    Ok(skipped)
}
