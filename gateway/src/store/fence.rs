//! Sequence fences: after a store was restored from an older backup,
//! agencies may already hold notifications with sequences the restored
//! store never saw. A fence raises the high-water mark past them, so that
//! none of those sequences is ever assigned again (a receiver that keeps
//! what it handled by sequence would otherwise take a new notification for
//! one it already has).
//!
//! A fence only raises the mark, never lowers it; it is stored in
//! `sequence_fences` and recorded in the audit log (`SEQUENCES_FENCED`) in
//! the same transaction, under the publish lock. The range it skips is a
//! declared gap for `verify-store` and the start-up check, as long as its
//! audit row confirms it. A fence also acknowledges an audit checkpoint
//! file signed before it that is ahead of the restored store (see
//! `audit::checkpoints::restore_check`).
//!
//! This module never deletes or rewrites a row.

use sqlx::{AnyConnection, Row};

use liandong_core::domain::Instant;

use super::verify::SequenceRange;
use super::{Store, StoreError, audit, lock_publish, to_i64, to_u64};

/// The longest reason a fence takes, in bytes.
pub const MAX_REASON_BYTES: usize = 512;

/// A recorded fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Its id, in the order fences were declared.
    pub id: u64,
    /// The first sequence it skips: one above the latest assigned then.
    pub first: u64,
    /// The high-water mark it set: the last sequence it skips (below
    /// `first` when it skipped none).
    pub last: u64,
    /// When it was declared, microseconds since the Unix epoch.
    pub at: i64,
    /// The operator's reason.
    pub reason: String,
    /// Its `SEQUENCES_FENCED` audit row.
    pub audit_id: u64,
}

impl Fence {
    /// The sequences it skips; `None` when it skipped none (it only
    /// acknowledged a restore).
    pub fn range(&self) -> Option<SequenceRange> {
        (self.first <= self.last).then_some(SequenceRange {
            first: self.first,
            last: self.last,
        })
    }

    /// How many sequences it skips.
    pub fn skipped(&self) -> u64 {
        self.range().map_or(0, |r| r.last - r.first + 1)
    }
}

/// Why a fence was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The fence would lower the mark.
    #[error(
        "--above {above} is below the latest sequence already assigned ({latest}): a fence only raises the high-water mark; give --above {latest} or more"
    )]
    Below {
        /// The mark asked for.
        above: u64,
        /// The latest sequence assigned.
        latest: u64,
    },
    /// The reason is empty or too long.
    #[error("--reason: {0}")]
    Reason(String),
    /// The store failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// A fence and whether its audit row confirms it.
#[derive(Debug, Clone)]
pub(crate) struct CheckedFence {
    pub(crate) fence: Fence,
    /// Its audit row exists and records exactly this fence.
    pub(crate) recorded: bool,
}

const FENCE_SELECT: &str =
    "SELECT id, first_sequence, last_sequence, at, reason, audit_id FROM sequence_fences";

fn read_fence(row: &sqlx::any::AnyRow) -> Result<Fence, StoreError> {
    Ok(Fence {
        id: to_u64(row.try_get("id")?, "fence id")?,
        first: to_u64(row.try_get("first_sequence")?, "first_sequence")?,
        last: to_u64(row.try_get("last_sequence")?, "last_sequence")?,
        at: row.try_get("at")?,
        reason: row.try_get("reason")?,
        audit_id: to_u64(row.try_get("audit_id")?, "audit_id")?,
    })
}

/// Every fence, in the order declared, each checked against its audit
/// row.
pub(crate) async fn checked(conn: &mut AnyConnection) -> Result<Vec<CheckedFence>, StoreError> {
    let rows = sqlx::query(&format!("{FENCE_SELECT} ORDER BY id"))
        .fetch_all(&mut *conn)
        .await?;
    let mut checked = Vec::with_capacity(rows.len());
    for row in &rows {
        let fence = read_fence(row)?;
        let expected = crate::audit::sequences_fenced(fence.first, fence.last, &fence.reason);
        let audit = sqlx::query(
            "SELECT agency, action, sequence, sender, notification_id, decision, reason \
             FROM audit_log WHERE id = $1",
        )
        .bind(to_i64(fence.audit_id))
        .fetch_optional(&mut *conn)
        .await?;
        let recorded = match audit {
            None => false,
            Some(row) => {
                let sequence: Option<i64> = row.try_get("sequence")?;
                row.try_get::<String, _>("agency")? == expected.agency
                    && row.try_get::<String, _>("action")? == expected.action
                    && sequence == expected.sequence.map(to_i64)
                    && row.try_get::<String, _>("sender")? == expected.sender
                    && row.try_get::<String, _>("notification_id")? == expected.notification_id
                    && row.try_get::<String, _>("decision")? == expected.decision
                    && row.try_get::<String, _>("reason")? == expected.reason
            }
        };
        checked.push(CheckedFence { fence, recorded });
    }
    Ok(checked)
}

