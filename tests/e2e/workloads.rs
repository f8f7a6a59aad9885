//! End-to-end cases of rule W2 and of M1's look before it leaps: workloads applied over
//! ReadWriteOncePod claims they cannot run on, as `kubectl apply` prints them, through the
//! chart's `workloads.rwop-guard.dev` (its CEL compiled and run by the real API server).

use std::time::Duration;

use serde_json::{Value, json};

use crate::Case;
use crate::admission::{set_policy, warnings};
use crate::harness::{CSI_CLASS, Env, claim, docs, wait_until};

pub fn cases() -> Vec<Case> {
    vec![
        Case::shared(
            "workloads::w2_warns_for_every_kind_that_cannot_run_on_its_rwop_claim",
            w2_warns_for_every_kind,
        ),
        Case::shared(
            "workloads::writes_without_claims_or_spec_changes_never_reach_the_webhook",
            writes_without_claims_never_reach_the_webhook,
        ),
        Case::shared(
            "workloads::helm_style_install_claim_first_then_deployment_with_m1_on",
            helm_style_install,
        ),
        Case::shared(
            "workloads::m1_leaves_a_claim_rwo_when_a_workload_already_mounts_it",
            m1_looks_before_it_leaps,
        ),
        Case::exclusive(
            "workloads::deny_refuses_a_workload_that_cannot_run_and_off_says_nothing",
            deny_and_off,
        ),
    ]
}

/// A pod template mounting `claims`.
fn template(claims: &[&str], restart: &str) -> Value {
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    json!({
        "metadata": {"labels": {"app": "w2"}},
        "spec": {"restartPolicy": restart, "volumes": volumes,
                 "containers": [{"name": "app", "image": "registry.example/app:1"}]}
    })
}

fn labels() -> Value {
    json!({"matchLabels": {"app": "w2"}})
}

fn deployment(ns: &str, name: &str, replicas: i32, strategy: &str, claims: &[&str]) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"replicas": replicas, "strategy": {"type": strategy}, "selector": labels(),
                    "template": template(claims, "Always")}})
}

fn rwop_claim(ns: &str, name: &str) -> Value {
    claim(name, ns, &["ReadWriteOncePod"], Some(CSI_CLASS))
}

