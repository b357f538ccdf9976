//! Calendar, rules and deadline tests; the store tests run on SQLite and
//! PostgreSQL from one body each (see `store::tests`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::date;
use prost::Message;

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Envelope, Event, Instant, NotificationId, Region,
};
use liandong_core::pb;
use liandong_core::registry::{GATEWAY_SENDER, Registry};

use super::deadlines::{self, Deadline, PENDING_DUE};
use super::rules::{Period, Unit};
use super::*;
use crate::policy::{Policy, Rules};
use crate::store::tests::{backends, postgres_schema_url};
use crate::store::{NewNotification, PublishOutcome, Receipt, Store};

fn shanghai() -> TimeZone {
    TimeZone::get("Asia/Shanghai").unwrap()
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

// ---------------------------------------------------------------- calendar

#[test]
fn working_days_skip_the_spring_festival_and_count_its_make_up_saturday() {
    let calendar = Calendar::built_in();
    // Friday 13 February 2026; Saturday 14 is a make-up working day, 15-23
    // are the holiday.
    assert_eq!(
        calendar.working_days_after(date(2026, 2, 13), 1).unwrap(),
        date(2026, 2, 14)
    );
    assert_eq!(
        calendar.working_days_after(date(2026, 2, 13), 2).unwrap(),
        date(2026, 2, 24)
    );
    // Three working days from a decline received on Friday 13 February at
    // 10:00 Beijing time end at 24:00 on Wednesday 25 February.
    let end = Period {
        amount: 3,
        unit: Unit::WorkingDays,
    }
    .end(ts("2026-02-13T02:00:00Z"), &shanghai(), &calendar, false)
    .unwrap();
    assert_eq!(end, ts("2026-02-25T16:00:00Z"));
}

#[test]
fn make_up_days_work_and_holidays_and_weekends_do_not() {
    let calendar = Calendar::built_in();
    for (day, working) in [
        (date(2026, 2, 28), true),  // Saturday, 春节调休
        (date(2026, 1, 4), true),   // Sunday, 元旦调休
        (date(2026, 10, 10), true), // Saturday, 国庆调休
        (date(2026, 2, 21), false), // Saturday within 春节
        (date(2026, 2, 23), false), // Monday within 春节
        (date(2026, 3, 7), false),  // an ordinary Saturday
        (date(2026, 3, 9), true),   // an ordinary Monday
        (date(2027, 2, 5), false),  // 除夕 2027, provisional year
    ] {
        assert_eq!(calendar.is_working_day(day).unwrap(), working, "{day}");
    }
}

#[test]
fn a_missing_year_is_an_error_never_a_guess() {
    let calendar = Calendar::built_in();
    let error = calendar.is_working_day(date(2028, 1, 3)).unwrap_err();
    assert_eq!(error, MissingYear(2028));
    assert_eq!(
        error.to_string(),
        "the calendar has no year 2028: add its holiday arrangement with [mechanism] calendar (docs/CASES.md, \"Calendar\")"
    );
    // A period running into the missing year is an error too.
    let period = Period {
        amount: 3,
        unit: Unit::WorkingDays,
    };
    assert_eq!(
        period.end(ts("2027-12-30T02:00:00Z"), &shanghai(), &calendar, false),
        Err(MissingYear(2028))
    );
    // A period that needs no calendar does not care.
    let hours = Period {
        amount: 24,
        unit: Unit::Hours,
    };
    assert_eq!(
        hours.end(ts("2028-06-01T02:00:00Z"), &shanghai(), &calendar, false),
        Ok(ts("2028-06-02T02:00:00Z"))
    );
}

#[test]
fn the_2027_year_is_provisional_until_the_operator_replaces_it() {
    let calendar = Calendar::built_in();
    assert_eq!(calendar.provisional_years(), vec![2027]);
    assert!(!calendar.year(2026).unwrap().provisional);
    let replaced = Calendar::with_files(&[(
        PathBuf::from("/etc/ld/2027.toml"),
        "year = 2027\nsource = \"国办发明电〔2026〕\"\n\n[[holiday]]\nname = \"元旦\"\nfrom = \"2027-01-01\"\nto = \"2027-01-03\"\n".to_owned(),
    )])
    .unwrap();
    assert!(replaced.provisional_years().is_empty());
    assert!(!replaced.is_working_day(date(2027, 1, 3)).unwrap());
    assert_eq!(
        replaced.year(2027).unwrap().file,
        Path::new("/etc/ld/2027.toml")
    );
}

#[test]
fn a_clock_started_just_after_midnight_in_beijing_counts_from_that_beijing_day() {
    // 00:30 on Monday 2 March 2026 in Beijing is 16:30 UTC on 1 March.
    let start = ts("2026-03-01T16:30:00Z");
    let period = Period {
        amount: 3,
        unit: Unit::CalendarDays,
    };
    let end = period
        .end(start, &shanghai(), &Calendar::built_in(), true)
        .unwrap();
    // Day 2 March is not counted; the period ends at 24:00 on 5 March,
    // Beijing time (counting UTC dates would end a day earlier).
    assert_eq!(end, ts("2026-03-05T16:00:00Z"));
}

#[test]
fn a_period_ending_on_a_holiday_rolls_to_the_next_working_day() {
    let calendar = Calendar::built_in();
    let period = Period {
        amount: 3,
        unit: Unit::CalendarDays,
    };
    // Received 30 September 2026, 10:00 Beijing: day 3 is 3 October (国庆);
    // the first working day after the holiday is Thursday 8 October.
    let start = ts("2026-09-30T02:00:00Z");
    assert_eq!(
        period.end(start, &shanghai(), &calendar, true).unwrap(),
        ts("2026-10-08T16:00:00Z")
    );
    assert_eq!(
        period.end(start, &shanghai(), &calendar, false).unwrap(),
        ts("2026-10-03T16:00:00Z")
    );
}

#[test]
fn calendar_file_errors_name_the_file_entry_and_field() {
    let parse = |text: &str| {
        Calendar::with_files(&[(PathBuf::from("cal/2028.toml"), text.to_owned())])
            .unwrap_err()
            .to_string()
    };
    let head = "year = 2028\nsource = \"notice\"\n";
    assert_eq!(
        parse(&format!(
            "{head}[[working_day]]\nname = \"x\"\ndate = \"2028-01-05\"\n"
        )),
        "cal/2028.toml: working_day[0] (x): date: 2028-01-05 is a weekday: only a Saturday or Sunday can be made a working day"
    );
    assert_eq!(
        parse(&format!(
            "{head}[[holiday]]\nname = \"春节\"\nfrom = \"2028-01-26\"\nto = \"2029-01-28\"\n"
        )),
        "cal/2028.toml: holiday[0] (春节): to: 2029-01-28 is not in 2028"
    );
    assert_eq!(
        parse(&format!(
            "{head}[[holiday]]\nname = \"春节\"\nfrom = \"2028-01-28\"\nto = \"2028-01-26\"\n"
        )),
        "cal/2028.toml: holiday[0] (春节): to: 2028-01-26 is before from (2028-01-28)"
    );
    assert_eq!(
        parse(&format!(
            "{head}[[holiday]]\nname = \"元旦\"\nfrom = \"2028-1-1\"\nto = \"2028-01-01\"\n"
        )),
        "cal/2028.toml: holiday[0] (元旦): from: \"2028-1-1\" is not a date YYYY-MM-DD"
    );
    assert_eq!(
        parse("year = 2028\nsource = \" \"\n"),
        "cal/2028.toml: source: source: is required: name the notice or regulation the dates come from"
    );
    assert!(parse("year = 2028\n").contains("missing field `source`"));
    let twice = Calendar::with_files(&[
        (PathBuf::from("a.toml"), head.to_owned()),
        (PathBuf::from("b.toml"), head.to_owned()),
    ])
    .unwrap_err()
    .to_string();
    assert_eq!(twice, "b.toml: year 2028 is already given by a.toml");
}

// ------------------------------------------------------------------- rules

const DRILL_RULES: &str = r#"
[[deadline]]
name = "police-filing-decision"
legal_basis = "drill"
starts_on = ["TRANSFER_RECEIVED"]
stops_on = ["CASE_FILED", "FILING_DECLINED"]
period = { amount = 1, unit = "seconds" }
verification_period = { amount = 7, unit = "calendar_days" }
extended_period = { amount = 30, unit = "calendar_days" }
roll_to_working_day = false
late = "starter"
supervisor = "procuratorate"
alert = true

[[deadline]]
name = "reconsideration-request"
legal_basis = "drill right"
starts_on = ["FILING_DECLINED"]
stops_on = ["RECONSIDERATION_REQUESTED"]
period = { amount = 1, unit = "seconds" }
roll_to_working_day = false
late = "transferor"
supervisor = "procuratorate"
alert = false

[[deadline]]
name = "reconsideration-decision"
legal_basis = "drill"
starts_on = ["RECONSIDERATION_REQUESTED"]
stops_on = ["CASE_FILED"]
period = { amount = 1, unit = "seconds" }
roll_to_working_day = false
late = "police"
supervisor = "procuratorate"
alert = true

[[deadline]]
name = "transfer-after-recommendation"
legal_basis = "drill"
starts_on = ["TRANSFER_RECOMMENDED"]
stops_on = ["CASE_TRANSFERRED"]
period = { amount = 1000, unit = "working_days" }
roll_to_working_day = false
late = "addressed_environment"
supervisor = "procuratorate"
alert = true
"#;

#[test]
fn the_built_in_rules_are_the_2017_measures() {
    let rules = DeadlineRules::built_in();
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "materials-to-police",
            "police-filing-decision",
            "reconsideration-request",
            "reconsideration-decision",
            "transfer-after-recommendation"
        ]
    );
    let filing = rules.get("police-filing-decision").unwrap();
    assert_eq!(filing.awaited(), "CASE_FILED or FILING_DECLINED");
    assert_eq!(filing.period_for(false, false).amount, 3);
    assert_eq!(filing.period_for(true, false).amount, 7);
    assert_eq!(filing.period_for(true, true).amount, 30);
    assert!(!rules.get("reconsideration-request").unwrap().alert);
    assert!(rules.iter().all(|r| r.legal_basis.contains("2017")));
}

