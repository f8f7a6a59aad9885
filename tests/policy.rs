//! The rules of DESIGN §2, row by row, and a property test against a reference model.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::core::admission::Operation;
use proptest::prelude::*;
use rwop_guard::policy::{
    AccessMode, AccessModes, Action, Claim, ClusterFacts, Decision, Facts,
    MIGRATED_FROM_ANNOTATION, MIGRATION_ANNOTATION, MUTATED_FROM_ANNOTATION, Policy,
    StorageClassFacts, Subject, TASK_URL, Volume, exclusive_rwop_violation, keep_rwop_on_reapply,
    mutate_claim, transition_violation, validate_claim, validate_volume,
};
use serde_json::json;

const RWO: &str = "ReadWriteOnce";
const ROX: &str = "ReadOnlyMany";
const RWX: &str = "ReadWriteMany";
const RWOP: &str = "ReadWriteOncePod";

fn pv(name: &str, modes: &[&str], reclaim: &str, csi: bool, claim_uid: Option<&str>) -> Volume {
    let mut spec = json!({
        "accessModes": modes,
        "capacity": {"storage": "1Gi"},
        "persistentVolumeReclaimPolicy": reclaim,
    });
    if csi {
        spec["csi"] = json!({"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"});
    } else {
        spec["hostPath"] = json!({"path": "/srv/v"});
    }
    if let Some(uid) = claim_uid {
        spec["claimRef"] = json!({"namespace": "shop", "name": "orders-db", "uid": uid});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn pvc(
    modes: &[&str],
    extra_spec: serde_json::Value,
    annotations: Option<serde_json::Value>,
) -> Claim {
    serde_json::from_value(pvc_json(modes, extra_spec, annotations)).unwrap()
}

/// The claim [`pvc`] decodes, as the API server holds it.
fn pvc_json(
    modes: &[&str],
    extra_spec: serde_json::Value,
    annotations: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}});
    for (k, v) in extra_spec.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    let mut meta = json!({"name": "orders-db", "namespace": "shop"});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec,
    })
}

fn warn_policy() -> Policy {
    let mut p = Policy::default();
    p.validation.action = Action::Warn;
    p
}

fn mutating_policy(classes: &[&str]) -> Policy {
    let mut p = Policy::default();
    p.mutation.enabled = true;
    p.mutation.storage_classes = classes.iter().map(|c| (*c).to_owned()).collect();
    p
}

fn cluster_facts() -> Facts {
    let classes = [
        ("fast-csi", "ebs.csi.aws.com"),
        ("local-disks", "kubernetes.io/no-provisioner"),
        ("gce-intree", "kubernetes.io/gce-pd"),
        ("expandable", "example.com/fake-no-provisioner"),
    ];
    Facts {
        cluster: Some(ClusterFacts {
            storage_classes: classes
                .iter()
                .map(|(n, p)| {
                    (
                        (*n).to_owned(),
                        StorageClassFacts {
                            provisioner: (*p).to_owned(),
                        },
                    )
                })
                .collect(),
            default_storage_class: Some("fast-csi".to_owned()),
            volumes: [
                (Arc::<str>::from("pv-rwop"), AccessModes::from_names([RWOP])),
                (Arc::<str>::from("pv-rwo"), AccessModes::from_names([RWO])),
            ]
            .into_iter()
            .collect(),
            namespaces: [
                (
                    Arc::<str>::from("shop"),
                    Arc::new(BTreeMap::from([("team".to_owned(), "payments".to_owned())])),
                ),
                (Arc::<str>::from("lab"), Arc::new(BTreeMap::new())),
            ]
            .into_iter()
            .collect(),
            ..ClusterFacts::default()
        }),
    }
}

// ---- V1 ----------------------------------------------------------------------------------

#[test]
fn v1_rows() {
    // (modes, allowed)
    let rows: &[(&[&str], bool)] = &[
        (&[RWOP], true),
        (&[RWOP, RWOP], true),
        (&[RWO], true),
        (&[RWX, ROX], true),
        (&[], true),
        (&[RWOP, RWO], false),
        (&[RWO, RWOP], false),
        (&[RWOP, RWX], false),
        (&[RWOP, ROX], false),
        (&[RWOP, RWO, RWX, ROX], false),
        (&[RWOP, "ReadWriteOnePod"], false),
    ];
    let policy = Policy::default();
    for (modes, allowed) in rows {
        let volume = pv("v", modes, "Retain", true, None);
        let claim = pvc(modes, json!({}), None);
        for op in [Operation::Create, Operation::Update] {
            let dv = validate_volume(&policy, &op, &volume, Some(&volume));
            let dc = validate_claim(&policy, &op, &claim, Some(&claim));
            assert_eq!(dv.allowed, *allowed, "PV {op:?} {modes:?}");
            assert_eq!(dc.allowed, *allowed, "PVC {op:?} {modes:?}");
            if !allowed {
                assert_eq!(dv.audit.get("v1"), dv.message.as_ref());
                assert_eq!(dv.audit.get("action").map(String::as_str), Some("deny"));
                assert!(dv.warnings.is_empty());
            } else {
                assert_eq!(dv, Decision::allow(), "{op:?} {modes:?}");
            }
        }
    }
}

