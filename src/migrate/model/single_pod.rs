//! Whether a workload's pods can run on ReadWriteOncePod claims, which one pod in the whole
//! cluster may use at a time. One judgement, three callers:
//! - `migrate`'s preflight ([`judge`](super::eligibility::judge)) refuses to make a claim
//!   ReadWriteOncePod under a workload that [`SinglePod::of`] says cannot run on it;
//! - `scan` reports every workload that already mounts such claims and cannot run
//!   ([`trouble`], rule `rollout-deadlock`);
//! - the webhook warns (or denies) when such a workload is applied (rule W2, the same
//!   [`trouble`] and its words), and mutation M1 leaves a claim [ReadWriteOnce] when a workload
//!   that mounts it could not run with it.
//!
//! Pure: the callers bring the workloads (listed, live or cached) and the claims' other users.

use super::facts::Workload;
use super::rollout::RolloutRisk;
use super::workloads::WorkloadKind;

/// What keeps one workload's pods from sharing a single-pod volume, by the workload alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinglePod {
    /// A DaemonSet: one pod per node, and only one of them can use the volume.
    pub every_node: bool,
    /// Too many pods at once, or a rollout that starts the new pod before the old one stops.
    pub rollout: Option<RolloutRisk>,
    /// A CronJob whose runs may overlap: a run waits (Pending) until the previous one ends.
    pub overlapping_runs: bool,
}

impl SinglePod {
    pub fn of(w: &Workload) -> SinglePod {
        SinglePod {
            every_node: w.kind == WorkloadKind::DaemonSet,
            rollout: RolloutRisk::of_workload(w),
            overlapping_runs: w.kind == WorkloadKind::CronJob && w.overlapping_runs,
        }
    }
}

/// What a workload meets on the ReadWriteOncePod claims it mounts: `blocking`, pods that stay
/// Pending for good or a rollout that hangs; `cautions`, pods that wait their turn. Each is a
/// phrase after the workload's name ("mounts ReadWriteOncePod claim …"), in `scan`'s words.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trouble {
    pub blocking: Vec<String>,
    pub cautions: Vec<String>,
}

impl Trouble {
    pub fn is_empty(&self) -> bool {
        self.blocking.is_empty() && self.cautions.is_empty()
    }

    /// Every phrase, blocking first, joined for one line.
    pub fn detail(&self) -> String {
        let all: Vec<&str> = self
            .blocking
            .iter()
            .chain(&self.cautions)
            .map(String::as_str)
            .collect();
        all.join("; ")
    }
}

/// One ReadWriteOncePod claim a workload mounts, and the other workloads that mount it too.
#[derive(Clone, Debug)]
pub struct SharedClaim<'a> {
    pub name: &'a str,
    pub others: Vec<&'a Workload>,
}

