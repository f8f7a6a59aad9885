//! The in-tree engine proven equal to the webhook, case by case, on the real API server.
//!
//! For each of a few policies, several hundred requests in all (fixed ones mirroring the
//! admission cases, and generated ones: random mode sets and old/new pairs, classes listed or not
//! or absent, namespaces in and out of scope, the opt-out annotation, `volumeName` and
//! `selector`, existing annotations, re-applied manifests after M1 and after `migrate`) are sent
//! three times, as `--dry-run=server` writes over the same stored objects:
//!
//! 1. through the webhook alone: `rwop-guard serve --no-cluster` with the policy, registered with
//!    the chart's webhook configurations;
//! 2. through both engines at once (the webhook and the in-tree objects);
//! 3. through the in-tree objects alone (the chart's, `engine.mode=inTree`, which are checked to
//!    be what `rwop-guard policy export` prints for the same policy file).
//!
//! Phases 1 and 3 must agree on the decision (exit code, error class, message after kubectl's
//! prefix), the resulting object (spec, labels, annotations), the validation warnings (after
//! the `Validation failed for ValidatingAdmissionPolicy …:` prefix) and the validation audit
//! annotations (`action`, `v2`, `rollback`, `w1`, from the API server's audit log). Phase 2
//! must give the same decision and object (no double mutation, no contradiction).
//!
//! Known and documented differences, which are therefore not compared: a MutatingAdmissionPolicy
//! returns no warnings and sets no audit annotations, so the webhook's M1/M2 warnings and its
//! `mutation`/`reapply` annotations have no in-tree counterpart.
//!
//! The shared webhook configurations are taken down while a policy runs (the case is exclusive)
//! and registered again afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{Value, json};

use crate::Case;
use crate::harness::webhook::{Chart, Serve, ServeSpec};
use crate::harness::{Env, Out, docs, wait_until};

pub fn cases() -> Vec<Case> {
    vec![
        Case::exclusive(
            "intree::deny_policy_with_listed_classes_decides_as_the_webhook",
            |env| differential(env, &DENY),
        ),
        Case::exclusive(
            "intree::warn_policy_with_namespace_choices_decides_as_the_webhook",
            |env| differential(env, &WARN),
        ),
        Case::exclusive(
            "intree::chart_default_policy_decides_as_the_webhook",
            |env| differential(env, &DEFAULT),
        ),
        Case::exclusive(
            "intree::default_helm_install_puts_no_webhook_on_the_pv_update_path",
            default_install,
        ),
    ]
}

/// `helm install` of the chart with its default values, on an API server that serves
/// MutatingAdmissionPolicy: every volume and claim rule in-tree, and the webhook only for W2
/// (`workloads.rwop-guard.dev`, workload writes alone); a volume's access-mode change is decided
/// by the API server itself, with no webhook on its path. Installed without `--wait`: the
/// harness runs no kubelet, so the webhook's pods never become ready (W2 fails open).
fn default_install(env: &Env) -> anyhow::Result<()> {
    let ns = "rwop-install";
    let _ = env.kubectl(&["create", "namespace", ns]);
    // The pods must pass the restricted Pod Security Standard (docs/security.md says so): the
    // API server's PodSecurity admission refuses the ReplicaSet's pods otherwise.
    env.kubectl(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    ])
    .success()?;
    let chart = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/rwop-guard");
    let helm = |args: &[&str]| {
        crate::harness::run_tool(
            std::process::Command::new(crate::harness::tool("helm"))
                .args(args)
                .args(["--namespace", ns, "--kubeconfig"])
                .arg(&env.plane.kubeconfig),
        )
    };
    let install = helm(&["install", "guard", &chart.display().to_string()]).success()?;
    let result = check_default_install(env, &helm);
    let uninstall = helm(&["uninstall", "guard", "--wait"]).success();
    let _ = install;
    result.and(uninstall.map(|_| ()))?;
    // Uninstalled: the shared webhook answers again.
    env.wait_called(&env.serve(), true)
}

