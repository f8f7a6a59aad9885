//! `rwop-guard migrate` against the in-process fake API server, through the real `kube::Client`,
//! with small emulations of the controllers a migration depends on (tests/support/seed.rs:
//! Deployment/ReplicaSet/StatefulSet pods, the pvc-protection finalizer, the PV controller's
//! binding and reclaiming). Every PersistentVolume write is also checked against the validating
//! webhook's rules and the safety invariants (never deleted, never unclaimed with reclaim policy
//! Delete).

use rwop_test_support as support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rwop_guard::migrate::{self, MigrateError, MigrateOptions, Progress, STEPS};
use rwop_guard::policy::{MIGRATED_FROM_ANNOTATION, MIGRATION_ANNOTATION, OPT_OUT_ANNOTATION};
use serde_json::{Value, json};
use support::fake_apiserver::{EventType, ResourceDef};
use support::seed::{self, Cluster};

const NS: &str = "shop";
const CLAIM: &str = "orders-db";
const VOLUME: &str = "pv-orders";
const PV_PATH: &str = "/api/v1/persistentvolumes/pv-orders";
const PVC_PATH: &str = "/api/v1/namespaces/shop/persistentvolumeclaims/orders-db";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/orders";
const STATEFULSET: &str = "/apis/apps/v1/namespaces/shop/statefulsets/reports";
const RS_NAME: &str = "orders-5cc5c796bd";
const ORIGINAL_STRATEGY: &str = migrate::ORIGINAL_STRATEGY_ANNOTATION;

/// A pod of `owner` mounting the claim.
fn pod(name: &str, owner_kind: &str, owner: &str) -> Value {
    seed::pod(NS, name, owner_kind, owner, &[CLAIM])
}

async fn cluster() -> Cluster {
    let c = Cluster::start().await;
    let fake = &c.fake;
    fake.create(
        "/api/v1/persistentvolumes",
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": VOLUME, "finalizers": ["kubernetes.io/pv-protection"]},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast-csi",
                     "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0123"},
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": NS, "name": CLAIM, "uid": "claim-uid-1"}},
            "status": {"phase": "Bound"}
        }),
    )
    .unwrap();
    fake.create(
        "/api/v1/namespaces/shop/persistentvolumeclaims",
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": NS, "uid": "claim-uid-1", "labels": {"app": "orders"},
                         "annotations": {"pv.kubernetes.io/bind-completed": "yes", "team": "payments"},
                         "finalizers": ["kubernetes.io/pvc-protection"]},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "fast-csi", "volumeName": VOLUME, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
        }),
    )
    .unwrap();
    fake.create(
        "/apis/apps/v1/namespaces/shop/statefulsets",
        seed::statefulset(NS, "reports"),
    )
    .unwrap();
    c.add_pod(NS, "orders-0", "ReplicaSet", RS_NAME, &[CLAIM]);
    // The StatefulSet mounts a claim of its own: a second workload on the claim would keep one
    // of them Pending with ReadWriteOncePod (migrate refuses it; see the refusals).
    c.add_pod(NS, "reports-0", "StatefulSet", "reports", &["reports-data"]);
    c
}

fn opts() -> MigrateOptions {
    MigrateOptions {
        timeout: Duration::from_secs(20),
        ..MigrateOptions::default()
    }
}

async fn run(
    c: &Cluster,
    opts: &MigrateOptions,
    stop_after: Option<usize>,
) -> (Result<(), MigrateError>, Vec<Progress>) {
    let mut seen = Vec::new();
    let result = migrate::run(
        &c.fake.client(),
        NS,
        CLAIM,
        opts,
        &mut |p| seen.push(p),
        &mut |done| stop_after != Some(done),
    )
    .await;
    (result, seen)
}

