//! `migrate --all` / `--selector`: many claims of one namespace. Every claim is planned first
//! with the single-claim [`prepare`] (the same judgement, the same recorded state), then the
//! accepted ones run with bounded concurrency.
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

use super::{
    MigrateError, MigrateOptions, MigrationState, Plan, Progress, RunPlan, STEPS, api_err, prepare,
    steps,
};

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

/// One claim of the plan.
#[derive(Clone, Debug)]
pub enum Entry {
    Run { claim: String, plan: Box<RunPlan> },
    AlreadyMigrated { claim: String, volume: String },
    Refused { claim: String, reason: String },
}

impl Entry {
    pub fn claim(&self) -> &str {
        match self {
            Entry::Run { claim, .. }
            | Entry::AlreadyMigrated { claim, .. }
            | Entry::Refused { claim, .. } => claim,
        }
    }

    /// One line each: claim, volume, consumers, what happens or why not.
    pub fn row(&self) -> [String; 4] {
        match self {
            Entry::Run { claim, plan } => {
                let mut consumers: Vec<String> =
                    plan.state.consumers.iter().map(|c| c.to_string()).collect();
                consumers.extend(plan.state.deleted_pods.iter().map(|p| format!("Pod {p}")));
                let consumers = if consumers.is_empty() {
                    "-".to_owned()
                } else {
                    consumers.join(", ")
                };
                let action = if plan.state.completed > 0 {
                    format!(
                        "resume at step {} of {}",
                        plan.state.completed + 1,
                        STEPS.len()
                    )
                } else {
                    format!("migrate to [{}]", plan.state.target)
                };
                [claim.clone(), plan.volume.clone(), consumers, action]
            }
            Entry::AlreadyMigrated { claim, volume } => [
                claim.clone(),
                volume.clone(),
                "-".to_owned(),
                "already migrated; nothing to do".to_owned(),
            ],
            Entry::Refused { claim, reason } => [
                claim.clone(),
                "-".to_owned(),
                "-".to_owned(),
                format!("refused: {reason}"),
            ],
        }
    }
}

/// Every claim of the run, and the groups (indices into `entries`, only [`Entry::Run`]) that
/// share consumers.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    pub namespace: String,
    pub entries: Vec<Entry>,
    pub groups: Vec<Vec<usize>>,
}

/// How a claim ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Migrated,
    AlreadyMigrated,
    Refused(String),
    Failed(String),
    /// Not started (or stopped between steps) because another claim failed.
    NotStarted(String),
}

/// What a fleet run reports.
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
    pub migrated: usize,
    pub already_migrated: usize,
    pub refused: usize,
    pub failed: usize,
    pub not_started: usize,
}

impl Summary {
    pub fn of(outcomes: &[(String, Outcome)]) -> Self {
        let mut s = Summary::default();
        for (_, o) in outcomes {
            match o {
                Outcome::Migrated => s.migrated += 1,
                Outcome::AlreadyMigrated => s.already_migrated += 1,
                Outcome::Refused(_) => s.refused += 1,
                Outcome::Failed(_) => s.failed += 1,
                Outcome::NotStarted(_) => s.not_started += 1,
            }
        }
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} migrated, {} already done, {} refused, {} failed, {} not started",
            self.migrated, self.already_migrated, self.refused, self.failed, self.not_started
        )
    }
}

/// The claims of `namespace` (those matching `selector`, if given), plus every claim of the
/// namespace whose migration is recorded on a volume (a claim deleted mid-migration is resumed).
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
        if let Some(state) = MigrationState::read(&pv)?
            && state.namespace == namespace
        {
            names.insert(state.claim);
        }
    }
    Ok(names.into_iter().collect())
}

/// Plans every claim through [`prepare`] (read-only). Warnings are reported per claim.
pub async fn plan(
    client: &Client,
    namespace: &str,
    claims: &[String],
    opts: &MigrateOptions,
    report: &dyn Fn(FleetEvent),
) -> FleetPlan {
    let mut entries = Vec::new();
    for claim in claims {
        let mut progress = |p| {
            report(FleetEvent::Step {
                claim: claim.clone(),
                progress: p,
            })
        };
        let entry = match prepare(client, namespace, claim, opts, &mut progress).await {
            Ok(Plan::Run(plan)) => Entry::Run {
                claim: claim.clone(),
                plan,
            },
            Ok(Plan::AlreadyMigrated { volume }) => Entry::AlreadyMigrated {
                claim: claim.clone(),
                volume,
            },
            Err(e) => Entry::Refused {
                claim: claim.clone(),
                reason: e.to_string(),
            },
        };
        entries.push(entry);
    }
    let groups = group(&mut entries);
    FleetPlan {
        namespace: namespace.to_owned(),
        entries,
        groups,
    }
}

/// What ties claims together: their scalable consumers and the bare pods they delete.
fn consumer_keys(state: &MigrationState) -> Vec<String> {
    let mut keys: Vec<String> = state.consumers.iter().map(|c| c.to_string()).collect();
    keys.extend(state.deleted_pods.iter().map(|p| format!("Pod {p}")));
    keys
}

/// Groups the runnable entries by shared consumers (union-find), and gives the claims of a group
/// one replica count per consumer to restore: a recorded one if any claim recorded it already
/// (a fresh preflight after an interrupted run could see the consumer at 0), else the largest.
fn group(entries: &mut [Entry]) -> Vec<Vec<usize>> {
    let runnable: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| matches!(e, Entry::Run { .. }).then_some(i))
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
        let Entry::Run { plan, .. } = &entries[i] else {
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
            if let Entry::Run { plan, .. } = &entries[i] {
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
            if let Entry::Run { plan, .. } = &mut entries[i]
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

/// Where the claims of a group wait for each other: after recording, after scaling down, after
/// being bound, and at the end.
const PHASES: [usize; 4] = [1, 3, 8, STEPS.len()];

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
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.entries.len()];
    for (i, e) in plan.entries.iter().enumerate() {
        match e {
            Entry::AlreadyMigrated { .. } => outcomes[i] = Some(Outcome::AlreadyMigrated),
            Entry::Refused { reason, .. } => outcomes[i] = Some(Outcome::Refused(reason.clone())),
            Entry::Run { .. } => {}
        }
    }
    let mut runs: Vec<Option<(String, RunPlan)>> = plan
        .entries
        .iter()
        .map(|e| match e {
            Entry::Run { claim, plan } => Some((claim.clone(), (**plan).clone())),
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
                e.claim().to_owned(),
                o.unwrap_or_else(|| Outcome::NotStarted("not started".to_owned())),
            )
        })
        .collect()
}

fn o_is_ok(o: &Outcome) -> bool {
    matches!(o, Outcome::Migrated | Outcome::AlreadyMigrated)
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
    'phases: for until in PHASES {
        for (_, claim, plan, outcome) in members.iter_mut() {
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
                None => Outcome::Migrated,
            });
            report(FleetEvent::Finished {
                claim,
                outcome: outcome.clone(),
            });
            (i, outcome)
        })
        .collect()
}
