use std::path::Path;
use std::sync::Arc;

use liandong_core::domain::{CaseRef, Confidentiality, Envelope, Event, NotificationId};
use liandong_core::registry::Registry;

use super::*;
use crate::policy::{Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::{NewNotification, PublishOutcome, Store};

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

async fn gateway(dir: &tempfile::TempDir) -> Arc<Gateway> {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let rules = Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    Arc::new(Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    ))
}

/// Stores an INTERNAL clue of `cz-eeb` on `case_ref`; returns its sequence.
async fn store_clue(gateway: &Gateway, id: &str, case_ref: &str) -> u64 {
    let envelope = Envelope {
        sender: AgencyId::parse("sender", "cz-eeb").unwrap(),
        id: NotificationId::parse_field("id", id).unwrap(),
        case_ref: CaseRef::parse_field("case_ref", case_ref).unwrap(),
        event: Event::from_wire("event", pb::EventType::ClueShared as i32).unwrap(),
        confidentiality: Confidentiality::Internal,
        region: Region::parse("region", "140423").unwrap(),
        recipients: Vec::new(),
        copies: Vec::new(),
    };
    let wire = pb::Notification {
        notification_id: id.into(),
        case_ref: case_ref.into(),
        event: pb::EventType::ClueShared as i32,
        confidentiality: pb::Confidentiality::Internal as i32,
        region: "140423".into(),
        summary: "clue".into(),
        sender: "cz-eeb".into(),
        ..Default::default()
    };
    let new = NewNotification::new(envelope, wire.encode_to_vec());
    match gateway.store.publish(&new).await.unwrap() {
        PublishOutcome::Stored(receipt) => receipt.sequence,
        other => panic!("not stored: {other:?}"),
    }
}

fn filter(events: &[pb::EventType], prefix: &str) -> SubscriptionFilter {
    SubscriptionFilter::from_wire(
        "filter",
        pb::SubscriptionFilter {
            events: events.iter().map(|e| *e as i32).collect(),
            case_ref_prefix: prefix.into(),
            ..Default::default()
        },
    )
    .unwrap()
}

async fn subscribe(gateway: &Gateway, owner: &str, name: &str, filter: &SubscriptionFilter) {
    gateway
        .store
        .open_subscription(owner, name, &filter.canonical_bytes(), 0)
        .await
        .unwrap();
}

fn everything() -> pb::ListSubscriptionsRequest {
    pb::ListSubscriptionsRequest::default()
}

#[tokio::test]
async fn lag_counts_only_what_the_subscription_would_be_sent() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    for i in 0..3 {
        store_clue(&gateway, &format!("a-{i}"), "CZ-A-1").await;
    }
    store_clue(&gateway, "b-0", "CZ-B-1").await;
    subscribe(&gateway, "cz-psb", "all", &filter(&[], "")).await;
    subscribe(&gateway, "cz-psb", "case-a", &filter(&[], "CZ-A")).await;
    subscribe(
        &gateway,
        "cz-psb",
        "transfers",
        &filter(&[pb::EventType::CaseTransferred], ""),
    )
    .await;
    // INTERNAL goes to member agencies only: nothing for the press office.
    subscribe(&gateway, "cz-press-office", "all", &filter(&[], "")).await;

    let states = subscriptions(&gateway, &everything()).await.unwrap();
    let lag_of = |owner: &str, name: &str| {
        states
            .iter()
            .find(|s| s.owner == owner && s.name == name)
            .unwrap_or_else(|| panic!("{owner}/{name} listed"))
            .lag_messages
    };
    assert_eq!(lag_of("cz-psb", "all"), 4);
    assert_eq!(lag_of("cz-psb", "case-a"), 3);
    assert_eq!(lag_of("cz-psb", "transfers"), 0);
    assert_eq!(lag_of("cz-press-office", "all"), 0);
    assert!(states.iter().all(|s| !s.lag_capped && !s.connected));

    let lagging = subscriptions(
        &gateway,
        &pb::ListSubscriptionsRequest {
            min_lag: 4,
            owner: String::new(),
        },
    )
    .await
    .unwrap();
    let names: Vec<_> = lagging.iter().map(|s| (&*s.owner, &*s.name)).collect();
    assert_eq!(names, [("cz-psb", "all")]);
    let press = subscriptions(
        &gateway,
        &pb::ListSubscriptionsRequest {
            min_lag: 0,
            owner: "cz-press-office".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(press.len(), 1);
}

#[tokio::test]
async fn lag_beyond_the_scan_limit_is_flagged_as_capped() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    for i in 0..5 {
        store_clue(&gateway, &format!("c-{i}"), "CZ-C-1").await;
    }
    subscribe(&gateway, "cz-psb", "all", &filter(&[], "")).await;
    let row = gateway.store.subscriptions().await.unwrap().remove(0);
    let now = Instant::now().unix_micros();
    let high_water = gateway.store.latest_sequence().await.unwrap();
    let wanted = filter(&[], "");
    let capped = lag(&gateway, &row, &wanted, high_water, now, 2)
        .await
        .unwrap();
    assert_eq!((capped.messages, capped.capped), (2, true));
    let whole = lag(&gateway, &row, &wanted, high_water, now, 5)
        .await
        .unwrap();
    assert_eq!((whole.messages, whole.capped), (5, false));
}

