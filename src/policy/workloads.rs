//! Rule W2: a workload applied over ReadWriteOncePod claims its pods cannot share, and M1's look
//! before it rewrites a claim that a workload already mounts. Both ask the judgement `scan` and
//! `migrate` use ([`trouble`]), in its words; the facts (claims' modes, the workloads that mount
//! claims) come from the cluster caches.

use super::{AccessMode, ClusterFacts, Decision, Facts, Policy, WorkloadAction};
use crate::migrate::model::facts::Workload;
use crate::migrate::model::single_pod::{SharedClaim, Trouble, trouble};
use crate::migrate::model::workloads::{WorkloadInfo, WorkloadKind};

/// The audit annotation key of W2's findings.
pub const W2_AUDIT_KEY: &str = "w2";

/// A ReplicaSet or Job with a controller (a Deployment's, a CronJob's), or a pod with one, runs
/// its controller's template: the controller was judged when it was written.
pub fn runs_a_controllers_template(w: &WorkloadInfo) -> bool {
    w.owner.is_some()
        && matches!(
            w.kind,
            WorkloadKind::ReplicaSet | WorkloadKind::Job | WorkloadKind::Pod
        )
}

/// W2 on the CREATE or UPDATE of `written` (its namespace filled in from the request).
pub fn validate_workload(policy: &Policy, facts: &Facts, written: &WorkloadInfo) -> Decision {
    let action = policy.workloads.action;
    if action == WorkloadAction::Off || written.claims.is_empty() {
        return Decision::allow();
    }
    if runs_a_controllers_template(written) {
        return Decision::allow_because(format!(
            "runs the template of its controller {}",
            written
                .owner
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ));
    }
    let Some(cluster) = facts.cluster.as_ref() else {
        return Decision::allow_because(
            "the claims' access modes are unknown (no cluster facts), so W2 was not checked",
        );
    };
    let rwop: Vec<&str> = written
        .claims
        .iter()
        .filter(|c| {
            cluster
                .claim_modes(&written.namespace, c)
                .is_some_and(|m| m.contains(AccessMode::ReadWriteOncePod))
        })
        .map(String::as_str)
        .collect();
    let others = other_users(cluster, written);
    let Some(found) = judge(written, &rwop, &others) else {
        return Decision::allow();
    };
    let subject = format!(
        "{} \"{}/{}\"",
        written.kind, written.namespace, written.name
    );
    let mut decision = Decision::allow();
    decision
        .audit
        .insert(W2_AUDIT_KEY.to_owned(), found.detail());
    if action == WorkloadAction::Deny && !found.blocking.is_empty() {
        decision.allowed = false;
        decision.message = Some(format!("{subject}: {}", found.blocking.join("; ")));
        decision.warnings = found
            .cautions
            .iter()
            .map(|c| format!("{subject}: {c}"))
            .collect();
    } else {
        decision.warnings = found
            .blocking
            .iter()
            .chain(&found.cautions)
            .map(|c| format!("{subject}: {c}"))
            .collect();
    }
    decision
}

/// Why M1 must leave claim `namespace/name` [ReadWriteOnce]: a workload of the namespace already
/// mounts it and could not run with it as [ReadWriteOncePod]. The warning kubectl prints.
pub fn mutation_would_break(facts: &Facts, namespace: &str, claim: &str) -> Option<String> {
    let cluster = facts.cluster.as_ref()?;
    let users: Vec<&WorkloadInfo> = cluster
        .workloads_in(namespace)
        .map(|w| &**w)
        .filter(|w| !runs_a_controllers_template(w) && w.claims.iter().any(|c| c == claim))
        .collect();
    for user in &users {
        let others: Vec<&WorkloadInfo> = users.iter().copied().filter(|o| !same(o, user)).collect();
        let Some(found) = judge(user, &[claim], &others) else {
            continue;
        };
        if let Some(why) = found.blocking.first() {
            return Some(format!(
                "PersistentVolumeClaim \"{namespace}/{claim}\": left [ReadWriteOnce] by \
                 rwop-guard, because {} \"{namespace}/{}\" could not run with [ReadWriteOncePod]: \
                 it {why}",
                user.kind, user.name
            ));
        }
    }
    None
}

