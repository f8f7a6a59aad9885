//! The chart's monitoring: the Grafana dashboard (`charts/rwop-guard/dashboards/`, shipped as a
//! ConfigMap for Grafana's sidecar) and the PrometheusRule's alerts, rendered with the real
//! `helm template`, checked against what a running server's `/metrics` exports, and the alerts
//! unit-tested by `promtool test rules` (`tests/fixtures/alerts/rwop-guard-monitoring.test.yaml`).
//!
//! helm and promtool are found, and skipped when missing (a failure when `CI` is set), by the
//! one rule of every suite: `support::tools`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use rwop_guard::cluster::ResourceLabel;
use rwop_guard::server::{Limits, Metrics};
use rwop_test_support::{self as support, PATIENCE};
use support::http::{connect, connector, http_get, send};
use support::server::{new_certs, serve_with};

const RELEASE: &str = "guard";
const NAMESPACE: &str = "rwop-system";
/// The Service, hence the `job` of a ServiceMonitor scrape: `<release>-<chart>`.
const FULLNAME: &str = "guard-rwop-guard";
const DASHBOARD: &str = "dashboards/rwop-guard.json";
/// Labels a scrape adds to every series (Prometheus' `job`, `instance`; the ServiceMonitor's
/// `namespace`, `pod`, ...), which the server's output never carries.
const SCRAPE_LABELS: [&str; 6] = ["job", "instance", "namespace", "pod", "service", "endpoint"];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rwop-guard")
}

use support::tools::found as tool;

/// Returns from the test (skipped, or failed under CI) unless every tool named can be run.
macro_rules! needs {
    ($($tool:literal),+) => { support::needs!("chart_monitoring": $($tool),+) };
}

/// `helm template` with the webhook engine and extra arguments; Ok(documents) or Err(stderr).
fn try_render(args: &[&str]) -> Result<Vec<Value>, String> {
    let output = Command::new(tool("helm"))
        .arg("template")
        .arg(RELEASE)
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
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

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The ConfigMaps that carry the dashboard.
fn dashboard_maps(docs: &[Value]) -> Vec<&Value> {
    of_kind(docs, "ConfigMap")
        .into_iter()
        .filter(|m| m["data"].get("rwop-guard.json").is_some())
        .collect()
}

fn dashboard_file() -> String {
    std::fs::read_to_string(chart_dir().join(DASHBOARD)).expect("the dashboard JSON")
}

// ---- What the server exports ----------------------------------------------------------------

/// The series a running server's `/metrics` exports: each sample name with the label names its
/// samples carry, and each family (`# TYPE`) with its sample names.
struct Exported {
    labels: BTreeMap<String, BTreeSet<String>>,
    families: BTreeMap<String, Vec<String>>,
    /// The `le` bounds of the review latency histogram, +Inf left out.
    latency_buckets: Vec<f64>,
}

impl Exported {
    fn parse(text: &str) -> Self {
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut families = BTreeMap::new();
        let mut latency_buckets = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("rwop_guard_request_duration_seconds_bucket{")
                && let Some((_, le)) = rest.split_once("le=\"")
                && let Some(Ok(bound)) = le.split('"').next().map(str::parse::<f64>)
                && bound.is_finite()
            {
                latency_buckets.push(bound);
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    panic!("a TYPE line without a name and a type: {line}");
                };
                let samples = match kind {
                    "counter" => vec![format!("{name}_total")],
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .map(|s| format!("{name}{s}"))
                        .collect(),
                    _ => vec![name.to_owned()],
                };
                families.insert(name.to_owned(), samples);
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let names = labels.entry(line[..name_end].to_owned()).or_default();
                if line[name_end..].starts_with('{') {
                    let inner = &line[name_end + 1..line.find('}').expect("a closing brace")];
                    for pair in inner.split(',').filter(|p| !p.is_empty()) {
                        let (label, _) = pair.split_once('=').expect("label=value");
                        names.insert(label.to_owned());
                    }
                }
            }
        }
        Self {
            labels,
            families,
            latency_buckets,
        }
    }

    /// Whether `label` can be on series `metric`: one of its own, or one a scrape adds.
    fn has_label(&self, metric: &str, label: &str) -> bool {
        SCRAPE_LABELS.contains(&label) || self.labels.get(metric).is_some_and(|l| l.contains(label))
    }
}

