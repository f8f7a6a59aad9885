//! Real AdmissionReviews captured from a kube-apiserver, through the library and through
//! `rwop-guard review`, with the expected decision written down per file.

use rwop_test_support as support;

use std::collections::BTreeMap;

use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use proptest::prelude::*;
use rwop_guard::admission::{ReviewError, Webhook, review};
use rwop_guard::policy::{AccessModes, ClusterFacts, Facts, Policy, StorageClassFacts};
use serde_json::{Value, json};

use support::fixtures::admission as fixture;

const MUTATING_POLICY: &str = "mutation:\n  enabled: true\n  storageClasses: [fast-csi]\n";

fn mutating_policy() -> Policy {
    Policy::from_yaml(MUTATING_POLICY, "test").unwrap()
}

/// What a fixture must get: outcome, a fragment of the denial message, the number of warnings.
struct Expect {
    file: &'static str,
    webhook: Webhook,
    mutating: bool,
    outcome: &'static str,
    message: Option<&'static str>,
    warnings: usize,
}

const fn e(
    file: &'static str,
    webhook: Webhook,
    outcome: &'static str,
    message: Option<&'static str>,
    warnings: usize,
) -> Expect {
    Expect {
        file,
        webhook,
        mutating: false,
        outcome,
        message,
        warnings,
    }
}

const fn m(file: &'static str, outcome: &'static str, warnings: usize) -> Expect {
    Expect {
        file,
        webhook: Webhook::Mutate,
        mutating: true,
        outcome,
        message: None,
        warnings,
    }
}

use Webhook::{Mutate as M, Validate as V};

const V2_RWX_RWOP: &str = "PersistentVolume \"pv-rwx\": access mode change [ReadWriteMany] -> [ReadWriteOncePod] is not allowed";
const V2_RWOP_RWX: &str = "PersistentVolume \"pv-rwo\": access mode change [ReadWriteOncePod] -> [ReadWriteMany] is not allowed";