fn check_default_install(env: &Env, helm: &dyn Fn(&[&str]) -> Out) -> anyhow::Result<()> {
    let manifest = helm(&["get", "manifest", "guard"]).success()?;
    let kinds: Vec<String> = serde_saphyr::from_multiple::<Value>(&manifest.stdout)?
        .into_iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    anyhow::ensure!(
        sorted == rwop_test_support::DEFAULT_INSTALL_KINDS,
        "the default install is not the in-tree objects plus the W2 webhook: {kinds:?}"
    );
    // The one webhook configuration holds W2 alone: no volume or claim write goes to it.
    let config = env.kubectl(&[
        "get",
        "validatingwebhookconfiguration",
        PREFIX_INSTALL,
        "-o",
        "json",
    ]);
    let config: Value = serde_json::from_str(&config.success()?.stdout)?;
    let hooks: Vec<(&str, Vec<&str>)> = config["webhooks"]
        .as_array()
        .context("webhooks")?
        .iter()
        .map(|w| {
            let resources = w["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["resources"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            (w["name"].as_str().unwrap_or_default(), resources)
        })
        .collect();
    anyhow::ensure!(
        hooks.len() == 1
            && hooks[0].0 == "workloads.rwop-guard.dev"
            && !hooks[0].1.iter().any(|r| r.starts_with("persistentvolume")),
        "the default install's webhooks are not W2 alone: {hooks:?}"
    );
    // A V2 denial by the release's ValidatingAdmissionPolicy (it runs before the shared
    // webhook, which is also registered).
    let name = "rwop-install-pv";
    let mut pv = crate::harness::csi_volume(name, &[RWX]);
    pv["spec"]["storageClassName"] = LONE_CLASS.into();
    env.apply(&[pv])?;
    let expected = format!(
        "Error from server (Forbidden): persistentvolumes \"{name}\" is forbidden: \
         ValidatingAdmissionPolicy 'guard-rwop-guard-access-modes' with binding \
         'guard-rwop-guard-access-modes' denied request: PersistentVolume \"{name}\": access mode \
         change [ReadWriteMany] -> [ReadWriteOncePod] is not allowed; only [ReadWriteOnce] -> \
         [ReadWriteOncePod] is supported \
         (https://kubernetes.io/docs/tasks/administer-cluster/change-pv-access-mode-readwriteoncepod/)"
    );
    wait_until(
        "the release's policy to deny",
        Duration::from_secs(30),
        || {
            let out = env.kubectl(&[
                "patch",
                "pv",
                name,
                "--type=merge",
                "-p",
                &json!({"spec": {"accessModes": [RWOP]}}).to_string(),
            ]);
            Ok((out.stderr.trim_end() == expected).then_some(()))
        },
    )?;
    // The controller manager's ReplicaSet controller creates the webhook's pods in the
    // restricted namespace (no kubelet runs them).
    wait_until(
        "the webhook's pods admitted under the restricted Pod Security Standard",
        Duration::from_secs(60),
        || {
            let out = env.kubectl(&[
                "get",
                "pods",
                "-n",
                "rwop-install",
                "-l",
                "app.kubernetes.io/instance=guard",
                "-o",
                "name",
            ]);
            Ok((out.stdout.lines().count() == 2).then_some(()))
        },
    )
    .with_context(|| {
        let rs = env.kubectl(&["get", "replicasets", "-n", "rwop-install", "-o", "yaml"]);
        format!("ReplicaSets: {}", rs.stdout)
    })?;
    notes_commands_prove_what_they_say(env, helm)
}

/// The commands the chart's NOTES.txt prints for "see a rule at work", run as printed: the
/// server-side dry run on a `[ReadWriteOnce]` volume is denied by the release's policy and
/// writes nothing, and the listing shows the release's rule objects.
fn notes_commands_prove_what_they_say(
    env: &Env,
    helm: &dyn Fn(&[&str]) -> Out,
) -> anyhow::Result<()> {
    let name = "rwop-install-notes-pv";
    // Reserved for a claim that never exists, so no other case's pending claim binds it.
    let mut volume = crate::harness::csi_volume(name, &[RWO]);
    volume["spec"]["claimRef"] = json!({"namespace": "rwop-install-none", "name": "none"});
    env.apply(&[volume])?;
    let notes = helm(&["get", "notes", "guard"]).success()?.stdout;
    let command = |start: &str| {
        notes
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .map(str::to_owned)
            .with_context(|| format!("NOTES.txt has no command starting {start:?}:\n{notes}"))
    };
    let script = [
        command("PV=$(kubectl get pv")?,
        command("kubectl patch pv \"$PV\" --dry-run=server")?,
    ]
    .join("\n");
    let cwd = std::env::temp_dir();
    let out = env.shell(&script, &cwd).failure()?;
    anyhow::ensure!(
        out.stderr.contains(
            "is forbidden: ValidatingAdmissionPolicy 'guard-rwop-guard-access-modes' with binding \
             'guard-rwop-guard-access-modes' denied request"
        ) && out.stderr.contains("-> [ReadWriteMany] is not allowed"),
        "NOTES.txt's dry run was not denied by the release's policy:\n{script}\n{out:#?}"
    );
    let listing = command("kubectl get validatingadmissionpolicies")?;
    let out = env.shell(&listing, &cwd).success()?;
    anyhow::ensure!(
        out.stdout.contains(
            "validatingadmissionpolicy.admissionregistration.k8s.io/guard-rwop-guard-access-modes"
        ),
        "NOTES.txt's listing does not show the release's policy:\n{out:#?}"
    );
    // A dry run: the volume is as it was.
    let modes = env.kubectl(&["get", "pv", name, "-o", "jsonpath={.spec.accessModes}"]);
    anyhow::ensure!(modes.success()?.stdout == format!("[\"{RWO}\"]"));
    Ok(())
}

const RWO: &str = "ReadWriteOnce";
const ROX: &str = "ReadOnlyMany";
const RWX: &str = "ReadWriteMany";
const RWOP: &str = "ReadWriteOncePod";
const MUTATED_FROM: &str = "rwop-guard.dev/mutated-from";
const MIGRATED_FROM: &str = "rwop-guard.dev/migrated-from";
const MIGRATION: &str = "rwop-guard.dev/migration";
const OPT_OUT: &str = "rwop-guard.dev/mutate";
/// The chart's full name for the release the cases render ("diff"): the in-tree objects' prefix.
const PREFIX: &str = "diff-rwop-guard";
/// Classes the policies list, and one they do not.
const LISTED: [&str; 2] = ["diff-fast", "diff-fast-b"];
const UNLISTED: &str = "diff-slow";
/// Volumes of this class are never bound by a claim of the cases.
const LONE_CLASS: &str = "diff-none";
/// The chart's full name for the default install's release ("guard").
const PREFIX_INSTALL: &str = "guard-rwop-guard";

/// One policy under test: the chart values of `policy` (its namespaces are `<prefix>-a` … `-d`)
/// and how many generated cases of each kind to send.
struct Spec {
    prefix: &'static str,
    seed: u8,
    policy: fn(&str) -> Value,
    volumes: usize,
    creates: usize,
    reapplies: usize,
}

const DENY: Spec = Spec {
    prefix: "dd",
    seed: 1,
    policy: |p| {
        json!({
            "validation": {"action": "deny"},
            "mutation": {"enabled": true, "storageClasses": LISTED,
                         "excludeNamespaces": ["kube-system", format!("{p}-c")]},
        })
    },
    volumes: 60,
    creates: 50,
    reapplies: 25,
};

const WARN: Spec = Spec {
    prefix: "dw",
    seed: 2,
    policy: |p| {
        json!({
            "validation": {"action": "warn"},
            "mutation": {
                "enabled": true, "storageClasses": [LISTED[0]],
                "namespaces": [format!("{p}-a"), format!("{p}-b"), format!("{p}-c")],
                "excludeNamespaces": [format!("{p}-b")],
                "namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": [format!("{p}-c")]}]},
            },
        })
    },
    volumes: 45,
    creates: 40,
    reapplies: 15,
};

