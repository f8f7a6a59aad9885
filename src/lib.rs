//! rwop-guard: a Kubernetes admission webhook that enforces and adopts ReadWriteOncePod.
//!
//! The library holds everything the binary runs, so tests and benchmarks call the same code.
//! Meant to be used: [`policy`] (the rules, pure), [`admission`] (an AdmissionReview in, the
//! answer out), [`server`] (the webhook server: [`server::start`]), [`cluster`] (the facts the
//! caches publish), and what the commands are made of ([`cli`], [`certs`], [`manifests`],
//! [`scan`], [`migrate`]).

pub mod admission;
pub(crate) mod bounded;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod intree;
pub(crate) mod logging;
pub mod manifests;
pub mod migrate;
pub mod policy;
pub(crate) mod policy_file;
pub mod scan;
pub mod server;

/// Folds a multi-line error message into one line, for one-line findings and log fields.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// How the user invoked us, for the commands that hints print: `rwop-guard`, or `kubectl rwop`
/// when the binary runs as a kubectl plugin.
pub(crate) fn program_name() -> &'static str {
    PROGRAM.get().copied().unwrap_or("rwop-guard")
}

/// Sets [`program_name`] once, at startup.
pub(crate) fn set_program_name(name: &'static str) {
    let _ = PROGRAM.set(name);
}
