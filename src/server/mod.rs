//! The webhook server: axum over rustls on the TLS port, a plain-HTTP metrics port, certificate
//! and policy reload, limits, probes and graceful shutdown.
//!
//! Every resource a client can make the server hold is bounded: connections (`connections`:
//! a number per port, a deadline for the first request, an idle timeout), request bodies
//! (`body`: a limit each and a budget in all), concurrency slots (taken once a body is in),
//! time per request, and the size of what is logged or answered about a request (`bounded`).

mod body;
mod connections;
mod errors;
mod handlers;
mod metrics;
mod reload;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::certs::GeneratedCerts;
use crate::cluster;
use crate::policy::{Facts, Policy};
use crate::policy_file;

pub use connections::H2_MAX_STREAMS;
pub use handlers::apply_layers;
use handlers::{metrics_router, webhook_router};
pub use metrics::Metrics;
pub use reload::ReloadEvent;

/// Request and connection limits. Defaults suit an API server calling with `timeoutSeconds: 5`
/// and 64 MiB of memory for what clients can make the server hold (BENCHMARKS.md §3); the
/// chart's limit adds the cluster caches.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Bytes of request bodies held at once, all requests together.
    pub max_buffered_bytes: usize,
    /// Whole request, body included; keep it below the webhook's `timeoutSeconds`.
    pub request_timeout: Duration,
    /// From the accept to the end of the first request's headers, TLS handshake included.
    pub header_timeout: Duration,
    /// How long a connection with no request in progress stays open.
    pub idle_timeout: Duration,
    pub max_concurrency: usize,
    /// Open connections on the TLS port.
    pub max_connections: usize,
    /// Open connections on the metrics port.
    pub metrics_max_connections: usize,
}

/// etcd refuses a write over 1.5 MiB (`--max-request-bytes`), so no stored object is larger; an
/// UPDATE's review carries the object twice (`object`, `oldObject`); 512 KiB more is room for
/// JSON being larger than the stored encoding (escapes) and for the review's envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1536 * 1024 + 512 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_buffered_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(4),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_concurrency: 512,
            max_connections: 128,
            metrics_max_connections: 16,
        }
    }
}

impl Limits {
    fn check(&self) -> Result<(), ServeError> {
        let bad = |message: String| Err(ServeError::Limits(message));
        if self.max_body_bytes > u32::MAX as usize {
            return bad(format!(
                "--max-body-bytes {} is over the largest supported, {}",
                self.max_body_bytes,
                u32::MAX
            ));
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            return bad(format!(
                "--max-buffered-bytes {} is below --max-body-bytes {}: a body within the limit \
                 could never be read",
                self.max_buffered_bytes, self.max_body_bytes
            ));
        }
        for (flag, value) in [
            ("--request-timeout", self.request_timeout),
            ("--header-timeout", self.header_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return bad(format!("{flag} must be longer than 0"));
            }
        }
        for (flag, value) in [
            ("--max-concurrency", self.max_concurrency),
            ("--max-connections", self.max_connections),
            ("--metrics-max-connections", self.metrics_max_connections),
        ] {
            if value == 0 {
                return bad(format!("{flag} must be at least 1"));
            }
        }
        Ok(())
    }

    fn connections(&self, max_connections: usize) -> connections::ConnectionLimits {
        connections::ConnectionLimits {
            max_connections,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
        }
    }
}

/// After the webhook port has drained, how long the metrics port may take to close.
const METRICS_DRAIN: Duration = Duration::from_secs(1);

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
    /// The cluster caches' facts and metrics (`cluster::start`): not ready until the facts are
    /// known. None: no cluster access, empty facts, ready at once.
    pub cluster: Option<cluster::Feed>,
}

/// Where the facts come from.
enum FactsSource {
    Fixed(Arc<Facts>),
    /// Unknown (`cluster: None`) until every cache has synced.
    Watched(watch::Receiver<Arc<Facts>>),
}

/// What the handlers share.
pub struct AppState {
    pub policy: ArcSwap<Policy>,
    facts: FactsSource,
    pub shutting_down: AtomicBool,
    pub metrics: Metrics,
}

impl AppState {
    /// Without cluster access: empty facts, ready at once.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            facts: FactsSource::Fixed(Arc::new(Facts::default())),
            shutting_down: AtomicBool::new(false),
            metrics: Metrics::new(),
        }
    }

    /// Reading the facts the cluster caches publish: not ready until they are known.
    pub fn with_cluster(policy: Policy, feed: cluster::Feed) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            facts: FactsSource::Watched(feed.facts),
            shutting_down: AtomicBool::new(false),
            metrics: Metrics::with_cache(feed.metrics),
        }
    }

    /// The last published facts.
    pub fn facts(&self) -> Arc<Facts> {
        match &self.facts {
            FactsSource::Fixed(f) => f.clone(),
            FactsSource::Watched(rx) => rx.borrow().clone(),
        }
    }

    /// False until the facts are usable (at once without a cluster).
    pub fn facts_ready(&self) -> bool {
        match &self.facts {
            FactsSource::Fixed(_) => true,
            FactsSource::Watched(rx) => rx.borrow().cluster.is_some(),
        }
    }

    /// None when ready, else why not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Some("shutting down")
        } else if !self.facts_ready() {
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
    #[error("limits: {0}")]
    Limits(String),
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

/// Binds a listener; the address it got (port 0 picks one).
fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let bound = |source| ServeError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bound)?;
    listener.set_nonblocking(true).map_err(bound)?;
    let local = listener.local_addr().map_err(bound)?;
    Ok((
        tokio::net::TcpListener::from_std(listener).map_err(bound)?,
        local,
    ))
}

