//! The faults, each injected under load and each undone before the next:
//! the injector records when it was active and what it saw, and reports
//! directly what only it can see (an exit status, a start-up that should
//! have been refused, a `verify-store` that missed a change).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use prost::Message;
use sqlx::Row as _;

use liandong_core::pb::{self, Confidentiality as Level};

use super::bed::Bed;
use super::bed::STALL_TIMEOUT_SECONDS;
use super::history::{Change, Epoch, FaultEvent, Outcome, Shared, Via, Violation};
use super::workload::{RECIPIENT, STALLED, Target, Workload, key, probe};
use super::{Backend, Fault, Rng};

/// How long the harness waits for service to come back after a fault is
/// undone.
const RECOVERY: Duration = Duration::from_secs(20);

/// Injects `fault` once and records it.
pub async fn inject(
    fault: Fault,
    bed: &mut Bed,
    history: &Shared,
    workload: &Workload,
    target: &Target,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let outcome = match fault {
        Fault::Kill => kill(bed, rng).await?,
        Fault::Term => term(bed, history, rng).await?,
        Fault::Full => full(bed, history).await?,
        Fault::Lock => lock(bed, history).await?,
        Fault::PgRestart => pg_restart(bed, history).await?,
        Fault::Stall => stall(bed, history, workload).await,
        Fault::Tamper => tamper(bed, history, target, rng).await?,
        Fault::Registry => registry(bed, history).await?,
    };
    history.lock().expect("history").faults.push(FaultEvent {
        fault,
        started,
        ended: Instant::now(),
        outcome,
    });
    Ok(())
}

fn violation(history: &Shared, fault: Fault, rule: &'static str, detail: String) {
    history.lock().expect("history").violations.push(Violation {
        rule,
        fault: Some(fault),
        detail,
    });
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Waits until a direct publish started after `since` got a receipt;
/// reports a violation naming `what` otherwise. Returns how long it took.
async fn wait_for_service(
    history: &Shared,
    fault: Fault,
    since: Instant,
    what: &str,
) -> Option<Duration> {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let served = history.lock().expect("history").ops.iter().any(|op| {
            op.via == Via::Direct && op.started >= since && matches!(op.outcome, Outcome::Ok { .. })
        });
        if served {
            return Some(since.elapsed());
        }
        if Instant::now() > deadline {
            violation(
                history,
                fault,
                "service-resumes",
                format!("no receipt within {RECOVERY:?} after {what}, without a restart"),
            );
            return None;
        }
        pause(50).await;
    }
}

/// SIGKILL of the gateway (and every third time of the adapter daemon) at
/// random moments, each followed by a restart.
async fn kill(bed: &mut Bed, rng: &mut Rng) -> anyhow::Result<String> {
    let cycles = 3 + rng.below(4);
    let (mut gateway, mut adapter) = (0, 0);
    for i in 0..cycles {
        pause(150 + rng.below(1200)).await;
        if i % 3 == 2 {
            bed.stop_adapter(Signal::SIGKILL)?;
            blocking(|| bed.start_adapter())?;
            adapter += 1;
        } else {
            bed.stop_gateway(Signal::SIGKILL, Duration::from_secs(10))?;
            blocking(|| bed.start_gateway())?;
            gateway += 1;
        }
    }
    Ok(format!("{gateway} gateway + {adapter} adapter kills"))
}

/// SIGTERM under load: the gateway must exit 0 within its grace period.
async fn term(bed: &mut Bed, history: &Shared, rng: &mut Rng) -> anyhow::Result<String> {
    pause(300 + rng.below(700)).await;
    let status = bed.stop_gateway(Signal::SIGTERM, Duration::from_secs(20))?;
    if !status.success() {
        violation(
            history,
            Fault::Term,
            "term-exit",
            format!("the gateway exited with {status} on SIGTERM"),
        );
    }
    blocking(|| bed.start_gateway())?;
    Ok(format!("exit {status}"))
}

fn counts(history: &Shared, from: Instant, to: Instant) -> String {
    let history = history.lock().expect("history");
    let (mut ok, mut refused, mut unknown) = (0, 0, 0);
    for op in history
        .ops
        .iter()
        .filter(|op| op.via == Via::Direct && op.started >= from && op.started <= to)
    {
        match op.outcome {
            Outcome::Ok { .. } => ok += 1,
            Outcome::Refused { .. } => refused += 1,
            _ => unknown += 1,
        }
    }
    format!("{ok} ok/{refused} refused/{unknown} unknown")
}

