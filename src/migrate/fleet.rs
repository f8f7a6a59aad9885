//! `migrate --all` / `--selector` / `--from-scan`: many claims, of one namespace or (from a scan
//! of all namespaces) several. Every claim is planned first with the single-claim [`prepare`]
//! (the same judgement on the live objects, the same recorded state), then the accepted ones run
//! with bounded concurrency. With `--rollback` the same flow rolls back every claim with a
//! recorded or finished migration.
//!
//! Claims that share a consumer (a Deployment, StatefulSet, ReplicaSet, or a bare pod mounting
//! several of them) form a group. A group is one unit of concurrency and its claims advance in
//! lockstep: every claim records its state, then every claim scales its consumers down, then each
//! claim is swapped, and only when all are bound are the consumers restored. So a shared consumer
//! goes to zero once and comes back once, and is never restored while another claim of it is
//! still being swapped. Groups never share a consumer, so they run concurrently safely.
//!
//! Resuming: every claim's progress is on its volume; a second run finds the claims again (and
//! claims deleted mid-migration through the state recorded on their volumes) and goes on.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::ListParams;
use kube::{Api, Client};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    MigrateError, MigrateOptions, MigrationState, Plan, Progress, RunPlan, api_err, locate,
    prepare, steps,
};
use crate::policy::{AccessMode, MIGRATED_FROM_ANNOTATION};
use crate::scan::ScanRule;

/// How the fleet runs.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Groups of claims migrated at the same time (at least 1).
    pub concurrency: usize,
    /// Keep starting claims after one failed.
    pub continue_on_error: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            continue_on_error: false,
        }
    }
}

/// One claim of the plan: where it is and what happens to it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub namespace: String,
    pub claim: String,
    pub action: Action,
}

/// What the run does with a claim, as judged on the live objects when the plan is made.
#[derive(Clone, Debug)]
pub enum Action {
    Run(Box<RunPlan>),
    /// Forward: claim and volume are already [ReadWriteOncePod] and bound.
    AlreadyMigrated {
        volume: String,
    },
    /// Rollback: no migration is recorded or marked on the claim's volume (or it has none).
    NotMigrated {
        volume: Option<String>,
    },
    Refused {
        reason: String,
    },
}

impl Entry {
    /// `namespace/claim`: how events and outcomes name the claim.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.claim)
    }

    /// One line each: claim, volume, consumers, what happens or why not.
    pub fn row(&self) -> [String; 4] {
        let claim = self.claim.clone();
        match &self.action {
            Action::Run(plan) => {
                let mut consumers: Vec<String> =
                    plan.state.consumers.iter().map(|c| c.to_string()).collect();
                consumers.extend(plan.state.deleted_pods.iter().map(|p| format!("Pod {p}")));
                let consumers = if consumers.is_empty() {
                    "-".to_owned()
                } else {
                    consumers.join(", ")
                };
                let verb = if plan.state.is_rollback() {
                    "roll back"
                } else {
                    "migrate"
                };
                let action = if plan.state.completed > 0 {
                    format!(
                        "resume ({verb} to [{}]) at step {} of {}",
                        plan.state.target,
                        plan.state.completed + 1,
                        plan.state.steps().len()
                    )
                } else {
                    format!("{verb} to [{}]", plan.state.target)
                };
                [claim, plan.volume.clone(), consumers, action]
            }
            Action::AlreadyMigrated { volume } => [
                claim,
                volume.clone(),
                "-".to_owned(),
                "already migrated; nothing to do".to_owned(),
            ],
            Action::NotMigrated { volume } => [
                claim,
                volume.clone().unwrap_or_else(|| "-".to_owned()),
                "-".to_owned(),
                "not migrated by rwop-guard; nothing to roll back".to_owned(),
            ],
            Action::Refused { reason } => [
                claim,
                "-".to_owned(),
                "-".to_owned(),
                format!("refused: {reason}"),
            ],
        }
    }
}

/// Every claim of the run, and the groups (indices into `entries`, only [`Action::Run`]) that
/// share consumers.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    /// A rollback to [ReadWriteOnce] (`--rollback`), not a migration.
    pub rollback: bool,
    pub entries: Vec<Entry>,
    pub groups: Vec<Vec<usize>>,
}

impl FleetPlan {
    /// The namespaces of the claims, sorted, once each.
    pub fn namespaces(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.entries.iter().map(|e| e.namespace.as_str()).collect();
        set.into_iter().collect()
    }

