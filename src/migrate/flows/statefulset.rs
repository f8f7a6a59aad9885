//! `migrate --statefulset NAMESPACE/NAME`: every claim of a StatefulSet's replicas (the claims
//! named TEMPLATE-STATEFULSET-ORDINAL) and its `volumeClaimTemplates`.
//!
//! The claims run as one lockstep group, as a fleet's: every claim records its
//! state, the StatefulSet is scaled to 0 once, every claim is swapped, then the StatefulSet is
//! recreated and scaled back once. `volumeClaimTemplates` is immutable, so the StatefulSet is
//! deleted with `propagationPolicy: Orphan` (claims, revisions and pods are kept) and created
//! again from the manifest recorded in every claim's migration state (written before anything
//! else, so a crash between the delete and the create loses nothing), with the templates'
//! access modes set to the target and `replicas: 0` (the scale-up step restores the count). The
//! new StatefulSet adopts the orphans by its selector. `--rollback` goes the same way back.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::{Api, Client};

use crate::migrate::access::autoscalers;
use crate::migrate::access::claims::locate;
use crate::migrate::access::events::History;
use crate::migrate::access::list::list_all;
use crate::migrate::access::statefulsets::read_record;
pub use crate::migrate::access::statefulsets::template_warning;
use crate::migrate::lockstep;
use crate::migrate::model::eligibility::{claims_refused, missing_claims, statefulset_blocker};
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::history;
use crate::migrate::model::plan::{
    Action, Entry, FleetEvent, FleetOptions, FleetPlan, MigrateOptions, Outcome, Plan, Progress,
    RunPlan,
};
pub use crate::migrate::model::state::StatefulSetRecord;
use crate::migrate::model::state::{Consumer, ConsumerKind, MigrationState, new_state};
use crate::migrate::model::steps::BOUND;
use crate::migrate::model::templates::template_names;
pub use crate::migrate::model::templates::{ordinal_of, templates_are};
use crate::migrate::model::workloads::WorkloadInfo;
use crate::migrate::planner::{in_place, prepare};
use crate::policy::{AccessMode, HasAccessModes, MigrationTarget};

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
        (None, Some(_)) => read_record(client, namespace, name).await?,
        (None, None) => {
            return Err(MigrateError::Refused(format!(
                "StatefulSet {namespace}/{name} not found, and no PersistentVolume records a migration of it"
            )));
        }
    };
    let sts = record.decode()?;
    if template_names(&sts).is_empty() {
        return Err(refused(
            namespace,
            name,
            "has no volumeClaimTemplates; migrate its claims one by one",
        ));
    }
    if recorded.is_empty()
        && let info = WorkloadInfo::from(&sts)
        && let Some(facts) = &info.statefulset
        && let Some(why) =
            statefulset_blocker(namespace, name, facts, info.owner.as_ref(), Some(target))
    {
        return Err(MigrateError::Refused(why));
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
                    if state.completed > BOUND {
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
        return Err(MigrateError::Refused(claims_refused(
            namespace, name, &refusals,
        )));
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
    let located = locate(client, namespace, claim).await?;
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
    let located = locate(client, namespace, claim).await?;
    let pvc = located
        .claim
        .as_ref()
        .ok_or_else(|| MigrateError::Refused(format!("claim {namespace}/{claim} not found")))?;
    let consumers = vec![consumer.clone()];
    let mut state = new_state(
        pvc,
        &located.volume,
        target,
        consumers,
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    state.statefulset = Some(record.clone());
    let volume = located.volume.metadata.name.clone().unwrap_or_default();
    let status = in_place(client, &volume, &state).await?;
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
        return Err(MigrateError::Refused(missing_claims(
            namespace, name, &missing,
        )));
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
    let fleet = FleetOptions {
        concurrency: 1,
        continue_on_error: false,
    };
    lockstep::execute(client, plan.fleet, opts, &fleet, report, after_step).await
}

/// Records in the Events of StatefulSet `namespace/name` that a run was refused, and why.
pub async fn record_refusal(
    client: &Client,
    namespace: &str,
    name: &str,
    rollback: bool,
    why: &str,
    progress: &mut dyn FnMut(Progress),
) {
    let note = history::refused(rollback, why);
    History::new(client)
        .record_on_statefulset(&note, namespace, name, progress)
        .await;
}
