//! The adapter's local state in one SQLite file: the outbox (accepted,
//! not yet receipted), the sent and dead-letter records, each
//! subscription's progress and the deliveries already handed to its sink,
//! the pusher's health and the running daemon's lease.
//!
//! One daemon per state file: the running daemon holds an exclusive
//! `flock` on `<state file>.lock` ([`DaemonLock`]). The kernel releases it
//! when the process ends, however it ends, so a daemon killed with
//! SIGKILL — even one not yet reaped by its parent, whose `/proc/<pid>`
//! still exists — never keeps the next one from starting, and a live one
//! always keeps a second out. The `daemon` row (pid, heartbeat, clean stop)
//! only reports to `status`; it decides nothing.
//!
//! Durability: WAL journal with `synchronous=FULL`, set explicitly on every
//! connection (sqlx sets neither), so a committed row survives a power cut;
//! sources answer "accepted" only after [`Store::accept`] has committed.
//! The daemon holds a single connection, so its writes never race each
//! other (SQLite has no `SKIP LOCKED`; the one pusher is the only reader of
//! the outbox queue). Migrations live in `migrations/` and run at open.
//!
//! This module is the only one that speaks SQL. It must never interpret a
//! payload nor log one: it stores and returns bytes and ids.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use liandong_core::domain::Instant;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[cfg(test)]
mod tests;

/// How long without a heartbeat before `status` reports a daemon as gone.
pub const DAEMON_STALE_AFTER: Duration = Duration::from_secs(15);

/// The state file could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("{path}: cannot open the adapter state: {source}")]
    Open {
        /// The SQLite file.
        path: PathBuf,
        /// The cause.
        source: sqlx::Error,
    },
    /// The file does not exist (for `status`, before the daemon ever ran).
    #[error("{path}: no adapter state yet (has `liandong-adapter run` started with this config?)")]
    Missing {
        /// The SQLite file.
        path: PathBuf,
    },
    /// The schema could not be brought up to date.
    #[error("{path}: cannot migrate the adapter state: {source}")]
    Migrate {
        /// The SQLite file.
        path: PathBuf,
        /// The cause.
        source: sqlx::migrate::MigrateError,
    },
    /// Another daemon runs on the same state file.
    #[error("{path}: another liandong-adapter daemon (pid {pid}) is running on this state file")]
    AlreadyRunning {
        /// The SQLite file.
        path: PathBuf,
        /// Its process id, as its lease row records it (0 when unknown).
        pid: i64,
    },
    /// The lock file beside the state file cannot be opened or locked.
    #[error("{path}: cannot take the daemon lock: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A statement failed.
    #[error("adapter state: {0}")]
    Query(#[from] sqlx::Error),
}

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
}

/// The daemon's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DaemonLease {
    /// Its process id.
    pub pid: i64,
    /// When it started.
    pub started_at: i64,
    /// Its last sign of life.
    pub heartbeat_at: i64,
    /// When it stopped cleanly, if it did.
    pub stopped_at: Option<i64>,
}

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

/// The state file, open.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

fn now() -> i64 {
    Instant::now().unix_micros()
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        // Neither is sqlx's default: a row acknowledged to a source must be
        // on disk, and readers (status) must not block the daemon.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
}

impl Store {
    /// Opens (creating it and its directory when needed) and migrates the
    /// state file at `path`, with one connection.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options(path).create_if_missing(true))
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            pool,
            path: path.to_owned(),
        })
    }

    /// Opens an existing state file for reading what `status` shows;
    /// [`StoreError::Missing`] when there is none.
    pub async fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(path).create_if_missing(false))
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            pool,
            path: path.to_owned(),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the connection (after the last write).
    pub async fn close(&self) {
        self.pool.close().await;
    }

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

    /// The receipt of a sent notification: `(sequence, received_at)`.
    pub async fn receipt_of(&self, local_id: i64) -> Result<Option<(u64, i64)>, StoreError> {
        let row = sqlx::query("SELECT sequence, received_at FROM sent WHERE local_id = ?")
            .bind(local_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get::<i64, _>(0) as u64, r.get(1))))
    }

    /// The dead letter with this local id.
    pub async fn dead_letter(&self, local_id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query(&format!("{DEAD_LETTER_SELECT} WHERE local_id = ?"))
            .bind(local_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| dead_letter_from(&r)))
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

    /// Records the pusher's latest error (no content: codes, ids, causes).
    pub async fn record_push_error(&self, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE pusher SET last_error = ?, last_error_at = ? WHERE id = 1")
            .bind(error)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets sent rows older than `keep`.
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
        let mut tx = self.pool.begin().await?;
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

    /// Takes the daemon lock and records the lease for process `pid`;
    /// refuses while another live daemon holds the lock. The daemon keeps
    /// the returned lock for as long as it runs.
    pub async fn claim_daemon(&self, pid: u32) -> Result<DaemonLock, StoreError> {
        let lock = match DaemonLock::take(&self.path)? {
            Some(lock) => lock,
            None => {
                let other: Option<i64> = sqlx::query_scalar("SELECT pid FROM daemon WHERE id = 1")
                    .fetch_optional(&self.pool)
                    .await?;
                return Err(StoreError::AlreadyRunning {
                    path: self.path.clone(),
                    pid: other.unwrap_or(0),
                });
            }
        };
        let at = now();
        sqlx::query(
            "INSERT INTO daemon (id, pid, started_at, heartbeat_at, stopped_at)
             VALUES (1, ?, ?, ?, NULL)
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
        )
        .bind(i64::from(pid))
        .bind(at)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(lock)
    }

    /// The daemon's sign of life.
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE daemon SET heartbeat_at = ? WHERE id = 1")
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a clean stop.
    pub async fn release_daemon(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE daemon SET stopped_at = ? WHERE id = 1")
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
                    last_error, last_error_at
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

const DEAD_LETTER_SELECT: &str =
    "SELECT local_id, notification_id, source, code, reason, accepted_at, dead_at, reported_at
     FROM dead_letters";

fn dead_letter_from(r: &sqlx::sqlite::SqliteRow) -> DeadLetter {
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

/// The running daemon's exclusive lock on `<state file>.lock`; released
/// when dropped or when the process ends.
#[derive(Debug)]
pub struct DaemonLock {
    /// The locked file; closing it releases the lock.
    _file: Flock<File>,
}

impl DaemonLock {
    /// The lock file of the state file at `state`.
    pub fn path_for(state: &Path) -> PathBuf {
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock without waiting; `None` while another process (or
    /// another open of it) holds it.
    pub fn take(state: &Path) -> Result<Option<Self>, StoreError> {
        let path = Self::path_for(state);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Lock {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Some(Self { _file: file })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(StoreError::Lock {
                path,
                source: errno.into(),
            }),
        }
    }
}
