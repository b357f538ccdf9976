use std::time::Duration;

use crate::error::{CommandError, exit};
use crate::testing::{MockGateway, Pki, Script, SubscribeEnd, delivery};

use super::*;

fn open(name: &str) -> pb::SubscriptionOpen {
    pb::SubscriptionOpen {
        name: name.into(),
        filter: Some(pb::SubscriptionFilter {
            case_ref_prefix: "CZ-".into(),
            ..Default::default()
        }),
        start: None,
        max_in_flight: 4,
        ack_timeout_seconds: 0,
    }
}

#[tokio::test]
async fn unreadable_credentials_are_a_configuration_error() {
    let pki = Pki::new();
    let mut settings = pki.settings("https://127.0.0.1:1");
    settings.key = pki.dir.path().join("absent.key");
    let err = GatewayClient::connect(&settings).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Credentials(TlsError::Read { .. })),
        "{err:?}"
    );
    assert_eq!(CommandError::from(err).exit_code(), exit::USAGE);

    // A certificate where the key should be.
    let mut settings = pki.settings("https://127.0.0.1:1");
    settings.key = settings.cert.clone();
    let err = GatewayClient::connect(&settings).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Credentials(TlsError::NoPem { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_gateway_that_is_not_listening_is_unreachable() {
    let pki = Pki::new();
    // Bound, never listening: connections are refused, and no parallel
    // test can be handed the port while it is held.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let settings = pki.settings(&format!("https://127.0.0.1:{port}"));
    let err = GatewayClient::connect(&settings).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
    let err = CommandError::from(err);
    assert_eq!(err.exit_code(), exit::UNAVAILABLE);
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_gateway_with_a_certificate_from_another_ca_is_refused() {
    let gateway = MockGateway::start(Script::default()).await;
    let other = Pki::new();
    let mut settings = gateway.settings.clone();
    settings.ca = other.dir.path().join("ca.crt");
    let err = GatewayClient::connect(&settings).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
    assert_eq!(CommandError::from(err).exit_code(), exit::UNAVAILABLE);

    // And the name checked must be on the gateway's certificate.
    let mut settings = gateway.settings.clone();
    settings.server_name = Some("gateway.elsewhere".into());
    let err = GatewayClient::connect(&settings).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn publish_and_get_case_return_the_gateways_answers() {
    let gateway = MockGateway::start(Script::default()).await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let receipt = client
        .publish(pb::Notification {
            notification_id: "n-9".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (receipt.notification_id.as_str(), receipt.sequence),
        ("n-9", 42)
    );

    let view = client.get_case("CZ-2026-HW-0042").await.unwrap();
    assert_eq!(view.case_ref, "CZ-2026-HW-0042");
    assert_eq!(view.timeline.len(), 1);
    let status = client.get_case("CZ-UNKNOWN").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no case CZ-UNKNOWN");
    assert_eq!(
        gateway.seen.lock().unwrap().case_requests,
        ["CZ-2026-HW-0042", "CZ-UNKNOWN"]
    );
}

#[tokio::test]
async fn subscribe_sends_open_first_then_acks_and_close_flushes_them() {
    let gateway = MockGateway::start(Script {
        deliveries: vec![delivery(5, "CZ-1"), delivery(6, "CZ-2")],
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let mut subscription = client.subscribe(open("psb-main")).await.unwrap();
    assert_eq!(gateway.seen.lock().unwrap().opens, [Some(open("psb-main"))]);

    let first = subscription.next().await.unwrap().unwrap();
    assert_eq!(first, delivery(5, "CZ-1"));
    subscription.ack(&[5]).await.unwrap();
    subscription.ack(&[]).await.unwrap();
    let second = subscription.next().await.unwrap().unwrap();
    assert_eq!(second.sequence, 6);
    subscription.ack(&[6]).await.unwrap();

    // The mock ends the call once the request stream ends: close() returns
    // only then, so the acks have arrived.
    subscription.close(Duration::from_secs(5)).await.unwrap();
    let seen = gateway.seen.lock().unwrap();
    assert_eq!(seen.acks, [5, 6]);
    assert_eq!(seen.request_streams_ended, 1);
}

#[tokio::test]
async fn the_request_stream_stays_open_while_the_subscription_lives() {
    let gateway = MockGateway::start(Script {
        deliveries: vec![delivery(1, "CZ-1")],
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let mut subscription = client.subscribe(open("s")).await.unwrap();
    assert_eq!(subscription.next().await.unwrap().unwrap().sequence, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gateway.seen.lock().unwrap().request_streams_ended, 0);
    // Acks still get through after a pause.
    subscription.ack(&[1]).await.unwrap();
    gateway.wait_until(|seen| seen.acks == [1]).await;

    drop(subscription);
    gateway
        .wait_until(|seen| seen.request_streams_ended == 1)
        .await;
}

#[tokio::test]
async fn the_end_of_the_stream_is_none_or_the_gateways_status() {
    let gateway = MockGateway::start(Script {
        deliveries: vec![delivery(1, "CZ-1")],
        end: SubscribeEnd::Ok,
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let mut subscription = client.subscribe(open("s")).await.unwrap();
    assert!(subscription.next().await.unwrap().is_some());
    assert_eq!(subscription.next().await.unwrap(), None);

    let gateway = MockGateway::start(Script {
        end: SubscribeEnd::Status(tonic::Status::failed_precondition("filter differs")),
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let mut subscription = client.subscribe(open("s")).await.unwrap();
    let status = subscription.next().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message(), "filter differs");
}

#[tokio::test]
async fn a_refused_open_is_the_gateways_status() {
    let gateway = MockGateway::start(Script {
        refuse_open: Some(tonic::Status::permission_denied("not yours")),
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let status = client.subscribe(open("s")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(!crate::error::is_transport_failure(&status));
}

#[tokio::test]
async fn close_gives_up_after_the_grace_period() {
    let gateway = MockGateway::start(Script {
        end: SubscribeEnd::Never,
        ..Script::default()
    })
    .await;
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    let subscription = client.subscribe(open("s")).await.unwrap();
    subscription.ack(&[3]).await.unwrap();
    let started = tokio::time::Instant::now();
    subscription
        .close(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    gateway
        .wait_until(|seen| seen.acks == [3] && seen.request_streams_ended == 1)
        .await;
}
