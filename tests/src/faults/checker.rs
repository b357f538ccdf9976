//! The history checker: from what the harness recorded and what the store
//! holds at the end, lists every broken guarantee, naming the operation,
//! frame or row and the rule.
//!
//! Rules:
//! - `receipt-stored`: every receipt (and every local acceptance by the
//!   adapter) is stored exactly once, with the sequence in its receipt and
//!   the content sent (payload hash checked too);
//! - `sequence-unique`: no two receipts share a sequence;
//! - `refused-not-stored`: a definite refusal stored nothing;
//! - `unknown-resolved`: republishing an unknown outcome's id gives its
//!   original receipt or a fresh store, never a conflict;
//! - `reach`: every stored notification reaches every subscription the
//!   policy entitles to it;
//! - `order`: within a session, first deliveries come in sequence order and
//!   skip nothing that was not acknowledged before;
//! - `redelivery-after-ack`: nothing acknowledged on a session (3 s or
//!   more before) comes again on it;
//! - `policy`: no frame carried more than the rules in force when it was
//!   received allowed (full content, or any frame where nothing was due);
//! - `tamper-served`: content changed behind the gateway's back was never
//!   served.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};

use liandong_core::pb::{self, Confidentiality as Level};

use super::history::{History, Op, Outcome, Violation};
use super::oracle::{Decision, Registry};
use super::workload::{CANARY, RECIPIENT, SUBSCRIPTIONS, key};

/// How long the gateway may take to read an acknowledgement before a
/// redelivery of what it acknowledged counts as a violation.
const ACK_READ_WITHIN: Duration = Duration::from_secs(3);

/// A row of the notifications table, read straight from the store.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its sequence.
    pub sequence: i64,
    /// The sender column.
    pub sender: String,
    /// The notification id column.
    pub notification_id: String,
    /// The stored content hash.
    pub content_hash: Vec<u8>,
    /// The stored payload.
    pub payload: Vec<u8>,
}

/// Reads every row of the notifications table.
pub async fn read_rows(conn: &mut sqlx::AnyConnection) -> anyhow::Result<Vec<Row>> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT sequence, sender, notification_id, content_hash, payload FROM notifications ORDER BY sequence",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Row {
                sequence: r.try_get("sequence")?,
                sender: r.try_get("sender")?,
                notification_id: r.try_get("notification_id")?,
                content_hash: r.try_get("content_hash")?,
                payload: r.try_get("payload")?,
            })
        })
        .collect()
}

/// Whether `op`'s notification must reach subscription `owner` under the
/// dev registry; None when the run's registry changes make it undecidable.
fn expected(history: &History, owner: &str, op: &Op) -> Option<bool> {
    let n = &op.notification;
    let level = Level::try_from(n.confidentiality).unwrap_or(Level::Unspecified);
    // A changed registry may rightly stop RESTRICTED deliveries to the
    // changed agency and its parent while it is in force.
    if !history.epochs.is_empty()
        && level == Level::Restricted
        && (owner == RECIPIENT || owner == "cz-procuratorate")
    {
        return None;
    }
    Some(Registry(None).decide(owner, &op.sender, level, &n.recipients) != Decision::Nothing)
}

