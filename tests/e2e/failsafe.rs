//! End-to-end cases: the blast radius of the chart's registration. Only requests a rule can act
//! on reach rwop-guard, so while it is down storage keeps working.

use serde_json::{Value, json};

use crate::Case;
use crate::harness::webhook::Chart;
use crate::harness::{CHART_VALUES, CSI_CLASS, Env, VALIDATE, claim, csi_volume, docs, free_port};

pub fn cases() -> Vec<Case> {
    vec![
        Case::exclusive(
            "failsafe::a_bind_sends_no_review_to_the_validating_webhook",
            reviews_during_a_bind,
        ),
        Case::exclusive(
            "failsafe::with_rwop_guard_down_only_access_mode_changes_are_refused",
            rwop_guard_down,
        ),
    ]
}

/// Creates a volume and a claim reserved for each other, waits until the PV controller has
/// bound them (both Bound), and returns the claim.
fn bind(env: &Env, ns: &str, pv: &str) -> anyhow::Result<Value> {
    let mut volume = csi_volume(pv, &["ReadWriteOnce"]);
    volume["spec"]["claimRef"] = json!({"namespace": ns, "name": "data"});
    let mut c = claim("data", ns, &["ReadWriteOnce"], Some(CSI_CLASS));
    // Opted out, so the claim stays [ReadWriteOnce] and binds to its [ReadWriteOnce] volume.
    c["metadata"]["annotations"] = json!({"rwop-guard.dev/mutate": "false"});
    env.apply(&[volume, c])?;
    env.wait_for("pv", None, pv, "Bound", |v| v["status"]["phase"] == "Bound")?;
    env.wait_bound(ns, "data")
}

/// Reviews of `pv` and of claim `data` in `ns`, by webhook: (validating, mutating).
fn count(env: &Env, ns: &str, pv: &str) -> anyhow::Result<(usize, usize)> {
    let reviews: Vec<Value> = [env.reviews_of(ns, pv)?, env.reviews_of(ns, "data")?]
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == pv || r["namespace"] == ns)
        .collect();
    let by = |w: &str| reviews.iter().filter(|r| r["webhook"] == w).count();
    Ok((by("validate"), by("mutate")))
}

fn reviews_during_a_bind(env: &Env) -> anyhow::Result<()> {
    // The chart's default registration (what the shared server has).
    let ns = "e2e-fs-bind";
    env.namespace(ns)?;
    bind(env, ns, "e2e-fs-bind")?;
    env.kubectl(&["label", "pv", "e2e-fs-bind", "tier=db"])
        .success()?;
    env.kubectl(&["label", "pvc", "data", "-n", ns, "tier=db"])
        .success()?;
    let narrow = count(env, ns, "e2e-fs-bind")?;

    // The broad registration, for comparison.
    let mut values = CHART_VALUES.to_vec();
    values.push("webhooks.scope=all");
    let broad_chart = Chart::render("e2e", &env.tls.ca_file, &values)?;
    env.register(&broad_chart, &env.serve())?;
    let result = (|| {
        let ns = "e2e-fs-bind-all";
        env.namespace(ns)?;
        bind(env, ns, "e2e-fs-bind-all")?;
        env.kubectl(&["label", "pv", "e2e-fs-bind-all", "tier=db"])
            .success()?;
        env.kubectl(&["label", "pvc", "data", "-n", ns, "tier=db"])
            .success()?;
        count(env, ns, "e2e-fs-bind-all")
    })();
    env.register(&env.chart, &env.serve())?;
    let broad = result?;
    eprintln!(
        "reviews for one bind and two label patches (validating, mutating): \
         scope accessModeChanges {narrow:?}, scope all {broad:?}"
    );
    // Nothing of a bind or a label patch reaches the validating webhook; the claim's CREATE
    // is not sent to the mutating one either (it opted out).
    anyhow::ensure!(narrow == (0, 0), "default scope: {narrow:?}");
    // With every write registered: the volume's and the claim's CREATE, the PV controller's
    // binding updates and the label patches are validated; the claim's CREATE and every update
    // of both go to the mutating configuration (M1 and the re-apply webhook).
    anyhow::ensure!(broad.0 >= 5 && broad.1 >= 3, "scope all: {broad:?}");
    Ok(())
}

