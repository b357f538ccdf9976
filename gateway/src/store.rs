//! Durable storage of notifications and subscriptions, on SQLite (embedded,
//! the default) or PostgreSQL (production, several gateway replicas).
//!
//! One implementation serves both backends through sqlx's `Any` driver: the
//! SQL is portable (`$n` parameters work on both) and the few differences
//! (pragmas, the cross-replica publish lock) are chosen by [`Backend`].
//!
//! Guarantees this module owns:
//! - a write returns success only after its transaction committed (SQLite
//!   runs in WAL mode with `synchronous=FULL`); every write runs on one
//!   dedicated writer connection, in an explicit transaction (`BEGIN
//!   IMMEDIATE` on SQLite), and that connection is closed after any error,
//!   so a failed commit can never leave it inside a transaction that
//!   swallows later writes (see `writer`);
//! - writes are detached from their caller: each is queued to the writer
//!   task, so a caller that is cancelled (an expired deadline, a dropped
//!   stream) never cuts a transaction short or releases the write lock while
//!   the database still holds its own;
//! - writes waiting at the same moment share one transaction and one commit
//!   (group commit, see `writer`); each is answered only after that commit,
//!   and one write's failure rolls back that write alone (a savepoint) unless
//!   it ends the whole transaction, when every write in it fails;
//! - sequences are assigned inside the writing transaction as one above
//!   both the persisted high-water mark and every stored row, while holding
//!   the publish lock: they are never reused, and become visible in order
//!   (a reader that has seen sequence `n` never later finds a new row below
//!   `n`);
//! - every row read is checked (`integrity`): its content against its hash,
//!   its routing columns against the decoded payload, its chain link against
//!   the row before; its routing columns are parsed into the domain types
//!   (`Envelope`) it is returned with. A row that fails any of this is never
//!   returned: it is logged, counted and passed over;
//! - a failing store is reported through [`Store::health`], and a small
//!   write ([`Store::probe`]) tells when it works again;
//! - a refused publish writes nothing.
//!
//! It never interprets content beyond the routing fields it verifies.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::watch;

use liandong_core::domain::{AgencyId, CaseRef, Envelope, Instant, StatutoryCopy};
use liandong_core::pb;

use crate::announcements;
use crate::cases::{CaseRecord, CaseRefusal};
use crate::supervision::Emitted;

pub mod activity;
pub mod agency_state;
pub mod audit;
pub mod cases;
pub mod copy;
pub mod fence;
pub mod integrity;
pub mod leases;
pub mod listen;
pub mod operations;
pub mod throttle;
pub mod verify;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

pub use integrity::Violation;
pub use throttle::LogThrottle;
pub use verify::{RowProblem, SequenceRange, VerifyReport};

use integrity::RawRow;
use writer::Writer;

/// Key of the PostgreSQL advisory lock that serialises publishers across
/// replicas (an arbitrary constant: "LD" in ASCII).
pub(crate) const PUBLISH_LOCK_KEY: i64 = 0x4c44;

/// How long a writer waits for a lock held by another connection before
/// the write fails (SQLite `busy_timeout`, PostgreSQL `lock_timeout`).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The write task ended without an answer (the runtime is shutting
    /// down); whether it committed is unknown.
    #[error("the write was interrupted")]
    Interrupted,
    /// The store was closed (the gateway is stopping); nothing was written.
    #[error("the store is closed")]
    Closed,
    /// The transaction this write shared with others failed for this
    /// reason: none of its writes was stored.
    #[error("{0}")]
    Shared(Arc<StoreError>),
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
    /// The backend of an open connection.
    pub(crate) fn of_connection(conn: &AnyConnection) -> Self {
        if conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }

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

    /// `sqlite` or `postgres`, as operators' views and metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Size of the read pool.
    pub max_connections: u32,
    /// How long a write waits for a lock another connection holds.
    pub lock_timeout: Duration,
}

impl StoreOptions {
    /// Defaults with a read pool of `max_connections`.
    pub fn with_pool(max_connections: u32) -> Self {
        Self {
            max_connections,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// A notification about to be stored: its validated envelope and its
/// encoded form.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The routing fields, stored as columns beside the payload.
    pub envelope: Envelope,
    /// SHA-256 of `payload`.
    pub content_hash: Vec<u8>,
    /// Encoded notification.
    pub payload: Vec<u8>,
    /// The address it was sent from, when known, for its audit row.
    pub peer: Option<std::net::SocketAddr>,
}

impl NewNotification {
    /// `payload`, the encoded notification `envelope` describes, with its
    /// content hash.
    pub fn new(envelope: Envelope, payload: Vec<u8>) -> Self {
        Self {
            envelope,
            content_hash: Sha256::digest(&payload).to_vec(),
            payload,
            peer: None,
        }
    }

    /// The same, sent from `peer`.
    pub fn from_peer(self, peer: Option<std::net::SocketAddr>) -> Self {
        Self { peer, ..self }
    }
}

/// A stored notification's receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Its sequence.
    pub sequence: u64,
    /// When the gateway stored it.
    pub received_at: Instant,
    /// The statutory copies stored with it (for a duplicate, those of the
    /// original).
    pub copies: Vec<StatutoryCopy>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored now.
    Stored(Receipt),
    /// Stored before with identical content: the original receipt.
    Duplicate(Receipt),
    /// The sender used this id before for different content; nothing stored.
    Conflict,
    /// The event does not fit its case's state; nothing stored.
    Refused(CaseRefusal),
    /// The announcement draft or answer does not fit (no such draft, not a
    /// co-signer, another text, already answered); nothing stored.
    AnnouncementRefused(crate::announcements::Refusal),
}

/// A notification as stored, its envelope parsed from the routing columns
/// after they were checked against the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNotification {
    /// Its sequence.
    pub sequence: u64,
    /// The routing fields.
    pub envelope: Envelope,
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
    /// What happened: an [`Action`](crate::audit::Action)'s name.
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
    /// The remote address of the connection, when known.
    pub peer: Option<std::net::SocketAddr>,
}

