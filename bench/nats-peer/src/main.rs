//! `liandong-nats-peer`: a load generator against NATS JetStream, measured
//! the way `liandong-bench` measures the gateway, so the two can be read
//! side by side.
//!
//! Connects over mutual TLS with the project's development certificates
//! (the CA, and one agency's certificate as the client), creates a
//! file-stored stream of its own (deleting a leftover one of the same
//! name), then measures:
//! 1. publishing with acknowledgements: for each in-flight count N, N
//!    publishers spread over `--connections` connections (4, as
//!    liandong-bench), each with one publish in flight at a time, each
//!    waiting for JetStream's publish acknowledgement (the stream has
//!    stored the message); throughput and latency from the publish call
//!    to the acknowledgement;
//! 2. publish → delivered: a durable pull consumer with explicit acks;
//!    one message at a time, latency from the publish call to the message
//!    in the consumer's hand, which then acknowledges it.
//!
//! Two more measurements, each asked for by its flag:
//! - `--subscribers 0,1,4,16`: for each K, K durable pull consumers with
//!   explicit acks, each receiving every message of the row, under the
//!   publish load of one in-flight count; publish → ack, and publish →
//!   delivered to the last of the K;
//! - `--open-loop RATE --seconds S`: publishes on a fixed schedule, each
//!   publish's latency counted from its intended send time (so a stalled
//!   server cannot hide its stall by slowing the sender), to the ack and
//!   to delivery through one consumer with explicit acks.
//!
//! With `--server-pid`, every row also reports the server's CPU time per
//! message (utime + stime from `/proc/PID/stat` around the row).
//!
//! It first checks that the server refuses a client without a
//! certificate (mutual TLS, as the gateway requires).
//!
//! With `--sync-probe-dir`, it first times 200 appends of 4 KB each
//! followed by an fsync in that directory, as liandong-bench does in the
//! gateway's, so runs on different disks can be told apart.
//!
//! Payloads are random bytes (incompressible), a fresh one per message.
//! Numbers are printed as a Markdown table and, with `--json PATH`,
//! written as JSON; nothing is asserted beyond every publish being
//! acknowledged by the stream and every delivery being the one sent.
//! `bench/peer` starts a throwaway server and runs this; `bench/README.md`
//! records runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use rand::RngCore as _;
use serde::Serialize;

/// The stream the harness owns (deleted and created at each run).
const STREAM: &str = "LIANDONG_PEER_BENCH";

/// Header carrying the moment a message's latency counts from, in
/// nanoseconds since [`origin`]: the consumers, in this process, read it.
const SENT_HEADER: &str = "Bench-Sent";

/// In-flight count of the `--subscribers` rows when `--in-flight` is not
/// given.
const FAN_OUT_IN_FLIGHT: usize = 8;

/// The process's reference instant for [`SENT_HEADER`].
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Headers stamping a message with the instant its latency counts from.
fn stamped(from: Instant) -> HeaderMap {
    let nanos = from.saturating_duration_since(origin()).as_nanos();
    let mut headers = HeaderMap::new();
    headers.insert(SENT_HEADER, nanos.to_string());
    headers
}

/// The instant a delivered message's latency counts from.
fn stamp_of(message: &async_nats::Message) -> anyhow::Result<Instant> {
    let nanos: u64 = message
        .headers
        .as_ref()
        .and_then(|h| h.get(SENT_HEADER))
        .context("a delivery without the send stamp")?
        .to_string()
        .parse()
        .context("an unreadable send stamp")?;
    Ok(origin() + Duration::from_nanos(nanos))
}

/// Load generator for NATS JetStream over mutual TLS.
#[derive(Debug, Parser)]
// A later flag wins over an earlier one: `bench/peer` passes its defaults
// first and the caller's arguments after them.
#[command(args_override_self = true)]
struct Args {
    /// Server URL, e.g. tls://127.0.0.1:4443.
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) the server's certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM), e.g. an agency's from `liandong-certs init`.
    #[arg(long)]
    cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Payload size in bytes (random, incompressible).
    #[arg(long, default_value_t = 2048)]
    payload_bytes: usize,
    /// In-flight counts to measure, comma separated (default 1,8,64,256).
    /// The sweep runs when this is given or when neither `--subscribers`
    /// nor `--open-loop` is; the `--subscribers` rows publish with the
    /// first count (8 when not given).
    #[arg(long, value_delimiter = ',')]
    in_flight: Vec<usize>,
    /// Numbers of durable consumers to measure, comma separated (e.g.
    /// 0,1,4,16): each consumer receives and acks every message of its
    /// row; `--messages` per row.
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
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
    /// The server's process id: each row then reports the server's CPU
    /// time per message, from /proc/PID/stat.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections the publishers are spread over (at most one per
    /// publish in flight), as liandong-bench spreads its calls.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Directory in which to time 200 appends of 4 KB each followed by an
    /// fsync (the server's store directory), as liandong-bench does in
    /// the gateway's.
    #[arg(long)]
    sync_probe_dir: Option<PathBuf>,
    /// Messages published at each in-flight count.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Round trips measured in the publish → delivered phase.
    #[arg(long, default_value_t = 300)]
    round_trips: usize,
    /// What the server was configured with, printed with the results
    /// (e.g. "sync_interval: always").
    #[arg(long, default_value = "")]
    label: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One measured phase.
