//! End-to-end cases: `rwop-guard migrate` on a real control plane.
//!
//! Each case has its own namespace `e2e-mig-<case>` with one claim, `data`, pre-bound (with
//! `volumeName`) to a static volume `e2e-mig-<case>-pv` that is reserved for it (`claimRef`
//! without uid, so no other case's claim binds it). Consumers are Deployments whose pods stay
//! Pending (there is no scheduler), which is enough: `migrate` finds consumers through the pods
//! that mount the claim.
//!
//! The safety invariants of the README are checked on every version of the volume the API
//! server stores during a case (a watch from before the first run): the volume is never deleted
//! and never has a reclaim policy other than Retain while no claim is bound to it.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use serde_json::{Value, json};

use crate::Case;
use crate::harness::hold::{Hold, HoldSpec};
use crate::harness::process::die_with_parent;
use crate::harness::{CSI_CLASS, Env, INTREE_CLASS, Out, claim, csi_volume, docs, wait_until};

pub fn cases() -> Vec<Case> {
    vec![
        Case::shared(
            "migrate::full_run_moves_claim_and_volume_to_rwop_and_restores_everything",
            full_run,
        ),
        Case::shared(
            "migrate::sigkill_at_five_points_then_resume_reaches_the_same_end_state",
            sigkill_and_resume,
        ),
        Case::shared(
            "migrate::rollback_after_the_volume_became_rwop_returns_to_the_start",
            rollback_after_volume_modes,
        ),
        Case::shared(
            "migrate::rollback_after_the_claim_is_deleted_survives_its_own_interruption",
            rollback_interrupted,
        ),
        Case::shared(
            "migrate::preflight_refuses_a_claim_that_is_not_bound",
            refuses_unbound_claim,
        ),
        Case::shared(
            "migrate::preflight_refuses_a_volume_that_is_not_rwo",
            refuses_rwx_volume,
        ),
        Case::shared(
            "migrate::preflight_refuses_a_non_csi_volume_without_allow_non_csi",
            refuses_non_csi_volume,
        ),
        Case::shared(
            "migrate::preflight_refuses_a_bare_pod_without_allow_delete_pods",
            refuses_bare_pod,
        ),
        Case::shared(
            "migrate::dry_run_and_unconfirmed_runs_print_the_plan_and_write_nothing",
            dry_run_writes_nothing,
        ),
        Case::shared(
            "migrate::reapplied_original_manifests_keep_rwop_with_the_m2_warning",
            reapply_after_migration,
        ),
        Case::shared(
            "migrate::a_finished_migration_is_left_alone_and_rolls_back_to_rwo",
            rollback_after_completion,
        ),
        Case::shared(
            "migrate::workloads_a_single_pod_claim_cannot_serve_are_refused_as_scan_says",
            refuses_workloads_as_scan_says,
        ),
        Case::shared(
            "migrate::a_claim_without_storage_class_on_a_csi_volume_is_a_scan_candidate_and_migrates",
            no_class_candidate,
        ),
        Case::shared(
            "migrate::all_twenty_claims_of_a_namespace_with_concurrency_4_sigkilled_then_resumed",
            fleet_sigkill_and_resume,
        ),
        Case::shared(
            "migrate::statefulset_of_3_replicas_sigkilled_between_delete_and_create_resumed_then_rolled_back",
            statefulset_sigkill_resume_rollback,
        ),
        Case::shared(
            "migrate::a_refused_run_a_migration_and_a_rollback_are_in_the_events_in_order",
            history_in_events,
        ),
        Case::shared(
            "migrate::without_permission_to_create_events_a_run_migrates_and_says_so_once",
            events_forbidden,
        ),
        Case::shared(
            "migrate::every_workload_kind_scanned_in_every_format_then_each_suggested_command_run_as_printed",
            every_workload_kind,
        ),
    ]
}

/// A finalizer of the test's: holds the StatefulSet after migrate's orphaning delete, so the
/// run can be killed while it waits for the StatefulSet to go (after the delete, before the
/// create), at a point that does not depend on timing.
const HOLD: &str = "e2e.rwop-guard.dev/hold";

/// `migrate --statefulset` of a 3-replica StatefulSet (Parallel pods, which stay Pending: there
/// is no scheduler) whose template claims bind to volumes reserved for them: SIGKILLed after
/// the StatefulSet's delete, resumed from the manifest recorded on the volumes, then
/// `--rollback` back to the original templates.
fn statefulset_sigkill_resume_rollback(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-mig-sts";
    env.namespace(ns)?;
    let claims: Vec<String> = (0..3).map(|i| format!("data-web-{i}")).collect();
    for name in &claims {
        let pv = format!("{ns}-{name}");
        let volume = reserved(delete_policy(csi_volume(&pv, &[RWO])), ns, name);
        env.kubectl_stdin(&["create", "-f", "-"], &volume.to_string())
            .success()?;
    }
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"},
                     "annotations": {"team": "payments"}},
        "spec": {
            "replicas": 3, "serviceName": "web", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                "name": "db", "image": "registry.k8s.io/pause:3.10",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            // Opted out of the mutating webhook, which would make the claims [ReadWriteOncePod]
            // (they could not bind to the [ReadWriteOnce] volumes reserved for them).
            "volumeClaimTemplates": [{"metadata": {"name": "data", "annotations": {OPT_OUT: "false"}}, "spec": {
                "accessModes": [RWO], "storageClassName": CSI_CLASS,
                "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    });
    env.kubectl_stdin(&["create", "-f", "-"], &sts.to_string())
        .success()?;
    for name in &claims {
        wait_bound_nudging(env, ns, name)?;
    }
    let pods_of = |uid: &str| -> anyhow::Result<Option<()>> {
        let out = env
            .kubectl(&["get", "pods", "-n", ns, "-l", "app=web", "-o", "json"])
            .success()?;
        let pods: Value = serde_json::from_str(&out.stdout)?;
        let owned = pods["items"].as_array().map_or(0, |items| {
            items
                .iter()
                .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
                .count()
        });
        Ok((owned == 3).then_some(()))
    };
    let original = env.get("statefulset", Some(ns), "web")?;
    let original_uid = text(&original["metadata"]["uid"]).to_owned();
    wait_until("3 pods of StatefulSet web", Duration::from_secs(60), || {
        pods_of(&original_uid)
    })?;
    env.kubectl(&[
        "patch",
        "statefulset",
        "web",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &json!({"metadata": {"finalizers": [HOLD]}}).to_string(),
    ])
    .success()?;

    let target = format!("{ns}/web");
    let args = [
        "migrate",
        "--statefulset",
        target.as_str(),
        "--yes",
        TIMEOUT,
    ];
    let mut run = Running::rwop(env, &args)?;
    run.wait_for("[9/13] delete StatefulSet", STEP_LIMIT)?;
    // The delete is issued (deletionTimestamp set), the run waits for the StatefulSet to go.
    wait_until(
        "the orphaning delete of StatefulSet web",
        STEP_LIMIT,
        || {
            let s = env.get("statefulset", Some(ns), "web")?;
            Ok(s["metadata"]["deletionTimestamp"].is_string().then_some(()))
        },
    )?;
    let status = run.sigkill()?;
    let first = run.stderr();
    anyhow::ensure!(
        status.signal() == Some(libc::SIGKILL),
        "migrate ended on its own ({status}):\n{first}"
    );
    // Let the StatefulSet go (the garbage collector orphans its dependents first).
    env.kubectl(&[
        "patch",
        "statefulset",
        "web",
        "-n",
        ns,
        "--type=json",
        "-p",
        &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": HOLD},
                          {"op": "remove", "path": "/metadata/finalizers/0"}])
        .to_string(),
    ])
    .success()?;
    wait_until(
        "StatefulSet web to be gone",
        Duration::from_secs(60),
        || Ok((!env.kubectl(&["get", "statefulset", "web", "-n", ns]).ok()).then_some(())),
    )?;
    // Between the delete and the create: the manifest is on every volume, the claims swapped.
    for name in &claims {
        let pv = env.get("pv", None, &format!("{ns}-{name}"))?;
        let state = recorded_state(&pv)?
            .with_context(|| format!("no state on the volume of {name}:\n{first}"))?;
        anyhow::ensure!(
            state["statefulset"]["manifest"]["spec"]["replicas"] == 3
                && pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain",
            "{name}: {state:#}\n{first}"
        );
    }

    let out = env.rwop(&args, "");
    anyhow::ensure!(out.code == 0, "the resume failed: {out:#?}");
    let migrated = env.get("statefulset", Some(ns), "web")?;
    let new_uid = text(&migrated["metadata"]["uid"]).to_owned();
    anyhow::ensure!(new_uid != original_uid, "not recreated: {migrated:#}");
    let templates = |s: &Value| s["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"].clone();
    anyhow::ensure!(
        templates(&migrated) == json!([RWOP]),
        "template: {migrated:#}"
    );
    let kept = |s: &Value| {
        let mut spec = s["spec"].clone();
        spec["volumeClaimTemplates"][0]["spec"]["accessModes"] = Value::Null;
        json!([
            s["metadata"]["labels"],
            s["metadata"]["annotations"],
            s["metadata"]["finalizers"],
            spec
        ])
    };
    let mut want = kept(&original);
    want[2] = Value::Null;
    anyhow::ensure!(
        kept(&migrated) == want,
        "changed:\n{:#}\nwas\n{want:#}",
        kept(&migrated)
    );
    // The controller's pods now belong to the new StatefulSet.
    wait_until(
        "3 pods of the new StatefulSet",
        Duration::from_secs(60),
        || pods_of(&new_uid),
    )?;
    for name in &claims {
        let c = env.get("pvc", Some(ns), name)?;
        let pv = env.get("pv", None, &format!("{ns}-{name}"))?;
        anyhow::ensure!(
            c["spec"]["accessModes"] == json!([RWOP])
                && c["status"]["phase"] == "Bound"
                && pv["spec"]["accessModes"] == json!([RWOP])
                && pv["spec"]["claimRef"]["uid"] == c["metadata"]["uid"]
                && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
                && pv["metadata"]["annotations"][ANNOTATION].is_null(),
            "{name} did not end [ReadWriteOncePod]:\nclaim {c:#}\nvolume {pv:#}"
        );
    }
    // A second run changes nothing.
    let again = env.rwop(&args, "");
    anyhow::ensure!(
        again.code == 0 && again.stderr.contains("already migrated; nothing to do"),
        "{again:#?}"
    );
    anyhow::ensure!(
        env.get("statefulset", Some(ns), "web")?["metadata"]["uid"] == new_uid.as_str()
    );

    // And back, the same way.
    let back = env.rwop(
        &[
            "migrate",
            "--statefulset",
            target.as_str(),
            "--rollback",
            "--yes",
            TIMEOUT,
        ],
        "",
    );
    anyhow::ensure!(back.code == 0, "the rollback failed: {back:#?}");
    let rolled = env.get("statefulset", Some(ns), "web")?;
    anyhow::ensure!(
        templates(&rolled) == json!([RWO]) && kept(&rolled) == want,
        "rollback: {rolled:#}"
    );
    for name in &claims {
        let c = env.get("pvc", Some(ns), name)?;
        anyhow::ensure!(
            c["spec"]["accessModes"] == json!([RWO]) && c["status"]["phase"] == "Bound",
            "{c:#}"
        );
    }
    Ok(())
}

/// `migrate --all` on 20 claims, 4 at a time: SIGKILLed once one claim reports step 4, then a
/// second run finishes every claim; at most 4 claims ran at once.
fn fleet_sigkill_and_resume(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-mig-fleet".to_owned();
    env.namespace(&ns)?;
    let names: Vec<String> = (0..20).map(|i| format!("d{i:02}")).collect();
    for name in &names {
        let pv = format!("e2e-mig-fleet-{name}");
        let volume = reserved(delete_policy(csi_volume(&pv, &[RWO])), &ns, name);
        let mut c = claim(name, &ns, &[RWO], Some(CSI_CLASS));
        c["spec"]["volumeName"] = pv.as_str().into();
        env.kubectl_stdin(&["create", "-f", "-"], &volume.to_string())
            .success()?;
        env.wait_for("pv", None, &pv, "Available", |v| {
            v["status"]["phase"] == "Available"
        })?;
        env.kubectl_stdin(&["create", "-f", "-"], &c.to_string())
            .success()?;
        wait_bound_nudging(env, &ns, name)?;
    }
    let args = [
        "migrate",
        "-n",
        &ns,
        "--all",
        "--yes",
        "--concurrency",
        "4",
        TIMEOUT,
    ];
    // Killed once the sixth claim has its claim deleted and is creating it again (held: the run
    // cannot finish before the kill): others are mid-way too.
    let hold = Hold::start(
        env,
        "e2e-hold-fleet",
        HoldSpec {
            rule: json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                         "resources": ["persistentvolumeclaims"], "scope": "Namespaced"}),
            namespace: Some(&ns),
            condition: "object.metadata.name == 'd05'".to_owned(),
            probe: ["create", "--dry-run=server", "-f", "-"]
                .map(str::to_owned)
                .to_vec(),
            probe_stdin: claim("d05", &ns, &[RWO], Some(CSI_CLASS)).to_string(),
        },
    )?;
    let mut run = Running::rwop(env, &args)?;
    run.wait_for(&format!("d05: [5/{STEPS}] "), STEP_LIMIT)?;
    hold.wait_held(STEP_LIMIT)
        .with_context(|| format!("d05's claim create; stderr:\n{}", run.stderr()))?;
    let status = run.sigkill()?;
    drop(hold);
    let first = run.stderr();
    anyhow::ensure!(
        status.signal() == Some(libc::SIGKILL),
        "migrate ended on its own ({status}):\n{first}"
    );
    let (mut running, mut most) = (0i32, 0i32);
    for line in first.lines() {
        if line.ends_with(": started") {
            running += 1;
            most = most.max(running);
        } else if line.ends_with(": migrated") || line.contains(": failed:") {
            running -= 1;
        }
    }
    anyhow::ensure!(
        (1..=4).contains(&most),
        "{most} claims ran at once:\n{first}"
    );
    let out = env.rwop(&args, "");
    anyhow::ensure!(out.code == 0, "the resume failed: {out:#?}");
    let summary_line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_default()
        .to_owned();
    let counts: Vec<usize> = summary_line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    anyhow::ensure!(
        counts.len() == 5
            && counts[0] + counts[1] == 20
            && counts[0] > 0
            && counts[2..] == [0, 0, 0],
        "20 claims migrated or already done, some resumed: {summary_line:?}\n{out:#?}"
    );
    for name in &names {
        let pv_name = format!("e2e-mig-fleet-{name}");
        let c = env.get("pvc", Some(&ns), name)?;
        let pv = env.get("pv", None, &pv_name)?;
        anyhow::ensure!(
            c["spec"]["accessModes"] == json!([RWOP])
                && c["status"]["phase"] == "Bound"
                && text(&c["spec"]["volumeName"]) == pv_name
                && pv["spec"]["accessModes"] == json!([RWOP])
                && pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
                && pv["spec"]["claimRef"]["uid"] == c["metadata"]["uid"]
                && recorded_state(&pv)?.is_none(),
            "{name} did not end migrated:\nclaim {c:#}\nvolume {pv:#}"
        );
    }
    Ok(())
}

