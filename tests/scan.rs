//! `scan` against the in-process fake API server through the real `kube::Client`, seeded with the
//! real list responses of `tests/fixtures/api/` plus objects that produce each finding; the pure
//! analysis on hand-made inventories; and the binary end to end with a kubeconfig pointing at the
//! fake server.

use rwop_test_support as support;

use std::path::Path;

use rwop_guard::manifests::parse_documents;
use rwop_guard::migrate::model::workloads::{WorkloadInfo, Workloads};
use rwop_guard::policy::Policy;
use rwop_guard::scan::{
    self, Finding, Inventory, PAGE_SIZE, ScanReport, ScanRule, analyze, collect, policy_reports,
    render_table,
};
use serde_json::{Value, json};
use support::binary::Run;
use support::fake_apiserver::{FakeApiServer, api_fixture};

const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";
const VOLUMES: &str = "/api/v1/persistentvolumes";
const NAMESPACES: &str = "/api/v1/namespaces";

fn claims_in(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/persistentvolumeclaims")
}

fn deployments_in(ns: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments")
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

fn csi_volume(name: &str, modes: &[&str], class: &str, claim: Option<(&str, &str)>) -> Value {
    let mut pv = json!({
        "metadata": {"name": name, "finalizers": ["kubernetes.io/pv-protection"]},
        "spec": {
            "accessModes": modes,
            "capacity": {"storage": "1Gi"},
            "storageClassName": class,
            "persistentVolumeReclaimPolicy": "Delete",
            "volumeMode": "Filesystem",
            "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": format!("vol-{name}")},
        },
        "status": {"phase": if claim.is_some() { "Bound" } else { "Available" }},
    });
    if let Some((ns, claim)) = claim {
        pv["spec"]["claimRef"] = json!({
            "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": claim,
            "uid": format!("uid-{ns}-{claim}"),
        });
    }
    pv
}

fn bound_claim(ns: &str, name: &str, modes: &[&str], class: &str, volume: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
        "spec": {
            "accessModes": modes,
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": class,
            "volumeName": volume,
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": "1Gi"}},
    })
}

fn deployment(ns: &str, name: &str, replicas: i32, strategy: Value, claim: &str) -> Value {
    let mut d = json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": "busybox",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    });
    if !strategy.is_null() {
        d["spec"]["strategy"] = strategy;
    }
    d
}

/// The real fixtures, plus objects that produce every finding:
///
/// - V1: PV `pv-mixed` ([RWO, RWOP], its claimRef in `shop`) and claim `default/legacy-mixed`
///   (objects from before the API server checked this);
/// - rollout-deadlock: `default/web` (1 replica, default strategy) and `default/replicated`
///   (3 replicas, Recreate), mounting the fixtures' RWOP claims `pvc-bind-rwop` and `pvc-ssa`;
///   `default/worker` (Recreate) and `default/surge0` (maxSurge 0) would roll safely, but all
///   three share `pvc-bind-rwop`, so each is also reported for the others (one pod at a time);
/// - migration-candidate: `shop/reports` (class `expandable`) and `shop/cache` (in-tree class
///   `local-disks`, but a CSI volume: `migrate` accepts it, the detail says to check the driver);
/// - migration-blocked: the fixtures' `shop/orders-db` once bound to a CSI volume, mounted by the
///   fixtures' Deployment `orders` (2 replicas, RollingUpdate), which `migrate` refuses.
async fn seeded() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.seed_list_fixture(CLASSES, &api_fixture("list-storageclasses.json"));
    fake.seed_list_fixture(VOLUMES, &api_fixture("list-persistentvolumes.json"));
    fake.seed_list_fixture(
        "/api/v1/persistentvolumeclaims",
        &api_fixture("list-persistentvolumeclaims.json"),
    );
    fake.seed_list_fixture(NAMESPACES, &api_fixture("list-namespaces.json"));
    fake.seed_list_fixture(
        &deployments_in("shop"),
        &api_fixture("list-deployments-shop.json"),
    );
    fake.seed_list_fixture(
        "/apis/apps/v1/namespaces/shop/replicasets",
        &api_fixture("list-replicasets-shop.json"),
    );
    fake.seed_list_fixture(
        "/api/v1/namespaces/shop/pods",
        &api_fixture("list-pods-shop.json"),
    );

    let create = |path: &str, obj: Value| {
        fake.create(path, obj)
            .unwrap_or_else(|e| panic!("create in {path}: {e}"));
    };
    create(
        VOLUMES,
        csi_volume(
            "pv-mixed",
            &["ReadWriteOncePod", "ReadWriteOnce"],
            "fast-csi",
            Some(("shop", "old-claim")),
        ),
    );
    create(
        &claims_in("default"),
        bound_claim(
            "default",
            "legacy-mixed",
            &["ReadWriteMany", "ReadWriteOncePod"],
            "fast-csi",
            "pv-legacy",
        ),
    );
    // The fixtures' orders-db, Pending there, now bound to a CSI volume.
    create(
        VOLUMES,
        csi_volume(
            "pvc-orders-db",
            &["ReadWriteOnce"],
            "fast-csi",
            Some(("shop", "orders-db")),
        ),
    );
    let orders_db = fake
        .patch(
            &format!("{}/orders-db", claims_in("shop")),
            json!({"spec": {"volumeName": "pvc-orders-db"}, "status": {"phase": "Bound"}}),
        )
        .unwrap();
    fake.patch(
        &format!("{VOLUMES}/pvc-orders-db"),
        json!({"spec": {"claimRef": {"uid": orders_db["metadata"]["uid"]}}}),
    )
    .unwrap();
    create(
        VOLUMES,
        csi_volume(
            "pvc-reports",
            &["ReadWriteOnce"],
            "expandable",
            Some(("shop", "reports")),
        ),
    );
    create(
        &claims_in("shop"),
        bound_claim(
            "shop",
            "reports",
            &["ReadWriteOnce"],
            "expandable",
            "pvc-reports",
        ),
    );
    create(
        VOLUMES,
        csi_volume(
            "pv-cache",
            &["ReadWriteOnce"],
            "local-disks",
            Some(("shop", "cache")),
        ),
    );
    create(
        &claims_in("shop"),
        bound_claim(
            "shop",
            "cache",
            &["ReadWriteOnce"],
            "local-disks",
            "pv-cache",
        ),
    );
    let default_deployments = deployments_in("default");
    create(
        &default_deployments,
        deployment("default", "web", 1, Value::Null, "pvc-bind-rwop"),
    );
    create(
        &default_deployments,
        deployment(
            "default",
            "worker",
            1,
            json!({"type": "Recreate"}),
            "pvc-bind-rwop",
        ),
    );
    create(
        &default_deployments,
        deployment(
            "default",
            "surge0",
            1,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            "pvc-bind-rwop",
        ),
    );
    create(
        &default_deployments,
        deployment(
            "default",
            "replicated",
            3,
            json!({"type": "Recreate"}),
            "pvc-ssa",
        ),
    );
    // Mounts an RWO claim: no rollout risk.
    create(
        &default_deployments,
        deployment("default", "plain", 2, Value::Null, "pvc-rwo"),
    );
    fake
}

