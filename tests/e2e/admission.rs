//! End-to-end cases: the chart's webhooks as kubectl users meet them. Each case asserts what
//! kubectl prints (denials and `Warning:` lines), its exit code, and the object afterwards.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Case;
use crate::harness::{
    CSI_CLASS, Env, INTREE_CLASS, MUTATE, VALIDATE, claim, csi_volume, docs, wait_until,
};

const TASK_URL: &str =
    "https://kubernetes.io/docs/tasks/administer-cluster/change-pv-access-mode-readwriteoncepod/";
const MUTATED_FROM: &str = "rwop-guard.dev/mutated-from";

pub fn cases() -> Vec<Case> {
    vec![
        Case::shared(
            "admission::v1_mixed_modes_are_refused_by_the_api_server_before_the_webhook",
            v1_mixed_modes_refused_before_the_webhook,
        ),
        Case::shared(
            "admission::v2_denies_a_volume_mode_change_other_than_rwo_to_rwop",
            v2_denies_other_changes,
        ),
        Case::shared(
            "admission::v2_denies_through_apply_server_side_apply_replace_and_dry_run",
            v2_denies_through_every_write_path,
        ),
        Case::shared(
            "admission::w1_warns_on_an_allowed_rwo_to_rwop_volume_change",
            w1_warns_on_allowed_change,
        ),
        Case::shared(
            "admission::m1_mutates_a_new_rwo_claim_of_a_csi_class",
            m1_mutates_new_claims,
        ),
        Case::shared(
            "admission::m1_leaves_claims_it_would_break",
            m1_leaves_claims_it_would_break,
        ),
        Case::shared(
            "admission::m2_a_mutated_claim_survives_reapply_ssa_and_helm_upgrade",
            m2_mutated_claim_survives_reapply,
        ),
        Case::shared(
            "admission::claims_bind_with_the_webhooks_registered",
            claims_bind_with_webhooks,
        ),
        Case::exclusive(
            "admission::warn_action_allows_with_a_warning_after_a_policy_reload",
            warn_action,
        ),
    ]
}

/// A CSI volume no claim of another case can bind: its class is one no claim asks for.
fn lone_volume(name: &str, modes: &[&str]) -> Value {
    let mut v = csi_volume(name, modes);
    v["spec"]["storageClassName"] = "e2e-unclaimed".into();
    v
}

/// `kubectl patch pv NAME` of its access modes, as an admin would.
fn patch_pv_modes(env: &Env, name: &str, modes: &[&str]) -> crate::harness::Out {
    env.kubectl(&[
        "patch",
        "pv",
        name,
        "--type=merge",
        "-p",
        &patch_modes(modes),
    ])
}

fn patch_modes(modes: &[&str]) -> String {
    json!({"spec": {"accessModes": modes}}).to_string()
}

fn denial(webhook: &str, message: &str) -> String {
    format!("admission webhook \"{webhook}\" denied the request: {message}")
}

fn v2_message(pv: &str, old: &str, new: &str) -> String {
    format!(
        "PersistentVolume \"{pv}\": access mode change {old} -> {new} is not allowed; only \
         [ReadWriteOnce] -> [ReadWriteOncePod] is supported ({TASK_URL})"
    )
}

fn modes(object: &Value) -> &Value {
    &object["spec"]["accessModes"]
}

/// `Warning: ` lines kubectl printed.
pub(crate) fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("Warning: "))
        .collect()
}

