//! Renders the Helm chart with the real `helm template` and checks what a cluster would get.
//!
//! helm and promtool are found, and skipped when missing (a failure when `CI` is set), by the
//! one rule of every suite: `support::tools` (`$HELM`/`$PROMTOOL`, the tools cache
//! `scripts/install-tools.sh` fills, `PATH`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use rwop_test_support as support;

use support::fake_apiserver::FakeApiServer;

const RELEASE: &str = "guard";
const NAMESPACE: &str = "rwop-system";
/// `<release>-<chart>`: the release name does not contain the chart name.
const FULLNAME: &str = "guard-rwop-guard";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rwop-guard")
}

fn helm() -> PathBuf {
    support::tools::found("helm")
}

/// Returns from the test (skipped, or failed under CI) unless every tool named can be run.
macro_rules! needs {
    ($($tool:literal),+) => { support::needs!("chart": $($tool),+) };
}

/// `helm template` with extra arguments; Ok(documents) or Err(helm's stderr).
fn try_render(args: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let output = Command::new(helm())
        .arg("template")
        .arg(RELEASE)
        .arg(&chart)
        .args(["--namespace", NAMESPACE])
        // These tests are about the webhook engine; tests/intree.rs renders the others.
        .args(["--set", "engine.mode=webhook"])
        .args(args)
        .output()
        .expect("failed to run helm");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let yaml = String::from_utf8(output.stdout).expect("helm printed non-UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("helm template output is not YAML: {e}\n{yaml}"));
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn render(args: &[&str]) -> Vec<Value> {
    try_render(args).unwrap_or_else(|stderr| panic!("helm template {args:?} failed:\n{stderr}"))
}

fn all_of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of_kind(docs, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

/// The first webhook of the configuration of `kind`: validate.rwop-guard.dev, or
/// mutate.rwop-guard.dev when mutation is enabled.
fn webhook<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let config = find(docs, kind);
    let hooks = config["webhooks"].as_array().expect("webhooks is a list");
    &hooks[0]
}

fn webhook_names(docs: &[Value], kind: &str) -> Vec<String> {
    all_of_kind(docs, kind)
        .iter()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .filter_map(|w| w["name"].as_str().map(str::to_owned))
        .collect()
}

fn container(docs: &[Value]) -> &Value {
    let containers = &find(docs, "Deployment")["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers.as_array().map(Vec::len),
        Some(1),
        "one container"
    );
    &containers[0]
}

fn json_arg(key: &str, value: &Value) -> String {
    format!("{key}={value}")
}

/// Standard base64 with padding (what Helm's b64enc and the API's caBundle use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A public CA certificate (its key was discarded) from the chart's CI values.
fn test_ca_pem() -> String {
    let text = std::fs::read_to_string(chart_dir().join("ci/secret-values.yaml")).unwrap();
    let values: Value = serde_saphyr::from_str(&text).unwrap();
    let pem = values["tls"]["caBundle"].as_str().unwrap().to_owned();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE-----"),
        "ci/secret-values.yaml holds a PEM"
    );
    pem
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

#[test]
fn base64_helper_matches_known_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

const MODES_CHANGE: &str = "has(object.spec.accessModes) != has(oldObject.spec.accessModes) || \
     (has(object.spec.accessModes) && (!object.spec.accessModes.all(m, m in oldObject.spec.accessModes) \
     || !oldObject.spec.accessModes.all(m, m in object.spec.accessModes)))";

fn condition_names(hook: &Value) -> Vec<&str> {
    hook["matchConditions"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn validating_webhook_reviews_only_volume_access_mode_changes() {
    needs!("helm");
    let docs = render(&[]);
    let hook = webhook(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(hook["name"], "validate.rwop-guard.dev");
    assert_eq!(
        hook["rules"],
        json!([
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
             "resources": ["persistentvolumes"], "scope": "Cluster"},
        ])
    );
    // The CEL the real API server compiles and runs is exercised by the end-to-end suite.
    assert_eq!(
        hook["matchConditions"],
        json!([{"name": "rwop-guard-access-modes-change", "expression": MODES_CHANGE}])
    );
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["matchPolicy"], "Equivalent");
    assert_eq!(hook["timeoutSeconds"], 5);
    assert_eq!(
        hook["clientConfig"]["service"],
        json!({"name": FULLNAME, "namespace": NAMESPACE, "port": 443, "path": "/validate"})
    );
    assert_eq!(
        webhook_names(&docs, "ValidatingWebhookConfiguration"),
        ["validate.rwop-guard.dev", "workloads.rwop-guard.dev"]
    );
    // Mutation is off by default, and so is its webhook; the re-apply one is on.
    assert_eq!(
        webhook_names(&docs, "MutatingWebhookConfiguration"),
        ["keep.rwop-guard.dev"]
    );
    let docs = render(&["--set", "webhooks.mutating.keepOnReapply=false"]);
    assert!(all_of_kind(&docs, "MutatingWebhookConfiguration").is_empty());
    let docs = render(&["--set", "policy.mutation.enabled=true"]);
    assert_eq!(
        webhook_names(&docs, "MutatingWebhookConfiguration"),
        ["mutate.rwop-guard.dev", "keep.rwop-guard.dev"]
    );
}

#[test]
fn keep_webhook_sees_only_updates_sending_rwo_over_what_rwop_guard_changed() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "policy.mutation.enabled=true",
        "--set-json",
        r#"policy.mutation.namespaces=["team-a"]"#,
    ]);
    let config = find(&docs, "MutatingWebhookConfiguration");
    let keep = &config["webhooks"][1];
    assert_eq!(keep["name"], "keep.rwop-guard.dev");
    assert_eq!(
        keep["rules"],
        json!([
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
             "resources": ["persistentvolumeclaims"], "scope": "Namespaced"},
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
             "resources": ["persistentvolumes"], "scope": "Cluster"},
        ])
    );
    assert_eq!(keep["clientConfig"]["service"]["path"], "/mutate");
    // Not narrowed by the policy's namespaces: a migrated claim may be anywhere.
    assert_eq!(
        keep["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": ["kube-system", NAMESPACE]}]})
    );
    assert_eq!(
        condition_names(keep),
        [
            "rwop-guard-reapplies-read-write-once",
            "rwop-guard-was-read-write-once-pod",
            "rwop-guard-changed-by-rwop-guard"
        ]
    );
}

