//! The writer: the one connection that writes, outside the read pool,
//! owned by one task that runs every write of this process.
//!
//! **Group commit.** Writes are queued to that task. It takes the first
//! waiting write, opens a transaction, runs it, then runs every write that
//! is waiting by then (up to [`MAX_BATCH`]) in the same transaction, and
//! commits once: writes that arrive together share one `COMMIT` and so one
//! disk sync. Each caller is answered only after that `COMMIT` returned: a
//! receipt never precedes the sync that makes it true. When no other write
//! waits, a write is its own transaction, exactly as before.
//!
//! **One write's failure stays its own.** Every write after the first of a
//! transaction runs inside a savepoint (released in the same round trip as
//! the next one is opened; `COMMIT` releases the last). When it fails, its
//! savepoint is rolled back, its caller gets its error, and the others go
//! on. When the rollback itself fails (SQLite rolls the whole transaction
//! back by itself on `SQLITE_FULL` or `SQLITE_IOERR`), or `COMMIT` fails,
//! nothing of the transaction was written: every caller in it gets an error
//! (the first its own; the rest [`StoreError::Shared`]). A first write that
//! fails ends its transaction at once, alone.
//!
//! **No state survives a failure.** Every transaction is explicit: `BEGIN
//! IMMEDIATE` on SQLite (the write lock is taken at the start, waiting up
//! to the lock timeout, rather than on the first write, where a deferred
//! transaction gets `SQLITE_BUSY` at once), `BEGIN` and both cross-replica
//! advisory locks, in one order, on PostgreSQL (see [`begin`]); then
//! `COMMIT`. sqlx's own transaction type is not used: when a `COMMIT`
//! fails, sqlx still counts the connection as inside a transaction and its
//! next `begin()` issues a `SAVEPOINT` that never commits. Here, after any
//! error that ends a transaction, the connection is closed (the database
//! rolls back whatever it still held) and the next write connects anew.
//!
//! **Detached from callers.** A write, once queued, runs to its end whether
//! or not its caller still waits: a cancelled request never cuts a
//! transaction short.
//!
//! This module never decides what to write; it runs what it is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection, Executor};
use tokio::sync::{mpsc, oneshot};

use super::{Backend, StoreError};

/// How long closing a failed connection may take before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most writes one transaction takes. Bounds how long the first of
/// them waits for its receipt when writes never stop arriving.
pub(crate) const MAX_BATCH: usize = 256;

/// The savepoint every write after the first of a transaction runs in.
const SAVEPOINT: &str = "SAVEPOINT liandong_write";
const ROLLBACK_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT liandong_write";
/// Releases the savepoint of the write before and opens the next one, in
/// one round trip (both backends take several statements in a query
/// without arguments).
const RELEASE_AND_SAVEPOINT: &str = "RELEASE SAVEPOINT liandong_write; SAVEPOINT liandong_write";

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

/// What a queued write did inside its transaction.
enum Ran {
    /// It succeeded; its caller is answered once the transaction's fate is
    /// known.
    Wrote(Answer),
    /// It failed with this error, which its caller gets.
    Failed(StoreError, Refuse),
}

/// Answers a write that succeeded in its transaction: its value once
/// `COMMIT` succeeded, else the transaction's error.
type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Answers a write with an error.
type Refuse = Box<dyn FnOnce(StoreError) + Send>;

/// One queued write: the caller's operation and where its answer goes.
trait Write: Send {
    /// Runs the operation on the writer connection, inside the open
    /// transaction.
    fn run(self: Box<Self>, conn: &mut AnyConnection) -> BoxFuture<'_, Ran>;
    /// Answers the caller without running the operation.
    fn refuse(self: Box<Self>, error: StoreError);
}

struct Queued<T, F> {
    op: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
    /// Told how the write ended, in the writer task, just before its
    /// caller is answered (whether or not the caller still waits).
    ended: Ended,
}

/// Told how a write ended: `Ok` once committed, else its error.
pub(crate) type Ended = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

