//! `rwop-guard check`: exit codes and output lines on good, bad, mixed and malformed input.

use rwop_test_support as support;

use std::path::Path;

use serde_json::Value;

const DIR: &str = "tests/fixtures/manifests";

use support::binary::Run;

fn check(args: &[&str], stdin: Option<&str>) -> Run {
    let args: Vec<&str> = std::iter::once("check")
        .chain(args.iter().copied())
        .collect();
    support::binary::run(&args, stdin.unwrap_or("").as_bytes())
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

const V1_DETAIL: &str =
    "combine ReadWriteOncePod with other modes; ReadWriteOncePod must be the only access mode";

#[test]
fn good_manifests_exit_0_silently() {
    let r = check(&["-f", &format!("{DIR}/good")], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr, "");
}

#[test]
fn bad_manifests_exit_1_one_line_per_finding() {
    let r = check(&["-f", &format!("{DIR}/bad/claims.yaml")], None);
    assert_eq!(r.code, 1);
    let l = lines(&r.stdout);
    assert_eq!(l.len(), 2, "{}", r.stdout);
    assert!(l[0].starts_with(&format!("{DIR}/bad/claims.yaml:1 PersistentVolumeClaim/shop/mixed-modes: access modes [ReadWriteOnce, ReadWriteOncePod] {V1_DETAIL}")), "{}", l[0]);
    assert!(l[1].starts_with(&format!("{DIR}/bad/claims.yaml:12 PersistentVolume/pv-mixed: access modes [ReadWriteMany, ReadWriteOncePod] {V1_DETAIL}")), "{}", l[1]);
}

#[test]
fn directories_are_walked_recursively_in_order_with_lists_and_statefulsets() {
    let r = check(
        &["-f", &format!("{DIR}/good"), &format!("{DIR}/mixed")],
        None,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let l = lines(&r.stdout);
    assert_eq!(l.len(), 2, "{}", r.stdout);
    // The item's own line in the List, not the document's.
    assert!(l[0].starts_with(&format!("{DIR}/mixed/list.json:11 PersistentVolumeClaim/-/listed-bad: access modes [ReadOnlyMany, ReadWriteOncePod]")), "{}", l[0]);
    assert!(l[1].starts_with(&format!("{DIR}/mixed/nested/sts.yml:1 StatefulSet/data/db: volumeClaimTemplate \"wal\": access modes [ReadWriteMany, ReadWriteOncePod]")), "{}", l[1]);
    assert!(!r.stdout.contains("notes.txt"));
}

#[test]
fn stdin_is_read_with_dash() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(DIR)
            .join("bad/claims.yaml"),
    )
    .unwrap();
    let r = check(&["-f", "-"], Some(&text));
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .starts_with("-:1 PersistentVolumeClaim/shop/mixed-modes: "),
        "{}",
        r.stdout
    );
    let r = check(
        &["-f", "-"],
        Some(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: a}\nspec: {accessModes: [ReadWriteOncePod]}\n",
        ),
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn malformed_input_exits_2_naming_file_and_document() {
    let r = check(&["-f", &format!("{DIR}/malformed.yaml")], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with(&format!("{DIR}/malformed.yaml:11: error: document 2: not valid YAML: while parsing a flow mapping")),
        "{}",
        r.stderr
    );

    let r = check(&["-f", &format!("{DIR}/undecodable.yaml")], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.starts_with(&format!(
            "{DIR}/undecodable.yaml:1: error: document 1: PersistentVolume does not decode"
        )),
        "{}",
        r.stderr
    );

    let r = check(&["-f", &format!("{DIR}/does-not-exist.yaml")], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("does-not-exist.yaml: error: cannot read"),
        "{}",
        r.stderr
    );
}

#[test]
fn unusable_input_wins_over_findings_but_findings_are_still_reported() {
    let r = check(
        &[
            "-f",
            &format!("{DIR}/bad"),
            &format!("{DIR}/malformed.yaml"),
        ],
        None,
    );
    assert_eq!(r.code, 2);
    assert_eq!(lines(&r.stdout).len(), 2);
    assert!(
        r.stderr.contains("malformed.yaml:11: error: document 2"),
        "{}",
        r.stderr
    );
}

#[test]
fn json_output_is_machine_readable() {
    let r = check(
        &[
            "-f",
            &format!("{DIR}/bad"),
            &format!("{DIR}/undecodable.yaml"),
            "--output",
            "json",
        ],
        None,
    );
    assert_eq!(r.code, 2);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0]["kind"], "PersistentVolumeClaim");
    assert_eq!(findings[0]["namespace"], "shop");
    assert_eq!(findings[0]["name"], "mixed-modes");
    assert_eq!(findings[0]["rule"], "V1");
    assert_eq!(findings[0]["document"], 1);
    assert_eq!(findings[0]["line"], 1);
    assert_eq!(findings[1]["document"], 2);
    assert_eq!(findings[1]["line"], 12);
    assert_eq!(findings[1]["namespace"], Value::Null);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["document"], 1);
    assert_eq!(errors[0]["line"], 1);
    assert!(
        errors[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("undecodable.yaml")
    );
}

