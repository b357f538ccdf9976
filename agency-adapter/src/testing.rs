//! Test support: an in-process gateway speaking `liandong.v1.Exchange` over
//! real mutual TLS (certificates made by `liandong-certs` at test time),
//! scripted per test and recording what the adapter sent. Test-only; it
//! must never be compiled into the library.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use liandong_certs::Authority;
use liandong_core::pb;
use liandong_core::pb::exchange_server::{Exchange, ExchangeServer};
use liandong_core::pb::subscribe_request::Kind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::config::GatewaySettings;

/// How the mock ends a subscription once its scripted deliveries are sent.
#[derive(Debug, Clone)]
pub(crate) enum SubscribeEnd {
    /// End with OK when the client closes its request stream.
    OnHalfClose,
    /// End with OK right away.
    Ok,
    /// End with this status right away.
    Status(Status),
    /// Never end (hold the stream open even after the client half-closes).
    Never,
}

/// What the mock gateway does.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// Deliveries sent as soon as a subscription opens.
    pub(crate) deliveries: Vec<pb::Delivery>,
    /// How the subscription ends after them.
    pub(crate) end: SubscribeEnd,
    /// Refuse the open with this status (before any response header).
    pub(crate) refuse_open: Option<Status>,
    /// Refuse every publish with this status.
    pub(crate) refuse_publish: Option<Status>,
    /// `PublishStream`: end the stream with this status when a request
    /// with this notification id arrives (as the gateway does).
    pub(crate) refuse_ids: Vec<(String, Status)>,
    /// `PublishStream`: the first stream ends with UNAVAILABLE after this
    /// many requests, answering none of them.
    pub(crate) first_stream_breaks_after: Option<usize>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            deliveries: Vec::new(),
            end: SubscribeEnd::OnHalfClose,
            refuse_open: None,
            refuse_publish: None,
            refuse_ids: Vec::new(),
            first_stream_breaks_after: None,
        }
    }
}

/// What the mock gateway saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) published: Vec<pb::Notification>,
    pub(crate) case_requests: Vec<String>,
    /// The first request of each subscription (`None` if it was no open).
    pub(crate) opens: Vec<Option<pb::SubscriptionOpen>>,
    /// Every acknowledged sequence, in order.
    pub(crate) acks: Vec<u64>,
    /// Subscriptions whose request stream has ended.
    pub(crate) request_streams_ended: usize,
    /// Every `PublishStream` request's notification, in arrival order
    /// (resends included).
    pub(crate) streamed: Vec<pb::Notification>,
    /// Ids stored through `PublishStream`, each once, in order.
    pub(crate) stored: Vec<String>,
    /// `PublishStream` calls opened.
    pub(crate) streams: usize,
}

