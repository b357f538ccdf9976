//! The values read when Prometheus scrapes: what the gateway looks like
//! now, from the same snapshots the status page and the Operations service
//! answer from, the TLS material in force and the audit chain's state.
//!
//! `liandong_store_up` is decided by the same read as readiness; a store
//! that is down leaves the store's values as they were. Each other part
//! (status, agencies, subscriptions, audit) that fails or runs past the
//! deadline is skipped and counted in `liandong_scrape_errors_total`, its
//! values left as they were. Nothing here writes.

use std::time::Duration;

use futures::FutureExt;
use metrics::{counter, gauge};
use sqlx::Row;

use liandong_core::pb;

use super::{
    AGENCY_CONNECTIONS, AGENCY_STREAMS, AUDIT_CHECKPOINT_AGE, AUDIT_HEAD_AGE,
    AUDIT_ROWS_SINCE_CHECKPOINT, BREACHES_OPEN, BUILD_INFO, CONNECTIONS, HIGH_WATER, NOTIFICATIONS,
    SCRAPE_ERRORS, SCRAPE_SECONDS, START_TIME, STORE_UP, STREAMS, SUBSCRIPTION_LAG,
    SUBSCRIPTION_LAG_SECONDS, TLS_EXPIRY,
};
use crate::Gateway;
use crate::identity::tls::Expiry;
use crate::ops::snapshot;
use crate::store::StoreError;

/// Sets every scrape-time gauge; the store's part gives up after
/// `timeout`.
pub(super) async fn refresh(gateway: &Gateway, timeout: Duration) {
    let started = std::time::Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let backend = gateway.store.backend().name();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "backend" => backend).set(1.0);
    gauge!(START_TIME).set(gateway.started_at.unix_timestamp() as f64);
    gauge!(CONNECTIONS).set(gateway.tls.connections.len() as f64);
    gauge!(STREAMS).set(gateway.sessions.len() as f64);
    if let Some(material) = gateway.tls.current() {
        for expiry in &material.expiries {
            let (kind, subject) = expiry_labels(expiry);
            gauge!(TLS_EXPIRY, "kind" => kind, "subject" => subject)
                .set((expiry.at - now).as_seconds_f64());
        }
    }
    // Whether the store is up is decided by the same probe as readiness,
    // on its own deadline, so a slow snapshot never reads as a store down.
    let deadline = tokio::time::Instant::now() + timeout;
    let up = match tokio::time::timeout_at(deadline, gateway.store.latest_sequence()).await {
        Ok(Ok(_)) => gateway.store.is_healthy(),
        Ok(Err(error)) => {
            tracing::debug!(%error, "metrics: the store could not be read");
            false
        }
        Err(_) => false,
    };
    gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
    if up {
        for (part, read) in [
            ("status", status(gateway).boxed()),
            ("agencies", agencies(gateway).boxed()),
            ("subscriptions", subscriptions(gateway).boxed()),
            ("audit", audit(gateway, now).boxed()),
        ] {
            let failed = match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(_) => "no answer in time".to_owned(),
            };
            tracing::debug!(part, error = %failed, "metrics: a scrape-time value could not be read");
            counter!(SCRAPE_ERRORS, "part" => part).increment(1);
        }
    }
    gauge!(SCRAPE_SECONDS).set(started.elapsed().as_secs_f64());
}

/// The gateway's status: high-water mark, notifications, breaches.
async fn status(gateway: &Gateway) -> Result<(), StoreError> {
    let status = snapshot::status(gateway).await?;
    gauge!(HIGH_WATER).set(status.high_water as f64);
    gauge!(NOTIFICATIONS).set(status.notifications as f64);
    gauge!(BREACHES_OPEN).set(status.breaches_open as f64);
    Ok(())
}

/// Connections and streams per agency.
async fn agencies(gateway: &Gateway) -> Result<(), StoreError> {
    for agency in snapshot::agencies(gateway).await? {
        gauge!(AGENCY_CONNECTIONS, "agency" => agency.id.clone())
            .set(f64::from(agency.connections));
        gauge!(AGENCY_STREAMS, "agency" => agency.id).set(f64::from(agency.streams));
    }
    Ok(())
}

/// Every subscription's lag.
async fn subscriptions(gateway: &Gateway) -> Result<(), StoreError> {
    let every = pb::ListSubscriptionsRequest::default();
    for subscription in snapshot::subscriptions(gateway, &every).await? {
        let labels = [
            ("owner", subscription.owner.clone()),
            ("subscription", subscription.name.clone()),
        ];
        gauge!(SUBSCRIPTION_LAG, &labels).set(subscription.lag_messages as f64);
        gauge!(SUBSCRIPTION_LAG_SECONDS, &labels).set(subscription.lag_seconds as f64);
    }
    Ok(())
}

/// The audit chain: head age, checkpoint age, rows not covered.
async fn audit(gateway: &Gateway, now: time::OffsetDateTime) -> Result<(), StoreError> {
    let now_micros = (now.unix_timestamp_nanos() / 1_000) as i64;
    if let Some(head_at) = audit_head_at(gateway).await? {
        gauge!(AUDIT_HEAD_AGE).set(age_seconds(now_micros, head_at));
    }
    if let Some(checkpoint) = gateway.store.latest_audit_checkpoint().await? {
        gauge!(AUDIT_CHECKPOINT_AGE).set(age_seconds(now_micros, checkpoint.at));
    }
    gauge!(AUDIT_ROWS_SINCE_CHECKPOINT)
        .set(gateway.store.audit_rows_since_checkpoint().await? as f64);
    Ok(())
}

/// When the audit chain's head row was appended (unix microseconds), or
/// `None` while the log is empty.
async fn audit_head_at(gateway: &Gateway) -> Result<Option<i64>, StoreError> {
    let mut conn = gateway.store.read_connection().await?;
    let row = sqlx::query(
        "SELECT a.at FROM audit_log a JOIN audit_state s ON a.id = s.last_id WHERE s.id = 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|row| row.try_get("at")).transpose()?)
}

/// Seconds from `then` to `now` (both unix microseconds), never negative.
fn age_seconds(now: i64, then: i64) -> f64 {
    (now.saturating_sub(then)).max(0) as f64 / 1e6
}

/// The `kind` (`server_certificate`, `ca_certificate`, `crl`) and the
/// subject of a certificate or CRL in force.
pub(super) fn expiry_labels(expiry: &Expiry) -> (&'static str, String) {
    const KINDS: &[(&str, &str)] = &[
        ("server certificate ", "server_certificate"),
        ("CA certificate ", "ca_certificate"),
        ("CRL of ", "crl"),
    ];
    KINDS
        .iter()
        .find_map(|(prefix, kind)| {
            expiry
                .what
                .strip_prefix(prefix)
                .map(|subject| (*kind, subject.to_owned()))
        })
        .unwrap_or(("other", expiry.what.clone()))
}