#[tokio::test]
async fn an_owner_no_longer_registered_lags_by_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    store_clue(&gateway, "d-0", "CZ-D-1").await;
    subscribe(&gateway, "cz-gone", "all", &filter(&[], "")).await;
    let states = subscriptions(&gateway, &everything()).await.unwrap();
    assert_eq!(states[0].lag_messages, 0, "{states:?}");
}

#[tokio::test]
async fn status_reads_the_store_and_the_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let last = store_clue(&gateway, "e-0", "CZ-E-1").await;
    gateway
        .store
        .append_audit(&[crate::audit::reload("test", true, "applied")])
        .await
        .unwrap();
    let status = status(&gateway).await.unwrap();
    assert_eq!(status.store_backend, "sqlite");
    assert!(status.store_bytes > 0);
    assert_eq!(status.high_water, last);
    assert_eq!(status.notifications, 1);
    assert!(
        status.certificates.is_empty(),
        "no TLS material in force here"
    );
    let audit = status.audit.unwrap();
    assert!(audit.rows >= 1);
    assert!(audit.head_at.is_some());
    assert_eq!(audit.checkpoint_row, 0, "no checkpoint taken yet");
    assert_eq!(audit.rows_since_checkpoint, audit.rows);
    gateway
        .store
        .audit_checkpoint(gateway.key.clone())
        .await
        .unwrap()
        .expect("a checkpoint of the head");
    let audit = super::status(&gateway).await.unwrap().audit.unwrap();
    assert_eq!(audit.checkpoint_row, audit.rows);
    assert!(audit.checkpoint_at.is_some());
    assert_eq!(audit.rows_since_checkpoint, 0);
}

#[tokio::test]
async fn agencies_show_last_publish_and_the_newest_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    store_clue(&gateway, "f-0", "CZ-F-1").await;
    let refusal = |agency: &str, action: Action, reason: &str| crate::store::AuditEntry {
        agency: agency.into(),
        action: action.as_str(),
        sequence: None,
        sender: String::new(),
        notification_id: String::new(),
        decision: "PERMISSION_DENIED".into(),
        reason: reason.into(),
        peer: None,
    };
    gateway
        .store
        .append_audit(&[refusal("cz-psb", Action::PublishRefused, "older")])
        .await
        .unwrap();
    gateway
        .store
        .append_audit(&[refusal("cz-psb", Action::SupervisionRefused, "newer")])
        .await
        .unwrap();
    let list = agencies(&gateway).await.unwrap();
    let find = |id: &str| list.iter().find(|a| a.id == id).unwrap();
    let eeb = find("cz-eeb");
    assert!(eeb.last_publish.is_some());
    assert!(eeb.last_refusal.is_none());
    assert_eq!(eeb.connections, 0);
    assert!(eeb.connected_since.is_none());
    let psb = find("cz-psb");
    assert!(psb.last_publish.is_none());
    assert!(psb.last_refusal.is_some());
    assert_eq!(
        psb.last_refusal_reason,
        "SUPERVISION_REFUSED PERMISSION_DENIED: newer"
    );
    assert_eq!(find("cz-ops").role, "OPERATOR");
}

#[test]
fn a_filter_reads_in_words() {
    assert_eq!(describe_filter(&filter(&[], "")), "everything");
    let wire = pb::SubscriptionFilter {
        events: vec![
            pb::EventType::CaseFiled as i32,
            pb::EventType::CaseTransferred as i32,
        ],
        case_ref_prefix: "CZ-2026".into(),
        senders: vec!["cz-psb".into()],
        regions: vec!["140400".into()],
    };
    let filter = SubscriptionFilter::from_wire("filter", wire).unwrap();
    let words = describe_filter(&filter);
    assert!(words.contains("CASE_FILED") && words.contains("CASE_TRANSFERRED"));
    assert!(words.contains("cases CZ-2026*"), "{words}");
    assert!(words.contains("senders cz-psb"), "{words}");
    assert!(words.contains("regions 140400"), "{words}");
}

#[test]
fn microseconds_become_timestamps_also_before_the_epoch() {
    assert_eq!(
        timestamp_micros(1_500_000),
        prost_types::Timestamp {
            seconds: 1,
            nanos: 500_000_000
        }
    );
    assert_eq!(
        timestamp_micros(-1),
        prost_types::Timestamp {
            seconds: -1,
            nanos: 999_999_000
        }
    );
}

#[test]
fn days_left_round_down_and_go_negative_once_expired() {
    let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let expiry = |what: &str, offset: time::Duration| Expiry {
        what: what.into(),
        file: "ca.crt".into(),
        at: now + offset,
    };
    let listed = certificates(
        &[
            expiry("server certificate", time::Duration::hours(47)),
            expiry("CRL", time::Duration::hours(-1)),
            expiry("CA", time::Duration::days(3650)),
        ],
        now,
    );
    let days: Vec<(&str, i64)> = listed
        .iter()
        .map(|c| (c.what.as_str(), c.days_left))
        .collect();
    assert_eq!(days, [("server certificate", 1), ("CRL", -1), ("CA", 3650)]);
    assert_eq!(
        listed[0].not_after,
        Some(timestamp(now + time::Duration::hours(47)))
    );
}
