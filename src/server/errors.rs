//! The error answers: a JSON body with the message and the code, counted by webhook and code.
//! Below both the handlers and the body layer, which answer with them.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::metrics::ErrorLabels;
use crate::bounded::{MESSAGE_BYTES, truncate};

/// The `webhook` label of a path.
pub(super) fn webhook_of(path: &str) -> &'static str {
    match path {
        "/validate" => "validate",
        "/mutate" => "mutate",
        _ => "none",
    }
}

/// A JSON error answer; the message is cut to [`MESSAGE_BYTES`] (it may quote the request).
pub(super) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = serde_json::json!({
        "error": truncate(&message, MESSAGE_BYTES),
        "code": status.as_u16(),
    });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn error_response(
    state: &AppState,
    webhook: &'static str,
    status: StatusCode,
    message: String,
) -> Response {
    state
        .metrics
        .rejected
        .get_or_create(&ErrorLabels {
            webhook,
            code: status.as_u16(),
        })
        .inc();
    json_error(status, message)
}
