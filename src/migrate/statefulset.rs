//! `migrate --statefulset NAMESPACE/NAME`: every claim of a StatefulSet's replicas (the claims
//! named TEMPLATE-STATEFULSET-ORDINAL) and its `volumeClaimTemplates`.
//!
//! The claims run as one lockstep group of the fleet ([`super::fleet`]): every claim records its
//! state, the StatefulSet is scaled to 0 once, every claim is swapped, then the StatefulSet is
//! recreated and scaled back once. `volumeClaimTemplates` is immutable, so the StatefulSet is
//! deleted with `propagationPolicy: Orphan` (claims, revisions and pods are kept) and created
//! again from the manifest recorded in every claim's migration state (written before anything
//! else, so a crash between the delete and the create loses nothing), with the templates'
//! access modes set to the target and `replicas: 0` (the scale-up step restores the count). The
//! new StatefulSet adopts the orphans by its selector. `--rollback` goes the same way back.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, PostParams, Preconditions, PropagationPolicy,
};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::consumers::{Consumer, ConsumerKind};
use super::fleet::{Action, Entry, FleetEvent, FleetPlan, Outcome};
use super::{
    MigrateError, MigrateOptions, MigrationState, Plan, Progress, RunPlan, api_err, autoscalers,
    consumers, list_all, prepare,
};
use crate::policy::{AccessMode, HasAccessModes, MigrationTarget};

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
    /// The StatefulSet as the server stores it (read untyped: a typed read would add
    /// `apiVersion`/`kind` to every template), without what the server sets.
    async fn read(client: &Client, namespace: &str, name: &str) -> Result<Self, MigrateError> {
        let what = format!("StatefulSet {namespace}/{name}");
        let live = raw_api(client, namespace)
            .get(name)
            .await
            .map_err(api_err(format!("cannot read {what}")))?;
        let mut manifest = serde_json::to_value(live)
            .map_err(|e| MigrateError::Refused(format!("cannot record {what}: {e}")))?;
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

    fn decode(&self) -> Result<StatefulSet, MigrateError> {
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

/// StatefulSets, untyped (as stored).
fn raw_api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<StatefulSet>(&()),
    )
}

/// Whether every `volumeClaimTemplates` entry asks for exactly `[mode]` (none: false).
pub fn templates_are(sts: &StatefulSet, mode: AccessMode) -> bool {
    let templates = sts.spec.volume_claim_templates.as_ref();
    templates.is_some_and(|t| !t.is_empty() && t.iter().all(|t| t.access_modes().is_only(mode)))
}

/// The template names of `sts`.
fn template_names(sts: &StatefulSet) -> Vec<String> {
    let templates = sts.spec.volume_claim_templates.as_ref();
    templates
        .into_iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .collect()
}

/// The ordinal of `claim` if it is one of the claims `sts` makes (TEMPLATE-NAME-ORDINAL).
pub fn ordinal_of(sts: &StatefulSet, claim: &str) -> Option<u32> {
    let name = sts.metadata.name.as_deref()?;
    template_names(sts).iter().find_map(|t| {
        let rest = claim.strip_prefix(t.as_str())?.strip_prefix('-')?;
        let digits = rest.strip_prefix(name)?.strip_prefix('-')?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    })
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

/// What `migrate --statefulset` will do.
#[derive(Clone, Debug)]
pub enum StatefulSetPlan {
    /// Every claim and the templates are already the target: nothing to do.
    AlreadyDone {
        claims: Vec<String>,
    },
    Run(Box<Run>),
}

#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub target: MigrationTarget,
    /// Replicas restored at the end.
    pub replicas: i32,
    pub record: StatefulSetRecord,
    /// Every claim (one group; the claims already done are not [`Action::Run`]).
    pub fleet: FleetPlan,
}

fn refused(namespace: &str, name: &str, why: impl std::fmt::Display) -> MigrateError {
    MigrateError::Refused(format!("StatefulSet {namespace}/{name}: {why}"))
}

