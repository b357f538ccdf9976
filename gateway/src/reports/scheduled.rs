//! The periodic `STATISTICS_REPORT` each member agency receives.
//!
//! When a period of the schedule ends ([`Schedule::due_period`]), every
//! member agency (environment, police, procuratorate) that has no row in
//! `report_runs` for it gets one report, counted as *it* may see the store
//! ([`Viewer::Reader`]), as a notification from the gateway:
//! `RESTRICTED` to that agency alone, its figures in `body.measurements`
//! (names below), the CSV form of the report attached by digest in
//! `body.attachments`, and a summary in words.
//!
//! [`emit_due`] does this inside a transaction its caller opened: for each
//! agency it computes the report on that transaction, hands the
//! notification to a [`GatewayEmitter`] (which signs and stores it as the
//! gateway's own, in the same transaction) and records the run in
//! `report_runs`. A report already recorded is never sent twice; a failed
//! emit leaves the transaction for its caller to roll back.
//!
//! Measurement names (unit in brackets): `cases_opened`,
//! `cases_transferred`, `cases_filed`, `cases_declined`,
//! `cases_prosecuted`, `cases_judged` (cases); `lead_time_samples`
//! (cases), `lead_time_median_hours`, `lead_time_p90_hours` (hours);
//! `breaches_opened`, `breaches_closed_late` (breaches); and one
//! `events.<agency>.<EVENT>` (notifications) per sender and event.

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use liandong_core::domain::{AgencyId, Instant};
use liandong_core::pb;
use liandong_core::registry::Agency;

use super::format::{event_name, report_csv};
use super::{Period, ReportQuery, Schedule, Viewer, report};
use crate::policy::Rules;
use crate::store::StoreError;

/// Stores a notification as the gateway's own, inside the caller's open
/// transaction: fills in the gateway's sender id, signs it with the
/// gateway's key, assigns its sequence and writes it. Returns the
/// sequence.
pub trait GatewayEmitter: Send + Sync {
    /// Emits `notification` on `conn` (an open write transaction).
    fn emit<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        notification: pb::Notification,
    ) -> BoxFuture<'c, Result<u64, StoreError>>;
}

/// The media type of the attached CSV.
pub const CSV_MEDIA_TYPE: &str = "text/csv";

/// The report's notification id: `statistics:<from>..<to>:<reader>`.
pub fn notification_id(period: &Period, reader: &AgencyId) -> String {
    format!("statistics:{}:{reader}", period.name())
}

/// The report's case reference: `STATISTICS/<from>..<to>`.
pub fn case_ref(period: &Period) -> String {
    format!("STATISTICS/{}", period.name())
}

/// The figures of `report` as measurements, under the documented names.
pub fn measurements(report: &pb::StatisticsReport) -> Vec<pb::Measurement> {
    let m = |name: &str, value: String, unit: &str| pb::Measurement {
        name: name.to_owned(),
        value,
        unit: unit.to_owned(),
    };
    let mut out = vec![
        m("cases_opened", report.cases_opened.to_string(), "cases"),
        m(
            "cases_transferred",
            report.cases_transferred.to_string(),
            "cases",
        ),
        m("cases_filed", report.cases_filed.to_string(), "cases"),
        m("cases_declined", report.cases_declined.to_string(), "cases"),
        m(
            "cases_prosecuted",
            report.cases_prosecuted.to_string(),
            "cases",
        ),
        m("cases_judged", report.cases_judged.to_string(), "cases"),
        m(
            "lead_time_samples",
            report.lead_time_samples.to_string(),
            "cases",
        ),
        m(
            "lead_time_median_hours",
            report.lead_time_median_hours.to_string(),
            "hours",
        ),
        m(
            "lead_time_p90_hours",
            report.lead_time_p90_hours.to_string(),
            "hours",
        ),
        m(
            "breaches_opened",
            report.breaches_opened.to_string(),
            "breaches",
        ),
        m(
            "breaches_closed_late",
            report.breaches_closed_late.to_string(),
            "breaches",
        ),
    ];
    for count in &report.events {
        out.push(m(
            &format!("events.{}.{}", count.agency, event_name(count.event)),
            count.count.to_string(),
            "notifications",
        ));
    }
    out
}

