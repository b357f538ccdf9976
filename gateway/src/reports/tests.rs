//! Reports and signals: order statistics, local dates, formats, and counts
//! over a store on every backend.

use std::path::Path;

use jiff::Timestamp;
use prost::Message;
use sha2::Digest;
use sqlx::Connection;

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Envelope, Event, Instant, NotificationId, Region,
};
use liandong_core::registry::Registry;

use super::format::{self, Format};
use super::period::{self, Period, Schedule};
use super::scheduled::{self, GatewayEmitter};
use super::signals::{SignalQuery, SupervisionSettings};
use super::*;
use crate::policy::{Policy, Rules};
use crate::store::{NewNotification, PublishOutcome, Store};

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

fn rules() -> Rules {
    Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    }
}

fn reader(rules: &Rules, id: &str) -> Viewer {
    Viewer::Reader(
        rules
            .registry
            .get(&AgencyId::parse("id", id).unwrap())
            .unwrap()
            .clone(),
    )
}

fn shanghai() -> jiff::tz::TimeZone {
    default_time_zone()
}

fn micros(rfc3339: &str) -> i64 {
    rfc3339.parse::<Timestamp>().unwrap().as_microsecond()
}

#[test]
fn median_and_p90_use_nearest_rank() {
    let ten: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(stats::median_and_p90(&ten), (10, 5.0, 9.0));
    // Of an even count the median is the lower middle value.
    assert_eq!(stats::median_and_p90(&[4.0, 1.0, 3.0, 2.0]), (4, 2.0, 4.0));
    assert_eq!(stats::median_and_p90(&[7.5]), (1, 7.5, 7.5));
    assert_eq!(stats::median_and_p90(&[]), (0, 0.0, 0.0));
    // Rank ceil(0.9 * 11) = 10.
    let eleven: Vec<f64> = (1..=11).rev().map(f64::from).collect();
    assert_eq!(stats::median_and_p90(&eleven), (11, 6.0, 10.0));
    assert_eq!(stats::nearest_rank(&[1.0, 2.0], 100.0), Some(2.0));
}

#[test]
fn a_notification_at_2330_utc_on_the_31st_is_in_the_next_local_day() {
    let at = micros("2026-12-31T23:30:00Z");
    assert_eq!(
        period::local_date(at, &shanghai()).unwrap().to_string(),
        "2027-01-01"
    );
    let december = Period::parse("2026-12-01", "2026-12-31", shanghai()).unwrap();
    let (start, end) = december.bounds().unwrap();
    assert!(!(start..end).contains(&at), "not in December, local time");
    assert_eq!(start, micros("2026-11-30T16:00:00Z"));
    assert_eq!(end, micros("2026-12-31T16:00:00Z"));
    let new_year = Period::parse("2027-01-01", "2027-01-01", shanghai()).unwrap();
    let (start, end) = new_year.bounds().unwrap();
    assert!((start..end).contains(&at));
}

#[test]
fn bad_dates_and_regions_are_refused_naming_the_field() {
    let refused = |from: &str, to: &str, region: &str| {
        ReportQuery::parse(from, to, region, shanghai()).unwrap_err()
    };
    let error = refused("2026-02-30", "2026-03-01", "");
    assert_eq!(
        (error.field.as_str(), error.reason.as_str()),
        ("from", "2026-02-30 is not a calendar date")
    );
    let error = refused("2026-1-01", "2026-03-01", "");
    assert_eq!(error.field, "from");
    assert_eq!(error.reason, "\"2026-1-01\" is not a date YYYY-MM-DD");
    let error = refused("2026-03-01", "", "");
    assert_eq!(error.field, "to");
    let error = refused("2026-03-02", "2026-03-01", "");
    assert_eq!(
        (error.field.as_str(), error.reason.as_str()),
        ("to", "2026-03-01 is before from (2026-03-02)")
    );
    let error = refused("2026-03-01", "2026-03-31", "14042");
    assert_eq!(error.field, "region");
    let ok = ReportQuery::parse("2026-03-01", "2026-03-31", "140400", shanghai()).unwrap();
    assert_eq!(ok.region.unwrap().as_str(), "140400");
}