fn replicas(c: &Cluster, path: &str) -> i64 {
    c.fake.get(path).unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

/// The claim, its volume, and the consumers, as far as a migration can change them.
fn shape(c: &Cluster) -> Value {
    let pv = c.fake.get(PV_PATH).expect("the volume exists");
    let pvc = c.fake.get(PVC_PATH).expect("the claim exists");
    json!({
        "pvModes": pv["spec"]["accessModes"],
        "reclaim": pv["spec"]["persistentVolumeReclaimPolicy"],
        "pvPhase": pv["status"]["phase"],
        "boundTo": [pv["spec"]["claimRef"]["namespace"], pv["spec"]["claimRef"]["name"]],
        "boundToLiveClaim": pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"],
        "state": pv["metadata"]["annotations"][MIGRATION_ANNOTATION],
        "claimModes": pvc["spec"]["accessModes"],
        "claimVolume": pvc["spec"]["volumeName"],
        "claimPhase": pvc["status"]["phase"],
        "claimLabels": pvc["metadata"]["labels"],
        "claimTeam": pvc["metadata"]["annotations"]["team"],
        "pvMarker": pv["metadata"]["annotations"][MIGRATED_FROM_ANNOTATION],
        "claimMarker": pvc["metadata"]["annotations"][MIGRATED_FROM_ANNOTATION],
        "orders": replicas(c, DEPLOYMENT),
        "reports": replicas(c, STATEFULSET),
        "pods": c.fake.list(PODS).len(),
    })
}

fn expected(modes: &str) -> Value {
    // The permanent marker of a migration, on claim and volume (gone after a rollback).
    let marker = (modes == "ReadWriteOncePod").then_some("ReadWriteOnce");
    json!({
        "pvModes": [modes], "reclaim": "Delete", "pvPhase": "Bound",
        "boundTo": [NS, CLAIM], "boundToLiveClaim": true, "state": null,
        "claimModes": [modes], "claimVolume": VOLUME, "claimPhase": "Bound",
        "claimLabels": {"app": "orders"}, "claimTeam": "payments",
        "pvMarker": marker, "claimMarker": marker,
        "orders": 1, "reports": 1, "pods": 2,
    })
}

/// A run told to stop after step `k` stopped there, and for no other reason.
fn assert_interrupted(result: Result<(), MigrateError>, k: usize) {
    assert!(
        matches!(result, Err(MigrateError::Interrupted { completed }) if completed == k),
        "stopped after step {k}: {result:?}"
    );
}

fn assert_no_violations(c: &Cluster) {
    let v = c.violations.lock().unwrap();
    assert!(v.is_empty(), "{v:#?}");
}

#[tokio::test]
async fn full_migration_ends_with_rwop_bound_to_the_same_volume() {
    let c = cluster().await;
    let before_uid = c.fake.get(PVC_PATH).unwrap()["metadata"]["uid"].clone();
    let (result, progress) = run(&c, &opts(), None).await;
    result.unwrap();
    assert_eq!(shape(&c), expected("ReadWriteOncePod"));
    assert_ne!(
        c.fake.get(PVC_PATH).unwrap()["metadata"]["uid"],
        before_uid,
        "the claim was recreated"
    );
    assert_no_violations(&c);
    // Every step reported once, in order; on a fresh run only the wait for binding may find
    // nothing to wait for (the fake PV controller binds at once).
    let started: Vec<usize> = progress
        .iter()
        .filter_map(|p| match p {
            Progress::Started { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(started, (1..=STEPS.len()).collect::<Vec<_>>());
    for p in &progress {
        if let Progress::Skipped { step, why } = p {
            assert_eq!(*step, migrate::Step::WaitBound, "{why}");
        }
    }
    // Managed annotations are not carried over to the new claim.
    let claim = c.fake.get(PVC_PATH).unwrap();
    assert!(claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"].is_null());

    // Running again on the finished migration has nothing to do, and writes nothing.
    let before = c.fake.resource_version();
    let (again, progress) = run(&c, &opts(), None).await;
    again.unwrap();
    assert!(progress.is_empty(), "{progress:?}");
    assert_eq!(c.fake.resource_version(), before, "nothing written");
    match migrate::prepare(&c.fake.client(), NS, CLAIM, &opts(), &mut |_| {})
        .await
        .unwrap()
    {
        migrate::Plan::AlreadyMigrated { volume } => assert_eq!(volume, VOLUME),
        migrate::Plan::Run(plan) => panic!("a second run would do {plan:?}"),
    }
}

#[tokio::test]
async fn a_crash_after_any_step_then_a_resume_ends_the_same() {
    for k in 1..=STEPS.len() {
        let c = cluster().await;
        let (first, _) = run(&c, &opts(), Some(k)).await;
        if k < STEPS.len() {
            assert_interrupted(first, k);
            // The volume carries the progress.
            let state = c.fake.get(PV_PATH).unwrap()["metadata"]["annotations"]
                [MIGRATION_ANNOTATION]
                .clone();
            let state: Value = serde_json::from_str(state.as_str().unwrap()).unwrap();
            assert_eq!(state["completed"], k, "step {k}");
            let (resumed, _) = run(&c, &opts(), None).await;
            resumed.unwrap_or_else(|e| panic!("resume after step {k}: {e}"));
        }
        assert_eq!(
            shape(&c),
            expected("ReadWriteOncePod"),
            "crash after step {k}"
        );
        assert_no_violations(&c);
    }
}

#[tokio::test]
async fn a_rollback_from_any_step_returns_to_the_start() {
    let start = {
        let c = cluster().await;
        shape(&c)
    };
    assert_eq!(start, expected("ReadWriteOnce"));
    for k in 1..STEPS.len() {
        let c = cluster().await;
        let (first, _) = run(&c, &opts(), Some(k)).await;
        assert_interrupted(first, k);
        let rollback = MigrateOptions {
            rollback: true,
            ..opts()
        };
        let (back, _) = run(&c, &rollback, None).await;
        back.unwrap_or_else(|e| panic!("rollback after step {k}: {e}"));
        assert_eq!(shape(&c), start, "rollback after step {k}");
        assert_no_violations(&c);
    }
}

#[tokio::test]
async fn an_interrupted_rollback_resumes_and_a_forward_run_waits_for_it() {
    for (k, r) in [(6, 3), (7, 6), (8, 2)] {
        let c = cluster().await;
        assert_interrupted(run(&c, &opts(), Some(k)).await.0, k);
        let rollback = MigrateOptions {
            rollback: true,
            ..opts()
        };
        assert_interrupted(run(&c, &rollback, Some(r)).await.0, r);
        // A forward run must not silently undo a half-done rollback.
        let (forward, _) = run(&c, &opts(), None).await;
        assert!(
            forward
                .unwrap_err()
                .to_string()
                .contains("finish it with --rollback")
        );
        run(&c, &rollback, None).await.0.unwrap();
        assert_eq!(shape(&c), expected("ReadWriteOnce"), "after {k}/{r}");
        assert_no_violations(&c);
        // Once back at the start, the migration can run again from scratch.
        run(&c, &opts(), None).await.0.unwrap();
        assert_eq!(shape(&c), expected("ReadWriteOncePod"));
    }
}

#[tokio::test]
async fn concurrent_writers_on_the_volume_are_retried() {
    let c = cluster().await;
    let options = opts();
    let migration = run(&c, &options, None);
    tokio::pin!(migration);
    // Every other write of the migration to the volume (the 1st, 3rd, …) is held; meanwhile
    // another writer changes the volume, so the held write (made from what the migration read
    // before) meets a real 409 Conflict when it goes on, and must be read again and re-applied.
    let writes = Arc::new(AtomicUsize::new(0));
    let hold = || {
        let writes = writes.clone();
        c.fake.hold_next(move |request| {
            request.starts_with("PUT /api/v1/persistentvolumes/pv-orders")
                && writes.fetch_add(1, Ordering::SeqCst).is_multiple_of(2)
        })
    };
    let mut held = hold();
    let mut conflicts = 0;
    let result = loop {
        tokio::select! {
            (result, _) = &mut migration => break result,
            () = held.arrived() => {
                conflicts += 1;
                let touched = json!({"metadata": {"labels": {"touched": conflicts.to_string()}}});
                c.fake.patch(PV_PATH, touched).unwrap();
                // The next write is looked at before this one goes on (and is let through).
                std::mem::replace(&mut held, hold()).release();
            }
        }
    };
    result.unwrap();
    // Each held write met its conflict and was retried once, successfully (six writes of the
    // volume when this was written: the state, Retain, the claim's uid, the modes, the reclaim
    // policy back, the state removed).
    assert_eq!(writes.load(Ordering::SeqCst), 2 * conflicts);
    assert!(conflicts >= 1, "no write met a conflict");
    let pv = c.fake.get(PV_PATH).unwrap();
    assert_eq!(
        pv["metadata"]["labels"]["touched"],
        conflicts.to_string(),
        "the other writer's change was written over"
    );
    assert_eq!(shape(&c), expected("ReadWriteOncePod"));
    assert_no_violations(&c);
}

// ---- Preflight ---------------------------------------------------------------------------------

/// Runs to completion and checks a warning containing `fragment` was reported.
async fn run_warns(c: &Cluster, opts: &MigrateOptions, fragment: &str) {
    let (result, progress) = run(c, opts, None).await;
    result.unwrap();
    assert!(
        progress
            .iter()
            .any(|p| matches!(p, Progress::Warning(w) if w.contains(fragment))),
        "{progress:?}"
    );
}

/// Runs to the end with no warning containing `fragment` and no violation.
async fn run_without_warning(c: &Cluster, fragment: &str) {
    let (result, progress) = run(c, &opts(), None).await;
    result.unwrap();
    assert!(
        !progress
            .iter()
            .any(|p| matches!(p, Progress::Warning(w) if w.contains(fragment))),
        "{progress:?}"
    );
    assert_no_violations(c);
}

async fn refused(c: &Cluster, opts: &MigrateOptions) -> String {
    let before = c.fake.resource_version();
    let err = run(c, opts, None).await.0.unwrap_err();
    assert!(matches!(err, MigrateError::Refused(_)), "{err:?}");
    assert_eq!(
        c.fake.resource_version(),
        before,
        "a refused migration changes nothing"
    );
    err.to_string()
}

#[tokio::test]
async fn preflight_refuses_unsafe_starts_with_reasons() {
    // Not Bound.
    let c = cluster().await;
    c.fake
        .patch(PVC_PATH, json!({"status": {"phase": "Pending"}}))
        .unwrap();
    assert!(refused(&c, &opts()).await.contains("not Bound"));

    // Volume modes not exactly [ReadWriteOnce].
    let c = cluster().await;
    c.fake
        .patch(
            PV_PATH,
            json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}}),
        )
        .unwrap();
    assert!(
        refused(&c, &opts())
            .await
            .contains("only [ReadWriteOnce] volumes")
    );

    // A bare pod: refused unless deleting it is allowed.
    let c = cluster().await;
    let mut bare = pod("debug-shell", "ReplicaSet", "none");
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    bare["metadata"]["labels"] = json!({"owner": "nobody"});
    c.fake.create(PODS, bare).unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("debug-shell") && msg.contains("--allow-delete-pods"),
        "{msg}"
    );
    let allow = MigrateOptions {
        allow_delete_pods: true,
        ..opts()
    };
    run_warns(&c, &allow, "debug-shell").await;
    assert!(c.fake.get(&format!("{PODS}/debug-shell")).is_none());
    assert_no_violations(&c);

    // A controller rwop-guard cannot scale.
    let c = cluster().await;
    c.fake
        .create(PODS, pod("agent-x", "DaemonSet", "agent"))
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(msg.contains("DaemonSet/agent"), "{msg}");

    // Not CSI: refused unless allowed, then a warning.
    let c = cluster().await;
    c.fake
        .patch(
            PV_PATH,
            json!({"spec": {"csi": null, "hostPath": {"path": "/srv/orders"}}}),
        )
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("not a CSI volume") && msg.contains("--allow-non-csi"),
        "{msg}"
    );
    let allow = MigrateOptions {
        allow_non_csi: true,
        ..opts()
    };
    run_warns(&c, &allow, "not a CSI volume").await;

    // Nothing to roll back.
    let c = cluster().await;
    let rollback = MigrateOptions {
        rollback: true,
        ..opts()
    };
    assert!(
        refused(&c, &rollback)
            .await
            .contains("nothing to roll back")
    );

    // No such claim.
    let c = cluster().await;
    let err = migrate::run(
        &c.fake.client(),
        NS,
        "missing",
        &opts(),
        &mut |_| {},
        &mut |_| true,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

const SCALED_OBJECTS: &str = "/apis/keda.sh/v1alpha1/namespaces/shop/scaledobjects";

/// A cluster with KEDA's ScaledObject resource and one ScaledObject.
async fn cluster_with_scaled_object(name: &str, target: Value, annotations: Value) -> Cluster {
    let c = cluster().await;
    c.fake.add_resource(ResourceDef::custom(
        "keda.sh",
        "v1alpha1",
        "scaledobjects",
        "ScaledObject",
        true,
    ));
    c.fake
        .create(
            SCALED_OBJECTS,
            json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": name, "namespace": NS, "annotations": annotations},
                "spec": {"scaleTargetRef": target, "minReplicaCount": 0,
                         "triggers": [{"type": "cron", "metadata": {"timezone": "UTC",
                             "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "2"}}]}
            }),
        )
        .unwrap();
    c
}

const HPAS: &str = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers";

fn hpa(name: &str, target: &str, min_replicas: i64) -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "minReplicas": min_replicas, "maxReplicas": 4,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "queue_depth"},
                     "target": {"type": "AverageValue", "averageValue": "30"}}}]}
    })
}