/// Every violation of the history against the final store.
pub fn check(history: &History, rows: &[Row]) -> Vec<Violation> {
    let mut violations = history.violations.clone();
    let mut report = |rule: &'static str, at: Option<std::time::Instant>, detail: String| {
        violations.push(Violation {
            rule,
            fault: at.and_then(|at| history.fault_at(at)),
            detail,
        });
    };
    let stored: HashMap<(&str, &str), &Row> = rows
        .iter()
        .map(|r| ((r.sender.as_str(), r.notification_id.as_str()), r))
        .collect();
    let ops: HashMap<(&str, &str), &Op> = history
        .ops
        .iter()
        .map(|op| {
            (
                (op.sender.as_str(), op.notification.notification_id.as_str()),
                op,
            )
        })
        .collect();
    let lost: HashSet<(&str, &str)> = history
        .tamper_lost
        .iter()
        .map(|(s, i)| (s.as_str(), i.as_str()))
        .collect();

    // Receipts, refusals, unknown outcomes.
    let mut by_sequence: HashMap<u64, &Op> = HashMap::new();
    for op in &history.ops {
        let id = op.notification.notification_id.as_str();
        let name = format!("{} {id} ({:?})", op.sender, op.via);
        let row = stored.get(&(op.sender.as_str(), id)).copied();
        if lost.contains(&(op.sender.as_str(), id)) {
            continue;
        }
        // A receipt given when the outcome was resolved at the end of the
        // run is judged as of then, not of the fault the call first met.
        let mut when = Some(op.started);
        let receipt = match (&op.outcome, &op.resolution) {
            (Outcome::Ok { sequence, .. }, _) => Some(*sequence),
            (Outcome::Refused { code }, _) => {
                if let Some(row) = row {
                    report(
                        "refused-not-stored",
                        Some(op.started),
                        format!(
                            "{name} was refused ({code}) but is stored at sequence {}",
                            row.sequence
                        ),
                    );
                }
                None
            }
            (Outcome::Unknown { reason }, resolution) => match resolution {
                Some(Outcome::Ok { sequence, .. }) => {
                    when = None;
                    Some(*sequence)
                }
                Some(Outcome::Refused { code }) => {
                    report(
                        "unknown-resolved",
                        None,
                        format!(
                            "{name}: outcome unknown ({reason}); republishing the same id at the end was refused ({code})"
                        ),
                    );
                    None
                }
                other => {
                    report(
                        "unknown-resolved",
                        None,
                        format!(
                            "{name}: outcome unknown ({reason}); republishing the same id at the end gave no answer ({other:?})"
                        ),
                    );
                    None
                }
            },
            (Outcome::Pending, _) => None,
        };
        let Some(receipt) = receipt else { continue };
        let Some(row) = row else {
            report(
                "receipt-stored",
                when,
                format!("{name} got a receipt (sequence {receipt:?}) but is not in the store"),
            );
            continue;
        };
        if let Some(sequence) = receipt {
            if row.sequence != sequence as i64 {
                report(
                    "receipt-stored",
                    when,
                    format!(
                        "{name}: receipt says sequence {sequence}, the store has it at {}",
                        row.sequence
                    ),
                );
            }
            if let Some(other) = by_sequence.insert(sequence, op)
                && other.notification.notification_id != op.notification.notification_id
            {
                report(
                    "sequence-unique",
                    when,
                    format!(
                        "sequence {sequence} was given to {} {} and to {name}",
                        other.sender, other.notification.notification_id
                    ),
                );
            }
        }
        if Sha256::digest(&row.payload).as_slice() != row.content_hash.as_slice() {
            report(
                "receipt-stored",
                when,
                format!(
                    "{name}: stored payload at sequence {} does not match its content hash",
                    row.sequence
                ),
            );
        }
        match pb::Notification::decode(row.payload.as_slice()) {
            Ok(n) => {
                let sent = &op.notification;
                let same = n.notification_id == sent.notification_id
                    && n.case_ref == sent.case_ref
                    && n.event == sent.event
                    && n.confidentiality == sent.confidentiality
                    && n.recipients == sent.recipients
                    && n.summary == sent.summary
                    && n.sender == op.sender;
                if !same {
                    report(
                        "receipt-stored",
                        when,
                        format!(
                            "{name}: the store holds other content at sequence {}",
                            row.sequence
                        ),
                    );
                }
            }
            Err(_) => report(
                "receipt-stored",
                when,
                format!(
                    "{name}: the payload at sequence {} does not decode",
                    row.sequence
                ),
            ),
        }
    }
    for row in rows {
        if !ops.contains_key(&(row.sender.as_str(), row.notification_id.as_str())) {
            report(
                "receipt-stored",
                None,
                format!(
                    "sequence {} ({} {}) is stored but was never published",
                    row.sequence, row.sender, row.notification_id
                ),
            );
        }
    }

    // What each subscription is owed, by sequence.
    let tampered: HashSet<u64> = history.tampered.iter().copied().collect();
    let owed: HashMap<String, BTreeSet<u64>> = SUBSCRIPTIONS
        .iter()
        .map(|&(owner, name)| {
            let owed = rows
                .iter()
                .filter(|r| !tampered.contains(&(r.sequence as u64)))
                .filter_map(|r| {
                    let op = ops.get(&(r.sender.as_str(), r.notification_id.as_str()))?;
                    (expected(history, owner, op) == Some(true)).then_some(r.sequence as u64)
                })
                .collect();
            (key(owner, name), owed)
        })
        .collect();
    let owner_of = |subscription: &str| {
        subscription
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned()
    };

    // Reach.
    for (subscription, owed) in &owed {
        let got: HashSet<u64> = history
            .frames
            .iter()
            .filter(|f| &f.subscription == subscription)
            .map(|f| f.sequence)
            .collect();
        let missing: Vec<u64> = owed.iter().filter(|s| !got.contains(s)).copied().collect();
        if !missing.is_empty() {
            report(
                "reach",
                None,
                format!(
                    "{subscription} never received {} notification(s) it is entitled to, e.g. sequences {:?}",
                    missing.len(),
                    &missing[..missing.len().min(8)]
                ),
            );
        }
    }

    // Order, gaps and redeliveries, session by session.
    let tampered_live = |at: std::time::Instant| {
        history
            .tampered_live
            .iter()
            .any(|&(from, to)| from <= at && at <= to + Duration::from_secs(1))
    };
    let mut sessions: HashMap<(&str, u32), Vec<usize>> = HashMap::new();
    for (i, f) in history.frames.iter().enumerate() {
        sessions
            .entry((f.subscription.as_str(), f.session))
            .or_default()
            .push(i);
    }
    for ((subscription, session), frames) in &sessions {
        let frames: Vec<_> = frames.iter().map(|&i| &history.frames[i]).collect();
        if frames.iter().any(|f| tampered_live(f.at)) {
            continue;
        }
        let Some(owed) = owed.get(*subscription) else {
            continue;
        };
        let acks: Vec<_> = history
            .acks
            .iter()
            .filter(|a| a.subscription == *subscription)
            .collect();
        let mut seen = HashSet::new();
        let mut last_new: Option<u64> = None;
        for f in frames {
            // On this session: acknowledged well before (an ack the gateway
            // may not have read yet, under load, does not count); on any:
            // sent before at all.
            let acked_before = |sequence: u64, same_session: bool| {
                acks.iter().any(|a| {
                    a.sequence == sequence
                        && if same_session {
                            a.session == *session && a.at + ACK_READ_WITHIN < f.at
                        } else {
                            a.at < f.at
                        }
                })
            };
            if !seen.insert(f.sequence) {
                if acked_before(f.sequence, true) {
                    report(
                        "redelivery-after-ack",
                        Some(f.at),
                        format!(
                            "{subscription} session {session}: sequence {} sent again (attempt {}) after it was acknowledged",
                            f.sequence, f.attempt
                        ),
                    );
                }
                continue;
            }
            if let Some(last) = last_new
                && f.sequence < last
            {
                report(
                    "order",
                    Some(f.at),
                    format!(
                        "{subscription} session {session}: sequence {} after {last}",
                        f.sequence
                    ),
                );
            }
            let skipped: Vec<u64> = owed
                .range(last_new.map_or(0, |l| l + 1)..f.sequence)
                .filter(|&&s| !seen.contains(&s) && !acked_before(s, false))
                .copied()
                .collect();
            if !skipped.is_empty() {
                report(
                    "order",
                    Some(f.at),
                    format!(
                        "{subscription} session {session}: sequence {} delivered while {} earlier one(s) it is owed were never acknowledged, e.g. {:?}",
                        f.sequence,
                        skipped.len(),
                        &skipped[..skipped.len().min(8)]
                    ),
                );
            }
            last_new = Some(last_new.map_or(f.sequence, |l| l.max(f.sequence)));
        }
    }

    // Policy at the moment of each frame.
    for f in &history.frames {
        let owner = owner_of(&f.subscription);
        if f.summary.contains("TAMPERED") {
            report(
                "tamper-served",
                Some(f.at),
                format!(
                    "{} got sequence {} with content changed behind the gateway's back",
                    f.subscription, f.sequence
                ),
            );
        }
        let Some(op) = ops.get(&(f.sender.as_str(), f.notification_id.as_str())) else {
            continue;
        };
        let n = &op.notification;
        let level = Level::try_from(n.confidentiality).unwrap_or(Level::Unspecified);
        let decisions: Vec<Decision> = Registry::in_force(&history.epochs, f.at)
            .into_iter()
            .map(|r| r.decide(&owner, &op.sender, level, &n.recipients))
            .collect();
        let what = format!(
            "{} got sequence {} ({} {:?}, attempt {})",
            f.subscription, f.sequence, n.notification_id, level, f.attempt
        );
        let carries_content = !f.withheld || !f.summary.is_empty();
        if carries_content && !decisions.contains(&Decision::Full) {
            let canary = if f.summary.contains(CANARY) {
                " (canary seen)"
            } else {
                ""
            };
            report(
                "policy",
                Some(f.at),
                format!("{what} in full{canary}; the rules in force allowed {decisions:?}"),
            );
        } else if decisions.iter().all(|d| *d == Decision::Nothing) {
            report(
                "policy",
                Some(f.at),
                format!("{what} as a stub; the rules in force allowed nothing"),
            );
        }
    }
    violations
}