/// Every file in the capture directory, as each webhook would answer it under the default policy,
/// plus the mutating webhook under a policy that enables mutation for `fast-csi`.
const EXPECTED: &[Expect] = &[
    e("01-pvc-create-rwo.pvc.mutate.json", M, "allowed", None, 0),
    e("01-pvc-create-rwo.pvc.validate.json", V, "allowed", None, 0),
    e("02-pvc-create-rwop.pvc.mutate.json", M, "allowed", None, 0),
    e(
        "02-pvc-create-rwop.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "03-pvc-create-rwop+rwo-rejected-by-apiserver.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "04-pv-create-rwo-hostpath.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "04-pv-create-rwo-hostpath.pv.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "05-pv-patch-rwo-to-rwop.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    // The allowed change, on a hostPath volume: W1 warns that RWOP needs CSI.
    e(
        "05-pv-patch-rwo-to-rwop.pv.validate.json",
        V,
        "warned",
        None,
        1,
    ),
    e("06a-pv-create-rwx.pv.mutate.json", M, "allowed", None, 0),
    e("06a-pv-create-rwx.pv.validate.json", V, "allowed", None, 0),
    e(
        "06b-pv-patch-rwx-to-rwop.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "06b-pv-patch-rwx-to-rwop.pv.validate.json",
        V,
        "denied",
        Some(V2_RWX_RWOP),
        0,
    ),
    e(
        "06e-pv-apply-manifest-change-rwop-to-rwx.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "06e-pv-apply-manifest-change-rwop-to-rwx.pv.validate.json",
        V,
        "denied",
        Some(V2_RWOP_RWX),
        0,
    ),
    e(
        "07-pvc-dryrun-server-create.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "07-pvc-dryrun-server-create.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "07b-pvc-dryrun-server-create-rwop+rwo.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "08-pvc-server-side-apply-create.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "08-pvc-server-side-apply-create.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e("09-pvc-label-update.pvc.mutate.json", M, "allowed", None, 0),
    e(
        "09-pvc-label-update.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "10-pvc-resize-unbound.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e("16-pvc-delete.pvc.mutate.json", M, "allowed", None, 0),
    e("16-pvc-delete.pvc.validate.json", V, "allowed", None, 0),
    e("17-pv-delete.pv.mutate.json", M, "allowed", None, 0),
    e("17-pv-delete.pv.validate.json", V, "allowed", None, 0),
    e(
        "19b-kcm-auto-binding-pvc-rwo-to-pre-pv-rwo.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "19b-kcm-auto-binding-pvc-rwo-to-pre-pv-rwo.pv.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "19b-kcm-auto-binding-pvc-rwo-to-pre-pv-rwo.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "19b-kcm-auto-binding-pvc-rwo-to-pre-pv-rwo.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "20-bind-test-create-sc-csi-pv-rwop-pvc-with-volumeName.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "20-bind-test-create-sc-csi-pv-rwop-pvc-with-volumeName.pv.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "20-bind-test-create-sc-csi-pv-rwop-pvc-with-volumeName.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "20-bind-test-create-sc-csi-pv-rwop-pvc-with-volumeName.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "21-kcm-binding-pvc-bind-rwop-background.pv.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "21-kcm-binding-pvc-bind-rwop-background.pv.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "21-kcm-binding-pvc-bind-rwop-background.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "21-kcm-binding-pvc-bind-rwop-background.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "22-pvc-resize-bound-expandable-sc.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "22-pvc-resize-bound-expandable-sc.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "23-pvc-bound-patch-accessmodes-rwop-to-rwo.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "28-after-restart-pvc-dryrun-server-create.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "28-after-restart-pvc-dryrun-server-create.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    e(
        "31-pvc-create-no-sc-default-class-filled.pvc.mutate.json",
        M,
        "allowed",
        None,
        0,
    ),
    e(
        "31-pvc-create-no-sc-default-class-filled.pvc.validate.json",
        V,
        "allowed",
        None,
        0,
    ),
    // Mutation enabled for fast-csi, no cluster facts:
    m(
        "31-pvc-create-no-sc-default-class-filled.pvc.mutate.json",
        "mutated",
        1,
    ),
    m("01-pvc-create-rwo.pvc.mutate.json", "allowed", 0), // no class, default unknown
    m("02-pvc-create-rwop.pvc.mutate.json", "allowed", 0),
    m(
        "03-pvc-create-rwop+rwo-rejected-by-apiserver.pvc.mutate.json",
        "allowed",
        0,
    ),
    m("09-pvc-label-update.pvc.mutate.json", "allowed", 0), // UPDATE
    m(
        "20-bind-test-create-sc-csi-pv-rwop-pvc-with-volumeName.pvc.mutate.json",
        "allowed",
        0,
    ),
    m("05-pv-patch-rwo-to-rwop.pv.mutate.json", "allowed", 0), // PVs are never mutated
];

fn run_library(x: &Expect) -> Value {
    let policy = if x.mutating {
        mutating_policy()
    } else {
        Policy::default()
    };
    let reviewed = review(x.webhook, &policy, &Facts::default(), &fixture(x.file))
        .unwrap_or_else(|e| panic!("{}: {e}", x.file));
    assert_eq!(reviewed.summary.outcome, x.outcome, "{}", x.file);
    serde_json::from_slice(&reviewed.body).unwrap()
}

fn check_response(x: &Expect, out: &Value) {
    let request: Value = serde_json::from_slice(&fixture(x.file)).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{}", x.file);
    assert_eq!(out["kind"], "AdmissionReview", "{}", x.file);
    let resp = &out["response"];
    assert_eq!(
        resp["uid"], request["request"]["uid"],
        "{}: uid must be echoed",
        x.file
    );
    assert_eq!(resp["allowed"], x.outcome != "denied", "{}", x.file);
    match x.message {
        Some(fragment) => {
            let msg = resp["status"]["message"].as_str().unwrap();
            assert!(msg.starts_with(fragment), "{}: {msg}", x.file);
            assert!(!msg.contains('\n'), "{}: message must be one line", x.file);
            assert_eq!(resp["status"]["code"], 403, "{}", x.file);
            assert_eq!(resp["status"]["reason"], "Forbidden", "{}", x.file);
            assert!(resp["auditAnnotations"]["v2"].is_string(), "{}", x.file);
        }
        None => assert!(resp["status"].get("code").is_none(), "{}", x.file),
    }
    let warnings = resp["warnings"].as_array().map_or(0, Vec::len);
    assert_eq!(warnings, x.warnings, "{}: {resp}", x.file);
    assert_eq!(
        resp.get("patch").is_some(),
        x.outcome == "mutated",
        "{}",
        x.file
    );
    assert_eq!(
        resp.get("patchType").is_some(),
        x.outcome == "mutated",
        "{}",
        x.file
    );
}

#[test]
fn every_fixture_is_listed() {
    let on_disk = support::fixtures::admission_names();
    let mut listed: Vec<String> = EXPECTED
        .iter()
        .filter(|x| !x.mutating)
        .map(|x| x.file.to_owned())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for x in EXPECTED.iter().filter(|x| !x.mutating) {
        let is_validate = x.file.ends_with(".validate.json");
        assert_eq!(
            x.webhook == V,
            is_validate,
            "{}: webhook must match the capture",
            x.file
        );
    }
}

#[test]
fn fixtures_through_the_library() {
    for x in EXPECTED {
        check_response(x, &run_library(x));
    }
}

fn run_binary(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let out = support::binary::run(args, stdin);
    (out.code, out.stdout, out.stderr)
}

#[test]
fn fixtures_through_the_binary_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, MUTATING_POLICY).unwrap();
    let policy_arg = policy_path.to_str().unwrap();
    for x in EXPECTED {
        let webhook = if x.webhook == V { "validate" } else { "mutate" };
        let mut args = vec!["review", "--webhook", webhook];
        if x.mutating {
            args.extend(["--config", policy_arg]);
        }
        let (code, stdout, stderr) = run_binary(&args, &fixture(x.file));
        assert_eq!(code, 0, "{}: {stderr}", x.file);
        let out: Value = serde_json::from_str(&stdout).unwrap();
        check_response(x, &out);
        assert_eq!(out, run_library(x), "{}", x.file);
    }
}

#[test]
fn validate_webhook_denies_what_the_api_server_also_rejects() {
    // The API server rejects these before the validating phase; the webhook agrees if asked.
    for (file, rule) in [
        (
            "03-pvc-create-rwop+rwo-rejected-by-apiserver.pvc.mutate.json",
            "v1",
        ),
        (
            "07b-pvc-dryrun-server-create-rwop+rwo.pvc.mutate.json",
            "v1",
        ),
        (
            "23-pvc-bound-patch-accessmodes-rwop-to-rwo.pvc.mutate.json",
            "v2",
        ),
    ] {
        let r = review(V, &Policy::default(), &Facts::default(), &fixture(file)).unwrap();
        assert_eq!(r.summary.outcome, "denied", "{file}");
        let out: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            out["response"]["auditAnnotations"][rule].is_string(),
            "{file}: {out}"
        );
    }
}

