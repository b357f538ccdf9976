//! The audit log's hash chain end to end: the real gateway writes it, an
//! intruder with the database's credentials drops the append-only triggers
//! and tampers with rows by raw SQL, and `liandong-gateway audit verify`
//! must name the first row and the kind of tampering (exit 65), and a
//! clean log must pass (exit 0), and the gateway refuses to start on a
//! broken chain. Also: a publish or a delivery whose audit row cannot be
//! written is refused (nothing stored, nothing sent), and the signed
//! checkpoint file is written and matches the chain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::Row;
use tonic::Code;

use liandong_core::pb::{Confidentiality as Level, EventType as Event};
use liandong_gateway::store::audit::{ChainFields, Checkpoint, row_hash};
use liandong_tests::{Backend, Testbed, binary, notification, publish, publish_clues};

/// Exit code of an integrity problem.
const EX_DATAERR: i32 = 65;

/// Where the test beds keep the checkpoint file (relative to the config).
const CHECKPOINT_CONFIG: &str = "[audit]\ncheckpoint_file = \"audit/checkpoint.json\"\n";

fn checkpoint_path(bed: &Testbed) -> PathBuf {
    bed.dir.path().join("audit/checkpoint.json")
}

/// Stops the test bed's gateway with SIGTERM and waits for it.
fn stop(bed: &mut Testbed) {
    bed.gateway.signal(Signal::SIGTERM);
    bed.gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway stops on SIGTERM");
}

/// Runs `audit verify --json` (with `--checkpoint` when given): the exit
/// code and the parsed report.
fn audit_verify(bed: &Testbed, checkpoint: Option<&Path>) -> (Option<i32>, serde_json::Value) {
    let (code, out) = audit_verify_raw(bed, true, checkpoint);
    let report =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is JSON: {e}: {out}"));
    (code, report)
}