/// `kubectl apply` of one object; its `Warning:` lines.
fn apply_warnings(env: &Env, object: &Value) -> anyhow::Result<Vec<String>> {
    let out = env
        .kubectl_stdin(&["apply", "-f", "-"], &docs(std::slice::from_ref(object)))
        .success()?;
    Ok(warnings(&out.stderr)
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// Waits until rwop-guard's caches know claim `ns/name` is ReadWriteOncePod: a dry-run
/// Deployment with 2 replicas over it is warned (the claim's watch event has arrived).
fn wait_cached(env: &Env, ns: &str, name: &str) -> anyhow::Result<()> {
    let probe = docs(&[deployment(ns, "cache-probe", 2, "Recreate", &[name])]);
    wait_until(
        "rwop-guard's caches to see the claim",
        Duration::from_secs(30),
        || {
            let out = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &probe);
            Ok(out.stderr.contains("cache-probe").then_some(()))
        },
    )
}

fn w2_warns_for_every_kind(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-w2";
    env.namespace(ns)?;
    let names = [
        "web", "many", "agents", "rs", "batch", "nightly", "db", "debug", "safe",
    ];
    let mut claims: Vec<Value> = names.iter().map(|n| rwop_claim(ns, n)).collect();
    let mut rwo = claim("shared-rwo", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    rwo["metadata"]["annotations"] = json!({"rwop-guard.dev/mutate": "false"});
    claims.push(rwo);
    env.apply(&claims)?;
    wait_cached(env, ns, "safe")?;

    let mounts = |name: &str| format!("mounts ReadWriteOncePod claim \"{name}\"");
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            deployment(ns, "web", 1, "RollingUpdate", &["web"]),
            vec![format!(
                "Deployment \"{ns}/web\": {} with strategy RollingUpdate, maxSurge 25%: a rollout \
                 starts the new pod while the old one still holds the volume, and the new pod \
                 cannot mount it, so the rollout hangs; set strategy: Recreate (or \
                 rollingUpdate.maxSurge: 0)",
                mounts("web")
            )],
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "metadata": {"name": "many", "namespace": ns},
                   "spec": {"replicas": 2, "serviceName": "many", "selector": labels(),
                            "template": template(&["many"], "Always")}}),
            vec![format!(
                "StatefulSet \"{ns}/many\": {} with 2 replicas: only one pod at a time can use \
                 the volume, so the other replicas stay Pending; set replicas: 1, or use a \
                 StatefulSet with volumeClaimTemplates (one claim per pod)",
                mounts("many")
            )],
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                   "metadata": {"name": "agents", "namespace": ns},
                   "spec": {"selector": labels(), "template": template(&["agents"], "Always")}}),
            vec![format!(
                "DaemonSet \"{ns}/agents\": {}: only one pod in the whole cluster can use it, so \
                 the DaemonSet's pods on every other node stay Pending; use a ReadWriteOnce \
                 claim, or give each node a claim of its own",
                mounts("agents")
            )],
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                   "metadata": {"name": "rs", "namespace": ns},
                   "spec": {"replicas": 3, "selector": labels(), "template": template(&["rs"], "Always")}}),
            vec![format!(
                "ReplicaSet \"{ns}/rs\": {} with 3 replicas: only one pod at a time can use the \
                 volume, so the other replicas stay Pending; set replicas: 1, or use a \
                 StatefulSet with volumeClaimTemplates (one claim per pod)",
                mounts("rs")
            )],
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "Job",
                   "metadata": {"name": "batch", "namespace": ns},
                   "spec": {"parallelism": 2, "template": template(&["batch"], "Never")}}),
            vec![format!(
                "Job \"{ns}/batch\": {} with parallelism 2: only one pod at a time can use the \
                 volume, so the other pods stay Pending; set parallelism: 1",
                mounts("batch")
            )],
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "metadata": {"name": "nightly", "namespace": ns},
                   "spec": {"schedule": "0 3 * * *",
                            "jobTemplate": {"spec": {"template": template(&["nightly"], "OnFailure")}}}}),
            vec![format!(
                "CronJob \"{ns}/nightly\": {} and its runs can overlap (concurrencyPolicy: Allow, \
                 the default): a run that starts while the previous one still runs stays Pending \
                 until it ends; set concurrencyPolicy: Forbid",
                mounts("nightly")
            )],
        ),
        // One that can run: no warning.
        (deployment(ns, "safe", 1, "Recreate", &["safe"]), vec![]),
        // Over a ReadWriteOnce claim: nothing to say, whatever the replicas.
        (
            deployment(ns, "rwo-users", 3, "RollingUpdate", &["shared-rwo"]),
            vec![],
        ),
        // A database, then a bare debug pod on its claim: the pod is told who holds it.
        (deployment(ns, "db", 1, "Recreate", &["db"]), vec![]),
    ];
    for (object, expected) in &cases {
        let got = apply_warnings(env, object)?;
        anyhow::ensure!(
            got == *expected,
            "{} {}: got {got:#?}, expected {expected:#?}",
            object["kind"],
            object["metadata"]["name"]
        );
    }
    // The database's Deployment reaches the cache before the pod is applied.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "debug", "namespace": ns},
                     "spec": template(&["db"], "Never")["spec"]});
    let expected = format!(
        "Pod \"{ns}/debug\": mounts ReadWriteOncePod claim \"db\", which Deployment db also \
         mounts: only one pod in the whole cluster can use it, so whichever starts second stays \
         Pending while the other runs; run them in one pod, or use a ReadWriteOnce claim"
    );
    let pod_yaml = docs(std::slice::from_ref(&pod));
    wait_until(
        "the Deployment db in rwop-guard's caches",
        Duration::from_secs(30),
        || {
            let out = env.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &pod_yaml);
            Ok(warnings(&out.stderr)
                .contains(&expected.as_str())
                .then_some(()))
        },
    )?;
    anyhow::ensure!(
        apply_warnings(env, &pod)? == [expected.clone()],
        "the bare pod"
    );
    Ok(())
}

