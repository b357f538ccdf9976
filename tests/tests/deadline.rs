//! Client deadlines over real mutual TLS: an expired deadline is answered
//! `DEADLINE_EXCEEDED` (never `CANCELLED`, which clients take for their own
//! cancellation and do not retry), a publish whose caller gave up completes
//! or leaves nothing, and neither disturbs anyone else's publishes. The
//! unknown outcome is resolved by republishing the same id.
//!
//! tonic's own client enforces a deadline locally too (it gives up with
//! `CANCELLED` when its timer fires, before the gateway's answer can
//! arrive), so these calls go through [`BareChannel`]: HTTP/2 over mutual
//! TLS that sends the `grpc-timeout` header and waits for whatever the
//! gateway answers, as grpcio and grpc-go clients receive it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use sqlx::{AnyConnection, Connection};
use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Testbed, notification, publish};

/// A gRPC channel with no client-side deadline handling.
#[derive(Clone)]
struct BareChannel(SendRequest<tonic::body::Body>);

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for BareChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// An Exchange client of `agency` over a [`BareChannel`].
async fn bare_client(bed: &Testbed, agency: &str) -> ExchangeClient<BareChannel> {
    ExchangeClient::with_origin(bare_channel(bed, agency).await, origin(bed))
}

fn origin(bed: &Testbed) -> http::Uri {
    format!("https://{}", bed.gateway.addr).parse().unwrap()
}

/// A [`BareChannel`] to the gateway, authenticated as `agency`.
async fn bare_channel(bed: &Testbed, agency: &str) -> BareChannel {
    let credentials = bed.pki.credentials(agency);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(credentials.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(credentials.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(bed.gateway.addr)
        .await
        .unwrap();
    let name = ServerName::from(bed.gateway.addr.ip());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    BareChannel(send)
}

/// A connection to the gateway's database, whichever the backend.
async fn database(bed: &Testbed) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(&bed.database_url())
        .await
        .expect("open the gateway's database")
}

/// `(sequence)` of every stored row of `sender` with `id`.
async fn stored_sequences(conn: &mut AnyConnection, sender: &str, id: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT sequence FROM notifications WHERE sender = $1 AND notification_id = $2",
    )
    .bind(sender)
    .bind(id)
    .fetch_all(conn)
    .await
    .expect("read the notifications")
}

