//! Scale questions: what each additional durable subscriber costs the
//! gateway per message, and what idle subscription streams cost in memory
//! and in an open loop's latency. Numbers are measured and printed,
//! never asserted.

use std::time::{Duration, Instant};

use anyhow::Context;

use liandong_tests::{Testbed, publish};

use crate::resources::Probe;
use crate::{
    Args, Derived, Payload, Row, charge, open_idle_streams, open_loop, quantiles,
    subscribe_from_now,
};

/// Deliveries a subscriber waits for before it gives up.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// The `--subscribers` sweep, then the least-squares slope of the
/// gateway's CPU per message over the number of subscribers.
pub(crate) async fn subscribers(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
    probe: &Probe,
) -> anyhow::Result<(Vec<Row>, Vec<Derived>)> {
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for &k in &args.subscribers {
        let fan = fan_out(bed, args, payload, probe, k).await?;
        if let Some(us) = fan[0].cpu_us_per_message() {
            points.push((k as f64, us));
        }
        rows.extend(fan);
    }
    let mut derived = Vec::new();
    if let Some(slope) = slope(&points) {
        println!("gateway CPU per message grows by {slope:.1} µs per additional subscriber");
        derived.push(Derived {
            key: "gateway_cpu_us_per_message_per_subscriber",
            text: "gateway CPU µs per message per additional subscriber (least-squares slope)"
                .into(),
            value: slope,
        });
    }
    Ok((rows, derived))
}

/// The least-squares slope of `y` over `x`, when `x` varies.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

