//! `migrate --all` / `--selector`: the fleet flow (see [`crate::migrate::fleet`]).

use std::process::ExitCode;

use kube::Client;

use super::migrate::{MigrateArgs, confirm, options};
use crate::migrate::Progress;
use crate::migrate::fleet::{self, Entry, FleetEvent, FleetOptions, FleetPlan, Outcome, Summary};

pub(super) async fn run(args: &MigrateArgs, client: &Client, namespace: &str) -> ExitCode {
    if args.rollback {
        eprintln!(
            "rwop-guard migrate: --rollback takes one claim (NAMESPACE/CLAIM), not --all or --selector"
        );
        return ExitCode::from(super::EXIT_UNUSABLE);
    }
    let opts = options(args);
    let claims = match fleet::claims_of(client, namespace, args.selector.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwop-guard migrate: {e}");
            return ExitCode::FAILURE;
        }
    };
    if claims.is_empty() {
        eprintln!("rwop-guard migrate: no claims in namespace {namespace} to migrate");
        return ExitCode::SUCCESS;
    }
    let plan = fleet::plan(client, namespace, &claims, &opts, &print_event).await;
    print_plan(&plan);
    let runnable = plan
        .entries
        .iter()
        .filter(|e| matches!(e, Entry::Run { .. }))
        .count();
    if args.dry_run {
        return ExitCode::SUCCESS;
    }
    if runnable == 0 {
        eprintln!("nothing to run");
        let outcomes: Vec<(String, Outcome)> = plan
            .entries
            .iter()
            .map(|e| match e {
                Entry::Refused { claim, reason } => {
                    (claim.clone(), Outcome::Refused(reason.clone()))
                }
                e => (e.claim().to_owned(), Outcome::AlreadyMigrated),
            })
            .collect();
        return finish(&outcomes);
    }
    if !args.yes && !confirm() {
        eprintln!(
            "rwop-guard migrate: not confirmed; nothing changed (use --yes to skip the question)"
        );
        return ExitCode::FAILURE;
    }
    let fleet_opts = FleetOptions {
        concurrency: usize::from(args.concurrency),
        continue_on_error: args.continue_on_error,
    };
    let keep_going = |_: &str, _: usize| true;
    let run = fleet::execute(client, plan, &opts, &fleet_opts, &print_event, &keep_going);
    tokio::select! {
        outcomes = run => finish(&outcomes),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: each claim's progress is recorded on its PersistentVolume; run the same command again to resume");
            ExitCode::from(130)
        }
    }
}

fn finish(outcomes: &[(String, Outcome)]) -> ExitCode {
    for (claim, outcome) in outcomes {
        match outcome {
            Outcome::Refused(r) => eprintln!("{claim}: refused: {r}"),
            Outcome::Failed(r) => eprintln!("{claim}: failed: {r}"),
            Outcome::NotStarted(r) => eprintln!("{claim}: {r}"),
            Outcome::Migrated | Outcome::AlreadyMigrated => {}
        }
    }
    let summary = Summary::of(outcomes);
    eprintln!("summary: {summary}");
    if summary.failed > 0 || summary.refused > 0 || summary.not_started > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_plan(plan: &FleetPlan) {
    let header = [
        "CLAIM".to_owned(),
        "VOLUME".to_owned(),
        "CONSUMERS".to_owned(),
        "PLAN".to_owned(),
    ];
    let rows: Vec<[String; 4]> = plan.entries.iter().map(Entry::row).collect();
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    println!(
        "Migration of namespace {} to [ReadWriteOncePod]:",
        plan.namespace
    );
    for row in std::iter::once(&header).chain(rows.iter()) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    let shared: Vec<String> = plan
        .groups
        .iter()
        .filter(|g| g.len() > 1)
        .map(|g| {
            g.iter()
                .map(|&i| plan.entries[i].claim().to_owned())
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect();
    for g in shared {
        println!("run together (shared consumers, scaled down once, restored once): {g}");
    }
}

fn print_event(e: FleetEvent) {
    match e {
        FleetEvent::Started { claim } => eprintln!("{claim}: started"),
        FleetEvent::Step { claim, progress } => match progress {
            Progress::Warning(w) => eprintln!("{claim}: warning: {w}"),
            Progress::Started {
                index, total, what, ..
            } => eprintln!("{claim}: [{index}/{total}] {what}"),
            Progress::Done { step, elapsed } => {
                eprintln!("{claim}: {step:?} done in {:.1}s", elapsed.as_secs_f64())
            }
            Progress::Skipped { step, why } => eprintln!("{claim}: {step:?} skipped: {why}"),
        },
        FleetEvent::Finished { claim, outcome } => match outcome {
            Outcome::Migrated => eprintln!("{claim}: migrated"),
            Outcome::Failed(r) => eprintln!("{claim}: failed: {r}"),
            Outcome::NotStarted(r) => eprintln!("{claim}: {r}"),
            Outcome::AlreadyMigrated => eprintln!("{claim}: already migrated"),
            Outcome::Refused(r) => eprintln!("{claim}: refused: {r}"),
        },
    }
}
