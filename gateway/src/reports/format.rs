//! Reports and signals as text: an aligned table for people, CSV for
//! spreadsheets, and JSON (the canonical proto3 JSON form of the
//! `liandong.v1` message, every field present, enum values by name).
//!
//! The report's CSV has one row per figure, in columns `metric,agency,
//! event,value`: the period (`from`, `to`, `region`, `reader`), one
//! `events` row per sender and event, then the case counts, lead times and
//! breaches under their field names.

use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};

use liandong_core::pb;

/// An output format of the `report` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned table (the default).
    #[default]
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// The proto3 JSON form.
    Json,
}

impl Format {
    /// The format named `table`, `csv` or `json`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "table" => Some(Self::Table),
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The short name of an event number (`CASE_FILED`), or the number.
pub fn event_name(event: i32) -> String {
    pb::EventType::try_from(event)
        .map(|event| {
            let name = event.as_str_name();
            name.strip_prefix("EVENT_TYPE_").unwrap_or(name).to_owned()
        })
        .unwrap_or_else(|_| event.to_string())
}

fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_owned()
}

fn timestamp_text(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|ts| {
        jiff::Timestamp::new(ts.seconds, ts.nanos)
            .ok()
            .map(|ts| ts.to_string())
    })
    .unwrap_or_default()
}

/// The figures of a report, in order: (metric, agency, event, value).
pub fn report_rows(report: &pb::StatisticsReport) -> Vec<[String; 4]> {
    let figure =
        |metric: &str, value: String| [metric.to_owned(), String::new(), String::new(), value];
    let mut rows = vec![
        figure("from", report.from.clone()),
        figure("to", report.to.clone()),
        figure("region", report.region.clone()),
        figure("reader", report.reader.clone()),
    ];
    for count in &report.events {
        rows.push([
            "events".into(),
            count.agency.clone(),
            event_name(count.event),
            count.count.to_string(),
        ]);
    }
    for (metric, value) in [
        ("cases_opened", report.cases_opened),
        ("cases_transferred", report.cases_transferred),
        ("cases_filed", report.cases_filed),
        ("cases_declined", report.cases_declined),
        ("cases_prosecuted", report.cases_prosecuted),
        ("cases_judged", report.cases_judged),
        ("lead_time_samples", report.lead_time_samples),
    ] {
        rows.push(figure(metric, value.to_string()));
    }
    rows.push(figure(
        "lead_time_median_hours",
        hours(report.lead_time_median_hours),
    ));
    rows.push(figure(
        "lead_time_p90_hours",
        hours(report.lead_time_p90_hours),
    ));
    rows.push(figure(
        "breaches_opened",
        report.breaches_opened.to_string(),
    ));
    rows.push(figure(
        "breaches_closed_late",
        report.breaches_closed_late.to_string(),
    ));
    rows
}

/// Hours with at most two decimals.
fn hours(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The report as CSV.
pub fn report_csv(report: &pb::StatisticsReport) -> Vec<u8> {
    csv_of(&["metric", "agency", "event", "value"], report_rows(report))
}

/// The report as an aligned table.
pub fn report_table(report: &pb::StatisticsReport) -> String {
    let mut out = format!(
        "statistics {} .. {}{}{}\n",
        report.from,
        report.to,
        if report.region.is_empty() {
            String::new()
        } else {
            format!(", region {}", report.region)
        },
        if report.reader.is_empty() {
            ", operator view".to_owned()
        } else {
            format!(", as seen by {}", report.reader)
        }
    );
    let rows: Vec<[String; 4]> = report_rows(report).into_iter().skip(4).collect();
    out.push_str(&table(&["metric", "agency", "event", "value"], &rows));
    out
}

/// The signals as rows: kind, case, state, since, region, agency, rule,
/// detail.
pub fn signal_rows(signals: &[pb::Signal]) -> Vec<[String; 8]> {
    signals
        .iter()
        .map(|signal| {
            [
                pb::SignalKind::try_from(signal.kind)
                    .map(|k| enum_name(k.as_str_name(), "SIGNAL_KIND_"))
                    .unwrap_or_else(|_| signal.kind.to_string()),
                signal.case_ref.clone(),
                pb::CaseState::try_from(signal.state)
                    .map(|s| enum_name(s.as_str_name(), "CASE_STATE_"))
                    .unwrap_or_else(|_| signal.state.to_string()),
                timestamp_text(signal.since.as_ref()),
                signal.region.clone(),
                signal.agency.clone(),
                signal.rule.clone(),
                signal.detail.clone(),
            ]
        })
        .collect()
}

const SIGNAL_HEADER: [&str; 8] = [
    "kind", "case_ref", "state", "since", "region", "agency", "rule", "detail",
];

/// The signals as CSV.
pub fn signals_csv(signals: &[pb::Signal]) -> Vec<u8> {
    csv_of(&SIGNAL_HEADER, signal_rows(signals))
}

/// The signals as an aligned table.
pub fn signals_table(signals: &[pb::Signal]) -> String {
    format!(
        "{} signal(s)\n{}",
        signals.len(),
        table(&SIGNAL_HEADER, &signal_rows(signals))
    )
}

fn csv_of<const N: usize>(header: &[&str; N], rows: Vec<[String; N]>) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing to memory fails only on a bug.
    writer.write_record(header).expect("csv header to memory");
    for row in rows {
        writer.write_record(&row).expect("csv row to memory");
    }
    writer.into_inner().expect("csv flush to memory")
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            text.push_str(cell);
            if i + 1 < N {
                text.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The proto3 JSON form of a `liandong.v1` message named `full_name`,
/// with every field present (zero counts included).
pub fn json_of(message: &impl Message, full_name: &str) -> serde_json::Value {
    let descriptor = liandong_core::json::descriptor_pool()
        .get_message_by_name(full_name)
        .expect("the message is in the descriptor set");
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message re-decodes against its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("serializing to a serde_json value cannot fail")
}

/// The report's JSON form.
pub fn report_json(report: &pb::StatisticsReport) -> serde_json::Value {
    json_of(report, "liandong.v1.StatisticsReport")
}

/// The signals' JSON form (a `SignalsResponse`).
pub fn signals_json(signals: &[pb::Signal]) -> serde_json::Value {
    json_of(
        &pb::SignalsResponse {
            signals: signals.to_vec(),
        },
        "liandong.v1.SignalsResponse",
    )
}
