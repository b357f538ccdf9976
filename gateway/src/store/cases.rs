//! The case projection's SQL: the `cases` row and the `case_transitions`
//! history, read and written inside the publishing transaction, and read
//! for `GetCase` and supervision.
//!
//! The publishing transaction asks [`rule_in`] before it writes anything:
//! a refusal there leaves the transaction empty. After the notification
//! row is inserted, [`record_in`] writes the case's new row and its
//! history row, and returns the [`CaseChange`].

use sqlx::{AnyConnection, Row};

use liandong_core::domain::{CaseRef, Envelope, Event, Instant};
use liandong_core::pb::CaseState;

use super::{Backend, Receipt, StoreError, instant, to_i64, to_u64};
use crate::cases::machine::{self, Stage, Step};
use crate::cases::{self, CaseChange, CaseRecord, CaseRefusal};

/// What the machine ruled on a notification, before it is written.
#[derive(Debug)]
pub(crate) enum Ruling {
    /// Not a case event: no case row is read or written.
    NotCaseEvent,
    /// The case's state does not accept the event.
    Refused(CaseRefusal),
    /// Accepted: write it with [`record_in`].
    Accepted(Accepted),
}

/// An accepted case event, with what the case row held before it.
#[derive(Debug)]
pub(crate) struct Accepted {
    from: Stage,
    to: CaseState,
    /// The case's agencies before the event; empty for a new case.
    agencies: Vec<String>,
}

const CASE_COLUMNS: &str = "case_ref, state, region, agencies, opened_at, state_since, \
     last_sequence, transferor, police, penalized_at";

/// Reads the case of `envelope` (locking its row on PostgreSQL) and asks
/// the machine whether its event fits.
pub(crate) async fn rule_in(
    conn: &mut AnyConnection,
    backend: Backend,
    envelope: &Envelope,
) -> Result<Ruling, StoreError> {
    if !machine::is_case_event(envelope.event) {
        return Ok(Ruling::NotCaseEvent);
    }
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE case_ref = $1{lock}");
    let record = sqlx::query(&sql)
        .bind(envelope.case_ref.as_str())
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| record_of(&row))
        .transpose()?;
    let stage = record.as_ref().map(|r| r.state);
    Ok(match machine::step(stage, envelope.event) {
        Step::NotCaseEvent => Ruling::NotCaseEvent,
        Step::Refused => Ruling::Refused(CaseRefusal {
            case_ref: envelope.case_ref.clone(),
            event: envelope.event,
            state: stage,
        }),
        Step::Moves { from, to } => Ruling::Accepted(Accepted {
            from,
            to,
            agencies: record.map(|r| r.agencies).unwrap_or_default(),
        }),
    })
}

