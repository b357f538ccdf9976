//! Statistics of the mechanism and supervision signals, counted from the
//! store as a given viewer may see it.
//!
//! A [`Viewer`] is either the operator (the `report` command, operator
//! callers), who counts everything, or a reader agency, who counts only
//! what the policy in force lets it see *now* (`policy::decide` is not
//! `Nothing`: in full or as a stub). Decisions are never cached: every
//! report asks the policy again.
//!
//! [`report`] counts, over a [`Period`] of local dates and an optional
//! region:
//! - notifications received, per (sender, event);
//! - cases opened (their first case notification received in the period),
//!   and cases with a `CASE_TRANSFERRED`, `CASE_FILED`, `FILING_DECLINED`,
//!   `PROSECUTION_FILED` or `JUDGMENT_RECORDED` received in the period
//!   (each case once per kind);
//! - lead times from a case's first `CASE_TRANSFERRED` to the first
//!   `CASE_FILED` or `FILING_DECLINED` after it, in hours of gateway time,
//!   for decisions received in the period; median and 90th percentile by
//!   nearest rank ([`stats`]);
//! - deadline breaches opened (alert fired in the period) and closed late
//!   (the awaited act came in the period, after the due time), of cases
//!   the viewer may see.
//!
//! [`signals`] lists what needs the supervisor's attention now.
//! [`scheduled`] turns a report into the gateway's `STATISTICS_REPORT`
//! notification for one member agency. [`format`] renders reports and
//! signals as a table, CSV or JSON.
//!
//! This module only reads (the scheduled report is written by its caller's
//! transaction), never decodes a payload except where a signal needs the
//! body, and never logs content.

pub mod format;
pub mod period;
pub mod scheduled;
pub mod signals;
pub mod stats;

mod data;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use liandong_core::domain::{AgencyId, Envelope, Event, FieldError, Instant, Region};
use liandong_core::pb;
use liandong_core::registry::Agency;

use crate::policy::{self, Decision, Rules};
use crate::store::StoreError;

use data::NoticeRow;
pub use period::{Period, Schedule, default_time_zone};
pub use signals::{CrimeThreshold, SignalQuery, SupervisionSettings};

/// Who a report or a signal list is counted for.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// The operator: everything counts.
    Operator,
    /// A reader agency: only what the policy in force lets it see.
    Reader(Agency),
}

impl Viewer {
    /// The reader's id; `None` for the operator.
    pub fn reader(&self) -> Option<&AgencyId> {
        match self {
            Self::Operator => None,
            Self::Reader(agency) => Some(&agency.id),
        }
    }

    /// True when the viewer may see something (in full or as a stub) of
    /// the notification `envelope` describes, under `rules` now.
    pub fn sees(&self, rules: &Rules, envelope: &Envelope) -> bool {
        match self {
            Self::Operator => true,
            Self::Reader(agency) => policy::decide(rules, agency, envelope) != Decision::Nothing,
        }
    }

    /// True when the viewer receives the notification in full.
    pub fn reads(&self, rules: &Rules, envelope: &Envelope) -> bool {
        match self {
            Self::Operator => true,
            Self::Reader(agency) => {
                matches!(policy::decide(rules, agency, envelope), Decision::Full(_))
            }
        }
    }
}

/// What a report covers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    /// The local dates, both included.
    pub period: Period,
    /// Only notifications within this region; `None`: all.
    pub region: Option<Region>,
}

impl ReportQuery {
    /// Validates a request's dates and region in `time_zone`; an error
    /// names the field (`from`, `to` or `region`).
    pub fn parse(
        from: &str,
        to: &str,
        region: &str,
        time_zone: jiff::tz::TimeZone,
    ) -> Result<Self, FieldError> {
        let period = Period::parse(from, to, time_zone)?;
        let region = parse_region(region)?;
        Ok(Self { period, region })
    }
}

/// An optional region filter: empty for none, else six digits.
pub fn parse_region(region: &str) -> Result<Option<Region>, FieldError> {
    if region.is_empty() {
        Ok(None)
    } else {
        Region::parse("region", region).map(Some)
    }
}