#[derive(Debug, Serialize)]
struct Phase {
    /// What was measured.
    name: String,
    /// Publishes in flight at once (1 for the delivery phase, none for
    /// the open loop, whose publishes are not limited in number).
    in_flight: Option<usize>,
    /// Messages measured.
    messages: usize,
    /// Wall time of the phase, seconds.
    seconds: f64,
    /// Messages per second.
    per_second: f64,
    /// Latency percentiles and maximum, milliseconds.
    p50_ms: f64,
    /// 90th percentile, milliseconds.
    p90_ms: f64,
    /// 99th percentile, milliseconds.
    p99_ms: f64,
    /// Slowest, milliseconds.
    max_ms: f64,
    /// Durable consumers receiving every message of the row
    /// (`--subscribers` rows only).
    subscribers: Option<usize>,
    /// Publishes sent more than `--behind-ms` after their intended time
    /// (open loop only).
    behind_schedule: Option<usize>,
    /// Server CPU time (user + system) over the whole row divided by the
    /// messages published in it, microseconds; with `--server-pid`.
    server_cpu_us_per_message: Option<f64>,
}

/// Everything one run reports.
#[derive(Debug, Serialize)]
struct Report {
    /// The server's own version (from its INFO).
    server_version: String,
    /// The configuration label given on the command line.
    label: String,
    /// Payload size in bytes.
    payload_bytes: usize,
    /// Cores the harness saw (server and harness share them).
    cores: usize,
    /// The 1, 5 and 15 minute load averages at the end of the run.
    load_average: String,
    /// Connections the publishers were spread over.
    connections: usize,
    /// p50 and p99 of a 4 KB write and its fsync in the probe directory,
    /// milliseconds, when probed.
    disk_sync_ms: Option<[f64; 2]>,
    /// The phases, in order.
    phases: Vec<Phase>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn phase(
    name: String,
    in_flight: Option<usize>,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
) -> Phase {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Phase {
        name,
        in_flight,
        messages: latencies.len(),
        seconds: elapsed.as_secs_f64(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(percentile(&latencies, 50.0)),
        p90_ms: ms(percentile(&latencies, 90.0)),
        p99_ms: ms(percentile(&latencies, 99.0)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        subscribers: None,
        behind_schedule: None,
        server_cpu_us_per_message: None,
    }
}

/// The CPU time a server process has used, read from `/proc/PID/stat`.
struct ServerCpu {
    /// The server's process id.
    pid: u32,
    /// Nanoseconds of one clock tick, the unit of utime and stime.
    tick_nanos: u64,
}

impl ServerCpu {
    fn new(pid: u32) -> anyhow::Result<Self> {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .context("running getconf CLK_TCK")?;
        let per_second: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("reading the clock ticks per second")?;
        anyhow::ensure!(per_second > 0, "getconf CLK_TCK gave 0");
        let cpu = ServerCpu {
            pid,
            tick_nanos: 1_000_000_000 / per_second,
        };
        cpu.used()?;
        Ok(cpu)
    }

    /// User plus system time the process has used so far.
    fn used(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name, in parentheses, may hold spaces: count the
        // fields from after its closing parenthesis (field 3, the state).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("an unreadable /proc stat line")?
            .1
            .split_whitespace()
            .collect();
        let ticks = |field: usize| -> anyhow::Result<u64> {
            fields
                .get(field - 3)
                .context("a short /proc stat line")?
                .parse()
                .context("an unreadable CPU time")
        };
        // Fields 14 and 15: utime and stime.
        Ok(Duration::from_nanos(
            self.tick_nanos * (ticks(14)? + ticks(15)?),
        ))
    }
}

/// Measures the server's CPU over a row, when a server pid was given.
struct CpuMark<'a> {
    /// The server, and its CPU time at the row's start.
    start: Option<(&'a ServerCpu, Duration)>,
}

impl<'a> CpuMark<'a> {
    fn start(cpu: Option<&'a ServerCpu>) -> anyhow::Result<Self> {
        let start = match cpu {
            Some(cpu) => Some((cpu, cpu.used()?)),
            None => None,
        };
        Ok(CpuMark { start })
    }

    /// Microseconds of server CPU per message since the start.
    fn per_message(&self, messages: usize) -> anyhow::Result<Option<f64>> {
        let Some((cpu, start)) = self.start else {
            return Ok(None);
        };
        let used = cpu.used()?.saturating_sub(start);
        Ok(Some(used.as_secs_f64() * 1e6 / messages.max(1) as f64))
    }
}

/// Times 200 appends of 4 KB, each followed by an fsync, in `dir`.
fn disk_sync(dir: &std::path::Path) -> anyhow::Result<[f64; 2]> {
    use std::io::Write as _;
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
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok([ms(percentile(&times, 50.0)), ms(percentile(&times, 99.0))])
}

/// A fresh random payload: nothing for a compressor to gain.
fn payload(bytes: usize) -> Bytes {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    Bytes::from(buf)
}

/// Publishes and waits for the stream's acknowledgement; checks it names
/// our stream and a new sequence.
async fn publish_acked(
    js: &jetstream::Context,
    subject: String,
    headers: Option<HeaderMap>,
    body: Bytes,
) -> anyhow::Result<u64> {
    let pending = match headers {
        None => js.publish(subject, body).await,
        Some(headers) => js.publish_with_headers(subject, headers, body).await,
    };
    let ack = pending
        .context("publishing")?
        .await
        .context("waiting for the publish acknowledgement")?;
    anyhow::ensure!(
        ack.stream == STREAM && !ack.duplicate,
        "unexpected acknowledgement {ack:?}"
    );
    Ok(ack.sequence)
}

/// `total` messages from `in_flight` publishers, each with one publish in
/// flight at a time, spread over the connections.
async fn publish_phase(
    connections: &[jetstream::Context],
    in_flight: usize,
    total: usize,
    payload_bytes: usize,
    cpu: Option<&ServerCpu>,
) -> anyhow::Result<Phase> {
    let mark = CpuMark::start(cpu)?;
    let subject = format!("bench.publish.{in_flight}");
    let (latencies, elapsed) = publish_load(
        connections,
        in_flight,
        total,
        payload_bytes,
        &subject,
        false,
    )
    .await?;
    let mut phase = phase(
        format!("Publish, {in_flight} in flight"),
        Some(in_flight),
        elapsed,
        latencies,
    );
    phase.server_cpu_us_per_message = mark.per_message(phase.messages)?;
    Ok(phase)
}

/// `in_flight` publishers, `total.div_ceil(in_flight)` publishes each, on
/// `{subject}.{publisher}`, each waiting for its acknowledgement before
/// the next; the latencies from publish call to acknowledgement and the
/// wall time. With `stamp`, each message carries its send instant for the
/// consumers.
async fn publish_load(
    connections: &[jetstream::Context],
    in_flight: usize,
    total: usize,
    payload_bytes: usize,
    subject: &str,
    stamp: bool,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let per_publisher = total.div_ceil(in_flight);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(in_flight);
    let spread = connections.len().min(in_flight);
    for p in 0..in_flight {
        let js = connections[p % spread].clone();
        let subject = format!("{subject}.{p}");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_publisher);
            for _ in 0..per_publisher {
                let body = payload(payload_bytes);
                let sent = Instant::now();
                let headers = stamp.then(|| stamped(sent));
                publish_acked(&js, subject.clone(), headers, body).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(per_publisher * in_flight);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((latencies, started.elapsed()))
}

/// A durable pull consumer with explicit acks on `filter`, created
/// through connection `js` (its deliveries come over that connection).
async fn durable_consumer(
    js: &jetstream::Context,
    name: &str,
    filter: &str,
) -> anyhow::Result<consumer::Consumer<consumer::pull::Config>> {
    js.get_stream(STREAM)
        .await
        .context("looking up the stream")?
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::New,
            filter_subject: filter.into(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the consumer {name}"))
}

/// What one consumer saw: for each stream sequence, the latency from its
/// send stamp to the message in hand; and when the server had processed
/// all its acks.
struct Received {
    latencies: HashMap<u64, Duration>,
    /// When the last new message was in hand.
    last: Instant,
    /// When the server had no ack of this consumer pending.
    drained: Instant,
}

/// Receives `expected` distinct messages through `consumer`, acking each
/// as it arrives, then waits until the server has no ack of it pending.
async fn receive_all(
    consumer: consumer::Consumer<consumer::pull::Config>,
    expected: usize,
) -> anyhow::Result<Received> {
    let mut messages = consumer.messages().await.context("pulling")?;
    let mut latencies = HashMap::with_capacity(expected);
    let mut last = Instant::now();
    while latencies.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .with_context(|| {
                format!(
                    "no delivery within 10 s after {} of {expected}",
                    latencies.len()
                )
            })?
            .context("the consumer's stream ended")?
            .map_err(|e| anyhow::anyhow!("delivery failed: {e}"))?;
        let at = Instant::now();
        let sent = stamp_of(&message)?;
        let (sequence, redelivered) = {
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("delivery without metadata: {e}"))?;
            (info.stream_sequence, info.delivered > 1)
        };
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
        // A redelivery is not a new message: its first delivery counted.
        if !redelivered {
            anyhow::ensure!(
                latencies
                    .insert(sequence, at.saturating_duration_since(sent))
                    .is_none(),
                "sequence {sequence} delivered twice as new"
            );
            last = at;
        }
    }
    drop(messages);
    loop {
        let info = consumer
            .get_info()
            .await
            .map_err(|e| anyhow::anyhow!("reading the consumer's state: {e}"))?;
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Received {
        latencies,
        last,
        drained: Instant::now(),
    })
}

/// `subscribers` durable consumers, each receiving and acking every
/// message, while `in_flight` publishers publish `total`: the publish →
/// ack row and, with consumers, the publish → delivered row (to the last
/// of them). The row ends when every consumer has acked every message.
async fn fan_out_phase(
    connections: &[jetstream::Context],
    subscribers: usize,
    in_flight: usize,
    total: usize,
    payload_bytes: usize,
    cpu: Option<&ServerCpu>,
) -> anyhow::Result<Vec<Phase>> {
    let total = total.div_ceil(in_flight) * in_flight;
    let subject = format!("bench.fanout.{subscribers}");
    let mut names = Vec::with_capacity(subscribers);
    let mut receivers = Vec::with_capacity(subscribers);
    for k in 0..subscribers {
        let name = format!("bench-fanout-{subscribers}-{k}");
        let consumer = durable_consumer(
            &connections[k % connections.len()],
            &name,
            &format!("{subject}.>"),
        )
        .await?;
        names.push(name);
        receivers.push(tokio::spawn(receive_all(consumer, total)));
    }
    let mark = CpuMark::start(cpu)?;
    let started = Instant::now();
    let (acks, published) =
        publish_load(connections, in_flight, total, payload_bytes, &subject, true).await?;
    let mut last_of: HashMap<u64, Duration> = HashMap::with_capacity(total);
    let mut drained = started + published;
    for receiver in receivers {
        let received = receiver.await??;
        drained = drained.max(received.drained);
        for (sequence, latency) in received.latencies {
            let slowest = last_of.entry(sequence).or_default();
            *slowest = (*slowest).max(latency);
        }
    }
    let cpu_per_message = mark.per_message(total)?;
    let who = if subscribers == 1 {
        "subscriber"
    } else {
        "subscribers"
    };
    let row = format!("{subscribers} {who}, {in_flight} in flight");
    let mut ack = phase(
        format!("{row}: publish → ack"),
        Some(in_flight),
        published,
        acks,
    );
    ack.subscribers = Some(subscribers);
    ack.server_cpu_us_per_message = cpu_per_message;
    let mut phases = vec![ack];
    if subscribers > 0 {
        anyhow::ensure!(
            last_of.len() == total,
            "{} of {total} messages delivered",
            last_of.len()
        );
        let mut delivered = phase(
            format!("{row}: publish → delivered (last of {subscribers})"),
            Some(in_flight),
            drained.saturating_duration_since(started),
            last_of.into_values().collect(),
        );
        delivered.subscribers = Some(subscribers);
        delivered.server_cpu_us_per_message = cpu_per_message;
        phases.push(delivered);
    }
    let js = &connections[0];
    for name in names {
        js.delete_consumer_from_stream(&name, STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("deleting the consumer {name}: {e}"))?;
    }
    Ok(phases)
}

/// Publishes `rate` per second for `seconds` on a fixed schedule, each
/// publish spawned at its intended time over the connections; latencies
/// count from the intended time, to the acknowledgement and to delivery
/// through one durable consumer with explicit acks.
async fn open_loop_phase(
    connections: &[jetstream::Context],
    args: &Args,
    rate: u32,
    cpu: Option<&ServerCpu>,
) -> anyhow::Result<Vec<Phase>> {
    let total = usize::try_from(u64::from(rate) * args.seconds)?;
    let period = Duration::from_secs(1) / rate;
    let subject = format!("bench.open.{rate}");
    let name = format!("bench-open-{rate}");
    let consumer = durable_consumer(&connections[0], &name, &subject).await?;
    let receiver = tokio::spawn(receive_all(consumer, total));
    let mark = CpuMark::start(cpu)?;
    let start = Instant::now() + Duration::from_millis(200);
    let behind_after = Duration::from_millis(args.behind_ms);
    let mut behind = 0;
    let mut calls = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + period * u32::try_from(i)?;
        tokio::time::sleep_until(due.into()).await;
        if Instant::now().saturating_duration_since(due) > behind_after {
            behind += 1;
        }
        let js = connections[i % connections.len()].clone();
        let body = payload(args.payload_bytes);
        let subject = subject.clone();
        calls.push(tokio::spawn(async move {
            publish_acked(&js, subject, Some(stamped(due)), body).await?;
            let at = Instant::now();
            anyhow::Ok((at.saturating_duration_since(due), at))
        }));
    }
    let mut acks = Vec::with_capacity(total);
    let mut last_ack = start;
    for call in calls {
        let (latency, at) = call.await??;
        acks.push(latency);
        last_ack = last_ack.max(at);
    }
    let received = receiver.await??;
    let cpu_per_message = mark.per_message(total)?;
    let last_delivery = received.last;
    let mut phases = vec![
        phase(
            format!("open loop {rate}/s: publish → ack"),
            None,
            last_ack.saturating_duration_since(start),
            acks,
        ),
        phase(
            format!("open loop {rate}/s: publish → delivered"),
            None,
            last_delivery.saturating_duration_since(start),
            received.latencies.into_values().collect(),
        ),
    ];
    for p in &mut phases {
        p.behind_schedule = Some(behind);
        p.server_cpu_us_per_message = cpu_per_message;
    }
    connections[0]
        .delete_consumer_from_stream(&name, STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("deleting the consumer {name}: {e}"))?;
    Ok(phases)
}

/// One message at a time through a durable pull consumer with explicit
/// acks: latency from the publish call to the message in hand.
async fn delivery_phase(
    js: &jetstream::Context,
    round_trips: usize,
    payload_bytes: usize,
    cpu: Option<&ServerCpu>,
) -> anyhow::Result<Phase> {
    let consumer = durable_consumer(js, "bench-delivery", "bench.delivery").await?;
    let mark = CpuMark::start(cpu)?;
    let mut messages = consumer.messages().await.context("pulling")?;
    let mut latencies = Vec::with_capacity(round_trips);
    let started = Instant::now();
    for i in 0..round_trips {
        let body = payload(payload_bytes);
        let sent = Instant::now();
        let sequence = publish_acked(js, "bench.delivery".into(), None, body.clone()).await?;
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .with_context(|| format!("no delivery of round trip {i} within 10 s"))?
            .context("the consumer's stream ended")?
            .map_err(|e| anyhow::anyhow!("delivery failed: {e}"))?;
        latencies.push(sent.elapsed());
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("delivery without metadata: {e}"))?;
        anyhow::ensure!(
            info.stream_sequence == sequence && message.payload == body,
            "round trip {i}: delivered sequence {} is not the one published ({sequence})",
            info.stream_sequence
        );
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
    }
    let mut phase = phase(
        "Publish → delivered (pull consumer, explicit ack)".into(),
        Some(1),
        started.elapsed(),
        latencies,
    );
    phase.server_cpu_us_per_message = mark.per_message(phase.messages)?;
    Ok(phase)
}

fn markdown(report: &Report) -> String {
    let sync = report.disk_sync_ms.map_or(String::new(), |[p50, p99]| {
        format!(", disk sync (4 KB write + fsync) p50 {p50:.2} ms, p99 {p99:.2} ms")
    });
    let mut out = format!(
        "NATS JetStream {} ({}), file storage, payload {} bytes, {} cores, \
         {} connections, load average {}{sync}\n\n\
         | phase | messages | msg/s | p50 ms | p90 ms | p99 ms | max ms | behind | server CPU µs/msg |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.server_version,
        report.label,
        report.payload_bytes,
        report.cores,
        report.connections,
        report.load_average
    );
    for p in &report.phases {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            p.name,
            p.messages,
            p.per_second,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.max_ms,
            p.behind_schedule.map_or(String::new(), |n| n.to_string()),
            p.server_cpu_us_per_message
                .map_or(String::new(), |us| format!("{us:.0}")),
        ));
    }
    out
}