const DEFAULT: Spec = Spec {
    prefix: "df",
    seed: 3,
    policy: |_| json!({}),
    volumes: 30,
    creates: 15,
    reapplies: 20,
};

/// A request under test, sent as a server-side dry run.
#[derive(Clone, Debug)]
enum Request {
    /// `kubectl <verb…> --dry-run=server -o json -f -` with this manifest.
    Manifest {
        verb: &'static [&'static str],
        manifest: Value,
    },
    /// `kubectl patch pv NAME --type=merge -p PATCH --dry-run=server -o json`.
    PatchVolume { name: String, patch: Value },
}

#[derive(Clone, Debug)]
struct DiffCase {
    /// What the case is, for failure messages.
    what: String,
    namespace: Option<String>,
    name: String,
    request: Request,
}

/// What a request came to, as far as both engines must agree.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    code: i32,
    /// `Forbidden`, `Invalid`, … from `Error from server (…)`.
    error_class: Option<String>,
    /// A denial's message after kubectl's and the API server's prefixes, or the other error text.
    error: Option<String>,
    /// Warnings of the validation rules, prefix removed (M1/M2 warnings are the webhook's only).
    warnings: Vec<String>,
    /// spec, labels and annotations of the object the API server would store.
    object: Value,
}

/// Fixtures created before any engine is installed, so both engines see the same objects.
#[derive(Default)]
struct Setup {
    /// Created with `kubectl create` (no last-applied annotation).
    created: Vec<Value>,
    /// Created with `kubectl apply` (the re-applies of a client-side apply).
    applied: Vec<Value>,
}

const VERB_CREATE: &[&str] = &["create"];
const VERB_APPLY: &[&str] = &["apply"];
const VERB_SSA: &[&str] = &["apply", "--server-side", "--force-conflicts"];
const VERB_REPLACE: &[&str] = &["replace"];

fn differential(env: &Env, spec: &Spec) -> anyhow::Result<()> {
    // The shared webhooks would also answer; they come back whatever happens here.
    let shared: Vec<Value> = env.chart.webhook_configurations(env.serve().addr);
    let names = delete_args(&shared);
    env.kubectl(
        &[
            &["delete", "--ignore-not-found", "--wait"][..],
            &names_ref(&names),
        ]
        .concat(),
    )
    .success()?;
    let result = run_policy(env, spec);
    let restored = env.register(&env.chart, &env.serve());
    result.and(restored)
}

