//! Publishing and delivery over real mutual TLS against the real gateway.

use std::time::Duration;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{
    Subscriber, Testbed, notification, publish, publish_clues, skip_unless_postgres,
};
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn published_notification_is_delivered_to_a_subscriber() {
    let bed = Testbed::start().unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();

    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let sent = notification(
        "xy-1",
        "CZ-2026-HW-0042",
        Event::ClueShared,
        Level::Internal,
        &[],
    );
    let receipt = publish(&mut eeb, sent.clone()).await.unwrap();
    assert_eq!(receipt.notification_id, "xy-1");
    assert!(!receipt.duplicate);

    let delivered = inbox.take_acked(1, WAIT).await.remove(0);
    assert_eq!(delivered.sequence, receipt.sequence);
    assert_eq!(delivered.sender, "cz-eeb-xiangyuan");
    assert_eq!(delivered.received_at, receipt.received_at);
    assert_eq!(delivered.attempt, 1);
    assert!(!delivered.withheld);
    let got = delivered.notification.unwrap();
    assert_eq!(got.summary, sent.summary);
    assert_eq!(
        got.sender, "cz-eeb-xiangyuan",
        "the gateway fills in the proven sender"
    );
}

#[tokio::test]
async fn subscriber_resumes_after_disconnect_without_loss_or_reorder() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "n", "C-1", 0..10).await;
    let mut police = bed.client("cz-psb").await;
    let mut first = Subscriber::open(&mut police, "resume").await.unwrap();
    let got = first.take_acked(4, WAIT).await;
    // Received but not acknowledged: it must come again after the resume.
    let unacked = first.expect_delivery(WAIT, "sequence 5").await;
    assert_eq!(unacked.sequence, 5);
    first.close().await.unwrap();
    // Published while the subscriber is away.
    publish_clues(&mut eeb, "n", "C-1", 10..15).await;
    let mut police = bed.client("cz-psb").await;
    let mut second = Subscriber::open(&mut police, "resume").await.unwrap();
    let rest = second.take_acked(11, WAIT).await;
    let sequences: Vec<u64> = got.iter().chain(&rest).map(|d| d.sequence).collect();
    assert_eq!(sequences, (1..=15).collect::<Vec<_>>());
    // Nothing beyond the 15, and the stream still open: a marker published
    // now is the very next delivery.
    publish_clues(&mut eeb, "marker", "C-1", 0..1).await;
    let next = second.expect_delivery(WAIT, "the marker").await;
    assert_eq!(
        (
            next.sequence,
            next.notification.unwrap().notification_id.as_str()
        ),
        (16, "marker0")
    );
}

#[tokio::test]
async fn abrupt_disconnect_redelivers_from_the_oldest_unconfirmed_in_order() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "n", "C-1", 0..12).await;
    let mut police = bed.client("cz-psb").await;
    let mut first = Subscriber::open(&mut police, "abrupt").await.unwrap();
    first.take_acked(6, WAIT).await;
    // Dropped without closing: acknowledgements still in transit may be
    // lost, so some of 1..=6 may come again, but nothing may be skipped.
    drop(first);
    let mut police = bed.client("cz-psb").await;
    let mut second = Subscriber::open(&mut police, "abrupt").await.unwrap();
    let first_again = second
        .expect_delivery(WAIT, "the oldest unconfirmed delivery")
        .await;
    assert!(
        first_again.sequence <= 7,
        "resumed at {}",
        first_again.sequence
    );
    second.ack(&[first_again.sequence]).await;
    let rest = second
        .take_acked((12 - first_again.sequence) as usize, WAIT)
        .await;
    let sequences: Vec<u64> = std::iter::once(first_again.sequence)
        .chain(rest.iter().map(|d| d.sequence))
        .collect();
    assert_eq!(sequences, (first_again.sequence..=12).collect::<Vec<_>>());
}

