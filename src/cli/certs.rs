use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::certs;

/// Writes a CA and a serving certificate for the webhook Service (`NAME.NS.svc`), for installs
/// without cert-manager and for local development: ca.crt, ca.key, tls.crt, tls.key (PEM;
/// keys readable by the owner only). Existing files are not overwritten unless --force;
/// --reuse-ca issues a new serving certificate from the CA already in --out (renewal).
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name of the webhook's Service (a DNS label).
    #[arg(long, value_name = "NAME", default_value = "rwop-guard", value_parser = dns_label)]
    pub service: String,
    /// Namespace of the Service (a DNS label).
    #[arg(long, value_name = "NS", default_value = "rwop-guard", value_parser = dns_label)]
    pub namespace: String,
    /// Another DNS name for the serving certificate (repeatable), e.g. localhost.
    #[arg(long = "dns", value_name = "NAME", value_parser = dns_name)]
    pub dns: Vec<String>,
    /// An IP address for the serving certificate (repeatable), e.g. 127.0.0.1 for a webhook
    /// registered by URL during local development.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// Validity in days (at least 1).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub days: u64,
    /// Sign a new serving certificate with the CA in --out (ca.crt, ca.key), replacing tls.crt
    /// and tls.key: the caBundle stays valid.
    #[arg(long, conflicts_with = "force")]
    pub reuse_ca: bool,
    /// Replace every existing file, the CA included (then update caBundle too).
    #[arg(long)]
    pub force: bool,
}

/// RFC 1123 label, as Kubernetes requires of Service and namespace names.
fn dns_label(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned()).ok_or_else(|| {
        format!(
            "{s:?} is not a DNS label: lowercase letters, digits and '-', starting and ending \
             with a letter or digit, at most 63 characters"
        )
    })
}

/// A DNS name: dot-separated labels (a leading `*.` wildcard allowed), at most 253 characters.
fn dns_name(s: &str) -> Result<String, String> {
    let labels = s.strip_prefix("*.").unwrap_or(s);
    let ok = s.len() <= 253 && labels.split('.').all(|l| dns_label(l).is_ok());
    ok.then(|| s.to_owned()).ok_or_else(|| {
        format!("{s:?} is not a DNS name (labels of lowercase letters, digits and '-')")
    })
}

pub fn run(args: &CertsArgs) -> ExitCode {
    match write(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rwop-guard certs: {}", super::describe(&e));
            ExitCode::from(super::EXIT_UNUSABLE)
        }
    }
}

fn write(args: &CertsArgs) -> anyhow::Result<()> {
    let mut names = certs::service_dns_names(&args.service, &args.namespace);
    for extra in &args.dns {
        if !names.contains(extra) {
            names.push(extra.clone());
        }
    }
    let validity = Duration::from_secs(args.days * 86_400);
    let sans: Vec<String> = names
        .iter()
        .cloned()
        .chain(args.ip.iter().map(IpAddr::to_string))
        .collect();
    if args.reuse_ca {
        let read = |file: &str| {
            let path = args.out.join(file);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "--reuse-ca needs the CA in {}: cannot read {}",
                    args.out.display(),
                    path.display()
                )
            })
        };
        let (ca_cert, ca_key) = (read("ca.crt")?, read("ca.key")?);
        let (cert, key) = certs::issue(&ca_cert, &ca_key, &names[0], &names, &args.ip, validity)
            .with_context(|| format!("cannot use the CA in {}", args.out.display()))?;
        write_file(&args.out.join("tls.crt"), &cert, 0o644, true)?;
        write_file(&args.out.join("tls.key"), &key, 0o600, true)?;
        println!(
            "wrote tls.crt, tls.key to {} for {}, signed by the existing ca.crt",
            args.out.display(),
            sans.join(", ")
        );
        return Ok(());
    }
    let g = certs::generate(&names[0], &names, &args.ip, validity)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if !args.force {
        let existing: Vec<&str> = ["ca.crt", "ca.key", "tls.crt", "tls.key"]
            .into_iter()
            .filter(|f| args.out.join(f).exists())
            .collect();
        anyhow::ensure!(
            existing.is_empty(),
            "{} already has {}: use --reuse-ca to issue a new serving certificate from its CA, \
             or --force to replace everything (then update the caBundle)",
            args.out.display(),
            existing.join(", ")
        );
    }
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
        sans.join(", ")
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
