//! Delivery under faults and rule changes, against the real gateway over
//! real mutual TLS: every frame (redeliveries included) follows the rules
//! in force when it is sent, a reload reaches open streams, idle
//! subscriptions cost nothing, a subscriber that drops or stops reading
//! loses nothing, and per-agency caps refuse with `RESOURCE_EXHAUSTED`.

use std::time::Duration;

use sqlx::Connection;
use tonic::transport::Channel;

use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{GatewayProcess, Subscriber, Testbed, notification, publish, publish_clues};

const WAIT: Duration = Duration::from_secs(10);

/// A transfer from the Xiangyuan bureau to the Xiangyuan police,
/// RESTRICTED; each opens a case of its own (a case is transferred once).
fn transfer(id: &str) -> pb::Notification {
    notification(
        id,
        &format!("CZ-2026-HW-{id}"),
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb-xiangyuan"],
    )
}

fn registry_path(bed: &Testbed) -> std::path::PathBuf {
    bed.dir.path().join("agencies.toml")
}

/// Rewrites the registry entry of `agency` with `edit` (the entry's text
/// from `id = ...` to the next `[[agency]]`).
fn edit_agency(bed: &Testbed, agency: &str, edit: impl FnOnce(&str) -> String) {
    let path = registry_path(bed);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(&format!("id = \"{agency}\"\n"))
        .unwrap_or_else(|| panic!("{agency} is in the registry"));
    let end = text[start..]
        .find("[[agency]]")
        .map_or(text.len(), |offset| start + offset);
    let entry = &text[start..end];
    let edited = edit(entry);
    assert_ne!(edited, entry, "the edit changes the entry");
    std::fs::write(&path, format!("{}{edited}{}", &text[..start], &text[end..])).unwrap();
}

/// Lowers `agency`'s clearance to `level`.
fn lower_clearance(bed: &Testbed, agency: &str, level: &str) {
    edit_agency(bed, agency, |entry| {
        let line = entry
            .lines()
            .find(|line| line.starts_with("clearance = "))
            .expect("the entry has a clearance");
        entry.replacen(line, &format!("clearance = \"{level}\""), 1)
    });
}

/// Removes `agency` from the registry.
fn remove_agency(bed: &Testbed, agency: &str) {
    let path = registry_path(bed);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text
        .find(&format!("[[agency]]\nid = \"{agency}\"\n"))
        .unwrap_or_else(|| panic!("{agency} is in the registry"));
    let end = text[start + 1..]
        .find("[[agency]]")
        .map_or(text.len(), |offset| start + 1 + offset);
    std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
}

/// A client whose HTTP/2 stream window is tiny, so that a subscriber that
/// stops reading makes the gateway's sends wait after a few frames.
async fn narrow_client(bed: &Testbed, agency: &str) -> ExchangeClient<Channel> {
    let channel = bed
        .pki
        .credentials(agency)
        .connect_tuned(&bed.gateway.url(), None, |endpoint| {
            endpoint.initial_stream_window_size(Some(4096))
        })
        .await
        .unwrap();
    ExchangeClient::new(channel)
}

/// A subscriber of `agency` whose client holds little unread (a 4 KiB
/// HTTP/2 stream window) and whose window of unacknowledged deliveries is
/// the largest allowed: with a backlog, the gateway always has frames it
/// cannot send yet. The client is returned so the caller decides when the
/// connection goes.
async fn backlogged(
    bed: &Testbed,
    agency: &str,
    name: &str,
) -> (ExchangeClient<Channel>, Subscriber) {
    let mut client = narrow_client(bed, agency).await;
    let subscriber = Subscriber::open_with(
        &mut client,
        pb::SubscriptionOpen {
            max_in_flight: 1024,
            ..open_request(name)
        },
    )
    .await
    .unwrap();
    (client, subscriber)
}

fn open_request(name: &str) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: name.to_owned(),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Beginning(true)),
        }),
        ..Default::default()
    }
}

async fn database(bed: &Testbed) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&bed.database_url())
        .await
        .expect("open the database")
}

