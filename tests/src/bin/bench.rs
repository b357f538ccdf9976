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
//! must cost the publishers nothing. These phases lift the per-agency
//! publish rate, which they would otherwise measure instead of the
//! gateway.
//!
//! `--scenario flood` measures the per-agency publish rate instead, at
//! the configuration's defaults (50 per second, burst 200): one agency
//! (`cz-psb`) publishes at a steady modest rate, first alone, then while
//! another (`cz-eeb`) publishes as fast as it can over several
//! connections; it reports the steady agency's publish latency both ways
//! and how many of the flooder's publishes were accepted and refused.
//!
//! Numbers are printed, not asserted; `docs/PERFORMANCE.md` records runs.
//! Build it in release: `cargo run --release -p liandong-tests --bin
//! liandong-bench`.

use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio_stream::StreamExt;

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Subscriber, Testbed, notification, publish};

/// What the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Throughput and latency of publishing and delivery, rate limit
    /// lifted.
    Phases,
    /// A well-behaved agency's publish latency while another floods.
    Flood,
}

/// Load generator for the Liandong gateway.
#[derive(Debug, Parser)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Phases)]
    scenario: Scenario,
    /// Flood scenario: the steady agency's publishes per second.
    #[arg(long, default_value_t = 10)]
    steady_rate: u32,
    /// Flood scenario: seconds of each half (without, then with the
    /// flood).
    #[arg(long, default_value_t = 20)]
    flood_seconds: u64,
    /// Flood scenario: connections the flooder publishes over, each
    /// with one publish in flight at a time.
    #[arg(long, default_value_t = 8)]
    flooders: usize,
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

/// Starts the gateway on the chosen backend with `limits` as its
/// `[limits]` table.
async fn start(args: &Args, limits: &str) -> anyhow::Result<(&'static str, Testbed)> {
    Ok(match &args.postgres {
        Some(base) => (
            "PostgreSQL",
            Testbed::start_on(&postgres_schema(base).await?, limits)?,
        ),
        None => ("SQLite", Testbed::start_with(limits)?),
    })
}

/// The steady agency's publishes during `seconds`, at `rate` per second,
/// one at a time: the latency of each (all must succeed).
async fn steady(
    bed: &Testbed,
    run: &str,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Vec<Duration>> {
    let mut client = bed.client("cz-psb").await;
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let total = u64::from(rate) * seconds;
    let mut latencies = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticks.tick().await;
        let n = notification(
            &format!("steady-{run}-{i}"),
            "CZ-BENCH-STEADY",
            Event::ClueShared,
            Level::Internal,
            &[],
        );
        let sent = Instant::now();
        publish(&mut client, n)
            .await
            .with_context(|| format!("the steady agency's publish {i} ({run})"))?;
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}

/// Accepted and refused publishes of the flooder.
#[derive(Debug, Default)]
struct FloodCounts {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

/// One agency publishing as fast as it can over `connections`
/// connections until `stop` is set.
async fn flood(
    bed: &Testbed,
    connections: usize,
    counts: Arc<FloodCounts>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let mut client = bed.client("cz-eeb").await;
        let counts = counts.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = notification(
                    &format!("flood-{c}-{i}"),
                    "CZ-BENCH-FLOOD",
                    Event::ClueShared,
                    Level::Internal,
                    &[],
                );
                i += 1;
                match publish(&mut client, n).await {
                    Ok(_) => counts.accepted.fetch_add(1, Ordering::Relaxed),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        counts.refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(status) => anyhow::bail!("the flooder got {status:?}"),
                };
            }
            anyhow::Ok(())
        }));
    }
    Ok(tasks)
}

/// The flood scenario: the steady agency alone, then during a flood.
async fn flood_scenario(args: &Args) -> anyhow::Result<()> {
    let (backend, bed) = start(
        args,
        "\n[limits]\npublish_per_second = 50\npublish_burst = 200\n",
    )
    .await?;
    println!(
        "liandong-bench flood: gateway on {backend}, {} cores; limit 50/s, burst 200 per agency; \
         cz-psb publishes {}/s for {} s alone, then {} s while cz-eeb floods over {} connections",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.steady_rate,
        args.flood_seconds,
        args.flood_seconds,
        args.flooders
    );
    let alone = steady(&bed, "alone", args.steady_rate, args.flood_seconds).await?;
    let count = alone.len();
    report(
        "steady agency, no flood",
        count,
        Duration::from_secs(args.flood_seconds),
        alone,
    );

    let counts = Arc::new(FloodCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let flooders = flood(&bed, args.flooders, counts.clone(), stop.clone()).await?;
    let started = Instant::now();
    let during = steady(&bed, "flood", args.steady_rate, args.flood_seconds).await;
    let flood_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in flooders {
        task.await??;
    }
    let during = during?;
    let count = during.len();
    report(
        "steady agency, during the flood",
        count,
        Duration::from_secs(args.flood_seconds),
        during,
    );
    let accepted = counts.accepted.load(Ordering::Relaxed);
    let refused = counts.refused.load(Ordering::Relaxed);
    println!(
        "flooder: {accepted} accepted ({:.1}/s), {refused} refused with RESOURCE_EXHAUSTED ({:.0}/s) in {:.1} s",
        accepted as f64 / flood_time.as_secs_f64(),
        refused as f64 / flood_time.as_secs_f64(),
        flood_time.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario == Scenario::Flood {
        return flood_scenario(&args).await;
    }
    // The idle streams belong to one agency: lift its caps for the bench,
    // and the publish rate, which would otherwise be what is measured.
    let limits = format!(
        "\n[limits]\nmax_streams_per_agency = {0}\nmax_subscriptions_per_agency = {0}\n\
         publish_per_second = 1000000\npublish_burst = 1000000\n\
         max_connections_per_agency = {0}\n",
        (args.idle_streams + 16).max(100)
    );
    let (backend, bed) = start(&args, &limits).await?;
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