impl<T, F> Write for Queued<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    fn run(self: Box<Self>, conn: &mut AnyConnection) -> BoxFuture<'_, Ran> {
        let Queued { op, reply, ended } = *self;
        Box::pin(async move {
            // A caller that stopped waiting is not told.
            match op(conn).await {
                Ok(value) => Ran::Wrote(Box::new(move |fate: Result<(), StoreError>| {
                    ended(fate.as_ref().map(|_| ()));
                    let _ = reply.send(fate.map(|()| value));
                })),
                Err(error) => Ran::Failed(
                    error,
                    Box::new(move |error: StoreError| {
                        ended(Err(&error));
                        let _ = reply.send(Err(error));
                    }),
                ),
            }
        })
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        (self.ended)(Err(&error));
        let _ = self.reply.send(Err(error));
    }
}

type Job = Box<dyn Write>;

enum Message {
    Write(Job),
    /// Close after the writes queued before; answer when closed.
    Close(oneshot::Sender<()>),
    /// Test-only: statements for every new connection; drops the current one.
    #[cfg(test)]
    Setup(Vec<String>, oneshot::Sender<()>),
}

/// The handle to the writer task.
pub(crate) struct Writer {
    backend: Backend,
    lock_timeout: Duration,
    inbox: mpsc::UnboundedSender<Message>,
    counts: Arc<Counts>,
}

/// What the writer task has done, for metrics and tests.
#[derive(Debug, Default)]
struct Counts {
    /// Transactions committed.
    commits: AtomicU64,
    /// Writes those transactions carried.
    writes: AtomicU64,
    /// Writes queued and not yet taken into a transaction.
    waiting: AtomicU64,
    /// The PostgreSQL backend process of the writer connection (0: none
    /// yet, or SQLite): what the listener tells this process's own
    /// notifications by.
    backend_pid: AtomicU32,
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
    /// Starts the writer task on the current runtime. It connects at the
    /// first write and ends when the last handle is dropped.
    pub(crate) fn new(
        options: AnyConnectOptions,
        backend: Backend,
        lock_timeout: Duration,
    ) -> Self {
        let (inbox, messages) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        let task = Task {
            options,
            backend,
            lock_timeout,
            conn: None,
            closed: false,
            setup: Vec::new(),
            begin: begin(backend).into(),
            counts: Arc::clone(&counts),
        };
        tokio::spawn(task.run(messages));
        Self {
            backend,
            lock_timeout,
            inbox,
            counts,
        }
    }

    /// Queues `op` now, in the order of the calls, to run in a
    /// transaction possibly shared with other writes waiting at the same
    /// moment. The returned future answers once that transaction
    /// committed, or with the error that kept `op` from being written;
    /// dropping it does not take the write back. `ended` is told first, in
    /// the writer task.
    pub(crate) fn queue<T, F>(
        &self,
        op: F,
        ended: Ended,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.counts.waiting.fetch_add(1, Ordering::Relaxed);
        let queued = self
            .inbox
            .send(Message::Write(Box::new(Queued { op, reply, ended })))
            .is_ok();
        if !queued {
            self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        async move {
            if !queued {
                return Err(StoreError::Interrupted);
            }
            answer.await.map_err(|_| StoreError::Interrupted)?
        }
    }

    /// Closes the writer after the writes queued before; later writes get
    /// [`StoreError::Closed`].
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.inbox.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    /// Transactions committed and the writes they carried, so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.counts.commits.load(Ordering::Relaxed),
            self.counts.writes.load(Ordering::Relaxed),
        )
    }

    /// Writes queued and not yet taken into a transaction.
    pub(crate) fn waiting(&self) -> u64 {
        self.counts.waiting.load(Ordering::Relaxed)
    }

    /// The PostgreSQL backend process of the current (or last) writer
    /// connection; 0 before the first write and on SQLite.
    pub(crate) fn backend_pid(&self) -> u32 {
        self.counts.backend_pid.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) async fn set_setup(&self, statements: Vec<String>) {
        let (done, applied) = oneshot::channel();
        if self.inbox.send(Message::Setup(statements, done)).is_ok() {
            let _ = applied.await;
        }
    }
}