/// `(name, acked_through, updated_at)` of every subscription of `owner`.
async fn subscription_rows(bed: &Testbed, owner: &str) -> Vec<(String, i64, i64)> {
    let mut conn = database(bed).await;
    sqlx::query_as(
        "SELECT name, acked_through, updated_at FROM subscriptions WHERE owner = $1 ORDER BY name",
    )
    .bind(owner)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// The audit decisions recorded for `agency` reading `sequence`, in order.
async fn audited_decisions(bed: &Testbed, agency: &str, sequence: u64) -> Vec<String> {
    let mut conn = database(bed).await;
    sqlx::query_scalar(
        "SELECT decision FROM audit_log WHERE agency = $1 AND sequence = $2 AND action = 'DELIVERY' ORDER BY id",
    )
    .bind(agency)
    .bind(sequence as i64)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// The next frame, failing the test on silence or on the end of the stream.
async fn next_frame(sub: &mut Subscriber) -> pb::Delivery {
    sub.next(WAIT)
        .await
        .expect("the stream stays open")
        .expect("a frame within the wait")
}

#[tokio::test]
async fn redelivery_rechecks_policy() {
    let bed = Testbed::start().unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut inbox = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            ack_timeout_seconds: 1,
            ..open_request("inbox")
        },
    )
    .await
    .unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let sequence = publish(&mut eeb, transfer("t-1")).await.unwrap().sequence;

    let mut frames = vec![next_frame(&mut inbox).await];
    assert_eq!((frames[0].sequence, frames[0].attempt), (sequence, 1));
    assert!(!frames[0].withheld);
    assert_eq!(
        frames[0].notification.as_ref().unwrap().summary,
        "summary of t-1"
    );

    // Not acknowledged; meanwhile the reader's clearance drops below the
    // notification's level.
    lower_clearance(&bed, "cz-psb-xiangyuan", "INTERNAL");
    bed.reload_rules().await;
    loop {
        let frame = next_frame(&mut inbox).await;
        assert_eq!(frame.sequence, sequence);
        let withheld = frame.withheld;
        frames.push(frame);
        if withheld {
            break;
        }
    }
    let stub = frames.last().unwrap();
    assert!(stub.attempt >= 2, "a redelivery");
    let content = stub.notification.as_ref().unwrap();
    assert_eq!(content.summary, "", "the stub carries no content");
    assert!(content.recipients.is_empty());
    assert!(
        stub.withheld_reason.contains("clearance"),
        "{}",
        stub.withheld_reason
    );
    // Whatever else is on its way is drained by closing; nothing full may
    // follow the first stub.
    inbox.ack(&[sequence]).await;
    frames.extend(inbox.close().await.unwrap());
    let first_stub = frames.iter().position(|f| f.withheld).unwrap();
    assert!(
        frames[first_stub..].iter().all(|f| f.withheld),
        "a full frame after the stub"
    );

    // One audit row per frame sent, each with the decision that frame had.
    let expected: Vec<&str> = frames
        .iter()
        .map(|f| if f.withheld { "WITHHELD" } else { "FULL" })
        .collect();
    assert_eq!(
        audited_decisions(&bed, "cz-psb-xiangyuan", sequence).await,
        expected
    );
}

#[tokio::test]
async fn removed_agency_stream_closed_after_reload() {
    let bed = Testbed::start().unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let first = publish(&mut eeb, transfer("t-1")).await.unwrap();
    let got = next_frame(&mut inbox).await;
    assert_eq!(got.sequence, first.sequence);
    // Left unacknowledged: it would be redelivered after the ack timeout.

    remove_agency(&bed, "cz-psb-xiangyuan");
    bed.reload_rules().await;
    let ended = match inbox.next(WAIT).await {
        Ok(Some(frame)) => panic!("a frame after the agency was removed: {frame:?}"),
        Ok(None) => panic!("the stream was not ended after the reload"),
        Err(status) => status,
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(
        ended.message().contains("cz-psb-xiangyuan") && ended.message().contains("registered"),
        "the status names why: {ended:?}"
    );
    assert!(
        matches!(inbox.next(WAIT).await, Ok(None)),
        "nothing after the end of the stream"
    );
    // And it cannot come back.
    let refused = Subscriber::open(&mut police, "inbox").await.err().unwrap();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn lowered_clearance_applies_to_open_stream() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let one = publish(&mut eeb, transfer("t-1")).await.unwrap().sequence;
    let two = publish(&mut eeb, transfer("t-2")).await.unwrap().sequence;
    let mut police = bed.client("cz-psb-xiangyuan").await;
    // One at a time: the second is sent only once the first is acknowledged.
    let mut inbox = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            max_in_flight: 1,
            ..open_request("inbox")
        },
    )
    .await
    .unwrap();
    let full = next_frame(&mut inbox).await;
    assert_eq!((full.sequence, full.withheld), (one, false));

    lower_clearance(&bed, "cz-psb-xiangyuan", "INTERNAL");
    bed.reload_rules().await;
    inbox.ack(&[one]).await;
    let after = next_frame(&mut inbox).await;
    assert_eq!(after.sequence, two);
    assert!(after.withheld, "the open stream follows the new clearance");
    assert_eq!(after.notification.as_ref().unwrap().summary, "");
    inbox.ack(&[two]).await;
    assert_eq!(
        audited_decisions(&bed, "cz-psb-xiangyuan", two).await,
        ["WITHHELD"]
    );
    // The stream itself stays open for what the agency may still read.
    let clue = notification("c-1", "C-9", Event::ClueShared, Level::Internal, &[]);
    let clue = publish(&mut eeb, clue).await.unwrap().sequence;
    let frame = next_frame(&mut inbox).await;
    assert_eq!((frame.sequence, frame.withheld), (clue, false));
}

