//! `liandong-bench`: a load generator against the real gateway binary.
//!
//! Starts a gateway on a throwaway PKI (SQLite by default, or PostgreSQL
//! with `--postgres URL`, in a fresh schema), then measures, over real
//! mutual TLS:
//! 1. unary `Publish` with several concurrent publishers: throughput and
//!    latency until the durable receipt;
//! 2. pipelined `PublishStream`: throughput;
//! 3. end-to-end delivery: latency from the publish call to the moment a
//!    subscriber holds the delivery, one notification at a time.
//!
//! With `--idle-streams N`, N subscription streams whose filters match
//! nothing stay open (over a few connections) during every phase: they
//! must cost the publishers nothing.
//!
//! Numbers are printed, not asserted; `docs/PERFORMANCE.md` records runs.
//! Build it in release: `cargo run --release -p liandong-tests --bin
//! liandong-bench`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio_stream::StreamExt;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Subscriber, Testbed, notification, publish};

/// Load generator for the Liandong gateway.
#[derive(Debug, Parser)]
struct Args {
    /// Notifications per phase.
    #[arg(long, default_value_t = 2000)]
    notifications: usize,
    /// Concurrent publishers (connections) in the unary phase.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Round trips measured in the delivery-latency phase.
    #[arg(long, default_value_t = 300)]
    round_trips: usize,
    /// Run on PostgreSQL at this URL (a fresh schema is created).
    #[arg(long)]
    postgres: Option<String>,
    /// Idle subscription streams (filters matching nothing) kept open
    /// during the phases.
    #[arg(long, default_value_t = 0)]
    idle_streams: usize,
    /// Connections the idle streams are spread over (default: one per 150
    /// streams, within the server's concurrent-stream limit).
    #[arg(long)]
    idle_connections: Option<usize>,
}

/// Opens `count` streams whose filter matches nothing the bench publishes.
async fn open_idle_streams(
    bed: &Testbed,
    count: usize,
    connections: usize,
) -> anyhow::Result<Vec<Subscriber>> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        clients.push(bed.client("cz-psb").await);
    }
    let started = Instant::now();
    let mut streams = Vec::with_capacity(count);
    let spread = clients.len();
    for i in 0..count {
        let client = &mut clients[i % spread];
        let open = pb::SubscriptionOpen {
            name: format!("idle-{i}"),
            filter: Some(pb::SubscriptionFilter {
                case_ref_prefix: "IDLE-NOTHING".into(),
                ..Default::default()
            }),
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Now(true)),
            }),
            ..Default::default()
        };
        streams.push(
            Subscriber::open_with(client, open)
                .await
                .with_context(|| format!("opening idle stream {i}"))?,
        );
    }
    println!(
        "{count} idle subscription streams open over {} connections ({:.1} s to open)",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(streams)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(name: &str, count: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    print!(
        "{name:<34} {count:>6} in {:>7.2} s = {:>8.0}/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    if latencies.is_empty() {
        println!();
    } else {
        println!(
            "   latency p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 90.0)),
            ms(percentile(&latencies, 99.0)),
            ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        );
    }
}

async fn postgres_schema(base: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .context("connecting to PostgreSQL")?;
    let schema = format!("ld_bench_{}", std::process::id());
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await?;
    let separator = if base.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The idle streams belong to one agency: lift its caps for the bench.
    let limits = format!(
        "\n[limits]\nmax_streams_per_agency = {0}\nmax_subscriptions_per_agency = {0}\n\
         max_connections_per_agency = {0}\n",
        (args.idle_streams + 16).max(100)
    );
    let (backend, bed) = match &args.postgres {
        Some(base) => (
            "PostgreSQL",
            Testbed::start_on(&postgres_schema(base).await?, &limits)?,
        ),
        None => ("SQLite", Testbed::start_with(&limits)?),
    };
    println!(
        "liandong-bench: gateway on {backend}, {} cores, {} notifications per phase, {} idle streams",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.notifications,
        args.idle_streams
    );
    let idle = open_idle_streams(
        &bed,
        args.idle_streams,
        args.idle_connections
            .unwrap_or_else(|| args.idle_streams.div_ceil(150)),
    )
    .await?;

    // 1. Unary publishes, concurrent publishers.
    let per_publisher = args.notifications.div_ceil(args.publishers);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let mut client = bed.client("cz-eeb").await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_publisher);
            for i in 0..per_publisher {
                let n = notification(
                    &format!("u{p}-{i}"),
                    "CZ-BENCH-1",
                    Event::ClueShared,
                    Level::Internal,
                    &[],
                );
                let sent = Instant::now();
                publish(&mut client, n).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    report(
        &format!("Publish ({} publishers)", args.publishers),
        latencies.len(),
        started.elapsed(),
        latencies,
    );

    // 2. Pipelined PublishStream on one connection.
    let mut client = bed.client("cz-eeb").await;
    let requests: Vec<pb::PublishRequest> = (0..args.notifications)
        .map(|i| pb::PublishRequest {
            notification: Some(notification(
                &format!("s{i}"),
                "CZ-BENCH-2",
                Event::ClueShared,
                Level::Internal,
                &[],
            )),
        })
        .collect();
    let started = Instant::now();
    let mut receipts = client
        .publish_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let mut count = 0;
    while let Some(receipt) = receipts.next().await {
        receipt?;
        count += 1;
    }
    report(
        "PublishStream (1 connection)",
        count,
        started.elapsed(),
        Vec::new(),
    );

    // 3. Delivery latency, one notification in flight at a time.
    let mut police = bed.client("cz-psb").await;
    let now = pb::StartPosition {
        position: Some(pb::start_position::Position::Now(true)),
    };
    let mut inbox = Subscriber::open_with(
        &mut police,
        pb::SubscriptionOpen {
            name: "bench".into(),
            start: Some(now),
            ..Default::default()
        },
    )
    .await?;
    let mut eeb = bed.client("cz-eeb").await;
    let mut latencies = Vec::with_capacity(args.round_trips);
    let started = Instant::now();
    for i in 0..args.round_trips {
        // Each round trip transfers a case of its own: a case is
        // transferred once.
        let n = notification(
            &format!("r{i}"),
            &format!("CZ-BENCH-3-{i}"),
            Event::CaseTransferred,
            Level::Restricted,
            &["cz-psb"],
        );
        let sent = Instant::now();
        publish(&mut eeb, n).await?;
        let delivery = inbox
            .next(Duration::from_secs(10))
            .await?
            .context("no delivery within 10 s")?;
        latencies.push(sent.elapsed());
        inbox.ack(&[delivery.sequence]).await;
    }
    report(
        "Publish → delivered (RESTRICTED)",
        latencies.len(),
        started.elapsed(),
        latencies,
    );
    inbox.close().await?;
    let mut idle_frames = 0;
    for stream in idle {
        idle_frames += stream.close().await?.len();
    }
    anyhow::ensure!(
        idle_frames == 0,
        "idle streams received {idle_frames} frames"
    );
    Ok(())
}