#[test]
fn mutate_rewrites_claims_of_listed_classes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "mutation:\n  storageClasses: [fast-csi]\n").unwrap();
    let r = check(
        &[
            "-f",
            &format!("{DIR}/good/app.yaml"),
            "--mutate",
            "--config",
            policy.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&r.stdout).unwrap();
    assert_eq!(docs.len(), 4);
    let template = &docs[2]["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        template["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOncePod"])
    );
    assert_eq!(
        template["metadata"]["annotations"]["rwop-guard.dev/mutated-from"],
        "ReadWriteOnce"
    );
    // Untouched documents come out equal.
    assert_eq!(
        docs[1]["spec"]["accessModes"],
        serde_json::json!(["ReadWriteMany", "ReadOnlyMany"])
    );
    assert!(
        r.stderr.contains(
            "StatefulSet/shop/web volumeClaimTemplates[0]: mutated to [ReadWriteOncePod]"
        ),
        "{}",
        r.stderr
    );
    // A claim that already is [ReadWriteOncePod] gets no note.
    assert!(!r.stderr.contains("orders-db"), "{}", r.stderr);
    // A mutated StatefulSet template comes with the caveat that it cannot be changed in place.
    assert!(
        r.stderr.contains(
            "StatefulSet/shop/web: warning: volumeClaimTemplates cannot be changed on an existing \
             StatefulSet"
        ),
        "{}",
        r.stderr
    );

    // Without the class in the policy nothing changes, and the reason is given.
    let r = check(&["-f", &format!("{DIR}/good/app.yaml"), "--mutate"], None);
    assert_eq!(r.code, 0);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&r.stdout).unwrap();
    assert_eq!(
        docs[2]["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    assert!(
        r.stderr
            .contains("not mutated: storage class \"fast-csi\" is not in mutation.storageClasses"),
        "{}",
        r.stderr
    );
}

#[test]
fn mutate_sends_findings_to_stderr_and_keeps_stdout_yaml() {
    let r = check(&["-f", &format!("{DIR}/bad"), "--mutate"], None);
    assert_eq!(r.code, 1);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&r.stdout).unwrap();
    assert_eq!(docs.len(), 2);
    assert!(
        r.stderr.contains("PersistentVolume/pv-mixed: access modes"),
        "{}",
        r.stderr
    );
}

#[test]
fn no_paths_is_a_usage_error() {
    let r = check(&[], None);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--filename"), "{}", r.stderr);
}

#[test]
fn a_document_that_does_not_parse_does_not_hide_the_others() {
    let text = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: first, namespace: shop}\n\
                spec:\n  accessModes: [ReadWriteOncePod, ReadWriteMany]\n\
                ---\n\
                kind: [unclosed\n\
                --- # the third\n\
                apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: third}\n\
                spec:\n  accessModes: [ReadWriteOncePod, ReadOnlyMany]\n";
    let r = check(&["-f", "-"], Some(text));
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let l = lines(&r.stdout);
    assert_eq!(l.len(), 2, "{}", r.stdout);
    assert!(
        l[0].starts_with("-:1 PersistentVolumeClaim/shop/first: "),
        "{}",
        l[0]
    );
    assert!(l[1].starts_with("-:9 PersistentVolume/third: "), "{}", l[1]);
    assert!(
        r.stderr
            .starts_with("-:7: error: document 2: not valid YAML"),
        "{}",
        r.stderr
    );
}

#[test]
fn mutate_keeps_the_key_order_of_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "mutation:\n  storageClasses: [fast-csi]\n").unwrap();
    let text = "metadata:\n  name: data\n  namespace: shop\nkind: PersistentVolumeClaim\n\
                apiVersion: v1\nspec:\n  storageClassName: fast-csi\n  resources:\n    \
                requests: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n";
    let r = check(
        &["-f", "-", "--mutate", "--config", policy.to_str().unwrap()],
        Some(text),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let keys: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('-') && l.contains(':'))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["metadata", "kind", "apiVersion", "spec"],
        "{}",
        r.stdout
    );
    let spec_keys: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && !l.starts_with("  -"))
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    assert_eq!(
        spec_keys,
        [
            "name",
            "namespace",
            "annotations",
            "storageClassName",
            "resources",
            "accessModes"
        ],
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("-:1 PersistentVolumeClaim/shop/data: mutated"),
        "{}",
        r.stderr
    );
}
