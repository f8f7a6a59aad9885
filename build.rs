//! Stamps the build with the git commit it comes from, for `rwop-guard --version`:
//! `rwop-guard 0.1.0 (commit <40 hex>)`, `(commit <40 hex>, dirty)` when tracked files differed
//! from that commit, `(commit unknown)` when the sources are not a git checkout (a tarball, or a
//! container build whose context leaves `.git` out).
//!
//! `RWOP_GUARD_GIT_COMMIT` (and `RWOP_GUARD_GIT_DIRTY=1`) set the stamp without git: the
//! Dockerfile's builder stage passes them in as build arguments.
//!
//! When the stamp is re-read: a release build re-reads it when HEAD moves (a commit, a checkout)
//! or the sources change, so a release binary always names its commit. A debug build re-reads it
//! only when the sources change: re-running on every commit would rebuild the crate and every
//! test binary after each commit, with no change to the code. So a debug binary built before a
//! commit of unchanged sources keeps the stamp it was built with.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=RWOP_GUARD_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=RWOP_GUARD_GIT_DIRTY");

    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");

    let stamp = match std::env::var("RWOP_GUARD_GIT_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => {
            let commit = commit.trim().to_ascii_lowercase();
            if commit != "unknown" && !is_commit_id(&commit) {
                // A build-time input, not a request: failing the build is the clear error.
                panic!("RWOP_GUARD_GIT_COMMIT={commit:?} is not a git commit id (7-40 hex digits)");
            }
            let dirty = std::env::var("RWOP_GUARD_GIT_DIRTY")
                .is_ok_and(|d| matches!(d.trim(), "1" | "true" | "yes"));
            Stamp { commit, dirty }
        }
        _ => {
            let stamp = from_git(&manifest_dir);
            if release && stamp.is_some() {
                watch_head(&manifest_dir);
            }
            stamp.unwrap_or(Stamp {
                commit: "unknown".to_owned(),
                dirty: false,
            })
        }
    };

    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dirty = if stamp.dirty { ", dirty" } else { "" };
    println!(
        "cargo:rustc-env=RWOP_GUARD_LONG_VERSION={version} (commit {}{dirty})",
        stamp.commit
    );
}

struct Stamp {
    commit: String,
    dirty: bool,
}

fn is_commit_id(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Output of `git ARGS` run in `dir`, trimmed; `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit of the checkout whose top level is `dir`. A source tree unpacked inside some other
/// repository is not that repository's commit: it gets no stamp.
fn from_git(dir: &Path) -> Option<Stamp> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = match (Path::new(&top).canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return None;
    }
    let commit = git(dir, &["rev-parse", "HEAD"])?;
    if !is_commit_id(&commit) {
        return None;
    }
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    Some(Stamp {
        commit,
        dirty: !status.is_empty(),
    })
}

/// Re-run when HEAD moves: HEAD itself (a checkout), its reflog (every commit, checkout or reset
/// appends to it), the branch it points to (a commit), and packed-refs (where the branch may
/// live). Paths come from git, so worktrees work too.
fn watch_head(dir: &Path) {
    let mut files = vec![
        "HEAD".to_owned(),
        "logs/HEAD".to_owned(),
        "packed-refs".to_owned(),
    ];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for file in files {
        // Cargo re-runs on every build for a path that does not exist: name only those that do.
        if let Some(path) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &file],
        ) && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
