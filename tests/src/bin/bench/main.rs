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
//! Load generator modes (each runs instead of the phases; both may be
//! given together):
//! - `--in-flight 1,8,64,256`: for each value, unary `Publish` with that
//!   many calls in flight (over `--connections` connections) and
//!   `PublishStream` with that many requests outstanding on one stream:
//!   throughput and latency until the receipt;
//! - `--open-loop RATE --seconds S`: publishes on a fixed schedule, with
//!   latency measured from each publish's intended send time (no
//!   coordinated omission), until the receipt and until a subscriber of
//!   the recipient agency holds the delivery (it acks each), and counts
//!   the publishes sent behind schedule.
//!
//! - `--subscribers 0,1,4,16`: for each K, K durable subscribers of
//!   `cz-psb` (acking each delivery, caught up first), then
//!   `--notifications` unary publishes; publish rate, publish → delivered
//!   to the last of the K, and the slope of the gateway's CPU per message
//!   over K.
//!
//! `--scenario idle --idle-streams M`: the open loop (`--open-loop`, 1000
//! per second unless given) without idle streams, then M idle streams
//! opened (the gateway's memory per stream), then the open loop again;
//! the p99 ratios with and without.
//!
//! `--scenario replicas --postgres URL`: a second gateway process on the
//! same database; publish → delivered with a subscriber on each replica
//! (`--round-trips` publishes on the first): what crossing replicas costs.
//!
//! `--prefill N` fills the store with N notifications through the
//! gateway's store library before the gateway starts (a SQLite file is
//! filled on `/dev/shm` when there is one, then copied into place;
//! `--prefill-cache PATH` keeps a copy to reuse), reports the fill and the
//! gateway's start-up, runs what was asked, then times 50 new
//! subscriptions resuming at random points of the stored range (open →
//! first delivery).
//!
//! Every row records the gateway process's CPU time (utime + stime from
//! `/proc/<pid>/stat`) per message; the conditions record its resident
//! memory (`VmRSS`) at start and end.
//!
//! Bodies: `--payload random` (default) carries `--payload-bytes` of
//! incompressible text; `--payload transfer` the demo's case transfer;
//! `--payload none` no body. `--json PATH` writes every result as JSON; a
//! Markdown table is printed at the end; both record the cores, the
//! backend, the load average and the disk's sync time (200 fsyncs of a
//! 4 KB write in the test bed's directory).
//!
//! Numbers are printed, not asserted; `docs/PERFORMANCE.md` records runs.
//! Build it in release: `cargo run --release -p liandong-tests --bin
//! liandong-bench`.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio_stream::StreamExt;

use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Subscriber, Testbed, demo_story, notification, publish};
use tonic::transport::Channel;

use resources::{Probe, Usage};

mod prefill;
mod replicas;
mod resources;
mod scale;
mod store;

/// What the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Throughput and latency of publishing and delivery, rate limit
    /// lifted.
    Phases,
    /// A well-behaved agency's publish latency while another floods.
    Flood,
    /// What `--idle-streams` idle subscription streams cost: the
    /// gateway's memory per stream, and an open loop's latency without
    /// and with them.
    Idle,
    /// The store alone, in this process: `Store::publish` from each
    /// `--in-flight` count of tasks, and the writes per commit.
    Store,
    /// Publish → delivered with the subscriber on another gateway replica
    /// than the publisher, beside one on the same replica (PostgreSQL).
    Replicas,
}

/// What the notification bodies carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PayloadKind {
    /// No body (as the bench published before bodies were measured).
    None,
    /// `--payload-bytes` of incompressible text in `body.description`.
    Random,
    /// The demo's case transfer body (structured, realistic).
    Transfer,
}

/// Makes the bodies: random text from a small deterministic generator
/// (splitmix64), six random bits per character, so nothing compresses.
struct Payload {
    kind: PayloadKind,
    bytes: usize,
    state: u64,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Payload {
    fn new(kind: PayloadKind, bytes: usize, seed: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bytes <= liandong_core::domain::MAX_BODY_TEXT_CHARS,
            "--payload-bytes {bytes} exceeds the gateway's body text limit of {} characters",
            liandong_core::domain::MAX_BODY_TEXT_CHARS
        );
        Ok(Self {
            kind,
            bytes,
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        })
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_text(&mut self) -> String {
        let mut text = String::with_capacity(self.bytes);
        while text.len() < self.bytes {
            let mut bits = self.next_u64();
            for _ in 0..10 {
                if text.len() == self.bytes {
                    break;
                }
                text.push(char::from(ALPHABET[(bits & 63) as usize]));
                bits >>= 6;
            }
        }
        text
    }

    /// The same payload from a generator of its own.
    fn seeded(&self, seed: u64) -> Self {
        Self {
            kind: self.kind,
            bytes: self.bytes,
            state: self.state ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03),
        }
    }

