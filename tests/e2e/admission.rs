//! End-to-end cases: the chart's webhooks as kubectl users meet them.

use serde_json::json;

use crate::Case;
use crate::harness::{Env, VALIDATE, csi_volume, docs};

pub fn cases() -> Vec<Case> {
    vec![Case::shared(
        "admission::v2_denies_a_volume_mode_change_other_than_rwo_to_rwop",
        v2_denies_other_changes,
    )]
}

fn v2_denies_other_changes(env: &Env) -> anyhow::Result<()> {
    let pv = csi_volume("e2e-v2-rwx", &["ReadWriteMany"]);
    env.kubectl_stdin(&["apply", "-f", "-"], &docs(&[pv]))
        .success()?;
    let out = env
        .kubectl(&[
            "patch",
            "pv",
            "e2e-v2-rwx",
            "--type=merge",
            "-p",
            &json!({"spec": {"accessModes": ["ReadWriteOncePod"]}}).to_string(),
        ])
        .failure()?;
    anyhow::ensure!(
        out.stderr.starts_with(&format!(
            "Error from server (Forbidden): admission webhook \"{VALIDATE}\" denied the request: PersistentVolume \"e2e-v2-rwx\": access mode change [ReadWriteMany] -> [ReadWriteOncePod] is not allowed"
        )),
        "{}",
        out.stderr
    );
    let after = env.get("pv", None, "e2e-v2-rwx")?;
    anyhow::ensure!(after["spec"]["accessModes"] == json!(["ReadWriteMany"]));
    Ok(())
}
