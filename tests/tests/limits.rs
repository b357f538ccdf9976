//! Attacks on the gateway's per-agency limits and on what its answers
//! leak, each tried over real mutual TLS against the real binary: a
//! flooding agency, a thousand subscription streams, a compression bomb,
//! acknowledgements of deliveries a subscription never had, and the latest
//! sequence named in a refusal. Each test asserts the refusal and that
//! nothing changed for anyone else.

use std::time::Duration;

use futures::future::join_all;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::limits_bed::{
    audit_count, audit_reasons, grpc_frame, gzip_bomb, raw_grpc, rss_kib, stored_ids,
};
use liandong_tests::{Subscriber, Testbed, notification, publish, skip_unless_sqlite};

const WAIT: Duration = Duration::from_secs(10);

fn clue(id: &str, case_ref: &str) -> pb::Notification {
    notification(id, case_ref, Event::ClueShared, Level::Internal, &[])
}

fn request(n: pb::Notification) -> pb::PublishRequest {
    pb::PublishRequest {
        notification: Some(n),
    }
}

/// A subscription open request: `name` from the beginning, only cases
/// starting with `prefix`.
fn open(name: &str, prefix: &str) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: name.to_owned(),
        filter: Some(pb::SubscriptionFilter {
            case_ref_prefix: prefix.to_owned(),
            ..Default::default()
        }),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Beginning(true)),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn flooding_agency_is_rate_limited_and_others_are_not() {
    if skip_unless_sqlite("the limiter lives in the gateway process, whatever the store") {
        return;
    }
    let bed =
        Testbed::start_with("\n[limits]\npublish_per_second = 5\npublish_burst = 20\n").unwrap();
    // The flooder: four connections, each publishing as fast as answers
    // come, 30 each.
    let mut flooders = Vec::new();
    for c in 0..4 {
        let mut client = bed.client("cz-eeb").await;
        flooders.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..30 {
                let id = format!("flood-{c}-{i}");
                let outcome = publish(&mut client, clue(&id, "C-FLOOD")).await;
                outcomes.push((id, outcome));
            }
            outcomes
        }));
    }
    // Meanwhile the other agency publishes what it has to.
    let mut psb = bed.client("cz-psb").await;
    for i in 0..10 {
        let id = format!("steady-{i}");
        publish(&mut psb, clue(&id, "C-STEADY"))
            .await
            .unwrap_or_else(|status| panic!("cz-psb's {id} was refused: {status:?}"));
    }

    let mut accepted = Vec::new();
    let mut refused = 0;
    for flooder in flooders {
        for (id, outcome) in flooder.await.unwrap() {
            match outcome {
                Ok(_) => accepted.push(id),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{id}: {status:?}");
                    assert!(
                        status.message().starts_with(
                            "publish rate limit of 5 per second (burst 20) reached for cz-eeb; retry after ~"
                        ),
                        "{}",
                        status.message()
                    );
                    refused += 1;
                }
            }
        }
    }
    assert!(refused > 0, "120 publishes at once exceed a burst of 20");
    assert!(accepted.len() >= 20, "the whole burst is accepted");
    // What was refused was not stored; what was accepted was.
    let mut stored = stored_ids(&bed, "cz-eeb").await;
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted);
    assert_eq!(stored_ids(&bed, "cz-psb").await.len(), 10);
    // Every refusal is in the audit log, with its reason.
    let reasons = audit_reasons(&bed, "PUBLISH_REFUSED", "cz-eeb").await;
    assert_eq!(reasons.len(), refused);
    assert!(
        reasons
            .iter()
            .all(|reason| reason.contains("publish rate limit of 5 per second")),
        "{reasons:?}"
    );
    assert_eq!(audit_count(&bed, "PUBLISH_REFUSED", "cz-psb").await, 0);
}

