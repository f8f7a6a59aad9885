use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::certs;

/// Writes a CA and a serving certificate for the webhook Service (`NAME.NS.svc`), for installs
/// without cert-manager and for local development: ca.crt, ca.key, tls.crt, tls.key (PEM;
/// keys readable by the owner only). Existing files are not overwritten unless --force.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name of the webhook's Service.
    #[arg(long, value_name = "NAME", default_value = "rwop-guard")]
    pub service: String,
    /// Namespace of the Service.
    #[arg(long, value_name = "NS", default_value = "rwop-guard")]
    pub namespace: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &CertsArgs) -> ExitCode {
    match write(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rwop-guard certs: {e:#}");
            ExitCode::from(super::EXIT_UNUSABLE)
        }
    }
}

fn write(args: &CertsArgs) -> anyhow::Result<()> {
    let names = certs::service_dns_names(&args.service, &args.namespace);
    let g = certs::generate(
        &names[0],
        &names,
        &[],
        Duration::from_secs(args.days.max(1) * 86_400),
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (file, contents, mode) in [
        ("ca.crt", &g.ca_cert_pem, 0o644),
        ("ca.key", &g.ca_key_pem, 0o600),
        ("tls.crt", &g.cert_pem, 0o644),
        ("tls.key", &g.key_pem, 0o600),
    ] {
        write_file(&args.out.join(file), contents, mode, args.force)?;
    }
    println!(
        "wrote ca.crt, ca.key, tls.crt, tls.key to {} for {}",
        args.out.display(),
        names.join(", ")
    );
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (use --force to replace it)",
            path.display()
        )
    })?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // create() keeps the mode of an existing file: set it explicitly.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}
