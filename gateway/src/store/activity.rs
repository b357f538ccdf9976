//! Publishing activity per agency over recent windows, for the status
//! page: how many notifications each sender had accepted in the last five
//! minutes and in the last hour. Counts only; never content.
//!
//! The query reads only the last hour's rows: it walks the sequence index
//! down from the newest row to the first one received before the hour and
//! counts what lies above it. Sequences are assigned in commit order under
//! the publish lock, and `received_at` is taken in the same transaction,
//! so the rows of the hour are the top of the sequence range (a gateway
//! clock stepped backwards can hide a few rows from the count, never add
//! rows from outside the windows).

use sqlx::Row;

use liandong_core::domain::Instant;

use super::{Store, StoreError, to_u64};

/// The longer window: one hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// The shorter window: five minutes.
pub const RECENT_MICROS: i64 = 300_000_000;

/// One sender's accepted notifications in the recent windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishCounts {
    /// The sending agency's id.
    pub agency: String,
    /// Received in the five minutes up to the moment asked for.
    pub last_5_minutes: u64,
    /// Received in the hour up to the moment asked for.
    pub last_hour: u64,
}

impl Store {
    /// Per sender that published in the hour up to `now`, its counts in
    /// the last five minutes and the last hour, by agency id. Senders
    /// without a publish in that hour are absent.
    pub async fn publish_counts(&self, now: Instant) -> Result<Vec<PublishCounts>, StoreError> {
        let now = now.unix_micros();
        let hour_ago = now.saturating_sub(HOUR_MICROS);
        let recent = now.saturating_sub(RECENT_MICROS);
        let rows = sqlx::query(
            "SELECT sender, COUNT(*) AS last_hour, \
                    SUM(CASE WHEN received_at >= $2 THEN 1 ELSE 0 END) AS last_5_minutes \
             FROM notifications \
             WHERE sequence > COALESCE((SELECT sequence FROM notifications \
                                         WHERE received_at < $1 \
                                         ORDER BY sequence DESC LIMIT 1), 0) \
               AND received_at >= $1 AND received_at <= $3 \
             GROUP BY sender ORDER BY sender",
        )
        .bind(hour_ago)
        .bind(recent)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PublishCounts {
                    agency: row.try_get("sender")?,
                    last_5_minutes: to_u64(row.try_get("last_5_minutes")?, "last_5_minutes")?,
                    last_hour: to_u64(row.try_get("last_hour")?, "last_hour")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