#[test]
fn due_period_is_the_last_local_month_or_week_that_ended() {
    // 00:30 on 1 January in Shanghai is still 31 December in UTC.
    let now: Timestamp = "2026-12-31T16:30:00Z".parse().unwrap();
    let month = Schedule::Monthly.due_period(now, &shanghai()).unwrap();
    assert_eq!(month.name(), "2026-12-01..2026-12-31");
    let now: Timestamp = "2026-12-31T15:30:00Z".parse().unwrap();
    let month = Schedule::Monthly.due_period(now, &shanghai()).unwrap();
    assert_eq!(month.name(), "2026-11-01..2026-11-30");
    // Wednesday 2026-12-02, local: the week of Monday 23 to Sunday 29
    // November ended last.
    let now: Timestamp = "2026-12-02T04:00:00Z".parse().unwrap();
    let week = Schedule::Weekly.due_period(now, &shanghai()).unwrap();
    assert_eq!(week.name(), "2026-11-23..2026-11-29");
    // On a Monday, the week that ended the night before.
    let now: Timestamp = "2026-11-30T01:00:00Z".parse().unwrap();
    let week = Schedule::Weekly.due_period(now, &shanghai()).unwrap();
    assert_eq!(week.name(), "2026-11-23..2026-11-29");
    assert_eq!(Schedule::Off.due_period(now, &shanghai()), None);
    assert_eq!(Schedule::parse("daily"), None);
}