async fn publish_within(
    client: &mut ExchangeClient<BareChannel>,
    n: pb::Notification,
    deadline: Duration,
) -> Result<pb::PublishReceipt, tonic::Status> {
    let mut request = tonic::Request::new(pb::PublishRequest {
        notification: Some(n),
    });
    request.set_timeout(deadline);
    client
        .publish(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Republishes `id` until it is answered; it must then be stored exactly
/// once, under the receipt's sequence.
async fn resolve_by_republishing(
    client: &mut ExchangeClient<Channel>,
    conn: &mut AnyConnection,
    sender: &str,
    n: pb::Notification,
) -> pb::PublishReceipt {
    let id = n.notification_id.clone();
    let receipt = publish(client, n)
        .await
        .unwrap_or_else(|status| panic!("republishing {id}: {status:?}"));
    assert_eq!(
        stored_sequences(conn, sender, &id).await,
        [receipt.sequence as i64],
        "{id} is stored exactly once, under the receipt's sequence"
    );
    receipt
}

#[tokio::test]
async fn expired_deadline_is_deadline_exceeded() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut bare = bare_client(&bed, "cz-eeb").await;
    let mut conn = database(&bed).await;

    // Already over when it reaches the gateway.
    let n = notification("late-1", "C-1", Event::ClueShared, Level::Internal, &[]);
    let status = publish_within(&mut bare, n.clone(), Duration::from_nanos(1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    resolve_by_republishing(&mut eeb, &mut conn, "cz-eeb", n).await;

    // Over while the request is still arriving: the message is sent after
    // the deadline, and the gateway answers when the deadline passes.
    let n = notification("late-2", "C-1", Event::ClueShared, Level::Internal, &[]);
    let mut grpc =
        tonic::client::Grpc::with_origin(bare_channel(&bed, "cz-eeb").await, origin(&bed));
    grpc.ready().await.unwrap();
    let slow = futures::stream::once({
        let n = n.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            pb::PublishRequest {
                notification: Some(n),
            }
        }
    });
    let mut request = tonic::Request::new(slow);
    request.set_timeout(Duration::from_millis(300));
    let status = grpc
        .client_streaming::<_, pb::PublishRequest, pb::PublishReceipt, _>(
            request,
            http::uri::PathAndQuery::from_static("/liandong.v1.Exchange/Publish"),
            liandong_proto::codec::StrictCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("republish the same notification id"),
        "{}",
        status.message()
    );
    resolve_by_republishing(&mut eeb, &mut conn, "cz-eeb", n).await;

    // A subscription whose opening request comes too late: the first
    // answer of a streaming call keeps the same rule.
    let never = futures::stream::pending::<pb::SubscribeRequest>();
    let mut request = tonic::Request::new(never);
    request.set_timeout(Duration::from_millis(300));
    let status = bare.subscribe(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // The other RPCs' first answers keep the same rule.
    let mut request = tonic::Request::new(pb::GetCaseRequest {
        case_ref: "C-1".into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_nanos(1));
    let status = bare.get_case(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn abandoned_publish_does_not_disturb_others() {
    let bed = Testbed::start().unwrap();
    let mut conn = database(&bed).await;
    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));

    // An agency whose calls give up almost at once, with large
    // notifications: most are abandoned while being read or stored.
    let mut impatient = bare_client(&bed, "cz-eeb").await;
    let abandoning = {
        let done = done.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            let mut outcomes: HashMap<String, Code> = HashMap::new();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) && i < MAX_ABANDONED {
                let id = format!("abandoned-{i}");
                let n = big(&id);
                let code = match publish_within(&mut impatient, n, Duration::from_micros(500)).await
                {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                };
                outcomes.insert(id, code);
                calls.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            outcomes
        })
    };

    // Another agency publishing normally meanwhile: every call succeeds.
    let mut patient = bare_client(&bed, "cz-eeb-xiangyuan").await;
    let limit = std::time::Instant::now() + Duration::from_secs(30);
    while calls.load(Ordering::Relaxed) < 10 {
        assert!(
            std::time::Instant::now() < limit,
            "the abandoning calls never began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..45 {
        let n = notification(
            &format!("patient-{i}"),
            "C-2",
            Event::ClueShared,
            Level::Internal,
            &[],
        );
        let receipt = publish_within(&mut patient, n, Duration::from_secs(10))
            .await
            .unwrap_or_else(|status| {
                panic!(
                    "a well-behaved publish failed beside abandoned ones: {status:?}\n{}",
                    bed.log()
                )
            });
        assert!(!receipt.duplicate);
    }
    done.store(true, Ordering::Relaxed);
    let outcomes = abandoning.await.unwrap();
    let mut tally: HashMap<Code, usize> = HashMap::new();
    for code in outcomes.values() {
        *tally.entry(*code).or_default() += 1;
    }
    eprintln!("outcomes of the abandoning calls: {tally:?}");

    let abandoned = outcomes
        .values()
        .filter(|code| **code == Code::DeadlineExceeded)
        .count();
    assert!(abandoned > 0, "no call was abandoned: {outcomes:?}");
    for (id, code) in &outcomes {
        assert!(
            matches!(code, Code::Ok | Code::DeadlineExceeded),
            "{id} ended with {code:?}, neither a receipt nor DEADLINE_EXCEEDED"
        );
    }

    // Each abandoned publish was stored once or not at all; republishing
    // resolves it either way.
    let mut eeb = bed.client("cz-eeb").await;
    let mut recovered = 0;
    for id in outcomes.keys() {
        let before = stored_sequences(&mut conn, "cz-eeb", id).await;
        assert!(before.len() <= 1, "{id} stored twice: {before:?}");
        let receipt = resolve_by_republishing(&mut eeb, &mut conn, "cz-eeb", big(id)).await;
        if receipt.duplicate {
            recovered += 1;
        }
    }
    eprintln!(
        "{} calls, {abandoned} abandoned; {recovered} had been stored by the call itself",
        outcomes.len()
    );
    assert!(
        recovered > 0,
        "no abandoned call got as far as the store: the test proved nothing about abandoned writes"
    );
    assert!(!bed.log().contains("database is locked"), "{}", bed.log());
}

/// Bounds the abandoning calls, which run as long as the others do.
const MAX_ABANDONED: usize = 1000;

/// A notification of about 200 KiB.
fn big(id: &str) -> pb::Notification {
    let mut n = notification(id, "C-1", Event::ClueShared, Level::Internal, &[]);
    n.body = Some(pb::CaseBody {
        description: "x".repeat(200 * 1024),
        ..Default::default()
    });
    n
}
