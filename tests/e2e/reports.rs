//! End-to-end cases: `rwop-guard scan --apply` keeps OpenReports current on a real API server,
//! with strict CRDs (tests/e2e/scan.rs), as the chart's reports CronJob runs it: with the
//! ServiceAccount, ClusterRole and ClusterRoleBinding `helm template` renders for
//! `reports.enabled=true`, through a token from `kubectl create token`.
//!
//! Both cases scan the whole cluster (that is what the CronJob does, and what pruning across
//! namespaces needs), so they are exclusive: they run alone, after the shared cases, whose
//! namespaces then get rwop-guard reports too. Assertions are on this file's namespaces only.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use crate::Case;
use crate::harness::{CSI_CLASS, Env, claim, csi_volume, docs, tool};
use crate::scan::{install_crds, report_crd_of};

pub fn cases() -> Vec<Case> {
    vec![
        Case::exclusive(
            "reports::chart_role_writes_its_reports_and_nothing_else",
            chart_role,
        ),
        Case::exclusive(
            "reports::apply_updates_and_prunes_its_reports_and_leaves_others_alone",
            lifecycle,
        ),
    ]
}

/// The namespace the chart is rendered into (its ServiceAccount's).
const RELEASE_NS: &str = "e2e-reports-release";
/// The chart's `<fullname>-reports` for release `e2e`.
const REPORTS_SA: &str = "e2e-rwop-guard-reports";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const REPORTS: &str = "reports.openreports.io";
const CLUSTER_REPORTS: &str = "clusterreports.openreports.io";
/// A finalizer that keeps a claim (and so its namespace) until the case removes it.
const HOLD: &str = "e2e.rwop-guard.dev/hold";

/// The strict OpenReports CRDs (idempotent), Established.
pub(crate) fn install_open_reports(env: &Env) -> anyhow::Result<()> {
    install_crds(
        env,
        &[
            report_crd_of(
                "openreports.io",
                "v1alpha1",
                "Report",
                "reports",
                "Namespaced",
            ),
            report_crd_of(
                "openreports.io",
                "v1alpha1",
                "ClusterReport",
                "clusterreports",
                "Cluster",
            ),
        ],
    )
}

/// Installs what the chart renders for the reports CronJob's identity (ServiceAccount,
/// ClusterRole, ClusterRoleBinding of templates/reports-rbac.yaml, as `helm template` prints
/// them), and returns a kubeconfig with a token of that ServiceAccount.
fn chart_identity(env: &Env) -> anyhow::Result<PathBuf> {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/rwop-guard");
    let out = std::process::Command::new(tool("helm"))
        .args(["template", "e2e"])
        .arg(&chart)
        .args(["--namespace", RELEASE_NS])
        .args(["--set", "reports.enabled=true"])
        .args(["--show-only", "templates/reports-rbac.yaml"])
        .output()
        .context("running helm")?;
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: Vec<Value> =
        serde_saphyr::from_multiple::<Value>(&String::from_utf8(out.stdout)?)?
            .into_iter()
            .filter(|d| !d.is_null())
            .collect();
    let kinds: Vec<&str> = rendered.iter().filter_map(|d| d["kind"].as_str()).collect();
    anyhow::ensure!(
        kinds == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"],
        "rendered {kinds:?}"
    );
    if !env.kubectl(&["get", "namespace", RELEASE_NS]).ok() {
        env.namespace(RELEASE_NS)?;
    }
    env.apply(&rendered)?;
    let token = env
        .kubectl(&[
            "create",
            "token",
            REPORTS_SA,
            "-n",
            RELEASE_NS,
            "--duration=10m",
        ])
        .success()?
        .stdout;
    let config = env.dir.join("reports-sa.kubeconfig");
    env.token_kubeconfig(token.trim(), &config)?;
    Ok(config)
}

/// `kubectl auth can-i VERB RESOURCE [-n NS]` as the reports ServiceAccount: "yes" or "no".
fn can_i(env: &Env, verb: &str, resource: &str, ns: Option<&str>) -> anyhow::Result<bool> {
    let who = format!("--as=system:serviceaccount:{RELEASE_NS}:{REPORTS_SA}");
    let mut args = vec!["auth", "can-i", verb, resource, who.as_str()];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = env.kubectl(&args);
    match out.stdout.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => anyhow::bail!("kubectl auth can-i {verb} {resource}: {out:#?}"),
    }
}

