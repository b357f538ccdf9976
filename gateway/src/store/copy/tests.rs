//! `migrate-store` against real databases: SQLite files and PostgreSQL
//! schemas (skipped without PostgreSQL, unless it is required). Each
//! refusal is checked to change nothing; each failure half-way is induced
//! for real (a trigger on the target refusing a row, a writer on the
//! source during the copy).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::agency_state::Actor;
use crate::store::tests::{apply_future_migration, new_notification, postgres_schema_url};
use crate::store::verify::NoProgress;
use crate::store::{PublishOutcome, Store};
use crate::supervision::GatewayKey;

use super::*;

fn options(from: &str, to: &str) -> CopyOptions {
    CopyOptions {
        from: from.to_owned(),
        to: to.to_owned(),
        public_key: None,
        allow_integrity_failures: false,
        lock_timeout: Duration::from_secs(10),
    }
}

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

/// A store with a row in every table the gateway fills: notifications,
/// a subscription with a cursor, audit rows, a checkpoint, a fence, a
/// disabled agency, a case (the transfer's), a deadline.
async fn populated(url: &str, key: &Arc<GatewayKey>) -> Store {
    let store = Store::connect(url, 2).await.unwrap();
    for i in 0..5 {
        let outcome = store
            .publish(&new_notification("cz-eeb", &format!("n{i}"), "C-1", "clue"))
            .await
            .unwrap();
        assert!(matches!(outcome, PublishOutcome::Stored(_)));
    }
    store
        .open_subscription("cz-psb", "main", b"filter", 0)
        .await
        .unwrap();
    store
        .advance_subscription("cz-psb", "main", 3, None)
        .await
        .unwrap();
    store.audit_checkpoint(key.clone()).await.unwrap().unwrap();
    store.fence_sequences(9, "restored").await.unwrap();
    store
        .disable_agency(
            "cz-eeb-luzhou",
            Actor {
                operator: "cz-ops",
                reason: "key lost",
                peer: None,
            },
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO deadlines (rule, case_ref, started_sequence, started_at, due_at, \
         late_agency, supervisor) VALUES ('filing', 'C-1', 1, 1, 2, 'cz-psb', 'cz-procuratorate')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
}

/// The target databases to copy into: a SQLite file, and a PostgreSQL
/// schema when one is available.
async fn targets(dir: &tempfile::TempDir) -> Vec<String> {
    let mut targets = vec![sqlite_url(dir, "target.db")];
    targets.extend(postgres_schema_url().await);
    targets
}

async fn count(url: &str, table: &str) -> i64 {
    let store = Store::connect(url, 1).await.unwrap();
    let n = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    n
}

#[tokio::test]
async fn every_table_of_the_schema_is_copied_or_named_as_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    for url in targets(&dir).await {
        let store = Store::connect(&url, 1).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let found = tables(&mut conn, store.backend()).await.unwrap();
        drop(conn);
        for table in &found {
            assert!(
                copied_tables().contains(&table.as_str())
                    || NOT_COPIED.iter().any(|(name, _)| name == table),
                "{url}: table {table} is neither copied nor named as not copied"
            );
        }
        for table in copied_tables() {
            assert!(found.iter().any(|t| t == table), "{url}: no table {table}");
        }
        store.close().await;
    }
}

