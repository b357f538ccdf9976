use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use liandong_core::domain::{AgencyId, CaseRef, Envelope, Event, NotificationId, Region};
use liandong_core::registry::Registry;

use super::window::Window;
use super::*;
use crate::Gateway;
use crate::identity::Principal;
use crate::policy::Policy;
use crate::store::{NewNotification, Store};

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");
const SECOND: Duration = Duration::from_secs(1);

#[test]
fn the_cursor_passes_only_acknowledged_sequences() {
    let t0 = Instant::now();
    let mut window = Window::new(0, 8, 30 * SECOND);
    for sequence in [2, 3, 5] {
        window.admit(sequence);
    }
    window.scanned_through(6);
    assert_eq!(window.cursor(), 1, "1 and 4 were passed over; 2 is pending");
    for sequence in [2, 3, 5] {
        window.sent(sequence, t0);
    }
    assert_eq!(window.ack(&[3, 99]), 1, "unknown acks are ignored");
    assert_eq!(window.cursor(), 1, "2 is still unacknowledged");
    window.ack(&[2]);
    assert_eq!(window.cursor(), 4);
    window.ack(&[5]);
    assert_eq!(window.cursor(), 6);
    assert!(window.is_empty());
}

#[test]
fn a_frame_never_sent_holds_the_cursor() {
    let mut window = Window::new(10, 8, 30 * SECOND);
    window.admit(11);
    window.admit(12);
    window.scanned_through(20);
    // The sends failed: the subscriber left before either was handed over.
    assert_eq!(window.cursor(), 10);
    assert_eq!(window.next_attempt(11), Some(1));
    assert_eq!(window.next_due(), None, "nothing sent, nothing due");
}

#[test]
fn the_window_admits_no_more_than_its_capacity() {
    let mut window = Window::new(0, 2, 30 * SECOND);
    assert_eq!(window.room(), 2);
    window.admit(1);
    window.admit(2);
    assert_eq!(window.room(), 0);
    window.ack(&[1]);
    assert_eq!(window.room(), 1);
}

#[test]
fn unacknowledged_sequences_fall_due_after_the_ack_timeout() {
    let t0 = Instant::now();
    let mut window = Window::new(0, 8, 30 * SECOND);
    window.admit(1);
    window.admit(2);
    window.scanned_through(2);
    window.sent(1, t0);
    window.sent(2, t0 + 10 * SECOND);
    assert!(window.due(t0 + 29 * SECOND).is_empty());
    assert_eq!(window.due(t0 + 30 * SECOND), vec![1]);
    assert_eq!(window.due(t0 + 40 * SECOND), vec![1, 2]);
    assert_eq!(window.next_due(), Some(t0 + 30 * SECOND));
    assert_eq!(window.next_attempt(1), Some(2));
    window.sent(1, t0 + 30 * SECOND);
    assert_eq!(window.next_attempt(1), Some(3));
    assert_eq!(window.due(t0 + 40 * SECOND), vec![2]);
}

#[test]
fn a_sequence_the_policy_now_refuses_leaves_the_window() {
    let t0 = Instant::now();
    let mut window = Window::new(0, 8, 30 * SECOND);
    window.admit(1);
    window.admit(2);
    window.scanned_through(2);
    window.sent(1, t0);
    window.sent(2, t0);
    window.drop_done(1);
    assert_eq!(window.cursor(), 1);
    assert_eq!(window.due(t0 + 60 * SECOND), vec![2]);
}

