//! The command line: one module per subcommand, no policy logic here.

mod certs;
mod check;
mod kube_args;
mod migrate;
mod policy;
mod review;
mod scan;
mod serve;

use std::process::ExitCode;

use crate::logging;
use clap::{Parser, Subcommand};

use certs::CertsArgs;
use check::CheckArgs;
use kube_args::KubeArgs;
use migrate::MigrateArgs;
use policy::PolicyArgs;
use review::ReviewArgs;
use scan::ScanArgs;
use serve::{LogFormat, ServeArgs, parse_duration};

/// An error and its causes on one line, each said once: a cause whose text the message already
/// ends with (many errors print their source in their own message, as kube's and io's do) is
/// not repeated.
pub(crate) fn describe<E>(error: E) -> String
where
    E: AsRef<dyn std::error::Error + 'static>,
{
    let mut out = error.as_ref().to_string();
    let mut cause = error.as_ref().source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Exit code for input that cannot be used (the reason goes to stderr).
pub(crate) const EXIT_UNUSABLE: u8 = 2;

/// The Tokio runtime a command runs on (one thread unless `multi_thread`), or `exit` once the
/// reason is on stderr.
pub(crate) fn runtime(
    command: &str,
    multi_thread: bool,
    exit: ExitCode,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("rwop-guard {command}: cannot start the runtime: {e}");
        exit
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "rwop-guard",
    version = env!("RWOP_GUARD_LONG_VERSION"),
    about = "Enforce and adopt ReadWriteOncePod for single-writer Kubernetes volumes",
    long_about = "rwop-guard is a Kubernetes admission webhook. It rejects PersistentVolumes and \
                  PersistentVolumeClaims that mix ReadWriteOncePod with other access modes, allows \
                  only the [ReadWriteOnce] -> [ReadWriteOncePod] change on update, and can rewrite \
                  new [ReadWriteOnce] claims to [ReadWriteOncePod] where that is safe."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Parses the command line. Invoked as `kubectl-rwop` (a link or copy of the binary), it
    /// presents itself as the kubectl plugin `kubectl rwop`.
    pub fn parse_args() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let invoked_as = std::env::args_os()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let mut command = Cli::command();
        if invoked_as.starts_with("kubectl-rwop") {
            command = command.bin_name("kubectl rwop").name("kubectl-rwop");
            crate::set_program_name("kubectl rwop");
        }
        let names: Vec<String> = command
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let args = kube_args::hoist_cluster_flags(
            std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            &names,
        );
        let matches = command.get_matches_from(args);
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the admission webhook server.
    Serve(Box<ServeArgs>),
    /// Answer one AdmissionReview read from stdin (for debugging and scripts).
    Review(ReviewArgs),
    /// Check manifests offline against the policy (for CI pipelines).
    Check(CheckArgs),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Report V1 violations, migration candidates and Deployments that cannot roll with
    /// ReadWriteOncePod, read from the cluster.
    Scan(ScanArgs),
    /// Move a claim's volume from ReadWriteOnce to ReadWriteOncePod, safely and resumably.
    Migrate(MigrateArgs),
    /// Print the policy as in-tree admission objects (`policy export`).
    Policy(PolicyArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // Held until the command returns, so the server's last log lines are written.
    let _logs = init_tracing(match &cli.command {
        Command::Serve(args) => Some(args.log_format),
        _ => None,
    });
    match cli.command {
        Command::Serve(args) => {
            let kube = args.kube.clone();
            serve::run(*args, &kube)
        }
        Command::Certs(args) => certs::run(&args),
        Command::Scan(args) => scan::run(&args, &args.kube),
        Command::Migrate(args) => migrate::run(&args, &args.kube),
        Command::Review(args) => review::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Policy(args) => policy::run(&args),
    }
}

/// Logs go to stderr. The server logs at `info` in the chosen format, through a bounded queue
/// and a writer thread (see `crate::logging`); other commands only warn, straight to stderr.
/// `RUST_LOG` overrides the level (e.g. `RUST_LOG=rwop_guard=debug`).
fn init_tracing(
    server_format: Option<LogFormat>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::EnvFilter;
    let Some(format) = server_format else {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_ansi(false)
            .fmt_fields(logging::EscapedFields::default())
            .init();
        return None;
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = logging::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .fmt_fields(logging::EscapedFields::default())
            .init(),
    }
    Some(guard)
}