fn names_ref(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// `kind/name` of each object, for `kubectl delete`.
fn delete_args(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default().to_lowercase(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn run_policy(env: &Env, spec: &Spec) -> anyhow::Result<()> {
    let p = spec.prefix;
    let dir = env.dir.join(format!("intree-{p}"));
    std::fs::create_dir_all(&dir)?;

    // The policy as the chart's values: the webhook engine's configurations and the file the
    // chart gives the pods; the in-tree engine's objects, which must be what `policy export`
    // prints for that file (tests/intree.rs proves it for more values, without a cluster).
    let values = dir.join("values.json");
    std::fs::write(&values, json!({"policy": (spec.policy)(p)}).to_string())?;
    let chart = Chart::render_with(
        "diff",
        &env.tls.ca_file,
        &[&values],
        &["engine.mode=webhook"],
    )?;
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, chart.policy_yaml()?)?;
    let in_tree_chart = Chart::render_with(
        "diff",
        &env.tls.ca_file,
        &[&values],
        &[
            "engine.mode=inTree",
            "engine.mutatingAdmissionPolicy=v1beta1",
        ],
    )?;
    let mut intree: Vec<Value> = in_tree_chart
        .documents
        .iter()
        .filter(|d| {
            d["kind"].as_str().is_some_and(|k| {
                k.ends_with("AdmissionPolicy") || k.ends_with("AdmissionPolicyBinding")
            })
        })
        .cloned()
        .collect();
    anyhow::ensure!(
        !in_tree_chart
            .documents
            .iter()
            .any(|d| d["kind"] == "Deployment"),
        "engine.mode=inTree rendered a Deployment"
    );
    let exported = env
        .rwop(
            &[
                "policy",
                "export",
                "--config",
                &policy.display().to_string(),
                "--prefix",
                PREFIX,
                "-o",
                "json",
            ],
            "",
        )
        .success()?;
    let mut exported: Vec<Value> = serde_json::from_str::<Value>(&exported.stdout)?["items"]
        .as_array()
        .cloned()
        .context("policy export printed no List")?;
    let key = |o: &Value| (o["kind"].to_string(), o["metadata"]["name"].to_string());
    intree.sort_by_key(key);
    exported.sort_by_key(key);
    let unlabelled: Vec<Value> = intree
        .iter()
        .cloned()
        .map(|mut o| {
            o["metadata"].as_object_mut().map(|m| m.remove("labels"));
            o
        })
        .collect();
    anyhow::ensure!(
        unlabelled == exported,
        "the chart's in-tree objects are not what policy export prints"
    );
    let mutates = intree
        .iter()
        .any(|o| o["metadata"]["name"] == format!("{PREFIX}-mutate"));

    // Namespaces and stored objects, created while no engine is installed.
    for ns in ["a", "b", "c", "d"] {
        let name = format!("{p}-{ns}");
        env.namespace(&name)?;
        env.kubectl(&[
            "label",
            "namespace",
            &name,
            &format!("diff-team={ns}"),
            "--overwrite",
        ])
        .success()?;
    }
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[spec.seed; 32]);
    let mut setup = Setup::default();
    let mut cases = fixed_cases(p, &mut setup);
    for i in 0..spec.volumes {
        cases.push(volume_case(p, i, &mut rng, &mut setup));
    }
    for i in 0..spec.creates {
        cases.push(create_case(p, i, &mut rng));
    }
    for i in 0..spec.reapplies {
        cases.push(reapply_case(p, i, &mut rng, &mut setup));
    }
    let probes = Probes::new(p);
    setup.created.extend(probes.setup());
    if !setup.created.is_empty() {
        env.kubectl_stdin(&["create", "-f", "-"], &docs(&setup.created))
            .success()?;
    }
    if !setup.applied.is_empty() {
        env.kubectl_stdin(&["apply", "-f", "-"], &docs(&setup.applied))
            .success()?;
    }
    eprintln!("intree {p}: {} cases", cases.len());

    // 1. The webhook alone, without cluster access.
    let serve = Serve::start(&ServeSpec {
        tls_cert: &env.tls.cert,
        tls_key: &env.tls.key,
        config: &policy,
        kubeconfig: &env.plane.kubeconfig,
        log: &dir.join("serve.log"),
        extra_args: &["--no-cluster"],
    })?;
    let webhooks = chart.webhook_configurations(serve.addr);
    env.apply(&webhooks)?;
    probes.wait(env, "the webhook alone", |o| o.webhook_only(mutates))?;
    let (webhook, webhook_audit) = send_all(env, &cases)?;

    // 2. Both engines at once, for every fixed case and a quarter of the generated ones (the
    //    rest would add a minute to the suite and little else).
    env.apply(&intree)?;
    probes.wait(env, "both engines", |o| o.both(mutates))?;
    let both_cases: Vec<DiffCase> = cases
        .iter()
        .enumerate()
        .filter(|(i, c)| i.is_multiple_of(4) || c.what.starts_with("fixed: "))
        .map(|(_, c)| c.clone())
        .collect();
    let (both_outcomes, _) = send_all(env, &both_cases)?;
    let both: BTreeMap<&str, &Outcome> = both_cases
        .iter()
        .map(|c| c.what.as_str())
        .zip(&both_outcomes)
        .collect();

    // 3. The in-tree objects alone.
    env.kubectl(
        &[
            &["delete", "--wait"][..],
            &names_ref(&delete_args(&webhooks)),
        ]
        .concat(),
    )
    .success()?;
    probes.wait_webhook_gone(env, &serve)?;
    drop(serve);
    let (in_tree, in_tree_audit) = send_all(env, &cases)?;
    env.kubectl(&[&["delete", "--wait"][..], &names_ref(&delete_args(&intree))].concat())
        .success()?;
    probes.wait(env, "no engine", ProbeResult::nothing)?;

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (w, t) = (&webhook[i], &in_tree[i]);
        if w != t {
            failures.push(format!(
                "{}: webhook and in-tree differ\n  request: {:?}\n  webhook: {w:?}\n  in-tree: {t:?}",
                case.what, case.request
            ));
        }
        if let Some(b) = both.get(case.what.as_str())
            && (b.code, &b.error, &b.object) != (w.code, &w.error, &w.object)
        {
            failures.push(format!(
                "{}: both engines at once differ from the webhook alone\n  webhook: {w:?}\n  both: {b:?}",
                case.what
            ));
        }
        if webhook_audit[i] != in_tree_audit[i] {
            failures.push(format!(
                "{}: audit annotations differ\n  webhook: {:?}\n  in-tree: {:?}",
                case.what, webhook_audit[i], in_tree_audit[i]
            ));
        }
    }
    let decided = |outcomes: &[Outcome], what: fn(&Outcome) -> bool| {
        outcomes.iter().filter(|o| what(o)).count()
    };
    eprintln!(
        "intree {p}: {} cases; webhook: {} denied, {} mutated, {} with warnings, {} with \
         audit annotations; {} differ",
        cases.len(),
        decided(&webhook, |o| o.error_class.as_deref() == Some("Forbidden")),
        decided(&webhook, |o| {
            o.object["spec"]["accessModes"] == json!([RWOP])
                && o.object["metadata"]["annotations"]
                    .as_object()
                    .is_some_and(|a| a.contains_key(MUTATED_FROM) || a.contains_key(MIGRATED_FROM))
        }),
        decided(&webhook, |o| !o.warnings.is_empty()),
        webhook_audit
            .iter()
            .filter(|a| a.as_ref().is_some_and(|a| !a.is_empty()))
            .count(),
        failures.len()
    );
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// Sends every case (several at a time), then reads the audit annotations of each from the API
/// server's audit log.
fn send_all(env: &Env, cases: &[DiffCase]) -> anyhow::Result<(Vec<Outcome>, Vec<Audit>)> {
    let start = std::fs::metadata(&env.plane.audit_log).map_or(0, |m| m.len());
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<anyhow::Result<Outcome>>>> =
        cases.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let outcome = send(env, case);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(outcome);
                    }
                }
            });
        }
    });
    let mut outcomes = Vec::with_capacity(cases.len());
    for (case, slot) in cases.iter().zip(results) {
        let outcome = slot
            .into_inner()
            .ok()
            .flatten()
            .context("a case was not sent")?
            .with_context(|| case.what.clone())?;
        outcomes.push(outcome);
    }
    let audit = audit_annotations(env, start, cases)?;
    Ok((outcomes, audit))
}

fn send(env: &Env, case: &DiffCase) -> anyhow::Result<Outcome> {
    let out = match &case.request {
        Request::Manifest { verb, manifest } => {
            let args: Vec<&str> = verb
                .iter()
                .copied()
                .chain(["--dry-run=server", "-o", "json", "-f", "-"])
                .collect();
            env.kubectl_stdin(&args, &docs(std::slice::from_ref(manifest)))
        }
        Request::PatchVolume { name, patch } => env.kubectl(&[
            "patch",
            "pv",
            name,
            "--type=merge",
            "-p",
            &patch.to_string(),
            "--dry-run=server",
            "-o",
            "json",
        ]),
    };
    outcome(&out)
}

