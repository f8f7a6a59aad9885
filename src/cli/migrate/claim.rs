//! `migrate NAMESPACE/CLAIM`: one claim (see [`crate::migrate`]).

use std::process::ExitCode;

use kube::Client;

use super::common::{MigrateArgs, options, print_progress, stop_before_run};
use crate::migrate::{self, Plan, Progress, RunPlan, StepStatus, claim_to_create};

pub async fn run(args: &MigrateArgs, client: &Client, namespace: &str, claim: &str) -> ExitCode {
    let opts = options(args);
    let mut report = |p: Progress| print_progress(&p);

    // The plan: from the recorded state, or from a read-only preflight. It is prepared once: what
    // is shown (and confirmed) is what runs.
    let plan = migrate::prepare(client, namespace, claim, &opts, &mut report);
    let plan = match plan.await {
        Ok(Plan::Run(p)) => *p,
        Ok(Plan::AlreadyMigrated { volume }) => {
            eprintln!(
                "claim {namespace}/{claim} and PersistentVolume {volume} are already [ReadWriteOncePod]: already migrated; nothing to do"
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rwop-guard migrate: {e}");
            // A run asked for and refused is part of the claim's history; a plan is not.
            if let migrate::MigrateError::Refused(why) = &e
                && !args.dry_run
            {
                migrate::record_refusal(client, namespace, claim, args.rollback, why, &mut report)
                    .await;
            }
            return ExitCode::FAILURE;
        }
    };
    // Its StatefulSet's steps scale the StatefulSet back up: only with all its claims swapped.
    if let Some(sts) = &plan.state.statefulset {
        eprintln!(
            "rwop-guard migrate: claim {namespace}/{claim} is being migrated with StatefulSet {}, in lockstep with its other claims; resume with: rwop-guard migrate --statefulset {namespace}/{}{}",
            sts.name,
            sts.name,
            if args.rollback { " --rollback" } else { "" }
        );
        return ExitCode::FAILURE;
    }
    print_plan(&plan);
    match migrate::statefulset::template_warning(client, &plan.state).await {
        Ok(Some(w)) => print_progress(&Progress::Warning(w)),
        Ok(None) => {}
        Err(e) => eprintln!("rwop-guard migrate: {e}"),
    }
    if let Some(exit) = stop_before_run(args) {
        return exit;
    }

    let volume = plan.volume.clone();
    let mut keep_going = |_| true;
    let run = migrate::execute(client, plan, &opts, &mut report, &mut keep_going);
    tokio::select! {
        result = run => match result {
            Ok(()) => {
                let what = if args.rollback { "rolled back to [ReadWriteOnce]" } else { "now [ReadWriteOncePod]" };
                eprintln!("claim {namespace}/{claim} and PersistentVolume {volume} are {what}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rwop-guard migrate: {e}");
                eprintln!("the progress is recorded on PersistentVolume {volume}: run the same command again to resume, or add --rollback to undo");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: the progress is recorded on PersistentVolume {volume}; run the same command again to resume, or add --rollback to undo");
            ExitCode::from(130)
        }
    }
}

fn print_plan(plan: &RunPlan) {
    let RunPlan {
        volume,
        state,
        status,
    } = plan;
    let direction = if state.is_rollback() {
        "Rollback"
    } else {
        "Migration"
    };
    println!(
        "{direction} of PersistentVolumeClaim {}/{} (PersistentVolume {volume}) to [{}]:",
        state.namespace, state.claim, state.target
    );
    let steps = state.steps();
    for (i, step) in steps.iter().enumerate() {
        let mark = match status.get(i) {
            Some(StepStatus::Done) => " (done)".to_owned(),
            Some(StepStatus::InPlace(why)) => format!(" (already in place: {why})"),
            Some(StepStatus::ToDo) | None => String::new(),
        };
        println!(
            "  [{}/{}] {}{mark}",
            i + 1,
            steps.len(),
            step.describe(state, volume)
        );
    }
    if let Ok(claim) = claim_to_create(state, volume)
        && let Ok(yaml) = serde_saphyr::to_string(&claim)
    {
        println!("The claim is recreated as:\n---\n{}", yaml.trim_end());
    }
}
