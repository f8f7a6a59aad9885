//! One judgement over every workload: generated namespaces mixing every kind that can use a
//! claim (Deployments, a StatefulSet's pod template and its volumeClaimTemplates, DaemonSets,
//! Jobs, CronJobs, ReplicaSets, ReplicationControllers, bare pods, an operator's pods), served by
//! the fake API server. For every claim, what `scan` reports is what `migrate` answers on the live
//! objects: a candidate's command plans (`migrate NS/CLAIM` or `migrate --statefulset NS/NAME`),
//! a blocked claim or StatefulSet is refused with the words `scan` printed, a note is `migrate`'s
//! refusal, and a claim with nothing to say is already migrated.

use rwop_test_support as support;

use proptest::prelude::*;
use rwop_guard::migrate::statefulset::{self, StatefulSetPlan};
use rwop_guard::migrate::{self, MigrateError, MigrateOptions, Plan};
use rwop_guard::policy::Policy;
use rwop_guard::scan::{Finding, ScanReport, ScanRule, analyze, collect};
use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, api_fixture};

const NS: &str = "ns";
/// Claims the workloads mount by name.
const SHARED: [&str; 3] = ["c0", "c1", "c2"];
/// The claims of StatefulSet `db`'s template `data`.
const TEMPLATE: [&str; 2] = ["data-db-0", "data-db-1"];

fn modes() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        6 => Just(vec!["ReadWriteOnce"]),
        2 => Just(vec!["ReadWriteOncePod"]),
        1 => Just(vec!["ReadWriteMany"]),
    ]
}

/// A claim bound to its own volume `pv-NAME` (CSI or not), or pending.
fn claim_and_volume(name: &'static str) -> impl Strategy<Value = (Value, Value)> {
    (
        modes(),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.85),
    )
        .prop_map(move |(modes, bound, csi)| {
            let pv = format!("pv-{name}");
            let uid = format!("uid-{name}");
            let mut volume = json!({
                "metadata": {"name": pv},
                "spec": {"accessModes": modes, "capacity": {"storage": "1Gi"},
                         "storageClassName": "fast-csi", "persistentVolumeReclaimPolicy": "Delete",
                         "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": format!("vol-{name}")},
                         "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                      "namespace": NS, "name": name, "uid": uid}},
                "status": {"phase": "Bound"},
            });
            if !csi {
                let spec = volume["spec"].as_object_mut().unwrap();
                spec.remove("csi");
                spec.insert("hostPath".into(), json!({"path": "/data"}));
            }
            let claim = json!({
                "metadata": {"name": name, "namespace": NS, "uid": uid},
                "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}},
                         "storageClassName": "fast-csi", "volumeName": pv},
                "status": {"phase": if bound { "Bound" } else { "Pending" }},
            });
            (claim, volume)
        })
}

fn pod_spec(claim: &str) -> Value {
    json!({
        "containers": [{"name": "app", "image": "busybox",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    })
}

fn template(claim: &str) -> Value {
    json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec(claim)})
}

/// One user of a claim: (collection path, object).
fn user(i: usize) -> impl Strategy<Value = (String, Value)> {
    let claim = prop::sample::select(SHARED.to_vec());
    (0u8..12, claim, 0i32..3, proptest::bool::ANY).prop_map(move |(kind, claim, n, flag)| {
        let name = format!("w{i}");
        let meta = json!({"name": name, "namespace": NS});
        let apps = |plural: &str| format!("/apis/apps/v1/namespaces/{NS}/{plural}");
        let batch = |plural: &str| format!("/apis/batch/v1/namespaces/{NS}/{plural}");
        let core = |plural: &str| format!("/api/v1/namespaces/{NS}/{plural}");
        let selector = json!({"matchLabels": {"app": "x"}});
        match kind {
            0 | 1 | 10 | 11 => {
                let strategy = if flag {
                    json!({"type": "Recreate"})
                } else {
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
                };
                let mut d = json!({"metadata": meta, "spec": {"replicas": n, "selector": selector,
                    "strategy": strategy, "template": template(claim)}});
                if kind == 1 {
                    d["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1",
                        "kind": "Cluster", "name": "main", "uid": "uid-main", "controller": true}]);
                }
                (apps("deployments"), d)
            }
            2 => (
                apps("statefulsets"),
                json!({"metadata": meta, "spec": {"replicas": n.max(1), "serviceName": name,
                    "selector": selector, "template": template(claim)}}),
            ),
            3 => (
                apps("daemonsets"),
                json!({"metadata": meta, "spec": {"selector": selector, "template": template(claim)}}),
            ),
            4 => (
                batch("jobs"),
                json!({"metadata": meta, "spec": {"parallelism": n.max(1),
                    "template": {"spec": pod_spec(claim)}}}),
            ),
            5 => (
                batch("cronjobs"),
                json!({"metadata": meta, "spec": {"schedule": "0 * * * *",
                    "concurrencyPolicy": if flag { "Forbid" } else { "Allow" },
                    "jobTemplate": {"spec": {"template": {"spec": pod_spec(claim)}}}}}),
            ),
            6 => (
                apps("replicasets"),
                json!({"metadata": meta, "spec": {"replicas": n.max(1), "selector": selector,
                    "template": template(claim)}}),
            ),
            7 => (
                core("replicationcontrollers"),
                json!({"metadata": meta, "spec": {"replicas": 1, "selector": {"app": "x"},
                    "template": template(claim)}}),
            ),
            8 => (
                core("pods"),
                json!({"metadata": meta, "spec": pod_spec(claim)}),
            ),
            9 => {
                let mut p = json!({"metadata": meta, "spec": pod_spec(claim)});
                p["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1",
                    "kind": "Cluster", "name": "main", "uid": "uid-main", "controller": true}]);
                (core("pods"), p)
            }
            _ => unreachable!("kinds are 0..12"),
        }
    })
}

