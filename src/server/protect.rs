//! The last-resort protections of the TLS port, in one service around every route: the whole
//! request (queueing and body included) is bounded in time, concurrency is bounded (requests
//! over the limit wait for a slot), a panic becomes a 500, and in-flight requests are counted.
//!
//! One hand-written service instead of four tower/axum layers: per request it costs one
//! allocation and one atomic operation for the limit, where the layers cost a few microseconds
//! (BENCHMARKS.md).

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::FutureExt as _;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::AppState;
use super::handlers::{error_response, json_error};

/// Wraps services in [`Protected`]; all of them share one concurrency limit.
#[derive(Clone)]
pub struct ProtectLayer {
    shared: Arc<Shared>,
}

impl ProtectLayer {
    pub fn new(state: Arc<AppState>, timeout: Duration, max_concurrency: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state,
                timeout,
                permits: Semaphore::new(max_concurrency.clamp(1, Semaphore::MAX_PERMITS)),
            }),
        }
    }
}

impl<S> Layer<S> for ProtectLayer {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Protected<S> {
        Protected {
            inner,
            shared: self.shared.clone(),
        }
    }
}

struct Shared {
    state: Arc<AppState>,
    timeout: Duration,
    permits: Semaphore,
}

#[derive(Clone)]
pub struct Protected<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Protected<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was polled ready handles this request; a clone waits for the next.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(self.shared.clone().run(inner, req))
    }
}

impl Shared {
    async fn run<S>(self: Arc<Self>, mut inner: S, req: Request) -> Result<Response, Infallible>
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let webhook = webhook_of(req.uri().path());
        let _in_flight = InFlight::enter(&self.state);
        let work = async {
            // Over the limit, wait for a slot (within the timeout) rather than refuse: the API
            // server does not retry a failed call.
            let _permit = match self.permits.try_acquire() {
                Ok(permit) => permit,
                Err(_) => match self.permits.acquire().await {
                    Ok(permit) => permit,
                    Err(_) => {
                        return error_response(
                            &self.state,
                            webhook,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the server is shutting down".to_owned(),
                        );
                    }
                },
            };
            match inner.call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        let response =
            match tokio::time::timeout(self.timeout, AssertUnwindSafe(work).catch_unwind()).await {
                Ok(Ok(response)) => response,
                Ok(Err(panic)) => panic_response(&self.state, panic),
                Err(_) => {
                    tracing::warn!(
                        webhook,
                        timeout_ms = self.timeout.as_millis() as u64,
                        "request timed out"
                    );
                    error_response(
                        &self.state,
                        webhook,
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "request not completed within {} ms",
                            self.timeout.as_millis()
                        ),
                    )
                }
            };
        Ok(response)
    }
}

fn webhook_of(path: &str) -> &'static str {
    match path {
        "/validate" => "validate",
        "/mutate" => "mutate",
        _ => "none",
    }
}

/// Counts a request in `requests_in_flight` until dropped (also when the request panics).
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

fn panic_response(state: &AppState, panic: Box<dyn Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    state.metrics.panics.inc();
    tracing::error!(panic = what, "request handler panicked; answered 500");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (see the server log)",
    )
}