#[tokio::test]
async fn idle_subscriptions_do_not_slow_publishing() {
    const IDLE: usize = 40;
    // One connection per idle stream: lift the per-agency connection cap.
    let bed = Testbed::start_with("[limits]\nmax_connections_per_agency = 64\n").unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "before-", "C-1", 0..3).await;

    // Idle streams over a few connections, with filters matching nothing
    // that is published below.
    let mut idle = Vec::new();
    for i in 0..IDLE {
        let mut client = bed.client("cz-psb").await;
        let open = pb::SubscriptionOpen {
            name: format!("idle-{i:02}"),
            filter: Some(pb::SubscriptionFilter {
                case_ref_prefix: "IDLE-NOTHING".into(),
                ..Default::default()
            }),
            ..open_request("")
        };
        idle.push(Subscriber::open_with(&mut client, open).await.unwrap());
    }
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let mut active = Subscriber::open(&mut procuratorate, "active")
        .await
        .unwrap();
    active.take_acked(3, WAIT).await;
    let before = subscription_rows(&bed, "cz-psb").await;
    assert_eq!(before.len(), IDLE);

    publish_clues(&mut eeb, "after-", "C-1", 0..30).await;
    // The active subscriber gets everything: the publishes were dispatched.
    let got = active.take_acked(30, WAIT).await;
    assert_eq!(got.last().unwrap().sequence, 33);
    assert!(active.close().await.unwrap().is_empty());
    let active_row = subscription_rows(&bed, "cz-procuratorate").await;
    assert_eq!(active_row[0].1, 33, "the active cursor was written");

    // Every idle stream ends cleanly having received nothing.
    for sub in idle {
        assert!(
            sub.close().await.unwrap().is_empty(),
            "an idle stream got a frame"
        );
    }
    assert_eq!(
        subscription_rows(&bed, "cz-psb").await,
        before,
        "an idle subscription wrote its cursor"
    );
}

#[tokio::test]
async fn subscriber_dropping_mid_batch_loses_nothing() {
    const TOTAL: usize = 300;
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "n", "C-1", 0..TOTAL).await;

    let (police, mut first) = backlogged(&bed, "cz-psb", "inbox").await;
    let acked = first.take_acked(10, WAIT).await;
    // The gateway is now waiting to send the rest of its batch: the
    // client's window is full. Drop the whole client mid-batch; the
    // reconnect below takes over once the old session has ended.
    drop(first);
    drop(police);

    let mut police = bed.client("cz-psb").await;
    let mut second = Subscriber::open(&mut police, "inbox").await.unwrap();
    let resumed = next_frame(&mut second).await;
    assert!(resumed.sequence <= 11, "resumed at {}", resumed.sequence);
    second.ack(&[resumed.sequence]).await;
    let rest = second
        .take_acked(TOTAL - resumed.sequence as usize, WAIT)
        .await;
    let mut sequences: Vec<u64> = acked.iter().map(|d| d.sequence).collect();
    // What was acknowledged may come again (acks in transit), never less.
    sequences.truncate(resumed.sequence as usize - 1);
    sequences.push(resumed.sequence);
    sequences.extend(rest.iter().map(|d| d.sequence));
    assert_eq!(sequences, (1..=TOTAL as u64).collect::<Vec<_>>());
    assert!(second.close().await.unwrap().is_empty());
}

