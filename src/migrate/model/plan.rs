//! What a run will do and how it went: the options, the plan of one claim ([`Plan`]) and of many
//! ([`FleetPlan`], claims grouped by shared consumers), the progress reported as it goes, and the
//! outcomes. The flows of one claim, a fleet and a StatefulSet all speak these types, so none of
//! them imports another. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::state::MigrationState;
use super::steps::{Step, StepStatus};

/// Knobs of a run.
pub struct MigrateOptions {
    pub rollback: bool,
    /// Limit for each wait (pods gone, claim gone, claim bound).
    pub timeout: Duration,
    /// Continue with a volume that is not CSI (ReadWriteOncePod needs CSI).
    pub allow_non_csi: bool,
    /// Delete pods that mount the claim without a controller (they are not recreated).
    pub allow_delete_pods: bool,
    /// Switch Deployments whose rollouts would surge to `Recreate` (else they are refused).
    pub switch_to_recreate: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            rollback: false,
            timeout: Duration::from_secs(300),
            allow_non_csi: false,
            allow_delete_pods: false,
            switch_to_recreate: false,
        }
    }
}

/// What a run reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Warning(String),
    Started {
        step: Step,
        index: usize,
        total: usize,
        what: String,
    },
    Done {
        step: Step,
        elapsed: Duration,
    },
    Skipped {
        step: Step,
        why: String,
    },
}

/// What a run will do, as the user confirms it and as [`execute`](crate::migrate::execute) runs it.
#[derive(Clone, Debug)]
pub enum Plan {
    Run(Box<RunPlan>),
    /// Claim and volume are already [ReadWriteOncePod] and bound: nothing to do.
    AlreadyMigrated {
        volume: String,
    },
}

#[derive(Clone, Debug)]
pub struct RunPlan {
    pub volume: String,
    pub state: MigrationState,
    /// Per step: done, already in place on the live objects (and why), or to do.
    pub status: Vec<StepStatus>,
}

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
    pub fn settled(&self) -> Vec<Option<Outcome>> {
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
pub fn group(entries: &mut [Entry]) -> Vec<Vec<usize>> {
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
