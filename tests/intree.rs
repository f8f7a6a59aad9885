//! The in-tree engine without a cluster: `rwop-guard policy export`, and the chart's engine
//! choice. The chart's in-tree objects and the command's output are proven equal for a spread of
//! values (the chart writes the CEL out by hand, so this is what keeps them from drifting).
//! Whether the objects decide as the webhook does is for the e2e suite (tests/e2e/intree.rs), on
//! a real API server.
//!
//! helm is found, and skipped when missing (a failure when `CI` is set), by the one rule of
//! every suite: `support::tools`.

use rwop_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::binary::Run;

use serde_json::{Value, json};

const RELEASE: &str = "guard";
const FULLNAME: &str = "guard-rwop-guard";

fn rwop(args: &[&str]) -> Run {
    support::binary::run(args, b"")
}

fn export(policy_yaml: &str, args: &[&str]) -> (Vec<Value>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy_yaml).unwrap();
    let mut all = vec![
        "policy",
        "export",
        "--config",
        file.to_str().unwrap(),
        "-o",
        "json",
    ];
    all.extend(args);
    let out = rwop(&all);
    assert_eq!(out.code, 0, "policy export failed: {}", out.stderr);
    let list: Value = serde_json::from_str(&out.stdout).expect("policy export -o json");
    assert_eq!(list["kind"], "List");
    (
        list["items"].as_array().cloned().unwrap_or_default(),
        out.stderr,
    )
}

fn names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn default_policy_exports_validation_and_keep_on_reapply() {
    let (objects, notes) = export("", &[]);
    assert_eq!(
        names(&objects),
        [
            "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy/rwop-guard-access-modes",
            "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding/rwop-guard-access-modes",
            "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy/rwop-guard-transition-warnings",
            "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding/rwop-guard-transition-warnings",
            "admissionregistration.k8s.io/v1beta1 MutatingAdmissionPolicy/rwop-guard-keep",
            "admissionregistration.k8s.io/v1beta1 MutatingAdmissionPolicyBinding/rwop-guard-keep",
        ]
    );
    assert!(notes.is_empty(), "{notes}");
    // deny -> a [Deny] binding; the W1 warnings are always a [Warn] binding.
    assert_eq!(objects[1]["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(objects[3]["spec"]["validationActions"], json!(["Warn"]));
    assert_eq!(
        objects[0]["spec"]["auditAnnotations"][0],
        json!({"key": "action", "valueExpression": "variables.v2 ? 'deny' : ''"})
    );
    // Only volume updates, and only those that change the modes, reach the CEL.
    assert_eq!(
        objects[0]["spec"]["matchConstraints"]["resourceRules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                "resources": ["persistentvolumes"]}])
    );
    assert_eq!(
        objects[0]["spec"]["matchConditions"][0]["name"],
        "access-modes-change"
    );
}

#[test]
fn warn_action_binds_the_rules_with_warn() {
    let (objects, _) = export("validation:\n  action: warn\n", &[]);
    assert_eq!(objects[1]["spec"]["validationActions"], json!(["Warn"]));
    assert_eq!(
        objects[0]["spec"]["auditAnnotations"][0]["valueExpression"],
        "variables.v2 ? 'warn' : ''"
    );
}

#[test]
fn mutation_exports_m1_for_the_listed_classes_and_says_what_it_leaves() {
    let policy = "mutation:\n  enabled: true\n  storageClasses: [b-fast, a-fast]\n  namespaces: [shop]\n  namespaceSelector:\n    matchLabels: {team: db}\n  provisioners:\n    allow: [kubernetes.io/gce-pd]\n";
    let (objects, notes) = export(policy, &["--map-version", "v1"]);
    let mutate = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "rwop-guard-mutate")
        .expect("M1 exported");
    assert_eq!(mutate["apiVersion"], "admissionregistration.k8s.io/v1");
    let conditions = &mutate["spec"]["matchConditions"];
    let class = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "listed-storage-class")
        .unwrap();
    assert_eq!(
        class["expression"],
        "has(object.spec.storageClassName) && object.spec.storageClassName in ['a-fast', 'b-fast']"
    );
    assert_eq!(
        mutate["spec"]["matchConstraints"]["namespaceSelector"],
        json!({
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]},
            ],
            "matchLabels": {"team": "db"},
        })
    );
    // The annotation patch adds the key alone when annotations exist (the whole map would
    // replace them).
    let patch = mutate["spec"]["mutations"][0]["jsonPatch"]["expression"]
        .as_str()
        .unwrap();
    assert!(
        patch.contains("has(object.metadata.annotations) ? [JSONPatch{op: 'add', path: '/metadata/annotations/' + jsonpatch.escapeKey('rwop-guard.dev/mutated-from')"),
        "{patch}"
    );
    assert!(notes.contains("a-fast, b-fast"), "{notes}");
    assert!(
        notes.contains("mutation.provisioners is not exported"),
        "{notes}"
    );
}

