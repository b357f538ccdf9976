//! The rows reports and signals read: notification routing columns, and
//! deadlines. Plain SQL over the columns, on either backend; the payload is
//! read only where a signal needs the body (and then checked against its
//! content hash first).
//!
//! A row whose columns do not parse is left out (fail closed) and logged
//! by sequence; it is never counted for anyone.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Envelope, Event, FieldError, NotificationId, Region,
};

use crate::store::StoreError;

/// Routing columns of one stored notification.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NoticeRow {
    /// Its sequence.
    pub(crate) sequence: i64,
    /// Its routing fields.
    pub(crate) envelope: Envelope,
    /// Gateway time, Unix microseconds.
    pub(crate) received_at: i64,
}

const NOTICE_COLUMNS: &str = "sequence, sender, notification_id, case_ref, event, \
     confidentiality, region, recipients, received_at, copies";

/// Notifications matching `condition` (SQL over the notifications table,
/// with `$1`… bound to `binds` in order), in sequence order.
pub(crate) async fn notices(
    conn: &mut AnyConnection,
    condition: &str,
    binds: &[i64],
) -> Result<Vec<NoticeRow>, StoreError> {
    let sql =
        format!("SELECT {NOTICE_COLUMNS} FROM notifications WHERE {condition} ORDER BY sequence");
    let mut query = sqlx::query(&sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let rows = query.fetch_all(conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let sequence: i64 = row.try_get("sequence")?;
        match parse_notice(row) {
            Ok(notice) => out.push(notice),
            Err(error) => {
                tracing::warn!(notification.sequence = sequence, %error, "row left out of reports: its columns do not parse");
            }
        }
    }
    Ok(out)
}

/// Notifications of the given cases, in sequence order.
pub(crate) async fn notices_of_cases(
    conn: &mut AnyConnection,
    cases: &[String],
) -> Result<Vec<NoticeRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in cases.chunks(200) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {NOTICE_COLUMNS} FROM notifications WHERE case_ref IN ({}) ORDER BY sequence",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for case in chunk {
            query = query.bind(case.as_str());
        }
        for row in &query.fetch_all(&mut *conn).await? {
            if let Ok(notice) = parse_notice(row) {
                out.push(notice);
            }
        }
    }
    out.sort_by_key(|notice| notice.sequence);
    Ok(out)
}

fn parse_notice(row: &sqlx::any::AnyRow) -> Result<NoticeRow, StoreError> {
    let text = |name: &str| -> Result<String, StoreError> { Ok(row.try_get::<String, _>(name)?) };
    let wire = |value: i64| i32::try_from(value).unwrap_or(i32::MIN);
    let bad = |error: FieldError| StoreError::Corrupt(format!("column {}", error.field));
    let envelope = Envelope {
        sender: AgencyId::parse("sender", &text("sender")?).map_err(bad)?,
        id: NotificationId::parse_field("notification_id", &text("notification_id")?)
            .map_err(bad)?,
        case_ref: CaseRef::parse_field("case_ref", &text("case_ref")?).map_err(bad)?,
        event: Event::from_wire("event", wire(row.try_get("event")?)).map_err(bad)?,
        confidentiality: Confidentiality::from_wire(
            "confidentiality",
            wire(row.try_get("confidentiality")?),
        )
        .map_err(bad)?,
        region: Region::parse("region", &text("region")?).map_err(bad)?,
        recipients: text("recipients")?
            .split_whitespace()
            .map(|id| AgencyId::parse("recipients", id))
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        copies: crate::store::integrity::parse_copies(&text("copies")?)
            .ok_or_else(|| StoreError::Corrupt("column copies".into()))?,
    };
    Ok(NoticeRow {
        sequence: row.try_get("sequence")?,
        envelope,
        received_at: row.try_get("received_at")?,
    })
}

/// The encoded notification stored at `sequence`, if its payload still
/// matches its content hash; `None` otherwise (logged).
pub(crate) async fn checked_payload(
    conn: &mut AnyConnection,
    sequence: i64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = sqlx::query("SELECT payload, content_hash FROM notifications WHERE sequence = $1")
        .bind(sequence)
        .fetch_optional(conn)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let payload: Vec<u8> = row.try_get("payload")?;
    let hash: Vec<u8> = row.try_get("content_hash")?;
    if Sha256::digest(&payload).as_slice() != hash.as_slice() {
        tracing::warn!(
            notification.sequence = sequence,
            "payload does not match its content hash; left out of supervision signals"
        );
        return Ok(None);
    }
    Ok(Some(payload))
}

