//! `migrate --statefulset`: a StatefulSet's claims and volumeClaimTemplates against the fake API
//! server, through the real `kube::Client`, with the controllers a migration depends on emulated
//! (tests/support/seed.rs). The fake orphans dependents on `propagationPolicy: Orphan` as the
//! garbage collector does; the StatefulSet controller is emulated as far as pods follow
//! `spec.replicas`.

use rwop_test_support as support;

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rwop_guard::migrate::MigrateOptions;
use rwop_guard::migrate::fleet::{FleetEvent, Outcome};
use rwop_guard::migrate::statefulset::{self, StatefulSetPlan};
use serde_json::{Value, json};
use support::fake_apiserver::EventType;
use support::seed::{self, Cluster, NS};

const STS: &str = "/apis/apps/v1/namespaces/shop/statefulsets/web";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/shop/statefulsets";
const CLAIMS: &str = "/api/v1/namespaces/shop/persistentvolumeclaims";
const CONFIGMAP: &str = "/api/v1/namespaces/shop/configmaps/web-config";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers";
const REPLICAS: usize = 3;
/// Steps of each claim in the StatefulSet flow.
const STEPS: usize = 13;

/// The StatefulSet `web`: 3 replicas, one template `data` [ReadWriteOnce], every field that must
/// survive the recreate set to a non-default value.
fn web() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": NS, "uid": "uid-web", "generation": 4,
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"app": "web", "tier": "db"}, "annotations": {"team": "payments"},
                     "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {"replicas": REPLICAS, "serviceName": "web-headless",
                 "selector": {"matchLabels": {"owner": "web"}},
                 "podManagementPolicy": "Parallel",
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
                 "template": {"metadata": {"labels": {"owner": "web"}},
                              "spec": {"containers": [{"name": "db", "image": "db"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-csi",
                              "resources": {"requests": {"storage": "1Gi"}}}}]},
        "status": {"replicas": REPLICAS, "readyReplicas": REPLICAS}
    })
}

fn claim_name(i: usize) -> String {
    format!("data-web-{i}")
}

/// What the recreated StatefulSet must keep of the original.
fn kept(sts: &Value) -> Value {
    let mut spec = sts["spec"].clone();
    spec["volumeClaimTemplates"][0]["spec"]["accessModes"] = Value::Null;
    json!({"name": sts["metadata"]["name"], "labels": sts["metadata"]["labels"],
           "annotations": sts["metadata"]["annotations"], "spec": spec})
}

struct Env {
    c: Cluster,
    /// `spec.replicas` of `web` after each change by an update: scale-downs and scale-ups.
    sts_scales: Arc<Mutex<Vec<i64>>>,
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// The cluster with `web`, its claims, volumes, pods and a ConfigMap it owns; `change` edits
/// the StatefulSet first.
async fn env_with(change: impl FnOnce(&mut Value)) -> Env {
    let c = Cluster::start().await;
    let mut sts = web();
    change(&mut sts);
    c.fake.create(STATEFULSETS, sts).unwrap();
    for i in 0..REPLICAS {
        let (claim, pv) = (claim_name(i), format!("pv-web-{i}"));
        c.fake
            .create(
                "/api/v1/persistentvolumes",
                seed::volume(&pv, NS, &claim, true),
            )
            .unwrap();
        c.fake.create(CLAIMS, seed::claim(NS, &claim, &pv)).unwrap();
        c.add_pod(NS, &format!("web-{i}"), "StatefulSet", "web", &[&claim]);
    }
    // A dependent that stays: an orphaning delete removes its owner reference.
    c.fake
        .create(
            "/api/v1/namespaces/shop/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "web-config", "namespace": NS,
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "uid-web"}]}}),
        )
        .unwrap();
    let sts_scales = Arc::new(Mutex::new(Vec::new()));
    let scales = sts_scales.clone();
    c.fake.on_write(move |_, event| {
        if event.resource == "statefulsets" && event.event_type == EventType::Modified {
            let new = event.object["spec"]["replicas"].as_i64();
            let old = event
                .old_object
                .as_ref()
                .map(|o| o["spec"]["replicas"].as_i64());
            if let Some(new) = new.filter(|_| old != Some(new)) {
                scales.lock().unwrap().push(new);
            }
        }
    });
    Env { c, sts_scales }
}