#[test]
fn mutation_without_listed_classes_exports_no_m1() {
    let (objects, notes) = export("mutation:\n  enabled: true\n", &[]);
    assert!(
        !names(&objects)
            .iter()
            .any(|n| n.ends_with("rwop-guard-mutate")),
        "{objects:?}"
    );
    assert!(notes.contains("M1 not exported"), "{notes}");
}

#[test]
fn map_version_none_and_keep_off_print_no_mutating_policy() {
    let (objects, notes) = export("", &["--map-version", "none"]);
    assert_eq!(objects.len(), 4);
    assert!(notes.contains("--map-version none"), "{notes}");
    let (objects, _) = export("", &["--keep-on-reapply", "false"]);
    assert_eq!(objects.len(), 4);
}

/// The objects are the API's own: they decode into k8s-openapi's types of their version with
/// nothing left over (a misspelt field would be dropped by the decode and show here).
#[test]
fn exported_objects_are_the_api_types_of_their_version() {
    use k8s_openapi::api::admissionregistration::{v1, v1beta1};
    let policy = "mutation:\n  enabled: true\n  storageClasses: [fast]\n";
    for version in ["v1", "v1beta1"] {
        let (objects, _) = export(policy, &["--map-version", version]);
        for object in objects {
            let kind = object["kind"].as_str().unwrap().to_owned();
            let again = match (kind.as_str(), version) {
                ("ValidatingAdmissionPolicy", _) => serde_json::to_value(
                    serde_json::from_value::<v1::ValidatingAdmissionPolicy>(object.clone())
                        .unwrap(),
                ),
                ("ValidatingAdmissionPolicyBinding", _) => serde_json::to_value(
                    serde_json::from_value::<v1::ValidatingAdmissionPolicyBinding>(object.clone())
                        .unwrap(),
                ),
                ("MutatingAdmissionPolicy", "v1") => serde_json::to_value(
                    serde_json::from_value::<v1::MutatingAdmissionPolicy>(object.clone()).unwrap(),
                ),
                ("MutatingAdmissionPolicy", _) => serde_json::to_value(
                    serde_json::from_value::<v1beta1::MutatingAdmissionPolicy>(object.clone())
                        .unwrap(),
                ),
                ("MutatingAdmissionPolicyBinding", "v1") => serde_json::to_value(
                    serde_json::from_value::<v1::MutatingAdmissionPolicyBinding>(object.clone())
                        .unwrap(),
                ),
                ("MutatingAdmissionPolicyBinding", _) => serde_json::to_value(
                    serde_json::from_value::<v1beta1::MutatingAdmissionPolicyBinding>(
                        object.clone(),
                    )
                    .unwrap(),
                ),
                other => panic!("unexpected {other:?}"),
            }
            .unwrap();
            assert_eq!(again, object, "{kind} {version}");
        }
    }
}

