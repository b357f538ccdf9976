//! `liandong-gateway migrate-store` end to end: a store filled by a real
//! gateway over mutual TLS, copied between SQLite and PostgreSQL by the
//! real binary, checked by `verify-store` and `audit verify`, and served
//! again; and its refusals, each shown to change nothing, with failures
//! induced half-way (a target that refuses a row, a process killed while
//! a lock holds it up). A target left by a failed copy is never served.
//!
//! The source is always SQLite (the test bed's file); the target follows
//! `LIANDONG_TEST_BACKEND` where the behaviour is the same on both, and is
//! PostgreSQL where the test is about moving between backends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::Connection;

use liandong_core::pb::operations_client::OperationsClient;
use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};
use liandong_core::signing;
use liandong_gateway::store::copy::copied_tables;
use liandong_tests::{
    Backend, GatewayProcess, Next, PostgresDatabase, Subscriber, Testbed, binary, notification,
    publish, publish_clues, publish_county_transfer_received, publish_lifecycle,
    skip_unless_postgres,
};

const WAIT: Duration = Duration::from_secs(10);
const EX_USAGE: i32 = 64;
const EX_DATAERR: i32 = 65;
const EX_UNAVAILABLE: i32 = 69;

/// A source test bed on SQLite, whatever the backend chosen.
fn sqlite_bed() -> Testbed {
    Testbed::start_on("sqlite://data/liandong.db", "").expect("a test bed")
}

/// Stops the test bed's gateway with SIGTERM (it signs a last audit
/// checkpoint) and waits for it.
fn stop(bed: &mut Testbed) {
    bed.gateway.signal(Signal::SIGTERM);
    let status = bed
        .gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway stops on SIGTERM");
    assert!(status.success(), "{status}: {}", bed.log());
}

/// The gateway binary's exit code, stdout and stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `liandong-gateway ARGS` with the database of the configuration
/// replaced by `database` when given.
fn gateway(args: &[&str], database: Option<&str>) -> Ran {
    let mut command = Command::new(binary("liandong-gateway"));
    command
        .args(args)
        .env("LIANDONG_LOG", "warn")
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    if let Some(database) = database {
        command.env("LIANDONG_DATABASE_URL", database);
    }
    let output = command.output().expect("run liandong-gateway");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn migrate_store(from: &str, to: &str, extra: &[&str]) -> Ran {
    let mut args = vec!["migrate-store", "--from", from, "--to", to];
    args.extend(extra);
    gateway(&args, None)
}

fn config(bed: &Testbed) -> &str {
    bed.config.to_str().expect("a UTF-8 path")
}

/// A new, empty database of the backend `LIANDONG_TEST_BACKEND` chooses:
/// a SQLite file in `dir`, or a PostgreSQL database (kept by the guard).
fn empty_target(dir: &Path, name: &str) -> (String, Option<PostgresDatabase>) {
    match Backend::from_env() {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
            None,
        ),
        Backend::Postgres => {
            let database = PostgresDatabase::create().expect("a PostgreSQL database");
            (database.url.clone(), Some(database))
        }
    }
}

async fn scalar(url: &str, sql: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("open");
    let value = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.expect("close");
    value
}

/// `serve` on `database` must refuse: exit 65 within a minute, naming the
/// unfinished copy (a gateway that starts instead is killed and fails the
/// test).
fn assert_not_served(bed: &Testbed, database: &str) {
    let log = bed.dir.path().join("refused-serve.log");
    let mut child = Command::new(binary("liandong-gateway"))
        .args(["serve", "--config", config(bed)])
        .env("LIANDONG_DATABASE_URL", database)
        .env("LIANDONG_LOG", "warn")
        .env("LIANDONG_OPS_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log"))
        .spawn()
        .expect("spawn serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the gateway served a store whose copy never finished: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ran = Ran {
        code: status.code(),
        stdout: String::new(),
        stderr: std::fs::read_to_string(&log).unwrap_or_default(),
    };
    assert_eq!(ran.code, Some(EX_DATAERR), "stderr: {}", ran.stderr);
    assert!(
        ran.stderr.contains("never finished") && ran.stderr.contains("not served"),
        "{}",
        ran.stderr
    );
}