#[test]
fn rule_file_errors_name_the_file_rule_and_field() {
    let parse = |text: String| {
        DeadlineRules::parse(&text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string()
    };
    let cases = [
        (
            DRILL_RULES.replacen("unit = \"seconds\"", "unit = \"weeks\"", 1),
            "rules.toml: deadline[0] (police-filing-decision): period.unit: \"weeks\" is not one of hours, calendar_days, working_days, seconds",
        ),
        (
            DRILL_RULES.replacen("\"TRANSFER_RECEIVED\"]", "\"TRANSFER_LOST\"]", 1),
            "rules.toml: deadline[0] (police-filing-decision): starts_on[0]: unknown event \"TRANSFER_LOST\"",
        ),
        (
            DRILL_RULES.replacen(
                "roll_to_working_day = false",
                "roll_to_working_day = true",
                1,
            ),
            "rules.toml: deadline[0] (police-filing-decision): period.unit: seconds (for drills and tests) never roll: set roll_to_working_day = false",
        ),
        (
            DRILL_RULES.replacen("late = \"police\"", "late = \"court\"", 1),
            "rules.toml: deadline[2] (reconsideration-decision): late: \"court\" is not one of starter, transferor, police, addressed_environment",
        ),
        (
            DRILL_RULES.replacen(
                "name = \"reconsideration-decision\"",
                "name = \"reconsideration-request\"",
                1,
            ),
            "rules.toml: deadline[2] (reconsideration-request): name: is used by an earlier rule",
        ),
        (
            DRILL_RULES.replacen(
                "supervisor = \"procuratorate\"",
                "supervisor = \"court\"",
                1,
            ),
            "rules.toml: deadline[0] (police-filing-decision): supervisor: \"court\" is not supported: the supervisor is the registered procuratorate at the late agency's level (\"procuratorate\")",
        ),
        (
            DRILL_RULES.replacen("amount = 1,", "amount = 0,", 1),
            "rules.toml: deadline[0] (police-filing-decision): period.amount: must be at least 1",
        ),
        (
            DRILL_RULES.replacen(
                "stops_on = [\"CASE_FILED\", \"FILING_DECLINED\"]",
                "stops_on = [\"TRANSFER_RECEIVED\"]",
                1,
            ),
            "rules.toml: deadline[0] (police-filing-decision): stops_on: TRANSFER_RECEIVED also starts the rule's clock",
        ),
        (
            DRILL_RULES.replacen("legal_basis = \"drill\"", "legal_basis = \"\"", 1),
            "rules.toml: deadline[0] (police-filing-decision): legal_basis: is required: name the provision the time limit comes from",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text), expected);
    }
    let unknown = parse(DRILL_RULES.replacen("alert = true", "alert = true\ncolour = 1", 1));
    assert!(
        unknown.starts_with("rules.toml:") && unknown.contains("unknown field `colour`"),
        "{unknown}"
    );
}

