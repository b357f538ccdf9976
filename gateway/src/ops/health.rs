//! Liveness (`/healthz`) and readiness (`/readyz`).
//!
//! Liveness says only that the process answers. Readiness says the
//! gateway can serve, decided anew on every request: the store answers a
//! read within [`PROBE_TIMEOUT`] and its last write succeeded, every
//! migration this binary embeds is applied (and none it does not know),
//! and the server certificate, the CAs and the CRLs in force stay valid
//! beyond `[ops] ready_certificate_days`. Otherwise the answer is 503 with
//! one line per problem. Nothing here writes.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use sqlx::Row;
use sqlx::migrate::Migrator;

use super::http::OpsState;
use crate::Gateway;
use crate::config::OpsSettings;
use crate::store::{Backend, StoreError};

/// How long the store may take to answer a readiness probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The migrations this binary applies at start, per backend.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// `GET /healthz`: the process answers.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: 200 `ready` when the gateway can serve; otherwise 503
/// with one line per problem.
pub async fn readyz(State(state): State<OpsState>) -> (StatusCode, String) {
    let problems = readiness(&state.gateway, &state.settings, PROBE_TIMEOUT).await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        let mut text = String::from("not ready\n");
        for problem in &problems {
            text.push_str(problem);
            text.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, text)
    }
}

/// What keeps `gateway` from serving now, one line each; empty when it
/// is ready. The store's checks give up after `timeout`.
pub async fn readiness(
    gateway: &Gateway,
    settings: &OpsSettings,
    timeout: Duration,
) -> Vec<String> {
    let mut problems = Vec::new();
    match tokio::time::timeout(timeout, store_problems(gateway)).await {
        Ok(found) => problems.extend(found),
        Err(_) => problems.push(format!(
            "store: no answer within {} ms",
            timeout.as_millis()
        )),
    }
    problems.extend(certificate_problems(
        gateway,
        settings.ready_certificate_days,
        time::OffsetDateTime::now_utc(),
    ));
    problems
}

/// The store answers a read, its last write succeeded, and its applied
/// migrations are exactly the embedded ones.
async fn store_problems(gateway: &Gateway) -> Vec<String> {
    let store = &gateway.store;
    if let Err(error) = store.latest_sequence().await {
        return vec![format!("store: unreachable: {error}")];
    }
    let mut problems = Vec::new();
    if !store.is_healthy() {
        problems.push(
            "store: the last write failed; writes are retried every second until one succeeds"
                .to_owned(),
        );
    }
    let migrator = match store.backend() {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    match applied_migrations(gateway).await {
        Ok(applied) => problems.extend(migration_problems(migrator, &applied)),
        Err(error) => problems.push(format!("migrations: cannot be read: {error}")),
    }
    problems
}

/// Versions recorded in `_sqlx_migrations`, each with whether it
/// succeeded.
async fn applied_migrations(gateway: &Gateway) -> Result<Vec<(i64, bool)>, StoreError> {
    let mut conn = gateway.store.read_connection().await?;
    let rows = sqlx::query(
        "SELECT version, CASE WHEN success THEN 1 ELSE 0 END AS ok FROM _sqlx_migrations",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let version: i64 = row.try_get("version")?;
            let ok: i32 = row.try_get("ok")?;
            Ok((version, ok != 0))
        })
        .collect()
}

/// The difference between the embedded migrations and those `applied`:
/// pending, failed, and unknown to this binary (a newer one ran).
pub fn migration_problems(migrator: &Migrator, applied: &[(i64, bool)]) -> Vec<String> {
    let embedded: BTreeSet<i64> = migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| migration.version)
        .collect();
    let succeeded: BTreeSet<i64> = applied
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(version, _)| *version)
        .collect();
    let failed: BTreeSet<i64> = applied
        .iter()
        .filter(|(_, ok)| !*ok)
        .map(|(version, _)| *version)
        .collect();
    let list = |versions: &BTreeSet<i64>| {
        versions
            .iter()
            .map(|version| format!("{version:04}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    let pending: BTreeSet<i64> = embedded
        .difference(&succeeded)
        .filter(|version| !failed.contains(version))
        .copied()
        .collect();
    if !pending.is_empty() {
        problems.push(format!("migrations: not applied: {}", list(&pending)));
    }
    if !failed.is_empty() {
        problems.push(format!("migrations: failed: {}", list(&failed)));
    }
    let unknown: BTreeSet<i64> = succeeded.difference(&embedded).copied().collect();
    if !unknown.is_empty() {
        problems.push(format!(
            "migrations: applied but unknown to this binary (a newer version ran): {}",
            list(&unknown)
        ));
    }
    problems
}

/// Certificates and CRLs in force that expire within `days` of `now`.
pub fn certificate_problems(
    gateway: &Gateway,
    days: u32,
    now: time::OffsetDateTime,
) -> Vec<String> {
    let Some(material) = gateway.tls.current() else {
        return vec!["tls: no configuration in force".to_owned()];
    };
    let horizon = now + time::Duration::days(i64::from(days));
    material
        .expiries
        .iter()
        .filter(|expiry| expiry.at <= horizon)
        .map(|expiry| {
            let state = if expiry.at <= now {
                "expired"
            } else {
                "expires"
            };
            format!(
                "certificate: {} ({}) {state} at {} (ops.ready_certificate_days = {days})",
                expiry.what,
                expiry.file.display(),
                expiry.at
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
