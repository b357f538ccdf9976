use liandong_core::domain::AgencyId;

use super::*;

fn answer(error: impl Into<ApiError>) -> (Code, String) {
    let status = Status::from(error.into());
    (status.code(), status.message().to_owned())
}

#[test]
fn every_session_ending_keeps_its_code_and_text() {
    let agency = AgencyId::parse("agency", "cz-psb").unwrap();
    let cases = [
        (
            SessionEnd::Replaced,
            Code::Aborted,
            "the subscription was opened by a newer connection",
        ),
        (
            SessionEnd::ShuttingDown,
            Code::Unavailable,
            "the gateway is shutting down; reconnect to resume",
        ),
        (
            SessionEnd::Stalled { seconds: 30 },
            Code::Unavailable,
            "no delivery could be sent for 30 s: the subscriber stopped reading; reconnect to resume after the last acknowledgement",
        ),
        (
            SessionEnd::ReaderReregistered {
                agency: agency.clone(),
            },
            Code::PermissionDenied,
            "cz-psb is registered with another certificate identity since the registry was reloaded; this stream is closed",
        ),
        (
            SessionEnd::ReaderRemoved { agency },
            Code::PermissionDenied,
            "cz-psb is no longer a registered agency since the registry was reloaded; this stream is closed",
        ),
        (
            SessionEnd::SubscriptionCap {
                owner: "cz-psb".into(),
                count: 3,
                cap: 3,
            },
            Code::ResourceExhausted,
            "cz-psb has 3 subscriptions, the most limits.max_subscriptions_per_agency (3) allows; reuse one of them",
        ),
        (
            SessionEnd::StreamCap {
                owner: "cz-psb".into(),
                open: 2,
                cap: 2,
            },
            Code::ResourceExhausted,
            "cz-psb has 2 subscription streams open, the most limits.max_streams_per_agency (2) allows; close one first",
        ),
        (
            SessionEnd::BadRequest(FieldError::new("request", "carries neither open nor ack")),
            Code::InvalidArgument,
            "request: carries neither open nor ack",
        ),
        (
            SessionEnd::FilterConflict {
                name: "inbox".into(),
            },
            Code::FailedPrecondition,
            "subscription inbox exists with another filter; open it with its own filter or use a new name",
        ),
    ];
    for (end, code, text) in cases {
        assert_eq!(answer(end), (code, text.to_owned()));
    }
}

#[test]
fn a_bad_signature_is_forbidden_and_a_malformed_one_names_its_field() {
    let invalid = SignatureError::Invalid {
        key_id: "k1".into(),
    };
    assert_eq!(
        answer(invalid.clone()),
        (
            Code::PermissionDenied,
            "notification.signature: does not verify with the key k1".to_owned()
        )
    );
    assert_eq!(
        ApiError::from(invalid).to_string(),
        "permission denied: notification.signature: does not verify with the key k1",
        "the audit log's reason"
    );
    let key_id = SignatureError::KeyId {
        found: "a: b".into(),
        expected: "k1".into(),
    };
    assert_eq!(
        answer(key_id.clone()),
        (Code::InvalidArgument, key_id.to_string())
    );
    assert_eq!(
        answer(SignatureError::Missing),
        (
            Code::InvalidArgument,
            "notification.signature: is missing".to_owned()
        )
    );
    assert_eq!(
        ApiError::from(SignatureError::Length(3)).refusal_code(),
        Some("INVALID_ARGUMENT")
    );
}

#[test]
fn an_unknown_caller_is_unauthenticated_with_the_reason() {
    assert_eq!(
        answer(IdentityError::NotOneUri),
        (
            Code::Unauthenticated,
            "the certificate must carry exactly one SAN URI".to_owned()
        )
    );
    assert_eq!(
        ApiError::from(IdentityError::NoPeer).to_string(),
        "unauthenticated: no verified client certificate"
    );
}

#[test]
fn a_store_failure_never_reaches_the_caller_as_text() {
    let cause = StoreError::Corrupt("SELECT secret FROM /var/lib/liandong/gateway.db".into());
    let (code, message) = answer(cause);
    assert_eq!(code, Code::Unavailable);
    assert!(!message.contains("SELECT"), "{message}");
    assert!(!message.contains("/var/lib"), "{message}");
    assert_eq!(
        ApiError::from(StoreError::Closed).refusal_code(),
        None,
        "a failure, not a refusal"
    );
}

#[test]
fn only_refusals_have_a_refusal_code() {
    assert_eq!(
        ApiError::Session(SessionEnd::Replaced).refusal_code(),
        None,
        "ABORTED is not a refusal"
    );
    assert_eq!(
        ApiError::Session(SessionEnd::ShuttingDown).refusal_code(),
        None
    );
    assert_eq!(
        ApiError::NotFound("x".into()).refusal_code(),
        Some("NOT_FOUND")
    );
    assert_eq!(
        ApiError::from(FieldError::new("case_ref", "is required")).refusal_code(),
        Some("INVALID_ARGUMENT")
    );
}
