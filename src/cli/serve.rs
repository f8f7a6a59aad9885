use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};

use crate::certs;
use crate::server::{self, Limits, ServeOptions, TlsSource};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Runs the admission webhook: `POST /validate` and `POST /mutate` (AdmissionReview
/// admission.k8s.io/v1) over TLS, `GET /metrics` and the probes over plain HTTP.
///
/// Certificate and policy files are reloaded when they change (including the atomic `..data`
/// symlink swap of Secret and ConfigMap volumes); a bad new file keeps the old one serving.
/// SIGTERM or Ctrl-C: /readyz fails at once, open requests finish, exit 0.
#[derive(Debug, Args)]
#[command(
    override_usage = "rwop-guard serve [OPTIONS] --tls-cert <FILE> --tls-key <FILE>\n       \
                            rwop-guard serve [OPTIONS] --dev"
)]
pub struct ServeArgs {
    /// TLS listener for the webhook endpoints. [default: 0.0.0.0:8443; 127.0.0.1:8443 with --dev]
    #[arg(long, env = "RWOP_GUARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP listener for /metrics, /healthz, /readyz. [default: 0.0.0.0:9090; 127.0.0.1:9090 with --dev]
    #[arg(long, env = "RWOP_GUARD_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serving certificate chain (PEM). Required unless --dev.
    #[arg(
        long,
        env = "RWOP_GUARD_TLS_CERT",
        value_name = "FILE",
        required_unless_present = "dev"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM: PKCS#8, PKCS#1 or SEC1). Required unless --dev.
    #[arg(
        long,
        env = "RWOP_GUARD_TLS_KEY",
        value_name = "FILE",
        required_unless_present = "dev"
    )]
    pub tls_key: Option<PathBuf>,
    /// Policy file (YAML). Without it, the default policy applies.
    #[arg(long, env = "RWOP_GUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run without Kubernetes API access: mutation relies on mutation.storageClasses only.
    #[arg(long, env = "RWOP_GUARD_NO_CLUSTER", value_parser = BoolishValueParser::new())]
    pub no_cluster: bool,
    /// Development mode: a self-signed certificate for localhost and 127.0.0.1 generated in memory
    /// (its CA is written to a file whose path is printed), loopback listeners, no cluster.
    #[arg(
        long,
        env = "RWOP_GUARD_DEV",
        value_parser = BoolishValueParser::new(),
        conflicts_with_all = ["tls_cert", "tls_key"]
    )]
    pub dev: bool,
    /// Where --dev writes its CA certificate.
    #[arg(long, env = "RWOP_GUARD_DEV_CA_OUT", value_name = "FILE")]
    pub dev_ca_out: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "RWOP_GUARD_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Largest accepted request body, in bytes (larger: 413). The default, 3.5 MiB: etcd
    /// stores no object over 1.5 MiB, an UPDATE's review carries it twice (object and
    /// oldObject), plus room for JSON escapes and the review's envelope.
    #[arg(long, env = "RWOP_GUARD_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, all requests together (at least --max-body-bytes).
    /// A request takes its declared length from it when its first body byte arrives; one that
    /// finds too little left gets 503. The default fits a 64 MiB memory limit with the rest of
    /// the server.
    #[arg(long, env = "RWOP_GUARD_MAX_BUFFERED_BYTES", default_value_t = Limits::default().max_buffered_bytes)]
    pub max_buffered_bytes: usize,
    /// Longest a request may take, body included (then 408). Keep it below the webhook's
    /// timeoutSeconds so the API server gets an answer, not a timeout.
    #[arg(long, env = "RWOP_GUARD_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "4s")]
    pub request_timeout: Duration,
    /// Time a client has from the connection's accept to complete the TLS handshake and send its
    /// first request's headers (then the connection is closed).
    #[arg(long, env = "RWOP_GUARD_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub header_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/1.1 keep-alive;
    /// HTTP/2 gets a GOAWAY, and a silent peer is pinged after half of it). Both ports.
    #[arg(long, env = "RWOP_GUARD_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Requests handled at once, once their body is in; more wait (within the request timeout).
    #[arg(long, env = "RWOP_GUARD_MAX_CONCURRENCY", default_value_t = 512)]
    pub max_concurrency: usize,
    /// Open connections on the TLS port; more wait in the listen backlog until one closes.
    #[arg(long, env = "RWOP_GUARD_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Open connections on the metrics port (probes, scrapes), counted apart from the TLS port
    /// so that probes are answered while it is flooded.
    #[arg(long, env = "RWOP_GUARD_METRICS_MAX_CONNECTIONS", default_value_t = Limits::default().metrics_max_connections)]
    pub metrics_max_connections: usize,
    /// After SIGTERM, how long open requests may take to finish.
    #[arg(long, env = "RWOP_GUARD_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "20s")]
    pub drain_timeout: Duration,
    /// After SIGTERM, keep serving this long (readiness failing) before draining, so Service
    /// endpoints are updated before connections close.
    #[arg(long, env = "RWOP_GUARD_SHUTDOWN_DELAY", value_parser = parse_duration, default_value = "0s")]
    pub shutdown_delay: Duration,
    /// Re-read certificate and policy files this often, besides change notifications.
    #[arg(long, env = "RWOP_GUARD_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "30s")]
    pub reload_interval: Duration,
    /// Cluster access for the facts the policy reads (in a pod: the service account).
    #[command(flatten)]
    pub kube: super::KubeArgs,
}