#[test]
fn scope_all_reviews_every_pv_and_pvc_write() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "webhooks.scope=all",
        "--set",
        "policy.mutation.enabled=true",
    ]);
    let hook = webhook(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(
        hook["rules"],
        json!([
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["persistentvolumes"], "scope": "Cluster"},
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
             "resources": ["persistentvolumeclaims"], "scope": "Namespaced"},
        ])
    );
    assert!(hook.get("matchConditions").is_none(), "{hook}");
    for hook in find(&docs, "MutatingWebhookConfiguration")["webhooks"]
        .as_array()
        .unwrap()
    {
        assert!(hook.get("matchConditions").is_none(), "{hook}");
    }

    let err = try_render(&["--set", "webhooks.scope=some"]).unwrap_err();
    assert!(
        err.contains("scope"),
        "the schema names the bad value: {err}"
    );
}

#[test]
fn namespace_selector_skips_kube_system_and_release_namespace() {
    needs!("helm");
    let default_docs = render(&[]);
    let selector = &webhook(&default_docs, "ValidatingWebhookConfiguration")["namespaceSelector"];
    assert_eq!(
        selector,
        &json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": ["kube-system", NAMESPACE]}]})
    );

    let docs = render(&[
        "--set-json",
        r#"webhooks.excludeNamespaces=["monitoring","kube-system"]"#,
        "--set",
        "policy.mutation.enabled=true",
        "--set-json",
        r#"policy.mutation.excludeNamespaces=["legacy"]"#,
    ]);
    let validating = &webhook(&docs, "ValidatingWebhookConfiguration")["namespaceSelector"];
    assert_eq!(
        strings(&validating["matchExpressions"][0]["values"]),
        ["kube-system", NAMESPACE, "monitoring"],
        "user exclusions are added once, after the fixed ones"
    );
    let mutating = &webhook(&docs, "MutatingWebhookConfiguration")["namespaceSelector"];
    assert_eq!(mutating["matchExpressions"][0]["operator"], "NotIn");
    assert_eq!(
        strings(&mutating["matchExpressions"][0]["values"]),
        ["kube-system", NAMESPACE, "monitoring", "legacy"],
        "the policy's excluded namespaces also narrow the mutating webhook"
    );
}

#[test]
fn mutating_webhook_only_sees_pvc_create() {
    needs!("helm");
    let docs = render(&["--set", "policy.mutation.enabled=true"]);
    let hook = webhook(&docs, "MutatingWebhookConfiguration");
    assert_eq!(hook["name"], "mutate.rwop-guard.dev");
    assert_eq!(
        hook["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["persistentvolumeclaims"], "scope": "Namespaced"}])
    );
    assert_eq!(hook["reinvocationPolicy"], "Never");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(hook["clientConfig"]["service"]["name"], FULLNAME);
    assert_eq!(
        condition_names(hook),
        [
            "rwop-guard-asks-for-read-write-once",
            "rwop-guard-not-opted-out"
        ]
    );
}

#[test]
fn mutating_webhook_follows_policy_namespaces() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "policy.mutation.enabled=true",
        "--set-json",
        r#"policy.mutation.namespaces=["team-a","team-b"]"#,
        "--set-json",
        r#"policy.mutation.namespaceSelector={"matchLabels":{"adopt":"yes"},"matchExpressions":[{"key":"tier","operator":"Exists"}]}"#,
    ]);
    let selector = &webhook(&docs, "MutatingWebhookConfiguration")["namespaceSelector"];
    assert_eq!(selector["matchLabels"], json!({"adopt": "yes"}));
    let expressions = selector["matchExpressions"].as_array().unwrap();
    assert_eq!(expressions.len(), 3, "{selector}");
    assert_eq!(
        expressions[1],
        json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]})
    );
    assert_eq!(expressions[2], json!({"key": "tier", "operator": "Exists"}));
}