#[tokio::test]
async fn unacknowledged_delivery_is_redelivered_after_the_ack_timeout() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification("n1", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let mut police = bed.client("cz-psb").await;
    let mut sub = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "slow".into(),
            ack_timeout_seconds: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = sub.expect_delivery(WAIT, "the first attempt").await;
    assert_eq!(first.attempt, 1);
    let again = sub.expect_delivery(WAIT, "the redelivery").await;
    assert_eq!((again.sequence, again.attempt), (first.sequence, 2));
    sub.ack(&[again.sequence]).await;
    // Only time shows that no third attempt comes: wait past the ack
    // timeout, the stream staying open.
    sub.expect_silence(Duration::from_millis(1500), "acked: no third attempt")
        .await;
}

#[tokio::test]
async fn identical_republish_returns_the_same_receipt_and_stores_one_row() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let n = notification(
        "dup-1",
        "C-1",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb"],
    );
    let first = publish(&mut eeb, n.clone()).await.unwrap();
    let again = publish(&mut eeb, n).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.sequence, again.received_at),
        (first.sequence, first.received_at)
    );
    assert_eq!(bed.stored_count().await, 1);
}

#[tokio::test]
async fn changed_republish_is_refused_and_stores_nothing() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let n = notification(
        "dup-1",
        "C-1",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb"],
    );
    publish(&mut eeb, n.clone()).await.unwrap();
    let mut changed = n;
    changed.summary = "another summary".into();
    let status = publish(&mut eeb, changed).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("dup-1"), "{}", status.message());
    assert_eq!(bed.stored_count().await, 1);
}

#[tokio::test]
async fn publish_stream_answers_one_receipt_per_request_in_order() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let requests: Vec<pb::PublishRequest> = (0..50)
        .map(|i| pb::PublishRequest {
            notification: Some(notification(
                &format!("s{i}"),
                "C-9",
                Event::PenaltyDecided,
                Level::Internal,
                &[],
            )),
        })
        .collect();
    let mut receipts = eeb
        .publish_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(receipt) = receipts.next().await {
        let receipt = receipt.unwrap();
        ids.push((receipt.notification_id, receipt.sequence));
    }
    let expected: Vec<(String, u64)> = (0..50).map(|i| (format!("s{i}"), i + 1)).collect();
    assert_eq!(ids, expected);
}

/// A pipelined stream whose sixth request is refused by the store (its id
/// was used for other content): the five receipts before it, in order,
/// then its status; what was queued after it is stored at most once, in
/// request order, and republishing it answers with the original receipts.
#[tokio::test]
async fn publish_stream_refused_in_the_store_mid_pipeline_loses_and_reorders_nothing() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let clue = |id: &str| notification(id, "C-9", Event::PenaltyDecided, Level::Internal, &[]);
    let mut reused = clue("s2");
    reused.summary = "other content under a used id".into();
    let mut requests: Vec<pb::Notification> = (0..5).map(|i| clue(&format!("s{i}"))).collect();
    requests.push(reused);
    requests.extend((5..40).map(|i| clue(&format!("s{i}"))));
    let mut receipts = eeb
        .publish_stream(tokio_stream::iter(requests.into_iter().map(|n| {
            pb::PublishRequest {
                notification: Some(n),
            }
        })))
        .await
        .unwrap()
        .into_inner();
    let mut answered = Vec::new();
    let status = loop {
        match receipts
            .next()
            .await
            .expect("the stream ends with the refusal")
        {
            Ok(receipt) => answered.push((receipt.notification_id, receipt.sequence)),
            Err(status) => break status,
        }
    };
    let expected: Vec<(String, u64)> = (0..5).map(|i| (format!("s{i}"), i + 1)).collect();
    assert_eq!(answered, expected);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("s2"), "{}", status.message());
    assert!(receipts.next().await.is_none(), "nothing after the refusal");
    // Whatever was queued after the refusal was stored once, in request
    // order; republished, each gets its original receipt or a new one
    // after them.
    let mut sequences = Vec::new();
    for i in 5..40 {
        let receipt = publish(&mut eeb, clue(&format!("s{i}"))).await.unwrap();
        sequences.push((receipt.duplicate, receipt.sequence));
    }
    let duplicates = sequences
        .iter()
        .take_while(|(duplicate, _)| *duplicate)
        .count();
    assert!(
        sequences[duplicates..]
            .iter()
            .all(|(duplicate, _)| !duplicate),
        "stored in request order: {sequences:?}"
    );
    let all: Vec<u64> = sequences.iter().map(|(_, sequence)| *sequence).collect();
    assert_eq!(all, (6..41).collect::<Vec<u64>>(), "no gap, no reorder");
    assert_eq!(bed.stored_count().await, 40);
}