#[derive(Clone)]
struct Mock {
    script: Arc<Script>,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl Exchange for Mock {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishReceipt>, Status> {
        if let Some(status) = &self.script.refuse_publish {
            return Err(status.clone());
        }
        let notification = request.into_inner().notification.unwrap_or_default();
        let mut seen = self.seen.lock().unwrap();
        seen.published.push(notification.clone());
        Ok(Response::new(pb::PublishReceipt {
            notification_id: notification.notification_id,
            sequence: 41 + seen.published.len() as u64,
            received_at: Some(prost_types_timestamp()),
            duplicate: false,
            copies: Vec::new(),
        }))
    }

    type PublishStreamStream = ReceiverStream<Result<pb::PublishReceipt, Status>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let script = Arc::clone(&self.script);
        let seen = Arc::clone(&self.seen);
        let first = {
            let mut seen = seen.lock().unwrap();
            seen.streams += 1;
            seen.streams == 1
        };
        tokio::spawn(async move {
            let mut count = 0;
            while let Ok(Some(request)) = inbound.message().await {
                let notification = request.notification.unwrap_or_default();
                count += 1;
                let answer = {
                    let mut seen = seen.lock().unwrap();
                    seen.streamed.push(notification.clone());
                    let id = notification.notification_id.clone();
                    if first && script.first_stream_breaks_after == Some(count) {
                        Err(Status::unavailable("the gateway is shutting down"))
                    } else if let Some((_, status)) =
                        script.refuse_ids.iter().find(|(i, _)| *i == id)
                    {
                        Err(status.clone())
                    } else {
                        let position = seen.stored.iter().position(|s| *s == id);
                        let duplicate = position.is_some();
                        let sequence = match position {
                            Some(p) => p + 1,
                            None => {
                                seen.stored.push(id.clone());
                                seen.stored.len()
                            }
                        } as u64;
                        Ok(pb::PublishReceipt {
                            notification_id: id,
                            sequence,
                            received_at: Some(prost_types_timestamp()),
                            duplicate,
                            copies: Vec::new(),
                        })
                    }
                };
                let end = answer.is_err();
                if tx.send(answer).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SubscribeStream = ReceiverStream<Result<pb::Delivery, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let open = match first.and_then(|r| r.kind) {
            Some(Kind::Open(open)) => Some(open),
            _ => None,
        };
        self.seen.lock().unwrap().opens.push(open.clone());
        if open.is_none() {
            return Err(Status::invalid_argument(
                "the first request must carry open",
            ));
        }
        if let Some(status) = &self.script.refuse_open {
            return Err(status.clone());
        }
        let (tx, rx) = mpsc::channel(64);
        for delivery in &self.script.deliveries {
            tx.send(Ok(delivery.clone())).await.unwrap();
        }
        let mut hold = Some(tx.clone());
        match &self.script.end {
            SubscribeEnd::Ok => hold = None,
            SubscribeEnd::Status(status) => {
                tx.send(Err(status.clone())).await.unwrap();
                hold = None;
            }
            SubscribeEnd::OnHalfClose | SubscribeEnd::Never => {}
        }
        drop(tx);
        let never = matches!(self.script.end, SubscribeEnd::Never);
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                if let Some(Kind::Ack(ack)) = request.kind {
                    seen.lock().unwrap().acks.extend(ack.sequences);
                }
            }
            seen.lock().unwrap().request_streams_ended += 1;
            if never {
                std::future::pending::<()>().await;
            }
            drop(hold);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_case(
        &self,
        request: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseView>, Status> {
        let case_ref = request.into_inner().case_ref;
        self.seen
            .lock()
            .unwrap()
            .case_requests
            .push(case_ref.clone());
        if case_ref == "CZ-UNKNOWN" {
            return Err(Status::not_found("no case CZ-UNKNOWN"));
        }
        Ok(Response::new(pb::CaseView {
            case_ref: case_ref.clone(),
            timeline: vec![delivery(3, &case_ref)],
            ..Default::default()
        }))
    }
}

fn prost_types_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_795_163_400,
        nanos: 0,
    }
}

/// A delivery of a small notification with this sequence.
pub(crate) fn delivery(sequence: u64, case_ref: &str) -> pb::Delivery {
    pb::Delivery {
        sequence,
        sender: "cz-eeb".into(),
        received_at: Some(prost_types_timestamp()),
        notification: Some(pb::Notification {
            notification_id: format!("n-{sequence}"),
            case_ref: case_ref.into(),
            event: pb::EventType::ClueShared as i32,
            confidentiality: pb::Confidentiality::Internal as i32,
            region: "140423".into(),
            occurred_at: Some(prost_types_timestamp()),
            summary: "废机油倾倒线索".into(),
            ..Default::default()
        }),
        withheld: false,
        withheld_reason: String::new(),
        attempt: 1,
        redacted_fields: Vec::new(),
        ..Default::default()
    }
}

/// Credentials on disk for one agency, signed by a fresh CA.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca_pem: String,
    pub(crate) server: liandong_certs::CertifiedKey,
}

impl Pki {
    /// A CA, a server certificate for `localhost`, and the agency
    /// `cz-psb`'s certificate and key written to `ca.crt`, `agency.crt`
    /// and `agency.key`.
    pub(crate) fn new() -> Self {
        let ca = Authority::new("Test CA").unwrap();
        let server = ca.server(&["localhost"]).unwrap();
        let agency = ca.agency("cz-psb").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("agency.crt"), &agency.cert_pem).unwrap();
        std::fs::write(dir.path().join("agency.key"), &agency.key_pem).unwrap();
        Self {
            ca_pem: ca.cert_pem(),
            server,
            dir,
        }
    }

    /// Settings for reaching `url` with these credentials, checking the
    /// server name `localhost`.
    pub(crate) fn settings(&self, url: &str) -> GatewaySettings {
        GatewaySettings {
            url: url.to_owned(),
            server_name: Some("localhost".into()),
            ca: self.dir.path().join("ca.crt"),
            cert: self.dir.path().join("agency.crt"),
            key: self.dir.path().join("agency.key"),
        }
    }
}