/// The store's file system filled to the last byte, then freed.
async fn full(bed: &mut Bed, history: &Shared) -> anyhow::Result<String> {
    let Some(mount) = bed.store_mount.clone() else {
        return Ok("not available: the store is not on a tmpfs".into());
    };
    let filler = mount.join("filler");
    let mut file = std::fs::File::create(&filler)?;
    let chunk = vec![0u8; 256 * 1024];
    let mut written = 0usize;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len();
    }
    // The last partial chunk, to the last byte.
    while file.write_all(&chunk[..4096]).is_ok() {
        written += 4096;
    }
    let _ = file.sync_all();
    let full_at = Instant::now();
    pause(3000).await;
    let during = counts(history, full_at, Instant::now());
    drop(file);
    std::fs::remove_file(&filler)?;
    let freed = Instant::now();
    let resumed = wait_for_service(history, Fault::Full, freed, "space was freed").await;
    Ok(format!(
        "filled {} MiB; while full {during}; {}",
        written >> 20,
        resumed.map_or("no recovery".into(), |d| format!(
            "receipts again after {:.1} s",
            d.as_secs_f64()
        ))
    ))
}

/// Another writer holds the database longer than the gateway waits.
async fn lock(bed: &mut Bed, history: &Shared) -> anyhow::Result<String> {
    let mut conn = bed.connect().await?;
    let hold = match bed.backend {
        Backend::Sqlite => {
            sqlx::raw_sql("PRAGMA busy_timeout = 20000")
                .execute(&mut conn)
                .await?;
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut conn).await?;
            // Longer than the gateway's busy timeout (10 s).
            Duration::from_secs(12)
        }
        Backend::Postgres => {
            sqlx::raw_sql("BEGIN; LOCK TABLE notifications IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await?;
            Duration::from_secs(8)
        }
    };
    let locked = Instant::now();
    tokio::time::sleep(hold).await;
    let during = counts(history, locked, Instant::now());
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    drop(conn);
    let released = Instant::now();
    let resumed = wait_for_service(history, Fault::Lock, released, "the lock was released").await;
    Ok(format!(
        "held {} s; while held {during}; {}",
        hold.as_secs(),
        resumed.map_or("no recovery".into(), |d| format!(
            "receipts again after {:.1} s",
            d.as_secs_f64()
        ))
    ))
}

/// `pg_ctlcluster` for the local cluster.
fn pg_ctl(action: &str) -> anyhow::Result<std::process::ExitStatus> {
    let version = std::fs::read_dir("/etc/postgresql")?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no cluster under /etc/postgresql"))?;
    Ok(Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()?)
}

/// Starts the PostgreSQL cluster if it is down (it may be running already).
pub fn ensure_postgres_running() {
    let _ = pg_ctl("start");
}

/// Restarts PostgreSQL when dropped, whatever happened in between.
struct RestartPostgres;

impl Drop for RestartPostgres {
    fn drop(&mut self) {
        ensure_postgres_running();
    }
}

/// The PostgreSQL server stopped and started again under load.
async fn pg_restart(bed: &mut Bed, history: &Shared) -> anyhow::Result<String> {
    if bed.backend != Backend::Postgres {
        return Ok("not applicable".into());
    }
    let guard = RestartPostgres;
    let stopped = blocking(|| pg_ctl("stop"))?;
    anyhow::ensure!(stopped.success(), "pg_ctlcluster stop failed: {stopped}");
    let down = Instant::now();
    pause(2000).await;
    let during = counts(history, down, Instant::now());
    let started = blocking(|| pg_ctl("start"))?;
    std::mem::forget(guard);
    anyhow::ensure!(started.success(), "pg_ctlcluster start failed: {started}");
    let up = Instant::now();
    let resumed = wait_for_service(
        history,
        Fault::PgRestart,
        up,
        "PostgreSQL was started again",
    )
    .await;
    Ok(format!(
        "down 2 s; while down {during}; {}",
        resumed.map_or("no recovery".into(), |d| format!(
            "receipts again after {:.1} s",
            d.as_secs_f64()
        ))
    ))
}