#[test]
fn dry_run_gets_the_same_decision() {
    let normal = review(
        M,
        &mutating_policy(),
        &Facts::default(),
        &fixture("31-pvc-create-no-sc-default-class-filled.pvc.mutate.json"),
    )
    .unwrap();
    let mut dry: Value = serde_json::from_slice(&fixture(
        "31-pvc-create-no-sc-default-class-filled.pvc.mutate.json",
    ))
    .unwrap();
    dry["request"]["dryRun"] = json!(true);
    let dry = review(
        M,
        &mutating_policy(),
        &Facts::default(),
        &serde_json::to_vec(&dry).unwrap(),
    )
    .unwrap();
    assert!(dry.summary.dry_run);
    assert_eq!(normal.body, dry.body);
}

// ---- The patch on the wire ----------------------------------------------------------------

/// Decodes the base64 patch of a response and applies it to the request's object.
fn apply_wire_patch(request: &Value, response_body: &[u8]) -> (Value, Value) {
    let out: Value = serde_json::from_slice(response_body).unwrap();
    let resp = &out["response"];
    assert_eq!(resp["patchType"], "JSONPatch");
    let encoded = resp["patch"]
        .as_str()
        .expect("patch must be a base64 string on the wire");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = request["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    (object, out)
}

fn assert_mutated_claim(object: Value, original_annotations: usize) {
    let claim: PersistentVolumeClaim = serde_json::from_value(object).unwrap();
    let spec = claim.spec.unwrap();
    assert_eq!(
        spec.access_modes.unwrap(),
        vec!["ReadWriteOncePod".to_owned()]
    );
    let annotations = claim.metadata.annotations.unwrap();
    assert_eq!(
        annotations
            .get("rwop-guard.dev/mutated-from")
            .map(String::as_str),
        Some("ReadWriteOnce")
    );
    assert_eq!(
        annotations.len(),
        original_annotations + 1,
        "existing annotations are kept"
    );
}

#[test]
fn patch_is_base64_and_yields_a_valid_rwop_claim_with_annotations() {
    let body = fixture("31-pvc-create-no-sc-default-class-filled.pvc.mutate.json");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let r = review(M, &mutating_policy(), &Facts::default(), &body).unwrap();
    let (object, out) = apply_wire_patch(&request, &r.body);
    assert_mutated_claim(object, 1);
    assert_eq!(
        out["response"]["auditAnnotations"]["mutation"],
        "ReadWriteOnce -> ReadWriteOncePod"
    );
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("PersistentVolumeClaim \"shop/orders-db\": access modes changed")
    );
}