#[test]
fn v1_message_is_one_actionable_line() {
    let claim = pvc(&[RWOP, RWO], json!({}), None);
    let d = validate_claim(&Policy::default(), &Operation::Create, &claim, None);
    assert_eq!(
        d.message.as_deref(),
        Some(
            "PersistentVolumeClaim \"shop/orders-db\": access modes [ReadWriteOnce, ReadWriteOncePod] \
             combine ReadWriteOncePod with other modes; ReadWriteOncePod must be the only access \
             mode: use [ReadWriteOncePod] for a single writer pod, or remove ReadWriteOncePod"
        )
    );
    assert!(!d.message.unwrap().contains('\n'));
}

#[test]
fn v1_warn_action_allows_with_warning_and_audit() {
    let volume = pv("v", &[RWOP, RWX], "Retain", true, None);
    let d = validate_volume(&warn_policy(), &Operation::Create, &volume, None);
    assert!(d.allowed);
    assert_eq!(d.message, None);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0]
            .starts_with("PersistentVolume \"v\": access modes [ReadWriteMany, ReadWriteOncePod]")
    );
    assert_eq!(d.audit.get("action").map(String::as_str), Some("warn"));
    assert_eq!(d.audit.get("v1"), Some(&d.warnings[0]));
    assert_eq!(d.outcome(), "warned");
}

// ---- V2 ----------------------------------------------------------------------------------

#[test]
fn v2_rows() {
    // (old, new, allowed)
    let rows: &[(&[&str], &[&str], bool)] = &[
        (&[RWO], &[RWOP], true),
        (&[RWO, RWO], &[RWOP], true),
        (&[RWO], &[RWO], true),
        (&[RWX, ROX], &[ROX, RWX, RWX], true),
        (&[RWOP], &[RWOP], true),
        (&[RWX], &[RWOP], false),
        (&[ROX], &[RWOP], false),
        (&[RWO, ROX], &[RWOP], false),
        (&[RWOP], &[RWO], false),
        (&[RWOP], &[RWX], false),
        (&[RWO], &[RWX], false),
        (&[RWO], &[RWO, ROX], false),
        (&[], &[RWOP], false),
        (&[RWO], &[], false),
    ];
    let policy = Policy::default();
    for (old, new, allowed) in rows {
        let (o, n) = (
            pv("v", old, "Retain", true, None),
            pv("v", new, "Retain", true, None),
        );
        let d = validate_volume(&policy, &Operation::Update, &n, Some(&o));
        assert_eq!(d.allowed, *allowed, "PV {old:?} -> {new:?}: {d:?}");
        let (o, n) = (pvc(old, json!({}), None), pvc(new, json!({}), None));
        let d = validate_claim(&policy, &Operation::Update, &n, Some(&o));
        assert_eq!(d.allowed, *allowed, "PVC {old:?} -> {new:?}: {d:?}");
        if !allowed {
            assert!(d.audit.contains_key("v2"), "{d:?}");
        }
    }
}

#[test]
fn v2_message_matches_the_design_example() {
    let old = pv("cat-pictures-pv", &[RWX], "Retain", true, None);
    let new = pv("cat-pictures-pv", &[RWOP], "Retain", true, None);
    let d = validate_volume(&Policy::default(), &Operation::Update, &new, Some(&old));
    assert_eq!(
        d.message.as_deref(),
        Some(
            "PersistentVolume \"cat-pictures-pv\": access mode change [ReadWriteMany] -> \
             [ReadWriteOncePod] is not allowed; only [ReadWriteOnce] -> [ReadWriteOncePod] is \
             supported (https://kubernetes.io/docs/tasks/administer-cluster/change-pv-access-mode-readwriteoncepod/)"
        )
    );
    assert!(d.message.unwrap().ends_with(&format!("({TASK_URL})")));
}

#[test]
fn v1_and_v2_together_report_both() {
    let old = pv("v", &[RWX], "Retain", true, None);
    let new = pv("v", &[RWOP, RWO], "Retain", true, None);
    let d = validate_volume(&Policy::default(), &Operation::Update, &new, Some(&old));
    assert!(!d.allowed);
    assert!(d.audit.contains_key("v1") && d.audit.contains_key("v2"));
    let msg = d.message.unwrap();
    assert!(
        msg.contains("combine ReadWriteOncePod")
            && msg.contains("access mode change [ReadWriteMany]"),
        "{msg}"
    );
}