#[tokio::test]
async fn publish_stream_stops_at_the_first_refusal_keeping_earlier_receipts() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut bad = notification("s1", "C-9", Event::PenaltyDecided, Level::Internal, &[]);
    bad.summary.clear();
    let requests = vec![
        pb::PublishRequest {
            notification: Some(notification(
                "s0",
                "C-9",
                Event::PenaltyDecided,
                Level::Internal,
                &[],
            )),
        },
        pb::PublishRequest {
            notification: Some(bad),
        },
        pb::PublishRequest {
            notification: Some(notification(
                "s2",
                "C-9",
                Event::PenaltyDecided,
                Level::Internal,
                &[],
            )),
        },
    ];
    let mut receipts = eeb
        .publish_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        receipts.next().await.unwrap().unwrap().notification_id,
        "s0"
    );
    let status = receipts.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("notification.summary"),
        "{}",
        status.message()
    );
    assert_eq!(bed.stored_count().await, 1);
}

#[tokio::test]
async fn filters_select_by_event_case_prefix_sender_and_region() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    let mut other = bed.client("cz-eeb-luzhou").await;
    publish(
        &mut eeb,
        notification("a", "XY-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    publish(
        &mut eeb,
        notification("b", "XY-2", Event::PenaltyDecided, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let mut elsewhere = notification("c", "XY-3", Event::PenaltyDecided, Level::Internal, &[]);
    elsewhere.region = "140403".into();
    publish(&mut other, elsewhere).await.unwrap();
    publish(
        &mut eeb,
        notification("d", "LZ-1", Event::PenaltyDecided, Level::Internal, &[]),
    )
    .await
    .unwrap();

    let mut police = bed.client("cz-psb").await;
    let filter = pb::SubscriptionFilter {
        events: vec![Event::PenaltyDecided as i32],
        case_ref_prefix: "XY-".into(),
        senders: vec![],
        regions: vec!["140400".into()],
    };
    let mut sub = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "penalties".into(),
            filter: Some(filter.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let got: Vec<String> = sub
        .take_acked(2, WAIT)
        .await
        .into_iter()
        .map(|d| d.notification.unwrap().notification_id)
        .collect();
    assert_eq!(got, vec!["b", "c"]);
    // "d" (another case prefix) is not delivered: a matching marker
    // published now is the very next delivery.
    publish(
        &mut eeb,
        notification("e", "XY-4", Event::PenaltyDecided, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let next = sub.expect_delivery(WAIT, "the marker").await;
    assert_eq!(next.notification.unwrap().notification_id, "e");
    drop(sub);

    // The same name with another filter is refused; with its own it resumes.
    let mut changed = filter.clone();
    changed.senders = vec!["cz-eeb-xiangyuan".into()];
    let err = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "penalties".into(),
            filter: Some(changed),
            ..Default::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let by_sender = pb::SubscriptionFilter {
        senders: vec!["cz-eeb-luzhou".into()],
        ..Default::default()
    };
    let mut sub = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "luzhou".into(),
            filter: Some(by_sender),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sub.take_acked(1, WAIT).await[0]
            .notification
            .as_ref()
            .unwrap()
            .notification_id,
        "c"
    );
}

#[tokio::test]
async fn start_now_skips_the_backlog_and_after_sequence_starts_there() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "n", "C-1", 0..3).await;
    let mut police = bed.client("cz-psb").await;
    let now = pb::StartPosition {
        position: Some(pb::start_position::Position::Now(true)),
    };
    let mut live = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "live".into(),
            start: Some(now),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let after = pb::StartPosition {
        position: Some(pb::start_position::Position::AfterSequence(2)),
    };
    let mut tail = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "tail".into(),
            start: Some(after),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    publish(
        &mut eeb,
        notification("n3", "C-1", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    assert_eq!(live.take_acked(1, WAIT).await[0].sequence, 4);
    let tail: Vec<u64> = tail
        .take_acked(2, WAIT)
        .await
        .iter()
        .map(|d| d.sequence)
        .collect();
    assert_eq!(tail, vec![3, 4]);
}

#[tokio::test]
async fn get_case_returns_the_timeline_the_caller_may_see() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    publish(
        &mut eeb,
        notification("a", "CASE-7", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    publish(
        &mut eeb,
        notification(
            "b",
            "CASE-7",
            Event::CaseTransferred,
            Level::Restricted,
            &["cz-psb-xiangyuan"],
        ),
    )
    .await
    .unwrap();
    let mut police = bed.client("cz-psb-xiangyuan").await;
    let view = police
        .get_case(pb::GetCaseRequest {
            case_ref: "CASE-7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(view.timeline.len(), 2);
    let mut outsider = bed.client("cz-eeb-luzhou").await;
    let view = outsider
        .get_case(pb::GetCaseRequest {
            case_ref: "CASE-7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = view
        .timeline
        .iter()
        .map(|d| d.notification.as_ref().unwrap().notification_id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["a"],
        "the restricted transfer is not in an outsider's timeline"
    );
    let missing = police
        .get_case(pb::GetCaseRequest {
            case_ref: "CASE-404".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_newer_connection_takes_over_a_subscription() {
    let bed = Testbed::start().unwrap();
    let mut police = bed.client("cz-psb").await;
    let mut old = Subscriber::open(&mut police, "inbox").await.unwrap();
    let mut police2 = bed.client("cz-psb").await;
    let mut new = Subscriber::open(&mut police2, "inbox").await.unwrap();
    let ended = old.expect_failure(WAIT, "taken over").await;
    assert_eq!(ended.code(), tonic::Code::Aborted);
    let mut eeb = bed.client("cz-eeb").await;
    publish(
        &mut eeb,
        notification("n", "C", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    assert_eq!(new.take_acked(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn replicas_on_one_database_give_distinct_gap_free_sequences_and_deliver_all() {
    if skip_unless_postgres("several gateway replicas share one PostgreSQL database") {
        return;
    }
    let bed = Testbed::start().unwrap();
    let replica = bed.start_replica("b").unwrap();
    let mut police = bed.client_of(&replica, "cz-psb").await;
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();

    // Both replicas publish at once: the publish lock spans them.
    let mut publishers = Vec::new();
    for (name, client) in [
        ("a", bed.client("cz-eeb").await),
        ("b", bed.client_of(&replica, "cz-eeb").await),
    ] {
        let mut client = client;
        publishers.push(tokio::spawn(async move {
            publish_clues(&mut client, &format!("{name}-"), "C-REPLICAS", 0..20).await
        }));
    }
    let mut sequences = Vec::new();
    for publisher in publishers {
        sequences.extend(publisher.await.unwrap().iter().map(|r| r.sequence));
    }
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=40).collect::<Vec<u64>>(),
        "one sequence per receipt, none reused, none skipped"
    );
    assert_eq!(bed.stored_count().await, 40);

    // A subscriber on one replica receives what both stored, in order.
    let delivered: Vec<u64> = inbox
        .take_acked(40, WAIT)
        .await
        .iter()
        .map(|d| d.sequence)
        .collect();
    assert_eq!(delivered, (1..=40).collect::<Vec<u64>>());
}