#[test]
fn patch_yields_a_valid_rwop_claim_without_annotations() {
    let mut request: Value = serde_json::from_slice(&fixture(
        "31-pvc-create-no-sc-default-class-filled.pvc.mutate.json",
    ))
    .unwrap();
    request["request"]["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let body = serde_json::to_vec(&request).unwrap();
    let r = review(M, &mutating_policy(), &Facts::default(), &body).unwrap();
    let (object, _) = apply_wire_patch(&request, &r.body);
    assert_mutated_claim(object, 0);
}

// ---- Unusable input ----------------------------------------------------------------------

#[test]
fn unusable_reviews_say_what_is_wrong() {
    let valid: Value =
        serde_json::from_slice(&fixture("01-pvc-create-rwo.pvc.validate.json")).unwrap();
    let mut no_request = valid.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut v1beta1 = valid.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut bad_object = valid.clone();
    bad_object["request"]["object"]["spec"]["accessModes"] = json!(5);
    let mut bad_operation = valid.clone();
    bad_operation["request"]["operation"] = json!("PATCH");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "body is not valid JSON"),
        (b"{\"kind\":".to_vec(), "body is not valid JSON"),
        (b"<html>".to_vec(), "body is not valid JSON"),
        (b"[]".to_vec(), "body is not an AdmissionReview"),
        (
            b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}".to_vec(),
            "expected apiVersion admission.k8s.io/v1",
        ),
        (
            serde_json::to_vec(&v1beta1).unwrap(),
            "\"admission.k8s.io/v1beta1\"",
        ),
        (
            serde_json::to_vec(&no_request).unwrap(),
            "AdmissionReview has no request",
        ),
        (
            serde_json::to_vec(&bad_object).unwrap(),
            "the PersistentVolumeClaim in request \"2b398f2d-a1cc-423e-ae0a-85ac055d2dda\" does not decode",
        ),
        (serde_json::to_vec(&bad_operation).unwrap(), "PATCH"),
    ];
    for (body, expected) in cases {
        let err = review(V, &Policy::default(), &Facts::default(), &body).unwrap_err();
        assert!(err.is_client_error());
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
        let (code, stdout, stderr) = run_binary(&["review", "--webhook", "validate"], &body);
        assert_eq!(code, 2, "{expected}");
        assert!(stdout.is_empty());
        assert!(
            stderr.contains(expected),
            "stderr {stderr:?} should contain {expected}"
        );
    }
}