#[test]
fn deadline_extended_without_a_document_number_is_refused() {
    let wire = pb::Notification {
        notification_id: "x-1".into(),
        case_ref: "C-1".into(),
        event: pb::EventType::DeadlineExtended as i32,
        confidentiality: pb::Confidentiality::Internal as i32,
        region: "140423".into(),
        occurred_at: Some(Instant::now().to_wire()),
        summary: "延长".into(),
        ..Default::default()
    };
    let notification = liandong_core::domain::Notification::try_from(wire.clone()).unwrap();
    assert_eq!(
        check_notification(&notification).unwrap_err().to_string(),
        "body.document_number: is required for DEADLINE_EXTENDED: the number of the approval that extends the time limit"
    );
    let mut with_number = wire;
    with_number.body = Some(pb::CaseBody {
        document_number: "襄公延〔2026〕3号".into(),
        ..Default::default()
    });
    let notification = liandong_core::domain::Notification::try_from(with_number).unwrap();
    check_notification(&notification).unwrap();
}

// ------------------------------------------------------------ store tests

const REGISTRY: &str = r#"
[[agency]]
id = "cz-eeb"
name = "长治市生态环境局"
role = "ENVIRONMENT"
region = "140400"
clearance = "RESTRICTED"

[[agency]]
id = "cz-eeb-xiangyuan"
name = "襄垣分局"
role = "ENVIRONMENT"
region = "140423"
parent = "cz-eeb"
clearance = "RESTRICTED"