/// True for events that belong to a case's own lifecycle (not notices,
/// announcements, alerts or reports): the first of them opens the case.
pub fn is_case_event(event: Event) -> bool {
    use pb::EventType as E;
    !matches!(
        event.to_wire(),
        E::JointAnnouncement
            | E::MeetingNotice
            | E::TrainingNotice
            | E::SupervisionAlert
            | E::StatisticsReport
            | E::AnnouncementApproved
            | E::AnnouncementRejected
            | E::AnnouncementReleased
    )
}

const MICROS_PER_HOUR: f64 = 3_600_000_000.0;

/// The statistics report of `query` as `viewer` may see it under `rules`,
/// read on `conn` (a read connection, or the transaction of a scheduled
/// report); `now` is its `generated_at`.
pub async fn report(
    conn: &mut AnyConnection,
    rules: &Rules,
    viewer: &Viewer,
    query: &ReportQuery,
    now: Instant,
) -> Result<pb::StatisticsReport, StoreError> {
    let (start, end) = query
        .period
        .bounds()
        .map_err(|error| StoreError::Config(error.to_string()))?;
    let in_period = |at: i64| (start..end).contains(&at);
    let in_region = |region: &Region| query.region.as_ref().is_none_or(|r| r.contains(region));
    let counted = |row: &NoticeRow| {
        in_period(row.received_at)
            && in_region(&row.envelope.region)
            && viewer.sees(rules, &row.envelope)
    };

    // Every notification of the cases with something received in the
    // period, up to its end: earlier rows decide when a case opened and
    // when it was transferred.
    let rows = data::notices(
        conn,
        "received_at < $2 AND case_ref IN \
         (SELECT case_ref FROM notifications WHERE received_at >= $1 AND received_at < $2)",
        &[start, end],
    )
    .await?;

    let mut events: BTreeMap<(String, i32), u64> = BTreeMap::new();
    let mut by_case: BTreeMap<&str, Vec<&NoticeRow>> = BTreeMap::new();
    for row in &rows {
        by_case
            .entry(row.envelope.case_ref.as_str())
            .or_default()
            .push(row);
        if counted(row) {
            *events
                .entry((
                    row.envelope.sender.to_string(),
                    row.envelope.event.to_wire() as i32,
                ))
                .or_default() += 1;
        }
    }

    use pb::EventType as E;
    let mut report = pb::StatisticsReport {
        from: query.period.from.to_string(),
        to: query.period.to.to_string(),
        region: query
            .region
            .as_ref()
            .map(Region::to_string)
            .unwrap_or_default(),
        reader: viewer.reader().map(AgencyId::to_string).unwrap_or_default(),
        events: events
            .into_iter()
            .map(|((agency, event), count)| pb::EventCount {
                agency,
                event,
                count,
            })
            .collect(),
        generated_at: Some(now.to_wire()),
        ..Default::default()
    };
    let mut lead_times = Vec::new();
    for case_rows in by_case.values() {
        let has = |event: E| {
            case_rows
                .iter()
                .any(|row| row.envelope.event.to_wire() == event && counted(row))
        };
        if case_rows
            .iter()
            .find(|row| is_case_event(row.envelope.event))
            .is_some_and(|first| counted(first))
        {
            report.cases_opened += 1;
        }
        report.cases_transferred += u64::from(has(E::CaseTransferred));
        report.cases_filed += u64::from(has(E::CaseFiled));
        report.cases_declined += u64::from(has(E::FilingDeclined));
        report.cases_prosecuted += u64::from(has(E::ProsecutionFiled));
        report.cases_judged += u64::from(has(E::JudgmentRecorded));
        let transfer = case_rows
            .iter()
            .find(|row| row.envelope.event.to_wire() == E::CaseTransferred);
        if let Some(transfer) = transfer {
            let decision = case_rows.iter().find(|row| {
                row.sequence > transfer.sequence
                    && matches!(
                        row.envelope.event.to_wire(),
                        E::CaseFiled | E::FilingDeclined
                    )
            });
            if let Some(decision) = decision
                && counted(decision)
                && viewer.sees(rules, &transfer.envelope)
            {
                lead_times
                    .push((decision.received_at - transfer.received_at) as f64 / MICROS_PER_HOUR);
            }
        }
    }
    let (samples, median, p90) = stats::median_and_p90(&lead_times);
    report.lead_time_samples = samples;
    report.lead_time_median_hours = median;
    report.lead_time_p90_hours = p90;

    let breaches = data::deadlines(
        conn,
        "(d.breached_at >= $1 AND d.breached_at < $2) \
         OR (d.stopped_at >= $1 AND d.stopped_at < $2 AND d.stopped_at > d.due_at)",
        &[start, end],
    )
    .await?;
    let visible_cases =
        visible_cases(conn, rules, viewer, breaches.iter().map(|d| &d.case_ref)).await?;
    for breach in &breaches {
        let region_ok = match (&query.region, &breach.region) {
            (None, _) => true,
            (Some(filter), Some(region)) => {
                Region::parse("region", region).is_ok_and(|region| filter.contains(&region))
            }
            (Some(_), None) => false,
        };
        if !region_ok || !visible_cases.visible(&breach.case_ref) {
            continue;
        }
        if breach.breached_at.is_some_and(in_period) {
            report.breaches_opened += 1;
        }
        if breach
            .stopped_at
            .is_some_and(|at| in_period(at) && at > breach.due_at)
        {
            report.breaches_closed_late += 1;
        }
    }
    Ok(report)
}