#[test]
fn v2_warn_action_allows_reverse_change_with_warning() {
    let old = pv("v", &[RWOP], "Retain", true, None);
    let new = pv("v", &[RWO], "Retain", true, None);
    let d = validate_volume(&warn_policy(), &Operation::Update, &new, Some(&old));
    assert!(d.allowed);
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].contains("[ReadWriteOncePod] -> [ReadWriteOnce] is not allowed"));
}

#[test]
fn delete_and_connect_are_never_judged() {
    let bad = pv("v", &[RWOP, RWO], "Delete", false, None);
    let bad_claim = pvc(&[RWOP, RWO], json!({}), None);
    for op in [Operation::Delete, Operation::Connect] {
        assert_eq!(
            validate_volume(&Policy::default(), &op, &bad, None),
            Decision::allow()
        );
        assert_eq!(
            validate_claim(&Policy::default(), &op, &bad_claim, None),
            Decision::allow()
        );
        let d = mutate_claim(
            &mutating_policy(&["fast-csi"]),
            &cluster_facts(),
            &op,
            &pvc(&[RWO], json!({}), None),
            Some("shop"),
        );
        assert_eq!(d, Decision::allow());
    }
}

// ---- W1 ----------------------------------------------------------------------------------

#[test]
fn w1_rows() {
    // (reclaim, csi, claim uid, expected warning fragments)
    let rows: &[(&str, bool, Option<&str>, &[&str])] = &[
        ("Retain", true, None, &[]),
        ("Delete", true, None, &["reclaim policy is Delete"]),
        (
            "Retain",
            true,
            Some("u-1"),
            &["still bound to claim \"shop/orders-db\""],
        ),
        ("Retain", false, None, &["not a CSI volume"]),
        (
            "Delete",
            false,
            Some("u-1"),
            &[
                "reclaim policy is Delete",
                "still bound to claim",
                "not a CSI volume",
            ],
        ),
    ];
    for (reclaim, csi, uid, expected) in rows {
        let old = pv("v", &[RWO], reclaim, *csi, *uid);
        let new = pv("v", &[RWOP], reclaim, *csi, *uid);
        let d = validate_volume(&Policy::default(), &Operation::Update, &new, Some(&old));
        assert!(d.allowed);
        assert_eq!(
            d.warnings.len(),
            expected.len(),
            "{reclaim} {csi} {uid:?}: {:?}",
            d.warnings
        );
        for (w, frag) in d.warnings.iter().zip(expected.iter()) {
            assert!(w.starts_with("PersistentVolume \"v\": "), "{w}");
            assert!(w.contains(frag), "{w} should contain {frag}");
        }
        assert_eq!(d.audit.contains_key("w1"), !expected.is_empty());
    }
}

#[test]
fn w1_only_on_the_allowed_change() {
    // Same modes: no W1 even with a Delete, non-CSI, bound volume (the PV controller's updates).
    let v = pv("v", &[RWO], "Delete", false, Some("u"));
    assert_eq!(
        validate_volume(&Policy::default(), &Operation::Update, &v, Some(&v)),
        Decision::allow()
    );
    // Create of an RWOP volume: not a transition.
    let v = pv("v", &[RWOP], "Delete", false, None);
    assert_eq!(
        validate_volume(&Policy::default(), &Operation::Create, &v, None),
        Decision::allow()
    );
}

// ---- M1 ----------------------------------------------------------------------------------

fn assert_mutated(d: &Decision) {
    assert!(d.allowed);
    let patch = serde_json::to_value(d.patch.as_ref().expect("a patch")).unwrap();
    assert_eq!(
        patch[0],
        json!({"op": "replace", "path": "/spec/accessModes", "value": [RWOP]})
    );
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("[ReadWriteOnce] to [ReadWriteOncePod]"),
        "{:?}",
        d.warnings
    );
    assert!(d.warnings[0].contains("rwop-guard.dev/mutate=\"false\""));
    assert_eq!(
        d.audit.get("mutation").map(String::as_str),
        Some("ReadWriteOnce -> ReadWriteOncePod")
    );
    assert_eq!(d.outcome(), "mutated");
    assert_eq!(d.explanation, None);
}

fn assert_skipped(d: &Decision, why: &str) {
    assert!(d.allowed);
    assert!(d.patch.is_none(), "unexpected patch: {d:?}");
    assert!(d.warnings.is_empty());
    let e = d.explanation.as_deref().unwrap_or_default();
    assert!(e.contains(why), "explanation {e:?} should contain {why:?}");
}

