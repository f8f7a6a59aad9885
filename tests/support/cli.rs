//! Runs a program (the `rwop-guard` binary, or its kubectl plugin link) against the fake API
//! server, with no KUBECONFIG from the caller's environment.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Writes a kubeconfig for the API server at `url` (a token user, default namespace `shop`) into
/// `dir`; returns its path.
pub fn kubeconfig(dir: &Path, url: &str) -> String {
    let config = dir.join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: u, namespace: shop}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

/// Exit code, stdout and stderr of `program ARGS` with stdin closed (at most 60 s).
pub async fn run(program: &Path, args: &[&str]) -> (i32, String, String) {
    run_with(program, args, None).await
}

/// [`run`] with `stdin` as the program's standard input (an answer to a prompt).
pub async fn run_with_stdin(program: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    run_with(program, args, Some(stdin)).await
}

async fn run_with(program: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(stdin.map_or_else(Stdio::null, |_| Stdio::piped()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the binary finishes")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