    fn body(&mut self) -> Option<pb::CaseBody> {
        match self.kind {
            PayloadKind::None => None,
            PayloadKind::Random => Some(pb::CaseBody {
                title: "bench".into(),
                description: self.random_text(),
                ..Default::default()
            }),
            PayloadKind::Transfer => Some(demo_story::transfer_body()),
        }
    }

    /// A notification of the bench's own (a shared clue) with this
    /// payload; with the transfer payload, the demo's transfer shape
    /// (`RESTRICTED` to `cz-psb`, a case of its own).
    fn shared(&mut self, id: &str, case_ref: &str) -> pb::Notification {
        if self.kind == PayloadKind::Transfer {
            return self.transfer(id, case_ref);
        }
        let mut n = notification(id, case_ref, Event::ClueShared, Level::Internal, &[]);
        n.body = self.body();
        n
    }

    /// A case transfer to `cz-psb` (a case is transferred once, so each
    /// gets a case of its own) with this payload.
    fn transfer(&mut self, id: &str, case_ref: &str) -> pb::Notification {
        let mut n = notification(
            id,
            &format!("{case_ref}-{id}"),
            Event::CaseTransferred,
            Level::Restricted,
            &["cz-psb"],
        );
        n.body = self.body();
        n
    }
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
    /// What the notification bodies carry.
    #[arg(long, value_enum, default_value_t = PayloadKind::Random)]
    payload: PayloadKind,
    /// Characters of incompressible text in each body (`--payload
    /// random`).
    #[arg(long, default_value_t = 2048)]
    payload_bytes: usize,
    /// Sweep these numbers of publishes in flight (unary and stream),
    /// e.g. `1,8,64,256`; `--notifications` publishes per value.
    #[arg(long, value_delimiter = ',')]
    in_flight: Vec<usize>,
    /// Connections the unary sweep and the open loop publish over (at
    /// most one per call in flight).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Publish on a fixed schedule at this many per second.
    #[arg(long)]
    open_loop: Option<u32>,
    /// Seconds the open loop runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A publish sent later than this after its intended time counts as
    /// behind schedule (open loop).
    #[arg(long, default_value_t = 2)]
    behind_ms: u64,
    /// Sweep these numbers of durable subscribers (each acking every
    /// delivery), e.g. `0,1,4,16`: `--notifications` unary publishes
    /// (`--in-flight`'s first value in flight, or 8) per value.
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// Fill the store with this many notifications before the gateway
    /// starts, then time subscriptions resuming inside them.
    #[arg(long)]
    prefill: Option<usize>,
    /// SQLite: copy this filled database instead of filling when it
    /// exists; otherwise fill and save a copy here.
    #[arg(long)]
    prefill_cache: Option<PathBuf>,
    /// Write every result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A figure derived from several rows: a line under the Markdown table
/// and an entry of the JSON output's `derived`.
#[derive(Debug, Clone)]
struct Derived {
    /// Its JSON key.
    key: &'static str,
    /// What it is, for the line under the table.
    text: String,
    value: f64,
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

/// One measured result: a line of the Markdown table and an entry of the
/// JSON output.
#[derive(Debug, Clone)]
struct Row {
    test: String,
    in_flight: Option<usize>,
    count: usize,
    elapsed: Duration,
    /// p50, p90, p99, max; None where latency is not measured.
    latency: Option<[Duration; 4]>,
    /// Open loop: publishes sent behind schedule.
    behind: Option<usize>,
    /// CPU time the gateway process spent while the row was measured.
    gateway_cpu: Option<Duration>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// Gateway CPU microseconds per message of the row.
    fn cpu_us_per_message(&self) -> Option<f64> {
        self.gateway_cpu
            .filter(|_| self.count > 0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.count as f64)
    }

    fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "test": self.test,
            "in_flight": self.in_flight,
            "count": self.count,
            "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.rate(),
            "latency_ms": self.latency.map(|[p50, p90, p99, max]| serde_json::json!({
                "p50": ms(p50), "p90": ms(p90), "p99": ms(p99), "max": ms(max),
            })),
            "behind_schedule": self.behind,
            "gateway_cpu_us_per_message": self.cpu_us_per_message(),
        })
    }
}

/// p50, p90, p99 and max of `latencies`, or None when there are none.
fn quantiles(mut latencies: Vec<Duration>) -> Option<[Duration; 4]> {
    latencies.sort_unstable();
    let max = *latencies.last()?;
    Some([
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        max,
    ])
}

fn print_row(row: &Row) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    print!(
        "{:<34} {:>6} in {:>7.2} s = {:>8.0}/s",
        row.test,
        row.count,
        row.elapsed.as_secs_f64(),
        row.rate()
    );
    match row.latency {
        None => println!(),
        Some([p50, p90, p99, max]) => println!(
            "   latency p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            ms(p50),
            ms(p90),
            ms(p99),
            ms(max),
        ),
    }
}

/// Charges the gateway's CPU time since `before` to `rows` (which were
/// measured together) and prints it per message.
fn charge(rows: &mut [Row], before: &Usage, probe: &Probe) -> anyhow::Result<()> {
    let after = probe.sample()?;
    let cpu = before.cpu_until(&after);
    for row in rows.iter_mut() {
        row.gateway_cpu = Some(cpu);
    }
    if let Some(us) = rows.first().and_then(Row::cpu_us_per_message) {
        println!(
            "{:<34} gateway CPU {:.2} s = {us:.0} µs per message, RSS {} KB",
            "",
            cpu.as_secs_f64(),
            after.rss_kb
        );
    }
    Ok(())
}

fn report(name: &str, count: usize, elapsed: Duration, latencies: Vec<Duration>) -> Row {
    let row = Row {
        test: name.to_owned(),
        in_flight: None,
        count,
        elapsed,
        latency: quantiles(latencies),
        behind: None,
        gateway_cpu: None,
    };
    print_row(&row);
    row
}

/// The conditions a run was measured in.
struct Conditions {
    at: String,
    cores: usize,
    backend: &'static str,
    load: String,
    payload: String,
    /// p50 and p99 of a 4 KB write and its fsync.
    sync: [Duration; 2],
    /// The gateway's resident memory (KB) when the bench began measuring
    /// and when it ended.
    gateway_rss_kb: [u64; 2],
}

