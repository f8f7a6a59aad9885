//! HTTP handlers: AdmissionReview endpoints, probes, metrics.

use std::any::Any;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower_http::catch_panic::CatchPanicLayer;

use super::body::BufferBodyLayer;
use super::errors::{error_response, json_error, webhook_of};
use super::metrics::{RequestLabels, WebhookLabel};
use super::{AppState, Limits};
use crate::admission::{self, ReviewSummary, Webhook};
use crate::bounded::Bounded;
use crate::policy::Outcome;

/// `POST /validate`, `POST /mutate` and the probes, with every limit applied.
pub fn webhook_router(state: Arc<AppState>, limits: &Limits) -> Router {
    let router = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state.clone());
    apply_layers(router, state, limits)
}

/// `GET /metrics` and the probes, for the plain-HTTP port.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The limits of every request, outermost first: the whole request (body, queueing and
/// handling) is bounded in time (then 408); a panic becomes a 500; the body is read in full,
/// within its limit and the budget of all bodies (`body`), before the request may take one of
/// `--max-concurrency` slots, so that requests still sending their body hold none. Unknown paths
/// and methods get JSON errors.
///
/// Stock layers (tower, tower-http) where they exist: the webhook's cost is the API server's
/// call, not this stack.
pub fn apply_layers(router: Router, state: Arc<AppState>, limits: &Limits) -> Router {
    let timeout = limits.request_timeout;
    let on_timeout = {
        let state = state.clone();
        move |uri: Uri, _: tower::BoxError| {
            let state = state.clone();
            async move {
                let webhook = webhook_of(uri.path());
                tracing::warn!(
                    webhook,
                    timeout_ms = timeout.as_millis() as u64,
                    "request timed out"
                );
                error_response(
                    &state,
                    webhook,
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request not completed within {} ms", timeout.as_millis()),
                )
            }
        }
    };
    let on_panic = {
        let state = state.clone();
        move |panic: Box<dyn Any + Send>| panic_response(&state, panic)
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The body arrives whole (below); this only lifts axum's own 2 MB default.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(on_timeout))
                .layer(TimeoutLayer::new(timeout))
                .layer(CatchPanicLayer::custom(on_panic))
                .layer(BufferBodyLayer::new(
                    state,
                    limits.max_body_bytes,
                    limits.max_buffered_bytes,
                ))
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrency.max(1),
                )),
        )
}

fn panic_response(state: &AppState, panic: Box<dyn Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    state.metrics.panics.inc();
    tracing::error!(
        panic = %Bounded::message(what),
        "request handler panicked; answered 500"
    );
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (see the server log)",
    )
}

async fn validate(
    State(state): State<Arc<AppState>>,
    ContentType(content_type): ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_review(Webhook::Validate, &state, content_type.as_ref(), body)
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    ContentType(content_type): ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_review(Webhook::Mutate, &state, content_type.as_ref(), body)
}

/// The request's `Content-Type`, taken without cloning the other headers.
struct ContentType(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for ContentType {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.headers.get(header::CONTENT_TYPE).cloned()))
    }
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// One AdmissionReview request: checked, reviewed, counted, logged and answered.
fn handle_review(
    webhook: Webhook,
    state: &AppState,
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let name = webhook.as_str();
    let body = match review_body(content_type, body) {
        Ok(body) => body,
        Err((status, message)) => return error_response(state, name, status, message),
    };
    let policy = state.policy.load();
    let facts = state.facts();
    match admission::review(webhook, &policy, &facts, &body) {
        Ok(reviewed) => {
            record(state, name, &reviewed.summary, started.elapsed());
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                reviewed.body,
            )
                .into_response()
        }
        Err(e) => {
            let status = if e.is_client_error() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let error = e.to_string();
            tracing::warn!(
                webhook = name,
                status = status.as_u16(),
                error = %Bounded::message(&error),
                "unusable AdmissionReview"
            );
            error_response(state, name, status, error)
        }
    }
}

/// The body of a review request, or the error status and message to answer instead.
fn review_body(
    content_type: Option<&HeaderValue>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, (StatusCode, String)> {
    if !is_json(content_type) {
        let found = content_type.and_then(|v| v.to_str().ok()).unwrap_or("none");
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json (found {found})"),
        ));
    }
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the limit (--max-body-bytes)".to_owned()
        } else {
            format!("cannot read the request body: {}", rejection.body_text())
        };
        (status, message)
    })
}

/// The metrics and the log line of one answered review.
fn record(state: &AppState, webhook: &'static str, s: &ReviewSummary, elapsed: Duration) {
    let mutated = s.outcome == Outcome::Mutated;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            webhook,
            kind: match s.kind.as_str() {
                "PersistentVolume" => "PersistentVolume",
                "PersistentVolumeClaim" => "PersistentVolumeClaim",
                _ => "other",
            },
            operation: s.operation,
            decision: s.outcome.as_str(),
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&WebhookLabel { webhook })
        .observe(elapsed.as_secs_f64());
    if mutated {
        state.metrics.mutations.inc();
    }
    tracing::info!(
        target: "rwop_guard::review",
        uid = %s.uid,
        webhook,
        kind = %s.kind,
        namespace = s.namespace.as_deref().unwrap_or(""),
        name = %s.name,
        operation = s.operation,
        user = %s.user,
        dry_run = s.dry_run,
        decision = s.outcome.as_str(),
        mutated,
        latency_us = elapsed.as_micros() as u64,
        denial = s.message.as_deref().unwrap_or(""),
        reason = s.explanation.as_deref().unwrap_or(""),
        "review"
    );
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    state.update_ready_metric();
    match state.not_ready_reason() {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.update_ready_metric();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "no such endpoint: POST /validate or /mutate, GET /healthz or /readyz (GET /metrics on the metrics port)",
    )
}

async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed for this endpoint",
    )
}
