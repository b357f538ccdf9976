//! The load a fault run keeps up: publishers with unique ids (two agencies
//! over gRPC, one through its adapter daemon's HTTP source and drop folder)
//! and durable named subscriptions that acknowledge what they get, and
//! reconnect and resume whenever their stream ends.
//!
//! Every call and every frame goes into the history as it happens; the
//! workload never judges what it sees.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::tls::ClientCredentials;

use super::Rng;
use super::history::{AckSent, Frame, Op, Outcome, Shared, Via};

/// How long a publish may take before its outcome counts as unknown.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(5);

/// The recipient of every RESTRICTED notification, and the agency whose
/// registry entry the registry fault changes.
pub const RECIPIENT: &str = "cz-procuratorate-xiangyuan";

/// Text every RESTRICTED notification's summary carries: seen outside its
/// readers, it is a leak.
pub const CANARY: &str = "CANARY-RESTRICTED";

/// Agencies that publish over gRPC.
pub const DIRECT_PUBLISHERS: &[&str] = &["cz-eeb-luzhou", "cz-psb"];

/// The subscriptions of a run: (owner, name).
pub const SUBSCRIPTIONS: &[(&str, &str)] = &[
    (RECIPIENT, "fh-recipient"),
    ("cz-procuratorate", "fh-parent"),
    ("cz-psb-xiangyuan", "fh-member"),
    ("cz-press-office", "fh-observer"),
    (STALLED.0, STALLED.1),
];

/// The subscription the stall fault stops reading.
pub const STALLED: (&str, &str) = ("cz-psb", "fh-stalled");

/// The key the history uses for a subscription.
pub fn key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}")
}

/// The running workload.
pub struct Workload {
    stop_publishing: CancellationToken,
    stop_reading: CancellationToken,
    publishers: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
    /// Set while the stalled subscription must not read.
    pub stall: Arc<AtomicBool>,
}

/// Where the workload sends its load.
#[derive(Clone)]
pub struct Target {
    /// The gateway's URL.
    pub url: String,
    /// Credentials of each agency, by id.
    pub credentials: Arc<dyn Fn(&str) -> ClientCredentials + Send + Sync>,
    /// The adapter's HTTP source port.
    pub adapter_port: u16,
    /// The adapter's drop folder.
    pub drop_folder: PathBuf,
}

impl Workload {
    /// Starts publishers and subscribers.
    pub fn start(target: &Target, history: &Shared, seed: u64) -> Self {
        let stop_publishing = CancellationToken::new();
        let stop_reading = CancellationToken::new();
        let stall = Arc::new(AtomicBool::new(false));
        let mut publishers = Vec::new();
        let mut subscribers = Vec::new();
        for (i, agency) in DIRECT_PUBLISHERS.iter().enumerate() {
            publishers.push(tokio::spawn(direct_publisher(
                target.clone(),
                history.clone(),
                stop_publishing.clone(),
                agency,
                Rng::new(seed ^ ((i as u64 + 1) * 0x9E37_79B9)),
            )));
        }
        publishers.push(tokio::spawn(adapter_publisher(
            target.clone(),
            history.clone(),
            stop_publishing.clone(),
            Rng::new(seed ^ 0xADA9),
        )));
        for &(owner, name) in SUBSCRIPTIONS {
            let stalled = (owner, name) == STALLED;
            subscribers.push(tokio::spawn(subscriber(
                target.clone(),
                history.clone(),
                stop_reading.clone(),
                owner,
                name,
                stalled.then(|| stall.clone()),
            )));
        }
        Self {
            stop_publishing,
            stop_reading,
            publishers,
            subscribers,
            stall,
        }
    }

    /// Stops publishing and waits for the last calls to end; subscribers
    /// keep reading.
    pub async fn stop_publishing(&mut self) {
        self.stop_publishing.cancel();
        for task in self.publishers.drain(..) {
            let _ = task.await;
        }
    }

    /// Stops the subscribers.
    pub async fn stop_reading(&mut self) {
        self.stall.store(false, Ordering::SeqCst);
        self.stop_reading.cancel();
        for task in self.subscribers.drain(..) {
            let _ = task.await;
        }
    }
}