/// The longest duration [`parse_duration`] accepts: a year. Longer values are typing errors,
/// and a deadline computed from a near-`u64::MAX` duration would overflow (and panic) where it
/// is added to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `500ms`, `4s`, `2m`, `1h` (a whole number and one unit, at most [`MAX_DURATION`]).
///
/// Hand-written rather than `humantime`: the syntax is this one line, and checked arithmetic
/// plus the bound is all the extra a crate would bring.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let too_long = || format!("{s:?} is too long (at most 8760h, a year)");
    let n: u64 = match number.parse() {
        Ok(n) => n,
        // Only digits, yet no u64: a number beyond u64::MAX.
        Err(_) if !number.is_empty() => return Err(too_long()),
        Err(_) => {
            return Err(format!(
                "{s:?} is not a duration (examples: 500ms, 4s, 2m, 1h)"
            ));
        }
    };
    let per_unit: u64 = match unit {
        "ms" => return within(Duration::from_millis(n), too_long),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    let seconds = n.checked_mul(per_unit).ok_or_else(too_long)?;
    within(Duration::from_secs(seconds), too_long)
}

fn within(d: Duration, too_long: impl Fn() -> String) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err(too_long())
    } else {
        Ok(d)
    }
}

pub fn run(args: ServeArgs, kube: &super::KubeArgs) -> ExitCode {
    let runtime = match super::runtime("serve", true, ExitCode::FAILURE) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(serve(args, kube)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rwop-guard serve: {}", super::describe(&e));
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs, kube: &super::KubeArgs) -> anyhow::Result<()> {
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let base = if args.dev { loopback } else { any };
    let listen = args.listen.unwrap_or(SocketAddr::new(base.ip(), 8443));
    let metrics_listen = args
        .metrics_listen
        .unwrap_or(SocketAddr::new(base.ip(), 9090));

    let (tls, dev_ca) = if args.dev {
        let generated = certs::generate(
            "rwop-guard dev",
            &["localhost".to_owned()],
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            Duration::from_secs(7 * 86_400),
        )?;
        let path = args
            .dev_ca_out
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("rwop-guard-dev-ca.crt"));
        std::fs::write(&path, &generated.ca_cert_pem)
            .with_context(|| format!("cannot write the dev CA to {}", path.display()))?;
        (TlsSource::InMemory(generated), Some(path))
    } else {
        match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => (TlsSource::Files { cert, key }, None),
            _ => anyhow::bail!("--tls-cert and --tls-key are required (or use --dev)"),
        }
    };
    let client = if args.dev || args.no_cluster {
        tracing::info!(
            "running without cluster access: mutation uses mutation.storageClasses only"
        );
        None
    } else {
        let (client, _) = kube.client().await.context(
            "cannot configure the Kubernetes client; run with --no-cluster to serve without \
             cluster facts",
        )?;
        Some(client)
    };

    // Started first: the lists run while the listeners come up.
    let cluster = client.map(crate::cluster::start);
    let server = server::start(ServeOptions {
        listen,
        metrics_listen,
        tls,
        config: args.config,
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_buffered_bytes: args.max_buffered_bytes,
            request_timeout: args.request_timeout,
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_concurrency: args.max_concurrency,
            max_connections: args.max_connections,
            metrics_max_connections: args.metrics_max_connections,
        },
        drain_timeout: args.drain_timeout,
        shutdown_delay: args.shutdown_delay,
        reload_interval: args.reload_interval.max(Duration::from_secs(1)),
        cluster: cluster.as_ref().map(|c| c.feed()),
    })
    .await?;

    if let Some(ca) = dev_ca {
        let port = server.addr.port();
        println!(
            "rwop-guard dev server on https://localhost:{port} (metrics: http://{})",
            server.metrics_addr
        );
        println!("CA certificate: {}", ca.display());
        println!("Try:");
        println!(
            "  curl --cacert {} -H 'Content-Type: application/json' \\\n    --data-binary @tests/fixtures/admission/06b-pv-patch-rwx-to-rwop.pv.validate.json \\\n    https://localhost:{port}/validate",
            ca.display()
        );
    }

    wait_for_signal().await?;
    server.shutdown();
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("4s"), Ok(Duration::from_secs(4)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("4").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("4d").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("8760h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("525600m"), Ok(MAX_DURATION));
        // Too long: beyond the bound, beyond u64 once multiplied, beyond u64 as written.
        let too_long = |s: &str| Err(format!("{s:?} is too long (at most 8760h, a year)"));
        for s in [
            "8761h",
            "31536001s",
            "31536000001ms",
            "5124095576030432h",
            "307445734561825861m",
            "18446744073709551615ms",
            "18446744073709551616s",
            "99999999999999999999999h",
        ] {
            assert_eq!(parse_duration(s), too_long(s), "{s}");
        }
        assert_eq!(
            parse_duration("x1h"),
            Err("\"x1h\" is not a duration (examples: 500ms, 4s, 2m, 1h)".to_owned())
        );
    }
}