/// Polls the metrics port until `done` holds for its text; fails after [`PATIENCE`].
async fn scrape_until(
    addr: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let text = String::from_utf8(http_get(addr, "/metrics").await.body).expect("UTF-8 metrics");
        if done(&text) {
            return text;
        }
        assert!(start.elapsed() < PATIENCE, "waiting for {what}:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A real server's `/metrics` after traffic that gives every family a sample: reviews on both
/// webhooks, a request answered 415, a client that does not trust the served certificate (as
/// the API server with a wrong caBundle), a connection waiting at the connection limit,
/// reloads; the cluster caches (no cluster here) get a sample through the same registry.
async fn exported() -> Exported {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let f = serve_with(limits, None).await;
    let addr = f.server.addr;
    let validate = support::fixtures::admission("05-pv-patch-rwo-to-rwop.pv.validate.json");
    let mutate = support::fixtures::admission("01-pvc-create-rwo.pvc.mutate.json");

    let mut held = connect(addr, &f.roots, b"http/1.1").await;
    for (path, body, ct, status) in [
        ("/validate", &validate, "application/json", 200),
        ("/mutate", &mutate, "application/json", 200),
        ("/validate", &validate, "text/plain", 415),
    ] {
        let resp = send(&mut held, "POST", path, Some(ct), body).await;
        assert_eq!(resp.status, status, "POST {path} ({ct}): {resp:?}");
    }
    // The only slot is held: the next connection waits for it, and is counted.
    let waiting = tokio::net::TcpStream::connect(addr).await.expect("connect");
    scrape_until(f.server.metrics_addr, "a connection at the limit", |m| {
        m.contains("rwop_guard_connections_limited_total{listener=\"webhook\"}")
    })
    .await;
    drop(waiting);
    drop(held);

    let stranger = new_certs();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a name");
    let refused = connector(&[stranger.ca_cert_pem], b"http/1.1")
        .connect(name, tcp)
        .await;
    assert!(
        refused.is_err(),
        "a client trusting another CA refuses the certificate"
    );

    let metrics = &f.server.state.metrics;
    Metrics::reload(&metrics.tls_reloads, true);
    Metrics::reload(&metrics.policy_reloads, false);
    let resource = ResourceLabel {
        resource: "persistentvolumes",
    };
    metrics.cache.synced.get_or_create(&resource).set(1);
    metrics.cache.objects.get_or_create(&resource).set(3);
    metrics.cache.events.get_or_create(&resource).inc();
    metrics.cache.errors.get_or_create(&resource).inc();

    let text = scrape_until(f.server.metrics_addr, "the failed handshake", |m| {
        m.contains(r#"rwop_guard_connections_closed_total{listener="webhook",reason="tls_failed"}"#)
    })
    .await;
    let exported = Exported::parse(&text);
    assert!(
        exported.families.len() >= 10,
        "the registry's families: {text}"
    );
    for (family, samples) in &exported.families {
        assert!(
            samples.iter().all(|s| exported.labels.contains_key(s)),
            "{family} has no sample after the traffic above: give it one\n{text}"
        );
    }
    exported
}

// ---- PromQL, as much as the checks need -----------------------------------------------------

/// The `rwop_guard_*` series an expression reads, each with the label names its selector
/// matches on (`name{a="x", b=~"y"}`).
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("rwop_guard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = Vec::new();
        if tail[end..].starts_with('{') {
            let close = tail[end..].find('}').expect("a closing brace") + end;
            for matcher in tail[end + 1..close].split(',') {
                let label = matcher.split(['=', '!']).next().unwrap_or_default().trim();
                if !label.is_empty() {
                    labels.push(label.to_owned());
                }
            }
        }
        found.push((name, labels));
        rest = &tail[end..];
    }
    found
}

/// The label names of every `by (...)` clause of an expression.
fn by_labels(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let close = tail.find(')').expect("a closing parenthesis");
        found.extend(tail[..close].split(',').map(|l| l.trim().to_owned()));
        rest = &tail[close..];
    }
    found
}

/// Fails unless every series `expr` reads is exported and every label it matches on or
/// aggregates by exists; returns the series read.
fn check_expr(exported: &Exported, what: &str, expr: &str) -> Vec<String> {
    let read = selectors(expr);
    assert!(
        !read.is_empty(),
        "{what} reads no rwop_guard_ series: {expr}"
    );
    for (name, labels) in &read {
        assert!(
            exported.labels.contains_key(name),
            "{what} reads {name}, which the server does not export: {expr}\n{:?}",
            exported.labels.keys()
        );
        for label in labels {
            assert!(
                exported.has_label(name, label),
                "{what}: {name} has no label {label:?}: {expr}"
            );
        }
    }
    for label in by_labels(expr) {
        assert!(
            label == "le"
                || read
                    .iter()
                    .any(|(name, _)| exported.has_label(name, &label)),
            "{what} aggregates by {label:?}, a label of none of the series it reads: {expr}"
        );
    }
    read.into_iter().map(|(name, _)| name).collect()
}

// ---- The dashboard -------------------------------------------------------------------------

#[test]
fn dashboard_is_off_by_default_and_carries_the_sidecar_label_when_enabled() {
    needs!("helm");
    assert!(dashboard_maps(&render(&[])).is_empty(), "off by default");

    let docs = render(&["--set", "grafanaDashboard.enabled=true"]);
    let maps = dashboard_maps(&docs);
    assert_eq!(maps.len(), 1, "one dashboard ConfigMap");
    let map = maps[0];
    assert_eq!(map["metadata"]["name"], format!("{FULLNAME}-dashboard"));
    assert_eq!(
        map["metadata"]["namespace"], NAMESPACE,
        "the release namespace"
    );
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"], "1",
        "the label Grafana's sidecar selects by default"
    );
    assert_eq!(
        map["metadata"]["labels"]["app.kubernetes.io/instance"],
        RELEASE
    );
    assert!(map["metadata"].get("annotations").is_none());
    let shipped = map["data"]["rwop-guard.json"].as_str().expect("a string");
    assert_eq!(
        shipped.trim_end(),
        dashboard_file().trim_end(),
        "the file, as is"
    );
    let parsed: Value = serde_json::from_str(shipped).expect("the shipped dashboard is JSON");
    assert_eq!(parsed["uid"], "rwop-guard");

    let docs = render(&[
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.namespace=monitoring",
        "--set-json",
        r#"grafanaDashboard.annotations={"grafana_folder":"Storage"}"#,
        "--set-json",
        r#"grafanaDashboard.labels={"team":"storage"}"#,
    ]);
    let map = dashboard_maps(&docs)[0];
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(
        map["metadata"]["annotations"],
        json!({"grafana_folder": "Storage"})
    );
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1", "kept");
    assert_eq!(map["metadata"]["labels"]["team"], "storage", "added");

    let err = try_render(&["--set", "grafanaDashboard.folder=x"]).unwrap_err();
    assert!(err.contains("folder"), "the schema knows the keys: {err}");
}

