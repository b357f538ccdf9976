//! The audit log as a hash chain: appends, the one-time linking of rows
//! written before the chain existed, signed checkpoints of its head, and
//! the walk behind `liandong-gateway audit verify` and the start-up check.
//!
//! Each row stores `hash = SHA-256(prev_hash || canonical_bytes(row))`,
//! where `prev_hash` is the hash of the row before (32 zero bytes for the
//! first) and [`canonical_bytes`] is the length-prefixed encoding
//! `docs/AUDIT.md` defines. Appends are serialised (the writer connection
//! on SQLite, an advisory transaction lock of their own on PostgreSQL) and
//! read the chain head inside that lock, so replicas extend one chain.
//!
//! The chain alone shows that rows were changed, removed, added or moved
//! by anyone who did not recompute it; signed checkpoints show a chain
//! recomputed or cut short behind them. This module reports; it never
//! repairs.

use std::collections::HashSet;

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use liandong_core::domain::Instant;

use super::verify::Progress;
use super::{AuditEntry, Backend, Store, StoreError, to_i64, to_u64};
use crate::supervision::GatewayKey;

/// The `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// Prefix of every row's canonical bytes.
const ROW_DOMAIN: &[u8] = b"liandong.v1.AuditRow\n";

/// Prefix of the bytes a checkpoint signs.
const CHECKPOINT_DOMAIN: &[u8] = b"liandong.v1.AuditCheckpoint\n";

/// Key of the PostgreSQL advisory lock that serialises audit appends
/// across replicas ("LA" in ASCII); taken after the publish lock when both
/// are held.
pub(crate) const AUDIT_LOCK_KEY: i64 = 0x4c41;

/// Rows read per page by the walk and the one-time linking.
const PAGE: i64 = 500;

/// Problems reported in detail; more are counted only.
const MAX_PROBLEMS: usize = 100;

/// Links looked up by hash (a scan each) before the walk stops
/// classifying broken links and reports them as inserted.
const MAX_LOOKUPS: usize = 100;

/// Triggers that keep the audit tables append-only, per backend.
const SQLITE_TRIGGERS: [&str; 4] = [
    "audit_log_no_update",
    "audit_log_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
];
const POSTGRES_TRIGGERS: [&str; 2] = ["audit_log_no_change", "audit_checkpoints_no_change"];

/// The columns of one audit row that its hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFields<'a> {
    /// The row id.
    pub id: u64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    /// Who (`agency`).
    pub actor: &'a str,
    /// What (`action`).
    pub action: &'a str,
    /// The notification's sequence, if any.
    pub sequence: Option<u64>,
    /// The notification's sender.
    pub sender: &'a str,
    /// The sender's id for the notification.
    pub notification_id: &'a str,
    /// The outcome (`decision`).
    pub outcome: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The peer address, empty when unknown.
    pub peer: &'a str,
}

/// The canonical bytes of a row: the domain `liandong.v1.AuditRow\n`,
/// `id` as 8 bytes and `at` as 8 bytes (big-endian, `at` two's
/// complement), the actor and action, the sequence (one byte 0 when absent;
/// 1 then 8 bytes big-endian), then sender, notification id, outcome,
/// reason and peer; each text as a 4-byte big-endian length and its UTF-8
/// bytes.
pub fn canonical_bytes(row: &ChainFields<'_>) -> Vec<u8> {
    let texts = [
        row.actor,
        row.action,
        row.sender,
        row.notification_id,
        row.outcome,
        row.reason,
        row.peer,
    ];
    let mut out = Vec::with_capacity(
        ROW_DOMAIN.len() + 25 + texts.iter().map(|t| 4 + t.len()).sum::<usize>(),
    );
    let text = |out: &mut Vec<u8>, text: &str| {
        let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    };
    out.extend_from_slice(ROW_DOMAIN);
    out.extend_from_slice(&row.id.to_be_bytes());
    out.extend_from_slice(&row.at.to_be_bytes());
    text(&mut out, row.actor);
    text(&mut out, row.action);
    match row.sequence {
        None => out.push(0),
        Some(sequence) => {
            out.push(1);
            out.extend_from_slice(&sequence.to_be_bytes());
        }
    }
    text(&mut out, row.sender);
    text(&mut out, row.notification_id);
    text(&mut out, row.outcome);
    text(&mut out, row.reason);
    text(&mut out, row.peer);
    out
}

