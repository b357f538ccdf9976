//! What the operators' views read from the store: every subscription's
//! position.

use sqlx::Row;

use super::{Store, StoreError, to_u64};

/// A stored subscription's position, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// The agency that owns it.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// The encoded, normalised `liandong.v1.SubscriptionFilter`.
    pub filter: Vec<u8>,
    /// Every sequence at or below this is acknowledged.
    pub acked_through: u64,
    /// When it was last moved (unix microseconds).
    pub updated_at: i64,
}

impl Store {
    /// Every stored subscription, by owner and name.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, name, filter, acked_through, updated_at FROM subscriptions \
             ORDER BY owner, name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SubscriptionRow {
                    owner: row.try_get("owner")?,
                    name: row.try_get("name")?,
                    filter: row.try_get("filter")?,
                    acked_through: to_u64(row.try_get("acked_through")?, "acked_through")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect()
    }
}
