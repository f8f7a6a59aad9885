//! `migrate NAMESPACE/CLAIM`: one claim, planned by [`prepare`] and run step by step.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Client};

use crate::migrate::access::events::History;
use crate::migrate::executor;
use crate::migrate::model::error::MigrateError;
use crate::migrate::model::history;
use crate::migrate::model::plan::{MigrateOptions, Plan, Progress, RunPlan};
use crate::migrate::planner::prepare;

/// Runs `plan` (from [`prepare`]). `after_step` is called after each step is recorded;
/// returning false stops the run there (tests use it to inject crashes).
pub async fn execute(
    client: &Client,
    plan: RunPlan,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
    after_step: &mut dyn FnMut(usize) -> bool,
) -> Result<(), MigrateError> {
    let history = History::new(client);
    let mut state = plan.state;
    let volume = &plan.volume;
    executor::execute(
        client,
        &history,
        volume,
        &mut state,
        opts,
        progress,
        after_step,
        usize::MAX,
    )
    .await
}

/// Prepares and runs (or resumes) the migration of `namespace/claim`, or its rollback. A claim
/// already migrated is left alone (Ok). A refusal changes nothing, Events included: the command
/// records it ([`record_refusal`]) when it was asked to run, not for a plan.
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

/// Records in the Events of `namespace/claim` (and of the volume it names) that a run was
/// refused, and why.
pub async fn record_refusal(
    client: &Client,
    namespace: &str,
    claim: &str,
    rollback: bool,
    why: &str,
    progress: &mut dyn FnMut(Progress),
) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volume = claims
        .get_opt(claim)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.spec.and_then(|s| s.volume_name))
        .filter(|v| !v.is_empty());
    let note = history::refused(rollback, why);
    History::new(client)
        .record(&note, namespace, claim, volume.as_deref(), progress)
        .await;
}
