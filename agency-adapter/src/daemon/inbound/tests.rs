use liandong_core::subscription::{Start, SubscriptionFilter};

use crate::config::daemon::{FolderSink, SinkSettings};
use crate::testing::{self, MockGateway, Script, Webhook, delivery, eventually};

use super::*;

fn settings(sink: SinkSettings) -> SubscriptionSettings {
    SubscriptionSettings {
        name: "psb-inbox".parse().unwrap(),
        filter: SubscriptionFilter::default(),
        start: Start::Beginning,
        max_in_flight: 0,
        ack_timeout_seconds: 0,
        sink,
    }
}

fn three() -> Script {
    Script {
        deliveries: vec![
            delivery(1, "CZ-1"),
            delivery(2, "CZ-2"),
            delivery(3, "CZ-3"),
        ],
        ..Script::default()
    }
}

async fn run(
    gateway: &MockGateway,
    store: &Store,
    sink: SinkSettings,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let inbound = Inbound {
        store: store.clone(),
        gateway: gateway.settings.clone(),
        settings: settings(sink.clone()),
        sink: Arc::new(Sink::build(&sink).unwrap()),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(inbound.run(stop.clone()));
    (stop, task)
}

#[tokio::test]
async fn each_delivery_is_handed_to_the_sink_then_acknowledged() {
    let gateway = MockGateway::start(three()).await;
    let (dir, store) = testing::store().await;
    let out = dir.path().join("out");
    let (stop, task) = run(
        &gateway,
        &store,
        SinkSettings::Folder(FolderSink { path: out.clone() }),
    )
    .await;
    gateway.wait_until(|seen| seen.acks == [1, 2, 3]).await;
    stop.cancel();
    task.await.unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "psb-inbox-00000000000000000001.json",
            "psb-inbox-00000000000000000002.json",
            "psb-inbox-00000000000000000003.json"
        ]
    );
    let state = &store.snapshot().await.unwrap().subscriptions[0];
    assert_eq!(
        (state.name.as_str(), state.last_acked_sequence),
        ("psb-inbox", Some(3))
    );
    assert!(
        store
            .is_handled("psb-inbox", 2, "cz-eeb", "n-2")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn deliveries_already_handed_over_are_acknowledged_without_handing_them_again() {
    let gateway = MockGateway::start(three()).await;
    let (_dir, store) = testing::store().await;
    store.ensure_subscription("psb-inbox").await.unwrap();
    // Sequence 1 was handed over before a reconnect; n-3 came earlier under
    // another sequence.
    store
        .record_handled("psb-inbox", 1, "cz-eeb", "n-1")
        .await
        .unwrap();
    store
        .record_handled("psb-inbox", 99, "cz-eeb", "n-3")
        .await
        .unwrap();
    let webhook = Webhook::start(200).await;
    let (stop, task) = run(&gateway, &store, SinkSettings::Webhook(webhook.settings())).await;
    gateway.wait_until(|seen| seen.acks == [1, 2, 3]).await;
    stop.cancel();
    task.await.unwrap();
    let handed: Vec<_> = webhook
        .hooks()
        .iter()
        .map(|h| h.body["delivery"]["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(handed, [2]);
}

#[tokio::test]
async fn a_failing_webhook_means_no_acknowledgement() {
    let gateway = MockGateway::start(three()).await;
    let (_dir, store) = testing::store().await;
    let webhook = Webhook::start(500).await;
    let (stop, task) = run(&gateway, &store, SinkSettings::Webhook(webhook.settings())).await;
    eventually("the webhook was retried", || async {
        webhook.hooks().len() >= 3
    })
    .await;
    let state = store.snapshot().await.unwrap().subscriptions[0].clone();
    assert!(state.failing_since.is_some());
    assert_eq!(state.last_error.as_deref(), Some("webhook answered 500"));
    assert_eq!(state.last_acked_sequence, None);
    assert!(gateway.seen.lock().unwrap().acks.is_empty());
    // Every attempt was the first delivery: nothing is skipped.
    assert!(
        webhook
            .hooks()
            .iter()
            .all(|h| h.body["delivery"]["sequence"] == 1)
    );

    webhook.answer(200);
    gateway.wait_until(|seen| seen.acks == [1, 2, 3]).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        store.snapshot().await.unwrap().subscriptions[0].failing_since,
        None
    );
}
