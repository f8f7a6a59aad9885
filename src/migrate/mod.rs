//! `rwop-guard migrate`: the upstream task "Change the Access Mode of a PersistentVolume to
//! ReadWriteOncePod" as an explicit, resumable state machine.
//!
//! The state lives on the PersistentVolume itself (annotation [`MIGRATION_ANNOTATION`]): what the
//! claim looked like, the original reclaim policy, the consumers and their replica counts, the
//! target mode and how many steps are done. Every step is idempotent and checks the live state
//! before acting, so a run interrupted anywhere (Ctrl-C, crash, lost connection) is finished by
//! running again, or undone with `--rollback` (the same steps with [ReadWriteOnce] as target).
//!
//! Safety invariants: the PersistentVolume is never deleted; its reclaim policy is `Retain` before
//! its claim is deleted and is only restored once a claim is bound to it again.

mod autoscalers;
mod consumers;
pub mod eligibility;
pub mod fleet;
pub mod statefulset;
mod steps;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use consumers::{Consumer, ConsumerKind, ORIGINAL_STRATEGY_ANNOTATION};
pub use eligibility::{
    Allowances, ClaimInfo, StrategySwitch, Verdict, VolumeInfo, Workload, judge,
};
pub use steps::{STATEFULSET_STEPS, STEPS, Step, StepStatus};

use crate::policy::{
    AccessMode, MIGRATED_FROM_ANNOTATION, MIGRATION_ANNOTATION, MigrationTarget, OPT_OUT_ANNOTATION,
};

/// What is recorded on the PersistentVolume while a migration or rollback is under way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationState {
    pub version: u32,
    pub namespace: String,
    pub claim: String,
    /// `ReadWriteOncePod` while migrating, `ReadWriteOnce` while rolling back.
    pub target: MigrationTarget,
    /// The reclaim policy to restore at the end.
    pub reclaim_policy: String,
    /// The claim as it will be recreated (metadata and spec only, no status, no uid).
    pub claim_manifest: Value,
    pub consumers: Vec<Consumer>,
    /// Bare pods deleted to release the claim (they are not recreated).
    #[serde(default)]
    pub deleted_pods: Vec<String>,
    /// Deployments switched to `Recreate` (`--switch-to-recreate`) before the scale-down; when
    /// rolling back, those whose recorded strategy is restored before the scale-up.
    #[serde(default)]
    pub switches: Vec<StrategySwitch>,
    /// Migrated with its StatefulSet (`migrate --statefulset`): the StatefulSet to recreate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<statefulset::StatefulSetRecord>,
    /// Steps of the current direction already done.
    pub completed: usize,
}

impl MigrationState {
    /// The steps of this migration: [`STEPS`], or [`STATEFULSET_STEPS`] with a StatefulSet.
    pub fn steps(&self) -> &'static [Step] {
        if self.statefulset.is_some() {
            &STATEFULSET_STEPS
        } else {
            &STEPS
        }
    }

    pub fn is_rollback(&self) -> bool {
        self.target == MigrationTarget::ReadWriteOnce
    }

    fn read(pv: &PersistentVolume) -> Result<Option<MigrationState>, MigrateError> {
        let Some(text) = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIGRATION_ANNOTATION))
        else {
            return Ok(None);
        };
        serde_json::from_str(text).map(Some).map_err(|e| {
            MigrateError::Refused(format!(
                "PersistentVolume {:?} carries an unreadable {MIGRATION_ANNOTATION} annotation ({e}); \
                 inspect it and remove it by hand if it is stale",
                pv.metadata.name.as_deref().unwrap_or("")
            ))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {error}")]
    /// The cause is in the message, so it is not also a `source()`.
    Api { what: String, error: kube::Error },
    #[error("{what}: {error}")]
    /// A watch that a wait relies on failed (list or watch refused, or the stream broke).
    Watch {
        what: String,
        error: kube::runtime::watcher::Error,
    },
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error(
        "interrupted after step {completed}; run the same command again to resume, or with --rollback to undo"
    )]
    Interrupted { completed: usize },
}

/// Every object of `api` (paginated), as `scan` lists them.
pub(crate) async fn list_all<K>(
    api: &Api<K>,
    resource: &'static str,
) -> Result<Vec<K>, MigrateError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    crate::scan::list_all(api, resource, &mut |_| {})
        .await
        .map_err(|e| MigrateError::Api {
            what: format!("cannot list {resource}"),
            error: e.error,
        })
}

pub(crate) fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> MigrateError {
    let what = what.into();
    move |error| MigrateError::Api { what, error }
}