#[tokio::test]
async fn dashboard_shows_every_metric_the_server_exports_and_only_those() {
    let dashboard: Value =
        serde_json::from_str(&dashboard_file()).expect("the dashboard file is JSON");
    let exported = exported().await;

    let schema = dashboard["schemaVersion"]
        .as_u64()
        .expect("a schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["namespace", "job"] {
        let v = variable(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        let query = v["query"]["query"].as_str().expect("a variable query");
        check_expr(&exported, name, query);
    }

    let mut ids = BTreeSet::new();
    let mut shown = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("a title");
        assert!(ids.insert(panel["id"].as_u64()), "{title}: id taken");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expr");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            for (name, labels) in selectors(expr) {
                for wanted in ["namespace", "job"] {
                    assert!(
                        labels.iter().any(|l| l == wanted),
                        "{title}: {name} is not filtered by ${wanted}: {expr}"
                    );
                }
            }
            shown.extend(check_expr(&exported, title, expr));
            // A legend's {{label}} is one the result keeps: aggregated by, or of a plain series.
            let by = by_labels(expr);
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for (label, _) in legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}"))
            {
                let kept = if by.is_empty() {
                    selectors(expr)
                        .iter()
                        .all(|(name, _)| exported.has_label(name, label))
                } else {
                    by.iter().any(|b| b == label)
                };
                assert!(
                    kept,
                    "{title}: the legend names {label:?}, which {expr} drops"
                );
            }
        }
    }
    for (family, samples) in &exported.families {
        assert!(
            samples.iter().any(|s| shown.contains(s)),
            "the dashboard shows nothing of {family}"
        );
    }
}

