//! End-to-end suite: rwop-guard against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager) from `$KUBEBUILDER_ASSETS`. See the README's "Testing" section.
//!
//! One control plane and one `rwop-guard serve` (registered with the chart's own webhook
//! configurations) serve every case. Cases run in parallel, each in namespaces and volumes of
//! its own; cases that replace the server or its policy run afterwards, one at a time. The
//! control plane is stopped when the cases end, whatever they did; its logs are kept when a
//! case failed.
//!
//!   KUBEBUILDER_ASSETS=DIR cargo test --test e2e [-- FILTER]

mod admission;
mod docs;
mod failsafe;
mod fleet;
mod harness;
mod intree;
mod migrate;
mod reports;
mod scan;
mod serve;
mod workloads;

use std::process::ExitCode;
use std::sync::Arc;

use libtest_mimic::{Arguments, Failed, Trial};

use harness::Env;

/// One end-to-end case.
pub struct Case {
    pub name: &'static str,
    pub run: fn(&Env) -> anyhow::Result<()>,
    /// Replaces the shared server or its policy: runs alone, after the shared cases.
    pub exclusive: bool,
}

impl Case {
    pub const fn shared(name: &'static str, run: fn(&Env) -> anyhow::Result<()>) -> Self {
        Self {
            name,
            run,
            exclusive: false,
        }
    }

    pub const fn exclusive(name: &'static str, run: fn(&Env) -> anyhow::Result<()>) -> Self {
        Self {
            name,
            run,
            exclusive: true,
        }
    }
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let cases: Vec<Case> = [
        admission::cases(),
        failsafe::cases(),
        scan::cases(),
        migrate::cases(),
        fleet::cases(),
        serve::cases(),
        intree::cases(),
        workloads::cases(),
        reports::cases(),
        docs::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();

    if args.list {
        let trials = cases
            .iter()
            .map(|c| Trial::test(c.name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    // `cargo test NAME` passes NAME to every test binary: start nothing for no case.
    if !cases.iter().any(|c| selected(&args, c.name)) {
        println!("e2e: no case matches the filter");
        return ExitCode::SUCCESS;
    }

    // The one rule for what is missing (rwop_test_support::tools): skipped, or a failure under CI.
    let skip = |why: &str| match rwop_test_support::tools::skipped("e2e", why, true) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    };
    if let Some(name) = harness::TOOLS
        .into_iter()
        .find(|name| rwop_test_support::tools::find(name).is_none())
    {
        return skip(&rwop_test_support::tools::missing(name));
    }
    let assets = match harness::assets() {
        Ok(Some(dir)) => dir,
        Ok(None) => {
            return skip(
                "KUBEBUILDER_ASSETS is not set (a directory with etcd, kube-apiserver and \
                 kube-controller-manager; README \"Testing\" says where to get them)",
            );
        }
        Err(e) => {
            eprintln!("e2e: {e:#}");
            return ExitCode::FAILURE;
        }
    };

    let dir = match tempfile::Builder::new().prefix("rwop-e2e-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("e2e: cannot make a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let env = match Env::start(&assets, dir.path()) {
        Ok(env) => Arc::new(env),
        Err(e) => {
            eprintln!(
                "e2e: the environment did not start: {e:#}\nlogs: {}",
                dir.keep().display()
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "e2e: control plane and webhook ready in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        env.plane.server
    );

    let (exclusive, shared): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(|c| c.exclusive);
    let first = libtest_mimic::run(&args, trials(shared, &env));
    let mut one_at_a_time = args.clone();
    one_at_a_time.test_threads = Some(1);
    let second = libtest_mimic::run(&one_at_a_time, trials(exclusive, &env));

    let passed = first.num_passed + second.num_passed;
    let failed = first.num_failed + second.num_failed;
    drop(env);
    if failed > 0 {
        eprintln!(
            "e2e: logs of the control plane and the webhook kept in {}",
            dir.keep().display()
        );
    }
    eprintln!("e2e: finished in {:.0}s", started.elapsed().as_secs_f64());
    println!("e2e: {passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |f: &str| {
        if args.exact {
            name == f
        } else {
            name.contains(f)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}

fn trials(cases: Vec<Case>, env: &Arc<Env>) -> Vec<Trial> {
    cases
        .into_iter()
        .map(|case| {
            let env = Arc::clone(env);
            Trial::test(case.name, move || {
                (case.run)(&env).map_err(|e| Failed::from(format!("{e:#}")))
            })
        })
        .collect()
}
