//! `--scenario replicas` (PostgreSQL only): how long a notification takes
//! to reach a subscriber connected to another gateway replica than the
//! one it was published on, beside one connected to the same replica.
//!
//! A second gateway process starts on the test bed's database. The
//! recipient agency (`cz-psb`) holds two subscriptions, one on each
//! replica; `--round-trips` case transfers are published on the first
//! replica one at a time, and each is timed from the publish call until
//! each subscriber holds it (both acknowledge). The same publishes feed
//! both rows, so the difference between them is what crossing replicas
//! costs: the announcement (PostgreSQL LISTEN/NOTIFY) and the other
//! replica's read.

use std::time::{Duration, Instant};

use anyhow::Context;

use liandong_tests::{Subscriber, Testbed, publish};

use crate::{Args, Payload, Row, report, subscribe_from_now};

/// The rows: publish → delivered on the same replica, and on the other.
pub(crate) async fn latency(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(
        args.postgres.is_some(),
        "--scenario replicas needs --postgres URL: replicas share one PostgreSQL database"
    );
    let replica = bed.start_replica("b")?;
    let mut police_a = bed.client("cz-psb").await;
    let mut police_b = bed.client_of(&replica, "cz-psb").await;
    let mut same = subscribe_from_now(&mut police_a, "bench-same".into()).await?;
    let mut other = subscribe_from_now(&mut police_b, "bench-other".into()).await?;
    let mut eeb = bed.client("cz-eeb").await;
    let mut round_trip_payload = payload.seeded(u64::MAX - 2);
    let (mut on_same, mut on_other) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..args.round_trips {
        let n = round_trip_payload.transfer(&format!("x{i}"), "CZ-BENCH-R");
        let sent = Instant::now();
        let receipt = publish(&mut eeb, n).await?;
        let (a, b) = tokio::join!(arrival(&mut same, sent), arrival(&mut other, sent));
        let (a, b) = (a?, b?);
        for (_, sequence) in [a, b] {
            anyhow::ensure!(
                sequence == receipt.sequence,
                "delivered sequence {sequence}, published {}",
                receipt.sequence
            );
        }
        on_same.push(a.0);
        on_other.push(b.0);
    }
    let elapsed = started.elapsed();
    same.close().await?;
    other.close().await?;
    drop(replica);
    Ok(vec![
        report(
            "Publish → delivered, subscriber on the same replica",
            on_same.len(),
            elapsed,
            on_same,
        ),
        report(
            "Publish → delivered, subscriber on the other replica",
            on_other.len(),
            elapsed,
            on_other,
        ),
    ])
}

/// When the next delivery reached `inbox`, counted from `sent`, and its
/// sequence (acknowledged).
async fn arrival(inbox: &mut Subscriber, sent: Instant) -> anyhow::Result<(Duration, u64)> {
    let delivery = inbox
        .next(Duration::from_secs(10))
        .await?
        .context("no delivery within 10 s")?;
    let latency = sent.elapsed();
    inbox.ack(&[delivery.sequence]).await;
    Ok((latency, delivery.sequence))
}