fn opts(rollback: bool) -> MigrateOptions {
    MigrateOptions {
        rollback,
        timeout: Duration::from_secs(20),
        ..MigrateOptions::default()
    }
}

async fn plan(e: &Env, rollback: bool) -> Result<StatefulSetPlan, String> {
    statefulset::plan(&e.c.fake.client(), NS, "web", &opts(rollback), &|_| {})
        .await
        .map_err(|e| e.to_string())
}

/// Plans and runs; `after_step(claim, done)` false stops there (a crash).
async fn run(
    e: &Env,
    rollback: bool,
    after_step: &dyn Fn(&str, usize) -> bool,
) -> Vec<(String, Outcome)> {
    match plan(e, rollback).await.unwrap() {
        StatefulSetPlan::AlreadyDone { .. } => Vec::new(),
        StatefulSetPlan::Run(p) => {
            let report = |_: FleetEvent| {};
            statefulset::execute(&e.c.fake.client(), *p, &opts(rollback), &report, after_step).await
        }
    }
}

/// Claims, volumes and the StatefulSet as a finished run leaves them.
fn end_state(e: &Env) -> Value {
    let claims: Vec<Value> = (0..REPLICAS)
        .map(|i| {
            let pvc =
                e.c.fake
                    .get(&format!("{CLAIMS}/{}", claim_name(i)))
                    .unwrap();
            let pv =
                e.c.fake
                    .get(&format!("/api/v1/persistentvolumes/pv-web-{i}"))
                    .unwrap();
            Value::Array(seed::pair_state(&pvc, &pv))
        })
        .collect();
    let sts = e.c.fake.get(STS).unwrap();
    json!({"claims": claims, "templates": sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"],
           "kept": kept(&sts), "pods": e.c.fake.list(&seed::pods_path(NS)).len()})
}

fn expected(mode: &str) -> Value {
    let claim = json!([[mode], "Bound", [mode], "Delete", null, true]);
    json!({"claims": [claim, claim, claim], "templates": [mode], "kept": kept(&web()), "pods": REPLICAS})
}

/// Stops the run at the `n`-th recorded step over all claims (1-based).
fn crash_at(n: usize) -> impl Fn(&str, usize) -> bool {
    let count = Cell::new(0);
    move |_, _| {
        count.set(count.get() + 1);
        count.get() != n
    }
}

#[tokio::test]
async fn a_statefulset_is_migrated_with_one_scale_down_one_scale_up_and_recreated() {
    let e = env().await;
    let outcomes = run(&e, false, &|_, _| true).await;
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Done),
        "{outcomes:?}"
    );
    assert_eq!(end_state(&e), expected("ReadWriteOncePod"));
    let sts = e.c.fake.get(STS).unwrap();
    assert_ne!(sts["metadata"]["uid"], "uid-web", "recreated");
    assert_eq!(sts["metadata"]["managedFields"], Value::Null, "{sts}");
    // Not copied: 1 at the create, 2 after the scale-up.
    assert_eq!(sts["metadata"]["generation"], 2, "{sts}");
    assert_eq!(*e.sts_scales.lock().unwrap(), vec![0, REPLICAS as i64]);
    let cm = e.c.fake.get(CONFIGMAP).unwrap();
    assert_eq!(
        cm["metadata"]["ownerReferences"],
        Value::Null,
        "deleted with propagationPolicy Orphan: {cm}"
    );
    assert!(
        e.c.violations.lock().unwrap().is_empty(),
        "{:?}",
        e.c.violations
    );
    // A second run says so and writes nothing.
    let before = e.c.fake.resource_version();
    assert!(matches!(
        plan(&e, false).await,
        Ok(StatefulSetPlan::AlreadyDone { .. })
    ));
    assert_eq!(e.c.fake.resource_version(), before);
    // And back: the original templates, the same way.
    let outcomes = run(&e, true, &|_, _| true).await;
    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Done),
        "{outcomes:?}"
    );
    assert_eq!(end_state(&e), expected("ReadWriteOnce"));
    assert!(
        e.c.violations.lock().unwrap().is_empty(),
        "{:?}",
        e.c.violations
    );
}