fn outcome(out: &Out) -> anyhow::Result<Outcome> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for line in out.stderr.lines() {
        match line.strip_prefix("Warning: ") {
            Some(w) => {
                let w = strip_policy_prefix(w);
                if !is_mutation_warning(w) {
                    warnings.push(w.to_owned());
                }
            }
            None => errors.push(line),
        }
    }
    let error_text = errors.join("\n");
    let error_class = error_text
        .split_once("Error from server (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(class, _)| class.to_owned());
    let error = (!error_text.trim().is_empty()).then(|| {
        ["denied the request: ", "denied request: "]
            .iter()
            .find_map(|marker| {
                error_text
                    .split_once(marker)
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| error_text.trim().to_owned())
    });
    let object = if out.ok() {
        let v: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("kubectl printed no object: {out:#?}"))?;
        json!({
            "spec": v["spec"],
            "metadata": {"labels": v["metadata"]["labels"], "annotations": v["metadata"]["annotations"]},
        })
    } else {
        Value::Null
    };
    Ok(Outcome {
        code: out.code,
        error_class,
        error,
        warnings,
        object,
    })
}

/// `Validation failed for ValidatingAdmissionPolicy 'P' with binding 'B': MESSAGE` -> MESSAGE.
fn strip_policy_prefix(warning: &str) -> &str {
    if warning.starts_with("Validation failed for ValidatingAdmissionPolicy '")
        && let Some((_, message)) = warning.split_once("': ")
    {
        return message;
    }
    warning
}

/// The webhook's M1 and M2 warnings, which a MutatingAdmissionPolicy cannot give.
fn is_mutation_warning(warning: &str) -> bool {
    warning.starts_with("PersistentVolumeClaim \"")
        && (warning.contains(
            ": access modes changed from [ReadWriteOnce] to [ReadWriteOncePod] by rwop-guard",
        ) || warning.contains(": the applied manifest asks for [ReadWriteOnce]"))
        || warning.starts_with("PersistentVolume \"")
            && warning.contains(": the applied manifest asks for [ReadWriteOnce]")
}

/// The validation audit annotations of one request, by key without its prefix; None when
/// kubectl sent no request.
type Audit = Option<BTreeMap<String, String>>;

const AUDIT_KEYS: [&str; 4] = ["action", "v2", "rollback", "w1"];
const AUDIT_PREFIXES: [&str; 3] = [
    "validate.rwop-guard.dev",
    "diff-rwop-guard-access-modes",
    "diff-rwop-guard-transition-warnings",
];

/// The audit annotations of each case's dry-run request, from the audit log past `start`.
/// Each case sends exactly one dry-run write of its object; the log is written after the
/// response, so this waits until every case's event is there.
fn audit_annotations(env: &Env, start: u64, cases: &[DiffCase]) -> anyhow::Result<Vec<Audit>> {
    // A request sent after every case answered: once its event is in the log, so are theirs.
    // (A case whose kubectl sent nothing, e.g. an apply of an unchanged manifest, has none.)
    let barrier = cases
        .first()
        .map(|c| c.name.split('-').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
        + "-probe-v2";
    env.kubectl(&[
        "patch",
        "pv",
        &barrier,
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"barrier":"1"}}}"#,
        "--dry-run=server",
    ])
    .success()?;
    wait_until(
        "the audit log of every case",
        Duration::from_secs(30),
        || {
            let text = std::fs::read(&env.plane.audit_log)?;
            let text = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
            let mut by_object: BTreeMap<(String, String), BTreeMap<String, String>> =
                BTreeMap::new();
            for line in text.lines() {
                let Ok(event) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if event["stage"] != "ResponseComplete"
                    || !event["requestURI"]
                        .as_str()
                        .is_some_and(|u| u.contains("dryRun=All"))
                {
                    continue;
                }
                let key = (
                    event["objectRef"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    event["objectRef"]["name"].as_str().unwrap_or("").to_owned(),
                );
                let mut audit = BTreeMap::new();
                for (k, v) in event["annotations"].as_object().into_iter().flatten() {
                    if let Some((prefix, key)) = k.split_once('/')
                        && AUDIT_PREFIXES.contains(&prefix)
                        && AUDIT_KEYS.contains(&key)
                    {
                        audit.insert(key.to_owned(), v.as_str().unwrap_or_default().to_owned());
                    }
                }
                by_object.insert(key, audit);
            }
            if !by_object.contains_key(&(String::new(), barrier.clone())) {
                return Ok(None);
            }
            let key = |c: &DiffCase| (c.namespace.clone().unwrap_or_default(), c.name.clone());
            Ok(Some(
                cases
                    .iter()
                    .map(|c| by_object.get(&key(c)).cloned())
                    .collect(),
            ))
        },
    )
}

/// Requests that show which engine answers, on objects of their own.
struct Probes {
    prefix: String,
}

/// What the probes saw.
struct ProbeResult {
    /// The V2 probe (deny or warn) was answered by the webhook / a ValidatingAdmissionPolicy.
    v2_webhook: bool,
    v2_policy: bool,
    /// The W1 probe warned through the webhook / a ValidatingAdmissionPolicy.
    w1_webhook: bool,
    w1_policy: bool,
    /// The dry-run claim was mutated, and with the webhook's warning.
    mutated: bool,
    mutation_warned: bool,
    /// The re-applied claim kept [ReadWriteOncePod], and with the webhook's warning.
    kept: bool,
    keep_warned: bool,
}

impl ProbeResult {
    fn webhook_only(&self, mutates: bool) -> bool {
        self.v2_webhook
            && !self.v2_policy
            && self.w1_webhook
            && !self.w1_policy
            && self.kept
            && self.keep_warned
            && (!mutates || self.mutation_warned)
    }

    /// Both installed: the in-tree objects answer first (admission policies come before the
    /// webhooks in the API server's admission chain), and both warn.
    fn both(&self, mutates: bool) -> bool {
        self.v2_policy
            && self.w1_policy
            && self.w1_webhook
            && self.kept
            && !self.keep_warned
            && (!mutates || (self.mutated && !self.mutation_warned))
    }

    fn nothing(&self) -> bool {
        !self.v2_webhook
            && !self.v2_policy
            && !self.w1_webhook
            && !self.w1_policy
            && !self.kept
            && !self.mutated
    }
}

