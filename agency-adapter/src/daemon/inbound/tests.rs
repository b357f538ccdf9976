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
        rejected: std::env::temp_dir().join("liandong-unused-rejected"),
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
        verifier: None,
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
async fn a_subscription_refused_as_disabled_is_reopened_not_given_up() {
    let mut refusal =
        tonic::Status::permission_denied("agency cz-psb is disabled by an operator: audit");
    refusal.metadata_mut().insert(
        liandong_core::refusal::METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(liandong_core::refusal::AGENCY_DISABLED),
    );
    let gateway = MockGateway::start(Script {
        refuse_open: Some(refusal),
        ..three()
    })
    .await;
    let (dir, store) = testing::store().await;
    let out = dir.path().join("out");
    let (stop, task) = run(
        &gateway,
        &store,
        SinkSettings::Folder(FolderSink { path: out.clone() }),
    )
    .await;
    gateway.wait_until(|seen| seen.opens.len() >= 2).await;
    stop.cancel();
    task.await.unwrap();
    let delivered = std::fs::read_dir(&out).map_or(0, |entries| entries.count());
    assert_eq!(delivered, 0, "nothing was delivered");
    assert!(gateway.seen.lock().unwrap().acks.is_empty());
    let state = &store.snapshot().await.unwrap().subscriptions[0];
    assert_eq!(
        state.last_error.as_deref(),
        Some("refused: PERMISSION_DENIED: agency cz-psb is disabled by an operator: audit")
    );
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

mod verification {
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use crate::config::daemon::{OnFailure, VerifySettings};

    use super::*;

    /// A registry publishing a key for cz-eeb, the sender of every
    /// scripted delivery, none of which is signed.
    fn verifier(dir: &std::path::Path, on_failure: OnFailure) -> Arc<Verifier> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let path = dir.join("agencies.toml");
        std::fs::write(
            &path,
            format!(
                "[[agency]]\nid = \"cz-eeb\"\nname = \"eeb\"\nrole = \"ENVIRONMENT\"\n\
                 region = \"140400\"\nclearance = \"RESTRICTED\"\n\
                 signing_public_keys = [\"{}\"]\n",
                hex::encode(pair.public_key().as_ref())
            ),
        )
        .unwrap();
        Arc::new(
            Verifier::load(&VerifySettings {
                registry: path,
                on_failure,
            })
            .unwrap(),
        )
    }

    async fn run_verified(
        gateway: &MockGateway,
        store: &Store,
        sink: SinkSettings,
        rejected: std::path::PathBuf,
        verifier: Arc<Verifier>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        prepare_rejected(&rejected).unwrap();
        let inbound = Inbound {
            store: store.clone(),
            gateway: gateway.settings.clone(),
            settings: SubscriptionSettings {
                rejected,
                ..settings(sink.clone())
            },
            sink: Arc::new(Sink::build(&sink).unwrap()),
            verifier: Some(verifier),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(inbound.run(stop.clone()));
        (stop, task)
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn rejected_deliveries_go_to_the_rejected_folder_not_the_sink_and_are_acked() {
        use std::os::unix::fs::PermissionsExt as _;
        let gateway = MockGateway::start(three()).await;
        let (dir, store) = testing::store().await;
        let out = dir.path().join("out");
        let rejected = dir.path().join("rejected").join("psb-inbox");
        let (stop, task) = run_verified(
            &gateway,
            &store,
            SinkSettings::Folder(FolderSink { path: out.clone() }),
            rejected.clone(),
            verifier(dir.path(), OnFailure::Reject),
        )
        .await;
        gateway.wait_until(|seen| seen.acks == [1, 2, 3]).await;
        stop.cancel();
        task.await.unwrap();
        assert!(names(&out).is_empty(), "nothing reached the sink");
        assert_eq!(names(&rejected).len(), 3);
        let mode = std::fs::metadata(&rejected).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file: serde_json::Value = serde_json::from_slice(
            &std::fs::read(rejected.join("psb-inbox-00000000000000000001.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(file["kind"], "rejected_delivery");
        assert_eq!(file["reason"], "notification.signature: is missing");
        assert_eq!(file["delivery"]["sequence"], 1);
        let state = &store.snapshot().await.unwrap().subscriptions[0];
        assert_eq!(
            (state.rejected, state.verified, state.failed_passed),
            (3, 0, 0)
        );
    }

    #[tokio::test]
    async fn under_warn_failures_are_counted_and_handed_to_the_sink() {
        let gateway = MockGateway::start(three()).await;
        let (dir, store) = testing::store().await;
        let out = dir.path().join("out");
        let rejected = dir.path().join("rejected").join("psb-inbox");
        let (stop, task) = run_verified(
            &gateway,
            &store,
            SinkSettings::Folder(FolderSink { path: out.clone() }),
            rejected.clone(),
            verifier(dir.path(), OnFailure::Warn),
        )
        .await;
        gateway.wait_until(|seen| seen.acks == [1, 2, 3]).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(names(&out).len(), 3);
        assert!(names(&rejected).is_empty());
        let state = &store.snapshot().await.unwrap().subscriptions[0];
        assert_eq!((state.failed_passed, state.rejected), (3, 0));
    }
}