/// `SHA-256(prev_hash || canonical_bytes(row))`.
pub fn row_hash(prev_hash: &[u8], row: &ChainFields<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical_bytes(row));
    hasher.finalize().into()
}

/// A signed statement of the chain head: row `row_id` has hash
/// `row_hash`, as the gateway saw it at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last row the checkpoint covers.
    pub row_id: u64,
    /// That row's hash.
    pub row_hash: Vec<u8>,
    /// When the checkpoint was made, microseconds since the Unix epoch.
    pub at: i64,
    /// The signing key's id (`liandong-gateway:<16 hex>`).
    pub key_id: String,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: Vec<u8>,
}

/// A checkpoint as its JSON file holds it (hex for bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    row_id: u64,
    row_hash: String,
    at_unix_micros: i64,
    at: String,
    key_id: String,
    signature: String,
}

impl Checkpoint {
    /// The bytes a checkpoint signs: the domain
    /// `liandong.v1.AuditCheckpoint\n`, `row_id` (8 bytes big-endian), the
    /// 32-byte row hash, `at` (8 bytes big-endian).
    pub fn signed_bytes(row_id: u64, row_hash: &[u8], at: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 48);
        out.extend_from_slice(CHECKPOINT_DOMAIN);
        out.extend_from_slice(&row_id.to_be_bytes());
        out.extend_from_slice(row_hash);
        out.extend_from_slice(&at.to_be_bytes());
        out
    }

    /// A checkpoint of `row_id` / `row_hash` at `at`, signed with `key`.
    pub fn sign(key: &GatewayKey, row_id: u64, row_hash: Vec<u8>, at: i64) -> Self {
        let signature = key.sign_bytes(&Self::signed_bytes(row_id, &row_hash, at));
        Self {
            row_id,
            row_hash,
            at,
            key_id: key.key_id().to_owned(),
            signature,
        }
    }

    /// True when the signature is `public_key`'s over this checkpoint.
    pub fn signature_verifies(&self, public_key: &[u8; 32]) -> bool {
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(
                &Self::signed_bytes(self.row_id, &self.row_hash, self.at),
                &self.signature,
            )
            .is_ok()
    }

    /// The checkpoint as JSON, for the operator's file.
    pub fn to_json(&self) -> String {
        let at = Instant::from_unix_micros(self.at)
            .map(|at| at.to_string())
            .unwrap_or_default();
        let json = CheckpointJson {
            row_id: self.row_id,
            row_hash: hex::encode(&self.row_hash),
            at_unix_micros: self.at,
            at,
            key_id: self.key_id.clone(),
            signature: hex::encode(&self.signature),
        };
        let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
        text.push('\n');
        text
    }

    /// A checkpoint from the JSON [`Checkpoint::to_json`] writes.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let json: CheckpointJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let row_hash = hex::decode(&json.row_hash).map_err(|e| format!("row_hash: {e}"))?;
        if row_hash.len() != 32 {
            return Err("row_hash: not 32 bytes".into());
        }
        Ok(Self {
            row_id: json.row_id,
            row_hash,
            at: json.at_unix_micros,
            key_id: json.key_id,
            signature: hex::decode(&json.signature).map_err(|e| format!("signature: {e}"))?,
        })
    }

    /// Writes [`Checkpoint::to_json`] to `path` atomically: a temporary
    /// file in the same directory, synced, then renamed over it.
    pub fn write_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audit-checkpoint.json".into());
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(self.to_json().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        if let Ok(dir) = std::fs::File::open(dir) {
            // The rename is durable once the directory is synced.
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// What kind of tampering a problem shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tampering {
    /// The row's content no longer matches its hash, or the chain was
    /// recomputed under a signed checkpoint.
    Changed,
    /// Rows before this one are gone (its link names a row not in the log,
    /// and ids are missing).
    Deleted,
    /// The row was not written by the gateway: no hash, or its link does
    /// not follow from the row before.
    Inserted,
    /// The row's link names a row that comes after it.
    Reordered,
    /// The log ends before the last row the gateway recorded or a signed
    /// checkpoint covers.
    Truncated,
    /// A checkpoint's signature does not verify.
    Checkpoint,
    /// An append-only trigger is missing or disabled.
    Trigger,
}

impl Tampering {
    /// The kind's name, as the report prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Deleted => "deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
            Self::Truncated => "truncated",
            Self::Checkpoint => "checkpoint",
            Self::Trigger => "trigger",
        }
    }
}

