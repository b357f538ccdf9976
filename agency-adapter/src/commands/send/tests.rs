use crate::error::exit;
use crate::testing::{MockGateway, Script};

use super::*;

const NOTIFICATION: &str = r#"{
    "notification_id": "psb-2026-0001",
    "case_ref": "CZ-2026-HW-0042",
    "event": "EVENT_TYPE_CASE_FILED",
    "confidentiality": "CONFIDENTIALITY_INTERNAL",
    "region": "140423",
    "occurred_at": "2026-11-20T08:30:00Z",
    "summary": "立案"
}"#;

#[test]
fn a_notification_in_the_json_form_parses() {
    let n = parse_notification("n.json", NOTIFICATION).unwrap();
    assert_eq!(n.notification_id, "psb-2026-0001");
    assert_eq!(n.event, pb::EventType::CaseFiled as i32);
    assert_eq!(n.occurred_at.unwrap().seconds, 1_795_163_400);
}

#[test]
fn bad_input_is_refused_naming_the_origin_and_the_problem() {
    let err = parse_notification("n.json", r#"{"case_reff": "x"}"#).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("n.json: invalid liandong.v1.Notification JSON"),
        "{message}"
    );
    assert!(message.contains("case_reff"), "{message}");

    let err = parse_notification("stdin", "{\"summary\": ").unwrap_err();
    assert!(matches!(err, InputError::Json { .. }), "{err:?}");

    let err = parse_notification("stdin", &format!("{NOTIFICATION}\n{NOTIFICATION}")).unwrap_err();
    assert!(
        matches!(err, InputError::Json { .. }),
        "two notifications: {err:?}"
    );

    let err = parse_notification("stdin", " \n").unwrap_err();
    assert!(matches!(err, InputError::Empty { .. }), "{err:?}");
    assert_eq!(CommandError::from(err).exit_code(), exit::DATA);
}

#[test]
fn a_file_is_read_and_an_unreadable_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.json");
    std::fs::write(&path, NOTIFICATION).unwrap();
    assert_eq!(
        read_notification(Some(&path)).unwrap().case_ref,
        "CZ-2026-HW-0042"
    );
    let absent = dir.path().join("absent.json");
    let err = read_notification(Some(&absent)).unwrap_err();
    assert!(matches!(err, InputError::Read { .. }));
    assert!(
        err.to_string().starts_with(&absent.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn publishing_prints_the_receipt_as_one_json_line() {
    let gateway = MockGateway::start(Script::default()).await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let notification = parse_notification("n.json", NOTIFICATION).unwrap();
    let mut out = Vec::new();
    let receipt = publish_one(&mut client, notification.clone(), &mut out)
        .await
        .unwrap();
    assert_eq!(receipt.sequence, 42);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches('\n').count(), 1);
    assert!(text.ends_with('\n'));
    let line: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        line,
        serde_json::json!({
            "notification_id": "psb-2026-0001",
            "sequence": 42,
            "received_at": "2026-11-20T08:30:00Z",
        })
    );
    assert_eq!(gateway.seen.lock().unwrap().published, vec![notification]);
}

#[tokio::test]
async fn a_refused_publish_prints_nothing_and_exits_1() {
    let gateway = MockGateway::start(Script {
        refuse_publish: Some(tonic::Status::permission_denied("sender is not cz-psb")),
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let notification = parse_notification("n.json", NOTIFICATION).unwrap();
    let mut out = Vec::new();
    let err = publish_one(&mut client, notification, &mut out)
        .await
        .unwrap_err();
    assert!(out.is_empty());
    assert_eq!(err.exit_code(), exit::REFUSED);
    assert_eq!(
        err.message(),
        "refused: PERMISSION_DENIED: sender is not cz-psb"
    );
}

#[tokio::test]
async fn send_reads_the_input_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "not json").unwrap();
    // Nothing listens at this address: bad input must fail first.
    let gateway = MockGateway::start(Script::default()).await;
    let mut settings = gateway.settings.clone();
    settings.url = "https://127.0.0.1:1".into();
    let err = send(&settings, Some(&path)).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::DATA, "{err:?}");
}
