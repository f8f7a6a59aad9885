//! The webhook server: axum over rustls on the TLS port, a plain-HTTP metrics port, certificate
//! and policy reload, limits, probes and graceful shutdown.

mod handlers;
pub mod metrics;
mod protect;
mod reload;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::certs::GeneratedCerts;
use crate::policy::{Facts, Policy};
use crate::policy_file;

pub use handlers::{apply_layers, metrics_router, webhook_router};
pub use metrics::Metrics;
pub use reload::ReloadEvent;

/// Request limits. Defaults suit an API server calling with `timeoutSeconds: 5`.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Whole request, body included; keep it below the webhook's `timeoutSeconds`.
    pub request_timeout: Duration,
    /// Time a client has to send its request headers (HTTP/1.1) and to start the TLS handshake.
    pub header_timeout: Duration,
    pub max_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(4),
            header_timeout: Duration::from_secs(5),
            max_concurrency: 512,
        }
    }
}

/// Where the serving certificate comes from.
pub enum TlsSource {
    /// PEM files, watched and reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// A pair generated in memory (`--dev`).
    InMemory(GeneratedCerts),
}

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub tls: TlsSource,
    pub config: Option<PathBuf>,
    pub limits: Limits,
    /// After SIGTERM, how long in-flight requests may take before connections are closed.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long to keep serving (with /readyz failing) before draining, so
    /// endpoints can be updated first.
    pub shutdown_delay: Duration,
    /// How often files are re-read even without a change notification.
    pub reload_interval: Duration,
    /// True when cluster facts will be fed in (see `cluster::start`): not ready until they are.
    pub cluster_facts: bool,
}

/// What the handlers share.
pub struct AppState {
    pub policy: ArcSwap<Policy>,
    pub facts: ArcSwap<Facts>,
    /// False until the facts are usable (at once without a cluster).
    pub facts_ready: AtomicBool,
    pub shutting_down: AtomicBool,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            facts: ArcSwap::from_pointee(Facts::default()),
            facts_ready: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            metrics: Metrics::new(),
        }
    }

    /// None when ready, else why not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Some("shutting down")
        } else if !self.facts_ready.load(Ordering::SeqCst) {
            Some("cluster caches have not synced yet")
        } else {
            None
        }
    }

    fn update_ready_metric(&self) {
        self.metrics
            .ready
            .set(i64::from(self.not_ready_reason().is_none()));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Policy(#[from] policy_file::LoadError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch {path} for changes: {message}")]
    Watch { path: PathBuf, message: String },
    #[error("{listener} server failed: {source}")]
    Serve {
        listener: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A started server. Dropping it does not stop it: call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: Arc<AppState>,
    reload_events: broadcast::Sender<ReloadEvent>,
    shutdown: Arc<Notify>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Reload outcomes from now on (for tests and diagnostics).
    pub fn reload_events(&self) -> broadcast::Receiver<ReloadEvent> {
        self.reload_events.subscribe()
    }

    /// Starts the graceful shutdown: readiness fails at once, then connections drain.
    pub fn shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        self.state.update_ready_metric();
        self.shutdown.notify_one();
    }

    /// Waits until both listeners have stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServeError::Serve {
                listener: "webhook",
                source: std::io::Error::other(e),
            }),
        }
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(listener)
}

/// Loads the policy and certificate, binds both listeners and starts serving. Fails before
/// serving anything when the configuration is unusable.
pub async fn start(opts: ServeOptions) -> Result<RunningServer, ServeError> {
    let policy = policy_file::load(opts.config.as_deref())?;
    let state = Arc::new(AppState::new(policy));
    state
        .facts_ready
        .store(!opts.cluster_facts, Ordering::SeqCst);

    let (pair, tls_fingerprint) = match &opts.tls {
        TlsSource::Files { cert, key } => {
            let (pair, fp) = tls::load_pair(cert, key)?;
            (pair, Some(fp))
        }
        TlsSource::InMemory(g) => (
            tls::parse_pair(g.cert_pem.as_bytes(), g.key_pem.as_bytes())?,
            None,
        ),
    };
    state.metrics.cert_not_after.set(pair.not_after);
    let resolver = Arc::new(tls::CertReloader::new(pair));
    let rustls_config = RustlsConfig::from_config(tls::server_config(resolver.clone())?);

    let webhook_listener = bind(opts.listen)?;
    let metrics_listener = bind(opts.metrics_listen)?;
    let addr = webhook_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: opts.metrics_listen,
            source,
        })?;

    let (reload_events, _) = broadcast::channel(64);
    let watcher = reload::Watcher::start(
        reload::Sources {
            tls: match (&opts.tls, tls_fingerprint) {
                (TlsSource::Files { cert, key }, Some(fp)) => {
                    Some((cert.clone(), key.clone(), resolver.clone(), fp))
                }
                _ => None,
            },
            policy: opts.config.clone(),
        },
        state.clone(),
        reload_events.clone(),
        opts.reload_interval,
    )?;

    let handle = axum_server::Handle::new();
    let limits = opts.limits.clone();
    let mut webhook = axum_server::from_tcp_rustls(webhook_listener, rustls_config)
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?
        .map(|acceptor: RustlsAcceptor| {
            acceptor
                .handshake_timeout(limits.header_timeout)
                .acceptor(tls::TlsOnlyAcceptor {
                    timeout: limits.header_timeout,
                })
        })
        .handle(handle.clone());
    webhook
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let webhook_app = webhook_router(state.clone(), &opts.limits);

    let metrics_app = metrics_router(state.clone());
    let metrics_listener =
        tokio::net::TcpListener::from_std(metrics_listener).map_err(|source| ServeError::Bind {
            addr: opts.metrics_listen,
            source,
        })?;

    let shutdown = Arc::new(Notify::new());
    let metrics_stop = Arc::new(Notify::new());
    let task = {
        let shutdown = shutdown.clone();
        let state = state.clone();
        let metrics_stop = metrics_stop.clone();
        let (drain, delay) = (opts.drain_timeout, opts.shutdown_delay);
        tokio::spawn(async move {
            let metrics_stop_wait = metrics_stop.clone();
            let metrics_server = tokio::spawn(async move {
                axum::serve(metrics_listener, metrics_app)
                    .with_graceful_shutdown(async move { metrics_stop_wait.notified().await })
                    .await
            });
            let handle_for_signal = handle.clone();
            tokio::spawn(async move {
                shutdown.notified().await;
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    drain_ms = drain.as_millis() as u64,
                    "shutting down: readiness now fails; draining connections"
                );
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                handle_for_signal.graceful_shutdown(Some(drain));
            });
            let served = webhook.serve(webhook_app.into_make_service()).await;
            drop(watcher);
            metrics_stop.notify_one();
            let metrics_result = metrics_server.await;
            served.map_err(|source| ServeError::Serve {
                listener: "webhook",
                source,
            })?;
            match metrics_result {
                Ok(r) => r.map_err(|source| ServeError::Serve {
                    listener: "metrics",
                    source,
                }),
                Err(e) => Err(ServeError::Serve {
                    listener: "metrics",
                    source: std::io::Error::other(e),
                }),
            }?;
            state.update_ready_metric();
            Ok(())
        })
    };
    state.update_ready_metric();
    tracing::info!(%addr, %metrics_addr, "rwop-guard serving");
    Ok(RunningServer {
        addr,
        metrics_addr,
        state,
        reload_events,
        shutdown,
        task,
    })
}
