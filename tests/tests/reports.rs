//! Statistics reports and supervision signals end to end: a generated
//! history of cases published over mutual TLS by the agencies whose role
//! allows each step, then the report counted independently here compared
//! with what `GetReport` answers an operator and with what the `report`
//! command prints; the 以罚代刑 signal; refusals of callers who may not
//! supervise.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb::supervision_client::SupervisionClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Testbed, binary, notification, publish};

/// The mechanism's default time zone.
const ZONE: &str = "Asia/Shanghai";

async fn supervision(bed: &Testbed, agency: &str) -> SupervisionClient<Channel> {
    let channel = bed
        .pki
        .credentials(agency)
        .connect(&bed.gateway.url(), None)
        .await
        .expect("connect to the gateway");
    SupervisionClient::new(channel)
}

fn today() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get(ZONE).unwrap())
        .date()
        .to_string()
}

/// A small deterministic generator (a 64-bit LCG), so a failure repeats.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % sides
    }
}

/// The agencies of one county (or of the city) handling a case there.
struct Team {
    region: &'static str,
    bureau: &'static str,
    police: &'static str,
    procuratorate: &'static str,
}

const TEAMS: [Team; 2] = [
    Team {
        region: "140423",
        bureau: "cz-eeb-xiangyuan",
        police: "cz-psb-xiangyuan",
        procuratorate: "cz-procuratorate-xiangyuan",
    },
    Team {
        region: "140403",
        bureau: "cz-eeb-luzhou",
        police: "cz-psb",
        procuratorate: "cz-procuratorate",
    },
];

/// What one published notification was, as the test records it.
#[derive(Debug, Clone)]
struct Published {
    sender: String,
    case_ref: String,
    event: Event,
    received_at: i64,
}

fn micros(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000)
}

