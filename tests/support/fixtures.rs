//! Files under `tests/fixtures/`.

use std::path::PathBuf;

/// `tests/fixtures/{relative}`.
pub fn path(relative: &str) -> PathBuf {
    crate::package_dir().join("tests/fixtures").join(relative)
}

/// The bytes of `tests/fixtures/{relative}`; a missing file fails the test with its path.
pub fn read(relative: &str) -> Vec<u8> {
    let path = path(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The names of the docs' `e2e` command blocks, in the order tests/e2e/docs.rs runs them
/// (`tests/fixtures/docs-e2e-blocks.txt`: one a line, `#` comments): the list tests/docs.rs
/// checks the docs against.
pub fn docs_e2e_blocks() -> Vec<String> {
    String::from_utf8_lossy(&read("docs-e2e-blocks.txt"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// A captured AdmissionReview, `tests/fixtures/admission/{name}`.
pub fn admission(name: &str) -> Vec<u8> {
    read(&format!("admission/{name}"))
}

/// The names of the captured AdmissionReviews (`*.json` in `tests/fixtures/admission/`), sorted.
pub fn admission_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path("admission"))
        .expect("tests/fixtures/admission")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}