// ---- The alerts ----------------------------------------------------------------------------

/// The PrometheusRule's groups rendered with `args`, as a rule file (JSON is YAML).
fn rule_file(args: &[&str]) -> Value {
    let docs = render(args);
    let rules = of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    json!({ "groups": rules[0]["spec"]["groups"] })
}

fn all_rules(file: &Value) -> Vec<Value> {
    file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn alert<'a>(rules: &'a [Value], name: &str) -> &'a Value {
    rules
        .iter()
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"))
}

/// As in `tests/fixtures/alerts/rwop-guard-monitoring.test.yaml`.
const SCRAPED: [&str; 4] = [
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
];

#[test]
fn alerts_refuse_values_where_nothing_can_scrape_them() {
    needs!("helm");
    // Nothing scrapes: RwopGuardUnavailable would fire for an outage that is not there.
    let err = try_render(&["--set", "prometheusRule.enabled=true"]).unwrap_err();
    assert!(
        err.contains("nothing scrapes")
            && err.contains("serviceMonitor.enabled=true")
            && err.contains("prometheusRule.scrapedElsewhere=true"),
        "{err}"
    );
    // A scrape of the admin's own.
    let rules = all_rules(&rule_file(&[
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.scrapedElsewhere=true",
    ]));
    alert(&rules, "RwopGuardUnavailable");
    assert_eq!(of_kind(&render(&SCRAPED), "ServiceMonitor").len(), 1);

    // A NetworkPolicy that lets no scraper in.
    let mut closed = SCRAPED.to_vec();
    closed.extend(["--set", "networkPolicy.enabled=true"]);
    let err = try_render(&closed).unwrap_err();
    assert!(
        err.contains("networkPolicy.metricsFrom") && err.contains("lets no pod reach"),
        "{err}"
    );
    let peers = r#"networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#;
    closed.extend(["--set-json", peers]);
    alert(&all_rules(&rule_file(&closed)), "RwopGuardUnavailable");
    // Without alerts, the same NetworkPolicy is the admin's choice.
    let docs = render(&["--set", "networkPolicy.enabled=true"]);
    assert_eq!(of_kind(&docs, "NetworkPolicy").len(), 1);
}

