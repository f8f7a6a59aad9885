//! Reads each request body in full before the request goes on to take a concurrency slot, with
//! a limit per body and a budget of bytes across all of them.
//!
//! Why hand-written: tower-http's body limit bounds one body, not the sum of all of them, and
//! nothing stock makes a request wait for its body before taking a slot. The budget is what
//! keeps the memory under the container's limit however many large bodies arrive at once.
//!
//! How the budget is taken: nothing while a request has sent no body byte (a request that sends
//! headers and then nothing holds no budget and no slot until its timeout); at its first byte,
//! the whole declared `Content-Length` (`--max-body-bytes` when undeclared) at once, so that a
//! request that got its share can always finish, and requests never wait on each other's halves.
//! Bytes are copied into one buffer of that size, not kept as the chunks the transport read them
//! in (which can pin larger buffers). The share is returned once the answer is ready. A request
//! that finds too little left gets 503 at once rather than waiting: a waiting HTTP/2 stream would
//! leave its data unread and hold its connection's flow-control window, stalling the other
//! reviews on that connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt as _};

use super::AppState;
use super::errors::{error_response, webhook_of};

/// Wraps services in [`BufferBody`]; all of them share one budget.
#[derive(Clone)]
pub struct BufferBodyLayer {
    budget: Arc<Budget>,
}

impl BufferBodyLayer {
    /// `max_buffered` is raised to `max_body` if lower, so that every body within the limit
    /// can be read.
    pub fn new(state: Arc<AppState>, max_body: usize, max_buffered: usize) -> Self {
        let max_body = max_body.min(u32::MAX as usize);
        let total = max_buffered.max(max_body).min(Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Budget {
                state,
                max_body,
                total,
                permits: Arc::new(Semaphore::new(total)),
                exhausted: AtomicBool::new(false),
            }),
        }
    }
}

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> BufferBody<S> {
        BufferBody {
            inner,
            budget: self.budget.clone(),
        }
    }
}

struct Budget {
    state: Arc<AppState>,
    max_body: usize,
    total: usize,
    permits: Arc<Semaphore>,
    /// True from the first request that found the budget spent until one finds it free again:
    /// one log line per episode, not one per request.
    exhausted: AtomicBool,
}

#[derive(Clone)]
pub struct BufferBody<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S> Service<Request> for BufferBody<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    /// Always ready: the inner service (the concurrency limit) is only asked once the body is in.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let budget = self.budget.clone();
        let inner = self.inner.clone();
        Box::pin(async move { Ok(budget.handle(inner, req).await) })
    }
}

/// Why a body was not read.
enum Refusal {
    TooLarge,
    Unreadable(String),
    BudgetSpent,
}

impl Budget {
    async fn handle<S>(self: Arc<Self>, inner: S, req: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let webhook = webhook_of(req.uri().path());
        let _in_flight = InFlight::enter(&self.state);
        let (parts, body) = req.into_parts();
        let (body, _share) = match self.read(body).await {
            Ok((bytes, share)) => (Body::from(bytes), share),
            Err(refusal) => return self.refuse(webhook, refusal),
        };
        // The share is held until the answer is ready: the handler decodes the body it holds.
        match inner.oneshot(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    async fn read(&self, body: Body) -> Result<(Bytes, Option<Share>), Refusal> {
        let declared = body.size_hint().exact();
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(Refusal::TooLarge);
        }
        if body.is_end_stream() {
            return Ok((Bytes::new(), None));
        }
        let mut body = Limited::new(body, self.max_body);
        let Some(first) = next_chunk(&mut body).await? else {
            return Ok((Bytes::new(), None));
        };
        // Within the limit, checked above; `max_body` when the length is not declared.
        let need = declared.map_or(self.max_body, |n| n as usize);
        if first.len() > need {
            return Err(Refusal::TooLarge);
        }
        let mut share = self.take(need)?;
        let mut buf = Vec::with_capacity(if declared.is_some() {
            need
        } else {
            first.len()
        });
        buf.extend_from_slice(&first);
        drop(first);
        while let Some(chunk) = next_chunk(&mut body).await? {
            let len = buf.len() + chunk.len();
            if len > need {
                // More than declared: the transport refuses that first, so this is a backstop.
                return Err(Refusal::TooLarge);
            }
            if len > buf.capacity() {
                // Only without a declared length: grow, but never beyond the share.
                let want = len.max(buf.capacity() * 2).min(need);
                buf.reserve_exact(want - buf.len());
            }
            buf.extend_from_slice(&chunk);
        }
        share.shrink_to(buf.capacity());
        Ok((Bytes::from(buf), Some(share)))
    }

    /// A share of `n` bytes of the budget, if that much is left.
    fn take(&self, n: usize) -> Result<Share, Refusal> {
        // `n` is at most `max_body`, which fits in u32 and in the budget.
        let Ok(permit) = self.permits.clone().try_acquire_many_owned(n as u32) else {
            if !self.exhausted.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    budget_bytes = self.total,
                    "request body budget spent (--max-buffered-bytes): new bodies get 503 \
                     until requests holding a share finish"
                );
            }
            return Err(Refusal::BudgetSpent);
        };
        // Half of it free again ends the episode: one line, not one per request, while it is
        // held near full.
        if self.permits.available_permits() * 2 >= self.total
            && self.exhausted.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                budget_bytes = self.total,
                "request body budget available again"
            );
        }
        Ok(Share::new(&self.state, permit, n))
    }

    fn refuse(&self, webhook: &'static str, refusal: Refusal) -> Response {
        let (status, message) = match refusal {
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes (--max-body-bytes)",
                    self.max_body
                ),
            ),
            Refusal::Unreadable(why) => (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {why}"),
            ),
            Refusal::BudgetSpent => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "server busy: {} bytes of request bodies are being read or handled \
                     (--max-buffered-bytes); try again",
                    self.total
                ),
            ),
        };
        error_response(&self.state, webhook, status, message)
    }
}

/// The next data chunk; trailers are skipped.
async fn next_chunk(body: &mut Limited<Body>) -> Result<Option<Bytes>, Refusal> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
            Some(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(Refusal::TooLarge);
            }
            Some(Err(e)) => return Err(Refusal::Unreadable(e.to_string())),
        }
    }
}

/// Bytes of the budget held by one request, shown in `rwop_guard_buffered_body_bytes`.
struct Share {
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Share {
    fn new(state: &AppState, permit: OwnedSemaphorePermit, bytes: usize) -> Self {
        state.metrics.buffered_body_bytes.inc_by(bytes as i64);
        Self {
            permit: Some(permit),
            bytes,
            gauge: state.metrics.buffered_body_bytes.clone(),
        }
    }

    /// Gives back what is held beyond `bytes`.
    fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        if let Some(permit) = self.permit.as_mut() {
            drop(permit.split(self.bytes - bytes));
        }
        self.gauge.dec_by((self.bytes - bytes) as i64);
        self.bytes = bytes;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes as i64);
    }
}

/// Counts a request in `requests_in_flight` until dropped (also on a timeout or a panic).
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(state: &AppState) -> Self {
        state.metrics.in_flight.inc();
        Self(state.metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
