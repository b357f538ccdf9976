//! The outbox: what the sources hand over, committed once, until the
//! gateway receipts it (it moves to `sent`) or refuses it for good (it
//! moves to `dead_letters`); and where any notification the adapter knows
//! is now. Acceptance is idempotent by notification id and content, and by
//! a drop-folder file's source key, and bounded by `outbox.max_pending`.
//!
//! It never decides what is sent nor in what form: rows hold the signed
//! payload as given, and leave only by [`Store::mark_sent`] or
//! [`Store::dead_letter_row`].

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now};

/// A notification to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewRow {
    /// The id it is sent with.
    pub notification_id: String,
    /// Identity of what the source handed over, when the source has one
    /// (a drop-folder file's name and digest).
    pub source_key: Option<String>,
    /// Which kind of source handed it over.
    pub source: &'static str,
    /// SHA-256 (hex) of its signing bytes.
    pub content_hash: String,
    /// The signed notification, encoded.
    pub payload: Vec<u8>,
}

/// Where a notification known to the adapter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// In the outbox.
    Pending,
    /// Receipted by the gateway.
    Sent,
    /// Refused by the gateway for good.
    DeadLetter,
}

/// What [`Store::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Committed as a new outbox row.
    Accepted {
        /// Its local id.
        local_id: i64,
    },
    /// The same notification (same id and content, or the same source
    /// file) was accepted before; nothing changed.
    Duplicate {
        /// The earlier row's local id.
        local_id: i64,
        /// The id it was accepted with.
        notification_id: String,
        /// Where it is now.
        state: RowState,
    },
    /// The id was accepted before with other content; nothing changed.
    Conflict {
        /// The earlier row's local id.
        local_id: i64,
    },
    /// The outbox holds `pending` rows, its bound; nothing changed.
    Full {
        /// Rows in the outbox.
        pending: u64,
    },
}

/// A row for the pusher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Its local id (the sending order).
    pub local_id: i64,
    /// The id it is sent with.
    pub notification_id: String,
    /// The signed notification, encoded.
    pub payload: Vec<u8>,
}

impl Store {
    /// Commits `row` to the outbox unless it is a duplicate, a conflicting
    /// reuse of its id, or the outbox already holds `max_pending` rows.
    pub async fn accept(&self, row: NewRow, max_pending: u64) -> Result<AcceptOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = &row.source_key
            && let Some((local_id, notification_id, _, state)) =
                find(&mut tx, "source_key", key).await?
        {
            return Ok(AcceptOutcome::Duplicate {
                local_id,
                notification_id,
                state,
            });
        }
        if let Some((local_id, notification_id, hash, state)) =
            find(&mut tx, "notification_id", &row.notification_id).await?
        {
            return Ok(if hash == row.content_hash {
                AcceptOutcome::Duplicate {
                    local_id,
                    notification_id,
                    state,
                }
            } else {
                AcceptOutcome::Conflict { local_id }
            });
        }
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&mut *tx)
            .await?;
        let pending = pending as u64;
        if pending >= max_pending {
            return Ok(AcceptOutcome::Full { pending });
        }
        let local_id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox
                 (notification_id, source_key, source, content_hash, payload, accepted_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING local_id",
        )
        .bind(&row.notification_id)
        .bind(&row.source_key)
        .bind(row.source)
        .bind(&row.content_hash)
        .bind(&row.payload)
        .bind(now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AcceptOutcome::Accepted { local_id })
    }

    /// Where the notification with this id is, with its local id.
    pub async fn state_of(
        &self,
        notification_id: &str,
    ) -> Result<Option<(i64, RowState)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(find(&mut conn, "notification_id", notification_id)
            .await?
            .map(|(local_id, _, _, state)| (local_id, state)))
    }

    /// How many rows wait in the outbox.
    pub async fn outbox_depth(&self) -> Result<u64, StoreError> {
        let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(depth as u64)
    }

    /// Up to `limit` outbox rows after `after`, in local-id order.
    pub async fn pending_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<PendingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT local_id, notification_id, payload FROM outbox
             WHERE local_id > ? ORDER BY local_id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PendingRow {
                local_id: r.get(0),
                notification_id: r.get(1),
                payload: r.get(2),
            })
            .collect())
    }
}

/// Finds a row by `column` (`notification_id` or `source_key`) in the
/// outbox, sent or dead-letter table: local id, notification id, content
/// hash and state.
async fn find(
    conn: &mut sqlx::SqliteConnection,
    column: &str,
    value: &str,
) -> Result<Option<(i64, String, String, RowState)>, StoreError> {
    for (table, state) in [
        ("outbox", RowState::Pending),
        ("sent", RowState::Sent),
        ("dead_letters", RowState::DeadLetter),
    ] {
        let row = sqlx::query(&format!(
            "SELECT local_id, notification_id, content_hash FROM {table} WHERE {column} = ?"
        ))
        .bind(value)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            return Ok(Some((row.get(0), row.get(1), row.get(2), state)));
        }
    }
    Ok(None)
}
