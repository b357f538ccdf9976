//! The ops HTTP server: one axum router on the `[ops] listen` address,
//! plain HTTP/1.1, stopped with the gateway.
//!
//! Routes: `/` the status page (and its embedded assets under
//! `/assets/`), `/metrics` (Prometheus text format), `/healthz` (the
//! process answers) and `/readyz` (it can serve: store reachable,
//! migrations applied, certificates valid beyond the margin).

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Gateway;
use crate::config::OpsSettings;

/// What every ops route reads.
#[derive(Debug, Clone)]
pub struct OpsState {
    /// The running gateway.
    pub gateway: Arc<Gateway>,
    /// `[ops]` settings.
    pub settings: OpsSettings,
}

/// The ops routes over `state`.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/", get(super::page::index))
        .route("/assets/{file}", get(super::page::asset))
        .route("/metrics", get(super::metrics::scrape))
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(super::health::readyz))
        .with_state(state)
}

/// Serves the ops routes on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: OpsState, stop: CancellationToken) {
    let app = router(state);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the ops HTTP server failed");
    }
}
