//! The one kubeconfig writer of the tests that talk to the fake API server.

use std::path::{Path, PathBuf};

/// Writes `dir/kubeconfig` with two contexts: `fake` (the API server at `server`, default
/// namespace `namespace`, a token user) and `nowhere` (a closed loopback port), `current` being
/// the current context. With `current = "nowhere"` only an honoured `--context fake` reaches
/// the server. Returns the file's path.
pub fn write(dir: &Path, server: &str, namespace: &str, current: &str) -> PathBuf {
    assert!(
        matches!(current, "fake" | "nowhere"),
        "no context {current:?}"
    );
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {current}\n\
         clusters:\n- name: fake\n  cluster:\n    server: {server}\n\
         - name: closed\n  cluster:\n    server: http://127.0.0.1:9\n\
         contexts:\n- name: fake\n  context: {{cluster: fake, user: u, namespace: {namespace}}}\n\
         - name: nowhere\n  context: {{cluster: closed, user: u}}\n\
         users:\n- name: u\n  user: {{token: t}}\n"
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
