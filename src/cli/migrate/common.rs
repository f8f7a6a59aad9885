//! What the three `migrate` commands share: the arguments, the confirmation, and how plans,
//! progress and outcomes are printed.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::kube_args::KubeArgs;
use crate::migrate::fleet::{FleetEvent, FleetPlan, Outcome, Summary};
use crate::migrate::{MigrateOptions, Progress};

/// Changes the access mode of a claim's PersistentVolume from [ReadWriteOnce] to
/// [ReadWriteOncePod]: the upstream manual task, automated, resumable and reversible.
///
/// Steps: record state on the volume -> reclaim policy Retain -> scale the claim's consumers
/// (Deployments, StatefulSets, ReplicaSets found through the pods mounting it) to 0 and wait ->
/// delete the claim (uid precondition) and wait -> clear claimRef.uid -> volume modes
/// [ReadWriteOncePod] -> recreate the claim with [ReadWriteOncePod] and volumeName -> wait Bound
/// -> restore replicas -> restore reclaim policy -> remove the state.
///
/// The volume is never deleted. If a run stops anywhere, run the same command again to resume, or
/// add --rollback to return to the starting point.
///
/// Refused before anything is written: claims not Bound or not exactly [ReadWriteOnce], non-CSI
/// volumes (unless --allow-non-csi), workloads with more than one replica (only one pod can use a
/// ReadWriteOncePod claim), Deployments whose rollouts would surge (RollingUpdate with maxSurge >
/// 0, the default; unless --switch-to-recreate), a claim two workloads use (whichever starts
/// second would stay Pending) or a DaemonSet mounts, pods without a controller (unless
/// --allow-delete-pods), pods of operators and ReplicationControllers, workloads an operator
/// manages, and autoscalers that would scale a consumer from zero: HPAs with minReplicas 0,
/// active KEDA ScaledObjects (pause them with the annotation autoscaling.keda.sh/paused=true).
/// A CronJob using the claim is suspended for the run and resumed after. `rwop-guard scan` says
/// the same of every claim.
///
/// The claim and volume keep the annotation rwop-guard.dev/migrated-from: ReadWriteOnce, so
/// re-applied [ReadWriteOnce] manifests keep [ReadWriteOncePod] (rule M2) and --rollback can
/// undo the migration also once it is complete. A claim already [ReadWriteOncePod] and bound to
/// a [ReadWriteOncePod] volume is left alone (exit 0).
///
/// Exit status: 0 done, nothing to do (or plan printed), 1 refused, failed or not confirmed, 2
/// unusable arguments or cluster access, 130 interrupted.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The claim, as NAMESPACE/NAME (or NAME with -n).
    #[arg(value_name = "NAMESPACE/CLAIM", required_unless_present_any = ["all", "selector", "from_scan", "statefulset"], conflicts_with_all = ["all", "selector", "from_scan", "statefulset"])]
    pub claim: Option<String>,
    /// Every claim of this StatefulSet's replicas (TEMPLATE-NAME-ORDINAL), as NAMESPACE/NAME (or
    /// NAME with -n), with one scale-down and one scale-up, and its volumeClaimTemplates:
    /// the StatefulSet is deleted with propagationPolicy Orphan (pods and claims are kept) and
    /// created again from its recorded manifest with [ReadWriteOncePod] templates. --rollback
    /// puts the original templates back the same way.
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with_all = ["all", "selector", "from_scan"])]
    pub statefulset: Option<String>,
    /// Every claim of the namespace: planned first (one table), confirmed once, then run with
    /// --concurrency. Claims sharing a consumer run together, as one group (scaled down once,
    /// restored once).
    #[arg(long)]
    pub all: bool,
    /// The claims of the namespace matching this label selector (as --all).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The migration candidates of `rwop-guard scan -o json` output in FILE (- for standard
    /// input, which then needs --yes or --dry-run), in every namespace the scan covered (with
    /// -n, only that one). Planned as --all: each claim judged again on the live objects.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["all", "selector"])]
    pub from_scan: Option<std::path::PathBuf>,
    /// With --all, --selector or --from-scan: how many groups of claims run at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// With --all, --selector or --from-scan: keep starting claims after one failed.
    #[arg(long)]
    pub continue_on_error: bool,
    /// Namespace of the claim when CLAIM has none, and of --all and --selector (default: the
    /// context's namespace). With --from-scan: only that namespace's candidates (default: every
    /// namespace the scan covered).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Print the plan (every step and the exact object changes) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Limit for each wait (pods gone, claim deleted, claim bound), e.g. 300s, 10m.
    #[arg(long, value_parser = crate::cli::parse_duration, default_value = "5m")]
    pub timeout: Duration,
    /// Undo a migration, interrupted, failed or complete: back to [ReadWriteOnce], claim bound,
    /// consumers, their strategies and the reclaim policy restored. With --all, --selector or
    /// --from-scan: every claim with a recorded or finished migration.
    #[arg(long)]
    pub rollback: bool,
    /// Switch Deployments whose rollouts would surge (RollingUpdate with maxSurge > 0, the
    /// default) to strategy Recreate, keeping the original in the annotation
    /// rwop-guard.dev/original-strategy (--rollback restores it). Without it they are refused.
    #[arg(long)]
    pub switch_to_recreate: bool,
    /// Continue although the volume is not a CSI volume (ReadWriteOncePod needs CSI).
    #[arg(long)]
    pub allow_non_csi: bool,
    /// Delete pods that mount the claim and have no controller (they are not recreated).
    #[arg(long)]
    pub allow_delete_pods: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `NAMESPACE/NAME`, or `NAME` in -n's namespace or the context's.
pub fn namespaced(arg: &str, args: &MigrateArgs, context_ns: &str) -> Option<(String, String)> {
    match arg.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Some((ns.to_owned(), name.to_owned()))
        }
        Some(_) => None,
        None => Some((
            args.namespace
                .clone()
                .unwrap_or_else(|| context_ns.to_owned()),
            arg.to_owned(),
        )),
    }
}

pub fn options(args: &MigrateArgs) -> MigrateOptions {
    MigrateOptions {
        rollback: args.rollback,
        timeout: args.timeout,
        allow_non_csi: args.allow_non_csi,
        allow_delete_pods: args.allow_delete_pods,
        switch_to_recreate: args.switch_to_recreate,
    }
}

/// After the plan: how the command ends when the run stops there (`--dry-run`, or not confirmed).
pub fn stop_before_run(args: &MigrateArgs) -> Option<ExitCode> {
    if args.dry_run {
        return Some(ExitCode::SUCCESS);
    }
    if !args.yes && !confirm() {
        eprintln!(
            "rwop-guard migrate: not confirmed; nothing changed (use --yes to skip the question)"
        );
        return Some(ExitCode::FAILURE);
    }
    None
}

pub fn confirm() -> bool {
    eprint!("Proceed? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => matches!(line.trim(), "y" | "Y" | "yes"),
        _ => false,
    }
}

pub fn print_progress(p: &Progress) {
    match p {
        Progress::Warning(w) => eprintln!("warning: {w}"),
        Progress::Started {
            index, total, what, ..
        } => eprint!("[{index}/{total}] {what} … "),
        Progress::Done { elapsed, .. } => eprintln!("done in {:.1}s", elapsed.as_secs_f64()),
        Progress::Skipped { why, .. } => eprintln!("skipped: {why}"),
    }
}

pub fn finish(rollback: bool, outcomes: &[(String, Outcome)], single: bool) -> ExitCode {
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

pub fn print_plan(plan: &FleetPlan) {
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

pub fn print_event(e: FleetEvent, single: bool, rollback: bool) {
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
