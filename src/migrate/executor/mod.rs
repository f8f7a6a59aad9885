//! Layer 3 of `migrate`, the executor: runs the steps of one claim against the live objects. Each
//! step looks at the live objects first and does only what is missing, so running a step twice,
//! or after a crash in its middle, is safe. After each step the progress is recorded on the
//! volume and in the claim's Events.
//!
//! The step bodies live beside this file by what they touch: [`volume`], [`claim`] and
//! [`consumers`] (and the StatefulSet's two steps in the cluster layer).

mod claim;
mod consumers;
mod volume;

use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};

use crate::migrate::access::events::History;
use crate::migrate::access::statefulsets;
use crate::migrate::access::volumes::record;
use crate::migrate::model::error::{MigrateError, api_err};
use crate::migrate::model::history;
use crate::migrate::model::plan::{MigrateOptions, Progress};
use crate::migrate::model::state::MigrationState;
use crate::migrate::model::steps::{Step, swap_done};
use crate::policy::AccessMode;

/// Runs the steps of `state` not done yet, up to (not including) step index `until`. After each
/// step: the state is recorded on `volume`, an Event says what changed, and `after_step(done)`
/// may stop the run (tests use it to inject crashes).
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    client: &Client,
    events: &History,
    volume: &str,
    state: &mut MigrationState,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
    after_step: &mut dyn FnMut(usize) -> bool,
    until: usize,
) -> Result<(), MigrateError> {
    let steps = state.steps();
    let total = steps.len();
    for (i, step) in steps.iter().copied().enumerate() {
        if i < state.completed {
            continue;
        }
        if i >= until {
            break;
        }
        progress(Progress::Started {
            step,
            index: i + 1,
            total,
            what: step.describe(state, volume),
        });
        let started = Instant::now();
        let skipped = match run_step(client, volume, state, opts, step, i).await {
            Ok(skipped) => skipped,
            Err(e) => {
                let note = history::failed(state, volume, &e.to_string());
                events.record_run(&note, state, volume, progress).await;
                return Err(e);
            }
        };
        let note = history::step_done(state, step, i + 1, volume, skipped.as_deref());
        match skipped {
            Some(why) => progress(Progress::Skipped { step, why }),
            None => progress(Progress::Done {
                step,
                elapsed: started.elapsed(),
            }),
        }
        state.completed = i + 1;
        events.record_run(&note, state, volume, progress).await;
        if state.completed == total {
            let note = history::completed(state, volume);
            events.record_run(&note, state, volume, progress).await;
        }
        if !after_step(i + 1) {
            return Err(MigrateError::Interrupted { completed: i + 1 });
        }
    }
    Ok(())
}

/// Step `i` of `state`, then the state recorded with it done (the last step removes the state).
async fn run_step(
    client: &Client,
    volume: &str,
    state: &mut MigrationState,
    opts: &MigrateOptions,
    step: Step,
    i: usize,
) -> Result<Option<String>, MigrateError> {
    let skipped = Ctx::new(client, volume, state, opts).run(step).await?;
    if step != Step::ClearState {
        let mut done = state.clone();
        done.completed = i + 1;
        record(&Api::all(client.clone()), volume, Some(&done)).await?;
    }
    Ok(skipped)
}

/// What every step works with: the cluster, the migration and the knobs of the run.
struct Ctx<'a> {
    client: &'a Client,
    volumes: Api<PersistentVolume>,
    claims: Api<PersistentVolumeClaim>,
    volume: &'a str,
    state: &'a MigrationState,
    opts: &'a MigrateOptions,
    /// `namespace/claim`, for messages.
    claim_name: String,
}

/// What a step returns: why it was skipped, if it had nothing to do.
type Outcome = Result<Option<String>, MigrateError>;

impl<'a> Ctx<'a> {
    fn new(
        client: &'a Client,
        volume: &'a str,
        state: &'a MigrationState,
        opts: &'a MigrateOptions,
    ) -> Self {
        Ctx {
            client,
            volumes: Api::all(client.clone()),
            claims: Api::namespaced(client.clone(), &state.namespace),
            volume,
            state,
            opts,
            claim_name: format!("{}/{}", state.namespace, state.claim),
        }
    }

    fn target(&self) -> AccessMode {
        self.state.target.mode()
    }

    async fn claim(&self) -> Result<Option<PersistentVolumeClaim>, MigrateError> {
        self.claims
            .get_opt(&self.state.claim)
            .await
            .map_err(api_err(format!("cannot read claim {}", self.claim_name)))
    }

    async fn pv(&self) -> Result<PersistentVolume, MigrateError> {
        self.volumes.get(self.volume).await.map_err(api_err(format!(
            "cannot read PersistentVolume {}",
            self.volume
        )))
    }

    /// The live volume and claim of the migration.
    async fn read_pair(
        &self,
    ) -> Result<(PersistentVolume, Option<PersistentVolumeClaim>), MigrateError> {
        Ok((self.pv().await?, self.claim().await?))
    }

    async fn run(&self, step: Step) -> Outcome {
        if step.swaps() {
            let (pv, claim) = self.read_pair().await?;
            if swap_done(&pv, claim.as_ref(), self.volume, self.target()) {
                return Ok(Some(format!(
                    "claim {} is already [{}] and bound to {}",
                    self.claim_name, self.state.target, self.volume
                )));
            }
        }
        match step {
            Step::RecordState => {
                record(&self.volumes, self.volume, Some(self.state)).await?;
                Ok(None)
            }
            Step::RetainVolume => self.set_reclaim_policy("Retain").await,
            Step::ScaleDown => self.scale_down().await,
            Step::DeleteClaim => self.delete_claim().await,
            Step::ReleaseVolume => self.release_volume().await,
            Step::SetVolumeModes => self.set_volume_modes().await,
            Step::CreateClaim => self.create_claim().await,
            Step::WaitBound => self.wait_bound().await,
            Step::ScaleUp => self.scale_up().await,
            Step::RestoreReclaimPolicy => self.set_reclaim_policy(&self.state.reclaim_policy).await,
            Step::ClearState => {
                record(&self.volumes, self.volume, None).await?;
                Ok(None)
            }
            Step::DeleteStatefulSet | Step::CreateStatefulSet => {
                let ns = &self.state.namespace;
                let Some(sts) = &self.state.statefulset else {
                    return Ok(Some("no StatefulSet recorded".to_owned()));
                };
                let target = self.state.target;
                if step == Step::DeleteStatefulSet {
                    statefulsets::delete(self.client, ns, sts, target, self.opts).await
                } else {
                    statefulsets::create(self.client, ns, sts, target).await
                }
            }
        }
    }
}