#[tokio::test]
async fn hpas_that_scale_from_zero_are_refused() {
    // minReplicas 0 (HPAScaleToZero): it keeps scaling a target at 0 replicas.
    let c = cluster().await;
    c.fake.create(HPAS, hpa("orders-hpa", "orders", 0)).unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains(
            "HorizontalPodAutoscaler shop/orders-hpa scales Deployment orders with minReplicas: 0"
        ),
        "{msg}"
    );

    // minReplicas 1 stops at 0 replicas (ScalingDisabled), and another workload's HPA is not in
    // the way.
    let c = cluster().await;
    c.fake.create(HPAS, hpa("orders-hpa", "orders", 1)).unwrap();
    c.fake.create(HPAS, hpa("web-hpa", "web", 0)).unwrap();
    run_without_warning(&c, "HorizontalPodAutoscaler").await;

    // Not allowed to list them: a warning, not a refusal.
    let c = cluster().await;
    c.fake.forbid(HPAS);
    run_warns(
        &c,
        &opts(),
        "cannot list HorizontalPodAutoscalers in shop (forbidden)",
    )
    .await;
}

#[tokio::test]
async fn keda_scaled_objects_of_a_consumer_must_be_paused() {
    // Active, targeting the Deployment (KEDA's default kind): refused, nothing written, and the
    // message says how to pause it.
    let c = cluster_with_scaled_object("orders-scaler", json!({"name": "orders"}), json!({})).await;
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("KEDA ScaledObject shop/orders-scaler scales Deployment orders")
            && msg.contains("kubectl annotate scaledobject -n shop orders-scaler autoscaling.keda.sh/paused=true"),
        "{msg}"
    );

    // Targeting the Deployment by explicit kind and apiVersion.
    let c = cluster_with_scaled_object(
        "orders-scaler",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders"}),
        json!({}),
    )
    .await;
    let msg = refused(&c, &opts()).await;
    assert!(msg.contains("scales Deployment orders"), "{msg}");

    // A ScaledObject of a workload that does not use the claim is no concern.
    let c = cluster_with_scaled_object(
        "reports-scaler",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "reports"}),
        json!({}),
    )
    .await;
    run(&c, &opts(), None).await.0.unwrap();

    // paused-replicas makes KEDA hold a replica count: refused as well.
    let c = cluster_with_scaled_object(
        "orders-scaler",
        json!({"name": "orders"}),
        json!({"autoscaling.keda.sh/paused-replicas": "0"}),
    )
    .await;
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("holds Deployment orders at autoscaling.keda.sh/paused-replicas=0"),
        "{msg}"
    );

    // A ScaledObject of another workload is not in the way.
    let c = cluster_with_scaled_object(
        "web-scaler",
        json!({"kind": "Deployment", "name": "web"}),
        json!({}),
    )
    .await;
    run_without_warning(&c, "KEDA").await;

    // Paused: the migration runs, and says to unpause afterwards.
    let c = cluster_with_scaled_object(
        "orders-scaler",
        json!({"name": "orders"}),
        json!({"autoscaling.keda.sh/paused": "true"}),
    )
    .await;
    run_warns(
        &c,
        &opts(),
        "shop/orders-scaler (scales Deployment orders) is paused",
    )
    .await;
    assert_no_violations(&c);

    // Not allowed to list them: a warning, not a refusal.
    let c = cluster().await;
    c.fake.forbid("/apis/keda.sh/");
    run_warns(
        &c,
        &opts(),
        "cannot list KEDA ScaledObjects in shop (forbidden)",
    )
    .await;
}