fn v1_mixed_modes_refused_before_the_webhook(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-adm-v1";
    env.namespace(ns)?;
    let c = claim(
        "mixed",
        ns,
        &["ReadWriteOncePod", "ReadWriteOnce"],
        Some(CSI_CLASS),
    );
    let out = env
        .kubectl_stdin(&["apply", "-f", "-"], &docs(&[c]))
        .failure()?;
    anyhow::ensure!(
        out.stderr.trim_end()
            == "The PersistentVolumeClaim \"mixed\" is invalid: spec.accessModes: Forbidden: may \
                not use ReadWriteOncePod with other access modes",
        "{out:#?}"
    );
    let pv = csi_volume("e2e-adm-v1-mixed", &["ReadWriteOncePod", "ReadWriteMany"]);
    let out = env
        .kubectl_stdin(&["apply", "-f", "-"], &docs(&[pv]))
        .failure()?;
    anyhow::ensure!(
        out.stderr.contains(
            "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"
        ),
        "{out:#?}"
    );
    // Adding a mode to a RWOP volume: the API server refuses that update too.
    env.apply(&[lone_volume("e2e-adm-v1-rwop", &["ReadWriteOncePod"])])?;
    let out = patch_pv_modes(
        env,
        "e2e-adm-v1-rwop",
        &["ReadWriteOncePod", "ReadWriteOnce"],
    )
    .failure()?;
    anyhow::ensure!(
        out.stderr
            .contains("may not use ReadWriteOncePod with other access modes"),
        "{out:#?}"
    );
    anyhow::ensure!(env.kubectl(&["get", "pvc", "mixed", "-n", ns]).code != 0);
    anyhow::ensure!(
        env.kubectl(&["get", "pv", "e2e-adm-v1-mixed"]).code != 0,
        "the mixed volume was created"
    );
    let rwop = env.get("pv", None, "e2e-adm-v1-rwop")?;
    anyhow::ensure!(*modes(&rwop) == json!(["ReadWriteOncePod"]), "{rwop}");
    // The validating webhook never saw the refused writes (the mutating one saw the claim's
    // CREATE, which comes first, and left it alone: it is not [ReadWriteOnce]).
    let seen: Vec<Value> = env
        .serve()
        .reviews()
        .into_iter()
        .filter(|r| {
            r["webhook"] == "validate" && (r["name"] == "mixed" || r["name"] == "e2e-adm-v1-mixed")
        })
        .collect();
    anyhow::ensure!(seen.is_empty(), "the validating webhook saw {seen:#?}");
    Ok(())
}

fn v2_denies_other_changes(env: &Env) -> anyhow::Result<()> {
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("e2e-adm-v2-rwx", &["ReadWriteMany"], &["ReadWriteOncePod"]),
        ("e2e-adm-v2-back", &["ReadWriteOncePod"], &["ReadWriteOnce"]),
        ("e2e-adm-v2-rox", &["ReadWriteOnce"], &["ReadOnlyMany"]),
    ];
    for (name, from, to) in cases {
        env.apply(&[lone_volume(name, from)])?;
        let out = env
            .kubectl(&["patch", "pv", name, "--type=merge", "-p", &patch_modes(to)])
            .failure()?;
        let (old, new) = (
            format!("[{}]", from.join(", ")),
            format!("[{}]", to.join(", ")),
        );
        let message = if from.contains(&"ReadWriteOncePod") || to.contains(&"ReadWriteOncePod") {
            v2_message(name, &old, &new)
        } else {
            format!(
                "PersistentVolume \"{name}\": access mode change {old} -> {new} is not allowed: \
                 it does not involve ReadWriteOncePod, and the only change rwop-guard allows is \
                 [ReadWriteOnce] -> [ReadWriteOncePod] (nothing checks other changes against the \
                 claim bound to the volume); keep {old}"
            )
        };
        let expected = format!(
            "Error from server (Forbidden): {}",
            denial(VALIDATE, &message)
        );
        anyhow::ensure!(
            out.stderr.trim_end() == expected,
            "{out:#?}\nwanted: {expected}"
        );
        let after = env.get("pv", None, name)?;
        anyhow::ensure!(*modes(&after) == json!(from), "{name} changed: {after}");
    }
    Ok(())
}

