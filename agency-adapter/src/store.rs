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
//! # Layout, by table group
//! - `outbox` — accepting into the outbox, the pusher's queue, and
//!   where a notification is now.
//! - `sent` — receipted rows and the pusher's last success and error.
//! - `dead_letters` — what the gateway refused for good.
//! - `inbound` — each subscription's progress and the deliveries
//!   already handed to its sink.
//! - `lease` — the daemon lock and the `daemon` row.
//! - `snapshot` — everything `status` reports, in one read.
//!
//! This module is the only one that speaks SQL. It must never interpret a
//! payload nor log one: it stores and returns bytes and ids.

use std::path::{Path, PathBuf};
use std::time::Duration;

use liandong_core::domain::Instant;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

mod dead_letters;
mod inbound;
mod lease;
mod outbox;
mod sent;
mod snapshot;

#[cfg(test)]
mod tests;

pub use dead_letters::DeadLetter;
pub use inbound::{SubscriptionState, Verification};
pub use lease::{DAEMON_STALE_AFTER, DaemonLease, DaemonLock};
pub use outbox::{AcceptOutcome, NewRow, PendingRow, RowState};
pub use sent::SentReceipt;
pub use snapshot::Snapshot;

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
}
