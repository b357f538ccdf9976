//! The confidentiality and publishing policy, end to end: each rule tried
//! by a real agency over mutual TLS against the real gateway.

use std::process::Command;
use std::time::Duration;

use tonic::Code;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Subscriber, Testbed, binary, notification, publish, publish_lifecycle};

const WAIT: Duration = Duration::from_secs(10);
const CANARY: &str = "CANARY-案情-4d1c";

/// A notification whose every content field carries the canary.
fn secret(
    id: &str,
    case_ref: &str,
    event: Event,
    level: Level,
    recipients: &[&str],
) -> pb::Notification {
    let mut n = notification(id, case_ref, event, level, recipients);
    n.summary = format!("{CANARY} summary");
    n.confidentiality_note = format!("{CANARY} note");
    n.body = Some(pb::CaseBody {
        description: format!("{CANARY} description"),
        parties: vec![pb::Party {
            role: "suspect".into(),
            name: format!("{CANARY} name"),
            identifier: format!("{CANARY} id"),
            contact: format!("{CANARY} phone"),
        }],
        informant: Some(pb::Informant {
            name: format!("{CANARY} informant"),
            contact: "139".into(),
        }),
        ..Default::default()
    });
    n
}

/// The audit log's disclosure and refusal rows as (agency, action,
/// decision, reason).
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

#[tokio::test]
async fn police_cannot_approve_arrest() {
    let bed = Testbed::start().unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let n = notification(
        "a-1",
        "CZ-XY-1",
        Event::ArrestApproved,
        Level::Internal,
        &[],
    );
    let status = publish(&mut police, n).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "rule publish.POLICE does not allow ARREST_APPROVED"
    );
    assert_eq!(bed.stored_count().await, 0);
    // Nor may anyone publish what only the gateway emits.
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let alert = notification(
        "s-1",
        "CZ-XY-1",
        Event::SupervisionAlert,
        Level::Internal,
        &[],
    );
    let status = publish(&mut procuratorate, alert).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // The procuratorate may approve it, once the police requested it.
    publish_lifecycle(&bed, "CZ-XY-1", Event::ArrestRequested).await;
    let n = notification(
        "a-2",
        "CZ-XY-1",
        Event::ArrestApproved,
        Level::Internal,
        &[],
    );
    publish(&mut procuratorate, n).await.unwrap();
    let rows = audit_rows(&bed).await;
    assert!(rows.contains(&(
        "cz-psb-xiangyuan".into(),
        "PUBLISH_REFUSED".into(),
        "PERMISSION_DENIED".into(),
        "permission denied: rule publish.POLICE does not allow ARREST_APPROVED".into()
    )));
}

