//! A fake cluster for the migrate tests: the captured fixtures (storage classes, namespaces, the
//! Deployment `orders` and its ReplicaSet in `shop`) and small emulations of the controllers a
//! migration depends on: Deployment/ReplicaSet/StatefulSet pods following `spec.replicas`, the
//! pvc-protection finalizer, the PV controller's binding and reclaiming. Every PersistentVolume
//! write is checked against the validating webhook's rules and the safety invariants (never
//! deleted, never unclaimed with reclaim policy Delete).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::core::admission::Operation;
use rwop_guard::policy::{MIGRATION_ANNOTATION, Policy, Volume, validate_volume};
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::fake_apiserver::{EventType, FakeApiServer, Store, WriteEvent, api_fixture};

/// The namespace of the captured fixtures.
pub const NS: &str = "shop";
/// The captured Deployment `orders` (scaled to 1 replica, strategy Recreate by [`Cluster::start`]).
pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/shop/deployments/orders";
/// The captured ReplicaSet of `orders`.
pub const RS_NAME: &str = "orders-5cc5c796bd";

/// The claims the pods of each owner (namespace, owner name) mount, as [`Cluster::add_pod`]
/// registered them: the workload controllers create new pods with the same volumes.
type Mounts = Arc<Mutex<BTreeMap<(String, String), Vec<String>>>>;

/// What every test can inspect after a run.
pub struct Cluster {
    pub fake: FakeApiServer,
    /// Safety invariant or webhook rule broken by a write, in order.
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Every change of a Deployment's `spec.replicas`: (namespace/name, replicas), in order.
    pub scales: Arc<Mutex<Vec<(String, i64)>>>,
    mounts: Mounts,
}

impl Cluster {
    /// The fixtures and the controllers; no claims, volumes or pods yet.
    pub async fn start() -> Cluster {
        let fake = FakeApiServer::start().await;
        fake.seed_list_fixture(
            "/apis/storage.k8s.io/v1/storageclasses",
            &api_fixture("list-storageclasses.json"),
        );
        fake.seed_list_fixture("/api/v1/namespaces", &api_fixture("list-namespaces.json"));
        // The Deployment `orders` and its ReplicaSet, as captured from a real cluster, scaled to
        // one replica with strategy Recreate: what a ReadWriteOncePod claim can serve (the tests
        // of refusals put the captured 2 replicas and RollingUpdate back).
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
        let c = Cluster {
            fake,
            violations: Arc::new(Mutex::new(Vec::new())),
            scales: Arc::new(Mutex::new(Vec::new())),
            mounts: Arc::new(Mutex::new(BTreeMap::new())),
        };
        let (violations, scales, mounts) =
            (c.violations.clone(), c.scales.clone(), c.mounts.clone());
        c.fake
            .on_write(move |store, event| controllers(store, event, &violations, &scales, &mounts));
        c
    }

    /// Creates a pod of `owner` (a ReplicaSet or StatefulSet name) mounting `claims`; later pods
    /// of the same owner mount the same claims.
    pub fn add_pod(&self, ns: &str, name: &str, owner_kind: &str, owner: &str, claims: &[&str]) {
        self.mounts.lock().unwrap().insert(
            (ns.to_owned(), owner.to_owned()),
            claims.iter().map(|c| (*c).to_owned()).collect(),
        );
        self.fake
            .create(&pods_path(ns), pod(ns, name, owner_kind, owner, claims))
            .unwrap();
    }
}

impl Cluster {
    /// No safety invariant or webhook rule was broken by any write so far.
    pub fn assert_safe(&self) {
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "{v:#?}");
    }
}

/// What the migrate tests compare of a claim and its volume at the end of a run: the claim's
/// modes and phase, the volume's modes, reclaim policy and recorded state, and whether the
/// volume is bound to this very claim (its uid).
pub fn pair_state(pvc: &Value, pv: &Value) -> Vec<Value> {
    vec![
        pvc["spec"]["accessModes"].clone(),
        pvc["status"]["phase"].clone(),
        pv["spec"]["accessModes"].clone(),
        pv["spec"]["persistentVolumeReclaimPolicy"].clone(),
        pv["metadata"]["annotations"][MIGRATION_ANNOTATION].clone(),
        json!(pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]),
    ]
}

pub fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

pub fn claims_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/persistentvolumeclaims")
}

