//! Runs a program (the `rwop-guard` binary, or its kubectl plugin link) against the fake API
//! server, with no KUBECONFIG from the caller's environment and stdin closed.

use std::time::Duration;

/// Exit code, stdout and stderr of `program ARGS` (at most 60 s).
pub async fn run(program: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the binary finishes")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