#[tokio::test]
async fn observer_sees_public_notices_only() {
    let bed = Testbed::start().unwrap();
    let mut observer = bed.client("cz-press-office").await;
    let mut inbox = Subscriber::open(&mut observer, "inbox").await.unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    publish(
        &mut eeb,
        secret("c-1", "CZ-XY-7", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    publish(
        &mut eeb,
        secret(
            "t-1",
            "CZ-XY-7",
            Event::CaseTransferred,
            Level::Restricted,
            &["cz-psb-xiangyuan"],
        ),
    )
    .await
    .unwrap();
    let mut announcement = notification("p-1", "CZ-XY-7", Event::MeetingNotice, Level::Public, &[]);
    announcement.summary = "联席会议通知：依法查处非法倾倒危险废物案通报会".into();
    publish(&mut eeb, announcement).await.unwrap();

    let got = inbox.take_acked(1, WAIT).await.remove(0);
    assert_eq!(got.notification.as_ref().unwrap().notification_id, "p-1");
    assert!(!got.withheld);
    // Nothing else reaches the observer, and its stream stays open: the
    // next public notice is its very next delivery.
    publish(
        &mut eeb,
        notification("p-2", "CZ-XY-8", Event::MeetingNotice, Level::Public, &[]),
    )
    .await
    .unwrap();
    let next = inbox
        .expect_delivery(WAIT, "the second public notice")
        .await;
    assert_eq!(next.notification.as_ref().unwrap().notification_id, "p-2");
    let view = observer
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-XY-7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = view
        .timeline
        .iter()
        .map(|d| d.notification.as_ref().unwrap().notification_id.as_str())
        .collect();
    assert_eq!(ids, vec!["p-1"]);
    assert!(!format!("{view:?}").contains(CANARY));
}

#[tokio::test]
async fn procuratorate_gets_stub_of_transfer_it_is_not_party_to() {
    let bed = Testbed::start().unwrap();
    // The county procuratorate receives a county transfer as a statutory
    // copy; the city procuratorate supervises it without being a party.
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let mut inbox = Subscriber::open(&mut procuratorate, "supervision")
        .await
        .unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let transfer = secret(
        "t-1",
        "CZ-XY-9",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb-xiangyuan"],
    );
    let receipt = publish(&mut eeb, transfer).await.unwrap();

    let stub = inbox.take_acked(1, WAIT).await.remove(0);
    assert_eq!(stub.sequence, receipt.sequence);
    assert!(stub.withheld);
    assert!(
        stub.withheld_reason.starts_with("oversight"),
        "{}",
        stub.withheld_reason
    );
    let n = stub.notification.as_ref().unwrap();
    assert_eq!(
        (n.case_ref.as_str(), n.event),
        ("CZ-XY-9", Event::CaseTransferred as i32)
    );
    assert_eq!(n.confidentiality, Level::Restricted as i32);
    assert_eq!(n.sender, "cz-eeb-xiangyuan");
    assert_eq!(
        n.contact, "执法大队 0355-2000003",
        "whom to ask: the sender's registered contact"
    );
    assert!(
        n.summary.is_empty()
            && n.body.is_none()
            && n.confidentiality_note.is_empty()
            && n.recipients.is_empty()
    );
    assert!(!format!("{stub:?}").contains(CANARY));

    // The same in its case view; an environment bureau elsewhere sees nothing.
    let view = procuratorate
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-XY-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(view.timeline[0].withheld && !format!("{view:?}").contains(CANARY));
    let mut luzhou = bed.client("cz-eeb-luzhou").await;
    let missing = luzhou
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-XY-9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let rows = audit_rows(&bed).await;
    assert!(
        rows.iter().any(
            |(agency, action, decision, reason)| agency == "cz-procuratorate"
                && action == "DELIVERY"
                && decision == "WITHHELD"
                && reason.starts_with("oversight")
        ),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|row| format!("{row:?}").contains(CANARY)));
}

#[tokio::test]
async fn confidential_to_uncleared_recipient_refused_at_publish() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    // cz-eeb-luzhou is cleared up to RESTRICTED.
    let n = secret(
        "c-1",
        "CZ-1",
        Event::CaseTransferred,
        Level::Confidential,
        &["cz-psb", "cz-eeb-luzhou"],
    );
    let status = publish(&mut eeb, n).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "notification.recipients[1]: cz-eeb-luzhou is cleared only up to RESTRICTED; CONFIDENTIAL content cannot be sent to it"
    );
    assert!(!status.message().contains(CANARY));
    assert_eq!(bed.stored_count().await, 0);
    let n = secret(
        "c-2",
        "CZ-1",
        Event::CaseTransferred,
        Level::Confidential,
        &["cz-psb"],
    );
    publish(&mut eeb, n).await.unwrap();
}

