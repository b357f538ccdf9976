//! The writer connection: the one connection that writes, outside the read
//! pool, behind this process's write lock.
//!
//! Every write is one explicit transaction: `BEGIN IMMEDIATE` on SQLite (the
//! write lock is taken at the start, waiting up to the lock timeout, rather
//! than on the first write, where a deferred transaction gets `SQLITE_BUSY`
//! at once), `BEGIN` on PostgreSQL; then `COMMIT`. sqlx's own transaction
//! type is not used: when a `COMMIT` fails (SQLite rolls back by itself on
//! `SQLITE_FULL` or `SQLITE_IOERR`), sqlx still counts the connection as
//! inside a transaction and its next `begin()` issues a `SAVEPOINT` that
//! never commits. Here, after any error, the connection is closed (the
//! database rolls back whatever it still held) and the next write connects
//! anew: no state survives a failure.
//!
//! This module never decides what to write; it runs what it is given.

use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection, Executor};
use tokio::sync::Mutex;

use super::{Backend, StoreError};

/// How long closing a failed connection may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Session settings of every connection. `writer` is true for the writer
/// connection: on PostgreSQL only it gets the lock timeout (the pool's
/// connections take no locks but the migration lock, which may wait).
pub(crate) async fn configure(
    conn: &mut AnyConnection,
    backend: Backend,
    lock_timeout: Duration,
    writer: bool,
) -> Result<(), sqlx::Error> {
    let millis = lock_timeout.as_millis();
    match backend {
        Backend::Sqlite => {
            // sqlx leaves the journal mode alone: a durable ack needs WAL
            // with a full sync on every commit.
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute(format!("PRAGMA busy_timeout = {millis}").as_str())
                .await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
        }
        Backend::Postgres if writer => {
            conn.execute(format!("SET lock_timeout = {millis}").as_str())
                .await?;
        }
        Backend::Postgres => {}
    }
    Ok(())
}

/// The writer connection and the lock around it.
pub(crate) struct Writer {
    options: AnyConnectOptions,
    backend: Backend,
    lock_timeout: Duration,
    /// The process write lock; `None` inside after a failure, until the
    /// next write connects.
    state: Mutex<State>,
}

struct State {
    conn: Option<AnyConnection>,
    /// Set by `close`: no write connects again.
    closed: bool,
    /// Test-only: statements run on each new writer connection.
    #[cfg(test)]
    setup: Vec<String>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("backend", &self.backend)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(
        options: AnyConnectOptions,
        backend: Backend,
        lock_timeout: Duration,
    ) -> Self {
        Self {
            options,
            backend,
            lock_timeout,
            state: Mutex::new(State {
                conn: None,
                closed: false,
                #[cfg(test)]
                setup: Vec::new(),
            }),
        }
    }

    /// Runs `op` in one transaction, holding the write lock throughout;
    /// commits when it succeeds. On any error (connecting, `BEGIN`, `op`,
    /// `COMMIT`) the connection is closed before the lock is released.
    pub(crate) async fn transaction<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>,
    {
        let mut state = self.state.lock().await;
        if state.closed {
            return Err(StoreError::Closed);
        }
        if state.conn.is_none() {
            #[cfg(test)]
            let setup = state.setup.clone();
            #[cfg(not(test))]
            let setup = Vec::new();
            let conn = self.connect(setup).await?;
            state.conn = Some(conn);
        }
        let Some(conn) = state.conn.as_mut() else {
            return Err(StoreError::Interrupted);
        };
        let result = run(conn, self.backend, op).await;
        if result.is_err()
            && let Some(conn) = state.conn.take()
        {
            discard(conn).await;
        }
        result
    }

    /// A new writer connection; `setup` is empty outside tests.
    async fn connect(&self, setup: Vec<String>) -> Result<AnyConnection, StoreError> {
        let mut conn = self.options.connect().await?;
        configure(&mut conn, self.backend, self.lock_timeout, true).await?;
        for statement in &setup {
            conn.execute(statement.as_str()).await?;
        }
        Ok(conn)
    }

    /// Closes the writer after the write in progress.
    pub(crate) async fn close(&self) {
        let mut state = self.state.lock().await;
        state.closed = true;
        if let Some(conn) = state.conn.take() {
            discard(conn).await;
        }
    }

    #[cfg(test)]
    pub(crate) async fn set_setup(&self, statements: Vec<String>) {
        let mut state = self.state.lock().await;
        state.setup = statements;
        if let Some(conn) = state.conn.take() {
            discard(conn).await;
        }
    }
}

async fn run<T, F>(conn: &mut AnyConnection, backend: Backend, op: F) -> Result<T, StoreError>
where
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>,
{
    let begin = match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    conn.execute(begin).await?;
    let value = op(&mut *conn).await?;
    conn.execute("COMMIT").await?;
    Ok(value)
}

/// Closes a connection that failed; the database rolls back whatever
/// transaction it still held. A connection that does not close in time is
/// dropped (its socket or handle closes all the same).
async fn discard(conn: AnyConnection) {
    match tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing the failed writer connection"),
        Err(_) => tracing::warn!("closing the failed writer connection timed out; dropped"),
    }
}
