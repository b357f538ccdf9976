//! The `deadlines` table: one row per clock a notification started.
//!
//! - [`on_publish`] runs inside the publish transaction, after the
//!   notification's row is inserted: it stops the case's open clocks the
//!   event answers, extends those a recorded `DEADLINE_EXTENDED` extends,
//!   and starts the clocks the event starts, with who must act and who
//!   supervises decided from the starting notification, the case's stored
//!   notifications and the registry in force. A refused publish never gets
//!   here, and a failure here rolls the notification back with it.
//! - [`fire_due`] fires the clocks due at `now` in one transaction each
//!   batch: it claims a row with `UPDATE … WHERE breached_at IS NULL`,
//!   inserts the signed `SUPERVISION_ALERT` and records its sequence. The
//!   publish lock (an advisory lock on PostgreSQL, the write lock on
//!   SQLite) keeps replicas from firing together; the guarded claim makes a
//!   second alert impossible even if they did, and a transaction that fails
//!   leaves neither alert nor mark. A clock of a rule without alert (a
//!   right, not a duty) lapses instead: closed at its due time, no alert.
//! - [`compute_pending`] computes the due time of clocks that waited for a
//!   calendar year the operator has since supplied.
//!
//! Due times are unix microseconds of the gateway's clock. A clock whose
//! period needs a calendar year that is missing is stored with
//! [`PENDING_DUE`] and never fires until its due time is computed: the
//! gateway does not guess holidays.

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use sqlx::{AnyConnection, Row};

use liandong_core::domain::{AgencyId, Instant, Region, Role};
use liandong_core::pb;
use liandong_core::registry::Registry;
use liandong_core::signing::signed_digest;

use super::rules::{DeadlineRule, LateParty};
use super::{Context, Emitted, GatewayKey, Mechanism, emit_in, timestamp_of_micros};
use crate::store::{self, NewNotification, Receipt, Store, StoreError, to_i64, to_u64};

/// `due_at` of a clock whose period needs a calendar year not yet held.
pub const PENDING_DUE: i64 = i64::MAX;

/// Clocks fired per transaction.
const FIRE_BATCH: i64 = 32;

/// Clocks stored with [`PENDING_DUE`] since this process started.
static PENDING_STARTED: AtomicU64 = AtomicU64::new(0);

/// How many clocks this process stored without a due time because a
/// calendar year was missing.
pub fn pending_started() -> u64 {
    PENDING_STARTED.load(Ordering::Relaxed)
}

/// One stored deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// Its row id.
    pub id: i64,
    /// The rule that started it.
    pub rule: String,
    /// The case.
    pub case_ref: String,
    /// The notification that started it.
    pub started_sequence: u64,
    /// That notification's `received_at` (unix micros).
    pub started_at: i64,
    /// When it is due (unix micros), or [`PENDING_DUE`].
    pub due_at: i64,
    /// Who must act.
    pub late_agency: String,
    /// Who supervises.
    pub supervisor: String,
    /// When its alert fired.
    pub breached_at: Option<i64>,
    /// The alert's sequence.
    pub alert_sequence: Option<u64>,
    /// The notification that stopped it; `None` with `stopped_at` set for
    /// a period that lapsed without alert.
    pub stopped_sequence: Option<u64>,
    /// When it was stopped.
    pub stopped_at: Option<i64>,
}

impl Deadline {
    /// True when it was closed after its due time.
    pub fn closed_late(&self) -> bool {
        self.stopped_sequence.is_some() && self.stopped_at.is_some_and(|at| at > self.due_at)
    }
}

const DEADLINE_COLUMNS: &str = "id, rule, case_ref, started_sequence, started_at, due_at, late_agency, \
     supervisor, breached_at, alert_sequence, stopped_sequence, stopped_at";

fn deadline_of(row: &sqlx::any::AnyRow) -> Result<Deadline, StoreError> {
    let optional_u64 = |name: &str| -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = row.try_get(name)?;
        value.map(|v| to_u64(v, name)).transpose()
    };
    Ok(Deadline {
        id: row.try_get("id")?,
        rule: row.try_get("rule")?,
        case_ref: row.try_get("case_ref")?,
        started_sequence: to_u64(row.try_get("started_sequence")?, "started_sequence")?,
        started_at: row.try_get("started_at")?,
        due_at: row.try_get("due_at")?,
        late_agency: row.try_get("late_agency")?,
        supervisor: row.try_get("supervisor")?,
        breached_at: row.try_get("breached_at")?,
        alert_sequence: optional_u64("alert_sequence")?,
        stopped_sequence: optional_u64("stopped_sequence")?,
        stopped_at: row.try_get("stopped_at")?,
    })
}