/// One problem: its kind, the row it was found at, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// What kind of tampering it shows.
    pub kind: Tampering,
    /// The row id it concerns, when it concerns one.
    pub row: Option<u64>,
    /// What was found, in words (never row content).
    pub detail: String,
}

/// How a checkpoint compared with the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointCheck {
    /// `database` or the file it was read from.
    pub source: String,
    /// The row it covers.
    pub row_id: u64,
    /// Whether its signature verifies with the gateway's key (`None`: no
    /// key to check it with).
    pub signature_valid: Option<bool>,
    /// Whether the row it covers is in the log with the signed hash.
    pub matches: bool,
}

/// What a walk of the audit chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The walk covered rows above this id (0: the whole log).
    pub from_id: u64,
    /// Rows looked at.
    pub rows_checked: u64,
    /// The last row id in the log.
    pub last_id: Option<u64>,
    /// Problems in the order found; after the first, some may be
    /// consequences of it.
    pub problems: Vec<AuditProblem>,
    /// Problems found beyond those listed.
    pub problems_omitted: u64,
    /// The checkpoints compared with the chain.
    pub checkpoints: Vec<CheckpointCheck>,
    /// The append-only triggers found in place.
    pub triggers: Vec<String>,
}

impl AuditReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first problem found.
    pub fn first_problem(&self) -> Option<&AuditProblem> {
        self.problems.first()
    }

    /// One line: rows checked and the first problem.
    pub fn summary(&self) -> String {
        match self.first_problem() {
            None => format!(
                "audit log: {} rows checked, no problem found",
                self.rows_checked
            ),
            Some(problem) => {
                let count = self.problems.len() as u64 + self.problems_omitted;
                let row = problem
                    .row
                    .map(|row| format!(" at row {row}"))
                    .unwrap_or_default();
                format!(
                    "audit log: {} rows checked, {count} problem(s); first: {}{row}: {}",
                    self.rows_checked,
                    problem.kind.as_str(),
                    problem.detail
                )
            }
        }
    }

    fn push(&mut self, kind: Tampering, row: Option<u64>, detail: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(AuditProblem { kind, row, detail });
        } else {
            self.problems_omitted += 1;
        }
    }
}

/// What to check a walk against.
#[derive(Debug, Clone, Default)]
pub struct AuditVerifyOptions {
    /// Walk only the rows above this id (0: the whole log).
    pub from_id: u64,
    /// The gateway's public key, to verify checkpoint signatures with.
    pub public_key: Option<[u8; 32]>,
    /// A checkpoint the operator kept elsewhere, with where it came from.
    pub checkpoint_file: Option<(String, Checkpoint)>,
}

/// The chain head: the last row appended and its hash.
struct Head {
    last_id: i64,
    last_hash: Vec<u8>,
}

/// Takes the audit lock inside the open transaction (PostgreSQL; on
/// SQLite `BEGIN IMMEDIATE` already holds the database's write lock).
async fn lock_audit(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The head, read inside the lock; rows from before the chain are linked
/// first when none is yet.
async fn head_in(conn: &mut AnyConnection) -> Result<Head, StoreError> {
    let state = sqlx::query("SELECT last_id, last_hash FROM audit_state WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt("audit_state has no row: the audit chain head is lost".into())
        })?;
    let last_id: i64 = state.try_get("last_id")?;
    let last_hash: Option<Vec<u8>> = state.try_get("last_hash")?;
    match last_hash {
        Some(last_hash) => Ok(Head { last_id, last_hash }),
        None => link_unchained_in(conn, last_id).await,
    }
}

