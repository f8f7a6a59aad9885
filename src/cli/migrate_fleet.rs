//! `migrate --all` / `--selector` / `--from-scan`, and each with `--rollback`: the fleet flow
//! (see [`crate::migrate::fleet`]).

use std::io::Read;
use std::process::ExitCode;

use kube::Client;

use super::migrate::{MigrateArgs, confirm, options};
use crate::migrate::Progress;
use crate::migrate::fleet::{self, FleetEvent, FleetOptions, FleetPlan, Outcome, Summary};

pub(super) async fn run(args: &MigrateArgs, client: &Client, namespace: &str) -> ExitCode {
    let opts = options(args);
    let claims = match &args.from_scan {
        Some(path) => match from_scan(path, args) {
            Ok(claims) => claims,
            Err(e) => {
                eprintln!("rwop-guard migrate: {e:#}");
                return ExitCode::from(super::EXIT_UNUSABLE);
            }
        },
        None => match fleet::claims_of(client, namespace, args.selector.as_deref()).await {
            Ok(c) => c.into_iter().map(|c| (namespace.to_owned(), c)).collect(),
            Err(e) => {
                eprintln!("rwop-guard migrate: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if claims.is_empty() {
        match &args.from_scan {
            Some(path) => eprintln!(
                "rwop-guard migrate: {} lists no migration candidates{}",
                path.display(),
                args.namespace
                    .as_deref()
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default()
            ),
            None => eprintln!("rwop-guard migrate: no claims in namespace {namespace}"),
        }
        return ExitCode::SUCCESS;
    }
    let single = claims.iter().all(|(ns, _)| *ns == claims[0].0);
    let report = |e: FleetEvent| print_event(e, single, args.rollback);
    let plan = fleet::plan(client, &claims, &opts, &report).await;
    print_plan(&plan);
    if args.dry_run {
        return ExitCode::SUCCESS;
    }
    if plan.groups.is_empty() {
        eprintln!("nothing to run");
        return finish(plan.rollback, &plan.outcomes_without_run(), single);
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
    let rollback = plan.rollback;
    let run = fleet::execute(client, plan, &opts, &fleet_opts, &report, &keep_going);
    tokio::select! {
        outcomes = run => finish(rollback, &outcomes, single),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: each claim's progress is recorded on its PersistentVolume; run the same command again to resume");
            ExitCode::from(130)
        }
    }
}

/// The candidates of the scan output at `path` (`-`: standard input).
fn from_scan(path: &std::path::Path, args: &MigrateArgs) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::Context;
    let stdin = path.as_os_str() == "-";
    let (text, name) = if stdin {
        if !args.yes && !args.dry_run {
            anyhow::bail!(
                "--from-scan - reads the scan from standard input, which then cannot answer the confirmation: add --yes (or --dry-run for the plan only)"
            );
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the scan from standard input")?;
        (text, "standard input".to_owned())
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the scan {}", path.display()))?;
        (text, path.display().to_string())
    };
    let found = fleet::candidates_from_scan(&text, &name, args.namespace.as_deref())?;
    Ok(found.claims)
}

pub(super) fn finish(rollback: bool, outcomes: &[(String, Outcome)], single: bool) -> ExitCode {
    for (claim, outcome) in outcomes {
        let claim = label(claim, single);
        match outcome {
            Outcome::Refused(r) => eprintln!("{claim}: refused: {r}"),
            Outcome::Failed(r) => eprintln!("{claim}: failed: {r}"),
            Outcome::NotStarted(r) => eprintln!("{claim}: {r}"),
            Outcome::Done | Outcome::NothingToDo(_) => {}
        }
    }
    let summary = Summary::of(rollback, outcomes);
    eprintln!("summary: {summary}");
    if summary.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `namespace/claim`, or `claim` when every claim of the run is in one namespace.
fn label(id: &str, single: bool) -> &str {
    match id.split_once('/') {
        Some((_, claim)) if single => claim,
        _ => id,
    }
}

pub(super) fn print_plan(plan: &FleetPlan) {
    let namespaces = plan.namespaces();
    let single = namespaces.len() == 1;
    let mut header = vec!["CLAIM", "VOLUME", "CONSUMERS", "PLAN"];
    if !single {
        header.insert(0, "NAMESPACE");
    }
    let header: Vec<String> = header.into_iter().map(str::to_owned).collect();
    let rows: Vec<Vec<String>> = plan
        .entries
        .iter()
        .map(|e| {
            let mut row = e.row().to_vec();
            if !single {
                row.insert(0, e.namespace.clone());
            }
            row
        })
        .collect();
    let mut widths = vec![0usize; header.len()];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let (direction, target) = if plan.rollback {
        ("Rollback", "[ReadWriteOnce]")
    } else {
        ("Migration", "[ReadWriteOncePod]")
    };
    if single {
        println!(
            "{direction} of namespace {} to {target}:",
            namespaces.join("")
        );
    } else {
        println!(
            "{direction} of {} claims in namespaces {} to {target}:",
            plan.entries.len(),
            namespaces.join(", ")
        );
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        let last = row.len() - 1;
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:w$}  ", w = widths[i]));
            }
        }
        println!("{line}");
    }
    for g in plan.groups.iter().filter(|g| g.len() > 1) {
        let members: Vec<String> = g
            .iter()
            .map(|&i| {
                let e = &plan.entries[i];
                if single { e.claim.clone() } else { e.id() }
            })
            .collect();
        println!(
            "run together (shared consumers, scaled down once, restored once): {}",
            members.join(" + ")
        );
    }
}

pub(super) fn print_event(e: FleetEvent, single: bool, rollback: bool) {
    match e {
        FleetEvent::Started { claim } => eprintln!("{}: started", label(&claim, single)),
        FleetEvent::Step { claim, progress } => {
            let claim = label(&claim, single);
            match progress {
                Progress::Warning(w) => eprintln!("{claim}: warning: {w}"),
                Progress::Started {
                    index, total, what, ..
                } => eprintln!("{claim}: [{index}/{total}] {what}"),
                Progress::Done { step, elapsed } => {
                    eprintln!("{claim}: {step:?} done in {:.1}s", elapsed.as_secs_f64())
                }
                Progress::Skipped { step, why } => eprintln!("{claim}: {step:?} skipped: {why}"),
            }
        }
        FleetEvent::Finished { claim, outcome } => {
            let claim = label(&claim, single);
            match outcome {
                Outcome::Done if rollback => eprintln!("{claim}: rolled back"),
                Outcome::Done => eprintln!("{claim}: migrated"),
                Outcome::Failed(r) => eprintln!("{claim}: failed: {r}"),
                Outcome::NotStarted(r) => eprintln!("{claim}: {r}"),
                Outcome::NothingToDo(r) => eprintln!("{claim}: {r}"),
                Outcome::Refused(r) => eprintln!("{claim}: refused: {r}"),
            }
        }
    }
}
