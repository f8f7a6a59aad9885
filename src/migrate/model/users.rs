//! Who uses each claim: every pod template that mounts it and every live pod, each attributed
//! to the workload that runs it (a ReplicaSet's pods to its Deployment, a Job's to its CronJob,
//! an operator's to the operator's resource), and the StatefulSets whose `volumeClaimTemplates`
//! make it (TEMPLATE-NAME-ORDINAL). Pure; `scan` indexes a whole cluster once, `migrate` one
//! namespace.

use std::collections::{BTreeMap, HashMap};

use super::facts::Workload;
use super::workloads::{Owner, PodInfo, WorkloadInfo, WorkloadKind, Workloads};

/// The users of every claim, by (namespace, claim).
#[derive(Clone, Debug, Default)]
pub struct ClaimUsers {
    by_claim: HashMap<(String, String), Vec<Workload>>,
}

impl ClaimUsers {
    /// Indexes `listed`. `claims` are the (namespace, name) of the claims that exist: a
    /// StatefulSet's template claims are found among them by name.
    pub fn index<'a>(
        listed: &Workloads,
        claims: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> ClaimUsers {
        let mut users: BTreeMap<(String, String), BTreeMap<(WorkloadKind, String), Workload>> =
            BTreeMap::new();
        // A StatefulSet's template claim replaces what its pods said of it (one pod's claim).
        let mut add = |ns: &str, claim: &str, user: Workload| {
            let of_claim = users.entry((ns.to_owned(), claim.to_owned())).or_default();
            let key = (user.kind.clone(), user.name.clone());
            if user.claim_template.is_some() {
                of_claim.insert(key, user);
            } else {
                of_claim.entry(key).or_insert(user);
            }
        };
        let by_name: HashMap<(&str, &str, &str), &WorkloadInfo> = listed
            .workloads
            .iter()
            .map(|w| ((w.kind.as_str(), w.namespace.as_str(), w.name.as_str()), w))
            .collect();
        for w in &listed.workloads {
            // A ReplicaSet or Job with a controller runs the template of that controller (listed
            // itself) or of a resource rwop-guard does not know (seen through the live pods).
            let owned =
                matches!(w.kind, WorkloadKind::ReplicaSet | WorkloadKind::Job) && w.owner.is_some();
            if owned {
                continue;
            }
            for claim in &w.claims {
                add(&w.namespace, claim, Workload::of(w));
            }
        }
        for pod in listed.pods.iter().filter(|p| !p.finished) {
            let user = user_of_pod(pod, &by_name);
            for claim in &pod.claims {
                add(&pod.namespace, claim, user.clone());
            }
        }
        let mut by_namespace: HashMap<&str, Vec<&str>> = HashMap::new();
        for (ns, name) in claims {
            by_namespace.entry(ns).or_default().push(name);
        }
        for w in &listed.workloads {
            let Some(sts) = &w.statefulset else {
                continue;
            };
            for claim in by_namespace.get(w.namespace.as_str()).into_iter().flatten() {
                if sts.ordinal_of(&w.name, claim).is_some() {
                    let mut user = Workload::of(w);
                    user.replicas = 1;
                    user.claim_template = Some(sts.clone());
                    add(&w.namespace, claim, user);
                }
            }
        }
        ClaimUsers {
            by_claim: users
                .into_iter()
                .map(|(key, users)| (key, users.into_values().collect()))
                .collect(),
        }
    }

