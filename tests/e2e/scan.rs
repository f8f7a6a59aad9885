//! End-to-end cases: `rwop-guard scan` against objects the real API server and controllers made.
//!
//! Each case builds the same small cluster state in a namespace of its own (`e2e-scan-…`) and
//! scans with `-n` that namespace, so the scan sees only its objects: the namespaced ones, and the
//! volumes whose claimRef is in the namespace (named `<namespace>-…`). Every volume is pre-bound
//! to its claim and every claim selects only its volume, so no other case's claim can take one of
//! them and none of these claims takes another case's volume.
//!
//! V1 violations (ReadWriteOncePod mixed with other modes) cannot be created through a real API
//! server: its own validation refuses them, before the validating webhook is called. One case
//! checks exactly that, and that a scan then reports none; the scan's V1 findings are covered by
//! the fake-cluster tests (tests/scan.rs) only.

use anyhow::Context;
use serde_json::{Value, json};

use crate::Case;
use crate::harness::{CSI_CLASS, CSI_DRIVER, Env, INTREE_CLASS, Out, claim, csi_volume, docs};

pub fn cases() -> Vec<Case> {
    vec![
        Case::shared(
            "scan::table_lists_candidates_and_rollout_deadlocks_of_a_real_cluster",
            table,
        ),
        Case::shared(
            "scan::json_findings_name_the_live_objects_and_the_migrate_command",
            json_output,
        ),
        Case::shared(
            "scan::policyreport_is_accepted_by_the_api_server_and_replaces_itself_on_rescan",
            policy_report,
        ),
        Case::shared(
            "scan::as_a_kubectl_plugin_the_hints_say_kubectl_rwop",
            as_plugin,
        ),
        Case::shared(
            "scan::openreports_are_accepted_by_the_api_server",
            open_reports,
        ),
        Case::shared(
            "scan::v1_violations_cannot_be_created_on_a_real_api_server",
            v1_cannot_exist,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The cluster state every case scans
// ---------------------------------------------------------------------------------------------

/// The scene's claims: (name, suffix of its volume's name, access mode, class).
const CLAIMS: [(&str, &str, &str, &str); 5] = [
    ("candidate", "candidate", "ReadWriteOnce", CSI_CLASS),
    ("compliant", "compliant", "ReadWriteOncePod", CSI_CLASS),
    ("intree", "intree", "ReadWriteOnce", INTREE_CLASS),
    (
        "replicated-data",
        "replicated",
        "ReadWriteOncePod",
        CSI_CLASS,
    ),
    ("rolling-data", "rolling", "ReadWriteOncePod", CSI_CLASS),
];

/// The webhook's opt-out annotation (M1 leaves the claim as written).
const OPT_OUT: &str = "rwop-guard.dev/mutate";

/// The label that selects a scene volume for its claim.
const VOLUME_LABEL: &str = "e2e-scan/volume";

/// In one namespace:
/// - `candidate`: Bound [ReadWriteOnce] claim on the CSI volume `<ns>-candidate` of the CSI
///   class, mounted by Deployment `candidate-app` (1 replica, default strategy): the migration
///   candidate;
/// - `compliant`: Bound [ReadWriteOncePod] claim, mounted by nothing;
/// - `intree`: Bound [ReadWriteOnce] claim on a hostPath volume of the in-tree class: not a
///   candidate;
/// - Deployment `replicated` (2 replicas, Recreate) mounting the [ReadWriteOncePod] claim
///   `replicated-data`: a deadlock by replicas;
/// - Deployment `rolling` (1 replica, no strategy: the server defaults RollingUpdate, maxSurge
///   25%) mounting the [ReadWriteOncePod] claim `rolling-data`: a deadlock by surge.
///
/// Volumes are made the way an external provisioner makes them: the claims first (each with a
/// selector for its own volume, so it can bind nothing else; the candidate also opts out of the
/// webhook's mutation), then each volume pre-bound to its claim's uid. The PV controller then
/// binds at once; a claim naming its volume in `volumeName` instead races the controller's own
/// writes and often waits for its 15 s resync.
fn build(env: &Env, ns: &str) -> anyhow::Result<()> {
    env.namespace(ns)?;
    let volume = |suffix: &str| format!("{ns}-{suffix}");
    let claims: Vec<Value> = CLAIMS
        .iter()
        .map(|(name, suffix, mode, class)| {
            let mut c = claim(name, ns, &[mode], Some(class));
            c["spec"]["selector"] = json!({"matchLabels": {VOLUME_LABEL: volume(suffix)}});
            if *name == "candidate" {
                // A claim that stays [ReadWriteOnce] on purpose, whatever M1 decides.
                c["metadata"]["annotations"] = json!({OPT_OUT: "false"});
            }
            c
        })
        .collect();
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(&claims))
        .success()?;
    // The scene only means something if the webhook left the candidate [ReadWriteOnce].
    let candidate = env.get("pvc", Some(ns), "candidate")?;
    anyhow::ensure!(
        candidate["spec"]["accessModes"] == json!(["ReadWriteOnce"]),
        "the candidate claim was changed at creation: {candidate:#}"
    );

    let mut volumes = Vec::new();
    for (name, suffix, mode, class) in CLAIMS {
        let mut pv = if class == CSI_CLASS {
            csi_volume(&volume(suffix), &[mode])
        } else {
            json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": volume(suffix)},
                "spec": {
                    "accessModes": [mode], "capacity": {"storage": "1Gi"},
                    "storageClassName": class,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": format!("/e2e/{ns}/{suffix}")},
                },
            })
        };
        pv["metadata"]["labels"] = json!({VOLUME_LABEL: volume(suffix)});
        let uid = uid(env, "pvc", Some(ns), name)?;
        volumes.push(reserved(pv, ns, name, Some(&uid)));
    }
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(&volumes))
        .success()?;

    let deployments = [
        deployment("candidate-app", ns, 1, "candidate", None),
        deployment("replicated", ns, 2, "replicated-data", Some("Recreate")),
        deployment("rolling", ns, 1, "rolling-data", None),
    ];
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(&deployments))
        .success()?;

    for (name, suffix, ..) in CLAIMS {
        let c = env.wait_bound(ns, name)?;
        anyhow::ensure!(
            c["spec"]["volumeName"] == volume(suffix).as_str(),
            "claim {ns}/{name} is bound to another volume: {c:#}"
        );
    }
    Ok(())
}