/// The annotation holding the recorded progress (README, step 1).
const ANNOTATION: &str = "rwop-guard.dev/migration";
/// What the mutating webhook records on a claim it rewrote.
const MUTATED_FROM: &str = "rwop-guard.dev/mutated-from";
/// What `migrate` leaves for good on the claim and volume it moved (README, M2).
const MIGRATED_FROM: &str = "rwop-guard.dev/migrated-from";
/// The annotation that keeps the mutating webhook off a claim.
const OPT_OUT: &str = "rwop-guard.dev/mutate";
const CLAIM: &str = "data";
const APP: &str = "app";
const STEPS: usize = 11;
const RWO: &str = "ReadWriteOnce";
const RWOP: &str = "ReadWriteOncePod";
/// Limit for every wait of `migrate` (its default is 5m; a failure should not take that long).
const TIMEOUT: &str = "--timeout=90s";
/// Limit for a spawned `migrate` to reach a step.
const STEP_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Cases

/// Case 1: one run, exit 0, every step reported, the end state as the README promises.
fn full_run(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "full", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let history = VolumeHistory::start(env, &fx.pv)?;

    let out = fx.migrate(env, &["--yes"]);
    anyhow::ensure!(out.code == 0, "migrate failed: {out:#?}");
    anyhow::ensure!(
        out.stdout.starts_with(&format!(
            "Migration of PersistentVolumeClaim {}/{CLAIM} (PersistentVolume {}) to [{RWOP}]:",
            fx.ns, fx.pv
        )),
        "the plan's header is missing: {out:#?}"
    );
    for step in 1..=STEPS {
        let line = progress_line(&out.stderr, step)
            .with_context(|| format!("no progress line for step {step}: {out:#?}"))?;
        anyhow::ensure!(
            line.contains(" … done in ") || line.contains(" … skipped: "),
            "step {step} neither done nor skipped: {line:?}\n{out:#?}"
        );
    }
    let expect = [
        (
            2,
            format!(
                "set PersistentVolume {} spec.persistentVolumeReclaimPolicy: Delete -> Retain",
                fx.pv
            ),
        ),
        (
            3,
            format!(
                "scale consumers of {}/{CLAIM} down (Deployment {APP} replicas 1 -> 0)",
                fx.ns
            ),
        ),
        (
            4,
            format!(
                "delete PersistentVolumeClaim {}/{CLAIM} (precondition: its uid)",
                fx.ns
            ),
        ),
        (
            6,
            format!(
                "set PersistentVolume {} spec.accessModes: [{RWO}] -> [{RWOP}], annotation {MIGRATED_FROM}: {RWO}",
                fx.pv
            ),
        ),
        (
            9,
            format!("restore consumers (Deployment {APP} replicas 0 -> 1)"),
        ),
        (
            10,
            format!(
                "set PersistentVolume {} spec.persistentVolumeReclaimPolicy: Retain -> Delete",
                fx.pv
            ),
        ),
    ];
    for (step, text) in expect {
        let line = progress_line(&out.stderr, step).unwrap_or_default();
        anyhow::ensure!(
            line.contains(&text) && line.contains(" … done in "),
            "step {step} should say {text:?} and be done, got {line:?}\n{out:#?}"
        );
    }
    fx.assert_finished(env, &out, RWOP)?;
    // The watch saw the dangerous interval (unclaimed, [ReadWriteOncePod]), and it was Retain.
    let versions = history.assert_safe(env)?;
    anyhow::ensure!(
        versions
            .iter()
            .any(|v| v["spec"]["claimRef"]["uid"].is_null()
                && v["spec"]["accessModes"] == json!([RWOP])
                && v["spec"]["persistentVolumeReclaimPolicy"] == "Retain"),
        "no version of the volume was seen unclaimed and [ReadWriteOncePod]: {:#?}",
        summary(&versions)
    );
    Ok(())
}

/// Case 2: SIGKILL at five moments (after steps 1, 3, 4, 6 and 8), each time checking the live
/// volume, resuming with the same command; the last resume finishes.
fn sigkill_and_resume(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "kill", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let history = VolumeHistory::start(env, &fx.pv)?;
    let args = ["--yes", TIMEOUT];

    // Kill when step `next` starts: the steps before it are done and recorded.
    for next in [2, 4, 5, 7, 9] {
        let recorded = fx.completed(env)?;
        // Had the previous kill landed a step late, this point is the next step to start.
        let next = next.max(recorded + 1);
        let stderr = fx.kill_at(env, &args, next)?;
        // A resumed run starts where the previous one stopped, not from the top.
        let first = first_step(&stderr);
        anyhow::ensure!(
            first == Some(recorded + 1),
            "with {recorded} steps recorded, the run should start at step {}, started at {first:?}; stderr:\n{stderr}",
            recorded + 1,
        );
        fx.assert_interrupted(env, RWOP, next - 1, &stderr)?;
    }

    let recorded = fx.completed(env)?;
    let out = fx.migrate(env, &args);
    anyhow::ensure!(out.code == 0, "the resume failed: {out:#?}");
    anyhow::ensure!(
        first_step(&out.stderr) == Some(recorded + 1),
        "the resume should start at step {} ({recorded} recorded): {out:#?}",
        recorded + 1
    );
    // The plan shows what is already done.
    for step in 1..=STEPS {
        let line = plan_line(&out.stdout, step)
            .with_context(|| format!("no plan line for step {step}: {out:#?}"))?;
        anyhow::ensure!(
            line.ends_with(" (done)") == (step <= recorded),
            "plan line of step {step} with {recorded} recorded: {line:?}"
        );
    }
    fx.assert_finished(env, &out, RWOP)?;
    history.assert_safe(env)?;
    Ok(())
}

