use tonic::{Code, Status};

use super::*;

fn disabled(message: &str) -> Status {
    let mut status = Status::new(Code::PermissionDenied, message);
    status.metadata_mut().insert(
        refusal::METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(refusal::AGENCY_DISABLED),
    );
    status
}

#[test]
fn the_marked_refusal_yields_the_operators_reason() {
    let status = disabled("agency cz-eeb is disabled by an operator: signing key compromised");
    assert_eq!(disabled_reason(&status), Some("signing key compromised"));
    assert_eq!(
        disabled_reason(&disabled("disabled")),
        Some("disabled"),
        "an unexpected wording is shown whole"
    );
}

#[test]
fn an_unmarked_permission_denied_is_not_a_disablement() {
    let status = Status::permission_denied(
        "agency cz-eeb is disabled by an operator: signing key compromised",
    );
    assert_eq!(disabled_reason(&status), None);
}

#[test]
fn the_warning_is_logged_at_most_once_a_minute() {
    let start = Instant::now();
    let mut warnings = Warnings::default();
    assert!(warnings.due_at(start), "the first is logged");
    assert!(!warnings.due_at(start));
    assert!(
        !warnings.due_at(start + WARN_EVERY - Duration::from_secs(1)),
        "59 s later"
    );
    assert!(warnings.due_at(start + WARN_EVERY), "a minute later");
    assert!(!warnings.due_at(start + WARN_EVERY + Duration::from_secs(30)));
    assert!(warnings.due_at(start + 2 * WARN_EVERY));
}