/// Writes the case row and the history row of an accepted event stored
/// under `receipt`.
pub(crate) async fn record_in(
    conn: &mut AnyConnection,
    envelope: &Envelope,
    accepted: Accepted,
    receipt: &Receipt,
) -> Result<CaseChange, StoreError> {
    let Accepted { from, to, agencies } = accepted;
    let sender = envelope.sender.as_str();
    let mut agencies = agencies;
    if !agencies.iter().any(|a| a == sender) {
        agencies.push(sender.to_owned());
        agencies.sort();
    }
    let agencies = agencies.join(" ");
    let at = receipt.received_at.unix_micros();
    let sequence = to_i64(receipt.sequence);
    let event = envelope.event;
    let transferor = cases::names_transferor(event).then_some(sender);
    let police = cases::names_police(event).then_some(sender);
    let penalized = (event.to_wire() == liandong_core::pb::EventType::PenaltyDecided).then_some(at);
    if from.is_none() {
        sqlx::query(
            "INSERT INTO cases (case_ref, state, region, agencies, opened_at, state_since, \
             last_sequence, transferor, police, penalized_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
        )
        .bind(envelope.case_ref.as_str())
        .bind(state_column(to))
        .bind(envelope.region.as_str())
        .bind(&agencies)
        .bind(at)
        .bind(sequence)
        .bind(transferor)
        .bind(police)
        .bind(penalized)
        .execute(&mut *conn)
        .await?;
    } else {
        let moved = from != Some(to);
        let updated = sqlx::query(
            "UPDATE cases SET state = $1, agencies = $2, last_sequence = $3, \
             state_since = CASE WHEN $4 = 1 THEN $5 ELSE state_since END, \
             transferor = COALESCE($6, transferor), police = COALESCE($7, police), \
             penalized_at = COALESCE(penalized_at, $8) \
             WHERE case_ref = $9",
        )
        .bind(state_column(to))
        .bind(&agencies)
        .bind(sequence)
        .bind(i64::from(moved))
        .bind(at)
        .bind(transferor)
        .bind(police)
        .bind(penalized)
        .bind(envelope.case_ref.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(StoreError::Corrupt(format!(
                "case {} vanished inside its publishing transaction",
                envelope.case_ref
            )));
        }
    }
    sqlx::query(
        "INSERT INTO case_transitions (sequence, case_ref, event, from_state, to_state, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sequence)
    .bind(envelope.case_ref.as_str())
    .bind(i64::from(event.to_wire() as i32))
    .bind(from.map(state_column))
    .bind(state_column(to))
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(CaseChange {
        case_ref: envelope.case_ref.clone(),
        event,
        sender: envelope.sender.clone(),
        from,
        to,
        sequence: receipt.sequence,
        received_at: receipt.received_at,
    })
}

/// The case row of `case_ref`, if the gateway knows such a case.
pub(crate) async fn read(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
    case_ref: &str,
) -> Result<Option<CaseRecord>, StoreError> {
    let sql = format!("SELECT {CASE_COLUMNS} FROM cases WHERE case_ref = $1");
    sqlx::query(&sql)
        .bind(case_ref)
        .fetch_optional(executor)
        .await?
        .map(|row| record_of(&row))
        .transpose()
}

/// One transition of a case's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The notification's sequence.
    pub sequence: u64,
    /// The event.
    pub event: Event,
    /// The state before (`None`: the event opened the case).
    pub from: Stage,
    /// The state after.
    pub to: CaseState,
    /// When it was stored (gateway time).
    pub at: Instant,
}

/// The history of `case_ref`, oldest first.
pub(crate) async fn history(
    executor: impl sqlx::Executor<'_, Database = sqlx::Any>,
    case_ref: &str,
) -> Result<Vec<Transition>, StoreError> {
    let rows = sqlx::query(
        "SELECT sequence, event, from_state, to_state, at FROM case_transitions \
         WHERE case_ref = $1 ORDER BY sequence",
    )
    .bind(case_ref)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            let event: i64 = row.try_get("event")?;
            let event = i32::try_from(event)
                .ok()
                .and_then(|e| Event::from_wire("event", e).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("unknown event {event} in history")))?;
            let from: Option<i64> = row.try_get("from_state")?;
            Ok(Transition {
                sequence: to_u64(row.try_get("sequence")?, "sequence")?,
                event,
                from: from.map(state_of).transpose()?,
                to: state_of(row.try_get("to_state")?)?,
                at: instant(row.try_get("at")?)?,
            })
        })
        .collect()
}

fn state_column(state: CaseState) -> i64 {
    i64::from(state as i32)
}

/// A stored state; unknown or unspecified numbers are corrupt rows.
fn state_of(value: i64) -> Result<CaseState, StoreError> {
    i32::try_from(value)
        .ok()
        .and_then(|v| CaseState::try_from(v).ok())
        .filter(|s| *s != CaseState::Unspecified)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown case state {value}")))
}

fn record_of(row: &sqlx::any::AnyRow) -> Result<CaseRecord, StoreError> {
    let case_ref: String = row.try_get("case_ref")?;
    let agencies: String = row.try_get("agencies")?;
    let penalized_at: Option<i64> = row.try_get("penalized_at")?;
    Ok(CaseRecord {
        case_ref: CaseRef::parse_field("case_ref", &case_ref)
            .map_err(|_| StoreError::Corrupt("case_ref of a case row".into()))?,
        state: state_of(row.try_get("state")?)?,
        region: row.try_get("region")?,
        agencies: agencies.split_whitespace().map(str::to_owned).collect(),
        opened_at: instant(row.try_get("opened_at")?)?,
        state_since: instant(row.try_get("state_since")?)?,
        last_sequence: to_u64(row.try_get("last_sequence")?, "last_sequence")?,
        transferor: row.try_get("transferor")?,
        police: row.try_get("police")?,
        penalized_at: penalized_at.map(instant).transpose()?,
    })
}
