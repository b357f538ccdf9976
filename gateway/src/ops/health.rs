//! Liveness (`/healthz`) and readiness (`/readyz`).
//!
//! Liveness says only that the process answers. Readiness says the
//! gateway can serve, decided anew on every request: the store answers a
//! read within [`PROBE_TIMEOUT`] and its last write succeeded, every
//! migration this binary embeds is applied, and the server certificate,
//! the CAs and the CRLs in force stay valid beyond `[ops]
//! ready_certificate_days`. Otherwise the answer is 503 with one line per
//! problem. Migrations applied by a newer version (a store migrated ahead
//! of this replica during a rolling upgrade) are stated in a `note:` line
//! without failing readiness: schema changes are compatible across one
//! version. Nothing here writes.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use sqlx::migrate::Migrator;

use super::http::OpsState;
use crate::Gateway;
use crate::config::OpsSettings;
use crate::store::{AppliedMigration, StoreError};

/// How long the store may take to answer a readiness probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process answers.
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: 200 `ready` when the gateway can serve; otherwise 503
/// with one line per problem. Either way, `note:` lines say what an
/// operator should know that does not keep it from serving.
pub async fn readyz(State(state): State<OpsState>) -> (StatusCode, String) {
    let readiness = readiness(&state.gateway, &state.settings, PROBE_TIMEOUT).await;
    let (status, mut text) = if readiness.problems.is_empty() {
        (StatusCode::OK, String::from("ready\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, String::from("not ready\n"))
    };
    for problem in &readiness.problems {
        text.push_str(problem);
        text.push('\n');
    }
    for note in &readiness.notes {
        text.push_str("note: ");
        text.push_str(note);
        text.push('\n');
    }
    (status, text)
}

/// What keeps a gateway from serving, and what it serves despite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Each reason it cannot serve now, one line each; empty when ready.
    pub problems: Vec<String>,
    /// What an operator should know that does not keep it from serving.
    pub notes: Vec<String>,
}

/// Whether `gateway` can serve now. The store's checks give up after
/// `timeout`.
pub async fn readiness(gateway: &Gateway, settings: &OpsSettings, timeout: Duration) -> Readiness {
    let mut readiness = match tokio::time::timeout(timeout, store_readiness(gateway)).await {
        Ok(found) => found,
        Err(_) => Readiness {
            problems: vec![format!(
                "store: no answer within {} ms",
                timeout.as_millis()
            )],
            notes: Vec::new(),
        },
    };
    readiness.problems.extend(certificate_problems(
        gateway,
        settings.ready_certificate_days,
        time::OffsetDateTime::now_utc(),
    ));
    readiness
}

/// The store answers a read, its last write succeeded, and every embedded
/// migration is applied; migrations it holds that this binary does not
/// know are a note.
async fn store_readiness(gateway: &Gateway) -> Readiness {
    let store = &gateway.store;
    let mut readiness = Readiness::default();
    if let Err(error) = store.latest_sequence().await {
        readiness
            .problems
            .push(format!("store: unreachable: {error}"));
        return readiness;
    }
    if !store.is_healthy() {
        readiness.problems.push(
            "store: the last write failed; writes are retried every second until one succeeds"
                .to_owned(),
        );
    }
    let migrator = crate::store::migrator(store.backend());
    match applied_migrations(gateway).await {
        Ok(applied) => {
            let (problems, notes) = migration_problems(&migrator, &applied);
            readiness.problems.extend(problems);
            readiness.notes.extend(notes);
        }
        Err(error) => readiness
            .problems
            .push(format!("migrations: cannot be read: {error}")),
    }
    readiness
}

/// Every migration recorded in `_sqlx_migrations`.
async fn applied_migrations(gateway: &Gateway) -> Result<Vec<AppliedMigration>, StoreError> {
    let mut conn = gateway.store.read_connection().await?;
    crate::store::applied_migrations(&mut *conn).await
}

/// The difference between the embedded migrations and those `applied`:
/// pending and failed ones (problems), and those unknown to this binary
/// (a note: a newer version applied them; the store stays usable, since
/// schema changes are compatible across one version).
pub fn migration_problems(
    migrator: &Migrator,
    applied: &[AppliedMigration],
) -> (Vec<String>, Vec<String>) {
    let embedded: BTreeSet<i64> = migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| migration.version)
        .collect();
    let succeeded: BTreeSet<i64> = applied
        .iter()
        .filter(|m| m.success)
        .map(|m| m.version)
        .collect();
    let failed: BTreeSet<i64> = applied
        .iter()
        .filter(|m| !m.success)
        .map(|m| m.version)
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
    let unknown: Vec<AppliedMigration> = applied
        .iter()
        .filter(|m| m.success && !embedded.contains(&m.version))
        .cloned()
        .collect();
    let mut notes = Vec::new();
    if !unknown.is_empty() {
        notes.push(format!(
            "migrations: applied by a newer version, unknown to this binary: {}; \
             serving on it (schema changes are compatible across one version): upgrade this gateway",
            crate::store::describe_migrations(&unknown)
        ));
    }
    (problems, notes)
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
