//! How a migration fails. A type, not I/O: the pure layer returns it too.

use std::time::Duration;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {error}")]
    /// The cause is in the message, so it is not also a `source()`.
    Api { what: String, error: kube::Error },
    #[error("{what}: {error}")]
    /// A watch that a wait relies on failed (list or watch refused, or the stream broke).
    Watch {
        what: String,
        error: kube::runtime::watcher::Error,
    },
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error(
        "interrupted after step {completed}; run the same command again to resume, or with --rollback to undo"
    )]
    Interrupted { completed: usize },
}

/// Wraps an API error with what was being done.
pub fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> MigrateError {
    let what = what.into();
    move |error| MigrateError::Api { what, error }
}