#[test]
fn m1_rows() {
    let sc = |c: &str| json!({"storageClassName": c});
    let on = mutating_policy(&["listed"]);
    let none = Facts::default();
    let cluster = cluster_facts();
    let empty_cluster = Facts {
        cluster: Some(ClusterFacts::default()),
    };
    let create = Operation::Create;
    let shop = Some("shop");

    // Mutates: listed class without cluster facts; CSI class from the cluster; default class.
    assert_mutated(&mutate_claim(
        &on,
        &none,
        &create,
        &pvc(&[RWO], sc("listed"), None),
        shop,
    ));
    assert_mutated(&mutate_claim(
        &on,
        &cluster,
        &create,
        &pvc(&[RWO, RWO], sc("fast-csi"), None),
        shop,
    ));
    assert_mutated(&mutate_claim(
        &on,
        &cluster,
        &create,
        &pvc(&[RWO], json!({}), None),
        shop,
    ));
    assert_mutated(&mutate_claim(
        &on,
        &cluster,
        &create,
        &pvc(&[RWO], sc("expandable"), None),
        shop,
    ));
    // volumeName naming a volume that offers RWOP.
    assert_mutated(&mutate_claim(
        &on,
        &cluster,
        &create,
        &pvc(
            &[RWO],
            json!({"volumeName": "pv-rwop", "storageClassName": "fast-csi"}),
            None,
        ),
        shop,
    ));
    // Opt-out annotation with another value does not opt out.
    assert_mutated(&mutate_claim(
        &on,
        &cluster,
        &create,
        &pvc(
            &[RWO],
            sc("fast-csi"),
            Some(json!({"rwop-guard.dev/mutate": "true"})),
        ),
        shop,
    ));

    let rows: Vec<(Policy, &Facts, Claim, &str)> = vec![
        (
            Policy::default(),
            &cluster,
            pvc(&[RWO], sc("fast-csi"), None),
            "mutation is disabled",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[RWX], sc("fast-csi"), None),
            "are not exactly [ReadWriteOnce]",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[ROX], sc("fast-csi"), None),
            "are not exactly [ReadWriteOnce]",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[RWO, RWX], sc("fast-csi"), None),
            "are not exactly [ReadWriteOnce]",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[RWOP], sc("fast-csi"), None),
            "are not exactly [ReadWriteOnce]",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[], sc("fast-csi"), None),
            "are not exactly [ReadWriteOnce]",
        ),
        (
            on.clone(),
            &cluster,
            pvc(
                &[RWO],
                sc("fast-csi"),
                Some(json!({"rwop-guard.dev/mutate": "false"})),
            ),
            "opts out",
        ),
        (
            on.clone(),
            &cluster,
            pvc(
                &[RWO],
                sc("fast-csi"),
                Some(json!({"rwop-guard.dev/mutate": "False"})),
            ),
            "opts out",
        ),
        (
            on.clone(),
            &cluster,
            pvc(
                &[RWO],
                json!({"storageClassName": "fast-csi", "selector": {"matchLabels": {"a": "b"}}}),
                None,
            ),
            "spec.selector is set",
        ),
        (
            on.clone(),
            &cluster,
            pvc(
                &[RWO],
                json!({"storageClassName": "fast-csi", "volumeName": "pv-rwo"}),
                None,
            ),
            "do not offer ReadWriteOncePod",
        ),
        (
            on.clone(),
            &cluster,
            pvc(
                &[RWO],
                json!({"storageClassName": "fast-csi", "volumeName": "pv-gone"}),
                None,
            ),
            "whose modes are unknown",
        ),
        (
            on.clone(),
            &none,
            pvc(
                &[RWO],
                json!({"storageClassName": "listed", "volumeName": "pv-rwop"}),
                None,
            ),
            "whose modes are unknown",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[RWO], sc(""), None),
            "storageClassName is \"\"",
        ),
        (
            on.clone(),
            &none,
            pvc(&[RWO], json!({}), None),
            "default class is unknown",
        ),
        (
            on.clone(),
            &empty_cluster,
            pvc(&[RWO], json!({}), None),
            "has no default class",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[RWO], sc("local-disks"), None),
            "in-tree provisioner \"kubernetes.io/no-provisioner\"",
        ),
        (
            mutating_policy(&["local-disks"]),
            &cluster,
            pvc(&[RWO], sc("local-disks"), None),
            "not a CSI driver",
        ),
        (
            on.clone(),
            &cluster,
            pvc(&[RWO], sc("missing"), None),
            "does not exist in the cluster",
        ),
        (
            on.clone(),
            &none,
            pvc(&[RWO], sc("fast-csi"), None),
            "not in mutation.storageClasses and there are no cluster facts",
        ),
    ];
    for (policy, facts, claim, why) in rows {
        assert_skipped(&mutate_claim(&policy, facts, &create, &claim, shop), why);
    }
}

#[test]
fn m1_only_on_create() {
    let on = mutating_policy(&["fast-csi"]);
    let claim = pvc(&[RWO], json!({"storageClassName": "fast-csi"}), None);
    assert_mutated(&mutate_claim(
        &on,
        &Facts::default(),
        &Operation::Create,
        &claim,
        Some("shop"),
    ));
    assert_eq!(
        mutate_claim(
            &on,
            &Facts::default(),
            &Operation::Update,
            &claim,
            Some("shop")
        ),
        Decision::allow()
    );
}