fn writes_without_claims_never_reach_the_webhook(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-w2-quiet";
    env.namespace(ns)?;
    env.apply(&[rwop_claim(ns, "data")])?;
    wait_cached(env, ns, "data")?;
    // No claim in the template: never sent.
    env.apply(&[deployment(ns, "plain", 2, "RollingUpdate", &[])])?;
    // A claim: sent once on create; a metadata-only update, and the Deployment controller's
    // ReplicaSet (it runs the Deployment's template), never.
    let web = deployment(ns, "web", 1, "Recreate", &["data"]);
    env.apply(&[web])?;
    env.kubectl(&["annotate", "deployment", "web", "-n", ns, "team=storage"])
        .success()?;
    wait_until(
        "the Deployment controller's ReplicaSet",
        Duration::from_secs(30),
        || {
            let out = env.kubectl(&["get", "replicasets", "-n", ns, "-o", "name"]);
            Ok(out.stdout.contains("replicaset.apps/web-").then_some(()))
        },
    )?;
    let in_ns = |reviews: Vec<Value>| -> Vec<Value> {
        reviews
            .into_iter()
            .filter(|r| r["namespace"] == ns)
            .collect()
    };
    anyhow::ensure!(
        in_ns(env.reviews_of(ns, "plain")?).is_empty(),
        "plain was reviewed"
    );
    let web_reviews = in_ns(env.reviews_of(ns, "web")?);
    anyhow::ensure!(
        web_reviews.len() == 1 && web_reviews[0]["operation"] == "CREATE",
        "web: {web_reviews:#?}"
    );
    let replicasets: Vec<Value> = env
        .serve()
        .reviews()
        .into_iter()
        .filter(|r| r["namespace"] == ns && (r["kind"] == "ReplicaSet" || r["kind"] == "Pod"))
        .collect();
    anyhow::ensure!(replicasets.is_empty(), "{replicasets:#?}");
    // A change of the spec (one more replica) is sent again, and warned.
    let out = env
        .kubectl(&[
            "patch",
            "deployment",
            "web",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ])
        .success()?;
    anyhow::ensure!(
        warnings(&out.stderr)
            .iter()
            .any(|w| w.starts_with(&format!("Deployment \"{ns}/web\""))
                && w.contains("with 2 replicas")),
        "{out:#?}"
    );
    Ok(())
}

/// Helm installs a chart's claims before its Deployments: M1 makes the claim ReadWriteOncePod
/// (no workload mounts it yet), then W2 warns about the Deployment's default rollout.
fn helm_style_install(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-w2-helm";
    env.namespace(ns)?;
    let manifest = docs(&[
        claim("data", ns, &["ReadWriteOnce"], Some(CSI_CLASS)),
        deployment(ns, "app", 1, "RollingUpdate", &["data"]),
    ]);
    // One `kubectl apply` of both, claim first, as Helm orders them: the Deployment may reach
    // the webhook before the claim reaches its cache, so apply again until it has.
    let first = env
        .kubectl_stdin(&["apply", "-f", "-"], &manifest)
        .success()?;
    let created = env.get("pvc", Some(ns), "data")?;
    anyhow::ensure!(
        created["spec"]["accessModes"] == json!(["ReadWriteOncePod"]),
        "M1 did not mutate: {created}"
    );
    let expected = format!("Deployment \"{ns}/app\": mounts ReadWriteOncePod claim \"data\"");
    let warned = |stderr: &str| warnings(stderr).iter().any(|w| w.starts_with(&expected));
    if !warned(&first.stderr) {
        // The warning of an UPDATE that changes the spec: a new pod template annotation.
        wait_until("W2 on the Deployment", Duration::from_secs(30), || {
            let out = env.kubectl(&[
                "patch",
                "deployment",
                "app",
                "-n",
                ns,
                "--dry-run=server",
                "--type=merge",
                "-p",
                r#"{"spec":{"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#,
            ]);
            Ok(warned(&out.stderr).then_some(()))
        })?;
    }
    Ok(())
}

