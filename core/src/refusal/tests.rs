use tonic::{Code, Status};

use super::*;

fn marked(code: Code, value: &'static str) -> Status {
    let mut status = Status::new(code, "agency cz-eeb is disabled by an operator: audit");
    status.metadata_mut().insert(
        METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(value),
    );
    status
}

#[test]
fn a_marked_permission_denied_is_an_agency_disablement() {
    assert!(is_agency_disabled(&marked(
        Code::PermissionDenied,
        AGENCY_DISABLED
    )));
}

#[test]
fn the_message_alone_does_not_make_a_disablement() {
    let status = Status::permission_denied("agency cz-eeb is disabled by an operator: audit");
    assert!(!is_agency_disabled(&status));
}

#[test]
fn another_marker_or_another_code_is_not_a_disablement() {
    assert!(!is_agency_disabled(&marked(
        Code::PermissionDenied,
        "something-else"
    )));
    assert!(!is_agency_disabled(&marked(
        Code::InvalidArgument,
        AGENCY_DISABLED
    )));
}

#[test]
fn the_marker_survives_the_trip_through_http_headers() {
    let status = marked(Code::PermissionDenied, AGENCY_DISABLED);
    let response = status.into_http::<tonic::body::Body>();
    let back = Status::from_header_map(response.headers()).expect("a status in the headers");
    assert!(is_agency_disabled(&back), "{back:?}");
}