/// Gives rows written before the chain existed their link, in id order,
/// once: only while no row has one and no checkpoint was ever signed.
/// Otherwise (the head's hash was erased behind the gateway's back) the
/// last chained row, or the last signed checkpoint, is the head, and the
/// walk reports whatever is wrong.
async fn link_unchained_in(conn: &mut AnyConnection, last_id: i64) -> Result<Head, StoreError> {
    let chained: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, hash FROM audit_log WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id, hash)) = chained {
        tracing::error!(
            audit.row = id,
            "the audit chain head is not recorded; continuing from the last chained row (run audit verify)"
        );
        return Ok(Head {
            last_id: id.max(last_id),
            last_hash: hash,
        });
    }
    // Once a checkpoint was signed, every row had a hash: rows without one
    // now were stripped of it (or forged) and are never linked again.
    let signed: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT row_id, row_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((row_id, row_hash)) = signed {
        tracing::error!(
            audit.row = row_id,
            "no audit row has a hash although a checkpoint was signed; continuing from the checkpoint (run audit verify)"
        );
        return Ok(Head {
            last_id: row_id.max(last_id),
            last_hash: row_hash,
        });
    }
    let mut prev = GENESIS.to_vec();
    let mut after = 0_i64;
    let mut linked = 0_u64;
    loop {
        let rows = sqlx::query(&format!(
            "{ROW_SELECT} WHERE id > $1 ORDER BY id LIMIT {PAGE}"
        ))
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("id")?;
        for row in &rows {
            let row = StoredRow::read(row)?;
            let hash = row_hash(&prev, &row.fields());
            sqlx::query(
                "UPDATE audit_log SET prev_hash = $1, hash = $2 WHERE id = $3 AND hash IS NULL",
            )
            .bind(&prev)
            .bind(hash.to_vec())
            .bind(to_i64(row.id))
            .execute(&mut *conn)
            .await?;
            prev = hash.to_vec();
            linked += 1;
        }
    }
    let last_id = last_id.max(after);
    sqlx::query("UPDATE audit_state SET last_id = $1, last_hash = $2 WHERE id = 1")
        .bind(last_id)
        .bind(&prev)
        .execute(&mut *conn)
        .await?;
    if linked > 0 {
        tracing::warn!(
            rows = linked,
            "linked audit rows written before the audit chain existed"
        );
    }
    Ok(Head {
        last_id,
        last_hash: prev,
    })
}

/// One audit row (`$1` its id, `$12` its hash).
const APPEND: &str = "INSERT INTO audit_log (id, at, agency, action, sequence, sender, \
     notification_id, decision, reason, peer, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
/// The last row of an append and the new head: two statements on SQLite,
/// the insert as a data-modifying CTE on PostgreSQL.
const APPEND_AND_HEAD_SQLITE: &str = "INSERT INTO audit_log (id, at, agency, action, sequence, \
     sender, notification_id, decision, reason, peer, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12); \
     UPDATE audit_state SET last_id = $1, last_hash = $12 WHERE id = 1";
const APPEND_AND_HEAD_POSTGRES: &str = "WITH appended AS (INSERT INTO audit_log (id, at, agency, \
     action, sequence, sender, notification_id, decision, reason, peer, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id) \
     UPDATE audit_state SET last_id = (SELECT id FROM appended), last_hash = $12 WHERE id = 1";

