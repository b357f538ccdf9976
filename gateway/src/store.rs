//! Durable storage of notifications and subscriptions, on SQLite (embedded,
//! the default) or PostgreSQL (production, several gateway replicas).
//!
//! One implementation serves both backends through sqlx's `Any` driver: the
//! SQL is portable (`$n` parameters work on both) and the few differences
//! (pragmas, the cross-replica publish lock) are chosen by [`Backend`].
//!
//! Guarantees this module owns:
//! - a publish returns only after its transaction committed (SQLite runs in
//!   WAL mode with `synchronous=FULL`);
//! - sequences are assigned inside the writing transaction as `max + 1`
//!   while holding the publish lock, so they are gap-free and become visible
//!   in order: a reader that has seen sequence `n` can never later find a
//!   new row below `n`;
//! - a refused publish writes nothing.
//!
//! It never interprets content: payloads are opaque bytes here.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::Mutex;

use liandong_core::domain::Instant;

#[cfg(test)]
mod tests;

/// Key of the PostgreSQL advisory lock that serialises publishers across
/// replicas (an arbitrary constant: "LD" in ASCII).
const PUBLISH_LOCK_KEY: i64 = 0x4c44;

/// The store failed; the operation had no effect.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL names no supported backend.
    #[error("unsupported database URL (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// The database settings cannot work.
    #[error("{0}")]
    Config(String),
    /// A stored row does not hold what this version expects.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file, one gateway process.
    Sqlite,
    /// PostgreSQL, one or more gateway replicas.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// A notification about to be stored.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The proven sender.
    pub sender: String,
    /// The sender's idempotency key.
    pub notification_id: String,
    /// Case reference, indexed for `GetCase`.
    pub case_ref: String,
    /// `liandong.v1.EventType` number.
    pub event: i32,
    /// `liandong.v1.Confidentiality` number.
    pub confidentiality: i32,
    /// Region code.
    pub region: String,
    /// Need-to-know list.
    pub recipients: Vec<String>,
    /// SHA-256 of `payload`.
    pub content_hash: Vec<u8>,
    /// Encoded notification.
    pub payload: Vec<u8>,
}

/// A stored notification's receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Its sequence.
    pub sequence: u64,
    /// When the gateway stored it.
    pub received_at: Instant,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored now.
    Stored(Receipt),
    /// Stored before with identical content: the original receipt.
    Duplicate(Receipt),
    /// The sender used this id before for different content; nothing stored.
    Conflict,
}

/// A notification as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNotification {
    /// Its sequence.
    pub sequence: u64,
    /// The proven sender.
    pub sender: String,
    /// The sender's idempotency key.
    pub notification_id: String,
    /// Case reference.
    pub case_ref: String,
    /// `liandong.v1.EventType` number.
    pub event: i32,
    /// `liandong.v1.Confidentiality` number.
    pub confidentiality: i32,
    /// Region code.
    pub region: String,
    /// Need-to-know list.
    pub recipients: Vec<String>,
    /// When the gateway stored it.
    pub received_at: Instant,
    /// Encoded notification.
    pub payload: Vec<u8>,
}

/// A durable subscription's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The encoded, normalised filter it was created with.
    pub filter: Vec<u8>,
    /// Everything at or below this sequence is done for it.
    pub acked_through: u64,
    /// True when this call created it.
    pub created: bool,
}

/// One row of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who: the reading or publishing agency.
    pub agency: String,
    /// What happened: `DELIVERY`, `CASE_READ`, `PUBLISH_REFUSED`.
    pub action: &'static str,
    /// The notification's sequence, when it was stored.
    pub sequence: Option<u64>,
    /// The notification's sender.
    pub sender: String,
    /// The sender's id for it.
    pub notification_id: String,
    /// `FULL`, `WITHHELD`, or the refusal's status code.
    pub decision: String,
    /// Why; never content.
    pub reason: String,
}

/// The gateway's database. Cloning is cheap: clones share the pool and
/// the write lock.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serialises this process's writers (SQLite allows one writer; on
    /// PostgreSQL it keeps replicas' advisory lock uncontended locally).
    write_lock: Arc<Mutex<()>>,
}

