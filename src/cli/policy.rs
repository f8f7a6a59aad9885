//! `rwop-guard policy export`: the policy file as in-tree admission objects, ready for
//! `kubectl apply -f -`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::intree::{self, ExportOptions, MapVersion};
use crate::policy_file;

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the policy as ValidatingAdmissionPolicy and MutatingAdmissionPolicy objects (with
    /// their bindings), for `kubectl apply -f -`: the API server then enforces it itself, in
    /// CEL, with no webhook. V2 and the W1 warnings become ValidatingAdmissionPolicies (the
    /// binding's validationActions follow validation.action); M1 (for the classes listed in
    /// mutation.storageClasses only) and M2 become MutatingAdmissionPolicies. What stays with
    /// the webhook is printed on stderr.
    Export(ExportArgs),
}

/// Which MutatingAdmissionPolicy API the cluster serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MapVersionArg {
    /// admissionregistration.k8s.io/v1: Kubernetes 1.36 and later.
    V1,
    /// admissionregistration.k8s.io/v1beta1: Kubernetes 1.34 and 1.35 with the
    /// MutatingAdmissionPolicy feature gate and
    /// --runtime-config=admissionregistration.k8s.io/v1beta1=true.
    V1beta1,
    /// No MutatingAdmissionPolicy (older clusters): M1 and M2 stay with the webhook.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// YAML documents separated by `---`.
    #[default]
    Yaml,
    /// One JSON `v1` `List`.
    Json,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Policy file (YAML), the one `serve --config` reads; the default policy if absent.
    #[arg(long, value_name = "FILE", env = "RWOP_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// API version of the MutatingAdmissionPolicy objects.
    #[arg(long, value_enum, default_value = "v1beta1")]
    pub map_version: MapVersionArg,
    /// Also print M2: re-applying the [ReadWriteOnce] manifest of a claim or volume rwop-guard
    /// changed keeps [ReadWriteOncePod] (as the chart's webhooks.mutating.keepOnReapply).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub keep_on_reapply: bool,
    /// Prefix of the objects' names.
    #[arg(long, default_value = "rwop-guard", value_name = "NAME")]
    pub prefix: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: ExportFormat,
}

pub fn run(args: &PolicyArgs) -> ExitCode {
    match &args.command {
        PolicyCommand::Export(args) => export(args),
    }
}

fn export(args: &ExportArgs) -> ExitCode {
    let policy = match policy_file::load(args.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rwop-guard policy export: {e}");
            return ExitCode::from(super::EXIT_UNUSABLE);
        }
    };
    if let Err(why) = check_prefix(&args.prefix) {
        eprintln!(
            "rwop-guard policy export: --prefix {:?}: {why}",
            args.prefix
        );
        return ExitCode::from(super::EXIT_UNUSABLE);
    }
    let options = ExportOptions {
        prefix: args.prefix.clone(),
        map_version: match args.map_version {
            MapVersionArg::V1 => Some(MapVersion::V1),
            MapVersionArg::V1beta1 => Some(MapVersion::V1beta1),
            MapVersionArg::None => None,
        },
        keep_on_reapply: args.keep_on_reapply,
    };
    let export = intree::export(&policy, &options);
    let text = match args.output {
        ExportFormat::Yaml => crate::manifests::to_yaml_stream(&export.objects),
        ExportFormat::Json => serde_json::to_string_pretty(&serde_json::json!({
            "apiVersion": "v1", "kind": "List", "items": export.objects,
        }))
        .map(|t| t + "\n")
        .map_err(|e| e.to_string()),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rwop-guard policy export: cannot print the objects: {e}");
            return ExitCode::FAILURE;
        }
    };
    for note in &export.notes {
        eprintln!("rwop-guard policy export: note: {note}");
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("rwop-guard policy export: cannot write to stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Object names are DNS subdomains: the prefix plus the longest suffix must be one.
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    let longest = prefix.len() + 1 + intree::TRANSITION_WARNINGS.len();
    let valid = !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && prefix.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        return Err(
            "must be lower-case letters, digits, '-' or '.', starting with a letter or digit",
        );
    }
    if longest > 253 {
        return Err("too long for an object name");
    }
    Ok(())
}
