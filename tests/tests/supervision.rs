//! Supervision of the mechanism's deadlines over real gateway processes:
//! a transfer received and left without a filing decision makes the
//! gateway itself emit a SUPERVISION_ALERT, signed with its own key, to the
//! supervising procuratorate and to the police that had to decide; the late
//! decision closes the breach late; a restart never fires it again.

use std::time::Duration;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::registry::GATEWAY_SENDER;
use liandong_tests::{
    Subscriber, Testbed, notification, publish, publish_county_transfer_received,
};

const WAIT: Duration = Duration::from_secs(20);

const CASE: &str = "CZ-2026-HW-0077";

/// The police filing rule of the 2017 measures, with a drill period of
/// three seconds.
const DRILL_RULES: &str = r#"
[[deadline]]
name = "police-filing-decision"
legal_basis = "《环境保护行政执法与刑事司法衔接工作办法》（2017）：3日内作出立案或者不予立案的决定（演练：3秒）"
starts_on = ["TRANSFER_RECEIVED"]
stops_on = ["CASE_FILED", "FILING_DECLINED"]
period = { amount = 3, unit = "seconds" }
roll_to_working_day = false
late = "starter"
supervisor = "procuratorate"
alert = true
"#;

/// The next SUPERVISION_ALERT `subscriber` receives, acked.
async fn alert_for(subscriber: &mut Subscriber, who: &str) -> pb::Delivery {
    let delivery = subscriber
        .expect_delivery(WAIT, &format!("a supervision alert for {who}"))
        .await;
    subscriber.ack(&[delivery.sequence]).await;
    delivery
}

fn alerts_only(name: &str) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: name.to_owned(),
        filter: Some(pb::SubscriptionFilter {
            events: vec![Event::SupervisionAlert as i32],
            ..Default::default()
        }),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Beginning(true)),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn police_filing_overdue_alerts_procuratorate() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("drill-deadlines.toml");
    std::fs::write(&rules, DRILL_RULES).unwrap();
    let mut bed = Testbed::start_with(&format!(
        "\n[mechanism]\ndeadlines = \"{}\"\n",
        rules.display()
    ))
    .unwrap();
    let public_key = bed.pki.gateway_public_key().unwrap();
    bed.wait_for_log(
        "calendar year is PROVISIONAL",
        "a warning at start for the provisional 2027 calendar",
    )
    .await;

    let mut procuratorate = bed.client("cz-procuratorate-xiangyuan").await;
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    let mut supervising = Subscriber::open_with(&mut procuratorate, alerts_only("alerts"))
        .await
        .unwrap();
    let mut late = Subscriber::open_with(&mut police, alerts_only("alerts"))
        .await
        .unwrap();

    let received =
        publish_county_transfer_received(&mut bureau, &mut police, CASE, "xy-t-77", "psb-r-77")
            .await;

    // No decision: after three seconds both get the gateway's alert.
    for (subscriber, who) in [
        (&mut supervising, "the supervising procuratorate"),
        (&mut late, "the police"),
    ] {
        let delivery = alert_for(subscriber, who).await;
        assert_eq!(delivery.sender, GATEWAY_SENDER);
        assert!(!delivery.withheld, "{who} receives the alert in full");
        let alert = delivery.notification.unwrap();
        liandong_core::signing::verify(&alert, GATEWAY_SENDER, &public_key)
            .unwrap_or_else(|e| panic!("the alert to {who} verifies: {e}"));
        assert_eq!(alert.case_ref, CASE);
        assert_eq!(alert.confidentiality, Level::Restricted as i32);
        assert_eq!(
            alert.recipients,
            ["cz-procuratorate-xiangyuan", "cz-psb-xiangyuan"]
        );
        let body = alert.body.unwrap().alert.unwrap();
        assert_eq!(body.rule, "police-filing-decision");
        assert_eq!(body.late_agency, "cz-psb-xiangyuan");
        assert_eq!(body.supervisor, "cz-procuratorate-xiangyuan");
        assert_eq!(body.awaited, "CASE_FILED or FILING_DECLINED");
        let started_by = body.started_by.unwrap();
        assert_eq!(started_by.sequence, received.sequence);
        assert_eq!(started_by.notification_id, "psb-r-77");
        assert_eq!(started_by.sender, "cz-psb-xiangyuan");
        let started = body.started_at.unwrap();
        let due = body.due_at.unwrap();
        assert_eq!(started, received.received_at.unwrap());
        assert_eq!(due.seconds - started.seconds, 3);
    }

    // The late decision closes the breach, late.
    let filed = publish(
        &mut police,
        notification(
            "psb-f-77",
            CASE,
            Event::CaseFiled,
            Level::Restricted,
            &["cz-eeb-xiangyuan"],
        ),
    )
    .await
    .unwrap();
    let mut conn = bed.connect_database().await;
    let (due_at, stopped_sequence, stopped_at, breached_at, alert_sequence): (
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT due_at, stopped_sequence, stopped_at, breached_at, alert_sequence \
         FROM deadlines WHERE case_ref = $1",
    )
    .bind(CASE)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stopped_sequence, Some(filed.sequence as i64));
    assert!(stopped_at.unwrap() > due_at, "closed after its due time");
    assert!(breached_at.is_some() && alert_sequence.is_some());

    // A restart does not fire it again.
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(Duration::from_secs(15)).unwrap();
    bed.restart().unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut late = Subscriber::open_with(&mut police, alerts_only("alerts"))
        .await
        .unwrap();
    late.expect_silence(Duration::from_secs(4), "no second alert after a restart")
        .await;
    let alerts: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE sender = $1 AND event = $2")
            .bind(GATEWAY_SENDER)
            .bind(Event::SupervisionAlert as i32 as i64)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(alerts, 1);
}