fn rwop_guard_down(env: &Env) -> anyhow::Result<()> {
    // Nothing listens on this port: the API server's calls fail as they do while every pod of
    // the webhook is down.
    let down: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let configs = env.chart.webhook_configurations(down);
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(&configs))
        .success()?;
    let result = storage_works_while_down(env);
    env.register(&env.chart, &env.serve())?;
    result
}

fn storage_works_while_down(env: &Env) -> anyhow::Result<()> {
    let ns = "e2e-fs-down";
    env.namespace(ns)?;
    // The API server must be using the dead registration: wait until an access-mode change
    // fails to call the webhook.
    let pv = "e2e-fs-down";
    env.apply(&[csi_volume("e2e-fs-down-probe", &["ReadWriteOnce"])])?;
    let refused = crate::harness::wait_until(
        "the API server to call the unreachable webhook",
        std::time::Duration::from_secs(30),
        || {
            let out = env.kubectl(&[
                "patch",
                "pv",
                "e2e-fs-down-probe",
                "--dry-run=server",
                "--type=merge",
                "-p",
                r#"{"spec":{"accessModes":["ReadWriteOncePod"]}}"#,
            ]);
            Ok(out
                .stderr
                .contains(&format!("failed calling webhook \"{VALIDATE}\""))
                .then_some(out))
        },
    )?;
    anyhow::ensure!(
        refused
            .stderr
            .starts_with("Error from server (InternalError): ")
            && refused.stderr.contains("connect: connection refused"),
        "{refused:#?}"
    );

    // Volumes and claims are created and bound, metadata is patched.
    let bound = bind(env, ns, pv)?;
    anyhow::ensure!(bound["spec"]["volumeName"] == pv, "{bound}");
    // A new [ReadWriteOnce] claim is created too (unmutated: the mutating webhook fails open).
    let out = env
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &docs(&[claim("new", ns, &["ReadWriteOnce"], Some(CSI_CLASS))]),
        )
        .success()?;
    anyhow::ensure!(
        out.stdout.trim() == "persistentvolumeclaim/new created",
        "{out:#?}"
    );
    let created = env.get("pvc", Some(ns), "new")?;
    anyhow::ensure!(
        created["spec"]["accessModes"] == json!(["ReadWriteOnce"]),
        "{created}"
    );
    for args in [
        ["label", "pv", pv, "backup=daily", "", ""],
        ["annotate", "pv", pv, "owner=storage-team", "", ""],
        ["label", "pvc", "data", "backup=daily", "-n", ns],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        env.kubectl(&args).success()?;
    }
    let labelled = env.get("pv", None, pv)?;
    anyhow::ensure!(
        labelled["metadata"]["labels"]["backup"] == "daily"
            && labelled["metadata"]["annotations"]["owner"] == "storage-team",
        "{labelled}"
    );
    // Deleting the claim: pvc-protection's finalizer removal and the release go through.
    env.kubectl(&["delete", "pvc", "data", "-n", ns, "--wait"])
        .success()?;
    env.wait_for("pv", None, pv, "Released", |v| {
        v["status"]["phase"] == "Released"
    })?;

    // Only an access-mode change is refused, and the volume keeps its modes.
    let out = env
        .kubectl(&[
            "patch",
            "pv",
            pv,
            "--type=merge",
            "-p",
            r#"{"spec":{"accessModes":["ReadWriteOncePod"]}}"#,
        ])
        .failure()?;
    anyhow::ensure!(
        out.stderr.contains(&format!(
            "Internal error occurred: failed calling webhook \"{VALIDATE}\""
        )),
        "{out:#?}"
    );
    let after = env.get("pv", None, pv)?;
    anyhow::ensure!(
        after["spec"]["accessModes"] == json!(["ReadWriteOnce"]),
        "{after}"
    );
    Ok(())
}
