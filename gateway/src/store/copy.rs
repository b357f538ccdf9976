//! `migrate-store`: copies a whole store from one database to another,
//! SQLite to PostgreSQL or back, row for row.
//!
//! The source is opened read-only (a SQLite file with `mode=ro`, a
//! PostgreSQL transaction `READ ONLY`) and never migrated or written: its
//! schema must be exactly this binary's. Every durable table is read in
//! key order inside one snapshot (a single read transaction on the
//! source), so the copy is consistent even if something writes to the
//! source meanwhile; a source that changed by the end is refused, since
//! what changed would be lost.
//!
//! The target is migrated first (it must be empty, or a schema just
//! migrated with no rows), then marked as an unfinished copy
//! (`store_copies`, committed), and every row goes in inside ONE
//! transaction that also completes the mark. Before that transaction
//! commits, the rows are read back and compared with the source's (a
//! digest per table), and the same checks as `verify-store` and `audit
//! verify` run on them; any difference rolls it back. A copy that fails
//! half-way — the target refuses a row, the process is killed — leaves the
//! mark unfinished and no copied row, and the gateway refuses to serve a
//! store with an unfinished copy.
//!
//! Transient tables are not copied: `store_probe` (always empty between
//! probes), `store_copies` (it describes the database it is in) and
//! `_sqlx_migrations` (the target's own schema). Sequences of PostgreSQL
//! identity and serial columns are set past the copied ids.
//!
//! It never logs row content; errors name tables, counts and sequences.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection, Row};

use liandong_core::domain::Instant;

use super::audit::{AuditReport, AuditVerifyOptions, Walk};
use super::verify::{self, VerifyReport};
use super::{
    AppliedMigration, Backend, StoreError, applied_migrations, describe_migrations, migrator,
    prepare_sqlite_url, writer,
};

/// What a column holds, as both backends store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `INTEGER` / `BIGINT` (or PostgreSQL `INTEGER`).
    Int,
    /// `TEXT`.
    Text,
    /// `BLOB` / `BYTEA`.
    Blob,
}

/// A durable table and how it is copied.
#[derive(Debug)]
struct Table {
    name: &'static str,
    /// Its primary key, in order: the copy reads in this order.
    key: &'static [&'static str],
    /// Every column, key columns included.
    columns: &'static [(&'static str, Kind)],
    /// Rows read at a time (fewer for the table with payloads).
    page: usize,
    /// The migrations put one row in it: the target's is replaced.
    singleton: bool,
    /// A PostgreSQL `GENERATED ALWAYS` identity: explicit ids need
    /// `OVERRIDING SYSTEM VALUE`.
    always_identity: bool,
}

use Kind::{Blob, Int, Text};

