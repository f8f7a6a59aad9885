//! Runs the `rwop-guard` binary once, with arguments and stdin, for the tests of its commands.
//! Included by path (`#[path = "support/binary.rs"]`), as it needs nothing else from `support`.

use std::io::Write;
use std::process::{Command, Stdio};

// Each test crate that includes this file reads some of the fields.
#[allow(dead_code)]
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// From the package directory, without a policy from the caller's environment.
pub fn run(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rwop-guard"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env_remove("RWOP_GUARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading stdin (a bad policy file): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}