/// The gateway's database. Cloning is cheap: clones share the read pool,
/// the writer and the health state.
#[derive(Debug, Clone)]
pub struct Store {
    /// Connections for reads; never used for writes after migration.
    pool: AnyPool,
    backend: Backend,
    /// The one connection that writes, behind this process's write lock.
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The database URL, for connections outside the pool and the writer
    /// (the PostgreSQL listener, [`listen`]).
    url: String,
    writer: Writer,
    /// True while the last write (or probe) succeeded.
    healthy: watch::Sender<bool>,
    /// Rows withheld from readers because they failed their checks.
    integrity_failures: AtomicU64,
    /// Throttles the log lines of integrity failures, per sequence.
    integrity_log: LogThrottle,
    /// Throttles the log lines of failed writes, per cause.
    write_log: LogThrottle,
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

/// The routing columns of a case's notifications, read without their
/// payloads, in sequence order, and how far the read got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvelopeBatch {
    /// Sequence and parsed routing columns of each row; a row whose
    /// columns do not parse is left out (and logged), as a checked read
    /// would leave it out.
    pub rows: Vec<(u64, Envelope)>,
    /// The highest sequence examined; `None` when nothing above the
    /// starting point exists.
    pub through: Option<u64>,
}

/// Routing columns only: what a visibility decision needs, never the
/// payload.
const ENVELOPE_SELECT: &str = "SELECT sequence, sender, notification_id, case_ref, event, \
     confidentiality, region, recipients, copies FROM notifications";

/// Columns of a notification row, with the chain of the row just before
/// it (`prev_chain`, `prev_sequence`; NULL when that row is absent).
const CHECKED_SELECT: &str = "SELECT n.sequence, n.sender, n.notification_id, n.case_ref, n.event, \
     n.confidentiality, n.region, n.recipients, n.received_at, n.content_hash, n.payload, n.chain, \
     n.copies, p.sequence AS prev_sequence, p.chain AS prev_chain \
     FROM notifications n LEFT JOIN notifications p ON p.sequence = n.sequence - 1";

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

pub(crate) fn instant(micros: i64) -> Result<Instant, StoreError> {
    Instant::from_unix_micros(micros)
        .ok_or_else(|| StoreError::Corrupt("received_at out of range".into()))
}