fn rules(registry: &str) -> Rules {
    Rules {
        registry: Registry::parse(registry, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    }
}

async fn gateway(dir: &tempfile::TempDir) -> Arc<Gateway> {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    Arc::new(Gateway::new(
        store,
        rules(REGISTRY),
        0,
        DeliverySettings::default(),
    ))
}

/// The envelope of the transfer `store_transfer` stores.
fn transfer_envelope(id: &str) -> Envelope {
    Envelope {
        sender: AgencyId::parse("sender", "cz-eeb-xiangyuan").unwrap(),
        id: NotificationId::parse_field("id", id).unwrap(),
        case_ref: CaseRef::parse_field("case_ref", "CZ-2026-HW-0042").unwrap(),
        event: Event::from_wire("event", pb::EventType::CaseTransferred as i32).unwrap(),
        confidentiality: Confidentiality::Restricted,
        region: Region::parse("region", "140423").unwrap(),
        recipients: vec![AgencyId::parse("recipient", "cz-psb-xiangyuan").unwrap()],
    }
}

async fn store_transfer(gateway: &Gateway, id: &str) -> u64 {
    let wire = pb::Notification {
        notification_id: id.into(),
        case_ref: "CZ-2026-HW-0042".into(),
        event: pb::EventType::CaseTransferred as i32,
        confidentiality: pb::Confidentiality::Restricted as i32,
        recipients: vec!["cz-psb-xiangyuan".into()],
        confidentiality_note: "侦查阶段".into(),
        region: "140423".into(),
        summary: "secret summary".into(),
        sender: "cz-eeb-xiangyuan".into(),
        ..Default::default()
    };
    let new = NewNotification::new(transfer_envelope(id), wire.encode_to_vec());
    match gateway.store.publish(&new).await.unwrap() {
        crate::store::PublishOutcome::Stored(receipt) => receipt.sequence,
        other => panic!("not stored: {other:?}"),
    }
}

async fn wait(stream: &mut Outbound) -> Option<Result<pb::Delivery, tonic::Status>> {
    tokio::time::timeout(10 * SECOND, stream.next())
        .await
        .expect("a frame or the end within 10 s")
}

fn put_in_force(gateway: &Gateway, registry: &str) {
    gateway.put_in_force(rules(registry));
}

#[tokio::test]
async fn a_redelivery_is_rendered_and_audited_under_the_rules_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let sequence = store_transfer(&gateway, "t-1").await;
    let reader_id = AgencyId::parse("reader", "cz-psb-xiangyuan").unwrap();
    let principal = Principal {
        agency: gateway.rules().registry.get(&reader_id).unwrap().clone(),
    };
    let open = OpenRequest::try_from(pb::SubscriptionOpen {
        name: "inbox".into(),
        ack_timeout_seconds: 1,
        ..Default::default()
    })
    .unwrap();
    let session = Session::open(gateway.clone(), principal, open)
        .await
        .unwrap();
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    let (sink, mut stream) = outbound();
    let task = tokio::spawn(session.run(ReceiverStream::new(inbound), sink));

    let first = wait(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        (first.sequence, first.attempt, first.withheld),
        (sequence, 1, false)
    );
    assert_eq!(first.notification.unwrap().summary, "secret summary");

    // Clearance lowered below RESTRICTED while the delivery is unacknowledged.
    let lowered = REGISTRY.replacen(
        "parent = \"cz-psb\"\nclearance = \"CONFIDENTIAL\"",
        "parent = \"cz-psb\"\nclearance = \"INTERNAL\"",
        1,
    );
    assert_ne!(lowered, REGISTRY);
    put_in_force(&gateway, &lowered);
    let again = wait(&mut stream).await.unwrap().unwrap();
    assert_eq!((again.sequence, again.attempt), (sequence, 2));
    assert!(
        again.withheld,
        "the redelivery follows the lowered clearance"
    );
    assert_eq!(again.notification.unwrap().summary, "");

    // Removed from the registry: the stream ends, nothing more is sent.
    let removed = lowered.replacen("id = \"cz-psb-xiangyuan\"", "id = \"cz-psb-gone\"", 1);
    put_in_force(&gateway, &removed);
    let end = wait(&mut stream).await.unwrap().unwrap_err();
    assert_eq!(end.code(), tonic::Code::PermissionDenied);
    assert!(end.message().contains("cz-psb-xiangyuan"), "{end:?}");
    assert!(wait(&mut stream).await.is_none());
    task.await.unwrap();
    drop(requests);

    let decisions: Vec<String> = gateway
        .store
        .audit_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.sequence == Some(sequence) && entry.agency == "cz-psb-xiangyuan")
        .map(|entry| entry.decision)
        .collect();
    assert_eq!(decisions, ["FULL", "WITHHELD"], "one audit row per frame");
    assert_eq!(
        gateway
            .store
            .subscription_cursor("cz-psb-xiangyuan", "inbox")
            .await
            .unwrap(),
        Some(0),
        "never acknowledged: the cursor stays before it"
    );
}