/// A volume reserved for one claim (`claimRef`): only that claim can bind it.
fn reserved(mut pv: Value, namespace: &str, claim: &str, uid: Option<&str>) -> Value {
    pv["spec"]["claimRef"] = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "namespace": namespace, "name": claim,
    });
    if let Some(uid) = uid {
        pv["spec"]["claimRef"]["uid"] = uid.into();
    }
    pv
}

fn deployment(
    name: &str,
    namespace: &str,
    replicas: i32,
    claim: &str,
    strategy: Option<&str>,
) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{
                        "name": "app", "image": "registry.k8s.io/pause:3.10",
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    });
    if let Some(s) = strategy {
        d["spec"]["strategy"] = json!({"type": s});
    }
    d
}

/// What the scene's finding about `kind` `name` must say in its detail (stable parts).
fn detail_parts(ns: &str, kind: &str, name: &str) -> Vec<String> {
    match (kind, name) {
        ("Deployment", "replicated") => vec![
            "mounts ReadWriteOncePod claim \"replicated-data\" with 2 replicas".to_owned(),
            "set replicas: 1".to_owned(),
        ],
        // The API server defaults the strategy: the scan sees it written out.
        ("Deployment", "rolling") => vec![
            "mounts ReadWriteOncePod claim \"rolling-data\" with strategy RollingUpdate, maxSurge 25%"
                .to_owned(),
            "set strategy: Recreate".to_owned(),
        ],
        ("PersistentVolumeClaim", "candidate") => vec![
            format!(
                "[ReadWriteOnce] claim bound to CSI volume \"{ns}-candidate\" (driver {CSI_DRIVER}) \
                 of storage class \"{CSI_CLASS}\", which supports ReadWriteOncePod"
            ),
            // Its Deployment's rollout would surge (the defaulted strategy): migrate refuses it
            // unless told to switch the Deployment to Recreate, so the command says so.
            format!("run: rwop-guard migrate {ns}/candidate --switch-to-recreate"),
            "Deployment \"candidate-app\" (RollingUpdate, maxSurge 25%) cannot roll with \
             ReadWriteOncePod: --switch-to-recreate sets its strategy to Recreate"
                .to_owned(),
        ],
        _ => Vec::new(),
    }
}

