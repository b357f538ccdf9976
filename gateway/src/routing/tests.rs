use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Envelope, Event, NotificationId, Region,
};
use liandong_core::registry::Registry;

use super::*;
use crate::Gateway;
use crate::identity::Principal;
use crate::policy::{Policy, Rules};
use crate::store::{NewNotification, Store};

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");
const SECOND: Duration = Duration::from_secs(1);

fn rules(registry: &str) -> Rules {
    Rules {
        registry: Registry::parse(registry, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    }
}

async fn gateway(dir: &tempfile::TempDir) -> Arc<Gateway> {
    gateway_with(dir, DeliverySettings::default()).await
}

/// Settings for a test that advances a paused clock by minutes while the
/// store's writes (the renewals of the subscription's lease among them)
/// take real time: a lease that no advance outlasts.
fn paused_clock_settings() -> DeliverySettings {
    DeliverySettings {
        subscription_lease: std::time::Duration::from_secs(24 * 3600),
        ..DeliverySettings::default()
    }
}

async fn gateway_with(dir: &tempfile::TempDir, delivery: DeliverySettings) -> Arc<Gateway> {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    Arc::new(Gateway::new(
        store,
        rules(REGISTRY),
        0,
        delivery,
        Arc::new(crate::supervision::GatewayKey::generate()),
    ))
}

/// The case of the transfer `store_transfer` stores as `id`: each
/// transfer opens a case of its own (a case is transferred once).
fn transfer_case(id: &str) -> String {
    format!("CZ-2026-HW-{id}")
}

/// The envelope of the transfer `store_transfer` stores.
fn transfer_envelope(id: &str) -> Envelope {
    Envelope {
        sender: AgencyId::parse("sender", "cz-eeb-xiangyuan").unwrap(),
        id: NotificationId::parse_field("id", id).unwrap(),
        case_ref: CaseRef::parse_field("case_ref", &transfer_case(id)).unwrap(),
        event: Event::from_wire("event", pb::EventType::CaseTransferred as i32).unwrap(),
        confidentiality: Confidentiality::Restricted,
        region: Region::parse("region", "140423").unwrap(),
        recipients: vec![AgencyId::parse("recipient", "cz-psb-xiangyuan").unwrap()],
        copies: Vec::new(),
    }
}

async fn store_transfer(gateway: &Gateway, id: &str) -> u64 {
    let wire = pb::Notification {
        notification_id: id.into(),
        case_ref: transfer_case(id),
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
    let open = OpenRequest::try_from(inbox(1)).unwrap();
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
        copies: Vec::new(),
    };
    let new = NewNotification {
        envelope: transfer_envelope("t-1"),
        content_hash: Vec::new(),
        payload: Vec::new(),
        peer: None,
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

// Session timing on a paused clock. A paused runtime with nothing to do
// advances its clock to the next timer, and the store works on threads of
// its own: while it does, these tests keep the runtime busy, so that time
// moves only when a test says `advance`. Timers keep to the millisecond,
// rounded up: a step meant to reach a deadline goes one millisecond past.

const PAST: Duration = Duration::from_millis(1);

/// Awaits `future` without letting the paused clock move; gives up after
/// ten real seconds.
async fn without_time_passing<F: std::future::Future>(future: F) -> F::Output {
    use futures::FutureExt;
    let started = std::time::Instant::now();
    let mut future = std::pin::pin!(future);
    loop {
        if let Some(output) = future.as_mut().now_or_never() {
            return output;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "nothing happened within 10 real seconds"
        );
        tokio::task::yield_now().await;
    }
}

/// Lets the session finish what it started (store reads and writes), with
/// the clock standing still.
async fn settle() {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while std::time::Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

/// The subscription's cursor as stored, once it is `expected`, with the
/// clock standing still; gives up after ten real seconds.
async fn cursor_becomes(gateway: &Gateway, expected: u64) {
    let started = std::time::Instant::now();
    loop {
        let stored = without_time_passing(
            gateway
                .store
                .subscription_cursor("cz-psb-xiangyuan", "inbox"),
        )
        .await
        .unwrap();
        if stored == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the cursor stays at {stored:?}, not {expected}"
        );
        settle().await;
    }
}

/// Opens `name` for the reader `cz-psb-xiangyuan` and runs its session.
async fn run_session(
    gateway: &Arc<Gateway>,
    open: pb::SubscriptionOpen,
) -> (
    tokio::sync::mpsc::Sender<Result<pb::SubscribeRequest, tonic::Status>>,
    Outbound,
    tokio::task::JoinHandle<()>,
) {
    let reader_id = AgencyId::parse("reader", "cz-psb-xiangyuan").unwrap();
    let principal = Principal {
        agency: gateway.rules().registry.get(&reader_id).unwrap().clone(),
    };
    let open = OpenRequest::try_from(open).unwrap();
    let session = without_time_passing(Session::open(gateway.clone(), principal, open))
        .await
        .unwrap();
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    let (sink, stream) = outbound();
    let task = tokio::spawn(session.run(ReceiverStream::new(inbound), sink));
    (requests, stream, task)
}

fn ack(sequences: &[u64]) -> Result<pb::SubscribeRequest, tonic::Status> {
    Ok(pb::SubscribeRequest {
        kind: Some(pb::subscribe_request::Kind::Ack(pb::Ack {
            sequences: sequences.to_vec(),
        })),
    })
}

/// Opens the subscription "inbox" from the beginning with this ack
/// timeout.
fn inbox(ack_timeout_seconds: u32) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: "inbox".into(),
        ack_timeout_seconds,
        ..Default::default()
    }
}

fn nothing_sent(stream: &mut Outbound) -> bool {
    use futures::FutureExt;
    stream.next().now_or_never().is_none()
}

#[tokio::test]
async fn an_unacknowledged_frame_is_sent_again_each_ack_timeout_with_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with(&dir, paused_clock_settings()).await;
    let sequence = store_transfer(&gateway, "t-1").await;
    tokio::time::pause();
    let (requests, mut stream, task) = run_session(&gateway, inbox(30)).await;

    let first = without_time_passing(stream.next()).await.unwrap().unwrap();
    assert_eq!((first.sequence, first.attempt), (sequence, 1));
    settle().await;
    tokio::time::advance(29 * SECOND).await;
    settle().await;
    assert!(nothing_sent(&mut stream), "not before the ack timeout");

    tokio::time::advance(SECOND + PAST).await;
    let second = without_time_passing(stream.next()).await.unwrap().unwrap();
    assert_eq!((second.sequence, second.attempt), (sequence, 2));
    settle().await;
    tokio::time::advance(30 * SECOND + PAST).await;
    let third = without_time_passing(stream.next()).await.unwrap().unwrap();
    assert_eq!((third.sequence, third.attempt), (sequence, 3));

    // Acknowledged: never sent again.
    requests.send(ack(&[sequence])).await.unwrap();
    settle().await;
    tokio::time::advance(120 * SECOND).await;
    settle().await;
    assert!(nothing_sent(&mut stream), "an acknowledged frame is done");

    drop(requests);
    without_time_passing(task).await.unwrap();
    assert!(stream.next().await.is_none(), "a clean end");
    let cursor = without_time_passing(
        gateway
            .store
            .subscription_cursor("cz-psb-xiangyuan", "inbox"),
    )
    .await
    .unwrap();
    assert_eq!(cursor, Some(sequence), "written at the end");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_after_the_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with(
        &dir,
        DeliverySettings {
            stall_timeout: 30 * SECOND,
            ..paused_clock_settings()
        },
    )
    .await;
    // More than the channel towards the subscriber holds.
    for i in 0..session::OUTBOUND_CAPACITY + 4 {
        store_transfer(&gateway, &format!("t-{i}")).await;
    }
    tokio::time::pause();
    let (_requests, mut stream, task) = run_session(&gateway, inbox(3600)).await;

    // Nobody reads: the channel fills (each frame audited before it is
    // handed over) and the session waits for room.
    let started = std::time::Instant::now();
    while without_time_passing(gateway.store.audit_entries())
        .await
        .unwrap()
        .len()
        < session::OUTBOUND_CAPACITY
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        settle().await;
    }
    settle().await;
    tokio::time::advance(29 * SECOND).await;
    settle().await;
    assert!(!task.is_finished(), "not cut before the stall timeout");
    tokio::time::advance(SECOND + PAST).await;
    without_time_passing(task).await.unwrap();

    let end = stream.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert!(
        end.message()
            .starts_with("no delivery could be sent for 30 s"),
        "{end:?}"
    );
    assert!(stream.next().await.is_none(), "the status ends the stream");
}