[[agency]]
id = "cz-psb"
name = "长治市公安局"
role = "POLICE"
region = "140400"
clearance = "RESTRICTED"

[[agency]]
id = "cz-psb-xiangyuan"
name = "襄垣县公安局"
role = "POLICE"
region = "140423"
parent = "cz-psb"
clearance = "RESTRICTED"

[[agency]]
id = "cz-psb-wuxiang"
name = "武乡县公安局"
role = "POLICE"
region = "140429"
parent = "cz-psb"
clearance = "RESTRICTED"

[[agency]]
id = "cz-procuratorate"
name = "长治市人民检察院"
role = "PROCURATORATE"
region = "140400"
clearance = "RESTRICTED"

[[agency]]
id = "cz-procuratorate-xiangyuan"
name = "襄垣县人民检察院"
role = "PROCURATORATE"
region = "140423"
parent = "cz-procuratorate"
clearance = "RESTRICTED"
"#;

fn drill_context() -> Context {
    let registry = Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap();
    Context {
        rules: Arc::new(Rules {
            registry,
            policy: Policy::default_policy(),
        }),
        mechanism: Arc::new(Mechanism {
            rules: DeadlineRules::parse(DRILL_RULES, Path::new("rules.toml")).unwrap(),
            ..Mechanism::built_in()
        }),
        timer: Arc::new(tokio::sync::Notify::new()),
        deadline_started: Arc::default(),
        key: gateway_key(),
    }
}

fn gateway_key() -> Arc<GatewayKey> {
    Arc::new(GatewayKey::generate())
}

/// What a test publishes.
struct Publish<'a> {
    sender: &'a str,
    id: &'a str,
    case_ref: &'a str,
    event: pb::EventType,
    recipients: &'a [&'a str],
    body: Option<pb::CaseBody>,
}

impl<'a> Publish<'a> {
    fn new(sender: &'a str, id: &'a str, event: pb::EventType) -> Self {
        Self {
            sender,
            id,
            case_ref: "C-1",
            event,
            recipients: &["cz-procuratorate-xiangyuan"],
            body: None,
        }
    }
}

async fn publish(store: &Store, context: &Context, p: Publish<'_>) -> Receipt {
    let wire = pb::Notification {
        notification_id: p.id.into(),
        case_ref: p.case_ref.into(),
        event: p.event as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: p.recipients.iter().map(|r| r.to_string()).collect(),
        confidentiality_note: "侦查阶段".into(),
        region: "140423".into(),
        occurred_at: Some(Instant::now().to_wire()),
        summary: "test".into(),
        body: p.body,
        sender: p.sender.into(),
        ..Default::default()
    };
    let envelope = Envelope {
        sender: AgencyId::parse("sender", p.sender).unwrap(),
        id: NotificationId::parse_field("id", p.id).unwrap(),
        case_ref: CaseRef::parse_field("case_ref", p.case_ref).unwrap(),
        event: Event::from_wire("event", wire.event).unwrap(),
        confidentiality: Confidentiality::Restricted,
        region: Region::parse("region", "140423").unwrap(),
        recipients: wire
            .recipients
            .iter()
            .map(|r| AgencyId::parse("r", r).unwrap())
            .collect(),
        copies: Vec::new(),
    };
    let new = NewNotification::new(envelope, wire.encode_to_vec());
    match store
        .publish_supervised(&new, context.clone())
        .await
        .unwrap()
        .0
    {
        PublishOutcome::Stored(receipt) => receipt,
        other => panic!("not stored: {other:?}"),
    }
}

