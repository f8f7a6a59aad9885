//! `migrate --all`: many claims of a namespace against the fake API server, through the real
//! `kube::Client`, with the controllers a migration depends on emulated.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rwop_guard::migrate::MigrateOptions;
use rwop_guard::migrate::fleet::{self, FleetEvent, FleetOptions, Outcome};
use rwop_guard::policy::MIGRATION_ANNOTATION;
use serde_json::{Value, json};
use support::fake_apiserver::{EventType, FakeApiServer, Store, WriteEvent, api_fixture};

const NS: &str = "shop";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const CLAIMS: &str = "/api/v1/namespaces/shop/persistentvolumeclaims";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/orders";
const RS_NAME: &str = "orders-5cc5c796bd";
/// Claims used by their own StatefulSet of the same name.
const SOLO: [&str; 4] = ["c1", "c2", "c3", "c4"];
/// Claims both mounted by the one pod of Deployment `orders`.
const SHARED: [&str; 2] = ["orders-a", "orders-b"];
/// A claim on a non-CSI volume: refused.
const REFUSED: &str = "legacy";

fn owner_claims(owner: &str) -> Vec<&'static str> {
    if owner == RS_NAME {
        SHARED.to_vec()
    } else {
        SOLO.iter().copied().filter(|c| *c == owner).collect()
    }
}

fn pod(name: &str, owner_kind: &str, owner: &str) -> Value {
    let volumes: Vec<Value> = owner_claims(owner)
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"owner": owner},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner, "uid": format!("uid-{owner}"), "controller": true}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app"}], "volumes": volumes},
        "status": {"phase": "Running"}
    })
}

fn reconcile_pods(store: &mut Store, owner_kind: &str, owner: &str, replicas: i64) {
    let existing: Vec<String> = store
        .list(PODS)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["owner"] == owner)
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for name in existing.iter().skip(replicas.max(0) as usize) {
        store.delete(&format!("{PODS}/{name}")).unwrap();
    }
    for i in existing.len()..replicas.max(0) as usize {
        store
            .create(PODS, pod(&format!("{owner}-{i}"), owner_kind, owner))
            .unwrap();
    }
}

fn try_bind(store: &mut Store, claim: &Value) {
    let Some(volume) = claim["spec"]["volumeName"].as_str() else {
        return;
    };
    if claim["status"]["phase"] == "Bound" || claim["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let pv_path = format!("/api/v1/persistentvolumes/{volume}");
    let Some(pv) = store.get(&pv_path) else {
        return;
    };
    let name = claim["metadata"]["name"].as_str().unwrap_or_default();
    let claim_ref = &pv["spec"]["claimRef"];
    let free = claim_ref["name"] == name && claim_ref["uid"].as_str().unwrap_or("").is_empty();
    let fits = claim["spec"]["accessModes"] == pv["spec"]["accessModes"];
    if !free || !fits {
        return;
    }
    store
        .patch(&pv_path, json!({"spec": {"claimRef": {"uid": claim["metadata"]["uid"]}}, "status": {"phase": "Bound"}}))
        .unwrap();
    store
        .patch(
            &format!("{CLAIMS}/{name}"),
            json!({"status": {"phase": "Bound", "accessModes": pv["spec"]["accessModes"]}}),
        )
        .unwrap();
}

fn release_protected_claims(store: &mut Store) {
    let pods = store.list(PODS);
    for claim in store.list(CLAIMS) {
        let name = claim["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let in_use = pods.iter().any(|p| {
            p["spec"]["volumes"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|v| v["persistentVolumeClaim"]["claimName"] == name.as_str())
            })
        });
        if claim["metadata"]["deletionTimestamp"].is_string() && !in_use {
            store
                .patch(
                    &format!("{CLAIMS}/{name}"),
                    json!({"metadata": {"finalizers": null}}),
                )
                .unwrap();
        }
    }
}

/// Safety violations seen, and the replica counts written to Deployment `orders`.
type Records = (Arc<Mutex<Vec<String>>>, Arc<Mutex<Vec<i64>>>);

struct Cluster {
    fake: FakeApiServer,
    violations: Arc<Mutex<Vec<String>>>,
    /// Every replica count written to Deployment `orders`, in order.
    orders_scales: Arc<Mutex<Vec<i64>>>,
}