/// Knobs of a run.
pub struct MigrateOptions {
    pub rollback: bool,
    /// Limit for each wait (pods gone, claim gone, claim bound).
    pub timeout: Duration,
    /// Continue with a volume that is not CSI (ReadWriteOncePod needs CSI).
    pub allow_non_csi: bool,
    /// Delete pods that mount the claim without a controller (they are not recreated).
    pub allow_delete_pods: bool,
    /// Switch Deployments whose rollouts would surge to `Recreate` (else they are refused).
    pub switch_to_recreate: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            rollback: false,
            timeout: Duration::from_secs(300),
            allow_non_csi: false,
            allow_delete_pods: false,
            switch_to_recreate: false,
        }
    }
}

/// What a run reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Warning(String),
    Started {
        step: Step,
        index: usize,
        total: usize,
        what: String,
    },
    Done {
        step: Step,
        elapsed: Duration,
    },
    Skipped {
        step: Step,
        why: String,
    },
}

/// Where the migration stands, found from the claim's name.
pub struct Located {
    pub volume: PersistentVolume,
    pub claim: Option<PersistentVolumeClaim>,
    pub state: Option<MigrationState>,
}

/// Finds the volume of `namespace/claim`: through the claim's `volumeName`, or, when the claim is
/// gone mid-migration, through the state recorded on a volume.
pub async fn locate(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<Located, MigrateError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let found = claims
        .get_opt(claim)
        .await
        .map_err(api_err(format!("cannot read claim {namespace}/{claim}")))?;
    if let Some(pvc) = &found
        && let Some(name) = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|n| !n.is_empty())
        && let Some(pv) = volumes
            .get_opt(name)
            .await
            .map_err(api_err(format!("cannot read PersistentVolume {name}")))?
    {
        let state = MigrationState::read(&pv)?;
        return Ok(Located {
            volume: pv,
            claim: found,
            state,
        });
    }
    // The claim is gone (or not bound): look for a volume whose recorded state names it.
    for pv in list_all(&volumes, "persistentvolumes").await? {
        if let Some(state) = MigrationState::read(&pv)?
            && state.namespace == namespace
            && state.claim == claim
        {
            return Ok(Located {
                volume: pv,
                claim: found,
                state: Some(state),
            });
        }
    }
    match found {
        Some(pvc) => {
            let named = pvc
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .filter(|n| !n.is_empty());
            Err(MigrateError::Refused(eligibility::not_bound_message(
                &format!("{namespace}/{claim}"),
                named,
            )))
        }
        None => Err(MigrateError::Refused(format!(
            "claim {namespace}/{claim} not found, and no PersistentVolume records a migration of it"
        ))),
    }
}

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
    let allow = Allowances {
        allow_non_csi: opts.allow_non_csi,
        switch_to_recreate: opts.switch_to_recreate,
    };
    let switches = match judge(&pvc.into(), Some(&pv.into()), &found.workloads, allow) {
        Verdict::AlreadyMigrated => return Ok(None),
        Verdict::Refused(r) => return Err(MigrateError::Refused(r.message)),
        Verdict::Accepted { warnings, switches } => {
            for w in warnings {
                progress(Progress::Warning(w));
            }
            switches
        }
    };
    check_consumers(client, &namespace, &name, &found, opts, progress).await?;
    Ok(Some(new_state(
        pvc,
        pv,
        MigrationTarget::ReadWriteOncePod,
        found,
        switches,
    )))
}

/// The refusals and warnings about consumers both directions share: controllers rwop-guard
/// cannot scale, bare pods, autoscalers that would scale from zero.
async fn check_consumers(
    client: &Client,
    namespace: &str,
    name: &str,
    found: &consumers::Found,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), MigrateError> {
    if !found.unsupported.is_empty() {
        return Err(MigrateError::Refused(format!(
            "claim {namespace}/{name} is used by {}, which rwop-guard cannot scale; scale them down yourself and run again",
            found.unsupported.join(", ")
        )));
    }
    if !found.bare_pods.is_empty() {
        let list = found.bare_pods.join(", ");
        if !opts.allow_delete_pods {
            return Err(MigrateError::Refused(format!(
                "claim {namespace}/{name} is mounted by pods without a controller ({list}); they would have to be deleted and are not recreated (pass --allow-delete-pods to do so)"
            )));
        }
        progress(Progress::Warning(format!(
            "pods {list} have no controller: they will be deleted and not recreated"
        )));
    }
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

fn new_state(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    target: MigrationTarget,
    found: consumers::Found,
    switches: Vec<StrategySwitch>,
) -> MigrationState {
    MigrationState {
        version: 1,
        namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
        claim: pvc.metadata.name.clone().unwrap_or_default(),
        target,
        reclaim_policy: pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_else(|| "Retain".to_owned()),
        claim_manifest: sanitized_claim(pvc),
        consumers: found.scalable,
        deleted_pods: found.bare_pods,
        switches,
        statefulset: None,
        completed: 0,
    }
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
    check_consumers(client, namespace, claim, &found, opts, progress).await?;
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
        found,
        switches,
    ))
}