/// One row of the deadlines table, with the region of the notification
/// that started it (or of the case).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeadlineRow {
    /// The deadline rule's name.
    pub(crate) rule: String,
    /// The case.
    pub(crate) case_ref: String,
    /// The region of the case, when known.
    pub(crate) region: Option<String>,
    /// The case's state (`pb::CaseState`), when the case picture has it.
    pub(crate) state: Option<i64>,
    /// Who had to act.
    pub(crate) late_agency: String,
    /// The supervising procuratorate.
    pub(crate) supervisor: String,
    /// Unix microseconds.
    pub(crate) due_at: i64,
    /// When the alert fired.
    pub(crate) breached_at: Option<i64>,
    /// When the awaited act came.
    pub(crate) stopped_at: Option<i64>,
}

/// Deadlines matching `condition` (SQL over `d`, the deadlines table), with
/// the region of their case.
pub(crate) async fn deadlines(
    conn: &mut AnyConnection,
    condition: &str,
    binds: &[i64],
) -> Result<Vec<DeadlineRow>, StoreError> {
    let sql = format!(
        "SELECT d.rule, d.case_ref, COALESCE(c.region, n.region) AS region, c.state, \
         d.late_agency, d.supervisor, d.due_at, d.breached_at, d.stopped_at \
         FROM deadlines d \
         LEFT JOIN cases c ON c.case_ref = d.case_ref \
         LEFT JOIN notifications n ON n.sequence = d.started_sequence \
         WHERE {condition} ORDER BY d.due_at, d.id"
    );
    let mut query = sqlx::query(&sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            Ok(DeadlineRow {
                rule: row.try_get("rule")?,
                case_ref: row.try_get("case_ref")?,
                region: row.try_get("region")?,
                state: row.try_get("state")?,
                late_agency: row.try_get("late_agency")?,
                supervisor: row.try_get("supervisor")?,
                due_at: row.try_get("due_at")?,
                breached_at: row.try_get("breached_at")?,
                stopped_at: row.try_get("stopped_at")?,
            })
        })
        .collect()
}

/// One row of the case picture.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaseRow {
    /// The case.
    pub(crate) case_ref: String,
    /// `pb::CaseState`.
    pub(crate) state: i64,
    /// Its region.
    pub(crate) region: String,
    /// Since when it is in its state, Unix microseconds.
    pub(crate) state_since: i64,
    /// Who transferred it.
    pub(crate) transferor: Option<String>,
    /// The police agency that acknowledged or decided.
    pub(crate) police: Option<String>,
}

/// Cases in one of `states` that entered it before `before` (Unix
/// microseconds).
pub(crate) async fn cases_in(
    conn: &mut AnyConnection,
    states: &[i32],
    before: i64,
) -> Result<Vec<CaseRow>, StoreError> {
    let list: Vec<String> = states.iter().map(i32::to_string).collect();
    let sql = format!(
        "SELECT case_ref, state, region, state_since, transferor, police FROM cases \
         WHERE state IN ({}) AND state_since < $1 ORDER BY state_since, case_ref",
        list.join(", ")
    );
    let rows = sqlx::query(&sql).bind(before).fetch_all(conn).await?;
    rows.iter()
        .map(|row| {
            Ok(CaseRow {
                case_ref: row.try_get("case_ref")?,
                state: row.try_get("state")?,
                region: row.try_get("region")?,
                state_since: row.try_get("state_since")?,
                transferor: row.try_get("transferor")?,
                police: row.try_get("police")?,
            })
        })
        .collect()
}

/// The state (`pb::CaseState`) the case picture has for `case_ref`.
pub(crate) async fn case_state(
    conn: &mut AnyConnection,
    case_ref: &str,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT state FROM cases WHERE case_ref = $1")
        .bind(case_ref)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get("state")?),
        None => None,
    })
}