/// Case 3a: killed once the volume is [ReadWriteOncePod] and unclaimed (after step 6); the
/// rollback (through the webhook's one allowed RWOP -> RWO change) returns to the start.
fn rollback_after_volume_modes(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "rollback-modes", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let history = VolumeHistory::start(env, &fx.pv)?;

    let stderr = fx.kill_at(env, &["--yes", TIMEOUT], 7)?;
    fx.assert_interrupted(env, RWOP, 6, &stderr)?;
    let pv = env.get("pv", None, &fx.pv)?;
    anyhow::ensure!(
        pv["spec"]["accessModes"] == json!([RWOP]),
        "after step 6 the volume should be [ReadWriteOncePod]: {pv:#}"
    );

    // The plans show the live state: a resume has steps 1-6 done; the rollback starts its own
    // steps over, and marks those the live objects already satisfy.
    let resume = fx.migrate(env, &["--dry-run"]);
    anyhow::ensure!(resume.code == 0, "{resume:#?}");
    for step in 1..=STEPS {
        let line = plan_line(&resume.stdout, step).unwrap_or_default();
        anyhow::ensure!(
            line.ends_with(" (done)") == (step <= 6),
            "resume plan, step {step}: {line:?}\n{}",
            resume.stdout
        );
    }
    let plan = fx.migrate(env, &["--rollback", "--dry-run"]);
    anyhow::ensure!(plan.code == 0, "{plan:#?}");
    for (step, mark) in [
        (
            2,
            Some("(already in place: reclaim policy is already Retain)"),
        ),
        (3, None),
        (4, Some("(already in place: the claim is already deleted)")),
        (
            5,
            Some("(already in place: the volume is not bound to a claim)"),
        ),
        (6, None),
        (7, None),
    ] {
        let line = plan_line(&plan.stdout, step).unwrap_or_default();
        let ok = match mark {
            Some(m) => line.ends_with(m),
            None => !line.ends_with(')') || line.ends_with("[ReadWriteOnce])"),
        };
        anyhow::ensure!(ok, "rollback plan, step {step}: {line:?}\n{}", plan.stdout);
    }
    anyhow::ensure!(
        plan_line(&plan.stdout, 6).is_some_and(|l| l.contains(&format!("[{RWOP}] -> [{RWO}]")))
            && !plan.stdout.contains("(done)"),
        "{}",
        plan.stdout
    );

    let out = fx.migrate(env, &["--rollback", "--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "the rollback failed: {out:#?}");
    anyhow::ensure!(
        out.stdout.starts_with(&format!(
            "Rollback of PersistentVolumeClaim {}/{CLAIM} (PersistentVolume {}) to [{RWO}]:",
            fx.ns, fx.pv
        )),
        "{out:#?}"
    );
    anyhow::ensure!(
        progress_line(&out.stderr, 6).is_some_and(|l| l.contains(&format!(
            "set PersistentVolume {} spec.accessModes: [{RWOP}] -> [{RWO}], remove annotation {MIGRATED_FROM}",
            fx.pv
        )) && l.contains(" … done in ")),
        "the rollback should set the volume back to [ReadWriteOnce] in step 6: {out:#?}"
    );
    fx.assert_finished(env, &out, RWO)?;
    history.assert_safe(env)?;
    Ok(())
}

/// Case 3b: killed after the claim is deleted (step 4); the rollback is killed too (after its
/// step 6); a forward run then refuses to continue the half-done rollback; `--rollback` ends it.
fn rollback_interrupted(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "rollback-twice", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let history = VolumeHistory::start(env, &fx.pv)?;

    let stderr = fx.kill_at(env, &["--yes", TIMEOUT], 5)?;
    fx.assert_interrupted(env, RWOP, 4, &stderr)?;
    let gone = env.kubectl(&["get", "pvc", CLAIM, "-n", &fx.ns]);
    anyhow::ensure!(
        !gone.ok() && gone.stderr.contains("NotFound"),
        "after step 4 the claim should be gone: {gone:#?}"
    );

    let stderr = fx.kill_at(env, &["--rollback", "--yes", TIMEOUT], 7)?;
    anyhow::ensure!(
        first_step(&stderr) == Some(1),
        "a rollback starts its own steps from 1: {stderr}"
    );
    fx.assert_interrupted(env, RWO, 6, &stderr)?;

    let before = env.get("pv", None, &fx.pv)?;
    let refused = fx.migrate(env, &["--yes", TIMEOUT]);
    anyhow::ensure!(refused.code == 1, "expected a refusal: {refused:#?}");
    anyhow::ensure!(
        refused.stderr.contains(&format!(
            "a rollback of {}/{CLAIM} is under way (step ",
            fx.ns
        )) && refused.stderr.contains("finish it with --rollback first"),
        "{refused:#?}"
    );
    // (Compared field by field: the binder may still be binding a claim the killed run created.)
    let after = env.get("pv", None, &fx.pv)?;
    for field in [
        &["metadata", "annotations", ANNOTATION][..],
        &["spec", "accessModes"],
        &["spec", "persistentVolumeReclaimPolicy"],
    ] {
        let pick = |v: &Value| field.iter().fold(v.clone(), |v, k| v[*k].clone());
        anyhow::ensure!(
            pick(&before) == pick(&after),
            "the refused forward run changed {field:?}:\nbefore {before:#}\nafter {after:#}"
        );
    }

    let out = fx.migrate(env, &["--rollback", "--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "the rollback failed: {out:#?}");
    fx.assert_finished(env, &out, RWO)?;
    history.assert_safe(env)?;

    // Nothing is recorded any more: a second rollback has nothing to do.
    let again = fx.migrate(env, &["--rollback", "--yes"]);
    anyhow::ensure!(
        again.code == 1
            && again.stderr.contains(&format!(
                "no migration of {}/{CLAIM} is recorded on PersistentVolume {}, and it is [{RWO}] \
                 without the {MIGRATED_FROM}: {RWO} annotation that migrate leaves; nothing to roll back",
                fx.ns, fx.pv
            )),
        "{again:#?}"
    );
    Ok(())
}

/// Case 4a: a claim that is Pending (the volume it names is reserved for another claim), one
/// with no volume at all, and one that does not exist.
fn refuses_unbound_claim(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-mig-unbound";
    let pv = "e2e-mig-unbound-pv";
    env.namespace(ns)?;
    let volume = reserved(delete_policy(csi_volume(pv, &[RWO])), ns, "someone-else");
    let mut pending = claim(CLAIM, ns, &[RWO], Some(CSI_CLASS));
    pending["spec"]["volumeName"] = pv.into();
    // No volume of its (in-tree, no-provisioner) class: Pending, no volumeName.
    let orphan = claim("orphan", ns, &[RWO], Some(INTREE_CLASS));
    env.kubectl_stdin(&["create", "-f", "-"], &volume.to_string())
        .success()?;
    env.wait_for("pv", None, pv, "Available", |v| {
        v["status"]["phase"] == "Available"
    })?;
    env.kubectl_stdin(&["create", "-f", "-"], &docs(&[pending, orphan]))
        .success()?;
    // The binder has seen the claim and left it Pending.
    wait_until(
        "the binder to refuse the volume reserved for another claim",
        Duration::from_secs(60),
        || {
            let events = env.kubectl(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &format!("involvedObject.name={CLAIM},reason=FailedBinding"),
                "-o",
                "name",
            ]);
            Ok((events.ok() && !events.stdout.trim().is_empty()).then_some(()))
        },
    )?;
    let snapshot = Snapshot::take(env, ns, &[CLAIM, "orphan"], pv)?;

    let out = env.rwop(&["migrate", &format!("{ns}/{CLAIM}"), "--yes"], "");
    anyhow::ensure!(out.code == 1, "expected exit 1: {out:#?}");
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "claim {ns}/{CLAIM} is \"Pending\", not Bound; only Bound claims can be migrated"
        )),
        "{out:#?}"
    );
    anyhow::ensure!(out.stdout.is_empty(), "no plan for a refusal: {out:#?}");

    let out = env.rwop(&["migrate", &format!("{ns}/orphan"), "--yes"], "");
    anyhow::ensure!(out.code == 1, "expected exit 1: {out:#?}");
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "claim {ns}/orphan is not bound to a PersistentVolume"
        )) && out.stderr.contains("only Bound claims can be migrated"),
        "{out:#?}"
    );

    let out = env.rwop(&["migrate", &format!("{ns}/missing"), "--yes"], "");
    anyhow::ensure!(
        out.code == 1
            && out.stderr.contains(&format!(
                "claim {ns}/missing not found, and no PersistentVolume records a migration of it"
            )),
        "{out:#?}"
    );
    snapshot.assert_unchanged(env)
}

/// Case 4b: a Bound [ReadWriteMany] claim and volume.
fn refuses_rwx_volume(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "rwx", &["ReadWriteMany"], Source::Csi)?;
    let snapshot = Snapshot::take(env, &fx.ns, &[CLAIM], &fx.pv)?;
    let out = fx.migrate(env, &["--yes"]);
    anyhow::ensure!(out.code == 1, "expected exit 1: {out:#?}");
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "PersistentVolume {} has access modes [ReadWriteMany]; only [ReadWriteOnce] volumes are migrated",
            fx.pv
        )),
        "{out:#?}"
    );
    anyhow::ensure!(out.stdout.is_empty(), "no plan for a refusal: {out:#?}");
    snapshot.assert_unchanged(env)
}

/// Case 4c: a hostPath volume, refused without --allow-non-csi; with it, a warning and a plan.
fn refuses_non_csi_volume(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "hostpath", &[RWO], Source::HostPath)?;
    let snapshot = Snapshot::take(env, &fx.ns, &[CLAIM], &fx.pv)?;
    let out = fx.migrate(env, &["--yes"]);
    anyhow::ensure!(out.code == 1, "expected exit 1: {out:#?}");
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "PersistentVolume {} is not a CSI volume; ReadWriteOncePod is only supported for CSI volumes",
            fx.pv
        )) && out.stderr.contains("(pass --allow-non-csi to continue anyway)"),
        "{out:#?}"
    );
    anyhow::ensure!(out.stdout.is_empty(), "no plan for a refusal: {out:#?}");

    // The flag lifts exactly this refusal (shown with a dry run: still nothing written).
    let out = fx.migrate(env, &["--allow-non-csi", "--dry-run"]);
    anyhow::ensure!(out.code == 0, "{out:#?}");
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "warning: PersistentVolume {} is not a CSI volume",
            fx.pv
        )),
        "the warning is missing: {out:#?}"
    );
    anyhow::ensure!(
        out.stdout.contains(&format!(
            "Migration of PersistentVolumeClaim {}/{CLAIM} (PersistentVolume {}) to [{RWOP}]:",
            fx.ns, fx.pv
        )),
        "{out:#?}"
    );
    snapshot.assert_unchanged(env)
}