fn v2_denies_through_every_write_path(env: &Env) -> anyhow::Result<()> {
    let name = "e2e-adm-v2-paths";
    let original = lone_volume(name, &["ReadWriteMany"]);
    env.kubectl_stdin(
        &["apply", "-f", "-"],
        &docs(std::slice::from_ref(&original)),
    )
    .success()?;
    let mut changed = original;
    changed["spec"]["accessModes"] = json!(["ReadWriteOncePod"]);
    let message = denial(
        VALIDATE,
        &v2_message(name, "[ReadWriteMany]", "[ReadWriteOncePod]"),
    );
    let changed = docs(&[changed]);
    let attempts: [(&str, &[&str]); 5] = [
        ("apply", &["apply", "-f", "-"]),
        (
            "apply --dry-run=server",
            &["apply", "--dry-run=server", "-f", "-"],
        ),
        (
            "apply --server-side",
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        ),
        ("replace", &["replace", "-f", "-"]),
        (
            "replace --dry-run=server",
            &["replace", "--dry-run=server", "-f", "-"],
        ),
    ];
    for (what, args) in attempts {
        let out = env.kubectl_stdin(args, &changed);
        anyhow::ensure!(out.code == 1, "{what}: {out:#?}");
        anyhow::ensure!(
            out.stderr.starts_with("Error from server (Forbidden): ")
                && out.stderr.trim_end().ends_with(&message),
            "{what}: {out:#?}"
        );
    }
    let after = env.get("pv", None, name)?;
    anyhow::ensure!(
        *modes(&after) == json!(["ReadWriteMany"]),
        "the volume changed: {after}"
    );
    Ok(())
}

fn w1_warns_on_allowed_change(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-adm-w1";
    env.namespace(ns)?;
    // Bound, reclaim policy Delete: both warnings.
    let name = "e2e-adm-w1-bound";
    let mut pv = lone_volume(name, &["ReadWriteOnce"]);
    pv["spec"]["persistentVolumeReclaimPolicy"] = "Delete".into();
    pv["spec"]["claimRef"] = json!({"namespace": ns, "name": "data"});
    let mut c = claim("data", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    c["spec"]["volumeName"] = name.into();
    env.apply(&[pv, c])?;
    env.wait_bound(ns, "data")?;
    let out = patch_pv_modes(env, name, &["ReadWriteOncePod"]).success()?;
    let w = warnings(&out.stderr);
    anyhow::ensure!(w.len() == 2, "{out:#?}");
    anyhow::ensure!(
        w[0] == format!(
            "PersistentVolume \"{name}\": reclaim policy is Delete, so deleting its claim to \
             finish the change deletes the volume and its data; set \
             persistentVolumeReclaimPolicy to Retain first"
        ),
        "{out:#?}"
    );
    anyhow::ensure!(
        w[1].starts_with(&format!(
            "PersistentVolume \"{name}\": still bound to claim \"{ns}/data\" (spec.claimRef.uid is set)"
        )),
        "{out:#?}"
    );
    anyhow::ensure!(
        out.stdout.trim() == format!("persistentvolume/{name} patched"),
        "{out:#?}"
    );
    let after = env.get("pv", None, name)?;
    anyhow::ensure!(*modes(&after) == json!(["ReadWriteOncePod"]), "{after}");

    // Not CSI: the third warning, alone.
    let name = "e2e-adm-w1-hostpath";
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "e2e-unclaimed",
                 "hostPath": {"path": "/e2e/w1"}}});
    env.apply(&[pv])?;
    let out = patch_pv_modes(env, name, &["ReadWriteOncePod"]).success()?;
    anyhow::ensure!(
        warnings(&out.stderr)
            == [format!(
                "PersistentVolume \"{name}\": not a CSI volume; ReadWriteOncePod is only \
                 supported for CSI volumes, so pods using it may fail to start"
            )],
        "{out:#?}"
    );
    // Retain, unbound, CSI: no warning at all.
    let name = "e2e-adm-w1-clean";
    env.apply(&[lone_volume(name, &["ReadWriteOnce"])])?;
    let out = patch_pv_modes(env, name, &["ReadWriteOncePod"]).success()?;
    anyhow::ensure!(warnings(&out.stderr).is_empty(), "{out:#?}");
    Ok(())
}