/// The `STATISTICS_REPORT` notification carrying `report` to `reader`
/// (unsigned, without sender: the emitter adds both), and the CSV bytes
/// its attachment names by digest.
pub fn report_notification(
    report: &pb::StatisticsReport,
    period: &Period,
    reader: &Agency,
    now: Instant,
) -> (pb::Notification, Vec<u8>) {
    let csv = report_csv(report);
    let period_name = period.name();
    let attachment = pb::Attachment {
        name: format!("statistics-{period_name}-{}.csv", reader.id),
        media_type: CSV_MEDIA_TYPE.to_owned(),
        sha256: format!("{:x}", Sha256::digest(&csv)),
        size_bytes: csv.len() as u64,
    };
    let summary = format!(
        "统计报表 {} 至 {}: 新立案件线索 {} 件, 移送 {} 件, 立案 {} 件, 不予立案 {} 件, 起诉 {} 件, 判决 {} 件; 超期 {} 件",
        period.from,
        period.to,
        report.cases_opened,
        report.cases_transferred,
        report.cases_filed,
        report.cases_declined,
        report.cases_prosecuted,
        report.cases_judged,
        report.breaches_opened
    );
    let notification = pb::Notification {
        notification_id: notification_id(period, &reader.id),
        case_ref: case_ref(period),
        event: pb::EventType::StatisticsReport as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: vec![reader.id.to_string()],
        confidentiality_note: "statistics counted from what the recipient may see; for it alone"
            .to_owned(),
        region: reader.region.to_string(),
        occurred_at: Some(now.to_wire()),
        summary,
        body: Some(pb::CaseBody {
            title: format!("Statistics report {} to {}", period.from, period.to),
            measurements: measurements(report),
            attachments: vec![attachment],
            ..Default::default()
        }),
        ..Default::default()
    };
    (notification, csv)
}

/// True when `period`'s report to `reader` is recorded in `report_runs`.
pub async fn already_reported(
    conn: &mut AnyConnection,
    period: &Period,
    reader: &AgencyId,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT sequence FROM report_runs WHERE period = $1 AND reader = $2")
        .bind(period.name())
        .bind(reader.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// Records that `period`'s report to `reader` was emitted at `sequence`.
pub async fn record_run(
    conn: &mut AnyConnection,
    period: &Period,
    reader: &AgencyId,
    sequence: u64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO report_runs (period, reader, sequence) VALUES ($1, $2, $3)")
        .bind(period.name())
        .bind(reader.as_str())
        .bind(crate::store::to_i64(sequence))
        .execute(conn)
        .await?;
    Ok(())
}

/// The runs recorded for `period`: (reader, sequence), by reader.
pub async fn runs(
    conn: &mut AnyConnection,
    period: &Period,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows =
        sqlx::query("SELECT reader, sequence FROM report_runs WHERE period = $1 ORDER BY reader")
            .bind(period.name())
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|row| {
            let sequence: i64 = row.try_get("sequence")?;
            Ok((
                row.try_get("reader")?,
                crate::store::to_u64(sequence, "report_runs.sequence")?,
            ))
        })
        .collect()
}

/// The period whose reports are due at `now` and not all sent yet, if
/// any: a read, so a timer round with nothing to send writes nothing. A
/// period is reported only when the gateway stored a notification before
/// it ended: a gateway installed after a period has nothing to say of it.
pub async fn pending(
    conn: &mut AnyConnection,
    rules: &Rules,
    schedule: Schedule,
    time_zone: &jiff::tz::TimeZone,
    now: Instant,
) -> Result<Option<Period>, StoreError> {
    let Some(period) = jiff::Timestamp::from_microsecond(now.unix_micros())
        .ok()
        .and_then(|ts| schedule.due_period(ts, time_zone))
    else {
        return Ok(None);
    };
    let Ok((_, end)) = period.bounds() else {
        return Ok(None);
    };
    let first: Option<i64> = sqlx::query_scalar("SELECT MIN(received_at) FROM notifications")
        .fetch_one(&mut *conn)
        .await?;
    if first.is_none_or(|first| first >= end) {
        return Ok(None);
    }
    let sent = runs(conn, &period).await?;
    let unsent = rules
        .registry
        .agencies()
        .filter(|agency| agency.role.is_member())
        .any(|agency| !sent.iter().any(|(reader, _)| reader == agency.id.as_str()));
    Ok(unsent.then_some(period))
}

/// Emits, on `conn` (an open write transaction), the reports of the period
/// `schedule` says ended last before `now` to every member agency not yet
/// sent it; returns (agency, sequence) of each report emitted now. Nothing
/// when the schedule is off or every report was sent.
pub async fn emit_due(
    conn: &mut AnyConnection,
    emitter: &dyn GatewayEmitter,
    rules: &Rules,
    schedule: Schedule,
    time_zone: &jiff::tz::TimeZone,
    now: Instant,
) -> Result<Vec<(AgencyId, u64)>, StoreError> {
    let Some(period) = jiff::Timestamp::from_microsecond(now.unix_micros())
        .ok()
        .and_then(|ts| schedule.due_period(ts, time_zone))
    else {
        return Ok(Vec::new());
    };
    let query = ReportQuery {
        period,
        region: None,
    };
    let mut emitted = Vec::new();
    for agency in rules.registry.agencies() {
        if !agency.role.is_member() || already_reported(conn, &query.period, &agency.id).await? {
            continue;
        }
        let viewer = Viewer::Reader(agency.clone());
        let counted = report(conn, rules, &viewer, &query, now).await?;
        let (notification, _csv) = report_notification(&counted, &query.period, agency, now);
        let sequence = emitter.emit(conn, notification).await?;
        record_run(conn, &query.period, &agency.id, sequence).await?;
        emitted.push((agency.id.clone(), sequence));
    }
    Ok(emitted)
}
