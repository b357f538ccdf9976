//! The status page: server-rendered HTML for the person on duty.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::http::OpsState;

/// `GET /`: the status page.
pub async fn index(State(state): State<OpsState>) -> Response {
    match super::snapshot::status(&state.gateway).await {
        Ok(status) => Html(format!(
            "<!doctype html><title>Liandong</title><p>{} {}</p>",
            status.version, status.high_water
        ))
        .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// `GET /assets/{file}`: an embedded asset.
pub async fn asset(Path(_file): Path<String>) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
