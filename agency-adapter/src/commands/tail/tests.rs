use std::future::pending;

use liandong_core::pb;

use crate::client::Subscription;
use crate::error::exit;
use crate::testing::{MockGateway, Script, SubscribeEnd, delivery};

use super::*;

async fn open(gateway: &MockGateway) -> Subscription {
    let mut client = GatewayClient::connect(&gateway.settings).await.unwrap();
    client
        .subscribe(pb::SubscriptionOpen {
            name: "psb-main".into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn three() -> Script {
    Script {
        deliveries: vec![
            delivery(1, "CZ-1"),
            delivery(2, "CZ-2"),
            delivery(3, "CZ-3"),
        ],
        ..Script::default()
    }
}

#[tokio::test]
async fn limit_prints_acks_and_stops_after_n_deliveries() {
    let gateway = MockGateway::start(three()).await;
    let mut subscription = open(&gateway).await;
    let rules = StopRules {
        limit: Some(2),
        idle_exit: None,
    };
    let mut out = Vec::new();
    let summary = follow(&mut subscription, "psb-main", rules, &mut out, pending())
        .await
        .unwrap();
    assert_eq!(
        summary,
        TailSummary {
            end: TailEnd::Limit,
            deliveries: 2
        }
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], to_json(&delivery(1, "CZ-1")));
    assert_eq!(lines[1]["sequence"], 2);
    assert_eq!(lines[1]["notification"]["case_ref"], "CZ-2");
    subscription.close(CLOSE_GRACE).await.unwrap();
    // The third delivery was neither printed nor acknowledged.
    assert_eq!(gateway.seen.lock().unwrap().acks, [1, 2]);
}

#[tokio::test]
async fn idle_exit_stops_when_nothing_arrives() {
    let gateway = MockGateway::start(three()).await;
    let mut subscription = open(&gateway).await;
    let rules = StopRules {
        limit: None,
        idle_exit: Some(Duration::from_millis(300)),
    };
    let mut out = Vec::new();
    let summary = follow(&mut subscription, "psb-main", rules, &mut out, pending())
        .await
        .unwrap();
    assert_eq!(summary.end, TailEnd::Idle);
    assert_eq!(summary.deliveries, 3);
    assert_eq!(lines(&out).len(), 3);
    gateway.wait_until(|seen| seen.acks == [1, 2, 3]).await;
}

#[tokio::test]
async fn a_stream_ended_ok_by_the_gateway_is_a_normal_end() {
    let gateway = MockGateway::start(Script {
        end: SubscribeEnd::Ok,
        ..three()
    })
    .await;
    let mut subscription = open(&gateway).await;
    let mut out = Vec::new();
    let summary = follow(
        &mut subscription,
        "s",
        StopRules::default(),
        &mut out,
        pending(),
    )
    .await
    .unwrap();
    assert_eq!(
        summary,
        TailSummary {
            end: TailEnd::Ended,
            deliveries: 3
        }
    );
}

#[tokio::test]
async fn a_stream_ended_with_an_error_is_a_refusal() {
    let gateway = MockGateway::start(Script {
        deliveries: vec![delivery(1, "CZ-1")],
        end: SubscribeEnd::Status(tonic::Status::failed_precondition(
            "subscription psb-main has another filter",
        )),
        ..Script::default()
    })
    .await;
    let mut subscription = open(&gateway).await;
    let mut out = Vec::new();
    let err = follow(
        &mut subscription,
        "s",
        StopRules::default(),
        &mut out,
        pending(),
    )
    .await
    .unwrap_err();
    assert_eq!(lines(&out).len(), 1);
    assert_eq!(err.exit_code(), exit::REFUSED);
    assert_eq!(
        err.message(),
        "refused: FAILED_PRECONDITION: subscription psb-main has another filter"
    );
}

#[tokio::test]
async fn a_signal_stops_following() {
    let gateway = MockGateway::start(Script::default()).await;
    let mut subscription = open(&gateway).await;
    let mut out = Vec::new();
    let summary = follow(
        &mut subscription,
        "s",
        StopRules::default(),
        &mut out,
        tokio::time::sleep(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    assert_eq!(summary.end, TailEnd::Interrupted);
    assert!(out.is_empty());
}

/// Standard output that accepts `room` lines and then fails.
struct ClosedAfter {
    room: usize,
    written: Vec<u8>,
}

impl Write for ClosedAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.iter().filter(|&&b| b == b'\n').count() >= self.room {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_delivery_that_could_not_be_printed_is_not_acknowledged() {
    let gateway = MockGateway::start(three()).await;
    let mut subscription = open(&gateway).await;
    let mut out = ClosedAfter {
        room: 1,
        written: Vec::new(),
    };
    let err = follow(
        &mut subscription,
        "s",
        StopRules::default(),
        &mut out,
        pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CommandError::Output(_)), "{err:?}");
    assert_eq!(err.exit_code(), exit::IO);
    subscription.close(CLOSE_GRACE).await.unwrap();
    assert_eq!(gateway.seen.lock().unwrap().acks, [1]);
}

#[test]
fn stop_rules_come_from_the_flags() {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from([
        "liandong-adapter",
        "tail",
        "--subscription",
        "s",
        "--limit",
        "5",
        "--idle-exit",
        "2",
    ])
    .unwrap();
    let crate::cli::Command::Tail(args) = cli.command else {
        panic!()
    };
    assert_eq!(
        StopRules::from(&args),
        StopRules {
            limit: Some(5),
            idle_exit: Some(Duration::from_secs(2)),
        }
    );
}
