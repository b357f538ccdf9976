//! Operators' controls kept in the store: which agencies are disabled
//! (table `agency_state`), and moving a subscription's acknowledged
//! position.
//!
//! Every change writes its audit row (`AGENCY_DISABLED`, `AGENCY_ENABLED`,
//! `SUBSCRIPTION_SEEK`) in the same transaction: a change is never stored
//! without its record, nor recorded without being stored. A call that
//! finds nothing to change writes nothing. This module decides nothing
//! about who may call it (that is `operations_api`'s).

use sqlx::Row;

use liandong_core::domain::Instant;

use super::{Store, StoreError, audit, to_i64, to_u64};

/// An agency an operator disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledAgency {
    /// The agency's registry id.
    pub agency: String,
    /// Why, as the operator stated it.
    pub reason: String,
    /// The operator agency that disabled it.
    pub disabled_by: String,
    /// When (unix microseconds, gateway clock).
    pub disabled_at: i64,
}

impl std::fmt::Display for DisabledAgency {
    /// The refusal every request of the agency gets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "agency {} is disabled by an operator: {}",
            self.agency, self.reason
        )
    }
}

/// What a disable or enable found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The agency's state after the call: `Some` while disabled.
    pub disabled: Option<DisabledAgency>,
    /// False when the agency already was in the state asked for (nothing
    /// was written).
    pub changed: bool,
}

/// What a seek found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeekOutcome {
    /// The subscription's position is now `to` (it was `from`).
    Moved {
        /// The position before.
        from: u64,
        /// The position now.
        to: u64,
    },
    /// No such subscription: nothing written.
    NotFound,
    /// The position asked for is above the highest sequence ever
    /// assigned: nothing written.
    BeyondHighWater {
        /// The highest sequence ever assigned.
        high_water: u64,
    },
}

/// Who asks for a change, for its audit row.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The operator agency's id.
    pub operator: &'a str,
    /// The operator's stated reason.
    pub reason: &'a str,
    /// The address the request came from.
    pub peer: Option<std::net::SocketAddr>,
}

impl Actor<'_> {
    /// The operator, the reason and the peer, owned, for a write's
    /// transaction to hold.
    fn owned(self) -> (String, String, Option<std::net::SocketAddr>) {
        (self.operator.to_owned(), self.reason.to_owned(), self.peer)
    }
}