fn controllers(store: &mut Store, event: &WriteEvent, c: &Records) {
    match (event.resource.as_str(), event.event_type) {
        ("persistentvolumes", t) => {
            let obj = &event.object;
            if t == EventType::Deleted {
                c.0.lock().unwrap().push(format!("{} deleted", event.name));
            }
            if obj["spec"]["claimRef"]["uid"]
                .as_str()
                .unwrap_or("")
                .is_empty()
                && obj["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
            {
                c.0.lock()
                    .unwrap()
                    .push(format!("{} unclaimed with Delete", event.name));
            }
            if t == EventType::Modified {
                for claim in store.list(CLAIMS) {
                    if claim["spec"]["volumeName"] == event.name.as_str() {
                        try_bind(store, &claim);
                    }
                }
            }
        }
        ("persistentvolumeclaims", EventType::Added) => try_bind(store, &event.object),
        ("persistentvolumeclaims", EventType::Modified) | ("pods", EventType::Deleted) => {
            release_protected_claims(store)
        }
        ("persistentvolumeclaims", EventType::Deleted) => {
            let uid = event.object["metadata"]["uid"].clone();
            for pv in store.list("/api/v1/persistentvolumes") {
                if pv["spec"]["claimRef"]["uid"] == uid {
                    let path = format!(
                        "/api/v1/persistentvolumes/{}",
                        pv["metadata"]["name"].as_str().unwrap()
                    );
                    store
                        .patch(&path, json!({"status": {"phase": "Released"}}))
                        .unwrap();
                }
            }
        }
        ("deployments", EventType::Modified) if event.name == "orders" => {
            let replicas = event.object["spec"]["replicas"].as_i64().unwrap_or(1);
            let old = event
                .old_object
                .as_ref()
                .and_then(|o| o["spec"]["replicas"].as_i64());
            if old != Some(replicas) {
                c.1.lock().unwrap().push(replicas);
            }
            reconcile_pods(store, "ReplicaSet", RS_NAME, replicas);
        }
        ("statefulsets", EventType::Modified) => {
            let replicas = event.object["spec"]["replicas"].as_i64().unwrap_or(1);
            reconcile_pods(store, "StatefulSet", &event.name, replicas);
        }
        _ => {}
    }
}

fn volume(name: &str, claim: &str, csi: bool) -> Value {
    let mut pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "finalizers": ["kubernetes.io/pv-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast-csi",
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": NS, "name": claim, "uid": format!("uid-{claim}")}},
        "status": {"phase": "Bound"}
    });
    if csi {
        pv["spec"]["csi"] =
            json!({"driver": "ebs.csi.aws.com", "volumeHandle": format!("vol-{name}")});
    } else {
        pv["spec"]["hostPath"] = json!({"path": "/data"});
    }
    pv
}

fn claim(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "labels": {"tier": "db"},
                     "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": "fast-csi", "volumeName": format!("pv-{name}"), "volumeMode": "Filesystem"},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"]}
    })
}

async fn cluster() -> Cluster {
    let fake = FakeApiServer::start().await;
    fake.seed_list_fixture(
        "/apis/storage.k8s.io/v1/storageclasses",
        &api_fixture("list-storageclasses.json"),
    );
    fake.seed_list_fixture("/api/v1/namespaces", &api_fixture("list-namespaces.json"));
    fake.seed_list_fixture(
        "/apis/apps/v1/namespaces/shop/deployments",
        &api_fixture("list-deployments-shop.json"),
    );
    fake.seed_list_fixture(
        "/apis/apps/v1/namespaces/shop/replicasets",
        &api_fixture("list-replicasets-shop.json"),
    );
    fake.patch(
        DEPLOYMENT,
        json!({"spec": {"replicas": 1, "strategy": {"type": "Recreate", "rollingUpdate": null}}}),
    )
    .unwrap();
    let all: Vec<&str> = SOLO
        .iter()
        .chain(SHARED.iter())
        .copied()
        .chain([REFUSED])
        .collect();
    for c in &all {
        fake.create(
            "/api/v1/persistentvolumes",
            volume(&format!("pv-{c}"), c, *c != REFUSED),
        )
        .unwrap();
        fake.create(CLAIMS, claim(c)).unwrap();
    }
    for s in SOLO {
        fake.create(
            "/apis/apps/v1/namespaces/shop/statefulsets",
            json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": s, "namespace": NS, "uid": format!("uid-{s}")},
                "spec": {"replicas": 1, "serviceName": s, "selector": {"matchLabels": {"owner": s}},
                         "template": {"metadata": {"labels": {"owner": s}}, "spec": {"containers": [{"name": "r", "image": "r"}]}}}
            }),
        )
        .unwrap();
        fake.create(PODS, pod(&format!("{s}-0"), "StatefulSet", s))
            .unwrap();
    }
    fake.create(PODS, pod("orders-0", "ReplicaSet", RS_NAME))
        .unwrap();
    let violations = Arc::new(Mutex::new(Vec::new()));
    let orders_scales = Arc::new(Mutex::new(Vec::new()));
    let shared = (violations.clone(), orders_scales.clone());
    fake.on_write(move |store, event| controllers(store, event, &shared));
    Cluster {
        fake,
        violations,
        orders_scales,
    }
}