#[test]
fn yaml_output_is_a_kubectl_stream_of_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "mutation:\n  enabled: true\n  storageClasses: [fast]\n",
    )
    .unwrap();
    let out = rwop(&["policy", "export", "--config", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout;
    assert!(text.starts_with("---\n"), "{text}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let (json_objects, _) = export(
        "mutation:\n  enabled: true\n  storageClasses: [fast]\n",
        &[],
    );
    assert_eq!(docs, json_objects);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let out = rwop(&["policy", "export", "--config", "/nonexistent/policy.yaml"]);
    assert_eq!(out.code, 2);
    let stderr = &out.stderr;
    assert!(stderr.contains("/nonexistent/policy.yaml"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = rwop(&["policy", "export", "--prefix", "Bad_Name"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--prefix \"Bad_Name\""), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// The chart.

/// helm, or None when the test is skipped (`support::tools::require`).
fn helm() -> Option<PathBuf> {
    support::tools::require("intree", "helm")
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rwop-guard")
}

/// `helm template` of the chart with `values` (JSON) and extra arguments.
fn render(helm: &Path, values: &Value, args: &[&str]) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.json");
    std::fs::write(&file, values.to_string()).unwrap();
    let out = Command::new(helm)
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", "rwop-system", "--values"])
        .arg(&file)
        .args(args)
        .output()
        .expect("running helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    kinds
}

const ADMISSION_POLICY_KINDS: [&str; 4] = [
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
];

/// The chart's in-tree objects equal `policy export` of the chart's own policy file, with the
/// release's full name as prefix, for a spread of values.
#[test]
fn chart_in_tree_objects_equal_policy_export() {
    let Some(helm) = helm() else { return };
    let spread = [
        json!({}),
        json!({"policy": {"validation": {"action": "warn"}}}),
        json!({"policy": {"mutation": {"enabled": true, "storageClasses": ["z-fast", "a-fast", "z-fast"]}}}),
        json!({"policy": {"validation": {"action": "warn"}, "mutation": {
            "enabled": true, "storageClasses": ["fast"], "namespaces": ["shop", "db"],
            "excludeNamespaces": ["kube-system", "legacy"],
            "namespaceSelector": {"matchLabels": {"team": "db"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}}}}),
        json!({"policy": {"mutation": {"enabled": true, "storageClasses": ["fast"],
            "excludeNamespaces": []}}}),
        json!({"webhooks": {"mutating": {"keepOnReapply": false}},
               "policy": {"mutation": {"enabled": true, "storageClasses": ["fast"]}}}),
        json!({"fullnameOverride": "guard", "webhooks": {"mutating": {"keepOnReapply": false}}}),
    ];
    let mut compared = 0;
    for values in spread {
        for map in ["v1beta1", "v1"] {
            let mut values = values.clone();
            values["engine"] = json!({"mode": "inTree", "mutatingAdmissionPolicy": map});
            let docs = render(&helm, &values, &[]).unwrap_or_else(|e| panic!("{values}: {e}"));
            let policy = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap")
                .and_then(|d| d["data"]["policy.yaml"].as_str())
                .expect("the chart's policy ConfigMap")
                .to_owned();
            let mut from_chart: Vec<Value> = docs
                .iter()
                .filter(|d| {
                    ADMISSION_POLICY_KINDS.contains(&d["kind"].as_str().unwrap_or_default())
                })
                .cloned()
                .collect();
            for d in &mut from_chart {
                d["metadata"].as_object_mut().unwrap().remove("labels");
            }
            let fullname = values["fullnameOverride"].as_str().unwrap_or(FULLNAME);
            let keep = values["webhooks"]["mutating"]["keepOnReapply"]
                .as_bool()
                .unwrap_or(true)
                .to_string();
            let (mut exported, _) = export(
                &policy,
                &[
                    "--prefix",
                    fullname,
                    "--map-version",
                    map,
                    "--keep-on-reapply",
                    &keep,
                ],
            );
            // helm prints by kind; the export, each policy before its binding.
            let key = |o: &Value| (o["kind"].to_string(), o["metadata"]["name"].to_string());
            from_chart.sort_by_key(key);
            exported.sort_by_key(key);
            assert_eq!(
                names(&from_chart),
                names(&exported),
                "{values}: the chart and policy export print different objects"
            );
            for (chart, export) in from_chart.iter().zip(&exported) {
                assert_eq!(
                    chart, export,
                    "{values}: the chart's object differs from policy export"
                );
            }
            compared += from_chart.len();
        }
    }
    assert!(compared > 50, "{compared}");
}

/// The names of the ValidatingWebhookConfiguration's webhooks (none without one).
fn validating_hooks(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .flat_map(|d| d["webhooks"].as_array().cloned().unwrap_or_default())
        .map(|h| h["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// No validating webhook rule names a volume or a claim.
fn assert_no_volume_rules(docs: &[Value]) {
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ValidatingWebhookConfiguration")
    {
        let rules = d["webhooks"].to_string();
        assert!(!rules.contains("persistentvolume"), "{rules}");
    }
}

#[test]
fn auto_keeps_the_webhook_off_the_volume_update_path() {
    let Some(helm) = helm() else { return };
    let map = [
        "--api-versions",
        "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy",
    ];
    // The default install on a cluster that serves MutatingAdmissionPolicy: validation and M2
    // in-tree; the webhook runs for W2 alone (it needs the cluster's claims), so no volume or
    // claim write waits on it.
    let docs = render(&helm, &json!({}), &map).unwrap();
    assert_eq!(kinds(&docs), support::DEFAULT_INSTALL_KINDS);
    assert_eq!(validating_hooks(&docs), ["workloads.rwop-guard.dev"]);
    assert_no_volume_rules(&docs);
    // W2 off: no webhook at all.
    let docs = render(
        &helm,
        &json!({"policy": {"workloads": {"action": "off"}}}),
        &map,
    )
    .unwrap();
    assert_eq!(
        kinds(&docs),
        [
            "ConfigMap",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding",
        ]
    );
    let docs = render(&helm, &json!({}), &map).unwrap();
    let keep = docs
        .iter()
        .find(|d| d["kind"] == "MutatingAdmissionPolicy")
        .unwrap();
    assert_eq!(keep["apiVersion"], "admissionregistration.k8s.io/v1beta1");
    // v1 preferred when served.
    let docs = render(
        &helm,
        &json!({}),
        &[
            "--api-versions",
            "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
        ],
    )
    .unwrap();
    let keep = docs
        .iter()
        .find(|d| d["kind"] == "MutatingAdmissionPolicy")
        .unwrap();
    assert_eq!(keep["apiVersion"], "admissionregistration.k8s.io/v1");

    // Without MutatingAdmissionPolicy: M2 needs the webhook, only the mutating one, and it
    // sees no volume update but those re-applying [ReadWriteOnce].
    let docs = render(&helm, &json!({}), &[]).unwrap();
    let k = kinds(&docs);
    assert!(k.contains(&"Deployment".to_owned()), "{k:?}");
    assert_eq!(validating_hooks(&docs), ["workloads.rwop-guard.dev"]);
    assert_no_volume_rules(&docs);
    assert!(!k.contains(&"MutatingAdmissionPolicy".to_owned()), "{k:?}");
    let hooks = &docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap()["webhooks"];
    assert_eq!(hooks.as_array().unwrap().len(), 1);
    assert_eq!(hooks[0]["name"], "keep.rwop-guard.dev");

    // Mutation on: M1 needs cluster facts, so the webhook mutates; M2 and validation stay
    // in-tree.
    let docs = render(
        &helm,
        &json!({"policy": {"mutation": {"enabled": true}}}),
        &map,
    )
    .unwrap();
    assert_eq!(validating_hooks(&docs), ["workloads.rwop-guard.dev"]);
    let hooks = &docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap()["webhooks"];
    assert_eq!(hooks.as_array().unwrap().len(), 1);
    assert_eq!(hooks[0]["name"], "mutate.rwop-guard.dev");
    assert_eq!(
        docs.iter()
            .filter(|d| d["kind"] == "MutatingAdmissionPolicy")
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [format!("{FULLNAME}-keep")]
    );

    // scope=all asks for every write to reach rwop-guard: validation by the webhook.
    let docs = render(&helm, &json!({"webhooks": {"scope": "all"}}), &map).unwrap();
    let k = kinds(&docs);
    assert!(
        k.contains(&"ValidatingWebhookConfiguration".to_owned()),
        "{k:?}"
    );
    assert!(
        !k.contains(&"ValidatingAdmissionPolicy".to_owned()),
        "{k:?}"
    );
}

#[test]
fn webhook_mode_renders_no_admission_policy() {
    let Some(helm) = helm() else { return };
    let docs = render(
        &helm,
        &json!({"engine": {"mode": "webhook", "mutatingAdmissionPolicy": "v1"}}),
        &[],
    )
    .unwrap();
    let k = kinds(&docs);
    for kind in ADMISSION_POLICY_KINDS {
        assert!(!k.contains(&kind.to_owned()), "{k:?}");
    }
    assert!(
        k.contains(&"ValidatingWebhookConfiguration".to_owned()),
        "{k:?}"
    );
    assert!(k.contains(&"Deployment".to_owned()), "{k:?}");
}

#[test]
fn in_tree_mode_renders_no_webhook_and_refuses_what_needs_one() {
    let Some(helm) = helm() else { return };
    let in_tree = |extra: Value| {
        let mut v = json!({"engine": {"mode": "inTree", "mutatingAdmissionPolicy": "v1beta1"}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let docs = render(
        &helm,
        &in_tree(
            json!({"policy": {"mutation": {"enabled": true, "storageClasses": ["fast"]}},
                        "tls": {"mode": "certManager"}, "serviceMonitor": {"enabled": true},
                        "prometheusRule": {"enabled": true}, "networkPolicy": {"enabled": true},
                        "autoscaling": {"enabled": true}}),
        ),
        &[],
    )
    .unwrap();
    let k = kinds(&docs);
    assert!(
        k.iter()
            .all(|kind| kind == "ConfigMap" || ADMISSION_POLICY_KINDS.contains(&kind.as_str())),
        "{k:?}"
    );
    assert_eq!(k.len(), 9, "{k:?}");

    for (values, says) in [
        (
            json!({"policy": {"mutation": {"enabled": true}}}),
            "empty policy.mutation.storageClasses",
        ),
        (
            json!({"policy": {"mutation": {"enabled": true, "storageClasses": ["fast"],
                                           "provisioners": {"allow": ["kubernetes.io/gce-pd"]}}}}),
            "policy.mutation.provisioners",
        ),
        (json!({"webhooks": {"scope": "all"}}), "webhooks.scope=all"),
        (
            json!({"engine": {"mode": "inTree", "mutatingAdmissionPolicy": "auto"}}),
            "webhooks.mutating.keepOnReapply, which needs MutatingAdmissionPolicy",
        ),
    ] {
        let err = render(&helm, &in_tree(values.clone()), &[]).unwrap_err();
        assert!(
            err.contains("engine.mode=inTree: the values ask for") && err.contains(says),
            "{values}: {err}"
        );
    }
}
