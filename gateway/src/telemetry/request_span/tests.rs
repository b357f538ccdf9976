use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;

use tower::ServiceExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

use liandong_core::registry::Registry;

use super::*;
use crate::telemetry::tests::Captured;
use crate::telemetry::{LogFormat, log_layer};

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

/// A request as `ResolveCaller` hands it on: the peer and its caller in
/// the extensions.
fn request_from(uri: &str, path: &str) -> Request<Body> {
    let registry = Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap();
    let peer = PeerIdentity {
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 40_000)),
        uris: vec![uri.to_owned()],
    };
    let mut request = Request::builder()
        .uri(format!("http://gateway{path}"))
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(Caller::resolve(Some(&peer), &registry));
    request.extensions_mut().insert(peer);
    request
}

/// A response body of given frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// Trailers carrying `code`.
fn trailers(code: Code) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, (code as i32).into());
    trailers
}

/// Reads the whole body.
async fn drain(body: &mut Body) {
    while std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
        .await
        .is_some()
    {}
}

/// The JSON lines written while `test` ran.
async fn json_lines(test: impl Future<Output = ()>) -> Vec<serde_json::Value> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::registry()
            .with(log_layer(LogFormat::Json, false, move || writer.clone()));
    {
        let _default = tracing::subscriber::set_default(subscriber);
        test.await;
    }
    captured
        .text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_call_answered_with_a_body_is_logged_with_its_agency_rpc_and_status() {
    let lines = json_lines(async {
        let handler = tower::service_fn(|_request: Request<Body>| async {
            tracing::info!("handling");
            let frames = VecDeque::from([
                Frame::data(Bytes::from_static(b"\0\0\0\0\0")),
                Frame::trailers(trailers(Code::Ok)),
            ]);
            Ok::<_, Infallible>(Response::new(Body::new(Frames(frames))))
        });
        let response = RequestSpan::new(handler)
            .oneshot(request_from(
                "urn:liandong:agency:cz-eeb",
                "/liandong.v1.Exchange/Publish",
            ))
            .await
            .unwrap();
        let mut body = response.into_body();
        drain(&mut body).await;
    })
    .await;
    let [handling, finished] = lines.as_slice() else {
        panic!("two lines expected: {lines:?}")
    };
    // What the handler logs carries the span.
    assert_eq!(handling["fields"]["message"], "handling");
    assert_eq!(handling["span"]["name"], "request");
    assert_eq!(handling["span"]["agency"], "cz-eeb");
    assert_eq!(handling["span"]["rpc"], "/liandong.v1.Exchange/Publish");
    assert_eq!(handling["span"]["peer"], "127.0.0.1:40000");
    // The end line, at INFO for OK, with the status from the trailers.
    assert_eq!(finished["fields"]["message"], "request finished");
    assert_eq!(finished["level"], "INFO");
    assert_eq!(finished["fields"]["grpc.status"], 0);
    assert!(finished["fields"]["elapsed_ms"].is_f64(), "{finished}");
    assert_eq!(finished["span"]["agency"], "cz-eeb");
    assert_eq!(finished["span"]["grpc.status"], 0);
    assert!(finished["span"]["elapsed_ms"].is_f64(), "{finished}");
}

#[tokio::test]
async fn a_refusal_answered_at_once_is_a_warning_naming_what_the_peer_presented() {
    let lines = json_lines(async {
        let handler = tower::service_fn(|_request: Request<Body>| async {
            Ok::<_, Infallible>(Status::unauthenticated("no").into_http::<Body>())
        });
        let response = RequestSpan::new(handler)
            .oneshot(request_from(
                "urn:liandong:agency:nobody",
                "/liandong.v1.Exchange/GetCase",
            ))
            .await
            .unwrap();
        // The status is in the head: nothing more is read.
        drop(response);
    })
    .await;
    // Resolving the caller warned before the call; then the call's line.
    let [refused, finished] = lines.as_slice() else {
        panic!("two lines expected: {lines:?}")
    };
    assert_eq!(refused["target"], "liandong_gateway::identity::principal");
    assert_eq!(finished["level"], "WARN");
    assert_eq!(
        finished["fields"]["grpc.status"],
        Code::Unauthenticated as i32
    );
    assert_eq!(finished["span"]["rpc"], "/liandong.v1.Exchange/GetCase");
    assert_eq!(
        finished["span"]["peer.identity"],
        "urn:liandong:agency:nobody"
    );
    assert!(finished["span"].get("agency").is_none(), "{finished}");
}

#[tokio::test]
async fn a_caller_leaving_before_the_status_ends_the_call_without_one() {
    let lines = json_lines(async {
        let handler = tower::service_fn(|_request: Request<Body>| async {
            let frames = VecDeque::from([Frame::data(Bytes::from_static(b"\0\0\0\0\0"))]);
            Ok::<_, Infallible>(Response::new(Body::new(Frames(frames))))
        });
        let response = RequestSpan::new(handler)
            .oneshot(request_from(
                "urn:liandong:agency:cz-psb",
                "/liandong.v1.Exchange/Subscribe",
            ))
            .await
            .unwrap();
        // The stream is cut after its first message.
        let mut body = response.into_body();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.is_some());
        drop(body);
    })
    .await;
    let [ended] = lines.as_slice() else {
        panic!("one line expected: {lines:?}")
    };
    assert_eq!(ended["level"], "INFO");
    assert_eq!(
        ended["fields"]["message"],
        "request ended before its status was sent"
    );
    assert_eq!(ended["span"]["agency"], "cz-psb");
    assert!(ended["span"].get("grpc.status").is_none(), "{ended}");
}

#[test]
fn only_the_gateways_own_failures_mark_the_span_as_an_error() {
    assert!(is_server_error(Code::Internal));
    assert!(is_server_error(Code::Unavailable));
    assert!(!is_server_error(Code::Ok));
    assert!(!is_server_error(Code::PermissionDenied));
    assert!(!is_server_error(Code::InvalidArgument));
}