/// Every durable table, in the order copied (the audit tables last).
const TABLES: &[Table] = &[
    Table {
        name: "notifications",
        key: &["sequence"],
        columns: &[
            ("sequence", Int),
            ("sender", Text),
            ("notification_id", Text),
            ("case_ref", Text),
            ("event", Int),
            ("confidentiality", Int),
            ("region", Text),
            ("recipients", Text),
            ("received_at", Int),
            ("content_hash", Blob),
            ("payload", Blob),
            ("chain", Blob),
            ("copies", Text),
        ],
        page: 50,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "store_state",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("high_water", Int),
            ("last_chain", Blob),
            ("probed_at", Int),
        ],
        page: 10,
        singleton: true,
        always_identity: false,
    },
    Table {
        name: "subscriptions",
        key: &["owner", "name"],
        columns: &[
            ("owner", Text),
            ("name", Text),
            ("filter", Blob),
            ("acked_through", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "cases",
        key: &["case_ref"],
        columns: &[
            ("case_ref", Text),
            ("state", Int),
            ("region", Text),
            ("agencies", Text),
            ("opened_at", Int),
            ("state_since", Int),
            ("last_sequence", Int),
            ("transferor", Text),
            ("police", Text),
            ("penalized_at", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "case_transitions",
        key: &["sequence"],
        columns: &[
            ("sequence", Int),
            ("case_ref", Text),
            ("event", Int),
            ("from_state", Int),
            ("to_state", Int),
            ("at", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "deadlines",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("rule", Text),
            ("case_ref", Text),
            ("started_sequence", Int),
            ("started_at", Int),
            ("due_at", Int),
            ("late_agency", Text),
            ("supervisor", Text),
            ("breached_at", Int),
            ("alert_sequence", Int),
            ("stopped_sequence", Int),
            ("stopped_at", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "announcements",
        key: &["sequence"],
        columns: &[
            ("sequence", Int),
            ("sender", Text),
            ("notification_id", Text),
            ("case_ref", Text),
            ("cosigners", Text),
            ("digest", Text),
            ("release_at", Int),
            ("simultaneous", Int),
            ("state", Text),
            ("released_at", Int),
            ("release_sequence", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "announcement_answers",
        key: &["draft_sequence", "agency"],
        columns: &[
            ("draft_sequence", Int),
            ("agency", Text),
            ("approved", Int),
            ("sequence", Int),
            ("notification_id", Text),
            ("digest", Text),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "report_runs",
        key: &["period", "reader"],
        columns: &[("period", Text), ("reader", Text), ("sequence", Int)],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "agency_state",
        key: &["agency"],
        columns: &[
            ("agency", Text),
            ("reason", Text),
            ("disabled_by", Text),
            ("disabled_at", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "sequence_fences",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("first_sequence", Int),
            ("last_sequence", Int),
            ("at", Int),
            ("reason", Text),
            ("audit_id", Int),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "audit_log",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("at", Int),
            ("agency", Text),
            ("action", Text),
            ("sequence", Int),
            ("sender", Text),
            ("notification_id", Text),
            ("decision", Text),
            ("reason", Text),
            ("peer", Text),
            ("prev_hash", Blob),
            ("hash", Blob),
        ],
        page: 500,
        singleton: false,
        always_identity: false,
    },
    Table {
        name: "audit_state",
        key: &["id"],
        columns: &[("id", Int), ("last_id", Int), ("last_hash", Blob)],
        page: 10,
        singleton: true,
        always_identity: false,
    },
    Table {
        name: "audit_checkpoints",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("row_id", Int),
            ("row_hash", Blob),
            ("at", Int),
            ("key_id", Text),
            ("signature", Blob),
        ],
        page: 500,
        singleton: false,
        always_identity: true,
    },
];

/// Tables of the schema that are not copied, and why.
pub const NOT_COPIED: &[(&str, &str)] = &[
    (
        "store_probe",
        "the health probe's scratch row, empty between probes",
    ),
    (
        "store_copies",
        "the copies made into a database describe that database",
    ),
    (
        "_sqlx_migrations",
        "the target's own schema, migrated first",
    ),
    (
        "subscription_leases",
        "which gateway process serves a subscription now: nobody serves the copy yet",
    ),
];

/// The names of the tables copied, in order.
pub fn copied_tables() -> Vec<&'static str> {
    TABLES.iter().map(|table| table.name).collect()
}

/// Most bound parameters in one insert.
const MAX_PARAMETERS: usize = 2000;

/// What to copy where.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The source database URL (`sqlite://FILE` or `postgres://…`).
    pub from: String,
    /// The target database URL.
    pub to: String,
    /// The gateway's public key, to check the audit checkpoints' signatures
    /// on the target (unchecked without it; they are compared byte for
    /// byte with the source's all the same).
    pub public_key: Option<[u8; 32]>,
    /// Commit a copy whose checks find exactly the problems the source's
    /// find (a damaged store moved as it is); without it such a copy is
    /// refused.
    pub allow_integrity_failures: bool,
    /// How long a write on the target waits for a lock another connection
    /// holds.
    pub lock_timeout: Duration,
}

/// Told how far a copy got (a progress bar, or plain lines).
pub trait CopyProgress: Sync {
    /// A step begins: `what` (`copying notifications`, `comparing
    /// audit_log`, `verifying notifications` …) over `rows` rows.
    fn step(&self, what: &str, rows: u64);
    /// `rows` more rows of the step are done.
    fn advance(&self, rows: u64);
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy)]
pub struct NoCopyProgress;

impl CopyProgress for NoCopyProgress {
    fn step(&self, _what: &str, _rows: u64) {}
    fn advance(&self, _rows: u64) {}
}

/// One table of a finished copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    /// The table.
    pub table: String,
    /// Rows copied.
    pub rows: u64,
    /// SHA-256 (hex) over the rows in key order, the same on both sides.
    pub sha256: String,
}

/// What a finished copy did.
#[derive(Debug, Clone, Serialize)]
pub struct CopySummary {
    /// The source, without a password.
    pub from: String,
    /// The target, without a password.
    pub to: String,
    /// Each table copied, in order.
    pub tables: Vec<TableSummary>,
    /// Rows copied in all.
    pub rows: u64,
    /// The high-water mark copied: the target's next notification gets
    /// one above it.
    pub high_water: Option<u64>,
    /// The notification chain's head (hex).
    pub chain_head: Option<String>,
    /// The audit chain's last row.
    pub audit_last_id: Option<u64>,
    /// Its hash (hex).
    pub audit_head: Option<String>,
    /// The target's `verify-store` summary.
    pub verify_store: String,
    /// The target's `audit verify` summary.
    pub audit_verify: String,
    /// True when the copy was committed with integrity problems the source
    /// has too (`--allow-integrity-failures`).
    pub integrity_failures_copied: bool,
    /// How long the copy took.
    pub seconds: f64,
}

/// Why a copy was refused or failed; the target holds no copied row.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The command cannot work as given (a URL, the same store twice).
    #[error("{0}")]
    Usage(String),
    /// The source database does not exist.
    #[error("{0}")]
    SourceMissing(String),
    /// The target already holds data.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// The source is not a Liandong store, or a schema is not this
    /// binary's.
    #[error("{0}")]
    Schema(String),
    /// The rows read back from the target differ from the source's, or the
    /// target fails its checks.
    #[error("{0}")]
    Check(String),
    /// The source changed during the copy (a gateway still writes to it).
    #[error("{0}")]
    SourceChanged(String),
    /// A database failed or could not be reached.
    #[error("{which}: {error}")]
    Database {
        /// `source` or `target`.
        which: &'static str,
        /// What failed.
        error: String,
    },
}

impl CopyError {
    /// The process exit code for this error: 64 usage, 65 data, 69
    /// unavailable, 75 (temporary) the source changed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::SourceMissing(_) | Self::TargetNotEmpty(_) => 64,
            Self::Schema(_) | Self::Check(_) => 65,
            Self::Database { .. } => 69,
            Self::SourceChanged(_) => 75,
        }
    }

    fn on_source(error: impl std::fmt::Display) -> Self {
        Self::Database {
            which: "source",
            error: error.to_string(),
        }
    }

    fn on_target(error: impl std::fmt::Display) -> Self {
        Self::Database {
            which: "target",
            error: error.to_string(),
        }
    }
}

/// A database URL as it may be shown and stored: without a password.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split_once(':').map_or(user, |(name, _)| name);
                    format!("{user}@{host}")
                }
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// The file path and query of a SQLite URL.
fn sqlite_path(url: &str) -> (&str, &str) {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    rest.split_once('?').unwrap_or((rest, ""))
}

/// Copies the store at `options.from` into the empty store at
/// `options.to` (see the module documentation), telling `progress`.
pub async fn copy_store(
    options: &CopyOptions,
    progress: &dyn CopyProgress,
) -> Result<CopySummary, CopyError> {
    sqlx::any::install_default_drivers();
    let started = std::time::Instant::now();
    let source_backend = Backend::of_url(&options.from).map_err(|_| {
        CopyError::Usage("--from: not a database URL (sqlite://FILE or postgres://…)".into())
    })?;
    let target_backend = Backend::of_url(&options.to).map_err(|_| {
        CopyError::Usage("--to: not a database URL (sqlite://FILE or postgres://…)".into())
    })?;
    let (from, to) = (redact_url(&options.from), redact_url(&options.to));

    let mut source = open_source(&options.from, source_backend).await?;
    check_source_schema(&mut source, source_backend, &from).await?;
    // One snapshot for the whole copy.
    let begin = match source_backend {
        Backend::Sqlite => "BEGIN",
        Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    };
    sqlx::query(begin)
        .execute(&mut source)
        .await
        .map_err(CopyError::on_source)?;
    let before = Fingerprint::read(&mut source)
        .await
        .map_err(CopyError::on_source)?;

    let mut target = open_target(options, target_backend, source_backend, &mut source).await?;
    prepare_target(&mut target, target_backend, &to).await?;
    let mark = mark_started(&mut target, &from).await?;

    let begin = match target_backend {
        Backend::Sqlite => "BEGIN IMMEDIATE",
        Backend::Postgres => "BEGIN",
    };
    sqlx::query(begin)
        .execute(&mut target)
        .await
        .map_err(CopyError::on_target)?;
    let copied = copy_in(
        options,
        &mut source,
        source_backend,
        &mut target,
        target_backend,
        &before,
        mark,
        progress,
    )
    .await;
    let _ = sqlx::query("ROLLBACK").execute(&mut source).await;
    let _ = source.close().await;
    let (tables, store_report, audit_report, allowed) = match copied {
        Ok(copied) => copied,
        Err(error) => {
            // Nothing of the transaction stays; the mark stays unfinished.
            let _ = sqlx::query("ROLLBACK").execute(&mut target).await;
            let _ = target.close().await;
            return Err(error);
        }
    };
    if let Err(error) = sqlx::query("COMMIT").execute(&mut target).await {
        let _ = target.close().await;
        return Err(CopyError::on_target(format!(
            "the copy could not be committed ({error}); nothing was copied"
        )));
    }
    let _ = target.close().await;
    let rows = tables.iter().map(|t| t.rows).sum();
    Ok(CopySummary {
        from,
        to,
        tables,
        rows,
        high_water: before.high_water.map(|v| v.max(0) as u64),
        chain_head: before.last_chain.as_deref().map(hex::encode),
        audit_last_id: before.audit_last_id.map(|v| v.max(0) as u64),
        audit_head: before.audit_last_hash.as_deref().map(hex::encode),
        verify_store: store_report.summary(),
        audit_verify: audit_report.summary(),
        integrity_failures_copied: allowed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Opens the source without creating or changing anything.
async fn open_source(url: &str, backend: Backend) -> Result<AnyConnection, CopyError> {
    let url = match backend {
        Backend::Sqlite => {
            let (path, query) = sqlite_path(url);
            if path.is_empty() || path == ":memory:" {
                return Err(CopyError::Usage(
                    "--from: a SQLite source needs a file path (sqlite://data/liandong.db)".into(),
                ));
            }
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => {}
                Ok(_) => {
                    return Err(CopyError::SourceMissing(format!(
                        "--from: {path} is not a file"
                    )));
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CopyError::SourceMissing(format!(
                        "--from: there is no SQLite database at {path}"
                    )));
                }
                Err(error) => {
                    return Err(CopyError::on_source(format!("{path}: {error}")));
                }
            }
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.is_empty() && !pair.starts_with("mode="))
                .chain(["mode=ro"])
                .collect();
            format!("sqlite://{path}?{}", kept.join("&"))
        }
        Backend::Postgres => url.to_owned(),
    };
    let options =
        AnyConnectOptions::from_str(&url).map_err(|e| CopyError::Usage(format!("--from: {e}")))?;
    match options.connect().await {
        Ok(conn) => Ok(conn),
        Err(error) if missing_database(&error) => Err(CopyError::SourceMissing(format!(
            "--from: {}: the database does not exist",
            redact_url(&url)
        ))),
        Err(error) => Err(CopyError::on_source(error)),
    }
}

/// True when PostgreSQL answered that the database does not exist.
fn missing_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "3D000")
}

