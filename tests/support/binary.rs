//! The one way tests run the `rwop-guard` binary (or its `kubectl-rwop` link): [`command`]
//! builds the process with the one environment clean-up, [`run`] and [`run_async`] run it to
//! the end, bounded by [`PATIENCE`](crate::PATIENCE).

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// How a run ended.
#[derive(Debug)]
pub struct Run {
    /// The exit code; -1 when a signal ended the process.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The binary under test: `$RWOP_GUARD_TEST_BIN` (another build, e.g. a release one to
/// measure), else the `rwop-guard` cargo built next to the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/rwop-guard`).
pub fn path() -> PathBuf {
    if let Some(bin) = std::env::var_os("RWOP_GUARD_TEST_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("rwop-guard"))
        .expect("the test executable lies in target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} not found: cargo builds it for integration tests",
        bin.display()
    );
    bin
}

/// Variables of the caller's environment the binary (or kube's client) would read: a test
/// says what it wants explicitly.
const CLEARED: [&str; 8] = [
    "KUBECONFIG",
    "RUST_LOG",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `program` (the [`path`] of the binary, or a `kubectl-rwop` link to it) to be run from the
/// package directory, without any `RWOP_GUARD_*` variable, `KUBECONFIG`, proxy or `RUST_LOG`
/// of the caller's environment. Add what the test needs (`.env("KUBECONFIG", …)`).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(crate::package_dir());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RWOP_GUARD_") {
            command.env_remove(name);
        }
    }
    for name in CLEARED {
        command.env_remove(name);
    }
    command
}

/// Runs `command` with `stdin` as its input (then closed) to the end; a run that takes longer
/// than [`PATIENCE`](crate::PATIENCE) is killed and fails the test.
pub fn run_command(mut command: Command, stdin: &[u8]) -> Run {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // The binary may exit before reading its input (a bad argument): a broken pipe is fine.
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(crate::PATIENCE) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {what}: {e}")),
        Err(_) => {
            // Not reaped yet (the waiting thread has not returned): the pid is still the child's.
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            panic!("{what} did not finish within {:?}", crate::PATIENCE);
        }
    };
    let text = |bytes: Vec<u8>, stream: &str| {
        String::from_utf8(bytes)
            .unwrap_or_else(|e| panic!("{what} wrote non-UTF-8 to {stream}: {e}"))
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: text(out.stdout, "stdout"),
        stderr: text(out.stderr, "stderr"),
    }
}

/// `rwop-guard ARGS`, see [`command`].
pub fn rwop_guard(args: &[&str]) -> Command {
    let mut command = command(path());
    command.args(args);
    command
}

/// `rwop-guard ARGS` with `stdin`, see [`command`] and [`run_command`].
pub fn run(args: &[&str], stdin: &[u8]) -> Run {
    run_command(rwop_guard(args), stdin)
}

/// [`run_command`] from async code, off the runtime's threads (the test's own servers, such
/// as the fake API server, keep being served meanwhile).
pub async fn run_async(command: Command, stdin: &[u8]) -> Run {
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || run_command(command, &stdin))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