/// A notification of `agency` numbered `n`: a clue, PUBLIC, INTERNAL or
/// RESTRICTED to [`RECIPIENT`] (with the canary), padded so that windows of
/// unacknowledged deliveries weigh something.
pub fn make_notification(
    agency: &str,
    n: u64,
    rng: &mut Rng,
    restricted_allowed: bool,
) -> pb::Notification {
    let id = format!("{agency}-{n}");
    let roll = rng.below(100);
    let (level, recipients): (Level, &[&str]) = if roll < 15 {
        (Level::Public, &[])
    } else if roll < 55 || !restricted_allowed {
        (Level::Internal, &[])
    } else {
        (Level::Restricted, &[RECIPIENT])
    };
    let mut n = crate::notification(
        &id,
        &format!("CZ-FH-2026-{:04}", n % 7),
        Event::ClueShared,
        level,
        recipients,
    );
    // Each agency reports within its own jurisdiction.
    if agency == "cz-eeb-luzhou" {
        n.region = "140403".to_owned();
    }
    n.summary = if level == Level::Restricted {
        format!("{CANARY} {id}")
    } else {
        format!("clue {id}")
    };
    n.body = Some(pb::CaseBody {
        description: "现场取样记录 ".repeat(64),
        ..Default::default()
    });
    n
}

fn classify(
    result: Result<Result<pb::PublishReceipt, tonic::Status>, tokio::time::error::Elapsed>,
) -> Outcome {
    match result {
        Err(_) => Outcome::Unknown {
            reason: "client deadline".into(),
        },
        Ok(Ok(receipt)) => Outcome::Ok {
            sequence: Some(receipt.sequence),
            duplicate: receipt.duplicate,
        },
        Ok(Err(status)) => {
            let gateway_says_nothing_written = status.code() == Code::Unavailable
                && (status
                    .message()
                    .starts_with("the gateway's store is unavailable")
                    || status.message().starts_with("the gateway is shutting down"));
            match status.code() {
                Code::InvalidArgument
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::ResourceExhausted
                | Code::Unauthenticated
                | Code::NotFound
                | Code::AlreadyExists => Outcome::Refused {
                    code: format!("{:?}", status.code()),
                },
                Code::Unavailable if gateway_says_nothing_written => Outcome::Refused {
                    code: "Unavailable".into(),
                },
                code => Outcome::Unknown {
                    reason: format!("{code:?}"),
                },
            }
        }
    }
}

/// Publishes `notification` as `agency` once, with the deadline.
pub async fn publish_once(
    client: &mut ExchangeClient<Channel>,
    notification: pb::Notification,
) -> Outcome {
    classify(tokio::time::timeout(PUBLISH_DEADLINE, crate::publish(client, notification)).await)
}

/// A client for `agency`, or None if the gateway cannot be reached now.
pub async fn connect(target: &Target, agency: &str) -> Option<ExchangeClient<Channel>> {
    connect_with_window(target, agency, None).await
}

/// HTTP/2 stream window of the subscriber that stops reading: small, so the
/// gateway's frames back up into its own channel while it is stalled (with
/// the default window of megabytes the client would buffer them all).
const STALLED_STREAM_WINDOW: u32 = 4096;

/// A client for `agency` whose streams may hold `window` bytes the client
/// has not read, or None if the gateway cannot be reached now.
async fn connect_with_window(
    target: &Target,
    agency: &str,
    window: Option<u32>,
) -> Option<ExchangeClient<Channel>> {
    let credentials = (target.credentials)(agency);
    let connect = credentials.connect_tuned(&target.url, None, |endpoint| {
        endpoint.initial_stream_window_size(window)
    });
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(channel)) => Some(ExchangeClient::new(channel)),
        _ => None,
    }
}

fn record(history: &Shared, op: Op) -> usize {
    let mut history = history.lock().expect("history");
    history.ops.push(op);
    history.ops.len() - 1
}

fn settle(history: &Shared, index: usize, outcome: Outcome) {
    history.lock().expect("history").ops[index].outcome = outcome;
}

