//! The store scan behind `liandong-gateway verify-store` and the start-up
//! check: every row in sequence order, against its hash, its routing
//! columns, its chain link, its place in time and the high-water mark.
//!
//! Sequences skipped by a recorded fence (`store::fence`) are declared
//! gaps: reported as fenced, not missing, and the chain is followed across
//! them. A fence that its audit row does not confirm declares nothing.
//!
//! A scan reads pages of rows and holds no lock: it may run beside a live
//! gateway (rows stored during the scan are checked when it reaches them).
//! It reads through the connection it is given, so `migrate-store` runs it
//! inside the transaction that copies a store. It reports; it never
//! repairs.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::fence;
use super::integrity::{self, Violation};
use super::{StoreError, raw_row, to_i64, to_u64};

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
    /// Sequences skipped by recorded fences (declared gaps, after a
    /// restore): not missing. Those above the scan's start.
    pub fenced: Vec<SequenceRange>,
    /// Fences whose `SEQUENCES_FENCED` audit row is missing or says
    /// otherwise: added behind the gateway's back. Their ranges count as
    /// missing.
    pub unrecorded_fences: Vec<SequenceRange>,
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.changed.is_empty()
            && self.missing.is_empty()
            && self.out_of_order.is_empty()
            && self.state.is_none()
            && self.unrecorded_fences.is_empty()
    }

    /// Sequences declared fenced.
    pub fn fenced_count(&self) -> u64 {
        self.fenced.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Sequences reported missing.
    pub fn missing_count(&self) -> u64 {
        self.missing.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// One line: counts and the first sequences of each kind.
    pub fn summary(&self) -> String {
        let fenced = if self.fenced.is_empty() {
            String::new()
        } else {
            format!(
                " ({} sequences fenced, declared: {})",
                self.fenced_count(),
                ranges(&self.fenced)
            )
        };
        if self.is_clean() {
            return format!(
                "{} rows checked, no problem found{fenced}",
                self.rows_scanned
            );
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
            parts.push(format!(
                "{} missing (sequence {})",
                self.missing_count(),
                ranges(&self.missing)
            ));
        }
        if !self.unrecorded_fences.is_empty() {
            parts.push(format!(
                "{} fence(s) not recorded in the audit log (sequence {})",
                self.unrecorded_fences.len(),
                ranges(&self.unrecorded_fences)
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
        parts.join("; ") + &fenced
    }
}

/// The first five ranges: `4`, `7-9`.
fn ranges(ranges: &[SequenceRange]) -> String {
    ranges
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
        .join(", ")
}

/// The ranges declared by confirmed fences, for the scan to leave out of
/// what is missing.
struct Declared(Vec<SequenceRange>);

impl Declared {
    /// The parts of `first..=last` no fence declares.
    fn undeclared(&self, first: u64, last: u64) -> Vec<SequenceRange> {
        let mut out = Vec::new();
        let mut next = first;
        for range in &self.0 {
            if range.last < next || range.first > last {
                continue;
            }
            if range.first > next {
                out.push(SequenceRange {
                    first: next,
                    last: range.first - 1,
                });
            }
            next = next.max(range.last.saturating_add(1));
            if next > last {
                return out;
            }
        }
        if next <= last {
            out.push(SequenceRange { first: next, last });
        }
        out
    }

    /// True when every sequence of `first..=last` is declared (or the
    /// range is empty).
    fn covers(&self, first: u64, last: u64) -> bool {
        first > last || self.undeclared(first, last).is_empty()
    }

    /// The declared range holding `sequence`, if any.
    fn holding(&self, sequence: u64) -> Option<&SequenceRange> {
        self.0
            .iter()
            .find(|r| r.first <= sequence && sequence <= r.last)
    }
}

/// The row before, as far as the chain needs it.
struct Previous {
    sequence: u64,
    received_at: i64,
    chain: Option<Vec<u8>>,
}

/// Scans rows with a sequence above `from`, reading through `conn`.
pub(crate) async fn scan(
    conn: &mut AnyConnection,
    from: u64,
    progress: &dyn Progress,
) -> Result<VerifyReport, StoreError> {
    let (high_water, head) = state(conn).await?;
    let mut report = VerifyReport {
        from_sequence: from,
        high_water,
        ..VerifyReport::default()
    };
    if high_water.is_none() {
        report.state =
            Some("the high-water mark (store_state) is missing: sequences could be reused".into());
    }
    let mut declared = Vec::new();
    for checked in fence::checked(conn).await? {
        let Some(range) = checked.fence.range() else {
            continue;
        };
        if !checked.recorded {
            report.unrecorded_fences.push(range);
        } else {
            declared.push(range);
            if range.last > from {
                report.fenced.push(range);
            }
        }
    }
    declared.sort_by_key(|r| r.first);
    let declared = Declared(declared);
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE sequence > $1")
        .bind(to_i64(from))
        .fetch_one(&mut *conn)
        .await?;
    progress.start(to_u64(total, "count")?);

    let mut previous = if from == 0 {
        None
    } else {
        sqlx::query(
            "SELECT sequence, received_at, chain FROM notifications \
             WHERE sequence <= $1 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(to_i64(from))
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| -> Result<Previous, StoreError> {
            Ok(Previous {
                sequence: to_u64(row.try_get("sequence")?, "sequence")?,
                received_at: row.try_get("received_at")?,
                chain: row.try_get("chain")?,
            })
        })
        .transpose()?
        // Only the row just below the scan, or one separated from it by
        // fenced sequences alone, is linked to.
        .filter(|p| declared.covers(p.sequence + 1, from))
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
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let raw = raw_row(row)?;
            report.rows_scanned += 1;
            progress.advance();
            if raw.sequence > expected {
                report
                    .missing
                    .extend(declared.undeclared(expected, raw.sequence - 1));
            }
            // The chain runs across fenced sequences: the row after a
            // declared gap links to the row before it.
            let link_to = match &previous {
                _ if raw.sequence == 1 => Some(None),
                Some(p)
                    if p.chain.is_some() && declared.covers(p.sequence + 1, raw.sequence - 1) =>
                {
                    Some(p.chain.as_deref())
                }
                _ => None,
            };
            let problem = if let Some(range) = declared.holding(raw.sequence) {
                Some((
                    true,
                    format!(
                        "stored inside the fenced range {}-{}: no gateway assigned it",
                        range.first, range.last
                    ),
                ))
            } else if let Err(violation) = integrity::verify_content(&raw) {
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
        report.missing.extend(declared.undeclared(expected, mark));
    }
    // Rows stored while the scan ran are above the mark read at its start;
    // only those above the mark read now were never assigned.
    if !above_mark.is_empty() {
        let (now, _) = state(conn).await?;
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
    // The newest row carries the recorded head when nothing but fenced
    // sequences lies between it and the mark.
    if let (Some(mark), Some(last), Some(head)) = (high_water, &previous, head) {
        let already = report
            .changed
            .iter()
            .chain(&report.out_of_order)
            .any(|p| p.sequence == last.sequence);
        if last.sequence <= mark
            && declared.covers(last.sequence + 1, mark)
            && last.chain.as_deref() != Some(head.as_slice())
            && !already
        {
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
async fn state(conn: &mut AnyConnection) -> Result<(Option<u64>, Option<Vec<u8>>), StoreError> {
    let row = sqlx::query("SELECT high_water, last_chain FROM store_state WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        None => Ok((None, None)),
        Some(row) => Ok((
            Some(to_u64(row.try_get("high_water")?, "high_water")?),
            row.try_get("last_chain")?,
        )),
    }
}

#[cfg(test)]
mod tests;