fn sample_report() -> pb::StatisticsReport {
    pb::StatisticsReport {
        from: "2026-11-01".into(),
        to: "2026-11-30".into(),
        region: String::new(),
        reader: "cz-procuratorate".into(),
        events: vec![
            pb::EventCount {
                agency: "cz-eeb".into(),
                event: pb::EventType::CaseTransferred as i32,
                count: 3,
            },
            pb::EventCount {
                agency: "cz-psb, \"main\"".into(),
                event: pb::EventType::CaseFiled as i32,
                count: 2,
            },
        ],
        cases_opened: 4,
        cases_transferred: 3,
        cases_filed: 2,
        lead_time_samples: 2,
        lead_time_median_hours: 12.5,
        lead_time_p90_hours: 30.0,
        breaches_opened: 1,
        generated_at: Some(prost_types::Timestamp {
            seconds: 1_796_000_000,
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[test]
fn report_csv_has_one_quoted_row_per_figure() {
    let csv = String::from_utf8(format::report_csv(&sample_report())).unwrap();
    assert_eq!(
        csv,
        "metric,agency,event,value\n\
         from,,,2026-11-01\n\
         to,,,2026-11-30\n\
         region,,,\n\
         reader,,,cz-procuratorate\n\
         events,cz-eeb,CASE_TRANSFERRED,3\n\
         events,\"cz-psb, \"\"main\"\"\",CASE_FILED,2\n\
         cases_opened,,,4\n\
         cases_transferred,,,3\n\
         cases_filed,,,2\n\
         cases_declined,,,0\n\
         cases_prosecuted,,,0\n\
         cases_judged,,,0\n\
         lead_time_samples,,,2\n\
         lead_time_median_hours,,,12.5\n\
         lead_time_p90_hours,,,30\n\
         breaches_opened,,,1\n\
         breaches_closed_late,,,0\n"
    );
}

#[test]
fn report_json_is_the_proto_form_with_every_field() {
    let json = format::report_json(&sample_report());
    assert_eq!(json["from"], "2026-11-01");
    assert_eq!(json["reader"], "cz-procuratorate");
    assert_eq!(json["cases_declined"], 0, "zero counts are present");
    assert_eq!(json["events"][0]["event"], "EVENT_TYPE_CASE_TRANSFERRED");
    assert_eq!(json["events"][0]["count"], 3);
    assert_eq!(json["lead_time_median_hours"], 12.5);
    assert_eq!(json["generated_at"], "2026-11-30T00:53:20Z");
    assert_eq!(Format::parse("json"), Some(Format::Json));
    assert_eq!(Format::parse("xml"), None);
}

#[test]
fn report_table_aligns_columns() {
    let table = format::report_table(&sample_report());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "statistics 2026-11-01 .. 2026-11-30, as seen by cz-procuratorate"
    );
    assert_eq!(
        lines[1],
        "metric                  agency          event             value"
    );
    assert_eq!(
        lines[2],
        "events                  cz-eeb          CASE_TRANSFERRED  3"
    );
    assert_eq!(
        lines.last().copied(),
        Some("breaches_closed_late                                      0")
    );
}

#[test]
fn signals_csv_names_kinds_and_states() {
    let signal = pb::Signal {
        kind: pb::SignalKind::StuckCase as i32,
        case_ref: "CZ-1".into(),
        state: pb::CaseState::Filed as i32,
        since: Some(prost_types::Timestamp {
            seconds: 1_796_000_000,
            nanos: 0,
        }),
        region: "140423".into(),
        agency: "cz-psb".into(),
        rule: "stuck_days = 30".into(),
        detail: "FILED for 40 days".into(),
    };
    let csv = String::from_utf8(format::signals_csv(&[signal])).unwrap();
    assert_eq!(
        csv,
        "kind,case_ref,state,since,region,agency,rule,detail\n\
         STUCK_CASE,CZ-1,FILED,2026-11-30T00:53:20Z,140423,cz-psb,stuck_days = 30,FILED for 40 days\n"
    );
}

#[test]
fn signal_requests_are_validated_field_by_field() {
    let error = SignalQuery::try_from(pb::SignalsRequest {
        kinds: vec![pb::SignalKind::OpenBreach as i32, 0],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        (error.field.as_str(), error.reason.as_str()),
        ("kinds[1]", "0 is not a signal kind")
    );
    let error = SignalQuery::try_from(pb::SignalsRequest {
        kinds: vec![99],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(error.field, "kinds[0]");
    let error = SignalQuery::all(5000).unwrap_err();
    assert_eq!(error.field, "stuck_days");
    let all = SignalQuery::all(0).unwrap();
    assert_eq!(all.stuck_days, signals::DEFAULT_STUCK_DAYS);
    assert_eq!(all.kinds.len(), 5);
}

// ---- counts over a store, on every backend ----

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh store per backend; the guard keeps SQLite's directory.
async fn backends() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let mut stores = vec![(Store::connect(&url, 2).await.unwrap(), Some(dir))];
    let base = std::env::var("LIANDONG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    match sqlx::PgConnection::connect(&base).await {
        Ok(mut conn) => {
            static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let schema = format!(
                "ld_reports_{}_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                Instant::now().unix_micros()
            );
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let separator = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
            stores.push((Store::connect(&url, 2).await.unwrap(), None));
        }
        Err(error) => {
            assert!(
                std::env::var("LIANDONG_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "PostgreSQL at {base} is required: {error}"
            );
            eprintln!("PostgreSQL at {base} unreachable ({error}); skipping the PostgreSQL half");
        }
    }
    stores
}

/// Stores a notification and moves its `received_at` to `at`; returns its
/// sequence.
#[allow(clippy::too_many_arguments)]
async fn put(
    store: &Store,
    sender: &str,
    id: &str,
    case_ref: &str,
    event: pb::EventType,
    level: Confidentiality,
    recipients: &[&str],
    at: &str,
    body: Option<pb::CaseBody>,
) -> i64 {
    let wire = pb::Notification {
        notification_id: id.into(),
        case_ref: case_ref.into(),
        event: event as i32,
        confidentiality: level.to_wire() as i32,
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        region: "140423".into(),
        summary: "s".into(),
        sender: sender.into(),
        body,
        ..Default::default()
    };
    let envelope = Envelope {
        sender: AgencyId::parse("sender", sender).unwrap(),
        id: NotificationId::parse_field("id", id).unwrap(),
        case_ref: CaseRef::parse_field("case_ref", case_ref).unwrap(),
        event: Event::from_wire("event", event as i32).unwrap(),
        confidentiality: level,
        region: Region::parse("region", "140423").unwrap(),
        recipients: recipients
            .iter()
            .map(|r| AgencyId::parse("r", r).unwrap())
            .collect(),
        copies: Vec::new(),
    };
    let outcome = store
        .publish(&NewNotification::new(envelope, wire.encode_to_vec()))
        .await
        .unwrap();
    let PublishOutcome::Stored(receipt) = outcome else {
        panic!("stored")
    };
    let sequence = receipt.sequence as i64;
    let mut conn = store.read_connection().await.unwrap();
    sqlx::query("UPDATE notifications SET received_at = $1 WHERE sequence = $2")
        .bind(micros(at))
        .bind(sequence)
        .execute(&mut *conn)
        .await
        .unwrap();
    sequence
}

async fn breach(
    store: &Store,
    case_ref: &str,
    started: i64,
    due: &str,
    breached: &str,
    stopped: Option<&str>,
) {
    let mut conn = store.read_connection().await.unwrap();
    sqlx::query(
        "INSERT INTO deadlines (rule, case_ref, started_sequence, started_at, due_at, late_agency, \
         supervisor, breached_at, alert_sequence, stopped_sequence, stopped_at) \
         VALUES ('police-filing-decision', $1, $2, $3, $4, 'cz-psb-xiangyuan', \
         'cz-procuratorate-xiangyuan', $5, NULL, NULL, $6)",
    )
    .bind(case_ref)
    .bind(started)
    .bind(micros(due) - 72 * 3_600_000_000)
    .bind(micros(due))
    .bind(micros(breached))
    .bind(stopped.map(micros))
    .execute(&mut *conn)
    .await
    .unwrap();
}

use Confidentiality::{Confidential, Internal, Restricted};
use pb::EventType as E;

/// Case A: an INTERNAL clue, a RESTRICTED transfer to the county police and
/// its filing 30 hours later, CONFIDENTIAL. Case B: RESTRICTED between the
/// county bureau and the county police only, with a breach.
async fn history(store: &Store) {
    put(
        store,
        "cz-eeb-xiangyuan",
        "a1",
        "CZ-A",
        E::ClueShared,
        Internal,
        &[],
        "2026-10-31T10:00:00Z",
        None,
    )
    .await;
    let transfer = put(
        store,
        "cz-eeb-xiangyuan",
        "a2",
        "CZ-A",
        E::CaseTransferred,
        Restricted,
        &["cz-psb-xiangyuan"],
        "2026-11-01T02:00:00Z",
        None,
    )
    .await;
    put(
        store,
        "cz-psb-xiangyuan",
        "a3",
        "CZ-A",
        E::CaseFiled,
        Confidential,
        &["cz-eeb-xiangyuan"],
        "2026-11-02T08:00:00Z",
        None,
    )
    .await;
    // Received 23:30 UTC on 30 November: 1 December in Shanghai.
    put(
        store,
        "cz-psb-xiangyuan",
        "a4",
        "CZ-A",
        E::EarlyIntervention,
        Internal,
        &[],
        "2026-11-30T23:30:00Z",
        None,
    )
    .await;
    let b = put(
        store,
        "cz-eeb-xiangyuan",
        "b1",
        "CZ-B",
        E::CaseTransferred,
        Restricted,
        &["cz-psb-xiangyuan"],
        "2026-11-03T02:00:00Z",
        None,
    )
    .await;
    put(
        store,
        "cz-psb-xiangyuan",
        "b2",
        "CZ-B",
        E::FilingDeclined,
        Restricted,
        &["cz-eeb-xiangyuan"],
        "2026-11-10T02:00:00Z",
        None,
    )
    .await;
    breach(
        store,
        "CZ-A",
        transfer,
        "2026-11-04T02:00:00Z",
        "2026-11-04T02:00:01Z",
        Some("2026-11-05T00:00:00Z"),
    )
    .await;
    breach(
        store,
        "CZ-B",
        b,
        "2026-11-06T02:00:00Z",
        "2026-11-06T02:00:01Z",
        Some("2026-11-10T02:00:00Z"),
    )
    .await;
}

fn november() -> ReportQuery {
    ReportQuery::parse("2026-11-01", "2026-11-30", "", shanghai()).unwrap()
}

fn counts(report: &pb::StatisticsReport) -> Vec<(String, String, u64)> {
    report
        .events
        .iter()
        .map(|c| (c.agency.clone(), format::event_name(c.event), c.count))
        .collect()
}

#[tokio::test]
async fn the_operator_counts_everything_received_in_the_local_period() {
    for (store, _guard) in backends().await {
        history(&store).await;
        let mut conn = store.read_connection().await.unwrap();
        let report = report(
            &mut conn,
            &rules(),
            &Viewer::Operator,
            &november(),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(
            counts(&report),
            [
                ("cz-eeb-xiangyuan".into(), "CASE_TRANSFERRED".into(), 2),
                ("cz-psb-xiangyuan".into(), "CASE_FILED".into(), 1),
                ("cz-psb-xiangyuan".into(), "FILING_DECLINED".into(), 1),
            ],
            "the clue of 31 October (UTC 10:00, local 18:00) and the \
             intervention of 1 December (local) are outside November"
        );
        assert_eq!(report.reader, "");
        // CZ-A opened in October; CZ-B opened with its transfer.
        assert_eq!(report.cases_opened, 1);
        assert_eq!(report.cases_transferred, 2);
        assert_eq!(report.cases_filed, 1);
        assert_eq!(report.cases_declined, 1);
        // 30 hours (CZ-A) and 168 hours (CZ-B).
        assert_eq!(report.lead_time_samples, 2);
        assert_eq!(report.lead_time_median_hours, 30.0);
        assert_eq!(report.lead_time_p90_hours, 168.0);
        assert_eq!(report.breaches_opened, 2);
        assert_eq!(report.breaches_closed_late, 2);

        let december = ReportQuery::parse("2026-12-01", "2026-12-31", "", shanghai()).unwrap();
        let report = super::report(
            &mut conn,
            &rules(),
            &Viewer::Operator,
            &december,
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(
            counts(&report),
            [("cz-psb-xiangyuan".into(), "EARLY_INTERVENTION".into(), 1)]
        );
        assert_eq!(report.breaches_opened, 0);

        let elsewhere =
            ReportQuery::parse("2026-11-01", "2026-11-30", "140403", shanghai()).unwrap();
        let report = super::report(
            &mut conn,
            &rules(),
            &Viewer::Operator,
            &elsewhere,
            Instant::now(),
        )
        .await
        .unwrap();
        assert!(report.events.is_empty(), "nothing in region 140403");
        assert_eq!((report.cases_transferred, report.breaches_opened), (0, 0));
    }
}

#[tokio::test]
async fn a_reader_counts_only_what_it_may_see() {
    for (store, _guard) in backends().await {
        history(&store).await;
        let rules = rules();
        let mut conn = store.read_connection().await.unwrap();

        // A bureau of another county is a member: it sees INTERNAL content
        // only, so in November nothing, and no breach of either case.
        let luzhou = reader(&rules, "cz-eeb-luzhou");
        let report = report(&mut conn, &rules, &luzhou, &november(), Instant::now())
            .await
            .unwrap();
        assert_eq!(report.reader, "cz-eeb-luzhou");
        assert!(counts(&report).is_empty());
        assert_eq!((report.cases_transferred, report.lead_time_samples), (0, 0));
        // It sees case A's clue, so case A's breach counts; not case B's.
        assert_eq!(
            (report.breaches_opened, report.breaches_closed_late),
            (1, 1)
        );

        // The county procuratorate supervises transfers and filing (stubs)
        // in its region: it counts them all.
        let procuratorate = reader(&rules, "cz-procuratorate-xiangyuan");
        let report = super::report(
            &mut conn,
            &rules,
            &procuratorate,
            &november(),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(counts(&report).len(), 3);
        assert_eq!(report.lead_time_samples, 2);
        assert_eq!(report.breaches_opened, 2);

        // An observer sees nothing that is not public.
        let press = reader(&rules, "cz-press-office");
        let report = super::report(&mut conn, &rules, &press, &november(), Instant::now())
            .await
            .unwrap();
        assert!(report.events.is_empty());
        assert_eq!(report.breaches_opened, 0);
    }
}

fn penalty_body(tonnes: &str) -> Option<pb::CaseBody> {
    Some(pb::CaseBody {
        measurements: vec![pb::Measurement {
            name: "hazardous_waste_tonnes".into(),
            value: tonnes.into(),
            unit: String::new(),
        }],
        ..Default::default()
    })
}

#[tokio::test]
async fn penalty_signal_follows_thresholds_and_what_the_reader_reads() {
    for (store, _guard) in backends().await {
        let at = "2026-11-05T02:00:00Z";
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p1",
            "CZ-P5",
            E::PenaltyDecided,
            Internal,
            &[],
            at,
            penalty_body("5"),
        )
        .await;
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p2",
            "CZ-P1",
            E::PenaltyDecided,
            Internal,
            &[],
            at,
            penalty_body("1"),
        )
        .await;
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p3",
            "CZ-PT",
            E::PenaltyDecided,
            Internal,
            &[],
            at,
            penalty_body("8"),
        )
        .await;
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p4",
            "CZ-PT",
            E::CaseTransferred,
            Restricted,
            &["cz-psb-xiangyuan"],
            at,
            None,
        )
        .await;
        // A confidential penalty the county procuratorate does not read.
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p5",
            "CZ-PC",
            E::PenaltyDecided,
            Restricted,
            &["cz-psb-xiangyuan"],
            at,
            penalty_body("9"),
        )
        .await;
        let rules = rules();
        let settings = SupervisionSettings::default();
        let query = SignalQuery::try_from(pb::SignalsRequest {
            kinds: vec![pb::SignalKind::PenaltyWithoutTransfer as i32],
            ..Default::default()
        })
        .unwrap();
        let mut conn = store.read_connection().await.unwrap();
        let found = signals::signals(
            &mut conn,
            &rules,
            &Viewer::Operator,
            &settings,
            &query,
            Instant::now(),
        )
        .await
        .unwrap();
        let cases: Vec<&str> = found.iter().map(|s| s.case_ref.as_str()).collect();
        assert_eq!(cases, ["CZ-P5", "CZ-PC"]);
        assert_eq!(found[0].agency, "cz-eeb-xiangyuan");
        assert_eq!(found[0].state, pb::CaseState::Penalized as i32);
        assert_eq!(found[0].rule, "crime_thresholds.hazardous_waste_tonnes = 3");
        assert_eq!(found[0].region, "140423");

        let procuratorate = reader(&rules, "cz-procuratorate-xiangyuan");
        let found = signals::signals(
            &mut conn,
            &rules,
            &procuratorate,
            &settings,
            &query,
            Instant::now(),
        )
        .await
        .unwrap();
        let cases: Vec<&str> = found.iter().map(|s| s.case_ref.as_str()).collect();
        assert_eq!(
            cases,
            ["CZ-P5"],
            "a penalty it does not read is not flagged to it"
        );

        // The case picture's state is named when there is one.
        case(&store, "CZ-P5", pb::CaseState::Penalized, at).await;
        let found = signals::signals(
            &mut conn,
            &rules,
            &procuratorate,
            &settings,
            &query,
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(found[0].state, pb::CaseState::Penalized as i32);

        // A higher configured threshold flags nothing.
        let strict = SupervisionSettings {
            crime_thresholds: vec![CrimeThreshold {
                measurement: "hazardous_waste_tonnes".into(),
                minimum: 10.0,
            }],
            ..SupervisionSettings::default()
        };
        let found = signals::signals(
            &mut conn,
            &rules,
            &Viewer::Operator,
            &strict,
            &query,
            Instant::now(),
        )
        .await
        .unwrap();
        assert!(found.is_empty());
    }
}

async fn case(store: &Store, case_ref: &str, state: pb::CaseState, since: &str) {
    let mut conn = store.read_connection().await.unwrap();
    sqlx::query(
        "INSERT INTO cases (case_ref, state, region, agencies, opened_at, state_since, \
         last_sequence, transferor, police, penalized_at) \
         VALUES ($1, $2, '140423', 'cz-eeb-xiangyuan cz-psb-xiangyuan', $3, $3, 1, \
         'cz-eeb-xiangyuan', 'cz-psb-xiangyuan', NULL) \
         ON CONFLICT (case_ref) DO UPDATE SET state = excluded.state, \
         state_since = excluded.state_since, opened_at = excluded.opened_at",
    )
    .bind(case_ref)
    .bind(state as i32 as i64)
    .bind(micros(since))
    .execute(&mut *conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn signals_list_breaches_stuck_and_waiting_cases_the_viewer_may_see() {
    for (store, _guard) in backends().await {
        history(&store).await;
        // CZ-A: filed long ago. CZ-B: declined (settled). CZ-C: transfer
        // received 40 days ago, seen by nobody but its parties.
        case(&store, "CZ-A", pb::CaseState::Filed, "2026-08-01T00:00:00Z").await;
        case(
            &store,
            "CZ-B",
            pb::CaseState::Declined,
            "2026-08-01T00:00:00Z",
        )
        .await;
        put(
            &store,
            "cz-eeb-xiangyuan",
            "c1",
            "CZ-C",
            E::CaseTransferred,
            Restricted,
            &["cz-psb-xiangyuan"],
            "2026-10-01T00:00:00Z",
            None,
        )
        .await;
        case(
            &store,
            "CZ-C",
            pb::CaseState::TransferReceived,
            "2026-10-22T00:00:00Z",
        )
        .await;
        let c = {
            let mut conn = store.read_connection().await.unwrap();
            sqlx::query_scalar::<_, i64>(
                "SELECT sequence FROM notifications WHERE notification_id = 'c1'",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap()
        };
        breach(
            &store,
            "CZ-C",
            c,
            "2026-10-04T00:00:00Z",
            "2026-10-04T00:00:01Z",
            None,
        )
        .await;

        let rules = rules();
        let now = Instant::from_unix_micros(micros("2026-12-01T00:00:00Z")).unwrap();
        let settings = SupervisionSettings::default();
        let query = SignalQuery::all(0).unwrap();
        let mut conn = store.read_connection().await.unwrap();
        let found = signals::signals(&mut conn, &rules, &Viewer::Operator, &settings, &query, now)
            .await
            .unwrap();
        let kinds: Vec<(i32, &str)> = found
            .iter()
            .map(|s| (s.kind, s.case_ref.as_str()))
            .collect();
        use pb::SignalKind as K;
        assert_eq!(
            kinds,
            [
                (K::OpenBreach as i32, "CZ-C"),
                (K::StuckCase as i32, "CZ-A"),
                (K::StuckCase as i32, "CZ-C"),
                (K::TransferWithoutFiling as i32, "CZ-C"),
                (K::FiledWithoutProgress as i32, "CZ-A"),
            ]
        );
        assert_eq!(found[0].agency, "cz-psb-xiangyuan");
        assert_eq!(found[0].rule, "police-filing-decision");
        assert_eq!(found[0].state, pb::CaseState::TransferReceived as i32);
        assert_eq!(found[1].detail, "FILED for 122 days");
        assert_eq!(
            found[1].agency, "cz-psb-xiangyuan",
            "a filed case waits on the police"
        );

        // The bureau of another county sees case A's clue, not case C.
        let luzhou = reader(&rules, "cz-eeb-luzhou");
        let found = signals::signals(&mut conn, &rules, &luzhou, &settings, &query, now)
            .await
            .unwrap();
        let cases: Vec<&str> = found.iter().map(|s| s.case_ref.as_str()).collect();
        assert_eq!(cases, ["CZ-A", "CZ-A"]);

        // Stuck after 50 days: case C (40 days) no longer is.
        let query = SignalQuery::try_from(pb::SignalsRequest {
            kinds: vec![K::StuckCase as i32],
            stuck_days: 50,
            region: "140423".into(),
        })
        .unwrap();
        let found = signals::signals(&mut conn, &rules, &Viewer::Operator, &settings, &query, now)
            .await
            .unwrap();
        let cases: Vec<&str> = found.iter().map(|s| s.case_ref.as_str()).collect();
        assert_eq!(cases, ["CZ-A"]);
    }
}

/// Records what it was asked to emit and answers sequences from 1000.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<pb::Notification>>);

impl GatewayEmitter for Recorder {
    fn emit<'c>(
        &'c self,
        _conn: &'c mut sqlx::AnyConnection,
        notification: pb::Notification,
    ) -> futures::future::BoxFuture<'c, Result<u64, StoreError>> {
        let mut sent = self.0.lock().unwrap();
        sent.push(notification);
        let sequence = 999 + sent.len() as u64;
        Box::pin(async move { Ok(sequence) })
    }
}

/// Fails every emit, as a store that cannot write would.
struct Failing;

impl GatewayEmitter for Failing {
    fn emit<'c>(
        &'c self,
        _conn: &'c mut sqlx::AnyConnection,
        _notification: pb::Notification,
    ) -> futures::future::BoxFuture<'c, Result<u64, StoreError>> {
        Box::pin(async { Err(StoreError::Closed) })
    }
}

#[tokio::test]
async fn each_member_agency_gets_its_own_report_once_per_period() {
    for (store, _guard) in backends().await {
        history(&store).await;
        let rules = rules();
        // 1 December, 08:00 in Shanghai: November has ended.
        let now = Instant::from_unix_micros(micros("2026-12-01T00:00:00Z")).unwrap();
        let recorder = Recorder::default();
        let mut conn = store.read_connection().await.unwrap();

        let error = scheduled::emit_due(
            &mut conn,
            &Failing,
            &rules,
            Schedule::Monthly,
            &shanghai(),
            now,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, StoreError::Closed));
        let november = Period::parse("2026-11-01", "2026-11-30", shanghai()).unwrap();
        assert!(
            scheduled::runs(&mut conn, &november)
                .await
                .unwrap()
                .is_empty(),
            "a failed emit records no run"
        );

        let emitted = scheduled::emit_due(
            &mut conn,
            &recorder,
            &rules,
            Schedule::Monthly,
            &shanghai(),
            now,
        )
        .await
        .unwrap();
        let members: Vec<String> = rules
            .registry
            .agencies()
            .filter(|a| a.role.is_member())
            .map(|a| a.id.to_string())
            .collect();
        assert_eq!(emitted.len(), members.len());
        let runs = scheduled::runs(&mut conn, &november).await.unwrap();
        assert_eq!(runs.len(), members.len());

        let sent = recorder.0.lock().unwrap().clone();
        let to_procuratorate = sent
            .iter()
            .find(|n| n.recipients == ["cz-procuratorate-xiangyuan"])
            .unwrap();
        assert_eq!(
            to_procuratorate.event,
            pb::EventType::StatisticsReport as i32
        );
        assert_eq!(
            to_procuratorate.confidentiality,
            pb::Confidentiality::Restricted as i32
        );
        assert_eq!(
            to_procuratorate.notification_id,
            "statistics:2026-11-01..2026-11-30:cz-procuratorate-xiangyuan"
        );
        assert_eq!(
            to_procuratorate.case_ref,
            "STATISTICS/2026-11-01..2026-11-30"
        );
        assert_eq!(to_procuratorate.region, "140423");
        let body = to_procuratorate.body.as_ref().unwrap();
        let value = |name: &str| {
            body.measurements
                .iter()
                .find(|m| m.name == name)
                .map(|m| (m.value.as_str(), m.unit.as_str()))
        };
        assert_eq!(value("cases_transferred"), Some(("2", "cases")));
        assert_eq!(value("lead_time_median_hours"), Some(("30", "hours")));
        assert_eq!(value("breaches_opened"), Some(("2", "breaches")));
        assert_eq!(
            value("events.cz-psb-xiangyuan.CASE_FILED"),
            Some(("1", "notifications"))
        );
        let [attachment] = body.attachments.as_slice() else {
            panic!("one attachment")
        };
        let viewer = reader(&rules, "cz-procuratorate-xiangyuan");
        let counted = super::report(
            &mut conn,
            &rules,
            &viewer,
            &ReportQuery {
                period: november.clone(),
                region: None,
            },
            now,
        )
        .await
        .unwrap();
        let csv = format::report_csv(&counted);
        assert_eq!(attachment.media_type, "text/csv");
        assert_eq!(attachment.size_bytes, csv.len() as u64);
        assert_eq!(
            attachment.sha256,
            format!("{:x}", sha2::Sha256::digest(&csv))
        );
        // The bureau of another county got its own, smaller view.
        let to_luzhou = sent
            .iter()
            .find(|n| n.recipients == ["cz-eeb-luzhou"])
            .unwrap();
        let luzhou_body = to_luzhou.body.as_ref().unwrap();
        assert!(
            luzhou_body
                .measurements
                .iter()
                .any(|m| m.name == "cases_transferred" && m.value == "0")
        );

        // Asked again, nothing is sent twice.
        let again = scheduled::emit_due(
            &mut conn,
            &recorder,
            &rules,
            Schedule::Monthly,
            &shanghai(),
            now,
        )
        .await
        .unwrap();
        assert!(again.is_empty());
        assert_eq!(recorder.0.lock().unwrap().len(), members.len());
        let off = scheduled::emit_due(
            &mut conn,
            &recorder,
            &rules,
            Schedule::Off,
            &shanghai(),
            now,
        )
        .await
        .unwrap();
        assert!(off.is_empty());
    }
}

async fn operator_november(conn: &mut sqlx::AnyConnection, rules: &Rules) -> pb::StatisticsReport {
    super::report(conn, rules, &Viewer::Operator, &november(), Instant::now())
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_that_do_not_parse_or_whose_payload_changed_are_left_out() {
    for (store, _guard) in backends().await {
        let at = "2026-11-05T02:00:00Z";
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p1",
            "CZ-P5",
            E::PenaltyDecided,
            Internal,
            &[],
            at,
            penalty_body("5"),
        )
        .await;
        put(
            &store,
            "cz-eeb-xiangyuan",
            "p2",
            "CZ-P6",
            E::PenaltyDecided,
            Internal,
            &[],
            at,
            penalty_body("6"),
        )
        .await;
        put(
            &store,
            "cz-eeb-xiangyuan",
            "c1",
            "CZ-C",
            E::ClueShared,
            Internal,
            &[],
            at,
            None,
        )
        .await;
        let rules = rules();
        let query = SignalQuery::all(0).unwrap();
        let settings = SupervisionSettings::default();
        let mut conn = store.read_connection().await.unwrap();
        assert_eq!(
            operator_november(&mut conn, &rules)
                .await
                .events
                .iter()
                .map(|e| e.count)
                .sum::<u64>(),
            3
        );

        // A region column that is not a region: the row counts for nobody.
        sqlx::query("UPDATE notifications SET region = 'nowhere' WHERE notification_id = 'c1'")
            .execute(&mut *conn)
            .await
            .unwrap();
        let report = operator_november(&mut conn, &rules).await;
        assert_eq!(report.events.iter().map(|e| e.count).sum::<u64>(), 2);
        assert_eq!(report.cases_opened, 2);

        // A penalty whose payload no longer matches its hash is not read.
        let forged = pb::Notification {
            notification_id: "p2".into(),
            body: penalty_body("60"),
            ..Default::default()
        };
        sqlx::query("UPDATE notifications SET payload = $1 WHERE notification_id = 'p2'")
            .bind(forged.encode_to_vec())
            .execute(&mut *conn)
            .await
            .unwrap();
        let found = signals::signals(
            &mut conn,
            &rules,
            &Viewer::Operator,
            &settings,
            &query,
            Instant::now(),
        )
        .await
        .unwrap();
        let cases: Vec<&str> = found.iter().map(|s| s.case_ref.as_str()).collect();
        assert_eq!(cases, ["CZ-P5"]);
    }
}