/// Transfer, then its receipt by the county police: starts the drill
/// filing clock (1 second). Returns the receipt of TRANSFER_RECEIVED.
async fn transfer_received(store: &Store, context: &Context, case_ref: &str) -> Receipt {
    let transfer_id = format!("{case_ref}-t");
    let received_id = format!("{case_ref}-r");
    publish(
        store,
        context,
        Publish {
            case_ref,
            recipients: &["cz-psb-xiangyuan"],
            ..Publish::new(
                "cz-eeb-xiangyuan",
                &transfer_id,
                pb::EventType::CaseTransferred,
            )
        },
    )
    .await;
    publish(
        store,
        context,
        Publish {
            case_ref,
            ..Publish::new(
                "cz-psb-xiangyuan",
                &received_id,
                pb::EventType::TransferReceived,
            )
        },
    )
    .await
}

fn after(receipt: &Receipt, seconds: i64) -> Instant {
    Instant::from_unix_micros(receipt.received_at.unix_micros() + seconds * 1_000_000).unwrap()
}

async fn alerts(store: &Store) -> Vec<crate::store::StoredNotification> {
    store
        .read_after(0, 1000)
        .await
        .unwrap()
        .rows
        .into_iter()
        .filter(|row| row.envelope.event.to_wire() == pb::EventType::SupervisionAlert)
        .collect()
}

async fn only_deadline(store: &Store, case_ref: &str) -> Deadline {
    let mut all = deadlines::of_case(store, case_ref).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[tokio::test]
async fn an_overdue_filing_decision_fires_one_signed_alert_to_the_supervisor_and_the_police() {
    for (store, _guard) in backends().await {
        let context = drill_context();
        let key = gateway_key();
        let received = transfer_received(&store, &context, "C-1").await;
        let deadline = only_deadline(&store, "C-1").await;
        assert_eq!(deadline.rule, "police-filing-decision");
        assert_eq!(deadline.late_agency, "cz-psb-xiangyuan");
        assert_eq!(deadline.supervisor, "cz-procuratorate-xiangyuan");
        assert_eq!(deadline.started_at, received.received_at.unix_micros());
        assert_eq!(deadline.due_at, deadline.started_at + 1_000_000);

        // Not yet due: nothing fires.
        let early = deadlines::fire_due(&store, &context.mechanism, &key, received.received_at)
            .await
            .unwrap();
        assert!(early.fired.is_empty());
        assert!(alerts(&store).await.is_empty());

        let fired = deadlines::fire_due(&store, &context.mechanism, &key, after(&received, 2))
            .await
            .unwrap();
        assert_eq!(fired.fired.len(), 1);
        let again = deadlines::fire_due(&store, &context.mechanism, &key, after(&received, 60))
            .await
            .unwrap();
        assert!(again.fired.is_empty(), "a breach fires once");

        let stored = alerts(&store).await;
        assert_eq!(stored.len(), 1);
        let alert = &stored[0];
        assert_eq!(alert.envelope.sender.as_str(), GATEWAY_SENDER);
        assert_eq!(alert.envelope.confidentiality, Confidentiality::Restricted);
        assert_eq!(
            alert.envelope.recipients,
            vec![
                AgencyId::parse("r", "cz-procuratorate-xiangyuan").unwrap(),
                AgencyId::parse("r", "cz-psb-xiangyuan").unwrap()
            ]
        );
        let wire = pb::Notification::decode(alert.payload.as_slice()).unwrap();
        liandong_core::signing::verify(&wire, GATEWAY_SENDER, &key.public_key()).unwrap();
        assert!(!wire.confidentiality_note.is_empty());
        assert_eq!(wire.region, "140423");
        let body = wire.body.unwrap().alert.unwrap();
        assert_eq!(body.rule, "police-filing-decision");
        assert_eq!(body.late_agency, "cz-psb-xiangyuan");
        assert_eq!(body.supervisor, "cz-procuratorate-xiangyuan");
        assert_eq!(body.awaited, "CASE_FILED or FILING_DECLINED");
        assert_eq!(body.started_by.unwrap().sequence, received.sequence);

        let deadline = only_deadline(&store, "C-1").await;
        assert_eq!(deadline.alert_sequence, Some(alert.sequence));
        assert_eq!(deadline.breached_at, Some(alert.received_at.unix_micros()));
        assert!(deadline.stopped_at.is_none());
        // The alert passes the store's own checks like any row.
        assert!(store.verify_tail(100).await.unwrap().is_clean());
        store.close().await;
    }
}

#[tokio::test]
async fn a_breach_fires_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    )];
    urls.extend(postgres_schema_url().await);
    for url in urls {
        let context = drill_context();
        let key = gateway_key();
        let store = Store::connect(&url, 2).await.unwrap();
        let fired_before = transfer_received(&store, &context, "C-1").await;
        // C-2's clock passes while the gateway is down.
        let down = transfer_received(&store, &context, "C-2").await;
        let fired = deadlines::fire_due(&store, &context.mechanism, &key, after(&fired_before, 0))
            .await
            .unwrap();
        assert!(fired.fired.is_empty());
        let now = after(&down, 5);
        let first = deadlines::fire_due(&store, &context.mechanism, &key, now)
            .await
            .unwrap();
        assert_eq!(first.fired.len(), 2);
        store.close().await;

        // A new store on the same database: nothing fires twice.
        let store = Store::connect(&url, 2).await.unwrap();
        let second = deadlines::fire_due(&store, &context.mechanism, &key, after(&down, 600))
            .await
            .unwrap();
        assert!(second.fired.is_empty());
        assert_eq!(alerts(&store).await.len(), 2);

        // A clock that passes while the gateway is down fires after it
        // comes back, once.
        let third = transfer_received(&store, &context, "C-3").await;
        store.close().await;
        let store = Store::connect(&url, 2).await.unwrap();
        let late = deadlines::fire_due(&store, &context.mechanism, &key, after(&third, 5))
            .await
            .unwrap();
        assert_eq!(late.fired.len(), 1);
        assert_eq!(alerts(&store).await.len(), 3);
        store.close().await;
    }
}