/// Whether `table` exists in the database (PostgreSQL: in the current
/// schema).
async fn table_exists(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
) -> Result<bool, sqlx::Error> {
    let sql = match backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count > 0)
}

/// Every table of the database (PostgreSQL: of the current schema).
async fn tables(conn: &mut AnyConnection, backend: Backend) -> Result<Vec<String>, sqlx::Error> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY table_name"
        }
    };
    sqlx::query_scalar(sql).fetch_all(&mut *conn).await
}

/// How `applied` differs from this binary's migrations, as an operator
/// reads it; `None` when they are the same. `whose` is `the source's` or
/// `the target's`.
fn schema_difference(
    backend: Backend,
    applied: &[AppliedMigration],
    whose: &str,
) -> Option<String> {
    let embedded = migrator(backend);
    let failed: Vec<AppliedMigration> = applied.iter().filter(|m| !m.success).cloned().collect();
    if !failed.is_empty() {
        return Some(format!(
            "{whose} migration {} failed and was never completed: repair it first",
            describe_migrations(&failed)
        ));
    }
    let unknown: Vec<AppliedMigration> = applied
        .iter()
        .filter(|m| embedded.iter().all(|e| e.version != m.version))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Some(format!(
            "{whose} schema is newer than this binary: it has migration(s) {} that this binary does not know; run migrate-store of the version that applied them",
            describe_migrations(&unknown)
        ));
    }
    let differing: Vec<AppliedMigration> = applied
        .iter()
        .filter(|m| {
            embedded
                .iter()
                .any(|e| e.version == m.version && *e.checksum != *m.checksum)
        })
        .cloned()
        .collect();
    if !differing.is_empty() {
        return Some(format!(
            "{whose} migration(s) {} differ from this binary's (another SQL under the same number)",
            describe_migrations(&differing)
        ));
    }
    let pending: Vec<String> = embedded
        .iter()
        .filter(|e| applied.iter().all(|m| m.version != e.version))
        .map(|e| format!("{:04} ({})", e.version, e.description))
        .collect();
    if !pending.is_empty() {
        return Some(format!(
            "{whose} schema is older than this binary: migration(s) {} are not applied",
            pending.join(", ")
        ));
    }
    None
}

