//! Restoring a backup, end to end: a SQLite store copied aside, more
//! notifications delivered and acknowledged, then the copy put back. The
//! gateway refuses to serve the restored store while the audit checkpoint
//! file on its disk is ahead of it; `fence-sequences` raises the
//! high-water mark past what the subscriber saw (and refuses to lower
//! it); the next publish gets a sequence above the fence, `verify-store`
//! reports the fenced range as a declared gap, and a gap no fence declares
//! (a deleted row, a fence forged without its audit row) is still
//! reported.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::Connection;

use liandong_core::pb::{Confidentiality as Level, EventType as Event};
use liandong_tests::{
    Subscriber, Testbed, binary, notification, publish, publish_clues, skip_unless_sqlite,
};

const WAIT: Duration = Duration::from_secs(10);
const EX_USAGE: i32 = 64;
const EX_DATAERR: i32 = 65;

fn stop(bed: &mut Testbed) {
    bed.gateway.signal(Signal::SIGTERM);
    let status = bed
        .gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway stops on SIGTERM");
    assert!(status.success(), "{status}: {}", bed.log());
}

/// Runs `liandong-gateway ARGS`: exit code, stdout, stderr.
fn gateway(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary("liandong-gateway"))
        .args(args)
        .env("LIANDONG_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run liandong-gateway");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `serve ARGS` must refuse within a minute; returns its exit code and