/// Every deadline of a case, oldest first.
pub async fn of_case(store: &Store, case_ref: &str) -> Result<Vec<Deadline>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DEADLINE_COLUMNS} FROM deadlines WHERE case_ref = $1 ORDER BY id"
    ))
    .bind(case_ref)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(deadline_of).collect()
}

/// The earliest due time of an open, unfired clock, if any.
pub async fn next_due(store: &Store) -> Result<Option<i64>, StoreError> {
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(due_at) FROM deadlines WHERE breached_at IS NULL AND stopped_at IS NULL \
         AND due_at < $1",
    )
    .bind(PENDING_DUE)
    .fetch_one(store.pool())
    .await?;
    Ok(due)
}

/// Starts, stops and extends the deadlines `new` concerns, inside the
/// publish transaction, after its row was inserted with `receipt`.
pub(crate) async fn on_publish(
    conn: &mut AnyConnection,
    context: &Context,
    new: &NewNotification,
    receipt: &Receipt,
) -> Result<(), StoreError> {
    let mechanism = &context.mechanism;
    let event = new.envelope.event;
    let case_ref = new.envelope.case_ref.as_str();
    let sequence = store::to_i64(receipt.sequence);
    let received_at = receipt.received_at.unix_micros();
    let body = pb::Notification::decode(new.payload.as_slice())
        .map_err(|_| StoreError::Corrupt("the notification being stored does not decode".into()))?
        .body
        .unwrap_or_default();

    for rule in mechanism.rules.stopped_by(event) {
        let closed = sqlx::query(
            "UPDATE deadlines SET stopped_sequence = $1, stopped_at = $2 \
             WHERE case_ref = $3 AND rule = $4 AND stopped_at IS NULL",
        )
        .bind(sequence)
        .bind(received_at)
        .bind(case_ref)
        .bind(&rule.name)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if closed > 0 {
            tracing::info!(case.ref = case_ref, deadline.rule = %rule.name, deadlines = closed, "deadline stopped");
        }
    }

    if event.to_wire() == pb::EventType::DeadlineExtended && !body.document_number.is_empty() {
        extend(conn, mechanism, case_ref).await?;
    }

    let mut started = false;
    for rule in mechanism.rules.started_by(event) {
        let Some(late) = late_agency(conn, &context.rules.registry, rule, new).await? else {
            tracing::warn!(case.ref = case_ref, deadline.rule = %rule.name, "no deadline started: the agency that must act cannot be determined from the case");
            continue;
        };
        let Some(supervisor) = supervisor_of(&context.rules.registry, &late) else {
            tracing::warn!(case.ref = case_ref, deadline.rule = %rule.name, agency.id = %late, "no deadline started: no registered procuratorate supervises the agency that must act");
            continue;
        };
        let period = rule.period_for(body.needs_verification, false);
        let due_at = due(mechanism, rule, period, received_at, case_ref);
        let inserted = sqlx::query(
            "INSERT INTO deadlines (rule, case_ref, started_sequence, started_at, due_at, \
             late_agency, supervisor) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (rule, started_sequence) DO NOTHING",
        )
        .bind(&rule.name)
        .bind(case_ref)
        .bind(sequence)
        .bind(received_at)
        .bind(due_at)
        .bind(late.as_str())
        .bind(supervisor.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted > 0 {
            started = true;
            tracing::info!(case.ref = case_ref, deadline.rule = %rule.name, agency.id = %late, deadline.due_at = due_at, "deadline started");
        }
    }
    if started {
        // The timer is woken once the transaction has committed
        // (`Store::publish_supervised`).
        context
            .deadline_started
            .store(true, std::sync::atomic::Ordering::Release);
    }
    Ok(())
}

/// The due time of a clock of `rule` with `period` started at
/// `started_at`, or [`PENDING_DUE`] (logged and counted) when the calendar
/// lacks a year it needs.
fn due(
    mechanism: &Mechanism,
    rule: &DeadlineRule,
    period: super::rules::Period,
    started_at: i64,
    case_ref: &str,
) -> i64 {
    match period.end(
        timestamp_of_micros(started_at),
        &mechanism.zone,
        &mechanism.calendar,
        rule.roll_to_working_day,
    ) {
        Ok(end) => end.as_microsecond(),
        Err(missing) => {
            PENDING_STARTED.fetch_add(1, Ordering::Relaxed);
            tracing::error!(case.ref = case_ref, deadline.rule = %rule.name, error = %missing, "deadline started without a due time; it is computed once the calendar has the year");
            PENDING_DUE
        }
    }
}

/// Gives the case's open, unfired clocks whose rule has an extended period
/// their extended due time (never an earlier one).
async fn extend(
    conn: &mut AnyConnection,
    mechanism: &Mechanism,
    case_ref: &str,
) -> Result<(), StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DEADLINE_COLUMNS} FROM deadlines WHERE case_ref = $1 \
         AND stopped_at IS NULL AND breached_at IS NULL ORDER BY id"
    ))
    .bind(case_ref)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let deadline = deadline_of(row)?;
        let Some(rule) = mechanism.rules.get(&deadline.rule) else {
            continue;
        };
        let Some(extended) = rule.extended_period else {
            continue;
        };
        let due_at = due(mechanism, rule, extended, deadline.started_at, case_ref);
        if due_at <= deadline.due_at && deadline.due_at != PENDING_DUE {
            continue;
        }
        sqlx::query("UPDATE deadlines SET due_at = $1 WHERE id = $2")
            .bind(due_at)
            .bind(deadline.id)
            .execute(&mut *conn)
            .await?;
        tracing::info!(case.ref = case_ref, deadline.rule = %rule.name, deadline.due_at = due_at, "deadline extended");
    }
    Ok(())
}