impl Store {
    /// Every recorded fence, in the order declared.
    pub async fn fences(&self) -> Result<Vec<Fence>, StoreError> {
        let rows = sqlx::query(&format!("{FENCE_SELECT} ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(read_fence).collect()
    }

    /// The latest fence its audit row confirms, if any.
    pub async fn latest_recorded_fence(&self) -> Result<Option<Fence>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        Ok(checked(&mut conn)
            .await?
            .into_iter()
            .filter(|checked| checked.recorded)
            .map(|checked| checked.fence)
            .next_back())
    }

    /// Raises the high-water mark to `above` (the next notification gets
    /// `above + 1`), records the fence and its `SEQUENCES_FENCED` audit
    /// row in one transaction, under the publish lock. `above` equal to the
    /// latest sequence skips nothing but is recorded all the same (it
    /// acknowledges a restore). Refused, with nothing written, when
    /// `above` is below the latest sequence assigned or the reason is
    /// empty or longer than [`MAX_REASON_BYTES`].
    pub async fn fence_sequences(&self, above: u64, reason: &str) -> Result<Fence, FenceError> {
        let reason = reason.trim().to_owned();
        if reason.is_empty() {
            return Err(FenceError::Reason(
                "say why (for example which backup was restored, and from where the highest sequence was read)".into(),
            ));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(FenceError::Reason(format!(
                "at most {MAX_REASON_BYTES} bytes"
            )));
        }
        if i64::try_from(above).is_err() {
            return Err(FenceError::Reason(format!(
                "--above {above} is beyond the largest sequence a store holds"
            )));
        }
        let backend = self.backend();
        self.write("fence_sequences", move |conn| {
            Box::pin(async move {
                lock_publish(conn, backend).await?;
                let state = sqlx::query(
                    "SELECT high_water, (SELECT COALESCE(MAX(sequence), 0) FROM notifications) \
                     AS max_sequence FROM store_state WHERE id = 1",
                )
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(
                        "store_state has no row: the high-water mark is lost".into(),
                    )
                })?;
                let high_water = to_u64(state.try_get("high_water")?, "high_water")?;
                let max = to_u64(state.try_get("max_sequence")?, "sequence")?;
                let latest = high_water.max(max);
                if above < latest {
                    return Ok(Err(FenceError::Below { above, latest }));
                }
                let at = Instant::now().unix_micros();
                let (first, last) = (latest + 1, above);
                let entry = crate::audit::sequences_fenced(first, last, &reason);
                audit::append_in(conn, backend, &[entry], at).await?;
                let audit_id: i64 =
                    sqlx::query_scalar("SELECT last_id FROM audit_state WHERE id = 1")
                        .fetch_one(&mut *conn)
                        .await?;
                let id: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM sequence_fences")
                        .fetch_one(&mut *conn)
                        .await?;
                sqlx::query("UPDATE store_state SET high_water = $1 WHERE id = 1")
                    .bind(to_i64(last))
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO sequence_fences (id, first_sequence, last_sequence, at, reason, \
                     audit_id) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(to_i64(first))
                .bind(to_i64(last))
                .bind(at)
                .bind(&reason)
                .bind(audit_id)
                .execute(&mut *conn)
                .await?;
                Ok(Ok(Fence {
                    id: to_u64(id, "fence id")?,
                    first,
                    last,
                    at,
                    reason,
                    audit_id: to_u64(audit_id, "audit id")?,
                }))
            })
        })
        .await?
    }
}

#[cfg(test)]
mod tests;