/// A running pod on node-1 with a controller owner reference, labelled `owner: OWNER`.
pub fn pod(ns: &str, name: &str, owner_kind: &str, owner: &str, claims: &[&str]) -> Value {
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"owner": owner},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner, "uid": format!("uid-{owner}"), "controller": true}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "app"}], "volumes": volumes},
        "status": {"phase": "Running"}
    })
}

/// A bound [ReadWriteOnce] volume of 1Gi, reclaim policy Delete, storage class `fast-csi`,
/// reserved for `ns/claim` (uid `uid-CLAIM`); CSI or hostPath.
pub fn volume(name: &str, ns: &str, claim: &str, csi: bool) -> Value {
    let mut pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "finalizers": ["kubernetes.io/pv-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "fast-csi",
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": claim, "uid": format!("uid-{claim}")}},
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

/// A [ReadWriteOnce] claim labelled `tier: db`, bound to `volume`.
pub fn claim(ns: &str, name: &str, volume: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"tier": "db"},
                     "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": "fast-csi", "volumeName": volume, "volumeMode": "Filesystem"},
        "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"]}
    })
}

/// A StatefulSet of one replica whose pods are labelled `owner: NAME`.
pub fn statefulset(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": {"owner": name}},
                 "template": {"metadata": {"labels": {"owner": name}}, "spec": {"containers": [{"name": "r", "image": "r"}]}}}
    })
}

fn modes(obj: &Value) -> Vec<String> {
    serde_json::from_value(obj["spec"]["accessModes"].clone()).unwrap_or_default()
}

fn claim_modes_fit(claim: &Value, pv: &Value) -> bool {
    let pv_modes = modes(pv);
    let wanted = modes(claim);
    !wanted.is_empty() && wanted.iter().all(|m| pv_modes.contains(m))
}