/// Who must act under `rule`, for the clock `new` starts.
async fn late_agency(
    conn: &mut AnyConnection,
    registry: &Registry,
    rule: &DeadlineRule,
    new: &NewNotification,
) -> Result<Option<AgencyId>, StoreError> {
    let case_ref = new.envelope.case_ref.as_str();
    let sender_of = |events: &[pb::EventType], newest: bool| {
        let list = events
            .iter()
            .map(|event| (*event as i32).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let order = if newest { "DESC" } else { "ASC" };
        format!(
            "SELECT sender FROM notifications WHERE case_ref = $1 AND event IN ({list}) \
             ORDER BY sequence {order} LIMIT 1"
        )
    };
    let sql = match rule.late {
        LateParty::Starter => return Ok(Some(new.envelope.sender.clone())),
        LateParty::AddressedEnvironment => {
            return Ok(new
                .envelope
                .recipients
                .iter()
                .find(|id| {
                    registry
                        .get(id)
                        .is_some_and(|a| a.role == Role::Environment)
                })
                .cloned());
        }
        LateParty::Transferor => sender_of(&[pb::EventType::CaseTransferred], false),
        LateParty::Police => sender_of(
            &[
                pb::EventType::TransferReceived,
                pb::EventType::FilingDeclined,
                pb::EventType::CaseFiled,
            ],
            true,
        ),
    };
    let sender: Option<String> = sqlx::query_scalar(&sql)
        .bind(case_ref)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(sender.and_then(|s| AgencyId::parse("sender", &s).ok()))
}

/// The registered procuratorate that supervises `agency`: the one of the
/// same region, else the one of its parent's region (the smallest id when
/// several are registered there).
pub fn supervisor_of(registry: &Registry, agency: &AgencyId) -> Option<AgencyId> {
    let agency = registry.get(agency)?;
    let at = |region: &Region| {
        registry
            .agencies()
            .filter(|a| a.role == Role::Procuratorate && a.region == *region)
            .map(|a| a.id.clone())
            .min()
    };
    at(&agency.region).or_else(|| {
        agency
            .parent
            .as_ref()
            .and_then(|parent| registry.get(parent))
            .and_then(|parent| at(&parent.region))
    })
}

/// Computes the due time of open clocks stored with [`PENDING_DUE`] whose
/// calendar year is now held; returns how many got one.
pub async fn compute_pending(store: &Store, mechanism: &Mechanism) -> Result<u64, StoreError> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deadlines WHERE due_at = $1 AND stopped_at IS NULL",
    )
    .bind(PENDING_DUE)
    .fetch_one(store.pool())
    .await?;
    if pending == 0 {
        return Ok(0);
    }
    let mechanism = mechanism.clone();
    store
        .write("compute_pending_deadlines", move |conn| {
            Box::pin(async move {
                let rows = sqlx::query(&format!(
                    "SELECT {DEADLINE_COLUMNS} FROM deadlines WHERE due_at = $1 AND stopped_at IS NULL ORDER BY id"
                ))
                .bind(PENDING_DUE)
                .fetch_all(&mut *conn)
                .await?;
                let mut computed = 0;
                for row in &rows {
                    let deadline = deadline_of(row)?;
                    let Some(rule) = mechanism.rules.get(&deadline.rule) else {
                        continue;
                    };
                    let payload: Option<Vec<u8>> =
                        sqlx::query_scalar("SELECT payload FROM notifications WHERE sequence = $1")
                            .bind(to_i64(deadline.started_sequence))
                            .fetch_optional(&mut *conn)
                            .await?;
                    let needs_verification = payload
                        .and_then(|p| pb::Notification::decode(p.as_slice()).ok())
                        .and_then(|n| n.body)
                        .is_some_and(|b| b.needs_verification);
                    let extended = rule.extended_period.is_some()
                        && was_extended(conn, &deadline).await?;
                    let period = rule.period_for(needs_verification, extended);
                    let Ok(end) = period.end(
                        timestamp_of_micros(deadline.started_at),
                        &mechanism.zone,
                        &mechanism.calendar,
                        rule.roll_to_working_day,
                    ) else {
                        continue;
                    };
                    sqlx::query("UPDATE deadlines SET due_at = $1 WHERE id = $2 AND due_at = $3")
                        .bind(end.as_microsecond())
                        .bind(deadline.id)
                        .bind(PENDING_DUE)
                        .execute(&mut *conn)
                        .await?;
                    tracing::info!(case.ref = %deadline.case_ref, deadline.rule = %rule.name, deadline.due_at = end.as_microsecond(), "pending deadline computed: its calendar year is now held");
                    computed += 1;
                }
                Ok(computed)
            })
        })
        .await
}