/// The other order: the Deployment exists, its claim comes later: M1 leaves it [ReadWriteOnce]
/// and says why.
fn m1_looks_before_it_leaps(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-w2-m1";
    env.namespace(ns)?;
    env.apply(&[deployment(ns, "app", 1, "RollingUpdate", &["data"])])?;
    let probe = docs(&[claim("data", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]);
    let expected = format!(
        "PersistentVolumeClaim \"{ns}/data\": left [ReadWriteOnce] by rwop-guard, because \
         Deployment \"{ns}/app\" could not run with [ReadWriteOncePod]: it mounts \
         ReadWriteOncePod claim \"data\" with strategy RollingUpdate, maxSurge 25%"
    );
    // The Deployment reaches rwop-guard's cache through its watch: try dry runs until then.
    wait_until(
        "the Deployment in rwop-guard's caches",
        Duration::from_secs(30),
        || {
            let out = env.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &probe);
            Ok(warnings(&out.stderr)
                .iter()
                .any(|w| w.starts_with(&expected))
                .then_some(()))
        },
    )?;
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &probe).success()?;
    anyhow::ensure!(
        warnings(&out.stderr)
            .iter()
            .any(|w| w.starts_with(&expected)),
        "{out:#?}"
    );
    let created = env.get("pvc", Some(ns), "data")?;
    anyhow::ensure!(
        created["spec"]["accessModes"] == json!(["ReadWriteOnce"]),
        "{created}"
    );
    // A Deployment that can run on it does not hold M1 back.
    let ns2 = "e2e-w2-m1-ok";
    env.namespace(ns2)?;
    env.apply(&[deployment(ns2, "app", 1, "Recreate", &["data"])])?;
    let ok = docs(&[claim("data", ns2, &["ReadWriteOnce"], Some(CSI_CLASS))]);
    env.kubectl_stdin(&["apply", "-f", "-"], &ok).success()?;
    let created = env.get("pvc", Some(ns2), "data")?;
    anyhow::ensure!(
        created["spec"]["accessModes"] == json!(["ReadWriteOncePod"]),
        "{created}"
    );
    Ok(())
}

fn deny_and_off(env: &Env) -> anyhow::Result<()> {
    let original = std::fs::read_to_string(&env.policy)?;
    let deny = original.replace("workloads:\n  action: warn", "workloads:\n  action: deny");
    anyhow::ensure!(
        deny != original,
        "the chart's policy has no workloads.action: warn:\n{original}"
    );
    set_policy(env, &deny)?;
    let denied = denied_and_cautioned(env);
    if denied.is_err() {
        set_policy(env, &original)?;
        return denied;
    }
    let off = original.replace("workloads:\n  action: warn", "workloads:\n  action: off");
    set_policy(env, &off)?;
    let silent = silent_when_off(env);
    set_policy(env, &original)?;
    silent
}

fn denied_and_cautioned(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-w2-deny";
    env.namespace(ns)?;
    env.apply(&[rwop_claim(ns, "data"), rwop_claim(ns, "nightly")])?;
    wait_cached(env, ns, "nightly")?;
    // The claim of the `off` phase, known to the caches before W2 is turned off (so that its
    // silence is W2's, not a cache that has not seen the claim yet).
    env.namespace(OFF_NS)?;
    env.apply(&[rwop_claim(OFF_NS, "data")])?;
    wait_cached(env, OFF_NS, "data")?;
    let out = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &docs(&[deployment(ns, "web", 2, "Recreate", &["data"])]),
        )
        .failure()?;
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "admission webhook \"workloads.rwop-guard.dev\" denied the request: Deployment \
             \"{ns}/web\": mounts ReadWriteOncePod claim \"data\" with 2 replicas"
        )),
        "{out:#?}"
    );
    anyhow::ensure!(
        env.kubectl(&["get", "deployment", "web", "-n", ns])
            .failure()
            .is_ok(),
        "the refused Deployment exists"
    );
    // A caution (overlapping runs) stays a warning under deny.
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
                      "metadata": {"name": "nightly", "namespace": ns},
                      "spec": {"schedule": "0 3 * * *",
                               "jobTemplate": {"spec": {"template": template(&["nightly"], "OnFailure")}}}});
    let got = apply_warnings(env, &cron)?;
    anyhow::ensure!(
        got.len() == 1 && got[0].contains("concurrencyPolicy: Forbid"),
        "{got:#?}"
    );
    Ok(())
}

const OFF_NS: &str = "e2e-w2-off";

fn silent_when_off(env: &Env) -> anyhow::Result<()> {
    let ns = OFF_NS;
    let out = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &docs(&[deployment(ns, "web", 3, "RollingUpdate", &["data"])]),
        )
        .success()?;
    anyhow::ensure!(warnings(&out.stderr).is_empty(), "{out:#?}");
    Ok(())
}