#[test]
fn failure_policy_defaults_and_overrides() {
    needs!("helm");
    let docs = render(&["--set", "policy.mutation.enabled=true"]);
    assert_eq!(
        webhook(&docs, "ValidatingWebhookConfiguration")["failurePolicy"],
        "Fail"
    );
    assert_eq!(
        webhook(&docs, "MutatingWebhookConfiguration")["failurePolicy"],
        "Ignore"
    );

    let docs = render(&[
        "--set",
        "policy.mutation.enabled=true",
        "--set",
        "webhooks.validating.failurePolicy=Ignore",
        "--set",
        "webhooks.mutating.failurePolicy=Fail",
        "--set",
        "webhooks.validating.timeoutSeconds=12",
        "--set",
        "webhooks.mutating.timeoutSeconds=2",
    ]);
    let validating = webhook(&docs, "ValidatingWebhookConfiguration");
    let mutating = webhook(&docs, "MutatingWebhookConfiguration");
    assert_eq!(validating["failurePolicy"], "Ignore");
    assert_eq!(mutating["failurePolicy"], "Fail");
    assert_eq!(validating["timeoutSeconds"], 12);
    assert_eq!(mutating["timeoutSeconds"], 2);

    let err = try_render(&["--set", "webhooks.validating.failurePolicy=Sometimes"]).unwrap_err();
    assert!(
        err.contains("failurePolicy"),
        "the schema names the bad value: {err}"
    );
}

#[test]
fn match_conditions_come_from_values() {
    needs!("helm");
    let validating = json!([{"name": "not-kcm",
                             "expression": "request.userInfo.username != 'system:kube-controller-manager'"}]);
    let mutating = json!([{"name": "only-labelled", "expression": "has(object.metadata.labels)"}]);
    let docs = render(&[
        "--set",
        "policy.mutation.enabled=true",
        "--set-json",
        &json_arg("webhooks.validating.matchConditions", &validating),
        "--set-json",
        &json_arg("webhooks.mutating.matchConditions", &mutating),
    ]);
    // Added after the chart's own conditions.
    assert_eq!(
        condition_names(webhook(&docs, "ValidatingWebhookConfiguration")),
        ["rwop-guard-access-modes-change", "not-kcm"]
    );
    assert_eq!(
        webhook(&docs, "ValidatingWebhookConfiguration")["matchConditions"][1],
        validating[0]
    );
    assert_eq!(
        condition_names(webhook(&docs, "MutatingWebhookConfiguration")),
        [
            "rwop-guard-asks-for-read-write-once",
            "rwop-guard-not-opted-out",
            "only-labelled"
        ]
    );
    // With scope "all", only the user's.
    let docs = render(&[
        "--set",
        "policy.mutation.enabled=true",
        "--set",
        "webhooks.scope=all",
        "--set-json",
        &json_arg("webhooks.validating.matchConditions", &validating),
        "--set-json",
        &json_arg("webhooks.mutating.matchConditions", &mutating),
    ]);
    assert_eq!(
        webhook(&docs, "ValidatingWebhookConfiguration")["matchConditions"],
        validating
    );
    assert_eq!(
        webhook(&docs, "MutatingWebhookConfiguration")["matchConditions"],
        mutating
    );
}

#[test]
fn helm_mode_ca_bundle_is_the_ca_of_the_rendered_secret() {
    needs!("helm");
    let docs = render(&["--set", "policy.mutation.enabled=true"]);
    let secret = find(&docs, "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], format!("{FULLNAME}-tls"));
    let ca = secret["data"]["ca.crt"]
        .as_str()
        .expect("ca.crt in the Secret");
    assert!(
        ca.starts_with(&base64(b"-----BEGIN CERTIFICATE-----")),
        "ca.crt is a PEM"
    );
    for key in ["tls.crt", "tls.key"] {
        assert!(
            secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} is set"
        );
    }
    assert_ne!(
        secret["data"]["tls.crt"], secret["data"]["ca.crt"],
        "serving cert is not the CA"
    );
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert_eq!(
            webhook(&docs, kind)["clientConfig"]["caBundle"],
            ca,
            "{kind} trusts the CA"
        );
        assert!(find(&docs, kind)["metadata"].get("annotations").is_none());
    }
    let volumes = &find(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0]["secret"]["secretName"],
        format!("{FULLNAME}-tls")
    );
    assert!(all_of_kind(&docs, "Certificate").is_empty());
}

/// The Secret an earlier install of the release left (with helm's ownership metadata): a CA and
/// a serving certificate rwop-guard generated.
fn existing_tls_secret() -> (Value, String) {
    let certs = rwop_guard::certs::generate(
        "earlier install",
        &[format!("{FULLNAME}.{NAMESPACE}.svc")],
        &[],
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let ca = base64(certs.ca_cert_pem.as_bytes());
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": format!("{FULLNAME}-tls"), "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": RELEASE,
                                     "meta.helm.sh/release-namespace": NAMESPACE}},
        "data": {"ca.crt": ca, "tls.crt": base64(certs.cert_pem.as_bytes()),
                 "tls.key": base64(certs.key_pem.as_bytes())}
    });
    (secret, ca)
}