#[tokio::test]
async fn two_stores_firing_together_store_exactly_one_alert_per_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    )];
    urls.extend(postgres_schema_url().await);
    for url in urls {
        let context = drill_context();
        let key = gateway_key();
        let a = Store::connect(&url, 2).await.unwrap();
        let b = Store::connect(&url, 2).await.unwrap();
        let mut last = None;
        for case in ["C-1", "C-2", "C-3", "C-4", "C-5"] {
            last = Some(transfer_received(&a, &context, case).await);
        }
        let now = after(&last.unwrap(), 5);
        for _ in 0..3 {
            let (x, y) = tokio::join!(
                deadlines::fire_due(&a, &context.mechanism, &key, now),
                deadlines::fire_due(&b, &context.mechanism, &key, now),
            );
            let _ = (x.unwrap(), y.unwrap());
        }
        let stored = alerts(&a).await;
        assert_eq!(stored.len(), 5, "exactly one alert per deadline");
        for case in ["C-1", "C-2", "C-3", "C-4", "C-5"] {
            let deadline = only_deadline(&a, case).await;
            let alert = stored
                .iter()
                .find(|row| row.envelope.case_ref.as_str() == case)
                .unwrap();
            assert_eq!(deadline.alert_sequence, Some(alert.sequence));
        }
        a.close().await;
        b.close().await;
    }
}

#[tokio::test]
async fn a_decision_after_the_breach_closes_it_late() {
    for (store, _guard) in backends().await {
        let context = drill_context();
        let key = gateway_key();
        let received = transfer_received(&store, &context, "C-1").await;
        let fired = deadlines::fire_due(&store, &context.mechanism, &key, after(&received, 2))
            .await
            .unwrap();
        assert_eq!(fired.fired.len(), 1);
        // The stop is stamped with the gateway's own received_at, which
        // must be past the (one second) due time.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let filed = publish(
            &store,
            &context,
            Publish::new("cz-psb-xiangyuan", "filed", pb::EventType::CaseFiled),
        )
        .await;
        let deadline = only_deadline(&store, "C-1").await;
        assert_eq!(deadline.stopped_sequence, Some(filed.sequence));
        assert_eq!(deadline.stopped_at, Some(filed.received_at.unix_micros()));
        assert!(deadline.breached_at.is_some());
        assert!(deadline.closed_late());
        assert_eq!(alerts(&store).await.len(), 1);
        store.close().await;
    }
}