#[test]
fn m1_namespaces() {
    let claim = pvc(&[RWO], json!({"storageClassName": "fast-csi"}), None);
    let facts = cluster_facts();
    let create = Operation::Create;

    let mut p = mutating_policy(&[]);
    p.mutation.exclude_namespaces.insert("shop".to_owned());
    assert_skipped(
        &mutate_claim(&p, &facts, &create, &claim, Some("shop")),
        "in mutation.excludeNamespaces",
    );
    // Default policy excludes kube-system.
    assert_skipped(
        &mutate_claim(
            &mutating_policy(&[]),
            &facts,
            &create,
            &claim,
            Some("kube-system"),
        ),
        "excludeNamespaces",
    );

    let mut p = mutating_policy(&[]);
    p.mutation.namespaces.insert("lab".to_owned());
    assert_skipped(
        &mutate_claim(&p, &facts, &create, &claim, Some("shop")),
        "not in mutation.namespaces",
    );
    assert_mutated(&mutate_claim(&p, &facts, &create, &claim, Some("lab")));
    // Exclusion wins over inclusion.
    p.mutation.exclude_namespaces.insert("lab".to_owned());
    assert_skipped(
        &mutate_claim(&p, &facts, &create, &claim, Some("lab")),
        "excludeNamespaces",
    );

    // The request's namespace is used when the object carries none.
    let mut bare = claim.clone();
    bare.metadata.namespace = None;
    let mut p = mutating_policy(&[]);
    p.mutation.namespaces.insert("shop".to_owned());
    assert_mutated(&mutate_claim(&p, &facts, &create, &bare, Some("shop")));
}

#[test]
fn m1_namespace_selector() {
    let claim = pvc(&[RWO], json!({"storageClassName": "fast-csi"}), None);
    let mut p = mutating_policy(&["fast-csi"]);
    p.mutation.namespace_selector =
        Some(serde_json::from_value(json!({"matchLabels": {"team": "payments"}})).unwrap());
    let create = Operation::Create;
    assert_mutated(&mutate_claim(
        &p,
        &cluster_facts(),
        &create,
        &claim,
        Some("shop"),
    ));
    assert_skipped(
        &mutate_claim(&p, &cluster_facts(), &create, &claim, Some("lab")),
        "does not match mutation.namespaceSelector",
    );
    assert_skipped(
        &mutate_claim(&p, &cluster_facts(), &create, &claim, Some("nowhere")),
        "labels of namespace \"nowhere\" are unknown",
    );
    assert_skipped(
        &mutate_claim(&p, &Facts::default(), &create, &claim, Some("shop")),
        "are unknown",
    );
}

#[test]
fn m1_namespace_selector_without_namespace_labels() {
    // What the chart renders (`namespaceSelector: {}`), served with --no-cluster: an empty
    // selector selects every namespace and needs no labels.
    let claim = pvc(&[RWO], json!({"storageClassName": "fast-csi"}), None);
    let mut p = mutating_policy(&["fast-csi"]);
    let no_cluster = Facts::default();
    let in_ns =
        |p: &Policy, ns: &str| mutate_claim(p, &no_cluster, &Operation::Create, &claim, Some(ns));
    let mut select = |selector: serde_json::Value| {
        p.mutation.namespace_selector = Some(serde_json::from_value(selector).unwrap());
        p.clone()
    };
    assert_mutated(&in_ns(&select(json!({})), "shop"));
    // A selector on the name label alone is decided from the name.
    let by_name = select(json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}]}));
    assert_mutated(&in_ns(&by_name, "shop"));
    assert_skipped(
        &in_ns(&by_name, "lab"),
        "namespace \"lab\" does not match mutation.namespaceSelector",
    );
    // Any other label still needs the namespace's labels.
    let by_team = select(
        json!({"matchLabels": {"kubernetes.io/metadata.name": "shop",
                                                "team": "payments"}}),
    );
    assert_skipped(
        &in_ns(&by_team, "shop"),
        "labels of namespace \"shop\" are unknown",
    );
}

#[test]
fn m1_provisioner_overrides() {
    let claim_in_tree = pvc(&[RWO], json!({"storageClassName": "gce-intree"}), None);
    let claim_csi = pvc(&[RWO], json!({"storageClassName": "fast-csi"}), None);
    let facts = cluster_facts();
    let create = Operation::Create;
    let mut p = mutating_policy(&[]);
    assert_skipped(
        &mutate_claim(&p, &facts, &create, &claim_in_tree, Some("shop")),
        "in-tree provisioner",
    );
    p.mutation
        .provisioners
        .allow
        .insert("kubernetes.io/gce-pd".to_owned());
    assert_mutated(&mutate_claim(
        &p,
        &facts,
        &create,
        &claim_in_tree,
        Some("shop"),
    ));
    p.mutation
        .provisioners
        .deny
        .insert("ebs.csi.aws.com".to_owned());
    assert_skipped(
        &mutate_claim(&p, &facts, &create, &claim_csi, Some("shop")),
        "mutation.provisioners.deny",
    );
}