/// A joint announcement draft of cz-eeb co-signed by cz-psb, and its
/// approval, which makes the gateway release it.
async fn announce(bed: &Testbed) {
    let mut draft = notification(
        "mig-ann-1",
        "CZ-MIG-ANN",
        Event::JointAnnouncement,
        Level::Public,
        &["cz-psb"],
    );
    draft.region = "140400".into();
    draft.body = Some(pb::CaseBody {
        title: "联合发布".into(),
        ..Default::default()
    });
    publish(&mut bed.client("cz-eeb").await, draft.clone())
        .await
        .expect("the draft is stored");
    let mut approval = notification(
        "cz-psb-mig-ann-1",
        "CZ-MIG-ANN",
        Event::AnnouncementApproved,
        Level::Internal,
        &[],
    );
    approval.region = "140400".into();
    approval.body = Some(pb::CaseBody {
        announcement: Some(pb::Announcement {
            draft: Some(pb::NotificationRef {
                sender: "cz-eeb".into(),
                notification_id: draft.notification_id.clone(),
                sha256: signing::signed_digest(&draft, "cz-eeb"),
                sequence: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    publish(&mut bed.client("cz-psb").await, approval)
        .await
        .expect("the approval is stored");
}

/// Receives and acks every delivery until the stream stays quiet, then
/// closes it so that its cursor is stored; returns the last sequence.
async fn drain(mut subscriber: Subscriber) -> u64 {
    let mut last = 0;
    loop {
        match subscriber.next_event(Duration::from_secs(2)).await {
            Next::Delivery(delivery) => {
                subscriber.ack(&[delivery.sequence]).await;
                last = delivery.sequence;
            }
            Next::Silent => break,
            other => panic!("the subscription {other}"),
        }
    }
    subscriber.close().await.expect("closes cleanly");
    last
}

/// Every row of every copied table of the SQLite file `b` is in `a` and
/// the other way round (the files compared by SQLite itself).
async fn assert_same_rows(a: &Path, b: &Path) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}", a.display()))
        .await
        .expect("open");
    sqlx::query(&format!("ATTACH DATABASE '{}' AS other", b.display()))
        .execute(&mut conn)
        .await
        .expect("attach");
    for table in copied_tables() {
        for (left, right) in [("main", "other"), ("other", "main")] {
            let differing: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM (SELECT * FROM {left}.{table} EXCEPT SELECT * FROM {right}.{table})"
            ))
            .fetch_one(&mut conn)
            .await
            .expect("compare");
            assert_eq!(differing, 0, "{table}: rows of {left} not in {right}");
        }
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM main.{table}"))
            .fetch_one(&mut conn)
            .await
            .expect("count");
        eprintln!("compared {table}: {count} rows");
    }
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_round_trip_verifies() {
    if skip_unless_postgres("moves a SQLite store to PostgreSQL and back") {
        return;
    }
    let mut bed = sqlite_bed();
    // A case through its transitions, a county transfer whose receipt
    // started the police's clock, a joint announcement released, clues,
    // a disabled agency.
    publish_lifecycle(&bed, "CZ-MIG-1", Event::CaseFiled).await;
    let mut bureau = bed.client("cz-eeb-xiangyuan").await;
    let mut police = bed.client("cz-psb-xiangyuan").await;
    publish_county_transfer_received(&mut bureau, &mut police, "CZ-MIG-2", "mig-t", "mig-r").await;
    announce(&bed).await;
    publish_clues(
        &mut bed.client("cz-eeb").await,
        "mig-clue-",
        "CZ-MIG-3",
        0..5,
    )
    .await;
    let mut ops = OperationsClient::new(
        bed.pki
            .credentials("cz-ops")
            .connect(&bed.gateway.url(), None)
            .await
            .expect("connect"),
    );
    ops.disable_agency(pb::DisableAgencyRequest {
        agency: "cz-eeb-luzhou".into(),
        reason: "signing key lost".into(),
    })
    .await
    .expect("disabled");
    // Subscriptions with cursors.
    let acked = drain(
        Subscriber::open(&mut bed.client("cz-psb").await, "main")
            .await
            .expect("subscribed"),
    )
    .await;
    assert!(acked > 0);
    drain(
        Subscriber::open(&mut bed.client("cz-procuratorate").await, "oversight")
            .await
            .expect("subscribed"),
    )
    .await;
    stop(&mut bed);

    let source_path = bed.dir.path().join("data/liandong.db");
    let source = bed.database_url();
    for (table, at_least) in [
        ("deadlines", 1),
        ("announcements", 1),
        ("announcement_answers", 1),
        ("cases", 2),
        ("case_transitions", 3),
        ("agency_state", 1),
        ("audit_checkpoints", 1),
    ] {
        let rows = scalar(&source, &format!("SELECT COUNT(*) FROM {table}")).await;
        assert!(rows >= at_least, "{table}: {rows} rows in the source");
    }

    // SQLite → PostgreSQL.
    let postgres = PostgresDatabase::create().expect("a PostgreSQL database");
    let ran = migrate_store(
        &source,
        &postgres.url,
        &["--config", config(&bed), "--json"],
    );
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
    let summary: serde_json::Value = serde_json::from_str(&ran.stdout).expect("a JSON summary");
    let high_water = summary["high_water"].as_u64().expect("a high-water mark");
    let notifications = scalar(&source, "SELECT COUNT(*) FROM notifications").await;
    assert_eq!(
        summary["tables"][0],
        serde_json::json!({
            "table": "notifications",
            "rows": notifications,
            "sha256": summary["tables"][0]["sha256"],
        })
    );
    assert!(summary["seconds"].as_f64().is_some());
    assert!(
        ran.stderr.contains("migrate-store: copying notifications"),
        "progress lines without a terminal: {}",
        ran.stderr
    );
    // The same checks as operators run, on the copy: green.
    for check in [
        vec!["verify-store", "--config", config(&bed)],
        vec!["audit", "verify", "--config", config(&bed)],
    ] {
        let ran = gateway(&check, Some(&postgres.url));
        assert_eq!(ran.code, Some(0), "{check:?}: {}{}", ran.stdout, ran.stderr);
    }
    assert_eq!(
        scalar(
            &postgres.url,
            "SELECT acked_through FROM subscriptions WHERE owner = 'cz-psb' AND name = 'main'"
        )
        .await,
        scalar(
            &source,
            "SELECT acked_through FROM subscriptions WHERE owner = 'cz-psb' AND name = 'main'"
        )
        .await
    );

    // PostgreSQL → a new SQLite file: row for row what the source holds.
    let back = bed.dir.path().join("back.db");
    let ran = migrate_store(
        &postgres.url,
        &format!("sqlite://{}", back.display()),
        &["--json"],
    );
    assert_eq!(ran.code, Some(0), "stderr: {}", ran.stderr);
    let back_summary: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(back_summary["tables"], summary["tables"], "same digests");
    assert_same_rows(&source_path, &back).await;

    // A gateway on the PostgreSQL copy resumes the subscriptions from their
    // cursors, and the next publish gets the next sequence.
    bed.gateway = GatewayProcess::start_with(
        &bed.config,
        &bed.dir.path().join("gateway-postgres.log"),
        &[],
        &[("LIANDONG_DATABASE_URL", Some(&postgres.url))],
    )
    .expect("a gateway on the copy");
    let mut psb = bed.client("cz-psb").await;
    let mut resumed = Subscriber::open(&mut psb, "main").await.expect("resumed");
    let receipt = publish(
        &mut bed.client("cz-eeb").await,
        notification(
            "mig-after",
            "CZ-MIG-3",
            Event::ClueShared,
            Level::Internal,
            &[],
        ),
    )
    .await
    .expect("published on the copy");
    assert_eq!(receipt.sequence, high_water + 1);
    let next = resumed
        .expect_delivery(WAIT, "the first notification stored on the copy")
        .await;
    assert_eq!(
        next.sequence, receipt.sequence,
        "resumed after its cursor ({acked}), nothing acked delivered again"
    );
}

#[tokio::test]
async fn migrate_store_refuses_a_target_that_holds_data() {
    let mut bed = sqlite_bed();
    publish_clues(&mut bed.client("cz-eeb").await, "full-", "CZ-FULL-1", 0..3).await;
    stop(&mut bed);
    let (target, _guard) = empty_target(bed.dir.path(), "target");
    let ran = migrate_store(&bed.database_url(), &target, &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("migrate-store: copied") && ran.stdout.contains("notifications 3"),
        "{}",
        ran.stdout
    );
    let copies = scalar(&target, "SELECT COUNT(*) FROM store_copies").await;

    let ran = migrate_store(&bed.database_url(), &target, &[]);
    assert_eq!(ran.code, Some(EX_USAGE), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("already holds data") && ran.stderr.contains("notifications: 3 row(s)"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        scalar(&target, "SELECT COUNT(*) FROM store_copies").await,
        copies
    );
    assert_eq!(
        scalar(&target, "SELECT COUNT(*) FROM notifications").await,
        3
    );
}

#[tokio::test]
async fn migrate_store_refuses_a_missing_source_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("a directory");
    let (target, _guard) = empty_target(dir.path(), "target");
    let missing = dir.path().join("nothing-here.db");
    let ran = migrate_store(&format!("sqlite://{}", missing.display()), &target, &[]);
    assert_eq!(ran.code, Some(EX_USAGE), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("there is no SQLite database at"),
        "{}",
        ran.stderr
    );
    assert!(!missing.exists(), "the missing source is not created");
    if let Some(path) = target.strip_prefix("sqlite://") {
        assert!(!Path::new(path).exists(), "no target either");
    }

    // A PostgreSQL database that does not exist.
    if Backend::from_env() == Backend::Postgres {
        let server = std::env::var(liandong_tests::POSTGRES_URL_VAR)
            .unwrap_or_else(|_| liandong_tests::DEFAULT_POSTGRES_URL.to_owned());
        let absent = format!(
            "{}/ld_no_such_database",
            server.rsplit_once('/').expect("a URL with a database").0
        );
        let ran = migrate_store(&absent, &target, &[]);
        assert_eq!(ran.code, Some(EX_USAGE), "{}", ran.stderr);
        assert!(ran.stderr.contains("does not exist"), "{}", ran.stderr);
        assert_eq!(
            scalar(
                &target,
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            .await,
            0,
            "the target is left alone"
        );
    }
}

#[tokio::test]
async fn migrate_store_refuses_the_same_store() {
    let mut bed = sqlite_bed();
    publish_clues(&mut bed.client("cz-eeb").await, "same-", "CZ-SAME-1", 0..2).await;
    stop(&mut bed);
    let source = bed.database_url();
    // The same file, spelled another way.
    let spelled = format!("sqlite://{}/data/./liandong.db", bed.dir.path().display());
    let ran = migrate_store(&source, &spelled, &[]);
    assert_eq!(ran.code, Some(EX_USAGE), "{}", ran.stderr);
    assert!(ran.stderr.contains("the same store"), "{}", ran.stderr);
    assert_eq!(
        scalar(&source, "SELECT COUNT(*) FROM store_copies").await,
        0
    );

    if Backend::from_env() == Backend::Postgres {
        let postgres = PostgresDatabase::create().expect("a PostgreSQL database");
        let ran = migrate_store(&source, &postgres.url, &[]);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let separator = if postgres.url.contains('?') { '&' } else { '?' };
        let spelled = format!("{}{separator}application_name=another", postgres.url);
        let ran = migrate_store(&postgres.url, &spelled, &[]);
        assert_eq!(ran.code, Some(EX_USAGE), "{}", ran.stderr);
        assert!(ran.stderr.contains("the same store"), "{}", ran.stderr);
        assert_eq!(
            scalar(&postgres.url, "SELECT COUNT(*) FROM store_copies").await,
            1
        );
    }
}

#[tokio::test]
async fn migrate_store_refused_half_way_leaves_a_target_the_gateway_refuses() {
    let mut bed = sqlite_bed();
    publish_clues(&mut bed.client("cz-eeb").await, "half-", "CZ-HALF-1", 0..6).await;
    stop(&mut bed);
    let (target, _guard) = empty_target(bed.dir.path(), "target");
    // The target's schema, migrated as an operator would, then a trigger
    // that refuses the fourth notification.
    let ran = gateway(&["migrate", "--config", config(&bed)], Some(&target));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&target).await.expect("open");
    let statements: &[&str] = match Backend::of_url(&target) {
        Backend::Sqlite => &["CREATE TRIGGER refuse_four BEFORE INSERT ON notifications \
              WHEN NEW.sequence = 4 BEGIN SELECT RAISE(ABORT, 'row four refused'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_four() RETURNS trigger AS $$ BEGIN \
             IF NEW.sequence = 4 THEN RAISE EXCEPTION 'row four refused'; END IF; \
             RETURN NEW; END; $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_four BEFORE INSERT ON notifications \
             FOR EACH ROW EXECUTE FUNCTION refuse_four()",
        ],
    };
    for statement in statements {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect("trigger");
    }
    conn.close().await.expect("close");

    let ran = migrate_store(&bed.database_url(), &target, &[]);
    assert_eq!(ran.code, Some(EX_UNAVAILABLE), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("the target refused a row of notifications")
            && ran.stderr.contains("nothing was copied"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        scalar(&target, "SELECT COUNT(*) FROM notifications").await,
        0
    );
    assert_eq!(scalar(&target, "SELECT COUNT(*) FROM audit_log").await, 0);
    assert_not_served(&bed, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_killed_mid_copy_leaves_a_target_the_gateway_refuses() {
    if skip_unless_postgres("holds a PostgreSQL table lock to stop the copy half-way") {
        return;
    }
    let mut bed = sqlite_bed();
    publish_clues(&mut bed.client("cz-eeb").await, "kill-", "CZ-KILL-1", 0..6).await;
    stop(&mut bed);
    let target = PostgresDatabase::create().expect("a PostgreSQL database");
    let ran = gateway(&["migrate", "--config", config(&bed)], Some(&target.url));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // Another session holds a lock that lets the copy read the table but
    // not write to it: the copy stops at the audit checkpoints, after the
    // notifications and the audit log are in its transaction.
    let mut holder = sqlx::AnyConnection::connect(&target.url)
        .await
        .expect("open");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE audit_checkpoints IN SHARE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");

    let mut copy = Command::new(binary("liandong-gateway"))
        .args([
            "migrate-store",
            "--from",
            &bed.database_url(),
            "--to",
            &target.url,
        ])
        .env("LIANDONG_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migrate-store");
    let stderr = copy.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the copy never reached audit_checkpoints: {seen:?}"));
        let blocked = line.contains("copying audit_checkpoints");
        seen.push(line);
        if blocked {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("copying notifications: 6 rows")),
        "{seen:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(copy.id() as i32),
        Signal::SIGKILL,
    )
    .expect("kill -9");
    let status = copy.wait().expect("reaped");
    assert_eq!(status.code(), None, "killed, not exited: {status}");
    sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("release");
    holder.close().await.expect("close");
    // The killed client's server session rolls back (and lets go of its
    // locks) once it finds its client gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while scalar(
        &target.url,
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed copy's session stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        scalar(&target.url, "SELECT COUNT(*) FROM notifications").await,
        0
    );
    assert_not_served(&bed, &target.url);

    // Run again into the same database: it completes and is served.
    let ran = migrate_store(&bed.database_url(), &target.url, &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        scalar(&target.url, "SELECT COUNT(*) FROM notifications").await,
        6
    );
    let ran = gateway(
        &["verify-store", "--config", config(&bed)],
        Some(&target.url),
    );
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
}