#[tokio::test]
async fn a_crash_after_every_step_resumes_to_the_same_end_or_rolls_back() {
    for n in 1..=REPLICAS * STEPS {
        for rollback in [false, true] {
            let e = env().await;
            let outcomes = run(&e, false, &crash_at(n)).await;
            if n < REPLICAS * STEPS {
                assert!(
                    outcomes
                        .iter()
                        .any(|(_, o)| matches!(o, Outcome::Failed(_))),
                    "crash at {n}: {outcomes:?}"
                );
            }
            run(&e, rollback, &|_, _| true).await;
            let want = if rollback {
                "ReadWriteOnce"
            } else {
                "ReadWriteOncePod"
            };
            assert_eq!(
                end_state(&e),
                expected(want),
                "crash at {n}, rollback {rollback}"
            );
            assert!(
                e.c.violations.lock().unwrap().is_empty(),
                "crash at {n}: {:?}",
                e.c.violations
            );
            // Scaled down once, restored once; a rollback after the scale-down once more, or
            // not at all when nothing was scaled yet.
            let scales = e.sts_scales.lock().unwrap().clone();
            let r = REPLICAS as i64;
            let ok = if rollback {
                matches!(scales.as_slice(), [] | [0, _] | [0, _, 0, _])
                    && scales.iter().all(|&s| s == 0 || s == r)
            } else {
                scales == [0, r]
            };
            assert!(ok, "crash at {n}, rollback {rollback}: {scales:?}");
        }
    }
}

async fn refusal(e: &Env) -> String {
    let before = e.c.fake.resource_version();
    let err = plan(e, false).await.expect_err("refused");
    assert_eq!(
        e.c.fake.resource_version(),
        before,
        "refused: nothing written"
    );
    err
}