/// `helm template --dry-run=server` against the fake API server, so that `lookup` reads it.
async fn render_against(fake: &FakeApiServer, extra: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = support::kubeconfig::write(dir.path(), &fake.url(), "default", "fake");
    let mut args: Vec<String> = [
        "--dry-run=server",
        // The fake serves no OpenAPI document; other tests validate the manifests.
        "--disable-openapi-validation",
        "--kubeconfig",
    ]
    .map(String::from)
    .to_vec();
    args.push(kubeconfig.display().to_string());
    args.extend(extra.iter().map(|a| a.to_string()));
    let rendered = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        try_render(&args)
    })
    .await
    .unwrap();
    match rendered {
        Ok(docs) => docs,
        Err(stderr) => panic!("helm failed: {stderr}\nrequests: {:#?}", fake.requests()),
    }
}

/// The CA both webhook configurations trust.
fn ca_bundles(docs: &[Value]) -> BTreeSet<String> {
    [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    .iter()
    .map(|kind| {
        webhook(docs, kind)["clientConfig"]["caBundle"]
            .as_str()
            .unwrap()
            .to_owned()
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_mode_keeps_the_certificate_the_cluster_has() {
    needs!("helm");
    let secrets = format!("/api/v1/namespaces/{NAMESPACE}/secrets");
    let mutation = ["--set", "policy.mutation.enabled=true"];

    // The release's Secret is there, as on `helm upgrade`: lookup reads it, the certificate is
    // kept, and both webhooks keep trusting its CA.
    let fake = FakeApiServer::start().await;
    let (secret, ca) = existing_tls_secret();
    fake.create(&secrets, secret.clone()).unwrap();
    let docs = render_against(&fake, &mutation).await;
    assert_eq!(find(&docs, "Secret")["data"], secret["data"]);
    assert_eq!(ca_bundles(&docs), BTreeSet::from([ca.clone()]));

    // No Secret yet (a first install), or one missing a key: a new CA, the same in the Secret and
    // in both webhooks.
    for existing in [None, Some("tls.key")] {
        let fake = FakeApiServer::start().await;
        if let Some(missing) = existing {
            let mut partial = secret.clone();
            partial["data"].as_object_mut().unwrap().remove(missing);
            fake.create(&secrets, partial).unwrap();
        }
        let docs = render_against(&fake, &mutation).await;
        let new_ca = find(&docs, "Secret")["data"]["ca.crt"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(new_ca, ca, "{existing:?}: a new CA");
        assert_eq!(ca_bundles(&docs), BTreeSet::from([new_ca]), "{existing:?}");
    }
}

#[test]
fn secret_mode_ca_bundle_is_base64_of_the_given_pem() {
    needs!("helm");
    let pem = test_ca_pem();
    let file =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-ca-{}.crt", std::process::id()));
    std::fs::write(&file, &pem).unwrap();
    let rendered = try_render(&[
        "--set",
        "tls.mode=secret",
        "--set",
        "tls.secretName=my-serving-cert",
        "--set",
        "policy.mutation.enabled=true",
        "--set-file",
        &format!("tls.caBundle={}", file.display()),
    ]);
    std::fs::remove_file(&file).ok();
    let docs = rendered.unwrap_or_else(|e| panic!("{e}"));
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        assert_eq!(
            webhook(&docs, kind)["clientConfig"]["caBundle"],
            base64(pem.as_bytes()),
            "{kind}"
        );
    }
    assert!(
        all_of_kind(&docs, "Secret").is_empty(),
        "the Secret is the user's, not the chart's"
    );
    let volumes = &find(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "my-serving-cert");

    // Already base64 (e.g. copied from a Secret's ca.crt): used as is, not encoded twice.
    let docs = render(&[
        "--set",
        "tls.mode=secret",
        "--set",
        "tls.secretName=my-serving-cert",
        "--set-json",
        &json_arg("tls.caBundle", &json!(base64(pem.as_bytes()))),
    ]);
    let hook = webhook(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(hook["clientConfig"]["caBundle"], base64(pem.as_bytes()));
}

#[test]
fn secret_mode_without_ca_bundle_or_secret_name_fails_clearly() {
    needs!("helm");
    let err = try_render(&["--set", "tls.mode=secret", "--set", "tls.secretName=x"]).unwrap_err();
    assert!(
        err.contains("tls.caBundle is required when tls.mode=secret"),
        "{err}"
    );
    assert!(
        err.contains("--set-file tls.caBundle="),
        "says how to pass it: {err}"
    );

    let pem = test_ca_pem();
    let err = try_render(&[
        "--set",
        "tls.mode=secret",
        "--set-json",
        &json_arg("tls.caBundle", &json!(pem)),
    ])
    .unwrap_err();
    assert!(
        err.contains("tls.secretName is required when tls.mode=secret"),
        "{err}"
    );

    let err = try_render(&[
        "--set",
        "tls.mode=secret",
        "--set",
        "tls.secretName=x",
        "--set",
        "tls.caBundle=not-a-certificate",
    ])
    .unwrap_err();
    assert!(
        err.contains("tls.caBundle must be a PEM certificate"),
        "{err}"
    );
}

#[test]
fn cert_manager_mode_injects_the_ca_and_sets_no_ca_bundle() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "tls.mode=certManager",
        "--set",
        "policy.mutation.enabled=true",
    ]);
    let serving = format!("{FULLNAME}-serving");
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let config = find(&docs, kind);
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!("{NAMESPACE}/{serving}"),
            "{kind}"
        );
        assert!(
            config["webhooks"][0]["clientConfig"]
                .get("caBundle")
                .is_none(),
            "{kind}"
        );
    }
    assert!(
        all_of_kind(&docs, "Secret").is_empty(),
        "cert-manager writes the Secret"
    );

    let certificates = all_of_kind(&docs, "Certificate");
    let cert = certificates
        .iter()
        .find(|c| c["metadata"]["name"] == serving)
        .expect("serving Certificate");
    assert_eq!(
        cert["spec"]["dnsNames"],
        json!([
            format!("{FULLNAME}.{NAMESPACE}.svc"),
            format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local")
        ])
    );
    assert_eq!(cert["spec"]["secretName"], format!("{FULLNAME}-tls"));
    let volumes = &find(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0]["secret"]["secretName"],
        cert["spec"]["secretName"]
    );

    // selfSigned Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
    let issuers = all_of_kind(&docs, "Issuer");
    assert_eq!(issuers.len(), 2);
    let self_signed = issuers
        .iter()
        .find(|i| i["spec"].get("selfSigned").is_some())
        .unwrap();
    let ca_issuer = issuers
        .iter()
        .find(|i| i["spec"].get("ca").is_some())
        .unwrap();
    let ca_cert = certificates
        .iter()
        .find(|c| c["spec"]["isCA"] == true)
        .expect("CA Certificate");
    assert_eq!(
        ca_cert["spec"]["issuerRef"]["name"],
        self_signed["metadata"]["name"]
    );
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca_cert["spec"]["secretName"]
    );
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        ca_issuer["metadata"]["name"]
    );

    // With an issuer of the user's, no chain of our own.
    let docs = render(&[
        "--set",
        "tls.mode=certManager",
        "--set-json",
        r#"tls.certManager.issuerRef={"name":"corp-ca","kind":"ClusterIssuer","group":"cert-manager.io"}"#,
    ]);
    assert!(all_of_kind(&docs, "Issuer").is_empty());
    let cert = find(&docs, "Certificate");
    assert_eq!(
        cert["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

#[test]
fn pods_are_hardened() {
    needs!("helm");
    let docs = render(&[]);
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "the webhook watches the API"
    );
    assert_eq!(pod["serviceAccountName"], FULLNAME);

    let security = &container(&docs)["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["runAsGroup"], 65532);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(security["capabilities"].get("add").is_none());
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
}

#[test]
fn container_runs_serve_with_whole_volume_mounts() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "logLevel=debug",
        "--set-json",
        r#"extraArgs=["--no-cluster"]"#,
    ]);
    let c = container(&docs);
    assert_eq!(
        c["image"], "rwop-guard:0.1.0",
        "default tag is the appVersion"
    );
    assert!(
        c.get("command").is_none(),
        "the image's entrypoint (rwop-guard serve) is kept"
    );
    assert_eq!(
        strings(&c["args"]),
        [
            "--tls-cert=/tls/tls.crt",
            "--tls-key=/tls/tls.key",
            "--config=/config/policy.yaml",
            "--log-format=json",
            "--request-timeout=4000ms",
            "--shutdown-delay=5s",
            "--no-cluster"
        ]
    );
    assert_eq!(c["env"][0], json!({"name": "RUST_LOG", "value": "debug"}));
    let mounts = c["volumeMounts"].as_array().unwrap();
    for (name, path) in [("tls", "/tls"), ("config", "/config")] {
        let mount = mounts.iter().find(|m| m["name"] == name).expect(name);
        assert_eq!(mount["mountPath"], path);
        assert_eq!(mount["readOnly"], true);
        assert!(
            mount.get("subPath").is_none(),
            "subPath would hide the ..data swap from {path}"
        );
    }
    let volumes = &find(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[1]["configMap"]["name"],
        format!("{FULLNAME}-policy")
    );
    let annotations = &find(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations.is_null(),
        "no checksum annotations: the pods hot-reload ({annotations})"
    );
}