impl Store {
    /// Every disabled agency, by id.
    pub async fn disabled_agencies(&self) -> Result<Vec<DisabledAgency>, StoreError> {
        let rows = sqlx::query(
            "SELECT agency, reason, disabled_by, disabled_at FROM agency_state ORDER BY agency",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DisabledAgency {
                    agency: row.try_get("agency")?,
                    reason: row.try_get("reason")?,
                    disabled_by: row.try_get("disabled_by")?,
                    disabled_at: row.try_get("disabled_at")?,
                })
            })
            .collect()
    }

    /// Disables `agency` for `actor`, with its `AGENCY_DISABLED` audit row
    /// in the same transaction; an agency already disabled keeps its
    /// original reason, operator and time, and nothing is written.
    pub async fn disable_agency(
        &self,
        agency: &str,
        actor: Actor<'_>,
    ) -> Result<StateChange, StoreError> {
        let agency = agency.to_owned();
        let (operator, reason, peer) = actor.owned();
        let backend = self.backend;
        self.write("disable_agency", move |conn| {
            Box::pin(async move {
                let now = Instant::now().unix_micros();
                let inserted = sqlx::query(
                    "INSERT INTO agency_state (agency, reason, disabled_by, disabled_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (agency) DO NOTHING",
                )
                .bind(&agency)
                .bind(&reason)
                .bind(&operator)
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                let changed = inserted == 1;
                if changed {
                    let entry = crate::audit::agency_disabled(&operator, &agency, &reason, peer);
                    audit::append_in(conn, backend, &[entry], now).await?;
                }
                let disabled = state_in(conn, &agency).await?;
                Ok(StateChange { disabled, changed })
            })
        })
        .await
    }

    /// Enables the disabled `agency` for `actor`, with its
    /// `AGENCY_ENABLED` audit row in the same transaction; an agency that
    /// is not disabled is left alone, and nothing is written.
    pub async fn enable_agency(
        &self,
        agency: &str,
        actor: Actor<'_>,
    ) -> Result<StateChange, StoreError> {
        let agency = agency.to_owned();
        let (operator, reason, peer) = actor.owned();
        let backend = self.backend;
        self.write("enable_agency", move |conn| {
            Box::pin(async move {
                let deleted = sqlx::query("DELETE FROM agency_state WHERE agency = $1")
                    .bind(&agency)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                let changed = deleted == 1;
                if changed {
                    let entry = crate::audit::agency_enabled(&operator, &agency, &reason, peer);
                    audit::append_in(conn, backend, &[entry], Instant::now().unix_micros()).await?;
                }
                Ok(StateChange {
                    disabled: None,
                    changed,
                })
            })
        })
        .await
    }

    /// Moves `owner`'s subscription `name` to `to` (backwards or forwards,
    /// at most the high-water mark) for `actor`, with its
    /// `SUBSCRIPTION_SEEK` audit row in the same transaction. A seek to the
    /// position it already has is still recorded: the operator asked.
    pub async fn seek_subscription(
        &self,
        owner: &str,
        name: &str,
        to: u64,
        actor: Actor<'_>,
    ) -> Result<SeekOutcome, StoreError> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let (operator, reason, peer) = actor.owned();
        let backend = self.backend;
        self.write("seek_subscription", move |conn| {
            Box::pin(async move {
                let from: Option<i64> = sqlx::query_scalar(
                    "SELECT acked_through FROM subscriptions WHERE owner = $1 AND name = $2",
                )
                .bind(&owner)
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(from) = from.map(|from| to_u64(from, "acked_through")).transpose()? else {
                    return Ok(SeekOutcome::NotFound);
                };
                let high_water = high_water_in(conn).await?;
                if to > high_water {
                    return Ok(SeekOutcome::BeyondHighWater { high_water });
                }
                let now = Instant::now().unix_micros();
                sqlx::query(
                    "UPDATE subscriptions SET acked_through = $1, updated_at = $2 \
                     WHERE owner = $3 AND name = $4",
                )
                .bind(to_i64(to))
                .bind(now)
                .bind(&owner)
                .bind(&name)
                .execute(&mut *conn)
                .await?;
                let entry = crate::audit::subscription_seek(
                    &operator,
                    (&owner, &name),
                    (from, to),
                    &reason,
                    peer,
                );
                audit::append_in(conn, backend, &[entry], now).await?;
                Ok(SeekOutcome::Moved { from, to })
            })
        })
        .await
    }
}

/// `agency`'s row, read inside the writing transaction.
async fn state_in(
    conn: &mut sqlx::AnyConnection,
    agency: &str,
) -> Result<Option<DisabledAgency>, StoreError> {
    let row = sqlx::query(
        "SELECT agency, reason, disabled_by, disabled_at FROM agency_state WHERE agency = $1",
    )
    .bind(agency)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(DisabledAgency {
            agency: row.try_get("agency")?,
            reason: row.try_get("reason")?,
            disabled_by: row.try_get("disabled_by")?,
            disabled_at: row.try_get("disabled_at")?,
        })
    })
    .transpose()
}

/// The highest sequence ever assigned, read inside the writing
/// transaction (the persisted high-water mark, or a higher stored row).
async fn high_water_in(conn: &mut sqlx::AnyConnection) -> Result<u64, StoreError> {
    let stored: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM notifications")
        .fetch_one(&mut *conn)
        .await?;
    let mark: Option<i64> = sqlx::query_scalar("SELECT high_water FROM store_state WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(to_u64(stored, "sequence")?.max(mark.map_or(Ok(0), |m| to_u64(m, "high_water"))?))
}

#[cfg(test)]
mod tests;