/// `kubectl get RESOURCE -A -o json` items as (namespace, name, managed-by label).
fn listed(env: &Env, resource: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = env
        .kubectl(&["get", resource, "-A", "-o", "json"])
        .success()?;
    let list: Value = serde_json::from_str(&out.stdout)?;
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                s(&r["metadata"]["namespace"]),
                s(&r["metadata"]["name"]),
                s(&r["metadata"]["labels"][MANAGED_BY]),
            )
        })
        .collect())
}

/// (rule, result, kind, name) of a report's results, sorted.
fn results(report: &Value) -> Vec<(String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut rows: Vec<_> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                s(&r["rule"]),
                s(&r["result"]),
                s(&r["resources"][0]["kind"]),
                s(&r["resources"][0]["name"]),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn row(rule: &str, result: &str, kind: &str, name: &str) -> (String, String, String, String) {
    (rule.into(), result.into(), kind.into(), name.into())
}

/// The chart's role, through a real token: `scan --apply` of the whole cluster succeeds and
/// writes the reports; the same identity cannot create a ConfigMap, patch or delete a claim,
/// write PolicyReports (the other format) or update (rather than apply) a report.
fn chart_role(env: &Env) -> anyhow::Result<()> {
    install_open_reports(env)?;
    let ns = "e2e-reports-rbac";
    env.namespace(ns)?;
    env.apply(&[claim("data", ns, &["ReadWriteOncePod"], Some(CSI_CLASS))])?;
    let config = chart_identity(env)?;

    let out = env.rwop_as(&config, &["scan", "--apply"]);
    anyhow::ensure!(out.code == 0, "scan --apply as the chart's role: {out:#?}");
    anyhow::ensure!(
        out.stdout
            .contains("(openreports.io/v1alpha1, field manager rwop-guard)"),
        "{out:#?}"
    );
    let report = env.get(REPORTS, Some(ns), "rwop-guard")?;
    anyhow::ensure!(
        results(&report) == [row("V1", "pass", "PersistentVolumeClaim", "data")],
        "{report:#}"
    );
    // Written by server-side apply under the one field manager.
    let managed = env
        .kubectl(&[
            "get",
            REPORTS,
            "rwop-guard",
            "-n",
            ns,
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .success()?;
    let managed: Value = serde_json::from_str(&managed.stdout)?;
    let managers: Vec<(&Value, &Value)> = managed["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (&m["manager"], &m["operation"]))
        .collect();
    anyhow::ensure!(
        managers == [(&json!("rwop-guard"), &json!("Apply"))],
        "{managers:?}"
    );

    // Exactly what it needs.
    for (verb, resource) in [
        ("create", REPORTS),
        ("patch", REPORTS),
        ("delete", REPORTS),
        ("list", REPORTS),
        ("patch", CLUSTER_REPORTS),
        ("list", "persistentvolumeclaims"),
        ("list", "deployments.apps"),
    ] {
        anyhow::ensure!(
            can_i(env, verb, resource, Some(ns))?,
            "cannot {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("create", "configmaps"),
        ("patch", "persistentvolumeclaims"),
        ("delete", "persistentvolumeclaims"),
        ("get", "secrets"),
        ("update", REPORTS),
        ("create", "policyreports.wgpolicyk8s.io"),
        ("patch", "persistentvolumes"),
        ("watch", "pods"),
    ] {
        anyhow::ensure!(
            !can_i(env, verb, resource, Some(ns))?,
            "can {verb} {resource}"
        );
    }
    // And the API server refuses the writes themselves, with the token.
    let as_sa = |args: &[&str], stdin: &str| crate::harness::kubectl_with(&config, args, stdin);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "not-mine", "namespace": ns}});
    let out = as_sa(&["create", "-f", "-"], &cm.to_string()).failure()?;
    anyhow::ensure!(out.stderr.contains("Forbidden"), "{out:#?}");
    let out = as_sa(
        &[
            "patch",
            "pvc",
            "data",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ],
        "",
    )
    .failure()?;
    anyhow::ensure!(out.stderr.contains("Forbidden"), "{out:#?}");
    Ok(())
}

/// First apply; then a finding fixed, a claim deleted, a namespace deleted; a second apply
/// updates the report of the first namespace, deletes the second's, the deleted namespace's is
/// gone, and a namespace still being deleted is skipped, said on stdout; another tool's Report and ClusterReport (without rwop-guard's label),
/// in a namespace whose own report is deleted, are left as they were. `-n` writes only its
/// namespace's report. Missing CRDs are checked in tests/scan.rs (a real server cannot lose
/// them on demand while other cases use them).
fn lifecycle(env: &Env) -> anyhow::Result<()> {
    install_open_reports(env)?;
    let config = chart_identity(env)?;
    let (a, b, gone) = (
        "e2e-reports-fixed",
        "e2e-reports-emptied",
        "e2e-reports-gone",
    );
    for ns in [a, b, gone] {
        env.namespace(ns)?;
    }
    // a: a Deployment with 2 replicas on a ReadWriteOncePod claim (rollout-deadlock), and the
    // claim's volume, bound; b and gone: one claim each.
    let volume = format!("{a}-data");
    let mut data = claim("data", a, &["ReadWriteOncePod"], Some(CSI_CLASS));
    data["spec"]["volumeName"] = json!(volume);
    env.apply(&[data])?;
    let uid = env.get("pvc", Some(a), "data")?["metadata"]["uid"]
        .as_str()
        .context("claim uid")?
        .to_owned();
    let mut pv = csi_volume(&volume, &["ReadWriteOncePod"]);
    pv["spec"]["claimRef"] = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                    "namespace": a, "name": "data", "uid": uid});
    env.apply(&[pv])?;
    env.wait_bound(a, "data")?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": a},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                    "volumes": [{"name": "data",
                                 "persistentVolumeClaim": {"claimName": "data"}}],
                },
            },
        },
    });
    env.apply(&[deployment])?;
    env.apply(&[
        claim("lonely", b, &["ReadWriteOncePod"], Some(CSI_CLASS)),
        claim("doomed", gone, &["ReadWriteOncePod"], Some(CSI_CLASS)),
    ])?;
    // Another tool's reports: same kinds, same name in b even, no rwop-guard label.
    let other = |kind: &str, namespace: Option<&str>, name: &str| {
        let mut r = json!({
            "apiVersion": "openreports.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "labels": {MANAGED_BY: "kyverno"}},
            "source": "kyverno",
            "summary": {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0},
            "results": [{"policy": "require-labels", "result": "pass", "source": "kyverno",
                         "message": "ok"}],
        });
        if let Some(ns) = namespace {
            r["metadata"]["namespace"] = json!(ns);
        }
        r
    };
    let others = [
        other("Report", Some(b), "kyverno-polr"),
        other("ClusterReport", None, "e2e-reports-kyverno"),
    ];
    env.kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &docs(&others))
        .success()?;
    let before_other = env.get(REPORTS, Some(b), "kyverno-polr")?;
    let before_other_cluster = env.get(CLUSTER_REPORTS, None, "e2e-reports-kyverno")?;

    // First apply: a report in each namespace, the cluster report names the volume.
    let first = env.rwop_as(&config, &["scan", "--apply"]);
    anyhow::ensure!(first.code == 0, "first apply: {first:#?}");
    let report_a = env.get(REPORTS, Some(a), "rwop-guard")?;
    let want_a = vec![
        row("V1", "pass", "PersistentVolumeClaim", "data"),
        row("rollout-deadlock", "warn", "Deployment", "app"),
    ];
    anyhow::ensure!(results(&report_a) == want_a, "{report_a:#}");
    anyhow::ensure!(
        report_a["metadata"]["labels"][MANAGED_BY] == "rwop-guard"
            && report_a["source"] == "rwop-guard"
            && report_a["summary"]
                == json!({"pass": 1, "fail": 0, "warn": 1, "error": 0, "skip": 0}),
        "{report_a:#}"
    );
    for (ns, name) in [(b, "lonely"), (gone, "doomed")] {
        let r = env.get(REPORTS, Some(ns), "rwop-guard")?;
        anyhow::ensure!(
            results(&r) == [row("V1", "pass", "PersistentVolumeClaim", name)],
            "{r:#}"
        );
    }
    let cluster = env.get(CLUSTER_REPORTS, None, "rwop-guard")?;
    anyhow::ensure!(
        results(&cluster).contains(&row("V1", "pass", "PersistentVolume", &volume)),
        "{cluster:#}"
    );

    // The cluster changes: the finding is fixed, b's only claim deleted, gone deleted.
    env.kubectl(&["scale", "deployment", "app", "-n", a, "--replicas=1"])
        .success()?;
    env.kubectl(&["delete", "pvc", "lonely", "-n", b, "--wait"])
        .success()?;
    env.kubectl(&["delete", "namespace", gone, "--wait"])
        .success()?;

    // And a namespace being deleted, its claim held by a finalizer: the scan lists the claim,
    // the API server refuses a report there; the run says so and goes on.
    let held = "e2e-reports-terminating";
    env.namespace(held)?;
    let mut claim_held = claim("held", held, &["ReadWriteOncePod"], Some(CSI_CLASS));
    claim_held["metadata"]["finalizers"] = json!([HOLD]);
    env.apply(&[claim_held])?;
    env.kubectl(&["delete", "namespace", held, "--wait=false"])
        .success()?;
    env.wait_for("namespace", None, held, "Terminating", |n| {
        n["status"]["phase"] == "Terminating"
    })?;

    let second = env.rwop_as(&config, &["scan", "--apply"]);
    let release = env.kubectl(&[
        "patch",
        "pvc",
        "held",
        "-n",
        held,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    anyhow::ensure!(second.code == 0, "second apply: {second:#?}");
    release.success()?;
    anyhow::ensure!(
        second
            .stdout
            .contains(&format!("deleted Report {b}/rwop-guard\n"))
            && second.stdout.contains(&format!(
                "skipped namespace {held}: it is being deleted or gone\n"
            )),
        "{second:#?}"
    );
    let report_a = env.get(REPORTS, Some(a), "rwop-guard")?;
    anyhow::ensure!(
        results(&report_a) == [row("V1", "pass", "PersistentVolumeClaim", "data")]
            && report_a["summary"]
                == json!({"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0}),
        "the fixed finding is still reported: {report_a:#}"
    );
    let reports = listed(env, REPORTS)?;
    let mut mine: Vec<&(String, String, String)> = reports
        .iter()
        .filter(|(ns, ..)| [a, b, gone].contains(&ns.as_str()))
        .collect();
    mine.sort();
    anyhow::ensure!(
        mine == [
            &(
                b.to_owned(),
                "kyverno-polr".to_owned(),
                "kyverno".to_owned()
            ),
            &(
                a.to_owned(),
                "rwop-guard".to_owned(),
                "rwop-guard".to_owned()
            ),
        ],
        "reports in {a}, {b}, {gone}: {mine:?}"
    );
    // Other tools' reports: not one field changed (same resourceVersion).
    let after_other = env.get(REPORTS, Some(b), "kyverno-polr")?;
    let after_other_cluster = env.get(CLUSTER_REPORTS, None, "e2e-reports-kyverno")?;
    for (before, after) in [
        (&before_other, &after_other),
        (&before_other_cluster, &after_other_cluster),
    ] {
        anyhow::ensure!(
            before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"],
            "another tool's report changed:\nbefore {before:#}\nafter {after:#}"
        );
    }
    let cluster_reports = listed(env, CLUSTER_REPORTS)?;
    anyhow::ensure!(
        cluster_reports
            .iter()
            .any(|(_, name, by)| name == "rwop-guard" && by == "rwop-guard"),
        "{cluster_reports:?}"
    );

    // -n: only that namespace's report. b gets a claim again: `-n b` writes b's report and
    // leaves the cluster report as it is.
    env.apply(&[claim("back", b, &["ReadWriteOncePod"], Some(CSI_CLASS))])?;
    let cluster_before = env.get(CLUSTER_REPORTS, None, "rwop-guard")?;
    let scoped = env.rwop_as(&config, &["scan", "--apply", "-n", b]);
    anyhow::ensure!(scoped.code == 0, "{scoped:#?}");
    anyhow::ensure!(
        scoped
            .stdout
            .contains("wrote 1 Report, 0 ClusterReports (openreports.io/v1alpha1"),
        "{scoped:#?}"
    );
    let report_b = env.get(REPORTS, Some(b), "rwop-guard")?;
    anyhow::ensure!(
        results(&report_b) == [row("V1", "pass", "PersistentVolumeClaim", "back")],
        "{report_b:#}"
    );
    let cluster_after = env.get(CLUSTER_REPORTS, None, "rwop-guard")?;
    anyhow::ensure!(
        cluster_before["metadata"]["resourceVersion"]
            == cluster_after["metadata"]["resourceVersion"],
        "-n {b} changed the cluster report"
    );
    env.kubectl(&["delete", CLUSTER_REPORTS, "e2e-reports-kyverno"])
        .success()?;
    Ok(())
}