fn filter(case_ref_prefix: &str, senders: &[&str]) -> SubscriptionFilter {
    let wire = pb::SubscriptionFilter {
        case_ref_prefix: case_ref_prefix.into(),
        senders: senders.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    SubscriptionFilter::from_wire("open.filter", wire).unwrap()
}

fn woken(live: &wake::Live) -> bool {
    use futures::FutureExt;
    live.notify.notified().now_or_never().is_some()
}

#[tokio::test]
async fn a_publish_wakes_only_the_sessions_that_may_want_it() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let register = |owner: &str, name: &str, filter: SubscriptionFilter| {
        let owner = AgencyId::parse("owner", owner).unwrap();
        gateway
            .sessions
            .register(&gateway.stop, &owner, name, filter, 100)
            .unwrap()
            .0
    };
    let recipient = register("cz-psb-xiangyuan", "all", SubscriptionFilter::default());
    let other_case = register("cz-psb-xiangyuan", "other-case", filter("CZ-OTHER", &[]));
    let this_case = register("cz-psb-xiangyuan", "this-case", filter("CZ-2026-HW", &[]));
    let replaced = register("cz-psb-xiangyuan", "replaced", filter("CZ-2026", &[]));
    let replacing = register("cz-psb-xiangyuan", "replaced", filter("CZ-2026", &[]));
    let other_sender = register("cz-psb-xiangyuan", "other-sender", filter("", &["cz-eeb"]));
    // Not a recipient of the restricted transfer, and no oversight of it.
    let outsider = register("cz-eeb-luzhou", "all", SubscriptionFilter::default());
    // Oversight: the procuratorate gets a stub of transfers.
    let supervisor = register("cz-procuratorate", "all", SubscriptionFilter::default());

    let sequence = store_transfer(&gateway, "t-1").await;
    let receipt = crate::store::Receipt {
        sequence,
        received_at: liandong_core::domain::Instant::now(),
    };
    let new = NewNotification {
        envelope: transfer_envelope("t-1"),
        content_hash: Vec::new(),
        payload: Vec::new(),
    };
    wake::stored(&gateway, &receipt, &new);
    assert!(woken(&recipient));
    assert!(woken(&supervisor));
    assert!(woken(&this_case), "filter on this case's prefix");
    assert!(woken(&replacing));
    assert!(!woken(&replaced), "a replaced session is no longer woken");
    assert!(!woken(&other_case), "filter on another case");
    assert!(!woken(&other_sender), "filter on another sender");
    assert!(!woken(&outsider), "the policy gives it nothing");

    // Dispatched locally: the poll task finds nothing to do.
    wake::poll_once(&gateway).await.unwrap();
    assert!(!woken(&recipient), "woken twice for one row");
}

#[tokio::test]
async fn rows_of_another_replica_are_dispatched_by_the_poll_task() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let owner = AgencyId::parse("owner", "cz-psb-xiangyuan").unwrap();
    let (live, _) = gateway
        .sessions
        .register(
            &gateway.stop,
            &owner,
            "inbox",
            SubscriptionFilter::default(),
            100,
        )
        .unwrap();
    let (idle, _) = gateway
        .sessions
        .register(&gateway.stop, &owner, "idle", filter("CZ-OTHER", &[]), 100)
        .unwrap();
    // Stored without a local publisher: as another replica would.
    store_transfer(&gateway, "t-1").await;
    store_transfer(&gateway, "t-2").await;
    assert!(!woken(&live));
    wake::poll_once(&gateway).await.unwrap();
    assert!(woken(&live));
    assert!(!woken(&idle));
    wake::poll_once(&gateway).await.unwrap();
    assert!(!woken(&live), "each row is dispatched once");
}

#[tokio::test]
async fn the_stream_cap_counts_other_subscriptions_of_the_same_agency() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let owner = AgencyId::parse("owner", "cz-psb").unwrap();
    let register = |name: &str| {
        gateway.sessions.register(
            &gateway.stop,
            &owner,
            name,
            SubscriptionFilter::default(),
            2,
        )
    };
    let (a, _) = register("a").unwrap();
    register("b").unwrap();
    let refused = register("c").unwrap_err();
    assert_eq!((refused.open, refused.cap), (2, 2));
    // Taking over "a" replaces it: not one more stream.
    let (_, previous) = register("a").unwrap();
    assert!(a.cancel.is_cancelled(), "the older session is told to end");
    assert!(previous.is_some());
}

fn frame(sequence: u64) -> pb::Delivery {
    pb::Delivery {
        sequence,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_ending_status_overtakes_frames_nobody_read() {
    let (sink, mut stream) = outbound();
    for sequence in 1..=3 {
        sink.frames.try_send(frame(sequence)).unwrap();
    }
    sink.end
        .send(tonic::Status::unavailable("stalled"))
        .unwrap();
    let first = stream.next().await.unwrap().unwrap_err();
    assert_eq!(first.code(), tonic::Code::Unavailable);
    assert!(stream.next().await.is_none(), "buffered frames are dropped");
    // The session sees that the stream is gone.
    assert!(sink.frames.is_closed());
}

#[tokio::test]
async fn a_clean_end_delivers_what_is_buffered() {
    let (sink, mut stream) = outbound();
    for sequence in 1..=3 {
        sink.frames.try_send(frame(sequence)).unwrap();
    }
    drop(sink);
    let mut got = Vec::new();
    while let Some(item) = stream.next().await {
        got.push(item.unwrap().sequence);
    }
    assert_eq!(got, [1, 2, 3]);
}