/// The writer task's state.
struct Task {
    options: AnyConnectOptions,
    backend: Backend,
    lock_timeout: Duration,
    /// `None` after a failure, until the next write connects.
    conn: Option<AnyConnection>,
    /// Set by `Close`: no write connects again.
    closed: bool,
    /// Statements run on each new connection (tests only set any).
    setup: Vec<String>,
    /// What opens each transaction ([`begin`]), made once.
    begin: Arc<str>,
    counts: Arc<Counts>,
}

impl Task {
    async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        // A control message that arrived while a transaction was filling:
        // handled after that transaction.
        let mut held: Option<Message> = None;
        loop {
            let message = match held.take() {
                Some(message) => message,
                None => match messages.recv().await {
                    Some(message) => message,
                    None => break,
                },
            };
            match message {
                Message::Write(first) => {
                    self.counts.waiting.fetch_sub(1, Ordering::Relaxed);
                    held = self.transaction(first, &mut messages).await;
                }
                Message::Close(done) => {
                    self.closed = true;
                    self.discard().await;
                    let _ = done.send(());
                }
                #[cfg(test)]
                Message::Setup(statements, done) => {
                    self.setup = statements;
                    self.discard().await;
                    let _ = done.send(());
                }
            }
        }
        self.discard().await;
    }

    /// Runs `first` and every write waiting behind it (up to
    /// [`MAX_BATCH`]) in one transaction and answers them all. Returns a
    /// control message met while filling the transaction.
    async fn transaction(
        &mut self,
        first: Job,
        messages: &mut mpsc::UnboundedReceiver<Message>,
    ) -> Option<Message> {
        if self.closed {
            first.refuse(StoreError::Closed);
            return None;
        }
        let counts = Arc::clone(&self.counts);
        let begin = Arc::clone(&self.begin);
        let conn = match self.connection().await {
            Ok(conn) => conn,
            Err(error) => {
                first.refuse(error);
                self.discard().await;
                return None;
            }
        };
        if let Err(error) = conn.execute(&*begin).await {
            self.discard().await;
            first.refuse(error.into());
            return None;
        }
        let mut written: Vec<Answer> = Vec::new();
        let mut failed: Vec<(StoreError, Refuse)> = Vec::new();
        match first.run(conn).await {
            Ran::Wrote(answer) => written.push(answer),
            Ran::Failed(error, refuse) => {
                // Alone in its transaction: it ends here.
                self.discard().await;
                refuse(error);
                return None;
            }
        }
        let mut held = None;
        let mut broken = None;
        while written.len() + failed.len() < MAX_BATCH {
            let job = match messages.try_recv() {
                Ok(Message::Write(job)) => {
                    counts.waiting.fetch_sub(1, Ordering::Relaxed);
                    job
                }
                Ok(control) => {
                    held = Some(control);
                    break;
                }
                Err(_) => break,
            };
            // The savepoint of the write before (if any) is released in
            // the same round trip as this one's is opened; `COMMIT`
            // releases the last.
            let open = if written.len() + failed.len() == 1 {
                SAVEPOINT
            } else {
                RELEASE_AND_SAVEPOINT
            };
            match savepoint(conn, open, job).await {
                Ok(Ran::Wrote(answer)) => written.push(answer),
                Ok(Ran::Failed(error, refuse)) => failed.push((error, refuse)),
                Err(Broken { cause, refuse }) => {
                    broken = Some((cause, refuse));
                    break;
                }
            }
        }
        let outcome = match broken {
            None => conn
                .execute("COMMIT")
                .await
                .map(drop)
                .map_err(StoreError::from),
            Some((cause, refuse)) => {
                // The write that broke the transaction shares its fate.
                written.push(Box::new(move |fate: Result<(), StoreError>| {
                    if let Err(error) = fate {
                        refuse(error);
                    }
                }));
                Err(cause)
            }
        };
        let carried = written.len() + failed.len();
        match outcome {
            Ok(()) => {
                counts.commits.fetch_add(1, Ordering::Relaxed);
                counts.writes.fetch_add(carried as u64, Ordering::Relaxed);
                crate::ops::metrics::store_batch(carried);
                for answer in written {
                    answer(Ok(()));
                }
            }
            Err(error) => {
                self.discard().await;
                tracing::debug!(%error, writes = written.len(), "a shared write transaction failed; none of its writes was stored");
                answer_failed(written, error);
            }
        }
        for (error, refuse) in failed {
            refuse(error);
        }
        held
    }

    /// The writer connection, connecting when there is none.
    async fn connection(&mut self) -> Result<&mut AnyConnection, StoreError> {
        if self.conn.is_none() {
            let mut conn = self.options.connect().await?;
            configure(&mut conn, self.backend, self.lock_timeout, true).await?;
            if self.backend == Backend::Postgres {
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut conn)
                    .await?;
                self.counts
                    .backend_pid
                    .store(u32::try_from(pid).unwrap_or(0), Ordering::Relaxed);
            }
            for statement in &self.setup {
                conn.execute(statement.as_str()).await?;
            }
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(StoreError::Interrupted)
    }

    /// Closes the connection, if any; the database rolls back whatever
    /// transaction it still held.
    async fn discard(&mut self) {
        if let Some(conn) = self.conn.take() {
            discard(conn).await;
        }
    }
}