#[test]
fn probes_and_ports() {
    needs!("helm");
    let docs = render(&[]);
    let c = container(&docs);
    assert_eq!(
        c["ports"],
        json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"},
               {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}])
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            c[probe]["httpGet"],
            json!({"path": path, "port": "metrics", "scheme": "HTTP"}),
            "{probe}"
        );
    }
    let service = find(&docs, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
               {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        service["spec"]["selector"],
        find(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn deployment_is_highly_available() {
    needs!("helm");
    let docs = render(&[]);
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "ScheduleAnyway"
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let resources = &container(&docs)["resources"];
    assert_eq!(
        resources["requests"],
        json!({"cpu": "20m", "memory": "64Mi"})
    );
    assert_eq!(resources["limits"]["memory"], "160Mi");
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(pod.get("priorityClassName").is_none());

    let docs = render(&["--set", "priorityClassName=system-cluster-critical"]);
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
}

#[test]
fn cluster_role_only_reads_what_the_caches_watch() {
    needs!("helm");
    let docs = render(&[]);
    let role = find(&docs, "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    let mut expected = BTreeSet::new();
    for resource in [
        "storage.k8s.io/storageclasses",
        "/persistentvolumes",
        "/namespaces",
        "/persistentvolumeclaims",
    ] {
        for verb in ["get", "list", "watch"] {
            expected.insert(format!("{resource}:{verb}"));
        }
    }
    // W2 and M1's look ahead: the workloads whose templates mount claims.
    for resource in [
        "apps/deployments",
        "apps/statefulsets",
        "apps/daemonsets",
        "apps/replicasets",
        "batch/jobs",
        "batch/cronjobs",
    ] {
        for verb in ["list", "watch"] {
            expected.insert(format!("{resource}:{verb}"));
        }
    }
    assert_eq!(granted, expected);

    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
    );
    assert!(all_of_kind(&docs, "Role").is_empty() && all_of_kind(&docs, "RoleBinding").is_empty());
}

fn rendered_policy(docs: &[Value]) -> Value {
    let configmap = find(docs, "ConfigMap");
    assert_eq!(configmap["metadata"]["name"], format!("{FULLNAME}-policy"));
    let text = configmap["data"]["policy.yaml"]
        .as_str()
        .expect("policy.yaml key");
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("policy.yaml is not YAML: {e}\n{text}"))
}

#[test]
fn policy_configmap_holds_the_values() {
    needs!("helm");
    // Defaults: exactly the `policy:` block of values.yaml.
    let values_text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let values: Value = serde_saphyr::from_str(&values_text).unwrap();
    assert_eq!(rendered_policy(&render(&[])), values["policy"]);
    assert_eq!(
        values["policy"],
        json!({
            "validation": {"action": "deny"},
            "mutation": {
                "enabled": false, "storageClasses": [], "namespaces": [],
                "excludeNamespaces": ["kube-system"], "namespaceSelector": {},
                "provisioners": {"allow": [], "deny": []}
            },
            "workloads": {"action": "warn"}
        })
    );

    let policy = json!({
        "validation": {"action": "warn"},
        "mutation": {
            "enabled": true,
            "storageClasses": ["fast-rwop", "csi-hostpath-sc"],
            "namespaces": ["team-a"],
            "excludeNamespaces": ["kube-system", "legacy"],
            "namespaceSelector": {
                "matchLabels": {"rwop-guard.dev/adopt": "true"},
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["frozen"]}]
            },
            "provisioners": {"allow": ["kubernetes.io/example"], "deny": ["nfs.csi.k8s.io"]}
        },
        "workloads": {"action": "deny"}
    });
    let docs = render(&["--set-json", &json_arg("policy", &policy)]);
    assert_eq!(rendered_policy(&docs), policy);

    let err = try_render(&["--set", "policy.validation.action=block"]).unwrap_err();
    assert!(
        err.contains("action"),
        "the schema rejects unknown actions: {err}"
    );
    let err = try_render(&["--set", "policy.mutation.storageClass=x"]).unwrap_err();
    assert!(
        err.contains("storageClass"),
        "the schema rejects misspelled keys: {err}"
    );
}