#[tokio::test]
async fn copy_between_backends_keeps_every_row_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(GatewayKey::generate());
    let source = sqlite_url(&dir, "source.db");
    let store = populated(&source, &key).await;
    store.close().await;
    let middle = postgres_schema_url()
        .await
        .unwrap_or_else(|| sqlite_url(&dir, "middle.db"));
    let back = sqlite_url(&dir, "back.db");

    let mut first_options = options(&source, &middle);
    first_options.public_key = Some(key.public_key());
    let first = copy_store(&first_options, &NoCopyProgress).await.unwrap();
    let second = copy_store(&options(&middle, &back), &NoCopyProgress)
        .await
        .unwrap();
    assert_eq!(first.tables, second.tables, "the same rows both ways");
    let rows = |summary: &CopySummary, table: &str| {
        summary
            .tables
            .iter()
            .find(|t| t.table == table)
            .unwrap()
            .rows
    };
    assert_eq!(rows(&first, "notifications"), 5);
    assert_eq!(rows(&first, "sequence_fences"), 1);
    assert_eq!(rows(&first, "audit_checkpoints"), 1);
    assert_eq!(rows(&first, "agency_state"), 1);
    assert_eq!(rows(&first, "deadlines"), 1);
    assert_eq!(first.high_water, Some(9));
    assert!(!first.integrity_failures_copied);

    for url in [&middle, &back] {
        let copy = Store::connect(url, 2).await.unwrap();
        assert_eq!(copy.unfinished_copy_refusal().await.unwrap(), None);
        let report = copy.verify(&NoProgress).await.unwrap();
        assert!(report.is_clean(), "{url}: {report:?}");
        assert_eq!(report.fenced.len(), 1);
        let walk = copy
            .verify_audit(
                &AuditVerifyOptions {
                    public_key: Some(key.public_key()),
                    ..AuditVerifyOptions::default()
                },
                &NoProgress,
            )
            .await
            .unwrap();
        assert!(walk.is_clean(), "{url}: {walk:?}");
        assert_eq!(walk.checkpoints[0].signature_valid, Some(true));
        assert_eq!(
            copy.subscription_cursor("cz-psb", "main").await.unwrap(),
            Some(3)
        );
        // New rows never reuse a copied id or sequence.
        let PublishOutcome::Stored(receipt) = copy
            .publish(&new_notification("cz-eeb", "next", "C-1", "next"))
            .await
            .unwrap()
        else {
            panic!("{url}: the next publish is stored");
        };
        assert_eq!(receipt.sequence, 10, "{url}");
        sqlx::query(
            "INSERT INTO deadlines (rule, case_ref, started_sequence, started_at, due_at, \
             late_agency, supervisor) VALUES ('filing', 'C-1', 10, 1, 2, 'cz-psb', 'x')",
        )
        .execute(copy.pool())
        .await
        .unwrap_or_else(|error| panic!("{url}: a new deadline gets a new id: {error}"));
        copy.audit_checkpoint(key.clone()).await.unwrap().unwrap();
        assert!(
            copy.verify_audit(&AuditVerifyOptions::default(), &NoProgress)
                .await
                .unwrap()
                .is_clean()
        );
        copy.close().await;
    }
}

#[tokio::test]
async fn copy_refuses_what_it_cannot_do_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(GatewayKey::generate());
    let source = sqlite_url(&dir, "source.db");
    populated(&source, &key).await.close().await;

    // No source: nothing is created.
    let missing = sqlite_url(&dir, "missing.db");
    let error = copy_store(
        &options(&missing, &sqlite_url(&dir, "t1.db")),
        &NoCopyProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, CopyError::SourceMissing(_)), "{error}");
    assert!(!dir.path().join("missing.db").exists());
    assert!(!dir.path().join("t1.db").exists());

    // The same store, however spelled.
    let spelled = format!("sqlite://{}/./source.db?mode=rwc", dir.path().display());
    let error = copy_store(&options(&source, &spelled), &NoCopyProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CopyError::Usage(m) if m.contains("the same store")),
        "{error}"
    );

    // A file that is not a store.
    let other = dir.path().join("other.db");
    {
        let store = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
            .await
            .unwrap();
        let mut store = store;
        sqlx::query("CREATE TABLE things (id INTEGER PRIMARY KEY)")
            .execute(&mut store)
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    let error = copy_store(
        &options(
            &format!("sqlite://{}", other.display()),
            &sqlite_url(&dir, "t2.db"),
        ),
        &NoCopyProgress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, CopyError::Schema(m) if m.contains("is not a Liandong store")),
        "{error}"
    );

    for target in targets(&dir).await {
        // A target that holds data.
        populated(&target, &key).await.close().await;
        let error = copy_store(&options(&source, &target), &NoCopyProgress)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, CopyError::TargetNotEmpty(m) if m.contains("notifications: 5 row(s)")),
            "{target}: {error}"
        );
        assert_eq!(count(&target, "store_copies").await, 0);
        assert_eq!(error.exit_code(), 64);
    }

    // A source whose schema is ahead of this binary.
    let ahead = sqlite_url(&dir, "ahead.db");
    let store = populated(&ahead, &key).await;
    apply_future_migration(&store, 9999).await;
    store.close().await;
    let target = sqlite_url(&dir, "t3.db");
    let error = copy_store(&options(&ahead, &target), &NoCopyProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CopyError::Schema(m) if m.contains("newer than this binary") && m.contains("9999 (from the future)")),
        "{error}"
    );
    assert_eq!(error.exit_code(), 65);
    assert!(
        !dir.path().join("t3.db").exists(),
        "a refused source leaves no target"
    );
}