fn opts() -> MigrateOptions {
    MigrateOptions {
        poll_interval: Duration::from_millis(5),
        timeout: Duration::from_secs(20),
        ..MigrateOptions::default()
    }
}

/// Plans and runs the namespace; returns outcomes by claim and every event.
async fn run_all(
    c: &Cluster,
    fleet_opts: &FleetOptions,
    after_step: &dyn Fn(&str, usize) -> bool,
) -> (Vec<(String, Outcome)>, Vec<FleetEvent>) {
    let client = c.fake.client();
    let events = Mutex::new(Vec::new());
    let report = |e: FleetEvent| events.lock().unwrap().push(e);
    let claims = fleet::claims_of(&client, NS, None).await.unwrap();
    let plan = fleet::plan(&client, NS, &claims, &opts(), &report).await;
    let outcomes = fleet::execute(&client, plan, &opts(), fleet_opts, &report, after_step).await;
    (outcomes, events.into_inner().unwrap())
}

fn outcome<'a>(outcomes: &'a [(String, Outcome)], claim: &str) -> &'a Outcome {
    &outcomes.iter().find(|(c, _)| c == claim).unwrap().1
}

/// Claims, volumes and consumers as a finished migration leaves them.
fn end_state(c: &Cluster) -> Value {
    let claims: Vec<Value> = c
        .fake
        .list(CLAIMS)
        .iter()
        .map(|pvc| {
            let name = pvc["metadata"]["name"].as_str().unwrap().to_owned();
            let pv = c
                .fake
                .get(&format!("/api/v1/persistentvolumes/pv-{name}"))
                .unwrap();
            json!([
                name,
                pvc["spec"]["accessModes"],
                pvc["status"]["phase"],
                pv["spec"]["accessModes"],
                pv["spec"]["persistentVolumeReclaimPolicy"],
                pv["metadata"]["annotations"][MIGRATION_ANNOTATION],
                pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
            ])
        })
        .collect();
    json!({"claims": claims, "orders": c.fake.get(DEPLOYMENT).unwrap()["spec"]["replicas"], "pods": c.fake.list(PODS).len()})
}

fn expected_end() -> Value {
    let mut claims = Vec::new();
    for name in ["c1", "c2", "c3", "c4", "legacy", "orders-a", "orders-b"] {
        let modes = if name == REFUSED {
            "ReadWriteOnce"
        } else {
            "ReadWriteOncePod"
        };
        claims.push(json!([
            name,
            [modes],
            "Bound",
            [modes],
            "Delete",
            null,
            true
        ]));
    }
    json!({"claims": claims, "orders": 1, "pods": 5})
}

#[tokio::test]
async fn a_namespace_is_planned_once_and_migrated_with_bounded_concurrency() {
    let c = cluster().await;
    let fleet_opts = FleetOptions {
        concurrency: 2,
        continue_on_error: false,
    };
    let (outcomes, events) = run_all(&c, &fleet_opts, &|_, _| true).await;
    for claim in SOLO.iter().chain(SHARED.iter()) {
        assert_eq!(
            outcome(&outcomes, claim),
            &Outcome::Migrated,
            "{claim}: {outcomes:?}"
        );
    }
    let Outcome::Refused(reason) = outcome(&outcomes, REFUSED) else {
        panic!("{outcomes:?}");
    };
    assert!(reason.contains("CSI"), "{reason}");
    assert_eq!(end_state(&c), expected_end());
    // The shared Deployment went down once and came back once.
    assert_eq!(*c.orders_scales.lock().unwrap(), vec![0, 1]);
    // At most two groups at a time, and two did overlap.
    let (mut running, mut most) = (0i32, 0i32);
    let mut started = std::collections::BTreeSet::new();
    for e in &events {
        match e {
            FleetEvent::Started { claim } => {
                started.insert(claim.clone());
                running += 1;
                most = most.max(running);
            }
            FleetEvent::Finished { claim, .. } if started.contains(claim) => running -= 1,
            _ => {}
        }
    }
    // The shared pair counts as one group: it starts and finishes both claims.
    assert!(most <= 3, "{most}");
    assert!(most >= 2, "{most}");
    let v = c.violations.lock().unwrap();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test]