    /// The users of `namespace/claim`, sorted by kind and name.
    pub fn of(&self, namespace: &str, claim: &str) -> &[Workload] {
        self.by_claim
            .get(&(namespace.to_owned(), claim.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The workload a live pod belongs to.
fn user_of_pod(pod: &PodInfo, by_name: &HashMap<(&str, &str, &str), &WorkloadInfo>) -> Workload {
    let Some(owner) = &pod.owner else {
        return Workload::named(WorkloadKind::Pod, &pod.name);
    };
    let ns = pod.namespace.as_str();
    let listed = |o: &Owner| {
        by_name
            .get(&(o.kind.as_str(), ns, o.name.as_str()))
            .copied()
    };
    let known = |o: &Owner| match listed(o) {
        Some(w) => Workload::of(w),
        None => Workload::named(WorkloadKind::of_owner(&o.kind), &o.name),
    };
    // A ReplicaSet's or Job's own controller: the Deployment or CronJob (or an operator).
    let parent = |child: &Owner, expected: &str| match listed(child).and_then(|w| w.owner.as_ref())
    {
        Some(p) if p.kind == expected => known(p),
        Some(p) => Workload::named(WorkloadKind::Other(p.kind.clone()), &p.name),
        None => known(child),
    };
    match owner.kind.as_str() {
        "ReplicaSet" => parent(owner, "Deployment"),
        "Job" => parent(owner, "CronJob"),
        _ => known(owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(
        kind: WorkloadKind,
        name: &str,
        claims: &[&str],
        owner: Option<(&str, &str)>,
    ) -> WorkloadInfo {
        WorkloadInfo {
            kind,
            namespace: "ns".into(),
            name: name.into(),
            uid: None,
            replicas: 1,
            strategy: None,
            claims: claims.iter().map(|c| c.to_string()).collect(),
            owner: owner.map(|(k, n)| Owner {
                kind: k.into(),
                name: n.into(),
            }),
            statefulset: None,
            overlapping_runs: false,
            suspended: false,
        }
    }

    fn pod(name: &str, claims: &[&str], owner: Option<(&str, &str)>) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            claims: claims.iter().map(|c| c.to_string()).collect(),
            owner: owner.map(|(k, n)| Owner {
                kind: k.into(),
                name: n.into(),
            }),
            finished: false,
        }
    }

    fn names(users: &[Workload]) -> Vec<String> {
        users.iter().map(Workload::describe).collect()
    }

    #[test]
    fn pods_count_for_the_workload_that_runs_them() {
        let listed = Workloads {
            workloads: vec![
                workload(WorkloadKind::Deployment, "web", &["data"], None),
                workload(
                    WorkloadKind::ReplicaSet,
                    "web-1",
                    &["data"],
                    Some(("Deployment", "web")),
                ),
                workload(WorkloadKind::CronJob, "backup", &["data"], None),
                workload(
                    WorkloadKind::Job,
                    "backup-1",
                    &["data"],
                    Some(("CronJob", "backup")),
                ),
                workload(
                    WorkloadKind::ReplicaSet,
                    "canary-1",
                    &["cache"],
                    Some(("Rollout", "canary")),
                ),
            ],
            pods: vec![
                pod("web-1-a", &["data"], Some(("ReplicaSet", "web-1"))),
                pod("backup-1-a", &["data"], Some(("Job", "backup-1"))),
                pod("debug", &["data"], None),
                pod("canary-1-a", &["cache"], Some(("ReplicaSet", "canary-1"))),
                pod("db-0", &["logs"], Some(("Cluster", "main"))),
            ],
        };
        let users = ClaimUsers::index(&listed, []);
        assert_eq!(
            names(users.of("ns", "data")),
            ["Deployment web", "CronJob backup", "Pod debug"]
        );
        assert_eq!(names(users.of("ns", "cache")), ["Rollout canary"]);
        assert_eq!(names(users.of("ns", "logs")), ["Cluster main"]);
        assert!(users.of("ns", "other").is_empty());
        assert!(users.of("elsewhere", "data").is_empty());
    }

    #[test]
    fn a_statefulset_template_claim_is_one_pod_s() {
        let mut sts = workload(WorkloadKind::StatefulSet, "db", &[], None);
        sts.replicas = 3;
        sts.statefulset = Some(super::super::workloads::StatefulSetInfo {
            templates: vec![("data".into(), Default::default())],
            ..Default::default()
        });
        let listed = Workloads {
            workloads: vec![sts],
            pods: vec![pod("db-1", &["data-db-1"], Some(("StatefulSet", "db")))],
        };
        let claims = [
            ("ns", "data-db-0"),
            ("ns", "data-db-1"),
            ("ns", "data-db-x"),
        ];
        let users = ClaimUsers::index(&listed, claims);
        for claim in ["data-db-0", "data-db-1"] {
            let found = users.of("ns", claim);
            assert_eq!(names(found), ["StatefulSet db"], "{claim}");
            assert!(found[0].claim_template.is_some(), "{claim}");
            assert_eq!(found[0].replicas, 1, "{claim}");
        }
        assert!(users.of("ns", "data-db-x").is_empty());
    }
}
