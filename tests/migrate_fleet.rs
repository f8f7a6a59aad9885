//! `migrate --all`: many claims of a namespace against the fake API server, through the real
//! `kube::Client`, with the controllers a migration depends on emulated (tests/support/seed.rs).

mod support;

use std::sync::Mutex;
use std::time::Duration;

use rwop_guard::migrate::MigrateOptions;
use rwop_guard::migrate::fleet::{self, FleetEvent, FleetOptions, Outcome};
use rwop_guard::policy::MIGRATION_ANNOTATION;
use serde_json::{Value, json};
use support::seed::{self, Cluster, DEPLOYMENT, NS, RS_NAME};

const PODS: &str = "/api/v1/namespaces/shop/pods";
const CLAIMS: &str = "/api/v1/namespaces/shop/persistentvolumeclaims";
/// Claims used by their own StatefulSet of the same name.
const SOLO: [&str; 4] = ["c1", "c2", "c3", "c4"];
/// Claims both mounted by the one pod of Deployment `orders`.
const SHARED: [&str; 2] = ["orders-a", "orders-b"];
/// A claim on a non-CSI volume: refused.
const REFUSED: &str = "legacy";

async fn cluster() -> Cluster {
    let c = Cluster::start().await;
    let all: Vec<&str> = SOLO
        .iter()
        .chain(SHARED.iter())
        .copied()
        .chain([REFUSED])
        .collect();
    for name in &all {
        let pv = format!("pv-{name}");
        c.fake
            .create(
                "/api/v1/persistentvolumes",
                seed::volume(&pv, NS, name, *name != REFUSED),
            )
            .unwrap();
        c.fake.create(CLAIMS, seed::claim(NS, name, &pv)).unwrap();
    }
    for s in SOLO {
        c.fake
            .create(
                "/apis/apps/v1/namespaces/shop/statefulsets",
                seed::statefulset(NS, s),
            )
            .unwrap();
        c.add_pod(NS, &format!("{s}-0"), "StatefulSet", s, &[s]);
    }
    c.add_pod(NS, "orders-0", "ReplicaSet", RS_NAME, &SHARED);
    c
}

/// Every replica count written to Deployment `orders`, in order.
fn orders_scales(c: &Cluster) -> Vec<i64> {
    c.scales
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _)| d == "shop/orders")
        .map(|(_, r)| *r)
        .collect()
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
    assert_eq!(orders_scales(&c), vec![0, 1]);
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
    assert_eq!(orders_scales(&c), vec![0, 1]);
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
