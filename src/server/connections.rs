//! Serves HTTP on a listener with every connection bounded in number and in time.
//!
//! - At most `max_connections` are open. Beyond that a new connection waits, within the header
//!   timeout, for a slot; the ones behind it stay in the kernel's backlog. The first wait of an
//!   episode is logged, each is counted (`rwop_guard_connections_limited_total`).
//! - The TLS handshake and the first request's headers must arrive within `header_timeout` of
//!   the accept.
//! - A connection with no request in progress for `idle_timeout` is closed: HTTP/1.1 keep-alive
//!   connections are closed, HTTP/2 ones get a GOAWAY. HTTP/2 peers are pinged when silent for
//!   half of that, and dropped when they do not answer within `header_timeout`.
//! - A connection being closed gets a moment to say goodbye (a request that raced the close
//!   gets `request_timeout`), then it is dropped, whatever the peer does.
//! - On drain (SIGTERM) every connection is closed the same way, and dropped at the drain
//!   deadline.
//!
//! Why hand-written, on hyper-util's connection builder: `axum::serve` and axum-server offer no
//! connection cap and no idle timeout, and they detect the HTTP version by reading the first
//! bytes without any deadline, so a TLS client that sends nothing keeps its connection forever.
//! Closing one idle connection gracefully needs the connection object, which they keep.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::AppState;
use super::metrics::{ClosedLabels, ListenerLabel};
use super::tls;

/// Streams one HTTP/2 connection may have open at once (hyper's default is 200); the API server
/// opens another connection when it needs more. Each open stream costs ~4-6 KiB even while it
/// waits for its body: with the connection limit, this keeps what clients can hold that way
/// to ~12 MiB (BENCHMARKS.md, "Bounds").
pub const H2_MAX_STREAMS: u32 = 16;
/// HTTP/2 flow-control windows, per stream and per connection: what a client can send beyond
/// what the server has read (hyper's default is 1 MiB). Bytes read go to the body budget.
const H2_WINDOW: u32 = 64 * 1024;
/// HTTP/1.1 read buffer, which also bounds the request head (hyper's default is ~400 KiB).
const H1_MAX_BUF: usize = 64 * 1024;
/// How long a connection closed while idle may take to flush its goodbye (GOAWAY, close).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed accept that is not one connection's fault (no file descriptor left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// From the accept to the end of the first request's headers (TLS handshake included).
    pub header_timeout: Duration,
    /// With no request in progress, how long a connection stays open.
    pub idle_timeout: Duration,
    /// What a request that raced a close may still take.
    pub request_timeout: Duration,
}

/// The drain signal: `Some(deadline)` once connections must close, at the latest by then.
pub type Drain = watch::Receiver<Option<Instant>>;

/// A listener, its protocol and its limits.
pub struct Endpoint {
    /// `webhook` or `metrics`: the `listener` label of the connection metrics.
    pub name: &'static str,
    pub listener: TcpListener,
    /// TLS with HTTP/2 or HTTP/1.1 by ALPN; plain HTTP/1.1 without.
    pub tls: Option<TlsAcceptor>,
    pub limits: ConnectionLimits,
}

/// Why a connection ended: the `reason` label of `rwop_guard_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// By the client, or after an error of its connection.
    Closed,
    HeaderTimeout,
    IdleTimeout,
    TlsFailed,
    PlainHttp,
    /// Waited for a free slot longer than the header timeout.
    ConnectionLimit,
    Shutdown,
}

impl Close {
    /// Every reason, for the check that the metrics' own list is the same.
    #[cfg(test)]
    pub const ALL: [Close; 7] = [
        Close::Closed,
        Close::HeaderTimeout,
        Close::IdleTimeout,
        Close::TlsFailed,
        Close::PlainHttp,
        Close::ConnectionLimit,
        Close::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Close::Closed => "closed",
            Close::HeaderTimeout => "header_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::TlsFailed => "tls_failed",
            Close::PlainHttp => "plain_http",
            Close::ConnectionLimit => "connection_limit",
            Close::Shutdown => "shutdown",
        }
    }
}

/// Accepts and serves connections until the drain signal, then waits until all have ended.
pub async fn serve(endpoint: Endpoint, app: Router, state: Arc<AppState>, mut drain: Drain) {
    let Endpoint {
        name,
        listener,
        tls,
        limits,
    } = endpoint;
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let shared = Arc::new(Shared::new(name, tls, limits, max, app, state));
    let slots = shared.slots.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.wait_for(Option::is_some) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                shared.accept_failed(e).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                shared.limit_reached();
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = sleep_until(accepted_at + shared.limits.header_timeout) => {
                        shared.count_closed(Close::ConnectionLimit);
                        continue;
                    }
                    _ = drain.wait_for(Option::is_some) => break,
                }
            }
        };
        tokio::spawn(
            shared
                .clone()
                .connection(tcp, accepted_at, slot, drain.clone()),
        );
    }
    // Refuse what the kernel would still accept, then wait for every slot to come back: each
    // connection ends by the drain deadline.
    drop(listener);
    let _ = slots.acquire_many(max as u32).await;
}

