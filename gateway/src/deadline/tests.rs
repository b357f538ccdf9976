use std::convert::Infallible;

use http::HeaderValue;
use tonic::Code;
use tower::ServiceExt;

use super::*;

fn headers(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
    headers
}

#[test]
fn timeout_header_is_read_as_tonic_reads_it() {
    assert_eq!(
        client_timeout(&headers("3H")),
        Some(Duration::from_secs(10_800))
    );
    assert_eq!(
        client_timeout(&headers("1M")),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        client_timeout(&headers("42S")),
        Some(Duration::from_secs(42))
    );
    assert_eq!(
        client_timeout(&headers("13m")),
        Some(Duration::from_millis(13))
    );
    assert_eq!(
        client_timeout(&headers("2u")),
        Some(Duration::from_micros(2))
    );
    assert_eq!(
        client_timeout(&headers("82n")),
        Some(Duration::from_nanos(82))
    );
    assert_eq!(client_timeout(&HeaderMap::new()), None);
    for ignored in ["82f", "123456789H", "oneH", "S", ""] {
        assert_eq!(client_timeout(&headers(ignored)), None, "{ignored:?}");
    }
}

fn call_with(
    timeout: Option<&str>,
    answer: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = Response<String>> {
    let mut answer = Some(answer);
    let inner = tower::service_fn(move |_request: Request<()>| {
        let answer = tokio::spawn(answer.take().expect("called once"));
        async move {
            answer.await.unwrap();
            Ok::<_, Infallible>(Response::new("answered".to_owned()))
        }
    });
    let mut request = Request::new(());
    if let Some(timeout) = timeout {
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_str(timeout).unwrap());
    }
    let service = DeadlineLayer.layer(inner);
    async move { service.oneshot(request).await.unwrap() }
}

fn code(response: &Response<String>) -> Option<Code> {
    response
        .headers()
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

#[tokio::test(start_paused = true)]
async fn expired_deadline_answers_deadline_exceeded() {
    let response = call_with(Some("50m"), std::future::pending()).await;
    assert_eq!(code(&response), Some(Code::DeadlineExceeded));
    assert!(response.body().is_empty());
}

#[tokio::test(start_paused = true)]
async fn answer_within_the_deadline_passes_through() {
    let response = call_with(Some("5S"), tokio::time::sleep(Duration::from_millis(10))).await;
    assert_eq!(response.body(), "answered");
    assert_eq!(code(&response), None);
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_the_call_waits_for_its_answer() {
    let response = call_with(None, tokio::time::sleep(Duration::from_secs(3600))).await;
    assert_eq!(response.body(), "answered");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_past_is_seen_without_the_timer() {
    // The clock is past the deadline, but no timer has fired yet: the check
    // on poll answers, as it must when tonic's own timer woke the task.
    let inner = tower::service_fn(|_request: Request<()>| {
        std::future::pending::<Result<Response<String>, Infallible>>()
    });
    let mut service = DeadlineLayer.layer(inner);
    let mut future = Box::pin(service.call({
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_static("1m"));
        request
    }));
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(future.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(Duration::from_millis(2)).await;
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
        panic!("the deadline passed");
    };
    assert_eq!(code(&response), Some(Code::DeadlineExceeded));
}
