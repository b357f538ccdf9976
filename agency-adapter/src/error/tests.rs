use std::path::PathBuf;

use liandong_core::tls::TlsError;
use tonic::{Code, Status};

use super::*;

#[test]
fn refusals_exit_1_and_unavailable_exits_69() {
    for code in [
        Code::InvalidArgument,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::FailedPrecondition,
        Code::ResourceExhausted,
        Code::NotFound,
        Code::Internal,
        Code::Unknown,
    ] {
        assert_eq!(
            status_exit_code(&Status::new(code, "x")),
            exit::REFUSED,
            "{code:?}"
        );
    }
    assert_eq!(
        status_exit_code(&Status::unavailable("store down")),
        exit::UNAVAILABLE
    );
}

#[test]
fn a_disabled_agency_exits_69_as_retrying_later_may_succeed() {
    let mut status =
        Status::permission_denied("agency cz-eeb is disabled by an operator: key rotation");
    assert_eq!(status_exit_code(&status), exit::REFUSED, "unmarked");
    status.metadata_mut().insert(
        liandong_core::refusal::METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(liandong_core::refusal::AGENCY_DISABLED),
    );
    assert_eq!(status_exit_code(&status), exit::UNAVAILABLE);
    assert_eq!(
        describe_status(&status),
        "refused: PERMISSION_DENIED: agency cz-eeb is disabled by an operator: key rotation"
    );
}

#[test]
fn a_transport_failure_exits_69_whatever_its_code() {
    let io = std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by peer",
    );
    let status = Status::from_error(Box::new(io));
    assert_eq!(status.code(), Code::Unknown);
    assert!(is_transport_failure(&status));
    assert_eq!(status_exit_code(&status), exit::UNAVAILABLE);
    let text = describe_status(&status);
    assert!(text.starts_with("gateway unreachable: UNKNOWN: "), "{text}");
    assert!(text.contains("connection reset by peer"), "{text}");
}

#[test]
fn a_refusal_reads_refused_code_message() {
    let status = Status::invalid_argument("notification.summary: is required");
    assert!(!is_transport_failure(&status));
    assert_eq!(
        describe_status(&status),
        "refused: INVALID_ARGUMENT: notification.summary: is required"
    );
    let error = CommandError::from(Status::permission_denied("sender is not cz-psb"));
    assert_eq!(
        error.message(),
        "refused: PERMISSION_DENIED: sender is not cz-psb"
    );
    assert_eq!(error.exit_code(), exit::REFUSED);
}

#[test]
fn code_names_are_the_grpc_names() {
    assert_eq!(code_name(Code::Ok), "OK");
    assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
    assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    // Every code round-trips through its number.
    for n in 0..=16 {
        let code = Code::from_i32(n);
        assert_eq!(code as i32, n);
        assert!(
            code_name(code)
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_')
        );
    }
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let config = CommandError::from(ConfigError::Incomplete {
        missing: vec![],
        config: None,
    });
    assert_eq!(config.exit_code(), exit::USAGE);

    let input = CommandError::from(InputError::Empty {
        origin: "stdin".into(),
    });
    assert_eq!(input.exit_code(), exit::DATA);
    assert_eq!(
        input.message(),
        "stdin: no notification (the input is empty)"
    );

    let read = || TlsError::Read {
        path: PathBuf::from("pki/ca.crt"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let credentials = CommandError::from(ClientError::Credentials(read()));
    assert_eq!(credentials.exit_code(), exit::USAGE);
    assert!(credentials.message().starts_with("pki/ca.crt: cannot read"));

    let unreachable = CommandError::from(ClientError::Unreachable(TlsError::Connect {
        url: "https://127.0.0.1:7443".into(),
        reason: "tcp connect error: Connection refused".into(),
    }));
    assert_eq!(unreachable.exit_code(), exit::UNAVAILABLE);
    assert_eq!(
        unreachable.message(),
        "gateway https://127.0.0.1:7443: cannot connect: tcp connect error: Connection refused"
    );

    let closed = CommandError::from(ClientError::SubscriptionClosed);
    assert_eq!(closed.exit_code(), exit::UNAVAILABLE);

    let output = CommandError::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    assert_eq!(output.exit_code(), exit::IO);
    assert!(
        output.message().starts_with("stdout: "),
        "{}",
        output.message()
    );
}
