//! `rwop-guard migrate`: the command. Finds what to migrate and hands it to one of three flows,
//! each in its own file, sharing the arguments and the printing of [`common`]:
//! `NAMESPACE/CLAIM` ([`claim`]), `--all`/`--selector`/`--from-scan` ([`fleet`]),
//! `--statefulset` ([`statefulset`]).

mod claim;
mod common;
mod fleet;
mod statefulset;

use std::process::ExitCode;

pub use common::MigrateArgs;
use common::namespaced;

use crate::cli::kube_args::KubeArgs;

pub fn run(args: &MigrateArgs, kube: &KubeArgs) -> ExitCode {
    let runtime =
        match crate::cli::runtime("migrate", false, ExitCode::from(crate::cli::EXIT_UNUSABLE)) {
            Ok(rt) => rt,
            Err(code) => return code,
        };
    runtime.block_on(migrate(args, kube))
}

async fn migrate(args: &MigrateArgs, kube: &KubeArgs) -> ExitCode {
    let (client, context_ns) = match kube.client().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwop-guard migrate: {}", crate::cli::describe(&e));
            return ExitCode::from(crate::cli::EXIT_UNUSABLE);
        }
    };
    if let Some(arg) = args.statefulset.as_deref() {
        let Some((namespace, name)) = namespaced(arg, args, &context_ns) else {
            eprintln!("rwop-guard migrate: {arg:?} is not NAMESPACE/NAME");
            return ExitCode::from(crate::cli::EXIT_UNUSABLE);
        };
        return statefulset::run(args, &client, &namespace, &name).await;
    }
    let Some(claim_arg) = args.claim.as_deref() else {
        let namespace = args.namespace.clone().unwrap_or(context_ns);
        return fleet::run(args, &client, &namespace).await;
    };
    let Some((namespace, claim)) = namespaced(claim_arg, args, &context_ns) else {
        eprintln!("rwop-guard migrate: {claim_arg:?} is not NAMESPACE/CLAIM");
        return ExitCode::from(crate::cli::EXIT_UNUSABLE);
    };
    claim::run(args, &client, &namespace, &claim).await
}
