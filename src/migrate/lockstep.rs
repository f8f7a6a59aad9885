//! Layer 4 of `migrate`, many claims at once: groups of claims that share consumers, each group
//! phase by phase (every claim records its state, then every claim scales down, then each is
//! swapped, and only when all are bound are the consumers restored), groups concurrently. The
//! fleet flow runs every group of its plan; the StatefulSet flow runs its one group.

use std::cell::Cell;

use futures_util::StreamExt;
use kube::Client;

use crate::migrate::access::events::History;
use crate::migrate::executor;
use crate::migrate::model::error::MigrateError;
use crate::migrate::model::history;
use crate::migrate::model::plan::{
    Action, FleetEvent, FleetOptions, FleetPlan, MigrateOptions, Outcome, RunPlan,
};
use crate::migrate::model::steps::{PHASES, phase_end};

/// Runs `plan`. `after_step(claim, done)` is called after each recorded step; false stops that
/// claim there (tests use it to inject crashes). Returns every claim's outcome, in plan order.
pub async fn execute(
    client: &Client,
    plan: FleetPlan,
    opts: &MigrateOptions,
    fleet: &FleetOptions,
    report: &dyn Fn(FleetEvent),
    after_step: &dyn Fn(&str, usize) -> bool,
) -> Vec<(String, Outcome)> {
    let history = History::new(client);
    record_refusals(&history, &plan, report).await;
    let history = &history;
    let stop = Cell::new(false);
    let mut outcomes = plan.settled();
    let mut runs: Vec<Option<(String, RunPlan)>> = plan
        .entries
        .iter()
        .map(|e| match &e.action {
            Action::Run(p) => Some((e.id(), (**p).clone())),
            _ => None,
        })
        .collect();
    let groups: Vec<Vec<(usize, String, RunPlan)>> = plan
        .groups
        .iter()
        .map(|g| {
            g.iter()
                .filter_map(|&i| runs[i].take().map(|(c, p)| (i, c, p)))
                .collect()
        })
        .collect();
    let stop = &stop;
    let results: Vec<Vec<(usize, Outcome)>> = futures_util::stream::iter(groups)
        .map(|members| async move {
            if stop.get() {
                return members
                    .into_iter()
                    .map(|(i, claim, _)| {
                        let outcome =
                            Outcome::NotStarted("not started: an earlier claim failed".to_owned());
                        report(FleetEvent::Finished {
                            claim,
                            outcome: outcome.clone(),
                        });
                        (i, outcome)
                    })
                    .collect();
            }
            let result = run_group(client, history, members, opts, report, after_step).await;
            if !fleet.continue_on_error && result.iter().any(|(_, o)| !o_is_ok(o)) {
                stop.set(true);
            }
            result
        })
        .buffer_unordered(fleet.concurrency.max(1))
        .collect()
        .await;
    for (i, o) in results.into_iter().flatten() {
        outcomes[i] = Some(o);
    }
    plan.entries
        .iter()
        .zip(outcomes)
        .map(|(e, o)| {
            (
                e.id(),
                o.unwrap_or_else(|| Outcome::NotStarted("not started".to_owned())),
            )
        })
        .collect()
}

fn o_is_ok(o: &Outcome) -> bool {
    matches!(o, Outcome::Done | Outcome::NothingToDo(_))
}

/// The claims of one group, phase by phase; the first failure stops the group (its progress is
/// recorded on the volumes, so the next run resumes it).
async fn run_group(
    client: &Client,
    history: &History,
    members: Vec<(usize, String, RunPlan)>,
    opts: &MigrateOptions,
    report: &dyn Fn(FleetEvent),
    after_step: &dyn Fn(&str, usize) -> bool,
) -> Vec<(usize, Outcome)> {
    let mut members: Vec<(usize, String, RunPlan, Option<Outcome>)> = members
        .into_iter()
        .map(|(i, claim, plan)| {
            report(FleetEvent::Started {
                claim: claim.clone(),
            });
            (i, claim, plan, None)
        })
        .collect();
    let mut failed: Option<String> = None;
    // Where the claims wait for each other: [`phase_end`].
    'phases: for phase in 0..PHASES {
        for (_, claim, plan, outcome) in members.iter_mut() {
            let until = phase_end(plan.state.steps(), phase);
            if outcome.is_some() || plan.state.completed >= until {
                continue;
            }
            let mut progress = |p| {
                report(FleetEvent::Step {
                    claim: claim.clone(),
                    progress: p,
                })
            };
            let name = claim.clone();
            let mut hook = |done| after_step(&name, done);
            let result = executor::execute(
                client,
                history,
                &plan.volume,
                &mut plan.state,
                opts,
                &mut progress,
                &mut hook,
                until,
            )
            .await;
            if let Err(e) = result {
                let message = match &e {
                    MigrateError::Interrupted { .. } => e.to_string(),
                    _ => format!(
                        "{e} (progress recorded on PersistentVolume {}; run again to resume)",
                        plan.volume
                    ),
                };
                *outcome = Some(Outcome::Failed(message));
                failed = Some(claim.clone());
                break 'phases;
            }
        }
    }
    members
        .into_iter()
        .map(|(i, claim, _, outcome)| {
            let outcome = outcome.unwrap_or_else(|| match &failed {
                Some(other) => Outcome::NotStarted(format!(
                    "stopped: {other}, which shares a consumer with it, failed"
                )),
                None => Outcome::Done,
            });
            report(FleetEvent::Finished {
                claim,
                outcome: outcome.clone(),
            });
            (i, outcome)
        })
        .collect()
}

/// The claims refused at planning get their refusal in their Events (the run goes on without
/// them).
async fn record_refusals(history: &History, plan: &FleetPlan, report: &dyn Fn(FleetEvent)) {
    for e in &plan.entries {
        let Action::Refused { reason } = &e.action else {
            continue;
        };
        let note = history::refused(plan.rollback, reason);
        let mut progress = |p| {
            report(FleetEvent::Step {
                claim: e.id(),
                progress: p,
            })
        };
        history
            .record(&note, &e.namespace, &e.claim, None, &mut progress)
            .await;
    }
}
