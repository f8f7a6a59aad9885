//! The command line: one module per subcommand, no policy logic here.

mod check;
mod review;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use check::{CheckArgs, OutputFormat};
pub use review::ReviewArgs;

/// Exit code for input that cannot be used (the reason goes to stderr).
pub const EXIT_UNUSABLE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "rwop-guard",
    version,
    about = "Enforce and adopt ReadWriteOncePod for single-writer Kubernetes volumes",
    long_about = "rwop-guard is a Kubernetes admission webhook. It rejects PersistentVolumes and \
                  PersistentVolumeClaims that mix ReadWriteOncePod with other access modes, allows \
                  only the [ReadWriteOnce] -> [ReadWriteOncePod] change on update, and can rewrite \
                  new [ReadWriteOnce] claims to [ReadWriteOncePod] where that is safe."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer one AdmissionReview read from stdin (for debugging and scripts).
    Review(ReviewArgs),
    /// Check manifests offline against the policy (for CI pipelines).
    Check(CheckArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Review(args) => review::run(&args),
        Command::Check(args) => check::run(&args),
    }
}
