//! Contract tests: one body per behaviour, run on SQLite and on PostgreSQL.
//!
//! PostgreSQL runs at `LIANDONG_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its
//! own. When it cannot be reached the PostgreSQL half is skipped with a
//! message, unless `LIANDONG_REQUIRE_POSTGRES=1` (as in CI), where that fails.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;

use super::*;

mod group_commit;
mod listen;
mod schema;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty store per backend; the guard keeps SQLite's directory.
pub(crate) async fn backends() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("store.db").display());
    let mut stores = vec![(Store::connect(&sqlite_url, 4).await.unwrap(), Some(dir))];
    if let Some(url) = postgres_schema_url().await {
        stores.push((Store::connect(&url, 4).await.unwrap(), None));
    }
    stores
}

/// Records migration `version` as applied by a newer binary, with what
/// such a migration adds (a column, a table): a store migrated ahead of
/// this binary, as another replica of a rolling upgrade leaves it.
pub(crate) async fn apply_future_migration(store: &Store, version: i64) {
    for statement in [
        "ALTER TABLE notifications ADD COLUMN future_note TEXT",
        "CREATE TABLE future_things (id BIGINT PRIMARY KEY, note TEXT)",
    ] {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from the future', TRUE, $2, 0)",
    )
    .bind(version)
    .bind(vec![7_u8; 48])
    .execute(store.pool())
    .await
    .unwrap();
}

/// A URL whose search_path is a new, empty schema, or None when PostgreSQL
/// is not reachable and not required.
pub(crate) async fn postgres_schema_url() -> Option<String> {
    let base = std::env::var("LIANDONG_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let required = std::env::var("LIANDONG_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(conn) => conn,
        Err(error) if !required => {
            eprintln!("PostgreSQL at {base} unreachable ({error}); skipping the PostgreSQL half");
            return None;
        }
        Err(error) => panic!("PostgreSQL at {base} is required but unreachable: {error}"),
    };
    // Unique per process, per test and per moment: process id, a counter
    // within the process, and the start time.
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let schema = format!(
        "ld_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        Instant::now().unix_micros()
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// A notification as `api` builds it: the encoded wire message (with
/// `content` as its summary) and the routing columns taken from it. It
/// shares a clue, which a case accepts any number of times.
pub(crate) fn new_notification(
    sender: &str,
    id: &str,
    case_ref: &str,
    content: &str,
) -> NewNotification {
    new_event(sender, id, case_ref, pb::EventType::ClueShared, content)
}

/// [`new_notification`] of `event`.
fn new_event(
    sender: &str,
    id: &str,
    case_ref: &str,
    event: pb::EventType,
    content: &str,
) -> NewNotification {
    let wire = pb::Notification {
        notification_id: id.into(),
        case_ref: case_ref.into(),
        event: event as i32,
        confidentiality: 3,
        recipients: vec!["cz-psb".into(), "cz-procuratorate".into()],
        confidentiality_note: "reason".into(),
        region: "140423".into(),
        summary: content.into(),
        sender: sender.into(),
        ..Default::default()
    };
    let envelope = Envelope {
        sender: AgencyId::parse("sender", sender).unwrap(),
        id: NotificationId::parse_field("id", id).unwrap(),
        case_ref: CaseRef::parse_field("case_ref", case_ref).unwrap(),
        event: Event::from_wire("event", wire.event).unwrap(),
        confidentiality: Confidentiality::from_wire("confidentiality", wire.confidentiality)
            .unwrap(),
        region: Region::parse("region", &wire.region).unwrap(),
        recipients: agencies(&wire.recipients),
        copies: Vec::new(),
    };
    NewNotification::new(envelope, wire.encode_to_vec())
}

fn agencies(ids: &[impl AsRef<str>]) -> Vec<AgencyId> {
    ids.iter()
        .map(|id| AgencyId::parse("agency", id.as_ref()).unwrap())
        .collect()
}

/// The summary (test content) of a stored notification.
/// The sequences `read_after(0)` serves of the five rows of case `C-1`
/// (checking that they are all the case timeline serves too, and that the
/// batch covers all five), and how many integrity failures the read
/// counted.
async fn served_of_case_c1(store: &Store) -> (Vec<u64>, u64) {
    let before = store.integrity_failures();
    let batch = store.read_after(0, 10).await.unwrap();
    let served: Vec<u64> = batch.rows.iter().map(|r| r.sequence).collect();
    assert_eq!(batch.through, Some(5));
    let failures = store.integrity_failures() - before;
    let timeline: Vec<u64> = store
        .case_timeline("C-1")
        .await
        .unwrap()
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert_eq!(
        timeline, served,
        "the case timeline serves what delivery serves"
    );
    (served, failures)
}

fn content(stored: &StoredNotification) -> String {
    pb::Notification::decode(stored.payload.as_slice())
        .unwrap()
        .summary
}

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Event, NotificationId, Region, StatutoryCopy,
};
use liandong_core::pb;
use prost::Message;
use sha2::Digest;

#[tokio::test]
async fn publish_assigns_increasing_sequences_and_reads_back_in_order() {
    for (store, _guard) in backends().await {
        let a = store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "one"))
            .await
            .unwrap();
        let b = store
            .publish(&new_notification("cz-eeb", "n2", "C-2", "two"))
            .await
            .unwrap();
        let (PublishOutcome::Stored(a), PublishOutcome::Stored(b)) = (a, b) else {
            panic!("{:?}: both must be stored", store.backend());
        };
        assert_eq!((a.sequence, b.sequence), (1, 2));
        let rows = store.read_after(0, 10).await.unwrap().rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].envelope.recipients,
            agencies(&["cz-psb", "cz-procuratorate"])
        );
        assert_eq!(content(&rows[1]), "two");
        assert_eq!(rows[0].received_at, a.received_at);
        assert_eq!(store.read_after(1, 10).await.unwrap().rows[0].sequence, 2);
        assert_eq!(store.read_after(0, 1).await.unwrap().rows.len(), 1);
        assert_eq!(store.latest_sequence().await.unwrap(), 2);
    }
}