#[test]
fn m1_patch_escapes_the_annotation_key() {
    let on = mutating_policy(&["fast-csi"]);
    let with = pvc(
        &[RWO],
        json!({"storageClassName": "fast-csi"}),
        Some(json!({"a": "b"})),
    );
    let d = mutate_claim(&on, &Facts::default(), &Operation::Create, &with, None);
    let patch = serde_json::to_value(d.patch.unwrap()).unwrap();
    assert_eq!(
        patch[1],
        json!({"op": "add", "path": "/metadata/annotations/rwop-guard.dev~1mutated-from", "value": RWO})
    );

    let without = pvc(&[RWO], json!({"storageClassName": "fast-csi"}), None);
    let d = mutate_claim(&on, &Facts::default(), &Operation::Create, &without, None);
    let patch = serde_json::to_value(d.patch.unwrap()).unwrap();
    assert_eq!(
        patch[1],
        json!({"op": "add", "path": "/metadata/annotations", "value": {MUTATED_FROM_ANNOTATION: RWO}})
    );
}

// ---- Properties ----------------------------------------------------------------------------

/// The rules written the simplest possible way, over bit masks.
mod model {
    pub const RWOP: u8 = 1 << 3;
    pub const RWO: u8 = 1;
    pub fn v1_ok(modes: u8) -> bool {
        modes & RWOP == 0 || modes == RWOP
    }
    pub fn v2_ok(old: u8, new: u8) -> bool {
        old == new || (old == RWO && new == RWOP)
    }
}

fn names_of(mask: u8) -> Vec<&'static str> {
    AccessMode::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, m)| m.as_str())
        .collect()
}

#[test]
fn rules_agree_with_the_model_on_every_subset_and_pair() {
    let subject = Subject {
        kind: "PersistentVolume",
        namespace: None,
        name: "v",
    };
    for new in 0u8..16 {
        let new_set = AccessModes::from_names(names_of(new));
        assert_eq!(
            exclusive_rwop_violation(subject, &new_set).is_none(),
            model::v1_ok(new),
            "{new_set}"
        );
        for old in 0u8..16 {
            let old_set = AccessModes::from_names(names_of(old));
            assert_eq!(
                transition_violation(subject, &old_set, &new_set).is_none(),
                model::v2_ok(old, new),
                "{old_set} -> {new_set}"
            );
            let (o, n) = (
                pv("v", &names_of(old), "Retain", true, None),
                pv("v", &names_of(new), "Retain", true, None),
            );
            let d = validate_volume(&Policy::default(), &Operation::Update, &n, Some(&o));
            assert_eq!(
                d.allowed,
                model::v1_ok(new) && model::v2_ok(old, new),
                "{old_set} -> {new_set}"
            );
        }
    }
}

/// A raw mode list (any order, duplicates) and the mask of the set it denotes.
fn raw_modes() -> impl Strategy<Value = (u8, Vec<&'static str>)> {
    proptest::collection::vec(0usize..4, 0..8).prop_map(|idx| {
        let mask = idx.iter().fold(0u8, |m, i| m | (1 << i));
        (
            mask,
            idx.into_iter()
                .map(|i| AccessMode::ALL[i].as_str())
                .collect(),
        )
    })
}

proptest! {
    #[test]
    fn decisions_ignore_order_and_duplicates(
        (old, old_names) in raw_modes(),
        (new, new_names) in raw_modes(),
        reclaim in prop_oneof![Just("Retain"), Just("Delete")],
        csi in any::<bool>(),
    ) {
        let canonical = validate_volume(
            &Policy::default(), &Operation::Update,
            &pv("v", &names_of(new), reclaim, csi, None), Some(&pv("v", &names_of(old), reclaim, csi, None)));
        let raw = validate_volume(
            &Policy::default(), &Operation::Update,
            &pv("v", &new_names, reclaim, csi, None), Some(&pv("v", &old_names, reclaim, csi, None)));
        prop_assert_eq!(canonical.allowed, model::v1_ok(new) && model::v2_ok(old, new));
        prop_assert_eq!(canonical, raw);
        let c1 = validate_claim(&Policy::default(), &Operation::Create, &pvc(&names_of(new), json!({}), None), None);
        let c2 = validate_claim(&Policy::default(), &Operation::Create, &pvc(&new_names, json!({}), None), None);
        prop_assert_eq!(c1, c2);
    }
}

// ---- V2: the recorded rollback of `rwop-guard migrate` --------------------------------------

fn with_migration_state(mut v: Volume, target: &str) -> Volume {
    v.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            rwop_guard::policy::MIGRATION_ANNOTATION.to_owned(),
            json!({"version": 1, "target": target, "completed": 0}).to_string(),
        );
    v
}

