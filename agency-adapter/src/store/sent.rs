//! Receipted notifications (`sent`, kept for `outbox.keep_sent_days` so a
//! repeat is still recognised) and the pusher's record of its last success
//! and last error.
//!
//! It never holds a payload: once receipted, the content is the gateway's
//! to keep.

use std::time::Duration;

use sqlx::Row;

use super::{Store, StoreError, now};

/// The gateway's receipt for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentReceipt {
    /// The row.
    pub local_id: i64,
    /// The gateway's sequence.
    pub sequence: u64,
    /// When the gateway stored it (microseconds since the epoch).
    pub received_at: i64,
    /// The gateway already had it.
    pub duplicate: bool,
}

impl Store {
    /// Moves receipted rows from the outbox to `sent`, in one transaction,
    /// and records the success.
    pub async fn mark_sent(&self, receipts: &[SentReceipt]) -> Result<(), StoreError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut tx = self.pool.begin().await?;
        for receipt in receipts {
            sqlx::query(
                "INSERT INTO sent (local_id, notification_id, source_key, source, content_hash,
                                   accepted_at, sequence, received_at, duplicate, sent_at)
                 SELECT local_id, notification_id, source_key, source, content_hash, accepted_at,
                        ?, ?, ?, ?
                 FROM outbox WHERE local_id = ?",
            )
            .bind(receipt.sequence as i64)
            .bind(receipt.received_at)
            .bind(receipt.duplicate)
            .bind(at)
            .bind(receipt.local_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM outbox WHERE local_id = ?")
                .bind(receipt.local_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE pusher SET last_success_at = ? WHERE id = 1")
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The receipt of a sent notification: `(sequence, received_at)`.
    pub async fn receipt_of(&self, local_id: i64) -> Result<Option<(u64, i64)>, StoreError> {
        let row = sqlx::query("SELECT sequence, received_at FROM sent WHERE local_id = ?")
            .bind(local_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get(1))))
    }

    /// Records the pusher's latest error (no content: codes, ids, causes).
    pub async fn record_push_error(&self, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE pusher SET last_error = ?, last_error_at = ? WHERE id = 1")
            .bind(error)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets sent rows, and the record of deliveries handed to sinks,
    /// older than `keep`; returns how many sent rows went.
    pub async fn prune_sent(&self, keep: Duration) -> Result<u64, StoreError> {
        let cutoff = now() - keep.as_micros() as i64;
        let done = sqlx::query("DELETE FROM sent WHERE sent_at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM handled WHERE handled_at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