/// `k` durable subscribers of `cz-psb`, caught up, then
/// `--notifications` unary publishes of `cz-eeb`; ends when every
/// subscriber has received and acked every one. The gateway's CPU from
/// the first publish to the last ack is charged to both rows.
async fn fan_out(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
    probe: &Probe,
    k: usize,
) -> anyhow::Result<Vec<Row>> {
    let total = args.notifications;
    let in_flight = args.in_flight.first().copied().unwrap_or(8).max(1);
    let prefix = format!("fan{k}-");
    let mut police = bed.client("cz-psb").await;
    let mut inboxes = Vec::with_capacity(k);
    for i in 0..k {
        inboxes.push(
            subscribe_from_now(&mut police, format!("bench-fan-{k}-{i}"))
                .await
                .with_context(|| format!("opening subscriber {i} of {k}"))?,
        );
    }
    let mut clients = Vec::new();
    for _ in 0..in_flight.min(args.connections).max(1) {
        clients.push(bed.client("cz-eeb").await);
    }
    // Caught up: every subscriber holds (and acks) a marker published
    // after it opened, so its stream is live before the clock starts.
    if k > 0 {
        let marker = payload
            .seeded(k as u64 ^ 0xFA17)
            .shared(&format!("{prefix}ready"), "CZ-BENCH-FAN");
        publish(&mut clients[0], marker).await?;
        for (i, inbox) in inboxes.iter_mut().enumerate() {
            let delivery = inbox
                .next(DELIVERY_WAIT)
                .await?
                .with_context(|| format!("subscriber {i} of {k} did not catch up"))?;
            inbox.ack(&[delivery.sequence]).await;
        }
    }

    let before = probe.sample()?;
    let started = Instant::now();
    let mut receivers = Vec::with_capacity(k);
    for mut inbox in inboxes {
        let prefix = prefix.clone();
        receivers.push(tokio::spawn(async move {
            let mut arrived = vec![None; total];
            let mut count = 0;
            while count < total {
                let delivery = inbox
                    .next(DELIVERY_WAIT)
                    .await?
                    .with_context(|| format!("{count} of {total} deliveries arrived"))?;
                let at = Instant::now();
                let i: usize = delivery
                    .notification
                    .as_ref()
                    .and_then(|n| n.notification_id.strip_prefix(&prefix))
                    .and_then(|i| i.parse().ok())
                    .context("a delivery that the fan-out did not publish")?;
                inbox.ack(&[delivery.sequence]).await;
                if let Some(slot @ None) = arrived.get_mut(i) {
                    *slot = Some(at);
                    count += 1;
                }
            }
            // Closing waits until the gateway has processed every ack.
            inbox.close().await?;
            anyhow::Ok(arrived)
        }));
    }
    let per_call = total.div_ceil(in_flight);
    let mut publishers = Vec::with_capacity(in_flight);
    for t in 0..in_flight {
        let mut client = clients[t % clients.len()].clone();
        let mut payload = payload.seeded((k * 1000 + t) as u64);
        let prefix = prefix.clone();
        publishers.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(per_call);
            for i in (t..total).step_by(in_flight) {
                let n = payload.shared(&format!("{prefix}{i}"), "CZ-BENCH-FAN");
                let at = Instant::now();
                publish(&mut client, n).await?;
                sent.push((i, at, at.elapsed()));
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent_at = vec![started; total];
    let mut receipts = Vec::with_capacity(total);
    for task in publishers {
        for (i, at, latency) in task.await?? {
            sent_at[i] = at;
            receipts.push(latency);
        }
    }
    let published = started.elapsed();
    let mut last_arrival: Vec<Option<Instant>> = vec![None; total];
    for receiver in receivers {
        for (i, at) in receiver.await??.into_iter().enumerate() {
            let at = at.context("a notification no subscriber holds")?;
            last_arrival[i] = Some(last_arrival[i].map_or(at, |last: Instant| last.max(at)));
        }
    }
    let end = Instant::now();
    let mut rows = vec![Row {
        test: format!("{k} subscribers: Publish, {in_flight} in flight"),
        in_flight: Some(in_flight),
        count: receipts.len(),
        elapsed: published,
        latency: quantiles(receipts),
        behind: None,
        gateway_cpu: None,
    }];
    if k > 0 {
        let deliveries: Vec<Duration> = last_arrival
            .iter()
            .zip(&sent_at)
            .filter_map(|(arrived, sent)| arrived.map(|at| at.saturating_duration_since(*sent)))
            .collect();
        rows.push(Row {
            test: format!("{k} subscribers: publish → delivered to all"),
            in_flight: Some(in_flight),
            count: deliveries.len(),
            elapsed: end.saturating_duration_since(started),
            latency: quantiles(deliveries),
            behind: None,
            gateway_cpu: None,
        });
    }
    for row in &rows {
        crate::print_row(row);
    }
    charge(&mut rows, &before, probe)?;
    Ok(rows)
}

/// `--scenario idle`: an open loop without idle streams, then `M` idle
/// streams opened, then the same open loop again.
pub(crate) async fn idle(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
    probe: &Probe,
) -> anyhow::Result<(Vec<Row>, Vec<Derived>)> {
    let rate = args.open_loop.unwrap_or(1000);
    anyhow::ensure!(rate > 0, "--open-loop must be at least 1 per second");
    let streams = args.idle_streams;
    anyhow::ensure!(streams > 0, "--scenario idle needs --idle-streams M");
    let mut rows = Vec::new();

    let without = open_loop(bed, args, payload, probe, rate, "a", ", no idle streams").await?;

    // Settle, so that what the open loop left in flight is not counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = probe.sample()?.rss_kb;
    let idle = open_idle_streams(
        bed,
        streams,
        args.idle_connections
            .unwrap_or_else(|| streams.div_ceil(150)),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = probe.sample()?.rss_kb;
    let per_stream = rss_after.saturating_sub(rss_before) as f64 / streams as f64;
    println!(
        "gateway RSS {rss_before} KB before, {rss_after} KB with {streams} idle streams: \
         {per_stream:.2} KB per stream"
    );

    let with = open_loop(
        bed,
        args,
        payload,
        probe,
        rate,
        "b",
        &format!(", {streams} idle streams"),
    )
    .await?;
    let mut idle_frames = 0;
    for stream in idle {
        idle_frames += stream.close().await?.len();
    }
    anyhow::ensure!(
        idle_frames == 0,
        "idle streams received {idle_frames} frames"
    );

    let p99 = |row: &Row| row.latency.map_or(0.0, |l| l[2].as_secs_f64() * 1000.0);
    let ratio = |with: f64, without: f64| if without > 0.0 { with / without } else { 0.0 };
    let derived = vec![
        Derived {
            key: "idle_stream_rss_kb",
            text: format!("gateway RSS per idle stream, KB ({streams} streams)"),
            value: per_stream,
        },
        Derived {
            key: "receipt_p99_ratio_with_idle",
            text: "publish → receipt p99, with idle streams / without".into(),
            value: ratio(p99(&with[0]), p99(&without[0])),
        },
        Derived {
            key: "delivered_p99_ratio_with_idle",
            text: "publish → delivered p99, with idle streams / without".into(),
            value: ratio(p99(&with[1]), p99(&without[1])),
        },
    ];
    rows.extend(without);
    rows.extend(with);
    Ok((rows, derived))
}