async fn scan_fake(
    fake: &FakeApiServer,
    policy: &Policy,
    namespace: Option<&str>,
) -> (ScanReport, Vec<String>) {
    let mut progress = Vec::new();
    let inventory = collect(&fake.client(), namespace, |line| {
        progress.push(line.to_owned())
    })
    .await
    .expect("scan");
    (analyze(policy, &inventory, namespace), progress)
}

/// (rule, "namespace/name" or "name") of every finding, in report order.
fn keys(report: &ScanReport) -> Vec<(ScanRule, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.rule, object_key(f)))
        .collect()
}

fn object_key(f: &Finding) -> String {
    let name = f.object.name.clone().unwrap_or_default();
    match &f.object.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    }
}

fn finding<'a>(report: &'a ScanReport, rule: ScanRule, key: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.rule == rule && object_key(f) == key)
        .unwrap_or_else(|| panic!("no {rule} finding for {key} in {:#?}", keys(report)))
}

// ---------------------------------------------------------------------------------------------
// Collector + analysis against the fake API server
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_finding_kind_names_the_object_and_what_to_do() {
    let fake = seeded().await;
    let (report, progress) = scan_fake(&fake, &Policy::default(), None).await;

    assert_eq!(
        keys(&report),
        [
            (ScanRule::V1, "pv-mixed".to_owned()),
            (ScanRule::V1, "default/legacy-mixed".to_owned()),
            (ScanRule::RolloutDeadlock, "default/replicated".to_owned()),
            // surge0, web and worker share the ReadWriteOncePod claim pvc-bind-rwop.
            (ScanRule::RolloutDeadlock, "default/surge0".to_owned()),
            (ScanRule::RolloutDeadlock, "default/web".to_owned()),
            (ScanRule::RolloutDeadlock, "default/worker".to_owned()),
            (ScanRule::MigrationCandidate, "shop/cache".to_owned()),
            (ScanRule::MigrationCandidate, "shop/reports".to_owned()),
            (ScanRule::MigrationBlocked, "shop/orders-db".to_owned()),
        ]
    );
    assert_eq!(report.summary.violations, 2);
    assert_eq!(report.summary.rollout_risks, 4);
    assert_eq!(report.summary.migration_candidates, 2);
    assert_eq!(report.summary.migration_blocked, 1);
    assert!(report.has_violations());
    // 7 fixture claims + legacy-mixed, reports, cache; 4 fixture volumes + 4 created.
    assert_eq!(report.scanned.claims, 10);
    assert_eq!(report.scanned.volumes, 8);
    // 6 Deployments mounting claims (the ReplicaSet of the fixtures' pods counts as its own).
    assert_eq!(report.scanned.workloads, 6);
    assert_eq!(report.scanned.pods, 2);
    assert_eq!(report.scanned.storage_classes, 3);

    let pv = finding(&report, ScanRule::V1, "pv-mixed");
    assert_eq!(pv.object.kind.as_deref(), Some("PersistentVolume"));
    assert_eq!(pv.object.api_version.as_deref(), Some("v1"));
    assert!(pv.object.uid.is_some(), "uid from the API server");
    assert!(
        pv.message.starts_with(
            "PersistentVolume \"pv-mixed\": access modes [ReadWriteOnce, ReadWriteOncePod] combine \
             ReadWriteOncePod with other modes"
        ),
        "{}",
        pv.message
    );
    let claim = finding(&report, ScanRule::V1, "default/legacy-mixed");
    assert!(
        claim
            .message
            .starts_with("PersistentVolumeClaim \"default/legacy-mixed\": access modes [ReadWriteMany, ReadWriteOncePod]"),
        "{}",
        claim.message
    );
    assert_eq!(
        claim.object.uid.as_deref(),
        Some("uid-default-legacy-mixed")
    );

    let web = finding(&report, ScanRule::RolloutDeadlock, "default/web");
    assert_eq!(web.object.kind.as_deref(), Some("Deployment"));
    assert_eq!(web.object.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(
        web.message,
        "Deployment \"default/web\": mounts ReadWriteOncePod claim \"pvc-bind-rwop\" with strategy \
         RollingUpdate (the default), maxSurge 25%: a rollout starts the new pod while the old one \
         still holds the volume, and the new pod cannot mount it, so the rollout hangs; set \
         strategy: Recreate (or rollingUpdate.maxSurge: 0); mounts ReadWriteOncePod claim \
         \"pvc-bind-rwop\", which Deployment surge0 and Deployment worker also mount: only one \
         pod in the whole cluster can use it, so whichever starts second stays Pending while the \
         other runs; run them in one pod, or use a ReadWriteOnce claim"
    );
    assert_eq!(web.related.len(), 1);
    assert_eq!(web.related[0].name.as_deref(), Some("pvc-bind-rwop"));
    assert_eq!(
        web.related[0].kind.as_deref(),
        Some("PersistentVolumeClaim")
    );
    let replicated = finding(&report, ScanRule::RolloutDeadlock, "default/replicated");
    assert!(
        replicated.detail.starts_with(
            "mounts ReadWriteOncePod claim \"pvc-ssa\" with 3 replicas: only one pod at a time can \
             use the volume"
        ),
        "{}",
        replicated.detail
    );
    assert!(replicated.detail.contains("set replicas: 1"));

    // What migrate answers: 2 replicas cannot share a ReadWriteOncePod claim.
    let orders = finding(&report, ScanRule::MigrationBlocked, "shop/orders-db");
    assert_eq!(orders.command, None);
    assert_eq!(
        orders.message,
        "PersistentVolumeClaim \"shop/orders-db\": rwop-guard migrate refuses it: claim \
         shop/orders-db is used by Deployment orders with 2 replicas: only one pod can use a \
         ReadWriteOncePod claim, so the other replicas would stay Pending; scale it to 1 replica \
         first (or use a StatefulSet with volumeClaimTemplates, one claim per pod)"
    );
    assert_eq!(orders.related[0].kind.as_deref(), Some("PersistentVolume"));
    assert_eq!(orders.related[0].name.as_deref(), Some("pvc-orders-db"));
    let reports = finding(&report, ScanRule::MigrationCandidate, "shop/reports");
    assert_eq!(
        reports.message,
        "PersistentVolumeClaim \"shop/reports\": [ReadWriteOnce] claim bound to CSI volume \
         \"pvc-reports\" (driver ebs.csi.aws.com) of storage class \"expandable\", which supports \
         ReadWriteOncePod; to let only one pod use it, run: rwop-guard migrate shop/reports"
    );
    let cache = finding(&report, ScanRule::MigrationCandidate, "shop/cache");
    assert_eq!(
        cache.command.as_deref(),
        Some("rwop-guard migrate shop/cache")
    );
    assert!(
        cache.detail.contains("of storage class \"local-disks\" (")
            && cache
                .detail
                .contains("check that the driver supports ReadWriteOncePod"),
        "{}",
        cache.detail
    );

    // One line per resource (everything fits in one page here).
    assert_eq!(
        progress,
        [
            "listed 10 persistentvolumeclaims",
            "listed 8 persistentvolumes",
            "listed 3 storageclasses",
            "listed 2 pods",
            "listed 1 replicasets",
            "listed 0 jobs",
            "listed 6 deployments",
            "listed 0 cronjobs",
            "listed 0 statefulsets",
            "listed 0 daemonsets",
            "listed 0 replicationcontrollers",
        ]
    );
    let requests = fake.requests();
    for path in [
        "/api/v1/persistentvolumeclaims?limit=500",
        "/api/v1/persistentvolumes?limit=500",
        "/apis/storage.k8s.io/v1/storageclasses?limit=500",
        "/apis/apps/v1/deployments?limit=500",
    ] {
        assert!(
            requests.contains(&format!("GET {path}")),
            "{path} not in {requests:#?}"
        );
    }
}

#[tokio::test]
async fn namespace_scope_limits_claims_deployments_and_volumes() {
    let fake = seeded().await;
    let (shop, _) = scan_fake(&fake, &Policy::default(), Some("shop")).await;
    assert_eq!(shop.namespace.as_deref(), Some("shop"));
    assert_eq!(
        keys(&shop),
        [
            // Cluster-scoped, but its claimRef is in shop.
            (ScanRule::V1, "pv-mixed".to_owned()),
            (ScanRule::MigrationCandidate, "shop/cache".to_owned()),
            (ScanRule::MigrationCandidate, "shop/reports".to_owned()),
            (ScanRule::MigrationBlocked, "shop/orders-db".to_owned()),
        ]
    );
    // orders-db, reports, cache; the volumes claimed from shop; the fixtures' orders.
    assert_eq!(shop.scanned.claims, 3);
    assert_eq!(shop.scanned.volumes, 4);
    assert_eq!(shop.scanned.workloads, 1);
    let requests = fake.requests();
    assert!(
        requests
            .contains(&"GET /api/v1/namespaces/shop/persistentvolumeclaims?limit=500".to_owned()),
        "{requests:#?}"
    );
    assert!(
        requests.contains(&"GET /apis/apps/v1/namespaces/shop/deployments?limit=500".to_owned()),
        "{requests:#?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/persistentvolumeclaims")),
        "no cluster-wide claim list: {requests:#?}"
    );

    let (default, _) = scan_fake(&fake, &Policy::default(), Some("default")).await;
    assert_eq!(
        keys(&default),
        [
            (ScanRule::V1, "default/legacy-mixed".to_owned()),
            (ScanRule::RolloutDeadlock, "default/replicated".to_owned()),
            (ScanRule::RolloutDeadlock, "default/surge0".to_owned()),
            (ScanRule::RolloutDeadlock, "default/web".to_owned()),
            (ScanRule::RolloutDeadlock, "default/worker".to_owned()),
        ]
    );
    // The fixtures' pre-pv-rwo and pv-bind-rwop are claimed from default.
    assert_eq!(default.scanned.volumes, 2);

    let (quiet, _) = scan_fake(&fake, &Policy::default(), Some("prewebhook")).await;
    assert!(quiet.findings.is_empty(), "{:#?}", quiet.findings);
    assert!(!quiet.has_violations());
    assert_eq!(quiet.scanned.claims, 1);
}