/// The scene's findings as (kind, name, finding), in the scan's order (rule, then namespace,
/// kind, name).
fn expected_rows() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("Deployment", "replicated", "rollout-deadlock"),
        ("Deployment", "rolling", "rollout-deadlock"),
        ("PersistentVolumeClaim", "candidate", "migration-candidate"),
    ]
}

fn expected_summary(ns: &str) -> String {
    format!(
        "0 violations, 1 migration candidate, 2 rollout risks; scanned 5 claims, 5 volumes, \
         3 workloads in namespace {ns}"
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn scan(env: &Env, args: &[&str]) -> Out {
    let mut all = vec!["scan"];
    all.extend_from_slice(args);
    env.rwop(&all, "")
}

/// The scan's stdout as JSON, or an error with everything it printed.
fn scan_json(env: &Env, args: &[&str]) -> anyhow::Result<(Out, Value)> {
    let out = scan(env, args);
    let v = serde_json::from_str(&out.stdout)
        .with_context(|| format!("scan {args:?} did not print JSON: {out:#?}"))?;
    Ok((out, v))
}

fn uid(env: &Env, resource: &str, namespace: Option<&str>, name: &str) -> anyhow::Result<String> {
    let v = env.get(resource, namespace, name)?;
    v["metadata"]["uid"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{resource} {name} has no uid: {v:#}"))
}

/// Table rows (the five cells, trimmed) and the summary line. Cells are cut at the header's
/// column starts, and each must start exactly there (the columns are aligned).
fn parse_table(stdout: &str) -> anyhow::Result<(Vec<[String; 5]>, String)> {
    let lines: Vec<&str> = stdout.lines().collect();
    let (summary, body) = lines
        .split_last()
        .with_context(|| format!("no output:\n{stdout}"))?;
    if body.is_empty() {
        return Ok((Vec::new(), (*summary).to_owned()));
    }
    let (blank, rows) = body
        .split_last()
        .with_context(|| format!("no rows:\n{stdout}"))?;
    anyhow::ensure!(
        blank.is_empty(),
        "no blank line before the summary:\n{stdout}"
    );
    let (header, rows) = rows
        .split_first()
        .with_context(|| format!("no header:\n{stdout}"))?;
    let starts: Vec<usize> = ["KIND", "NAMESPACE", "NAME ", "FINDING", "DETAIL"]
        .iter()
        .map(|h| header.find(h))
        .collect::<Option<_>>()
        .with_context(|| format!("unexpected header {header:?}:\n{stdout}"))?;
    anyhow::ensure!(
        starts[0] == 0 && starts.windows(2).all(|w| w[0] < w[1]),
        "unexpected header {header:?}:\n{stdout}"
    );
    let mut parsed = Vec::new();
    for row in rows {
        let mut cells: [String; 5] = Default::default();
        for (i, cell) in cells.iter_mut().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(row.len());
            let text = row
                .get(starts[i]..end)
                .with_context(|| format!("row {row:?} is shorter than the header:\n{stdout}"))?;
            anyhow::ensure!(
                !text.starts_with(' ') && (i == 4 || text.ends_with(' ')),
                "row {row:?} is not aligned with the header (column {i}):\n{stdout}"
            );
            *cell = text.trim().to_owned();
        }
        parsed.push(cells);
    }
    Ok((parsed, (*summary).to_owned()))
}

/// The findings of a JSON report that concern objects of `ns`: namespaced in it, or volumes
/// named `<ns>-…`.
fn findings_of<'a>(report: &'a Value, ns: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            let o = &f["object"];
            o["namespace"] == ns
                || (o["kind"] == "PersistentVolume"
                    && o["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(&format!("{ns}-"))))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (1) table
// ---------------------------------------------------------------------------------------------

fn table(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-scan-table";
    build(env, ns)?;
    let out = scan(env, &["-n", ns]);
    anyhow::ensure!(
        out.code == 0,
        "exit {} (0 expected: no V1 violation): {out:#?}",
        out.code
    );
    let (rows, summary) = parse_table(&out.stdout)?;

    let got: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()))
        .collect();
    let want: Vec<(&str, &str, &str, &str)> = expected_rows()
        .into_iter()
        .map(|(kind, name, finding)| (kind, ns, name, finding))
        .collect();
    anyhow::ensure!(
        got == want,
        "rows (kind, namespace, name, finding) {got:?}, expected {want:?}:\n{}",
        out.stdout
    );
    for r in &rows {
        for part in detail_parts(ns, &r[0], &r[2]) {
            anyhow::ensure!(
                r[4].contains(&part),
                "the detail of {} {} does not say {part:?}:\n{}",
                r[0],
                r[2],
                out.stdout
            );
        }
    }
    // Compliant claims, the in-tree claim and the candidate's own Deployment are no finding.
    for quiet in ["compliant", "intree", "candidate-app"] {
        anyhow::ensure!(
            !rows.iter().any(|r| r[2] == quiet),
            "{quiet} has a row:\n{}",
            out.stdout
        );
    }
    anyhow::ensure!(
        summary == expected_summary(ns),
        "summary line {summary:?}, expected {:?}:\n{}",
        expected_summary(ns),
        out.stdout
    );
    // Progress goes to stderr, counting what the namespace holds.
    for line in [
        "rwop-guard scan: listed 5 persistentvolumeclaims",
        "rwop-guard scan: listed 3 deployments",
    ] {
        anyhow::ensure!(
            out.stderr.lines().any(|l| l == line),
            "stderr lacks {line:?}: {out:#?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (2) --output json
// ---------------------------------------------------------------------------------------------

fn json_output(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-scan-json";
    build(env, ns)?;
    let (out, report) = scan_json(env, &["-n", ns, "--output", "json"])?;
    anyhow::ensure!(out.code == 0, "exit {}: {out:#?}", out.code);
    let text = &out.stdout;

    anyhow::ensure!(report["namespace"] == ns, "namespace:\n{text}");
    let scanned = &report["scanned"];
    anyhow::ensure!(
        scanned["claims"] == 5 && scanned["volumes"] == 5 && scanned["workloads"] == 3,
        "scanned {scanned}, expected 5 claims, 5 volumes, 3 workloads:\n{text}"
    );
    // StorageClasses are cluster-wide: at least the environment's two.
    anyhow::ensure!(
        scanned["storageClasses"].as_u64().is_some_and(|n| n >= 2),
        "scanned.storageClasses:\n{text}"
    );
    anyhow::ensure!(
        report["summary"]
            == json!({"violations": 0, "migrationCandidates": 1, "rolloutRisks": 2, "migrationBlocked": 0, "migrationsInProgress": 0}),
        "summary:\n{text}"
    );

    let findings = report["findings"]
        .as_array()
        .with_context(|| format!("no findings array:\n{text}"))?;
    let got: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["object"]["kind"].as_str().unwrap_or(""),
                f["object"]["name"].as_str().unwrap_or(""),
                f["rule"].as_str().unwrap_or(""),
            )
        })
        .collect();
    anyhow::ensure!(
        got == expected_rows(),
        "findings (kind, name, rule) {got:?}, expected {:?}:\n{text}",
        expected_rows()
    );

    // Each finding names the live object (uid included) and the objects involved.
    for f in findings {
        let kind = f["object"]["kind"].as_str().unwrap_or("");
        let name = f["object"]["name"].as_str().unwrap_or("");
        let (resource, api_version, related) = match kind {
            "Deployment" => (
                "deployment",
                "apps/v1",
                vec![json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": ns, "name": format!("{name}-data"),
                    "uid": uid(env, "pvc", Some(ns), &format!("{name}-data"))?,
                })],
            ),
            _ => (
                "pvc",
                "v1",
                vec![json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "name": format!("{ns}-{name}"),
                    "uid": uid(env, "pv", None, &format!("{ns}-{name}"))?,
                })],
            ),
        };
        let object = json!({
            "apiVersion": api_version, "kind": kind, "namespace": ns, "name": name,
            "uid": uid(env, resource, Some(ns), name)?,
        });
        anyhow::ensure!(
            f["object"] == object,
            "object of {kind} {name}: {}, expected {object}:\n{text}",
            f["object"]
        );
        anyhow::ensure!(
            f["related"] == json!(related),
            "related of {kind} {name}: {}, expected {}:\n{text}",
            f["related"],
            json!(related)
        );
        let detail = f["detail"].as_str().unwrap_or("");
        for part in detail_parts(ns, kind, name) {
            anyhow::ensure!(
                detail.contains(&part),
                "the detail of {kind} {name} does not say {part:?}:\n{text}"
            );
        }
        let message = format!("{kind} \"{ns}/{name}\": {detail}");
        anyhow::ensure!(
            f["message"] == message.as_str(),
            "message of {kind} {name}: {}, expected {message:?}:\n{text}",
            f["message"]
        );
    }

    // The candidates: exactly the candidate claim, with the migrate command.
    let command = format!("rwop-guard migrate {ns}/candidate --switch-to-recreate");
    let candidates: Vec<(&Value, &Value)> = findings
        .iter()
        .filter(|f| f["rule"] == "migration-candidate")
        .map(|f| (&f["object"]["name"], &f["command"]))
        .collect();
    anyhow::ensure!(
        candidates == [(&json!("candidate"), &json!(command))],
        "candidates {candidates:?}, expected [(candidate, {command:?})]:\n{text}"
    );
    for f in findings
        .iter()
        .filter(|f| f["rule"] != "migration-candidate")
    {
        anyhow::ensure!(f["command"].is_null(), "a command on {f}:\n{text}");
    }

    // The whole-cluster scan says the same about these objects, among those of other cases.
    let (all_out, all) = scan_json(env, &["--output", "json"])?;
    anyhow::ensure!(
        matches!(all_out.code, 0 | 1) && all["namespace"].is_null(),
        "the whole-cluster scan failed or is scoped: {all_out:#?}"
    );
    let mine = findings_of(&all, ns);
    let scoped: Vec<&Value> = findings.iter().collect();
    anyhow::ensure!(
        mine == scoped,
        "the whole-cluster scan's findings for {ns}: {mine:#?}\nthe -n scan's: {scoped:#?}"
    );

    // The command named is one migrate accepts: its dry run plans this claim and volume.
    let args: Vec<&str> = command
        .strip_prefix("rwop-guard ")
        .context("the command does not start with rwop-guard")?
        .split(' ')
        .chain(["--dry-run"])
        .collect();
    let plan = env.rwop(&args, "");
    anyhow::ensure!(
        plan.code == 0
            && plan.stdout.contains(&format!(
                "PersistentVolumeClaim {ns}/candidate (PersistentVolume {ns}-candidate)"
            ))
            && plan.stdout.contains(
                "switch Deployment candidate-app spec.strategy: RollingUpdate, maxSurge 25% -> Recreate"
            ),
        "rwop-guard {args:?}: {plan:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (3) --output policyreport
// ---------------------------------------------------------------------------------------------

/// Minimal `wgpolicyk8s.io/v1alpha2` CRDs: the types and enums of the upstream schema
/// (kubernetes-sigs/wg-policy-prototypes) for the fields the reports use, and nothing that keeps
/// unknown fields, so that `kubectl apply --validate=strict` refuses any field the scan adds
/// outside that schema. `scope`/`scopeSelector`, which the scan does not write, are left out.
fn report_crd(kind: &str, plural: &str, scope: &str) -> Value {
    report_crd_of("wgpolicyk8s.io", "v1alpha2", kind, plural, scope)
}

/// The same schema under another group and version (OpenReports adds a report-level `source`).
pub(crate) fn report_crd_of(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    scope: &str,
) -> Value {
    let string = json!({"type": "string"});
    let count = json!({"type": "integer"});
    let reference = json!({
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "apiVersion": string, "kind": string, "namespace": string, "name": string,
            "uid": string, "resourceVersion": string, "fieldPath": string,
        },
    });
    let result = json!({
        "type": "object",
        "required": ["policy"],
        "properties": {
            "policy": string, "rule": string, "category": string, "source": string,
            "message": string,
            "result": {"type": "string", "enum": ["pass", "fail", "warn", "error", "skip"]},
            "scored": {"type": "boolean"},
            "severity": {"type": "string", "enum": ["critical", "high", "low", "medium", "info"]},
            "timestamp": {
                "type": "object",
                "required": ["seconds", "nanos"],
                "properties": {
                    "seconds": {"type": "integer", "format": "int64"},
                    "nanos": {"type": "integer", "format": "int32"},
                },
            },
            "resources": {"type": "array", "items": reference},
            "properties": {"type": "object", "additionalProperties": string},
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                      "singular": kind.to_lowercase()},
            "scope": scope,
            "versions": [{
                "name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": string, "kind": string, "metadata": {"type": "object"},
                        "source": string,
                        "summary": {"type": "object", "properties": {
                            "pass": count, "fail": count, "warn": count, "error": count,
                            "skip": count,
                        }},
                        "results": {"type": "array", "items": result},
                    },
                }},
            }],
        },
    })
}