async fn direct_publisher(
    target: Target,
    history: Shared,
    stop: CancellationToken,
    agency: &'static str,
    mut rng: Rng,
) {
    let mut client = None;
    let mut n = 0;
    while !stop.is_cancelled() {
        let Some(c) = client.as_mut() else {
            client = connect(&target, agency).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        n += 1;
        let notification = make_notification(agency, n, &mut rng, true);
        let index = record(
            &history,
            Op {
                sender: agency.to_owned(),
                via: Via::Direct,
                notification: notification.clone(),
                outcome: Outcome::Pending,
                started: Instant::now(),
                resolution: None,
            },
        );
        let outcome = publish_once(c, notification).await;
        if matches!(outcome, Outcome::Unknown { .. }) {
            client = None;
        }
        settle(&history, index, outcome);
        tokio::time::sleep(Duration::from_millis(10 + rng.below(30))).await;
    }
}

/// The JSON an agency system hands its adapter for `n`.
pub fn adapter_json(n: &pb::Notification) -> String {
    let level = match Level::try_from(n.confidentiality) {
        Ok(Level::Public) => "CONFIDENTIALITY_PUBLIC",
        _ => "CONFIDENTIALITY_INTERNAL",
    };
    json!({
        "notification_id": n.notification_id,
        "case_ref": n.case_ref,
        "event": "EVENT_TYPE_CLUE_SHARED",
        "confidentiality": level,
        "region": n.region,
        "occurred_at": "2026-11-20T08:30:00Z",
        "summary": n.summary,
    })
    .to_string()
}

/// POSTs a notification to the adapter's HTTP source. Refused when the
/// connection is refused (nothing was sent); unknown when it breaks later.
pub fn post_to_adapter(port: u16, body: &str) -> Outcome {
    let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(stream) => stream,
        Err(_) => {
            return Outcome::Refused {
                code: "connection refused".into(),
            };
        }
    };
    let _ = stream.set_read_timeout(Some(PUBLISH_DEADLINE));
    let sent = write!(
        stream,
        "POST /v1/notifications HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        crate::adapter_bed::HTTP_TOKEN,
        body.len()
    );
    let mut raw = Vec::new();
    if sent.is_err() || stream.read_to_end(&mut raw).is_err() {
        return Outcome::Unknown {
            reason: "HTTP connection broke".into(),
        };
    }
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Unknown {
            reason: "no HTTP answer".into(),
        };
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match status {
        200..=299 => Outcome::Ok {
            sequence: None,
            duplicate: body["duplicate"] == json!(true),
        },
        0 => Outcome::Unknown {
            reason: "unreadable HTTP answer".into(),
        },
        _ => Outcome::Refused {
            code: format!("HTTP {status}"),
        },
    }
}

async fn adapter_publisher(target: Target, history: Shared, stop: CancellationToken, mut rng: Rng) {
    let agency = super::bed::ADAPTER_AGENCY;
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        let notification = make_notification(agency, n, &mut rng, false);
        let body = adapter_json(&notification);
        let via = if n % 2 == 0 {
            Via::AdapterHttp
        } else {
            Via::AdapterFolder
        };
        let index = record(
            &history,
            Op {
                sender: agency.to_owned(),
                via,
                notification: notification.clone(),
                outcome: Outcome::Pending,
                started: Instant::now(),
                resolution: None,
            },
        );
        let outcome = match via {
            Via::AdapterHttp => {
                let port = target.adapter_port;
                tokio::task::spawn_blocking(move || post_to_adapter(port, &body))
                    .await
                    .unwrap_or(Outcome::Unknown {
                        reason: "HTTP call panicked".into(),
                    })
            }
            _ => {
                // The way agency systems must drop files: written under
                // another name, then renamed.
                let name = format!("{}.json", notification.notification_id);
                let temporary = target.drop_folder.join(format!(".{name}.tmp"));
                match std::fs::write(&temporary, &body)
                    .and_then(|()| std::fs::rename(&temporary, target.drop_folder.join(&name)))
                {
                    Ok(()) => Outcome::Ok {
                        sequence: None,
                        duplicate: false,
                    },
                    Err(error) => Outcome::Refused {
                        code: format!("drop failed: {error}"),
                    },
                }
            }
        };
        settle(&history, index, outcome);
        tokio::time::sleep(Duration::from_millis(30 + rng.below(60))).await;
    }
}

/// A subscription stream with its request side, telling a clean end of
/// stream from silence.
struct Stream {
    requests: mpsc::Sender<pb::SubscribeRequest>,
    deliveries: tonic::Streaming<pb::Delivery>,
}