/// Appends `entries` at `at` inside the open transaction: takes the audit
/// lock, reads the head, inserts each row with its link and hash, and
/// moves the head. Commits with whatever else the transaction writes.
pub(crate) async fn append_in(
    conn: &mut AnyConnection,
    backend: Backend,
    entries: &[AuditEntry],
    at: i64,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    lock_audit(conn, backend).await?;
    // The head and the highest stored id in one round trip.
    let state = sqlx::query(
        "SELECT last_id, last_hash, (SELECT COALESCE(MAX(id), 0) FROM audit_log) AS max_id \
         FROM audit_state WHERE id = 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| {
        StoreError::Corrupt("audit_state has no row: the audit chain head is lost".into())
    })?;
    let max: i64 = state.try_get("max_id")?;
    let head = match state.try_get::<Option<Vec<u8>>, _>("last_hash")? {
        Some(last_hash) => Head {
            last_id: state.try_get("last_id")?,
            last_hash,
        },
        None => head_in(conn).await?,
    };
    // Above every id ever appended and every stored row, so an id is never
    // used twice whatever happened to the rows.
    let mut id = head.last_id.max(max);
    let mut prev = head.last_hash;
    let mut moved = false;
    for (index, entry) in entries.iter().enumerate() {
        id += 1;
        let peer = entry.peer.map(|peer| peer.to_string()).unwrap_or_default();
        let fields = ChainFields {
            id: to_u64(id, "audit id")?,
            at,
            actor: &entry.agency,
            action: entry.action,
            sequence: entry.sequence,
            sender: &entry.sender,
            notification_id: &entry.notification_id,
            outcome: &entry.decision,
            reason: &entry.reason,
            peer: &peer,
        };
        let hash = row_hash(&prev, &fields).to_vec();
        // The last row goes in with the new head, in one round trip.
        let last = index + 1 == entries.len();
        let (sql, changes) = match (last, backend) {
            (false, _) => (APPEND, 1),
            (true, Backend::Sqlite) => (APPEND_AND_HEAD_SQLITE, 2),
            (true, Backend::Postgres) => (APPEND_AND_HEAD_POSTGRES, 1),
        };
        let changed = sqlx::query(sql)
            .bind(id)
            .bind(at)
            .bind(&entry.agency)
            .bind(entry.action)
            .bind(entry.sequence.map(to_i64))
            .bind(&entry.sender)
            .bind(&entry.notification_id)
            .bind(&entry.decision)
            .bind(&entry.reason)
            .bind(&peer)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        prev = hash;
        moved = changed == changes;
    }
    if !moved {
        return Err(StoreError::Corrupt(
            "audit_state has no row: the audit chain head is lost".into(),
        ));
    }
    Ok(())
}

/// The columns the walk reads.
const ROW_SELECT: &str = "SELECT id, at, agency, action, sequence, sender, notification_id, \
     decision, reason, peer, prev_hash, hash FROM audit_log";

/// One audit row as stored.
struct StoredRow {
    id: u64,
    at: i64,
    agency: String,
    action: String,
    sequence: Option<u64>,
    sender: String,
    notification_id: String,
    decision: String,
    reason: String,
    peer: String,
    prev_hash: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
}

impl StoredRow {
    fn read(row: &sqlx::any::AnyRow) -> Result<Self, StoreError> {
        let sequence: Option<i64> = row.try_get("sequence")?;
        Ok(Self {
            id: to_u64(row.try_get("id")?, "audit id")?,
            at: row.try_get("at")?,
            agency: row.try_get("agency")?,
            action: row.try_get("action")?,
            // A negative sequence cannot be hashed as written: it is
            // covered as its bit pattern, so the hash still pins it.
            sequence: sequence.map(|s| s as u64),
            sender: row.try_get("sender")?,
            notification_id: row.try_get("notification_id")?,
            decision: row.try_get("decision")?,
            reason: row.try_get("reason")?,
            peer: row.try_get("peer")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn fields(&self) -> ChainFields<'_> {
        ChainFields {
            id: self.id,
            at: self.at,
            actor: &self.agency,
            action: &self.action,
            sequence: self.sequence,
            sender: &self.sender,
            notification_id: &self.notification_id,
            outcome: &self.decision,
            reason: &self.reason,
            peer: &self.peer,
        }
    }
}

impl Store {
    /// Signs the chain head with `key` and stores the checkpoint, unless
    /// the latest checkpoint already covers it (then `None`). Runs under
    /// the audit lock, so the head it signs is one every replica agrees
    /// on.
    pub async fn audit_checkpoint(
        &self,
        key: std::sync::Arc<GatewayKey>,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let backend = self.backend;
        self.write("audit_checkpoint", move |conn| {
            Box::pin(async move {
                lock_audit(conn, backend).await?;
                let head = head_in(conn).await?;
                if head.last_id == 0 {
                    return Ok(None);
                }
                let covered: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(row_id) FROM audit_checkpoints")
                        .fetch_one(&mut *conn)
                        .await?;
                if covered.is_some_and(|covered| covered >= head.last_id) {
                    return Ok(None);
                }
                let checkpoint = Checkpoint::sign(
                    &key,
                    to_u64(head.last_id, "audit id")?,
                    head.last_hash,
                    Instant::now().unix_micros(),
                );
                sqlx::query(
                    "INSERT INTO audit_checkpoints (row_id, row_hash, at, key_id, signature) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(head.last_id)
                .bind(&checkpoint.row_hash)
                .bind(checkpoint.at)
                .bind(&checkpoint.key_id)
                .bind(&checkpoint.signature)
                .execute(&mut *conn)
                .await?;
                Ok(Some(checkpoint))
            })
        })
        .await
    }

    /// The latest stored checkpoint, if any.
    pub async fn latest_audit_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        latest_checkpoint(&mut conn).await
    }

    /// The last audit row appended: the recorded head, or a higher stored
    /// row; 0 when the log is empty.
    pub async fn audit_last_id(&self) -> Result<u64, StoreError> {
        let last: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(last_id), 0) FROM audit_state WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let stored: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        to_u64(last.max(stored), "audit id")
    }

    /// The stored hash of audit row `id`, if the row exists and has one.
    pub async fn audit_row_hash(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let hash: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
                .bind(to_i64(id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(hash.flatten())
    }

    /// Rows appended since the latest checkpoint.
    pub async fn audit_rows_since_checkpoint(&self) -> Result<u64, StoreError> {
        let last: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(last_id), 0) FROM audit_state WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let covered: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(row_id), 0) FROM audit_checkpoints")
                .fetch_one(&self.pool)
                .await?;
        to_u64(last.saturating_sub(covered).max(0), "rows")
    }

    /// Links rows written before the audit chain existed, once (a no-op
    /// when the chain has a head).
    pub(crate) async fn link_unchained_audit(&self) -> Result<(), StoreError> {
        let backend = self.backend;
        self.write("link_unchained_audit", move |conn| {
            Box::pin(async move {
                lock_audit(conn, backend).await?;
                head_in(conn).await.map(|_| ())
            })
        })
        .await
    }

    /// Walks the audit chain in id order and reports the first row
    /// changed, deleted, inserted or reordered, a log cut short before
    /// its recorded head or a signed checkpoint, checkpoints whose
    /// signature does not verify, and append-only triggers that are
    /// missing. Holds no lock: it may run beside a live gateway.
    pub async fn verify_audit(
        &self,
        options: &AuditVerifyOptions,
        progress: &dyn Progress,
    ) -> Result<AuditReport, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Walk {
            conn: &mut conn,
            backend: self.backend,
        }
        .verify(options, progress)
        .await
    }

