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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt as _;
use rand::RngCore as _;
use serde::Serialize;

/// The stream the harness owns (deleted and created at each run).
const STREAM: &str = "LIANDONG_PEER_BENCH";

/// Load generator for NATS JetStream over mutual TLS.
#[derive(Debug, Parser)]
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
    /// In-flight counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256")]
    in_flight: Vec<usize>,
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
    /// Publishes in flight at once (1 for the delivery phase).
    in_flight: usize,
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

fn phase(name: String, in_flight: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Phase {
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
    body: Bytes,
) -> anyhow::Result<u64> {
    let ack = js
        .publish(subject, body)
        .await
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
) -> anyhow::Result<Phase> {
    let per_publisher = total.div_ceil(in_flight);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(in_flight);
    let spread = connections.len().min(in_flight);
    for p in 0..in_flight {
        let js = connections[p % spread].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_publisher);
            for _ in 0..per_publisher {
                let body = payload(payload_bytes);
                let sent = Instant::now();
                publish_acked(&js, format!("bench.publish.{in_flight}.{p}"), body).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(per_publisher * in_flight);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(phase(
        format!("Publish, {in_flight} in flight"),
        in_flight,
        started.elapsed(),
        latencies,
    ))
}

/// One message at a time through a durable pull consumer with explicit
/// acks: latency from the publish call to the message in hand.
async fn delivery_phase(
    js: &jetstream::Context,
    stream: &stream::Stream,
    round_trips: usize,
    payload_bytes: usize,
) -> anyhow::Result<Phase> {
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench-delivery".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::New,
            filter_subject: "bench.delivery".into(),
            ..Default::default()
        })
        .await
        .context("creating the consumer")?;
    let mut messages = consumer.messages().await.context("pulling")?;
    let mut latencies = Vec::with_capacity(round_trips);
    let started = Instant::now();
    for i in 0..round_trips {
        let body = payload(payload_bytes);
        let sent = Instant::now();
        let sequence = publish_acked(js, "bench.delivery".into(), body.clone()).await?;
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
    Ok(phase(
        "Publish → delivered (pull consumer, explicit ack)".into(),
        1,
        started.elapsed(),
        latencies,
    ))
}

fn markdown(report: &Report) -> String {
    let sync = report.disk_sync_ms.map_or(String::new(), |[p50, p99]| {
        format!(", disk sync (4 KB write + fsync) p50 {p50:.2} ms, p99 {p99:.2} ms")
    });
    let mut out = format!(
        "NATS JetStream {} ({}), file storage, payload {} bytes, {} cores, \
         {} connections{sync}\n\n\
         | phase | messages | msg/s | p50 ms | p90 ms | p99 ms | max ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        report.server_version, report.label, report.payload_bytes, report.cores, report.connections
    );
    for p in &report.phases {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            p.name, p.messages, p.per_second, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
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
    anyhow::ensure!(
        !args.in_flight.is_empty() && !args.in_flight.contains(&0),
        "--in-flight needs counts of at least 1"
    );
    anyhow::ensure!(args.connections > 0, "--connections needs at least 1");
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
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.>".into()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .context("creating the stream")?;

    let mut phases = Vec::new();
    for &n in &args.in_flight {
        let p = publish_phase(&connections, n, args.messages, args.payload_bytes).await?;
        eprintln!("{}: {:.0}/s, p99 {:.2} ms", p.name, p.per_second, p.p99_ms);
        phases.push(p);
    }
    phases.push(delivery_phase(&js, &stream, args.round_trips, args.payload_bytes).await?);
    js.delete_stream(STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("deleting the stream: {e}"))?;

    let report = Report {
        server_version,
        label: args.label,
        payload_bytes: args.payload_bytes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