/// The server must refuse a client that presents no certificate: otherwise
/// this would not be the mutual TLS the gateway is measured with.
async fn check_mutual_tls(args: &Args) -> anyhow::Result<()> {
    let attempt = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(args.ca.clone())
        .connect(&args.url);
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Err(_refused)) => Ok(()),
        Ok(Ok(_client)) => anyhow::bail!(
            "{} accepted a client without a certificate: not mutual TLS",
            args.url
        ),
        Err(_) => anyhow::bail!("connecting without a certificate neither failed nor succeeded"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    origin();
    anyhow::ensure!(
        !args.in_flight.contains(&0),
        "--in-flight needs counts of at least 1"
    );
    anyhow::ensure!(args.connections > 0, "--connections needs at least 1");
    anyhow::ensure!(
        args.open_loop != Some(0),
        "--open-loop needs at least 1 per second"
    );
    // The sweep runs when asked for, or when nothing else is.
    let sweep = match (&args.in_flight[..], &args.subscribers[..], args.open_loop) {
        ([], [], None) => vec![1, 8, 64, 256],
        (in_flight, ..) => in_flight.to_vec(),
    };
    let fan_out_in_flight = args.in_flight.first().copied().unwrap_or(FAN_OUT_IN_FLIGHT);
    let cpu = args.server_pid.map(ServerCpu::new).transpose()?;
    check_mutual_tls(&args).await?;
    let disk_sync_ms = args.sync_probe_dir.as_deref().map(disk_sync).transpose()?;
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(args.ca.clone())
            .add_client_certificate(args.cert.clone(), args.key.clone())
            .connect(&args.url)
            .await
            .with_context(|| format!("connecting to {} over mutual TLS", args.url))?;
        connections.push(client);
    }
    let server_version = connections[0].server_info().version;
    let connections: Vec<_> = connections.into_iter().map(jetstream::new).collect();
    let js = connections[0].clone();
    // A leftover stream from an earlier run would carry its messages in.
    match js.delete_stream(STREAM).await {
        Ok(_) => {}
        Err(e) => match e.kind() {
            jetstream::context::DeleteStreamErrorKind::JetStream(js_error)
                if js_error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
            _ => return Err(anyhow::anyhow!("deleting a leftover stream: {e}")),
        },
    }
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .context("creating the stream")?;

    let cpu = cpu.as_ref();
    let progress =
        |p: &Phase| eprintln!("{}: {:.0}/s, p99 {:.2} ms", p.name, p.per_second, p.p99_ms);
    let mut phases = Vec::new();
    for &n in &sweep {
        let p = publish_phase(&connections, n, args.messages, args.payload_bytes, cpu).await?;
        progress(&p);
        phases.push(p);
    }
    if !sweep.is_empty() {
        let p = delivery_phase(&js, args.round_trips, args.payload_bytes, cpu).await?;
        progress(&p);
        phases.push(p);
    }
    for &k in &args.subscribers {
        for p in fan_out_phase(
            &connections,
            k,
            fan_out_in_flight,
            args.messages,
            args.payload_bytes,
            cpu,
        )
        .await?
        {
            progress(&p);
            phases.push(p);
        }
    }
    if let Some(rate) = args.open_loop {
        let rows = open_loop_phase(&connections, &args, rate, cpu).await?;
        for p in &rows {
            progress(p);
        }
        eprintln!(
            "open loop {rate}/s: {} of {} publishes sent more than {} ms behind schedule",
            rows[0].behind_schedule.unwrap_or_default(),
            rows[0].messages,
            args.behind_ms
        );
        phases.extend(rows);
    }
    js.delete_stream(STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("deleting the stream: {e}"))?;

    let report = Report {
        server_version,
        label: args.label,
        payload_bytes: args.payload_bytes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        connections: args.connections,
        disk_sync_ms,
        phases,
    };
    print!("{}", markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