impl Probes {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn keep_claim(&self, modes: &[&str]) -> Value {
        let p = &self.prefix;
        let mut c = claim(
            &format!("{p}-probe-keep"),
            &format!("{p}-a"),
            modes,
            Some(LISTED[0]),
        );
        c["metadata"]["annotations"] = json!({MUTATED_FROM: RWO});
        c
    }

    fn setup(&self) -> Vec<Value> {
        let p = &self.prefix;
        vec![
            self.keep_claim(&[RWOP]),
            volume(&format!("{p}-probe-v2"), &[RWX], false),
            volume(&format!("{p}-probe-w1"), &[RWO], true),
        ]
    }

    fn probe(&self, env: &Env) -> anyhow::Result<ProbeResult> {
        let p = &self.prefix;
        let patch = |name: &str| {
            env.kubectl(&[
                "patch",
                "pv",
                name,
                "--type=merge",
                "-p",
                &json!({"spec": {"accessModes": [RWOP]}}).to_string(),
                "--dry-run=server",
            ])
        };
        let v2 = patch(&format!("{p}-probe-v2"));
        let w1 = patch(&format!("{p}-probe-w1"));
        let m1 = env.kubectl_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &claim(
                &format!("{p}-probe-m1"),
                &format!("{p}-a"),
                &[RWO],
                Some(LISTED[0]),
            )
            .to_string(),
        );
        let keep = env.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
            ],
            &self.keep_claim(&[RWO]).to_string(),
        );
        let rwop = |out: &Out| {
            serde_json::from_str::<Value>(&out.stdout)
                .is_ok_and(|c| c["spec"]["accessModes"] == json!([RWOP]))
        };
        Ok(ProbeResult {
            v2_webhook: v2
                .stderr
                .contains("admission webhook \"validate.rwop-guard.dev\"")
                || v2
                    .stderr
                    .contains(&format!("Warning: PersistentVolume \"{p}-probe-v2\"")),
            v2_policy: v2
                .stderr
                .contains("ValidatingAdmissionPolicy 'diff-rwop-guard-access-modes'"),
            w1_webhook: w1
                .stderr
                .contains(&format!("Warning: PersistentVolume \"{p}-probe-w1\"")),
            w1_policy: w1
                .stderr
                .contains("ValidatingAdmissionPolicy 'diff-rwop-guard-transition-warnings'"),
            mutated: rwop(&m1),
            mutation_warned: m1.stderr.contains("by rwop-guard (storage class"),
            kept: rwop(&keep),
            keep_warned: keep
                .stderr
                .contains("the applied manifest asks for [ReadWriteOnce]"),
        })
    }

    fn wait(
        &self,
        env: &Env,
        what: &str,
        ready: impl Fn(&ProbeResult) -> bool,
    ) -> anyhow::Result<()> {
        wait_until(
            &format!("{what} to answer"),
            Duration::from_secs(30),
            || Ok(ready(&self.probe(env)?).then_some(())),
        )
    }

    /// Waits until the API server no longer calls `serve` (its configurations deleted): a
    /// volume change the webhook would review leaves its request count unchanged.
    fn wait_webhook_gone(&self, env: &Env, serve: &Serve) -> anyhow::Result<()> {
        wait_until(
            "the webhook to be unregistered",
            Duration::from_secs(30),
            || {
                let before = serve.metric("rwop_guard_requests_total")?;
                self.probe(env)?;
                let after = serve.metric("rwop_guard_requests_total")?;
                Ok((after == before).then_some(()))
            },
        )
    }
}

/// A small random choice.
fn pick<'a, T>(rng: &mut TestRng, items: &'a [T]) -> &'a T {
    &items[(rng.next_u64() % items.len() as u64) as usize]
}

fn chance(rng: &mut TestRng, one_in: u64) -> bool {
    rng.next_u64().is_multiple_of(one_in)
}

fn claim(name: &str, namespace: &str, modes: &[&str], class: Option<&str>) -> Value {
    crate::harness::claim(name, namespace, modes, class)
}

/// A volume no claim binds (its class is one no claim asks for), CSI or hostPath, Retain.
fn volume(name: &str, modes: &[&str], hostpath: bool) -> Value {
    let mut v = crate::harness::csi_volume(name, modes);
    v["spec"]["storageClassName"] = LONE_CLASS.into();
    if hostpath {
        if let Some(spec) = v["spec"].as_object_mut() {
            spec.remove("csi");
        }
        v["spec"]["hostPath"] = json!({"path": format!("/diff/{name}")});
    }
    v
}

/// A migration state as `rwop-guard migrate` records it (compact JSON, `target` at the top).
fn migration_state(target: &str) -> String {
    json!({"version": 1, "namespace": "app", "claim": "data", "target": target,
           "reclaimPolicy": "Delete", "claimManifest": {"metadata": {"name": "data"}},
           "consumers": [], "completed": 3})
    .to_string()
}

/// Refused by the API server before admission.
const INVALID_SETS: &[&[&str]] = &[&[RWOP, RWO]];

const VALID_SETS: &[&[&str]] = &[
    &[RWO],
    &[RWO],
    &[RWOP],
    &[RWOP],
    &[RWX],
    &[ROX],
    &[RWO, ROX],
    &[RWX, RWO],
    &[ROX, RWX],
    &[RWO, RWO],
    &[RWO, RWX, ROX],
];