#[test]
fn alerts_pass_promtool_check_and_unit_tests() {
    needs!("helm", "promtool");
    // The fixture's cases are those of validation in the webhook with failurePolicy Fail,
    // where an outage refuses writes: RwopGuardUnavailable is critical.
    let mut args = SCRAPED.to_vec();
    args.extend([
        "--set-json",
        r#"prometheusRule.alertLabels={"team":"storage"}"#,
        "--set",
        "engine.mode=webhook",
    ]);
    // With the default engine nothing is refused during an outage: a warning that says so.
    let mut auto = SCRAPED.to_vec();
    auto.extend(["--set", "engine.mode=auto"]);
    let default = rule_file(&auto);
    let unavailable = default["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["alert"] == "RwopGuardUnavailable")
        .expect("RwopGuardUnavailable");
    assert_eq!(
        unavailable["labels"]["severity"], "warning",
        "{unavailable}"
    );
    assert!(
        unavailable["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("No write is refused")),
        "{unavailable}"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("rules.yaml"), rule_file(&args).to_string())
        .expect("write rules.yaml");
    std::fs::copy(
        support::fixtures::path("alerts/rwop-guard-monitoring.test.yaml"),
        dir.path().join("tests.yaml"),
    )
    .expect("copy the unit tests");
    for check in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "tests.yaml"],
    ] {
        let output = Command::new(tool("promtool"))
            .args(check)
            .current_dir(dir.path())
            .output()
            .expect("failed to run promtool");
        assert!(
            output.status.success(),
            "promtool {check:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn every_alert_reads_exported_metrics_and_links_its_runbook() {
    needs!("helm");
    let exported = exported().await;
    let rules = all_rules(&rule_file(&SCRAPED));
    let mut names = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("an alert name");
        assert!(names.insert(name), "{name} twice");
        check_expr(&exported, name, rule["expr"].as_str().expect("an expr"));
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("docs/operations.md#{}", name.to_lowercase()),
            "{name}"
        );
    }
    for new in [
        "RwopGuardHighLatency",
        "RwopGuardRejectingRequests",
        "RwopGuardTLSHandshakeFailures",
    ] {
        assert!(names.contains(new), "{new}: {names:?}");
    }

    let mut args = SCRAPED.to_vec();
    args.extend([
        "--set",
        "prometheusRule.runbookBaseURL=https://git.example.com/docs/operations.md",
    ]);
    for rule in all_rules(&rule_file(&args)) {
        let url = rule["annotations"]["runbook_url"].as_str().expect("a URL");
        assert!(
            url.starts_with("https://git.example.com/docs/operations.md#rwopguard"),
            "{url}"
        );
    }
    let mut args = SCRAPED.to_vec();
    args.extend(["--set", "prometheusRule.runbookBaseURL="]);
    for rule in all_rules(&rule_file(&args)) {
        assert!(rule["annotations"].get("runbook_url").is_none(), "{rule}");
    }
}

#[tokio::test]
async fn alert_thresholds_and_selector_come_from_values() {
    needs!("helm");
    let mut args = SCRAPED.to_vec();
    args.extend([
        "--set",
        "prometheusRule.latencyThresholdMilliseconds=30",
        "--set",
        r#"prometheusRule.selector=service="webhook""#,
    ]);
    let rules = all_rules(&rule_file(&args));
    for rule in &rules {
        let expr = rule["expr"].as_str().expect("an expr");
        assert!(expr.contains(r#"{service="webhook""#), "{expr}");
        assert!(!expr.contains("job="), "{expr}");
    }
    let latency = alert(&rules, "RwopGuardHighLatency");
    assert!(
        latency["expr"]
            .as_str()
            .is_some_and(|e| e.ends_with("> 0.03")),
        "{}",
        latency["expr"]
    );
    assert!(
        latency["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("30 ms")),
        "{}",
        latency["annotations"]["summary"]
    );
    let tls = alert(&rules, "RwopGuardTLSHandshakeFailures");
    assert!(
        tls["expr"]
            .as_str()
            .is_some_and(|e| e.contains(r#"listener="webhook", reason="tls_failed""#)),
        "{}",
        tls["expr"]
    );

    // Above the histogram's last finite bucket the alert could never fire: the schema says so.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("the schema"),
    )
    .expect("the schema is JSON");
    let maximum =
        schema["properties"]["prometheusRule"]["properties"]["latencyThresholdMilliseconds"]["maximum"]
            .as_f64()
            .expect("a maximum");
    let last = exported()
        .await
        .latency_buckets
        .into_iter()
        .fold(0.0, f64::max);
    assert!(
        maximum / 1000.0 < last,
        "latencyThresholdMilliseconds may reach {maximum}, the histogram ends at {last} s"
    );
    let mut args = SCRAPED.to_vec();
    args.extend(["--set", "prometheusRule.latencyThresholdMilliseconds=41"]);
    let err = try_render(&args).unwrap_err();
    assert!(err.contains("latencyThresholdMilliseconds"), "{err}");
}
