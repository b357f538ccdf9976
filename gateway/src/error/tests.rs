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
fn signature_refusals_are_unauthenticated_and_another_agencys_key_is_forbidden() {
    let invalid = SignatureError::Invalid {
        key_id: "cz-eeb:0011223344556677".into(),
    };
    assert_eq!(
        answer(invalid.clone()),
        (
            Code::Unauthenticated,
            "notification.signature: does not verify with the key cz-eeb:0011223344556677"
                .to_owned()
        )
    );
    assert_eq!(
        ApiError::from(invalid).to_string(),
        "unauthenticated: notification.signature: does not verify with the key cz-eeb:0011223344556677",
        "the audit log's reason"
    );
    let other = SignatureError::OtherAgencysKey {
        agency: "cz-eeb".into(),
        owner: "cz-psb".into(),
    };
    assert_eq!(
        answer(other.clone()),
        (
            Code::PermissionDenied,
            "notification.signing_key_id: names a key registered for cz-psb, not for cz-eeb"
                .to_owned()
        )
    );
    assert_eq!(
        ApiError::from(other).refusal_code(),
        Some("PERMISSION_DENIED")
    );
    for error in [
        SignatureError::Missing,
        SignatureError::Length(3),
        SignatureError::NoKeyRegistered {
            agency: "cz-eeb".into(),
        },
        SignatureError::UnknownKeyId {
            agency: "cz-eeb".into(),
        },
    ] {
        assert_eq!(
            ApiError::from(error).refusal_code(),
            Some("UNAUTHENTICATED")
        );
    }
    assert_eq!(
        answer(SignatureError::NoKeyRegistered {
            agency: "cz-eeb".into()
        }),
        (
            Code::Unauthenticated,
            "notification.signature: no signing key registered for cz-eeb".to_owned()
        )
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

fn disabled() -> DisabledAgency {
    DisabledAgency {
        agency: "cz-eeb".into(),
        reason: "signing key compromised".into(),
        disabled_by: "cz-ops".into(),
        disabled_at: 0,
    }
}

#[test]
fn a_disabled_agency_is_refused_permission_denied_marked_for_retry() {
    let status = Status::from(ApiError::AgencyDisabled(disabled()));
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "agency cz-eeb is disabled by an operator: signing key compromised"
    );
    assert_eq!(
        status
            .metadata()
            .get(liandong_core::refusal::METADATA_KEY)
            .map(|value| value.as_bytes().to_vec()),
        Some(b"agency-disabled".to_vec())
    );
    assert_eq!(
        ApiError::AgencyDisabled(disabled()).to_string(),
        "permission denied: agency cz-eeb is disabled by an operator: signing key compromised",
        "the audit log's reason"
    );
    assert_eq!(
        ApiError::AgencyDisabled(disabled()).refusal_code(),
        Some("PERMISSION_DENIED")
    );
}

#[test]
fn a_session_ended_by_a_disablement_is_the_same_marked_refusal() {
    let error = ApiError::from(SessionEnd::ReaderDisabled(disabled()));
    assert!(matches!(error, ApiError::AgencyDisabled(_)), "{error:?}");
    let status = Status::from(error);
    assert!(liandong_core::refusal::is_agency_disabled(&status));
    assert_eq!(
        status.message(),
        "agency cz-eeb is disabled by an operator: signing key compromised"
    );
}

#[test]
fn no_other_refusal_carries_the_disabled_marker() {
    for error in [
        ApiError::PermissionDenied("cz-eeb may not publish ARREST_APPROVED".into()),
        ApiError::from(SessionEnd::ReaderRemoved {
            agency: AgencyId::parse("agency", "cz-eeb").unwrap(),
        }),
        ApiError::FailedPrecondition("x".into()),
    ] {
        let status = Status::from(error);
        assert!(
            status
                .metadata()
                .get(liandong_core::refusal::METADATA_KEY)
                .is_none(),
            "{status:?}"
        );
    }
}