/// A volume update: random old and new modes (sometimes the paths that matter most: RWO ->
/// RWOP, RWOP -> RWO), reclaim policy, source, claimRef, markers and migration states, and
/// patches that also clear claimRef.uid or drop an annotation.
fn volume_case(p: &str, i: usize, rng: &mut TestRng, setup: &mut Setup) -> DiffCase {
    let name = format!("{p}-pv-{i}");
    let (old, new): (&[&str], &[&str]) = match rng.next_u64() % 4 {
        0 => (&[RWO], &[RWOP]),
        1 => (&[RWOP], &[RWO]),
        _ => (
            *pick(rng, VALID_SETS),
            *pick(rng, &[VALID_SETS, INVALID_SETS].concat()),
        ),
    };
    let hostpath = chance(rng, 3);
    let mut pv = volume(&name, old, hostpath);
    let mut what = format!("volume {name}: {old:?} -> {new:?}");
    if chance(rng, 2) {
        pv["spec"]["persistentVolumeReclaimPolicy"] = "Delete".into();
        what.push_str(", Delete");
    }
    if hostpath {
        what.push_str(", hostPath");
    }
    match rng.next_u64() % 3 {
        0 => {}
        1 => {
            pv["spec"]["claimRef"] = json!({"namespace": format!("{p}-a"), "name": "data"});
            what.push_str(", claimRef");
        }
        _ => {
            pv["spec"]["claimRef"] = json!({"namespace": format!("{p}-a"), "name": "data",
                                            "uid": format!("00000000-0000-0000-0000-{i:012}")});
            what.push_str(", claimRef.uid");
        }
    }
    let annotations = match rng.next_u64() % 9 {
        0 => None,
        1 => Some(json!({"example.com/owner": "team-a"})),
        2 => Some(json!({MIGRATED_FROM: RWO})),
        3 => Some(json!({MUTATED_FROM: RWO})),
        4 => Some(json!({MIGRATED_FROM: RWO, MIGRATION: migration_state(RWO)})),
        5 => Some(json!({MIGRATION: migration_state(RWO)})),
        6 => Some(json!({MIGRATION: migration_state(RWOP)})),
        7 => Some(json!({MIGRATION: "{\"target\": \"ReadWriteOnce\"}"})),
        _ => Some(json!({MIGRATED_FROM: RWX})),
    };
    if let Some(a) = annotations {
        what.push_str(&format!(", annotations {a}"));
        pv["metadata"]["annotations"] = a;
    }
    let mut patch = json!({"spec": {"accessModes": new}});
    if pv["spec"]["claimRef"]["uid"].is_string() && chance(rng, 2) {
        patch["spec"]["claimRef"] = json!({"uid": null});
        what.push_str(", patch clears claimRef.uid");
    }
    if pv["metadata"]["annotations"].is_object() && chance(rng, 3) {
        let dropped: Vec<String> = pv["metadata"]["annotations"]
            .as_object()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        let key = pick(rng, &dropped).clone();
        patch["metadata"] = json!({"annotations": {key.clone(): null}});
        what.push_str(&format!(", patch drops {key}"));
    }
    if chance(rng, 8) {
        patch["metadata"]["labels"] = json!({"diff": "label"});
        what.push_str(", patch adds a label");
    }
    setup.created.push(pv);
    DiffCase {
        what,
        namespace: None,
        name: name.clone(),
        request: Request::PatchVolume { name, patch },
    }
}

/// A new claim: random namespace, modes, class (listed, unlisted, "" or absent), annotations
/// (opt-out in several spellings), volumeName, selector, and how it is created.
fn create_case(p: &str, i: usize, rng: &mut TestRng) -> DiffCase {
    let name = format!("{p}-new-{i}");
    let ns = format!("{p}-{}", pick(rng, &["a", "a", "b", "c", "d"]));
    const NEW_SETS: &[&[&str]] = &[
        &[RWO],
        &[RWO],
        &[RWO],
        &[RWO, RWO],
        &[RWX],
        &[RWO, ROX],
        &[RWOP],
    ];
    let modes = *pick::<&[&str]>(rng, NEW_SETS);
    let class = *pick(
        rng,
        &[
            None,
            Some(""),
            Some(LISTED[0]),
            Some(LISTED[0]),
            Some(LISTED[1]),
            Some(UNLISTED),
        ],
    );
    let mut c = claim(&name, &ns, modes, class);
    let annotations = pick(
        rng,
        &[
            Value::Null,
            Value::Null,
            json!({"example.com/owner": "team-a"}),
            json!({OPT_OUT: "false"}),
            json!({OPT_OUT: "FALSE"}),
            json!({OPT_OUT: "true"}),
        ],
    )
    .clone();
    if !annotations.is_null() {
        c["metadata"]["annotations"] = annotations;
    }
    if chance(rng, 6) {
        c["spec"]["volumeName"] = format!("{p}-somewhere").into();
    }
    match rng.next_u64() % 8 {
        0 => c["spec"]["selector"] = json!({"matchLabels": {"tier": "db"}}),
        1 => {
            c["spec"]["selector"] =
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})
        }
        _ => {}
    }
    let verb = *pick(rng, &[VERB_CREATE, VERB_APPLY, VERB_SSA]);
    DiffCase {
        what: format!("new claim ({}) {c}", verb.join(" ")),
        namespace: Some(ns),
        name,
        request: Request::Manifest { verb, manifest: c },
    }
}

/// A re-applied [ReadWriteOnce] manifest over a stored claim: [ReadWriteOncePod] marked as
/// mutated (M1) or migrated, or not, or under migration; created by apply or create; re-applied
/// by apply, server-side apply or replace, with or without the marker.
fn reapply_case(p: &str, i: usize, rng: &mut TestRng, setup: &mut Setup) -> DiffCase {
    let name = format!("{p}-old-{i}");
    let ns = format!("{p}-{}", pick(rng, &["a", "b", "c", "d"]));
    let class = Some(LISTED[0]);
    let old_modes: &[&str] = if chance(rng, 6) { &[RWO] } else { &[RWOP] };
    let mut stored = claim(&name, &ns, old_modes, class);
    let annotations = pick(
        rng,
        &[
            json!({MUTATED_FROM: RWO}),
            json!({MUTATED_FROM: RWO}),
            json!({MIGRATED_FROM: RWO}),
            json!({MIGRATED_FROM: RWO, "example.com/owner": "team-a"}),
            json!({MUTATED_FROM: RWO, MIGRATION: migration_state(RWOP)}),
            json!({MUTATED_FROM: RWX}),
            json!({"example.com/owner": "team-a"}),
        ],
    )
    .clone();
    stored["metadata"]["annotations"] = annotations.clone();
    let by_apply = chance(rng, 2);
    let mut manifest = claim(&name, &ns, &[RWO], class);
    let keep_marker = chance(rng, 2);
    if keep_marker {
        manifest["metadata"]["annotations"] = annotations.clone();
    }
    let verb = *pick(rng, &[VERB_APPLY, VERB_APPLY, VERB_SSA, VERB_REPLACE]);
    let what = format!(
        "re-applied claim {ns}/{name}: stored {old_modes:?} {annotations} ({}), {} [ReadWriteOnce]{}",
        if by_apply { "applied" } else { "created" },
        verb.join(" "),
        if keep_marker {
            " with the annotations"
        } else {
            " without annotations"
        }
    );
    if by_apply {
        setup.applied.push(stored);
    } else {
        setup.created.push(stored);
    }
    DiffCase {
        what,
        namespace: Some(ns),
        name,
        request: Request::Manifest { verb, manifest },
    }
}

