//! End-to-end cases: scan.

use crate::Case;

pub fn cases() -> Vec<Case> {
    vec![]
}