async fn the_first_failure_stops_new_starts_and_a_second_run_resumes_to_the_same_end() {
    let c = cluster().await;
    let fleet_opts = FleetOptions {
        concurrency: 1,
        continue_on_error: false,
    };
    // A crash in the middle of the first claim (c1, after the claim was deleted).
    let (outcomes, _) = run_all(&c, &fleet_opts, &|claim, done| {
        !(claim == "c1" && done == 4)
    })
    .await;
    assert!(
        matches!(outcome(&outcomes, "c1"), Outcome::Failed(_)),
        "{outcomes:?}"
    );
    for claim in ["c2", "c3", "c4", "orders-a", "orders-b"] {
        assert!(
            matches!(outcome(&outcomes, claim), Outcome::NotStarted(_)),
            "{claim}: {outcomes:?}"
        );
    }
    assert!(
        c.fake.get(&format!("{CLAIMS}/c1")).is_none(),
        "c1 was deleted mid-migration"
    );
    // The second run finds c1 through its volume and finishes everything.
    let fleet_opts = FleetOptions {
        concurrency: 4,
        continue_on_error: false,
    };
    let (outcomes, _) = run_all(&c, &fleet_opts, &|_, _| true).await;
    assert_eq!(outcome(&outcomes, "c1"), &Outcome::Migrated, "{outcomes:?}");
    assert_eq!(end_state(&c), expected_end());
    let v = c.violations.lock().unwrap();
    assert!(v.is_empty(), "{v:?}");
}

#[tokio::test]
async fn a_crash_in_a_shared_group_resumes_and_restores_the_consumer_once() {
    let c = cluster().await;
    let fleet_opts = FleetOptions {
        concurrency: 4,
        continue_on_error: true,
    };
    // orders-b stops after its scale-down: the Deployment stays at 0.
    let (outcomes, _) = run_all(&c, &fleet_opts, &|claim, done| {
        !(claim == "orders-b" && done == 3)
    })
    .await;
    assert!(
        matches!(outcome(&outcomes, "orders-b"), Outcome::Failed(_)),
        "{outcomes:?}"
    );
    assert_eq!(
        outcome(&outcomes, "c4"),
        &Outcome::Migrated,
        "continue on error: {outcomes:?}"
    );
    assert_eq!(c.fake.get(DEPLOYMENT).unwrap()["spec"]["replicas"], 0);
    let (outcomes, _) = run_all(&c, &fleet_opts, &|_, _| true).await;
    assert_eq!(
        outcome(&outcomes, "orders-a"),
        &Outcome::Migrated,
        "{outcomes:?}"
    );
    assert_eq!(
        outcome(&outcomes, "orders-b"),
        &Outcome::Migrated,
        "{outcomes:?}"
    );
    assert_eq!(end_state(&c), expected_end());
    assert_eq!(*c.orders_scales.lock().unwrap(), vec![0, 1]);
}

async fn binary(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rwop-guard"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the binary finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_one_plan_for_the_namespace_then_runs_it() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: u, namespace: shop}}\nusers:\n- name: u\n  user: {{token: t}}\n",
            c.fake.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let before = c.fake.resource_version();
    let (code, plan, err) =
        binary(&["--kubeconfig", config, "migrate", "--all", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    println!("{plan}");
    assert_eq!(
        c.fake.resource_version(),
        before,
        "the dry run wrote nothing"
    );
    assert!(plan.contains("CLAIM"), "{plan}");
    for claim in SOLO.iter().chain(SHARED.iter()) {
        let row = plan
            .lines()
            .find(|l| l.starts_with(claim))
            .unwrap_or_default();
        assert!(row.contains("migrate to [ReadWriteOncePod]"), "{plan}");
    }
    let legacy = plan
        .lines()
        .find(|l| l.starts_with(REFUSED))
        .unwrap_or_default();
    assert!(legacy.contains("refused:"), "{plan}");
    assert!(plan.contains("orders-a + orders-b"), "{plan}");
    // Not confirmed (stdin is empty): nothing changes.
    let (code, _, err) = binary(&["--kubeconfig", config, "migrate", "--all"]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(c.fake.resource_version(), before, "{err}");
    let (code, _, err) = binary(&[
        "--kubeconfig",
        config,
        "migrate",
        "-l",
        "tier=db",
        "--yes",
        "--concurrency",
        "3",
    ])
    .await;
    eprintln!("{err}");
    assert_eq!(code, 1, "one claim is refused: {err}");
    assert!(
        err.contains("c1: [3/11]"),
        "progress lines carry the claim: {err}"
    );
    assert!(
        err.contains("summary: 6 migrated, 0 already done, 1 refused, 0 failed, 0 not started"),
        "{err}"
    );
    assert_eq!(end_state(&c), expected_end());
}
