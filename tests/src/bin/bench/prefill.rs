//! `--prefill N`: a store that already holds N notifications before the
//! gateway starts, filled through the gateway's own store library (not
//! the API: what is measured is the gateway on a large store, not the
//! filling), and subscriptions that resume inside it. The store is filled
//! only before the gateway runs on it, never while it serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message as _;

use liandong_core::domain::{AgencyId, Envelope, Notification};
use liandong_core::pb;
use liandong_gateway::store::{NewNotification, PublishOutcome, Store};
use liandong_tests::{Subscriber, Testbed};

use crate::{Args, Payload, Row, postgres_schema, print_row, quantiles};

/// Subscriptions the resume row opens.
pub(crate) const RESUMES: usize = 50;

/// Concurrent publishers of the fill: the store batches their writes.
const FILLERS: usize = 64;

/// Who the prefilled notifications come from (none is `cz-psb`, which the
/// resuming subscriptions belong to).
const SENDERS: [&str; 3] = ["cz-eeb", "cz-eeb-luzhou", "cz-procuratorate"];

/// Cases the prefilled clues are spread over.
const CASES: usize = 16;

/// Where a SQLite store is filled before it is copied into place, when
/// the directory exists (memory-backed: its syncs cost nothing).
const STAGING_DIR: &str = "/dev/shm";

/// A filled store, ready for the gateway.
pub(crate) struct Prefilled {
    /// The database URL the gateway is started on.
    pub(crate) url: String,
    pub(crate) backend: &'static str,
    /// Notifications in the store.
    pub(crate) stored: u64,
    /// The highest stored sequence.
    latest: u64,
    /// The fill's row (absent when the store came from the cache).
    pub(crate) rows: Vec<Row>,
    /// The directory that holds the SQLite file (removed on drop).
    _dir: Option<tempfile::TempDir>,
}

/// Fills (or copies from the cache) a store with `count` notifications.
pub(crate) async fn prepare(
    args: &Args,
    payload: &Payload,
    count: usize,
) -> anyhow::Result<Prefilled> {
    let mut rows = Vec::new();
    let (url, backend, dir) = match &args.postgres {
        Some(base) => {
            anyhow::ensure!(
                args.prefill_cache.is_none(),
                "--prefill-cache works on SQLite only"
            );
            (postgres_schema(base).await?, "PostgreSQL", None)
        }
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("prefilled.db");
            (
                format!("sqlite://{}", path.display()),
                "SQLite",
                Some((dir, path)),
            )
        }
    };
    let cached = args
        .prefill_cache
        .as_ref()
        .filter(|cache| cache.exists())
        .zip(dir.as_ref());
    if let Some((cache, (_, path))) = cached {
        let started = Instant::now();
        copy_database(cache, path)?;
        println!(
            "prefill: copied {} in {:.1} s",
            cache.display(),
            started.elapsed().as_secs_f64()
        );
    } else if let Some((_, path)) = &dir {
        // SQLite syncs every publish to disk: fill on tmpfs, where a sync
        // costs nothing, when there is one, then copy the closed file.
        let staging = Path::new(STAGING_DIR)
            .is_dir()
            .then(|| tempfile::tempdir_in(STAGING_DIR))
            .transpose()?;
        let fill_path = staging
            .as_ref()
            .map_or_else(|| path.clone(), |dir| dir.path().join("prefilled.db"));
        let mut row = fill(&format!("sqlite://{}", fill_path.display()), payload, count).await?;
        if staging.is_some() {
            row.test = format!("prefill (store library, {FILLERS} tasks, on {STAGING_DIR})");
            let started = Instant::now();
            copy_database(&fill_path, path)?;
            println!(
                "prefill: copied from {STAGING_DIR} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        print_row(&row);
        rows.push(row);
        if let Some(cache) = &args.prefill_cache {
            copy_database(path, cache)?;
            println!("prefill: saved a copy to {}", cache.display());
        }
    } else {
        let row = fill(&url, payload, count).await?;
        print_row(&row);
        rows.push(row);
    }
    let store = Store::connect(&url, 1).await?;
    let stored = store.count_notifications().await?;
    let latest = store.latest_sequence().await?;
    store.close().await;
    anyhow::ensure!(stored > 0, "the prefilled store holds no notifications");
    if stored != count as u64 {
        println!("prefill: the store holds {stored} notifications (asked for {count})");
    }
    Ok(Prefilled {
        url,
        backend,
        stored,
        latest,
        rows,
        _dir: dir.map(|(dir, _)| dir),
    })
}

/// Copies a closed SQLite database, with its write-ahead log when it has
/// one.
fn copy_database(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", from.display()));
        let target = PathBuf::from(format!("{}{suffix}", to.display()));
        if side.exists() {
            std::fs::copy(&side, &target)?;
        } else if target.exists() {
            std::fs::remove_file(&target)?;
        }
    }
    Ok(())
}

