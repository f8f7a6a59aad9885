//! `migrate --all`: many claims of a namespace against the fake API server, through the real
//! `kube::Client`, with the controllers a migration depends on emulated (tests/support/seed.rs).

use rwop_test_support as support;

use std::sync::Mutex;
use std::time::Duration;

use rwop_guard::migrate::MigrateOptions;
use rwop_guard::migrate::fleet::{self, FleetEvent, FleetOptions, Outcome};
use rwop_guard::policy::{MIGRATED_FROM_ANNOTATION, MIGRATION_ANNOTATION};
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
    run_with(c, &opts(), fleet_opts, after_step).await
}

/// Plans and runs (with `opts`: a migration or a rollback) every claim of the namespace.
async fn run_with(
    c: &Cluster,
    opts: &MigrateOptions,
    fleet_opts: &FleetOptions,
    after_step: &dyn Fn(&str, usize) -> bool,
) -> (Vec<(String, Outcome)>, Vec<FleetEvent>) {
    let client = c.fake.client();
    let events = Mutex::new(Vec::new());
    let report = |e: FleetEvent| events.lock().unwrap().push(e);
    let claims: Vec<(String, String)> = fleet::claims_of(&client, NS, None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (NS.to_owned(), c))
        .collect();
    let plan = fleet::plan(&client, &claims, opts, &report).await;
    assert_eq!(plan.rollback, opts.rollback);
    let outcomes = fleet::execute(&client, plan, opts, fleet_opts, &report, after_step).await;
    (outcomes, events.into_inner().unwrap())
}

fn rollback() -> MigrateOptions {
    MigrateOptions {
        rollback: true,
        ..opts()
    }
}

/// [`run_all`], with the run of `shop/CLAIM` crashing once `step` steps are done.
async fn crash_after(
    c: &Cluster,
    fleet_opts: &FleetOptions,
    claim: &str,
    step: usize,
) -> Vec<(String, Outcome)> {
    let id = format!("{NS}/{claim}");
    run_all(c, fleet_opts, &|c, done| !(c == id && done == step))
        .await
        .0
}

fn fleet_with(concurrency: usize, continue_on_error: bool) -> FleetOptions {
    FleetOptions {
        concurrency,
        continue_on_error,
    }
}

/// The outcome of `shop/CLAIM`.
fn outcome<'a>(outcomes: &'a [(String, Outcome)], claim: &str) -> &'a Outcome {
    let id = format!("{NS}/{claim}");
    &outcomes.iter().find(|(c, _)| *c == id).unwrap().1
}

/// Asserts `is` of the outcome of `shop/CLAIM`.
fn assert_outcome(outcomes: &[(String, Outcome)], claim: &str, is: impl Fn(&Outcome) -> bool) {
    assert!(is(outcome(outcomes, claim)), "{claim}: {outcomes:?}");
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
            let mut row = vec![json!(name)];
            row.extend(seed::pair_state(pvc, &pv));
            Value::Array(row)
        })
        .collect();
    json!({"claims": claims, "orders": c.fake.get(DEPLOYMENT).unwrap()["spec"]["replicas"], "pods": c.fake.list(PODS).len()})
}

fn expected_end() -> Value {
    expected_with("ReadWriteOncePod")
}

