//! `--scenario store`: the store alone. `Store::publish` (the gateway's own
//! store library, the same transaction a publish runs) from N concurrent
//! tasks in this process, with no TLS, HTTP/2 or gRPC in the way: what the
//! store can take, and how many writes share each commit (group commit).
//! CPU is this process's, which here is the store's work plus the tasks
//! that drive it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use liandong_gateway::store::{PublishOutcome, Store};

use crate::resources::Probe;
use crate::{Args, Derived, Payload, Row, postgres_schema, prefill, print_row, quantiles};

/// One row per `--in-flight` value (default 1, 8, 64, 256), each on a
/// fresh store, and the writes per commit of each as derived figures.
pub(crate) async fn sweep(
    args: &Args,
    payload: &Payload,
) -> anyhow::Result<(&'static str, Vec<Row>, Vec<Derived>)> {
    let in_flight = if args.in_flight.is_empty() {
        vec![1, 8, 64, 256]
    } else {
        args.in_flight.clone()
    };
    let probe = Probe::new(i32::try_from(std::process::id())?)?;
    let dir = tempfile::tempdir().context("creating the store's directory")?;
    let mut rows = Vec::new();
    let mut derived = Vec::new();
    let mut backend = "SQLite";
    for (run, &tasks) in in_flight.iter().enumerate() {
        anyhow::ensure!(tasks > 0, "--in-flight values must be at least 1");
        let url = match &args.postgres {
            Some(base) => {
                backend = "PostgreSQL";
                postgres_schema(base).await?
            }
            None => format!(
                "sqlite://{}",
                dir.path().join(format!("store-{run}.db")).display()
            ),
        };
        let store = Store::connect(&url, 4)
            .await
            .with_context(|| format!("opening the store at {url}"))?;
        let total = args.notifications.max(tasks);
        let before = probe.sample()?;
        let started = Instant::now();
        let mut workers = Vec::with_capacity(tasks);
        let store = Arc::new(store);
        for t in 0..tasks {
            let store = Arc::clone(&store);
            let mut payload = payload.seeded(0x5704 + t as u64);
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (t..total).step_by(tasks) {
                    let new = prefill::new_notification(&mut payload, i)?;
                    let sent = Instant::now();
                    match store.publish(&new).await? {
                        PublishOutcome::Stored(_) => latencies.push(sent.elapsed()),
                        other => anyhow::bail!("notification {i} not stored: {other:?}"),
                    }
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(total);
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let elapsed = started.elapsed();
        let cpu = before.cpu_until(&probe.sample()?);
        let (commits, writes) = store.write_counts();
        store.close().await;
        let row = Row {
            test: format!("store.publish, {tasks} in flight"),
            in_flight: Some(tasks),
            count: total,
            elapsed,
            latency: quantiles(latencies),
            behind: None,
            gateway_cpu: Some(cpu),
        };
        print_row(&row);
        rows.push(row);
        let per_commit = writes as f64 / commits.max(1) as f64;
        derived.push(Derived {
            key: writes_per_commit_key(tasks),
            text: format!("writes per commit, {tasks} in flight ({commits} commits)"),
            value: per_commit,
        });
    }
    Ok((backend, rows, derived))
}

/// A JSON key per in-flight count of the default sweep; others share one.
fn writes_per_commit_key(tasks: usize) -> &'static str {
    match tasks {
        1 => "store_writes_per_commit_1",
        8 => "store_writes_per_commit_8",
        64 => "store_writes_per_commit_64",
        256 => "store_writes_per_commit_256",
        _ => "store_writes_per_commit",
    }
}