/// Refuses a source that is not a Liandong store or whose schema is not
/// exactly this binary's.
async fn check_source_schema(
    conn: &mut AnyConnection,
    backend: Backend,
    from: &str,
) -> Result<(), CopyError> {
    if !table_exists(conn, backend, "_sqlx_migrations")
        .await
        .map_err(CopyError::on_source)?
    {
        return Err(CopyError::Schema(format!(
            "--from {from} is not a Liandong store: it has no schema (no _sqlx_migrations table)"
        )));
    }
    let applied = applied_migrations(&mut *conn)
        .await
        .map_err(CopyError::on_source)?;
    // The first migration is the gateway's, whatever else differs.
    let first = migrator(backend)
        .iter()
        .next()
        .map(|m| (m.version, m.checksum.to_vec()));
    let ours = applied
        .iter()
        .any(|m| Some((m.version, m.checksum.clone())) == first);
    if !ours {
        return Err(CopyError::Schema(format!(
            "--from {from} is not a Liandong store: its migrations are not the gateway's"
        )));
    }
    match schema_difference(backend, &applied, "the source's") {
        None => Ok(()),
        Some(difference) => Err(CopyError::Schema(format!(
            "--from {from}: {difference}; the source's schema must be exactly this binary's (start its gateway once with this version, or run `liandong-gateway migrate` on it, then copy)"
        ))),
    }
}

/// What tells one PostgreSQL schema from another: database, schema, port
/// and the server's start time.
async fn postgres_identity(conn: &mut AnyConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT current_database() || '/' || COALESCE(current_schema(), '') || ':' || \
         COALESCE(inet_server_port()::text, 'socket') || '@' || pg_postmaster_start_time()::text",
    )
    .fetch_one(&mut *conn)
    .await
}

