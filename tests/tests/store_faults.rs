//! The store under faults, end to end: a full disk, rows edited, deleted
//! and reordered behind the gateway's back, and `verify-store`.
//!
//! Every test drives the real `liandong-gateway` binary over mutual TLS and
//! induces the fault for real: the SQLite file, or a PostgreSQL tablespace,
//! on a small tmpfs that is filled up (mounting needs root: without it
//! these tests fail with a message, unless `LIANDONG_SKIP_TMPFS_TESTS=1`;
//! the PostgreSQL half runs when `LIANDONG_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`, answers, and must when
//! `LIANDONG_REQUIRE_POSTGRES=1`), and rows changed with SQL while the
//! gateway is stopped (through `database_url()`, on either backend).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use prost::Message;
use sqlx::{Connection, Row};
use tonic::Code;
use tonic::transport::Channel;

use liandong_core::pb::exchange_client::ExchangeClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_tests::{Subscriber, Testbed, binary, notification, publish, publish_clues};

const WAIT: Duration = Duration::from_secs(10);

/// Exit code of a store integrity problem (`verify-store`, refused start).
const EX_DATAERR: i32 = 65;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A direct connection to the test bed's database (either backend).
async fn database(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .expect("open the gateway's database")
}

/// Stops the test bed's gateway with SIGTERM and waits for it.
fn stop(bed: &mut Testbed) {
    bed.gateway.signal(Signal::SIGTERM);
    bed.gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway stops on SIGTERM");
}

/// `liandong-gateway serve` without `--allow-integrity-failures` must refuse
/// to start: exit 65 and one line on stderr naming the check.
fn assert_start_refused(bed: &Testbed) -> String {
    let output = Command::new(binary("liandong-gateway"))
        .arg("serve")
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg("--config")
        .arg(&bed.config)
        .env("LIANDONG_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run the gateway");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(EX_DATAERR),
        "a store that fails its check must not be served; stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("store integrity check failed"), "{stderr}");
    stderr
}

/// A gateway started with `--allow-integrity-failures` on the test bed's
/// configuration; killed on drop.
struct Allowed {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Allowed {
    fn start(bed: &Testbed) -> Self {
        let log = bed.dir.path().join("gateway-allowed.log");
        let mut child = Command::new(binary("liandong-gateway"))
            .arg("serve")
            .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
            .arg("--config")
            .arg(&bed.config)
            .arg("--allow-integrity-failures")
            .env("LIANDONG_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the log"))
            .spawn()
            .expect("spawn the gateway");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("liandong-gateway listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "the gateway did not start with --allow-integrity-failures: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Self { child, url, log }
    }