/// What `user` meets on `claims` (the ReadWriteOncePod claims its pod template mounts); `None`
/// when it mounts none. A StatefulSet's claim from its `volumeClaimTemplates` is one pod's:
/// callers pass only the claims the pod template names.
pub fn trouble(user: &Workload, claims: &[SharedClaim<'_>]) -> Option<Trouble> {
    if claims.is_empty() {
        return None;
    }
    let names: Vec<String> = claims.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let mounts = format!(
        "mounts ReadWriteOncePod {} {}",
        if names.len() == 1 { "claim" } else { "claims" },
        names.join(", ")
    );
    let single = SinglePod::of(user);
    let mut found = Trouble::default();
    if let Some(risk) = &single.rollout {
        let many = matches!(user.kind, WorkloadKind::Job | WorkloadKind::CronJob);
        found.blocking.push(if many && risk.surge.is_none() {
            format!(
                "{mounts} with parallelism {}: only one pod at a time can use the volume, so the \
                 other pods stay Pending; set parallelism: 1",
                risk.replicas
            )
        } else {
            format!("{mounts} {}", risk.explain())
        });
    }
    if single.every_node {
        found.blocking.push(format!(
            "{mounts}: only one pod in the whole cluster can use it, so the DaemonSet's pods on \
             every other node stay Pending; use a ReadWriteOnce claim, or give each node a claim \
             of its own"
        ));
    }
    for claim in claims.iter().filter(|c| !c.others.is_empty()) {
        let others: Vec<String> = claim.others.iter().map(|w| w.describe()).collect();
        let batch = std::iter::once(user)
            .chain(claim.others.iter().copied())
            .any(|w| matches!(w.kind, WorkloadKind::Job | WorkloadKind::CronJob));
        let advice = if batch {
            "run the job's work inside the other workload's pod (a sidecar, or kubectl exec from \
             a CronJob), or use a ReadWriteOnce claim"
        } else {
            "run them in one pod, or use a ReadWriteOnce claim"
        };
        found.blocking.push(format!(
            "mounts ReadWriteOncePod claim \"{}\", which {} also {}: only one pod in the whole \
             cluster can use it, so whichever starts second stays Pending while the other runs; \
             {advice}",
            claim.name,
            others.join(" and "),
            if others.len() == 1 { "mounts" } else { "mount" },
        ));
    }
    if single.overlapping_runs {
        found.cautions.push(format!(
            "{mounts} and its runs can overlap (concurrencyPolicy: Allow, the default): a run \
             that starts while the previous one still runs stays Pending until it ends; set \
             concurrencyPolicy: Forbid"
        ));
    }
    (!found.is_empty()).then_some(found)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStrategy;

    use super::*;

    fn workload(kind: WorkloadKind, name: &str, replicas: i32) -> Workload {
        Workload {
            replicas,
            ..Workload::named(kind, name)
        }
    }

    fn recreate() -> Option<DeploymentStrategy> {
        Some(DeploymentStrategy {
            type_: Some("Recreate".into()),
            ..Default::default()
        })
    }

    fn one(name: &str) -> Vec<SharedClaim<'_>> {
        vec![SharedClaim {
            name,
            others: Vec::new(),
        }]
    }

    #[test]
    fn no_claim_no_trouble() {
        let d = workload(WorkloadKind::Deployment, "web", 3);
        assert_eq!(trouble(&d, &[]), None);
    }

    #[test]
    fn a_single_recreate_deployment_runs() {
        let d = Workload {
            strategy: recreate(),
            ..workload(WorkloadKind::Deployment, "web", 1)
        };
        assert_eq!(trouble(&d, &one("data")), None);
        assert_eq!(SinglePod::of(&d), SinglePod::default());
    }

    #[test]
    fn the_default_rolling_update_hangs() {
        let d = workload(WorkloadKind::Deployment, "web", 1);
        let t = trouble(&d, &one("data")).expect("trouble");
        assert_eq!(t.blocking.len(), 1);
        assert!(
            t.blocking[0].starts_with(
                "mounts ReadWriteOncePod claim \"data\" with strategy RollingUpdate (the \
                 default), maxSurge 25%"
            ),
            "{t:?}"
        );
        assert!(t.blocking[0].contains("strategy: Recreate"), "{t:?}");
    }

    #[test]
    fn replicas_of_any_kind_stay_pending() {
        for kind in [
            WorkloadKind::ReplicaSet,
            WorkloadKind::StatefulSet,
            WorkloadKind::ReplicationController,
        ] {
            let w = workload(kind.clone(), "many", 3);
            let t = trouble(&w, &one("data")).expect("trouble");
            assert!(t.blocking[0].contains("with 3 replicas"), "{kind}: {t:?}");
        }
        let job = workload(WorkloadKind::Job, "batch", 4);
        let t = trouble(&job, &one("data")).expect("trouble");
        assert!(t.blocking[0].contains("with parallelism 4"), "{t:?}");
        assert!(t.blocking[0].ends_with("set parallelism: 1"), "{t:?}");
    }

    #[test]
    fn a_daemonset_blocks_on_every_other_node() {
        let ds = workload(WorkloadKind::DaemonSet, "agent", 1);
        let t = trouble(&ds, &one("data")).expect("trouble");
        assert_eq!(t.blocking.len(), 1);
        assert!(t.blocking[0].contains("every other node"), "{t:?}");
        assert!(SinglePod::of(&ds).every_node);
    }

    #[test]
    fn a_shared_claim_names_the_other_user_and_the_batch_advice() {
        let backup = Workload {
            overlapping_runs: false,
            ..workload(WorkloadKind::CronJob, "backup", 1)
        };
        let db = Workload {
            strategy: recreate(),
            ..workload(WorkloadKind::Deployment, "db", 1)
        };
        let claims = vec![SharedClaim {
            name: "data",
            others: vec![&db],
        }];
        let t = trouble(&backup, &claims).expect("trouble");
        assert_eq!(t.blocking.len(), 1, "{t:?}");
        assert!(
            t.blocking[0].starts_with(
                "mounts ReadWriteOncePod claim \"data\", which Deployment db also mounts"
            ),
            "{t:?}"
        );
        assert!(t.blocking[0].contains("sidecar"), "{t:?}");
    }

    #[test]
    fn overlapping_cron_runs_are_a_caution_only() {
        let c = Workload {
            overlapping_runs: true,
            ..workload(WorkloadKind::CronJob, "report", 1)
        };
        let t = trouble(&c, &one("data")).expect("trouble");
        assert!(t.blocking.is_empty(), "{t:?}");
        assert_eq!(t.cautions.len(), 1);
        assert!(t.cautions[0].contains("concurrencyPolicy: Forbid"), "{t:?}");
    }

    #[test]
    fn a_statefulset_claim_template_is_one_pods() {
        let mut sts = workload(WorkloadKind::StatefulSet, "db", 3);
        sts.claim_template = Some(Default::default());
        assert_eq!(trouble(&sts, &one("data-db-0")), None);
    }
}