/// Binds a pending claim to the volume it names, as the PV controller does.
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
    let claim_ref = &pv["spec"]["claimRef"];
    let ns = claim["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = claim["metadata"]["name"].as_str().unwrap_or_default();
    let reserved_for_it = claim_ref.is_null()
        || (claim_ref["namespace"] == ns
            && claim_ref["name"] == name
            && claim_ref["uid"].as_str().unwrap_or("").is_empty());
    let path = format!("{}/{name}", claims_path(ns));
    if !reserved_for_it || !claim_modes_fit(claim, &pv) {
        // VolumeMismatch: the claim stays Pending.
        store
            .patch(&path, json!({"status": {"phase": "Pending"}}))
            .unwrap();
        return;
    }
    store
        .patch(&pv_path, json!({
            "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                                   "uid": claim["metadata"]["uid"], "resourceVersion": claim["metadata"]["resourceVersion"]}},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
    store
        .patch(&path, json!({"status": {"phase": "Bound", "accessModes": pv["spec"]["accessModes"], "capacity": pv["spec"]["capacity"]}}))
        .unwrap();
}

fn pod_mounts(pod: &Value, claim: &str) -> bool {
    pod["spec"]["volumes"].as_array().is_some_and(|v| {
        v.iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == claim)
    })
}

/// The pvc-protection controller: a deleted claim goes once no scheduled pod mounts it.
fn release_protected_claims(store: &mut Store, ns: &str) {
    let pods = store.list(&pods_path(ns));
    for claim in store.list(&claims_path(ns)) {
        let name = claim["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let in_use = pods
            .iter()
            .any(|p| p["spec"]["nodeName"].is_string() && pod_mounts(p, &name));
        if claim["metadata"]["deletionTimestamp"].is_string() && !in_use {
            store
                .patch(
                    &format!("{}/{name}", claims_path(ns)),
                    json!({"metadata": {"finalizers": null}}),
                )
                .unwrap();
        }
    }
}

/// Workload controllers: pods follow `spec.replicas` (Deployment through its ReplicaSet).
fn reconcile_pods(
    store: &mut Store,
    mounts: &Mounts,
    ns: &str,
    owner_kind: &str,
    owner: &str,
    replicas: i64,
) {
    let pods = pods_path(ns);
    let existing: Vec<String> = store
        .list(&pods)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["owner"] == owner)
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for name in existing.iter().skip(replicas.max(0) as usize) {
        store.delete(&format!("{pods}/{name}")).unwrap();
    }
    let claims = mounts
        .lock()
        .unwrap()
        .get(&(ns.to_owned(), owner.to_owned()))
        .cloned()
        .unwrap_or_default();
    let claims: Vec<&str> = claims.iter().map(String::as_str).collect();
    for i in existing.len()..replicas.max(0) as usize {
        store
            .create(
                &pods,
                pod(ns, &format!("{owner}-{i}"), owner_kind, owner, &claims),
            )
            .unwrap();
    }
}

fn check_volume_write(event: &WriteEvent, violations: &Mutex<Vec<String>>) {
    let mut v = violations.lock().unwrap();
    if event.event_type == EventType::Deleted {
        v.push(format!("PersistentVolume {} was deleted", event.name));
        return;
    }
    let obj = &event.object;
    let unclaimed = obj["spec"]["claimRef"]["uid"]
        .as_str()
        .unwrap_or("")
        .is_empty();
    if unclaimed && obj["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
        v.push(format!(
            "PersistentVolume {} unclaimed with reclaim policy Delete (rv {})",
            event.name, event.resource_version
        ));
    }
    // The validating webhook must allow every change the tool makes.
    if let Some(old) = &event.old_object {
        let new_pv = Volume::deserialize(obj).unwrap();
        let old_pv = Volume::deserialize(old).unwrap();
        let d = validate_volume(
            &Policy::default(),
            &Operation::Update,
            &new_pv,
            Some(&old_pv),
        );
        if !d.allowed {
            v.push(format!(
                "the webhook would deny: {}",
                d.message.unwrap_or_default()
            ));
        }
    }
}

fn controllers(
    store: &mut Store,
    event: &WriteEvent,
    violations: &Mutex<Vec<String>>,
    scales: &Mutex<Vec<(String, i64)>>,
    mounts: &Mounts,
) {
    let ns = event.namespace.clone().unwrap_or_default();
    match (event.resource.as_str(), event.event_type) {
        ("persistentvolumes", _) => {
            check_volume_write(event, violations);
            if event.event_type == EventType::Modified {
                // A volume released for a waiting claim gets bound.
                let claim_ns = event.object["spec"]["claimRef"]["namespace"]
                    .as_str()
                    .unwrap_or(NS)
                    .to_owned();
                let pending: Vec<Value> = store
                    .list(&claims_path(&claim_ns))
                    .into_iter()
                    .filter(|c| {
                        c["spec"]["volumeName"] == event.name.as_str()
                            && c["status"]["phase"] != "Bound"
                    })
                    .collect();
                for claim in pending {
                    try_bind(store, &claim);
                }
            }
        }
        ("persistentvolumeclaims", EventType::Added) => try_bind(store, &event.object),
        ("persistentvolumeclaims", EventType::Modified) => release_protected_claims(store, &ns),
        ("persistentvolumeclaims", EventType::Deleted) => {
            // The PV controller: a volume whose claim is gone is Released, or deleted with it.
            let uid = event.object["metadata"]["uid"].clone();
            for pv in store.list("/api/v1/persistentvolumes") {
                if pv["spec"]["claimRef"]["uid"] != uid {
                    continue;
                }
                let path = format!(
                    "/api/v1/persistentvolumes/{}",
                    pv["metadata"]["name"].as_str().unwrap()
                );
                if pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" {
                    store
                        .patch(&path, json!({"metadata": {"finalizers": null}}))
                        .unwrap();
                    let _ = store.delete(&path);
                } else {
                    store
                        .patch(&path, json!({"status": {"phase": "Released"}}))
                        .unwrap();
                }
            }
        }
        ("pods", EventType::Deleted) => release_protected_claims(store, &ns),
        ("deployments", EventType::Modified) => {
            let replicas = event.object["spec"]["replicas"].as_i64().unwrap_or(1);
            let old = event
                .old_object
                .as_ref()
                .and_then(|o| o["spec"]["replicas"].as_i64());
            if old != Some(replicas) {
                scales
                    .lock()
                    .unwrap()
                    .push((format!("{ns}/{}", event.name), replicas));
            }
            // The ReplicaSets the Deployment owns.
            let owned: Vec<String> = store
                .list(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"))
                .into_iter()
                .filter(|rs| {
                    rs["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["name"] == event.name.as_str()))
                })
                .filter_map(|rs| rs["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            for rs in owned {
                reconcile_pods(store, mounts, &ns, "ReplicaSet", &rs, replicas);
            }
        }
        ("statefulsets", EventType::Modified) => {
            let replicas = event.object["spec"]["replicas"].as_i64().unwrap_or(1);
            reconcile_pods(store, mounts, &ns, "StatefulSet", &event.name, replicas);
        }
        _ => {}
    }
}
