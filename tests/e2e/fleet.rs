//! End-to-end cases: `rwop-guard migrate` of many claims (`--all`, `--from-scan`, `--rollback`)
//! on a real control plane.
//!
//! Each case has its own namespace `e2e-fleet-<case>`; every claim is pre-bound (`volumeName`)
//! to a static CSI volume reserved for it (`claimRef` without uid), reclaim policy Delete, the
//! one a migration must protect and restore. Consumers are Deployments whose pods stay Pending
//! (there is no scheduler): `migrate` finds consumers through the pods that mount a claim.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Case;
use crate::harness::{CSI_CLASS, Env, Out, claim, csi_volume, wait_until};

pub fn cases() -> Vec<Case> {
    vec![
        Case::shared(
            "fleet::all_with_a_deployment_sharing_two_claims_scaled_down_once_then_rolled_back",
            shared_consumer_all_and_rollback,
        ),
        Case::shared(
            "fleet::scan_json_piped_into_migrate_from_scan_moves_the_candidates_only",
            scan_piped_into_from_scan,
        ),
    ]
}

const RWO: &str = "ReadWriteOnce";
const RWOP: &str = "ReadWriteOncePod";
const TIMEOUT: &str = "--timeout=90s";
/// The annotation holding the recorded progress (README, step 1).
const ANNOTATION: &str = "rwop-guard.dev/migration";
/// What `migrate` leaves for good on the claim and volume it moved (README, M2).
const MIGRATED_FROM: &str = "rwop-guard.dev/migrated-from";

/// Creates the volume `<ns>-<name>` and the claim `name` bound to it.
fn bound_claim(env: &Env, ns: &str, name: &str) -> anyhow::Result<()> {
    let pv = format!("{ns}-{name}");
    let mut volume = csi_volume(&pv, &[RWO]);
    volume["spec"]["persistentVolumeReclaimPolicy"] = "Delete".into();
    volume["spec"]["claimRef"] = json!({"namespace": ns, "name": name});
    env.kubectl_stdin(&["create", "-f", "-"], &volume.to_string())
        .success()?;
    env.wait_for("pv", None, &pv, "Available", |v| {
        v["status"]["phase"] == "Available"
    })?;
    let mut c = claim(name, ns, &[RWO], Some(CSI_CLASS));
    c["spec"]["volumeName"] = pv.as_str().into();
    env.kubectl_stdin(&["create", "-f", "-"], &c.to_string())
        .success()?;
    env.wait_bound(ns, name)?;
    Ok(())
}

/// A Deployment of one replica (strategy Recreate) whose pod mounts `claims`; waits for the pod.
fn deployment(env: &Env, ns: &str, name: &str, claims: &[&str]) -> anyhow::Result<()> {
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    let mounts: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "mountPath": format!("/{c}")}))
        .collect();
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                    "volumeMounts": mounts}],
                    "volumes": volumes,
                },
            },
        },
    });
    env.kubectl_stdin(&["create", "-f", "-"], &d.to_string())
        .success()?;
    wait_until(
        &format!("a pod of Deployment {ns}/{name}"),
        Duration::from_secs(60),
        || {
            let out = env
                .kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    ns,
                    "-l",
                    &format!("app={name}"),
                    "-o",
                    "name",
                ])
                .success()?;
            Ok((!out.stdout.trim().is_empty()).then_some(()))
        },
    )
}

/// Each claim and its volume have `modes`, the claim bound to the volume, reclaim policy Delete
/// again, no recorded state; the marker only after a migration.
fn assert_claims(env: &Env, ns: &str, claims: &[&str], modes: &str) -> anyhow::Result<()> {
    for name in claims {
        let pv_name = format!("{ns}-{name}");
        let c = env.get("pvc", Some(ns), name)?;
        let pv = env.get("pv", None, &pv_name)?;
        let marker = (modes == RWOP).then_some(RWO);
        anyhow::ensure!(
            c["spec"]["accessModes"] == json!([modes])
                && c["status"]["phase"] == "Bound"
                && c["spec"]["volumeName"] == pv_name.as_str()
                && pv["spec"]["accessModes"] == json!([modes])
                && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
                && pv["spec"]["claimRef"]["uid"] == c["metadata"]["uid"]
                && pv["metadata"]["annotations"][ANNOTATION].is_null()
                && pv["metadata"]["annotations"][MIGRATED_FROM].as_str() == marker
                && c["metadata"]["annotations"][MIGRATED_FROM].as_str() == marker,
            "{ns}/{name} did not end [{modes}]:\nclaim {c:#}\nvolume {pv:#}"
        );
    }
    Ok(())
}