struct Shared {
    name: &'static str,
    max_connections: usize,
    slots: Arc<Semaphore>,
    /// Connections that waited for a slot since the limit was reached; 0: not at the limit.
    waited: AtomicU64,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    app: Router,
    state: Arc<AppState>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Shared {
    fn new(
        name: &'static str,
        tls: Option<TlsAcceptor>,
        limits: ConnectionLimits,
        max_connections: usize,
        app: Router,
        state: Arc<AppState>,
    ) -> Self {
        // The version is known before the first byte (ALPN, or HTTP/1.1 on the plain port):
        // no sniffing, whose read has no deadline.
        let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        // hyper's header timer restarts after each response, so it would also cut keep-alive
        // connections at the header timeout; the idle timeout below does both jobs.
        h1.http1()
            .max_buf_size(H1_MAX_BUF)
            .header_read_timeout(None);
        let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .keep_alive_interval((limits.idle_timeout / 2).max(Duration::from_millis(1)))
            .keep_alive_timeout(limits.header_timeout);
        Self {
            name,
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
            waited: AtomicU64::new(0),
            tls,
            limits,
            app,
            state,
            h1,
            h2,
        }
    }

    async fn accept_failed(&self, e: io::Error) {
        use io::ErrorKind::*;
        // One connection's trouble, not the listener's.
        if matches!(
            e.kind(),
            ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
        ) {
            return;
        }
        tracing::error!(
            listener = self.name,
            "cannot accept connections: {e}; retrying in {} ms",
            ACCEPT_BACKOFF.as_millis()
        );
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }

    /// A connection found no free slot: counted, and logged when it starts an episode.
    fn limit_reached(&self) {
        if self.waited.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                listener = self.name,
                max_connections = self.max_connections,
                "connection limit reached: new connections wait for one to close \
                 (--max-connections, --metrics-max-connections)"
            );
        }
        self.state
            .metrics
            .connections_limited
            .get_or_create(&ListenerLabel {
                listener: self.name,
            })
            .inc();
    }

    /// The episode ends once a quarter of the slots are free again: a listener held at its
    /// limit, where each freed slot is taken at once, logs one line, not one per connection.
    fn slot_freed(&self) {
        if self.slots.available_permits() * 4 >= self.max_connections {
            let waited = self.waited.swap(0, Ordering::Relaxed);
            if waited > 0 {
                tracing::info!(
                    listener = self.name,
                    waited,
                    "below the connection limit again"
                );
            }
        }
    }

    fn count_closed(&self, close: Close) {
        self.state
            .metrics
            .connections_closed
            .get_or_create(&ClosedLabels {
                listener: self.name,
                reason: close.as_str(),
            })
            .inc();
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        accepted: Instant,
        slot: OwnedSemaphorePermit,
        drain: Drain,
    ) {
        let open = Open::new(&self, slot);
        let close = match &self.tls {
            None => {
                let _ = tcp.set_nodelay(true);
                self.http(tcp, false, accepted, drain).await
            }
            Some(acceptor) => {
                let deadline = accepted + self.limits.header_timeout;
                match timeout_at(deadline, tls::accept(acceptor, tcp)).await {
                    Err(_) => Close::HeaderTimeout,
                    Ok(Err(tls::AcceptError::PlainHttp)) => Close::PlainHttp,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = self.name, "{e}");
                        Close::TlsFailed
                    }
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        self.http(stream, h2, accepted, drain).await
                    }
                }
            }
        };
        drop(open);
        self.slot_freed();
        tracing::debug!(
            listener = self.name,
            reason = close.as_str(),
            "connection closed"
        );
        self.count_closed(close);
    }

    /// Serves HTTP on an accepted (and TLS-terminated) connection until it ends or is closed.
    async fn http<I>(&self, io: I, h2: bool, accepted: Instant, mut drain: Drain) -> Close
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let service = {
            let activity = activity.clone();
            let app = self.app.clone();
            service_fn(move |req: hyper::Request<Incoming>| {
                let busy = Busy::begin(activity.clone(), accepted);
                let response = app.clone().oneshot(req.map(Body::new));
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            })
        };
        let builder = if h2 { &self.h2 } else { &self.h1 };
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);

        let limits = &self.limits;
        // Why and until when the connection is being closed, once it is.
        let mut closing: Option<(Close, Instant)> = None;
        let mut extended = false;
        let mut draining = false;
        let mut check = accepted + limits.header_timeout;
        loop {
            let hard_deadline = closing.map(|(_, at)| at);
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(listener = self.name, "connection ended: {e}");
                    }
                    return closing.map_or(Close::Closed, |(why, _)| why);
                }
                // When the deadline to check passes, or the last request in progress ends.
                _ = select_first(sleep_until(check), activity.idle.notified()), if closing.is_none() => {
                    let now = Instant::now();
                    match activity.idle_since(accepted) {
                        // A request in progress: look again later.
                        None => check = now + limits.idle_timeout,
                        Some((served, since)) => {
                            let (allowed, why) = if served == 0 {
                                (limits.header_timeout, Close::HeaderTimeout)
                            } else {
                                (limits.idle_timeout, Close::IdleTimeout)
                            };
                            if since + allowed <= now {
                                conn.as_mut().graceful_shutdown();
                                closing = Some((why, now + CLOSE_GRACE.min(limits.header_timeout)));
                            } else {
                                check = since + allowed;
                            }
                        }
                    }
                }
                until = drain.wait_for(Option::is_some), if !draining => {
                    draining = true;
                    let until = until.ok().and_then(|until| *until).unwrap_or_else(Instant::now);
                    closing = Some(match closing {
                        Some((why, at)) => (why, at.min(until)),
                        None => {
                            conn.as_mut().graceful_shutdown();
                            (Close::Shutdown, until)
                        }
                    });
                }
                _ = sleep_until(hard_deadline.unwrap_or(check)), if hard_deadline.is_some() => {
                    // A request that arrived as the connection was being closed for being idle
                    // may finish; a drain deadline is final.
                    if !extended && !draining && activity.is_busy() {
                        extended = true;
                        let at = Instant::now() + limits.request_timeout + CLOSE_GRACE;
                        closing = closing.map(|(why, _)| (why, at));
                        continue;
                    }
                    return closing.map_or(Close::Closed, |(why, _)| why);
                }
            }
        }
    }
}

