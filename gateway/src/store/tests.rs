//! Contract tests: one body per behaviour, run on SQLite and on PostgreSQL.
//!
//! PostgreSQL runs at `LIANDONG_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its
//! own. When it cannot be reached the PostgreSQL half is skipped with a
//! message, unless `LIANDONG_REQUIRE_POSTGRES=1` (as in CI), where that fails.

use std::sync::Arc;

use sqlx::Connection;

use super::*;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty store per backend; the guard keeps SQLite's directory.
async fn backends() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("store.db").display());
    let mut stores = vec![(Store::connect(&sqlite_url, 4).await.unwrap(), Some(dir))];
    if let Some(url) = postgres_schema_url().await {
        stores.push((Store::connect(&url, 4).await.unwrap(), None));
    }
    stores
}

/// A URL whose search_path is a new, empty schema, or None when PostgreSQL
/// is not reachable and not required.
async fn postgres_schema_url() -> Option<String> {
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

fn new_notification(sender: &str, id: &str, case_ref: &str, content: &str) -> NewNotification {
    let payload = content.as_bytes().to_vec();
    NewNotification {
        sender: sender.into(),
        notification_id: id.into(),
        case_ref: case_ref.into(),
        event: 3,
        confidentiality: 3,
        region: "140423".into(),
        recipients: vec!["cz-psb".into(), "cz-procuratorate".into()],
        content_hash: sha2::Sha256::digest(&payload).to_vec(),
        payload,
    }
}

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
        assert_eq!(rows[0].recipients, vec!["cz-psb", "cz-procuratorate"]);
        assert_eq!(rows[1].payload, b"two");
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
            store.read_after(0, 10).await.unwrap().rows[0].payload,
            b"original"
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
            .advance_subscription("cz-psb", "inbox", 9)
            .await
            .unwrap();
        store
            .advance_subscription("cz-psb", "inbox", 7)
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