/// Publishes `count` notifications into the store at `url` from
/// [`FILLERS`] concurrent tasks, with a progress line every 5 s.
async fn fill(url: &str, payload: &Payload, count: usize) -> anyhow::Result<Row> {
    let store = Store::connect(url, 4)
        .await
        .with_context(|| format!("opening the store at {url}"))?;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let so_far = done.load(Ordering::Relaxed);
                println!(
                    "prefill: {so_far} of {count} stored ({:.0}/s)",
                    so_far as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let mut tasks = Vec::with_capacity(FILLERS);
    for t in 0..FILLERS {
        let store = store.clone();
        let done = done.clone();
        let mut payload = payload.seeded(0x9F11 + t as u64);
        tasks.push(tokio::spawn(async move {
            for i in (t..count).step_by(FILLERS) {
                let new = new_notification(&mut payload, i)?;
                match store.publish(&new).await? {
                    PublishOutcome::Stored(_) => {}
                    other => anyhow::bail!("prefill notification {i} not stored: {other:?}"),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let mut outcome = Ok(());
    for task in tasks {
        if let Err(error) = task.await? {
            outcome = Err(error);
        }
    }
    progress.abort();
    store.close().await;
    outcome?;
    let row = Row {
        test: format!("prefill (store library, {FILLERS} tasks)"),
        in_flight: Some(FILLERS),
        count,
        elapsed: started.elapsed(),
        latency: None,
        behind: None,
        gateway_cpu: None,
    };
    Ok(row)
}

/// The `i`th notification of a fill: one of [`SENDERS`], one of [`CASES`]
/// cases, in its stored form.
pub(crate) fn new_notification(payload: &mut Payload, i: usize) -> anyhow::Result<NewNotification> {
    let sender = SENDERS[i % SENDERS.len()];
    let mut wire = payload.shared(&format!("pre-{i}"), &format!("CZ-PREFILL-{}", i % CASES));
    wire.sender = sender.to_owned();
    stored_form(sender, wire)
}

/// The stored form of `wire` from `sender`, as the gateway makes it on
/// publish (validated; no statutory copies, which the bench's kinds do
/// not draw).
fn stored_form(sender: &str, wire: pb::Notification) -> anyhow::Result<NewNotification> {
    let sender = AgencyId::parse("sender", sender)?;
    let notification = Notification::try_from(wire.clone())?;
    let envelope = Envelope::of(sender, &notification);
    Ok(NewNotification::new(envelope, wire.encode_to_vec()))
}

/// [`RESUMES`] new subscriptions, each starting at a random point of the
/// stored range: open → first delivery.
pub(crate) async fn resume(bed: &Testbed, prefilled: &Prefilled) -> anyhow::Result<Row> {
    let mut police = bed.client("cz-psb").await;
    let first = prefilled.latest.saturating_sub(prefilled.stored);
    let span = prefilled.latest - first;
    let mut random = Payload::new(crate::PayloadKind::None, 0, u64::from(std::process::id()))?;
    let mut latencies = Vec::with_capacity(RESUMES);
    let started = Instant::now();
    for i in 0..RESUMES {
        let after = first + random.next_u64() % span.max(1);
        let opened = Instant::now();
        let mut inbox = Subscriber::open_with(
            &mut police,
            pb::SubscriptionOpen {
                name: format!("bench-resume-{i}"),
                start: Some(pb::StartPosition {
                    position: Some(pb::start_position::Position::AfterSequence(after)),
                }),
                max_in_flight: 1,
                ..Default::default()
            },
        )
        .await?;
        let delivery = inbox
            .next(Duration::from_secs(60))
            .await?
            .with_context(|| format!("no delivery after sequence {after} within 60 s"))?;
        latencies.push(opened.elapsed());
        anyhow::ensure!(
            delivery.sequence > after,
            "resumed after {after} but got sequence {}",
            delivery.sequence
        );
        inbox.ack(&[delivery.sequence]).await;
        inbox.close().await?;
    }
    let row = Row {
        test: format!(
            "resume inside {} stored: open → first delivery",
            prefilled.stored
        ),
        in_flight: None,
        count: latencies.len(),
        elapsed: started.elapsed(),
        latency: quantiles(latencies),
        behind: None,
        gateway_cpu: None,
    };
    print_row(&row);
    Ok(row)
}