#[test]
fn v2_allows_only_a_recorded_unbound_rollback_to_rwo() {
    let policy = Policy::default();
    let update = Operation::Update;
    // Recorded rollback, volume released: allowed, and audited as such.
    let old = with_migration_state(pv("v", &[RWOP], "Retain", true, None), RWO);
    let new = with_migration_state(pv("v", &[RWO], "Retain", true, None), RWO);
    let d = validate_volume(&policy, &update, &new, Some(&old));
    assert!(d.allowed, "{d:?}");
    assert!(d.audit.contains_key("rollback"));
    assert!(d.warnings.is_empty());

    // Still bound to a claim: denied.
    let bound = with_migration_state(pv("v", &[RWO], "Retain", true, Some("u-1")), RWO);
    assert!(!validate_volume(&policy, &update, &bound, Some(&old)).allowed);
    // The state is only on the new object (set in the same update): denied.
    let plain_old = pv("v", &[RWOP], "Retain", true, None);
    assert!(!validate_volume(&policy, &update, &new, Some(&plain_old)).allowed);
    // A forward migration state does not allow the reverse change.
    let forward_old = with_migration_state(pv("v", &[RWOP], "Retain", true, None), RWOP);
    assert!(!validate_volume(&policy, &update, &new, Some(&forward_old)).allowed);
    // Other reverse changes stay denied even with a rollback state.
    let to_rwx = with_migration_state(pv("v", &[RWX], "Retain", true, None), RWO);
    assert!(!validate_volume(&policy, &update, &to_rwx, Some(&old)).allowed);
    // A garbled state is no permission.
    let mut garbled = pv("v", &[RWOP], "Retain", true, None);
    garbled.metadata.annotations = Some(
        [(
            rwop_guard::policy::MIGRATION_ANNOTATION.to_owned(),
            "{not json".to_owned(),
        )]
        .into(),
    );
    assert!(!validate_volume(&policy, &update, &new, Some(&garbled)).allowed);
}

// ---- M2: re-applied [ReadWriteOnce] manifests keep [ReadWriteOncePod] -------------------------

fn keep(old: &Claim, new: &Claim) -> Decision {
    keep_rwop_on_reapply(
        Subject::claim(&new.metadata),
        &Operation::Update,
        new,
        Some(old),
    )
}

/// The object after the decision's patch.
fn patched(object: &impl serde::Serialize, decision: &Decision) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap();
    json_patch::patch(&mut value, decision.patch.as_ref().unwrap()).unwrap();
    value
}

#[test]
fn m2_keeps_rwop_when_a_mutated_claims_manifest_is_reapplied() {
    let old = pvc(
        &[RWOP],
        json!({}),
        Some(json!({MUTATED_FROM_ANNOTATION: RWO})),
    );
    // kubectl apply: the annotation stays (kubectl never set it), the modes go back.
    let new = pvc(
        &[RWO],
        json!({}),
        Some(json!({MUTATED_FROM_ANNOTATION: RWO})),
    );
    let d = keep(&old, &new);
    assert!(d.allowed);
    assert_eq!(d.outcome(), "mutated");
    let after = patched(&new, &d);
    assert_eq!(after["spec"]["accessModes"], json!([RWOP]));
    assert_eq!(
        after["metadata"]["annotations"][MUTATED_FROM_ANNOTATION],
        RWO
    );
    assert_eq!(
        d.warnings,
        [
            "PersistentVolumeClaim \"shop/orders-db\": the applied manifest asks for \
          [ReadWriteOnce], but the object is [ReadWriteOncePod] because rwop-guard changed it \
          when it was created; kept [ReadWriteOncePod]. Change the manifest to \
          [ReadWriteOncePod] to match (and to silence this warning)"
        ]
    );
    assert!(d.audit.contains_key("reapply"));

    // Server-side apply drops the annotation the applier owns: it is put back.
    let new = pvc(&[RWO], json!({}), None);
    let after = patched(&new, &keep(&old, &new));
    assert_eq!(
        after["metadata"]["annotations"][MUTATED_FROM_ANNOTATION],
        RWO
    );
    assert_eq!(after["spec"]["accessModes"], json!([RWOP]));
    // Annotations no rule reads are kept by the patch.
    let new_json = pvc_json(&[RWO], json!({}), Some(json!({"team": "db"})));
    let new = serde_json::from_value(new_json.clone()).unwrap();
    let after = patched(&new_json, &keep(&old, &new));
    assert_eq!(
        after["metadata"]["annotations"],
        json!({"team": "db", MUTATED_FROM_ANNOTATION: RWO})
    );
}

