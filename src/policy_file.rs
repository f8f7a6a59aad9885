//! Reading the policy file from disk (the policy module itself does no I/O).

use std::path::{Path, PathBuf};

use crate::policy::{Policy, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The cause is in the message, so it is not also a `source()`: printed with its chain
    // (`{:#}`), an error says each cause once.
    #[error("cannot read policy file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Loads the policy at `path`, or the default policy when there is none.
pub fn load(path: Option<&Path>) -> Result<Policy, LoadError> {
    let Some(path) = path else {
        return Ok(Policy::default());
    };
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    Ok(Policy::from_yaml(&text, &path.display().to_string())?)
}
