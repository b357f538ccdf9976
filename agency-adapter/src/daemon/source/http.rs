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
//! A web page in a browser on the same host must not be able to drive it
//! (a no-cors `fetch` is a simple request, sent without preflight) nor read
//! it through DNS rebinding. So every request, before its body is read,
//! must ([`Guard`]):
//! - carry no `Origin` header (browsers send one on cross-site requests;
//!   the agency system does not): else `403 cross_origin`;
//! - name in `Host` a loopback name with the listening port
//!   (`127.0.0.1:P`, `localhost:P`, `[::1]:P`), or the configured
//!   `public_address`: else `421 bad_host`;
//! - carry `Authorization: Bearer <token>`, the secret of `token_file`
//!   (compared in constant time): else `401 unauthorized`;
//! - for a POST, have `Content-Type: application/json` (parameters
//!   allowed): else `415 unsupported_media_type`.
//!
//! It binds loopback addresses only unless the config explicitly allows
//! another. It must never log or echo content, nor the token: answers carry
//! ids, field names and reasons.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;

use crate::daemon::accept::{AcceptError, Accepted, Acceptor, Origin};
use crate::report::{Certificate, Limits, report_json};
use crate::store::RowState;

#[cfg(test)]
mod tests;

/// The header `liandong-adapter send` sets, so its hand-overs are recorded
/// with source `send`.
pub const SOURCE_HEADER: &str = "liandong-source";

/// Seconds a client is asked to wait when the outbox is full.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The HTTP source's secret, read from its `token_file`. Its `Debug` never
/// shows it.
#[derive(Clone)]
pub struct HttpToken(Arc<str>);

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpToken(<redacted>)")
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TokenError {
    /// The token file.
    pub path: PathBuf,
    /// What is wrong, and what to do.
    pub reason: String,
}

impl HttpToken {
    /// Reads the token from `path`, which must be a regular file (not a
    /// symbolic link) readable by its owner only, holding at least
    /// [`MIN_TOKEN_BYTES`] of printable text (surrounding white space is
    /// ignored).
    pub fn load(path: &FsPath) -> Result<Self, TokenError> {
        use std::os::unix::fs::MetadataExt as _;
        let fail = |reason: String| TokenError {
            path: path.to_owned(),
            reason,
        };
        let create = "create it with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`";
        let metadata = std::fs::symlink_metadata(path).map_err(|e| {
            fail(format!(
                "cannot read the HTTP source's token file: {e}; {create}"
            ))
        })?;
        if metadata.file_type().is_symlink() {
            return Err(fail(
                "the token file is a symbolic link; name the file itself".into(),
            ));
        }
        if !metadata.is_file() {
            return Err(fail("the token file is not a regular file".into()));
        }
        if metadata.mode() & 0o077 != 0 {
            return Err(fail(format!(
                "the token file is readable or writable by group or others (mode {:o}); \
                 run chmod 600 on it",
                metadata.mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the token file: {e}")))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(fail(format!("the token file is empty; {create}")));
        }
        if token.len() < MIN_TOKEN_BYTES || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(fail(format!(
                "the token must be at least {MIN_TOKEN_BYTES} printable ASCII characters \
                 without spaces; {create}"
            )));
        }
        Ok(Self(Arc::from(token)))
    }

    /// The token as sent in `Authorization: Bearer <token>`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when `presented` is the token; constant time in its content.
    pub fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

/// The checks every request passes before its body is read: no `Origin`,
/// an allowed `Host`, the token, and JSON for a POST.
#[derive(Debug, Clone)]
pub struct Guard {
    token: HttpToken,
    /// Lower-case `host:port` values accepted in `Host`.
    hosts: Arc<[String]>,
}

impl Guard {
    /// The guard of an endpoint listening on `bound` (the actual address,
    /// so port 0 in the config is resolved), also accepting
    /// `public_address` when given.
    pub fn new(token: HttpToken, bound: SocketAddr, public_address: Option<&str>) -> Self {
        let port = bound.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        if !bound.ip().is_loopback() && !bound.ip().is_unspecified() {
            hosts.push(bound.to_string());
        }
        if let Some(address) = public_address {
            hosts.push(address.to_ascii_lowercase());
        }
        if port == 80 {
            // Clients leave the default port out of `Host`.
            hosts.extend(["127.0.0.1".into(), "localhost".into(), "[::1]".into()]);
        }
        Self {
            token,
            hosts: hosts.into(),
        }
    }

    /// The refusal `request`'s headers earn, if any.
    fn check(&self, method: &Method, headers: &HeaderMap) -> Option<Response> {
        if headers.contains_key(header::ORIGIN) {
            return Some(error(
                StatusCode::FORBIDDEN,
                "cross_origin",
                None,
                "requests from web pages (with an Origin header) are refused".into(),
            ));
        }
        let host_ok = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| {
                let host = host.to_ascii_lowercase();
                self.hosts.contains(&host)
            });
        if !host_ok {
            return Some(error(
                StatusCode::MISDIRECTED_REQUEST,
                "bad_host",
                None,
                "the Host header must name this endpoint: 127.0.0.1:PORT, localhost:PORT, \
                 [::1]:PORT or its configured public_address"
                    .into(),
            ));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                let scheme = v.get(..7)?;
                scheme
                    .eq_ignore_ascii_case(b"bearer ")
                    .then(|| v[7..].trim_ascii())
            });
        if !presented.is_some_and(|p| self.token.matches(p)) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                None,
                "send the HTTP source's token as Authorization: Bearer <token>".into(),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Some(response);
        }
        if method == Method::POST {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Some(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    None,
                    "send the notification with Content-Type: application/json".into(),
                ));
            }
        }
        None
    }
}

/// Runs [`Guard::check`] before the handler (and before the body is read).
async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.headers()) {
        Some(refusal) => {
            tracing::info!(
                http.method = %request.method(),
                http.path = ?request.uri().path(),
                "HTTP source request refused before reading it"
            );
            refusal
        }
        None => next.run(request).await,
    }
}

#[derive(Debug, Clone)]
struct App {
    acceptor: Acceptor,
    limits: Limits,
    /// The client certificate, read again for each status report.
    certificate_file: Option<PathBuf>,
}

/// The endpoint's routes behind `guard`, accepting request bodies up to
/// `max_body` bytes; `GET /v1/status` reads the validity of
/// `certificate_file` at each request.
pub fn router(
    acceptor: Acceptor,
    limits: Limits,
    certificate_file: Option<PathBuf>,
    max_body: usize,
    guard: Guard,
) -> Router {
    Router::new()
        .route("/v1/notifications", post(post_notification))
        .route("/v1/notifications/{notification_id}", get(get_notification))
        .route("/v1/status", get(get_status))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(App {
            acceptor,
            limits,
            certificate_file,
        })
        .layer(middleware::from_fn_with_state(guard, self::guard))
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
            let limits = Limits {
                certificate: app
                    .certificate_file
                    .as_deref()
                    .map_or(Certificate::Unchecked, Certificate::of_file),
                ..app.limits
            };
            let report = report_json(
                &snapshot,
                &limits,
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