#[tokio::test]
async fn copy_refused_by_the_target_half_way_leaves_a_store_the_gateway_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(GatewayKey::generate());
    let source = sqlite_url(&dir, "source.db");
    populated(&source, &key).await.close().await;
    for target in targets(&dir).await {
        // The target's schema, with a trigger refusing the fourth
        // notification.
        let store = Store::connect(&target, 1).await.unwrap();
        let refuse = match store.backend() {
            Backend::Sqlite => vec![
                "CREATE TRIGGER refuse_four BEFORE INSERT ON notifications \
                 WHEN NEW.sequence = 4 BEGIN SELECT RAISE(ABORT, 'row four refused'); END",
            ],
            Backend::Postgres => vec![
                "CREATE FUNCTION refuse_four() RETURNS trigger AS $$ BEGIN \
                 IF NEW.sequence = 4 THEN RAISE EXCEPTION 'row four refused'; END IF; \
                 RETURN NEW; END; $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_four BEFORE INSERT ON notifications \
                 FOR EACH ROW EXECUTE FUNCTION refuse_four()",
            ],
        };
        for statement in &refuse {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        store.close().await;

        let error = copy_store(&options(&source, &target), &NoCopyProgress)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the target refused a row of notifications"),
            "{target}: {error}"
        );
        let store = Store::connect(&target, 1).await.unwrap();
        let refusal = store.unfinished_copy_refusal().await.unwrap();
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("never finished") && r.contains("source.db")),
            "{target}: {refusal:?}"
        );
        for table in copied_tables() {
            if !["store_state", "audit_state"].contains(&table) {
                assert_eq!(count(&target, table).await, 0, "{target}: {table}");
            }
        }
        let drop = match store.backend() {
            Backend::Sqlite => "DROP TRIGGER refuse_four",
            Backend::Postgres => "DROP TRIGGER refuse_four ON notifications",
        };
        sqlx::query(drop).execute(store.pool()).await.unwrap();
        store.close().await;

        // Run again into the same database: now it completes.
        copy_store(&options(&source, &target), &NoCopyProgress)
            .await
            .unwrap();
        let store = Store::connect(&target, 1).await.unwrap();
        assert_eq!(store.unfinished_copy_refusal().await.unwrap(), None);
        assert_eq!(count(&target, "store_copies").await, 1);
        store.close().await;
    }
}

/// Publishes on the source store once, when the copy reaches the step
/// `at`, and waits until it is stored: a gateway still serving it.
struct WriterDuringCopy {
    store: Store,
    at: &'static str,
    id: String,
    done: AtomicBool,
}

impl CopyProgress for WriterDuringCopy {
    fn step(&self, what: &str, _rows: u64) {
        if what == self.at && !self.done.swap(true, Ordering::SeqCst) {
            let (store, id) = (self.store.clone(), self.id.clone());
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async move {
                    let outcome = store
                        .publish(&new_notification("cz-eeb", &id, "C-1", "late"))
                        .await
                        .unwrap();
                    assert!(matches!(outcome, PublishOutcome::Stored(_)));
                })
            });
        }
    }

    fn advance(&self, _rows: u64) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_of_a_source_written_meanwhile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(GatewayKey::generate());
    let source = sqlite_url(&dir, "source.db");
    let store = populated(&source, &key).await;
    for (round, target) in targets(&dir).await.into_iter().enumerate() {
        let writer = WriterDuringCopy {
            store: store.clone(),
            at: "copying audit_log",
            id: format!("late-{round}"),
            done: AtomicBool::new(false),
        };
        let before = store.latest_sequence().await.unwrap();
        let error = copy_store(&options(&source, &target), &writer)
            .await
            .unwrap_err();
        let moved = format!("high-water mark {before} -> {}", before + 1);
        assert!(
            matches!(&error, CopyError::SourceChanged(m) if m.contains(&moved)),
            "{target}: {error}"
        );
        assert_eq!(error.exit_code(), 75);
        assert_eq!(count(&target, "notifications").await, 0, "{target}");
        // Once the source stands still, the copy goes through.
        copy_store(&options(&source, &target), &NoCopyProgress)
            .await
            .unwrap();
        assert_eq!(
            count(&target, "notifications").await,
            store.count_notifications().await.unwrap() as i64
        );
    }
    store.close().await;
}

#[test]
fn passwords_never_leave_a_database_url() {
    assert_eq!(
        redact_url("postgres://liandong:s3cret@db.example:5432/liandong?sslmode=require"),
        "postgres://liandong@db.example:5432/liandong?sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://db/liandong?user=x&password=s3cret"),
        "postgres://db/liandong?user=x"
    );
    assert_eq!(
        redact_url("sqlite:///var/lib/liandong/liandong.db"),
        "sqlite:///var/lib/liandong/liandong.db"
    );
}