#[test]
fn other_kinds_are_allowed_untouched() {
    let mut review_json: Value =
        serde_json::from_slice(&fixture("01-pvc-create-rwo.pvc.mutate.json")).unwrap();
    review_json["request"]["kind"] =
        json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    review_json["request"]["object"] = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"whatever": [1, 2]}});
    let body = serde_json::to_vec(&review_json).unwrap();
    for webhook in [V, M] {
        let r = review(webhook, &mutating_policy(), &Facts::default(), &body).unwrap();
        let out: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        assert_eq!(out["response"]["uid"], review_json["request"]["uid"]);
    }
}

#[test]
fn unreadable_policy_is_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "validation:\n  action: block\n").unwrap();
    let body = fixture("01-pvc-create-rwo.pvc.validate.json");
    let (code, _, stderr) = run_binary(
        &[
            "review",
            "--webhook",
            "validate",
            "--config",
            bad.to_str().unwrap(),
        ],
        &body,
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("validation.action"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.yaml");
    let (code, _, stderr) = run_binary(
        &[
            "review",
            "--webhook",
            "validate",
            "--config",
            missing.to_str().unwrap(),
        ],
        &body,
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read policy file") && stderr.contains("missing.yaml"),
        "{stderr}"
    );
}

// ---- The decoder never panics ----------------------------------------------------------------

fn all_fixture_bodies() -> Vec<Vec<u8>> {
    EXPECTED
        .iter()
        .filter(|x| !x.mutating)
        .map(|x| fixture(x.file))
        .collect()
}

fn review_both(body: &[u8]) -> Result<(), ReviewError> {
    for webhook in [V, M] {
        review(webhook, &mutating_policy(), &Facts::default(), body)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = review_both(&body);
    }

    #[test]
    fn damaged_fixtures_never_panic(
        index in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let bodies = all_fixture_bodies();
        let mut body = bodies[index.index(bodies.len())].clone();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        let _ = review_both(&body);
    }
}

/// Structurally valid reviews with arbitrary JSON in the object: decisions or clean errors.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z]{0,12}".prop_map(Value::from),
        Just(Value::from("ReadWriteOncePod")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("spec".to_owned()),
                    Just("accessModes".to_owned()),
                    Just("metadata".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_objects_never_panic(object in arbitrary_json(), old in arbitrary_json(), kind in prop_oneof![Just("PersistentVolume"), Just("PersistentVolumeClaim"), Just("Pod")]) {
        let mut r: Value = serde_json::from_slice(&fixture("05-pv-patch-rwo-to-rwop.pv.validate.json")).unwrap();
        r["request"]["kind"]["kind"] = json!(kind);
        r["request"]["object"] = object;
        r["request"]["oldObject"] = old;
        let _ = review_both(&serde_json::to_vec(&r).unwrap());
    }
}

// ---- What no rule reads does not change the answer -------------------------------------------

/// Policies and facts under which two bodies are compared: deny and warn, mutation with and
/// without cluster facts (a CSI default class, a known RWOP volume, labelled namespaces).
fn comparison_settings() -> Vec<(Policy, Facts)> {
    let with_selector = Policy::from_yaml(
        "mutation:\n  enabled: true\n  namespaceSelector:\n    matchLabels: {team: db}\n",
        "test",
    )
    .unwrap();
    let cluster = Facts {
        cluster: Some(ClusterFacts {
            storage_classes: [
                ("fast-csi".to_owned(), csi_class("ebs.csi.aws.com")),
                ("standard".to_owned(), csi_class("pd.csi.storage.gke.io")),
                ("old".to_owned(), csi_class("kubernetes.io/aws-ebs")),
            ]
            .into_iter()
            .collect(),
            default_storage_class: Some("standard".to_owned()),
            volumes: [(
                Arc::<str>::from("pv-rwop"),
                AccessModes::from_names(["ReadWriteOncePod"]),
            )]
            .into_iter()
            .collect(),
            namespaces: [
                (
                    Arc::<str>::from("default"),
                    Arc::new(BTreeMap::from([("team".into(), "db".into())])),
                ),
                (Arc::<str>::from("shop"), Arc::new(BTreeMap::new())),
            ]
            .into_iter()
            .collect(),
            ..ClusterFacts::default()
        }),
    };
    vec![
        (Policy::default(), Facts::default()),
        (
            Policy::from_yaml("validation:\n  action: warn\n", "test").unwrap(),
            Facts::default(),
        ),
        (mutating_policy(), Facts::default()),
        (mutating_policy(), cluster.clone()),
        (with_selector, cluster),
    ]
}

fn csi_class(provisioner: &str) -> StorageClassFacts {
    StorageClassFacts {
        provisioner: provisioner.to_owned(),
    }
}

/// Both bodies get the same bytes and the same log summary, or the same error.
fn assert_same_answer(a: &[u8], b: &[u8], settings: &[(Policy, Facts)], what: &str) {
    for webhook in [V, M] {
        for (i, (policy, facts)) in settings.iter().enumerate() {
            match (
                review(webhook, policy, facts, a),
                review(webhook, policy, facts, b),
            ) {
                (Ok(x), Ok(y)) => {
                    assert_eq!(
                        String::from_utf8_lossy(&x.body),
                        String::from_utf8_lossy(&y.body),
                        "{what}: {webhook} setting {i}"
                    );
                    assert_eq!(x.summary, y.summary, "{what}: {webhook} setting {i}");
                }
                (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string(), "{what}"),
                (x, y) => panic!(
                    "{what}: {webhook} setting {i}: {:?} but {:?}",
                    x.map(|r| r.summary),
                    y.map(|r| r.summary)
                ),
            }
        }
    }
}

#[test]
fn key_order_does_not_change_the_answer() {
    let settings = comparison_settings();
    for x in EXPECTED.iter().filter(|x| !x.mutating) {
        let body = fixture(x.file);
        // The API server writes request.kind before the objects; any other order answers alike.
        let mut reordered: Value = serde_json::from_slice(&body).unwrap();
        let request = reordered["request"].as_object_mut().unwrap();
        let kind = request.remove("kind").unwrap();
        request.insert("kind".to_owned(), kind);
        let reordered = serde_json::to_vec(&reordered).unwrap();
        assert_same_answer(&body, &reordered, &settings, x.file);
    }
}

/// Mostly the sets the rules treat specially, sometimes anything.
fn access_modes() -> impl Strategy<Value = Option<Vec<&'static str>>> {
    prop_oneof![
        3 => Just(Some(vec!["ReadWriteOnce"])),
        3 => Just(Some(vec!["ReadWriteOncePod"])),
        1 => Just(None),
        2 => proptest::option::of(proptest::collection::vec(
            prop_oneof![
                Just("ReadWriteOnce"),
                Just("ReadWriteOncePod"),
                Just("ReadWriteMany"),
                Just("ReadOnlyMany"),
                Just("Sideways"),
            ],
            0..3,
        )),
    ]
}

/// A PersistentVolume or claim with every field a rule reads present or absent, our annotations
/// among others, and the bulky fields no rule reads (which [`without_bulk`] takes out).
fn volume_or_claim(kind: &'static str) -> impl Strategy<Value = Value> {
    (
        access_modes(),
        proptest::option::of(proptest::collection::btree_map(
            prop_oneof![
                Just("rwop-guard.dev/mutate".to_owned()),
                Just("rwop-guard.dev/migration".to_owned()),
                Just("rwop-guard.dev/other".to_owned()),
                Just("kubectl.kubernetes.io/last-applied-configuration".to_owned()),
                "[a-z]{1,5}",
            ],
            prop_oneof![
                2 => Just("false".to_owned()),
                3 => Just(r#"{"target":"ReadWriteOnce","step":3}"#.to_owned()),
                1 => "[a-z\"\\\\]{0,8}",
            ],
            0..4,
        )),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        prop_oneof![Just(None), Just(Some("Delete")), Just(Some("Retain"))],
        prop_oneof![
            Just(None),
            Just(Some("")),
            Just(Some("fast-csi")),
            Just(Some("old")),
            Just(Some("pv-rwop")),
        ],
    )
        .prop_map(move |(modes, annotations, flags, policy_name, name)| {
            let (named, namespaced, bound, csi) = flags;
            let mut meta = json!({"uid": "u-1", "resourceVersion": "7", "labels": {"app": "db"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:accessModes": {}}}}]});
            if named {
                meta["name"] = json!("data-0");
            } else {
                meta["generateName"] = json!("data-");
            }
            if namespaced {
                meta["namespace"] = json!("shop");
            }
            if let Some(a) = annotations {
                meta["annotations"] = json!(a);
            }
            let mut spec = json!({"capacity": {"storage": "1Gi"}, "volumeMode": "Filesystem"});
            if let Some(modes) = modes {
                spec["accessModes"] = json!(modes);
            }
            if kind == "PersistentVolume" {
                if bound {
                    spec["claimRef"] = json!({"namespace": "shop", "name": "data-0", "uid": "c-1"});
                }
                if let Some(p) = policy_name {
                    spec["persistentVolumeReclaimPolicy"] = json!(p);
                }
                if csi {
                    spec["csi"] = json!({"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1",
                        "volumeAttributes": {"a": "b"}});
                } else {
                    spec["hostPath"] = json!({"path": "/data"});
                }
            } else {
                if let Some(n) = name {
                    if n == "pv-rwop" {
                        spec["volumeName"] = json!(n);
                    } else {
                        spec["storageClassName"] = json!(n);
                    }
                }
                if bound {
                    spec["selector"] = json!({"matchLabels": {"disk": "ssd"}});
                }
                spec["resources"] = json!({"requests": {"storage": "1Gi"}});
            }
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": spec,
                "status": {"phase": "Bound"}})
        })
}

fn generated_review() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just("PersistentVolume"), Just("PersistentVolumeClaim")]
        .prop_flat_map(|kind| {
            (
                Just(kind),
                volume_or_claim(kind),
                proptest::option::weighted(0.8, volume_or_claim(kind)),
                prop_oneof![2 => Just("CREATE"), 3 => Just("UPDATE"), 1 => Just("DELETE")],
                proptest::option::of(Just("shop")),
            )
        })
        .prop_map(|(kind, object, old, operation, namespace)| {
            let mut r: Value =
                serde_json::from_slice(&fixture("05-pv-patch-rwo-to-rwop.pv.validate.json"))
                    .unwrap();
            r["request"]["kind"]["kind"] = json!(kind);
            r["request"]["operation"] = json!(operation);
            r["request"]["object"] = object;
            r["request"]["oldObject"] = old.map_or(Value::Null, |o| o);
            if let Some(ns) = namespace {
                r["request"]["namespace"] = json!(ns);
            }
            serde_json::to_vec(&r).unwrap()
        })
}

/// The generated review without the fields [`volume_or_claim`] adds that no rule reads.
fn without_bulk(body: &[u8]) -> Vec<u8> {
    let mut r: Value = serde_json::from_slice(body).unwrap();
    for key in ["object", "oldObject"] {
        let Some(object) = r["request"].get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        object.remove("status");
        let meta = object["metadata"].as_object_mut().unwrap();
        for bulk in ["uid", "resourceVersion", "labels", "managedFields"] {
            meta.remove(bulk);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.retain(|k, _| k.starts_with("rwop-guard.dev/"));
        }
        let spec = object["spec"].as_object_mut().unwrap();
        for bulk in ["capacity", "volumeMode", "hostPath", "resources"] {
            spec.remove(bulk);
        }
        if let Some(csi) = spec.get_mut("csi").and_then(Value::as_object_mut) {
            csi.remove("volumeAttributes");
        }
    }
    serde_json::to_vec(&r).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn fields_no_rule_reads_do_not_change_the_answer(body in generated_review()) {
        let what = String::from_utf8_lossy(&body).into_owned();
        assert_same_answer(&body, &without_bulk(&body), &comparison_settings(), &what);
    }
}
