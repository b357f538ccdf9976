//! The store scan behind `liandong-gateway verify-store` and the start-up
//! check: every row in sequence order, against its hash, its routing
//! columns, its chain link, its place in time and the high-water mark.
//!
//! A scan reads pages of rows and holds no lock: it may run beside a live
//! gateway (rows stored during the scan are checked when it reaches them).
//! It reports; it never repairs.

use serde::Serialize;
use sqlx::Row;

use super::integrity::{self, Violation};
use super::{Store, StoreError, raw_row, to_i64, to_u64};

/// Rows read per page.
const PAGE: i64 = 200;

/// Told how far a scan got (the command's progress bar).
pub trait Progress: Sync {
    /// The scan will look at `rows` rows.
    fn start(&self, rows: u64);
    /// One more row was looked at.
    fn advance(&self);
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _rows: u64) {}
    fn advance(&self) {}
}

/// One row and what is wrong with it (never its content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowProblem {
    /// The row's sequence.
    pub sequence: u64,
    /// What is wrong, in words.
    pub problem: String,
}

/// Sequences `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SequenceRange {
    /// The first missing sequence.
    pub first: u64,
    /// The last missing sequence.
    pub last: u64,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The scan covered sequences above this one (0: the whole store).
    pub from_sequence: u64,
    /// The highest sequence ever assigned, as recorded.
    pub high_water: Option<u64>,
    /// Rows looked at.
    pub rows_scanned: u64,
    /// Rows whose content, routing columns or chain link were edited, or
    /// that no gateway stored (above the high-water mark).
    pub changed: Vec<RowProblem>,
    /// Sequences below the high-water mark with no row: deleted.
    pub missing: Vec<SequenceRange>,
    /// Rows whose chain link does not follow from the row before, or whose
    /// `received_at` is earlier than the row before's: moved, reordered,
    /// or re-timed.
    pub out_of_order: Vec<RowProblem>,
    /// A problem with the recorded high-water mark itself.
    pub state: Option<String>,
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.changed.is_empty()
            && self.missing.is_empty()
            && self.out_of_order.is_empty()
            && self.state.is_none()
    }

    /// Sequences reported missing.
    pub fn missing_count(&self) -> u64 {
        self.missing.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// One line: counts and the first sequences of each kind.
    pub fn summary(&self) -> String {
        if self.is_clean() {
            return format!("{} rows checked, no problem found", self.rows_scanned);
        }
        let first = |problems: &[RowProblem]| {
            problems
                .iter()
                .take(5)
                .map(|p| p.sequence.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = vec![format!("{} rows checked", self.rows_scanned)];
        if !self.changed.is_empty() {
            parts.push(format!(
                "{} changed (sequence {})",
                self.changed.len(),
                first(&self.changed)
            ));
        }
        if !self.missing.is_empty() {
            let ranges = self
                .missing
                .iter()
                .take(5)
                .map(|r| {
                    if r.first == r.last {
                        r.first.to_string()
                    } else {
                        format!("{}-{}", r.first, r.last)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "{} missing (sequence {ranges})",
                self.missing_count()
            ));
        }
        if !self.out_of_order.is_empty() {
            parts.push(format!(
                "{} out of order (sequence {})",
                self.out_of_order.len(),
                first(&self.out_of_order)
            ));
        }
        if let Some(state) = &self.state {
            parts.push(state.clone());
        }
        parts.join("; ")
    }
}

/// The row before, as far as the chain needs it.
struct Previous {
    sequence: u64,
    received_at: i64,
    chain: Option<Vec<u8>>,
}

/// Scans rows with a sequence above `from`.
pub(crate) async fn scan(
    store: &Store,
    from: u64,
    progress: &dyn Progress,
) -> Result<VerifyReport, StoreError> {
    let (high_water, head) = state(store).await?;
    let mut report = VerifyReport {
        from_sequence: from,
        high_water,
        ..VerifyReport::default()
    };
    if high_water.is_none() {
        report.state =
            Some("the high-water mark (store_state) is missing: sequences could be reused".into());
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE sequence > $1")
        .bind(to_i64(from))
        .fetch_one(&store.pool)
        .await?;
    progress.start(to_u64(total, "count")?);

    let mut previous = if from == 0 {
        None
    } else {
        sqlx::query("SELECT sequence, received_at, chain FROM notifications WHERE sequence = $1")
            .bind(to_i64(from))
            .fetch_optional(&store.pool)
            .await?
            .map(|row| -> Result<Previous, StoreError> {
                Ok(Previous {
                    sequence: to_u64(row.try_get("sequence")?, "sequence")?,
                    received_at: row.try_get("received_at")?,
                    chain: row.try_get("chain")?,
                })
            })
            .transpose()?
    };
    let mut expected = from + 1;
    let mut above_mark = Vec::new();
    loop {
        let rows = sqlx::query(
            "SELECT sequence, sender, notification_id, case_ref, event, confidentiality, region, \
             recipients, received_at, content_hash, payload, chain, copies FROM notifications \
             WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .bind(to_i64(expected - 1))
        .bind(PAGE)
        .fetch_all(&store.pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let raw = raw_row(row)?;
            report.rows_scanned += 1;
            progress.advance();
            if raw.sequence > expected {
                report.missing.push(SequenceRange {
                    first: expected,
                    last: raw.sequence - 1,
                });
            }
            let link_to = match &previous {
                _ if raw.sequence == 1 => Some(None),
                Some(p) if p.sequence + 1 == raw.sequence && p.chain.is_some() => {
                    Some(p.chain.as_deref())
                }
                _ => None,
            };
            let problem = if let Err(violation) = integrity::verify_content(&raw) {
                Some((true, violation.to_string()))
            } else if let Some(p) = previous
                .as_ref()
                .filter(|p| raw.received_at < p.received_at)
            {
                Some((
                    false,
                    format!("received_at is earlier than sequence {}'s", p.sequence),
                ))
            } else {
                match integrity::verify_link(&raw, link_to) {
                    Ok(()) => None,
                    Err(Violation::ChainBroken) => {
                        Some((false, Violation::ChainBroken.to_string()))
                    }
                    Err(violation) => Some((true, violation.to_string())),
                }
            };
            match problem {
                Some((true, problem)) => report.changed.push(RowProblem {
                    sequence: raw.sequence,
                    problem,
                }),
                Some((false, problem)) => report.out_of_order.push(RowProblem {
                    sequence: raw.sequence,
                    problem,
                }),
                None => {}
            }
            if high_water.is_some_and(|mark| raw.sequence > mark) {
                above_mark.push(raw.sequence);
            }
            expected = raw.sequence + 1;
            previous = Some(Previous {
                sequence: raw.sequence,
                received_at: raw.received_at,
                chain: raw.chain,
            });
        }
    }
    if let Some(mark) = high_water.filter(|mark| expected <= *mark) {
        report.missing.push(SequenceRange {
            first: expected,
            last: mark,
        });
    }
    // Rows stored while the scan ran are above the mark read at its start;
    // only those above the mark read now were never assigned.
    if !above_mark.is_empty() {
        let (now, _) = state(store).await?;
        for sequence in above_mark
            .into_iter()
            .filter(|s| now.is_none_or(|m| *s > m))
        {
            report.changed.push(RowProblem {
                sequence,
                problem: Violation::AboveHighWater.to_string(),
            });
        }
    }
    if let (Some(mark), Some(last), Some(head)) = (high_water, &previous, head) {
        let already = report
            .changed
            .iter()
            .chain(&report.out_of_order)
            .any(|p| p.sequence == last.sequence);
        if last.sequence == mark && last.chain.as_deref() != Some(head.as_slice()) && !already {
            report.changed.push(RowProblem {
                sequence: last.sequence,
                problem: "chain link differs from the recorded chain head".into(),
            });
        }
    }
    report.changed.sort_by_key(|p| p.sequence);
    Ok(report)
}

/// The recorded high-water mark and chain head.
async fn state(store: &Store) -> Result<(Option<u64>, Option<Vec<u8>>), StoreError> {
    let row = sqlx::query("SELECT high_water, last_chain FROM store_state WHERE id = 1")
        .fetch_optional(&store.pool)
        .await?;
    match row {
        None => Ok((None, None)),
        Some(row) => Ok((
            Some(to_u64(row.try_get("high_water")?, "high_water")?),
            row.try_get("last_chain")?,
        )),
    }
}
