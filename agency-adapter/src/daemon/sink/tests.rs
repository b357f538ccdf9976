use crate::config::daemon::FolderSink;
use crate::testing::{Webhook, delivery};

use super::*;

fn dead() -> DeadLetter {
    DeadLetter {
        local_id: 7,
        notification_id: "psb-7".into(),
        source: "http".into(),
        code: "INVALID_ARGUMENT".into(),
        reason: "notification.recipients[0]: cz-x is not a registered agency".into(),
        accepted_at: 1_795_163_400_000_000,
        dead_at: 1_795_163_401_000_000,
        reported_at: None,
    }
}

#[test]
fn envelopes_say_what_they_carry() {
    let item = Item::delivery("psb-inbox", &delivery(42, "CZ-1"));
    assert_eq!(item.file_name, "psb-inbox-00000000000000000042.json");
    assert_eq!(item.notification_id, "n-42");
    assert_eq!(item.body["kind"], "delivery");
    assert_eq!(item.body["subscription"], "psb-inbox");
    assert_eq!(item.body["delivery"], to_json(&delivery(42, "CZ-1")));

    let item = Item::dead_letter(&dead());
    assert_eq!(item.file_name, "dead-letter-00000000000000000007.json");
    assert_eq!(
        item.body,
        json!({"kind": "dead_letter", "dead_letter": {
            "local_id": 7, "notification_id": "psb-7", "source": "http",
            "code": "INVALID_ARGUMENT",
            "reason": "notification.recipients[0]: cz-x is not a registered agency",
            "accepted_at": "2026-11-20T08:30:00Z", "dead_at": "2026-11-20T08:30:01Z"}})
    );
}

#[tokio::test]
async fn the_folder_sink_writes_one_complete_file_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let sink = Sink::build(&SinkSettings::Folder(FolderSink { path: path.clone() })).unwrap();
    let item = Item::delivery("inbox", &delivery(3, "CZ-1"));
    sink.hand(&item).await.unwrap();
    sink.hand(&item).await.unwrap();
    let names: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["inbox-00000000000000000003.json"]);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join(&names[0])).unwrap()).unwrap();
    assert_eq!(written, item.body);
}

#[tokio::test]
async fn a_webhook_succeeds_only_on_2xx() {
    let webhook = Webhook::start(204).await;
    let sink = Sink::build(&SinkSettings::Webhook(webhook.settings())).unwrap();
    let item = Item::delivery("inbox", &delivery(5, "CZ-1"));
    sink.hand(&item).await.unwrap();
    webhook.answer(500);
    let err = sink.hand(&item).await.unwrap_err();
    assert!(matches!(err, SinkError::Refused { status: 500 }), "{err:?}");
    webhook.answer(302);
    assert!(matches!(
        sink.hand(&item).await,
        Err(SinkError::Refused { status: 302 })
    ));
    let hooks = webhook.hooks();
    assert_eq!(hooks.len(), 3);
    let first = &hooks[0];
    assert_eq!(first.body, item.body);
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.headers["liandong-kind"], "delivery");
    assert_eq!(first.headers["liandong-subscription"], "inbox");
    assert_eq!(first.headers["liandong-sequence"], "5");
    assert_eq!(first.headers["liandong-notification-id"], "n-5");
    assert_eq!(first.headers["authorization"], "Bearer s3cret");

    // Nobody listening: unreachable, and the message names no secret.
    let mut settings = webhook.settings();
    settings.url = "http://127.0.0.1:1/hook".into();
    let sink = Sink::build(&SinkSettings::Webhook(settings)).unwrap();
    let err = sink.hand(&item).await.unwrap_err();
    assert!(matches!(err, SinkError::Unreachable(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret"));
}

#[tokio::test]
async fn a_bad_webhook_ca_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let webhook = Webhook::start(200).await;
    let mut settings = webhook.settings();
    settings.ca = Some(ca);
    let err = Sink::build(&SinkSettings::Webhook(settings)).unwrap_err();
    assert!(matches!(err, SinkError::Setup(_)), "{err:?}");
}

#[tokio::test]
async fn dead_letters_are_reported_once_each() {
    let (_dir, store) = crate::testing::store().await;
    let webhook = Webhook::start(503).await;
    let sink = Arc::new(Sink::build(&SinkSettings::Webhook(webhook.settings())).unwrap());
    for (id, local) in [("d-1", 1), ("d-2", 2)] {
        store
            .accept(
                crate::store::NewRow {
                    notification_id: id.into(),
                    source_key: None,
                    source: "http",
                    content_hash: "h".into(),
                    payload: vec![],
                },
                10,
            )
            .await
            .unwrap();
        store
            .dead_letter_row(local, "FAILED_PRECONDITION", "reused id")
            .await
            .unwrap();
    }
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let task = tokio::spawn(report_dead_letters(store.clone(), sink, wake, stop.clone()));
    crate::testing::eventually("the webhook was tried again", || async {
        webhook.hooks().len() >= 3
    })
    .await;
    assert_eq!(store.unreported_dead_letters(10).await.unwrap().len(), 2);
    webhook.answer(200);
    crate::testing::eventually("both are reported", || async {
        store.unreported_dead_letters(10).await.unwrap().is_empty()
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let accepted: Vec<_> = webhook
        .hooks()
        .into_iter()
        .filter(|h| h.answered == 200)
        .map(|h| {
            h.body["dead_letter"]["notification_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(accepted, ["d-1", "d-2"]);
}
