//! The local HTTP source (axum), for agency systems that would rather call
//! a local endpoint than speak gRPC:
//!
//! - `POST /v1/notifications` with the JSON form of one notification:
//!   `202 Accepted` with `{"status": "accepted", "local_id",
//!   "notification_id", "duplicate", "state"}` once it is committed;
//!   `400` (`invalid_json`, `invalid_field` naming the field), `409`
//!   (`conflict`: the id was accepted with other content), `413`
//!   (`too_large`), `503` (`outbox_full`, with `Retry-After`) otherwise.
//!   Posting the same `notification_id` with the same content again answers
//!   `202` with the same `local_id` and `"duplicate": true`.
//! - `GET /v1/notifications/{notification_id}`: where it is (`pending`,
//!   `sent` with its sequence, `dead_letter` with the gateway's reason).
//! - `GET /v1/status`: the same report as `liandong-adapter status --json`.
//!
//! It has no authentication, so it binds loopback addresses only unless the
//! config explicitly allows another. It must never log or echo content:
//! answers carry ids, field names and reasons.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::daemon::accept::{AcceptError, Accepted, Acceptor, Origin};
use crate::report::{Limits, report_json};
use crate::store::RowState;

#[cfg(test)]
mod tests;

/// The header `liandong-adapter send` sets, so its hand-overs are recorded
/// with source `send`.
pub const SOURCE_HEADER: &str = "liandong-source";

/// Seconds a client is asked to wait when the outbox is full.
pub const RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Debug, Clone)]
struct App {
    acceptor: Acceptor,
    limits: Limits,
}

/// The endpoint's routes, accepting request bodies up to `max_body` bytes.
pub fn router(acceptor: Acceptor, limits: Limits, max_body: usize) -> Router {
    Router::new()
        .route("/v1/notifications", post(post_notification))
        .route("/v1/notifications/{notification_id}", get(get_notification))
        .route("/v1/status", get(get_status))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(App { acceptor, limits })
}

/// Serves `router` on `listener` until `shutdown`, finishing the requests
/// in progress.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, shutdown: CancellationToken) {
    let addr = listener.local_addr().ok();
    tracing::info!(http.listen = ?addr, "HTTP source listening");
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %error, "the HTTP source stopped");
    }
}

/// An error answer: `{"error": {"code", "field", "message"}}`.
fn error(status: StatusCode, code: &str, field: Option<String>, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "field": field, "message": message } })),
    )
        .into_response()
}

/// The answer to a successful acceptance.
pub fn accepted_body(accepted: &Accepted) -> Value {
    json!({
        "status": "accepted",
        "local_id": accepted.local_id,
        "notification_id": accepted.notification_id,
        "duplicate": accepted.duplicate,
        "state": accepted.state,
    })
}

async fn post_notification(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let origin = match headers.get(SOURCE_HEADER).and_then(|v| v.to_str().ok()) {
        Some("send") => Origin::Send,
        _ => Origin::Http,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            "the body is not UTF-8 text".into(),
        );
    };
    match app.acceptor.accept_json(text, origin).await {
        Ok(accepted) => {
            (StatusCode::ACCEPTED, axum::Json(accepted_body(&accepted))).into_response()
        }
        Err(e) => refusal(&e),
    }
}

/// The answer to a refused notification.
fn refusal(e: &AcceptError) -> Response {
    let message = e.to_string();
    match e {
        AcceptError::Json(_) | AcceptError::Empty => {
            error(StatusCode::BAD_REQUEST, "invalid_json", None, message)
        }
        AcceptError::Field(_) => {
            error(StatusCode::BAD_REQUEST, "invalid_field", e.field(), message)
        }
        AcceptError::TooLarge { .. } => {
            error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None, message)
        }
        AcceptError::Conflict { .. } => error(StatusCode::CONFLICT, "conflict", e.field(), message),
        AcceptError::Full { .. } => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "outbox_full",
                None,
                message,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            response
        }
        AcceptError::Store(cause) => {
            tracing::error!(error = %cause, "cannot commit to the outbox");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
                "the adapter's state is unavailable; the notification may not have been accepted: \
                 retry with the same notification_id"
                    .into(),
            )
        }
    }
}

async fn get_notification(State(app): State<App>, Path(notification_id): Path<String>) -> Response {
    let store = app.acceptor.store();
    let internal = |cause: crate::store::StoreError| {
        tracing::error!(error = %cause, "cannot read the adapter state");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            "the adapter's state is unavailable".into(),
        )
    };
    let (local_id, state) = match store.state_of(&notification_id).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                Some("notification_id".into()),
                format!("{notification_id} is not known to this adapter"),
            );
        }
        Err(cause) => return internal(cause),
    };
    let mut body = json!({
        "local_id": local_id,
        "notification_id": notification_id,
        "state": state,
    });
    match state {
        RowState::Sent => match store.receipt_of(local_id).await {
            Ok(Some((sequence, _))) => body["sequence"] = json!(sequence),
            Ok(None) => {}
            Err(cause) => return internal(cause),
        },
        RowState::DeadLetter => match store.dead_letter(local_id).await {
            Ok(Some(dead)) => {
                body["code"] = json!(dead.code);
                body["reason"] = json!(dead.reason);
            }
            Ok(None) => {}
            Err(cause) => return internal(cause),
        },
        RowState::Pending => {}
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn get_status(State(app): State<App>) -> Response {
    match app.acceptor.store().snapshot().await {
        Ok(snapshot) => {
            let report = report_json(
                &snapshot,
                &app.limits,
                liandong_core::domain::Instant::now().unix_micros(),
            );
            (StatusCode::OK, axum::Json(report)).into_response()
        }
        Err(cause) => {
            tracing::error!(error = %cause, "cannot read the adapter state");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
                "the adapter's state is unavailable".into(),
            )
        }
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        "no such endpoint; see POST /v1/notifications".into(),
    )
}