async fn open(
    client: &mut ExchangeClient<Channel>,
    name: &str,
    stalled: bool,
    lazy: bool,
) -> Result<Stream, tonic::Status> {
    let (requests, rx) = mpsc::channel(256);
    let open = pb::SubscriptionOpen {
        name: name.to_owned(),
        start: Some(pb::StartPosition {
            position: Some(pb::start_position::Position::Beginning(true)),
        }),
        // The stalled one lets the gateway send as much as it may; the
        // recipient keeps a short ack timeout so that the deliveries it
        // leaves unacknowledged are sent again while the run goes on.
        max_in_flight: if stalled { 1024 } else { 256 },
        ack_timeout_seconds: match (stalled, lazy) {
            (true, _) => 30,
            (false, true) => 2,
            (false, false) => 5,
        },
        ..Default::default()
    };
    requests
        .send(pb::SubscribeRequest {
            kind: Some(pb::subscribe_request::Kind::Open(open)),
        })
        .await
        .map_err(|_| tonic::Status::internal("request stream closed"))?;
    let deliveries = client
        .subscribe(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Stream {
        requests,
        deliveries,
    })
}

async fn subscriber(
    target: Target,
    history: Shared,
    stop: CancellationToken,
    owner: &'static str,
    name: &'static str,
    stall: Option<Arc<AtomicBool>>,
) {
    let key = key(owner, name);
    let lazy = owner == RECIPIENT;
    let mut session = 0;
    while !stop.is_cancelled() {
        let window = stall.as_ref().map(|_| STALLED_STREAM_WINDOW);
        let Some(mut client) = connect_with_window(&target, owner, window).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut stream = match tokio::time::timeout(
            Duration::from_secs(5),
            open(&mut client, name, stall.is_some(), lazy),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        session += 1;
        let mut acked = HashSet::new();
        let end = loop {
            if stall.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let message = tokio::select! {
                () = stop.cancelled() => break None,
                m = tokio::time::timeout(Duration::from_millis(200), stream.deliveries.message()) => m,
            };
            let delivery = match message {
                Err(_) => continue,
                Ok(Ok(Some(delivery))) => delivery,
                Ok(Ok(None)) => break Some("stream ended".to_owned()),
                Ok(Err(status)) => {
                    break Some(format!("{:?}: {}", status.code(), status.message()));
                }
            };
            let n = delivery.notification.clone().unwrap_or_default();
            let restricted = n.confidentiality == Level::Restricted as i32;
            history.lock().expect("history").frames.push(Frame {
                subscription: key.clone(),
                session,
                sequence: delivery.sequence,
                withheld: delivery.withheld,
                attempt: delivery.attempt,
                sender: delivery.sender.clone(),
                notification_id: n.notification_id.clone(),
                summary: n.summary.clone(),
                at: Instant::now(),
            });
            // The recipient leaves full RESTRICTED deliveries unacknowledged
            // until their third attempt, so some are always awaiting
            // redelivery (its ack timeout is two seconds).
            if lazy && restricted && !delivery.withheld && delivery.attempt < 3 {
                continue;
            }
            if acked.insert(delivery.sequence) {
                let sent = stream
                    .requests
                    .send(crate::ack_request(&[delivery.sequence]))
                    .await;
                if sent.is_ok() {
                    history.lock().expect("history").acks.push(AckSent {
                        subscription: key.clone(),
                        session,
                        sequence: delivery.sequence,
                        at: Instant::now(),
                    });
                }
            }
        };
        if let Some(status) = end {
            history.lock().expect("history").session_ends.push((
                key.clone(),
                session,
                status,
                Instant::now(),
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            return;
        }
    }
}

/// Opens a new subscription `name` of `owner` from the beginning, reads
/// for `period` acknowledging everything, and records the frames (session
/// 1). Used to see what a fresh reader is served at a given moment.
pub async fn probe(target: &Target, history: &Shared, owner: &str, name: &str, period: Duration) {
    let key = key(owner, name);
    let Some(mut client) = connect(target, owner).await else {
        return;
    };
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(3), open(&mut client, name, true, false)).await
    else {
        return;
    };
    let deadline = tokio::time::Instant::now() + period;
    while let Ok(Ok(Some(delivery))) =
        tokio::time::timeout_at(deadline, stream.deliveries.message()).await
    {
        let n = delivery.notification.clone().unwrap_or_default();
        history.lock().expect("history").frames.push(Frame {
            subscription: key.clone(),
            session: 1,
            sequence: delivery.sequence,
            withheld: delivery.withheld,
            attempt: delivery.attempt,
            sender: delivery.sender.clone(),
            notification_id: n.notification_id.clone(),
            summary: n.summary.clone(),
            at: Instant::now(),
        });
        let _ = stream
            .requests
            .send(crate::ack_request(&[delivery.sequence]))
            .await;
    }
}