/// Opens (and for SQLite creates) the target, after making sure it is not
/// the source.
async fn open_target(
    options: &CopyOptions,
    backend: Backend,
    source_backend: Backend,
    source: &mut AnyConnection,
) -> Result<AnyConnection, CopyError> {
    let same = || {
        CopyError::Usage(format!(
            "--from and --to are the same store ({}): give a new, empty database as --to",
            redact_url(&options.to)
        ))
    };
    let url = match backend {
        Backend::Sqlite => {
            let (path, _) = sqlite_path(&options.to);
            if source_backend == Backend::Sqlite {
                let (source_path, _) = sqlite_path(&options.from);
                if same_file(Path::new(source_path), Path::new(path)) {
                    return Err(same());
                }
            }
            prepare_sqlite_url(&options.to).map_err(|e| CopyError::Usage(format!("--to: {e}")))?
        }
        Backend::Postgres => options.to.clone(),
    };
    let connect =
        AnyConnectOptions::from_str(&url).map_err(|e| CopyError::Usage(format!("--to: {e}")))?;
    let mut target = match connect.connect().await {
        Ok(conn) => conn,
        Err(error) if missing_database(&error) => {
            return Err(CopyError::Usage(format!(
                "--to: {}: the database does not exist; create it first (createdb), empty",
                redact_url(&options.to)
            )));
        }
        Err(error) => return Err(CopyError::on_target(error)),
    };
    if backend == Backend::Postgres && source_backend == Backend::Postgres {
        let here = postgres_identity(&mut target)
            .await
            .map_err(CopyError::on_target)?;
        let there = postgres_identity(source)
            .await
            .map_err(CopyError::on_source)?;
        if here == there {
            let _ = target.close().await;
            return Err(same());
        }
    }
    writer::configure(&mut target, backend, options.lock_timeout, true)
        .await
        .map_err(CopyError::on_target)?;
    Ok(target)
}

/// True when both paths name one existing file (however spelled).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Migrates the target and makes sure it holds nothing: no table of
/// another application, no row in a durable table.
async fn prepare_target(
    target: &mut AnyConnection,
    backend: Backend,
    to: &str,
) -> Result<(), CopyError> {
    let present = tables(target, backend)
        .await
        .map_err(CopyError::on_target)?;
    if !present.is_empty() && !present.iter().any(|t| t == "_sqlx_migrations") {
        return Err(CopyError::TargetNotEmpty(format!(
            "--to {to} holds tables that are not a Liandong store's ({}): give a new, empty database",
            present.join(", ")
        )));
    }
    if present.iter().any(|t| t == "_sqlx_migrations") {
        let applied = applied_migrations(&mut *target)
            .await
            .map_err(CopyError::on_target)?;
        // A target behind is migrated below; anything else is refused.
        if let Some(difference) = schema_difference(backend, &applied, "the target's")
            .filter(|d| !d.contains("is older than this binary"))
        {
            return Err(CopyError::Schema(format!("--to {to}: {difference}")));
        }
    }
    migrator(backend)
        .run(&mut *target)
        .await
        .map_err(|e| CopyError::on_target(format!("migrating the schema: {e}")))?;
    let mut holding = Vec::new();
    for table in TABLES {
        let sql = match table.name {
            // The row the migrations put there, unchanged, is empty.
            "store_state" => "SELECT COUNT(*) FROM store_state \
                 WHERE NOT (id = 1 AND high_water = 0 AND last_chain IS NULL)"
                .to_owned(),
            "audit_state" => {
                "SELECT COUNT(*) FROM audit_state WHERE NOT (id = 1 AND last_id = 0)".to_owned()
            }
            name => format!("SELECT COUNT(*) FROM {name}"),
        };
        let count: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut *target)
            .await
            .map_err(CopyError::on_target)?;
        if count > 0 {
            holding.push(format!("{}: {count} row(s)", table.name));
        }
    }
    if !holding.is_empty() {
        return Err(CopyError::TargetNotEmpty(format!(
            "--to {to} already holds data ({}): migrate-store copies only into an empty store; give a new, empty database",
            holding.join(", ")
        )));
    }
    Ok(())
}

/// Records, committed, that a copy into the target has started: until the
/// copy's transaction completes it, the gateway refuses the store.
async fn mark_started(target: &mut AnyConnection, from: &str) -> Result<i64, CopyError> {
    let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM store_copies")
        .fetch_one(&mut *target)
        .await
        .map_err(CopyError::on_target)?;
    sqlx::query("INSERT INTO store_copies (id, source, started_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(from)
        .bind(Instant::now().unix_micros())
        .execute(&mut *target)
        .await
        .map_err(CopyError::on_target)?;
    Ok(id)
}

/// What changes when anything writes to a store: its heads, its
/// subscriptions, its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    high_water: Option<i64>,
    last_chain: Option<Vec<u8>>,
    audit_last_id: Option<i64>,
    audit_last_hash: Option<Vec<u8>>,
    subscriptions: i64,
    subscriptions_updated: i64,
    checkpoints: i64,
    fences: i64,
}