/// True when the case recorded a `DEADLINE_EXTENDED` with a document
/// number after `deadline` started.
async fn was_extended(conn: &mut AnyConnection, deadline: &Deadline) -> Result<bool, StoreError> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM notifications WHERE case_ref = $1 AND event = $2 AND sequence > $3",
    )
    .bind(&deadline.case_ref)
    .bind(pb::EventType::DeadlineExtended as i32 as i64)
    .bind(to_i64(deadline.started_sequence))
    .fetch_all(&mut *conn)
    .await?;
    Ok(payloads.iter().any(|payload| {
        pb::Notification::decode(payload.as_slice())
            .ok()
            .and_then(|n| n.body)
            .is_some_and(|b| !b.document_number.is_empty())
    }))
}

/// What one call of [`fire_due`] did.
#[derive(Debug, Clone, Default)]
pub struct FireOutcome {
    /// Alerts stored.
    pub fired: Vec<Emitted>,
    /// Clocks of rules without alert that lapsed.
    pub lapsed: u64,
    /// True when more clocks may be due (the batch was full).
    pub more: bool,
}

/// Fires the clocks due at `now`, up to one batch, in one transaction:
/// each alert is stored with its mark, or neither is.
pub async fn fire_due(
    store: &Store,
    mechanism: &Mechanism,
    key: &std::sync::Arc<GatewayKey>,
    now: Instant,
) -> Result<FireOutcome, StoreError> {
    // A read first: a round with nothing due writes nothing.
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM deadlines WHERE breached_at IS NULL AND stopped_at IS NULL \
         AND due_at <= $1 LIMIT 1",
    )
    .bind(now.unix_micros())
    .fetch_optional(store.pool())
    .await?;
    if due.is_none() {
        return Ok(FireOutcome::default());
    }
    let backend = store.backend();
    let mechanism = mechanism.clone();
    let key = key.clone();
    store
        .write("fire_deadlines", move |conn| {
            Box::pin(async move {
                store::lock_publish(conn, backend).await?;
                let rows = sqlx::query(&format!(
                    "SELECT {DEADLINE_COLUMNS} FROM deadlines WHERE breached_at IS NULL \
                     AND stopped_at IS NULL AND due_at <= $1 ORDER BY due_at, id LIMIT $2"
                ))
                .bind(now.unix_micros())
                .bind(FIRE_BATCH)
                .fetch_all(&mut *conn)
                .await?;
                let mut outcome = FireOutcome {
                    more: rows.len() as i64 == FIRE_BATCH,
                    ..FireOutcome::default()
                };
                for row in &rows {
                    let deadline = deadline_of(row)?;
                    let rule = mechanism.rules.get(&deadline.rule);
                    if rule.is_some_and(|rule| !rule.alert) {
                        outcome.lapsed += sqlx::query(
                            "UPDATE deadlines SET stopped_at = due_at WHERE id = $1 \
                             AND breached_at IS NULL AND stopped_at IS NULL",
                        )
                        .bind(deadline.id)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                        tracing::info!(case.ref = %deadline.case_ref, deadline.rule = %deadline.rule, "period lapsed (a right, no alert)");
                        continue;
                    }
                    if let Some(fired) = fire_one(conn, &mechanism, rule, &key, &deadline).await? {
                        outcome.fired.push(fired);
                    }
                }
                Ok(outcome)
            })
        })
        .await
}