#[tokio::test]
async fn stalled_reader_is_cut_and_resumes() {
    let mut bed = Testbed::start().unwrap();
    // A short stall threshold for the test.
    bed.gateway.signal(nix::sys::signal::Signal::SIGTERM);
    bed.gateway.wait(WAIT).unwrap();
    let config = std::fs::read_to_string(&bed.config).unwrap();
    let config = config.replacen("[delivery]\n", "[delivery]\nstall_timeout_seconds = 1\n", 1);
    std::fs::write(&bed.config, config).unwrap();
    bed.restart().unwrap();

    // A window far larger than what the client's HTTP/2 window holds: the
    // gateway always has frames to send.
    let (_stalled_client, mut stalled) = backlogged(&bed, "cz-psb", "stalled").await;
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let mut other = Subscriber::open(&mut procuratorate, "other").await.unwrap();

    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "a", "C-1", 0..100).await;
    // The stalled reader reads nothing; the other keeps receiving.
    assert_eq!(other.take_acked(100, WAIT).await.len(), 100);
    bed.wait_for_log(
        "subscription stream stalled",
        "the stalled stream was not cut",
    )
    .await;
    publish_clues(&mut eeb, "b", "C-1", 0..20).await;
    let more = other.take_acked(20, WAIT).await;
    assert_eq!(more.last().unwrap().sequence, 120);

    // Reading again, the stalled subscriber finds what was already on the
    // wire, then the status that cut it.
    let cut = loop {
        match stalled.next(WAIT).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stalled stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(cut.code(), tonic::Code::Unavailable, "{cut:?}");
    assert!(cut.message().contains("stopped reading"), "{cut:?}");

    // Nothing was acknowledged: a reconnect gets everything, in order.
    let mut police = bed.client("cz-psb").await;
    let mut resumed = Subscriber::open(&mut police, "stalled").await.unwrap();
    let all = resumed.take_acked(120, WAIT).await;
    assert_eq!(
        all.iter().map(|d| d.sequence).collect::<Vec<_>>(),
        (1..=120).collect::<Vec<_>>()
    );
    assert!(resumed.close().await.unwrap().is_empty());
}

#[tokio::test]
async fn subscription_cap_refuses_with_resource_exhausted() {
    let bed = Testbed::start_with("\n[limits]\nmax_subscriptions_per_agency = 2\n").unwrap();
    let mut police = bed.client("cz-psb").await;
    for name in ["a", "b"] {
        Subscriber::open(&mut police, name)
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
    }
    let refused = Subscriber::open(&mut police, "c").await.err().unwrap();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("limits.max_subscriptions_per_agency (2)"),
        "{refused:?}"
    );
    let names: Vec<String> = subscription_rows(&bed, "cz-psb")
        .await
        .into_iter()
        .map(|row| row.0)
        .collect();
    assert_eq!(names, ["a", "b"], "the refused one was not created");
    // The refusal is recorded under its RPC's action.
    let mut db = bed.connect_database().await;
    let refusals: Vec<(String, String)> =
        sqlx::query_as("SELECT agency, decision FROM audit_log WHERE action = 'SUBSCRIBE_REFUSED'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        refusals,
        [("cz-psb".to_owned(), "RESOURCE_EXHAUSTED".to_owned())],
        "one audited refusal"
    );
    // Existing subscriptions still open; other agencies are unaffected.
    Subscriber::open(&mut police, "a").await.unwrap();
    let mut procuratorate = bed.client("cz-procuratorate").await;
    Subscriber::open(&mut procuratorate, "c").await.unwrap();
}

/// Opens a PublishStream as `client` and publishes `id` on it; returns the
/// request side (the stream stays open while it lives) or the refusal.
async fn open_publish_stream(
    client: &mut ExchangeClient<Channel>,
    id: &str,
) -> Result<tokio::sync::mpsc::Sender<pb::PublishRequest>, tonic::Status> {
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::PublishRequest {
            notification: Some(notification(
                id,
                "C-PS",
                Event::ClueShared,
                Level::Internal,
                &[],
            )),
        })
        .await
        .unwrap();
    let mut receipts = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let receipt = receipts
        .message()
        .await?
        .expect("a receipt for the first request");
    assert_eq!(receipt.notification_id, id);
    Ok(requests)
}