#[tokio::test]
async fn policy_provisioner_deny_is_said_on_the_candidate_migrate_accepts() {
    let fake = seeded().await;
    let policy = Policy::from_yaml(
        "mutation:\n  provisioners:\n    deny: [example.com/fake-no-provisioner]\n",
        "policy.yaml",
    )
    .unwrap();
    let (report, _) = scan_fake(&fake, &policy, Some("shop")).await;
    // migrate moves a CSI volume whatever its class: still a candidate, with the reason to check.
    let reports = finding(&report, ScanRule::MigrationCandidate, "shop/reports");
    assert!(
        reports.detail.contains("of storage class \"expandable\" (")
            && reports
                .detail
                .contains("check that the driver supports ReadWriteOncePod"),
        "{}",
        reports.detail
    );
    let (default_policy, _) = scan_fake(&fake, &Policy::default(), Some("shop")).await;
    let reports = finding(
        &default_policy,
        ScanRule::MigrationCandidate,
        "shop/reports",
    );
    assert!(reports.detail.contains("which supports ReadWriteOncePod"));
}

#[tokio::test]
async fn lists_are_paginated_with_progress() {
    let fake = seeded().await;
    let bulk = 1200;
    for i in 0..bulk {
        fake.create(
            &claims_in("bulk"),
            json!({
                "metadata": {"name": format!("data-{i:04}"), "namespace": "bulk"},
                "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": "1Gi"}},
                         "storageClassName": "fast-csi"},
            }),
        )
        .unwrap();
    }
    fake.clear_requests();
    let (report, progress) = scan_fake(&fake, &Policy::default(), None).await;
    let total = bulk + 10;
    assert_eq!(report.scanned.claims, total);

    let claim_requests: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/persistentvolumeclaims"))
        .collect();
    assert_eq!(claim_requests.len(), total.div_ceil(PAGE_SIZE as usize));
    assert_eq!(
        claim_requests[0],
        "GET /api/v1/persistentvolumeclaims?limit=500"
    );
    for r in &claim_requests[1..] {
        assert!(
            r.contains("limit=500") && r.contains("continue="),
            "page request without continue: {r}"
        );
    }
    assert_eq!(
        &progress[..3],
        [
            format!(
                "listed 500 persistentvolumeclaims, about {} more…",
                total - 500
            ),
            format!(
                "listed 1000 persistentvolumeclaims, about {} more…",
                total - 1000
            ),
            format!("listed {total} persistentvolumeclaims"),
        ]
    );
}

#[tokio::test]
async fn an_expired_continue_token_falls_back_to_one_full_list() {
    let fake = seeded().await;
    for i in 0..(PAGE_SIZE + 5) {
        fake.create(
            &claims_in("bulk"),
            json!({"metadata": {"name": format!("data-{i:04}"), "namespace": "bulk"},
                   "spec": {"accessModes": ["ReadWriteOnce"]}}),
        )
        .unwrap();
    }
    fake.clear_requests();
    let mut progress = Vec::new();
    let inventory = collect(&fake.client(), None, |line| {
        if progress.is_empty() {
            // Between the first and second page: a write, then the history is compacted, so the
            // continue token (at the first page's resourceVersion) has expired.
            fake.create(
                &claims_in("bulk"),
                json!({"metadata": {"name": "late", "namespace": "bulk"},
                       "spec": {"accessModes": ["ReadWriteOnce"]}}),
            )
            .unwrap();
            fake.compact();
        }
        progress.push(line.to_owned());
    })
    .await
    .expect("scan survives the expired token");
    let expected = PAGE_SIZE as usize + 5 + 10 + 1;
    assert_eq!(inventory.claims.len(), expected, "the full list, once");
    assert!(
        progress[1].starts_with("the persistentvolumeclaims list expired after 500 objects"),
        "{progress:#?}"
    );
    assert_eq!(
        progress[2],
        format!("listed {expected} persistentvolumeclaims")
    );
    let requests = fake.requests();
    assert!(
        requests.contains(&"GET /api/v1/persistentvolumeclaims".to_owned()),
        "unpaginated fallback: {requests:#?}"
    );
}