impl Fingerprint {
    async fn read(conn: &mut AnyConnection) -> Result<Self, sqlx::Error> {
        let row = sqlx::query(
            "SELECT (SELECT high_water FROM store_state WHERE id = 1) AS high_water, \
             (SELECT last_chain FROM store_state WHERE id = 1) AS last_chain, \
             (SELECT last_id FROM audit_state WHERE id = 1) AS audit_last_id, \
             (SELECT last_hash FROM audit_state WHERE id = 1) AS audit_last_hash, \
             (SELECT COUNT(*) FROM subscriptions) AS subscriptions, \
             (SELECT COALESCE(MAX(updated_at), 0) FROM subscriptions) AS subscriptions_updated, \
             (SELECT COALESCE(MAX(id), 0) FROM audit_checkpoints) AS checkpoints, \
             (SELECT COUNT(*) FROM sequence_fences) AS fences",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Self {
            high_water: row.try_get("high_water")?,
            last_chain: row.try_get("last_chain")?,
            audit_last_id: row.try_get("audit_last_id")?,
            audit_last_hash: row.try_get("audit_last_hash")?,
            subscriptions: row.try_get("subscriptions")?,
            subscriptions_updated: row.try_get("subscriptions_updated")?,
            checkpoints: row.try_get("checkpoints")?,
            fences: row.try_get("fences")?,
        })
    }

    /// What moved between `self` and `now`, in words.
    fn changes(&self, now: &Self) -> String {
        let mut changes = Vec::new();
        let show = |v: Option<i64>| v.map_or("none".to_owned(), |v| v.to_string());
        if (self.high_water, &self.last_chain) != (now.high_water, &now.last_chain) {
            changes.push(format!(
                "high-water mark {} -> {}",
                show(self.high_water),
                show(now.high_water)
            ));
        }
        if (self.audit_last_id, &self.audit_last_hash) != (now.audit_last_id, &now.audit_last_hash)
        {
            changes.push(format!(
                "audit log up to row {} -> {}",
                show(self.audit_last_id),
                show(now.audit_last_id)
            ));
        }
        if (self.subscriptions, self.subscriptions_updated)
            != (now.subscriptions, now.subscriptions_updated)
        {
            changes.push("subscriptions".to_owned());
        }
        if self.checkpoints != now.checkpoints {
            changes.push("audit checkpoints".to_owned());
        }
        if self.fences != now.fences {
            changes.push("sequence fences".to_owned());
        }
        changes.join(", ")
    }
}

/// One column's value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

impl Value {
    fn read(row: &sqlx::any::AnyRow, index: usize, kind: Kind) -> Result<Self, sqlx::Error> {
        Ok(match kind {
            Int => Self::Int(row.try_get(index)?),
            Text => Self::Text(row.try_get(index)?),
            Blob => Self::Blob(row.try_get(index)?),
        })
    }

    /// Fed to a table's digest: a tag, then the value (lengths before
    /// bytes), so that no two rows encode alike.
    fn digest(&self, hasher: &mut Sha256) {
        match self {
            Self::Int(None) | Self::Text(None) | Self::Blob(None) => hasher.update([0]),
            Self::Int(Some(v)) => {
                hasher.update([1]);
                hasher.update(v.to_be_bytes());
            }
            Self::Text(Some(text)) => {
                hasher.update([2]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
            Self::Blob(Some(bytes)) => {
                hasher.update([3]);
                hasher.update((bytes.len() as u64).to_be_bytes());
                hasher.update(bytes);
            }
        }
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Self::Int(v) => query.bind(v),
            Self::Text(v) => query.bind(v),
            Self::Blob(v) => query.bind(v),
        }
    }
}

impl Table {
    /// `ORDER BY` in byte order on both backends (PostgreSQL compares text
    /// by the database's collation otherwise).
    fn order(&self, backend: Backend) -> String {
        self.key
            .iter()
            .map(|column| self.collated(column, backend))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn collated(&self, column: &str, backend: Backend) -> String {
        let text = self
            .columns
            .iter()
            .any(|(name, kind)| *name == column && *kind == Text);
        if text && backend == Backend::Postgres {
            format!("{column} COLLATE \"C\"")
        } else {
            column.to_owned()
        }
    }

    /// One page after `after` (the key of the last row read), in key order.
    fn page_query(&self, backend: Backend, after: Option<&[Value]>) -> String {
        let columns = self
            .columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        let filter = match after {
            None => String::new(),
            Some(_) => {
                // (k1 > $1) OR (k1 = $1 AND k2 > $2) …
                let mut ors = Vec::new();
                for (i, column) in self.key.iter().enumerate() {
                    let mut ands: Vec<String> = self.key[..i]
                        .iter()
                        .enumerate()
                        .map(|(j, earlier)| format!("{earlier} = ${}", j + 1))
                        .collect();
                    ands.push(format!("{} > ${}", self.collated(column, backend), i + 1));
                    ors.push(format!("({})", ands.join(" AND ")));
                }
                format!(" WHERE {}", ors.join(" OR "))
            }
        };
        format!(
            "SELECT {columns} FROM {}{filter} ORDER BY {} LIMIT {}",
            self.name,
            self.order(backend),
            self.page
        )
    }

    fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.key
            .iter()
            .map(|key| {
                let at = self
                    .columns
                    .iter()
                    .position(|(name, _)| name == key)
                    .expect("a key column is a column");
                row[at].clone()
            })
            .collect()
    }

