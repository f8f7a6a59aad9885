//! `migrate --all` / `--selector` / `--from-scan`, and each with `--rollback`: the fleet flow
//! (see [`crate::migrate::fleet`]).

use std::io::Read;
use std::process::ExitCode;

use kube::Client;

use super::common::{MigrateArgs, confirm, finish, options, print_event, print_plan};
use crate::migrate::fleet::{self, FleetEvent, FleetOptions};

pub async fn run(args: &MigrateArgs, client: &Client, namespace: &str) -> ExitCode {
    let opts = options(args);
    let claims = match &args.from_scan {
        Some(path) => match from_scan(path, args) {
            Ok(claims) => claims,
            Err(e) => {
                eprintln!("rwop-guard migrate: {e:#}");
                return ExitCode::from(crate::cli::EXIT_UNUSABLE);
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
    for (ns, sts) in &found.statefulsets {
        eprintln!(
            "StatefulSet {ns}/{sts} is a candidate too: its claims move with its templates, run: {} migrate --statefulset {ns}/{sts}",
            crate::program_name()
        );
    }
    Ok(found.claims)
}