/// The serving certificate, loaded once, behind the resolver that reloads swap; the fingerprint
/// of the files served (None for an in-memory pair, which is never reloaded).
fn load_certificate(
    source: &TlsSource,
    state: &AppState,
) -> Result<(Arc<tls::CertReloader>, Option<Vec<u8>>), ServeError> {
    let (pair, fingerprint) = match source {
        TlsSource::Files { cert, key } => {
            let (pair, fingerprint) = tls::load_pair(cert, key)?;
            (pair, Some(fingerprint))
        }
        TlsSource::InMemory(g) => (
            tls::parse_pair(g.cert_pem.as_bytes(), g.key_pem.as_bytes())?,
            None,
        ),
    };
    state.metrics.cert_not_after.set(pair.not_after);
    Ok((Arc::new(tls::CertReloader::new(pair)), fingerprint))
}

/// Watches the certificate files (when they are files) and the policy file.
fn watch_files(
    opts: &ServeOptions,
    resolver: &Arc<tls::CertReloader>,
    fingerprint: Option<Vec<u8>>,
    state: &Arc<AppState>,
    events: &broadcast::Sender<ReloadEvent>,
) -> Result<reload::Watcher, ServeError> {
    let tls = match (&opts.tls, fingerprint) {
        (TlsSource::Files { cert, key }, Some(fp)) => {
            Some((cert.clone(), key.clone(), resolver.clone(), fp))
        }
        _ => None,
    };
    let sources = reload::Sources {
        tls,
        policy: opts.config.clone(),
    };
    reload::Watcher::start(sources, state.clone(), events.clone(), opts.reload_interval)
}

/// Loads the policy and certificate, binds both listeners and starts serving. Fails before
/// serving anything when the configuration is unusable.
pub async fn start(opts: ServeOptions) -> Result<RunningServer, ServeError> {
    opts.limits.check()?;
    let policy = policy_file::load(opts.config.as_deref())?;
    let state = Arc::new(match opts.cluster.clone() {
        Some(feed) => AppState::with_cluster(policy, feed),
        None => AppState::new(policy),
    });
    let (resolver, fingerprint) = load_certificate(&opts.tls, &state)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())?);
    let (webhook_listener, addr) = listen(opts.listen)?;
    let (metrics_listener, metrics_addr) = listen(opts.metrics_listen)?;
    let (reload_events, _) = broadcast::channel(64);
    let watcher = watch_files(&opts, &resolver, fingerprint, &state, &reload_events)?;

    let limits = &opts.limits;
    let ports = Ports {
        webhook: connections::Endpoint {
            name: "webhook",
            listener: webhook_listener,
            tls: Some(acceptor),
            limits: limits.connections(limits.max_connections),
        },
        webhook_app: webhook_router(state.clone(), limits),
        metrics: connections::Endpoint {
            name: "metrics",
            listener: metrics_listener,
            tls: None,
            limits: limits.connections(limits.metrics_max_connections),
        },
        metrics_app: metrics_router(state.clone()),
    };
    let shutdown = Arc::new(Notify::new());
    let task = tokio::spawn(run(
        ports,
        state.clone(),
        watcher,
        shutdown.clone(),
        (opts.shutdown_delay, opts.drain_timeout),
    ));
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

/// Both listeners and what they serve.
struct Ports {
    webhook: connections::Endpoint,
    webhook_app: axum::Router,
    metrics: connections::Endpoint,
    metrics_app: axum::Router,
}

/// Serves both ports until a shutdown is asked for and the webhook port has drained; the
/// metrics port closes last, so the failing readiness stays visible while draining.
async fn run(
    ports: Ports,
    state: Arc<AppState>,
    watcher: reload::Watcher,
    shutdown: Arc<Notify>,
    (delay, drain): (Duration, Duration),
) -> Result<(), ServeError> {
    let (webhook_drain, webhook_drained) = watch::channel(None);
    let (metrics_drain, metrics_drained) = watch::channel(None);
    let metrics_server = tokio::spawn(connections::serve(
        ports.metrics,
        ports.metrics_app,
        state.clone(),
        metrics_drained,
    ));
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
        let _ = webhook_drain.send(Some(Instant::now() + drain));
    });
    connections::serve(
        ports.webhook,
        ports.webhook_app,
        state.clone(),
        webhook_drained,
    )
    .await;
    drop(watcher);
    let _ = metrics_drain.send(Some(Instant::now() + METRICS_DRAIN));
    metrics_server.await.map_err(|e| ServeError::Serve {
        listener: "metrics",
        source: std::io::Error::other(e),
    })?;
    state.update_ready_metric();
    Ok(())
}
