//! Layer 4 of `migrate`, planning one claim: where a run of `namespace/claim` starts, judged on
//! the live objects through the same [`judge`] `scan` calls, and where each step stands.
//! Read-only: the `--dry-run` plan is what it returns, and what runs.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::Api;

use crate::migrate::access::claims::{Located, locate};
use crate::migrate::access::{autoscalers, consumers};
use crate::migrate::model::eligibility::{self, Allowances, StrategySwitch, Verdict, judge};
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::plan::{MigrateOptions, Plan, Progress, RunPlan};
use crate::migrate::model::state::{ConsumerKind, MigrationState, new_state};
use crate::migrate::model::steps::{StepStatus, statuses};
use crate::policy::{MIGRATED_FROM_ANNOTATION, MigrationTarget};

/// Checks a claim that has no migration under way (through [`judge`], as `scan` does) and
/// builds the state to record. `Ok(None)`: it is already migrated.
pub async fn preflight(
    client: &Client,
    located: &Located,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<MigrationState>, MigrateError> {
    let pv = &located.volume;
    let Some(pvc) = &located.claim else {
        return Err(MigrateError::Refused("the claim does not exist".to_owned()));
    };
    let namespace = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let found = consumers::find(client, &namespace, &name).await?;
    let switches = match judge(
        &pvc.into(),
        Some(&pv.into()),
        &found.workloads,
        allowances(opts),
    ) {
        Verdict::AlreadyMigrated => return Ok(None),
        Verdict::Refused(r) => return Err(MigrateError::Refused(r.message)),
        Verdict::Accepted {
            warnings, switches, ..
        } => {
            for w in warnings {
                progress(Progress::Warning(w));
            }
            switches
        }
    };
    check_autoscalers(client, &namespace, &name, &found, progress).await?;
    Ok(Some(new_state(
        pvc,
        pv,
        MigrationTarget::ReadWriteOncePod,
        found.scalable,
        found.bare_pods,
        found.cronjobs,
        switches,
    )))
}

/// What the command line allows.
fn allowances(opts: &MigrateOptions) -> Allowances {
    Allowances {
        allow_non_csi: opts.allow_non_csi,
        allow_delete_pods: opts.allow_delete_pods,
        switch_to_recreate: opts.switch_to_recreate,
    }
}

/// Autoscalers that would scale a consumer from zero during the run (both directions).
async fn check_autoscalers(
    client: &Client,
    namespace: &str,
    name: &str,
    found: &consumers::Found,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), MigrateError> {
    let scalers = autoscalers::check(client, namespace, &found.scalable).await?;
    if !scalers.blocking.is_empty() {
        return Err(MigrateError::Refused(format!(
            "claim {namespace}/{name}: {}",
            scalers.blocking.join("; ")
        )));
    }
    for warning in scalers.warnings {
        progress(Progress::Warning(warning));
    }
    Ok(())
}

/// Checks a finished migration (`--rollback` with no state recorded) and builds the state of
/// its rollback: only claims and volumes that carry the marker `migrate` leaves.
async fn rollback_preflight(
    client: &Client,
    located: &Located,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
    namespace: &str,
    claim: &str,
) -> Result<MigrationState, MigrateError> {
    let pv = &located.volume;
    let Some(pvc) = &located.claim else {
        return Err(MigrateError::Refused(format!(
            "claim {namespace}/{claim} not found; nothing to roll back"
        )));
    };
    eligibility::judge_rollback(pvc, pv, MIGRATED_FROM_ANNOTATION)
        .map_err(MigrateError::Refused)?;
    let found = consumers::find(client, namespace, claim).await?;
    let mut warnings = Vec::new();
    let target = format!("{namespace}/{claim}");
    eligibility::stoppable(&target, &found.workloads, allowances(opts), &mut warnings)
        .map_err(MigrateError::Refused)?;
    for w in warnings {
        progress(Progress::Warning(w));
    }
    check_autoscalers(client, namespace, claim, &found, progress).await?;
    // Deployments `--switch-to-recreate` switched get their recorded strategy back.
    let mut switches = Vec::new();
    for c in &found.scalable {
        if c.kind != ConsumerKind::Deployment {
            continue;
        }
        if let Some(from) = consumers::recorded_strategy(client, namespace, &c.name).await? {
            switches.push(StrategySwitch {
                deployment: c.name.clone(),
                from,
            });
        }
    }
    Ok(new_state(
        pvc,
        pv,
        MigrationTarget::ReadWriteOnce,
        found.scalable,
        found.bare_pods,
        found.cronjobs,
        switches,
    ))
}

/// Where a run of `namespace/claim` starts: the volume and the state to work towards — the
/// recorded one (switched to [ReadWriteOnce] for `--rollback`), a fresh one from [`preflight`],
/// or, for `--rollback` of a finished migration, the state of its rollback. Read-only: used for
/// the `--dry-run` plan and by [`run`].
pub async fn prepare(
    client: &Client,
    namespace: &str,
    claim: &str,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Plan, MigrateError> {
    let located = locate(client, namespace, claim).await?;
    let volume = located.volume.metadata.name.clone().unwrap_or_default();
    let state = match (located.state.clone(), opts.rollback) {
        (Some(mut s), true) => {
            if !s.is_rollback() {
                s.target = MigrationTarget::ReadWriteOnce;
                s.completed = 0;
                // Only the Deployments the forward run switched already have a strategy to
                // restore (the annotation on each is the record).
                let mut switched = Vec::new();
                for sw in std::mem::take(&mut s.switches) {
                    if consumers::recorded_strategy(client, namespace, &sw.deployment)
                        .await?
                        .is_some()
                    {
                        switched.push(sw);
                    }
                }
                s.switches = switched;
            }
            s
        }
        (Some(s), false) if s.is_rollback() => {
            return Err(MigrateError::Refused(format!(
                "a rollback of {namespace}/{claim} is under way (step {} of {}); finish it with --rollback first",
                s.completed,
                s.steps().len()
            )));
        }
        (Some(s), false) => s,
        (None, true) => {
            rollback_preflight(client, &located, opts, progress, namespace, claim).await?
        }
        (None, false) => match preflight(client, &located, opts, progress).await? {
            Some(state) => state,
            None => return Ok(Plan::AlreadyMigrated { volume }),
        },
    };
    let status = in_place(client, &volume, &state).await?;
    Ok(Plan::Run(Box::new(RunPlan {
        volume,
        state,
        status,
    })))
}

/// The status of every step of `state` on the live objects.
pub async fn in_place(
    client: &Client,
    volume: &str,
    state: &MigrationState,
) -> Result<Vec<StepStatus>, MigrateError> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &state.namespace);
    let pv = volumes
        .get(volume)
        .await
        .map_err(api_err(format!("cannot read PersistentVolume {volume}")))?;
    let claim = claims.get_opt(&state.claim).await.map_err(api_err(format!(
        "cannot read claim {}/{}",
        state.namespace, state.claim
    )))?;
    let mut replicas = Vec::new();
    for c in &state.consumers {
        replicas.push(consumers::replicas_of(client, &state.namespace, c).await?);
    }
    Ok(statuses(state, volume, &pv, claim.as_ref(), &replicas))
}