#[tokio::test]
async fn rate_limited_publish_stores_nothing_and_stream_stays_usable() {
    if skip_unless_sqlite("the limiter lives in the gateway process, whatever the store") {
        return;
    }
    let bed =
        Testbed::start_with("\n[limits]\npublish_per_second = 5\npublish_burst = 5\n").unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let (requests, rx) = mpsc::channel(8);
    let mut receipts = eeb
        .publish_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(request(clue("stream-0", "C-1")))
        .await
        .unwrap();
    assert_eq!(
        receipts.message().await.unwrap().unwrap().notification_id,
        "stream-0"
    );

    // Unary publishes empty the bucket; the first one over is refused.
    let mut eeb_unary = bed.client("cz-eeb").await;
    let mut refused = None;
    for i in 0..50 {
        let id = format!("unary-{i}");
        if let Err(status) = publish(&mut eeb_unary, clue(&id, "C-1")).await {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            refused = Some(id);
            break;
        }
    }
    let refused = refused.expect("a bucket of 5 refuses within 50 publishes");
    assert!(!stored_ids(&bed, "cz-eeb").await.contains(&refused));
    let stored_before = bed.stored_count().await;

    // The open stream is paced, not ended: each further request is
    // answered with a receipt once its token is there.
    for i in 1..=4 {
        let id = format!("stream-{i}");
        requests.send(request(clue(&id, "C-1"))).await.unwrap();
        let receipt = tokio::time::timeout(WAIT, receipts.message())
            .await
            .expect("a paced request is answered")
            .unwrap_or_else(|status| panic!("{id}: the stream failed: {status:?}"))
            .expect("the stream is still open");
        assert_eq!(receipt.notification_id, id);
    }
    // The refused notification can be sent again: nothing was kept of it.
    requests.send(request(clue(&refused, "C-1"))).await.unwrap();
    let receipt = tokio::time::timeout(WAIT, receipts.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(receipt.notification_id, refused);
    assert!(
        !receipt.duplicate,
        "nothing was stored under {refused} before"
    );
    assert_eq!(bed.stored_count().await, stored_before + 5);
    assert_eq!(audit_count(&bed, "PUBLISH_REFUSED", "cz-eeb").await, 1);
}

#[tokio::test]
async fn one_agency_cannot_open_a_thousand_streams() {
    if skip_unless_sqlite("the stream count lives in the gateway process, whatever the store") {
        return;
    }
    const CAP: usize = 20;
    const ATTEMPTS: usize = 1000;
    let bed =
        Testbed::start_with(&format!("\n[limits]\nmax_streams_per_agency = {CAP}\n")).unwrap();
    let rss_before = rss_kib(bed.gateway.pid()).unwrap();
    // A thousand streams at once, over ten connections.
    let mut attempts = Vec::new();
    for c in 0..10 {
        let client = bed.client("cz-psb").await;
        for s in 0..ATTEMPTS / 10 {
            let mut client = client.clone();
            attempts.push(async move {
                Subscriber::open_with(&mut client, open(&format!("s-{c}-{s}"), "C-")).await
            });
        }
    }
    let outcomes = join_all(attempts).await;
    let mut open_streams = Vec::new();
    let mut refused = 0;
    for outcome in outcomes {
        match outcome {
            Ok(stream) => open_streams.push(stream),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status
                        .message()
                        .contains(&format!("limits.max_streams_per_agency ({CAP})")),
                    "{status:?}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(open_streams.len(), CAP);
    assert_eq!(refused, ATTEMPTS - CAP);
    assert_eq!(
        audit_count(&bed, "SUBSCRIBE_REFUSED", "cz-psb").await,
        (ATTEMPTS - CAP) as i64,
        "every refusal is audited"
    );
    let rss_after = rss_kib(bed.gateway.pid()).unwrap();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the gateway grew from {rss_before} KiB to {rss_after} KiB"
    );

    // Another agency still subscribes and receives.
    let mut eeb = bed.client("cz-eeb").await;
    let mut inbox = Subscriber::open_with(&mut eeb, open("inbox", "C-"))
        .await
        .expect("cz-eeb has streams of its own");
    let mut procuratorate = bed.client("cz-procuratorate").await;
    let receipt = publish(&mut procuratorate, clue("after-the-attack", "C-1"))
        .await
        .unwrap();
    let delivery = inbox.expect_delivery(WAIT, "the clue").await;
    assert_eq!(delivery.sequence, receipt.sequence);
    // The streams the cap let through work too.
    let delivery = open_streams[0].expect_delivery(WAIT, "the clue").await;
    assert_eq!(delivery.sequence, receipt.sequence);

    // A closed stream gives its slot back.
    let closed = open_streams.pop().unwrap();
    closed.close().await.unwrap();
    let mut client = bed.client("cz-psb").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Subscriber::open_with(&mut client, open("again", "C-")).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

#[tokio::test]
async fn compression_bomb_is_refused() {
    if skip_unless_sqlite("the refusal happens before any store access") {
        return;
    }
    // The bomb fits well within the message size limit: only the refusal
    // of compression stands between it and its inflation.
    let bed = Testbed::start_with("\n[limits]\nmax_message_bytes = 4194304\n").unwrap();
    let bomb = gzip_bomb(64);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let inflated_kib = 64 * (liandong_tests::limits_bed::BOMB_SEGMENT as u64) / 1024;
    let rss_before = rss_kib(bed.gateway.pid()).unwrap();

    for path in [
        "/liandong.v1.Exchange/Publish",
        "/liandong.v1.Exchange/PublishStream",
    ] {
        let answer = raw_grpc(&bed, "cz-eeb", path, Some("gzip"), grpc_frame(true, &bomb))
            .await
            .unwrap();
        assert_eq!(
            answer.grpc_status,
            Some(Code::Unimplemented as i32),
            "{path}: {answer:?}"
        );
        assert!(answer.grpc_message.contains("gzip"), "{answer:?}");
        assert_eq!(answer.body_bytes, 0, "{path}: no receipt");
    }
    // The flag set without a declared encoding is refused as well.
    let answer = raw_grpc(
        &bed,
        "cz-eeb",
        "/liandong.v1.Exchange/Publish",
        None,
        grpc_frame(true, &bomb),
    )
    .await
    .unwrap();
    assert!(
        answer
            .grpc_status
            .is_some_and(|code| code != Code::Ok as i32),
        "{answer:?}"
    );
    assert_eq!(answer.body_bytes, 0);

    let rss_after = rss_kib(bed.gateway.pid()).unwrap();
    assert!(
        rss_after < rss_before + inflated_kib / 8,
        "the gateway grew from {rss_before} KiB to {rss_after} KiB (the bomb inflates to {inflated_kib} KiB)"
    );
    assert_eq!(bed.stored_count().await, 0, "nothing stored");
    let reasons = audit_reasons(&bed, "PUBLISH_REFUSED", "cz-eeb").await;
    assert!(
        reasons.len() >= 2 && reasons.iter().take(2).all(|r| r.contains("gzip")),
        "both declared-gzip refusals are audited: {reasons:?}"
    );
    // The gateway still serves.
    let mut eeb = bed.client("cz-eeb").await;
    publish(&mut eeb, clue("after-the-bomb", "C-1"))
        .await
        .expect("an uncompressed publish is accepted");
}

#[tokio::test]
async fn acks_for_sequences_never_delivered_change_nothing() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut sequences = Vec::new();
    for i in 0..3 {
        let receipt = publish(&mut eeb, clue(&format!("n-{i}"), "C-1"))
            .await
            .unwrap();
        sequences.push(receipt.sequence);
    }
    let last = sequences[2];
    let mut psb = bed.client("cz-psb").await;
    let mut inbox = Subscriber::open_with(&mut psb, open("inbox", "C-"))
        .await
        .unwrap();
    for sequence in &sequences {
        assert_eq!(
            inbox.expect_delivery(WAIT, "a clue").await.sequence,
            *sequence
        );
    }
    // Acks naming no delivery of this subscription: below the first,
    // the next one to be stored, far beyond, the largest.
    inbox
        .ack(&[0, sequences[0] - 1, last + 1, last + 1000, u64::MAX])
        .await;
    // The next notification takes `last + 1`: acknowledged before it was
    // delivered, it is delivered all the same.
    let receipt = publish(&mut eeb, clue("n-3", "C-1")).await.unwrap();
    assert_eq!(receipt.sequence, last + 1);
    let delivery = inbox
        .expect_delivery(WAIT, "the pre-acknowledged clue")
        .await;
    assert_eq!(delivery.sequence, last + 1);
    sequences.push(last + 1);
    // Closing writes the cursor: it must not have moved.
    inbox.close().await.unwrap();
    let mut inbox = Subscriber::open_with(&mut psb, open("inbox", "C-"))
        .await
        .unwrap();
    for sequence in &sequences {
        let delivery = inbox
            .expect_delivery(WAIT, "an unacknowledged clue again")
            .await;
        assert_eq!(delivery.sequence, *sequence);
    }
}

#[tokio::test]
async fn acks_for_another_subscriptions_sequences_change_nothing() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let a = publish(&mut eeb, clue("for-a", "C-A"))
        .await
        .unwrap()
        .sequence;
    let b = publish(&mut eeb, clue("for-b", "C-B"))
        .await
        .unwrap()
        .sequence;
    let mut psb = bed.client("cz-psb").await;
    let mut procuratorate = bed.client("cz-procuratorate").await;
    // Two subscriptions of one agency, and one of another agency.
    let mut sub_a = Subscriber::open_with(&mut psb, open("sub-a", "C-A"))
        .await
        .unwrap();
    let mut sub_b = Subscriber::open_with(&mut psb, open("sub-b", "C-B"))
        .await
        .unwrap();
    let mut other = Subscriber::open_with(&mut procuratorate, open("other", "C-B"))
        .await
        .unwrap();
    assert_eq!(sub_a.expect_delivery(WAIT, "C-A's clue").await.sequence, a);
    assert_eq!(sub_b.expect_delivery(WAIT, "C-B's clue").await.sequence, b);
    assert_eq!(other.expect_delivery(WAIT, "C-B's clue").await.sequence, b);

    // sub-a's delivery acknowledged by the agency's other subscription
    // and by another agency's; sub-b's by another agency's.
    sub_b.ack(&[a]).await;
    other.ack(&[a]).await;
    // sub-a is unaffected: its delivery is still unacknowledged, so a
    // reconnect delivers it again.
    sub_a.close().await.unwrap();
    let mut sub_a = Subscriber::open_with(&mut psb, open("sub-a", "C-A"))
        .await
        .unwrap();
    assert_eq!(
        sub_a
            .expect_delivery(WAIT, "C-A's clue again")
            .await
            .sequence,
        a
    );
    // The acks moved nothing for the subscriptions that sent them either.
    sub_b.close().await.unwrap();
    other.close().await.unwrap();
    let mut sub_b = Subscriber::open_with(&mut psb, open("sub-b", "C-B"))
        .await
        .unwrap();
    assert_eq!(
        sub_b
            .expect_delivery(WAIT, "C-B's clue again")
            .await
            .sequence,
        b
    );
    let mut other = Subscriber::open_with(&mut procuratorate, open("other", "C-B"))
        .await
        .unwrap();
    assert_eq!(
        other
            .expect_delivery(WAIT, "C-B's clue again")
            .await
            .sequence,
        b
    );
    // Acknowledged by their own subscriptions, they are done.
    sub_a.ack(&[a]).await;
    sub_a.close().await.unwrap();
    let mut sub_a = Subscriber::open_with(&mut psb, open("sub-a", "C-A"))
        .await
        .unwrap();
    let marker = publish(&mut eeb, clue("marker", "C-A")).await.unwrap();
    assert_eq!(
        sub_a.expect_delivery(WAIT, "the marker").await.sequence,
        marker.sequence,
        "an acknowledgement by its own subscription is kept"
    );
}

#[tokio::test]
async fn after_sequence_refusal_does_not_reveal_the_latest_sequence() {
    if skip_unless_sqlite("the refusal's text does not depend on the store") {
        return;
    }
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    for i in 0..7 {
        publish(&mut eeb, clue(&format!("n-{i}"), "C-1"))
            .await
            .unwrap();
    }
    let mut observer = bed.client("cz-press-office").await;
    let after = |sequence| pb::SubscriptionOpen {
        name: "probe".into(),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::AfterSequence(sequence)),
        }),
        ..Default::default()
    };
    let status = Subscriber::open_with(&mut observer, after(1000))
        .await
        .err()
        .expect("a position beyond the latest is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("open.start.after_sequence"),
        "{status:?}"
    );
    assert!(
        !status.message().chars().any(|c| c.is_ascii_digit()),
        "the refusal names no number: {:?}",
        status.message()
    );
    // Just beyond the latest is refused the same way: probing one by one
    // still works, but the answer never states the count.
    let status = Subscriber::open_with(&mut observer, after(8))
        .await
        .err()
        .expect("beyond the latest");
    assert!(!status.message().chars().any(|c| c.is_ascii_digit()));
    // A position within the log is accepted.
    Subscriber::open_with(&mut observer, after(7))
        .await
        .expect("the latest itself is a valid start");
}