#[tokio::test]
async fn a_refused_list_names_the_resource_and_the_reason() {
    let fake = seeded().await;
    fake.fail_next(1, 403);
    let err = collect(&fake.client(), None, |_| {}).await.unwrap_err();
    assert_eq!(err.resource, "persistentvolumeclaims");
    assert_eq!(
        err.to_string(),
        "cannot list persistentvolumeclaims: Forbidden (403): injected failure (fake apiserver)"
    );
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn policy_reports_follow_the_wgpolicy_schema() {
    let fake = seeded().await;
    let (report, _) = scan_fake(&fake, &Policy::default(), None).await;
    let docs = policy_reports(&report, 1_700_000_000);
    let kinds: Vec<(String, Option<String>)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("PolicyReport".to_owned(), Some("default".to_owned())),
            ("PolicyReport".to_owned(), Some("prewebhook".to_owned())),
            ("PolicyReport".to_owned(), Some("shop".to_owned())),
            ("ClusterPolicyReport".to_owned(), None),
        ]
    );
    let mut all_results = 0;
    for doc in &docs {
        assert_eq!(doc["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(doc.pointer("/metadata/name").unwrap(), "rwop-guard");
        assert_eq!(
            doc.pointer("/metadata/labels/app.kubernetes.io~1managed-by")
                .unwrap(),
            "rwop-guard"
        );
        let results = doc["results"].as_array().unwrap();
        all_results += results.len();
        let summary = doc["summary"].as_object().unwrap();
        let mut keys: Vec<&str> = summary.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["error", "fail", "pass", "skip", "warn"]);
        for (key, count) in summary {
            let actual = results.iter().filter(|r| r["result"] == *key).count();
            assert_eq!(
                count.as_u64(),
                Some(actual as u64),
                "summary.{key} of {doc}"
            );
        }
        for r in results {
            assert_eq!(r["policy"], "rwop-guard");
            assert_eq!(r["source"], "rwop-guard");
            assert_eq!(
                r["timestamp"],
                json!({"seconds": 1_700_000_000, "nanos": 0})
            );
            assert!(
                [
                    "V1",
                    "rollout-deadlock",
                    "migration-candidate",
                    "migration-blocked"
                ]
                .contains(&r["rule"].as_str().unwrap()),
                "{r}"
            );
            assert!(
                ["critical", "high", "medium", "low", "info"]
                    .contains(&r["severity"].as_str().unwrap())
            );
            let resource = &r["resources"][0];
            for field in ["apiVersion", "kind", "name", "uid"] {
                assert!(resource[field].is_string(), "resources[0].{field} in {r}");
            }
            // Namespaced objects in PolicyReports of their namespace, volumes in the cluster one.
            assert_eq!(
                resource.get("namespace"),
                doc.pointer("/metadata/namespace"),
                "{r}"
            );
        }
    }
    // One V1 result (pass or fail) per scanned volume and claim, plus the warnings.
    assert_eq!(
        all_results,
        report.scanned.claims
            + report.scanned.volumes
            + report.summary.rollout_risks
            + report.summary.migration_candidates
            + report.summary.migration_blocked
    );

    let shop = &docs[2];
    assert_eq!(
        shop["summary"],
        json!({"pass": 3, "fail": 0, "warn": 3, "error": 0, "skip": 0})
    );
    let results = shop["results"].as_array().unwrap();
    let reports = results
        .iter()
        .find(|r| r["rule"] == "migration-candidate" && r["resources"][0]["name"] == "reports")
        .expect("reports candidate");
    assert_eq!(reports["result"], "warn");
    assert_eq!(reports["scored"], false);
    assert_eq!(
        reports["properties"]["command"],
        "rwop-guard migrate shop/reports"
    );
    assert_eq!(reports["resources"][1]["kind"], "PersistentVolume");
    assert!(
        reports["message"]
            .as_str()
            .unwrap()
            .starts_with("[ReadWriteOnce] claim bound to CSI volume")
    );
    let orders = results
        .iter()
        .find(|r| r["rule"] == "migration-blocked" && r["resources"][0]["name"] == "orders-db")
        .expect("orders-db blocked");
    assert_eq!(
        (orders["result"].as_str(), orders["severity"].as_str()),
        (Some("warn"), Some("medium"))
    );
    assert!(orders["properties"].is_null(), "no command: {orders}");

    let cluster = &docs[3];
    // 8 volumes, pv-mixed fails V1.
    assert_eq!(
        cluster["summary"],
        json!({"pass": 7, "fail": 1, "warn": 0, "error": 0, "skip": 0})
    );
    let failed = cluster["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["result"] == "fail")
        .unwrap();
    assert_eq!(failed["rule"], "V1");
    assert_eq!(failed["severity"], "high");
    assert_eq!(failed["resources"][0]["name"], "pv-mixed");

    // A one-namespace scan never overwrites the whole-cluster report.
    let (shop_only, _) = scan_fake(&fake, &Policy::default(), Some("shop")).await;
    let docs = policy_reports(&shop_only, 0);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["kind"], "ClusterPolicyReport");
    assert_eq!(docs[1]["metadata"]["name"], "rwop-guard-shop");
}

#[test]
fn a_namespace_without_claims_still_gets_its_report() {
    let report = analyze(&Policy::default(), &Inventory::default(), Some("empty"));
    let docs = policy_reports(&report, 0);
    assert_eq!(docs[0]["kind"], "PolicyReport");
    assert_eq!(docs[0]["metadata"]["namespace"], "empty");
    assert_eq!(
        docs[0]["summary"],
        json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0})
    );
    assert_eq!(docs[0]["results"], json!([]));
}

#[tokio::test]
async fn table_aligns_columns_and_ends_with_the_summary() {
    let fake = seeded().await;
    let (report, _) = scan_fake(&fake, &Policy::default(), None).await;
    let table = render_table(&report);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + report.findings.len() + 2, "{table}");
    let header = lines[0];
    // Column starts: where a word begins in the header (its names have no spaces).
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 5, "{header}");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["KIND", "NAMESPACE", "NAME", "FINDING", "DETAIL"]
    );
    for (row, f) in lines[1..=report.findings.len()]
        .iter()
        .zip(&report.findings)
    {
        let cell = |i: usize| match starts.get(i + 1) {
            Some(&end) => {
                assert_eq!(
                    &row[end - 3..end],
                    "   ",
                    "separator before column {i} in {row}"
                );
                row[starts[i]..end].trim_end()
            }
            None => &row[starts[i]..],
        };
        assert_eq!(cell(0), f.object.kind.as_deref().unwrap());
        assert_eq!(cell(1), f.object.namespace.as_deref().unwrap_or("-"));
        assert_eq!(cell(2), f.object.name.as_deref().unwrap());
        assert_eq!(cell(3), f.rule.as_str());
        assert_eq!(cell(4), f.detail);
    }
    assert_eq!(lines[report.findings.len() + 1], "");
    assert_eq!(
        *lines.last().unwrap(),
        "2 violations, 2 migration candidates, 4 rollout risks, 1 blocked migration; scanned 10 claims, 8 volumes, 6 workloads in all namespaces"
    );

    let clean = analyze(&Policy::default(), &Inventory::default(), Some("empty"));
    assert_eq!(
        render_table(&clean),
        "0 violations, 0 migration candidates, 0 rollout risks; scanned 0 claims, 0 volumes, 0 workloads in namespace empty\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Pure analysis on hand-made inventories
// ---------------------------------------------------------------------------------------------

fn inventory(claims: Vec<Value>, volumes: Vec<Value>, deployments: Vec<Value>) -> Inventory {
    let classes = serde_json::from_str::<Value>(&api_fixture("list-storageclasses.json")).unwrap()
        ["items"]
        .clone();
    fn objects<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
        values
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }
    let deployments: Vec<k8s_openapi::api::apps::v1::Deployment> = objects(deployments);
    Inventory::of(
        &objects(claims),
        &objects(volumes),
        &serde_json::from_value::<Vec<_>>(classes).unwrap(),
        Workloads {
            workloads: deployments.iter().map(WorkloadInfo::from).collect(),
            pods: Vec::new(),
        },
    )
}