#[test]
fn m2_keeps_rwop_on_migrated_claims_and_volumes() {
    let old = pvc(
        &[RWOP],
        json!({}),
        Some(json!({MIGRATED_FROM_ANNOTATION: RWO})),
    );
    let new = pvc(&[RWO], json!({}), None);
    let d = keep(&old, &new);
    assert!(
        d.warnings[0].contains("because rwop-guard migrate moved it"),
        "{d:?}"
    );
    let after = patched(&new, &d);
    assert_eq!(
        after["metadata"]["annotations"][MIGRATED_FROM_ANNOTATION],
        RWO
    );

    let mut old_pv = pv("pv-1", &[RWOP], "Delete", true, Some("u1"));
    old_pv.metadata.annotations =
        Some([(MIGRATED_FROM_ANNOTATION.to_owned(), RWO.to_owned())].into());
    let new_pv = pv("pv-1", &[RWO], "Delete", true, Some("u1"));
    let d = keep_rwop_on_reapply(
        Subject::volume(&new_pv.metadata),
        &Operation::Update,
        &new_pv,
        Some(&old_pv),
    );
    assert_eq!(d.outcome(), "mutated");
    assert!(
        d.warnings[0].starts_with("PersistentVolume \"pv-1\": the applied manifest"),
        "{d:?}"
    );
}

#[test]
fn m2_leaves_everything_else_alone() {
    let marked = Some(json!({MUTATED_FROM_ANNOTATION: RWO}));
    let cases = [
        // Not marked by rwop-guard.
        (pvc(&[RWOP], json!({}), None), pvc(&[RWO], json!({}), None)),
        (
            pvc(
                &[RWOP],
                json!({}),
                Some(json!({MUTATED_FROM_ANNOTATION: RWX})),
            ),
            pvc(&[RWO], json!({}), None),
        ),
        // Other transitions.
        (
            pvc(&[RWOP], json!({}), marked.clone()),
            pvc(&[RWOP], json!({}), marked.clone()),
        ),
        (
            pvc(&[RWOP], json!({}), marked.clone()),
            pvc(&[RWX], json!({}), marked.clone()),
        ),
        (
            pvc(&[RWOP], json!({}), marked.clone()),
            pvc(&[RWO, RWX], json!({}), marked.clone()),
        ),
        (
            pvc(&[RWO], json!({}), marked.clone()),
            pvc(&[RWO], json!({}), marked.clone()),
        ),
        // A migration or rollback under way.
        (
            pvc(
                &[RWOP],
                json!({}),
                Some(json!({MUTATED_FROM_ANNOTATION: RWO,
                                                MIGRATION_ANNOTATION: "{}"})),
            ),
            pvc(&[RWO], json!({}), None),
        ),
    ];
    for (old, new) in &cases {
        let d = keep(old, new);
        assert_eq!(d.outcome(), "allowed", "{old:?} -> {new:?}: {d:?}");
        assert!(d.explanation.is_some(), "{d:?}");
    }
    // CREATE and a missing old object: not M2's business.
    let new = pvc(&[RWO], json!({}), None);
    let d = keep_rwop_on_reapply(
        Subject::claim(&new.metadata),
        &Operation::Create,
        &new,
        None,
    );
    assert_eq!(d, Decision::allow());
}

#[test]
fn v2_message_fits_the_change() {
    let policy = Policy::default();
    let update = Operation::Update;
    // Not involving ReadWriteOncePod: said so.
    let old = pv("pv-1", &[RWX], "Retain", true, None);
    let new = pv("pv-1", &[RWO], "Retain", true, None);
    let d = validate_volume(&policy, &update, &new, Some(&old));
    assert_eq!(
        d.message.as_deref(),
        Some(
            "PersistentVolume \"pv-1\": access mode change [ReadWriteMany] -> [ReadWriteOnce] is \
             not allowed: it does not involve ReadWriteOncePod, and the only change rwop-guard \
             allows is [ReadWriteOnce] -> [ReadWriteOncePod] (nothing checks other changes \
             against the claim bound to the volume); keep [ReadWriteMany]"
        )
    );
    // Back from [ReadWriteOncePod] on a volume migrate moved: how to undo the migration.
    let mut old = pv("pv-1", &[RWOP], "Retain", true, Some("u1"));
    old.metadata.annotations = Some([(MIGRATED_FROM_ANNOTATION.to_owned(), RWO.to_owned())].into());
    let mut new = pv("pv-1", &[RWX], "Retain", true, Some("u1"));
    new.metadata.annotations = old.metadata.annotations.clone();
    let d = validate_volume(&policy, &update, &new, Some(&old));
    let message = d.message.unwrap();
    assert!(
        message.ends_with(
            "; this volume was moved to [ReadWriteOncePod] by rwop-guard migrate; to undo that \
             safely (claim unbound and rebound, consumers scaled down and back), run: rwop-guard \
             migrate shop/orders-db --rollback"
        ),
        "{message}"
    );
    assert!(message.contains("only [ReadWriteOnce] -> [ReadWriteOncePod] is supported"));
    // The same change on a volume rwop-guard never migrated: no hint.
    let old = pv("pv-1", &[RWOP], "Retain", true, Some("u1"));
    let new = pv("pv-1", &[RWX], "Retain", true, Some("u1"));
    let d = validate_volume(&policy, &update, &new, Some(&old));
    assert!(!d.message.unwrap().contains("rollback"));
}
