use super::*;

#[test]
fn each_rpc_has_its_own_refusal_action() {
    let cases = [
        (
            "/liandong.v1.Supervision/ListSignals",
            "SUPERVISION_REFUSED",
        ),
        ("/liandong.v1.Supervision/GetReport", "SUPERVISION_REFUSED"),
        ("/liandong.v1.Exchange/Publish", "PUBLISH_REFUSED"),
        ("/liandong.v1.Exchange/PublishStream", "PUBLISH_REFUSED"),
        ("/liandong.v1.Exchange/Subscribe", "SUBSCRIBE_REFUSED"),
        ("/liandong.v1.Exchange/GetCase", "CASE_READ_REFUSED"),
        ("/liandong.v1.Operations/GetStatus", "OPERATIONS_REFUSED"),
        (
            "/liandong.v1.Operations/DisableAgency",
            "OPERATIONS_REFUSED",
        ),
        ("/liandong.v1.Operations/GetReport", "OPERATIONS_REFUSED"),
    ];
    for (path, action) in cases {
        assert_eq!(
            Rpc::from_path(path).map(|rpc| rpc.refused_action().as_str()),
            Some(action),
            "{path}"
        );
    }
    for other in [
        "/liandong.v1.Exchange/Nope",
        "/liandong.v1.Operations/Status",
        "/liandong.v1.Supervision/Nope",
        "/grpc.health.v1.Health/Check",
        "/liandong.v1.Exchange/",
    ] {
        assert_eq!(Rpc::from_path(other), None, "{other}");
    }
}

#[test]
fn codec_marker_travels_in_the_status_headers_and_handlers_set_none() {
    let mut codec_refusal = Status::invalid_argument("malformed protobuf message: x");
    codec_refusal.metadata_mut().insert(
        codec::DECODE_REFUSAL,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    let mut headers = HeaderMap::new();
    codec_refusal.add_header(&mut headers).unwrap();
    assert!(headers.remove(codec::DECODE_REFUSAL).is_some());
    assert!(headers.get(codec::DECODE_REFUSAL).is_none());

    // A handler's own INVALID_ARGUMENT carries no marker.
    let mut headers = HeaderMap::new();
    Status::invalid_argument("case_ref: is empty")
        .add_header(&mut headers)
        .unwrap();
    assert!(headers.get(codec::DECODE_REFUSAL).is_none());
}
