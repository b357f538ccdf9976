//! Inbound progress: each subscription's last acknowledged sequence and
//! current failure, and the deliveries already handed to its sink, so a
//! redelivery after a crash is recognised and not handed twice.
//!
//! It never stores a delivery's content: sequences, senders and ids only.

use serde::Serialize;

use super::{Store, StoreError, now};

/// One subscription's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionState {
    /// Its name.
    pub name: String,
    /// The highest sequence acknowledged to the gateway.
    pub last_acked_sequence: Option<u64>,
    /// When that was.
    pub last_acked_at: Option<i64>,
    /// Since when it has been failing (sink or gateway), if it is.
    pub failing_since: Option<i64>,
    /// The last error.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<i64>,
    /// Deliveries whose signature verified (`[verify]`).
    pub verified: u64,
    /// Deliveries that could not be verified: withheld or redacted by the
    /// gateway.
    pub unverifiable: u64,
    /// Deliveries that failed verification and were handed to the sink
    /// anyway (`verify.on_failure = "warn"`).
    pub failed_passed: u64,
    /// Deliveries that failed verification and were written to the
    /// `rejected` folder instead of the sink.
    pub rejected: u64,
}

/// How a handled delivery fared under `[verify]`, counted per
/// subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The signature verified.
    Verified,
    /// Withheld or redacted: nothing to verify.
    Unverifiable,
    /// Failed, handed to the sink anyway.
    FailedPassed,
    /// Failed, written to the `rejected` folder.
    Rejected,
}

impl Verification {
    fn column(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unverifiable => "unverifiable",
            Self::FailedPassed => "failed_passed",
            Self::Rejected => "rejected",
        }
    }
}

impl Store {
    /// Makes sure the subscription has a progress row.
    pub async fn ensure_subscription(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO subscriptions (name) VALUES (?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// True when this delivery (same sequence, or same sender and
    /// notification id) was already handed to the subscription's sink.
    pub async fn is_handled(
        &self,
        subscription: &str,
        sequence: u64,
        sender: &str,
        notification_id: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM handled WHERE subscription = ?
               AND (sequence = ? OR (sender = ? AND notification_id = ?)) LIMIT 1",
        )
        .bind(subscription)
        .bind(sequence as i64)
        .bind(sender)
        .bind(notification_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Records that a delivery was handed to the subscription's sink, and
    /// clears the subscription's failure.
    pub async fn record_handled(
        &self,
        subscription: &str,
        sequence: u64,
        sender: &str,
        notification_id: &str,
    ) -> Result<(), StoreError> {
        self.record_handled_as(subscription, sequence, sender, notification_id, None)
            .await
    }

    /// [`Store::record_handled`], counting how the delivery fared under
    /// `[verify]` in the same transaction (a rejected delivery is handled
    /// too: written to the `rejected` folder, never handed again).
    pub async fn record_handled_as(
        &self,
        subscription: &str,
        sequence: u64,
        sender: &str,
        notification_id: &str,
        verification: Option<Verification>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(verification) = verification {
            let column = verification.column();
            sqlx::query(&format!(
                "UPDATE subscriptions SET {column} = {column} + 1 WHERE name = ?"
            ))
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO handled (subscription, sequence, sender, notification_id, handled_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(subscription)
        .bind(sequence as i64)
        .bind(sender)
        .bind(notification_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE subscriptions SET failing_since = NULL WHERE name = ?")
            .bind(subscription)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that `sequence` was acknowledged to the gateway.
    pub async fn record_acked(&self, subscription: &str, sequence: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions
             SET last_acked_sequence = MAX(COALESCE(last_acked_sequence, 0), ?), last_acked_at = ?
             WHERE name = ?",
        )
        .bind(sequence as i64)
        .bind(now())
        .bind(subscription)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a subscription's error; `failing_since` keeps the start of
    /// the current failure.
    pub async fn record_subscription_error(
        &self,
        subscription: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let at = now();
        sqlx::query(
            "UPDATE subscriptions
             SET last_error = ?, last_error_at = ?, failing_since = COALESCE(failing_since, ?)
             WHERE name = ?",
        )
        .bind(error)
        .bind(at)
        .bind(at)
        .bind(subscription)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Clears a subscription's current failure (the gateway took it back).
    pub async fn clear_subscription_failure(&self, subscription: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE subscriptions SET failing_since = NULL WHERE name = ?")
            .bind(subscription)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