/// Every claim but the refused one ends with `modes` (`ReadWriteOnce` after a rollback).
fn expected_with(modes: &str) -> Value {
    let moved = modes;
    let mut claims = Vec::new();
    for name in ["c1", "c2", "c3", "c4", "legacy", "orders-a", "orders-b"] {
        let modes = if name == REFUSED {
            "ReadWriteOnce"
        } else {
            moved
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
    let fleet_opts = fleet_with(2, false);
    let (outcomes, events) = run_all(&c, &fleet_opts, &|_, _| true).await;
    for claim in SOLO.iter().chain(SHARED.iter()) {
        assert_outcome(&outcomes, claim, |o| *o == Outcome::Done);
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
    c.assert_safe();
}

#[tokio::test]
async fn the_first_failure_stops_new_starts_and_a_second_run_resumes_to_the_same_end() {
    let c = cluster().await;
    let fleet_opts = fleet_with(1, false);
    // A crash in the middle of the first claim (c1, after the claim was deleted).
    let outcomes = crash_after(&c, &fleet_opts, "c1", 4).await;
    assert_outcome(&outcomes, "c1", |o| matches!(o, Outcome::Failed(_)));
    for claim in ["c2", "c3", "c4", "orders-a", "orders-b"] {
        assert_outcome(&outcomes, claim, |o| matches!(o, Outcome::NotStarted(_)));
    }
    assert!(
        c.fake.get(&format!("{CLAIMS}/c1")).is_none(),
        "c1 was deleted mid-migration"
    );
    // The second run finds c1 through its volume and finishes everything.
    let fleet_opts = fleet_with(4, false);
    let (outcomes, _) = run_all(&c, &fleet_opts, &|_, _| true).await;
    assert_outcome(&outcomes, "c1", |o| *o == Outcome::Done);
    assert_eq!(end_state(&c), expected_end());
    c.assert_safe();
}

#[tokio::test]
async fn a_crash_in_a_shared_group_resumes_and_restores_the_consumer_once() {
    let c = cluster().await;
    let fleet_opts = fleet_with(4, true);
    // orders-b stops after its scale-down: the Deployment stays at 0.
    let outcomes = crash_after(&c, &fleet_opts, "orders-b", 3).await;
    assert_outcome(&outcomes, "orders-b", |o| matches!(o, Outcome::Failed(_)));
    assert_outcome(&outcomes, "c4", |o| *o == Outcome::Done);
    assert_eq!(c.fake.get(DEPLOYMENT).unwrap()["spec"]["replicas"], 0);
    let (outcomes, _) = run_all(&c, &fleet_opts, &|_, _| true).await;
    assert_outcome(&outcomes, "orders-a", |o| *o == Outcome::Done);
    assert_outcome(&outcomes, "orders-b", |o| *o == Outcome::Done);
    assert_eq!(end_state(&c), expected_end());
    assert_eq!(orders_scales(&c), vec![0, 1]);
}

/// `rwop-guard ARGS` with `stdin`: (exit code, stdout, stderr).
async fn binary_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let r = support::binary::run_async(support::binary::rwop_guard(args), stdin.as_bytes()).await;
    (r.code, r.stdout, r.stderr)
}

async fn binary(args: &[&str]) -> (i32, String, String) {
    binary_with_stdin(args, "").await
}

/// `rwop-guard --kubeconfig CONFIG migrate ARGS…`: (exit code, stdout, stderr).
async fn migrate(config: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--kubeconfig", config, "migrate"];
    all.extend_from_slice(args);
    binary(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_one_plan_for_the_namespace_then_runs_it() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::kubeconfig::write(dir.path(), &c.fake.url(), NS, "fake");
    let config = config.to_str().unwrap();
    let before = c.fake.resource_version();
    let (code, plan, err) = migrate(config, &["--all", "--dry-run"]).await;
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
    let (code, _, err) = migrate(config, &["--all"]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(c.fake.resource_version(), before, "{err}");
    let (code, _, err) = migrate(config, &["-l", "tier=db", "--yes", "--concurrency", "3"]).await;
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

#[tokio::test]
async fn a_fleet_rollback_returns_every_migrated_claim_and_restores_a_shared_consumer_once() {
    let c = cluster().await;
    let fleet_opts = FleetOptions::default();
    run_all(&c, &fleet_opts, &|_, _| true).await;
    assert_eq!(end_state(&c), expected_end());
    let (outcomes, _) = run_with(&c, &rollback(), &fleet_opts, &|_, _| true).await;
    for claim in SOLO.iter().chain(SHARED.iter()) {
        assert_outcome(&outcomes, claim, |o| *o == Outcome::Done);
    }
    // Never migrated: nothing to roll back, and no refusal.
    assert!(
        matches!(outcome(&outcomes, REFUSED), Outcome::NothingToDo(r) if r.contains("nothing to roll back")),
        "{outcomes:?}"
    );
    assert_eq!(end_state(&c), expected_with("ReadWriteOnce"));
    for pvc in c.fake.list(CLAIMS) {
        assert!(
            pvc["metadata"]["annotations"][MIGRATED_FROM_ANNOTATION].is_null(),
            "{pvc:#}"
        );
    }
    // The shared Deployment: down and up once for the migration, once for the rollback.
    assert_eq!(orders_scales(&c), vec![0, 1, 0, 1]);
    // A second rollback finds nothing to do.
    let (outcomes, _) = run_with(&c, &rollback(), &fleet_opts, &|_, _| true).await;
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::NothingToDo(_))),
        "{outcomes:?}"
    );
    assert_eq!(orders_scales(&c), vec![0, 1, 0, 1]);
    c.assert_safe();
}

#[tokio::test]
async fn a_crash_in_a_fleet_rollback_resumes_and_restores_the_shared_consumer_once() {
    let c = cluster().await;
    let fleet_opts = fleet_with(4, true);
    run_all(&c, &fleet_opts, &|_, _| true).await;
    assert_eq!(end_state(&c), expected_end());
    // orders-b stops after its scale-down (the Deployment stays at 0), c1 after its claim was
    // deleted.
    let (outcomes, _) = run_with(&c, &rollback(), &fleet_opts, &|claim, done| {
        !((claim == "shop/orders-b" && done == 3) || (claim == "shop/c1" && done == 4))
    })
    .await;
    for claim in ["orders-b", "c1"] {
        assert_outcome(&outcomes, claim, |o| matches!(o, Outcome::Failed(_)));
    }
    assert!(
        matches!(outcome(&outcomes, "orders-a"), Outcome::NotStarted(r) if r.contains("shares a consumer")),
        "{outcomes:?}"
    );
    assert_outcome(&outcomes, "c2", |o| *o == Outcome::Done);
    assert_eq!(c.fake.get(DEPLOYMENT).unwrap()["spec"]["replicas"], 0);
    assert!(c.fake.get(&format!("{CLAIMS}/c1")).is_none());
    let recorded: Value = serde_json::from_str(
        c.fake.get("/api/v1/persistentvolumes/pv-orders-a").unwrap()["metadata"]["annotations"]
            [MIGRATION_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recorded["target"], "ReadWriteOnce", "{recorded:#}");
    // A forward plan refuses the claims whose rollback is under way.
    let claims: Vec<(String, String)> = SHARED
        .iter()
        .map(|c| (NS.to_owned(), (*c).to_owned()))
        .collect();
    let plan = fleet::plan(&c.fake.client(), &claims, &opts(), &|_| {}).await;
    for entry in &plan.entries {
        assert!(
            matches!(&entry.action, fleet::Action::Refused { reason } if reason.contains("a rollback of")),
            "{entry:?}"
        );
    }
    // The rollback again: resumed (c1 found through its volume), the rest have nothing to do.
    let (outcomes, _) = run_with(&c, &rollback(), &fleet_opts, &|_, _| true).await;
    for claim in ["orders-a", "orders-b", "c1"] {
        assert_outcome(&outcomes, claim, |o| *o == Outcome::Done);
    }
    assert_outcome(&outcomes, "c2", |o| matches!(o, Outcome::NothingToDo(_)));
    assert_eq!(end_state(&c), expected_with("ReadWriteOnce"));
    assert_eq!(orders_scales(&c), vec![0, 1, 0, 1]);
    c.assert_safe();
}

/// A claim without consumers in a second namespace, `billing`.
fn add_billing(c: &Cluster) {
    c.fake
        .create(
            "/api/v1/persistentvolumes",
            seed::volume("pv-ledger", "billing", "ledger", true),
        )
        .unwrap();
    c.fake
        .create(
            &seed::claims_path("billing"),
            seed::claim("billing", "ledger", "pv-ledger"),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_scan_plans_the_candidates_of_a_real_scan_judged_again_on_the_live_objects() {
    let c = cluster().await;
    add_billing(&c);
    let dir = tempfile::tempdir().unwrap();
    let config = support::kubeconfig::write(dir.path(), &c.fake.url(), NS, "fake");
    let config = config.to_str().unwrap();
    let (code, scan, err) = binary(&["--kubeconfig", config, "scan", "-A", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let found = fleet::candidates_from_scan(&scan, "the scan", None).unwrap();
    let ids: Vec<String> = found
        .claims
        .iter()
        .map(|(ns, name)| format!("{ns}/{name}"))
        .collect();
    // The non-CSI claim is a note of the scan, not a candidate.
    assert_eq!(
        ids,
        [
            "billing/ledger",
            "shop/c1",
            "shop/c2",
            "shop/c3",
            "shop/c4",
            "shop/orders-a",
            "shop/orders-b"
        ],
        "{scan}"
    );
    assert_eq!(found.scanned_namespace, None);
    let file = dir.path().join("scan.json");
    std::fs::write(&file, &scan).unwrap();
    let file = file.to_str().unwrap();

    // Since the scan, c2's StatefulSet went to 2 replicas: no longer a candidate.
    c.fake
        .patch(
            "/apis/apps/v1/namespaces/shop/statefulsets/c2",
            json!({"spec": {"replicas": 2}}),
        )
        .unwrap();
    let before = c.fake.resource_version();
    let (code, plan, err) = migrate(config, &["--from-scan", file, "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    println!("{plan}");
    assert_eq!(
        c.fake.resource_version(),
        before,
        "the dry run wrote nothing"
    );
    assert!(
        plan.starts_with(
            "Migration of 7 claims in namespaces billing, shop to [ReadWriteOncePod]:\nNAMESPACE"
        ),
        "{plan}"
    );
    let row = |ns: &str, claim: &str| {
        plan.lines()
            .find(|l| {
                let mut cells = l.split_whitespace();
                cells.next() == Some(ns) && cells.next() == Some(claim)
            })
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row("billing", "ledger").ends_with("migrate to [ReadWriteOncePod]"),
        "{plan}"
    );
    for claim in ["c1", "c3", "c4", "orders-a", "orders-b"] {
        assert!(
            row("shop", claim).ends_with("migrate to [ReadWriteOncePod]"),
            "{plan}"
        );
    }
    let stale = row("shop", "c2");
    assert!(
        stale.contains("refused:") && stale.contains("2 replicas"),
        "{plan}"
    );
    assert!(!plan.contains("legacy"), "{plan}");
    assert!(plan.contains("shop/orders-a + shop/orders-b"), "{plan}");

    // With -n, the namespace's candidates only.
    let (code, plan, err) =
        migrate(config, &["--from-scan", file, "-n", "billing", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        plan.starts_with("Migration of namespace billing to [ReadWriteOncePod]:\nCLAIM"),
        "{plan}"
    );
    assert!(
        plan.contains("ledger") && !plan.contains("orders-a"),
        "{plan}"
    );

    // From standard input, it cannot also ask: --yes is needed.
    let (code, _, err) = binary_with_stdin(
        &["--kubeconfig", config, "migrate", "--from-scan", "-"],
        &scan,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("add --yes"), "{err}");
    assert_eq!(c.fake.resource_version(), before);
    let (code, _, err) = binary_with_stdin(
        &[
            "--kubeconfig",
            config,
            "migrate",
            "--from-scan",
            "-",
            "--yes",
        ],
        &scan,
    )
    .await;
    assert_eq!(code, 1, "c2 is refused: {err}");
    assert!(
        err.contains("shop/c2: refused:")
            && err.contains(
                "summary: 6 migrated, 0 already done, 1 refused, 0 failed, 0 not started"
            ),
        "{err}"
    );
    let ledger = c
        .fake
        .get("/api/v1/namespaces/billing/persistentvolumeclaims/ledger")
        .unwrap();
    assert_eq!(ledger["spec"]["accessModes"], json!(["ReadWriteOncePod"]));
    let c2 = c.fake.get(&format!("{CLAIMS}/c2")).unwrap();
    assert_eq!(c2["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(orders_scales(&c), vec![0, 1]);

    // The same scan rolls the migrated claims back; c2 was never migrated.
    let (code, _, err) = migrate(config, &["--from-scan", file, "--rollback", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("summary: 6 rolled back, 1 not migrated, 0 refused, 0 failed, 0 not started"),
        "{err}"
    );
    let ledger = c
        .fake
        .get("/api/v1/namespaces/billing/persistentvolumeclaims/ledger")
        .unwrap();
    assert_eq!(ledger["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(orders_scales(&c), vec![0, 1, 0, 1]);
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_scan_refuses_what_is_not_scan_output_and_a_scan_of_another_namespace() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::kubeconfig::write(dir.path(), &c.fake.url(), NS, "fake");
    let config = config.to_str().unwrap();
    let before = c.fake.resource_version();
    let (code, policy_reports, err) =
        binary(&["--kubeconfig", config, "scan", "-o", "policyreport"]).await;
    assert_eq!(code, 0, "{err}");
    let not_scans = [
        ("list.json", r#"{"apiVersion": "v1", "kind": "List", "items": []}"#.to_owned()),
        ("reports.yaml", policy_reports),
        ("empty.json", String::new()),
        (
            "bad-finding.json",
            r#"{"namespace": null, "scanned": {}, "summary": {}, "findings": [{"rule": "migration-candidate", "object": {"kind": "PersistentVolume", "name": "pv-1"}}], "notes": []}"#
                .to_owned(),
        ),
    ];
    for (name, text) in not_scans {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (code, _, err) =
            migrate(config, &["--from-scan", file.to_str().unwrap(), "--yes"]).await;
        assert_eq!(code, 2, "{name}: {err}");
        assert!(
            err.contains("is not the output of `rwop-guard scan -o json`"),
            "{name}: {err}"
        );
    }
    // A scan of shop cannot be taken for one of billing.
    let (code, scan, err) =
        binary(&["--kubeconfig", config, "scan", "-n", "shop", "-o", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("shop.json");
    std::fs::write(&file, scan).unwrap();
    let (code, _, err) = migrate(
        config,
        &[
            "--from-scan",
            file.to_str().unwrap(),
            "-n",
            "billing",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is a scan of namespace shop, not of billing"),
        "{err}"
    );
    // --from-scan takes no claim, --all or selector as well.
    let (code, _, err) = migrate(config, &["--from-scan", file.to_str().unwrap(), "--all"]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(c.fake.resource_version(), before, "nothing was written");
}

#[tokio::test]
async fn a_selector_resumes_claims_deleted_mid_migration_but_not_recorded_claims_it_does_not_match()
{
    let c = cluster().await;
    let fleet_opts = fleet_with(1, true);
    // c1 stops after its reclaim policy (the claim still exists), c4 after its claim is deleted.
    run_all(&c, &fleet_opts, &|claim, done| {
        !((claim == "shop/c1" && done == 2) || (claim == "shop/c4" && done == 4))
    })
    .await;
    c.fake
        .patch(
            &format!("{CLAIMS}/c1"),
            json!({"metadata": {"labels": {"tier": "cache"}}}),
        )
        .unwrap();
    c.fake
        .patch(
            &format!("{CLAIMS}/c2"),
            json!({"metadata": {"labels": {"tier": "cache"}}}),
        )
        .unwrap();
    let client = c.fake.client();
    let db = fleet::claims_of(&client, NS, Some("tier=db"))
        .await
        .unwrap();
    assert_eq!(db, ["c3", "c4", "legacy", "orders-a", "orders-b"]);
    let cache = fleet::claims_of(&client, NS, Some("tier=cache"))
        .await
        .unwrap();
    assert_eq!(cache, ["c1", "c2", "c4"]);
    let all = fleet::claims_of(&client, NS, None).await.unwrap();
    assert_eq!(
        all,
        ["c1", "c2", "c3", "c4", "legacy", "orders-a", "orders-b"]
    );
}
