//! Helpers shared by the integration tests, the end-to-end suite and the benches: one of each.
//!
//! A library of its own (`tests/support/Cargo.toml`), so it is compiled once and its public
//! items are not "dead" in the test crates that use only some of them. Test crates import it
//! as `use rwop_test_support as support;`.
//!
//! * [`binary`]: the one way to run the `rwop-guard` binary (or its `kubectl-rwop` link), with
//!   one environment clean-up.
//! * [`fixtures`]: files under `tests/fixtures/`.
//! * [`http`]: [`PATIENCE`], a TLS client trusting given CAs, `connect`, `send`, `http_get`.
//! * [`kubeconfig`]: the one kubeconfig writer (for the fake API server).
//! * [`tools`]: the one rule for finding an external tool (helm, kubectl, promtool) and for a
//!   missing one (skipped; a failure when `CI` is set).
//! * [`fake_apiserver`], [`seed`]: the in-process fake API server and the fake cluster of the
//!   migrate tests.
//! * [`server`]: `rwop_guard::server` started in process, or `rwop-guard serve --dev` as a child.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod binary;
pub mod fake_apiserver;
pub mod fixtures;
pub mod http;
pub mod kubeconfig;
pub mod seed;
pub mod server;
pub mod tools;

/// Upper bound for anything a test waits for (a condition, a child process, a response):
/// reaching it fails the test. Never a measure of speed: only how long a broken test takes to
/// say so, generous for a debug build on a busy 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The kinds (sorted) the chart installs with its default values on a cluster that serves
/// MutatingAdmissionPolicy: the in-tree rules, and the webhook for W2 alone. tests/intree.rs
/// renders them with `helm template`, tests/e2e/intree.rs installs them.
pub const DEFAULT_INSTALL_KINDS: [&str; 15] = [
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Deployment",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
];

/// The package's directory (where `Cargo.toml` and `tests/` are).
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