    async fn client(&self, bed: &Testbed, agency: &str) -> ExchangeClient<Channel> {
        ExchangeClient::new(
            bed.pki
                .credentials(agency)
                .connect(&self.url, None)
                .await
                .expect("connect"),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Allowed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `verify-store` on the test bed's configuration: exit code, stdout.
fn verify_store(bed: &Testbed, json: bool) -> (Option<i32>, String) {
    let mut command = Command::new(binary("liandong-gateway"));
    command
        .arg("verify-store")
        .arg("--config")
        .arg(&bed.config)
        .env("LIANDONG_LOG", "warn")
        .stdin(Stdio::null());
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("run verify-store");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Sequences listed under `key` in a JSON report (`sequence` of each entry).
fn sequences(report: &serde_json::Value, key: &str) -> Vec<u64> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {report}"))
        .iter()
        .map(|p| p["sequence"].as_u64().expect("a sequence"))
        .collect()
}

/// Rewrites the stored payload of `sequence` with `change` applied, leaving
/// its hash and columns as they are.
async fn edit_payload(url: &str, sequence: i64, change: impl FnOnce(&mut pb::Notification)) {
    let mut db = database(url).await;
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM notifications WHERE sequence = $1")
            .bind(sequence)
            .fetch_one(&mut db)
            .await
            .expect("the row exists");
    let mut notification = pb::Notification::decode(payload.as_slice()).expect("decodes");
    change(&mut notification);
    sqlx::query("UPDATE notifications SET payload = $1 WHERE sequence = $2")
        .bind(notification.encode_to_vec())
        .bind(sequence)
        .execute(&mut db)
        .await
        .expect("edit the payload");
}

async fn execute(url: &str, sql: &str) {
    let mut db = database(url).await;
    sqlx::query(sql)
        .execute(&mut db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Receives deliveries until one with `sequence` arrives, acking each;
/// returns every sequence received, in order.
async fn receive_through(
    inbox: &mut Subscriber,
    sequence: u64,
    log: impl Fn() -> String,
) -> Vec<u64> {
    let mut got = Vec::new();
    while got.last() != Some(&sequence) {
        match inbox.next(WAIT).await {
            Ok(Some(delivery)) => {
                inbox.ack(&[delivery.sequence]).await;
                got.push(delivery.sequence);
            }
            Ok(None) => panic!("silence after {got:?}, waiting for {sequence}:\n{}", log()),
            Err(status) => panic!("subscription failed after {got:?}: {status:?}\n{}", log()),
        }
    }
    got
}

// ---------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A small tmpfs that holds the gateway's data and can be filled up: the
/// SQLite file itself, or a PostgreSQL tablespace (owned by `postgres`)
/// that a fresh schema's tables are created in. Undone on drop.
struct SmallDisk {
    mount: tempfile::TempDir,
    url: String,
    /// PostgreSQL: the server URL, the tablespace and the schema to drop.
    postgres: Option<(String, String, String)>,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. "3m"), or None when the test is to be
    /// skipped (not root, and `LIANDONG_SKIP_TMPFS_TESTS=1`).
    fn mount_tmpfs(size: &str) -> Option<tempfile::TempDir> {
        let mount = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(mount.path())
            .status();
        if status.as_ref().is_ok_and(|s| s.success()) {
            return Some(mount);
        }
        if std::env::var("LIANDONG_SKIP_TMPFS_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("cannot mount a tmpfs (not root?); skipped as LIANDONG_SKIP_TMPFS_TESTS=1");
            return None;
        }
        panic!(
            "this test mounts a small tmpfs to fill the disk under the gateway and needs root \
             ({status:?}); run as root, or set LIANDONG_SKIP_TMPFS_TESTS=1 to skip it"
        );
    }

    /// The SQLite database on a small tmpfs.
    fn sqlite(size: &str) -> Option<Self> {
        let mount = Self::mount_tmpfs(size)?;
        let url = format!("sqlite://{}", mount.path().join("liandong.db").display());
        Some(Self {
            mount,
            url,
            postgres: None,
        })
    }

    /// A fresh PostgreSQL schema whose tables live in a tablespace on a
    /// small tmpfs; None when PostgreSQL is unreachable and not required
    /// (`LIANDONG_REQUIRE_POSTGRES=1`).
    async fn postgres(size: &str) -> Option<Self> {
        let base = std::env::var("LIANDONG_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let mut db = match sqlx::PgConnection::connect(&base).await {
            Ok(db) => db,
            Err(error) if std::env::var("LIANDONG_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
                panic!("PostgreSQL at {base} is required but unreachable: {error}")
            }
            Err(error) => {
                eprintln!("PostgreSQL at {base} unreachable ({error}); skipping its half");
                return None;
            }
        };
        let mount = Self::mount_tmpfs(size)?;
        let location = mount.path().join("ts");
        std::fs::create_dir(&location).unwrap();
        let owned = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&location)
            .status()
            .is_ok_and(|s| s.success());
        assert!(owned, "chown the tablespace directory to postgres");
        let unique = format!(
            "{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
        );
        let (tablespace, schema) = (format!("ld_full_{unique}"), format!("ld_full_{unique}"));
        for sql in [
            format!(
                "CREATE TABLESPACE {tablespace} LOCATION '{}'",
                location.display()
            ),
            format!("CREATE SCHEMA {schema}"),
        ] {
            sqlx::query(&sql).execute(&mut db).await.unwrap();
        }
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{base}{separator}options=-c%20search_path%3D{schema}%20-c%20default_tablespace%3D{tablespace}"
        );
        Some(Self {
            mount,
            url,
            postgres: Some((base, tablespace, schema)),
        })
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }

    fn database_url(&self) -> String {
        self.url.clone()
    }

    /// Writes `filler` until the file system refuses: the disk is full.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.path().join("filler")).expect("create filler");
        let chunk = vec![0u8; 16 * 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        // Whatever a partial chunk left: fill the last bytes too.
        let _ = file.write_all(&[0u8; 1]);
    }

    /// Frees the space `fill` took.
    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some((base, tablespace, schema)) = &self.postgres {
            let _ = Command::new("psql")
                .arg(base)
                .args([
                    "-q",
                    "-c",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .args(["-c", &format!("DROP TABLESPACE IF EXISTS {tablespace}")])
                .status();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}

/// The disks a test runs on: SQLite, and PostgreSQL when reachable.
async fn small_disks() -> Vec<SmallDisk> {
    let mut disks = Vec::new();
    disks.extend(SmallDisk::sqlite("3m"));
    disks.extend(SmallDisk::postgres("3m").await);
    disks
}

/// A clue with a large body of text that does not compress (PostgreSQL
/// compresses large values), so that each one needs new space.
fn large_clue(id: &str) -> pb::Notification {
    let mut n = notification(id, "C-FULL", Event::ClueShared, Level::Internal, &[]);
    let mut state: u64 = id.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let description = (0..36 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    n.body = Some(pb::CaseBody {
        description,
        ..Default::default()
    });
    n
}

/// The health status of `service` ("" for the whole server).
async fn health(bed: &Testbed, service: &str) -> i32 {
    let channel = bed
        .pki
        .credentials("cz-ops")
        .connect(&bed.gateway.url(), None)
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Waits until both the server and the Exchange report `status`.
async fn wait_for_health(
    bed: &Testbed,
    status: tonic_health::pb::health_check_response::ServingStatus,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if health(bed, "").await == status as i32
            && health(bed, "liandong.v1.Exchange").await == status as i32
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never became {status:?}:\n{}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn disk_full_never_gives_a_receipt() {
    for disk in small_disks().await {
        disk_full_never_gives_a_receipt_on(&disk).await;
    }
}

async fn disk_full_never_gives_a_receipt_on(disk: &SmallDisk) {
    let mut bed = Testbed::start_on(&disk.database_url(), "").unwrap();
    // Leave room for a few notifications, then none: the disk fills while
    // publishers are busy.
    std::fs::write(disk.path().join("slack"), vec![0u8; 300 * 1024]).unwrap();
    disk.fill();
    std::fs::remove_file(disk.path().join("slack")).unwrap();

    let mut tasks = Vec::new();
    for worker in 0..6 {
        let mut client = bed.client("cz-eeb").await;
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..12 {
                let id = format!("w{worker}-{i}");
                let outcome = publish(&mut client, large_clue(&id)).await;
                outcomes.push((id, outcome));
            }
            outcomes
        }));
    }
    let mut receipts = Vec::new();
    let mut refused = 0;
    for task in tasks {
        for (id, outcome) in task.await.unwrap() {
            match outcome {
                Ok(receipt) => receipts.push((id, receipt.sequence)),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{id}: {status:?}");
                    refused += 1;
                }
            }
        }
    }
    assert!(
        refused > 0,
        "the disk never filled: {} receipts",
        receipts.len()
    );
    wait_for_health(&bed, ServingStatus::NotServing).await;
    // From now on, still no receipt: the store does not pretend.
    let mut client = bed.client("cz-eeb").await;
    for i in 0..10 {
        let status = publish(&mut client, large_clue(&format!("late-{i}")))
            .await
            .expect_err("no receipt while the disk is full");
        assert_eq!(status.code(), Code::Unavailable);
    }
    let log = bed.log();
    assert!(!log.contains("database is locked"), "{log}");

    // A crash, then what is on disk: every receipt and nothing else.
    bed.gateway.signal(Signal::SIGKILL);
    bed.gateway.wait(WAIT).unwrap();
    disk.free();
    let mut db = database(&disk.database_url()).await;
    let rows = sqlx::query("SELECT notification_id, sequence FROM notifications ORDER BY sequence")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let stored: std::collections::HashMap<String, i64> = rows
        .iter()
        .map(|row| (row.get("notification_id"), row.get("sequence")))
        .collect();
    for (id, sequence) in &receipts {
        assert_eq!(
            stored.get(id).copied(),
            Some(*sequence as i64),
            "receipt for {id} (sequence {sequence}) without its row"
        );
    }
    assert_eq!(stored.len(), receipts.len(), "a row without a receipt");
    let mut sequences: Vec<u64> = receipts.iter().map(|(_, s)| *s).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=receipts.len() as u64).collect::<Vec<_>>());
    db.close().await.unwrap();

    // And the gateway starts again on it, its check passing.
    bed.restart().unwrap();
    let receipt = publish(&mut bed.client("cz-eeb").await, large_clue("after"))
        .await
        .unwrap();
    assert_eq!(receipt.sequence, receipts.len() as u64 + 1);
}

#[tokio::test]
async fn store_recovers_after_disk_full() {
    for disk in small_disks().await {
        store_recovers_after_disk_full_on(&disk).await;
    }
}

async fn store_recovers_after_disk_full_on(disk: &SmallDisk) {
    let bed = Testbed::start_on(&disk.database_url(), "").unwrap();
    let pid = bed.gateway.pid();
    let mut client = bed.client("cz-eeb").await;
    let first = publish(&mut client, large_clue("before")).await.unwrap();
    let mut psb = bed.client("cz-psb").await;
    let mut inbox = Subscriber::open(&mut psb, "inbox").await.unwrap();
    assert_eq!(
        receive_through(&mut inbox, first.sequence, || bed.log()).await,
        [first.sequence]
    );

    disk.fill();
    let mut failures = 0;
    for i in 0..30 {
        if let Err(status) = publish(&mut client, large_clue(&format!("full-{i}"))).await {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            failures += 1;
        }
    }
    assert!(
        failures >= 25,
        "only {failures} of 30 refused on a full disk"
    );
    wait_for_health(&bed, ServingStatus::NotServing).await;
    // Repeated identical failures are logged once per interval, not once
    // per request.
    let lines = bed
        .log()
        .lines()
        .filter(|l| l.contains("store operation failed"))
        .count();
    assert!(
        lines <= 3,
        "{lines} log lines for {failures} identical failures"
    );

    disk.free();
    wait_for_health(&bed, ServingStatus::Serving).await;
    assert_eq!(bed.gateway.pid(), pid, "recovered without a restart");
    let receipt = publish(&mut client, large_clue("after")).await.unwrap();
    assert!(!receipt.duplicate);
    assert_eq!(
        receipt.sequence,
        first.sequence + 1 + (30 - failures) as u64,
        "sequences stay gap-free across the outage"
    );
    // A subscription whose cursor could not be written ended with
    // UNAVAILABLE; reopened, it resumes and gets what was stored since.
    drop(inbox);
    let mut inbox = Subscriber::open(&mut psb, "inbox").await.unwrap();
    let got = receive_through(&mut inbox, receipt.sequence, || bed.log()).await;
    assert_eq!(got.last(), Some(&receipt.sequence));
    assert!(bed.log().contains("store writes work again"));
}

// ---------------------------------------------------------------------------
// Rows changed behind the gateway's back
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tampered_payload_not_served() {
    let mut bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "clue-", "C-EDIT", 1..4).await;
    stop(&mut bed);
    edit_payload(&bed.database_url(), 2, |n| {
        n.summary = "a forged summary".into();
    })
    .await;

    assert_start_refused(&bed);
    let gateway = Allowed::start(&bed);
    assert!(
        gateway
            .log()
            .contains("STARTING DESPITE STORE INTEGRITY FAILURES"),
        "{}",
        gateway.log()
    );
    let mut eeb = gateway.client(&bed, "cz-eeb").await;
    let mut psb = gateway.client(&bed, "cz-psb").await;
    let mut inbox = Subscriber::open(&mut psb, "inbox").await.unwrap();
    let next = publish(
        &mut eeb,
        notification("clue-4", "C-EDIT", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    assert_eq!(next.sequence, 4);
    // Sequence 2 is passed over; the ones around it arrive in order.
    assert_eq!(
        receive_through(&mut inbox, 4, || gateway.log()).await,
        [1, 3, 4]
    );
    let view = psb
        .get_case(pb::GetCaseRequest {
            case_ref: "C-EDIT".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let served: Vec<u64> = view.timeline.iter().map(|d| d.sequence).collect();
    assert_eq!(served, [1, 3, 4]);
    assert!(!format!("{view:?}").contains("forged"));
    let log = gateway.log();
    assert!(
        log.contains("failed its integrity check") && log.contains("notification.sequence=2"),
        "{log}"
    );
    assert!(!log.contains("forged"), "content must never reach the log");
}

#[tokio::test]
async fn tampered_routing_column_not_served() {
    let mut bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb-xiangyuan").await;
    publish(
        &mut eeb,
        notification("c-1", "CZ-XY-9", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    let mut transfer = notification(
        "t-1",
        "CZ-XY-9",
        Event::CaseTransferred,
        Level::Restricted,
        &["cz-psb-xiangyuan"],
    );
    transfer.body = Some(pb::CaseBody {
        description: "RESTRICTED-CANARY".into(),
        ..Default::default()
    });
    let restricted = publish(&mut eeb, transfer).await.unwrap();
    stop(&mut bed);
    // The level column says PUBLIC; the signed payload still says
    // RESTRICTED.
    execute(
        &bed.database_url(),
        &format!(
            "UPDATE notifications SET confidentiality = {} WHERE sequence = {}",
            Level::Public as i32,
            restricted.sequence
        ),
    )
    .await;

    assert_start_refused(&bed);
    let gateway = Allowed::start(&bed);
    let mut observer = gateway.client(&bed, "cz-press-office").await;
    let mut inbox = Subscriber::open(&mut observer, "inbox").await.unwrap();
    let mut eeb = gateway.client(&bed, "cz-eeb-xiangyuan").await;
    let announcement = publish(
        &mut eeb,
        notification("p-1", "CZ-XY-9", Event::MeetingNotice, Level::Public, &[]),
    )
    .await
    .unwrap();
    // The observer's first delivery is the announcement: the tampered row
    // came before it and was not served.
    let first = inbox.next(WAIT).await.unwrap().expect("the announcement");
    assert_eq!(first.sequence, announcement.sequence);
    assert!(!format!("{first:?}").contains("RESTRICTED-CANARY"));
    let view = observer
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-XY-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let served: Vec<u64> = view.timeline.iter().map(|d| d.sequence).collect();
    assert_eq!(served, [announcement.sequence]);
    // Not even its rightful recipient gets a row that fails its check.
    let mut psb = gateway.client(&bed, "cz-psb-xiangyuan").await;
    let view = psb
        .get_case(pb::GetCaseRequest {
            case_ref: "CZ-XY-9".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !view
            .timeline
            .iter()
            .any(|d| d.sequence == restricted.sequence)
    );
    assert!(!format!("{view:?}").contains("RESTRICTED-CANARY"));
}

#[tokio::test]
async fn deleted_rows_never_reuse_sequences() {
    let mut bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "clue-", "C-DEL", 1..6).await;
    let mut psb = bed.client("cz-psb").await;
    let mut inbox = Subscriber::open(&mut psb, "inbox").await.unwrap();
    assert_eq!(
        receive_through(&mut inbox, 5, || bed.log()).await,
        [1, 2, 3, 4, 5]
    );
    inbox.close().await.unwrap();
    stop(&mut bed);
    execute(
        &bed.database_url(),
        "DELETE FROM notifications WHERE sequence >= 4",
    )
    .await;

    // The deletion is noticed at start-up…
    let refusal = assert_start_refused(&bed);
    assert!(refusal.contains("missing"), "{refusal}");
    let gateway = Allowed::start(&bed);
    let mut eeb = gateway.client(&bed, "cz-eeb").await;
    let next = publish(
        &mut eeb,
        notification("clue-6", "C-DEL", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    // …and sequences 4 and 5 are never handed out again.
    assert_eq!(next.sequence, 6);
    let mut psb = gateway.client(&bed, "cz-psb").await;
    let mut inbox = Subscriber::open(&mut psb, "inbox").await.unwrap();
    assert_eq!(receive_through(&mut inbox, 6, || gateway.log()).await, [6]);
    // A deleted id published again is stored again, as a new notification
    // with a new sequence; the deletion stays on record for verify-store.
    let again = publish(
        &mut eeb,
        notification("clue-4", "C-DEL", Event::ClueShared, Level::Internal, &[]),
    )
    .await
    .unwrap();
    assert_eq!(again.sequence, 7);
    assert!(!again.duplicate);
    assert_eq!(receive_through(&mut inbox, 7, || gateway.log()).await, [7]);
    drop(gateway);
    let (code, out) = verify_store(&bed, true);
    assert_eq!(code, Some(EX_DATAERR), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["missing"],
        serde_json::json!([{"first": 4, "last": 5}])
    );
}

#[tokio::test]
async fn verify_store_reports_each_kind_of_change() {
    let mut bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "clue-", "C-VERIFY", 1..9).await;
    stop(&mut bed);

    let (code, out) = verify_store(&bed, true);
    assert_eq!(code, Some(0), "a clean store: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows_scanned"], 8);
    assert_eq!(report["high_water"], 8);
    let (code, out) = verify_store(&bed, false);
    assert_eq!(code, Some(0));
    assert!(out.contains("8 rows checked, no problem found"), "{out}");

    let url = bed.database_url();
    // Changed: 2's content.
    edit_payload(&url, 2, |n| n.summary = "edited".into()).await;
    // Missing: 4.
    execute(&url, "DELETE FROM notifications WHERE sequence = 4").await;
    // Out of order: 6 re-timed before 5; 7 and 8 swapped.
    execute(
        &url,
        "UPDATE notifications SET received_at = received_at - 3600000000 WHERE sequence = 6",
    )
    .await;
    execute(
        &url,
        "UPDATE notifications SET sequence = 1007 WHERE sequence = 7",
    )
    .await;
    execute(
        &url,
        "UPDATE notifications SET sequence = 7 WHERE sequence = 8",
    )
    .await;
    execute(
        &url,
        "UPDATE notifications SET sequence = 8 WHERE sequence = 1007",
    )
    .await;

    let (code, out) = verify_store(&bed, true);
    assert_eq!(code, Some(EX_DATAERR), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON only");
    assert_eq!(sequences(&report, "changed"), [2], "{report}");
    assert_eq!(
        report["missing"],
        serde_json::json!([{"first": 4, "last": 4}]),
        "{report}"
    );
    assert_eq!(sequences(&report, "out_of_order"), [6, 7, 8], "{report}");
    assert_eq!(report["rows_scanned"], 7);

    let (code, out) = verify_store(&bed, false);
    assert_eq!(code, Some(EX_DATAERR));
    let summary = out.lines().next().unwrap_or_default();
    assert!(
        summary.contains("1 changed (sequence 2)")
            && summary.contains("1 missing (sequence 4)")
            && summary.contains("3 out of order (sequence 6, 7, 8)"),
        "{out}"
    );
    assert!(
        !out.contains("edited"),
        "content never appears in the report"
    );

    // A configuration that does not load is a usage error, not a verdict.
    let output = Command::new(binary("liandong-gateway"))
        .args(["verify-store", "--config"])
        .arg(bed.dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}