fn mutation_warning(ns: &str, name: &str, class: &str) -> String {
    format!(
        "PersistentVolumeClaim \"{ns}/{name}\": access modes changed from [ReadWriteOnce] to \
         [ReadWriteOncePod] by rwop-guard (storage class \"{class}\" supports it), so only one \
         pod can use the volume at a time; to keep [ReadWriteOnce], annotate the claim \
         rwop-guard.dev/mutate=\"false\""
    )
}

fn ensure_mutated(c: &Value) -> anyhow::Result<()> {
    anyhow::ensure!(*modes(c) == json!(["ReadWriteOncePod"]), "not mutated: {c}");
    anyhow::ensure!(
        c["metadata"]["annotations"][MUTATED_FROM] == "ReadWriteOnce",
        "no {MUTATED_FROM} annotation: {c}"
    );
    Ok(())
}

fn ensure_untouched(c: &Value, original: &[&str]) -> anyhow::Result<()> {
    anyhow::ensure!(*modes(c) == json!(original), "modes changed: {c}");
    anyhow::ensure!(
        c["metadata"]["annotations"][MUTATED_FROM].is_null(),
        "annotated as mutated: {c}"
    );
    Ok(())
}

fn m1_mutates_new_claims(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-adm-m1";
    env.namespace(ns)?;

    // kubectl apply (client-side), explicit CSI class.
    let out = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &docs(&[claim("explicit", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]),
        )
        .success()?;
    anyhow::ensure!(
        warnings(&out.stderr) == [mutation_warning(ns, "explicit", CSI_CLASS)],
        "{out:#?}"
    );
    anyhow::ensure!(
        out.stdout.trim() == "persistentvolumeclaim/explicit created",
        "{out:#?}"
    );
    ensure_mutated(&env.get("pvc", Some(ns), "explicit")?)?;

    // No storageClassName: the cluster's default class (CSI) decides.
    let out = env
        .kubectl_stdin(
            &["create", "-f", "-"],
            &docs(&[claim("default-class", ns, &["ReadWriteOnce"], None)]),
        )
        .success()?;
    anyhow::ensure!(
        warnings(&out.stderr) == [mutation_warning(ns, "default-class", CSI_CLASS)],
        "{out:#?}"
    );
    ensure_mutated(&env.get("pvc", Some(ns), "default-class")?)?;

    // Server-side apply.
    let out = env
        .kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            &docs(&[claim("ssa", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]),
        )
        .success()?;
    anyhow::ensure!(
        warnings(&out.stderr) == [mutation_warning(ns, "ssa", CSI_CLASS)],
        "{out:#?}"
    );
    ensure_mutated(&env.get("pvc", Some(ns), "ssa")?)?;

    // --dry-run=server: the mutated object is printed, nothing is stored.
    let out = env
        .kubectl_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &docs(&[claim("dry", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]),
        )
        .success()?;
    ensure_mutated(&serde_json::from_str(&out.stdout)?)?;
    anyhow::ensure!(
        warnings(&out.stderr) == [mutation_warning(ns, "dry", CSI_CLASS)],
        "{out:#?}"
    );
    anyhow::ensure!(
        env.kubectl(&["get", "pvc", "dry", "-n", ns]).code != 0,
        "a dry run created the claim"
    );
    // The server logged the dry run as such.
    let dry = env.reviews_of(ns, "dry")?;
    anyhow::ensure!(
        dry.iter()
            .any(|r| r["webhook"] == "mutate" && r["dry_run"] == true),
        "no dry-run review by {MUTATE}: {dry:#?}"
    );
    anyhow::ensure!(dry.iter().all(|r| r["dry_run"] == true), "{dry:#?}");
    Ok(())
}