/// Plans the migration (or `--rollback`) of StatefulSet `namespace/name` (read-only).
pub async fn plan(
    client: &Client,
    namespace: &str,
    name: &str,
    opts: &MigrateOptions,
    report: &dyn Fn(FleetEvent),
) -> Result<StatefulSetPlan, MigrateError> {
    let target = if opts.rollback {
        MigrationTarget::ReadWriteOnce
    } else {
        MigrationTarget::ReadWriteOncePod
    };
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let live = api.get_opt(name).await.map_err(api_err(format!(
        "cannot read StatefulSet {namespace}/{name}"
    )))?;
    // A run under way: its claims and the manifest it recorded (the StatefulSet may be gone).
    let volumes = Api::all(client.clone());
    let mut recorded: Vec<MigrationState> = Vec::new();
    for pv in list_all(&volumes, "persistentvolumes").await? {
        if let Some(state) = MigrationState::read(&pv)?
            && state.namespace == namespace
            && state.statefulset.as_ref().is_some_and(|s| s.name == name)
        {
            recorded.push(state);
        }
    }
    let record = match (recorded.iter().find_map(|s| s.statefulset.clone()), &live) {
        (Some(r), _) => r,
        (None, Some(_)) => StatefulSetRecord::read(client, namespace, name).await?,
        (None, None) => {
            return Err(MigrateError::Refused(format!(
                "StatefulSet {namespace}/{name} not found, and no PersistentVolume records a migration of it"
            )));
        }
    };
    let sts = record.decode()?;
    let spec = &sts.spec;
    if template_names(&sts).is_empty() {
        return Err(refused(
            namespace,
            name,
            "has no volumeClaimTemplates; migrate its claims one by one",
        ));
    }
    if recorded.is_empty() {
        if let Some(owner) = sts
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        {
            return Err(refused(
                namespace,
                name,
                format!(
                    "is managed by {} {}, which would fight a recreated StatefulSet; migrate through its operator",
                    owner.kind, owner.name
                ),
            ));
        }
        let when_scaled = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_scaled.as_deref());
        if when_scaled == Some("Delete") {
            return Err(refused(
                namespace,
                name,
                "has persistentVolumeClaimRetentionPolicy.whenScaled: Delete, so scaling it to 0 would delete its claims; set it to Retain first",
            ));
        }
        let source = target.source();
        if !templates_are(&sts, source) && !templates_are(&sts, target.mode()) {
            return Err(refused(
                namespace,
                name,
                format!("its volumeClaimTemplates are not all [{source}]"),
            ));
        }
    }
    // The replicas to restore: recorded by a run under way (the StatefulSet is at 0 or gone),
    // else the live count.
    let replicas = recorded
        .iter()
        .flat_map(|s| s.consumers.iter())
        .find(|c| c.kind == ConsumerKind::StatefulSet && c.name == name)
        .map(|c| c.replicas)
        .or(live.as_ref().and_then(|s| s.spec.replicas))
        .unwrap_or(1);
    let consumer = Consumer {
        kind: ConsumerKind::StatefulSet,
        name: name.to_owned(),
        replicas,
    };
    if live.is_some() && recorded.is_empty() {
        let scalers =
            autoscalers::check(client, namespace, std::slice::from_ref(&consumer)).await?;
        if !scalers.blocking.is_empty() {
            return Err(refused(namespace, name, scalers.blocking.join("; ")));
        }
        for w in scalers.warnings {
            report(FleetEvent::Step {
                claim: name.to_owned(),
                progress: Progress::Warning(w),
            });
        }
    }
    let claims = claims_of(client, namespace, &sts, replicas, &recorded).await?;
    let mut entries = Vec::new();
    let mut refusals = Vec::new();
    let entry = |claim: &str, action| Entry {
        namespace: namespace.to_owned(),
        claim: claim.to_owned(),
        action,
    };
    for claim in &claims {
        if opts.rollback
            && let Some(volume) = never_migrated(client, namespace, claim).await?
        {
            let volume = Some(volume);
            entries.push(entry(claim, Action::NotMigrated { volume }));
            continue;
        }
        let mut progress = |p| {
            report(FleetEvent::Step {
                claim: format!("{namespace}/{claim}"),
                progress: p,
            })
        };
        match prepare(client, namespace, claim, opts, &mut progress).await {
            Ok(Plan::Run(mut run)) => {
                let state = &mut run.state;
                if state.statefulset.is_none() {
                    // A claim whose own migration is past the swap cannot join (the steps
                    // would shift): it has to be finished on its own first.
                    if state.completed > super::steps::BOUND {
                        refusals.push(format!(
                            "claim {claim}: its own migration is under way (step {}); finish it with rwop-guard migrate {namespace}/{claim} first",
                            state.completed
                        ));
                        continue;
                    }
                    state.statefulset = Some(record.clone());
                }
                if !state
                    .consumers
                    .iter()
                    .any(|c| c.kind == ConsumerKind::StatefulSet && c.name == name)
                {
                    state.consumers.push(consumer.clone());
                }
                for c in state
                    .consumers
                    .iter_mut()
                    .filter(|c| c.kind == ConsumerKind::StatefulSet && c.name == name)
                {
                    c.replicas = replicas;
                }
                entries.push(entry(claim, Action::Run(run)));
            }
            Ok(Plan::AlreadyMigrated { volume }) => {
                entries.push(entry(claim, Action::AlreadyMigrated { volume }));
            }
            Err(e) => refusals.push(e.to_string()),
        }
    }
    if !refusals.is_empty() {
        return Err(refused(
            namespace,
            name,
            format!("cannot be migrated: {}", refusals.join("; ")),
        ));
    }
    let template_done = live
        .as_ref()
        .is_some_and(|s| templates_are(s, target.mode()));
    if !entries.iter().any(|e| matches!(e.action, Action::Run(_))) {
        if template_done {
            return Ok(StatefulSetPlan::AlreadyDone { claims });
        }
        // Every claim is done, the templates are not: the first claim carries the recreate.
        let first = entries
            .first_mut()
            .ok_or_else(|| refused(namespace, name, "has no claims"))?;
        let run =
            claim_only_state(client, namespace, &first.claim, target, &record, &consumer).await?;
        first.action = Action::Run(Box::new(run));
    }
    let groups = vec![
        entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| matches!(e.action, Action::Run(_)).then_some(i))
            .collect(),
    ];
    Ok(StatefulSetPlan::Run(Box::new(Run {
        name: name.to_owned(),
        target,
        replicas,
        record,
        fleet: FleetPlan {
            rollback: opts.rollback,
            entries,
            groups,
        },
    })))
}