#[tokio::test]
async fn identical_republish_returns_the_original_receipt_and_stores_one_row() {
    for (store, _guard) in backends().await {
        let first = store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "same"))
            .await
            .unwrap();
        let again = store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "same"))
            .await
            .unwrap();
        let PublishOutcome::Stored(receipt) = first else {
            panic!("first publish must store")
        };
        assert_eq!(again, PublishOutcome::Duplicate(receipt));
        assert_eq!(store.count_notifications().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn changed_republish_is_a_conflict_and_stores_nothing() {
    for (store, _guard) in backends().await {
        store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "original"))
            .await
            .unwrap();
        let changed = store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "changed"))
            .await
            .unwrap();
        assert_eq!(changed, PublishOutcome::Conflict);
        assert_eq!(store.count_notifications().await.unwrap(), 1);
        assert_eq!(
            content(&store.read_after(0, 10).await.unwrap().rows[0]),
            "original"
        );
        // The same id from another sender is another notification.
        let other = store
            .publish(&new_notification("cz-psb", "n1", "C-1", "changed"))
            .await
            .unwrap();
        assert!(matches!(other, PublishOutcome::Stored(_)));
    }
}

#[tokio::test]
async fn concurrent_publishes_get_gap_free_distinct_sequences() {
    for (store, _guard) in backends().await {
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .publish(&new_notification(
                            "cz-eeb",
                            &format!("n{i}"),
                            "C-1",
                            &format!("c{i}"),
                        ))
                        .await
                })
            })
            .collect();
        let mut sequences = Vec::new();
        for task in tasks {
            let PublishOutcome::Stored(receipt) = task.await.unwrap().unwrap() else {
                panic!("must store")
            };
            sequences.push(receipt.sequence);
        }
        sequences.sort_unstable();
        assert_eq!(sequences, (1..=40).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn case_timeline_holds_only_that_case_in_order() {
    for (store, _guard) in backends().await {
        store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "a"))
            .await
            .unwrap();
        store
            .publish(&new_notification("cz-eeb", "n2", "C-2", "b"))
            .await
            .unwrap();
        store
            .publish(&new_notification("cz-psb", "n3", "C-1", "c"))
            .await
            .unwrap();
        let timeline = store.case_timeline("C-1").await.unwrap();
        let sequences: Vec<u64> = timeline.iter().map(|n| n.sequence).collect();
        assert_eq!(sequences, vec![1, 3]);
        assert!(store.case_timeline("C-9").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn subscription_is_created_once_and_its_cursor_only_moves_forward() {
    for (store, _guard) in backends().await {
        let created = store
            .open_subscription("cz-psb", "inbox", b"filter", 5)
            .await
            .unwrap();
        assert!(created.created);
        assert_eq!(created.acked_through, 5);
        let again = store
            .open_subscription("cz-psb", "inbox", b"other", 0)
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.filter, b"filter");
        assert_eq!(again.acked_through, 5);
        store
            .advance_subscription("cz-psb", "inbox", 9, None)
            .await
            .unwrap();
        store
            .advance_subscription("cz-psb", "inbox", 7, None)
            .await
            .unwrap();
        assert_eq!(
            store.subscription_cursor("cz-psb", "inbox").await.unwrap(),
            Some(9)
        );
        // Names are per owner.
        assert!(
            store
                .open_subscription("cz-eeb", "inbox", b"f", 0)
                .await
                .unwrap()
                .created
        );
        assert_eq!(
            store.subscription_cursor("cz-eeb", "nope").await.unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn reconnecting_to_a_migrated_database_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/store.db").display()
    );
    let store = Store::connect(&url, 2).await.unwrap();
    store
        .publish(&new_notification("cz-eeb", "n1", "C-1", "kept"))
        .await
        .unwrap();
    store.close().await;
    let store = Store::connect(&url, 2).await.unwrap();
    assert_eq!(store.count_notifications().await.unwrap(), 1);
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL");
}

#[tokio::test]
async fn unusable_database_urls_are_refused() {
    assert!(matches!(
        Store::connect("mysql://x", 1).await,
        Err(StoreError::UnsupportedUrl)
    ));
    assert!(matches!(
        Store::connect("sqlite://:memory:", 1).await,
        Err(StoreError::Config(_))
    ));
}

#[tokio::test]
async fn audit_log_appends_and_refuses_changes() {
    for (store, _guard) in backends().await {
        let entry = AuditEntry {
            agency: "cz-psb".into(),
            action: "DELIVERY",
            sequence: Some(7),
            sender: "cz-eeb".into(),
            notification_id: "n7".into(),
            decision: "FULL".into(),
            reason: "recipient".into(),
            peer: None,
        };
        let refused = AuditEntry {
            action: "PUBLISH_REFUSED",
            sequence: None,
            decision: "PERMISSION_DENIED".into(),
            ..entry.clone()
        };
        store
            .append_audit(&[entry.clone(), refused.clone()])
            .await
            .unwrap();
        assert_eq!(store.audit_entries().await.unwrap(), vec![entry, refused]);
        let update = sqlx::query("UPDATE audit_log SET reason = 'forged'")
            .execute(&store.pool)
            .await;
        assert!(
            update.is_err(),
            "{:?}: the audit log must refuse updates",
            store.backend()
        );
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(&store.pool)
            .await;
        assert!(
            delete.is_err(),
            "{:?}: the audit log must refuse deletes",
            store.backend()
        );
        assert_eq!(store.audit_entries().await.unwrap().len(), 2);
    }
}

/// Publishes `n1` … `n{count}` from cz-eeb on case C-1.
async fn publish_clues(store: &Store, count: usize) {
    for i in 1..=count {
        store
            .publish(&new_notification("cz-eeb", &format!("n{i}"), "C-1", "x"))
            .await
            .unwrap();
    }
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", store.backend()));
}

fn stored(outcome: PublishOutcome) -> Receipt {
    match outcome {
        PublishOutcome::Stored(receipt) => receipt,
        other => panic!("must be stored, got {other:?}"),
    }
}

/// Makes the database refuse, at COMMIT, any transaction that stored a
/// notification of case `FAIL-AT-COMMIT`: a deferred foreign key on SQLite
/// (COMMIT fails and SQLite keeps the transaction open), a deferred
/// constraint trigger on PostgreSQL (COMMIT fails and ends it).
async fn fail_commits_of_case(store: &Store) {
    match store.backend() {
        Backend::Sqlite => {
            exec(
                store,
                "CREATE TABLE commit_guard_parent (id INTEGER PRIMARY KEY)",
            )
            .await;
            exec(
                store,
                "CREATE TABLE commit_guard (parent INTEGER REFERENCES commit_guard_parent (id) \
                 DEFERRABLE INITIALLY DEFERRED)",
            )
            .await;
            exec(
                store,
                "CREATE TRIGGER fail_at_commit AFTER INSERT ON notifications \
                 WHEN NEW.case_ref = 'FAIL-AT-COMMIT' \
                 BEGIN INSERT INTO commit_guard (parent) VALUES (42); END",
            )
            .await;
        }
        Backend::Postgres => {
            exec(
                store,
                "CREATE FUNCTION fail_at_commit() RETURNS trigger AS $$ BEGIN \
                 IF NEW.case_ref = 'FAIL-AT-COMMIT' THEN RAISE EXCEPTION 'refused at commit'; END IF; \
                 RETURN NULL; END; $$ LANGUAGE plpgsql",
            )
            .await;
            exec(
                store,
                "CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON notifications \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_at_commit()",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn failed_commit_writes_nothing_and_the_next_write_commits() {
    for (store, guard) in backends().await {
        let first = stored(
            store
                .publish(&new_notification("cz-eeb", "n1", "C-1", "before"))
                .await
                .unwrap(),
        );
        fail_commits_of_case(&store).await;
        for attempt in 0..3 {
            let refused = store
                .publish(&new_notification(
                    "cz-eeb",
                    &format!("doomed-{attempt}"),
                    "FAIL-AT-COMMIT",
                    "never stored",
                ))
                .await;
            assert!(
                matches!(refused, Err(StoreError::Database(_))),
                "{:?}: a failed commit must be an error, got {refused:?}",
                store.backend()
            );
            assert!(!store.is_healthy(), "{:?}", store.backend());
        }
        // The writer is usable again, and nothing of the failed
        // transactions survived: not the row, not the high-water mark.
        let next = stored(
            store
                .publish(&new_notification("cz-eeb", "n2", "C-1", "after"))
                .await
                .unwrap(),
        );
        assert_eq!(next.sequence, first.sequence + 1, "{:?}", store.backend());
        assert!(store.is_healthy());
        let audit = AuditEntry {
            agency: "cz-psb".into(),
            action: "CASE_READ",
            sequence: Some(next.sequence),
            sender: "cz-eeb".into(),
            notification_id: "n2".into(),
            decision: "FULL".into(),
            reason: "recipient".into(),
            peer: None,
        };
        store
            .append_audit(std::slice::from_ref(&audit))
            .await
            .unwrap();
        let url = guard
            .as_ref()
            .map(|dir| format!("sqlite://{}", dir.path().join("store.db").display()));
        // What a fresh process sees after a restart.
        if let Some(url) = url {
            store.close().await;
            let store = Store::connect(&url, 2).await.unwrap();
            check_after_failed_commits(&store, &audit).await;
        } else {
            check_after_failed_commits(&store, &audit).await;
        }
    }
}

async fn check_after_failed_commits(store: &Store, audit: &AuditEntry) {
    let rows = store.read_after(0, 10).await.unwrap().rows;
    let ids: Vec<&str> = rows.iter().map(|r| r.envelope.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"], "{:?}", store.backend());
    // The refused commit left no PUBLISHED row either.
    let entries = store.audit_entries().await.unwrap();
    let published: Vec<&str> = entries
        .iter()
        .filter(|e| e.action == "PUBLISHED")
        .map(|e| e.notification_id.as_str())
        .collect();
    assert_eq!(published, ["n1", "n2"], "{:?}", store.backend());
    assert_eq!(entries.last(), Some(audit));
    assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
}

/// A full disk on SQLite: the writer's database may not grow, so
/// anything that needs a new page fails with `SQLITE_FULL` (a 64 KiB
/// summary always does). `set_writer_setup(Vec::new())` gives space back.
pub(crate) async fn forbid_growth(store: &Store) {
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    store
        .set_writer_setup(vec![format!("PRAGMA max_page_count = {pages}")])
        .await;
}

#[tokio::test]
async fn sqlite_full_disk_gives_no_receipt_and_writes_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let first = stored(
        store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "fits"))
            .await
            .unwrap(),
    );
    forbid_growth(&store).await;
    let big = "x".repeat(64 * 1024);
    for i in 0..5 {
        let refused = store
            .publish(&new_notification(
                "cz-eeb",
                &format!("big-{i}"),
                "C-1",
                &big,
            ))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Database(_))),
            "a full disk must refuse, got {refused:?}"
        );
    }
    assert!(!store.is_healthy());
    // The health probe needs new pages too: it fails while the disk is
    // full, and the store stays unhealthy.
    assert!(store.probe().await.is_err());
    assert!(!store.is_healthy());
    // Space returns.
    store.set_writer_setup(Vec::new()).await;
    store.probe().await.unwrap();
    assert!(store.is_healthy());
    let next = stored(
        store
            .publish(&new_notification("cz-eeb", "big-0", "C-1", &big))
            .await
            .unwrap(),
    );
    assert_eq!(next.sequence, first.sequence + 1);
    store.close().await;
    let store = Store::connect(&url, 2).await.unwrap();
    let rows = store.read_after(0, 10).await.unwrap().rows;
    assert_eq!(rows.len(), 2);
    assert_eq!(content(&rows[1]), big);
    assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
}

#[tokio::test]
async fn sequences_are_never_reused_after_rows_are_deleted() {
    for (store, _guard) in backends().await {
        publish_clues(&store, 4).await;
        exec(&store, "DELETE FROM notifications WHERE sequence >= 3").await;
        assert_eq!(store.latest_sequence().await.unwrap(), 4);
        let next = stored(
            store
                .publish(&new_notification("cz-eeb", "n5", "C-1", "x"))
                .await
                .unwrap(),
        );
        assert_eq!(next.sequence, 5, "{:?}", store.backend());
        let batch = store.read_after(4, 10).await.unwrap();
        assert_eq!(
            batch.rows.len(),
            1,
            "{:?}: the new row is served",
            store.backend()
        );
        let report = store.verify(&verify::NoProgress).await.unwrap();
        assert_eq!(report.missing, vec![SequenceRange { first: 3, last: 4 }]);
        assert!(report.changed.is_empty(), "{report:?}");
        // A deleted id published again is stored again, under a new
        // sequence; the deletion stays visible to verify-store.
        let again = stored(
            store
                .publish(&new_notification("cz-eeb", "n3", "C-1", "x"))
                .await
                .unwrap(),
        );
        assert_eq!(again.sequence, 6);
        let report = store.verify(&verify::NoProgress).await.unwrap();
        assert_eq!(report.missing, vec![SequenceRange { first: 3, last: 4 }]);
    }
}

#[tokio::test]
async fn tampered_rows_are_never_returned() {
    for (store, _guard) in backends().await {
        publish_clues(&store, 5).await;
        // 2: content edited; 3: a routing column set to PUBLIC; 4: content
        // and its hash edited together (only the chain tells).
        let edited = new_notification("cz-eeb", "n2", "C-1", "forged").payload;
        sqlx::query("UPDATE notifications SET payload = $1 WHERE sequence = 2")
            .bind(&edited)
            .execute(&store.pool)
            .await
            .unwrap();
        exec(
            &store,
            "UPDATE notifications SET confidentiality = 1 WHERE sequence = 3",
        )
        .await;
        let forged = new_notification("cz-eeb", "n4", "C-1", "forged");
        sqlx::query("UPDATE notifications SET payload = $1, content_hash = $2 WHERE sequence = 4")
            .bind(&forged.payload)
            .bind(&forged.content_hash)
            .execute(&store.pool)
            .await
            .unwrap();
        let outcome = served_of_case_c1(&store).await;
        assert_eq!(
            outcome,
            (vec![1, 5], 3),
            "served and refused of 1..=5, {:?}",
            store.backend()
        );
        let report = store.verify(&verify::NoProgress).await.unwrap();
        let changed: Vec<u64> = report.changed.iter().map(|p| p.sequence).collect();
        assert_eq!(changed, [2, 3], "{report:?}");
        let moved: Vec<u64> = report.out_of_order.iter().map(|p| p.sequence).collect();
        assert_eq!(moved, [4], "{report:?}");
        assert!(report.missing.is_empty());
    }
}

#[tokio::test]
async fn rows_whose_routing_columns_do_not_parse_are_never_returned() {
    for (store, _guard) in backends().await {
        publish_clues(&store, 5).await;
        // 2-4: a column edited to a value no valid notification has (a
        // malformed region, an unknown level, an unknown event).
        for sql in [
            "UPDATE notifications SET region = 'abc' WHERE sequence = 2",
            "UPDATE notifications SET confidentiality = 0 WHERE sequence = 3",
            "UPDATE notifications SET event = 999 WHERE sequence = 4",
        ] {
            exec(&store, sql).await;
        }
        // 5: payload, columns, hash, chain link and chain head all agree on
        // a malformed region, as if a gateway had stored it.
        let mut wire = pb::Notification::decode(
            new_notification("cz-eeb", "n5", "C-1", "x")
                .payload
                .as_slice(),
        )
        .unwrap();
        wire.region = "abc".into();
        let payload = wire.encode_to_vec();
        let hash = sha2::Sha256::digest(&payload).to_vec();
        let row = sqlx::query(
            "SELECT n.received_at, p.chain FROM notifications n \
             JOIN notifications p ON p.sequence = n.sequence - 1 WHERE n.sequence = 5",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let received_at: i64 = row.try_get("received_at").unwrap();
        let previous: Vec<u8> = row.try_get("chain").unwrap();
        let chain = integrity::chain_link(Some(&previous), 5, received_at, &hash);
        sqlx::query(
            "UPDATE notifications SET region = 'abc', payload = $1, content_hash = $2, chain = $3 \
             WHERE sequence = 5",
        )
        .bind(&payload)
        .bind(&hash)
        .bind(&chain)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE store_state SET last_chain = $1 WHERE id = 1")
            .bind(&chain)
            .execute(&store.pool)
            .await
            .unwrap();

        let outcome = served_of_case_c1(&store).await;
        assert_eq!(
            outcome,
            (vec![1], 4),
            "served and refused of 1..=5, {:?}",
            store.backend()
        );
        let report = store.verify(&verify::NoProgress).await.unwrap();
        let changed: Vec<(u64, &str)> = report
            .changed
            .iter()
            .map(|p| (p.sequence, p.problem.as_str()))
            .collect();
        assert_eq!(
            changed,
            [
                (2, "column region does not hold a valid value"),
                (3, "column confidentiality does not hold a valid value"),
                (4, "column event does not hold a valid value"),
                (5, "column region does not hold a valid value"),
            ],
            "{report:?}"
        );
        assert!(report.out_of_order.is_empty(), "{report:?}");
    }
}

#[tokio::test]
async fn locked_database_refuses_writes_then_recovers() {
    for (_, guard) in backends().await {
        let url = match &guard {
            Some(dir) => format!("sqlite://{}", dir.path().join("store.db").display()),
            None => match postgres_schema_url().await {
                Some(url) => url,
                None => continue,
            },
        };
        let store = Store::connect_with(
            &url,
            StoreOptions {
                max_connections: 2,
                lock_timeout: Duration::from_millis(300),
            },
        )
        .await
        .unwrap();
        // Another writer holds the lock longer than the lock timeout.
        let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
        match store.backend() {
            Backend::Sqlite => {
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut other)
                    .await
                    .unwrap();
            }
            Backend::Postgres => {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PUBLISH_LOCK_KEY)
                    .execute(&mut other)
                    .await
                    .unwrap();
            }
        }
        let refused = store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "x"))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Database(_))),
            "{:?}: {refused:?}",
            store.backend()
        );
        assert!(!store.is_healthy());
        assert_eq!(store.count_notifications().await.unwrap(), 0);
        other.close().await.unwrap();
        store.probe().await.unwrap();
        assert!(store.is_healthy());
        let receipt = stored(
            store
                .publish(&new_notification("cz-eeb", "n1", "C-1", "x"))
                .await
                .unwrap(),
        );
        assert_eq!(receipt.sequence, 1);
    }
}