    /// The outcome of every entry that does not run.
    fn settled(&self) -> Vec<Option<Outcome>> {
        self.entries
            .iter()
            .map(|e| match &e.action {
                Action::Run(_) => None,
                Action::AlreadyMigrated { .. } => Some(Outcome::NothingToDo(
                    "already migrated; nothing to do".to_owned(),
                )),
                Action::NotMigrated { .. } => Some(Outcome::NothingToDo(
                    "not migrated by rwop-guard; nothing to roll back".to_owned(),
                )),
                Action::Refused { reason } => Some(Outcome::Refused(reason.clone())),
            })
            .collect()
    }

    /// The outcomes when nothing runs (every entry settled at planning).
    pub fn outcomes_without_run(&self) -> Vec<(String, Outcome)> {
        self.entries
            .iter()
            .zip(self.settled())
            .map(|(e, o)| {
                (
                    e.id(),
                    o.unwrap_or_else(|| Outcome::NotStarted("not started".to_owned())),
                )
            })
            .collect()
    }
}

/// How a claim ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Migrated, or rolled back for a rollback.
    Done,
    /// Already migrated (forward), or never migrated (rollback).
    NothingToDo(String),
    Refused(String),
    Failed(String),
    /// Not started (or stopped between steps) because another claim failed.
    NotStarted(String),
}

/// What a fleet run reports. `claim` is `namespace/claim`.
#[derive(Clone, Debug, PartialEq)]
pub enum FleetEvent {
    /// A claim's group starts.
    Started {
        claim: String,
    },
    Step {
        claim: String,
        progress: Progress,
    },
    Finished {
        claim: String,
        outcome: Outcome,
    },
}

/// Counts for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub rollback: bool,
    pub done: usize,
    pub nothing_to_do: usize,
    pub refused: usize,
    pub failed: usize,
    pub not_started: usize,
}

impl Summary {
    pub fn of(rollback: bool, outcomes: &[(String, Outcome)]) -> Self {
        let mut s = Summary {
            rollback,
            ..Summary::default()
        };
        for (_, o) in outcomes {
            match o {
                Outcome::Done => s.done += 1,
                Outcome::NothingToDo(_) => s.nothing_to_do += 1,
                Outcome::Refused(_) => s.refused += 1,
                Outcome::Failed(_) => s.failed += 1,
                Outcome::NotStarted(_) => s.not_started += 1,
            }
        }
        s
    }

    /// Whether every claim ended well (done or nothing to do).
    pub fn all_ok(&self) -> bool {
        self.refused == 0 && self.failed == 0 && self.not_started == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (done, nothing) = if self.rollback {
            ("rolled back", "not migrated")
        } else {
            ("migrated", "already done")
        };
        write!(
            f,
            "{} {done}, {} {nothing}, {} refused, {} failed, {} not started",
            self.done, self.nothing_to_do, self.refused, self.failed, self.not_started
        )
    }
}

/// The claims of `namespace` (those matching `selector`, if given), plus every claim of the
/// namespace whose migration is recorded on a volume and that is gone (deleted mid-migration:
/// it is resumed, or rolled back). Without a selector, every recorded claim is one of them anyway;
/// with one, a recorded claim that exists and does not match stays out.
pub async fn claims_of(
    client: &Client,
    namespace: &str,
    selector: Option<&str>,
) -> Result<Vec<String>, MigrateError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let mut params = ListParams::default();
    if let Some(s) = selector {
        params = params.labels(s);
    }
    let mut names = BTreeSet::new();
    let mut continue_token: Option<String> = None;
    loop {
        let mut page = params.clone().limit(500);
        if let Some(token) = &continue_token {
            page = page.continue_token(token);
        }
        let list = claims.list(&page).await.map_err(api_err(format!(
            "cannot list claims of namespace {namespace}"
        )))?;
        names.extend(list.items.into_iter().filter_map(|c| c.metadata.name));
        continue_token = list.metadata.continue_.filter(|t| !t.is_empty());
        if continue_token.is_none() {
            break;
        }
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for pv in super::list_all(&volumes, "persistentvolumes").await? {
        let Some(state) = MigrationState::read(&pv)? else {
            continue;
        };
        if state.namespace != namespace || names.contains(&state.claim) {
            continue;
        }
        let take = selector.is_none()
            || claims
                .get_opt(&state.claim)
                .await
                .map_err(api_err(format!(
                    "cannot read claim {namespace}/{}",
                    state.claim
                )))?
                .is_none();
        if take {
            names.insert(state.claim);
        }
    }
    Ok(names.into_iter().collect())
}

