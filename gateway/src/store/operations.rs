//! What the operators' views read from the store: every subscription's
//! position and the process holding its lease, the routing columns of the rows after it (to measure lag),
//! the database's size, each agency's last publish and last refusal, and
//! the audit chain's head.
//!
//! Read-only, on the read pool; never a payload, never case content.

use sqlx::Row;

use liandong_core::domain::Envelope;

use super::integrity::{self, RoutingColumns};
use super::{Backend, Store, StoreError, to_i64, to_u64};

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
    /// The gateway process holding its lease (its instance id), while
    /// that lease has not expired.
    pub held_by: Option<String>,
}

/// A stored notification's routing fields and arrival, without payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedRow {
    /// Its sequence.
    pub sequence: u64,
    /// When the gateway received it (unix microseconds).
    pub received_at: i64,
    /// Its routing fields.
    pub envelope: Envelope,
}

/// A page of [`RoutedRow`]s and the highest sequence it covered (rows
/// whose routing columns do not parse are left out, logged, and covered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutedBatch {
    /// The rows that parsed, in sequence order.
    pub rows: Vec<RoutedRow>,
    /// The highest sequence read; `None` when nothing was.
    pub through: Option<u64>,
}

/// An agency's newest refusal in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    /// When it was recorded (unix microseconds).
    pub at: i64,
    /// What was refused (the audit action, e.g. `PUBLISH_REFUSED`).
    pub action: String,
    /// The refusal's status code name.
    pub decision: String,
    /// Why, in words.
    pub reason: String,
}

/// The audit chain's newest row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    /// Its id: the number of rows appended (ids have no gaps).
    pub id: u64,
    /// When it was appended (unix microseconds).
    pub at: i64,
}

impl Store {
    /// Every stored subscription, by owner and name.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT s.owner, s.name, s.filter, s.acked_through, s.updated_at, \
             l.holder AS held_by FROM subscriptions s \
             LEFT JOIN subscription_leases l ON l.owner = s.owner AND l.name = s.name \
             AND l.expires_at > {now} ORDER BY s.owner, s.name",
            now = super::leases::now_sql(self.backend())
        ))
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
                    held_by: row.try_get("held_by")?,
                })
            })
            .collect()
    }

    /// Up to `limit` notifications with a sequence above `after`, in order,
    /// read from their routing columns and arrival time alone.
    pub async fn routed_after(&self, after: u64, limit: u32) -> Result<RoutedBatch, StoreError> {
        let rows = sqlx::query(
            "SELECT sequence, received_at, sender, notification_id, case_ref, event, \
             confidentiality, region, recipients, copies FROM notifications \
             WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut batch = RoutedBatch::default();
        for row in &rows {
            let sequence = to_u64(row.try_get("sequence")?, "sequence")?;
            batch.through = Some(sequence);
            let routing = RoutingColumns {
                sender: row.try_get("sender")?,
                notification_id: row.try_get("notification_id")?,
                case_ref: row.try_get("case_ref")?,
                event: row.try_get("event")?,
                confidentiality: row.try_get("confidentiality")?,
                region: row.try_get("region")?,
                recipients: row.try_get("recipients")?,
                copies: row.try_get("copies")?,
            };
            match integrity::parse_routing(&routing) {
                Ok(envelope) => batch.rows.push(RoutedRow {
                    sequence,
                    received_at: row.try_get("received_at")?,
                    envelope,
                }),
                Err(violation) => self.withheld(sequence, &violation),
            }
        }
        Ok(batch)
    }

    /// Bytes the database occupies: SQLite's pages times their size, or
    /// PostgreSQL's `pg_database_size` of the current database.
    pub async fn store_bytes(&self) -> Result<u64, StoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT p.page_count * s.page_size FROM pragma_page_count() AS p, \
                 pragma_page_size() AS s"
            }
            Backend::Postgres => "SELECT pg_database_size(current_database())",
        };
        let bytes: i64 = sqlx::query_scalar(sql).fetch_one(self.pool()).await?;
        to_u64(bytes, "database size")
    }

    /// When `sender` last published a stored notification (unix
    /// microseconds), if it ever did.
    pub async fn last_publish(&self, sender: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(received_at) FROM notifications WHERE sender = $1")
                .bind(sender)
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// The newest audit row recording a refusal of `agency` under one of
    /// `actions`, if any.
    pub async fn last_refusal(
        &self,
        agency: &str,
        actions: &[&str],
    ) -> Result<Option<RefusalRow>, StoreError> {
        // One index seek per action (audit_log_by_agency_action): an
        // agency with many deliveries and no refusal costs no scan.
        let mut newest: Option<i64> = None;
        for action in actions {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(id) FROM audit_log WHERE agency = $1 AND action = $2",
            )
            .bind(agency)
            .bind(*action)
            .fetch_one(self.pool())
            .await?;
            newest = newest.max(id);
        }
        let Some(id) = newest else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT at, action, decision, reason FROM audit_log WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(RefusalRow {
                at: row.try_get("at")?,
                action: row.try_get("action")?,
                decision: row.try_get("decision")?,
                reason: row.try_get("reason")?,
            })
        })
        .transpose()
    }

    /// The audit log's newest row, if it has any.
    pub async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let row = sqlx::query("SELECT id, at FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(AuditHead {
                id: to_u64(row.try_get("id")?, "audit id")?,
                at: row.try_get("at")?,
            })
        })
        .transpose()
    }
}