#[tokio::test]
async fn publish_stream_cap_refuses_with_resource_exhausted() {
    let bed = Testbed::start_with("\n[limits]\nmax_streams_per_agency = 1\n").unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let first = open_publish_stream(&mut eeb, "ps-1").await.unwrap();
    let refused = open_publish_stream(&mut eeb, "ps-2").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("limits.max_streams_per_agency (1)"),
        "{refused:?}"
    );
    // Another agency has its own count; a unary publish is not a stream.
    let mut psb = bed.client("cz-psb").await;
    let _other = open_publish_stream(&mut psb, "ps-3").await.unwrap();
    publish(
        &mut eeb,
        notification("ps-4", "C-PS", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    // Closing the first stream gives its slot back.
    drop(first);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match open_publish_stream(&mut eeb, "ps-5").await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the closed stream's slot was never given back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let mut db = bed.connect_database().await;
    let refusals: Vec<(String, String)> = sqlx::query_as(
        "SELECT agency, decision FROM audit_log WHERE action = 'PUBLISH_REFUSED' AND decision = 'RESOURCE_EXHAUSTED'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(
        !refusals.is_empty() && refusals.iter().all(|(agency, _)| agency == "cz-eeb"),
        "refusals are audited: {refusals:?}"
    );
    assert_eq!(bed.stored_count().await, 4, "ps-2 was never stored");
}

#[tokio::test]
async fn stream_cap_refuses_with_resource_exhausted() {
    let bed = Testbed::start_with("\n[limits]\nmax_streams_per_agency = 2\n").unwrap();
    let mut police = bed.client("cz-psb").await;
    let mut a = Subscriber::open(&mut police, "a").await.unwrap();
    let _b = Subscriber::open(&mut police, "b").await.unwrap();
    let refused = Subscriber::open(&mut police, "c").await.err().unwrap();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("limits.max_streams_per_agency (2)"),
        "{refused:?}"
    );
    assert!(
        subscription_rows(&bed, "cz-psb")
            .await
            .iter()
            .all(|row| row.0 != "c"),
        "the refused subscription was not created"
    );
    // Taking over an open subscription is not one more stream.
    let mut again = bed.client("cz-psb").await;
    let _a2 = Subscriber::open(&mut again, "a").await.unwrap();
    assert_eq!(a.next(WAIT).await.unwrap_err().code(), tonic::Code::Aborted);
    // Another agency has its own cap.
    let mut procuratorate = bed.client("cz-procuratorate").await;
    Subscriber::open(&mut procuratorate, "c").await.unwrap();
}

/// A PostgreSQL URL whose search_path is a new, empty schema, or None when
/// PostgreSQL is unreachable and not required (`LIANDONG_REQUIRE_POSTGRES`).
async fn postgres_schema_url() -> Option<String> {
    let base = std::env::var("LIANDONG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let required = std::env::var("LIANDONG_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(error) if !required => {
            eprintln!("PostgreSQL at {base} unreachable ({error}); skipping");
            return None;
        }
        Err(error) => panic!("PostgreSQL at {base} is required but unreachable: {error}"),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("ld_delivery_{}_{nanos}", std::process::id());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

#[tokio::test]
async fn publishes_on_another_replica_reach_open_streams() {
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let bed = Testbed::start_on(&url, "").unwrap();
    // A second replica on the same database: its subscribers learn of the
    // first one's publishes only through its poll task.
    let replica = GatewayProcess::start(&bed.config, &bed.dir.path().join("replica.log")).unwrap();
    let channel = bed
        .pki
        .credentials("cz-psb")
        .connect(&replica.url(), None)
        .await
        .unwrap();
    let mut police = ExchangeClient::new(channel);
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();
    let idle = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            filter: Some(pb::SubscriptionFilter {
                case_ref_prefix: "IDLE-NOTHING".into(),
                ..Default::default()
            }),
            ..open_request("idle")
        },
    )
    .await
    .unwrap();

    let mut eeb = bed.client("cz-eeb").await;
    let receipts = publish_clues(&mut eeb, "n", "C-1", 0..20).await;
    let got = inbox.take_acked(20, WAIT).await;
    assert_eq!(
        got.iter().map(|d| d.sequence).collect::<Vec<_>>(),
        receipts.iter().map(|r| r.sequence).collect::<Vec<_>>()
    );
    assert!(inbox.close().await.unwrap().is_empty());
    assert!(idle.close().await.unwrap().is_empty());
}

#[tokio::test]
async fn reload_reaches_a_stream_waiting_to_send() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "n", "C-1", 0..200).await;
    // A reader that stops reading with a backlog: the gateway waits for
    // room to send (the stall threshold is the default 30 s).
    let (_police, mut inbox) = backlogged(&bed, "cz-psb-xiangyuan", "inbox").await;
    bed.wait_for_log("subscription opened", "the stream opened")
        .await;

    remove_agency(&bed, "cz-psb-xiangyuan");
    bed.reload_rules().await;
    bed.wait_for_log(
        "is no longer a registered agency",
        "the waiting session did not end",
    )
    .await;
    // Reading again: what was already on the wire, then the status — well
    // before the stall threshold, and not all 200.
    let mut frames = 0;
    let ended = loop {
        match inbox.next(WAIT).await {
            Ok(Some(_)) => frames += 1,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(
        frames < 200,
        "the backlog was not cut short: {frames} frames"
    );
}