/// Completes when either completes.
async fn select_first(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::select! {
        () = a => {}
        () = b => {}
    }
}

/// An open connection: its slot and its place in `rwop_guard_connections_open`.
struct Open {
    gauge: prometheus_client::metrics::gauge::Gauge,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(shared: &Shared, slot: OwnedSemaphorePermit) -> Self {
        let gauge = shared
            .state
            .metrics
            .connections_open
            .get_or_create(&ListenerLabel {
                listener: shared.name,
            })
            .clone();
        gauge.inc();
        Self { gauge, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Whether a connection has requests in progress, and since when it has none.
#[derive(Default)]
struct Activity {
    /// Told when the last request in progress ends.
    idle: Notify,
    active: AtomicUsize,
    served: AtomicU64,
    /// When the last request ended, in nanoseconds after the accept.
    last_end: AtomicU64,
}

impl Activity {
    /// None while a request is in progress; else how many were served, and since when the
    /// connection is idle (the accept when none was).
    fn idle_since(&self, accepted: Instant) -> Option<(u64, Instant)> {
        if self.is_busy() {
            return None;
        }
        let served = self.served.load(Ordering::SeqCst);
        let last_end = Duration::from_nanos(self.last_end.load(Ordering::SeqCst));
        Some((served, accepted + last_end))
    }

    fn is_busy(&self) -> bool {
        self.active.load(Ordering::SeqCst) > 0
    }
}

/// One request in progress on a connection, from its headers to its answer.
struct Busy {
    activity: Arc<Activity>,
    accepted: Instant,
}

impl Busy {
    fn begin(activity: Arc<Activity>, accepted: Instant) -> Self {
        activity.served.fetch_add(1, Ordering::SeqCst);
        activity.active.fetch_add(1, Ordering::SeqCst);
        Self { activity, accepted }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let since_accept = self.accepted.elapsed().as_nanos() as u64;
        // The end first: whoever sees no request in progress sees when the last one ended.
        self.activity
            .last_end
            .fetch_max(since_accept, Ordering::SeqCst);
        if self.activity.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.activity.idle.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Close;
    use crate::server::metrics::CLOSE_REASONS;

    /// The metrics start every reason at 0 from their own list: it must be this one.
    #[test]
    fn the_metrics_know_every_close_reason() {
        assert_eq!(Close::ALL.map(Close::as_str), CLOSE_REASONS);
    }
}