#[test]
fn optional_objects_are_off_by_default_and_render_when_enabled() {
    needs!("helm");
    let docs = render(&[]);
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    ] {
        assert!(
            all_of_kind(&docs, kind).is_empty(),
            "{kind} is off by default"
        );
    }

    let peers = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]);
    let docs = render(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set-json",
        &json_arg("networkPolicy.metricsFrom", &peers),
        "--set",
        "autoscaling.enabled=true",
    ]);
    let monitor = find(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    let ingress = &find(&docs, "NetworkPolicy")["spec"]["ingress"];
    assert_eq!(
        ingress[0],
        json!({"ports": [{"port": "https", "protocol": "TCP"}]}),
        "8443 from anywhere"
    );
    assert_eq!(
        ingress[1]["ports"],
        json!([{"port": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(ingress[1]["from"], peers);

    let hpa = find(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], FULLNAME);
    assert!(
        find(&docs, "Deployment")["spec"].get("replicas").is_none(),
        "the HPA owns the replica count"
    );
}

#[test]
fn names_follow_overrides() {
    needs!("helm");
    let docs = render(&["--set", "fullnameOverride=rg"]);
    assert_eq!(find(&docs, "Deployment")["metadata"]["name"], "rg");
    let hook = webhook(&docs, "ValidatingWebhookConfiguration");
    assert_eq!(hook["clientConfig"]["service"]["name"], "rg");
    assert_eq!(find(&docs, "Secret")["metadata"]["name"], "rg-tls");
}

#[test]
fn every_ci_values_file_renders() {
    needs!("helm");
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "ci/ holds the value combinations chart-checks.sh lints"
    );
    for file in files {
        let docs = render(&["-f", file.to_str().unwrap()]);
        assert!(
            all_of_kind(&docs, "ValidatingWebhookConfiguration").len() == 1,
            "{} renders the validating webhook",
            file.display()
        );
    }
}

#[test]
fn chart_policies_load_in_rwop_guard() {
    needs!("helm");
    use rwop_guard::policy::Policy;

    // The chart's defaults are the binary's defaults (an empty selector matches everything).
    let docs = render(&[]);
    let text = find(&docs, "ConfigMap")["data"]["policy.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut from_chart = Policy::from_yaml(&text, "policy.yaml").unwrap_or_else(|e| panic!("{e}"));
    let selector = from_chart.mutation.namespace_selector.take();
    assert!(
        selector.is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none()),
        "default namespaceSelector is empty"
    );
    assert_eq!(from_chart, Policy::default());

    // Every policy the CI values files render is one the binary accepts.
    for entry in std::fs::read_dir(chart_dir().join("ci")).unwrap() {
        let file = entry.unwrap().path();
        let docs = render(&["-f", file.to_str().unwrap()]);
        let text = find(&docs, "ConfigMap")["data"]["policy.yaml"]
            .as_str()
            .unwrap()
            .to_owned();
        if let Err(e) = Policy::from_yaml(&text, &file.display().to_string()) {
            panic!(
                "{}: rwop-guard rejects the rendered policy: {e}\n{text}",
                file.display()
            );
        }
    }
}

#[test]
fn request_timeout_stays_below_the_webhook_timeouts() {
    needs!("helm");
    let request_timeout = |args: &[&str]| -> String {
        let docs = render(args);
        let args = strings(&container(&docs)["args"])
            .into_iter()
            .filter(|a| a.starts_with("--request-timeout="))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(args.len(), 1, "{args:?}");
        args[0].clone()
    };
    assert_eq!(request_timeout(&[]), "--request-timeout=4000ms");
    assert_eq!(
        request_timeout(&["--set", "webhooks.validating.timeoutSeconds=10"]),
        "--request-timeout=9000ms"
    );
    // The mutating webhook's timeout counts only when it exists.
    let shorter_mutating = ["--set", "webhooks.mutating.timeoutSeconds=3"];
    assert_eq!(
        request_timeout(&shorter_mutating),
        "--request-timeout=4000ms"
    );
    assert_eq!(
        request_timeout(&[
            shorter_mutating[0],
            shorter_mutating[1],
            "--set",
            "policy.mutation.enabled=true"
        ]),
        "--request-timeout=2000ms"
    );
    assert_eq!(
        request_timeout(&["--set", "webhooks.validating.timeoutSeconds=1"]),
        "--request-timeout=500ms"
    );
}

/// W2's webhook: only workload writes whose pod template mounts a claim, warnings only on
/// failure (Ignore), gone with `policy.workloads.action=off` and with the in-tree engine (W2
/// needs the webhook's caches). The CEL is compiled and run by the real API server in the
/// end-to-end suite (`workloads`).
#[test]
fn workloads_webhook_sees_only_workloads_that_mount_claims() {
    needs!("helm");
    let docs = render(&[]);
    let hook = all_of_kind(&docs, "ValidatingWebhookConfiguration")
        .iter()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .find(|w| w["name"] == "workloads.rwop-guard.dev")
        .cloned()
        .expect("workloads.rwop-guard.dev");
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
    let rules: Vec<String> = hook["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}:{}",
                strings(&r["apiGroups"]).join(","),
                strings(&r["resources"]).join(","),
                strings(&r["operations"]).join(",")
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            "apps/deployments,statefulsets,daemonsets,replicasets:CREATE,UPDATE",
            "batch/jobs,cronjobs:CREATE,UPDATE",
            "/pods:CREATE",
        ]
    );
    let conditions: Vec<&str> = hook["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        conditions,
        [
            "rwop-guard-mounts-a-claim",
            "rwop-guard-spec-changed",
            "rwop-guard-not-run-by-a-controller"
        ]
    );
    for off in [
        &["--set", "policy.workloads.action=off"][..],
        &[
            "--set",
            "engine.mode=inTree",
            "--set",
            "webhooks.mutating.keepOnReapply=false",
        ],
    ] {
        let docs = render(off);
        assert!(
            !webhook_names(&docs, "ValidatingWebhookConfiguration")
                .iter()
                .any(|n| n == "workloads.rwop-guard.dev"),
            "{off:?}"
        );
    }
    // Off in auto mode with nothing else in the webhook: no Deployment at all.
    let auto = [
        "--set",
        "engine.mode=auto",
        "--set",
        "webhooks.mutating.keepOnReapply=false",
    ];
    let docs = render(&[&auto[..], &["--set", "policy.workloads.action=off"]].concat());
    assert!(all_of_kind(&docs, "Deployment").is_empty());
    let docs = render(&auto);
    assert_eq!(
        all_of_kind(&docs, "Deployment").len(),
        1,
        "W2 needs the webhook"
    );
}

// ---------------------------------------------------------------------------------------------
// reports.enabled: the CronJob that keeps the reports current (`scan --apply`)
// ---------------------------------------------------------------------------------------------

const REPORTS_NAME: &str = "guard-rwop-guard-reports";

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = all_of_kind(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    found[0]
}

/// `group/resource:verb` of every rule of a ClusterRole (no resourceNames, no URLs).
fn grants(role: &Value) -> BTreeSet<String> {
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
    }
    granted
}

