//! The one rule for external tools (helm, kubectl, promtool) in every suite.
//!
//! Found at: `$NAME` (upper case: `$HELM`, `$KUBECTL`, `$PROMTOOL`), else the tools cache that
//! `scripts/install-tools.sh` fills (`$RWOP_TOOLS/bin`, default
//! `~/.cache/rwop-guard/tools/bin`), else `PATH`. So after `scripts/install-tools.sh` a plain
//! `cargo test` runs the same tools in every suite, with or without the `PATH` line it prints.
//!
//! Missing: the tests that need it are skipped with one line on stderr, so that `cargo test`
//! works with only Rust installed, unless `CI` is set (`CI=true` or `CI=1`, as CI systems set
//! it): then a skip is a failure, because CI installs every tool.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

/// Whether this is a CI run (`CI=true` or `CI=1`): nothing may be skipped.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The tools cache that `scripts/install-tools.sh` fills.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("RWOP_TOOLS") {
        Some(dir) => Some(PathBuf::from(dir).join("bin")),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/rwop-guard/tools/bin")),
    }
}

/// Where `name` is found (see the module documentation), or None.
pub fn find(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(name.to_uppercase()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    cache_dir()
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What is missing, for a skip or a failure.
pub fn missing(name: &str) -> String {
    let cache = cache_dir().map_or_else(|| "no HOME".to_owned(), |d| d.display().to_string());
    format!(
        "{name} not found (${}, {cache}, PATH): scripts/install-tools.sh installs it",
        name.to_uppercase()
    )
}

/// `name`'s path for the tests of `suite` (a word for the message), or None after one line on
/// stderr (once per suite and tool) saying those tests are skipped. Under CI it panics instead.
pub fn require(suite: &str, name: &str) -> Option<PathBuf> {
    static SKIPPED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    if let Some(path) = find(name) {
        return Some(path);
    }
    let first = SKIPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((suite.to_owned(), name.to_owned()));
    if let Err(failure) = skipped(suite, &missing(name), first) {
        panic!("{failure}");
    }
    None
}

/// The one rule for a missing prerequisite: `Ok` after saying on stderr that the tests of
/// `suite` are skipped (when `say`), or, when `CI` is set, `Err` with the failure to report.
pub fn skipped(suite: &str, why: &str, say: bool) -> Result<(), String> {
    if ci() {
        return Err(format!(
            "{suite}: {why}; CI is set: failing instead of skipping"
        ));
    }
    if say {
        // Past the test harness's capture, which would hide the line of a passing test.
        let _ = writeln!(std::io::stderr(), "{suite}: skipped: {why}");
    }
    Ok(())
}

/// A tool a test's [`needs!`](crate::needs) already required: its path.
pub fn found(name: &str) -> PathBuf {
    find(name).expect("needs! checked it")
}

/// `needs!("suite": "helm", "promtool")` returns from the test (skipped, one line on stderr)
/// unless every tool named can be run; under CI a missing tool fails it ([`require`]).
#[macro_export]
macro_rules! needs {
    ($suite:literal: $($tool:literal),+) => {
        if !($($crate::tools::require($suite, $tool).is_some())&&+) {
            return;
        }
    };
}