    /// [`Store::verify_audit`] of the last `rows` rows only (with the
    /// checkpoints and triggers): the start-up check.
    pub async fn verify_audit_tail(
        &self,
        rows: u64,
        public_key: Option<[u8; 32]>,
    ) -> Result<AuditReport, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        let options = AuditVerifyOptions {
            from_id: to_u64(last, "audit id")?.saturating_sub(rows),
            public_key,
            checkpoint_file: None,
        };
        self.verify_audit(&options, &super::verify::NoProgress)
            .await
    }
}

/// The latest stored checkpoint, if any.
pub(crate) async fn latest_checkpoint(
    conn: &mut AnyConnection,
) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(
        "SELECT row_id, row_hash, at, key_id, signature FROM audit_checkpoints \
         ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(Checkpoint {
            row_id: to_u64(row.try_get("row_id")?, "row_id")?,
            row_hash: row.try_get("row_hash")?,
            at: row.try_get("at")?,
            key_id: row.try_get("key_id")?,
            signature: row.try_get("signature")?,
        })
    })
    .transpose()
}

/// One walk of the audit chain (`audit verify`, the start-up check, the
/// check of a copy) over one connection, which may be inside a
/// transaction.
pub(crate) struct Walk<'c> {
    /// Where the rows are read.
    pub(crate) conn: &'c mut AnyConnection,
    /// Which triggers to look for.
    pub(crate) backend: Backend,
}