/// A running mock gateway; stops when dropped.
pub(crate) struct MockGateway {
    pub(crate) settings: GatewaySettings,
    pub(crate) seen: Arc<Mutex<Seen>>,
    _pki: Pki,
    _stop: oneshot::Sender<()>,
}

impl MockGateway {
    /// Starts a gateway following `script` on a free port of 127.0.0.1.
    pub(crate) async fn start(script: Script) -> Self {
        let pki = Pki::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mock = Mock {
            script: Arc::new(script),
            seen: Arc::clone(&seen),
        };
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                &pki.server.cert_pem,
                &pki.server.key_pem,
            ))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(ExchangeServer::new(mock));
        tokio::spawn(async move {
            server
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            settings: pki.settings(&format!("https://127.0.0.1:{port}")),
            seen,
            _pki: pki,
            _stop: stop,
        }
    }

    /// Waits (up to 5 s) until `done` holds for what the gateway saw.
    pub(crate) async fn wait_until(&self, done: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done(&self.seen.lock().unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gateway never saw the expected state: {:?}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A signer for `agency` with a fresh key, and its raw public key.
pub(crate) fn signer(agency: &str) -> (std::sync::Arc<crate::signer::Signer>, [u8; 32]) {
    let key = liandong_certs::SigningKey::generate().unwrap();
    let agency = liandong_core::domain::AgencyId::parse("agency", agency).unwrap();
    let signer = crate::signer::Signer::from_pkcs8(agency, key.pkcs8_der()).unwrap();
    (std::sync::Arc::new(signer), key.public_key())
}

/// A fresh state file in a temporary directory.
pub(crate) async fn store() -> (tempfile::TempDir, crate::store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("state").join("adapter.db"))
        .await
        .unwrap();
    (dir, store)
}

/// An acceptor for `cz-psb` over `store` with room for `max_pending`.
pub(crate) fn acceptor(
    store: &crate::store::Store,
    max_pending: u64,
) -> (
    crate::daemon::accept::Acceptor,
    std::sync::Arc<tokio::sync::Notify>,
    [u8; 32],
) {
    let (signer, public) = signer("cz-psb");
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let acceptor = crate::daemon::accept::Acceptor::new(
        store.clone(),
        signer,
        max_pending,
        262_144,
        std::sync::Arc::clone(&wake),
    );
    (acceptor, wake, public)
}

/// The JSON form of a valid notification with this id (none when `None`)
/// and summary.
pub(crate) fn notification_json(id: Option<&str>, summary: &str) -> String {
    let mut value = serde_json::json!({
        "case_ref": "CZ-2026-HW-0042",
        "event": "EVENT_TYPE_CLUE_SHARED",
        "confidentiality": "CONFIDENTIALITY_INTERNAL",
        "region": "140423",
        "occurred_at": "2026-11-20T08:30:00Z",
        "summary": summary,
    });
    if let Some(id) = id {
        value["notification_id"] = serde_json::json!(id);
    }
    value.to_string()
}

/// Retry bounds short enough for tests.
pub(crate) const FAST_RETRY: crate::config::daemon::RetrySettings =
    crate::config::daemon::RetrySettings {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };

/// Waits (up to 10 s) until `check` holds.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a [`Webhook`] received.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: serde_json::Value,
    /// The status it was answered with.
    pub(crate) answered: u16,
}

/// A local webhook answering with `status` (changeable), recording every
/// request.
pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) status: Arc<std::sync::atomic::AtomicU16>,
    pub(crate) hooks: Arc<Mutex<Vec<Hook>>>,
}

impl Webhook {
    pub(crate) async fn start(status: u16) -> Self {
        use axum::extract::State;
        type Shared = (Arc<std::sync::atomic::AtomicU16>, Arc<Mutex<Vec<Hook>>>);
        async fn handle(
            State((status, hooks)): State<Shared>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            let answered = status.load(std::sync::atomic::Ordering::SeqCst);
            hooks.lock().unwrap().push(Hook {
                headers,
                body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                answered,
            });
            axum::http::StatusCode::from_u16(answered).unwrap()
        }
        let status = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handle))
            .with_state((Arc::clone(&status), Arc::clone(&hooks)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, status, hooks }
    }

    pub(crate) fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    pub(crate) fn settings(&self) -> crate::config::daemon::WebhookSink {
        crate::config::daemon::WebhookSink {
            url: self.url.clone(),
            headers: [("Authorization".to_owned(), "Bearer s3cret".to_owned())].into(),
            ca: None,
            timeout: Duration::from_secs(5),
            retry: FAST_RETRY,
        }
    }
}