/// StatefulSet `db` making claims from its template `data` (or none).
fn statefulset() -> impl Strategy<Value = Option<Value>> {
    let sts = (0i32..3, modes(), proptest::bool::weighted(0.2)).prop_map(
        |(replicas, modes, delete)| {
            json!({"metadata": {"name": "db", "namespace": NS},
                "spec": {"replicas": replicas, "serviceName": "db", "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": {"app": "db"}},
                    "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                        "whenScaled": if delete { "Delete" } else { "Retain" }},
                    "template": {"metadata": {"labels": {"app": "db"}},
                        "spec": {"containers": [{"name": "db", "image": "db"}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}}}]}})
        },
    );
    prop_oneof![1 => Just(None), 3 => sts.prop_map(Some)]
}

/// A namespace: claims with their volumes, the users, StatefulSet `db` and which of its
/// template's claims exist.
type Scene = (Vec<(Value, Value)>, Vec<(String, Value)>, Option<Value>);

fn scene() -> impl Strategy<Value = Scene> {
    let claims = (
        claim_and_volume(SHARED[0]),
        claim_and_volume(SHARED[1]),
        claim_and_volume(SHARED[2]),
        claim_and_volume(TEMPLATE[0]),
        claim_and_volume(TEMPLATE[1]),
        proptest::bool::ANY,
    )
        .prop_map(|(a, b, c, d, e, second)| {
            let mut all = vec![a, b, c, d];
            if second {
                all.push(e);
            }
            all
        });
    let users = (0..4usize).prop_flat_map(|n| (0..n).map(user).collect::<Vec<_>>());
    (claims, users, statefulset())
}

async fn serve(scene: &Scene) -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.seed_list_fixture(
        "/apis/storage.k8s.io/v1/storageclasses",
        &api_fixture("list-storageclasses.json"),
    );
    let (claims, users, sts) = scene;
    for (claim, volume) in claims {
        fake.create("/api/v1/persistentvolumes", volume.clone())
            .unwrap();
        fake.create(
            &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
            claim.clone(),
        )
        .unwrap();
    }
    for (path, object) in users {
        fake.create(path, object.clone()).unwrap();
    }
    if let Some(sts) = sts {
        fake.create(
            &format!("/apis/apps/v1/namespaces/{NS}/statefulsets"),
            sts.clone(),
        )
        .unwrap();
    }
    fake
}

fn findings_about<'r>(report: &'r ScanReport, kind: &str, name: &str) -> Vec<&'r Finding> {
    report
        .findings
        .iter()
        .filter(|f| {
            f.object.kind.as_deref() == Some(kind)
                && f.object.name.as_deref() == Some(name)
                && matches!(
                    f.rule,
                    ScanRule::MigrationCandidate | ScanRule::MigrationBlocked
                )
        })
        .collect()
}

/// What happened to one claim or StatefulSet, for the coverage check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Candidate,
    /// A Deployment whose rollout would surge: the command says --switch-to-recreate.
    CandidateSwitching,
    Blocked,
    Note,
    Nothing,
    StatefulSetCandidate,
    StatefulSetBlocked,
}