#[tokio::test]
async fn abandoned_publishes_are_stored_once_or_not_at_all() {
    for (store, _guard) in backends().await {
        let steady = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    store
                        .publish(&new_notification("cz-psb", &format!("s{i}"), "C-2", "s"))
                        .await
                        .expect("a publish beside abandoned ones succeeds");
                }
            })
        };
        for i in 0..60u64 {
            let abandoned = new_notification("cz-eeb", &format!("a{i}"), "C-1", "a");
            // Dropped at once, or after a few microseconds: mid-way.
            let _ =
                tokio::time::timeout(Duration::from_micros(i % 7 * 50), store.publish(&abandoned))
                    .await;
        }
        steady.await.unwrap();
        // Wait for the abandoned writes still running: the writer is free
        // once a probe gets through.
        store.probe().await.unwrap();
        for i in 0..60 {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM notifications WHERE sender = 'cz-eeb' AND notification_id = $1",
            )
            .bind(format!("a{i}"))
            .fetch_one(&store.pool)
            .await
            .unwrap();
            assert!(
                count <= 1,
                "{:?}: a{i} stored {count} times",
                store.backend()
            );
        }
        let report = store.verify(&verify::NoProgress).await.unwrap();
        assert!(report.is_clean(), "{:?}: {report:?}", store.backend());
        assert_eq!(
            store.latest_sequence().await.unwrap(),
            store.count_notifications().await.unwrap()
        );
    }
}

