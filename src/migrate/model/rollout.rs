//! Rollout arithmetic: whether a workload can run its pods on a single-pod (ReadWriteOncePod)
//! volume. What `scan` reports as a rollout deadlock on a ReadWriteOncePod claim is what
//! `migrate` refuses to create.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::facts::Workload;
use super::workloads::WorkloadKind;

/// Why a workload cannot run its pods with a single-pod volume: too many replicas, a rolling
/// update that starts new pods before old ones stop, or both.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRisk {
    pub replicas: i32,
    /// The strategy, described, when its rollouts start new pods before old ones stop.
    pub surge: Option<String>,
}

impl RolloutRisk {
    pub fn of(d: &Deployment) -> Option<RolloutRisk> {
        Self::of_workload(&Workload::from_deployment(d))
    }

    /// StatefulSets replace a pod only after the old one is gone, and the other kinds do not
    /// roll: for them only the number of pods at once matters (a Job's parallelism). A
    /// StatefulSet's claim from its `volumeClaimTemplates` is one pod's.
    pub fn of_workload(w: &Workload) -> Option<RolloutRisk> {
        if w.claim_template.is_some() {
            return None;
        }
        let surge = match w.kind {
            WorkloadKind::Deployment => surge_of(w.strategy.as_ref(), w.replicas),
            _ => None,
        };
        (w.replicas > 1 || surge.is_some()).then_some(RolloutRisk {
            replicas: w.replicas,
            surge,
        })
    }

    /// What happens and what to do, after "mounts ReadWriteOncePod claim(s) …".
    pub fn explain(&self) -> String {
        match (&self.surge, self.replicas > 1) {
            (Some(strategy), true) => format!(
                "with {} replicas and strategy {strategy}: only one pod at a time can use the \
                 volume, so the other replicas stay Pending and rollouts hang; set replicas: 1 and \
                 strategy: Recreate, or use a StatefulSet with volumeClaimTemplates (one claim per pod)",
                self.replicas
            ),
            (None, _) => format!(
                "with {} replicas: only one pod at a time can use the volume, so the other \
                 replicas stay Pending; set replicas: 1, or use a StatefulSet with \
                 volumeClaimTemplates (one claim per pod)",
                self.replicas
            ),
            (Some(strategy), false) => format!(
                "with strategy {strategy}: a rollout starts the new pod while the old one still \
                 holds the volume, and the new pod cannot mount it, so the rollout hangs; set \
                 strategy: Recreate (or rollingUpdate.maxSurge: 0)"
            ),
        }
    }

    /// The same, short.
    pub fn short(&self) -> String {
        match (&self.surge, self.replicas > 1) {
            (Some(strategy), true) => {
                format!("{} replicas, strategy {strategy}", self.replicas)
            }
            (None, _) => format!("{} replicas", self.replicas),
            (Some(strategy), false) => format!("strategy {strategy}"),
        }
    }
}

/// The strategy, described, when a rollout of a Deployment with `replicas` surges.
fn surge_of(strategy: Option<&DeploymentStrategy>, replicas: i32) -> Option<String> {
    let kind = strategy.and_then(|s| s.type_.as_deref());
    if kind == Some("Recreate") {
        return None;
    }
    let raw = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone())
        .unwrap_or_else(|| IntOrString::String("25%".to_owned()));
    // Scaled like the Deployment controller (percentages round up), on at least one replica: a
    // Deployment scaled to 0 rolls again once it is scaled back up.
    let value = scaled_surge(&raw, replicas.max(1));
    let shown = match &raw {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let name = match kind {
        None => "RollingUpdate (the default)".to_owned(),
        Some(k) => k.to_owned(),
    };
    (value != 0).then(|| format!("{name}, maxSurge {shown}"))
}

/// A strategy, described (`Recreate`, `RollingUpdate, maxSurge 25%`).
pub fn describe_strategy(strategy: Option<&DeploymentStrategy>) -> String {
    match strategy.and_then(|s| s.type_.as_deref()) {
        Some("Recreate") => "Recreate".to_owned(),
        kind => {
            let surge = strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_surge.clone());
            let name = kind.unwrap_or("RollingUpdate (the default)");
            match surge {
                Some(IntOrString::Int(n)) => format!("{name}, maxSurge {n}"),
                Some(IntOrString::String(s)) => format!("{name}, maxSurge {s}"),
                None => format!("{name}, maxSurge 25%"),
            }
        }
    }
}

/// maxSurge as a number of pods: `IntOrString` scaled on `replicas`, percentages rounded up.
/// An unreadable value counts as surging (the safe assumption).
fn scaled_surge(value: &IntOrString, replicas: i32) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(percent) => {
                let pods = (percent * i64::from(replicas) + 99).div_euclid(100);
                i32::try_from(pods).unwrap_or(i32::MAX)
            }
            None => 1,
        },
    }
}
