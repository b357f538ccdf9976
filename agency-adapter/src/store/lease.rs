//! The daemon's lease: the exclusive `flock` that keeps a second daemon
//! off the state file ([`DaemonLock`]), and the `daemon` row (pid,
//! heartbeat, clean stop) that `status` reports.
//!
//! The row never decides whether a daemon runs; only the lock does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::{Store, StoreError, now};

/// How long without a heartbeat before `status` reports a daemon as gone.
pub const DAEMON_STALE_AFTER: Duration = Duration::from_secs(15);

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

impl Store {
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
