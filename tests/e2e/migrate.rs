//! End-to-end cases: migrate.

use crate::Case;

pub fn cases() -> Vec<Case> {
    vec![]
}
