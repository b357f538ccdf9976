//! A plain HTTP/1.1 client for the gateway's ops port, and readers of the
//! Prometheus text format, shared by the ops tests.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::tls_bed::{self, RELOAD_REFUSED};
use liandong_tests::{Subscriber, Testbed, notification, publish, publish_clues};

const WAIT: Duration = Duration::from_secs(10);

/// `GET path` on the ops port at `base` (`http://127.0.0.1:PORT`): the
/// status code and the body.
pub(crate) async fn get(base: &str, path: &str) -> (u16, String) {
    let host = base.strip_prefix("http://").expect("an http:// URL");
    let mut tcp = TcpStream::connect(host)
        .await
        .expect("connect to the ops port");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut raw))
        .await
        .expect("the ops port answers within 30 s")
        .expect("read the answer");
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// The gateway's `/metrics` now.
pub(crate) async fn scrape(bed: &Testbed) -> String {
    let (status, body) = get(&bed.gateway.ops_url(), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample `series` (name and labels exactly as rendered,
/// e.g. `liandong_acks_total{agency="cz-psb"}`), if present.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("a number after {series}: {rest}"))
        })
}

/// Scrapes until `series` has `expected` (values recorded by other tasks
/// of the gateway may land just after the client saw the answer); panics
/// after ten seconds with the last scrape.
pub(crate) async fn wait_for_value(bed: &Testbed, series: &str, expected: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(bed).await;
        if value(&text, series) == Some(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {:?}, expected {expected}:\n{text}",
            value(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The metric names a scrape shows, histograms and summaries by their base
/// name (without `_bucket`, `_sum`, `_count`).
pub(crate) fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// Real traffic of every kind the metrics count: three clues published by
/// cz-eeb and one refused (`INVALID_ARGUMENT`); a cz-psb subscription
/// `metrics-psb` (ack timeout 1 s) that receives the three, acks two,
/// gets the first again and acks it; plain HTTP on the TLS port; cz-eeb-
/// xiangyuan's certificate revoked by an applied reload, then refused at
/// its handshake; and a reload refused (the registry does not parse, then
/// is restored).
pub(crate) async fn make_traffic(bed: &Testbed) {
    // A subscriber that acks all but the first delivery until it comes
    // again.
    let mut psb = bed.client("cz-psb").await;
    let mut subscriber = Subscriber::open_with(
        &mut psb,
        pb::SubscriptionOpen {
            name: "metrics-psb".into(),
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Beginning(true)),
            }),
            ack_timeout_seconds: 1,
            ..Default::default()
        },
    )
    .await
    .expect("subscribe");

    let mut eeb = bed.client("cz-eeb").await;
    let receipts = publish_clues(&mut eeb, "metrics-", "CZ-METRICS-1", 0..3).await;
    let mut invalid = notification(
        "metrics-invalid",
        "CZ-METRICS-1",
        Event::ClueShared,
        Level::Internal,
        &[],
    );
    invalid.confidentiality = 0;
    let refused = publish(&mut eeb, invalid).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let mut first_attempts = Vec::new();
    for _ in &receipts {
        let delivery = subscriber.expect_delivery(WAIT, "a first delivery").await;
        assert_eq!(delivery.attempt, 1);
        first_attempts.push(delivery.sequence);
    }
    subscriber.ack(&first_attempts[1..]).await;
    let again = subscriber.expect_delivery(WAIT, "the redelivery").await;
    assert_eq!(
        (again.sequence, again.attempt),
        (first_attempts[0], 2),
        "the unacknowledged delivery comes again"
    );
    subscriber.ack(&[again.sequence]).await;
    // Every ack is processed before the stream ends.
    subscriber
        .close()
        .await
        .expect("the subscription ends cleanly");

    // The TLS port: plain HTTP, then a certificate revoked by a reload.
    tls_bed::plaintext_exchange(bed.gateway.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    bed.pki.revoke("cz-eeb-xiangyuan").expect("revoke");
    tls_bed::reload(bed).await;
    let revoked = tls_bed::try_call(bed, &bed.pki.credentials("cz-eeb-xiangyuan")).await;
    assert!(revoked.is_err(), "a revoked certificate is refused");

    // A reload that is refused: the registry does not parse.
    let registry = bed.dir.path().join("agencies.toml");
    let good = std::fs::read_to_string(&registry).expect("registry");
    std::fs::write(&registry, "this is not a registry").expect("break the registry");
    bed.gateway.signal(nix::sys::signal::Signal::SIGHUP);
    bed.wait_for_log(RELOAD_REFUSED, "the broken registry was not refused")
        .await;
    std::fs::write(&registry, good).expect("restore the registry");
}