/// What opens a writer transaction. On SQLite, `BEGIN IMMEDIATE` takes
/// the database's write lock. On PostgreSQL the transaction also takes both
/// cross-replica locks, the publish lock and then the audit lock, before
/// any write runs: a transaction may carry an audit-only write (audit lock)
/// and then a publish (publish lock, then audit lock), and another
/// replica's publish takes them the other way round unless every
/// transaction takes both, in one order, up front. The writes' own
/// `lock_publish` and `lock_audit` then find them held (advisory locks
/// stack within a session). One round trip: several statements without
/// arguments.
fn begin(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => "BEGIN IMMEDIATE".to_owned(),
        Backend::Postgres => format!(
            "BEGIN; SELECT pg_advisory_xact_lock({}); SELECT pg_advisory_xact_lock({})",
            super::PUBLISH_LOCK_KEY,
            super::audit::AUDIT_LOCK_KEY
        ),
    }
}

/// The transaction broke while a write ran in a savepoint.
struct Broken {
    /// Why: the write's own error when it failed and could not be rolled
    /// back alone, else the savepoint statement's.
    cause: StoreError,
    /// Answers that write.
    refuse: Refuse,
}

/// Opens a savepoint with `open` (releasing the one before, if any) and
/// runs `job` in it; a failed job's savepoint is rolled back (and left for
/// the next `open` or `COMMIT` to release). `Err` when the savepoint could
/// not be opened or rolled back: the transaction is then gone.
async fn savepoint(conn: &mut AnyConnection, open: &str, job: Job) -> Result<Ran, Broken> {
    if let Err(error) = conn.execute(open).await {
        return Err(Broken {
            cause: error.into(),
            refuse: Box::new(move |error| job.refuse(error)),
        });
    }
    match job.run(&mut *conn).await {
        Ran::Wrote(answer) => Ok(Ran::Wrote(answer)),
        Ran::Failed(cause, refuse) => {
            let rolled_back = conn.execute(ROLLBACK_SAVEPOINT).await.map(drop);
            match rolled_back {
                Ok(()) => Ok(Ran::Failed(cause, refuse)),
                // Most likely the write's own error ended the transaction
                // (SQLite rolls back by itself on a full disk): that error
                // is the cause every write of it is told.
                Err(error) => {
                    tracing::debug!(%error, "rolling back a failed write's savepoint failed");
                    Err(Broken { cause, refuse })
                }
            }
        }
    }
}

/// Tells every write of a transaction that failed: one alone gets the
/// error itself, several share it.
fn answer_failed(mut written: Vec<Answer>, error: StoreError) {
    if written.len() == 1
        && let Some(answer) = written.pop()
    {
        answer(Err(error));
        return;
    }
    let shared = Arc::new(error);
    for answer in written {
        answer(Err(StoreError::Shared(Arc::clone(&shared))));
    }
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