/// For a rollback: the volume of a claim no migration touched (nothing recorded, claim and
/// volume [ReadWriteOnce]), which is already where the rollback goes.
async fn never_migrated(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<Option<String>, MigrateError> {
    let located = super::locate(client, namespace, claim).await?;
    let rwo = AccessMode::ReadWriteOnce;
    let untouched = located.state.is_none()
        && located.volume.access_modes().is_only(rwo)
        && located
            .claim
            .as_ref()
            .is_some_and(|c| c.access_modes().is_only(rwo));
    Ok(untouched.then(|| located.volume.metadata.name.clone().unwrap_or_default()))
}

/// The state of a claim already at the target that carries only the StatefulSet's recreate:
/// every claim step finds its work done and is skipped.
async fn claim_only_state(
    client: &Client,
    namespace: &str,
    claim: &str,
    target: MigrationTarget,
    record: &StatefulSetRecord,
    consumer: &Consumer,
) -> Result<RunPlan, MigrateError> {
    let located = super::locate(client, namespace, claim).await?;
    let pvc = located
        .claim
        .as_ref()
        .ok_or_else(|| MigrateError::Refused(format!("claim {namespace}/{claim} not found")))?;
    let found = consumers::Found {
        scalable: vec![consumer.clone()],
        workloads: Vec::new(),
        bare_pods: Vec::new(),
        unsupported: Vec::new(),
    };
    let mut state = super::new_state(pvc, &located.volume, target, found, Vec::new());
    state.statefulset = Some(record.clone());
    let volume = located.volume.metadata.name.clone().unwrap_or_default();
    let status = super::steps::in_place(client, &volume, &state).await?;
    Ok(RunPlan {
        volume,
        state,
        status,
    })
}

/// The claims of `sts`: those of the ordinals it runs (each must exist), those of other ordinals
/// that exist, and those a run under way recorded (deleted mid-migration).
async fn claims_of(
    client: &Client,
    namespace: &str,
    sts: &StatefulSet,
    replicas: i32,
    recorded: &[MigrationState],
) -> Result<Vec<String>, MigrateError> {
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    let api = Api::namespaced(client.clone(), namespace);
    let existing: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        list_all(&api, "persistentvolumeclaims").await?;
    let mut claims: std::collections::BTreeSet<(u32, String)> = existing
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .chain(recorded.iter().map(|s| s.claim.clone()))
        .filter_map(|c| ordinal_of(sts, &c).map(|o| (o, c)))
        .collect();
    let start = sts
        .spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0);
    let mut missing = Vec::new();
    for ordinal in 0..replicas.max(0) {
        let ordinal = u32::try_from(start + ordinal).unwrap_or_default();
        for t in template_names(sts) {
            let claim = format!("{t}-{name}-{ordinal}");
            if !claims.iter().any(|(_, c)| *c == claim) {
                missing.push(claim.clone());
                claims.insert((ordinal, claim));
            }
        }
    }
    if !missing.is_empty() {
        return Err(refused(
            namespace,
            name,
            format!(
                "claims {} of its replicas do not exist; only Bound claims can be migrated",
                missing.join(", ")
            ),
        ));
    }
    Ok(claims.into_iter().map(|(_, c)| c).collect())
}

/// Runs `plan` (one lockstep group). `after_step(claim, done)` as for the fleet.
pub async fn execute(
    client: &Client,
    plan: Run,
    opts: &MigrateOptions,
    report: &dyn Fn(FleetEvent),
    after_step: &dyn Fn(&str, usize) -> bool,
) -> Vec<(String, Outcome)> {
    let fleet = super::fleet::FleetOptions {
        concurrency: 1,
        continue_on_error: false,
    };
    super::fleet::execute(client, plan.fleet, opts, &fleet, report, after_step).await
}

/// Step DeleteStatefulSet: delete the StatefulSet unless it already has `[target]` templates
/// (then it is the recreated one), with `propagationPolicy: Orphan`, and wait until it is gone.
pub(super) async fn delete(
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
    super::steps::await_object(&api, name, gone, opts, &what).await?;
    Ok(None)
}

/// Step CreateStatefulSet: create the recorded StatefulSet with `[target]` templates at 0
/// replicas, unless it exists with them.
pub(super) async fn create(
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
