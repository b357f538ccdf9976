//! Arbitrary HTTP requests (method, path, headers, body) → the adapter's
//! local HTTP source (`daemon::source::http::router`) through
//! `tower::ServiceExt::oneshot`, over a real acceptor on a temporary store.
//!
//! Every request gets an answer; a server error (5xx) is only allowed for
//! the documented `outbox_full`, which this setup never reaches.

#![no_main]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

use liandong_adapter::config::daemon::StatusSettings;
use liandong_adapter::daemon::source::http::{Guard, router};
use liandong_adapter::report::{Certificate, Limits};

/// The HTTP source's body limit in the adapter's default configuration.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Sends the right `Host`, token and content type first, so most
    /// inputs pass the guard and reach the handlers.
    authorised: bool,
    method: u8,
    path: PathChoice,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Mostly the real routes, so inputs reach their handlers.
#[derive(Debug, Arbitrary)]
enum PathChoice {
    Notifications,
    Notification(String),
    Status,
    Other(String),
}

const METHODS: [Method; 5] = [
    Method::POST,
    Method::GET,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
];

fuzz_target!(|input: Input| {
    let adapter = liandong_fuzz::adapter();
    let path = match &input.path {
        PathChoice::Notifications => "/v1/notifications".to_owned(),
        PathChoice::Notification(id) => format!("/v1/notifications/{id}"),
        PathChoice::Status => "/v1/status".to_owned(),
        PathChoice::Other(path) => path.clone(),
    };
    let mut request = Request::builder()
        .method(METHODS[usize::from(input.method) % METHODS.len()].clone())
        .uri(path);
    if input.authorised {
        request = request
            .header("host", "127.0.0.1:8080")
            .header(
                "authorization",
                format!("Bearer {}", liandong_fuzz::HTTP_TOKEN),
            )
            .header("content-type", "application/json");
    }
    for (name, value) in &input.headers {
        request = request.header(name.as_str(), value.as_slice());
    }
    // Names, values or paths that are not valid HTTP never reach the
    // router: hyper refuses them before it.
    let Ok(request) = request.body(Body::from(input.body)) else {
        return;
    };
    let limits = Limits {
        status: StatusSettings {
            max_pending_age: Duration::from_secs(300),
            max_dead_letters: 0,
            max_failure: Duration::from_secs(300),
            require_daemon: false,
        },
        max_pending: u64::MAX / 2,
        certificate: Certificate::Unchecked,
    };
    let guard = Guard::new(
        adapter.token.clone(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
        None,
    );
    let app = router(adapter.acceptor.clone(), limits, None, MAX_BODY, guard);
    let response = adapter
        .runtime
        .block_on(async move {
            let response = app.oneshot(request).await?;
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), MAX_BODY).await;
            Ok::<_, std::convert::Infallible>((status, body))
        })
        .unwrap_or_else(|never| match never {});
    let (status, body) = response;
    assert!(
        !status.is_server_error(),
        "the HTTP source answered {status}"
    );
    assert!(body.is_ok(), "the answer's body could not be read");
});