impl Walk<'_> {
    /// [`Store::verify_audit`], reading through the walk's connection.
    pub(crate) async fn verify(
        &mut self,
        options: &AuditVerifyOptions,
        progress: &dyn Progress,
    ) -> Result<AuditReport, StoreError> {
        let mut report = AuditReport {
            from_id: options.from_id,
            ..AuditReport::default()
        };
        // What the gateway had recorded before the walk began: rows
        // appended during the walk are checked when it reaches them.
        let head: Option<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT last_id, last_hash FROM audit_state WHERE id = 1")
                .fetch_optional(&mut *self.conn)
                .await?;
        let stored_checkpoint = latest_checkpoint(self.conn).await?;
        let from = to_i64(options.from_id);
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE id > $1")
            .bind(from)
            .fetch_one(&mut *self.conn)
            .await?;
        progress.start(to_u64(total, "count")?);

        // The row the walk continues from: the genesis, or the last row at
        // or below `from` (its own link is outside the walk).
        let mut prev: Option<(u64, Vec<u8>)> = if from == 0 {
            Some((0, GENESIS.to_vec()))
        } else {
            let row: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT id, hash FROM audit_log WHERE id <= $1 ORDER BY id DESC LIMIT 1",
            )
            .bind(from)
            .fetch_optional(&mut *self.conn)
            .await?;
            match row {
                Some((id, Some(hash))) => Some((to_u64(id, "audit id")?, hash)),
                _ => None,
            }
        };
        let mut lookups = 0_usize;
        let mut after = from;
        let mut last: Option<StoredRow> = None;
        loop {
            let rows = sqlx::query(&format!(
                "{ROW_SELECT} WHERE id > $1 ORDER BY id LIMIT {PAGE}"
            ))
            .bind(after)
            .fetch_all(&mut *self.conn)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let row = StoredRow::read(row)?;
                self.check_row(&row, prev.as_ref(), &mut lookups, &mut report)
                    .await?;
                prev = row.hash.clone().map(|hash| (row.id, hash));
                report.rows_checked += 1;
                progress.advance();
                after = to_i64(row.id);
                last = Some(row);
            }
        }
        report.last_id = match &last {
            Some(row) => Some(row.id),
            None => {
                let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit_log")
                    .fetch_one(&mut *self.conn)
                    .await?;
                id.map(|id| to_u64(id, "audit id")).transpose()?
            }
        };
        let last_id = report.last_id.unwrap_or(0);
        match head {
            None => report.push(
                Tampering::Truncated,
                None,
                "audit_state has no row: the recorded chain head was deleted".into(),
            ),
            Some((recorded, _)) if to_u64(recorded, "last_id")? > last_id => report.push(
                Tampering::Truncated,
                Some(last_id + 1),
                format!("the log ends at row {last_id}; the gateway recorded appending up to row {recorded}"),
            ),
            Some((recorded, Some(hash)))
                if to_u64(recorded, "last_id")? == last_id
                    && last.as_ref().is_some_and(|row| row.hash.as_ref() != Some(&hash)) =>
            {
                report.push(
                    Tampering::Changed,
                    Some(last_id),
                    "the last row's hash is not the head the gateway recorded".into(),
                );
            }
            Some(_) => {}
        }
        if let Some(checkpoint) = stored_checkpoint {
            self.check_checkpoint("database".into(), &checkpoint, options, &mut report)
                .await?;
        }
        if let Some((source, checkpoint)) = &options.checkpoint_file {
            self.check_checkpoint(source.clone(), checkpoint, options, &mut report)
                .await?;
        }
        self.check_triggers(&mut report).await?;
        Ok(report)
    }

    /// Checks one row against its own hash and its link to the row before.
    async fn check_row(
        &mut self,
        row: &StoredRow,
        prev: Option<&(u64, Vec<u8>)>,
        lookups: &mut usize,
        report: &mut AuditReport,
    ) -> Result<(), StoreError> {
        let (Some(hash), Some(prev_hash)) = (&row.hash, &row.prev_hash) else {
            report.push(
                Tampering::Inserted,
                Some(row.id),
                "the row has no hash: the gateway did not write it".into(),
            );
            return Ok(());
        };
        if let Some((prev_id, prev_stored)) = prev
            && prev_hash != prev_stored
        {
            let (kind, detail) = self
                .classify_link(row.id, *prev_id, prev_hash, lookups)
                .await?;
            report.push(kind, Some(row.id), detail);
            return Ok(());
        }
        if row_hash(prev_hash, &row.fields()).as_slice() != hash.as_slice() {
            report.push(
                Tampering::Changed,
                Some(row.id),
                "the row's content does not match its hash".into(),
            );
        }
        Ok(())
    }

    /// Why row `id`'s link (`link`) does not name row `prev_id`, the row
    /// before it.
    async fn classify_link(
        &mut self,
        id: u64,
        prev_id: u64,
        link: &[u8],
        lookups: &mut usize,
    ) -> Result<(Tampering, String), StoreError> {
        let named: Option<u64> = if link == GENESIS {
            Some(0)
        } else if *lookups < MAX_LOOKUPS {
            *lookups += 1;
            let found: Option<i64> =
                sqlx::query_scalar("SELECT id FROM audit_log WHERE hash = $1 ORDER BY id LIMIT 1")
                    .bind(link)
                    .fetch_optional(&mut *self.conn)
                    .await?;
            found.map(|id| to_u64(id, "audit id")).transpose()?
        } else {
            None
        };
        let named_text = match named {
            Some(0) => "the start of the chain".to_owned(),
            Some(named) => format!("row {named}"),
            None => "no row in the log".to_owned(),
        };
        if named.is_some_and(|named| named > id) {
            return Ok((
                Tampering::Reordered,
                format!("its link names {named_text}, which comes after it"),
            ));
        }
        if id > prev_id + 1 && named.is_none() {
            let missing = if id == prev_id + 2 {
                format!("row {} is", prev_id + 1)
            } else {
                format!("rows {} to {} are", prev_id + 1, id - 1)
            };
            return Ok((
                Tampering::Deleted,
                format!("{missing} missing, and its link names {named_text}"),
            ));
        }
        Ok((
            Tampering::Inserted,
            format!("its link names {named_text}, not row {prev_id} before it"),
        ))
    }

    /// Compares `checkpoint` with the chain and verifies its signature.
    async fn check_checkpoint(
        &mut self,
        source: String,
        checkpoint: &Checkpoint,
        options: &AuditVerifyOptions,
        report: &mut AuditReport,
    ) -> Result<(), StoreError> {
        let signature_valid = options
            .public_key
            .map(|key| checkpoint.signature_verifies(&key));
        if signature_valid == Some(false) {
            report.push(
                Tampering::Checkpoint,
                Some(checkpoint.row_id),
                format!(
                    "the {source} checkpoint's signature does not verify with the gateway's key"
                ),
            );
        }
        let hash: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
                .bind(to_i64(checkpoint.row_id))
                .fetch_optional(&mut *self.conn)
                .await?;
        let matches = match hash {
            None => {
                let last = report.last_id.unwrap_or(0);
                if checkpoint.row_id > last {
                    report.push(
                        Tampering::Truncated,
                        Some(last + 1),
                        format!(
                            "the log ends at row {last}; the {source} checkpoint covers row {}",
                            checkpoint.row_id
                        ),
                    );
                } else {
                    report.push(
                        Tampering::Deleted,
                        Some(checkpoint.row_id),
                        format!("the row the {source} checkpoint covers is missing"),
                    );
                }
                false
            }
            Some(hash) if hash.as_deref() == Some(checkpoint.row_hash.as_slice()) => true,
            Some(_) => {
                report.push(
                    Tampering::Changed,
                    Some(checkpoint.row_id),
                    format!(
                        "the row's hash is not the one the {source} checkpoint signed: the chain up to it was rewritten"
                    ),
                );
                false
            }
        };
        report.checkpoints.push(CheckpointCheck {
            source,
            row_id: checkpoint.row_id,
            signature_valid,
            matches,
        });
        Ok(())
    }

    /// Reports every append-only trigger that is missing (or, on
    /// PostgreSQL, disabled).
    async fn check_triggers(&mut self, report: &mut AuditReport) -> Result<(), StoreError> {
        let (expected, present): (&[&str], Vec<String>) = match self.backend {
            Backend::Sqlite => (
                &SQLITE_TRIGGERS,
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' \
                     AND tbl_name IN ('audit_log', 'audit_checkpoints')",
                )
                .fetch_all(&mut *self.conn)
                .await?,
            ),
            Backend::Postgres => (
                &POSTGRES_TRIGGERS,
                sqlx::query_scalar(
                    "SELECT t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                     WHERE c.oid IN (to_regclass('audit_log'), to_regclass('audit_checkpoints')) \
                     AND NOT t.tgisinternal AND t.tgenabled <> 'D'",
                )
                .fetch_all(&mut *self.conn)
                .await?,
            ),
        };
        let present: HashSet<String> = present.into_iter().collect();
        for name in expected {
            if present.contains(*name) {
                report.triggers.push((*name).to_owned());
            } else {
                report.push(
                    Tampering::Trigger,
                    None,
                    format!("the append-only trigger {name} is missing or disabled"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
