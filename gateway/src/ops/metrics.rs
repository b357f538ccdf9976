//! Prometheus metrics.

use axum::extract::State;
use axum::http::StatusCode;

use super::http::OpsState;

/// `GET /metrics`: the Prometheus text format.
pub async fn scrape(State(_state): State<OpsState>) -> (StatusCode, String) {
    (StatusCode::NOT_IMPLEMENTED, String::new())
}