#[tokio::test]
async fn refusals_name_the_cause_and_change_nothing() {
    let e = env().await;
    e.c.fake
        .patch(
            "/api/v1/persistentvolumes/pv-web-1",
            json!({"spec": {"csi": null, "hostPath": {"path": "/data"}}}),
        )
        .unwrap();
    let err = refusal(&e).await;
    assert!(err.contains("pv-web-1 is not a CSI volume"), "{err}");

    let e = env().await;
    e.c.fake
        .patch(
            &format!("{CLAIMS}/data-web-2"),
            json!({"spec": {"accessModes": ["ReadWriteMany"]}}),
        )
        .unwrap();
    let err = refusal(&e).await;
    assert!(
        err.contains("only [ReadWriteOnce] claims are migrated"),
        "{err}"
    );

    let e = env().await;
    e.c.fake
        .patch(
            &format!("{CLAIMS}/data-web-0"),
            json!({"status": {"phase": "Pending"}}),
        )
        .unwrap();
    let err = refusal(&e).await;
    assert!(err.contains("not Bound"), "{err}");

    let e = env_with(|s| s["spec"]["replicas"] = json!(4)).await;
    let err = refusal(&e).await;
    assert!(
        err.contains("claims data-web-3 of its replicas do not exist"),
        "{err}"
    );

    let e = env_with(|s| {
        s["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] = json!("Delete")
    })
    .await;
    let err = refusal(&e).await;
    assert!(err.contains("whenScaled: Delete"), "{err}");

    let e = env().await;
    e.c.fake
        .create(
            HPAS,
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "web", "namespace": NS},
                   "spec": {"minReplicas": 0, "maxReplicas": 5,
                            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"}}}),
        )
        .unwrap();
    let err = refusal(&e).await;
    assert!(
        err.contains("HorizontalPodAutoscaler shop/web scales StatefulSet web"),
        "{err}"
    );

    let e = env_with(|s| {
        s["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "example.com/v1", "kind": "Database", "name": "web", "uid": "u", "controller": true}])
    })
    .await;
    let err = refusal(&e).await;
    assert!(err.contains("is managed by Database web"), "{err}");
}

/// A StatefulSet whose claims were migrated one by one gets only its templates changed.
#[tokio::test]
async fn claims_migrated_one_by_one_leave_only_the_template_to_do() {
    let e = env().await;
    let client = e.c.fake.client();
    for i in 0..REPLICAS {
        rwop_guard::migrate::run(
            &client,
            NS,
            &claim_name(i),
            &opts(false),
            &mut |_| {},
            &mut |_| true,
        )
        .await
        .unwrap();
    }
    let sts = e.c.fake.get(STS).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
    run(&e, false, &|_, _| true).await;
    assert_eq!(end_state(&e), expected("ReadWriteOncePod"));
}

async fn binary(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = support::kubeconfig::write(dir.path(), &c.fake.url(), NS, "fake");
    let mut all = vec!["--kubeconfig", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let r = support::binary::run_async(support::binary::rwop_guard(&all), b"").await;
    (r.code, r.stdout, r.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_plans_a_statefulset_and_warns_about_a_claim_migrated_alone() {
    let e = env().await;
    let before = e.c.fake.resource_version();
    let (code, out, err) = binary(&e.c, &["migrate", "--statefulset", "web", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    assert!(
        out.contains("StatefulSet shop/web (3 replicas), volumeClaimTemplates [ReadWriteOnce] -> [ReadWriteOncePod]: its claims run these steps in lockstep"),
        "{out}"
    );
    for i in 0..REPLICAS {
        assert!(out.contains(&format!("data-web-{i}  pv-web-{i}")), "{out}");
    }
    assert!(
        out.contains("delete StatefulSet shop/web with propagationPolicy: Orphan"),
        "{out}"
    );
    assert!(
        out.contains("volumeClaimTemplates accessModes [ReadWriteOncePod]"),
        "{out}"
    );
    assert_eq!(
        e.c.fake.resource_version(),
        before,
        "the dry run wrote nothing"
    );
    // Not confirmed (stdin closed): nothing written.
    let (code, _, err) = binary(&e.c, &["migrate", "--statefulset", "shop/web"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not confirmed"), "{err}");
    assert_eq!(e.c.fake.resource_version(), before);
    // One claim on its own: the warning names the fix.
    let (code, _, err) = binary(&e.c, &["migrate", "shop/data-web-1", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: claim shop/data-web-1 belongs to StatefulSet web, whose volumeClaimTemplates still say [ReadWriteOnce]")
            && err.contains("rwop-guard migrate --statefulset shop/web"),
        "{err}"
    );
    // Interrupted, a claim of it cannot go on alone (it would scale the StatefulSet up).
    let c = e.c.fake.client();
    if let StatefulSetPlan::Run(p) = plan(&e, false).await.unwrap() {
        statefulset::execute(&c, *p, &opts(false), &|_| {}, &crash_at(1)).await;
    }
    let (code, _, err) = binary(&e.c, &["migrate", "shop/data-web-0", "--yes"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is being migrated with StatefulSet web")
            && err.contains("rwop-guard migrate --statefulset shop/web"),
        "{err}"
    );
    // Run, then a second run says so.
    let (code, _, err) = binary(&e.c, &["migrate", "--statefulset", "shop/web", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(end_state(&e), expected("ReadWriteOncePod"));
    let before = e.c.fake.resource_version();
    let (code, _, err) = binary(&e.c, &["migrate", "--statefulset", "shop/web"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already migrated; nothing to do"), "{err}");
    assert_eq!(e.c.fake.resource_version(), before);
}