    /// Reads the next page after `after` through `conn`.
    async fn page(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        after: Option<&[Value]>,
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        let sql = self.page_query(backend, after);
        let mut query = sqlx::query(&sql);
        for value in after.unwrap_or_default() {
            query = value.clone().bind(query);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|row| {
                self.columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| Value::read(row, i, *kind))
                    .collect()
            })
            .collect()
    }

    /// Inserts `rows` through `conn`, several per statement.
    async fn insert(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        rows: Vec<Vec<Value>>,
    ) -> Result<(), sqlx::Error> {
        let columns = self
            .columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ");
        let overriding = if self.always_identity && backend == Backend::Postgres {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let per_statement = (MAX_PARAMETERS / self.columns.len()).max(1);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Value>> = rows.by_ref().take(per_statement).collect();
            let width = self.columns.len();
            let values = (0..chunk.len())
                .map(|r| {
                    let row = (1..=width)
                        .map(|c| format!("${}", r * width + c))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("({row})")
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {} ({columns}){overriding} VALUES {values}",
                self.name
            );
            let mut query = sqlx::query(&sql);
            for value in chunk.into_iter().flatten() {
                query = value.bind(query);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Reads every row through `conn` in key order, giving each page to
    /// `each`; returns the count and the digest.
    async fn walk(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        mut each: impl AsyncFnMut(Vec<Vec<Value>>) -> Result<(), CopyError>,
        which: fn(sqlx::Error) -> CopyError,
    ) -> Result<(u64, [u8; 32]), CopyError> {
        let mut hasher = Sha256::new();
        let mut count = 0_u64;
        let mut after: Option<Vec<Value>> = None;
        loop {
            let page = self
                .page(conn, backend, after.as_deref())
                .await
                .map_err(which)?;
            let Some(last) = page.last() else { break };
            after = Some(self.key_of(last));
            for row in &page {
                for value in row {
                    value.digest(&mut hasher);
                }
            }
            count += page.len() as u64;
            let full = page.len() == self.page;
            each(page).await?;
            if !full {
                break;
            }
        }
        Ok((count, hasher.finalize().into()))
    }
}

/// Feeds a verification's progress into the copy's.
struct Verifying<'a> {
    progress: &'a dyn CopyProgress,
    what: &'static str,
}

impl verify::Progress for Verifying<'_> {
    fn start(&self, rows: u64) {
        self.progress.step(self.what, rows);
    }

    fn advance(&self) {
        self.progress.advance(1);
    }
}

/// The copy inside the target's transaction: rows, identities, the
/// comparison, the checks, the source's stillness and the mark. Returns
/// the tables, the target's reports, and whether problems the source has
/// too were let through.
#[allow(clippy::too_many_arguments)]
async fn copy_in(
    options: &CopyOptions,
    source: &mut AnyConnection,
    source_backend: Backend,
    target: &mut AnyConnection,
    target_backend: Backend,
    before: &Fingerprint,
    mark: i64,
    progress: &dyn CopyProgress,
) -> Result<(Vec<TableSummary>, VerifyReport, AuditReport, bool), CopyError> {
    if target_backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1), pg_advisory_xact_lock($2)")
            .bind(super::PUBLISH_LOCK_KEY)
            .bind(super::audit::AUDIT_LOCK_KEY)
            .execute(&mut *target)
            .await
            .map_err(CopyError::on_target)?;
    }
    let mut copied = Vec::new();
    for table in TABLES {
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.name))
            .fetch_one(&mut *source)
            .await
            .map_err(CopyError::on_source)?;
        progress.step(&format!("copying {}", table.name), total.max(0) as u64);
        if table.singleton {
            sqlx::query(&format!("DELETE FROM {}", table.name))
                .execute(&mut *target)
                .await
                .map_err(CopyError::on_target)?;
        }
        let inserting = &mut *target;
        let (rows, digest) = table
            .walk(
                source,
                source_backend,
                async |page: Vec<Vec<Value>>| {
                    let n = page.len() as u64;
                    table
                        .insert(inserting, target_backend, page)
                        .await
                        .map_err(|error| {
                            CopyError::on_target(format!(
                                "the target refused a row of {}: {error}; nothing was copied",
                                table.name
                            ))
                        })?;
                    progress.advance(n);
                    Ok(())
                },
                CopyError::on_source,
            )
            .await?;
        copied.push((table, rows, digest));
    }
    if target_backend == Backend::Postgres {
        set_identities(target).await.map_err(CopyError::on_target)?;
    }

    // Read back: the target holds exactly what was read.
    let mut tables = Vec::new();
    for (table, rows, digest) in copied {
        progress.step(&format!("comparing {}", table.name), rows);
        let (count, read_back) = table
            .walk(
                target,
                target_backend,
                async |page: Vec<Vec<Value>>| {
                    progress.advance(page.len() as u64);
                    Ok(())
                },
                CopyError::on_target,
            )
            .await?;
        if (count, read_back) != (rows, digest) {
            return Err(CopyError::Check(format!(
                "the copy of {} differs from the source ({rows} rows read, {count} found in the target, digests {} and {}); nothing was copied",
                table.name,
                hex::encode(digest),
                hex::encode(read_back)
            )));
        }
        tables.push(TableSummary {
            table: table.name.to_owned(),
            rows,
            sha256: hex::encode(digest),
        });
    }

    // The checks of verify-store and audit verify, on the target's rows.
    let store_report = verify::scan(
        target,
        0,
        &Verifying {
            progress,
            what: "verifying notifications",
        },
    )
    .await
    .map_err(CopyError::on_target)?;
    let audit_options = AuditVerifyOptions {
        from_id: 0,
        public_key: options.public_key,
        checkpoint_file: None,
    };
    let audit_report = Walk {
        conn: target,
        backend: target_backend,
    }
    .verify(
        &audit_options,
        &Verifying {
            progress,
            what: "verifying the audit log",
        },
    )
    .await
    .map_err(CopyError::on_target)?;
    let mut allowed = false;
    if !store_report.is_clean() || !audit_report.is_clean() {
        // The same checks on the source tell a damaged source from a bad
        // copy.
        let source_store = verify::scan(source, 0, &verify::NoProgress)
            .await
            .map_err(CopyError::on_source)?;
        let source_audit = Walk {
            conn: source,
            backend: source_backend,
        }
        .verify(&audit_options, &verify::NoProgress)
        .await
        .map_err(CopyError::on_source)?;
        let same = source_store == store_report
            && source_audit.problems == audit_report.problems
            && source_audit.problems_omitted == audit_report.problems_omitted;
        let mut found = Vec::new();
        if !store_report.is_clean() {
            found.push(format!("verify-store: {}", store_report.summary()));
        }
        if !audit_report.is_clean() {
            found.push(format!("audit verify: {}", audit_report.summary()));
        }
        let found = found.join("; ");
        if !same {
            return Err(CopyError::Check(format!(
                "the copy fails its checks ({found}) and the source does not fail them the same way; nothing was copied"
            )));
        }
        if !options.allow_integrity_failures {
            return Err(CopyError::Check(format!(
                "the source fails its checks, and so would the copy ({found}); nothing was copied. Investigate with verify-store and audit verify on the source; to move it as it is, run again with --allow-integrity-failures"
            )));
        }
        tracing::error!(
            report = %found,
            "COPYING A STORE WITH INTEGRITY FAILURES (--allow-integrity-failures): the target has exactly the source's problems"
        );
        allowed = true;
    }

    // Nothing may have been written to the source since the snapshot.
    let mut again = open_source(&options.from, source_backend).await?;
    let now = Fingerprint::read(&mut again)
        .await
        .map_err(CopyError::on_source);
    let _ = again.close().await;
    let now = now?;
    if now != *before {
        return Err(CopyError::SourceChanged(format!(
            "the source changed while it was copied ({}): a gateway is still running on it. Stop every gateway on the source and run migrate-store again; nothing was copied",
            before.changes(&now)
        )));
    }

    let rows: u64 = tables.iter().map(|t| t.rows).sum();
    sqlx::query("DELETE FROM store_copies WHERE finished_at IS NULL AND id <> $1")
        .bind(mark)
        .execute(&mut *target)
        .await
        .map_err(CopyError::on_target)?;
    sqlx::query("UPDATE store_copies SET finished_at = $1, rows_copied = $2 WHERE id = $3")
        .bind(Instant::now().unix_micros())
        .bind(i64::try_from(rows).unwrap_or(i64::MAX))
        .bind(mark)
        .execute(&mut *target)
        .await
        .map_err(CopyError::on_target)?;
    Ok((tables, store_report, audit_report, allowed))
}

/// Sets every identity and serial sequence of the copied tables past the
/// highest id copied, so that no new row reuses one.
async fn set_identities(target: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() \
         AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .fetch_all(&mut *target)
    .await?;
    for (table, column) in columns {
        if !TABLES.iter().any(|t| t.name == table) {
            continue;
        }
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), \
             COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
        ))
        .bind(&table)
        .bind(&column)
        .execute(&mut *target)
        .await?;
    }
    Ok(())
}

/// The copy of the store's own database, if `migrate-store` into it has
/// started and not finished: its source and start, microseconds since the
/// Unix epoch.
pub(crate) async fn unfinished(
    conn: &mut AnyConnection,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT source, started_at FROM store_copies WHERE finished_at IS NULL \
         ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| Ok((row.try_get("source")?, row.try_get("started_at")?)))
        .transpose()
}

#[cfg(test)]
mod tests;