fn rules_of(report: &ScanReport) -> Vec<ScanRule> {
    report.findings.iter().map(|f| f.rule).collect()
}

#[test]
fn candidates_are_the_claims_migrate_accepts_and_the_others_say_why() {
    let volume = csi_volume("pv-a", &["ReadWriteOnce"], "fast-csi", Some(("ns", "a")));
    let claim = bound_claim("ns", "a", &["ReadWriteOnce"], "fast-csi", "pv-a");
    let policy = Policy::default();
    let analyzed = |claim: Value, volume: Value| {
        analyze(&policy, &inventory(vec![claim], vec![volume], vec![]), None)
    };
    let candidates =
        |claim: Value, volume: Value| analyzed(claim, volume).summary.migration_candidates;
    // Not a candidate: no finding of it, and a note with migrate's reason.
    let refused = |claim: Value, volume: Value, reason: &str| {
        let report = analyzed(claim, volume);
        assert_eq!(report.summary.migration_candidates, 0, "{reason}");
        assert_eq!(report.notes.len(), 1, "{reason}: {:#?}", report.notes);
        let note = &report.notes[0];
        assert_eq!(note.object.name.as_deref(), Some("a"));
        assert!(note.message.contains(reason), "{}", note.message);
    };
    assert_eq!(candidates(claim.clone(), volume.clone()), 1);

    // migrate moves a CSI volume whatever the class says: a claim bound by hand (no class, or
    // "") and one whose class is unknown or in-tree are candidates too.
    let mut no_class = claim.clone();
    no_class["spec"]
        .as_object_mut()
        .unwrap()
        .remove("storageClassName");
    assert_eq!(candidates(no_class, volume.clone()), 1, "static binding");
    let mut empty_class = claim.clone();
    empty_class["spec"]["storageClassName"] = json!("");
    let report = analyzed(empty_class, volume.clone());
    assert_eq!(report.summary.migration_candidates, 1, "class \"\"");
    assert!(
        report.findings[0]
            .detail
            .contains("with no storage class (bound to a volume made by hand)"),
        "{}",
        report.findings[0].detail
    );
    let mut unknown_class = claim.clone();
    unknown_class["spec"]["storageClassName"] = json!("gone");
    assert_eq!(candidates(unknown_class, volume.clone()), 1, "class gone");
    let mut in_tree = claim.clone();
    in_tree["spec"]["storageClassName"] = json!("local-disks");
    assert_eq!(candidates(in_tree, volume.clone()), 1, "in-tree class");

    let mut pending = claim.clone();
    pending["status"]["phase"] = json!("Pending");
    refused(pending, volume.clone(), "is \"Pending\", not Bound");
    let mut deleting = claim.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    refused(deleting, volume.clone(), "is being deleted");
    let mut rwx = claim.clone();
    rwx["spec"]["accessModes"] = json!(["ReadWriteOnce", "ReadWriteMany"]);
    refused(
        rwx,
        volume.clone(),
        "only [ReadWriteOnce] claims are migrated",
    );
    let mut host_path = volume.clone();
    let spec = host_path["spec"].as_object_mut().unwrap();
    spec.remove("csi");
    spec.insert("hostPath".into(), json!({"path": "/data"}));
    refused(claim.clone(), host_path, "is not a CSI volume");
    let mut pv_rwx = volume.clone();
    pv_rwx["spec"]["accessModes"] = json!(["ReadWriteOnce", "ReadOnlyMany"]);
    refused(
        claim.clone(),
        pv_rwx,
        "only [ReadWriteOnce] volumes are migrated",
    );
    refused(
        claim.clone(),
        csi_volume("other", &["ReadWriteOnce"], "fast-csi", None),
        "names PersistentVolume pv-a (spec.volumeName), which does not exist",
    );
    let mut other_claim = volume.clone();
    other_claim["spec"]["claimRef"]["uid"] = json!("someone-else");
    refused(claim.clone(), other_claim, "is not bound to claim ns/a");

    // Already migrated: no candidate, no note.
    let report = analyzed(
        bound_claim("ns", "a", &["ReadWriteOncePod"], "fast-csi", "pv-a"),
        csi_volume("pv-a", &["ReadWriteOncePod"], "fast-csi", Some(("ns", "a"))),
    );
    assert!(
        report.findings.is_empty() && report.notes.is_empty(),
        "{report:#?}"
    );

    // A workload that cannot run with a single-pod claim: a migration-blocked finding.
    let report = analyze(
        &policy,
        &inventory(
            vec![claim.clone()],
            vec![volume.clone()],
            vec![deployment("ns", "app", 2, json!({"type": "Recreate"}), "a")],
        ),
        None,
    );
    assert_eq!(rules_of(&report), [ScanRule::MigrationBlocked]);
    assert!(
        report.findings[0]
            .detail
            .contains("is used by Deployment app with 2 replicas"),
        "{}",
        report.findings[0].detail
    );
    // A rollout that surges: a candidate whose command switches it to Recreate.
    let report = analyze(
        &policy,
        &inventory(
            vec![claim.clone()],
            vec![volume.clone()],
            vec![deployment("ns", "app", 1, Value::Null, "a")],
        ),
        None,
    );
    assert_eq!(rules_of(&report), [ScanRule::MigrationCandidate]);
    assert_eq!(
        report.findings[0].command.as_deref(),
        Some("rwop-guard migrate ns/a --switch-to-recreate")
    );
    assert!(
        report.findings[0].detail.contains(
            "Deployment \"app\" (RollingUpdate (the default), maxSurge 25%) cannot roll with \
             ReadWriteOncePod: --switch-to-recreate sets its strategy to Recreate"
        ),
        "{}",
        report.findings[0].detail
    );
}