#[tokio::test]
async fn rows_from_before_the_chain_are_linked_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    publish_clues(&store, 3).await;
    // As the migration leaves a store that had rows.
    exec(&store, "UPDATE notifications SET chain = NULL").await;
    exec(&store, "UPDATE store_state SET last_chain = NULL").await;
    store.close().await;
    let store = Store::connect(&url, 2).await.unwrap();
    assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
    assert_eq!(store.read_after(0, 10).await.unwrap().rows.len(), 3);
    // Once linked, a link removed later is reported, never repaired.
    exec(
        &store,
        "UPDATE notifications SET chain = NULL WHERE sequence = 2",
    )
    .await;
    store.close().await;
    let store = Store::connect(&url, 2).await.unwrap();
    let report = store.verify(&verify::NoProgress).await.unwrap();
    assert_eq!(report.changed.len(), 1, "{report:?}");
    assert_eq!(report.changed[0].sequence, 2);
}

#[tokio::test]
async fn repeated_recipients_in_the_payload_match_the_validated_column() {
    for (store, _guard) in backends().await {
        let mut new = new_notification("cz-eeb", "n1", "C-1", "x");
        let mut wire = pb::Notification::decode(new.payload.as_slice()).unwrap();
        wire.recipients = vec!["cz-psb".into(), "cz-psb".into(), "cz-procuratorate".into()];
        new.payload = wire.encode_to_vec();
        new.content_hash = sha2::Sha256::digest(&new.payload).to_vec();
        store.publish(&new).await.unwrap();
        let rows = store.read_after(0, 10).await.unwrap().rows;
        assert_eq!(rows.len(), 1, "{:?}", store.backend());
        assert_eq!(
            rows[0].envelope.recipients,
            agencies(&["cz-psb", "cz-procuratorate"])
        );
    }
}