#[tokio::test]
async fn a_claim_that_does_not_bind_times_out_keeping_the_volume() {
    let c = cluster().await;
    // Something else grabs the volume while it is released (a claim of another name).
    c.fake.on_write(|store, event| {
        if event.resource == "persistentvolumes"
            && event.event_type == EventType::Modified
            && event.object["spec"]["accessModes"] == json!(["ReadWriteOncePod"])
            && event.old_object.as_ref().is_some_and(|o| o["spec"]["accessModes"] == json!(["ReadWriteOnce"]))
        {
            store
                .patch(PV_PATH, json!({"spec": {"claimRef": {"namespace": NS, "name": "intruder", "uid": "intruder-uid"}}}))
                .unwrap();
        }
    });
    let short = MigrateOptions {
        timeout: Duration::from_millis(200),
        ..opts()
    };
    let err = run(&c, &short, None).await.0.unwrap_err();
    assert!(matches!(err, MigrateError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("to be Bound"), "{err}");
    // The volume still exists and is retained.
    let pv = c.fake.get(PV_PATH).unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
}

// ---- The binary, also as the kubectl plugin ------------------------------------------------------

/// `program ARGS` (the binary through its kubectl plugin link): (exit code, stdout, stderr).
async fn run_plugin(program: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut command = support::binary::command(program);
    command.args(args);
    let r = support::binary::run_async(command, b"").await;
    (r.code, r.stdout, r.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rwop_migrate_dry_run_confirm_and_run() {
    let c = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    // The current context leads nowhere: only an honoured `--context fake` reaches the fake.
    let config = support::kubeconfig::write(dir.path(), &c.fake.url(), NS, "nowhere");
    let config = config.to_str().unwrap();
    let plugin = dir.path().join("kubectl-rwop");
    std::os::unix::fs::symlink(support::binary::path(), &plugin).unwrap();

    let (code, _, err) = run_plugin(&plugin, &["--help"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, help, _) = run_plugin(&plugin, &["--help"]).await;
    assert!(help.contains("kubectl rwop"), "{help}");

    // Dry run, namespace from -n, context chosen with --context: the plan, and no write.
    let before = c.fake.resource_version();
    let (code, plan, err) = run_plugin(
        &plugin,
        &[
            "--kubeconfig",
            config,
            "--context",
            "fake",
            "migrate",
            CLAIM,
            "-n",
            NS,
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    for (i, needle) in [
        "record the migration state on PersistentVolume pv-orders",
        "spec.persistentVolumeReclaimPolicy: Delete -> Retain",
        "(Deployment orders replicas 1 -> 0)",
        "delete PersistentVolumeClaim shop/orders-db (precondition: its uid)",
        "clear PersistentVolume pv-orders spec.claimRef.uid",
        "spec.accessModes: [ReadWriteOnce] -> [ReadWriteOncePod], annotation rwop-guard.dev/migrated-from: ReadWriteOnce",
        "create PersistentVolumeClaim shop/orders-db with accessModes [ReadWriteOncePod] and volumeName pv-orders",
        "wait until PersistentVolumeClaim shop/orders-db is Bound to pv-orders",
        "restore consumers (Deployment orders replicas 0 -> 1)",
        "spec.persistentVolumeReclaimPolicy: Retain -> Delete",
        "remove the migration state",
    ]
    .iter()
    .enumerate()
    {
        let line = format!("[{}/11] ", i + 1);
        let found = plan.lines().find(|l| l.contains(&line)).unwrap_or_default();
        assert!(found.contains(needle), "step {}: {found:?}\n{plan}", i + 1);
    }
    assert!(
        plan.contains("volumeName: pv-orders") && plan.contains("- ReadWriteOncePod"),
        "{plan}"
    );
    assert_eq!(
        c.fake.resource_version(),
        before,
        "a dry run writes nothing"
    );

    // Without --context the kubeconfig's current context (a closed port) is used: a clear error.
    let (code, _, err) = run_plugin(
        &plugin,
        &[
            "--kubeconfig",
            config,
            "migrate",
            "shop/orders-db",
            "--dry-run",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("cannot read claim shop/orders-db"), "{err}");

    // Not confirmed (no terminal, no --yes): nothing changes.
    let (code, _, err) = run_plugin(
        &plugin,
        &[
            "--kubeconfig",
            config,
            "--context",
            "fake",
            "migrate",
            "shop/orders-db",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("not confirmed"), "{err}");
    assert_eq!(c.fake.resource_version(), before);

    // The real thing, with progress lines.
    let (code, _, err) = run_plugin(
        &plugin,
        &[
            "--kubeconfig",
            config,
            "--context",
            "fake",
            "migrate",
            "shop/orders-db",
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("[4/11] delete PersistentVolumeClaim shop/orders-db")
            && err.contains("done in"),
        "{err}"
    );
    assert!(err.contains("are now [ReadWriteOncePod]"), "{err}");
    assert_eq!(shape(&c), expected("ReadWriteOncePod"));
    assert_no_violations(&c);
}

// ---- Finished migrations: the marker, rollback after completion ---------------------------------

fn annotation(obj: &Value, key: &str) -> Value {
    obj["metadata"]["annotations"][key].clone()
}

#[tokio::test]
async fn a_finished_migration_rolls_back_to_rwo_on_the_same_volume() {
    let c = cluster().await;
    let pv_uid = c.fake.get(PV_PATH).unwrap()["metadata"]["uid"].clone();
    run(&c, &opts(), None).await.0.unwrap();
    assert_eq!(shape(&c), expected("ReadWriteOncePod"));

    let rollback = MigrateOptions {
        rollback: true,
        ..opts()
    };
    let (back, progress) = run(&c, &rollback, None).await;
    back.unwrap();
    assert_eq!(shape(&c), expected("ReadWriteOnce"));
    assert_eq!(c.fake.get(PV_PATH).unwrap()["metadata"]["uid"], pv_uid);
    // Every write was one the webhook allows: V2 let RWOP -> RWO through only because the state
    // was recorded first and the volume was unbound.
    assert_no_violations(&c);
    let claim = c.fake.get(PVC_PATH).unwrap();
    assert_eq!(annotation(&claim, OPT_OUT_ANNOTATION), "false");
    assert!(
        progress.iter().any(|p| matches!(p, Progress::Started { what, .. }
            if what.contains("spec.accessModes: [ReadWriteOncePod] -> [ReadWriteOnce], remove annotation rwop-guard.dev/migrated-from"))),
        "{progress:?}"
    );

    // Nothing is left to roll back: refused, nothing written.
    let msg = refused(&c, &rollback).await;
    assert!(
        msg.contains("no migration of shop/orders-db is recorded on PersistentVolume pv-orders")
            && msg.contains("nothing to roll back"),
        "{msg}"
    );
    // And the migration can run again.
    run(&c, &opts(), None).await.0.unwrap();
    assert_eq!(shape(&c), expected("ReadWriteOncePod"));
}

#[tokio::test]
async fn a_rollback_after_completion_needs_the_marker() {
    // A claim and volume made [ReadWriteOncePod] by someone else: not migrate's to undo.
    let c = cluster().await;
    run(&c, &opts(), None).await.0.unwrap();
    c.fake
        .patch(
            PV_PATH,
            json!({"metadata": {"annotations": {MIGRATED_FROM_ANNOTATION: null}}}),
        )
        .unwrap();
    let rollback = MigrateOptions {
        rollback: true,
        ..opts()
    };
    let msg = refused(&c, &rollback).await;
    assert!(
        msg.contains("without the rwop-guard.dev/migrated-from: ReadWriteOnce annotation")
            && msg.contains("only volumes rwop-guard migrate moved are rolled back"),
        "{msg}"
    );
    // The volume is marked, the claim is not.
    let c = cluster().await;
    run(&c, &opts(), None).await.0.unwrap();
    c.fake
        .patch(
            PVC_PATH,
            json!({"metadata": {"annotations": {MIGRATED_FROM_ANNOTATION: null}}}),
        )
        .unwrap();
    let msg = refused(&c, &rollback).await;
    assert!(msg.contains("refusing to roll it back"), "{msg}");
}

/// A rollback claim created while the mutating webhook still thinks the volume offers RWOP:
/// the fake's "webhook" rewrites claims without the opt-out annotation, as M1 would.
#[tokio::test]
async fn a_rollback_claim_opts_out_of_mutation() {
    let c = cluster().await;
    run(&c, &opts(), None).await.0.unwrap();
    let rewritten = Arc::new(Mutex::new(0));
    let count = rewritten.clone();
    c.fake.on_write(move |store, event| {
        let opted_out = event.object["metadata"]["annotations"][OPT_OUT_ANNOTATION] == "false";
        if event.resource == "persistentvolumeclaims"
            && event.event_type == EventType::Added
            && !opted_out
        {
            *count.lock().unwrap() += 1;
            store
                .patch(
                    PVC_PATH,
                    json!({"spec": {"accessModes": ["ReadWriteOncePod"]}}),
                )
                .unwrap();
        }
    });
    let rollback = MigrateOptions {
        rollback: true,
        ..opts()
    };
    run(&c, &rollback, None).await.0.unwrap();
    assert_eq!(*rewritten.lock().unwrap(), 0);
    assert_eq!(shape(&c), expected("ReadWriteOnce"));
}

/// A claim of the same name with other modes than the target (created by someone else while
/// the claim was gone) stops the run at once with the reason, instead of a timeout waiting for
/// it to bind.
#[tokio::test]
async fn a_claim_with_other_modes_in_the_way_is_reported_at_once() {
    let c = cluster().await;
    run(&c, &opts(), Some(6)).await.0.unwrap_err();
    assert!(c.fake.get(PVC_PATH).is_none(), "deleted in step 4");
    let other = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": "fast-csi", "volumeName": VOLUME}
    });
    c.fake
        .create("/api/v1/namespaces/shop/persistentvolumeclaims", other)
        .unwrap();
    let err = run(&c, &opts(), None).await.0.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("claim shop/orders-db is [ReadWriteOnce], not [ReadWriteOncePod]")
            && msg.contains("delete it (the volume is retained)"),
        "{msg}"
    );
    let pv = c.fake.get(PV_PATH).unwrap();
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_no_violations(&c);
}

// ---- Workloads a ReadWriteOncePod claim cannot serve ---------------------------------------------

#[tokio::test]
async fn workloads_that_cannot_share_one_pod_claim_are_refused_before_any_write() {
    // More than one replica: refused whatever the flags.
    let c = cluster().await;
    c.fake
        .patch(DEPLOYMENT, json!({"spec": {"replicas": 2}}))
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("claim shop/orders-db is used by Deployment orders with 2 replicas")
            && msg.contains("scale it to 1 replica first"),
        "{msg}"
    );
    let switch = MigrateOptions {
        switch_to_recreate: true,
        ..opts()
    };
    assert!(refused(&c, &switch).await.contains("with 2 replicas"));

    // A StatefulSet with 2 replicas sharing the claim (named in its pod template), alone.
    let c = cluster().await;
    c.fake.delete(DEPLOYMENT).unwrap();
    c.fake
        .delete(&format!(
            "/apis/apps/v1/namespaces/shop/replicasets/{RS_NAME}"
        ))
        .unwrap();
    c.fake.delete(&format!("{PODS}/orders-0")).unwrap();
    c.fake
        .patch(
            STATEFULSET,
            json!({"spec": {"replicas": 2, "template": {"spec": {
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": CLAIM}}]}}}}),
        )
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("is used by StatefulSet reports with 2 replicas"),
        "{msg}"
    );

    // A second workload on the claim: whichever starts second would stay Pending.
    let c = cluster().await;
    c.fake
        .patch(
            STATEFULSET,
            json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": CLAIM}}]}}}}),
        )
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("claim shop/orders-db is used by Deployment orders and StatefulSet reports")
            && msg.contains("would stay Pending"),
        "{msg}"
    );

    // A Deployment scaled to 0 has no pod, but its template mounts the claim: judged too.
    let c = cluster().await;
    c.fake
        .patch(
            DEPLOYMENT,
            json!({"spec": {"replicas": 0, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
        )
        .unwrap();
    assert!(
        refused(&c, &opts())
            .await
            .contains("with strategy RollingUpdate, maxSurge 1")
    );
}

#[tokio::test]
async fn a_surging_rollout_is_refused_or_switched_to_recreate_and_restored_by_rollback() {
    let c = cluster().await;
    // What the API server stores for a Deployment created without a strategy.
    let rolling = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    c.fake
        .patch(DEPLOYMENT, json!({"spec": {"strategy": rolling}}))
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains(
            "claim shop/orders-db is used by Deployment orders with strategy RollingUpdate, maxSurge 25%"
        ) && msg.contains("pass --switch-to-recreate"),
        "{msg}"
    );

    // The plan says it; nothing is written by preparing it.
    let switch = MigrateOptions {
        switch_to_recreate: true,
        ..opts()
    };
    let before = c.fake.resource_version();
    let migrate::Plan::Run(plan) =
        migrate::prepare(&c.fake.client(), NS, CLAIM, &switch, &mut |_| {})
            .await
            .unwrap()
    else {
        panic!("a plan to run");
    };
    assert_eq!(c.fake.resource_version(), before);
    let scale_down = migrate::Step::ScaleDown.describe(&plan.state, VOLUME);
    assert!(
        scale_down.starts_with(
            "switch Deployment orders spec.strategy: RollingUpdate, maxSurge 25% -> Recreate (the original kept in annotation rwop-guard.dev/original-strategy); scale consumers"
        ),
        "{scale_down}"
    );

    // Interrupted before the switch: its rollback has no strategy to restore, and says none.
    assert_interrupted(run(&c, &switch, Some(2)).await.0, 2);
    let rollback = MigrateOptions {
        rollback: true,
        ..opts()
    };
    let early = plan_of(&c, &rollback).await;
    assert!(
        early.state.switches.is_empty()
            && !migrate::Step::ScaleUp
                .describe(&early.state, VOLUME)
                .contains("spec.strategy"),
        "{early:?}"
    );
    // Resumed up to after the switch, then rolled back: the strategy is back.
    assert_interrupted(run(&c, &switch, Some(3)).await.0, 3);
    let d = c.fake.get(DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    let recorded: Value =
        serde_json::from_str(annotation(&d, ORIGINAL_STRATEGY).as_str().unwrap()).unwrap();
    assert_eq!(recorded, rolling);
    run(&c, &rollback, None).await.0.unwrap();
    let d = c.fake.get(DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["strategy"], rolling);
    assert!(annotation(&d, ORIGINAL_STRATEGY).is_null());
    assert_eq!(shape(&c), expected("ReadWriteOnce"));

    // Completed: the Deployment stays Recreate, with the record, and a rollback after completion
    // restores the strategy too.
    run(&c, &switch, None).await.0.unwrap();
    assert_eq!(shape(&c), expected("ReadWriteOncePod"));
    let d = c.fake.get(DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    assert!(annotation(&d, ORIGINAL_STRATEGY).is_string());
    let (back, progress) = run(&c, &rollback, None).await;
    back.unwrap();
    assert!(
        progress.iter().any(|p| matches!(p, Progress::Started { what, .. }
            if what.starts_with("restore Deployment orders spec.strategy: Recreate -> RollingUpdate, maxSurge 25%"))),
        "{progress:?}"
    );
    let d = c.fake.get(DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["strategy"], rolling);
    assert!(annotation(&d, ORIGINAL_STRATEGY).is_null());
    assert_eq!(shape(&c), expected("ReadWriteOnce"));
    assert_no_violations(&c);
}

// ---- The plan ------------------------------------------------------------------------------------

async fn plan_of(c: &Cluster, opts: &MigrateOptions) -> migrate::RunPlan {
    let plan = migrate::prepare(&c.fake.client(), NS, CLAIM, opts, &mut |_| {}).await;
    match plan.unwrap() {
        migrate::Plan::Run(p) => *p,
        migrate::Plan::AlreadyMigrated { .. } => panic!("already migrated"),
    }
}

fn plan_lines(plan: &migrate::RunPlan) -> Vec<(String, migrate::StepStatus)> {
    STEPS
        .iter()
        .zip(&plan.status)
        .map(|(s, st)| (s.describe(&plan.state, &plan.volume), st.clone()))
        .collect()
}

#[tokio::test]
async fn the_plan_shows_old_and_new_values_and_what_is_already_in_place() {
    use migrate::StepStatus::{Done, InPlace, ToDo};
    let c = cluster().await;
    let lines = plan_lines(&plan_of(&c, &opts()).await);
    assert!(lines.iter().all(|(_, st)| *st == ToDo), "{lines:#?}");
    assert!(
        lines[5]
            .0
            .contains("spec.accessModes: [ReadWriteOnce] -> [ReadWriteOncePod]")
    );
    assert!(
        lines[1]
            .0
            .contains("spec.persistentVolumeReclaimPolicy: Delete -> Retain")
    );

    // Interrupted after step 6, then a rollback planned: its steps start over, and what the
    // live objects already show is marked.
    run(&c, &opts(), Some(6)).await.0.unwrap_err();
    let resumed = plan_of(&c, &opts()).await;
    assert_eq!(
        resumed.status[..6],
        [Done, Done, Done, Done, Done, Done],
        "{:#?}",
        plan_lines(&resumed)
    );
    assert_eq!(resumed.status[6], ToDo);
    let rollback = MigrateOptions {
        rollback: true,
        ..opts()
    };
    let back = plan_of(&c, &rollback).await;
    let lines = plan_lines(&back);
    let status: Vec<&migrate::StepStatus> = lines.iter().map(|(_, s)| s).collect();
    assert_eq!(
        status,
        [
            &ToDo,
            &InPlace("reclaim policy is already Retain".to_owned()),
            &ToDo,
            &InPlace("the claim is already deleted".to_owned()),
            &InPlace("the volume is not bound to a claim".to_owned()),
            &ToDo,
            &ToDo,
            &ToDo,
            &ToDo,
            &ToDo,
            &ToDo,
        ],
        "{lines:#?}"
    );
    assert!(
        lines[5]
            .0
            .contains("spec.accessModes: [ReadWriteOncePod] -> [ReadWriteOnce]")
    );

    // A volume that was Retain from the start: never "Retain -> Retain".
    let c = cluster().await;
    c.fake
        .patch(
            PV_PATH,
            json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
        )
        .unwrap();
    let lines = plan_lines(&plan_of(&c, &opts()).await);
    assert!(
        lines.iter().all(|(l, _)| !l.contains("Retain -> Retain")),
        "{lines:#?}"
    );
    assert_eq!(
        lines[1].1,
        InPlace("reclaim policy is already Retain".to_owned())
    );
    assert!(
        lines[9].0.contains("(it was Retain before)"),
        "{}",
        lines[9].0
    );
}

#[tokio::test]
async fn a_claim_naming_a_missing_volume_is_told_so() {
    let c = cluster().await;
    c.fake
        .patch(PVC_PATH, json!({"spec": {"volumeName": "pv-gone"}}))
        .unwrap();
    let msg = refused(&c, &opts()).await;
    assert!(
        msg.contains("claim shop/orders-db names PersistentVolume pv-gone (spec.volumeName), which does not exist"),
        "{msg}"
    );
    assert!(!msg.contains("is empty"), "{msg}");
}

/// A migration stopped after the claim was deleted is a finding of `scan`: where it stands and
/// the commands that finish it or undo it, on the claim that is gone.
#[tokio::test]
async fn scan_reports_a_migration_under_way_with_the_commands_to_resume_or_undo() {
    use rwop_guard::policy::Policy;
    use rwop_guard::scan::{ScanRule, analyze, collect};
    let c = cluster().await;
    let (first, _) = run(&c, &opts(), Some(4)).await;
    assert!(
        matches!(first, Err(MigrateError::Interrupted { completed: 4 })),
        "{first:?}"
    );
    assert!(
        c.fake.get(PVC_PATH).is_none(),
        "the claim is deleted at step 4"
    );
    let inventory = collect(&c.fake.client(), Some(NS), |_| {}).await.unwrap();
    let report = analyze(&Policy::default(), &inventory, Some(NS));
    let found: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == ScanRule::MigrationInProgress)
        .collect();
    assert_eq!(found.len(), 1, "{report:#?}");
    let f = found[0];
    assert_eq!(f.object.name.as_deref(), Some(CLAIM));
    assert_eq!(f.object.namespace.as_deref(), Some(NS));
    assert_eq!(
        f.command.as_deref(),
        Some("rwop-guard migrate shop/orders-db")
    );
    assert!(
        f.detail.contains("a migration to [ReadWriteOncePod] is under way on PersistentVolume \"pv-orders\" (4 of 11 steps done)")
            && f.detail.ends_with("to undo it: rwop-guard migrate shop/orders-db --rollback"),
        "{}",
        f.detail
    );
    assert_eq!(report.summary.migrations_in_progress, 1);
    // The printed command finishes it; then there is nothing under way.
    run(&c, &opts(), None).await.0.unwrap();
    let inventory = collect(&c.fake.client(), Some(NS), |_| {}).await.unwrap();
    let report = analyze(&Policy::default(), &inventory, Some(NS));
    assert_eq!(report.summary.migrations_in_progress, 0, "{report:#?}");
}