/// Installs the report CRDs (idempotent: another case may have done it) and waits until they
/// are Established.
fn install_report_crds(env: &Env) -> anyhow::Result<()> {
    install_crds(
        env,
        &[
            report_crd("PolicyReport", "policyreports", "Namespaced"),
            report_crd("ClusterPolicyReport", "clusterpolicyreports", "Cluster"),
        ],
    )
}

/// Applies CRDs and waits until each is Established.
pub(crate) fn install_crds(env: &Env, crds: &[Value]) -> anyhow::Result<()> {
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(crds))
        .success()?;
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        env.wait_for("crd", None, name, "Established", |crd| {
            crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })?;
    }
    Ok(())
}

/// (rule, result, severity, scored, kind, name) of a report's results, sorted.
fn results_of(report: &Value) -> Vec<(String, String, String, bool, String, String)> {
    let mut rows: Vec<_> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (
                s(&r["rule"]),
                s(&r["result"]),
                s(&r["severity"]),
                r["scored"].as_bool().unwrap_or(false),
                s(&r["resources"][0]["kind"]),
                s(&r["resources"][0]["name"]),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A report's results are `want` (in any order) and its summary counts (pass, warn) and no
/// fail, error or skip.
fn assert_report(
    report: &Value,
    what: &str,
    want: &[(String, String, String, bool, String, String)],
    (pass, warn): (u64, u64),
) -> anyhow::Result<()> {
    let mut want = want.to_vec();
    want.sort();
    let got = results_of(report);
    anyhow::ensure!(
        got == want,
        "{what} results {got:#?}\nexpected {want:#?}\n{report:#}"
    );
    let summary = json!({"pass": pass, "fail": 0, "warn": warn, "error": 0, "skip": 0});
    anyhow::ensure!(report["summary"] == summary, "{what} summary: {report:#}");
    Ok(())
}

fn row(
    rule: &str,
    result: &str,
    severity: &str,
    scored: bool,
    kind: &str,
    name: &str,
) -> (String, String, String, bool, String, String) {
    (
        rule.to_owned(),
        result.to_owned(),
        severity.to_owned(),
        scored,
        kind.to_owned(),
        name.to_owned(),
    )
}

/// Scans `ns` as policy reports, applies them with kubectl, and returns (the scan's documents,
/// the PolicyReport and the ClusterPolicyReport read back from the server, kubectl's output).
fn scan_and_apply(env: &Env, ns: &str) -> anyhow::Result<(Vec<Value>, Value, Value, Out)> {
    let out = scan(env, &["-n", ns, "--output", "policyreport"]);
    anyhow::ensure!(out.code == 0, "exit {}: {out:#?}", out.code);
    let docs: Vec<Value> = serde_saphyr::from_multiple::<Value>(&out.stdout)
        .with_context(|| format!("the scan's output is not YAML:\n{}", out.stdout))?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let cluster_name = format!("rwop-guard-{ns}");
    let heads: Vec<(&Value, &Value, &Value)> = docs
        .iter()
        .map(|d| {
            (
                &d["kind"],
                &d["metadata"]["namespace"],
                &d["metadata"]["name"],
            )
        })
        .collect();
    anyhow::ensure!(
        heads
            == [
                (&json!("PolicyReport"), &json!(ns), &json!("rwop-guard")),
                (
                    &json!("ClusterPolicyReport"),
                    &Value::Null,
                    &json!(cluster_name)
                ),
            ],
        "documents {heads:?}, expected PolicyReport {ns}/rwop-guard and ClusterPolicyReport \
         {cluster_name}:\n{}",
        out.stdout
    );

    let applied = env
        .kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &out.stdout)
        .success()
        .with_context(|| format!("the API server refused the reports:\n{}", out.stdout))?;
    let namespaced = env.get("policyreports.wgpolicyk8s.io", Some(ns), "rwop-guard")?;
    let cluster = env.get("clusterpolicyreports.wgpolicyk8s.io", None, &cluster_name)?;
    // The server kept every field as the scan wrote it: nothing pruned, nothing defaulted.
    for (sent, stored) in docs.iter().zip([&namespaced, &cluster]) {
        for field in ["summary", "results"] {
            anyhow::ensure!(
                sent[field] == stored[field],
                "{} {field} sent {:#}\nstored {:#}",
                sent["kind"],
                sent[field],
                stored[field]
            );
        }
        anyhow::ensure!(
            stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rwop-guard",
            "labels: {:#}",
            stored["metadata"]
        );
    }
    Ok((docs, namespaced, cluster, applied))
}

fn policy_report(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-scan-report";
    build(env, ns)?;
    install_report_crds(env)?;
    let (_, report, cluster, applied) = scan_and_apply(env, ns)?;
    anyhow::ensure!(
        applied
            .stdout
            .contains("policyreport.wgpolicyk8s.io/rwop-guard created")
            && applied.stdout.contains(&format!(
                "clusterpolicyreport.wgpolicyk8s.io/rwop-guard-{ns} created"
            )),
        "kubectl apply: {applied:#?}"
    );

    let claim_pass = |name: &str| row("V1", "pass", "high", true, "PersistentVolumeClaim", name);
    let mut want = vec![
        row(
            "migration-candidate",
            "warn",
            "low",
            false,
            "PersistentVolumeClaim",
            "candidate",
        ),
        row(
            "rollout-deadlock",
            "warn",
            "medium",
            false,
            "Deployment",
            "replicated",
        ),
        row(
            "rollout-deadlock",
            "warn",
            "medium",
            false,
            "Deployment",
            "rolling",
        ),
    ];
    want.extend(CLAIMS.iter().map(|(name, ..)| claim_pass(name)));
    assert_report(&report, "PolicyReport", &want, (5, 3))?;
    for r in report["results"].as_array().into_iter().flatten() {
        anyhow::ensure!(
            r["policy"] == "rwop-guard" && r["source"] == "rwop-guard",
            "policy/source of {r:#}"
        );
    }
    // The candidate's result carries the command and names its volume.
    let candidate = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["rule"] == "migration-candidate")
        .context("no migration-candidate result")?;
    anyhow::ensure!(
        candidate["properties"]
            == json!({"command": format!("rwop-guard migrate {ns}/candidate --switch-to-recreate")})
            && candidate["resources"][1]["kind"] == "PersistentVolume"
            && candidate["resources"][1]["name"] == format!("{ns}-candidate").as_str(),
        "the candidate's result: {candidate:#}"
    );

    let want_cluster: Vec<_> = CLAIMS
        .iter()
        .map(|(_, suffix, ..)| {
            row(
                "V1",
                "pass",
                "high",
                true,
                "PersistentVolume",
                &format!("{ns}-{suffix}"),
            )
        })
        .collect();
    assert_report(&cluster, "ClusterPolicyReport", &want_cluster, (5, 0))?;

    // Fix the surging Deployment, scan again: the applied report replaces the old results.
    env.kubectl(&[
        "patch",
        "deployment",
        "rolling",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ])
    .success()?;
    let (_, report, _, applied) = scan_and_apply(env, ns)?;
    anyhow::ensure!(
        applied
            .stdout
            .contains("policyreport.wgpolicyk8s.io/rwop-guard configured"),
        "kubectl apply after the fix: {applied:#?}"
    );
    let fixed: Vec<_> = want
        .into_iter()
        .filter(|r| !(r.0 == "rollout-deadlock" && r.5 == "rolling"))
        .collect();
    assert_report(&report, "PolicyReport after the fix", &fixed, (5, 2))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// V1 on a real server
// ---------------------------------------------------------------------------------------------

/// The API server's own validation refuses ReadWriteOncePod mixed with other modes, on create
/// and on update, before the validating webhook is called: a real cluster cannot hold what V1
/// reports, so a scan finds no violation (exit 0). The scan's V1 findings and exit 1 are
/// covered by the fake-cluster tests (tests/scan.rs) only.
fn v1_cannot_exist(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-scan-v1";
    env.namespace(ns)?;
    let mixed = ["ReadWriteOnce", "ReadWriteOncePod"];
    let refused =
        "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes";

    let create_refused = |object: &Value, kind_and_name: &str| -> anyhow::Result<()> {
        let out = env
            .kubectl_stdin(&["create", "-f", "-"], &object.to_string())
            .failure()?;
        anyhow::ensure!(
            out.stderr
                .contains(&format!("{kind_and_name} is invalid: {refused}")),
            "{out:#?}"
        );
        Ok(())
    };
    create_refused(
        &claim("mixed", ns, &mixed, Some(CSI_CLASS)),
        "PersistentVolumeClaim \"mixed\"",
    )?;
    create_refused(
        &csi_volume(&format!("{ns}-mixed"), &mixed),
        &format!("PersistentVolume \"{ns}-mixed\""),
    )?;
    // An existing [ReadWriteOnce] volume (reserved for a claim of this namespace, so in the
    // scan's scope and bound by no one) cannot be changed to mixed modes either.
    let volume = format!("{ns}-rwo");
    let pv = reserved(csi_volume(&volume, &["ReadWriteOnce"]), ns, "nobody", None);
    env.kubectl_stdin(&["apply", "-f", "-"], &pv.to_string())
        .success()?;
    let out = env
        .kubectl(&[
            "patch",
            "pv",
            &volume,
            "--type=merge",
            "-p",
            &json!({"spec": {"accessModes": mixed}}).to_string(),
        ])
        .failure()?;
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "PersistentVolume \"{volume}\" is invalid: {refused}"
        )),
        "{out:#?}"
    );

    let out = scan(env, &["-n", ns]);
    anyhow::ensure!(out.code == 0, "exit {}: {out:#?}", out.code);
    let want = format!(
        "0 violations, 0 migration candidates, 0 rollout risks; scanned 0 claims, 1 volume, \
         0 workloads in namespace {ns}\n"
    );
    anyhow::ensure!(
        out.stdout == want,
        "stdout {:?}, expected only the summary {want:?}",
        out.stdout
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (5) --output openreports
// ---------------------------------------------------------------------------------------------

fn open_reports(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-scan-openreports";
    build(env, ns)?;
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
    )?;
    let out = scan(env, &["-n", ns, "--output", "openreports"]);
    anyhow::ensure!(out.code == 0, "exit {}: {out:#?}", out.code);
    let sent: Vec<Value> = serde_saphyr::from_multiple::<Value>(&out.stdout)?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let applied = env
        .kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &out.stdout)
        .success()
        .with_context(|| format!("the API server refused the reports:\n{}", out.stdout))?;
    anyhow::ensure!(
        applied
            .stdout
            .contains("report.openreports.io/rwop-guard created")
            && applied.stdout.contains(&format!(
                "clusterreport.openreports.io/rwop-guard-{ns} created"
            )),
        "{applied:#?}"
    );
    let report = env.get("reports.openreports.io", Some(ns), "rwop-guard")?;
    let cluster = env.get(
        "clusterreports.openreports.io",
        None,
        &format!("rwop-guard-{ns}"),
    )?;
    anyhow::ensure!(sent.len() == 2, "{}", out.stdout);
    for (sent, stored) in sent.iter().zip([&report, &cluster]) {
        for field in ["source", "summary", "results"] {
            anyhow::ensure!(
                sent[field] == stored[field],
                "{} {field}: sent {:#}, stored {:#}",
                sent["kind"],
                sent[field],
                stored[field]
            );
        }
    }
    anyhow::ensure!(report["source"] == "rwop-guard", "{report:#}");
    // The same findings as the PolicyReport: one candidate, two deadlocks, five passes.
    anyhow::ensure!(
        report["summary"] == json!({"pass": 5, "fail": 0, "warn": 3, "error": 0, "skip": 0}),
        "{:#}",
        report["summary"]
    );
    let candidates: Vec<&Value> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["rule"] == "migration-candidate")
        .collect();
    anyhow::ensure!(
        candidates.len() == 1
            && candidates[0]["properties"]["command"]
                == format!("rwop-guard migrate {ns}/candidate --switch-to-recreate"),
        "{candidates:#?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (6) as `kubectl rwop`
// ---------------------------------------------------------------------------------------------

fn as_plugin(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-scan-plugin";
    build(env, ns)?;
    // kubectl finds plugins on PATH by name: `kubectl rwop` runs `kubectl-rwop`.
    let bin = tempfile::tempdir()?;
    std::os::unix::fs::symlink(
        rwop_test_support::binary::path(),
        bin.path().join("kubectl-rwop"),
    )?;
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(crate::harness::tool("kubectl"))
        .args(["rwop", "-n", ns, "scan", "-o", "json"])
        .env("PATH", path)
        .env("KUBECONFIG", &env.plane.kubeconfig)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.code() == Some(0),
        "kubectl rwop scan: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout)?;
    let commands: Vec<&str> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["command"].as_str())
        .collect();
    anyhow::ensure!(
        commands
            == [format!(
                "kubectl rwop migrate {ns}/candidate --switch-to-recreate"
            )],
        "{commands:?}\n{stdout}"
    );
    Ok(())
}