/// stderr (a gateway that starts instead is killed and fails the test).
fn serve_refused(bed: &Testbed, extra: &[&str]) -> (Option<i32>, String) {
    let log = bed.dir.path().join("refused.log");
    let mut child = Command::new(binary("liandong-gateway"))
        .arg("serve")
        .arg("--config")
        .arg(&bed.config)
        .args(extra)
        .env("LIANDONG_LOG", "warn")
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log"))
        .spawn()
        .expect("spawn serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (
                status.code(),
                std::fs::read_to_string(&log).unwrap_or_default(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the gateway served a restored store: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SQLite file and the journal files beside it.
fn database_files(db: &Path) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| Path::new(&format!("{}{suffix}", db.display())).to_owned())
        .collect()
}

async fn execute(bed: &Testbed, sql: &str) {
    let mut conn = bed.connect_database().await;
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
    conn.close().await.expect("close");
}

async fn scalar(bed: &Testbed, sql: &str) -> i64 {
    let mut conn = bed.connect_database().await;
    let value = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect(sql);
    conn.close().await.expect("close");
    value
}

#[tokio::test]
async fn restored_backup_is_fenced_and_never_reuses_sequences() {
    if skip_unless_sqlite("the backup is a copy of the SQLite file") {
        return;
    }
    let mut bed = Testbed::start().expect("a test bed");
    let config = bed.config.to_str().expect("UTF-8").to_owned();
    publish_clues(&mut bed.client("cz-eeb").await, "before-", "CZ-RST-1", 0..3).await;
    let mut psb = bed.client("cz-psb").await;
    let mut main = Subscriber::open(&mut psb, "main")
        .await
        .expect("subscribed");
    main.take_acked(3, WAIT).await;
    main.close().await.expect("closed");
    stop(&mut bed);

    // The backup: the store's files while the gateway is stopped.
    let db = bed.dir.path().join("data/liandong.db");
    let backup = bed.dir.path().join("backup");
    std::fs::create_dir(&backup).expect("a backup directory");
    for file in database_files(&db).into_iter().filter(|f| f.exists()) {
        std::fs::copy(&file, backup.join(file.file_name().expect("a name"))).expect("backed up");
    }

    // After the backup: four more, delivered and acknowledged.
    bed.restart().expect("restarted");
    let receipts = publish_clues(&mut bed.client("cz-eeb").await, "after-", "CZ-RST-1", 0..4).await;
    let mut psb = bed.client("cz-psb").await;
    let mut main = Subscriber::open(&mut psb, "main")
        .await
        .expect("subscribed");
    let seen = main.take_acked(4, WAIT).await;
    main.close().await.expect("closed");
    let highest_seen = seen.iter().map(|d| d.sequence).max().expect("deliveries");
    assert_eq!(highest_seen, 7);
    assert_eq!(receipts.last().map(|r| r.sequence), Some(7));
    stop(&mut bed);

    // The restore: the backup's files put back; the checkpoint file the
    // gateway wrote at its last stop stays where it is.
    for file in database_files(&db) {
        let _ = std::fs::remove_file(file);
    }
    for entry in std::fs::read_dir(&backup).expect("the backup") {
        let entry = entry.expect("an entry");
        std::fs::copy(
            entry.path(),
            db.parent().expect("data").join(entry.file_name()),
        )
        .expect("restored");
    }
    let audit_rows = scalar(&bed, "SELECT COUNT(*) FROM audit_log").await;

    // The checkpoint file is ahead of the restored store: not served, even
    // with --allow-integrity-failures.
    for extra in [&[][..], &["--allow-integrity-failures"][..]] {
        let (code, stderr) = serve_refused(&bed, extra);
        assert_eq!(code, Some(EX_DATAERR), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("the audit checkpoint file")
                && stderr.contains(&format!(
                    "but the store's audit log ends at row {audit_rows}"
                ))
                && stderr.contains("restored from an older backup")
                && stderr.contains("fence-sequences"),
            "{stderr}"
        );
    }

    // A fence below the latest sequence is refused and changes nothing.
    let (code, _, stderr) = gateway(&[
        "fence-sequences",
        "--config",
        &config,
        "--above",
        "2",
        "--reason",
        "too low",
    ]);
    assert_eq!(code, Some(EX_USAGE), "{stderr}");
    assert!(
        stderr.contains("--above 2 is below the latest sequence already assigned (3)")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(
        scalar(&bed, "SELECT high_water FROM store_state WHERE id = 1").await,
        3
    );
    assert_eq!(
        scalar(&bed, "SELECT COUNT(*) FROM sequence_fences").await,
        0
    );
    assert_eq!(
        scalar(&bed, "SELECT COUNT(*) FROM audit_log").await,
        audit_rows
    );

    // The fence above the highest sequence the subscriber saw.
    let above = highest_seen.to_string();
    let (code, stdout, stderr) = gateway(&[
        "fence-sequences",
        "--config",
        &config,
        "--above",
        &above,
        "--reason",
        "restored the backup; cz-psb's adapter acknowledged through 7",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("sequences 4-7 fenced (4 sequences): the next notification gets 8"),
        "{stdout}"
    );

    // Served again; the subscription resumes from its restored cursor and
    // the next notification comes after the fence.
    bed.restart().expect("served after the fence");
    bed.wait_for_log(
        "acknowledged by the sequence fence",
        "the start-up check names the fence that acknowledged the restore",
    )
    .await;
    let mut psb = bed.client("cz-psb").await;
    let mut main = Subscriber::open(&mut psb, "main")
        .await
        .expect("subscribed");
    let receipt = publish(
        &mut bed.client("cz-eeb").await,
        notification(
            "after-restore",
            "CZ-RST-1",
            Event::ClueShared,
            Level::Internal,
            &[],
        ),
    )
    .await
    .expect("published");
    assert_eq!(receipt.sequence, 8, "never a sequence the subscriber saw");
    let next = main
        .expect_delivery(WAIT, "the notification after the fence")
        .await;
    assert_eq!(next.sequence, 8);
    main.ack(&[8]).await;
    main.close().await.expect("closed");
    stop(&mut bed);

    // verify-store: the fenced range is a declared gap.
    let (code, stdout, stderr) = gateway(&["verify-store", "--config", &config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("no problem found (4 sequences fenced, declared: 4-7)"),
        "{stdout}"
    );
    assert!(stdout.contains("fenced"), "{stdout}");
    let (code, stdout, stderr) = gateway(&["audit", "verify", "--config", &config]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    // A deleted row is still missing, fence or not; a fence forged without
    // its audit row declares nothing.
    execute(&bed, "DELETE FROM notifications WHERE sequence = 2").await;
    execute(
        &bed,
        "INSERT INTO sequence_fences (id, first_sequence, last_sequence, at, reason, audit_id) \
         VALUES (2, 2, 2, 0, 'hide the deletion', 1)",
    )
    .await;
    let (code, stdout, _) = gateway(&["verify-store", "--config", &config, "--json"]);
    assert_eq!(code, Some(EX_DATAERR), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        report["missing"],
        serde_json::json!([{"first": 2, "last": 2}])
    );
    assert_eq!(
        report["unrecorded_fences"],
        serde_json::json!([{"first": 2, "last": 2}])
    );
    assert_eq!(
        report["fenced"],
        serde_json::json!([{"first": 4, "last": 7}])
    );
}

#[tokio::test]
async fn a_checkpoint_file_that_names_another_chain_refuses_the_start() {
    if skip_unless_sqlite("the backup is a copy of the SQLite file") {
        return;
    }
    // A store restored, then served without its checkpoint file and
    // written past the file's row: the file's row is in the store with
    // another hash.
    let mut bed = Testbed::start().expect("a test bed");
    publish_clues(&mut bed.client("cz-eeb").await, "one-", "CZ-RST-2", 0..2).await;
    stop(&mut bed);
    let db = bed.dir.path().join("data/liandong.db");
    let file = std::path::PathBuf::from(format!("{}.audit-checkpoint.json", db.display()));
    let backup = bed.dir.path().join("backup.db");
    std::fs::copy(&db, &backup).expect("backed up");
    bed.restart().expect("restarted");
    publish_clues(&mut bed.client("cz-eeb").await, "two-", "CZ-RST-2", 0..3).await;
    stop(&mut bed);
    let kept = bed.dir.path().join("kept-checkpoint.json");
    std::fs::rename(&file, &kept).expect("the checkpoint file, kept aside");
    let checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&kept).expect("read")).expect("JSON");
    let row = checkpoint["row_id"].as_i64().expect("a row");
    for file in database_files(&db) {
        let _ = std::fs::remove_file(file);
    }
    std::fs::copy(&backup, &db).expect("restored");
    bed.restart().expect("served without a checkpoint file");
    let mut eeb = bed.client("cz-eeb").await;
    let mut i = 0;
    while scalar(&bed, "SELECT COALESCE(MAX(id), 0) FROM audit_log").await < row {
        publish_clues(&mut eeb, &format!("three-{i}-"), "CZ-RST-2", 0..1).await;
        i += 1;
    }
    stop(&mut bed);
    std::fs::rename(&kept, &file).expect("the kept file put back");
    let (code, stderr) = serve_refused(&bed, &[]);
    assert_eq!(code, Some(EX_DATAERR), "{stderr}");
    assert!(
        stderr.contains(&format!("signed audit row {row}"))
            && stderr.contains("with another hash than the store holds"),
        "{stderr}"
    );
}
