use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::kube_args::KubeArgs;
use crate::migrate::{self, MigrateOptions, Plan, Progress, RunPlan, StepStatus, claim_to_create};

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
/// 0, the default; unless --switch-to-recreate), pods without a controller (unless
/// --allow-delete-pods), other controllers (DaemonSets, Jobs, operators), and autoscalers that
/// would scale a consumer from zero: HPAs with minReplicas 0, active KEDA ScaledObjects (pause
/// them with the annotation autoscaling.keda.sh/paused=true).
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
    #[arg(long, value_parser = super::parse_duration, default_value = "5m")]
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

pub fn run(args: &MigrateArgs, kube: &KubeArgs) -> ExitCode {
    let runtime = match super::runtime("migrate", false, ExitCode::from(super::EXIT_UNUSABLE)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(migrate(args, kube))
}

async fn migrate(args: &MigrateArgs, kube: &KubeArgs) -> ExitCode {
    let (client, context_ns) = match kube.client().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwop-guard migrate: {}", super::describe(&e));
            return ExitCode::from(super::EXIT_UNUSABLE);
        }
    };
    if let Some(arg) = args.statefulset.as_deref() {
        let Some((namespace, name)) = namespaced(arg, args, &context_ns) else {
            eprintln!("rwop-guard migrate: {arg:?} is not NAMESPACE/NAME");
            return ExitCode::from(super::EXIT_UNUSABLE);
        };
        return super::migrate_statefulset::run(args, &client, &namespace, &name).await;
    }
    let Some(claim_arg) = args.claim.as_deref() else {
        let namespace = args.namespace.clone().unwrap_or(context_ns);
        return super::migrate_fleet::run(args, &client, &namespace).await;
    };
    let Some((namespace, claim)) = namespaced(claim_arg, args, &context_ns) else {
        eprintln!("rwop-guard migrate: {claim_arg:?} is not NAMESPACE/CLAIM");
        return ExitCode::from(super::EXIT_UNUSABLE);
    };
    let opts = options(args);
    let mut report = |p: Progress| print_progress(&p);

    // The plan: from the recorded state, or from a read-only preflight. It is prepared once: what
    // is shown (and confirmed) is what runs.
    let plan = migrate::prepare(&client, &namespace, &claim, &opts, &mut report);
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
    match migrate::statefulset::template_warning(&client, &plan.state).await {
        Ok(Some(w)) => print_progress(&Progress::Warning(w)),
        Ok(None) => {}
        Err(e) => eprintln!("rwop-guard migrate: {e}"),
    }
    if let Some(exit) = stop_before_run(args) {
        return exit;
    }

    let volume = plan.volume.clone();
    let mut keep_going = |_| true;
    let run = migrate::execute(&client, plan, &opts, &mut report, &mut keep_going);
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

/// `NAMESPACE/NAME`, or `NAME` in -n's namespace or the context's.
fn namespaced(arg: &str, args: &MigrateArgs, context_ns: &str) -> Option<(String, String)> {
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

pub(super) fn options(args: &MigrateArgs) -> MigrateOptions {
    MigrateOptions {
        rollback: args.rollback,
        timeout: args.timeout,
        allow_non_csi: args.allow_non_csi,
        allow_delete_pods: args.allow_delete_pods,
        switch_to_recreate: args.switch_to_recreate,
    }
}

/// After the plan: how the command ends when the run stops there (`--dry-run`, or not confirmed).
pub(super) fn stop_before_run(args: &MigrateArgs) -> Option<ExitCode> {
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

pub(super) fn confirm() -> bool {
    eprint!("Proceed? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => matches!(line.trim(), "y" | "Y" | "yes"),
        _ => false,
    }
}

pub(super) fn print_progress(p: &Progress) {
    match p {
        Progress::Warning(w) => eprintln!("warning: {w}"),
        Progress::Started {
            index, total, what, ..
        } => eprint!("[{index}/{total}] {what} … "),
        Progress::Done { elapsed, .. } => eprintln!("done in {:.1}s", elapsed.as_secs_f64()),
        Progress::Skipped { why, .. } => eprintln!("skipped: {why}"),
    }
}