/// Runs `audit verify`: the exit code and stdout.
fn audit_verify_raw(bed: &Testbed, json: bool, checkpoint: Option<&Path>) -> (Option<i32>, String) {
    let mut command = Command::new(binary("liandong-gateway"));
    command
        .args(["audit", "verify", "--config"])
        .arg(&bed.config)
        .env("LIANDONG_LOG", "off")
        .stdin(Stdio::null());
    if json {
        command.arg("--json");
    }
    if let Some(path) = checkpoint {
        command.arg("--checkpoint").arg(path);
    }
    let output = command.output().expect("run audit verify");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The first problem's kind and row.
fn first(report: &serde_json::Value) -> (String, Option<u64>) {
    let problem = &report["problems"][0];
    (
        problem["kind"].as_str().unwrap_or_default().to_owned(),
        problem["row"].as_u64(),
    )
}

async fn execute(url: &str, sql: &str) {
    let mut conn = database(url).await;
    sqlx::query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn database(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .expect("open the database")
}

async fn hash_of(url: &str, id: i64) -> Vec<u8> {
    let mut conn = database(url).await;
    sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .expect("the row exists")
}

async fn last_id(url: &str) -> i64 {
    let mut conn = database(url).await;
    sqlx::query_scalar("SELECT MAX(id) FROM audit_log")
        .fetch_one(&mut conn)
        .await
        .expect("max id")
}

/// The append-only triggers, dropped as an intruder would.
async fn drop_triggers(bed: &Testbed) {
    let url = bed.database_url();
    match bed.backend() {
        Backend::Sqlite => {
            execute(&url, "DROP TRIGGER audit_log_no_update").await;
            execute(&url, "DROP TRIGGER audit_log_no_delete").await;
        }
        Backend::Postgres => {
            execute(&url, "DROP TRIGGER audit_log_no_change ON audit_log").await;
        }
    }
}

/// Makes the audit log refuse rows of `action` (as a full audit tablespace
/// or a broken disk would refuse them all), by a trigger named `name`.
async fn refuse_audit_rows(bed: &Testbed, name: &str, action: &str) {
    let url = bed.database_url();
    match bed.backend() {
        Backend::Sqlite => {
            execute(
                &url,
                &format!(
                    "CREATE TRIGGER {name} BEFORE INSERT ON audit_log \
                     WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
                ),
            )
            .await;
        }
        Backend::Postgres => {
            execute(
                &url,
                &format!(
                    "CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN \
                     IF NEW.action = '{action}' THEN RAISE EXCEPTION 'audit refused'; END IF; \
                     RETURN NEW; END; $$ LANGUAGE plpgsql"
                ),
            )
            .await;
            execute(
                &url,
                &format!(
                    "CREATE TRIGGER {name} BEFORE INSERT ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION {name}()"
                ),
            )
            .await;
        }
    }
}

/// Removes what [`refuse_audit_rows`] made.
async fn accept_audit_rows(bed: &Testbed, name: &str) {
    let url = bed.database_url();
    match bed.backend() {
        Backend::Sqlite => execute(&url, &format!("DROP TRIGGER {name}")).await,
        Backend::Postgres => execute(&url, &format!("DROP TRIGGER {name} ON audit_log")).await,
    }
}

#[tokio::test]
async fn audit_verify_detects_each_kind_of_tampering() {
    let mut bed = Testbed::start_with(CHECKPOINT_CONFIG).unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "clue-", "C-AUDIT", 0..6).await;
    stop(&mut bed);
    let url = bed.database_url();
    let rows = last_id(&url).await;
    assert!(rows >= 6, "one PUBLISHED row per clue at least");

    // A clean log, and the checkpoint written at shutdown, pass.
    let (code, report) = audit_verify(&bed, Some(&checkpoint_path(&bed)));
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["rows_checked"], rows);
    let (code, out) = audit_verify_raw(&bed, false, None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no problem found"), "{out}");

    // A dropped trigger is itself reported.
    drop_triggers(&bed).await;
    let (code, report) = audit_verify(&bed, None);
    assert_eq!(code, Some(EX_DATAERR), "{report}");
    assert_eq!(first(&report), ("trigger".into(), None), "{report}");

    // Changed: row 2's reason; then put back.
    let mut conn = database(&url).await;
    let original: String = sqlx::query_scalar("SELECT reason FROM audit_log WHERE id = 2")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    execute(&url, "UPDATE audit_log SET reason = 'forged' WHERE id = 2").await;
    let (code, report) = audit_verify(&bed, None);
    assert_eq!(code, Some(EX_DATAERR));
    assert_eq!(first(&report), ("changed".into(), Some(2)), "{report}");
    let (_, out) = audit_verify_raw(&bed, false, None);
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .contains("first: changed at row 2"),
        "{out}"
    );
    assert!(
        !out.contains("forged"),
        "content never appears in the report"
    );
    sqlx::query("UPDATE audit_log SET reason = $1 WHERE id = 2")
        .bind(&original)
        .execute(&mut conn)
        .await
        .unwrap();

    // Reordered: rows 3 and 4 swapped; then swapped back.
    let swap = [
        "UPDATE audit_log SET id = 1000 WHERE id = 3",
        "UPDATE audit_log SET id = 3 WHERE id = 4",
        "UPDATE audit_log SET id = 4 WHERE id = 1000",
    ];
    for sql in swap {
        execute(&url, sql).await;
    }
    let (code, report) = audit_verify(&bed, None);
    assert_eq!(code, Some(EX_DATAERR));
    assert_eq!(first(&report), ("reordered".into(), Some(3)), "{report}");
    for sql in swap {
        execute(&url, sql).await;
    }
    let (_, report) = audit_verify(&bed, None);
    assert_eq!(first(&report).0, "trigger", "restored: {report}");

    // Deleted: row 3 (kept aside, then put back).
    execute(
        &url,
        "CREATE TABLE kept AS SELECT * FROM audit_log WHERE id = 3",
    )
    .await;
    execute(&url, "DELETE FROM audit_log WHERE id = 3").await;
    let (code, report) = audit_verify(&bed, None);
    assert_eq!(code, Some(EX_DATAERR));
    assert_eq!(first(&report), ("deleted".into(), Some(4)), "{report}");
    execute(&url, "INSERT INTO audit_log SELECT * FROM kept").await;

    // Inserted: a forged row after the last, hashed by the documented
    // formula but linked to row 1.
    let forged_id = rows + 1;
    let prev = hash_of(&url, 1).await;
    let hash = row_hash(
        &prev,
        &ChainFields {
            id: forged_id as u64,
            at: 1,
            actor: "cz-psb",
            action: "CASE_READ",
            sequence: None,
            sender: "",
            notification_id: "",
            outcome: "FULL",
            reason: "",
            peer: "",
        },
    );
    sqlx::query(
        "INSERT INTO audit_log (id, at, agency, action, sequence, sender, notification_id, \
         decision, reason, peer, prev_hash, hash) \
         VALUES ($1, 1, 'cz-psb', 'CASE_READ', NULL, '', '', 'FULL', '', '', $2, $3)",
    )
    .bind(forged_id)
    .bind(&prev)
    .bind(hash.to_vec())
    .execute(&mut conn)
    .await
    .unwrap();
    let (code, report) = audit_verify(&bed, None);
    assert_eq!(code, Some(EX_DATAERR));
    assert_eq!(
        first(&report),
        ("inserted".into(), Some(forged_id as u64)),
        "{report}"
    );
    execute(
        &url,
        &format!("DELETE FROM audit_log WHERE id = {forged_id}"),
    )
    .await;

    // Truncated: the last two rows go and the recorded head is set back;
    // the checkpoint signed at shutdown still covers them.
    execute(
        &url,
        &format!("DELETE FROM audit_log WHERE id > {}", rows - 2),
    )
    .await;
    sqlx::query("UPDATE audit_state SET last_id = $1, last_hash = $2")
        .bind(rows - 2)
        .bind(hash_of(&url, rows - 2).await)
        .execute(&mut conn)
        .await
        .unwrap();
    let (code, report) = audit_verify(&bed, Some(&checkpoint_path(&bed)));
    assert_eq!(code, Some(EX_DATAERR));
    assert_eq!(
        first(&report),
        ("truncated".into(), Some(rows as u64 - 1)),
        "{report}"
    );

    // A configuration that does not load is a usage error, not a verdict.
    let output = Command::new(binary("liandong-gateway"))
        .args(["audit", "verify", "--config"])
        .arg(bed.dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));

    // The gateway itself refuses to start on the broken chain.
    let output = Command::new(binary("liandong-gateway"))
        .args(["serve", "--config"])
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .arg(&bed.config)
        .env("LIANDONG_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_DATAERR), "{stderr}");
    assert!(
        stderr.contains("audit log") && stderr.contains("truncated"),
        "{stderr}"
    );
}