/// The part of `rwop-guard scan -o json` output `--from-scan` reads (the rest is ignored).
#[derive(Debug, Deserialize)]
struct ScanOutput {
    /// The namespace scanned; null for all namespaces.
    namespace: Option<String>,
    // Present in every scan output: required, so that other JSON is not taken for a scan.
    #[allow(dead_code)]
    scanned: IgnoredAny,
    #[allow(dead_code)]
    summary: IgnoredAny,
    findings: Vec<ScanFinding>,
}

#[derive(Debug, Deserialize)]
struct ScanFinding {
    rule: String,
    object: ScanObject,
}

#[derive(Debug, Deserialize)]
struct ScanObject {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

/// The migration candidates of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanCandidates {
    /// The namespace the scan covered; `None` for all namespaces.
    pub scanned_namespace: Option<String>,
    /// (namespace, claim), in the scan's order.
    pub claims: Vec<(String, String)>,
}

/// Why a `--from-scan` file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScanFileError {
    #[error(
        "{source_name} is not the output of `rwop-guard scan -o json` ({reason}); run `rwop-guard scan -o json > FILE` and pass that file"
    )]
    NotScanOutput { source_name: String, reason: String },
    #[error(
        "{source_name} is a scan of namespace {scanned}, not of {wanted}: drop --namespace, or scan namespace {wanted}"
    )]
    OtherNamespace {
        source_name: String,
        scanned: String,
        wanted: String,
    },
}