/// What `scan --apply` needs: list on what the scan lists (src/scan/inventory.rs), and on the
/// format's reports list (its stale ones), create and patch (server-side apply), delete.
fn reports_grants(group: &str, resources: [&str; 2]) -> BTreeSet<String> {
    let mut expected: BTreeSet<String> = [
        "/persistentvolumeclaims",
        "/persistentvolumes",
        "/pods",
        "/replicationcontrollers",
        "storage.k8s.io/storageclasses",
        "apps/deployments",
        "apps/replicasets",
        "apps/statefulsets",
        "apps/daemonsets",
        "batch/jobs",
        "batch/cronjobs",
    ]
    .iter()
    .map(|r| format!("{r}:list"))
    .collect();
    for resource in resources {
        for verb in ["list", "create", "patch", "delete"] {
            expected.insert(format!("{group}/{resource}:{verb}"));
        }
    }
    expected
}

#[test]
fn reports_cronjob_is_off_by_default() {
    needs!("helm");
    let docs = render(&[]);
    assert!(all_of_kind(&docs, "CronJob").is_empty());
    assert_eq!(
        all_of_kind(&docs, "ClusterRole").len(),
        1,
        "the webhook's only"
    );
    assert_eq!(all_of_kind(&docs, "ServiceAccount").len(), 1);
}