/// The other workloads of the namespace whose templates mount a claim `written` mounts.
fn other_users<'a>(cluster: &'a ClusterFacts, written: &WorkloadInfo) -> Vec<&'a WorkloadInfo> {
    cluster
        .workloads_in(&written.namespace)
        .map(|w| &**w)
        .filter(|w| !same(w, written) && !runs_a_controllers_template(w))
        .filter(|w| w.claims.iter().any(|c| written.claims.contains(c)))
        .collect()
}

fn same(a: &WorkloadInfo, b: &WorkloadInfo) -> bool {
    a.kind == b.kind && a.name == b.name
}

/// [`trouble`] for `user` on its `rwop` claims, each shared with those of `others` that mount it.
fn judge(user: &WorkloadInfo, rwop: &[&str], others: &[&WorkloadInfo]) -> Option<Trouble> {
    let others: Vec<(&WorkloadInfo, Workload)> =
        others.iter().map(|o| (*o, Workload::of(o))).collect();
    let shared: Vec<SharedClaim<'_>> = rwop
        .iter()
        .map(|claim| SharedClaim {
            name: claim,
            others: others
                .iter()
                .filter(|(info, _)| info.claims.iter().any(|c| c == claim))
                .map(|(_, w)| w)
                .collect(),
        })
        .collect();
    trouble(&Workload::of(user), &shared)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::migrate::model::workloads::WorkloadView;
    use crate::policy::{AccessModes, ByName};

    /// A workload as the webhook decodes it from a request's object.
    fn written(kind: WorkloadKind, object: serde_json::Value) -> WorkloadInfo {
        let view: WorkloadView<k8s_openapi::api::apps::v1::Deployment> =
            serde_json::from_value(object).expect("decodes");
        view.info(kind)
    }

    fn deployment(name: &str, replicas: i32, strategy: &str, claim: &str) -> WorkloadInfo {
        written(
            WorkloadKind::Deployment,
            json!({
                "metadata": {"name": name, "namespace": "shop", "managedFields": [{"x": 1}]},
                "spec": {"replicas": replicas, "strategy": {"type": strategy},
                         "template": {"spec": {"containers": [{"name": "c", "image": "i"}],
                            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}},
                                        {"name": "cfg", "configMap": {"name": "x"}}]}}}
            }),
        )
    }

    fn facts(claims: &[(&str, &str)], workloads: &[WorkloadInfo]) -> Facts {
        let claims: ByName<AccessModes> = claims
            .iter()
            .map(|(name, mode)| {
                let modes = vec![(*mode).to_owned()];
                (
                    Arc::from(format!("shop/{name}")),
                    AccessModes::from_optional(Some(&modes)),
                )
            })
            .collect();
        let by_kind: ByName<Arc<WorkloadInfo>> = workloads
            .iter()
            .map(|w| {
                (
                    Arc::from(format!("{}/{}", w.namespace, w.name)),
                    Arc::new(w.clone()),
                )
            })
            .collect();
        Facts {
            cluster: Some(ClusterFacts {
                claims,
                workloads: vec![by_kind],
                ..ClusterFacts::default()
            }),
        }
    }

    fn policy(action: WorkloadAction) -> Policy {
        let mut p = Policy::default();
        p.workloads.action = action;
        p
    }

    #[test]
    fn the_view_reads_every_kinds_template() {
        let cron = written(
            WorkloadKind::CronJob,
            json!({"metadata": {"name": "backup", "namespace": "shop"},
                   "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"parallelism": 2,
                     "template": {"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}}}}}),
        );
        assert_eq!(cron.claims, ["data"]);
        assert_eq!(cron.replicas, 2);
        assert!(cron.overlapping_runs);
        let pod = written(
            WorkloadKind::Pod,
            json!({"metadata": {"name": "debug", "namespace": "shop",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}]},
                   "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}),
        );
        assert_eq!(pod.claims, ["data"]);
        assert_eq!(
            pod.owner, None,
            "an ownerReference that is not the controller is no owner"
        );
        let sts = written(
            WorkloadKind::StatefulSet,
            json!({"metadata": {"name": "db", "namespace": "shop"},
                   "spec": {"replicas": 3, "template": {"spec": {}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOncePod"]}}],
                     "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}}),
        );
        assert!(sts.claims.is_empty(), "template claims are one pod's each");
        let info = sts.statefulset.expect("statefulset facts");
        assert!(info.when_scaled_delete);
        assert_eq!(info.templates[0].0, "data");
    }

    #[test]
    fn a_surging_deployment_on_a_rwop_claim_is_warned_in_scans_words() {
        let d = deployment("web", 1, "RollingUpdate", "data");
        let decision = validate_workload(
            &policy(WorkloadAction::Warn),
            &facts(&[("data", "ReadWriteOncePod")], &[]),
            &d,
        );
        assert!(decision.allowed);
        assert_eq!(decision.warnings.len(), 1, "{decision:?}");
        assert!(
            decision.warnings[0].starts_with(
                "Deployment \"shop/web\": mounts ReadWriteOncePod claim \"data\" with strategy RollingUpdate"
            ),
            "{decision:?}"
        );
        assert!(decision.audit.contains_key(W2_AUDIT_KEY));
    }

    #[test]
    fn deny_refuses_and_off_says_nothing() {
        let d = deployment("web", 2, "Recreate", "data");
        let f = facts(&[("data", "ReadWriteOncePod")], &[]);
        let denied = validate_workload(&policy(WorkloadAction::Deny), &f, &d);
        assert!(!denied.allowed);
        assert!(
            denied
                .message
                .as_deref()
                .is_some_and(|m| m.contains("with 2 replicas")),
            "{denied:?}"
        );
        let off = validate_workload(&policy(WorkloadAction::Off), &f, &d);
        assert_eq!(off, Decision::allow());
    }

    #[test]
    fn rwo_claims_and_safe_workloads_pass() {
        let d = deployment("web", 2, "RollingUpdate", "data");
        let rwo = facts(&[("data", "ReadWriteOnce")], &[]);
        assert!(
            validate_workload(&policy(WorkloadAction::Deny), &rwo, &d)
                .warnings
                .is_empty()
        );
        let safe = deployment("web", 1, "Recreate", "data");
        let rwop = facts(&[("data", "ReadWriteOncePod")], &[]);
        let decision = validate_workload(&policy(WorkloadAction::Deny), &rwop, &safe);
        assert!(
            decision.allowed && decision.warnings.is_empty(),
            "{decision:?}"
        );
        let unknown = validate_workload(&policy(WorkloadAction::Deny), &Facts::default(), &d);
        assert!(unknown.allowed && unknown.explanation.is_some());
    }

    #[test]
    fn a_second_workload_on_the_claim_is_named() {
        let db = deployment("db", 1, "Recreate", "data");
        let backup = written(
            WorkloadKind::CronJob,
            json!({"metadata": {"name": "backup", "namespace": "shop"},
                   "spec": {"concurrencyPolicy": "Forbid", "jobTemplate": {"spec": {
                     "template": {"spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}}}}}),
        );
        let f = facts(&[("data", "ReadWriteOncePod")], std::slice::from_ref(&db));
        let decision = validate_workload(&policy(WorkloadAction::Deny), &f, &backup);
        assert!(!decision.allowed);
        let message = decision.message.unwrap_or_default();
        assert!(
            message.contains("which Deployment db also mounts"),
            "{message}"
        );
        // The same workload re-applied is not its own other user.
        let again = validate_workload(&policy(WorkloadAction::Deny), &f, &db);
        assert!(again.allowed && again.warnings.is_empty(), "{again:?}");
    }

    #[test]
    fn a_controllers_replicaset_is_not_judged_again() {
        let rs = written(
            WorkloadKind::ReplicaSet,
            json!({"metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [
                     {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}]},
                   "spec": {"replicas": 3, "template": {"spec": {"volumes": [
                     {"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}}}),
        );
        let f = facts(&[("data", "ReadWriteOncePod")], &[]);
        let decision = validate_workload(&policy(WorkloadAction::Deny), &f, &rs);
        assert!(
            decision.allowed && decision.warnings.is_empty(),
            "{decision:?}"
        );
    }

    #[test]
    fn mutation_leaves_a_claim_a_workload_could_not_run_on() {
        let web = deployment("web", 1, "RollingUpdate", "data");
        let f = facts(&[], std::slice::from_ref(&web));
        let why = mutation_would_break(&f, "shop", "data").expect("blocked");
        assert!(
            why.starts_with("PersistentVolumeClaim \"shop/data\": left [ReadWriteOnce] by rwop-guard, because Deployment \"shop/web\""),
            "{why}"
        );
        assert_eq!(mutation_would_break(&f, "shop", "other"), None);
        assert_eq!(mutation_would_break(&f, "elsewhere", "data"), None);
        let safe = deployment("web", 1, "Recreate", "data");
        assert_eq!(
            mutation_would_break(&facts(&[], &[safe]), "shop", "data"),
            None
        );
    }
}
