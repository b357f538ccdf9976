//! Statutory copies (抄送), jurisdiction and oversight by the sender's
//! region, end to end: real agencies over mutual TLS against the real
//! gateway with the built-in policy.

use std::time::Duration;

use tonic::Code;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Subscriber, Testbed, notification, publish};

const WAIT: Duration = Duration::from_secs(10);
const CANARY: &str = "CANARY-抄送-7e2a";
const TRANSFER_RULE: &str = "transfer-copied-to-procuratorate";
const FILING_RULE: &str = "filing-decision-to-bureau-and-procuratorate";

/// A RESTRICTED notification whose content carries the canary.
fn restricted(id: &str, case_ref: &str, event: Event, recipients: &[&str]) -> pb::Notification {
    let mut n = notification(id, case_ref, event, Level::Restricted, recipients);
    n.summary = format!("{CANARY} {id}");
    n.body = Some(pb::CaseBody {
        description: format!("{CANARY} description"),
        ..Default::default()
    });
    n
}

fn copy(agency: &str, rule: &str) -> pb::StatutoryCopy {
    pb::StatutoryCopy {
        agency: agency.into(),
        rule: rule.into(),
    }
}

async fn audit_rows(bed: &Testbed) -> Vec<(String, String, String, String)> {
    let mut conn = bed.connect_database().await;
    sqlx::query_as(
        "SELECT agency, action, decision, reason FROM audit_log \
         WHERE action NOT IN ('PUBLISHED', 'ACK') ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

async fn case_view(bed: &Testbed, agency: &str, case_ref: &str) -> pb::CaseView {
    bed.client(agency)
        .await
        .get_case(pb::GetCaseRequest {
            case_ref: case_ref.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn transfer_is_copied_to_same_level_procuratorate() {
    let bed = Testbed::start().unwrap();
    let mut procuratorate = bed.client("cz-procuratorate-xiangyuan").await;
    let mut inbox = Subscriber::open(&mut procuratorate, "copies")
        .await
        .unwrap();
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;

    // The county bureau transfers to the county police, without listing
    // the procuratorate.
    let transfer = restricted(
        "t-1",
        "CZ-XY-31",
        Event::CaseTransferred,
        &["cz-psb-xiangyuan"],
    );
    let receipt = publish(&mut bureau, transfer.clone()).await.unwrap();
    let copies = vec![copy("cz-procuratorate-xiangyuan", TRANSFER_RULE)];
    assert_eq!(receipt.copies, copies, "the receipt lists the copy");
    assert!(!receipt.duplicate);

    let delivery = inbox.take_acked(1, WAIT).await.remove(0);
    assert_eq!(delivery.sequence, receipt.sequence);
    assert!(!delivery.withheld, "{}", delivery.withheld_reason);
    assert_eq!(delivery.copied_by_rule, TRANSFER_RULE);
    assert_eq!(delivery.copies, copies);
    let n = delivery.notification.as_ref().unwrap();
    assert_eq!(n.summary, format!("{CANARY} t-1"), "received in full");
    assert_eq!(n.recipients, ["cz-psb-xiangyuan"], "the sender's own list");

    // The same publish again answers the original copies.
    let again = publish(&mut bureau, transfer).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.sequence, again.copies),
        (receipt.sequence, copies.clone())
    );
    assert_eq!(bed.stored_count().await, 1);

    // The listed police see the copy list but were not copied; the city
    // procuratorate keeps its oversight stub, without the copy list.
    let police = case_view(&bed, "cz-psb-xiangyuan", "CZ-XY-31").await;
    assert!(!police.timeline[0].withheld);
    assert!(police.timeline[0].copied_by_rule.is_empty());
    assert_eq!(police.timeline[0].copies, copies);
    let city = case_view(&bed, "cz-procuratorate", "CZ-XY-31").await;
    assert!(city.timeline[0].withheld && city.timeline[0].copies.is_empty());
    assert!(!format!("{city:?}").contains(CANARY));

    let rows = audit_rows(&bed).await;
    assert!(
        rows.iter().any(|(agency, action, decision, reason)| agency
            == "cz-procuratorate-xiangyuan"
            && action == "DELIVERY"
            && decision == "FULL"
            && reason == "statutory copy (transfer-copied-to-procuratorate)"),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|row| format!("{row:?}").contains(CANARY)));
}

#[tokio::test]
async fn filing_decision_is_copied_to_bureau_and_procuratorate() {
    let bed = Testbed::start().unwrap();
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    let mut bureau_inbox = Subscriber::open(&mut bureau, "decisions").await.unwrap();
    let mut procuratorate = bed.client("cz-procuratorate-xiangyuan").await;
    let mut supervision = Subscriber::open(&mut procuratorate, "supervision")
        .await
        .unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;

    // The case's realistic course: transfer, acknowledgement, filing.
    let transfer = publish(
        &mut bureau,
        restricted(
            "t-1",
            "CZ-XY-32",
            Event::CaseTransferred,
            &["cz-psb-xiangyuan"],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        transfer.copies,
        [copy("cz-procuratorate-xiangyuan", TRANSFER_RULE)]
    );
    let received = publish(
        &mut police,
        restricted(
            "r-1",
            "CZ-XY-32",
            Event::TransferReceived,
            &["cz-eeb-xiangyuan"],
        ),
    )
    .await
    .unwrap();
    assert!(
        received.copies.is_empty(),
        "no copy rule names TRANSFER_RECEIVED"
    );
    // The police address the filing to their city bureau only.
    let filed = publish(
        &mut police,
        restricted("f-1", "CZ-XY-32", Event::CaseFiled, &["cz-psb"]),
    )
    .await
    .unwrap();
    assert_eq!(
        filed.copies,
        [
            copy("cz-eeb-xiangyuan", FILING_RULE),
            copy("cz-procuratorate-xiangyuan", FILING_RULE),
        ]
    );

    // The bureau: its own transfer, the acknowledgement addressed to it,
    // then the filing decision as a statutory copy.
    let seen = bureau_inbox.take_acked(3, WAIT).await;
    let filing = &seen[2];
    assert_eq!(filing.sequence, filed.sequence);
    assert!(!filing.withheld, "{}", filing.withheld_reason);
    assert_eq!(filing.copied_by_rule, FILING_RULE);
    assert_eq!(filing.copies, filed.copies);
    assert_eq!(
        filing.notification.as_ref().unwrap().summary,
        format!("{CANARY} f-1")
    );
    assert!(seen[1].copied_by_rule.is_empty() && !seen[1].withheld);

    // The procuratorate: the transfer and the filing as copies, the
    // acknowledgement it is not party to as an oversight stub.
    let seen = supervision.take_acked(3, WAIT).await;
    let rules: Vec<(&str, bool)> = seen
        .iter()
        .map(|d| (d.copied_by_rule.as_str(), d.withheld))
        .collect();
    assert_eq!(
        rules,
        [(TRANSFER_RULE, false), ("", true), (FILING_RULE, false)]
    );
    assert!(!format!("{:?}", seen[1]).contains(CANARY));

    let rows = audit_rows(&bed).await;
    for agency in ["cz-eeb-xiangyuan", "cz-procuratorate-xiangyuan"] {
        assert!(
            rows.iter().any(|(a, action, decision, reason)| a == agency
                && action == "DELIVERY"
                && decision == "FULL"
                && reason == "statutory copy (filing-decision-to-bureau-and-procuratorate)"),
            "{agency}: {rows:?}"
        );
    }
}

#[tokio::test]
async fn region_outside_jurisdiction_refused() {
    let bed = Testbed::start().unwrap();
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    publish(
        &mut bureau,
        restricted(
            "t-1",
            "CZ-XY-33",
            Event::CaseTransferred,
            &["cz-psb-xiangyuan"],
        ),
    )
    .await
    .unwrap();
    let audit_before = audit_rows(&bed).await.len();

    // The county police decline, naming a region of another province.
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut decline = restricted(
        "d-1",
        "CZ-XY-33",
        Event::FilingDeclined,
        &["cz-eeb-xiangyuan"],
    );
    decline.region = "510100".into();
    let status = publish(&mut police, decline.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let message = "region 510100 lies outside the jurisdiction of cz-psb-xiangyuan: \
                   not within its registered region 140423";
    assert_eq!(status.message(), message);
    assert_eq!(bed.stored_count().await, 1, "nothing stored");

    let rows = audit_rows(&bed).await;
    assert_eq!(rows.len(), audit_before + 1, "{rows:?}");
    assert_eq!(
        rows.last().unwrap(),
        &(
            "cz-psb-xiangyuan".to_owned(),
            "PUBLISH_REFUSED".to_owned(),
            "PERMISSION_DENIED".to_owned(),
            format!("permission denied: {message}")
        )
    );

    // Nothing was half applied: the same id, in the county, is accepted as
    // new.
    decline.region = "140423".into();
    let receipt = publish(&mut police, decline).await.unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(bed.stored_count().await, 2);
}

#[tokio::test]
async fn oversight_follows_sender_region() {
    let mut bed = Testbed::start().unwrap();
    // A policy that lets a county branch name a region of its parent's
    // city: the county police may then report on a matter in Luzhou.
    let policy = include_str!("../../deploy/dev/policy.toml")
        .replace("allow_parent_region = false", "allow_parent_region = true");
    std::fs::write(bed.dir.path().join("policy.toml"), policy).unwrap();
    let config = std::fs::read_to_string(&bed.config).unwrap().replace(
        "registry = \"agencies.toml\"",
        "registry = \"agencies.toml\"\npolicy = \"policy.toml\"",
    );
    std::fs::write(&bed.config, config).unwrap();
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(WAIT).unwrap();
    bed.restart().unwrap();

    let mut procuratorate = bed.client("cz-procuratorate-xiangyuan").await;
    let mut inbox = Subscriber::open(&mut procuratorate, "supervision")
        .await
        .unwrap();
    // The city bureau transfers a Luzhou matter to the county police: the
    // Xiangyuan procuratorate is neither party, copied (the city's own
    // procuratorate is the same level) nor overseeing the city bureau, and
    // receives nothing of it.
    let mut bureau = bed.client("cz-eeb").await;
    let mut transfer = restricted(
        "t-1",
        "CZ-LZ-34",
        Event::CaseTransferred,
        &["cz-psb-xiangyuan"],
    );
    transfer.region = "140403".into();
    publish(&mut bureau, transfer).await.unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut acknowledged = restricted("r-1", "CZ-LZ-34", Event::TransferReceived, &["cz-eeb"]);
    acknowledged.region = "140403".into();
    let receipt = publish(&mut police, acknowledged).await.unwrap();
    assert!(receipt.copies.is_empty());

    // The region field points to Luzhou, outside the Xiangyuan
    // procuratorate's region; the sender's registered region does not. The
    // first delivery is this stub: the transfer did not reach it.
    let stub = inbox.take_acked(1, WAIT).await.remove(0);
    assert_eq!(stub.sequence, receipt.sequence);
    assert!(stub.withheld);
    assert!(
        stub.withheld_reason
            .starts_with("oversight (procuratorate-supervises-transfers-and-filing)"),
        "{}",
        stub.withheld_reason
    );
    let n = stub.notification.as_ref().unwrap();
    assert_eq!(
        (n.region.as_str(), n.sender.as_str()),
        ("140403", "cz-psb-xiangyuan")
    );
    assert!(n.summary.is_empty() && n.body.is_none());
    assert!(!format!("{stub:?}").contains(CANARY));

    // An environment bureau neither party nor overseeing sees nothing.
    let missing = bed
        .client("cz-eeb-luzhou")
        .await
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-LZ-34".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
