//! kubectl-style connection flags, on the commands that talk to the cluster (serve, scan,
//! migrate). Written before the command, as kubectl users do (`kubectl rwop -n shop scan`),
//! they are moved after it by [`hoist_cluster_flags`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Clone, Debug, Default, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE", help_heading = "Cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME", help_heading = "Cluster")]
    pub context: Option<String>,
}

impl KubeArgs {
    /// The client configuration kubectl would use for the same flags.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        Ok(match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .with_context(|| format!("cannot use kubeconfig {}", path.display()))?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .context("cannot use the kubeconfig context")?,
            None => kube::Config::infer()
                .await
                .context("no kubeconfig and not running in a cluster")?,
        })
    }

    /// A client and the namespace of the chosen context (for commands given no `-n`).
    pub async fn client(&self) -> anyhow::Result<(kube::Client, String)> {
        let config = self.config().await?;
        let namespace = config.default_namespace.clone();
        let client =
            kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
        Ok((client, namespace))
    }
}

/// Flags kubectl accepts before a plugin's command: with a value, as `-n NS`, `-nNS`,
/// `--namespace NS` or `--namespace=NS`.
const CLUSTER_FLAGS: [(&str, Option<&str>); 3] = [
    ("--namespace", Some("-n")),
    ("--context", None),
    ("--kubeconfig", None),
];

/// Moves the cluster flags written before the command (`rwop-guard --context prod scan`,
/// `kubectl rwop -n shop migrate data`) to just after it, where the commands that take them
/// declare them. `args[0]` is the program; everything from the command on is kept in order.
pub fn hoist_cluster_flags(args: Vec<String>, commands: &[&str]) -> Vec<String> {
    let Some(program) = args.first().cloned() else {
        return args;
    };
    let mut hoisted = Vec::new();
    let mut rest = args.into_iter().skip(1).peekable();
    let mut before = Vec::new();
    while let Some(arg) = rest.next() {
        if commands.contains(&arg.as_str()) {
            let mut out = vec![program];
            out.extend(before);
            out.push(arg);
            out.extend(hoisted);
            out.extend(rest);
            return out;
        }
        let flag = CLUSTER_FLAGS.iter().find(|(long, short)| {
            arg == *long
                || arg.starts_with(&format!("{long}="))
                || short.is_some_and(|s| arg == s || (arg.starts_with(s) && arg.len() > s.len()))
        });
        match flag {
            Some((long, short)) => {
                let takes_next = arg == *long || Some(arg.as_str()) == *short;
                hoisted.push(arg);
                if takes_next && let Some(value) = rest.next() {
                    hoisted.push(value);
                }
            }
            None => before.push(arg),
        }
    }
    // No command: leave everything where it was, clap explains.
    let mut out = vec![program];
    out.extend(before);
    out.extend(hoisted);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hoist(line: &str) -> String {
        let args = line.split(' ').map(str::to_owned).collect();
        hoist_cluster_flags(args, &["scan", "migrate", "serve", "check"]).join(" ")
    }

    #[test]
    fn cluster_flags_before_the_command_move_after_it() {
        assert_eq!(
            hoist("kubectl-rwop -n shop scan"),
            "kubectl-rwop scan -n shop"
        );
        assert_eq!(
            hoist("rwop-guard --context prod --kubeconfig /k scan -o json"),
            "rwop-guard scan --context prod --kubeconfig /k -o json"
        );
        assert_eq!(
            hoist("rwop-guard --namespace=shop -nfoo migrate data --yes"),
            "rwop-guard migrate --namespace=shop -nfoo data --yes"
        );
        // Other flags stay where they were; after the command nothing moves.
        assert_eq!(hoist("rwop-guard --help"), "rwop-guard --help");
        assert_eq!(
            hoist("rwop-guard scan -n shop --context x"),
            "rwop-guard scan -n shop --context x"
        );
        // A value that looks like a command is a value.
        assert_eq!(hoist("rwop-guard -n scan scan"), "rwop-guard scan -n scan");
        assert_eq!(hoist("rwop-guard -n shop"), "rwop-guard -n shop");
    }
}
