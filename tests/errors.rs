//! Errors as the commands print them: each cause once, with what to do.

use rwop_test_support as support;

use support::binary::run;

/// `needle` occurs in `haystack` exactly once.
fn once(haystack: &str, needle: &str) -> bool {
    haystack.matches(needle).count() == 1
}

#[test]
fn a_missing_policy_file_is_said_once() {
    let r = run(
        &[
            "serve",
            "--dev",
            "--listen=127.0.0.1:0",
            "--metrics-listen=127.0.0.1:0",
            "--config",
            "/nonexistent/policy.yaml",
        ],
        b"",
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("cannot read policy file /nonexistent/policy.yaml: No such file or directory (os error 2)"),
        "{}",
        r.stderr
    );
    assert!(once(&r.stderr, "No such file or directory"), "{}", r.stderr);
}

#[test]
fn a_truncated_review_is_said_once() {
    let r = run(
        &["review", "--webhook", "validate"],
        br#"{"apiVersion": "admission.k8s.io/v1", "#,
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("body is not valid JSON: EOF while parsing"),
        "{}",
        r.stderr
    );
    assert!(once(&r.stderr, "EOF while parsing"), "{}", r.stderr);
}

#[test]
fn an_undecodable_object_is_said_once() {
    let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "", "version": "v1", "kind": "PersistentVolume"},
        "resource": {"group": "", "version": "v1", "resource": "persistentvolumes"},
        "operation": "CREATE", "userInfo": {"username": "me"},
        "object": {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "x"},
                   "spec": {"accessModes": "ReadWriteOnce"}}}}"#;
    let r = run(&["review", "--webhook", "validate"], body);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("the PersistentVolume in request \"u1\" does not decode: invalid type"),
        "{}",
        r.stderr
    );
    assert!(once(&r.stderr, "invalid type"), "{}", r.stderr);
}

#[test]
fn an_unreadable_kubeconfig_is_said_once() {
    let r = run(&["scan", "--kubeconfig", "/nonexistent/kubeconfig"], b"");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("rwop-guard scan: cannot read kubeconfig /nonexistent/kubeconfig: "),
        "{}",
        r.stderr
    );
    assert!(once(&r.stderr, "No such file or directory"), "{}", r.stderr);
}

#[test]
fn a_bad_tls_key_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    assert_eq!(run(&["certs", "--out", out], b"").code, 0);
    let key = dir.path().join("not-a-key.pem");
    std::fs::write(&key, "not a key\n").unwrap();
    let cert = dir.path().join("tls.crt");
    let serve = |key: &str| {
        run(
            &[
                "serve",
                "--no-cluster",
                "--listen=127.0.0.1:0",
                "--metrics-listen=127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key,
            ],
            b"",
        )
    };
    let r = serve(key.to_str().unwrap());
    assert_eq!(r.code, 1, "{}", r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("rwop-guard serve: "))
        .unwrap_or_default();
    assert_eq!(
        line, "rwop-guard serve: TLS: private key: no usable PEM private key: no items found",
        "{}",
        r.stderr
    );
    let missing = serve("/nonexistent/tls.key");
    assert!(
        once(&missing.stderr, "No such file or directory"),
        "{}",
        missing.stderr
    );
}