/// Case 4d: a pod without a controller mounts the claim: refused without --allow-delete-pods;
/// with it the pod is deleted (and not recreated) and the migration completes.
fn refuses_bare_pod(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "bare", &[RWO], Source::Csi)?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lonely", "namespace": fx.ns},
        "spec": {
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}],
        },
    });
    env.kubectl_stdin(&["create", "-f", "-"], &pod.to_string())
        .success()?;
    let snapshot = Snapshot::take(env, &fx.ns, &[CLAIM], &fx.pv)?;

    let out = fx.migrate(env, &["--yes"]);
    anyhow::ensure!(out.code == 1, "expected exit 1: {out:#?}");
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "claim {}/{CLAIM} is mounted by pods without a controller (lonely)",
            fx.ns
        )) && out.stderr.contains("(pass --allow-delete-pods to do so)"),
        "{out:#?}"
    );
    anyhow::ensure!(out.stdout.is_empty(), "no plan for a refusal: {out:#?}");
    snapshot.assert_unchanged(env)?;
    anyhow::ensure!(
        env.kubectl(&["get", "pod", "lonely", "-n", &fx.ns]).ok(),
        "the refused run deleted the pod"
    );

    let history = VolumeHistory::start(env, &fx.pv)?;
    let out = fx.migrate(env, &["--allow-delete-pods", "--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "{out:#?}");
    // Said once: the plan confirmed is the one that runs (prepared once).
    anyhow::ensure!(
        out.stderr
            .matches(
                "warning: pods lonely have no controller: they will be deleted and not recreated"
            )
            .count()
            == 1,
        "{out:#?}"
    );
    anyhow::ensure!(
        progress_line(&out.stderr, 3).is_some_and(|l| l.contains("delete bare Pod lonely")),
        "{out:#?}"
    );
    let pod = env.kubectl(&["get", "pod", "lonely", "-n", &fx.ns]);
    anyhow::ensure!(
        !pod.ok() && pod.stderr.contains("NotFound"),
        "the bare pod should be deleted: {pod:#?}"
    );
    fx.assert_end_state(env, RWOP, None, &out)?;
    history.assert_safe(env)?;
    Ok(())
}

/// Case 4e: --dry-run prints the plan with the exact values and writes nothing; so does a run
/// without --yes and without a terminal to confirm on.
fn dry_run_writes_nothing(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "dry", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let snapshot = Snapshot::take(env, &fx.ns, &[CLAIM], &fx.pv)?;
    let deploy = env.get("deployment", Some(&fx.ns), APP)?;

    let out = fx.migrate(env, &["--dry-run"]);
    anyhow::ensure!(out.code == 0, "{out:#?}");
    let (ns, pv) = (fx.ns.as_str(), fx.pv.as_str());
    let expect = [
        format!(
            "Migration of PersistentVolumeClaim {ns}/{CLAIM} (PersistentVolume {pv}) to [{RWOP}]:"
        ),
        format!(
            "  [1/11] record the migration state on PersistentVolume {pv} (annotation {ANNOTATION}, target [{RWOP}])"
        ),
        format!(
            "  [2/11] set PersistentVolume {pv} spec.persistentVolumeReclaimPolicy: Delete -> Retain"
        ),
        format!("  [3/11] scale consumers of {ns}/{CLAIM} down (Deployment {APP} replicas 1 -> 0)"),
        format!("  [4/11] delete PersistentVolumeClaim {ns}/{CLAIM} (precondition: its uid)"),
        format!("  [5/11] clear PersistentVolume {pv} spec.claimRef.uid"),
        format!(
            "  [6/11] set PersistentVolume {pv} spec.accessModes: [{RWO}] -> [{RWOP}], annotation {MIGRATED_FROM}: {RWO}"
        ),
        format!(
            "  [7/11] create PersistentVolumeClaim {ns}/{CLAIM} with accessModes [{RWOP}] and volumeName {pv}"
        ),
        format!("  [8/11] wait until PersistentVolumeClaim {ns}/{CLAIM} is Bound to {pv}"),
        format!("  [9/11] restore consumers (Deployment {APP} replicas 0 -> 1)"),
        format!(
            "  [10/11] set PersistentVolume {pv} spec.persistentVolumeReclaimPolicy: Retain -> Delete"
        ),
        format!("  [11/11] remove the migration state from PersistentVolume {pv}"),
        "The claim is recreated as:\n---\n".to_owned(),
    ];
    for text in &expect {
        anyhow::ensure!(
            out.stdout.contains(text.as_str()),
            "the plan lacks {text:?}:\n{}",
            out.stdout
        );
    }
    anyhow::ensure!(
        !out.stdout.contains("(done)"),
        "nothing is done yet: {out:#?}"
    );
    // The claim as it will be created: the target mode, the volume, labels and user annotations.
    let yaml = out
        .stdout
        .split_once("The claim is recreated as:\n---\n")
        .map(|(_, y)| y)
        .unwrap_or_default();
    for text in [
        format!("- {RWOP}"),
        format!("volumeName: {pv}"),
        format!("name: {CLAIM}"),
        format!("namespace: {ns}"),
        "e2e: dry".to_owned(),
        format!("{OWNER_ANNOTATION}: dry"),
    ] {
        anyhow::ensure!(
            yaml.contains(&text),
            "the recreated claim lacks {text:?}:\n{yaml}"
        );
    }
    for managed in ["pv.kubernetes.io/bind-completed", "uid:", "resourceVersion"] {
        anyhow::ensure!(
            !yaml.contains(managed),
            "the recreated claim carries {managed:?}:\n{yaml}"
        );
    }
    anyhow::ensure!(
        first_step(&out.stderr).is_none(),
        "a dry run runs no step: {out:#?}"
    );

    // No --yes and stdin is not a terminal (here: empty): the plan, no question answered, exit 1.
    let out = fx.migrate(env, &[]);
    anyhow::ensure!(out.code == 1, "{out:#?}");
    anyhow::ensure!(
        out.stderr
            .contains("not confirmed; nothing changed (use --yes to skip the question)"),
        "{out:#?}"
    );
    anyhow::ensure!(first_step(&out.stderr).is_none(), "{out:#?}");
    // Declined explicitly.
    let out = env.rwop(&["migrate", &fx.target()], "n\n");
    anyhow::ensure!(
        out.code == 1 && out.stderr.contains("not confirmed; nothing changed"),
        "{out:#?}"
    );

    snapshot.assert_unchanged(env)?;
    let after = env.get("deployment", Some(&fx.ns), APP)?;
    anyhow::ensure!(
        after["spec"]["replicas"] == 1
            && after["metadata"]["generation"] == deploy["metadata"]["generation"],
        "the Deployment changed:\nbefore {deploy:#}\nafter {after:#}"
    );
    Ok(())
}

/// Case 5 (README "`migrate`", "Manifests kept from before"): after a migration, the user
/// re-applies the claim and volume manifests they kept ([ReadWriteOnce]) with `kubectl apply`:
/// both are accepted with rule M2's warning and stay [ReadWriteOncePod], on the same volume.
fn reapply_after_migration(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "reapply", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let out = fx.migrate(env, &["--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "migrate failed: {out:#?}");
    fx.assert_end_state(env, RWOP, Some(1), &out)?;
    let claim_before = env.get("pvc", Some(&fx.ns), CLAIM)?;

    let (volume, claim) = &fx.manifests;
    let applied = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &docs(&[volume.clone(), claim.clone()]),
        )
        .success()?;
    for subject in [
        format!("PersistentVolume \"{}\"", fx.pv),
        format!("PersistentVolumeClaim \"{}/{CLAIM}\"", fx.ns),
    ] {
        let warning = format!(
            "Warning: {subject}: the applied manifest asks for [{RWO}], but the object is \
             [{RWOP}] because rwop-guard migrate moved it; kept [{RWOP}]"
        );
        anyhow::ensure!(
            applied.stderr.contains(&warning),
            "no M2 warning for {subject}: {applied:#?}"
        );
    }
    fx.assert_end_state(env, RWOP, Some(1), &out)?;
    let claim_after = env.get("pvc", Some(&fx.ns), CLAIM)?;
    anyhow::ensure!(
        claim_after["metadata"]["uid"] == claim_before["metadata"]["uid"],
        "the claim was replaced by the apply: {claim_after:#}"
    );
    // A second apply (now with kubectl's last-applied annotation) is accepted the same way.
    let again = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &docs(&[volume.clone(), claim.clone()]),
        )
        .success()?;
    anyhow::ensure!(
        again.stderr.matches("rwop-guard migrate moved it").count() == 2,
        "{again:#?}"
    );
    fx.assert_end_state(env, RWOP, Some(1), &out)
}

/// Case 6: a finished migration run again has nothing to do (exit 0, nothing written); its
/// `--rollback` (planned with --dry-run first) returns claim and volume to [ReadWriteOnce] on the
/// same volume, the recreated claim opted out of mutation (the webhook's cache may still see the
/// volume as [ReadWriteOncePod] when it is created).
fn rollback_after_completion(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "undo-done", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let history = VolumeHistory::start(env, &fx.pv)?;
    let out = fx.migrate(env, &["--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "migrate failed: {out:#?}");
    fx.assert_end_state(env, RWOP, Some(1), &out)?;

    let snapshot = Snapshot::take(env, &fx.ns, &[CLAIM], &fx.pv)?;
    let again = fx.migrate(env, &["--yes"]);
    anyhow::ensure!(
        again.code == 0
            && again
                .stderr
                .contains("already [ReadWriteOncePod]: already migrated; nothing to do")
            && again.stdout.is_empty(),
        "{again:#?}"
    );
    snapshot.assert_unchanged(env)?;

    let plan = fx.migrate(env, &["--rollback", "--dry-run"]);
    anyhow::ensure!(plan.code == 0, "{plan:#?}");
    let (ns, pv) = (fx.ns.as_str(), fx.pv.as_str());
    for text in [
        format!(
            "Rollback of PersistentVolumeClaim {ns}/{CLAIM} (PersistentVolume {pv}) to [{RWO}]:"
        ),
        format!(
            "  [6/11] set PersistentVolume {pv} spec.accessModes: [{RWOP}] -> [{RWO}], remove annotation {MIGRATED_FROM}"
        ),
        format!("{OPT_OUT}: \"false\""),
    ] {
        anyhow::ensure!(
            plan.stdout.contains(&text),
            "the plan lacks {text:?}:\n{}",
            plan.stdout
        );
    }
    anyhow::ensure!(
        !plan.stdout.contains("(done)") && !plan.stdout.contains("Retain -> Retain"),
        "{plan:#?}"
    );
    snapshot.assert_unchanged(env)?;

    let back = fx.migrate(env, &["--rollback", "--yes", TIMEOUT]);
    anyhow::ensure!(back.code == 0, "the rollback failed: {back:#?}");
    fx.assert_finished(env, &back, RWO)?;
    let claim = env.get("pvc", Some(ns), CLAIM)?;
    anyhow::ensure!(
        claim["metadata"]["annotations"][OPT_OUT] == "false",
        "the rollback claim should opt out of mutation: {claim:#}"
    );
    history.assert_safe(env)?;
    Ok(())
}

/// Scans `ns` (`--output json`) and returns its findings for `name`.
fn scan_findings(env: &Env, ns: &str, name: &str) -> anyhow::Result<Vec<Value>> {
    let out = env.rwop(&["scan", "-n", ns, "--output", "json"], "");
    anyhow::ensure!(out.code == 0, "scan failed: {out:#?}");
    let report: Value = serde_json::from_str(&out.stdout).context("scan --output json")?;
    Ok(report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["object"]["name"] == name)
        .cloned()
        .collect())
}

/// Case 7: a Deployment with 2 replicas sharing the claim is refused (nothing written) with the
/// message `scan` reports as migration-blocked; one whose rollout would surge (the API server's
/// default strategy) is refused unless --switch-to-recreate, which `scan`'s command carries, the
/// dry run shows, and --rollback undoes.
fn refuses_workloads_as_scan_says(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "workloads", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    env.kubectl(&["scale", "deployment", APP, "-n", &fx.ns, "--replicas=2"])
        .success()?;
    wait_until(
        "two pods mounting the claim",
        Duration::from_secs(60),
        || Ok((fx.mounting_pods(env)?.len() == 2).then_some(())),
    )?;
    let snapshot = Snapshot::take(env, &fx.ns, &[CLAIM], &fx.pv)?;
    let refusal = format!(
        "claim {}/{CLAIM} is used by Deployment {APP} with 2 replicas: only one pod can use a \
         ReadWriteOncePod claim",
        fx.ns
    );
    let out = fx.migrate(env, &["--yes", "--switch-to-recreate"]);
    anyhow::ensure!(
        out.code == 1 && out.stderr.contains(&refusal) && out.stdout.is_empty(),
        "{out:#?}"
    );
    let findings = scan_findings(env, &fx.ns, CLAIM)?;
    anyhow::ensure!(
        findings.len() == 1
            && findings[0]["rule"] == "migration-blocked"
            && text(&findings[0]["detail"]).contains(&refusal),
        "scan should report what migrate refuses: {findings:#?}"
    );
    snapshot.assert_unchanged(env)?;

    // One replica, the strategy the API server fills in for RollingUpdate: maxSurge 25%.
    env.kubectl(&["scale", "deployment", APP, "-n", &fx.ns, "--replicas=1"])
        .success()?;
    env.kubectl(&[
        "patch",
        "deployment",
        APP,
        "-n",
        &fx.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"RollingUpdate"}}}"#,
    ])
    .success()?;
    let d = env.get("deployment", Some(&fx.ns), APP)?;
    let rolling = d["spec"]["strategy"].clone();
    anyhow::ensure!(
        rolling["rollingUpdate"]["maxSurge"] == "25%",
        "the API server's default: {rolling:#}"
    );
    let out = fx.migrate(env, &["--yes"]);
    anyhow::ensure!(
        out.code == 1
            && out.stderr.contains(&format!(
                "is used by Deployment {APP} with strategy RollingUpdate, maxSurge 25%"
            ))
            && out.stderr.contains("pass --switch-to-recreate"),
        "{out:#?}"
    );
    let findings = scan_findings(env, &fx.ns, CLAIM)?;
    let command = format!("rwop-guard migrate {} --switch-to-recreate", fx.target());
    anyhow::ensure!(
        findings.len() == 1
            && findings[0]["rule"] == "migration-candidate"
            && findings[0]["command"] == command.as_str(),
        "scan should name the command migrate accepts: {findings:#?}"
    );
    let plan = fx.migrate(env, &["--switch-to-recreate", "--dry-run"]);
    anyhow::ensure!(
        plan.code == 0
            && plan_line(&plan.stdout, 3).is_some_and(|l| l.contains(&format!(
                "switch Deployment {APP} spec.strategy: RollingUpdate, maxSurge 25% -> Recreate"
            ))),
        "{plan:#?}"
    );
    let d_before = env.get("deployment", Some(&fx.ns), APP)?;
    anyhow::ensure!(
        d_before["metadata"]["generation"] == d["metadata"]["generation"],
        "the dry run changed the Deployment"
    );

    let history = VolumeHistory::start(env, &fx.pv)?;
    let out = fx.migrate(env, &["--switch-to-recreate", "--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "{out:#?}");
    fx.assert_end_state(env, RWOP, Some(1), &out)?;
    let d = env.get("deployment", Some(&fx.ns), APP)?;
    let recorded: Value = serde_json::from_str(text(
        &d["metadata"]["annotations"]["rwop-guard.dev/original-strategy"],
    ))
    .context("the original strategy is recorded on the Deployment")?;
    anyhow::ensure!(
        d["spec"]["strategy"] == json!({"type": "Recreate"}) && recorded == rolling,
        "{d:#}"
    );

    let out = fx.migrate(env, &["--rollback", "--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "{out:#?}");
    fx.assert_end_state(env, RWO, Some(1), &out)?;
    let d = env.get("deployment", Some(&fx.ns), APP)?;
    anyhow::ensure!(
        d["spec"]["strategy"] == rolling
            && d["metadata"]["annotations"]["rwop-guard.dev/original-strategy"].is_null(),
        "the rollback should restore the strategy: {d:#}"
    );
    history.assert_safe(env)?;
    Ok(())
}

/// Case 8: a claim bound by hand (`storageClassName: ""`) to a CSI volume: `scan` names it a
/// candidate with the command, and that command migrates it.
fn no_class_candidate(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "noclass", &[RWO], Source::CsiNoClass)?;
    fx.deployment(env)?;
    let findings = scan_findings(env, &fx.ns, CLAIM)?;
    let command = format!("rwop-guard migrate {}", fx.target());
    anyhow::ensure!(
        findings.len() == 1
            && findings[0]["rule"] == "migration-candidate"
            && findings[0]["command"] == command.as_str()
            && text(&findings[0]["detail"]).contains("with no storage class"),
        "{findings:#?}"
    );
    let args: Vec<&str> = command
        .split(' ')
        .skip(1)
        .chain(["--yes", TIMEOUT])
        .collect();
    let out = env.rwop(&args, "");
    anyhow::ensure!(out.code == 0, "{out:#?}");
    fx.assert_end_state(env, RWOP, Some(1), &out)?;
    // Migrated: no longer a candidate, nor anything else.
    let findings = scan_findings(env, &fx.ns, CLAIM)?;
    anyhow::ensure!(findings.is_empty(), "{findings:#?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A user annotation on the claim, to check that the recreated claim keeps it.
const OWNER_ANNOTATION: &str = "e2e.rwop-guard.dev/owner";

enum Source {
    Csi,
    /// A CSI volume and a claim bound by hand: `storageClassName: ""` on both.
    CsiNoClass,
    HostPath,
}

/// A namespace with the claim `data` Bound to its reserved volume (reclaim policy Delete).
struct Fixture {
    case: String,
    ns: String,
    pv: String,
    pv_uid: String,
    claim_uid: String,
    /// The volume and claim manifests as the user created them (what a GitOps repo holds).
    manifests: (Value, Value),
}

impl Fixture {
    fn bound(env: &Env, case: &str, modes: &[&str], source: Source) -> anyhow::Result<Self> {
        let ns = format!("e2e-mig-{case}");
        let pv = format!("e2e-mig-{case}-pv");
        env.namespace(&ns)?;
        let (volume, class) = match source {
            Source::Csi => (csi_volume(&pv, modes), CSI_CLASS),
            Source::CsiNoClass => {
                let mut v = csi_volume(&pv, modes);
                v["spec"]["storageClassName"] = "".into();
                (v, "")
            }
            Source::HostPath => (
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv},
                    "spec": {"accessModes": modes, "capacity": {"storage": "1Gi"},
                             "storageClassName": INTREE_CLASS,
                             "hostPath": {"path": format!("/e2e/{pv}")}},
                }),
                INTREE_CLASS,
            ),
        };
        let volume = reserved(delete_policy(volume), &ns, CLAIM);
        let mut c = claim(CLAIM, &ns, modes, Some(class));
        c["spec"]["volumeName"] = pv.as_str().into();
        c["metadata"]["labels"] = json!({"e2e": case});
        c["metadata"]["annotations"] = json!({OWNER_ANNOTATION: case});
        let manifests = (volume.clone(), c.clone());
        // The volume first, and Available (known to the binder) before the claim names it.
        env.kubectl_stdin(&["create", "-f", "-"], &volume.to_string())
            .success()?;
        env.wait_for("pv", None, &pv, "Available", |v| {
            v["status"]["phase"] == "Available"
        })?;
        env.kubectl_stdin(&["create", "-f", "-"], &c.to_string())
            .success()?;
        let claim = wait_bound_nudging(env, &ns, CLAIM)?;
        let volume = env.wait_for("pv", None, &pv, "Bound", |v| {
            v["status"]["phase"] == "Bound"
        })?;
        anyhow::ensure!(
            claim["spec"]["accessModes"] == json!(modes),
            "the claim was created with other modes (mutated?): {claim:#}"
        );
        anyhow::ensure!(
            volume["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"],
            "{volume:#}"
        );
        Ok(Self {
            case: case.to_owned(),
            ns,
            pv,
            pv_uid: text(&volume["metadata"]["uid"]).to_owned(),
            claim_uid: text(&claim["metadata"]["uid"]).to_owned(),
            manifests,
        })
    }

    /// A one-replica Deployment (strategy Recreate) mounting the claim, and its (Pending) pod.
    fn deployment(&self, env: &Env) -> anyhow::Result<()> {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "namespace": self.ns},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": APP}},
                "template": {
                    "metadata": {"labels": {"app": APP}},
                    "spec": {
                        "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": CLAIM}}],
                    },
                },
            },
        });
        env.kubectl_stdin(&["create", "-f", "-"], &d.to_string())
            .success()?;
        wait_until(
            &format!("a pod of Deployment {}/{APP}", self.ns),
            Duration::from_secs(60),
            || Ok((!self.mounting_pods(env)?.is_empty()).then_some(())),
        )
    }

    /// Pods that mount the claim and are not being deleted.
    fn mounting_pods(&self, env: &Env) -> anyhow::Result<Vec<String>> {
        let out = env
            .kubectl(&["get", "pods", "-n", &self.ns, "-o", "json"])
            .success()?;
        let pods: Value = serde_json::from_str(&out.stdout)?;
        Ok(pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["spec"]["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v["persistentVolumeClaim"]["claimName"] == CLAIM)
            })
            .map(|p| text(&p["metadata"]["name"]).to_owned())
            .collect())
    }

    fn target(&self) -> String {
        format!("{}/{CLAIM}", self.ns)
    }

    fn migrate(&self, env: &Env, args: &[&str]) -> Out {
        let target = self.target();
        let mut all = vec!["migrate", target.as_str()];
        all.extend_from_slice(args);
        env.rwop(&all, "")
    }

    /// `migrate` as a child with stderr piped, to follow its progress and kill it.
    fn spawn_migrate(&self, env: &Env, args: &[&str]) -> anyhow::Result<Running> {
        let target = self.target();
        let mut all = vec!["migrate", target.as_str()];
        all.extend_from_slice(args);
        Running::rwop(env, &all)
    }

    /// Runs `migrate` and SIGKILLs it inside step `step`, before that step changes anything:
    /// a [`Hold`] keeps the step's first write waiting in the API server until the kill (and
    /// refuses it then), so the run cannot get further whatever the machine's load. Returns what
    /// it printed on stderr.
    fn kill_at(&self, env: &Env, args: &[&str], step: usize) -> anyhow::Result<String> {
        let hold = self.hold(env, step)?;
        let mut run = self.spawn_migrate(env, args)?;
        run.wait_for(&format!("[{step}/{STEPS}] "), STEP_LIMIT)?;
        hold.wait_held(STEP_LIMIT)
            .with_context(|| format!("step {step}'s write; stderr:\n{}", run.stderr()))?;
        let status = run.sigkill()?;
        drop(hold);
        anyhow::ensure!(
            status.signal() == Some(libc::SIGKILL),
            "migrate was to be killed at step {step} but ended on its own ({status}); stderr:\n{}",
            run.stderr()
        );
        let recorded = self.completed(env)?;
        anyhow::ensure!(
            recorded == step - 1,
            "killed inside step {step}, the volume records {recorded} steps done; stderr:\n{}",
            run.stderr()
        );
        Ok(run.stderr())
    }

    /// A hold on the first write of `step` (forward or rollback, whose steps write the same
    /// objects in the same order).
    fn hold(&self, env: &Env, step: usize) -> anyhow::Result<Hold> {
        let (ns, pv) = (self.ns.as_str(), self.pv.as_str());
        let volume_update = json!({"apiGroups": [""], "apiVersions": ["v1"],
            "operations": ["UPDATE"], "resources": ["persistentvolumes"], "scope": "Cluster"});
        let claims = |op: &str| {
            json!({"apiGroups": [""], "apiVersions": ["v1"],
            "operations": [op], "resources": ["persistentvolumeclaims"], "scope": "Namespaced"})
        };
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (rule, namespace, condition, probe, probe_stdin) = match step {
            // RetainVolume: the reclaim policy becomes Retain.
            2 => (
                volume_update,
                None,
                format!(
                    "object.metadata.name == '{pv}' \
                     && object.spec.persistentVolumeReclaimPolicy == 'Retain' \
                     && oldObject.spec.persistentVolumeReclaimPolicy != 'Retain'"
                ),
                args(&[
                    "patch",
                    "pv",
                    pv,
                    "--dry-run=server",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"persistentVolumeReclaimPolicy":"Retain"}}"#,
                ]),
                String::new(),
            ),
            // DeleteClaim.
            4 => (
                claims("DELETE"),
                Some(ns),
                format!("oldObject.metadata.name == '{CLAIM}'"),
                args(&["delete", "pvc", CLAIM, "-n", ns, "--dry-run=server"]),
                String::new(),
            ),
            // ReleaseVolume: claimRef.uid is cleared.
            5 => (
                volume_update,
                None,
                format!(
                    "object.metadata.name == '{pv}' && has(oldObject.spec.claimRef) \
                     && has(oldObject.spec.claimRef.uid) \
                     && (!has(object.spec.claimRef) || !has(object.spec.claimRef.uid))"
                ),
                args(&[
                    "patch",
                    "pv",
                    pv,
                    "--dry-run=server",
                    "--type=json",
                    "-p",
                    r#"[{"op":"remove","path":"/spec/claimRef/uid"}]"#,
                ]),
                String::new(),
            ),
            // CreateClaim.
            7 => (
                claims("CREATE"),
                Some(ns),
                format!("object.metadata.name == '{CLAIM}'"),
                args(&["create", "--dry-run=server", "-f", "-"]),
                claim(CLAIM, ns, &[RWO], Some(CSI_CLASS)).to_string(),
            ),
            // ScaleUp: the Deployment's scale to more than 0.
            9 => (
                json!({"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["UPDATE"],
                       "resources": ["deployments/scale"], "scope": "Namespaced"}),
                Some(ns),
                format!(
                    "object.metadata.name == '{APP}' && has(object.spec.replicas) \
                     && object.spec.replicas > 0"
                ),
                args(&[
                    "scale",
                    "deployment",
                    APP,
                    "-n",
                    ns,
                    "--replicas=2",
                    "--dry-run=server",
                ]),
                String::new(),
            ),
            _ => anyhow::bail!("no hold for the write of step {step}"),
        };
        Hold::start(
            env,
            &format!("e2e-hold-{}", self.case),
            HoldSpec {
                rule,
                namespace,
                condition,
                probe,
                probe_stdin,
            },
        )
    }

    /// The recorded state on the volume, if any.
    fn state(&self, env: &Env) -> anyhow::Result<Option<Value>> {
        let pv = env.get("pv", None, &self.pv)?;
        recorded_state(&pv)
    }

    /// How many steps the recorded state says are done (0 when nothing is recorded).
    fn completed(&self, env: &Env) -> anyhow::Result<usize> {
        Ok(self
            .state(env)?
            .and_then(|s| s["completed"].as_u64())
            .map_or(0, |n| n as usize))
    }

    /// Whether a claim is bound to the volume: the live claim has the uid of the volume's
    /// claimRef, is Bound and names the volume.
    fn claim_holds(&self, env: &Env, pv: &Value) -> bool {
        let uid = text(&pv["spec"]["claimRef"]["uid"]);
        if uid.is_empty() {
            return false;
        }
        env.get("pvc", Some(&self.ns), CLAIM).is_ok_and(|c| {
            text(&c["metadata"]["uid"]) == uid
                && c["status"]["phase"] == "Bound"
                && text(&c["spec"]["volumeName"]) == self.pv
        })
    }

    /// After a SIGKILL: the volume is there, unchanged in identity, records progress towards
    /// `target` of at least `done` steps, and is Retain unless a claim holds it.
    fn assert_interrupted(
        &self,
        env: &Env,
        target: &str,
        done: usize,
        stderr: &str,
    ) -> anyhow::Result<()> {
        let pv = env
            .get("pv", None, &self.pv)
            .with_context(|| format!("the volume is gone after a kill; stderr:\n{stderr}"))?;
        anyhow::ensure!(
            text(&pv["metadata"]["uid"]) == self.pv_uid
                && pv["metadata"]["deletionTimestamp"].is_null(),
            "the volume was replaced or is being deleted: {pv:#}"
        );
        let state = recorded_state(&pv)?
            .with_context(|| format!("no progress recorded after the kill: {pv:#}\n{stderr}"))?;
        let completed = state["completed"].as_u64().unwrap_or(0) as usize;
        anyhow::ensure!(
            state["target"] == target && completed >= done,
            "killed when step {} started, the volume records {state:#}\nstderr:\n{stderr}",
            done + 1
        );
        let policy = text(&pv["spec"]["persistentVolumeReclaimPolicy"]);
        anyhow::ensure!(
            policy == "Retain" || self.claim_holds(env, &pv),
            "no claim holds the volume and its reclaim policy is {policy:?}: {pv:#}"
        );
        Ok(())
    }

    /// The run's closing line (its last) for `mode`, then [`Self::assert_end_state`] with the
    /// Deployment back at one replica.
    fn assert_finished(&self, env: &Env, out: &Out, mode: &str) -> anyhow::Result<()> {
        let how = if mode == RWOP {
            "are now"
        } else {
            "are rolled back to"
        };
        let last = format!(
            "claim {}/{CLAIM} and PersistentVolume {} {how} [{mode}]\n",
            self.ns, self.pv
        );
        anyhow::ensure!(
            out.stderr.ends_with(&last),
            "no closing line {last:?}: {out:#?}"
        );
        self.assert_end_state(env, mode, Some(1), out)
    }

    /// The README's end state: claim [mode] Bound to the same volume (recreated from the recorded
    /// manifest), volume [mode] with reclaim policy Delete and no recorded state, the
    /// Deployment's replicas back and its pod recreated.
    fn assert_end_state(
        &self,
        env: &Env,
        mode: &str,
        replicas: Option<i64>,
        out: &Out,
    ) -> anyhow::Result<()> {
        let claim = env.get("pvc", Some(&self.ns), CLAIM)?;
        let pv = env.get("pv", None, &self.pv)?;
        let ctx = || format!("\nclaim: {claim:#}\nvolume: {pv:#}\nrun: {out:#?}");
        anyhow::ensure!(
            claim["status"]["phase"] == "Bound" && text(&claim["spec"]["volumeName"]) == self.pv,
            "the claim is not Bound to {}{}",
            self.pv,
            ctx()
        );
        anyhow::ensure!(
            claim["spec"]["accessModes"] == json!([mode]),
            "the claim is not [{mode}]{}",
            ctx()
        );
        anyhow::ensure!(
            claim["metadata"]["annotations"][MUTATED_FROM].is_null(),
            "the recreated claim was rewritten by the mutating webhook{}",
            ctx()
        );
        anyhow::ensure!(
            text(&claim["metadata"]["uid"]) != self.claim_uid,
            "the claim was not recreated{}",
            ctx()
        );
        anyhow::ensure!(
            claim["metadata"]["labels"]["e2e"] == self.case.as_str()
                && claim["metadata"]["annotations"][OWNER_ANNOTATION] == self.case.as_str(),
            "the recreated claim lost its label or annotation{}",
            ctx()
        );
        anyhow::ensure!(
            text(&pv["metadata"]["uid"]) == self.pv_uid,
            "not the same PersistentVolume (uid {} before){}",
            self.pv_uid,
            ctx()
        );
        anyhow::ensure!(
            pv["spec"]["accessModes"] == json!([mode]),
            "the volume is not [{mode}]{}",
            ctx()
        );
        anyhow::ensure!(
            pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete",
            "the reclaim policy is not restored to Delete{}",
            ctx()
        );
        anyhow::ensure!(
            pv["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
                && pv["spec"]["claimRef"]["name"] == CLAIM
                && pv["spec"]["claimRef"]["namespace"] == self.ns.as_str(),
            "the volume's claimRef is not the new claim{}",
            ctx()
        );
        anyhow::ensure!(
            pv["metadata"]["annotations"][ANNOTATION].is_null(),
            "the migration state is still recorded{}",
            ctx()
        );
        // The marker of a migration: on both after one, on neither after a rollback.
        let marker = (mode == RWOP).then_some(RWO);
        for (what, obj) in [("claim", &claim), ("volume", &pv)] {
            anyhow::ensure!(
                obj["metadata"]["annotations"][MIGRATED_FROM].as_str() == marker,
                "the {what}'s {MIGRATED_FROM} annotation should be {marker:?}{}",
                ctx()
            );
        }
        if let Some(n) = replicas {
            let d = env.get("deployment", Some(&self.ns), APP)?;
            anyhow::ensure!(
                d["spec"]["replicas"] == n,
                "Deployment {APP} has replicas {} instead of {n}{}",
                d["spec"]["replicas"],
                ctx()
            );
            wait_until(
                "the restored Deployment's pod to mount the claim again",
                Duration::from_secs(60),
                || Ok((!self.mounting_pods(env)?.is_empty()).then_some(())),
            )?;
        }
        Ok(())
    }
}