/// Publishes a generated history of `cases` cases, each a valid lifecycle
/// published in case order by the right roles; returns what was stored.
async fn publish_history(bed: &Testbed, cases: usize, dice: &mut Dice) -> Vec<Published> {
    let mut clients = BTreeMap::new();
    for team in &TEAMS {
        for agency in [team.bureau, team.police, team.procuratorate] {
            if !clients.contains_key(agency) {
                clients.insert(agency, bed.client(agency).await);
            }
        }
    }
    let mut published = Vec::new();
    for case in 0..cases {
        let team = &TEAMS[case % TEAMS.len()];
        let case_ref = format!("CZ-2026-GEN-{case:04}");
        // Each step: who publishes, what, to whom above INTERNAL.
        let mut steps: Vec<(&str, Event, Vec<&str>)> =
            vec![(team.bureau, Event::ClueShared, vec![])];
        match dice.roll(6) {
            0 => steps.push((team.bureau, Event::PenaltyDecided, vec![])),
            _ => {
                steps.push((team.bureau, Event::CaseTransferred, vec![team.police]));
                if dice.roll(5) > 0 {
                    steps.push((team.police, Event::TransferReceived, vec![team.bureau]));
                    match dice.roll(4) {
                        0 => steps.push((team.police, Event::FilingDeclined, vec![team.bureau])),
                        1 => {}
                        _ => {
                            steps.push((team.police, Event::CaseFiled, vec![team.bureau]));
                            if dice.roll(2) == 0 {
                                steps.push((
                                    team.procuratorate,
                                    Event::ProsecutionFiled,
                                    vec![team.police],
                                ));
                                if dice.roll(2) == 0 {
                                    steps.push((
                                        team.procuratorate,
                                        Event::JudgmentRecorded,
                                        vec![team.police, team.bureau],
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, (sender, event, recipients)) in steps.into_iter().enumerate() {
            let level = if recipients.is_empty() || dice.roll(3) == 0 {
                Level::Internal
            } else {
                Level::Restricted
            };
            let recipients = if level == Level::Internal {
                vec![]
            } else {
                recipients
            };
            let mut n = notification(
                &format!("{case_ref}-{i}"),
                &case_ref,
                event,
                level,
                &recipients,
            );
            n.region = team.region.to_owned();
            let client = clients.get_mut(sender).expect("a client per agency");
            let receipt = publish(client, n)
                .await
                .unwrap_or_else(|e| panic!("{sender} publishes {event:?} on {case_ref}: {e:?}"));
            published.push(Published {
                sender: sender.to_owned(),
                case_ref: case_ref.clone(),
                event,
                received_at: micros(receipt.received_at.as_ref().expect("received_at")),
            });
        }
    }
    published
}

/// The report computed here from what was published, every notification
/// counted (the operator's view), all of it within the period.
fn expected_report(published: &[Published], day: &str) -> pb::StatisticsReport {
    let mut events: BTreeMap<(String, i32), u64> = BTreeMap::new();
    let mut by_case: BTreeMap<&str, Vec<&Published>> = BTreeMap::new();
    for p in published {
        *events
            .entry((p.sender.clone(), p.event as i32))
            .or_default() += 1;
        by_case.entry(p.case_ref.as_str()).or_default().push(p);
    }
    let cases_with = |event: Event| {
        by_case
            .values()
            .filter(|rows| rows.iter().any(|p| p.event == event))
            .count() as u64
    };
    let mut lead_times: Vec<f64> = by_case
        .values()
        .filter_map(|rows| {
            let transfer = rows
                .iter()
                .position(|p| p.event == Event::CaseTransferred)?;
            let decision = rows[transfer..]
                .iter()
                .find(|p| matches!(p.event, Event::CaseFiled | Event::FilingDeclined))?;
            Some((decision.received_at - rows[transfer].received_at) as f64 / 3_600_000_000.0)
        })
        .collect();
    lead_times.sort_by(f64::total_cmp);
    // Nearest rank: the value at rank ceil(p/100 * n).
    let rank = |p: f64| {
        if lead_times.is_empty() {
            0.0
        } else {
            lead_times[((p / 100.0 * lead_times.len() as f64).ceil() as usize).max(1) - 1]
        }
    };
    pb::StatisticsReport {
        from: day.to_owned(),
        to: day.to_owned(),
        region: String::new(),
        reader: String::new(),
        events: events
            .into_iter()
            .map(|((agency, event), count)| pb::EventCount {
                agency,
                event,
                count,
            })
            .collect(),
        cases_opened: by_case.len() as u64,
        cases_transferred: cases_with(Event::CaseTransferred),
        cases_filed: cases_with(Event::CaseFiled),
        cases_declined: cases_with(Event::FilingDeclined),
        cases_prosecuted: cases_with(Event::ProsecutionFiled),
        cases_judged: cases_with(Event::JudgmentRecorded),
        lead_time_samples: lead_times.len() as u64,
        lead_time_median_hours: rank(50.0),
        lead_time_p90_hours: rank(90.0),
        breaches_opened: 0,
        breaches_closed_late: 0,
        generated_at: None,
    }
}

/// Runs `liandong-gateway report …` on the test bed's config.
fn report_command(args: &[&str]) -> std::process::Output {
    Command::new(binary("liandong-gateway"))
        .arg("report")
        .args(args)
        .env("LIANDONG_LOG", "warn")
        .output()
        .expect("run liandong-gateway report")
}

#[tokio::test(flavor = "multi_thread")]
async fn report_counts_match_published_events() {
    let bed = Testbed::start().expect("test bed");
    let before = today();
    let published = publish_history(&bed, 240, &mut Dice(20_261_130)).await;
    let after = today();
    assert!(
        published.len() > 700,
        "a few hundred cases, several steps each"
    );
    // Local midnight may pass while publishing: the period covers both.
    let mut expected = expected_report(&published, &before);
    expected.to = after.clone();

    let mut ops = supervision(&bed, "cz-ops").await;
    let mut answered = ops
        .get_report(pb::ReportRequest {
            from: before.clone(),
            to: after.clone(),
            region: String::new(),
        })
        .await
        .expect("the operator gets the report")
        .into_inner();
    assert!(answered.generated_at.take().is_some());
    assert_eq!(answered, expected);
    assert!(expected.lead_time_samples > 50 && expected.cases_judged > 0);

    let config = bed.config.to_str().expect("utf-8 path");
    let output = report_command(&[
        "--config", config, "--from", &before, "--to", &after, "--format", "json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let events: Vec<(String, String, u64)> = json["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["agency"].as_str().unwrap().to_owned(),
                e["event"].as_str().unwrap().to_owned(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let wanted: Vec<(String, String, u64)> = expected
        .events
        .iter()
        .map(|e| {
            (
                e.agency.clone(),
                Event::try_from(e.event).unwrap().as_str_name().to_owned(),
                e.count,
            )
        })
        .collect();
    assert_eq!(events, wanted);
    for (field, value) in [
        ("cases_opened", expected.cases_opened),
        ("cases_transferred", expected.cases_transferred),
        ("cases_filed", expected.cases_filed),
        ("cases_declined", expected.cases_declined),
        ("cases_prosecuted", expected.cases_prosecuted),
        ("cases_judged", expected.cases_judged),
        ("lead_time_samples", expected.lead_time_samples),
        ("breaches_opened", 0),
        ("breaches_closed_late", 0),
    ] {
        assert_eq!(json[field].as_u64(), Some(value), "{field}");
    }
    // JSON numbers are decimal text: equal to the last few bits of the
    // double, not necessarily to the last one.
    for (field, value) in [
        ("lead_time_median_hours", expected.lead_time_median_hours),
        ("lead_time_p90_hours", expected.lead_time_p90_hours),
    ] {
        let read = json[field].as_f64().unwrap_or(f64::NAN);
        assert!(
            (read - value).abs() <= value.abs() * 1e-12,
            "{field}: {read} from the CLI, {value} computed"
        );
    }
    assert_eq!(json["reader"], "");

    // A region narrows the counts to the notifications within it.
    let xiangyuan = ops
        .get_report(pb::ReportRequest {
            from: before.clone(),
            to: after.clone(),
            region: "140423".into(),
        })
        .await
        .expect("report of one county")
        .into_inner();
    let in_county: u64 = published
        .iter()
        .filter(|p| p.sender.ends_with("xiangyuan"))
        .count() as u64;
    assert_eq!(
        xiangyuan.events.iter().map(|e| e.count).sum::<u64>(),
        in_county
    );

    // The CSV form carries the same figures.
    let output = report_command(&[
        "--config", config, "--from", &before, "--to", &after, "--format", "csv",
    ]);
    assert!(output.status.success(), "{output:?}");
    let csv = String::from_utf8(output.stdout).expect("utf-8");
    assert!(csv.starts_with("metric,agency,event,value\n"));
    assert!(csv.contains(&format!("\ncases_opened,,,{}\n", expected.cases_opened)));
}

#[tokio::test(flavor = "multi_thread")]
async fn penalty_without_transfer_is_flagged() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    let penalty = |id: &str, case_ref: &str, tonnes: &str| {
        let mut n = notification(id, case_ref, Event::PenaltyDecided, Level::Internal, &[]);
        n.body = Some(pb::CaseBody {
            measurements: vec![pb::Measurement {
                name: "hazardous_waste_tonnes".into(),
                value: tonnes.into(),
                unit: "tonnes".into(),
            }],
            ..Default::default()
        });
        n
    };
    for n in [
        penalty("p-5t", "CZ-PEN-5T", "5"),
        penalty("p-1t", "CZ-PEN-1T", "1"),
        penalty("p-8t", "CZ-PEN-TRANSFERRED", "8"),
        notification(
            "t-8t",
            "CZ-PEN-TRANSFERRED",
            Event::CaseTransferred,
            Level::Restricted,
            &["cz-psb-xiangyuan"],
        ),
    ] {
        publish(&mut bureau, n).await.expect("published");
    }
    for agency in ["cz-ops", "cz-procuratorate-xiangyuan"] {
        let signals = supervision(&bed, agency)
            .await
            .list_signals(pb::SignalsRequest {
                kinds: vec![pb::SignalKind::PenaltyWithoutTransfer as i32],
                stuck_days: 0,
                region: String::new(),
            })
            .await
            .expect("signals")
            .into_inner()
            .signals;
        let cases: Vec<&str> = signals.iter().map(|s| s.case_ref.as_str()).collect();
        assert_eq!(cases, ["CZ-PEN-5T"], "as {agency}");
        assert_eq!(signals[0].agency, "cz-eeb-xiangyuan");
        assert_eq!(signals[0].region, "140423");
        assert_eq!(
            signals[0].rule,
            "crime_thresholds.hazardous_waste_tonnes = 3"
        );
    }

    // The command prints the same signal.
    let config = bed.config.to_str().expect("utf-8 path");
    let output = report_command(&["signals", "--config", config, "--format", "csv"]);
    assert!(output.status.success(), "{output:?}");
    let csv = String::from_utf8(output.stdout).expect("utf-8");
    let flagged: BTreeSet<&str> = csv
        .lines()
        .filter(|line| line.starts_with("PENALTY_WITHOUT_TRANSFER,"))
        .map(|line| line.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(flagged, BTreeSet::from(["CZ-PEN-5T"]));
}

async fn refusals(bed: &Testbed) -> Vec<(String, String, String)> {
    let mut conn = bed.connect_database().await;
    sqlx::query_as::<_, (String, String, String)>(
        "SELECT agency, decision, reason FROM audit_log WHERE action = 'SUPERVISION_REFUSED' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("audit rows")
}

#[tokio::test(flavor = "multi_thread")]
async fn only_procuratorates_and_operators_may_supervise() {
    let bed = Testbed::start().expect("test bed");
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    publish(
        &mut bureau,
        notification("c-1", "CZ-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .expect("published");
    let stored = bed.stored_count().await;
    let day = today();

    for agency in ["cz-psb", "cz-eeb-xiangyuan", "cz-press-office"] {
        let mut client = supervision(&bed, agency).await;
        let status = client
            .get_report(pb::ReportRequest {
                from: day.clone(),
                to: day.clone(),
                region: String::new(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{agency}");
        assert_eq!(
            status.message(),
            format!(
                "{agency} may not use the Supervision service: it is for procuratorates and operators"
            )
        );
        let status = client
            .list_signals(pb::SignalsRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{agency}");
    }
    let audited = refusals(&bed).await;
    assert_eq!(audited.len(), 6);
    assert_eq!(
        audited[0],
        (
            "cz-psb".to_owned(),
            "PERMISSION_DENIED".to_owned(),
            "permission denied: cz-psb may not use the Supervision service: it is for procuratorates and operators".to_owned()
        )
    );

    // Bad fields are named, refused and audited too.
    let mut procuratorate = supervision(&bed, "cz-procuratorate").await;
    let status = procuratorate
        .get_report(pb::ReportRequest {
            from: "2026-02-30".into(),
            to: day.clone(),
            region: String::new(),
        })
        .await
        .expect_err("bad date");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "from: 2026-02-30 is not a calendar date");
    let status = procuratorate
        .get_report(pb::ReportRequest {
            from: day.clone(),
            to: day.clone(),
            region: "1404".into(),
        })
        .await
        .expect_err("bad region");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("region: "),
        "{}",
        status.message()
    );
    let status = procuratorate
        .list_signals(pb::SignalsRequest {
            kinds: vec![42],
            ..Default::default()
        })
        .await
        .expect_err("bad kind");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "kinds[0]: 42 is not a signal kind");
    let audited = refusals(&bed).await;
    assert_eq!(audited.len(), 9);
    assert!(audited[6..].iter().all(
        |(agency, decision, _)| agency == "cz-procuratorate" && decision == "INVALID_ARGUMENT"
    ));

    // The procuratorate itself is answered, as a reader.
    let report = procuratorate
        .get_report(pb::ReportRequest {
            from: day.clone(),
            to: day.clone(),
            region: String::new(),
        })
        .await
        .expect("the procuratorate may")
        .into_inner();
    assert_eq!(report.reader, "cz-procuratorate");
    assert_eq!(report.cases_opened, 1);
    // Nothing was written but the audit rows.
    assert_eq!(bed.stored_count().await, stored);

    // A certificate the registry does not know is not a caller at all.
    let stranger = bed
        .pki
        .authority
        .agency("cz-stranger")
        .expect("certificate");
    let channel = bed
        .pki
        .credentials_with(&stranger)
        .connect(&bed.gateway.url(), None)
        .await
        .expect("the TLS handshake itself succeeds");
    let status = SupervisionClient::new(channel)
        .list_signals(pb::SignalsRequest::default())
        .await
        .expect_err("unknown caller");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "the certificate's identity is not a registered agency"
    );
    let audited = refusals(&bed).await;
    assert_eq!(audited.len(), 10);
    assert_eq!(
        (audited[9].0.as_str(), audited[9].1.as_str()),
        ("urn:liandong:agency:cz-stranger", "UNAUTHENTICATED")
    );

    // The command refuses a bad date with exit 64 and names the flag.
    let config = bed.config.to_str().expect("utf-8 path");
    let output = report_command(&[
        "--config",
        config,
        "--from",
        "2026-13-01",
        "--to",
        "2026-12-31",
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "liandong-gateway: --from: 2026-13-01 is not a calendar date"
    );
    let output = report_command(&[
        "--config",
        config,
        "--from",
        "2026-12-02",
        "--to",
        "2026-12-01",
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "liandong-gateway: --to: 2026-12-01 is before from (2026-12-02)"
    );
    let output = report_command(&["signals", "--config", config, "--stuck-days", "5000"]);
    assert_eq!(output.status.code(), Some(64));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "liandong-gateway: --stuck-days: must be at most 3650"
    );
}
