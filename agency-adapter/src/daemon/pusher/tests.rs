use std::sync::Arc;

use liandong_core::signing::verify;
use tokio::sync::Notify;

use crate::daemon::accept::{Acceptor, Origin};
use crate::testing::{self, FAST_RETRY, MockGateway, Script, eventually, notification_json};

use super::*;

struct Bed {
    _dir: tempfile::TempDir,
    store: Store,
    acceptor: Acceptor,
    public: [u8; 32],
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dead_letter: Arc<Notify>,
}

fn outbox(path: std::path::PathBuf, window: u32) -> OutboxSettings {
    OutboxSettings {
        path,
        max_pending: 100,
        max_in_flight: window,
        max_notification_bytes: 262_144,
        keep_sent: Duration::from_secs(86_400),
        retry: FAST_RETRY,
    }
}

/// Accepts `ids` (in order), then starts a pusher towards `gateway`.
async fn start(gateway: &GatewaySettings, ids: &[&str], window: u32) -> Bed {
    let (dir, store) = testing::store().await;
    let (acceptor, wake, public) = testing::acceptor(&store, 100);
    for id in ids {
        acceptor
            .accept_json(&notification_json(Some(id), "x"), Origin::Http)
            .await
            .unwrap();
    }
    let dead_letter = Arc::new(Notify::new());
    let pusher = Pusher {
        store: store.clone(),
        gateway: gateway.clone(),
        outbox: outbox(dir.path().join("unused"), window),
        wake,
        dead_letter: Arc::clone(&dead_letter),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(pusher.run(stop.clone()));
    Bed {
        _dir: dir,
        store,
        acceptor,
        public,
        stop,
        task,
        dead_letter,
    }
}

impl Bed {
    async fn drained(&self) {
        eventually("the outbox is empty", || async {
            self.store.snapshot().await.unwrap().outbox_depth == 0
        })
        .await;
    }

    async fn stop(self) -> Store {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the pusher stops")
            .unwrap();
        self.store
    }
}

#[tokio::test]
async fn the_outbox_is_sent_in_order_and_rows_leave_on_their_receipt() {
    let gateway = MockGateway::start(Script::default()).await;
    let ids = ["n-1", "n-2", "n-3", "n-4", "n-5"];
    let bed = start(&gateway.settings, &ids, 2).await;
    bed.drained().await;
    // Accepted while running: sent on the same stream.
    bed.acceptor
        .accept_json(&notification_json(Some("n-6"), "x"), Origin::Http)
        .await
        .unwrap();
    bed.drained().await;
    let public = bed.public;
    let store = bed.stop().await;
    {
        let seen = gateway.seen.lock().unwrap();
        assert_eq!(seen.stored, ["n-1", "n-2", "n-3", "n-4", "n-5", "n-6"]);
        assert_eq!(seen.streamed.len(), 6, "nothing was sent twice");
        assert_eq!(seen.streams, 1, "one long-lived stream");
        for notification in &seen.streamed {
            verify(notification, "cz-psb", &public).unwrap();
        }
    }
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!((snapshot.sent, snapshot.dead_letter_count), (6, 0));
    assert_eq!(store.receipt_of(6).await.unwrap().map(|r| r.0), Some(6));
}

#[tokio::test]
async fn a_broken_stream_is_resumed_without_loss_or_duplicates() {
    let gateway = MockGateway::start(Script {
        first_stream_breaks_after: Some(3),
        ..Script::default()
    })
    .await;
    let ids = ["n-1", "n-2", "n-3", "n-4", "n-5"];
    let bed = start(&gateway.settings, &ids, 4).await;
    bed.drained().await;
    let store = bed.stop().await;
    {
        let seen = gateway.seen.lock().unwrap();
        assert_eq!(seen.stored, ids, "each stored once, in order");
        assert!(seen.streams >= 2);
        assert!(
            seen.streamed.len() > ids.len(),
            "what had no receipt was sent again"
        );
    }
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.sent, 5);
    assert!(
        snapshot
            .last_error
            .as_deref()
            .unwrap()
            .contains("UNAVAILABLE"),
        "{:?}",
        snapshot.last_error
    );
}

