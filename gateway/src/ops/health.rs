//! Liveness (`/healthz`) and readiness (`/readyz`).

use axum::extract::State;
use axum::http::StatusCode;

use super::http::OpsState;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: the gateway can serve.
pub async fn readyz(State(state): State<OpsState>) -> (StatusCode, String) {
    match state.gateway.store.probe().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {error}\n")),
    }
}
