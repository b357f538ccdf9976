//! Dead letters: outbox rows the gateway refused for good, with its code
//! and reason, until (and after) the dead-letter sink reports them.
//!
//! It never retries nor deletes a dead letter: what the gateway refused
//! stays for people to see.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now};

/// A dead letter, for `status` and the dead-letter sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its local id.
    pub local_id: i64,
    /// The id it was sent with.
    pub notification_id: String,
    /// Which kind of source handed it over.
    pub source: String,
    /// The gateway's status code, e.g. `INVALID_ARGUMENT`.
    pub code: String,
    /// The gateway's message (it names the field, never content).
    pub reason: String,
    /// When it was accepted (microseconds since the epoch).
    pub accepted_at: i64,
    /// When the gateway refused it.
    pub dead_at: i64,
    /// When the dead-letter sink took it, if it has.
    pub reported_at: Option<i64>,
}

impl Store {
    /// Moves an outbox row to the dead letters with the gateway's `code`
    /// and `reason`, and records the error.
    pub async fn dead_letter_row(
        &self,
        local_id: i64,
        code: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (local_id, notification_id, source_key, source, content_hash,
                                       payload, accepted_at, code, reason, dead_at)
             SELECT local_id, notification_id, source_key, source, content_hash, payload,
                    accepted_at, ?, ?, ?
             FROM outbox WHERE local_id = ?",
        )
        .bind(code)
        .bind(reason)
        .bind(at)
        .bind(local_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE local_id = ?")
            .bind(local_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The dead letter with this local id.
    pub async fn dead_letter(&self, local_id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!("{DEAD_LETTER_SELECT} WHERE local_id = ?"))
            .bind(local_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| dead_letter_from(&r)))
    }

    /// Up to `limit` dead letters not yet taken by the dead-letter sink,
    /// oldest first.
    pub async fn unreported_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!(
            "{DEAD_LETTER_SELECT} WHERE reported_at IS NULL ORDER BY local_id LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(dead_letter_from).collect())
    }

    /// Records that the dead-letter sink took this dead letter.
    pub async fn mark_reported(&self, local_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE dead_letters SET reported_at = ? WHERE local_id = ?")
            .bind(now())
            .bind(local_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

pub(super) const DEAD_LETTER_SELECT: &str =
    "SELECT local_id, notification_id, source, code, reason, accepted_at, dead_at, reported_at
     FROM dead_letters";

pub(super) fn dead_letter_from(r: &sqlx::sqlite::SqliteRow) -> DeadLetter {
    DeadLetter {
        local_id: r.get(0),
        notification_id: r.get(1),
        source: r.get(2),
        code: r.get(3),
        reason: r.get(4),
        accepted_at: r.get(5),
        dead_at: r.get(6),
        reported_at: r.get(7),
    }
}