/// The requests of the admission cases (tests/e2e/admission.rs), over objects of their own.
fn fixed_cases(p: &str, setup: &mut Setup) -> Vec<DiffCase> {
    let mut cases = Vec::new();
    let mut patch_volume = |what: &str, pv: Value, new: &[&str], setup: &mut Setup| {
        let name = pv["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        setup.created.push(pv);
        cases.push(DiffCase {
            what: format!("fixed: {what}"),
            namespace: None,
            name: name.clone(),
            request: Request::PatchVolume {
                name,
                patch: json!({"spec": {"accessModes": new}}),
            },
        });
    };
    // V2.
    patch_volume(
        "v2 rwx -> rwop",
        volume(&format!("{p}-v2-rwx"), &[RWX], false),
        &[RWOP],
        setup,
    );
    patch_volume(
        "v2 rwop -> rwo",
        volume(&format!("{p}-v2-back"), &[RWOP], false),
        &[RWO],
        setup,
    );
    patch_volume(
        "v2 rwo -> rox",
        volume(&format!("{p}-v2-rox"), &[RWO], false),
        &[ROX],
        setup,
    );
    // V1 on update: the API server refuses it first.
    patch_volume(
        "v1 rwop + rwo",
        volume(&format!("{p}-v1-add"), &[RWOP], false),
        &[RWOP, RWO],
        setup,
    );
    // W1.
    let mut bound = volume(&format!("{p}-w1-bound"), &[RWO], false);
    bound["spec"]["persistentVolumeReclaimPolicy"] = "Delete".into();
    bound["spec"]["claimRef"] = json!({"namespace": format!("{p}-a"), "name": "data", "uid": "11111111-2222-3333-4444-555555555555"});
    patch_volume("w1 bound, Delete", bound, &[RWOP], setup);
    patch_volume(
        "w1 hostPath",
        volume(&format!("{p}-w1-hostpath"), &[RWO], true),
        &[RWOP],
        setup,
    );
    patch_volume(
        "w1 clean",
        volume(&format!("{p}-w1-clean"), &[RWO], false),
        &[RWOP],
        setup,
    );
    // A migrated volume moved back by hand: denied with the undo hint.
    let mut migrated = volume(&format!("{p}-migrated"), &[RWOP], false);
    migrated["metadata"]["annotations"] = json!({MIGRATED_FROM: RWO});
    migrated["spec"]["claimRef"] = json!({"namespace": format!("{p}-a"), "name": "data"});
    patch_volume("v2 undo hint", migrated, &[RWO], setup);

    // M1, and the claims it leaves.
    let ns = format!("{p}-a");
    let mut new_claim = |what: &str, c: Value, verb: &'static [&'static str]| {
        let name = c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        cases.push(DiffCase {
            what: format!("fixed: {what}"),
            namespace: Some(ns.clone()),
            name,
            request: Request::Manifest { verb, manifest: c },
        });
    };
    new_claim(
        "m1 explicit listed class",
        claim(&format!("{p}-explicit"), &ns, &[RWO], Some(LISTED[0])),
        VERB_APPLY,
    );
    new_claim(
        "m1 no class",
        claim(&format!("{p}-default-class"), &ns, &[RWO], None),
        VERB_CREATE,
    );
    new_claim(
        "m1 ssa",
        claim(&format!("{p}-ssa"), &ns, &[RWO], Some(LISTED[0])),
        VERB_SSA,
    );
    new_claim(
        "m1 unlisted class",
        claim(&format!("{p}-intree"), &ns, &[RWO], Some(UNLISTED)),
        VERB_APPLY,
    );
    new_claim(
        "m1 empty class",
        claim(&format!("{p}-no-class"), &ns, &[RWO], Some("")),
        VERB_APPLY,
    );
    let mut opt_out = claim(&format!("{p}-opt-out"), &ns, &[RWO], Some(LISTED[0]));
    opt_out["metadata"]["annotations"] = json!({OPT_OUT: "false"});
    new_claim("m1 opt-out", opt_out, VERB_APPLY);
    let mut pinned = claim(&format!("{p}-pinned"), &ns, &[RWO], Some(LISTED[0]));
    pinned["spec"]["volumeName"] = format!("{p}-w1-clean").into();
    new_claim("m1 volumeName", pinned, VERB_APPLY);
    let mut selector = claim(&format!("{p}-selector"), &ns, &[RWO], Some(LISTED[0]));
    selector["spec"]["selector"] = json!({"matchLabels": {"tier": "db"}});
    new_claim("m1 selector", selector, VERB_APPLY);
    new_claim(
        "m1 rwx",
        claim(&format!("{p}-rwx"), &ns, &[RWX], Some(LISTED[0])),
        VERB_APPLY,
    );
    new_claim(
        "m1 rwo+rox",
        claim(&format!("{p}-rwo-rox"), &ns, &[RWO, ROX], Some(LISTED[0])),
        VERB_APPLY,
    );
    new_claim(
        "v1 mixed claim",
        claim(&format!("{p}-mixed"), &ns, &[RWOP, RWO], Some(LISTED[0])),
        VERB_APPLY,
    );
    cases
}