#[tokio::test]
async fn the_cursor_is_written_at_most_once_per_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with(
        &dir,
        DeliverySettings {
            cursor_flush: 10 * SECOND,
            ..paused_clock_settings()
        },
    )
    .await;
    let first = store_transfer(&gateway, "t-1").await;
    let second = store_transfer(&gateway, "t-2").await;
    tokio::time::pause();
    let (requests, mut stream, task) = run_session(&gateway, inbox(3600)).await;
    for expected in [first, second] {
        let frame = without_time_passing(stream.next()).await.unwrap().unwrap();
        assert_eq!(frame.sequence, expected);
    }
    let stored = || {
        without_time_passing(
            gateway
                .store
                .subscription_cursor("cz-psb-xiangyuan", "inbox"),
        )
    };

    requests.send(ack(&[first])).await.unwrap();
    settle().await;
    assert_eq!(stored().await.unwrap(), Some(0), "not yet due");
    tokio::time::advance(10 * SECOND + PAST).await;
    cursor_becomes(&gateway, first).await;

    // The interval starts again from that write.
    requests.send(ack(&[second])).await.unwrap();
    settle().await;
    tokio::time::advance(9 * SECOND).await;
    settle().await;
    assert_eq!(stored().await.unwrap(), Some(first));
    tokio::time::advance(SECOND + PAST).await;
    cursor_becomes(&gateway, second).await;

    drop(requests);
    without_time_passing(task).await.unwrap();
}

#[tokio::test]
async fn opens_in_progress_count_against_the_stream_cap_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let owner = AgencyId::parse("owner", "cz-psb").unwrap();
    let sessions = &gateway.sessions;
    // Two opens under way, neither registered yet: a third is refused
    // before it could touch the store.
    let first = sessions.reserve(&owner, "a", 2).unwrap();
    let second = sessions.reserve(&owner, "b", 2).unwrap();
    let refused = sessions.reserve(&owner, "c", 2).unwrap_err();
    assert_eq!(refused.open, 2);
    // Reopening a name being opened replaces it: not refused.
    drop(sessions.reserve(&owner, "a", 2).unwrap());
    // Another agency has its own count.
    let other = AgencyId::parse("owner", "cz-eeb").unwrap();
    drop(sessions.reserve(&other, "a", 2).unwrap());
    // Once registered, a session counts once, reservation or not.
    let (_a, _) = sessions
        .register(&gateway.stop, &owner, "a", SubscriptionFilter::default(), 2)
        .unwrap();
    drop(first);
    assert!(
        sessions.reserve(&owner, "c", 2).is_err(),
        "a live, b opening"
    );
    // A failed open gives its place back.
    drop(second);
    drop(sessions.reserve(&owner, "c", 2).expect("b's open ended"));
}