/// Times 200 appends of 4 KB, each followed by an fsync, in `dir`.
fn disk_sync(dir: &Path) -> anyhow::Result<[Duration; 2]> {
    let path = dir.join("bench-fsync-probe");
    let mut file = std::fs::File::create(&path).context("creating the fsync probe")?;
    let block = [0x5a_u8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        times.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort_unstable();
    Ok([percentile(&times, 50.0), percentile(&times, 99.0)])
}

/// Prints the Markdown table and writes the JSON file, if asked for.
fn output(
    args: &Args,
    conditions: &Conditions,
    rows: &[Row],
    derived: &[Derived],
) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!(
        "{}, {} cores, {}, load average {}, payload {}, disk sync (4 KB write + fsync) p50 {:.2} ms p99 {:.2} ms, \
         gateway RSS {} KB at start, {} KB at end",
        conditions.at,
        conditions.cores,
        conditions.backend,
        conditions.load,
        conditions.payload,
        ms(conditions.sync[0]),
        ms(conditions.sync[1]),
        conditions.gateway_rss_kb[0],
        conditions.gateway_rss_kb[1],
    );
    println!();
    println!(
        "| test | in flight | count | s | per s | p50 ms | p90 ms | p99 ms | max ms | behind | gateway CPU µs/msg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let latency = row.latency.map_or_else(
            || "| | | | ".to_owned(),
            |[p50, p90, p99, max]| {
                format!(
                    "| {:.2} | {:.2} | {:.2} | {:.2} ",
                    ms(p50),
                    ms(p90),
                    ms(p99),
                    ms(max)
                )
            },
        );
        println!(
            "| {} | {} | {} | {:.2} | {:.0} {latency}| {} | {} |",
            row.test,
            row.in_flight.map_or(String::new(), |n| n.to_string()),
            row.count,
            row.elapsed.as_secs_f64(),
            row.rate(),
            row.behind.map_or(String::new(), |n| n.to_string()),
            row.cpu_us_per_message()
                .map_or(String::new(), |us| format!("{us:.0}")),
        );
    }
    if !derived.is_empty() {
        println!();
    }
    for figure in derived {
        println!("- {}: {:.2}", figure.text, figure.value);
    }
    if let Some(path) = &args.json {
        let document = serde_json::json!({
            "at": conditions.at,
            "cores": conditions.cores,
            "backend": conditions.backend,
            "load_average": conditions.load,
            "payload": conditions.payload,
            "disk_sync_ms": { "p50": ms(conditions.sync[0]), "p99": ms(conditions.sync[1]) },
            "gateway_rss_kb": { "start": conditions.gateway_rss_kb[0], "end": conditions.gateway_rss_kb[1] },
            "results": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "derived": derived
                .iter()
                .map(|figure| (figure.key.to_owned(), serde_json::json!(figure.value)))
                .collect::<serde_json::Map<_, _>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nresults written to {}", path.display());
    }
    Ok(())
}

/// A new subscription `name` of the client's agency, with no filter,
/// starting with what is published from now on.
pub(crate) async fn subscribe_from_now(
    client: &mut ExchangeClient<Channel>,
    name: String,
) -> Result<Subscriber, tonic::Status> {
    Subscriber::open_with(
        client,
        pb::SubscriptionOpen {
            name,
            start: Some(pb::StartPosition {
                position: Some(pb::start_position::Position::Now(true)),
            }),
            ..Default::default()
        },
    )
    .await
}

/// One task per `(client, id prefix)`, each publishing `each` shared clues
/// of `case_ref` one at a time (ids `PREFIX-i`, its own seeded payload);
/// every publish's latency to its receipt.
async fn publish_concurrently(
    publishers: Vec<(ExchangeClient<Channel>, String)>,
    payload: &Payload,
    each: usize,
    case_ref: &'static str,
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::with_capacity(publishers.len());
    for (t, (mut client, prefix)) in publishers.into_iter().enumerate() {
        let mut payload = payload.seeded(t as u64);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(each);
            for i in 0..each {
                let n = payload.shared(&format!("{prefix}-{i}"), case_ref);
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
    Ok(latencies)
}

/// Unary `Publish` with `in_flight` calls outstanding, spread over a few
/// connections, `total` publishes in all.
async fn sweep_unary(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
    in_flight: usize,
    total: usize,
) -> anyhow::Result<Row> {
    let mut clients = Vec::new();
    for _ in 0..in_flight.min(args.connections).max(1) {
        clients.push(bed.client("cz-eeb").await);
    }
    let per_call = total.div_ceil(in_flight);
    let started = Instant::now();
    let publishers = (0..in_flight)
        .map(|t| {
            (
                clients[t % clients.len()].clone(),
                format!("su{in_flight}-{t}"),
            )
        })
        .collect();
    let latencies = publish_concurrently(publishers, payload, per_call, "CZ-BENCH-SU").await?;
    let mut row = report(
        &format!("Publish, {in_flight} in flight"),
        latencies.len(),
        started.elapsed(),
        latencies,
    );
    row.in_flight = Some(in_flight);
    Ok(row)
}

/// `PublishStream` with `in_flight` requests outstanding on one stream:
/// a request is sent only when a receipt has freed its place.
async fn sweep_stream(
    bed: &Testbed,
    payload: &Payload,
    in_flight: usize,
    total: usize,
) -> anyhow::Result<Row> {
    let mut client = bed.client("cz-eeb").await;
    let (requests, outgoing) = tokio::sync::mpsc::channel(in_flight);
    let places = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let sent_at = Arc::new(Mutex::new(VecDeque::with_capacity(in_flight)));
    let started = Instant::now();
    let sender = {
        let places = places.clone();
        let sent_at = sent_at.clone();
        let mut payload = payload.seeded(in_flight as u64);
        tokio::spawn(async move {
            for i in 0..total {
                places.acquire().await?.forget();
                let n = payload.shared(&format!("ss{in_flight}-{i}"), "CZ-BENCH-SS");
                sent_at
                    .lock()
                    .expect("the send times are not poisoned")
                    .push_back(Instant::now());
                if requests
                    .send(pb::PublishRequest {
                        notification: Some(n),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            anyhow::Ok(())
        })
    };
    let mut receipts = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let Some(receipt) = receipts.next().await else {
            anyhow::bail!("the stream ended after {} receipts", latencies.len());
        };
        receipt?;
        let sent = sent_at
            .lock()
            .expect("the send times are not poisoned")
            .pop_front()
            .context("a receipt for nothing sent")?;
        latencies.push(sent.elapsed());
        places.add_permits(1);
    }
    let elapsed = started.elapsed();
    sender.await??;
    let mut row = report(
        &format!("PublishStream, {in_flight} in flight"),
        latencies.len(),
        elapsed,
        latencies,
    );
    row.in_flight = Some(in_flight);
    Ok(row)
}

/// Publishes `rate` per second for `args.seconds` on a fixed schedule;
/// latencies count from each publish's intended send time. A subscriber
/// of the recipient agency acks every delivery. `run` keeps the ids and
/// the subscription of one open loop apart from another's; `label` is
/// added to the rows' names. The gateway's CPU is charged from the first
/// intended send (connections and subscription already open) to the last
/// delivery.
async fn open_loop(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
    probe: &Probe,
    rate: u32,
    run: &str,
    label: &str,
) -> anyhow::Result<Vec<Row>> {
    let total = usize::try_from(u64::from(rate) * args.seconds)?;
    let period = Duration::from_secs(1) / rate.max(1);
    let mut police = bed.client("cz-psb").await;
    let mut inbox = subscribe_from_now(&mut police, format!("bench-open-{rate}{run}")).await?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(bed.client("cz-eeb").await);
    }
    let start = Instant::now() + Duration::from_millis(200);
    tokio::time::sleep_until(start.into()).await;
    let before = probe.sample()?;
    let intended = move |i: usize| start + period * u32::try_from(i).unwrap_or(u32::MAX);
    let prefix = format!("o{rate}{run}-");
    let receiver = {
        let prefix = prefix.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            while latencies.len() < total {
                let Some(delivery) = inbox.next(Duration::from_secs(10)).await? else {
                    break;
                };
                let at = Instant::now();
                let i: usize = delivery
                    .notification
                    .as_ref()
                    .and_then(|n| n.notification_id.strip_prefix(&prefix))
                    .and_then(|i| i.parse().ok())
                    .context("a delivery that the open loop did not publish")?;
                latencies.push(at.saturating_duration_since(intended(i)));
                inbox.ack(&[delivery.sequence]).await;
            }
            let last = Instant::now();
            inbox.close().await?;
            anyhow::Ok((latencies, last))
        })
    };
    let behind_after = Duration::from_millis(args.behind_ms);
    let mut behind = 0;
    let mut calls = Vec::with_capacity(total);
    let mut payload = payload.seeded(u64::from(rate));
    for i in 0..total {
        let due = intended(i);
        tokio::time::sleep_until(due.into()).await;
        if Instant::now().saturating_duration_since(due) > behind_after {
            behind += 1;
        }
        let n = payload.transfer(&format!("{prefix}{i}"), "CZ-BENCH-OL");
        let mut client = clients[i % clients.len()].clone();
        calls.push(tokio::spawn(async move {
            publish(&mut client, n).await?;
            let at = Instant::now();
            anyhow::Ok((at.saturating_duration_since(due), at))
        }));
    }
    let mut receipts = Vec::with_capacity(total);
    let mut last = start;
    for call in calls {
        let (latency, at) = call.await??;
        receipts.push(latency);
        last = last.max(at);
    }
    let (deliveries, last_delivery) = receiver.await??;
    let mut rows = vec![Row {
        test: format!("open loop {rate}/s{label}: publish → receipt"),
        in_flight: None,
        count: receipts.len(),
        elapsed: last.saturating_duration_since(start),
        latency: quantiles(receipts),
        behind: Some(behind),
        gateway_cpu: None,
    }];
    rows.push(Row {
        test: format!("open loop {rate}/s{label}: publish → delivered"),
        in_flight: None,
        count: deliveries.len(),
        elapsed: last_delivery.saturating_duration_since(start),
        latency: quantiles(deliveries),
        behind: Some(behind),
        gateway_cpu: None,
    });
    for row in &rows {
        print_row(row);
    }
    charge(&mut rows, &before, probe)?;
    println!(
        "open loop {rate}/s: {behind} of {total} publishes sent more than {} ms behind schedule",
        args.behind_ms
    );
    anyhow::ensure!(
        rows[1].count == total,
        "{} of {total} deliveries arrived",
        rows[1].count
    );
    Ok(rows)
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

/// The three phases: unary publishes, a pipelined stream, and delivery
/// latency one round trip at a time.
async fn phases(
    bed: &Testbed,
    args: &Args,
    payload: &Payload,
    probe: &Probe,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // 1. Unary publishes, concurrent publishers.
    let per_publisher = args.notifications.div_ceil(args.publishers);
    let before = probe.sample()?;
    let mut publishers = Vec::with_capacity(args.publishers);
    for p in 0..args.publishers {
        publishers.push((bed.client("cz-eeb").await, format!("u{p}")));
    }
    let started = Instant::now();
    let latencies = publish_concurrently(publishers, payload, per_publisher, "CZ-BENCH-1").await?;
    rows.push(report(
        &format!("Publish ({} publishers)", args.publishers),
        latencies.len(),
        started.elapsed(),
        latencies,
    ));
    charge(&mut rows[0..], &before, probe)?;

    // 2. Pipelined PublishStream on one connection.
    let mut client = bed.client("cz-eeb").await;
    let mut stream_payload = payload.seeded(u64::MAX);
    let requests: Vec<pb::PublishRequest> = (0..args.notifications)
        .map(|i| pb::PublishRequest {
            notification: Some(stream_payload.shared(&format!("s{i}"), "CZ-BENCH-2")),
        })
        .collect();
    let before = probe.sample()?;
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
    rows.push(report(
        "PublishStream (1 connection)",
        count,
        started.elapsed(),
        Vec::new(),
    ));
    charge(&mut rows[1..], &before, probe)?;

    // 3. Delivery latency, one notification in flight at a time.
    let mut police = bed.client("cz-psb").await;
    let mut inbox = subscribe_from_now(&mut police, "bench".into()).await?;
    let mut eeb = bed.client("cz-eeb").await;
    let mut round_trip_payload = payload.seeded(u64::MAX - 1);
    let mut latencies = Vec::with_capacity(args.round_trips);
    let before = probe.sample()?;
    let started = Instant::now();
    for i in 0..args.round_trips {
        // Each round trip transfers a case of its own: a case is
        // transferred once.
        let n = round_trip_payload.transfer(&format!("r{i}"), "CZ-BENCH-3");
        let sent = Instant::now();
        publish(&mut eeb, n).await?;
        let delivery = inbox
            .next(Duration::from_secs(10))
            .await?
            .context("no delivery within 10 s")?;
        latencies.push(sent.elapsed());
        inbox.ack(&[delivery.sequence]).await;
    }
    rows.push(report(
        "Publish → delivered (RESTRICTED)",
        latencies.len(),
        started.elapsed(),
        latencies,
    ));
    charge(&mut rows[2..], &before, probe)?;
    inbox.close().await?;
    Ok(rows)
}

/// `--scenario store`: see the `store` module.
async fn store_scenario(args: &Args) -> anyhow::Result<()> {
    let payload = Payload::new(
        args.payload,
        args.payload_bytes,
        u64::from(std::process::id()),
    )?;
    let probe = Probe::new(i32::try_from(std::process::id())?)?;
    let first = probe.sample()?;
    let (backend, rows, derived) = store::sweep(args, &payload).await?;
    let dir = tempfile::tempdir()?;
    let conditions = conditions(
        args,
        backend,
        disk_sync(dir.path())?,
        [first.rss_kb, probe.sample()?.rss_kb],
    );
    output(args, &conditions, &rows, &derived)
}

/// The conditions of a run ending now.
fn conditions(
    args: &Args,
    backend: &'static str,
    sync: [Duration; 2],
    gateway_rss_kb: [u64; 2],
) -> Conditions {
    Conditions {
        at: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend,
        load: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        payload: match args.payload {
            PayloadKind::None => "none".into(),
            PayloadKind::Random => format!("{} random characters", args.payload_bytes),
            PayloadKind::Transfer => "the demo's case transfer".into(),
        },
        sync,
        gateway_rss_kb,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario == Scenario::Flood {
        return flood_scenario(&args).await;
    }
    if args.scenario == Scenario::Store {
        return store_scenario(&args).await;
    }
    // The idle streams and subscribers belong to one agency: lift its caps
    // for the bench, and the publish rate, which would otherwise be what
    // is measured.
    let limits = format!(
        "\n[limits]\nmax_streams_per_agency = {0}\nmax_subscriptions_per_agency = {0}\n\
         publish_per_second = 1000000\npublish_burst = 1000000\n\
         max_connections_per_agency = {0}\n",
        (args.idle_streams + args.subscribers.iter().sum::<usize>() + prefill::RESUMES + 16)
            .max(100)
    );
    let payload = Payload::new(
        args.payload,
        args.payload_bytes,
        u64::from(std::process::id()),
    )?;
    let mut rows = Vec::new();
    let mut derived = Vec::new();
    let prefilled = match args.prefill {
        Some(count) => Some(prefill::prepare(&args, &payload, count).await?),
        None => None,
    };
    let (backend, bed) = match &prefilled {
        Some(prefilled) => {
            let started = Instant::now();
            let bed = Testbed::start_on(&prefilled.url, &limits)?;
            rows.extend(prefilled.rows.iter().cloned());
            rows.push(report(
                &format!("gateway start-up, {} stored", prefilled.stored),
                usize::try_from(prefilled.stored)?,
                started.elapsed(),
                Vec::new(),
            ));
            (prefilled.backend, bed)
        }
        None => start(&args, &limits).await?,
    };
    let probe = Probe::new(bed.gateway.pid())?;
    let first = probe.sample()?;
    println!(
        "liandong-bench: gateway on {backend}, {} cores, {} notifications per phase, {} idle streams, \
         gateway RSS {} KB",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.notifications,
        args.idle_streams,
        first.rss_kb
    );
    let sync = disk_sync(bed.dir.path())?;
    if args.scenario == Scenario::Replicas {
        rows.extend(replicas::latency(&bed, &args, &payload).await?);
    } else if args.scenario == Scenario::Idle {
        let (idle_rows, idle_derived) = scale::idle(&bed, &args, &payload, &probe).await?;
        rows.extend(idle_rows);
        derived.extend(idle_derived);
    } else {
        let idle = open_idle_streams(
            &bed,
            args.idle_streams,
            args.idle_connections
                .unwrap_or_else(|| args.idle_streams.div_ceil(150)),
        )
        .await?;
        if args.in_flight.is_empty() && args.open_loop.is_none() && args.subscribers.is_empty() {
            rows.extend(phases(&bed, &args, &payload, &probe).await?);
        }
        for &in_flight in &args.in_flight {
            anyhow::ensure!(in_flight > 0, "--in-flight values must be at least 1");
            let total = args.notifications.max(in_flight);
            let before = probe.sample()?;
            rows.push(sweep_unary(&bed, &args, &payload, in_flight, total).await?);
            let last = rows.len() - 1;
            charge(&mut rows[last..], &before, &probe)?;
            let before = probe.sample()?;
            rows.push(sweep_stream(&bed, &payload, in_flight, total).await?);
            charge(&mut rows[last + 1..], &before, &probe)?;
        }
        if let Some(rate) = args.open_loop {
            anyhow::ensure!(rate > 0, "--open-loop must be at least 1 per second");
            rows.extend(open_loop(&bed, &args, &payload, &probe, rate, "", "").await?);
        }
        if !args.subscribers.is_empty() {
            let (fan_rows, fan_derived) = scale::subscribers(&bed, &args, &payload, &probe).await?;
            rows.extend(fan_rows);
            derived.extend(fan_derived);
        }
        if let Some(prefilled) = &prefilled {
            rows.push(prefill::resume(&bed, prefilled).await?);
        }
        let mut idle_frames = 0;
        for stream in idle {
            idle_frames += stream.close().await?.len();
        }
        anyhow::ensure!(
            idle_frames == 0,
            "idle streams received {idle_frames} frames"
        );
    }
    let conditions = conditions(&args, backend, sync, [first.rss_kb, probe.sample()?.rss_kb]);
    output(&args, &conditions, &rows, &derived)
}