/// Claims `deadline` and stores its alert; `None` when another process
/// claimed it first.
async fn fire_one(
    conn: &mut AnyConnection,
    mechanism: &Mechanism,
    rule: Option<&DeadlineRule>,
    key: &GatewayKey,
    deadline: &Deadline,
) -> Result<Option<Emitted>, StoreError> {
    let claimed = sqlx::query(
        "UPDATE deadlines SET breached_at = $1 WHERE id = $2 \
         AND breached_at IS NULL AND stopped_at IS NULL",
    )
    .bind(Instant::now().unix_micros())
    .bind(deadline.id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Ok(None);
    }
    let start = sqlx::query(
        "SELECT sender, notification_id, region, payload FROM notifications WHERE sequence = $1",
    )
    .bind(to_i64(deadline.started_sequence))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| {
        StoreError::Corrupt(format!(
            "deadline {} names starting sequence {}, which is not stored",
            deadline.id, deadline.started_sequence
        ))
    })?;
    let starter: String = start.try_get("sender")?;
    let starter_id: String = start.try_get("notification_id")?;
    let region: String = start.try_get("region")?;
    let payload: Vec<u8> = start.try_get("payload")?;
    let signed_sha256 = pb::Notification::decode(payload.as_slice())
        .map(|n| signed_digest(&n, &starter))
        .map_err(|_| StoreError::Corrupt("a starting notification does not decode".into()))?;
    let (legal_basis, awaited) = match rule {
        Some(rule) => (rule.legal_basis.clone(), rule.awaited()),
        None => (
            "(the rule is no longer in the deadline rules in force)".to_owned(),
            "(the rule is no longer in the deadline rules in force)".to_owned(),
        ),
    };
    let due_local = timestamp_of_micros(deadline.due_at)
        .to_zoned(mechanism.zone.clone())
        .strftime("%Y-%m-%d %H:%M %Z")
        .to_string();
    let mut recipients = vec![deadline.supervisor.clone()];
    if deadline.late_agency != deadline.supervisor {
        recipients.push(deadline.late_agency.clone());
    }
    let wire = pb::Notification {
        notification_id: format!("deadline-{}", deadline.id),
        case_ref: deadline.case_ref.clone(),
        event: pb::EventType::SupervisionAlert as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: recipients.clone(),
        confidentiality_note: "监督提醒：仅限监督机关和应当履职的机关知悉（supervision alert: for the supervising procuratorate and the agency that had to act only）".to_owned(),
        region: region.clone(),
        occurred_at: Some(Instant::from_unix_micros(deadline.due_at).unwrap_or_else(Instant::now).to_wire()),
        summary: format!(
            "Deadline passed ({}): {} had until {} for {}",
            deadline.rule, deadline.late_agency, due_local, awaited
        ),
        body: Some(pb::CaseBody {
            title: format!("Supervision alert: {}", deadline.rule),
            legal_basis: legal_basis.clone(),
            alert: Some(pb::SupervisionAlert {
                rule: deadline.rule.clone(),
                legal_basis,
                started_by: Some(pb::NotificationRef {
                    sender: starter,
                    notification_id: starter_id,
                    sha256: signed_sha256,
                    sequence: deadline.started_sequence,
                }),
                started_at: Instant::from_unix_micros(deadline.started_at).map(Instant::to_wire),
                due_at: Instant::from_unix_micros(deadline.due_at).map(Instant::to_wire),
                late_agency: deadline.late_agency.clone(),
                supervisor: deadline.supervisor.clone(),
                awaited,
            }),
            ..pb::CaseBody::default()
        }),
        ..pb::Notification::default()
    };
    let emitted = emit_in(conn, key, wire).await?;
    let receipt = &emitted.receipt;
    sqlx::query("UPDATE deadlines SET breached_at = $1, alert_sequence = $2 WHERE id = $3")
        .bind(receipt.received_at.unix_micros())
        .bind(to_i64(receipt.sequence))
        .bind(deadline.id)
        .execute(&mut *conn)
        .await?;
    tracing::warn!(case.ref = %deadline.case_ref, deadline.rule = %deadline.rule, agency.id = %deadline.late_agency, supervisor.id = %deadline.supervisor, notification.sequence = receipt.sequence, "deadline passed: supervision alert stored");
    Ok(Some(emitted))
}
