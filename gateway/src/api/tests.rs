use std::path::Path;

use sqlx::Connection;

use liandong_core::domain::AgencyId;
use liandong_core::registry::Registry;

use super::*;
use crate::policy::{Decision, Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::Store;

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

async fn gateway(dir: &tempfile::TempDir) -> (Arc<Gateway>, String) {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let rules = Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    let gateway = Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    );
    (Arc::new(gateway), url)
}

fn principal(gateway: &Gateway, id: &str) -> Principal {
    let id = AgencyId::parse("agency", id).unwrap();
    Principal {
        agency: gateway.rules().registry.get(&id).unwrap().clone(),
    }
}

fn clue(id: &str, level: pb::Confidentiality, recipients: &[&str]) -> pb::PublishRequest {
    pb::PublishRequest {
        notification: Some(pb::Notification {
            notification_id: id.into(),
            case_ref: "C-1".into(),
            event: pb::EventType::ClueShared as i32,
            confidentiality: level as i32,
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            confidentiality_note: if recipients.is_empty() {
                String::new()
            } else {
                "侦查阶段".into()
            },
            region: "140423".into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            summary: format!("summary of {id}"),
            ..Default::default()
        }),
    }
}

async fn case(gateway: &Gateway, reader: &Principal) -> Result<pb::CaseView, ApiError> {
    let page = PageRequest::parse("C-1", 0, "").unwrap();
    case_page(gateway, reader, None, &page).await
}

#[tokio::test]
async fn get_case_reads_no_payload_the_caller_cannot_see() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, url) = gateway(&dir).await;
    let eeb = principal(&gateway, "cz-eeb");
    let psb = principal(&gateway, "cz-psb");
    let procuratorate = principal(&gateway, "cz-procuratorate");
    let mut sequences = Vec::new();
    for request in [
        clue("open-1", pb::Confidentiality::Internal, &[]),
        clue(
            "secret-2",
            pb::Confidentiality::Restricted,
            &["cz-procuratorate"],
        ),
        clue("open-3", pb::Confidentiality::Internal, &[]),
    ] {
        sequences.push(publish_one(&gateway, &eeb, request).await.unwrap().sequence);
    }
    let secret = sequences[1];
    let rules = gateway.rules();
    let batch = gateway
        .store
        .case_envelopes_after("C-1", 0, 10)
        .await
        .unwrap();
    assert_eq!(
        policy::decide(&rules, &psb.agency, &batch.rows[1].1),
        Decision::Nothing,
        "the police may see nothing of the restricted clue"
    );

    // The hidden row's payload is now garbage: reading it would fail its
    // integrity check, which the store counts.
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE notifications SET payload = X'DEADBEEF' WHERE sequence = $1")
        .bind(secret as i64)
        .execute(&mut conn)
        .await
        .unwrap();

    let failures = gateway.store.integrity_failures();
    let view = case(&gateway, &psb).await.expect("the call does not fail");
    let shown: Vec<u64> = view.timeline.iter().map(|d| d.sequence).collect();
    assert_eq!(shown, [sequences[0], sequences[2]]);
    assert_eq!(
        gateway.store.integrity_failures(),
        failures,
        "the payload of the entry the police may not see was never read"
    );

    // A reader entitled to the row does read it, and the corrupt row is
    // withheld from it: the counter does see reads.
    let view = case(&gateway, &procuratorate).await.unwrap();
    assert!(view.timeline.iter().all(|d| d.sequence != secret));
    assert_eq!(gateway.store.integrity_failures(), failures + 1);
}

#[tokio::test]
async fn a_case_the_caller_may_see_nothing_of_is_not_found_without_reading_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, url) = gateway(&dir).await;
    let eeb = principal(&gateway, "cz-eeb");
    let psb = principal(&gateway, "cz-psb");
    let receipt = publish_one(
        &gateway,
        &eeb,
        clue(
            "secret-1",
            pb::Confidentiality::Restricted,
            &["cz-procuratorate"],
        ),
    )
    .await
    .unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE notifications SET payload = X'00' WHERE sequence = $1")
        .bind(receipt.sequence as i64)
        .execute(&mut conn)
        .await
        .unwrap();
    let failures = gateway.store.integrity_failures();
    let error = case(&gateway, &psb).await.unwrap_err();
    assert!(matches!(error, ApiError::NotFound(_)), "{error:?}");
    assert_eq!(gateway.store.integrity_failures(), failures);
}

#[tokio::test]
async fn a_unary_publish_over_the_rate_is_refused_audited_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, _url) = gateway(&dir).await;
    let eeb = principal(&gateway, "cz-eeb");
    // Empty cz-eeb's bucket as its own publishes would.
    while gateway.publish_rate.check(&eeb.agency.id).is_ok() {}
    let limited = gateway.publish_rate.check(&eeb.agency.id).unwrap_err();
    let request = clue("over-1", pb::Confidentiality::Internal, &[]);
    let status = refuse_over_rate(&gateway, &eeb, &request, limited).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().starts_with(
            "publish rate limit of 50 per second (burst 200) reached for cz-eeb; retry after ~"
        ),
        "{}",
        status.message()
    );
    assert_eq!(gateway.store.count_notifications().await.unwrap(), 0);
    let audit = gateway.store.audit_entries().await.unwrap();
    let last = audit.last().expect("the refusal is audited");
    assert_eq!(last.action, audit::Action::PublishRefused.as_str());
    assert_eq!(last.notification_id, "over-1");
    assert_eq!(last.decision, "RESOURCE_EXHAUSTED");
}