#[tokio::test]
async fn a_decision_in_time_closes_it_without_alert() {
    for (store, _guard) in backends().await {
        let context = drill_context();
        let key = gateway_key();
        let received = transfer_received(&store, &context, "C-1").await;
        let declined = publish(
            &store,
            &context,
            Publish::new(
                "cz-psb-xiangyuan",
                "declined",
                pb::EventType::FilingDeclined,
            ),
        )
        .await;
        let fired = deadlines::fire_due(&store, &context.mechanism, &key, after(&received, 600))
            .await
            .unwrap();
        assert!(fired.fired.is_empty());
        // The decline started the bureau's reconsideration period: a right
        // that lapses without an alert.
        assert_eq!(fired.lapsed, 1);
        assert!(alerts(&store).await.is_empty());
        let all = deadlines::of_case(&store, "C-1").await.unwrap();
        let filing = &all[0];
        assert_eq!(filing.rule, "police-filing-decision");
        assert_eq!(filing.stopped_sequence, Some(declined.sequence));
        assert!(filing.breached_at.is_none());
        assert!(!filing.closed_late());
        let right = &all[1];
        assert_eq!(right.rule, "reconsideration-request");
        assert_eq!(right.late_agency, "cz-eeb-xiangyuan", "the transferor");
        assert_eq!(right.stopped_at, Some(right.due_at));
        assert_eq!(right.stopped_sequence, None);
        assert!(right.breached_at.is_none());
        store.close().await;
    }
}

#[tokio::test]
async fn who_must_act_comes_from_the_case_and_the_supervisor_from_the_registry() {
    for (store, _guard) in backends().await {
        let context = drill_context();
        // Reconsideration decision: the police that declined.
        transfer_received(&store, &context, "C-1").await;
        publish(
            &store,
            &context,
            Publish::new(
                "cz-psb-xiangyuan",
                "declined",
                pb::EventType::FilingDeclined,
            ),
        )
        .await;
        publish(
            &store,
            &context,
            Publish::new(
                "cz-eeb-xiangyuan",
                "reconsider",
                pb::EventType::ReconsiderationRequested,
            ),
        )
        .await;
        let all = deadlines::of_case(&store, "C-1").await.unwrap();
        let decision = all
            .iter()
            .find(|d| d.rule == "reconsideration-decision")
            .unwrap();
        assert_eq!(decision.late_agency, "cz-psb-xiangyuan");
        assert_eq!(decision.supervisor, "cz-procuratorate-xiangyuan");

        // A county without a procuratorate of its own: its parent's.
        publish(
            &store,
            &context,
            Publish {
                case_ref: "C-2",
                ..Publish::new("cz-eeb", "wx-t", pb::EventType::CaseTransferred)
            },
        )
        .await;
        publish(
            &store,
            &context,
            Publish {
                case_ref: "C-2",
                ..Publish::new("cz-psb-wuxiang", "wx-r", pb::EventType::TransferReceived)
            },
        )
        .await;
        let wuxiang = only_deadline(&store, "C-2").await;
        assert_eq!(wuxiang.late_agency, "cz-psb-wuxiang");
        assert_eq!(wuxiang.supervisor, "cz-procuratorate");

        // A recommendation: the bureau it addresses.
        publish(
            &store,
            &context,
            Publish {
                case_ref: "C-3",
                recipients: &["cz-psb-xiangyuan", "cz-eeb-xiangyuan"],
                ..Publish::new(
                    "cz-procuratorate-xiangyuan",
                    "rec",
                    pb::EventType::TransferRecommended,
                )
            },
        )
        .await;
        let recommended = only_deadline(&store, "C-3").await;
        assert_eq!(recommended.late_agency, "cz-eeb-xiangyuan");
        assert_eq!(recommended.supervisor, "cz-procuratorate-xiangyuan");
        store.close().await;
    }
}

