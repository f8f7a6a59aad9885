//! The command line as kubectl users expect it: cluster flags where they mean something and
//! before or after the command, `-o`/`-n`, boolean environment variables, the plugin name.

use rwop_test_support as support;

use support::binary::{self, run};

fn help(command: &str) -> String {
    let r = run(&[command, "--help"], b"");
    assert_eq!(r.code, 0, "{command} --help: {}", r.stderr);
    r.stdout
}

#[test]
fn cluster_flags_are_offered_only_by_commands_that_talk_to_a_cluster() {
    for command in ["serve", "scan", "migrate"] {
        let text = help(command);
        assert!(text.contains("--kubeconfig <FILE>"), "{command}: {text}");
        assert!(text.contains("--context <NAME>"), "{command}: {text}");
    }
    for command in ["check", "review", "certs"] {
        let text = help(command);
        assert!(!text.contains("--kubeconfig"), "{command}: {text}");
        assert!(!text.contains("--context"), "{command}: {text}");
        let r = run(&[command, "--kubeconfig", "/k"], b"");
        assert_eq!(r.code, 2, "{command} accepted --kubeconfig");
        assert!(
            r.stderr.contains("unexpected argument '--kubeconfig'"),
            "{}",
            r.stderr
        );
    }
    for command in ["scan", "migrate"] {
        assert!(help(command).contains("-n, --namespace"), "{command}");
    }
    for command in ["scan", "check"] {
        assert!(help(command).contains("-o, --output"), "{command}");
    }
}

#[test]
fn cluster_flags_work_before_the_command_too() {
    // The kubeconfig named before `scan` is the one scan tries to read.
    for args in [
        &["-n", "shop", "--kubeconfig", "/nonexistent/k", "scan"][..],
        &["--kubeconfig=/nonexistent/k", "scan", "-n", "shop"][..],
        &["scan", "--kubeconfig", "/nonexistent/k", "-n", "shop"][..],
    ] {
        let r = run(args, b"");
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("cannot read kubeconfig /nonexistent/k"),
            "{args:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn as_a_kubectl_plugin_it_calls_itself_kubectl_rwop() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-rwop");
    std::os::unix::fs::symlink(binary::path(), &plugin).unwrap();
    let plugin_run = |args: &[&str]| {
        let mut command = binary::command(&plugin);
        command.args(args);
        binary::run_command(command, b"")
    };
    let out = plugin_run(&[
        "-n",
        "shop",
        "--context",
        "nowhere",
        "scan",
        "--kubeconfig",
        "/nonexistent/k",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read kubeconfig /nonexistent/k"),
        "{}",
        out.stderr
    );
    let out = plugin_run(&["scan", "--help"]);
    assert!(
        out.stdout.contains("Usage: kubectl rwop scan"),
        "{}",
        out.stdout
    );
}

#[test]
fn boolean_environment_variables_take_1_0_true_false() {
    let serve = |args: &[&str], dev: &str| {
        let mut command = binary::command(binary::path());
        command.args(args).env("RWOP_GUARD_DEV", dev);
        binary::run_command(command, b"")
    };
    for value in ["1", "true", "yes", "on"] {
        // --dev from the environment, then a policy that cannot be read: the run gets past
        // the command line (exit 1 from serve, not 2 from clap).
        let r = serve(&["serve", "--config", "/nonexistent/policy.yaml"], value);
        assert_eq!(r.code, 1, "RWOP_GUARD_DEV={value}: {}", r.stderr);
        assert!(r.stderr.contains("cannot read policy file"), "{}", r.stderr);
    }
    for value in ["0", "false"] {
        // Not --dev: then the certificate is required (none comes from the environment).
        let r = serve(&["serve"], value);
        assert_ne!(r.code, 0, "RWOP_GUARD_DEV={value}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("--tls-cert and --tls-key are required (or use --dev)"),
            "RWOP_GUARD_DEV={value}: {}",
            r.stderr
        );
    }
}

#[test]
fn serve_usage_shows_both_ways_to_start() {
    let text = help("serve");
    assert!(
        text.contains(
            "Usage: rwop-guard serve [OPTIONS] --tls-cert <FILE> --tls-key <FILE>\n       \
             rwop-guard serve [OPTIONS] --dev"
        ),
        "{text}"
    );
}

#[test]
fn check_takes_o_for_output() {
    let r = run(
        &["check", "-o", "json", "-f", "-"],
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["findings"], serde_json::json!([]));
}