impl Store {
    /// Connects, applies pending migrations and returns the store. For
    /// SQLite, the file (and its directory) is created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::with_pool(max_connections)).await
    }

    /// [`Store::connect`] with every option.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let connect_options = AnyConnectOptions::from_str(&url)?;
        let lock_timeout = options.lock_timeout;
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move { writer::configure(conn, backend, lock_timeout, false).await })
            })
            .connect_with(connect_options.clone())
            .await?;
        // A store migrated by the next version (replicas are upgraded one
        // at a time) holds migrations this binary does not know: they are
        // additive, so it runs on it, and says so.
        let mut migrator = migrator(backend);
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        let unknown = unknown_migrations(&pool, backend).await?;
        if !unknown.is_empty() {
            tracing::warn!(
                migrations = %describe_migrations(&unknown),
                "the database holds migrations this binary does not know (a newer version applied them); \
                 running on it, as schema changes are compatible across one version: upgrade this gateway"
            );
        }
        let store = Self {
            pool,
            backend,
            shared: Arc::new(Shared {
                url: connect_options.database_url.to_string(),
                writer: Writer::new(connect_options, backend, lock_timeout),
                healthy: watch::Sender::new(true),
                integrity_failures: AtomicU64::new(0),
                integrity_log: LogThrottle::default(),
                write_log: LogThrottle::default(),
            }),
        };
        store.chain_unchained_rows().await?;
        store.link_unchained_audit().await?;
        Ok(store)
    }

    /// Migrations applied to the database that this binary does not know
    /// (a newer version applied them; the store is used all the same).
    pub async fn unknown_migrations(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        unknown_migrations(&self.pool, self.backend).await
    }

    /// A connection of the read pool, for read-only queries of other
    /// modules (reports, supervision signals). Never used to write.
    pub async fn read_connection(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The read pool, for the crate's modules that own tables of their own.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Queues `op` now (writes run in the order they are queued) to run
    /// inside a write transaction on the writer connection, shared with
    /// the writes waiting at the same moment (group commit); dropping the
    /// returned future does not cancel it. Answers once that transaction
    /// committed, or with the error that kept `op` from being written:
    /// `op`'s own (its part alone rolled back), or the failed transaction's
    /// (the writer connection is then closed and a new one made for the
    /// next write).
    pub(crate) fn write<T, F>(
        &self,
        what: &'static str,
        op: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut AnyConnection,
            ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let started = std::time::Instant::now();
        let store = self.clone();
        // Health and metrics follow every write, waited for or not.
        let ended: writer::Ended = Box::new(move |result| {
            crate::ops::metrics::store_write(what, started.elapsed());
            store.after_write(what, result);
        });
        self.shared.writer.queue(op, ended)
    }

    /// Updates health and logs (throttled) after a write.
    fn after_write(&self, what: &'static str, result: Result<(), &StoreError>) {
        match result {
            Ok(_) => {
                let recovered = self.shared.healthy.send_if_modified(|healthy| {
                    let changed = !*healthy;
                    *healthy = true;
                    changed
                });
                if recovered
                    && let Some(count) = self.shared.write_log.occurrence("store writes work again")
                {
                    tracing::warn!(
                        store.write = what,
                        recoveries = count,
                        "store writes work again"
                    );
                }
            }
            Err(StoreError::Closed) => {}
            Err(error) => {
                self.shared.healthy.send_if_modified(|healthy| {
                    let changed = *healthy;
                    *healthy = false;
                    changed
                });
                // A disk that is nearly full fails large writes and takes
                // small ones, so health may flip often: the failure is
                // logged once per interval, with its count, either way.
                if let Some(count) = self.shared.write_log.occurrence(&error.to_string()) {
                    tracing::error!(store.write = what, %error, occurrences = count, "store write failed; the store is unhealthy until a write succeeds");
                }
            }
        }
    }

    /// True while the last write succeeded; changes when writes start
    /// failing and when they work again.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.shared.healthy.subscribe()
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        *self.shared.healthy.borrow()
    }

    /// A real write transaction the size of a notification: it writes
    /// [`PROBE_BYTES`] of incompressible bytes to `store_probe`, deletes
    /// them and stamps `store_state.probed_at`. It succeeds only when the
    /// store can commit new data, which reads alone do not show (a full
    /// disk still serves reads).
    pub async fn probe(&self) -> Result<(), StoreError> {
        let filler = probe_filler();
        self.write("probe", move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO store_probe (id, filler) VALUES (1, $1)")
                    .bind(&filler)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("DELETE FROM store_probe WHERE id = 1")
                    .execute(&mut *conn)
                    .await?;
                let stamped = sqlx::query("UPDATE store_state SET probed_at = $1 WHERE id = 1")
                    .bind(Instant::now().unix_micros())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if stamped != 1 {
                    return Err(StoreError::Corrupt(
                        "store_state has no row: the high-water mark is lost".into(),
                    ));
                }
                Ok(())
            })
        })
        .await
    }

    /// How many times a row was withheld from a reader because it failed
    /// its integrity check, since this process started.
    pub fn integrity_failures(&self) -> u64 {
        self.shared.integrity_failures.load(Ordering::Relaxed)
    }

    /// Stores a notification unless the sender already used its id: then the
    /// original receipt (same content) or a conflict (other content). No
    /// deadline is started or stopped: see [`Store::publish_supervised`].
    pub async fn publish(&self, new: &NewNotification) -> Result<PublishOutcome, StoreError> {
        let new = new.clone();
        let backend = self.backend;
        self.write("publish", move |conn| {
            Box::pin(async move { Ok(publish_in(conn, backend, &new, None).await?.0) })
        })
        .await
    }

    /// [`Store::publish`] under the mechanism's rules in `context`, in the
    /// same transaction as the notification: deadlines started, stopped and
    /// extended; announcement drafts and answers checked and tracked. Also
    /// returns what the publish made the gateway emit at once (a release
    /// after an announcement's last approval), for the caller to wake its
    /// subscribers.
    ///
    /// The write is queued when this is called, not when the future is
    /// first polled: publishes queued one after the other are stored in
    /// that order (a pipelined `PublishStream` relies on it).
    pub fn publish_supervised(
        &self,
        new: &NewNotification,
        context: crate::supervision::Context,
    ) -> impl Future<Output = Result<(PublishOutcome, Vec<Emitted>), StoreError>> + Send + use<>
    {
        let new = new.clone();
        let backend = self.backend;
        let (timer, started) = (context.timer.clone(), context.deadline_started.clone());
        let outcome = self.write("publish", move |conn| {
            Box::pin(async move { publish_in(conn, backend, &new, Some(&context)).await })
        });
        async move {
            let outcome = outcome.await;
            // Only now is a clock the transaction started visible to the
            // timer's read. (Set by an attempt that then failed: a spurious
            // wake-up; the timer finds nothing new and sleeps again.)
            if outcome.is_ok() && started.load(Ordering::Acquire) {
                timer.notify_one();
            }
            outcome
        }
    }

    /// Up to `limit` notifications with a sequence above `after`, in order,
    /// each checked; rows that fail are left out but covered by `through`.
    pub async fn read_after(&self, after: u64, limit: u32) -> Result<ReadBatch, StoreError> {
        let sql = format!("{CHECKED_SELECT} WHERE n.sequence > $1 ORDER BY n.sequence LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(to_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        self.batch(&rows).await
    }

    /// The checked rows of a read, and the highest sequence it covered.
    async fn batch(&self, rows: &[sqlx::any::AnyRow]) -> Result<ReadBatch, StoreError> {
        let through = match rows.last() {
            Some(row) => Some(to_u64(row.try_get("sequence")?, "sequence")?),
            None => None,
        };
        let rows = self.checked_rows(rows).await?;
        Ok(ReadBatch { rows, through })
    }

    /// The case `case_ref` as the projection holds it, if the gateway
    /// knows such a case.
    pub async fn case(&self, case_ref: &str) -> Result<Option<CaseRecord>, StoreError> {
        cases::read(&self.pool, case_ref).await
    }

    /// Every case event of `case_ref`, with the state it found and left,
    /// oldest first.
    pub async fn case_history(&self, case_ref: &str) -> Result<Vec<cases::Transition>, StoreError> {
        cases::history(&self.pool, case_ref).await
    }

    /// Up to `limit` envelopes of a case's notifications with a sequence
    /// above `after`, in order, read from the routing columns alone: no
    /// payload is read. Whoever reads the rows it decides to disclose
    /// reads them with [`notifications`](Self::notifications), checked.
    pub async fn case_envelopes_after(
        &self,
        case_ref: &str,
        after: u64,
        limit: u32,
    ) -> Result<EnvelopeBatch, StoreError> {
        let sql = format!(
            "{ENVELOPE_SELECT} WHERE case_ref = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(case_ref)
            .bind(to_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut batch = EnvelopeBatch::default();
        for row in &rows {
            let sequence = to_u64(row.try_get("sequence")?, "sequence")?;
            batch.through = Some(sequence);
            let routing = integrity::RoutingColumns {
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
                Ok(envelope) => batch.rows.push((sequence, envelope)),
                Err(violation) => self.withheld(sequence, &violation),
            }
        }
        Ok(batch)
    }

    /// The notifications with the given sequences that pass their checks,
    /// in sequence order.
    pub async fn notifications(
        &self,
        sequences: &[u64],
    ) -> Result<Vec<StoredNotification>, StoreError> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=sequences.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("{CHECKED_SELECT} WHERE n.sequence IN ({placeholders}) ORDER BY n.sequence");
        let mut query = sqlx::query(&sql);
        for sequence in sequences {
            query = query.bind(to_i64(*sequence));
        }
        let rows = query.fetch_all(&self.pool).await?;
        self.checked_rows(&rows).await
    }

    /// Every notification of a case that passes its checks, in order.
    pub async fn case_timeline(
        &self,
        case_ref: &str,
    ) -> Result<Vec<StoredNotification>, StoreError> {
        let sql = format!("{CHECKED_SELECT} WHERE n.case_ref = $1 ORDER BY n.sequence");
        let rows = sqlx::query(&sql)
            .bind(case_ref)
            .fetch_all(&self.pool)
            .await?;
        self.checked_rows(&rows).await
    }

    /// The agency that published the case's first `CASE_TRANSFERRED` (the
    /// first such row that passes its checks), if any.
    pub async fn case_transferor(
        &self,
        case_ref: &CaseRef,
    ) -> Result<Option<AgencyId>, StoreError> {
        let sql =
            format!("{CHECKED_SELECT} WHERE n.case_ref = $1 AND n.event = $2 ORDER BY n.sequence");
        let rows = sqlx::query(&sql)
            .bind(case_ref.as_str())
            .bind(i64::from(pb::EventType::CaseTransferred as i32))
            .fetch_all(&self.pool)
            .await?;
        Ok(self
            .checked_rows(&rows)
            .await?
            .into_iter()
            .next()
            .map(|row| row.envelope.sender))
    }

    /// The rows that pass their checks; each failure is logged (throttled
    /// per sequence) and counted.
    async fn checked_rows(
        &self,
        rows: &[sqlx::any::AnyRow],
    ) -> Result<Vec<StoredNotification>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Read after the rows: a committed row is never above the mark
        // (both change in one transaction), so a row above it was put
        // there behind the gateway's back.
        let high_water = self.high_water().await?;
        let mut served = Vec::with_capacity(rows.len());
        for row in rows {
            let raw = raw_row(row)?;
            let prev_sequence: Option<i64> = row.try_get("prev_sequence")?;
            let prev_chain: Option<Vec<u8>> = row.try_get("prev_chain")?;
            let previous = if raw.sequence == 1 {
                Some(None)
            } else if prev_sequence.is_some() && prev_chain.is_some() {
                Some(prev_chain.as_deref())
            } else {
                None
            };
            let checked = if high_water.is_some_and(|mark| raw.sequence > mark) {
                Err(Violation::AboveHighWater)
            } else {
                integrity::verify_content(&raw).and_then(|verified| {
                    integrity::verify_link(&raw, previous)?;
                    Ok(verified)
                })
            };
            match checked {
                Ok(envelope) => served.push(StoredNotification {
                    sequence: raw.sequence,
                    envelope,
                    received_at: instant(raw.received_at)?,
                    payload: raw.payload,
                }),
                Err(violation) => self.withheld(raw.sequence, &violation),
            }
        }
        Ok(served)
    }

    fn withheld(&self, sequence: u64, violation: &Violation) {
        self.shared
            .integrity_failures
            .fetch_add(1, Ordering::Relaxed);
        if let Some(count) = self.shared.integrity_log.occurrence(&format!("{sequence}")) {
            tracing::error!(
                notification.sequence = sequence,
                %violation,
                occurrences = count,
                "stored notification failed its integrity check; not served (run verify-store)"
            );
        }
    }

    /// The persisted high-water mark, `None` when its row is missing.
    async fn high_water(&self) -> Result<Option<u64>, StoreError> {
        let mark: Option<i64> =
            sqlx::query_scalar("SELECT high_water FROM store_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        mark.map(|m| to_u64(m, "high_water")).transpose()
    }

    /// The highest sequence ever assigned (the high-water mark, or a higher
    /// stored row), 0 when none was.
    pub async fn latest_sequence(&self) -> Result<u64, StoreError> {
        let latest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM notifications")
                .fetch_one(&self.pool)
                .await?;
        let latest = to_u64(latest, "sequence")?;
        Ok(latest.max(self.high_water().await?.unwrap_or(0)))
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
        let (owner, name, filter) = (owner.to_owned(), name.to_owned(), filter.to_vec());
        self.write("open_subscription", move |conn| {
            Box::pin(async move {
                let now = Instant::now().unix_micros();
                let inserted = sqlx::query(
                    "INSERT INTO subscriptions (owner, name, filter, acked_through, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (owner, name) DO NOTHING",
                )
                .bind(&owner)
                .bind(&name)
                .bind(&filter)
                .bind(to_i64(start_after))
                .bind(now)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                let row = sqlx::query(
                    "SELECT filter, acked_through FROM subscriptions WHERE owner = $1 AND name = $2",
                )
                .bind(&owner)
                .bind(&name)
                .fetch_one(&mut *conn)
                .await?;
                Ok(SubscriptionRecord {
                    filter: row.try_get("filter")?,
                    acked_through: to_u64(row.try_get("acked_through")?, "acked_through")?,
                    created: inserted == 1,
                })
            })
        })
        .await
    }

    /// Moves a subscription's cursor forward to `acked_through` (never
    /// back). When it moves, an `ACK` audit row (the subscription, from →
    /// through, `peer`) is written in the same transaction.
    pub async fn advance_subscription(
        &self,
        owner: &str,
        name: &str,
        acked_through: u64,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), StoreError> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        let backend = self.backend;
        self.write("advance_subscription", move |conn| {
            Box::pin(async move {
                let from: Option<i64> = sqlx::query_scalar(
                    "SELECT acked_through FROM subscriptions WHERE owner = $1 AND name = $2",
                )
                .bind(&owner)
                .bind(&name)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(from) = from.map(|from| to_u64(from, "acked_through")).transpose()? else {
                    return Ok(());
                };
                if from >= acked_through {
                    return Ok(());
                }
                let now = Instant::now().unix_micros();
                let moved = sqlx::query(
                    "UPDATE subscriptions SET acked_through = $1, updated_at = $2 \
                     WHERE owner = $3 AND name = $4 AND acked_through < $1",
                )
                .bind(to_i64(acked_through))
                .bind(now)
                .bind(&owner)
                .bind(&name)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if moved == 0 {
                    return Ok(());
                }
                let entry = crate::audit::ack(&owner, &name, from, acked_through, peer);
                audit::append_in(conn, backend, &[entry], now).await
            })
        })
        .await
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
        let entries = entries.to_vec();
        let backend = self.backend;
        self.write("append_audit", move |conn| {
            Box::pin(async move {
                audit::append_in(conn, backend, &entries, Instant::now().unix_micros()).await
            })
        })
        .await
    }

    /// The audit log, oldest first.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT agency, action, sequence, sender, notification_id, decision, reason, peer FROM audit_log ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let action: String = row.try_get("action")?;
                let sequence: Option<i64> = row.try_get("sequence")?;
                let peer: String = row.try_get("peer")?;
                Ok(AuditEntry {
                    agency: row.try_get("agency")?,
                    action: crate::audit::Action::parse(&action)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("unknown audit action {action:?}"))
                        })?
                        .as_str(),
                    sequence: sequence.map(|s| to_u64(s, "sequence")).transpose()?,
                    sender: row.try_get("sender")?,
                    notification_id: row.try_get("notification_id")?,
                    decision: row.try_get("decision")?,
                    reason: row.try_get("reason")?,
                    peer: peer.parse().ok(),
                })
            })
            .collect()
    }

    /// Scans every stored notification in sequence order and reports what
    /// was changed, is missing or is out of order. `progress` is told the
    /// number of rows to scan, then each row scanned.
    pub async fn verify(
        &self,
        progress: &dyn verify::Progress,
    ) -> Result<VerifyReport, StoreError> {
        let mut conn = self.pool.acquire().await?;
        verify::scan(&mut conn, 0, progress).await
    }

    /// [`Store::verify`] of the newest `rows` stored sequences, and of
    /// everything between them and the high-water mark: the start-up
    /// check. (Counted from the newest row, not from the mark, so that a
    /// large fence above the rows does not leave them unchecked.)
    pub async fn verify_tail(&self, rows: u64) -> Result<VerifyReport, StoreError> {
        let newest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM notifications")
                .fetch_one(&self.pool)
                .await?;
        let from = to_u64(newest, "sequence")?.saturating_sub(rows);
        let mut conn = self.pool.acquire().await?;
        verify::scan(&mut conn, from, &verify::NoProgress).await
    }

    /// Gives rows stored before chain links existed their link, once: only
    /// while no row has a link and the chain head is unset (the first start
    /// after the migration that added them). Later, a row without a link
    /// is reported, never silently repaired.
    async fn chain_unchained_rows(&self) -> Result<(), StoreError> {
        let unchained: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM notifications WHERE chain IS NULL \
             AND NOT EXISTS (SELECT 1 FROM notifications WHERE chain IS NOT NULL) \
             AND EXISTS (SELECT 1 FROM store_state WHERE id = 1 AND last_chain IS NULL)",
        )
        .fetch_one(&self.pool)
        .await?;
        if unchained == 0 {
            return Ok(());
        }
        tracing::warn!(
            rows = unchained,
            "linking notifications stored before the hash chain existed"
        );
        self.write("chain_unchained_rows", |conn| {
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT sequence, received_at, content_hash, copies FROM notifications ORDER BY sequence",
                )
                .fetch_all(&mut *conn)
                .await?;
                let mut previous: Option<Vec<u8>> = None;
                let mut last_sequence = 0;
                for row in &rows {
                    let sequence: i64 = row.try_get("sequence")?;
                    let received_at: i64 = row.try_get("received_at")?;
                    let hash: Vec<u8> = row.try_get("content_hash")?;
                    let copies: String = row.try_get("copies")?;
                    let link = integrity::row_link(
                        previous.as_deref(),
                        to_u64(sequence, "sequence")?,
                        received_at,
                        &hash,
                        &copies,
                    );
                    sqlx::query("UPDATE notifications SET chain = $1 WHERE sequence = $2")
                        .bind(&link)
                        .bind(sequence)
                        .execute(&mut *conn)
                        .await?;
                    previous = Some(link);
                    last_sequence = sequence;
                }
                sqlx::query(
                    "UPDATE store_state SET last_chain = $1 WHERE id = 1 AND high_water = $2",
                )
                .bind(previous)
                .bind(last_sequence)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Store transactions committed and the writes they carried since this
    /// store was opened: more writes than commits when writes shared them.
    pub fn write_counts(&self) -> (u64, u64) {
        self.shared.writer.counts()
    }

    /// Writes queued for the writer and not yet in a transaction.
    pub fn writes_waiting(&self) -> u64 {
        self.shared.writer.waiting()
    }

    /// Why the gateway must not serve this store when a copy into it by
    /// `migrate-store` started and never finished (killed, or refused
    /// half-way): its rows are not a whole store. `None` otherwise.
    pub async fn unfinished_copy_refusal(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(copy::unfinished(&mut conn).await?.map(|(source, started_at)| {
            let started = Instant::from_unix_micros(started_at)
                .map_or_else(|| started_at.to_string(), |at| at.to_string());
            format!(
                "this database is the target of a copy from {source} (migrate-store, started {started}) that never finished: it is not a complete store and is not served. It holds none of the copied rows: run migrate-store again, into it or into a new, empty database"
            )
        }))
    }

    /// Closes the pool and the writer, after the write in progress.
    pub async fn close(&self) {
        self.shared.writer.close().await;
        self.pool.close().await;
    }

    /// Test-only hook: statements run on every new writer connection (for
    /// instance `PRAGMA max_page_count`, to make SQLite's disk "full" for
    /// the writer alone). Closes the current writer so the next write
    /// connects with them.
    #[cfg(test)]
    pub(crate) async fn set_writer_setup(&self, statements: Vec<String>) {
        self.shared.writer.set_setup(statements).await;
    }
}