/// One subscriber stops reading while the load goes on.
async fn stall(bed: &mut Bed, history: &Shared, workload: &Workload) -> String {
    let stalled = key(STALLED.0, STALLED.1);
    let member = key("cz-psb-xiangyuan", "fh-member");
    let rss_before = bed.gateway_rss_kib();
    let from = Instant::now();
    workload
        .stall
        .store(true, std::sync::atomic::Ordering::SeqCst);
    pause(8000).await;
    let rss_after = bed.gateway_rss_kib();
    workload
        .stall
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let to = Instant::now();
    // The cut reaches the subscriber once it reads again: wait for it.
    let cut_by = to + Duration::from_secs(10);
    let ended = || {
        history
            .lock()
            .expect("history")
            .session_ends
            .iter()
            .find(|(s, _, _, at)| *s == stalled && *at >= from)
            .map(|(_, _, status, at)| (status.clone(), *at))
    };
    while ended().is_none() && Instant::now() < cut_by {
        pause(100).await;
    }
    let cut = ended();
    let (others, owed) = {
        let history = history.lock().expect("history");
        let others = history
            .frames
            .iter()
            .filter(|f| f.subscription == member && f.at >= from && f.at <= to)
            .count();
        let owed = history
            .ops
            .iter()
            .filter(|op| {
                op.started >= from
                    && op.started + Duration::from_secs(2) <= to
                    && matches!(op.outcome, Outcome::Ok { .. })
                    && op.notification.confidentiality != Level::Restricted as i32
            })
            .count();
        (others, owed)
    };
    if owed > 0 && others == 0 {
        violation(
            history,
            Fault::Stall,
            "stall-isolated",
            format!(
                "{member} received nothing during the stall of {stalled} though {owed} notification(s) for it got receipts"
            ),
        );
    }
    let cut = match cut {
        Some((status, _)) if status.contains("stopped reading") => {
            format!("cut ({status})")
        }
        other => {
            violation(
                history,
                Fault::Stall,
                "stall-cut",
                format!(
                    "{stalled} stopped reading for 8 s (threshold {STALL_TIMEOUT_SECONDS} s) and its stream was not cut: {other:?}"
                ),
            );
            "not cut".to_owned()
        }
    };
    format!(
        "stalled stream {cut}; {member} got {others} frames meanwhile; gateway RSS {rss_before}→{rss_after} KiB"
    )
}

/// A whole row of the notifications table.
#[derive(Debug, Clone)]
struct FullRow {
    sequence: i64,
    sender: String,
    notification_id: String,
    case_ref: String,
    event: i64,
    confidentiality: i64,
    region: String,
    recipients: String,
    received_at: i64,
    content_hash: Vec<u8>,
    payload: Vec<u8>,
    /// The row's link in the store's hash chain; restored with the row.
    chain: Option<Vec<u8>>,
}

async fn full_rows(conn: &mut sqlx::AnyConnection) -> anyhow::Result<Vec<FullRow>> {
    let rows = sqlx::query(
        "SELECT sequence, sender, notification_id, case_ref, event, confidentiality, region, \
         recipients, received_at, content_hash, payload, chain FROM notifications ORDER BY sequence",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(FullRow {
                sequence: r.try_get("sequence")?,
                sender: r.try_get("sender")?,
                notification_id: r.try_get("notification_id")?,
                case_ref: r.try_get("case_ref")?,
                event: r.try_get("event")?,
                confidentiality: r.try_get("confidentiality")?,
                region: r.try_get("region")?,
                recipients: r.try_get("recipients")?,
                received_at: r.try_get("received_at")?,
                content_hash: r.try_get("content_hash")?,
                payload: r.try_get("payload")?,
                chain: r.try_get("chain")?,
            })
        })
        .collect()
}

async fn set_sequence(conn: &mut sqlx::AnyConnection, from: i64, to: i64) -> anyhow::Result<()> {
    sqlx::query("UPDATE notifications SET sequence = $1 WHERE sequence = $2")
        .bind(to)
        .bind(from)
        .execute(conn)
        .await?;
    Ok(())
}

async fn swap(conn: &mut sqlx::AnyConnection, a: i64, b: i64) -> anyhow::Result<()> {
    set_sequence(conn, a, -1).await?;
    set_sequence(conn, b, a).await?;
    set_sequence(conn, -1, b).await
}