/// Which of some cases a viewer may see: the operator every one, a reader
/// those with at least one notification it may see.
#[derive(Debug)]
pub(crate) enum VisibleCases {
    /// Every case.
    All,
    /// Only these.
    Only(std::collections::BTreeSet<String>),
}

impl VisibleCases {
    /// True when `case_ref` is visible.
    pub(crate) fn visible(&self, case_ref: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(cases) => cases.contains(case_ref),
        }
    }
}

/// The cases among `cases` that `viewer` may see, decided now.
pub(crate) async fn visible_cases<'a>(
    conn: &mut AnyConnection,
    rules: &Rules,
    viewer: &Viewer,
    cases: impl Iterator<Item = &'a String>,
) -> Result<VisibleCases, StoreError> {
    if matches!(viewer, Viewer::Operator) {
        return Ok(VisibleCases::All);
    }
    let wanted: std::collections::BTreeSet<String> = cases.cloned().collect();
    let wanted: Vec<String> = wanted.into_iter().collect();
    let rows = data::notices_of_cases(conn, &wanted).await?;
    Ok(VisibleCases::Only(
        rows.iter()
            .filter(|row| viewer.sees(rules, &row.envelope))
            .map(|row| row.envelope.case_ref.to_string())
            .collect(),
    ))
}

/// The answer to a `ReportRequest` (`Supervision.GetReport` and
/// `Operations.GetReport`): its dates and region validated in the
/// mechanism's time zone (a bad one is `InvalidArgument` naming the
/// field), then the report counted as `viewer` may see it under `rules`,
/// on a read connection of `store`, generated now.
pub async fn answer(
    store: &crate::store::Store,
    rules: &Rules,
    viewer: &Viewer,
    settings: &ReportSettings,
    request: &pb::ReportRequest,
) -> Result<pb::StatisticsReport, crate::error::ApiError> {
    let pb::ReportRequest { from, to, region } = request;
    let query = ReportQuery::parse(from, to, region, settings.time_zone.clone())?;
    let mut conn = store.read_connection().await?;
    Ok(report(&mut conn, rules, viewer, &query, Instant::now()).await?)
}

/// What reports and signals need from the configuration.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The mechanism's time zone: it decides calendar days.
    pub time_zone: jiff::tz::TimeZone,
    /// How often member agencies receive their report.
    pub schedule: Schedule,
    /// Crime thresholds and idle limits of the signals.
    pub supervision: SupervisionSettings,
}

impl ReportSettings {
    /// The settings of `config`, in the mechanism's time zone
    /// (`[mechanism] time_zone`, checked when the config was loaded).
    pub fn from_config(config: &crate::config::GatewayConfig) -> Self {
        let time_zone = jiff::tz::TimeZone::get(&config.mechanism.time_zone)
            .unwrap_or_else(|_| default_time_zone());
        Self {
            time_zone,
            schedule: config.report_schedule,
            supervision: config.supervision.clone(),
        }
    }
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            time_zone: default_time_zone(),
            schedule: Schedule::default(),
            supervision: SupervisionSettings::default(),
        }
    }
}