#[tokio::test]
async fn lowered_clearance_withholds_backlog() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    for i in 0..3 {
        publish(
            &mut eeb,
            secret(
                &format!("c-{i}"),
                &format!("CZ-C-{i}"),
                Event::CaseTransferred,
                Level::Confidential,
                &["cz-psb"],
            ),
        )
        .await
        .unwrap();
    }
    // The registry lowers cz-psb to RESTRICTED; SIGHUP puts it in force.
    let registry = bed.dir.path().join("agencies.toml");
    let text = std::fs::read_to_string(&registry).unwrap();
    let at = text.find("id = \"cz-psb\"").unwrap();
    let clearance = at + text[at..].find("clearance = \"CONFIDENTIAL\"").unwrap();
    let lowered = format!(
        "{}clearance = \"RESTRICTED\"{}",
        &text[..clearance],
        &text[clearance + 26..]
    );
    std::fs::write(&registry, lowered).unwrap();
    bed.reload_rules().await;

    let mut police = bed.client("cz-psb").await;
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();
    for delivery in inbox.take_acked(3, WAIT).await {
        assert!(
            delivery.withheld,
            "backlog must be withheld after the clearance was lowered"
        );
        assert!(
            delivery.withheld_reason.contains("clearance RESTRICTED"),
            "{}",
            delivery.withheld_reason
        );
        assert!(!format!("{delivery:?}").contains(CANARY));
    }
    // And new CONFIDENTIAL notifications to it are now refused at publish.
    let status = publish(
        &mut eeb,
        secret(
            "c-9",
            "CZ-C",
            Event::CaseTransferred,
            Level::Confidential,
            &["cz-psb"],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn sensitive_fields_stripped() {
    let bed = Testbed::start().unwrap();
    let mut branch = bed.client("cz-eeb-xiangyuan").await; // cleared to RESTRICTED
    let mut police = bed.client("cz-psb-xiangyuan").await; // cleared to CONFIDENTIAL
    let mut to_branch = Subscriber::open(&mut branch, "inbox").await.unwrap();
    let mut to_police = Subscriber::open(&mut police, "inbox").await.unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let n = secret(
        "t-1",
        "CZ-S",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb-xiangyuan", "cz-eeb-xiangyuan"],
    );
    publish(&mut eeb, n).await.unwrap();

    let got = to_branch.take_acked(1, WAIT).await.remove(0);
    assert!(!got.withheld);
    assert_eq!(
        got.redacted_fields,
        vec![
            "body.parties.identifier",
            "body.parties.contact",
            "body.informant"
        ]
    );
    let body = got.notification.as_ref().unwrap().body.as_ref().unwrap();
    assert_eq!(
        body.parties[0].name,
        format!("{CANARY} name"),
        "RESTRICTED fields stay for a RESTRICTED reader"
    );
    assert!(
        body.parties[0].identifier.is_empty()
            && body.parties[0].contact.is_empty()
            && body.informant.is_none()
    );

    let full = to_police.take_acked(1, WAIT).await.remove(0);
    assert!(full.redacted_fields.is_empty());
    let body = full.notification.as_ref().unwrap().body.as_ref().unwrap();
    assert_eq!(body.parties[0].identifier, format!("{CANARY} id"));
    assert!(body.informant.is_some());
}

#[test]
fn policy_file_error_names_entry_and_field() {
    let bed = Testbed::start().unwrap();
    let policy = bed.dir.path().join("policy.toml");
    let text = include_str!("../../deploy/dev/policy.toml")
        .replace("\"ARREST_REQUESTED\"", "\"ARREST_REQUESTD\"");
    std::fs::write(&policy, text).unwrap();
    let config = std::fs::read_to_string(&bed.config).unwrap();
    let config_path = bed.dir.path().join("with-policy.toml");
    std::fs::write(
        &config_path,
        config.replace(
            "registry = \"agencies.toml\"",
            "registry = \"agencies.toml\"\npolicy = \"policy.toml\"",
        ),
    )
    .unwrap();
    let out = Command::new(binary("liandong-gateway"))
        .args(["serve", "--config"])
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg(&config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("policy.toml: publish.POLICE[7]: unknown event type \"ARREST_REQUESTD\""),
        "{stderr}"
    );
}