/// Reads the migration candidates (rule `migration-candidate`, PersistentVolumeClaims) out of
/// `scan -o json` output. `namespace`: only that namespace's candidates (a scan of another
/// namespace is an error). `source_name` names the input in errors.
pub fn candidates_from_scan(
    text: &str,
    source_name: &str,
    namespace: Option<&str>,
) -> Result<ScanCandidates, ScanFileError> {
    let not_scan = |reason: String| ScanFileError::NotScanOutput {
        source_name: source_name.to_owned(),
        reason,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let scan: ScanOutput = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            not_scan(inner.to_string())
        } else {
            not_scan(format!("at {path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| not_scan(e.to_string()))?;
    if let (Some(scanned), Some(wanted)) = (&scan.namespace, namespace)
        && scanned != wanted
    {
        return Err(ScanFileError::OtherNamespace {
            source_name: source_name.to_owned(),
            scanned: scanned.clone(),
            wanted: wanted.to_owned(),
        });
    }
    let mut seen = BTreeSet::new();
    let mut claims = Vec::new();
    for (i, f) in scan.findings.into_iter().enumerate() {
        if f.rule != ScanRule::MigrationCandidate.as_str() {
            continue;
        }
        let (Some("PersistentVolumeClaim"), Some(ns), Some(name)) = (
            f.object.kind.as_deref(),
            f.object.namespace.filter(|n| !n.is_empty()),
            f.object.name.filter(|n| !n.is_empty()),
        ) else {
            return Err(not_scan(format!(
                "findings[{i}] is a migration candidate but not a PersistentVolumeClaim with namespace and name"
            )));
        };
        if namespace.is_some_and(|wanted| wanted != ns) {
            continue;
        }
        if seen.insert((ns.clone(), name.clone())) {
            claims.push((ns, name));
        }
    }
    Ok(ScanCandidates {
        scanned_namespace: scan.namespace,
        claims,
    })
}

/// Whether the volume carries the marker a finished migration leaves.
fn marked(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIGRATED_FROM_ANNOTATION))
        .is_some_and(|v| v == AccessMode::ReadWriteOnce.as_str())
}

/// What happens to one claim: the single-claim [`prepare`]; for a rollback, a claim with
/// neither a recorded state nor the marker of a finished migration is not migrated.
async fn plan_one(
    client: &Client,
    namespace: &str,
    claim: &str,
    opts: &MigrateOptions,
    progress: &mut dyn FnMut(Progress),
) -> Action {
    if opts.rollback {
        match locate(client, namespace, claim).await {
            Ok(located) if located.state.is_none() && !marked(&located.volume) => {
                return Action::NotMigrated {
                    volume: located.volume.metadata.name,
                };
            }
            Ok(_) => {}
            // Not found or not bound, and no volume records a migration of it.
            Err(MigrateError::Refused(_)) => return Action::NotMigrated { volume: None },
            Err(e) => {
                return Action::Refused {
                    reason: e.to_string(),
                };
            }
        }
    }
    match prepare(client, namespace, claim, opts, progress).await {
        Ok(Plan::Run(plan)) => Action::Run(plan),
        Ok(Plan::AlreadyMigrated { volume }) => Action::AlreadyMigrated { volume },
        Err(e) => Action::Refused {
            reason: e.to_string(),
        },
    }
}

/// Plans every claim, (namespace, name), through [`prepare`] (read-only): the live objects are
/// judged again, whatever listed the claims. Warnings are reported per claim.
pub async fn plan(
    client: &Client,
    claims: &[(String, String)],
    opts: &MigrateOptions,
    report: &dyn Fn(FleetEvent),
) -> FleetPlan {
    let mut entries = Vec::new();
    for (namespace, claim) in claims {
        let id = format!("{namespace}/{claim}");
        let mut progress = |p| {
            report(FleetEvent::Step {
                claim: id.clone(),
                progress: p,
            })
        };
        let action = plan_one(client, namespace, claim, opts, &mut progress).await;
        entries.push(Entry {
            namespace: namespace.clone(),
            claim: claim.clone(),
            action,
        });
    }
    let groups = group(&mut entries);
    FleetPlan {
        rollback: opts.rollback,
        entries,
        groups,
    }
}

/// What ties claims together: their scalable consumers and the bare pods they delete.
fn consumer_keys(state: &MigrationState) -> Vec<String> {
    let ns = &state.namespace;
    let mut keys: Vec<String> = state
        .consumers
        .iter()
        .map(|c| format!("{ns}/{c}"))
        .collect();
    keys.extend(state.deleted_pods.iter().map(|p| format!("{ns}/Pod {p}")));
    keys
}

/// Groups the runnable entries by shared consumers (union-find), and gives the claims of a group
/// one replica count per consumer to restore: a recorded one if any claim recorded it already
/// (a fresh preflight after an interrupted run could see the consumer at 0), else the largest.
fn group(entries: &mut [Entry]) -> Vec<Vec<usize>> {
    let runnable: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| matches!(e.action, Action::Run(_)).then_some(i))
        .collect();
    let mut parent: BTreeMap<usize, usize> = runnable.iter().map(|&i| (i, i)).collect();
    fn root(parent: &BTreeMap<usize, usize>, mut i: usize) -> usize {
        while let Some(&p) = parent.get(&i) {
            if p == i {
                break;
            }
            i = p;
        }
        i
    }
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &runnable {
        let Action::Run(plan) = &entries[i].action else {
            continue;
        };
        for key in consumer_keys(&plan.state) {
            match owner.get(&key) {
                Some(&j) => {
                    let (a, b) = (root(&parent, i), root(&parent, j));
                    if a != b {
                        parent.insert(a.max(b), a.min(b));
                    }
                }
                None => {
                    owner.insert(key, i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in &runnable {
        groups.entry(root(&parent, i)).or_default().push(i);
    }
    for members in groups.values() {
        let mut replicas: BTreeMap<String, (bool, i32)> = BTreeMap::new();
        for &i in members {
            if let Action::Run(plan) = &entries[i].action {
                let recorded = plan.state.completed > 0;
                for c in &plan.state.consumers {
                    let e = replicas
                        .entry(c.to_string())
                        .or_insert((recorded, c.replicas));
                    if (recorded && !e.0) || (recorded == e.0 && c.replicas > e.1) {
                        *e = (recorded, c.replicas);
                    }
                }
            }
        }
        for &i in members {
            if let Action::Run(plan) = &mut entries[i].action
                && plan.state.completed == 0
            {
                for c in &mut plan.state.consumers {
                    if let Some((_, r)) = replicas.get(&c.to_string()) {
                        c.replicas = *r;
                    }
                }
            }
        }
    }
    groups.into_values().collect()
}

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
            let result = run_group(client, members, opts, report, after_step).await;
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
    // Where the claims wait for each other: [`steps::phase_end`].
    'phases: for phase in 0..steps::PHASES {
        for (_, claim, plan, outcome) in members.iter_mut() {
            let until = steps::phase_end(plan.state.steps(), phase);
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
            let result = steps::execute(
                client,
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