#[tokio::test]
async fn refusals_retrying_cannot_fix_become_dead_letters_and_the_rest_goes_on() {
    let gateway = MockGateway::start(Script {
        refuse_ids: vec![
            (
                "n-2".into(),
                tonic::Status::invalid_argument(
                    "notification.recipients[0]: cz-x is not a registered agency",
                ),
            ),
            (
                "n-4".into(),
                tonic::Status::failed_precondition(
                    "notification_id n-4 was used for different content",
                ),
            ),
            (
                "n-5".into(),
                tonic::Status::permission_denied("ENVIRONMENT may not publish ARREST_APPROVED"),
            ),
        ],
        ..Script::default()
    })
    .await;
    let ids = ["n-1", "n-2", "n-3", "n-4", "n-5", "n-6"];
    let bed = start(&gateway.settings, &ids, 8).await;
    bed.drained().await;
    let dead_letter = Arc::clone(&bed.dead_letter);
    let store = bed.stop().await;
    tokio::time::timeout(Duration::from_secs(1), dead_letter.notified())
        .await
        .expect("the dead-letter reporter is woken");
    assert_eq!(gateway.seen.lock().unwrap().stored, ["n-1", "n-3", "n-6"]);
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!((snapshot.sent, snapshot.dead_letter_count), (3, 3));
    let mut dead: Vec<_> = snapshot
        .dead_letters
        .iter()
        .map(|d| (d.notification_id.as_str(), d.code.as_str()))
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            ("n-2", "INVALID_ARGUMENT"),
            ("n-4", "FAILED_PRECONDITION"),
            ("n-5", "PERMISSION_DENIED")
        ]
    );
    let n2 = snapshot
        .dead_letters
        .iter()
        .find(|d| d.notification_id == "n-2")
        .unwrap();
    assert_eq!(
        n2.reason,
        "notification.recipients[0]: cz-x is not a registered agency"
    );
}

#[tokio::test]
async fn refusals_that_may_pass_later_are_retried_not_dead_lettered() {
    for status in [
        tonic::Status::unavailable("the gateway's store is unavailable"),
        tonic::Status::resource_exhausted("quota"),
        tonic::Status::unauthenticated("certificate not registered"),
    ] {
        let code = status.code();
        let gateway = MockGateway::start(Script {
            refuse_ids: vec![("n-1".into(), status)],
            ..Script::default()
        })
        .await;
        let bed = start(&gateway.settings, &["n-1", "n-2"], 4).await;
        eventually("n-1 was tried several times", || async {
            gateway.seen.lock().unwrap().streams >= 3
        })
        .await;
        let store = bed.stop().await;
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.outbox_depth, 2, "{code:?}");
        assert_eq!(snapshot.dead_letter_count, 0, "{code:?}");
        assert!(
            gateway.seen.lock().unwrap().stored.is_empty(),
            "order is kept"
        );
    }
}

/// The gateway's refusal of a disabled agency, as it sends it.
fn agency_disabled() -> tonic::Status {
    let mut status = tonic::Status::permission_denied(
        "agency cz-psb is disabled by an operator: signing key compromised",
    );
    status.metadata_mut().insert(
        liandong_core::refusal::METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(liandong_core::refusal::AGENCY_DISABLED),
    );
    status
}

#[tokio::test]
async fn a_disabled_agency_keeps_its_outbox_and_retries() {
    // Over real mutual TLS, so the marker is read where the gateway's
    // trailers put it.
    let gateway = MockGateway::start(Script {
        refuse_ids: vec![("n-1".into(), agency_disabled())],
        ..Script::default()
    })
    .await;
    let bed = start(&gateway.settings, &["n-1", "n-2", "n-3"], 4).await;
    eventually("n-1 was tried several times", || async {
        gateway.seen.lock().unwrap().streams >= 3
    })
    .await;
    let store = bed.stop().await;
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.dead_letter_count, 0, "nothing is dead-lettered");
    assert_eq!(snapshot.outbox_depth, 3, "everything waits in the outbox");
    assert!(gateway.seen.lock().unwrap().stored.is_empty());
    let error = snapshot.last_error.expect("the refusal is recorded");
    assert_eq!(
        error,
        "refused: PERMISSION_DENIED: agency cz-psb is disabled by an operator: signing key compromised"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_keeps_everything_pending() {
    // Bound, never listening: connections are refused, and no parallel
    // test can be handed the port while it is held.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let pki = testing::Pki::new();
    let bed = start(
        &pki.settings(&format!("https://127.0.0.1:{port}")),
        &["n-1"],
        4,
    )
    .await;
    eventually("the error is recorded", || async {
        bed.store.snapshot().await.unwrap().last_error.is_some()
    })
    .await;
    let store = bed.stop().await;
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.outbox_depth, 1);
    let error = snapshot.last_error.unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
}

#[test]
fn only_the_gateways_own_refusals_of_three_kinds_are_permanent() {
    use tonic::{Code, Status};
    for code in [
        Code::InvalidArgument,
        Code::PermissionDenied,
        Code::FailedPrecondition,
    ] {
        assert!(is_permanent(&Status::new(code, "x")), "{code:?}");
    }
    for code in [
        Code::Unavailable,
        Code::ResourceExhausted,
        Code::Unauthenticated,
        Code::Internal,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::Unknown,
    ] {
        assert!(!is_permanent(&Status::new(code, "x")), "{code:?}");
    }
    // A local transport failure is never the gateway's verdict.
    let local = Status::from_error(Box::new(std::io::Error::other("reset")));
    assert!(!is_permanent(&local));
}

#[test]
fn a_disabled_agency_is_not_a_permanent_refusal() {
    assert!(!is_permanent(&agency_disabled()));
    // The same words without the gateway's marker are an ordinary
    // PERMISSION_DENIED.
    let unmarked = tonic::Status::permission_denied(agency_disabled().message());
    assert!(is_permanent(&unmarked));
}