/// Waits until a claim is Bound. The binder sometimes binds the volume but not yet the claim,
/// and retries only at its periodic resync (15 s); any update of the claim makes it retry at
/// once, so the wait touches an annotation of the claim every second. For setup only: the
/// claims `migrate` creates are left alone.
fn wait_bound_nudging(env: &Env, ns: &str, name: &str) -> anyhow::Result<Value> {
    let mut nudged = Instant::now();
    let mut nudges = 0;
    wait_until(
        &format!("claim {ns}/{name} to be Bound"),
        Duration::from_secs(60),
        || {
            let claim = env.get("pvc", Some(ns), name)?;
            if claim["status"]["phase"] == "Bound" {
                return Ok(Some(claim));
            }
            if nudged.elapsed() >= Duration::from_secs(1) {
                nudges += 1;
                let nudge = format!("e2e.rwop-guard.dev/nudge={nudges}");
                env.kubectl(&["annotate", "pvc", name, "-n", ns, "--overwrite", &nudge])
                    .success()?;
                nudged = Instant::now();
            }
            Ok(None)
        },
    )
}

/// Reclaim policy Delete, the one a migration must protect and restore.
fn delete_policy(mut pv: Value) -> Value {
    pv["spec"]["persistentVolumeReclaimPolicy"] = "Delete".into();
    pv
}

