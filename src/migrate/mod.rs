//! `rwop-guard migrate`: the upstream task "Change the Access Mode of a PersistentVolume to
//! ReadWriteOncePod" as an explicit, resumable state machine.
//!
//! The state lives on the PersistentVolume itself (annotation
//! [`MIGRATION_ANNOTATION`](crate::policy::MIGRATION_ANNOTATION)): what the claim looked like, the
//! original reclaim policy, the consumers and their replica counts, the target mode and how many
//! steps are done. Every step is idempotent and checks the live state before acting, so a run
//! interrupted anywhere (Ctrl-C, crash, lost connection) is finished by running again, or undone
//! with `--rollback` (the same steps with `[ReadWriteOnce]` as target). Each step done, a refusal,
//! a failure and the end are also Kubernetes Events on the claim and its volume.
//!
//! Safety invariants: the PersistentVolume is never deleted; its reclaim policy is `Retain` before
//! its claim is deleted and is only restored once a claim is bound to it again.
//!
//! # Layers
//!
//! Each layer imports only from the layers below it (and from outside `migrate`: `policy`, and
//! `scan`'s paged listing); files of one layer do not import each other, except where a layer
//! below is named. Keep it so: `../shared/tools/import-cycles src` must list nothing here.
//!
//! 1. [`model`] (pure: no `async`, no `kube::Api`): the judgement ([`eligibility`], over
//!    [`model::facts`], with the rollout arithmetic of [`model::rollout`]), the recorded state
//!    ([`model::state`]), the step list and what each step says ([`model::steps`]), what the
//!    history records ([`model::history`]), the plan and outcome types every flow speaks
//!    ([`model::plan`]), and the error ([`model::error`]). Inside the layer: `error` < `state` <
//!    `templates`, `facts` < `rollout` < `eligibility`; `state` < `steps` < `history`, `plan`.
//! 2. `access` (cluster access): one call or one watch each: paged listing, waits, volume and
//!    claim updates, `/scale` and strategy switches, StatefulSet orphan-delete and create,
//!    autoscaler reads, Events. Inside the layer: `list` and `waits` are used by the others.
//! 3. `executor`: one claim's steps against the live objects, the state and the Events
//!    recorded after each.
//! 4. `planner` (one claim, read-only: where its run starts and where each step stands) and
//!    `lockstep` (groups of claims phase by phase, groups concurrently).
//! 5. The flows: `flows::claim`, [`fleet`], [`statefulset`]; and above them, the command
//!    (`cli::migrate`).

mod access;
mod executor;
mod flows;
mod lockstep;
pub mod model;
mod planner;

pub use access::claims::{Located, locate};
pub use access::events::REPORTER as EVENT_REPORTER;
pub use flows::claim::{execute, record_refusal, run};
pub use flows::{fleet, statefulset};
pub use model::eligibility;
pub use model::eligibility::{
    Allowances, ClaimInfo, StrategySwitch, Verdict, VolumeInfo, Workload, judge,
};
pub use model::error::MigrateError;
pub use model::history::reason as event_reason;
pub use model::plan::{MigrateOptions, Plan, Progress, RunPlan};
pub use model::state::{
    Consumer, ConsumerKind, MigrationState, ORIGINAL_STRATEGY_ANNOTATION, claim_to_create,
};
pub use model::steps::{STATEFULSET_STEPS, STEPS, Step, StepStatus};
pub use planner::{preflight, prepare};