/// Bytes a health probe writes: as much as a typical large notification.
pub const PROBE_BYTES: usize = 32 * 1024;

/// Bytes that neither SQLite nor PostgreSQL can store in less space than
/// their length (a SHA-256 chain, seeded by the clock).
fn probe_filler() -> Vec<u8> {
    let mut block = Sha256::digest(Instant::now().unix_micros().to_be_bytes());
    let mut filler = Vec::with_capacity(PROBE_BYTES);
    while filler.len() < PROBE_BYTES {
        filler.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    filler
}

/// The publish transaction's body: idempotency check, then the insert
/// ([`insert_in`]) and, with a supervision context, the deadlines the
/// notification starts, stops or extends, and last its `PUBLISHED` audit
/// row — all in the one transaction: a publish whose audit row cannot be
/// written is not stored.
async fn publish_in(
    conn: &mut AnyConnection,
    backend: Backend,
    new: &NewNotification,
    supervision: Option<&crate::supervision::Context>,
) -> Result<(PublishOutcome, Vec<Emitted>), StoreError> {
    lock_publish(conn, backend).await?;
    let existing = sqlx::query(
        "SELECT sequence, received_at, content_hash, copies FROM notifications \
         WHERE sender = $1 AND notification_id = $2",
    )
    .bind(new.envelope.sender.as_str())
    .bind(new.envelope.id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = existing {
        let hash: Vec<u8> = row.try_get("content_hash")?;
        if hash != new.content_hash {
            return Ok((PublishOutcome::Conflict, Vec::new()));
        }
        let sequence = to_u64(row.try_get("sequence")?, "sequence")?;
        let copies: String = row.try_get("copies")?;
        let copies = integrity::parse_copies(&copies).ok_or_else(|| {
            StoreError::Corrupt(format!("the copies of sequence {sequence} do not parse"))
        })?;
        return Ok((
            PublishOutcome::Duplicate(Receipt {
                sequence,
                received_at: instant(row.try_get("received_at")?)?,
                copies,
            }),
            Vec::new(),
        ));
    }
    // The case's state decides before anything is written: a refusal
    // leaves the transaction empty.
    let ruling = match cases::rule_in(conn, backend, &new.envelope).await? {
        cases::Ruling::Refused(refusal) => {
            return Ok((PublishOutcome::Refused(refusal), Vec::new()));
        }
        cases::Ruling::NotCaseEvent => None,
        cases::Ruling::Accepted(accepted) => Some(accepted),
    };
    // So do the announcement rules (a draft's co-signers, an answer's
    // draft); they need the registry, which only a supervised publish has.
    let announcement = match supervision {
        Some(context) => match announcements::check_in(conn, &context.rules.registry, new).await? {
            Ok(checked) => Some(checked),
            Err(refusal) => {
                return Ok((PublishOutcome::AnnouncementRefused(refusal), Vec::new()));
            }
        },
        None => None,
    };
    let receipt = insert_in(conn, new).await?;
    if let Some(accepted) = ruling {
        let change = cases::record_in(conn, &new.envelope, accepted, &receipt).await?;
        tracing::debug!(
            "case.ref" = %change.case_ref,
            case.event = %change.event,
            case.state = crate::cases::machine::state_name(change.to),
            notification.sequence = change.sequence,
            "case moved"
        );
    }
    let mut emitted = Vec::new();
    if let Some(context) = supervision {
        crate::supervision::deadlines::on_publish(conn, context, new, &receipt).await?;
        if let Some(checked) = &announcement {
            let now = receipt.received_at;
            for release in
                announcements::record_in(conn, new, checked, receipt.sequence, now).await?
            {
                emitted.push(announcements::release_in(conn, &context.key, &release, now).await?);
            }
        }
    }
    let entry = crate::audit::published(&new.envelope, receipt.sequence, new.peer);
    audit::append_in(conn, backend, &[entry], receipt.received_at.unix_micros()).await?;
    Ok((PublishOutcome::Stored(receipt), emitted))
}

/// Takes the publish lock inside the open transaction: on PostgreSQL an
/// advisory transaction lock shared by every replica (on SQLite, `BEGIN
/// IMMEDIATE` already holds the database's write lock).
pub(crate) async fn lock_publish(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PUBLISH_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The notification's insert and the new high-water mark and chain head
/// (`$1` is the sequence, `$12` the chain link). On PostgreSQL it also
/// tells the other replicas ([`listen::STORED`]); PostgreSQL delivers that
/// at commit, once per transaction whatever the number of rows.
const INSERT_NOTIFICATION_SQLITE: &str = "INSERT INTO notifications (sequence, sender, \
     notification_id, case_ref, event, confidentiality, region, recipients, received_at, \
     content_hash, payload, chain, copies) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13); \
     UPDATE store_state SET high_water = $1, last_chain = $12 WHERE id = 1";
const INSERT_NOTIFICATION_POSTGRES: &str = "WITH stored AS (INSERT INTO notifications (sequence, \
     sender, notification_id, case_ref, event, confidentiality, region, recipients, received_at, \
     content_hash, payload, chain, copies) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING sequence) \
     UPDATE store_state SET high_water = (SELECT sequence FROM stored), last_chain = $12 \
     WHERE id = 1 RETURNING pg_notify('liandong_stored_' || left(md5(current_schema()), 16), '')::text";

/// Inserts `new` as the next notification inside the open transaction,
/// whose caller holds the publish lock ([`lock_publish`]): sequence above
/// the high-water mark and every stored row, chain link, new mark. It
/// commits with whatever else the transaction writes.
pub(crate) async fn insert_in(
    conn: &mut AnyConnection,
    new: &NewNotification,
) -> Result<Receipt, StoreError> {
    // The mark, the chain's head and the highest stored row in one round
    // trip.
    let state = sqlx::query(
        "SELECT high_water, last_chain, \
         (SELECT COALESCE(MAX(sequence), 0) FROM notifications) AS max_sequence \
         FROM store_state WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| {
        StoreError::Corrupt("store_state has no row: the high-water mark is lost".into())
    })?;
    let high_water: i64 = state.try_get("high_water")?;
    let last_chain: Option<Vec<u8>> = state.try_get("last_chain")?;
    let max: i64 = state.try_get("max_sequence")?;
    let next = high_water.max(max) + 1;
    let sequence = to_u64(next, "sequence")?;
    let received_at = Instant::now();
    let copies = integrity::copies_column(&new.envelope.copies);
    let chain = integrity::row_link(
        last_chain.as_deref(),
        sequence,
        received_at.unix_micros(),
        &new.content_hash,
        &copies,
    );
    // The row and the new mark in one round trip: two statements on
    // SQLite, the insert as a data-modifying CTE on PostgreSQL.
    let (sql, changes) = match Backend::of_connection(conn) {
        Backend::Sqlite => (INSERT_NOTIFICATION_SQLITE, 2),
        Backend::Postgres => (INSERT_NOTIFICATION_POSTGRES, 1),
    };
    let changed = sqlx::query(sql)
        .bind(next)
        .bind(new.envelope.sender.as_str())
        .bind(new.envelope.id.as_str())
        .bind(new.envelope.case_ref.as_str())
        .bind(i64::from(new.envelope.event.to_wire() as i32))
        .bind(i64::from(new.envelope.confidentiality.to_wire() as i32))
        .bind(new.envelope.region.as_str())
        .bind(integrity::recipients_column(&new.envelope.recipients))
        .bind(received_at.unix_micros())
        .bind(&new.content_hash)
        .bind(&new.payload)
        .bind(&chain)
        .bind(&copies)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if changed != changes {
        return Err(StoreError::Corrupt(
            "store_state has no row: the high-water mark is lost".into(),
        ));
    }
    Ok(Receipt {
        sequence,
        received_at,
        copies: new.envelope.copies.clone(),
    })
}

/// The columns of a notification row, unchecked.
pub(crate) fn raw_row(row: &sqlx::any::AnyRow) -> Result<RawRow, StoreError> {
    Ok(RawRow {
        sequence: to_u64(row.try_get("sequence")?, "sequence")?,
        sender: row.try_get("sender")?,
        notification_id: row.try_get("notification_id")?,
        case_ref: row.try_get("case_ref")?,
        event: row.try_get("event")?,
        confidentiality: row.try_get("confidentiality")?,
        region: row.try_get("region")?,
        recipients: row.try_get("recipients")?,
        received_at: row.try_get("received_at")?,
        content_hash: row.try_get("content_hash")?,
        payload: row.try_get("payload")?,
        chain: row.try_get("chain")?,
        copies: row.try_get("copies")?,
    })
}

/// The migrations this binary embeds for `backend` (its schema).
pub fn migrator(backend: Backend) -> sqlx::migrate::Migrator {
    match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    }
}

/// A migration recorded in a database's `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its version (the file's number).
    pub version: i64,
    /// Its description (the file's name after the number).
    pub description: String,
    /// Whether it completed.
    pub success: bool,
    /// The SHA-384 of its SQL, as sqlx records it.
    pub checksum: Vec<u8>,
}

/// Every migration recorded in the database `conn` reads, by version.
pub async fn applied_migrations<'c, E>(executor: E) -> Result<Vec<AppliedMigration>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT version, description, CASE WHEN success THEN 1 ELSE 0 END AS ok, checksum \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            let ok: i32 = row.try_get("ok")?;
            Ok(AppliedMigration {
                version: row.try_get("version")?,
                description: row.try_get("description")?,
                success: ok != 0,
                checksum: row.try_get("checksum")?,
            })
        })
        .collect()
}

/// The migrations applied to the database that this binary does not
/// embed (a newer version applied them).
async fn unknown_migrations(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Vec<AppliedMigration>, StoreError> {
    let embedded = migrator(backend);
    Ok(applied_migrations(pool)
        .await?
        .into_iter()
        .filter(|applied| embedded.iter().all(|m| m.version != applied.version))
        .collect())
}

/// `0014 (subscription notes), 0015 (…)`: versions with their descriptions.
pub fn describe_migrations(migrations: &[AppliedMigration]) -> String {
    migrations
        .iter()
        .map(|m| format!("{:04} ({})", m.version, m.description))
        .collect::<Vec<_>>()
        .join(", ")
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