fn m1_leaves_claims_it_would_break(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-adm-m1-keep";
    env.namespace(ns)?;
    let rwo_pv = "e2e-adm-m1-keep-rwo";
    // Reserved for the pinned claim (as kubectl-wielding admins do), so no other claim takes it.
    let mut volume = csi_volume(rwo_pv, &["ReadWriteOnce"]);
    volume["spec"]["claimRef"] = json!({"namespace": ns, "name": "pinned"});
    env.apply(&[volume])?;

    let mut opt_out = claim("opt-out", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    opt_out["metadata"]["annotations"] = json!({"rwop-guard.dev/mutate": "false"});
    let mut pinned = claim("pinned", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    pinned["spec"]["volumeName"] = rwo_pv.into();
    let mut selector = claim("selector", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    selector["spec"]["selector"] = json!({"matchLabels": {"tier": "db"}});
    let keep: Vec<(Value, &[&str])> = vec![
        (
            claim("intree", ns, &["ReadWriteOnce"], Some(INTREE_CLASS)),
            &["ReadWriteOnce"],
        ),
        (
            claim("no-class", ns, &["ReadWriteOnce"], Some("")),
            &["ReadWriteOnce"],
        ),
        (opt_out, &["ReadWriteOnce"]),
        (pinned, &["ReadWriteOnce"]),
        (selector, &["ReadWriteOnce"]),
        (
            claim("rwx", ns, &["ReadWriteMany"], Some(CSI_CLASS)),
            &["ReadWriteMany"],
        ),
        (
            claim(
                "rwo-rox",
                ns,
                &["ReadWriteOnce", "ReadOnlyMany"],
                Some(CSI_CLASS),
            ),
            &["ReadWriteOnce", "ReadOnlyMany"],
        ),
    ];
    for (c, original) in &keep {
        let name = c["metadata"]["name"].as_str().unwrap_or_default();
        let out = env
            .kubectl_stdin(&["apply", "-f", "-"], &docs(std::slice::from_ref(c)))
            .success()?;
        anyhow::ensure!(warnings(&out.stderr).is_empty(), "{name}: {out:#?}");
        ensure_untouched(&env.get("pvc", Some(ns), name)?, original)?;
    }
    // The chart's CEL conditions keep claims M1 cannot change away from the webhook; the
    // others are reviewed, and the log says why each was left alone.
    for name in ["opt-out", "rwx", "rwo-rox"] {
        let seen = env.reviews_of(ns, name)?;
        anyhow::ensure!(seen.is_empty(), "{name} was sent to the webhook: {seen:#?}");
    }
    for (name, reason) in [
        ("intree", "in-tree provisioner"),
        ("no-class", "storageClassName"),
        ("pinned", "which do not offer ReadWriteOncePod"),
        ("selector", "spec.selector is set"),
    ] {
        let seen = env.reviews_of(ns, name)?;
        anyhow::ensure!(
            seen.len() == 1
                && seen[0]["webhook"] == "mutate"
                && seen[0]["mutated"] == false
                && seen[0]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(reason)),
            "{name}: wanted one mutating review with a reason containing {reason:?}: {seen:#?}"
        );
    }
    // The pinned claim binds to its [ReadWriteOnce] volume, which a mutation would have broken.
    env.wait_bound(ns, "pinned")?;

    // The release namespace is excluded by the chart's namespaceSelector: not even reviewed.
    let release_ns = "rwop-guard";
    let _ = env.kubectl(&["create", "namespace", release_ns]);
    let name = "e2e-adm-excluded";
    env.apply(&[claim(name, release_ns, &["ReadWriteOnce"], Some(CSI_CLASS))])?;
    ensure_untouched(&env.get("pvc", Some(release_ns), name)?, &["ReadWriteOnce"])?;
    anyhow::ensure!(
        env.reviews_of(ns, name)?.is_empty(),
        "the webhook reviewed a claim in the excluded release namespace"
    );
    Ok(())
}

fn claims_bind_with_webhooks(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-adm-bind";
    env.namespace(ns)?;
    // A [ReadWriteOncePod] volume waiting for a claim; a new [ReadWriteOnce] claim of the class
    // is mutated, and the PV controller binds the two (its own writes go through the webhooks).
    // Reserved for this claim (claimRef without uid, as an admin pre-binds), so that no other
    // case's claim takes it; the claim itself names no volume, so M1 applies to it.
    let pv = "e2e-adm-bind-rwop";
    let mut volume = csi_volume(pv, &["ReadWriteOncePod"]);
    volume["spec"]["claimRef"] = json!({"namespace": ns, "name": "app"});
    env.apply(&[volume])?;
    env.apply(&[claim("app", ns, &["ReadWriteOnce"], Some(CSI_CLASS))])?;
    let bound = env.wait_bound(ns, "app")?;
    ensure_mutated(&bound)?;
    anyhow::ensure!(bound["spec"]["volumeName"] == pv, "{bound}");
    let volume = env.wait_for("pv", None, pv, "Bound", |v| v["status"]["phase"] == "Bound")?;
    anyhow::ensure!(
        volume["spec"]["claimRef"]["uid"] == bound["metadata"]["uid"],
        "{volume}"
    );
    // The claim carries the pvc-protection finalizer the controller manager added.
    anyhow::ensure!(
        bound["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "kubernetes.io/pvc-protection")),
        "{bound}"
    );
    // Deleting the claim: pvc-protection finalizer removal and the volume's release succeed.
    env.kubectl(&["delete", "pvc", "app", "-n", ns, "--wait"])
        .success()?;
    env.wait_for("pv", None, pv, "Released", |v| {
        v["status"]["phase"] == "Released"
    })?;
    Ok(())
}

/// Rewrites the shared server's policy file (whole, by a rename, as a ConfigMap update lands)
/// and waits until the server has loaded it: its successful policy reloads go up. A failed
/// reload is an error at once, so neither a change nor the restore can pass unconfirmed.
pub(crate) fn set_policy(env: &Env, text: &str) -> anyhow::Result<()> {
    const OK: &str = r#"rwop_guard_policy_reloads_total{result="ok"}"#;
    const FAILED: &str = r#"rwop_guard_policy_reloads_total{result="failed"}"#;
    let serve = env.serve();
    let (ok_before, failed_before) = (serve.metric(OK)?, serve.metric(FAILED)?);
    let new = env.policy.with_extension("yaml.new");
    std::fs::write(&new, text)?;
    std::fs::rename(&new, &env.policy)?;
    wait_until("the policy reload", Duration::from_secs(30), || {
        anyhow::ensure!(
            serve.metric(FAILED)? == failed_before,
            "the server failed to reload the policy:\n{text}"
        );
        Ok((serve.metric(OK)? > ok_before).then_some(()))
    })
}

fn warn_action(env: &Env) -> anyhow::Result<()> {
    let original = std::fs::read_to_string(&env.policy)?;
    let warn = original.replace("action: deny", "action: warn");
    anyhow::ensure!(
        warn != original,
        "the chart's policy has no validation.action: {original}"
    );
    set_policy(env, &warn)?;
    let result = warned_change(env);
    set_policy(env, &original)?;
    result
}

fn warned_change(env: &Env) -> anyhow::Result<()> {
    let name = "e2e-adm-warn";
    env.apply(&[lone_volume(name, &["ReadWriteMany"])])?;
    let out = patch_pv_modes(env, name, &["ReadWriteOncePod"]).success()?;
    anyhow::ensure!(
        warnings(&out.stderr) == [v2_message(name, "[ReadWriteMany]", "[ReadWriteOncePod]")],
        "{out:#?}"
    );
    let after = env.get("pv", None, name)?;
    anyhow::ensure!(*modes(&after) == json!(["ReadWriteOncePod"]), "{after}");
    Ok(())
}

fn reapply_warning(ns: &str, name: &str) -> String {
    format!(
        "PersistentVolumeClaim \"{ns}/{name}\": the applied manifest asks for [ReadWriteOnce], \
         but the object is [ReadWriteOncePod] because rwop-guard changed it when it was created; \
         kept [ReadWriteOncePod]. Change the manifest to [ReadWriteOncePod] to match (and to \
         silence this warning)"
    )
}

fn m2_mutated_claim_survives_reapply(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-adm-m2";
    env.namespace(ns)?;
    // kubectl apply, twice: the second sends [ReadWriteOnce] back (three-way merge).
    let manifest = docs(&[claim("app", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]);
    env.kubectl_stdin(&["apply", "-f", "-"], &manifest)
        .success()?;
    let created = env.get("pvc", Some(ns), "app")?;
    ensure_mutated(&created)?;
    let out = env.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    anyhow::ensure!(out.ok(), "re-apply failed: {out:#?}");
    anyhow::ensure!(
        warnings(&out.stderr) == [reapply_warning(ns, "app")],
        "{out:#?}"
    );
    anyhow::ensure!(
        out.stdout.trim() == "persistentvolumeclaim/app configured"
            || out.stdout.trim() == "persistentvolumeclaim/app unchanged",
        "{out:#?}"
    );
    let after = env.get("pvc", Some(ns), "app")?;
    ensure_mutated(&after)?;
    anyhow::ensure!(
        after["metadata"]["uid"] == created["metadata"]["uid"],
        "the claim was recreated"
    );

    // Server-side apply: the applier owns the modes and the annotation the webhook added at
    // creation; re-applying without them keeps both.
    let ssa = docs(&[claim("ssa", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]);
    env.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &ssa)
        .success()?;
    let out = env.kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &ssa,
    );
    anyhow::ensure!(out.ok(), "server-side re-apply failed: {out:#?}");
    anyhow::ensure!(
        warnings(&out.stderr) == [reapply_warning(ns, "ssa")],
        "{out:#?}"
    );
    ensure_mutated(&env.get("pvc", Some(ns), "ssa")?)?;

    // Helm: install, then upgrade of the same chart (its three-way merge patch).
    let chart = tempfile::tempdir()?;
    std::fs::create_dir_all(chart.path().join("templates"))?;
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: e2e-app\nversion: 0.1.0\n",
    )?;
    let mut templated = claim("helm-data", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    templated["metadata"]
        .as_object_mut()
        .map(|m| m.remove("namespace"));
    std::fs::write(
        chart.path().join("templates/pvc.yaml"),
        templated.to_string(),
    )?;
    let helm = |verb: &str| {
        crate::harness::run_tool(
            std::process::Command::new(crate::harness::tool("helm"))
                .args([verb, "e2e-app"])
                .arg(chart.path())
                .args(["--namespace", ns, "--kubeconfig"])
                .arg(&env.plane.kubeconfig),
        )
    };
    helm("install").success()?;
    ensure_mutated(&env.get("pvc", Some(ns), "helm-data")?)?;
    let out = helm("upgrade");
    anyhow::ensure!(out.ok(), "helm upgrade failed: {out:#?}");
    let upgraded = env.get("pvc", Some(ns), "helm-data")?;
    ensure_mutated(&upgraded)?;
    // The webhook kept the modes on helm's update (it logged the re-apply).
    let kept = env.reviews_of(ns, "helm-data")?;
    anyhow::ensure!(
        kept.iter()
            .any(|r| r["operation"] == "UPDATE" && r["mutated"] == true),
        "{kept:#?}"
    );
    Ok(())
}