/// Checks one scene; returns what it saw.
async fn check(scene: &Scene) -> Vec<Seen> {
    let fake = serve(scene).await;
    let client = fake.client();
    let inventory = collect(&client, Some(NS), |_| {}).await.unwrap();
    let report = analyze(&Policy::default(), &inventory, Some(NS));
    let opts = MigrateOptions {
        switch_to_recreate: true,
        ..MigrateOptions::default()
    };
    let mut seen = Vec::new();
    let template_claim = |name: &str| TEMPLATE.contains(&name) && scene.2.is_some();
    for (claim, _) in &scene.0 {
        let name = claim["metadata"]["name"].as_str().unwrap();
        if template_claim(name) {
            assert!(
                findings_about(&report, "PersistentVolumeClaim", name).is_empty(),
                "{name}: a StatefulSet's claim is reported on the StatefulSet\n{report:#?}"
            );
            continue;
        }
        let findings = findings_about(&report, "PersistentVolumeClaim", name);
        let notes: Vec<_> = report
            .notes
            .iter()
            .filter(|n| n.object.name.as_deref() == Some(name))
            .collect();
        let before = fake.resource_version();
        let answer = migrate::prepare(&client, NS, name, &opts, &mut |_| {}).await;
        assert_eq!(fake.resource_version(), before, "prepare writes nothing");
        match (findings.as_slice(), notes.as_slice(), answer) {
            ([f], [], Ok(Plan::Run(plan))) if f.rule == ScanRule::MigrationCandidate => {
                let switch = !plan.state.switches.is_empty();
                let mut command = format!("rwop-guard migrate {NS}/{name}");
                if switch {
                    command.push_str(" --switch-to-recreate");
                }
                assert_eq!(f.command.as_deref(), Some(command.as_str()), "{name}");
                seen.push(if switch {
                    Seen::CandidateSwitching
                } else {
                    Seen::Candidate
                });
            }
            ([f], [], Err(MigrateError::Refused(msg))) if f.rule == ScanRule::MigrationBlocked => {
                assert!(
                    f.detail.contains(&msg),
                    "{name}: scan said {:?}, migrate {msg:?}",
                    f.detail
                );
                seen.push(Seen::Blocked);
            }
            ([], [n], Err(MigrateError::Refused(msg))) => {
                assert_eq!(n.message, msg, "{name}");
                seen.push(Seen::Note);
            }
            ([], [], Ok(Plan::AlreadyMigrated { .. })) => seen.push(Seen::Nothing),
            (findings, notes, answer) => panic!(
                "{name}: scan reported {findings:#?} and {notes:#?}, migrate answered {answer:?}\n{report:#?}"
            ),
        }
    }
    if scene.2.is_some() {
        let findings = findings_about(&report, "StatefulSet", "db");
        let answer =
            statefulset::plan(&client, NS, "db", &MigrateOptions::default(), &|_| {}).await;
        match (findings.as_slice(), answer) {
            ([f], Ok(StatefulSetPlan::Run(_))) if f.rule == ScanRule::MigrationCandidate => {
                assert_eq!(
                    f.command.as_deref(),
                    Some(format!("rwop-guard migrate --statefulset {NS}/db").as_str())
                );
                seen.push(Seen::StatefulSetCandidate);
            }
            ([f], Err(MigrateError::Refused(msg))) if f.rule == ScanRule::MigrationBlocked => {
                assert!(
                    f.detail.contains(&msg),
                    "scan said {:?}, migrate {msg:?}",
                    f.detail
                );
                seen.push(Seen::StatefulSetBlocked);
            }
            ([], Ok(StatefulSetPlan::AlreadyDone { .. })) => seen.push(Seen::Nothing),
            (findings, answer) => {
                panic!("db: scan reported {findings:#?}, migrate answered {answer:?}\n{report:#?}")
            }
        }
    }
    seen
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    // Each case starts a fake API server and plans every claim: fewer cases, each a namespace.
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn scan_and_migrate_judge_every_claim_alike(scene in scene()) {
        runtime().block_on(check(&scene));
    }
}

/// The generated namespaces reach every outcome, so the property is not vacuous.
#[test]
fn generated_namespaces_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    let rt = runtime();
    for _ in 0..40 {
        let scene = scene().new_tree(&mut runner).unwrap().current();
        seen.extend(rt.block_on(check(&scene)));
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
}