/// The `summary:` line of a fleet run.
fn summary(out: &Out) -> &str {
    out.stderr
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_default()
}

/// Where in `stderr` the first line starting with one of `prefixes` is.
fn first_line(stderr: &str, prefixes: &[String]) -> Option<usize> {
    stderr
        .lines()
        .position(|l| prefixes.iter().any(|p| l.starts_with(p.as_str())))
}

/// The spec changes of Deployment `name` so far (metadata.generation) and its replicas.
fn generation(env: &Env, ns: &str, name: &str) -> anyhow::Result<(i64, i64)> {
    let d = env.get("deployment", Some(ns), name)?;
    Ok((
        d["metadata"]["generation"].as_i64().unwrap_or_default(),
        d["spec"]["replicas"].as_i64().unwrap_or_default(),
    ))
}

/// A Deployment mounting two claims and three independent claims (one with a Deployment of its
/// own): `migrate --all` runs the pair as one group, so the shared Deployment is scaled down once
/// and restored once, only after both claims are bound again; `--rollback --all` returns
/// everything to [ReadWriteOnce] the same way.
fn shared_consumer_all_and_rollback(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-fleet-shared";
    env.namespace(ns)?;
    let shared = ["shared-a", "shared-b"];
    let solo = ["solo-0", "solo-1", "solo-2"];
    let all: Vec<&str> = shared.iter().chain(solo.iter()).copied().collect();
    for name in &all {
        bound_claim(env, ns, name)?;
    }
    deployment(env, ns, "app", &shared)?;
    deployment(env, ns, "solo", &["solo-0"])?;
    let (gen0, _) = generation(env, ns, "app")?;

    let args = [
        "migrate",
        "-n",
        ns,
        "--all",
        "--yes",
        "--concurrency",
        "2",
        TIMEOUT,
    ];
    let out = env.rwop(&args, "");
    anyhow::ensure!(out.code == 0, "migrate --all failed: {out:#?}");
    anyhow::ensure!(
        out.stdout.contains(
            "run together (shared consumers, scaled down once, restored once): shared-a + shared-b"
        ) && out.stdout.contains("Deployment app"),
        "the plan groups the pair: {out:#?}"
    );
    anyhow::ensure!(
        summary(&out) == "summary: 5 migrated, 0 already done, 0 refused, 0 failed, 0 not started",
        "{out:#?}"
    );
    assert_lockstep(&out.stderr, &shared)?;
    assert_claims(env, ns, &all, RWOP)?;
    // One spec change down, one back up: scaled down once, restored once.
    let (gen1, replicas) = generation(env, ns, "app")?;
    anyhow::ensure!(
        gen1 == gen0 + 2 && replicas == 1,
        "Deployment app: generation {gen0} -> {gen1}, replicas {replicas}\n{}",
        out.stderr
    );

    let out = env.rwop(
        &["migrate", "-n", ns, "--all", "--rollback", "--yes", TIMEOUT],
        "",
    );
    anyhow::ensure!(out.code == 0, "migrate --rollback --all failed: {out:#?}");
    anyhow::ensure!(
        out.stdout
            .starts_with("Rollback of namespace e2e-fleet-shared to [ReadWriteOnce]:")
            && summary(&out)
                == "summary: 5 rolled back, 0 not migrated, 0 refused, 0 failed, 0 not started",
        "{out:#?}"
    );
    assert_lockstep(&out.stderr, &shared)?;
    assert_claims(env, ns, &all, RWO)?;
    let (gen2, replicas) = generation(env, ns, "app")?;
    anyhow::ensure!(
        gen2 == gen1 + 2 && replicas == 1,
        "Deployment app: generation {gen1} -> {gen2}, replicas {replicas}\n{}",
        out.stderr
    );
    // Nothing left to roll back.
    let out = env.rwop(&["migrate", "-n", ns, "--all", "--rollback", "--yes"], "");
    anyhow::ensure!(
        out.code == 0
            && summary(&out)
                == "summary: 0 rolled back, 5 not migrated, 0 refused, 0 failed, 0 not started",
        "{out:#?}"
    );
    Ok(())
}