#[test]
fn rollout_risk_follows_replicas_strategy_and_max_surge() {
    let claim = bound_claim("ns", "db", &["ReadWriteOncePod"], "fast-csi", "pv-db");
    let risky = |replicas: i32, strategy: Value| {
        let report = analyze(
            &Policy::default(),
            &inventory(
                vec![claim.clone()],
                vec![],
                vec![deployment("ns", "app", replicas, strategy, "db")],
            ),
            None,
        );
        rules_of(&report) == [ScanRule::RolloutDeadlock]
    };
    let rolling =
        |surge: Value| json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge}});
    assert!(
        risky(1, Value::Null),
        "default strategy surges 25% (rounded up)"
    );
    assert!(risky(1, json!({"type": "RollingUpdate"})));
    assert!(risky(1, rolling(json!(1))));
    assert!(risky(1, rolling(json!("1%"))), "percentages round up");
    assert!(!risky(1, rolling(json!(0))));
    assert!(!risky(1, rolling(json!("0%"))));
    assert!(!risky(1, json!({"type": "Recreate"})));
    assert!(!risky(0, json!({"type": "Recreate"})));
    assert!(
        risky(0, Value::Null),
        "scaled to 0, still rolls once scaled up"
    );
    assert!(risky(2, json!({"type": "Recreate"})));
    assert!(risky(2, rolling(json!(0))));

    // The same Deployment on a ReadWriteOnce claim is fine.
    let rwo = bound_claim("ns", "db", &["ReadWriteOnce"], "fast-csi", "pv-db");
    let report = analyze(
        &Policy::default(),
        &inventory(
            vec![rwo],
            vec![],
            vec![deployment("ns", "app", 3, Value::Null, "db")],
        ),
        None,
    );
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // A claim of the same name in another namespace does not count.
    let report = analyze(
        &Policy::default(),
        &inventory(
            vec![claim.clone()],
            vec![],
            vec![deployment("other", "app", 3, Value::Null, "db")],
        ),
        None,
    );
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[test]
fn json_report_has_the_documented_shape() {
    let claim = bound_claim("ns", "db", &["ReadWriteOncePod"], "fast-csi", "pv-db");
    let report = analyze(
        &Policy::default(),
        &inventory(
            vec![claim],
            vec![csi_volume(
                "pv-db",
                &["ReadWriteOncePod", "ReadOnlyMany"],
                "fast-csi",
                Some(("ns", "db")),
            )],
            vec![deployment("ns", "app", 2, Value::Null, "db")],
        ),
        None,
    );
    let value = serde_json::to_value(&report).unwrap();
    let mut top: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    assert_eq!(
        top,
        ["findings", "namespace", "notes", "scanned", "summary"]
    );
    assert_eq!(value["namespace"], Value::Null);
    assert_eq!(
        value["scanned"],
        json!({"claims": 1, "volumes": 1, "workloads": 1, "pods": 0, "storageClasses": 3})
    );
    assert_eq!(
        value["summary"],
        json!({"violations": 1, "migrationCandidates": 0, "rolloutRisks": 1, "migrationBlocked": 0, "migrationsInProgress": 0})
    );
    let v1 = &value["findings"][0];
    assert_eq!(v1["rule"], "V1");
    assert_eq!(
        v1["object"],
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "name": "pv-db"})
    );
    assert_eq!(v1["command"], Value::Null);
    assert_eq!(v1["related"], json!([]));
    let rollout = &value["findings"][1];
    assert_eq!(rollout["rule"], "rollout-deadlock");
    assert_eq!(
        rollout["object"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "app", "namespace": "ns"})
    );
    assert_eq!(
        rollout["related"],
        json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": "db", "namespace": "ns", "uid": "uid-ns-db"}])
    );
    let mut finding_keys: Vec<&str> = rollout
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    finding_keys.sort_unstable();
    assert_eq!(
        finding_keys,
        ["command", "detail", "message", "object", "related", "rule"]
    );
    assert!(
        rollout["detail"]
            .as_str()
            .unwrap()
            .contains("with 2 replicas and strategy RollingUpdate (the default), maxSurge 25%"),
        "{rollout}"
    );
}

// ---------------------------------------------------------------------------------------------
// The binary, end to end, with a kubeconfig pointing at the fake server
// ---------------------------------------------------------------------------------------------