/// Notifications read in sequence order, and how far the read got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadBatch {
    /// The rows that may be served, in sequence order.
    pub rows: Vec<StoredNotification>,
    /// The highest sequence examined, including rows that were not
    /// returned because they failed their integrity check; `None` when
    /// nothing above the starting point exists. A reader continues after
    /// it.
    pub through: Option<u64>,
}

const NOTIFICATION_COLUMNS: &str = "sequence, sender, notification_id, case_ref, event, \
     confidentiality, region, recipients, received_at, payload";

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn instant(micros: i64) -> Result<Instant, StoreError> {
    Instant::from_unix_micros(micros)
        .ok_or_else(|| StoreError::Corrupt("received_at out of range".into()))
}

impl Store {
    /// Connects, applies pending migrations and returns the store. For
    /// SQLite, the file (and its directory) is created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // sqlx leaves the journal mode alone: a durable ack
                        // needs WAL with a full sync on every commit.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores a notification unless the sender already used its id: then the
    /// original receipt (same content) or a conflict (other content).
    pub async fn publish(&self, new: &NewNotification) -> Result<PublishOutcome, StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PUBLISH_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let existing = sqlx::query(
            "SELECT sequence, received_at, content_hash FROM notifications \
             WHERE sender = $1 AND notification_id = $2",
        )
        .bind(&new.sender)
        .bind(&new.notification_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            tx.rollback().await?;
            let hash: Vec<u8> = row.try_get("content_hash")?;
            if hash != new.content_hash {
                return Ok(PublishOutcome::Conflict);
            }
            return Ok(PublishOutcome::Duplicate(Receipt {
                sequence: to_u64(row.try_get("sequence")?, "sequence")?,
                received_at: instant(row.try_get("received_at")?)?,
            }));
        }
        let next: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) + 1 FROM notifications")
                .fetch_one(&mut *tx)
                .await?;
        let received_at = Instant::now();
        sqlx::query(
            "INSERT INTO notifications (sequence, sender, notification_id, case_ref, event, \
             confidentiality, region, recipients, received_at, content_hash, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(next)
        .bind(&new.sender)
        .bind(&new.notification_id)
        .bind(&new.case_ref)
        .bind(i64::from(new.event))
        .bind(i64::from(new.confidentiality))
        .bind(&new.region)
        .bind(new.recipients.join(" "))
        .bind(received_at.unix_micros())
        .bind(&new.content_hash)
        .bind(&new.payload)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PublishOutcome::Stored(Receipt {
            sequence: to_u64(next, "sequence")?,
            received_at,
        }))
    }

    /// Up to `limit` notifications with a sequence above `after`, in order.
    pub async fn read_after(&self, after: u64, limit: u32) -> Result<ReadBatch, StoreError> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE sequence > $1 \
             ORDER BY sequence LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(to_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let rows = rows
            .iter()
            .map(stored_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let through = rows.last().map(|row| row.sequence);
        Ok(ReadBatch { rows, through })
    }

    /// Every notification of a case, in order.
    pub async fn case_timeline(
        &self,
        case_ref: &str,
    ) -> Result<Vec<StoredNotification>, StoreError> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE case_ref = $1 ORDER BY sequence"
        );
        let rows = sqlx::query(&sql)
            .bind(case_ref)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_from_row).collect()
    }

    /// The highest sequence stored, 0 when empty.
    pub async fn latest_sequence(&self) -> Result<u64, StoreError> {
        let latest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM notifications")
                .fetch_one(&self.pool)
                .await?;
        to_u64(latest, "sequence")
    }

    /// How many notifications are stored.
    pub async fn count_notifications(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        to_u64(count, "count")
    }

    /// Returns the subscription `(owner, name)`, creating it with `filter`
    /// and a cursor at `start_after` when it does not exist.
    pub async fn open_subscription(
        &self,
        owner: &str,
        name: &str,
        filter: &[u8],
        start_after: u64,
    ) -> Result<SubscriptionRecord, StoreError> {
        let _guard = self.write_lock.lock().await;
        let now = Instant::now().unix_micros();
        let inserted = sqlx::query(
            "INSERT INTO subscriptions (owner, name, filter, acked_through, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (owner, name) DO NOTHING",
        )
        .bind(owner)
        .bind(name)
        .bind(filter)
        .bind(to_i64(start_after))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let row = sqlx::query(
            "SELECT filter, acked_through FROM subscriptions WHERE owner = $1 AND name = $2",
        )
        .bind(owner)
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        Ok(SubscriptionRecord {
            filter: row.try_get("filter")?,
            acked_through: to_u64(row.try_get("acked_through")?, "acked_through")?,
            created: inserted == 1,
        })
    }

    /// Moves a subscription's cursor forward to `acked_through` (never back).
    pub async fn advance_subscription(
        &self,
        owner: &str,
        name: &str,
        acked_through: u64,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE subscriptions SET acked_through = $1, updated_at = $2 \
             WHERE owner = $3 AND name = $4 AND acked_through < $1",
        )
        .bind(to_i64(acked_through))
        .bind(Instant::now().unix_micros())
        .bind(owner)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A subscription's cursor, if it exists.
    pub async fn subscription_cursor(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<u64>, StoreError> {
        let cursor: Option<i64> = sqlx::query_scalar(
            "SELECT acked_through FROM subscriptions WHERE owner = $1 AND name = $2",
        )
        .bind(owner)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        cursor.map(|c| to_u64(c, "acked_through")).transpose()
    }

    /// How many subscriptions `owner` has stored.
    pub async fn count_subscriptions(&self, owner: &str) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE owner = $1")
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
        to_u64(count, "count")
    }

    /// Appends entries to the audit log in one transaction: all or none.
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().await;
        let at = Instant::now().unix_micros();
        let mut tx = self.pool.begin().await?;
        for entry in entries {
            sqlx::query(
                "INSERT INTO audit_log (at, agency, action, sequence, sender, notification_id, decision, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(at)
            .bind(&entry.agency)
            .bind(entry.action)
            .bind(entry.sequence.map(to_i64))
            .bind(&entry.sender)
            .bind(&entry.notification_id)
            .bind(&entry.decision)
            .bind(&entry.reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The audit log, oldest first.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT agency, action, sequence, sender, notification_id, decision, reason FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action")?;
                let sequence: Option<i64> = row.try_get("sequence")?;
                Ok(AuditEntry {
                    agency: row.try_get("agency")?,
                    action: match action.as_str() {
                        "DELIVERY" => "DELIVERY",
                        "CASE_READ" => "CASE_READ",
                        "PUBLISH_REFUSED" => "PUBLISH_REFUSED",
                        _ => {
                            return Err(StoreError::Corrupt(format!(
                                "unknown audit action {action:?}"
                            )));
                        }
                    },
                    sequence: sequence.map(|s| to_u64(s, "sequence")).transpose()?,
                    sender: row.try_get("sender")?,
                    notification_id: row.try_get("notification_id")?,
                    decision: row.try_get("decision")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn stored_from_row(row: &sqlx::any::AnyRow) -> Result<StoredNotification, StoreError> {
    let recipients: String = row.try_get("recipients")?;
    let narrow = |value: i64, what: &str| {
        i32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
    };
    Ok(StoredNotification {
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        sender: row.try_get("sender")?,
        notification_id: row.try_get("notification_id")?,
        case_ref: row.try_get("case_ref")?,
        event: narrow(row.try_get("event")?, "event")?,
        confidentiality: narrow(row.try_get("confidentiality")?, "confidentiality")?,
        region: row.try_get("region")?,
        recipients: recipients.split_whitespace().map(str::to_owned).collect(),
        received_at: instant(row.try_get("received_at")?)?,
        payload: row.try_get("payload")?,
    })
}

/// Adds `mode=rwc` to a SQLite URL and creates the file's directory.
fn prepare_sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Config(
            "an in-memory SQLite database would lose every message: give a file path".into(),
        ));
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Config(format!(
                "cannot create database directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}