/// A tablespace on a small tmpfs, for PostgreSQL's "disk full": mounted,
/// owned by `postgres`, dropped and unmounted on `cleanup`.
struct FullTablespace {
    mount: tempfile::TempDir,
    name: String,
    base: String,
}

impl FullTablespace {
    /// None when PostgreSQL is not reachable (and not required), or when
    /// mounting is impossible and `LIANDONG_SKIP_TMPFS_TESTS=1`.
    async fn create() -> Option<Self> {
        let base = std::env::var("LIANDONG_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let mut conn = match sqlx::PgConnection::connect(&base).await {
            Ok(conn) => conn,
            Err(error) if std::env::var("LIANDONG_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
                panic!("PostgreSQL at {base} is required but unreachable: {error}")
            }
            Err(_) => return None,
        };
        let mount = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs"])
            .arg(mount.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            if std::env::var("LIANDONG_SKIP_TMPFS_TESTS").is_ok_and(|v| v == "1") {
                return None;
            }
            panic!(
                "mounting a tmpfs for the tablespace needs root; run as root or set \
                 LIANDONG_SKIP_TMPFS_TESTS=1 to skip"
            );
        }
        let location = mount.path().join("ts");
        std::fs::create_dir(&location).unwrap();
        let owned = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&location)
            .status()
            .is_ok_and(|s| s.success());
        assert!(owned, "chown the tablespace directory to postgres");
        let name = format!(
            "ld_full_{}_{}",
            std::process::id(),
            Instant::now().unix_micros()
        );
        sqlx::query(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            location.display()
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        Some(Self { mount, name, base })
    }

    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.mount.path().join("filler")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        let _ = file.write_all(&[0u8; 1]);
    }

    fn free(&self) {
        std::fs::remove_file(self.mount.path().join("filler")).unwrap();
    }

    async fn cleanup(self, schema_url: &str) {
        let schema = schema_url
            .rsplit("search_path%3D")
            .next()
            .and_then(|rest| rest.split("%20").next())
            .unwrap()
            .to_owned();
        let mut conn = sqlx::PgConnection::connect(&self.base).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("DROP TABLESPACE {}", self.name))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}

