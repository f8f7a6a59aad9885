use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::admission::{self, Webhook};
use crate::policy::Facts;
use crate::policy_file;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WebhookArg {
    /// Rules V1, V2 and the W1 warnings (the ValidatingWebhookConfiguration's endpoint).
    Validate,
    /// Mutation M1 (the MutatingWebhookConfiguration's endpoint).
    Mutate,
}

impl From<WebhookArg> for Webhook {
    fn from(w: WebhookArg) -> Self {
        match w {
            WebhookArg::Validate => Webhook::Validate,
            WebhookArg::Mutate => Webhook::Mutate,
        }
    }
}

/// Reads one `admission.k8s.io/v1` AdmissionReview on stdin and prints the response review on
/// stdout, exactly as the server would answer it (without cluster facts).
///
/// Exit status: 0 when a response was produced (allowed or denied), 2 when the input cannot be
/// used (the reason is printed on stderr).
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Which webhook answers.
    #[arg(long, value_enum)]
    pub webhook: WebhookArg,
    /// Policy file (YAML). Without it, the default policy applies.
    #[arg(long, value_name = "FILE", env = "RWOP_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(args: &ReviewArgs) -> ExitCode {
    match review(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rwop-guard review: {}", super::describe(&e));
            ExitCode::from(super::EXIT_UNUSABLE)
        }
    }
}

fn review(args: &ReviewArgs) -> anyhow::Result<()> {
    let policy = policy_file::load(args.config.as_deref())?;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("cannot read stdin")?;
    let reviewed = admission::review(args.webhook.into(), &policy, &Facts::default(), &body)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&reviewed.body)
        .and_then(|()| out.write_all(b"\n"))
        .context("cannot write stdout")?;
    if let Some(why) = &reviewed.summary.explanation {
        tracing::info!(uid = %reviewed.summary.uid, "not mutated: {why}");
    }
    Ok(())
}
