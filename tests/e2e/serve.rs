//! End-to-end cases: serve.

use crate::Case;

pub fn cases() -> Vec<Case> {
    vec![]
}