/// Content that does not compress (PostgreSQL compresses large values).
fn incompressible(len: usize, seed: u64) -> String {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

#[tokio::test]
async fn postgres_full_tablespace_gives_no_receipt_and_writes_resume() {
    let Some(space) = FullTablespace::create().await else {
        eprintln!("PostgreSQL or tmpfs unavailable; skipping");
        return;
    };
    let url = format!(
        "{}%20-c%20default_tablespace%3D{}",
        postgres_schema_url().await.unwrap(),
        space.name
    );
    let store = Store::connect(&url, 2).await.unwrap();
    let first = stored(
        store
            .publish(&new_notification("cz-eeb", "n1", "C-1", "fits"))
            .await
            .unwrap(),
    );
    space.fill();
    let mut refused = 0;
    for i in 0..5 {
        let big = incompressible(256 * 1024, i + 7);
        match store
            .publish(&new_notification(
                "cz-eeb",
                &format!("big-{i}"),
                "C-1",
                &big,
            ))
            .await
        {
            Err(StoreError::Database(error)) => {
                assert!(
                    error.to_string().contains("No space left on device"),
                    "{error}"
                );
                refused += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(outcome) => panic!("a receipt on a full tablespace: {outcome:?}"),
        }
    }
    assert_eq!(refused, 5);
    assert!(!store.is_healthy());
    assert!(
        store.probe().await.is_err(),
        "the probe needs new space too"
    );
    assert!(!store.is_healthy());
    assert_eq!(store.count_notifications().await.unwrap(), 1);
    space.free();
    store.probe().await.unwrap();
    assert!(store.is_healthy());
    let next = stored(
        store
            .publish(&new_notification(
                "cz-eeb",
                "big-0",
                "C-1",
                &incompressible(256 * 1024, 7),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(next.sequence, first.sequence + 1);
    assert!(store.is_healthy());
    assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
    store.close().await;
    space.cleanup(&url).await;
}

#[test]
fn repeated_failures_are_logged_once_per_interval_with_their_count() {
    let throttle = LogThrottle::new(Duration::from_secs(3600));
    assert_eq!(throttle.occurrence("disk full"), Some(1));
    for _ in 0..5 {
        assert_eq!(throttle.occurrence("disk full"), None);
    }
    // Another failure is not held back by the first.
    assert_eq!(throttle.occurrence("locked"), Some(1));
    // Once the interval has passed, the next occurrence is logged with the
    // count of everything since the last line.
    let throttle = LogThrottle::new(Duration::from_secs(10));
    let start = std::time::Instant::now();
    assert_eq!(throttle.occurrence_at("disk full", start), Some(1));
    for second in 1..=3 {
        let at = start + Duration::from_secs(second);
        assert_eq!(throttle.occurrence_at("disk full", at), None);
    }
    let later = start + Duration::from_secs(11);
    assert_eq!(throttle.occurrence_at("disk full", later), Some(4));
    assert_eq!(throttle.occurrence_at("disk full", later), None);
}

/// `new` with the statutory copies `copies` (agency, rule) added.
fn with_copies(mut new: NewNotification, copies: &[(&str, &str)]) -> NewNotification {
    new.envelope.copies = copies
        .iter()
        .map(|(agency, rule)| StatutoryCopy {
            agency: AgencyId::parse("agency", agency).unwrap(),
            rule: liandong_core::domain::RuleName::parse("rule", rule).unwrap(),
        })
        .collect();
    new
}

#[tokio::test]
async fn copies_are_stored_with_the_notification_and_answered_to_a_duplicate() {
    for (store, _guard) in backends().await {
        let copied = with_copies(
            new_notification("cz-eeb-xiangyuan", "t-1", "C-1", "transfer"),
            &[
                (
                    "cz-procuratorate-xiangyuan",
                    "transfer-copied-to-procuratorate",
                ),
                ("cz-eeb", "another-rule"),
            ],
        );
        let receipt = stored(store.publish(&copied).await.unwrap());
        assert_eq!(receipt.copies, copied.envelope.copies);
        let plain = stored(
            store
                .publish(&new_notification("cz-eeb", "n-2", "C-1", "x"))
                .await
                .unwrap(),
        );
        assert!(plain.copies.is_empty());

        let column: String =
            sqlx::query_scalar("SELECT copies FROM notifications WHERE sequence = 1")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(
            column,
            "cz-procuratorate-xiangyuan:transfer-copied-to-procuratorate cz-eeb:another-rule"
        );
        let rows = store.read_after(0, 10).await.unwrap().rows;
        assert_eq!(rows[0].envelope.copies, copied.envelope.copies);
        assert!(rows[1].envelope.copies.is_empty());
        let timeline = store.case_timeline("C-1").await.unwrap();
        assert_eq!(timeline[0].envelope, rows[0].envelope);

        // The same content again, whatever copies the rules would add now:
        // the original receipt, with the original copies.
        let again = with_copies(
            new_notification("cz-eeb-xiangyuan", "t-1", "C-1", "transfer"),
            &[],
        );
        assert_eq!(
            store.publish(&again).await.unwrap(),
            PublishOutcome::Duplicate(receipt.clone()),
            "{:?}",
            store.backend()
        );
        assert_eq!(store.count_notifications().await.unwrap(), 2);
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
    }
}

#[tokio::test]
async fn case_transferor_is_the_sender_of_the_first_transfer() {
    for (store, _guard) in backends().await {
        let case = CaseRef::parse_field("case_ref", "C-9").unwrap();
        assert_eq!(store.case_transferor(&case).await.unwrap(), None);
        let mut clue = new_notification("cz-psb", "clue", "C-9", "x");
        clue.envelope.event = Event::from_wire("event", pb::EventType::ClueShared as i32).unwrap();
        let mut wire = pb::Notification::decode(clue.payload.as_slice()).unwrap();
        wire.event = pb::EventType::ClueShared as i32;
        let clue = NewNotification::new(clue.envelope, wire.encode_to_vec());
        store.publish(&clue).await.unwrap();
        assert_eq!(
            store.case_transferor(&case).await.unwrap(),
            None,
            "a clue is no transfer"
        );
        let transfer = |sender: &str, id: &str, case_ref: &str| {
            new_event(sender, id, case_ref, pb::EventType::CaseTransferred, "x")
        };
        stored(
            store
                .publish(&transfer("cz-eeb-xiangyuan", "t-1", "C-9"))
                .await
                .unwrap(),
        );
        stored(
            store
                .publish(&transfer("cz-eeb-luzhou", "t-3", "C-10"))
                .await
                .unwrap(),
        );
        assert_eq!(
            store.case_transferor(&case).await.unwrap(),
            Some(AgencyId::parse("id", "cz-eeb-xiangyuan").unwrap())
        );
        // A transfer that fails its checks is not taken for the case's
        // transferor.
        exec(
            &store,
            "UPDATE notifications SET sender = 'cz-psb' WHERE notification_id = 't-1'",
        )
        .await;
        assert_eq!(
            store.case_transferor(&case).await.unwrap(),
            None,
            "{:?}",
            store.backend()
        );
    }
}

#[tokio::test]
async fn hand_edited_copies_are_detected_and_never_served() {
    for (store, _guard) in backends().await {
        let copy = [(
            "cz-procuratorate-xiangyuan",
            "transfer-copied-to-procuratorate",
        )];
        for (i, copies) in [&[][..], &copy, &[], &[], &[], &copy]
            .into_iter()
            .enumerate()
        {
            let new = new_notification("cz-eeb-xiangyuan", &format!("n{}", i + 1), "C-1", "x");
            store.publish(&with_copies(new, copies)).await.unwrap();
        }
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
        // 2: its copy removed; 3: a copy added; 4: a copies column no
        // gateway writes; 5: a copy naming a listed recipient, with the
        // chain link recomputed to cover it.
        exec(
            &store,
            "UPDATE notifications SET copies = '' WHERE sequence = 2",
        )
        .await;
        exec(
            &store,
            "UPDATE notifications SET copies = 'cz-eeb:transfer-copied-to-procuratorate' \
             WHERE sequence = 3",
        )
        .await;
        exec(
            &store,
            "UPDATE notifications SET copies = 'cz-eeb' WHERE sequence = 4",
        )
        .await;
        let row = sqlx::query(
            "SELECT n.received_at, n.content_hash, p.chain FROM notifications n \
             JOIN notifications p ON p.sequence = n.sequence - 1 WHERE n.sequence = 5",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let received_at: i64 = row.try_get("received_at").unwrap();
        let hash: Vec<u8> = row.try_get("content_hash").unwrap();
        let previous: Vec<u8> = row.try_get("chain").unwrap();
        let forged = "cz-psb:transfer-copied-to-procuratorate";
        let link = integrity::row_link(Some(&previous), 5, received_at, &hash, forged);
        sqlx::query("UPDATE notifications SET copies = $1, chain = $2 WHERE sequence = 5")
            .bind(forged)
            .bind(&link)
            .execute(&store.pool)
            .await
            .unwrap();

        let before = store.integrity_failures();
        let batch = store.read_after(0, 10).await.unwrap();
        let served: Vec<u64> = batch.rows.iter().map(|r| r.sequence).collect();
        assert_eq!(served, [1], "{:?}", store.backend());
        assert_eq!(batch.through, Some(6));
        // 6 follows a row whose link was rewritten: it no longer follows.
        assert_eq!(store.integrity_failures() - before, 5);

        let report = store.verify(&verify::NoProgress).await.unwrap();
        let changed: Vec<(u64, &str)> = report
            .changed
            .iter()
            .map(|p| (p.sequence, p.problem.as_str()))
            .collect();
        assert_eq!(
            changed,
            [
                (4, "column copies does not hold a valid value"),
                (5, "column copies disagrees with the payload"),
            ],
            "{report:?}"
        );
        let broken: Vec<(u64, &str)> = report
            .out_of_order
            .iter()
            .map(|p| (p.sequence, p.problem.as_str()))
            .collect();
        assert_eq!(
            broken,
            [
                (2, "chain link does not follow from the previous row"),
                (3, "chain link does not follow from the previous row"),
                (6, "chain link does not follow from the previous row"),
            ],
            "{report:?}"
        );
        assert!(!report.is_clean());
    }
}

#[tokio::test]
async fn rows_without_copies_keep_the_chain_formula_of_before() {
    for (store, _guard) in backends().await {
        publish_clues(&store, 2).await;
        let row = sqlx::query(
            "SELECT received_at, content_hash, chain, copies FROM notifications WHERE sequence = 1",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let received_at: i64 = row.try_get("received_at").unwrap();
        let hash: Vec<u8> = row.try_get("content_hash").unwrap();
        let chain: Vec<u8> = row.try_get("chain").unwrap();
        let copies: String = row.try_get("copies").unwrap();
        assert_eq!(copies, "");
        assert_eq!(chain, integrity::chain_link(None, 1, received_at, &hash));
        assert_ne!(
            integrity::row_link(None, 1, received_at, &hash, "cz-eeb:r"),
            chain,
            "a copy changes the link"
        );
    }
}

/// Publishes `event` as `sender` on `case_ref` with id `id`.
async fn publish_event(
    store: &Store,
    sender: &str,
    id: &str,
    case_ref: &str,
    event: pb::EventType,
) -> PublishOutcome {
    store
        .publish(&new_event(sender, id, case_ref, event, "x"))
        .await
        .unwrap_or_else(|e| panic!("{:?}: {id}: {e}", store.backend()))
}

/// What the store holds of the case picture and the log: the case row,
/// its history, the stored rows and the high-water mark.
async fn picture(store: &Store, case_ref: &str) -> Picture {
    (
        store.case(case_ref).await.unwrap(),
        store.case_history(case_ref).await.unwrap(),
        store.count_notifications().await.unwrap(),
        store.latest_sequence().await.unwrap(),
    )
}

fn refused(outcome: PublishOutcome) -> CaseRefusal {
    match outcome {
        PublishOutcome::Refused(refusal) => refusal,
        other => panic!("must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_case_event_writes_nothing_and_changes_no_state() {
    use pb::EventType as E;
    for (store, _guard) in backends().await {
        let backend = store.backend();
        stored(publish_event(&store, "cz-eeb", "t1", "CZ-1", E::CaseTransferred).await);
        let before = picture(&store, "CZ-1").await;
        let filing =
            refused(publish_event(&store, "cz-psb", "f1", "CZ-1", E::JudgmentRecorded).await);
        assert_eq!(
            filing.to_string(),
            "case CZ-1 is TRANSFERRED; JUDGMENT_RECORDED needs PROSECUTED",
            "{backend:?}"
        );
        assert_eq!(picture(&store, "CZ-1").await, before, "{backend:?}");

        // A decision on a case the gateway never saw opens nothing.
        let unknown = refused(publish_event(&store, "cz-psb", "f2", "CZ-9", E::CaseFiled).await);
        assert_eq!(unknown.state, None, "{backend:?}");
        assert_eq!(store.case("CZ-9").await.unwrap(), None, "{backend:?}");
        assert_eq!(picture(&store, "CZ-1").await, before, "{backend:?}");
        // The refused ids stay free: the right event under the same id is
        // stored afterwards.
        stored(publish_event(&store, "cz-psb", "f1", "CZ-1", E::CaseFiled).await);
        assert_eq!(
            store.case("CZ-1").await.unwrap().unwrap().state,
            pb::CaseState::Filed,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn projection_follows_a_case_lifecycle() {
    use pb::CaseState as S;
    use pb::EventType as E;
    for (store, _guard) in backends().await {
        let backend = store.backend();
        let steps = [
            ("cz-eeb", "c1", E::ClueShared, S::Clue),
            ("cz-eeb", "t1", E::CaseTransferred, S::Transferred),
            ("cz-eeb", "p1", E::PenaltyDecided, S::Transferred),
            ("cz-psb", "r1", E::TransferReceived, S::TransferReceived),
            ("cz-psb", "x1", E::DeadlineExtended, S::TransferReceived),
            ("cz-psb", "f1", E::CaseFiled, S::Filed),
            ("cz-psb", "a1", E::ArrestRequested, S::ArrestRequested),
            (
                "cz-procuratorate",
                "a2",
                E::ArrestApproved,
                S::ArrestApproved,
            ),
            ("cz-procuratorate", "pr", E::ProsecutionFiled, S::Prosecuted),
            ("cz-procuratorate", "j1", E::JudgmentRecorded, S::Judged),
        ];
        let mut receipts = Vec::new();
        for (sender, id, event, state) in steps {
            let receipt = stored(publish_event(&store, sender, id, "CZ-7", event).await);
            let case = store.case("CZ-7").await.unwrap().expect("the case exists");
            assert_eq!(case.state, state, "{backend:?}: after {id}");
            assert_eq!(case.last_sequence, receipt.sequence, "{backend:?}");
            receipts.push(receipt);
        }
        // A notice on the case's reference is no case event.
        let notice = stored(publish_event(&store, "cz-eeb", "m1", "CZ-7", E::MeetingNotice).await);
        let case = store.case("CZ-7").await.unwrap().unwrap();
        assert_eq!(case.last_sequence, receipts[9].sequence, "{backend:?}");
        assert!(notice.sequence > case.last_sequence);
        assert_eq!(case.region, "140423");
        assert_eq!(case.agencies, ["cz-eeb", "cz-procuratorate", "cz-psb"]);
        assert_eq!(case.opened_at, receipts[0].received_at);
        assert_eq!(case.state_since, receipts[9].received_at);
        assert_eq!(case.transferor.as_deref(), Some("cz-eeb"));
        assert_eq!(case.police.as_deref(), Some("cz-psb"));
        assert_eq!(case.penalized_at, Some(receipts[2].received_at));

        let history = store.case_history("CZ-7").await.unwrap();
        let moves: Vec<(Option<S>, S)> = history.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            moves,
            [
                (None, S::Clue),
                (Some(S::Clue), S::Transferred),
                (Some(S::Transferred), S::Transferred),
                (Some(S::Transferred), S::TransferReceived),
                (Some(S::TransferReceived), S::TransferReceived),
                (Some(S::TransferReceived), S::Filed),
                (Some(S::Filed), S::ArrestRequested),
                (Some(S::ArrestRequested), S::ArrestApproved),
                (Some(S::ArrestApproved), S::Prosecuted),
                (Some(S::Prosecuted), S::Judged),
            ],
            "{backend:?}"
        );
        let sequences: Vec<u64> = history.iter().map(|t| t.sequence).collect();
        let expected: Vec<u64> = receipts.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, expected);
        assert_eq!(history[3].at, receipts[3].received_at);
        assert_eq!(history[3].event.to_wire(), E::TransferReceived);

        // Closed: a second judgment is refused, naming the state.
        let second = refused(
            publish_event(
                &store,
                "cz-procuratorate",
                "j2",
                "CZ-7",
                E::JudgmentRecorded,
            )
            .await,
        );
        assert_eq!(
            second.to_string(),
            "case CZ-7 is JUDGED, which is closed; JUDGMENT_RECORDED needs PROSECUTED"
        );
        // Notices on a reference that is no case make no case.
        stored(publish_event(&store, "cz-eeb", "m2", "MEET-1", E::MeetingNotice).await);
        assert_eq!(store.case("MEET-1").await.unwrap(), None, "{backend:?}");
        assert!(store.case_history("MEET-1").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn duplicate_after_the_case_moved_on_still_answers_its_receipt() {
    use pb::EventType as E;
    for (store, _guard) in backends().await {
        let backend = store.backend();
        let transfer =
            stored(publish_event(&store, "cz-eeb", "t1", "CZ-3", E::CaseTransferred).await);
        stored(publish_event(&store, "cz-psb", "r1", "CZ-3", E::TransferReceived).await);
        // The case no longer accepts a transfer, but this is the same one.
        let again = publish_event(&store, "cz-eeb", "t1", "CZ-3", E::CaseTransferred).await;
        assert_eq!(again, PublishOutcome::Duplicate(transfer), "{backend:?}");
        // The same id for other content stays a conflict, not a case refusal.
        let changed = store
            .publish(&new_event(
                "cz-eeb",
                "t1",
                "CZ-3",
                E::CaseTransferred,
                "other",
            ))
            .await
            .unwrap();
        assert_eq!(changed, PublishOutcome::Conflict, "{backend:?}");
        let case = store.case("CZ-3").await.unwrap().unwrap();
        assert_eq!(case.state, pb::CaseState::TransferReceived, "{backend:?}");
        assert_eq!(store.case_history("CZ-3").await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn refused_event_after_a_failed_write_leaves_nothing() {
    use pb::EventType as E;
    for (store, _guard) in backends().await {
        let backend = store.backend();
        fail_commits_of_case(&store).await;
        let failed = store
            .publish(&new_event(
                "cz-eeb",
                "t1",
                "FAIL-AT-COMMIT",
                E::CaseTransferred,
                "x",
            ))
            .await;
        assert!(
            matches!(failed, Err(StoreError::Database(_))),
            "{backend:?}: {failed:?}"
        );
        // The failed transfer made no case: a filing decision finds none,
        // is refused, and writes nothing either.
        let filing =
            refused(publish_event(&store, "cz-psb", "f1", "FAIL-AT-COMMIT", E::CaseFiled).await);
        assert_eq!(filing.state, None, "{backend:?}");
        assert_eq!(
            picture(&store, "FAIL-AT-COMMIT").await,
            picture_of_nothing(),
            "{backend:?}"
        );
        assert!(
            store.is_healthy(),
            "{backend:?}: a refusal is a committed write"
        );
    }
}

/// A case row, its history, the number of stored rows, the high-water mark.
type Picture = (Option<CaseRecord>, Vec<cases::Transition>, u64, u64);

/// [`picture`] of an empty store.
fn picture_of_nothing() -> Picture {
    (None, Vec::new(), 0, 0)
}