/// Rows edited, deleted and reordered with the gateway stopped. The gateway
/// must refuse to start on them (without its override flag), and
/// `verify-store` must report each; if it starts anyway, nothing changed
/// may be served. The rows are put back before the run goes on.
async fn tamper(
    bed: &mut Bed,
    history: &Shared,
    target: &Target,
    rng: &mut Rng,
) -> anyhow::Result<String> {
    let fault = Fault::Tamper;
    let status = bed.stop_gateway(Signal::SIGTERM, Duration::from_secs(20))?;
    let mut conn = bed.connect().await?;
    let rows = full_rows(&mut conn).await?;
    let restricted: Vec<&FullRow> = rows
        .iter()
        .filter(|r| r.confidentiality == Level::Restricted as i64)
        .collect();
    if rows.len() < 8 || restricted.is_empty() {
        drop(conn);
        blocking(|| bed.start_gateway())?;
        return Ok("not enough rows yet".into());
    }
    // Distinct rows: the last (deleted), a RESTRICTED one (declared PUBLIC),
    // one edited, two adjacent ones swapped.
    let last = rows.last().cloned().expect("rows");
    let declassified = restricted[rng.below(restricted.len() as u64) as usize].clone();
    let pick = |rng: &mut Rng, avoid: &[i64]| loop {
        let row = &rows[rng.below(rows.len() as u64 - 2) as usize];
        if !avoid.contains(&row.sequence) && !avoid.contains(&(row.sequence + 1)) {
            break row.clone();
        }
    };
    let edited = pick(rng, &[last.sequence, declassified.sequence]);
    let first = pick(
        rng,
        &[last.sequence, declassified.sequence, edited.sequence],
    );
    let second = rows
        .iter()
        .find(|r| r.sequence > first.sequence)
        .cloned()
        .expect("a row after");
    let mut changed = pb::Notification::decode(edited.payload.as_slice())?;
    changed.summary = format!("TAMPERED {}", edited.notification_id);
    sqlx::query("UPDATE notifications SET payload = $1 WHERE sequence = $2")
        .bind(changed.encode_to_vec())
        .bind(edited.sequence)
        .execute(&mut conn)
        .await?;
    sqlx::query("UPDATE notifications SET confidentiality = $1 WHERE sequence = $2")
        .bind(Level::Public as i64)
        .bind(declassified.sequence)
        .execute(&mut conn)
        .await?;
    sqlx::query("DELETE FROM notifications WHERE sequence = $1")
        .bind(last.sequence)
        .execute(&mut conn)
        .await?;
    swap(&mut conn, first.sequence, second.sequence).await?;
    let touched = [
        edited.sequence,
        declassified.sequence,
        last.sequence,
        first.sequence,
        second.sequence,
    ];
    history
        .lock()
        .expect("history")
        .tampered
        .extend(touched.iter().map(|&s| s as u64));

    // verify-store must find every kind of change.
    let output = blocking(|| {
        Command::new(crate::binary("liandong-gateway"))
            .arg("verify-store")
            .arg("--config")
            .arg(&bed.config)
            .output()
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mentions = |s: i64| {
        text.split(|c: char| !c.is_ascii_digit())
            .any(|word| word == s.to_string())
    };
    let unreported: Vec<&str> = [
        ("edited", mentions(edited.sequence)),
        ("declassified", mentions(declassified.sequence)),
        ("deleted", mentions(last.sequence)),
        (
            "reordered",
            mentions(first.sequence) || mentions(second.sequence),
        ),
    ]
    .iter()
    .filter(|(_, seen)| !seen)
    .map(|(what, _)| *what)
    .collect();
    if output.status.success() || !unreported.is_empty() {
        violation(
            history,
            fault,
            "tamper-verify",
            format!(
                "verify-store exited {} and did not report: {unreported:?} (sequences edited {}, declassified {}, deleted {}, swapped {}/{})",
                output.status,
                edited.sequence,
                declassified.sequence,
                last.sequence,
                first.sequence,
                second.sequence
            ),
        );
    }

    // Start-up must be refused.
    let start = blocking(|| bed.try_start_gateway());
    let verdict = match start {
        Err(_) => "start refused".to_owned(),
        Ok(()) => {
            violation(
                history,
                fault,
                "tamper-start",
                format!(
                    "the gateway started on a store with changed rows ({touched:?}) without its override flag"
                ),
            );
            let live = Instant::now();
            // Fresh readers from the beginning see every row as now served.
            let stamp = live.elapsed().as_nanos() ^ u128::from(rng.next_u64());
            let name = format!("fh-probe-{stamp}");
            tokio::join!(
                probe(
                    target,
                    history,
                    "cz-press-office",
                    &name,
                    Duration::from_secs(3)
                ),
                probe(
                    target,
                    history,
                    "cz-psb-xiangyuan",
                    &name,
                    Duration::from_secs(3)
                ),
            );
            bed.stop_gateway(Signal::SIGTERM, Duration::from_secs(20))?;
            history
                .lock()
                .expect("history")
                .tampered_live
                .push((live, Instant::now()));
            "started anyway".to_owned()
        }
    };

    // Put everything back.
    sqlx::query("UPDATE notifications SET payload = $1 WHERE sequence = $2")
        .bind(&edited.payload)
        .bind(edited.sequence)
        .execute(&mut conn)
        .await?;
    sqlx::query("UPDATE notifications SET confidentiality = $1 WHERE sequence = $2")
        .bind(declassified.confidentiality)
        .bind(declassified.sequence)
        .execute(&mut conn)
        .await?;
    swap(&mut conn, first.sequence, second.sequence).await?;
    let taken: Option<(String, String)> =
        sqlx::query_as("SELECT sender, notification_id FROM notifications WHERE sequence = $1")
            .bind(last.sequence)
            .fetch_optional(&mut conn)
            .await?;
    match taken {
        Some((sender, id)) => {
            violation(
                history,
                fault,
                "sequence-unique",
                format!(
                    "sequence {} of the deleted {} {} was given again, to {sender} {id}",
                    last.sequence, last.sender, last.notification_id
                ),
            );
            history
                .lock()
                .expect("history")
                .tamper_lost
                .push((last.sender.clone(), last.notification_id.clone()));
        }
        None => {
            let republished: Option<i64> = sqlx::query_scalar(
                "SELECT sequence FROM notifications WHERE sender = $1 AND notification_id = $2",
            )
            .bind(&last.sender)
            .bind(&last.notification_id)
            .fetch_optional(&mut conn)
            .await?;
            if let Some(sequence) = republished {
                // Stored again as new while deleted: keep the new row.
                history
                    .lock()
                    .expect("history")
                    .tamper_lost
                    .push((last.sender.clone(), last.notification_id.clone()));
                violation(
                    history,
                    fault,
                    "tamper-served",
                    format!(
                        "the deleted {} {} was stored again as new at {sequence}",
                        last.sender, last.notification_id
                    ),
                );
            } else {
                sqlx::query(
                    "INSERT INTO notifications (sequence, sender, notification_id, case_ref, event, \
                     confidentiality, region, recipients, received_at, content_hash, payload, chain) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(last.sequence)
                .bind(&last.sender)
                .bind(&last.notification_id)
                .bind(&last.case_ref)
                .bind(last.event)
                .bind(last.confidentiality)
                .bind(&last.region)
                .bind(&last.recipients)
                .bind(last.received_at)
                .bind(&last.content_hash)
                .bind(&last.payload)
                .bind(&last.chain)
                .execute(&mut conn)
                .await?;
            }
        }
    }
    drop(conn);
    blocking(|| bed.start_gateway())?;
    Ok(format!(
        "stopped ({status}); 5 rows changed; verify-store exit {}; {verdict}",
        output.status
    ))
}

/// The recipient's registry entry changed with streams open, then put
/// back, each by SIGHUP: first its clearance lowered, then its entry
/// removed. A removed agency's open stream must be closed.
async fn registry(bed: &mut Bed, history: &Shared) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    for change in [Change::Lowered, Change::Removed] {
        let sent = Instant::now();
        bed.reload_registry(Some((change, RECIPIENT))).await?;
        let applied = Instant::now();
        pause(4000).await;
        let restore_sent = Instant::now();
        bed.reload_registry(None).await?;
        let restored = Instant::now();
        let closed = history
            .lock()
            .expect("history")
            .session_ends
            .iter()
            .any(|(s, _, _, at)| s.starts_with(RECIPIENT) && *at >= sent && *at <= restore_sent);
        if change == Change::Removed && !closed {
            violation(
                history,
                Fault::Registry,
                "registry-stream-closed",
                format!(
                    "{RECIPIENT} was removed from the registry but its open stream was not closed within 4 s"
                ),
            );
        }
        history.lock().expect("history").epochs.push(Epoch {
            change,
            target: RECIPIENT,
            sent,
            applied,
            restore_sent,
            restored,
        });
        seen.push(format!(
            "{change:?}: stream {}",
            if closed { "closed" } else { "left open" }
        ));
        pause(1000).await;
    }
    Ok(seen.join(", "))
}