#[test]
fn reports_cronjob_runs_scan_apply_with_the_deployments_hardening() {
    needs!("helm");
    let docs = render(&["--set", "reports.enabled=true"]);
    let cron = named(&docs, "CronJob", REPORTS_NAME);
    assert_eq!(cron["metadata"]["namespace"], NAMESPACE);
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(cron["spec"]["schedule"], "17 * * * *", "hourly by default");
    assert_eq!(
        cron["metadata"]["labels"]["app.kubernetes.io/component"],
        "reports"
    );
    let job = &cron["spec"]["jobTemplate"]["spec"];
    assert_eq!(job["activeDeadlineSeconds"], 1800);
    assert_eq!(job["backoffLimit"], 1);
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], REPORTS_NAME);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["enableServiceLinks"], false);
    // The same hardening as the webhook's pods, from the same values.
    let deployment_pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"], deployment_pod["securityContext"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let scan = &containers[0];
    assert_eq!(scan["securityContext"], container(&docs)["securityContext"]);
    assert_eq!(scan["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        scan["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(scan["image"], container(&docs)["image"]);
    assert_eq!(scan["command"], json!(["rwop-guard"]));
    assert_eq!(
        scan["args"],
        json!([
            "scan",
            "--apply",
            "--output=openreports",
            "--config=/config/policy.yaml"
        ])
    );
    assert_eq!(scan["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(
        pod["volumes"],
        json!([{"name": "config", "configMap": {"name": format!("{FULLNAME}-policy")}}])
    );
    // The webhook's Service and PDB select component=webhook: never the scan's pods.
    let pod_labels = &job["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["app.kubernetes.io/component"], "reports");

    // Its own ServiceAccount, and a ClusterRole with exactly what the scan calls.
    let account = named(&docs, "ServiceAccount", REPORTS_NAME);
    assert_eq!(account["metadata"]["namespace"], NAMESPACE);
    let role = named(&docs, "ClusterRole", REPORTS_NAME);
    assert_eq!(
        grants(role),
        reports_grants("openreports.io", ["reports", "clusterreports"])
    );
    let binding = named(&docs, "ClusterRoleBinding", REPORTS_NAME);
    assert_eq!(binding["roleRef"]["name"], REPORTS_NAME);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": REPORTS_NAME, "namespace": NAMESPACE}])
    );
    // The webhook's role is unchanged.
    assert!(
        !grants(named(&docs, "ClusterRole", FULLNAME))
            .iter()
            .any(|g| g.contains("report"))
    );
}

#[test]
fn reports_policyreport_format_grants_only_wgpolicyk8s_reports() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "reports.enabled=true",
        "--set",
        "reports.format=policyreport",
        "--set",
        "reports.schedule=*/30 * * * *",
    ]);
    let cron = named(&docs, "CronJob", REPORTS_NAME);
    assert_eq!(cron["spec"]["schedule"], "*/30 * * * *");
    let args = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(strings(args).contains(&"--output=policyreport"), "{args}");
    assert_eq!(
        grants(named(&docs, "ClusterRole", REPORTS_NAME)),
        reports_grants("wgpolicyk8s.io", ["policyreports", "clusterpolicyreports"])
    );

    // Another format is refused by the schema, naming the two it takes.
    let err = try_render(&[
        "--set",
        "reports.enabled=true",
        "--set",
        "reports.format=yaml",
    ])
    .expect_err("an unknown format renders nothing");
    assert!(
        err.contains("reports/format") && err.contains("'openreports', 'policyreport'"),
        "{err}"
    );
    // rbac.create=false: the ServiceAccount and the CronJob, no role (bring your own).
    let docs = render(&[
        "--set",
        "reports.enabled=true",
        "--set",
        "rbac.create=false",
    ]);
    assert!(all_of_kind(&docs, "ClusterRole").is_empty());
    named(&docs, "ServiceAccount", REPORTS_NAME);
    named(&docs, "CronJob", REPORTS_NAME);
}

#[test]
fn reports_cronjob_runs_without_the_webhook() {
    needs!("helm");
    let docs = render(&[
        "--set",
        "engine.mode=inTree",
        "--set",
        "engine.mutatingAdmissionPolicy=v1",
        "--set",
        "reports.enabled=true",
    ]);
    assert!(all_of_kind(&docs, "Deployment").is_empty());
    named(&docs, "CronJob", REPORTS_NAME);
    named(&docs, "ConfigMap", &format!("{FULLNAME}-policy"));
}