/// A volume reserved for one claim (`claimRef` without uid): no other case's claim binds it.
fn reserved(mut pv: Value, namespace: &str, claim: &str) -> Value {
    pv["spec"]["claimRef"] = json!({"namespace": namespace, "name": claim});
    pv
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn recorded_state(pv: &Value) -> anyhow::Result<Option<Value>> {
    match pv["metadata"]["annotations"][ANNOTATION].as_str() {
        None => Ok(None),
        Some(s) => serde_json::from_str(s)
            .map(Some)
            .with_context(|| format!("{ANNOTATION} is not JSON: {s}")),
    }
}

/// The progress line of `step` on stderr (`[N/11] what … done in 0.1s`).
fn progress_line(stderr: &str, step: usize) -> Option<&str> {
    let prefix = format!("[{step}/{STEPS}] ");
    stderr.lines().find(|l| l.starts_with(&prefix))
}

/// The plan line of `step` on stdout (`  [N/11] what`).
fn plan_line(stdout: &str, step: usize) -> Option<&str> {
    let prefix = format!("  [{step}/{STEPS}] ");
    stdout.lines().find(|l| l.starts_with(&prefix))
}

/// The first step a run reported starting.
fn first_step(stderr: &str) -> Option<usize> {
    let suffix = format!("/{STEPS}] ");
    stderr.lines().find_map(|l| {
        let rest = l.strip_prefix('[')?;
        let (n, _) = rest.split_once(&suffix)?;
        n.parse().ok()
    })
}

/// The resourceVersions of some objects, to show that a refused run wrote nothing.
struct Snapshot {
    ns: String,
    claims: Vec<(String, Value)>,
    pv: (String, Value),
}

impl Snapshot {
    fn take(env: &Env, ns: &str, claims: &[&str], pv: &str) -> anyhow::Result<Self> {
        let claims = claims
            .iter()
            .map(|c| Ok((c.to_string(), env.get("pvc", Some(ns), c)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            ns: ns.to_owned(),
            claims,
            pv: (pv.to_owned(), env.get("pv", None, pv)?),
        })
    }

    fn assert_unchanged(&self, env: &Env) -> anyhow::Result<()> {
        let (name, before) = &self.pv;
        let after = env.get("pv", None, name)?;
        anyhow::ensure!(
            after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
                && after["metadata"]["annotations"][ANNOTATION].is_null(),
            "PersistentVolume {name} changed:\nbefore {before:#}\nafter {after:#}"
        );
        for (name, before) in &self.claims {
            let after = env.get("pvc", Some(&self.ns), name)?;
            anyhow::ensure!(
                after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"],
                "claim {}/{name} changed:\nbefore {before:#}\nafter {after:#}",
                self.ns
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// A migrate process followed through its stderr

struct Running {
    child: Child,
    chunks: mpsc::Receiver<Vec<u8>>,
    stderr: Vec<u8>,
    closed: bool,
}

impl Running {
    /// `rwop-guard ARGS` as a child with this cluster's kubeconfig and stderr piped, to follow
    /// its progress and kill it.
    fn rwop(env: &Env, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = rwop_test_support::binary::command(rwop_test_support::binary::path());
        command
            .args(args)
            .env("KUBECONFIG", &env.plane.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command.spawn().context("starting rwop-guard migrate")?;
        let mut pipe = child.stderr.take().context("stderr is not piped")?;
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            chunks,
            stderr: Vec::new(),
            closed: false,
        })
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Blocks until the process has printed `needle` on stderr.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !self.stderr().contains(needle) {
            anyhow::ensure!(
                !self.closed,
                "migrate ended before printing {needle:?} ({:?}); stderr:\n{}",
                self.child.try_wait(),
                self.stderr()
            );
            match self
                .chunks
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(chunk) => self.stderr.extend(chunk),
                Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => anyhow::bail!(
                    "migrate did not print {needle:?} within {limit:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
        Ok(())
    }

    /// SIGKILL, then everything it printed.
    fn sigkill(&mut self) -> anyhow::Result<ExitStatus> {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let status = self.child.wait()?;
        while !self.closed {
            match self.chunks.recv_timeout(Duration::from_secs(10)) {
                Ok(chunk) => self.stderr.extend(chunk),
                Err(_) => self.closed = true,
            }
        }
        Ok(status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Every stored version of a volume

/// Watches one PersistentVolume from its current version on, keeping every version the API
/// server reports (a watch delivers each change, so no write is missed).
struct VolumeHistory {
    name: String,
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl VolumeHistory {
    fn start(env: &Env, name: &str) -> anyhow::Result<Self> {
        let api: Api<PersistentVolume> = Api::all(env.client.clone());
        let first = env
            .rt
            .block_on(api.get(name))
            .with_context(|| format!("reading PersistentVolume {name}"))?;
        let rv = first.metadata.resource_version.clone().unwrap_or_default();
        let seen = Arc::new(Mutex::new(vec![serde_json::to_value(&first)?]));
        let task = env
            .rt
            .spawn(follow(api, name.to_owned(), rv, Arc::clone(&seen)));
        Ok(Self {
            name: name.to_owned(),
            seen,
            task,
        })
    }

    /// Every version up to the live one.
    fn versions(&self, env: &Env) -> anyhow::Result<Vec<Value>> {
        let live = env.get("pv", None, &self.name)?;
        let rv = live["metadata"]["resourceVersion"].clone();
        wait_until(
            &format!("the watch of {} to reach the live version", self.name),
            Duration::from_secs(30),
            || {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = seen.iter().find(|v| !v["watchError"].is_null()) {
                    anyhow::bail!("the watch of {} broke: {e}", self.name);
                }
                Ok(seen
                    .iter()
                    .any(|v| v["metadata"]["resourceVersion"] == rv || !v["deleted"].is_null())
                    .then(|| seen.clone()))
            },
        )
    }

    /// Checks the README's safety invariants on every version: never deleted, and reclaim policy
    /// Retain unless the volume is Bound to a claim. Returns the versions.
    fn assert_safe(&self, env: &Env) -> anyhow::Result<Vec<Value>> {
        let versions = self.versions(env)?;
        for v in &versions {
            anyhow::ensure!(
                v["deleted"].is_null() && v["metadata"]["deletionTimestamp"].is_null(),
                "PersistentVolume {} was deleted: {v:#}",
                self.name
            );
            let policy = text(&v["spec"]["persistentVolumeReclaimPolicy"]);
            let bound =
                v["status"]["phase"] == "Bound" && !text(&v["spec"]["claimRef"]["uid"]).is_empty();
            anyhow::ensure!(
                policy == "Retain" || bound,
                "PersistentVolume {} had reclaim policy {policy:?} while no claim was bound to it \
                 (resourceVersion {}); every version: {:#?}",
                self.name,
                v["metadata"]["resourceVersion"],
                summary(&versions)
            );
        }
        Ok(versions)
    }
}

impl Drop for VolumeHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    api: Api<PersistentVolume>,
    name: String,
    mut rv: String,
    seen: Arc<Mutex<Vec<Value>>>,
) {
    let push = |v: Value| seen.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    loop {
        let stream = match api.watch(&params, &rv).await {
            Ok(s) => s,
            Err(e) => return push(json!({"watchError": e.to_string()})),
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(pv) | WatchEvent::Modified(pv)) => {
                    rv = pv.metadata.resource_version.clone().unwrap_or_default();
                    push(serde_json::to_value(&pv).unwrap_or_default());
                }
                Ok(WatchEvent::Deleted(pv)) => push(json!({"deleted": pv.metadata.name})),
                Ok(WatchEvent::Bookmark(b)) => rv = b.metadata.resource_version,
                Ok(WatchEvent::Error(e)) => return push(json!({"watchError": format!("{e:?}")})),
                Err(e) => return push(json!({"watchError": e.to_string()})),
            }
        }
    }
}

/// One line per version: what a failure message needs to tell the story.
fn summary(versions: &[Value]) -> Vec<String> {
    versions
        .iter()
        .map(|v| {
            format!(
                "rv {} phase {} policy {} modes {} claimRef.uid {} state {}",
                v["metadata"]["resourceVersion"],
                v["status"]["phase"],
                v["spec"]["persistentVolumeReclaimPolicy"],
                v["spec"]["accessModes"],
                v["spec"]["claimRef"]["uid"],
                recorded_state(v)
                    .ok()
                    .flatten()
                    .map_or("-".to_owned(), |s| format!(
                        "{} {}",
                        s["target"], s["completed"]
                    )),
            )
        })
        .collect()
}

/// The `reportingController` of migrate's Events.
const REPORTER: &str = "rwop-guard.dev/migrate";

/// The Events migrate recorded about `kind`/`name` (any uid) in namespace `ns`, oldest first:
/// (reason, note).
fn history(env: &Env, ns: &str, kind: &str, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = env
        .kubectl(&["get", "events.v1.events.k8s.io", "-n", ns, "-o", "json"])
        .success()?;
    let list: Value = serde_json::from_str(&out.stdout)?;
    let mut events: Vec<&Value> = list["items"]
        .as_array()
        .context("no items")?
        .iter()
        .filter(|e| {
            e["reportingController"] == REPORTER
                && e["regarding"]["kind"] == kind
                && e["regarding"]["name"] == name
        })
        .collect();
    // eventTime has microseconds; the name ends in the nanoseconds it was made at.
    events.sort_by_key(|e| {
        (
            text(&e["eventTime"]).to_owned(),
            text(&e["metadata"]["name"]).to_owned(),
        )
    });
    Ok(events
        .into_iter()
        .map(|e| (text(&e["reason"]).to_owned(), text(&e["note"]).to_owned()))
        .collect())
}

/// The reasons expected of a refused run, a migration and its rollback.
fn expected_reasons() -> Vec<String> {
    let mut reasons = vec!["MigrationRefused".to_owned()];
    reasons.extend(std::iter::repeat_n("MigrationStep".to_owned(), STEPS));
    reasons.push("MigrationCompleted".to_owned());
    reasons.extend(std::iter::repeat_n("RollbackStep".to_owned(), STEPS));
    reasons.push("RollbackCompleted".to_owned());
    reasons
}

/// A refused run (a second replica), then the migration, then its rollback: the claim and the
/// volume carry the history in Events, in order, and `kubectl describe pvc` shows the Events of
/// the claim as it is now.
fn history_in_events(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "events", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let ns = fx.ns.as_str();
    let scale = |n: &str| {
        env.kubectl(&[
            "scale",
            "deployment",
            APP,
            "-n",
            ns,
            &format!("--replicas={n}"),
        ])
        .success()
    };
    scale("2")?;
    let refused = fx.migrate(env, &["--yes", TIMEOUT]);
    anyhow::ensure!(
        refused.code == 1 && refused.stderr.contains("with 2 replicas"),
        "{refused:#?}"
    );
    // A plan is no run: nothing in the history.
    let plan = fx.migrate(env, &["--dry-run"]);
    anyhow::ensure!(plan.code == 1, "{plan:#?}");
    scale("1")?;
    let out = fx.migrate(env, &["--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "migrate failed: {out:#?}");
    let back = fx.migrate(env, &["--rollback", "--yes", TIMEOUT]);
    anyhow::ensure!(back.code == 0, "the rollback failed: {back:#?}");
    anyhow::ensure!(
        !out.stderr.contains("cannot record Kubernetes Events")
            && !back.stderr.contains("cannot record Kubernetes Events"),
        "{out:#?}\n{back:#?}"
    );

    let expected = expected_reasons();
    for (what, events) in [
        ("claim", history(env, ns, "PersistentVolumeClaim", CLAIM)?),
        (
            "volume",
            history(env, "default", "PersistentVolume", &fx.pv)?,
        ),
    ] {
        let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
        anyhow::ensure!(
            reasons == expected,
            "the {what}'s Events, in order: {events:#?}"
        );
        let note = |i: usize| events[i].1.as_str();
        anyhow::ensure!(
            note(0).starts_with("nothing changed: claim ") && note(0).contains("with 2 replicas"),
            "{what}: {}",
            note(0)
        );
        anyhow::ensure!(
            note(1).starts_with(&format!(
                "step 1/{STEPS} done: record the migration state on PersistentVolume {}",
                fx.pv
            )),
            "{what}: {}",
            note(1)
        );
        anyhow::ensure!(
            note(6).contains(&format!(
                "step 6/{STEPS} done: set PersistentVolume {} spec.accessModes: [{RWO}] -> [{RWOP}]",
                fx.pv
            )),
            "{what}: {}",
            note(6)
        );
        anyhow::ensure!(
            note(STEPS + 1).starts_with(&format!(
                "claim {ns}/{CLAIM} and PersistentVolume {} are now [{RWOP}] (were [{RWO}])",
                fx.pv
            )),
            "{what}: {}",
            note(STEPS + 1)
        );
        anyhow::ensure!(
            note(2 * STEPS + 2).starts_with(&format!(
                "claim {ns}/{CLAIM} and PersistentVolume {} are now [{RWO}] (were [{RWOP}])",
                fx.pv
            )),
            "{what}: {}",
            note(2 * STEPS + 2)
        );
    }
    // `kubectl describe` shows the Events of the claim's current uid: the rollback's last steps.
    let describe = env
        .kubectl(&["describe", "pvc", CLAIM, "-n", ns])
        .success()?
        .stdout;
    anyhow::ensure!(
        describe.contains("RollbackCompleted") && describe.contains("RollbackStep"),
        "{describe}"
    );
    // The README's command for the whole history of the claim, every uid.
    let selector = format!("involvedObject.name={CLAIM}");
    let all = env
        .kubectl(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &selector,
            "--sort-by=.eventTime",
        ])
        .success()?
        .stdout;
    let reasons: Vec<&str> = all
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("Migration") || w.starts_with("Rollback"))
        })
        .collect();
    anyhow::ensure!(reasons == expected, "{all}");
    let describe = env.kubectl(&["describe", "pv", &fx.pv]).success()?.stdout;
    anyhow::ensure!(
        describe.contains("MigrationRefused") && describe.contains("RollbackCompleted"),
        "{describe}"
    );
    Ok(())
}

/// An identity with exactly the permissions the README lists for `migrate`, and none on
/// Events: the run migrates, says once that Events are off, and records none.
fn events_forbidden(env: &Env) -> anyhow::Result<()> {
    let fx = Fixture::bound(env, "no-events", &[RWO], Source::Csi)?;
    fx.deployment(env)?;
    let ns = fx.ns.as_str();
    let name = "e2e-migrate-no-events";
    let rbac = json!([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [
            {"apiGroups": [""], "resources": ["persistentvolumes"],
             "verbs": ["get", "list", "patch", "update"]},
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"],
             "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets"],
             "verbs": ["get", "list", "patch"]},
            {"apiGroups": ["apps"],
             "resources": ["deployments/scale", "replicasets/scale", "statefulsets/scale"],
             "verbs": ["get", "patch"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["replicationcontrollers"], "verbs": ["list"]},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["get", "list", "patch"]},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"],
             "verbs": ["list"]},
            {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
    ]);
    let items: Vec<Value> = rbac.as_array().cloned().unwrap_or_default();
    env.apply(&items)?;
    let token = env
        .kubectl(&["create", "token", name, "-n", ns, "--duration=10m"])
        .success()?
        .stdout;
    let config = env.dir.join(format!("{name}.kubeconfig"));
    env.token_kubeconfig(token.trim(), &config)?;
    let denied = env.kubectl(&[
        "auth",
        "can-i",
        "create",
        "events.events.k8s.io",
        "-n",
        ns,
        &format!("--as=system:serviceaccount:{ns}:{name}"),
    ]);
    anyhow::ensure!(denied.stdout.trim() == "no", "{denied:#?}");

    let target = format!("{ns}/{CLAIM}");
    let out = env.rwop_as(&config, &["migrate", &target, "--yes", TIMEOUT]);
    anyhow::ensure!(out.code == 0, "migrate as {name} failed: {out:#?}");
    anyhow::ensure!(
        out.stderr
            .matches("cannot record Kubernetes Events")
            .count()
            == 1,
        "the run should say once that Events are off: {out:#?}"
    );
    fx.assert_finished(env, &out, RWOP)?;
    let events = history(env, ns, "PersistentVolumeClaim", CLAIM)?;
    anyhow::ensure!(events.is_empty(), "{events:#?}");
    env.kubectl(&["delete", "clusterrole,clusterrolebinding", name])
        .success()?;
    Ok(())
}

/// One namespace as the admin of a shop has it: a 3-replica StatefulSet database (Parallel), a
/// Deployment with a nightly CronJob mounting its claim (the backup pattern), a DaemonSet, a
/// CronJob alone on its claim, and a bare debug pod. `scan` (every output format) names the
/// StatefulSet and the lone CronJob's claim as candidates with their commands and blocks the
/// others with the reason; each command, run as printed (answering the confirmation), moves
/// them; a second scan finds no candidate left and nothing that could never start.
fn every_workload_kind(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-mig-kinds";
    env.namespace(ns)?;
    let opt_out = json!({OPT_OUT: "false"});
    // Claims bound to volumes reserved for them (no provisioner here), opted out of mutation so
    // they start [ReadWriteOnce] as they would have before rwop-guard.
    let db_claims: Vec<String> = (0..3).map(|i| format!("data-db-{i}")).collect();
    for name in ["web-data", "agent-data", "report-data", "debug-data"]
        .iter()
        .map(|n| (*n).to_owned())
        .chain(db_claims.iter().cloned())
    {
        let pv = format!("{ns}-{name}");
        let volume = reserved(delete_policy(csi_volume(&pv, &[RWO])), ns, &name);
        env.kubectl_stdin(&["create", "-f", "-"], &volume.to_string())
            .success()?;
        if !name.starts_with("data-db-") {
            let mut c = claim(&name, ns, &[RWO], Some(CSI_CLASS));
            c["spec"]["volumeName"] = pv.as_str().into();
            c["metadata"]["annotations"] = opt_out.clone();
            env.kubectl_stdin(&["create", "-f", "-"], &c.to_string())
                .success()?;
        }
    }
    let pod = |claim: &str| {
        json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                               "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
               "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]})
    };
    let labels = |app: &str| json!({"matchLabels": {"app": app}});
    let template =
        |app: &str, claim: &str| json!({"metadata": {"labels": {"app": app}}, "spec": pod(claim)});
    let objects = [
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
            "spec": {"replicas": 3, "serviceName": "db", "podManagementPolicy": "Parallel",
                "selector": labels("db"),
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{
                    "name": "db", "image": "registry.k8s.io/pause:3.10",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "annotations": opt_out}, "spec": {
                    "accessModes": [RWO], "storageClassName": CSI_CLASS,
                    "resources": {"requests": {"storage": "1Gi"}}}}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": labels("web"),
                "template": template("web", "web-data")}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "backup", "namespace": ns},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": pod("web-data")["containers"],
                "volumes": pod("web-data")["volumes"]}}}}}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": ns},
            "spec": {"selector": labels("agent"), "template": template("agent", "agent-data")}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report", "namespace": ns},
            "spec": {"schedule": "0 4 * * *", "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": pod("report-data")["containers"],
                "volumes": pod("report-data")["volumes"]}}}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": ns},
            "spec": pod("debug-data")}),
    ];
    env.apply(&objects)?;
    for name in ["web-data", "agent-data", "report-data", "debug-data"]
        .iter()
        .map(|n| (*n).to_owned())
        .chain(db_claims.iter().cloned())
    {
        wait_bound_nudging(env, ns, &name)?;
    }

    // The scan, in every format.
    let table = env.rwop(&["scan", "-n", ns], "");
    anyhow::ensure!(table.code == 0, "{table:#?}");
    let row = |kind: &str, name: &str, rule: &str| {
        table.stdout.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() > 3 && cells[0] == kind && cells[2] == name && cells[3] == rule
        })
    };
    for (kind, name, rule) in [
        ("StatefulSet", "db", "migration-candidate"),
        (
            "PersistentVolumeClaim",
            "report-data",
            "migration-candidate",
        ),
        ("PersistentVolumeClaim", "web-data", "migration-blocked"),
        ("PersistentVolumeClaim", "agent-data", "migration-blocked"),
        ("PersistentVolumeClaim", "debug-data", "migration-blocked"),
    ] {
        anyhow::ensure!(
            row(kind, name, rule),
            "no {rule} row for {kind} {name}:\n{}",
            table.stdout
        );
    }
    for claim in &db_claims {
        anyhow::ensure!(
            !table.stdout.lines().any(
                |l| l.contains(&format!(" {claim} ")) && l.starts_with("PersistentVolumeClaim")
            ),
            "{claim} is reported on its own:\n{}",
            table.stdout
        );
    }
    let json_out = env.rwop(&["scan", "-n", ns, "-o", "json"], "");
    anyhow::ensure!(json_out.code == 0, "{json_out:#?}");
    let report: Value = serde_json::from_str(&json_out.stdout)?;
    let findings = report["findings"].as_array().context("findings")?;
    let find = |kind: &str, name: &str| {
        findings
            .iter()
            .find(|f| f["object"]["kind"] == kind && f["object"]["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let commands: Vec<String> = findings
        .iter()
        .filter(|f| f["rule"] == "migration-candidate")
        .filter_map(|f| f["command"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(
        commands
            == [
                format!("rwop-guard migrate {ns}/report-data"),
                format!("rwop-guard migrate --statefulset {ns}/db"),
            ],
        "{commands:?}\n{}",
        json_out.stdout
    );
    for (kind, name, words) in [
        (
            "PersistentVolumeClaim",
            "web-data",
            "is used by Deployment web and CronJob backup",
        ),
        (
            "PersistentVolumeClaim",
            "agent-data",
            "the DaemonSet's pods on every other node would stay Pending",
        ),
        (
            "PersistentVolumeClaim",
            "debug-data",
            "pass --allow-delete-pods",
        ),
    ] {
        let f = find(kind, name);
        anyhow::ensure!(
            f["rule"] == "migration-blocked" && text(&f["detail"]).contains(words),
            "{kind} {name} should be blocked saying {words:?}: {f:#}"
        );
    }
    for format in ["policyreport", "openreports"] {
        let out = env.rwop(&["scan", "-n", ns, "-o", format], "");
        anyhow::ensure!(out.code == 0, "{format}: {out:#?}");
        for rule in ["migration-candidate", "migration-blocked"] {
            anyhow::ensure!(
                out.stdout.contains(&format!("rule: {rule}")),
                "{format} lacks {rule}:\n{}",
                out.stdout
            );
        }
        anyhow::ensure!(
            out.stdout
                .contains(&format!("rwop-guard migrate --statefulset {ns}/db")),
            "{format} lacks the StatefulSet's command:\n{}",
            out.stdout
        );
    }

    // Each suggested command as printed, answering its question.
    for command in &commands {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let mut args = args;
        args.push(TIMEOUT);
        let out = env.rwop(&args, "y\n");
        anyhow::ensure!(out.code == 0, "{command}: {out:#?}");
    }
    for claim in db_claims.iter().map(String::as_str).chain(["report-data"]) {
        let c = env.get("pvc", Some(ns), claim)?;
        anyhow::ensure!(
            c["spec"]["accessModes"] == json!([RWOP]) && c["status"]["phase"] == "Bound",
            "{claim}: {c:#}"
        );
    }
    let sts = env.get("statefulset", Some(ns), "db")?;
    anyhow::ensure!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == json!([RWOP])
            && sts["spec"]["replicas"] == 3,
        "{sts:#}"
    );
    let report = env.get("cronjob", Some(ns), "report")?;
    anyhow::ensure!(
        report["spec"]["suspend"] != json!(true),
        "the CronJob is resumed after the run: {report:#}"
    );
    for claim in ["web-data", "agent-data", "debug-data"] {
        let c = env.get("pvc", Some(ns), claim)?;
        anyhow::ensure!(
            c["spec"]["accessModes"] == json!([RWO]),
            "{claim} stays: {c:#}"
        );
    }
    // Nothing left to move, and no workload on a ReadWriteOncePod claim that could not start.
    let again = env.rwop(&["scan", "-n", ns, "-o", "json"], "");
    let after: Value = serde_json::from_str(&again.stdout)?;
    let rules: Vec<&str> = after["findings"]
        .as_array()
        .context("findings")?
        .iter()
        .filter_map(|f| f["rule"].as_str())
        .collect();
    anyhow::ensure!(
        rules.iter().all(|r| *r == "migration-blocked") && rules.len() == 3,
        "{}",
        again.stdout
    );
    Ok(())
}