#[tokio::test]
async fn delivery_is_withheld_when_its_audit_row_cannot_be_written() {
    let bed = Testbed::start().unwrap();
    refuse_audit_rows(&bed, "refuse_delivery", "DELIVERY").await;
    let mut eeb = bed.client("cz-eeb").await;
    let receipt = publish(
        &mut eeb,
        notification(
            "clue-1",
            "C-AUDIT-DELIVERY",
            Event::ClueShared,
            Level::Internal,
            &[],
        ),
    )
    .await
    .unwrap();
    let mut psb = bed.client("cz-psb").await;
    let mut inbox = liandong_tests::Subscriber::open(&mut psb, "inbox")
        .await
        .unwrap();
    // No frame without its audit row: the stream ends instead.
    let status = inbox
        .expect_failure(
            Duration::from_secs(10),
            "the stream ends when its audit row is refused",
        )
        .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Once the log takes rows again, the reopened subscription gets it,
    // recorded.
    accept_audit_rows(&bed, "refuse_delivery").await;
    let mut inbox = liandong_tests::Subscriber::open(&mut psb, "inbox")
        .await
        .unwrap();
    let frame = inbox
        .expect_delivery(Duration::from_secs(10), "delivered once audited")
        .await;
    assert_eq!(frame.sequence, receipt.sequence);
    let mut conn = database(&bed.database_url()).await;
    let peers: Vec<String> = sqlx::query_scalar(
        "SELECT peer FROM audit_log WHERE action = 'DELIVERY' AND agency = 'cz-psb' AND sequence = $1",
    )
    .bind(receipt.sequence as i64)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(peers.len(), 1, "one DELIVERY row: {peers:?}");
    assert!(
        peers[0].starts_with("127.0.0.1:"),
        "with the subscriber's address: {peers:?}"
    );

    // Its acknowledgement moves the cursor, recorded as an ACK row.
    inbox.ack(&[receipt.sequence]).await;
    inbox.close().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let acks: Vec<(String, String)> = sqlx::query_as(
            "SELECT reason, peer FROM audit_log WHERE action = 'ACK' AND agency = 'cz-psb'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if let Some((reason, peer)) = acks.first() {
            assert_eq!(
                reason,
                &format!("subscription inbox: 0 -> {}", receipt.sequence)
            );
            assert!(peer.starts_with("127.0.0.1:"), "{peer:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ACK row: {}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn publish_is_refused_when_its_audit_row_cannot_be_written() {
    let bed = Testbed::start().unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "before-", "C-AUDIT-FAIL", 0..1).await;
    refuse_audit_rows(&bed, "refuse_published", "PUBLISHED").await;
    let url = bed.database_url();
    let refused = notification(
        "refused-1",
        "C-AUDIT-FAIL",
        Event::ClueShared,
        Level::Internal,
        &[],
    );
    let status = publish(&mut eeb, refused.clone())
        .await
        .expect_err("a publish whose audit row cannot be written is refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(bed.stored_count().await, 1, "nothing was stored");
    let mut conn = database(&url).await;
    let published: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'PUBLISHED'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(published, 1);

    // Once the log takes rows again, the same notification is stored as
    // new (nothing of the refused attempt remained), with its row.
    accept_audit_rows(&bed, "refuse_published").await;
    let receipt = publish(&mut eeb, refused).await.expect("stored now");
    assert_eq!(receipt.sequence, 2);
    let rows = sqlx::query(
        "SELECT notification_id, peer FROM audit_log WHERE action = 'PUBLISHED' ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get("notification_id")).collect();
    assert_eq!(ids, ["before-0", "refused-1"]);
    let peer: String = rows[1].get("peer");
    assert!(
        peer.starts_with("127.0.0.1:"),
        "the peer address is recorded: {peer:?}"
    );
}

#[tokio::test]
async fn checkpoint_file_is_written_and_matches() {
    if liandong_tests::skip_unless_sqlite(
        "the checkpoint file and its signature do not depend on the backend (the store tests cover the checkpoint table on both)",
    ) {
        return;
    }
    let mut bed =
        Testbed::start_with(&format!("{CHECKPOINT_CONFIG}checkpoint_seconds = 1\n")).unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    publish_clues(&mut eeb, "clue-", "C-CHECKPOINT", 0..3).await;
    let url = bed.database_url();
    let path = checkpoint_path(&bed);
    let head = last_id(&url).await;
    // Written within the interval once rows were added.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let checkpoint = loop {
        if let Some(checkpoint) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| Checkpoint::from_json(&text).ok())
            .filter(|c| c.row_id as i64 == head)
        {
            break checkpoint;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of row {head}: {}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(checkpoint.row_hash, hash_of(&url, head).await);
    let public_key = bed.pki.gateway_public_key().unwrap();
    assert!(
        checkpoint.signature_verifies(&public_key),
        "signed with the gateway's key"
    );

    // One more publish, then shutdown: the file covers it.
    publish_clues(&mut eeb, "late-", "C-CHECKPOINT", 0..1).await;
    stop(&mut bed);
    let head = last_id(&url).await;
    let checkpoint = Checkpoint::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        checkpoint.row_id as i64, head,
        "the shutdown checkpoint covers the last row"
    );
    assert_eq!(checkpoint.row_hash, hash_of(&url, head).await);

    let (code, report) = audit_verify(&bed, Some(&path));
    assert_eq!(code, Some(0), "{report}");
    let sources: Vec<(&str, bool, bool)> = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["source"].as_str().unwrap_or_default(),
                c["signature_valid"].as_bool().unwrap_or(false),
                c["matches"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("database", true, true),
            (path.to_str().unwrap(), true, true)
        ]
    );
}
