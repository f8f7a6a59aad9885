//! What a release promises, tested where it is decided:
//! - the version stamp: `--version` of the built binary, and the build script itself (compiled
//!   alone with rustc and run the way cargo runs it) in a git checkout, a dirty one, a tarball
//!   without `.git`, a tarball unpacked inside another repository, and with the commit given by
//!   the environment (the container build);
//! - the krew manifest check (scripts/krew-manifest-check.py) accepts the manifest
//!   scripts/release.sh writes and rejects each broken variant with krew's reason.
//!
//! The archives, checksums, SBOMs, chart package and image index are checked by
//! scripts/release.sh and scripts/chart-checks.sh, which CI runs after the release builds.

use rwop_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn version_names_the_package_version_and_a_commit_of_this_repository() {
    let r = support::binary::run(&["--version"], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = r.stdout.trim_end();
    let prefix = format!("rwop-guard {} (commit ", env!("CARGO_PKG_VERSION"));
    let rest = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version printed {line:?}"));
    let commit = rest.strip_suffix(", dirty").unwrap_or(rest);
    if Path::new(REPO).join(".git").exists() {
        // A debug build keeps the stamp of the last build of changed sources (build.rs says
        // why), so the commit may be an ancestor of HEAD; it must be one of this repository.
        assert!(is_commit(commit), "{line:?}");
        git(
            Path::new(REPO),
            &["cat-file", "-e", &format!("{commit}^{{commit}}")],
        );
    } else {
        assert_eq!(commit, "unknown", "{line:?}");
    }
    // -V is the same line.
    let short = support::binary::run(&["-V"], b"");
    assert_eq!(short.stdout.trim_end(), line);
}

/// The build script, compiled on its own (it uses std only) into `dir`.
fn build_script(dir: &Path) -> PathBuf {
    let exe = dir.join("stamp-build-script");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc)
        .args(["--edition", "2024", "-O", "-o"])
        .arg(&exe)
        .arg(Path::new(REPO).join("build.rs"))
        .output()
        .expect("rustc runs");
    assert!(
        out.status.success(),
        "rustc build.rs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

struct ScriptRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl ScriptRun {
    fn stamp(&self) -> &str {
        assert!(self.ok, "build script failed: {}", self.stderr);
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("cargo:rustc-env=RWOP_GUARD_LONG_VERSION="))
            .unwrap_or_else(|| panic!("no stamp in {}", self.stdout))
    }
    fn watches(&self, name: &str) -> bool {
        self.stdout.lines().any(|l| {
            l.strip_prefix("cargo:rerun-if-changed=")
                .is_some_and(|p| p.ends_with(name))
        })
    }
}

/// Runs the build script as cargo does: in the package directory, with its environment.
fn run_script(exe: &Path, package: &Path, profile: &str, env: &[(&str, &str)]) -> ScriptRun {
    let mut cmd = Command::new(exe);
    cmd.current_dir(package)
        .env("CARGO_MANIFEST_DIR", package)
        .env("CARGO_PKG_VERSION", "9.8.7")
        .env("PROFILE", profile)
        .env_remove("RWOP_GUARD_GIT_COMMIT")
        .env_remove("RWOP_GUARD_GIT_DIRTY")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("build script runs");
    ScriptRun {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn build_script_stamps_commit_dirty_or_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_script(tmp.path());

    // A git checkout: its commit; `dirty` once a tracked file changes; untracked files do not
    // count (build output, editor files).
    let checkout = tmp.path().join("checkout");
    std::fs::create_dir_all(checkout.join("src")).unwrap();
    std::fs::write(checkout.join("src/main.rs"), "fn main() {}\n").unwrap();
    for file in ["Cargo.toml", "Cargo.lock", "build.rs"] {
        std::fs::write(checkout.join(file), "").unwrap();
    }
    git(&checkout, &["init", "-q"]);
    git(&checkout, &["add", "."]);
    git(&checkout, &["commit", "-q", "-m", "one"]);
    let head = git(&checkout, &["rev-parse", "HEAD"]);
    let clean = run_script(&exe, &checkout, "release", &[]);
    assert_eq!(clean.stamp(), format!("9.8.7 (commit {head})"));
    std::fs::write(checkout.join("untracked.txt"), "x").unwrap();
    assert_eq!(
        run_script(&exe, &checkout, "release", &[]).stamp(),
        format!("9.8.7 (commit {head})")
    );
    std::fs::write(checkout.join("src/main.rs"), "fn main() { }\n").unwrap();
    assert_eq!(
        run_script(&exe, &checkout, "release", &[]).stamp(),
        format!("9.8.7 (commit {head}, dirty)")
    );

    // A release build re-runs when HEAD or the branch moves; a debug build does not (a commit
    // alone would rebuild every test binary).
    let branch = git(&checkout, &["symbolic-ref", "HEAD"]);
    assert!(clean.watches("HEAD"), "{}", clean.stdout);
    assert!(clean.watches(&branch), "{}", clean.stdout);
    let debug = run_script(&exe, &checkout, "debug", &[]);
    assert!(!debug.watches("HEAD"), "{}", debug.stdout);
    assert!(debug.watches("src"), "{}", debug.stdout);
    // No path that does not exist (cargo would re-run the script on every build).
    for line in clean.stdout.lines() {
        if let Some(path) = line.strip_prefix("cargo:rerun-if-changed=") {
            let path = Path::new(path);
            let path = if path.is_absolute() {
                path.to_owned()
            } else {
                checkout.join(path)
            };
            assert!(path.exists(), "watches a missing path: {line}");
        }
    }

    // A tarball: no .git, so no commit to name.
    let tarball = tmp.path().join("rwop-guard-9.8.7");
    std::fs::create_dir_all(tarball.join("src")).unwrap();
    assert_eq!(
        run_script(&exe, &tarball, "release", &[]).stamp(),
        "9.8.7 (commit unknown)"
    );

    // A tarball unpacked inside some other repository is not that repository's commit.
    let nested = checkout.join("vendor/rwop-guard");
    std::fs::create_dir_all(&nested).unwrap();
    assert_eq!(
        run_script(&exe, &nested, "release", &[]).stamp(),
        "9.8.7 (commit unknown)"
    );

    // The container build passes the commit in; it wins over git.
    let given = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(
        run_script(
            &exe,
            &tarball,
            "release",
            &[("RWOP_GUARD_GIT_COMMIT", given)]
        )
        .stamp(),
        format!("9.8.7 (commit {given})")
    );
    assert_eq!(
        run_script(
            &exe,
            &checkout,
            "release",
            &[
                ("RWOP_GUARD_GIT_COMMIT", given),
                ("RWOP_GUARD_GIT_DIRTY", "1")
            ]
        )
        .stamp(),
        format!("9.8.7 (commit {given}, dirty)")
    );
    // The Dockerfile's default, when no commit was passed.
    assert_eq!(
        run_script(
            &exe,
            &tarball,
            "release",
            &[("RWOP_GUARD_GIT_COMMIT", "unknown")]
        )
        .stamp(),
        "9.8.7 (commit unknown)"
    );
    // Anything else is refused with a clear reason, not stamped.
    let bad = run_script(
        &exe,
        &tarball,
        "release",
        &[("RWOP_GUARD_GIT_COMMIT", "v1.2; rm -rf /")],
    );
    assert!(!bad.ok, "accepted a bad commit: {}", bad.stdout);
    assert!(
        bad.stderr.contains("is not a git commit id"),
        "{}",
        bad.stderr
    );
}

/// The Python that has PyYAML: the tools venv scripts/install-tools.sh makes, else python3.
/// None (and a line on stderr) when neither has it; with `CI` set that fails the test (the one
/// rule of `support::tools`).
fn python_with_yaml() -> Option<PathBuf> {
    let venv = support::tools::cache_dir()
        .and_then(|bin| Some(bin.parent()?.join("venv/bin/python")))
        .into_iter();
    for python in venv.chain([PathBuf::from("python3")]) {
        let ok = Command::new(&python)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    let why = "the krew manifest check tests need a python with PyYAML \
               (scripts/install-tools.sh installs one)";
    if let Err(failure) = support::tools::skipped("release", why, true) {
        panic!("{failure}");
    }
    None
}

fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// An archive as scripts/release.sh makes it: `rwop-guard` (executable) and LICENSE at the top.
fn make_archive(dir: &Path, name: &str, bin_mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let stage = dir.join(format!("stage-{name}"));
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("rwop-guard"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        stage.join("rwop-guard"),
        std::fs::Permissions::from_mode(bin_mode),
    )
    .unwrap();
    std::fs::write(stage.join("LICENSE"), b"Apache-2.0").unwrap();
    let archive = dir.join(name);
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&stage)
        .args(["rwop-guard", "LICENSE"])
        .status()
        .unwrap();
    assert!(status.success());
    archive
}

#[test]
fn krew_manifest_check_follows_krews_rules() {
    let Some(python) = python_with_yaml() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let amd64 = make_archive(dir, "rwop-guard-1.2.3-linux-amd64.tar.gz", 0o755);
    let arm64 = make_archive(dir, "rwop-guard-1.2.3-linux-arm64.tar.gz", 0o755);
    make_archive(dir, "not-executable.tar.gz", 0o644);
    let good = format!(
        "apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: rwop
spec:
  version: v1.2.3
  shortDescription: Find and migrate volumes to ReadWriteOncePod safely
  platforms:
  - selector:
      matchLabels:
        os: linux
        arch: amd64
    uri: https://example.invalid/v1.2.3/rwop-guard-1.2.3-linux-amd64.tar.gz
    sha256: \"{}\"
    bin: rwop-guard
  - selector:
      matchLabels:
        os: linux
        arch: arm64
    uri: https://example.invalid/v1.2.3/rwop-guard-1.2.3-linux-arm64.tar.gz
    sha256: \"{}\"
    bin: rwop-guard
",
        sha256_hex(&amd64),
        sha256_hex(&arm64)
    );
    let check = |file: &str, manifest: &str| {
        let path = dir.join(file);
        std::fs::write(&path, manifest).unwrap();
        let out = Command::new(&python)
            .arg(Path::new(REPO).join("scripts/krew-manifest-check.py"))
            .arg(&path)
            .arg(dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, stderr) = check("rwop.yaml", &good);
    assert!(ok, "the good manifest was rejected: {stderr}");
    assert!(stderr.contains("linux/amd64, linux/arm64"), "{stderr}");

    let amd64_sum = sha256_hex(&amd64);
    let broken: &[(&str, String, &str)] = &[
        (
            "rwop.yaml",
            good.replace("krew.googlecontainertools.github.com/v1alpha2", "v1"),
            "apiVersion is 'v1'",
        ),
        (
            "rwop.yaml",
            good.replace("kind: Plugin", "kind: Tool"),
            "kind is 'Tool'",
        ),
        ("other.yaml", good.clone(), "plugin should be named 'other'"),
        (
            "rwop.yaml",
            good.replace(
                "shortDescription: Find and migrate volumes to ReadWriteOncePod safely",
                "shortDescription: \"two\\nlines\"",
            ),
            "line breaks in short description",
        ),
        (
            "rwop.yaml",
            good.replace(
                "  shortDescription: Find and migrate volumes to ReadWriteOncePod safely\n",
                "",
            ),
            "should have a short description",
        ),
        (
            "rwop.yaml",
            good.replace("version: v1.2.3", "version: 1.2.3"),
            "not a semantic version with a leading 'v'",
        ),
        (
            "rwop.yaml",
            good.replacen("    bin: rwop-guard\n", "", 1),
            "`bin` has to be set",
        ),
        (
            "rwop.yaml",
            good.replacen("bin: rwop-guard", "bin: kubectl-rwop", 1),
            "bin 'kubectl-rwop' is not in",
        ),
        (
            "rwop.yaml",
            good.replacen("bin: rwop-guard", "bin: ../rwop-guard", 1),
            "must be a relative path inside the archive",
        ),
        (
            "rwop.yaml",
            good.replacen(&amd64_sum, &"f".repeat(64), 1),
            "is not rwop-guard-1.2.3-linux-amd64.tar.gz's",
        ),
        (
            // Unquoted, all digits: YAML reads a number, krew a type error.
            "rwop.yaml",
            good.replacen(&format!("\"{amd64_sum}\""), &"1".repeat(64), 1),
            "`sha256` must be a string",
        ),
        (
            "rwop.yaml",
            good.replacen(&amd64_sum, &amd64_sum.to_uppercase(), 1),
            "is not valid, must match",
        ),
        (
            "rwop.yaml",
            good.replacen(
                "        os: linux\n",
                "        os: linux\n        distro: debian\n",
                1,
            ),
            "selector key 'distro' not supported",
        ),
        (
            "rwop.yaml",
            good.replacen("arch: arm64", "arch: amd64", 1),
            "selects ('linux', 'amd64') like platforms[0]",
        ),
        (
            "rwop.yaml",
            good.replacen(
                "rwop-guard-1.2.3-linux-arm64.tar.gz",
                "rwop-guard-1.2.4-linux-arm64.tar.gz",
                1,
            ),
            "names no archive",
        ),
        (
            "rwop.yaml",
            good.replacen(
                "rwop-guard-1.2.3-linux-arm64.tar.gz\n",
                "not-executable.tar.gz\n",
                1,
            )
            .replacen(
                &sha256_hex(&arm64),
                &sha256_hex(&dir.join("not-executable.tar.gz")),
                1,
            ),
            "is not an executable regular file",
        ),
        (
            "rwop.yaml",
            good.split("  platforms:").next().unwrap().to_owned(),
            "should have a platform specified",
        ),
    ];
    for (file, manifest, reason) in broken {
        let (ok, stderr) = check(file, manifest);
        assert!(!ok, "accepted a manifest that should fail with {reason:?}");
        assert!(
            stderr.contains(reason),
            "want {reason:?} in the rejection: {stderr}"
        );
    }
}