/// The shared pair's progress: both scale down before either claim is deleted, and the
/// Deployment is restored only after both claims are bound.
fn assert_lockstep(stderr: &str, pair: &[&str]) -> anyhow::Result<()> {
    let step = |n: usize| -> Vec<String> {
        pair.iter()
            .map(|c| format!("{c}: [{n}/11] "))
            .collect::<Vec<_>>()
    };
    let last = |prefixes: Vec<String>| {
        prefixes
            .iter()
            .map(|p| first_line(stderr, std::slice::from_ref(p)))
            .collect::<Option<Vec<usize>>>()
            .and_then(|v| v.into_iter().max())
    };
    let (Some(both_scaled), Some(first_delete), Some(both_wait_bound), Some(first_restore)) = (
        last(step(3)),
        first_line(stderr, &step(4)),
        last(step(8)),
        first_line(stderr, &step(9)),
    ) else {
        anyhow::bail!("the pair's steps are missing:\n{stderr}");
    };
    anyhow::ensure!(
        both_scaled < first_delete && both_wait_bound < first_restore,
        "the pair did not run in lockstep:\n{stderr}"
    );
    Ok(())
}

/// `scan -o json`, its output piped into `migrate --from-scan -`: the two candidates move, the
/// claim of a Deployment with two replicas (migration-blocked, no candidate) stays.
fn scan_piped_into_from_scan(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-fleet-scan";
    env.namespace(ns)?;
    for name in ["c0", "c1", "blocked"] {
        bound_claim(env, ns, name)?;
    }
    deployment(env, ns, "web", &["blocked"])?;
    env.kubectl(&["scale", "deployment", "web", "-n", ns, "--replicas=2"])
        .success()?;
    let scan = env.rwop(&["scan", "-n", ns, "-o", "json"], "");
    anyhow::ensure!(scan.code == 0, "scan failed: {scan:#?}");
    let report: Value = serde_json::from_str(&scan.stdout)?;
    let rules: Vec<(String, String)> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default().to_owned(),
                f["object"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let of = |rule: &str| -> Vec<&str> {
        rules
            .iter()
            .filter(|(r, _)| r == rule)
            .map(|(_, n)| n.as_str())
            .collect()
    };
    anyhow::ensure!(
        of("migration-candidate") == ["c0", "c1"] && of("migration-blocked") == ["blocked"],
        "{}",
        scan.stdout
    );
    let out = env.rwop(
        &["migrate", "--from-scan", "-", "--yes", TIMEOUT],
        &scan.stdout,
    );
    anyhow::ensure!(out.code == 0, "migrate --from-scan - failed: {out:#?}");
    anyhow::ensure!(
        out.stdout
            .starts_with("Migration of namespace e2e-fleet-scan to [ReadWriteOncePod]:")
            && !out.stdout.contains("blocked")
            && summary(&out)
                == "summary: 2 migrated, 0 already done, 0 refused, 0 failed, 0 not started",
        "{out:#?}"
    );
    assert_claims(env, ns, &["c0", "c1"], RWOP)?;
    assert_claims(env, ns, &["blocked"], RWO)?;
    // The same scan, again: already done.
    let out = env.rwop(&["migrate", "--from-scan", "-", "--yes"], &scan.stdout);
    anyhow::ensure!(
        out.code == 0
            && summary(&out)
                == "summary: 0 migrated, 2 already done, 0 refused, 0 failed, 0 not started",
        "{out:#?}"
    );
    Ok(())
}
