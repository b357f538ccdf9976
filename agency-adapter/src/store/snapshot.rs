//! The status snapshot: everything `status` reports, read from every table
//! group in one transaction so the numbers agree with each other.
//!
//! It only reads; it never judges health (that is [`crate::report`]).

use serde::Serialize;
use sqlx::Row;

use super::dead_letters::{DEAD_LETTER_SELECT, dead_letter_from};
use super::{DaemonLease, DeadLetter, Store, StoreError, SubscriptionState};

/// Everything `status` reports, read in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Rows in the outbox.
    pub outbox_depth: u64,
    /// When the oldest of them was accepted.
    pub oldest_pending_accepted_at: Option<i64>,
    /// Rows receipted (kept for `outbox.keep_sent_days`).
    pub sent: u64,
    /// Every dead letter (newest first, at most 100).
    pub dead_letters: Vec<DeadLetter>,
    /// How many there are in all.
    pub dead_letter_count: u64,
    /// When the pusher last got a receipt.
    pub last_success_at: Option<i64>,
    /// The pusher's last error.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<i64>,
    /// Each subscription's progress.
    pub subscriptions: Vec<SubscriptionState>,
    /// The daemon's lease, if a daemon ever ran.
    pub daemon: Option<DaemonLease>,
}

impl Store {
    /// Everything `status` shows, read in one transaction.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outbox = sqlx::query("SELECT COUNT(*), MIN(accepted_at) FROM outbox")
            .fetch_one(&mut *tx)
            .await?;
        let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sent")
            .fetch_one(&mut *tx)
            .await?;
        let dead_letter_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(&mut *tx)
            .await?;
        let dead_letters = sqlx::query(&format!(
            "{DEAD_LETTER_SELECT} ORDER BY local_id DESC LIMIT 100"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(dead_letter_from)
        .collect();
        let pusher = sqlx::query(
            "SELECT last_success_at, last_error, last_error_at FROM pusher WHERE id = 1",
        )
        .fetch_one(&mut *tx)
        .await?;
        let subscriptions = sqlx::query(
            "SELECT name, last_acked_sequence, last_acked_at, failing_since,
                    last_error, last_error_at,
                    verified, unverifiable, failed_passed, rejected
             FROM subscriptions ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| SubscriptionState {
            name: r.get(0),
            last_acked_sequence: r.get::<Option<i64>, _>(1).map(|s| s as u64),
            last_acked_at: r.get(2),
            failing_since: r.get(3),
            last_error: r.get(4),
            last_error_at: r.get(5),
            verified: r.get::<i64, _>(6) as u64,
            unverifiable: r.get::<i64, _>(7) as u64,
            failed_passed: r.get::<i64, _>(8) as u64,
            rejected: r.get::<i64, _>(9) as u64,
        })
        .collect();
        let daemon = sqlx::query(
            "SELECT pid, started_at, heartbeat_at, stopped_at FROM daemon WHERE id = 1",
        )
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| DaemonLease {
            pid: r.get(0),
            started_at: r.get(1),
            heartbeat_at: r.get(2),
            stopped_at: r.get(3),
        });
        tx.commit().await?;
        Ok(Snapshot {
            outbox_depth: outbox.get::<i64, _>(0) as u64,
            oldest_pending_accepted_at: outbox.get(1),
            sent: sent as u64,
            dead_letters,
            dead_letter_count: dead_letter_count as u64,
            last_success_at: pusher.get(0),
            last_error: pusher.get(1),
            last_error_at: pusher.get(2),
            subscriptions,
            daemon,
        })
    }
}