/// `rwop-guard scan --kubeconfig KUBECONFIG ARGS`.
async fn run_scan(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut command = support::binary::rwop_guard(&["scan", "--kubeconfig"]);
    command.arg(kubeconfig).args(args);
    support::binary::run_async(command, b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_the_table_and_exits_1_on_violations() {
    let fake = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig::write(dir.path(), &fake.url(), "default", "fake");

    let run = run_scan(&kubeconfig, &[]).await;
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let first = run.stdout.lines().next().unwrap();
    assert!(
        first.starts_with("KIND") && first.contains("NAMESPACE") && first.ends_with("DETAIL"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("PersistentVolume ")
                && l.contains(" pv-mixed ")
                && l.contains(" V1 ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(|l| l.starts_with("Deployment ")
            && l.contains(" web ")
            && l.contains(" rollout-deadlock ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("run: rwop-guard migrate shop/reports")
            && run
                .stdout
                .contains("rwop-guard migrate refuses it: claim shop/orders-db"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with(
            "2 violations, 2 migration candidates, 4 rollout risks, 1 blocked migration; scanned 10 claims, 8 volumes, 6 workloads in all namespaces\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("rwop-guard scan: listed 10 persistentvolumeclaims\n"),
        "progress on stderr: {}",
        run.stderr
    );

    // -A wins over -n.
    let all = run_scan(&kubeconfig, &["-n", "prewebhook", "-A"]).await;
    assert_eq!(all.code, 1, "stderr: {}", all.stderr);
    assert_eq!(all.stdout, run.stdout);

    // A namespace without violations: exit 0.
    let clean = run_scan(&kubeconfig, &["-n", "prewebhook"]).await;
    assert_eq!(clean.code, 0, "stderr: {}", clean.stderr);
    assert_eq!(
        clean.stdout,
        "0 violations, 0 migration candidates, 0 rollout risks; scanned 1 claim, 0 volumes, 0 workloads in namespace prewebhook\n"
    );
    // The exit status does not depend on the output format.
    let default_json = run_scan(&kubeconfig, &["--namespace", "default", "--output", "json"]).await;
    assert_eq!(default_json.code, 1, "legacy-mixed is a V1 violation");
    let value: Value = serde_json::from_str(&default_json.stdout).unwrap();
    assert_eq!(value["namespace"], "default");
    assert_eq!(value["summary"]["violations"], 1);
}

/// `scan --apply` checks the report CRDs by discovery before anything else: without them it
/// exits 2 naming both and how to check, and has listed and written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_apply_without_the_report_crds_exits_2_and_writes_nothing() {
    let fake = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig::write(dir.path(), &fake.url(), "default", "fake");
    for (args, missing, check) in [
        (
            &["--apply"][..],
            "reports.openreports.io, clusterreports.openreports.io (openreports.io/v1alpha1)",
            "kubectl get crd reports.openreports.io clusterreports.openreports.io",
        ),
        (
            &["--apply", "-o", "policyreport", "-n", "shop"][..],
            "policyreports.wgpolicyk8s.io, clusterpolicyreports.wgpolicyk8s.io \
             (wgpolicyk8s.io/v1alpha2)",
            "kubectl get crd policyreports.wgpolicyk8s.io clusterpolicyreports.wgpolicyk8s.io",
        ),
    ] {
        fake.clear_requests();
        let run = run_scan(&kubeconfig, args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr
                .contains(&format!("the API server serves no {missing}"))
                && run.stderr.contains(check),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "", "{args:?}");
        let requests = fake.requests();
        assert!(
            requests.iter().all(|r| r.starts_with("GET /api")
                && !r.contains("persistentvolume")
                && !r.contains('?')),
            "only discovery before the check: {requests:#?}"
        );
    }
    // --apply writes reports: a table or JSON is a usage error.
    let run = run_scan(&kubeconfig, &["--apply", "-o", "json"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "--apply writes reports: use -o openreports (the default) or -o policyreport"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_json_and_policyreport_outputs() {
    let fake = seeded().await;
    // Drop the V1 violations: candidates and rollout risks alone exit 0.
    fake.delete(&format!("{VOLUMES}/pv-mixed")).unwrap();
    fake.patch(
        &format!("{VOLUMES}/pv-mixed"),
        json!({"metadata": {"finalizers": null}}),
    )
    .unwrap();
    fake.delete(&format!("{}/legacy-mixed", claims_in("default")))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig::write(dir.path(), &fake.url(), "default", "fake");

    let run = run_scan(&kubeconfig, &["--output", "json"]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(
        value["summary"],
        json!({"violations": 0, "migrationCandidates": 2, "rolloutRisks": 4, "migrationBlocked": 1, "migrationsInProgress": 0})
    );
    assert_eq!(value["findings"].as_array().unwrap().len(), 7);
    assert_eq!(
        value["findings"][5]["command"],
        "rwop-guard migrate shop/reports"
    );
    // Every claim migrate refuses and no finding names carries a note with its reason.
    let notes = value["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n["object"]["name"] == "pvc-pending"
            || n["message"]
                .as_str()
                .is_some_and(|m| m.contains("not Bound"))),
        "{notes:#?}"
    );

    let run = run_scan(&kubeconfig, &["--output", "policyreport", "-n", "shop"]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stdout.starts_with("---\n"), "{}", run.stdout);
    let docs: Vec<serde_json::Value> = parse_documents(&run.stdout)
        .into_iter()
        .map(|d| d.expect("a YAML document").value)
        .collect();
    assert_eq!(docs.len(), 2, "{}", run.stdout);
    assert_eq!(docs[0]["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(docs[0]["kind"], "PolicyReport");
    assert_eq!(docs[0]["metadata"]["namespace"], "shop");
    assert_eq!(
        docs[0]["summary"],
        json!({"pass": 3, "fail": 0, "warn": 3, "error": 0, "skip": 0})
    );
    assert_eq!(docs[1]["kind"], "ClusterPolicyReport");
    assert_eq!(docs[1]["metadata"]["name"], "rwop-guard-shop");
    let seconds = docs[0]["results"][0]["timestamp"]["seconds"]
        .as_i64()
        .unwrap();
    assert!(seconds > 1_700_000_000, "a real timestamp: {seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_2_when_it_cannot_scan() {
    let fake = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig::write(dir.path(), &fake.url(), "default", "fake");

    fake.fail_next(1, 403);
    let run = run_scan(&kubeconfig, &[]).await;
    assert_eq!(run.code, 2, "stdout: {}", run.stdout);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "rwop-guard scan: cannot list persistentvolumeclaims: Forbidden (403): injected failure (fake apiserver) (API server {}/)",
            fake.url()
        )),
        "{}",
        run.stderr
    );

    // Nothing listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable =
        support::kubeconfig::write(dir.path(), &format!("http://{closed}"), "default", "fake");
    let run = run_scan(&unreachable, &[]).await;
    assert_eq!(run.code, 2, "stdout: {}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "rwop-guard scan: cannot list persistentvolumeclaims: ServiceError: client error \
             (Connect): tcp connect error: Connection refused (os error 111) (API server http://{closed}/)"
        )),
        "{}",
        run.stderr
    );

    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "validation:\n  action: block\n").unwrap();
    let run = run_scan(&kubeconfig, &["--config", policy.to_str().unwrap()]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("key `validation.action`"),
        "{}",
        run.stderr
    );

    let run = run_scan(&dir.path().join("missing"), &[]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read kubeconfig"),
        "{}",
        run.stderr
    );
}

#[test]
fn scan_rule_ids_are_stable() {
    assert_eq!(ScanRule::V1.as_str(), "V1");
    assert_eq!(ScanRule::RolloutDeadlock.as_str(), "rollout-deadlock");
    assert_eq!(ScanRule::MigrationCandidate.as_str(), "migration-candidate");
    assert_eq!(scan::REPORT_POLICY, "rwop-guard");
}

#[tokio::test]
async fn openreports_carry_the_same_results_under_their_own_kinds() {
    let fake = seeded().await;
    let (report, _) = scan_fake(&fake, &Policy::default(), None).await;
    let wg = policy_reports(&report, 1_700_000_000);
    let open: Vec<Value> = scan::reports(&report, 1_700_000_000, scan::ReportFormat::OpenReports)
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    assert_eq!(open.len(), wg.len());
    for (o, w) in open.iter().zip(&wg) {
        assert_eq!(o["apiVersion"], "openreports.io/v1alpha1");
        let kind = match w["kind"].as_str().unwrap() {
            "PolicyReport" => "Report",
            "ClusterPolicyReport" => "ClusterReport",
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(o["kind"], kind);
        assert_eq!(o["source"], "rwop-guard", "OpenReports name their source");
        assert!(
            w.get("source").is_none(),
            "wgpolicyk8s reports have no top-level source"
        );
        for field in ["metadata", "summary", "results"] {
            assert_eq!(o[field], w[field], "{field}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// scan and migrate agree, over generated cluster states
// ---------------------------------------------------------------------------------------------

mod agreement {
    use super::*;
    use proptest::prelude::*;
    use rwop_guard::migrate::eligibility::{Allowances, Blocker, Verdict, Workload, judge};
    use rwop_guard::migrate::{self, MigrateError, MigrateOptions, Plan};

    const NS: &str = "ns";
    const N_CLAIMS: usize = 3;
    const N_VOLUMES: usize = 3;

    fn modes() -> impl Strategy<Value = Vec<&'static str>> {
        prop_oneof![
            4 => Just(vec!["ReadWriteOnce"]),
            2 => Just(vec!["ReadWriteOncePod"]),
            1 => Just(vec!["ReadWriteMany"]),
            1 => Just(vec!["ReadWriteOnce", "ReadOnlyMany"]),
        ]
    }

    /// A cluster state: claims c0.., volumes v0.., Deployments each mounting one claim.
    fn cluster() -> impl Strategy<Value = (Vec<Value>, Vec<Value>, Vec<Value>)> {
        let claim = (
            modes(),
            prop_oneof![4 => Just("Bound"), 1 => Just("Pending")],
            // volumeName: one of the volumes, one that does not exist, or none.
            prop_oneof![4 => (0..N_VOLUMES).prop_map(Some), 1 => Just(Some(9)), 1 => Just(None)],
            prop_oneof![
                Just(Some("fast-csi")),
                Just(Some("")),
                Just(None),
                Just(Some("local-disks"))
            ],
            proptest::bool::weighted(0.1),
        );
        let volume = (
            modes(),
            proptest::bool::weighted(0.8),
            // claimRef.uid: one of the claims, or none.
            prop_oneof![4 => (0..N_CLAIMS).prop_map(Some), 1 => Just(None)],
        );
        let workload = (
            0..N_CLAIMS,
            0i32..3,
            prop_oneof![
                Just(Value::Null),
                Just(json!({"type": "Recreate"})),
                Just(
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
                ),
                Just(
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
                ),
            ],
        );
        (
            proptest::collection::vec(claim, N_CLAIMS),
            proptest::collection::vec(volume, N_VOLUMES),
            proptest::collection::vec(workload, 0..3),
        )
            .prop_map(|(claims, volumes, deployments)| {
                let claims = claims
                    .into_iter()
                    .enumerate()
                    .map(|(i, (modes, phase, volume, class, deleting))| {
                        let mut c = bound_claim(NS, &format!("c{i}"), &modes, "x", "x");
                        let spec = c["spec"].as_object_mut().unwrap();
                        match volume {
                            Some(v) => spec.insert("volumeName".into(), json!(format!("v{v}"))),
                            None => spec.remove("volumeName"),
                        };
                        match class {
                            Some(class) => spec.insert("storageClassName".into(), json!(class)),
                            None => spec.remove("storageClassName"),
                        };
                        c["status"]["phase"] = json!(phase);
                        if deleting {
                            c["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                            c["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
                        }
                        c
                    })
                    .collect();
                let volumes = volumes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (modes, csi, claim))| {
                        let name = format!("v{i}");
                        let mut v = match claim {
                            Some(c) => {
                                csi_volume(&name, &modes, "fast-csi", Some((NS, &format!("c{c}"))))
                            }
                            None => csi_volume(&name, &modes, "fast-csi", None),
                        };
                        if !csi {
                            let spec = v["spec"].as_object_mut().unwrap();
                            spec.remove("csi");
                            spec.insert("hostPath".into(), json!({"path": "/data"}));
                        }
                        v
                    })
                    .collect();
                let deployments = deployments
                    .into_iter()
                    .enumerate()
                    .map(|(i, (claim, replicas, strategy))| {
                        deployment(
                            NS,
                            &format!("d{i}"),
                            replicas,
                            strategy,
                            &format!("c{claim}"),
                        )
                    })
                    .collect();
                (claims, volumes, deployments)
            })
    }

    /// Scan's allowances: it names the command with --switch-to-recreate when one is needed.
    const SCAN: Allowances = Allowances {
        allow_non_csi: false,
        allow_delete_pods: false,
        switch_to_recreate: true,
    };

    fn verdicts(inventory: &Inventory) -> Vec<(String, Verdict)> {
        inventory
            .claims
            .iter()
            .map(|c| {
                let volume = c
                    .volume_name
                    .as_deref()
                    .and_then(|v| inventory.volumes.iter().find(|pv| pv.name == v));
                let workloads: Vec<Workload> = inventory
                    .workloads
                    .workloads
                    .iter()
                    .filter(|d| d.claims.contains(&c.name))
                    .map(Workload::of)
                    .collect();
                (c.name.clone(), judge(c, volume, &workloads, SCAN))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Every claim migrate accepts is a candidate with the command; every claim it refuses
        /// is a migration-blocked finding (a workload) or a note, with migrate's message.
        #[test]
        fn every_claim_is_a_candidate_a_blocked_finding_or_a_note_as_migrate_judges(
            (claims, volumes, deployments) in cluster()
        ) {
            let inventory = inventory(claims, volumes, deployments);
            let report = analyze(&Policy::default(), &inventory, None);
            for (name, verdict) in verdicts(&inventory) {
                let about = |f: &&Finding| f.object.name.as_deref() == Some(name.as_str())
                    && f.object.kind.as_deref() == Some("PersistentVolumeClaim")
                    && matches!(f.rule, ScanRule::MigrationCandidate | ScanRule::MigrationBlocked);
                let findings: Vec<&Finding> = report.findings.iter().filter(about).collect();
                let notes: Vec<&scan::Note> = report
                    .notes
                    .iter()
                    .filter(|n| n.object.name.as_deref() == Some(name.as_str()))
                    .collect();
                match &verdict {
                    Verdict::Accepted { switches, .. } => {
                        let mut command = format!("rwop-guard migrate {NS}/{name}");
                        if !switches.is_empty() {
                            command.push_str(" --switch-to-recreate");
                        }
                        prop_assert_eq!(findings.len(), 1, "{}: {:?}", name, findings);
                        prop_assert_eq!(findings[0].rule, ScanRule::MigrationCandidate);
                        prop_assert_eq!(findings[0].command.as_deref(), Some(command.as_str()));
                        prop_assert!(notes.is_empty());
                    }
                    Verdict::AlreadyMigrated => {
                        prop_assert!(findings.is_empty() && notes.is_empty(), "{}", name);
                    }
                    Verdict::Refused(r) if r.blocker == Blocker::Workload => {
                        prop_assert_eq!(findings.len(), 1, "{}: {:?}", name, findings);
                        prop_assert_eq!(findings[0].rule, ScanRule::MigrationBlocked);
                        prop_assert!(findings[0].detail.contains(&r.message));
                        prop_assert!(notes.is_empty());
                    }
                    Verdict::Refused(r) => {
                        prop_assert!(findings.is_empty(), "{}: {:?}", name, findings);
                        prop_assert_eq!(notes.len(), 1, "{}: {:?}", name, notes);
                        prop_assert_eq!(&notes[0].message, &r.message);
                    }
                }
            }
        }
    }

    proptest! {
        // Each case starts a fake API server: fewer cases, each a whole cluster.
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        /// The same states served by the fake API server: scan's verdict for each claim is
        /// what `migrate --switch-to-recreate` (read-only: its plan) answers.
        #[test]
        fn migrate_answers_each_claim_as_scan_reports_it(
            (claims, volumes, deployments) in cluster()
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let fake = FakeApiServer::start().await;
                fake.seed_list_fixture(CLASSES, &api_fixture("list-storageclasses.json"));
                for v in &volumes {
                    fake.create(VOLUMES, v.clone()).unwrap();
                }
                for c in &claims {
                    fake.create(&claims_in(NS), c.clone()).unwrap();
                }
                for d in &deployments {
                    fake.create(&deployments_in(NS), d.clone()).unwrap();
                }
                let inventory = collect(&fake.client(), Some(NS), |_| {}).await.unwrap();
                let opts = MigrateOptions {
                    switch_to_recreate: true,
                    ..MigrateOptions::default()
                };
                for (name, verdict) in verdicts(&inventory) {
                    let before = fake.resource_version();
                    let answer =
                        migrate::prepare(&fake.client(), NS, &name, &opts, &mut |_| {}).await;
                    assert_eq!(fake.resource_version(), before, "prepare writes nothing");
                    match (&verdict, answer) {
                        (Verdict::Accepted { .. }, Ok(Plan::Run(plan))) => {
                            assert_eq!(plan.state.claim, name);
                        }
                        (Verdict::AlreadyMigrated, Ok(Plan::AlreadyMigrated { .. })) => {}
                        (Verdict::Refused(r), Err(MigrateError::Refused(msg))) => {
                            assert_eq!(msg, r.message, "{name}");
                        }
                        (verdict, answer) => {
                            panic!("{name}: scan judged {verdict:?}, migrate answered {answer:?}")
                        }
                    }
                }
            });
        }
    }

    /// The generated states reach every verdict, so the properties above are not vacuous.
    #[test]
    fn generated_states_reach_every_verdict() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let (claims, volumes, deployments) = cluster().new_tree(&mut runner).unwrap().current();
            for (_, verdict) in verdicts(&inventory(claims, volumes, deployments)) {
                seen.insert(match verdict {
                    Verdict::Accepted { switches, .. } if switches.is_empty() => "accepted",
                    Verdict::Accepted { .. } => "accepted with a switch",
                    Verdict::AlreadyMigrated => "already migrated",
                    Verdict::Refused(r) if r.blocker == Blocker::Workload => "workload",
                    Verdict::Refused(r) if r.blocker == Blocker::NotCsi => "not CSI",
                    Verdict::Refused(_) => "claim",
                });
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }
}
