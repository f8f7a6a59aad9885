//! `migrate --statefulset`: the StatefulSet flow (see [`crate::migrate::statefulset`]).

use std::process::ExitCode;

use kube::Client;

use super::common::{
    MigrateArgs, finish, options, print_event, print_plan as print_table, stop_before_run,
};
use crate::migrate::MigrateError;
use crate::migrate::fleet::{Action, FleetEvent};
use crate::migrate::statefulset::{self, Run, StatefulSetPlan};

pub async fn run(args: &MigrateArgs, client: &Client, namespace: &str, name: &str) -> ExitCode {
    let opts = options(args);
    let report = |e: FleetEvent| print_event(e, true, args.rollback);
    let plan = match statefulset::plan(client, namespace, name, &opts, &report).await {
        Ok(StatefulSetPlan::Run(plan)) => *plan,
        Ok(StatefulSetPlan::AlreadyDone { claims }) => {
            let what = if args.rollback {
                "rolled back"
            } else {
                "migrated"
            };
            eprintln!(
                "StatefulSet {namespace}/{name}: its volumeClaimTemplates and claims ({}) are already {what}; nothing to do",
                claims.join(", ")
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rwop-guard migrate: {e}");
            // A run asked for and refused is part of the StatefulSet's history; a plan is not.
            if let MigrateError::Refused(why) = &e
                && !args.dry_run
            {
                let mut progress = |p| {
                    report(FleetEvent::Step {
                        claim: format!("{namespace}/{name}"),
                        progress: p,
                    })
                };
                statefulset::record_refusal(
                    client,
                    namespace,
                    name,
                    args.rollback,
                    why,
                    &mut progress,
                )
                .await;
            }
            return ExitCode::FAILURE;
        }
    };
    print_plan(namespace, &plan);
    if let Some(exit) = stop_before_run(args) {
        return exit;
    }
    let keep_going = |_: &str, _: usize| true;
    let run = statefulset::execute(client, plan, &opts, &report, &keep_going);
    tokio::select! {
        outcomes = run => finish(args.rollback, &outcomes, true),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: the progress (and the StatefulSet's manifest) is recorded on each claim's PersistentVolume; run the same command again to resume, or add --rollback to undo");
            ExitCode::from(130)
        }
    }
}

fn print_plan(namespace: &str, plan: &Run) {
    print_table(&plan.fleet);
    let Some((claim, first)) = plan.fleet.entries.iter().find_map(|e| match &e.action {
        Action::Run(run) => Some((&e.claim, run)),
        _ => None,
    }) else {
        return;
    };
    println!(
        "StatefulSet {namespace}/{} ({} replicas), volumeClaimTemplates [{}] -> [{}]: its claims run these steps in lockstep \
         (the StatefulSet scaled down once, recreated once, restored once), shown for {claim}:",
        plan.name,
        plan.replicas,
        plan.target.source(),
        plan.target
    );
    let steps = first.state.steps();
    for (i, step) in steps.iter().enumerate() {
        println!(
            "  [{}/{}] {}",
            i + 1,
            steps.len(),
            step.describe(&first.state, &first.volume)
        );
    }
}