/// Annotations the API server and controllers manage; a recreated claim must not carry them.
const MANAGED_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// The claim as it can be created again: name, namespace, labels, user annotations, and the spec
/// without selector and data source (the data is already on the volume).
fn sanitized_claim(pvc: &PersistentVolumeClaim) -> Value {
    let mut annotations = pvc.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| !MANAGED_ANNOTATIONS.contains(&k.as_str()));
    let mut spec = pvc.spec.clone().unwrap_or_default();
    spec.selector = None;
    spec.data_source = None;
    spec.data_source_ref = None;
    let mut manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": pvc.metadata.name,
            "namespace": pvc.metadata.namespace,
        },
        "spec": spec,
    });
    if let Some(labels) = pvc.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        manifest["metadata"]["labels"] = serde_json::json!(labels);
    }
    if !annotations.is_empty() {
        manifest["metadata"]["annotations"] = serde_json::json!(annotations);
    }
    manifest
}

/// The claim to create for `state`: the recorded manifest with the target mode and the volume.
pub fn claim_to_create(
    state: &MigrationState,
    volume: &str,
) -> Result<PersistentVolumeClaim, MigrateError> {
    let mut manifest = state.claim_manifest.clone();
    manifest["spec"]["accessModes"] = serde_json::json!([state.target.mode().as_str()]);
    manifest["spec"]["volumeName"] = Value::from(volume);
    let mut claim: PersistentVolumeClaim = serde_json::from_value(manifest).map_err(|e| {
        MigrateError::Refused(format!("the recorded claim manifest does not decode: {e}"))
    })?;
    let annotations = claim
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    let rwo = AccessMode::ReadWriteOnce.as_str().to_owned();
    if state.is_rollback() {
        // The mutating webhook's cache may still see the volume as [ReadWriteOncePod] and would
        // rewrite the claim to match, which then never binds: opt out of mutation.
        annotations.remove(MIGRATED_FROM_ANNOTATION);
        annotations.insert(OPT_OUT_ANNOTATION.to_owned(), "false".to_owned());
    } else {
        // For good: M2 keeps [ReadWriteOncePod] when the old [ReadWriteOnce] manifest comes back.
        annotations.insert(MIGRATED_FROM_ANNOTATION.to_owned(), rwo);
    }
    Ok(claim)
}

/// Writes `state` into the volume's annotation (with the volume's resourceVersion as precondition,
/// retried on conflicts).
pub(crate) async fn record(
    volumes: &Api<PersistentVolume>,
    name: &str,
    state: Option<&MigrationState>,
) -> Result<(), MigrateError> {
    let text = match state {
        Some(s) => {
            Some(serde_json::to_string(s).map_err(|e| MigrateError::Refused(e.to_string()))?)
        }
        None => None,
    };
    steps::update_volume(volumes, name, "record the migration state", |pv| {
        let annotations = pv.metadata.annotations.get_or_insert_with(Default::default);
        match &text {
            Some(t) => {
                annotations
                    .insert(MIGRATION_ANNOTATION.to_owned(), t.clone())
                    .as_ref()
                    != Some(t)
            }
            None => annotations.remove(MIGRATION_ANNOTATION).is_some(),
        }
    })
    .await?;
    Ok(())
}

/// What a run will do, as the user confirms it and as [`execute`] runs it.
#[derive(Clone, Debug)]
pub enum Plan {
    Run(Box<RunPlan>),
    /// Claim and volume are already [ReadWriteOncePod] and bound: nothing to do.
    AlreadyMigrated {
        volume: String,
    },
}

#[derive(Clone, Debug)]
pub struct RunPlan {
    pub volume: String,
    pub state: MigrationState,
    /// Per step: done, already in place on the live objects (and why), or to do.
    pub status: Vec<StepStatus>,
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
    let status = steps::in_place(client, &volume, &state).await?;
    Ok(Plan::Run(Box::new(RunPlan {
        volume,
        state,
        status,
    })))
}

/// Runs `plan` (from [`prepare`]). `after_step` is called after each step is recorded;
/// returning false stops the run there (tests use it to inject crashes).
pub async fn execute(
    client: &Client,
    plan: RunPlan,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
    after_step: &mut dyn FnMut(usize) -> bool,
) -> Result<(), MigrateError> {
    let mut state = plan.state;
    steps::execute(
        client,
        &plan.volume,
        &mut state,
        opts,
        progress,
        after_step,
        usize::MAX,
    )
    .await
}

/// Prepares and runs (or resumes) the migration of `namespace/claim`, or its rollback. A claim
/// already migrated is left alone (Ok).
pub async fn run(
    client: &Client,
    namespace: &str,
    claim: &str,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
    after_step: &mut dyn FnMut(usize) -> bool,
) -> Result<(), MigrateError> {
    match prepare(client, namespace, claim, opts, progress).await? {
        Plan::AlreadyMigrated { .. } => Ok(()),
        Plan::Run(plan) => execute(client, *plan, opts, progress, after_step).await,
    }
}