#[tokio::test]
async fn verification_and_extension_lengthen_the_filing_period() {
    for (store, _guard) in backends().await {
        let context = drill_context();
        let zone = shanghai();
        publish(
            &store,
            &context,
            Publish::new("cz-eeb-xiangyuan", "t", pb::EventType::CaseTransferred),
        )
        .await;
        let received = publish(
            &store,
            &context,
            Publish {
                body: Some(pb::CaseBody {
                    needs_verification: true,
                    ..Default::default()
                }),
                ..Publish::new("cz-psb-xiangyuan", "r", pb::EventType::TransferReceived)
            },
        )
        .await;
        let days = |n: u32| {
            Period {
                amount: n,
                unit: Unit::CalendarDays,
            }
            .end(
                timestamp_of_micros(received.received_at.unix_micros()),
                &zone,
                &context.mechanism.calendar,
                false,
            )
            .unwrap()
            .as_microsecond()
        };
        assert_eq!(only_deadline(&store, "C-1").await.due_at, days(7));
        publish(
            &store,
            &context,
            Publish {
                body: Some(pb::CaseBody {
                    document_number: "襄公延〔2026〕3号".into(),
                    ..Default::default()
                }),
                ..Publish::new("cz-psb-xiangyuan", "ext", pb::EventType::DeadlineExtended)
            },
        )
        .await;
        assert_eq!(only_deadline(&store, "C-1").await.due_at, days(30));
        store.close().await;
    }
}

#[tokio::test]
async fn a_deadline_needing_a_missing_year_waits_and_is_computed_once_the_year_is_supplied() {
    for (store, _guard) in backends().await {
        let mut context = drill_context();
        let key = gateway_key();
        let before = deadlines::pending_started();
        // 1000 working days run years past the built-in calendar.
        let recommended = publish(
            &store,
            &context,
            Publish {
                recipients: &["cz-eeb-xiangyuan"],
                ..Publish::new(
                    "cz-procuratorate-xiangyuan",
                    "rec",
                    pb::EventType::TransferRecommended,
                )
            },
        )
        .await;
        let pending = only_deadline(&store, "C-1").await;
        assert_eq!(pending.due_at, PENDING_DUE);
        assert!(deadlines::pending_started() > before);
        // It never fires while it has no due time, and the built-in
        // calendar does not give it one.
        let far = Instant::from_unix_micros(200_000_000_000_000_000).unwrap();
        let fired = deadlines::fire_due(&store, &context.mechanism, &key, far)
            .await
            .unwrap();
        assert!(fired.fired.is_empty());
        assert_eq!(
            deadlines::compute_pending(&store, &context.mechanism)
                .await
                .unwrap(),
            0
        );
        assert_eq!(deadlines::next_due(&store).await.unwrap(), None);

        // The operator supplies the years (weekends only, for the test).
        let this_year = jiff::Zoned::now().year();
        let files: Vec<(PathBuf, String)> = (2028..=this_year + 8)
            .map(|year| {
                (
                    PathBuf::from(format!("{year}.toml")),
                    format!("year = {year}\nsource = \"test\"\n"),
                )
            })
            .collect();
        let mut mechanism = (*context.mechanism).clone();
        mechanism.calendar = Calendar::with_files(&files).unwrap();
        context.mechanism = Arc::new(mechanism);
        assert_eq!(
            deadlines::compute_pending(&store, &context.mechanism)
                .await
                .unwrap(),
            1
        );
        let computed = only_deadline(&store, "C-1").await;
        let expected = Period {
            amount: 1000,
            unit: Unit::WorkingDays,
        }
        .end(
            timestamp_of_micros(recommended.received_at.unix_micros()),
            &context.mechanism.zone,
            &context.mechanism.calendar,
            false,
        )
        .unwrap();
        assert_eq!(computed.due_at, expected.as_microsecond());
        assert_eq!(
            deadlines::next_due(&store).await.unwrap(),
            Some(computed.due_at)
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_timer_is_woken_only_once_the_clock_it_must_see_is_committed() {
    for (store, _guard) in backends().await {
        let context = drill_context();
        // The timer's side: woken, it looks for the next due time at once,
        // as the real timer does. Woken from inside the publish transaction,
        // this read would find no clock and the timer would sleep past it.
        let timer = context.timer.clone();
        let reader = store.clone();
        let looked = tokio::spawn(async move {
            timer.notified().await;
            deadlines::next_due(&reader).await.unwrap()
        });
        tokio::task::yield_now().await;
        let received = transfer_received(&store, &context, "C-WAKE").await;
        let due = tokio::time::timeout(std::time::Duration::from_secs(10), looked)
            .await
            .expect("the timer is woken by a publish that starts a clock")
            .unwrap();
        assert_eq!(
            due,
            Some(only_deadline(&store, "C-WAKE").await.due_at),
            "the woken timer sees the clock started at {}",
            received.sequence
        );
        assert!(
            context
                .deadline_started
                .load(std::sync::atomic::Ordering::Acquire)
        );
    }
}
