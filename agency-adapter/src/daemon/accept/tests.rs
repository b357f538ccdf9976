use liandong_core::signing::verify;

use crate::testing::{self, notification_json};

use super::*;

#[tokio::test]
async fn an_id_is_assigned_when_the_source_gives_none_and_kept_when_it_does() {
    let (_dir, store) = testing::store().await;
    let (acceptor, _wake, _) = testing::acceptor(&store, 10);
    let given = acceptor
        .accept_json(&notification_json(Some("psb-1"), "a"), Origin::Http)
        .await
        .unwrap();
    assert_eq!(given.notification_id, "psb-1");
    let assigned = acceptor
        .accept_json(&notification_json(None, "a"), Origin::Http)
        .await
        .unwrap();
    let suffix = assigned.notification_id.strip_prefix("cz-psb-").unwrap();
    assert_eq!(suffix.len(), 32);
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!((given.local_id, assigned.local_id), (1, 2));
    assert!(!given.duplicate && !assigned.duplicate);
}

#[tokio::test]
async fn what_is_committed_is_signed_by_the_agency_and_sent_as_it() {
    let (_dir, store) = testing::store().await;
    let (acceptor, wake, public) = testing::acceptor(&store, 10);
    acceptor
        .accept_json(&notification_json(Some("psb-1"), "a"), Origin::Send)
        .await
        .unwrap();
    // The pusher is woken.
    tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
        .await
        .unwrap();
    let row = &store.pending_after(0, 1).await.unwrap()[0];
    let sent = pb::Notification::decode(row.payload.as_slice()).unwrap();
    assert_eq!(sent.sender, "cz-psb");
    assert!(sent.signing_key_id.starts_with("cz-psb:"));
    verify(&sent, "cz-psb", &public).unwrap();
}

#[tokio::test]
async fn the_same_notification_twice_is_one_row_and_other_content_under_its_id_is_refused() {
    let (_dir, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 10);
    let first = acceptor
        .accept_json(&notification_json(Some("psb-1"), "a"), Origin::Http)
        .await
        .unwrap();
    let again = acceptor
        .accept_json(&notification_json(Some("psb-1"), "a"), Origin::Http)
        .await
        .unwrap();
    assert_eq!(again.local_id, first.local_id);
    assert!(again.duplicate);
    let err = acceptor
        .accept_json(&notification_json(Some("psb-1"), "b"), Origin::Http)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AcceptError::Conflict { local_id: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.field().as_deref(), Some("notification.notification_id"));
    assert!(err.is_input_error());
    assert_eq!(store.snapshot().await.unwrap().outbox_depth, 1);
}

#[tokio::test]
async fn bad_notifications_are_refused_naming_the_field() {
    let (_dir, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 10);
    let refused = async |text: String| acceptor.accept_json(&text, Origin::Http).await.unwrap_err();

    let err = refused(notification_json(Some("n-1"), "")).await;
    assert_eq!(err.field().as_deref(), Some("notification.summary"));
    assert_eq!(err.to_string(), "notification.summary: is required");

    let mut other_sender: serde_json::Value =
        serde_json::from_str(&notification_json(Some("n-2"), "a")).unwrap();
    other_sender["sender"] = "cz-eeb".into();
    let err = refused(other_sender.to_string()).await;
    assert_eq!(err.field().as_deref(), Some("notification.sender"));

    let mut signed: serde_json::Value =
        serde_json::from_str(&notification_json(Some("n-3"), "a")).unwrap();
    signed["signature"] = "AAAA".into();
    let err = refused(signed.to_string()).await;
    assert_eq!(err.field().as_deref(), Some("notification.signature"));

    let mut restricted: serde_json::Value =
        serde_json::from_str(&notification_json(Some("n-4"), "a")).unwrap();
    restricted["confidentiality"] = "CONFIDENTIALITY_RESTRICTED".into();
    let err = refused(restricted.to_string()).await;
    assert_eq!(err.field().as_deref(), Some("notification.recipients"));

    let err = refused("{\"summary\": 1".into()).await;
    assert!(matches!(err, AcceptError::Json(_)), "{err:?}");
    let err = refused("  ".into()).await;
    assert!(matches!(err, AcceptError::Empty));
    let err = refused("{\"colour\": \"red\"}".into()).await;
    assert!(err.to_string().contains("colour"), "{err}");
    assert_eq!(store.snapshot().await.unwrap().outbox_depth, 0);
}

#[tokio::test]
async fn too_large_and_full_are_refused_clearly() {
    let (_dir, store) = testing::store().await;
    let (signer, _) = testing::signer("cz-psb");
    let small = Acceptor::new(store.clone(), signer, 1, 1024, Arc::new(Notify::new()));
    let big = notification_json(Some("n-big"), &"长".repeat(400));
    let err = small.accept_json(&big, Origin::Http).await.unwrap_err();
    assert!(
        matches!(err, AcceptError::TooLarge { max: 1024, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("outbox.max_notification_bytes"));

    small
        .accept_json(&notification_json(Some("n-1"), "a"), Origin::Http)
        .await
        .unwrap();
    let err = small
        .accept_json(&notification_json(Some("n-2"), "a"), Origin::Http)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AcceptError::Full { pending: 1, max: 1 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "outbox full: 1 notifications are waiting for the gateway (outbox.max_pending = 1); \
         nothing was accepted, retry later"
    );
    assert!(!err.is_input_error());
}

#[tokio::test]
async fn a_drop_file_without_an_id_is_accepted_once_even_when_read_twice() {
    let (_dir, store) = testing::store().await;
    let (acceptor, _, _) = testing::acceptor(&store, 10);
    let origin = Origin::Folder {
        key: "folder:n.json:0011".into(),
    };
    let text = notification_json(None, "a");
    let first = acceptor.accept_json(&text, origin.clone()).await.unwrap();
    let second = acceptor.accept_json(&text, origin).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(second.notification_id, first.notification_id);
    assert_eq!(store.snapshot().await.unwrap().outbox_depth, 1);
}

#[tokio::test]
async fn what_is_signed_and_committed_is_the_checked_form() {
    let (_dir, store) = testing::store().await;
    let (acceptor, _, public) = testing::acceptor(&store, 10);
    let mut value: serde_json::Value =
        serde_json::from_str(&notification_json(Some("psb-1"), "a")).unwrap();
    value["confidentiality"] = "CONFIDENTIALITY_RESTRICTED".into();
    value["confidentiality_note"] = "ongoing".into();
    value["recipients"] = serde_json::json!(["cz-eeb", "cz-eeb"]);
    value["occurred_at"] = "2026-11-20T08:30:00.123456789Z".into();
    acceptor
        .accept_json(&value.to_string(), Origin::Http)
        .await
        .unwrap();
    let row = &store.pending_after(0, 1).await.unwrap()[0];
    let sent = pb::Notification::decode(row.payload.as_slice()).unwrap();
    // The checked form: recipients once each, time in microseconds.
    assert_eq!(sent.recipients, ["cz-eeb"]);
    assert_eq!(sent.occurred_at.unwrap().nanos, 123_456_000);
    verify(&sent, "cz-psb", &public).unwrap();
}
