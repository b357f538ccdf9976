use crate::testing;

use super::*;

fn row(id: &str, hash: &str) -> NewRow {
    NewRow {
        notification_id: id.into(),
        source_key: None,
        source: "http",
        content_hash: hash.into(),
        payload: id.as_bytes().to_vec(),
    }
}

fn receipt(local_id: i64, sequence: u64) -> SentReceipt {
    SentReceipt {
        local_id,
        sequence,
        received_at: 1,
        duplicate: false,
    }
}

#[tokio::test]
async fn every_connection_uses_wal_and_full_sync() {
    let (_dir, store) = testing::store().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "synchronous must be FULL (2)");
}

#[tokio::test]
async fn accept_is_idempotent_refuses_reused_ids_and_respects_the_bound() {
    let (_dir, store) = testing::store().await;
    assert_eq!(
        store.accept(row("a", "h1"), 2).await.unwrap(),
        AcceptOutcome::Accepted { local_id: 1 }
    );
    assert_eq!(
        store.accept(row("a", "h1"), 2).await.unwrap(),
        AcceptOutcome::Duplicate {
            local_id: 1,
            notification_id: "a".into(),
            state: RowState::Pending
        }
    );
    assert_eq!(
        store.accept(row("a", "other"), 2).await.unwrap(),
        AcceptOutcome::Conflict { local_id: 1 }
    );
    assert_eq!(
        store.accept(row("b", "h2"), 2).await.unwrap(),
        AcceptOutcome::Accepted { local_id: 2 }
    );
    assert_eq!(
        store.accept(row("c", "h3"), 2).await.unwrap(),
        AcceptOutcome::Full { pending: 2 }
    );
    // A duplicate is still recognised when the outbox is full.
    assert!(matches!(
        store.accept(row("b", "h2"), 2).await.unwrap(),
        AcceptOutcome::Duplicate { local_id: 2, .. }
    ));
    // Sent rows free room, and stay known for idempotency.
    store.mark_sent(&[receipt(1, 41)]).await.unwrap();
    assert_eq!(
        store.accept(row("a", "h1"), 2).await.unwrap(),
        AcceptOutcome::Duplicate {
            local_id: 1,
            notification_id: "a".into(),
            state: RowState::Sent
        }
    );
    assert_eq!(
        store.accept(row("c", "h3"), 2).await.unwrap(),
        AcceptOutcome::Accepted { local_id: 3 }
    );
    assert_eq!(store.receipt_of(1).await.unwrap(), Some((41, 1)));
    assert_eq!(
        store.state_of("c").await.unwrap(),
        Some((3, RowState::Pending))
    );
    assert_eq!(store.state_of("zzz").await.unwrap(), None);
}

#[tokio::test]
async fn a_file_accepted_before_is_recognised_by_its_source_key() {
    let (_dir, store) = testing::store().await;
    let mut first = row("assigned-1", "h");
    first.source_key = Some("folder:n.json:abc".into());
    store.accept(first, 10).await.unwrap();
    // Read again after a crash, a new id would have been assigned.
    let mut again = row("assigned-2", "h");
    again.source_key = Some("folder:n.json:abc".into());
    assert_eq!(
        store.accept(again, 10).await.unwrap(),
        AcceptOutcome::Duplicate {
            local_id: 1,
            notification_id: "assigned-1".into(),
            state: RowState::Pending
        }
    );
    assert_eq!(store.snapshot().await.unwrap().outbox_depth, 1);
}

#[tokio::test]
async fn rows_leave_the_outbox_only_on_receipt_or_as_dead_letters_in_order() {
    let (_dir, store) = testing::store().await;
    for id in ["a", "b", "c", "d"] {
        store.accept(row(id, id), 10).await.unwrap();
    }
    let pending = store.pending_after(0, 10).await.unwrap();
    let ids: Vec<_> = pending.iter().map(|r| r.notification_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(pending[1].payload, b"b");
    assert_eq!(store.pending_after(2, 1).await.unwrap()[0].local_id, 3);

    store
        .mark_sent(&[receipt(1, 7), receipt(2, 8)])
        .await
        .unwrap();
    store
        .dead_letter_row(
            3,
            "INVALID_ARGUMENT",
            "notification.recipients[0]: x is not a registered agency",
        )
        .await
        .unwrap();
    let left: Vec<_> = store
        .pending_after(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.notification_id)
        .collect();
    assert_eq!(left, ["d"]);

    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.outbox_depth, 1);
    assert_eq!(snapshot.sent, 2);
    assert_eq!(snapshot.dead_letter_count, 1);
    assert!(snapshot.last_success_at.is_some());
    let dead = &snapshot.dead_letters[0];
    assert_eq!((dead.local_id, dead.notification_id.as_str()), (3, "c"));
    assert_eq!(dead.code, "INVALID_ARGUMENT");
    assert!(dead.reason.starts_with("notification.recipients[0]"));
    assert_eq!(store.unreported_dead_letters(10).await.unwrap().len(), 1);
    store.mark_reported(3).await.unwrap();
    assert!(store.unreported_dead_letters(10).await.unwrap().is_empty());
    assert_eq!(
        store.state_of("c").await.unwrap(),
        Some((3, RowState::DeadLetter))
    );
}

#[tokio::test]
async fn the_state_survives_a_reopen() {
    let (dir, store) = testing::store().await;
    store.accept(row("a", "h"), 10).await.unwrap();
    store.close().await;
    let path = dir.path().join("state").join("adapter.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.pending_after(0, 10).await.unwrap().len(), 1);
    // Ids keep growing after the last row left.
    store.mark_sent(&[receipt(1, 1)]).await.unwrap();
    assert_eq!(
        store.accept(row("b", "h"), 10).await.unwrap(),
        AcceptOutcome::Accepted { local_id: 2 }
    );
    let missing = dir.path().join("absent.db");
    assert!(matches!(
        Store::open_existing(&missing).await,
        Err(StoreError::Missing { .. })
    ));
}

#[tokio::test]
async fn handed_deliveries_are_recognised_by_sequence_or_by_id() {
    let (_dir, store) = testing::store().await;
    store.ensure_subscription("inbox").await.unwrap();
    store.ensure_subscription("inbox").await.unwrap();
    assert!(!store.is_handled("inbox", 5, "cz-eeb", "n-5").await.unwrap());
    store
        .record_handled("inbox", 5, "cz-eeb", "n-5")
        .await
        .unwrap();
    assert!(store.is_handled("inbox", 5, "cz-eeb", "n-5").await.unwrap());
    assert!(store.is_handled("inbox", 5, "x", "y").await.unwrap());
    assert!(store.is_handled("inbox", 9, "cz-eeb", "n-5").await.unwrap());
    assert!(!store.is_handled("inbox", 9, "cz-psb", "n-5").await.unwrap());
    assert!(!store.is_handled("other", 5, "cz-eeb", "n-5").await.unwrap());

    store
        .record_subscription_error("inbox", "webhook answered 500")
        .await
        .unwrap();
    let first = store.snapshot().await.unwrap().subscriptions[0].failing_since;
    store
        .record_subscription_error("inbox", "webhook answered 503")
        .await
        .unwrap();
    store.record_acked("inbox", 5).await.unwrap();
    store.record_acked("inbox", 3).await.unwrap();
    let state = &store.snapshot().await.unwrap().subscriptions[0];
    assert_eq!(state.failing_since, first, "the failure keeps its start");
    assert_eq!(state.last_error.as_deref(), Some("webhook answered 503"));
    assert_eq!(state.last_acked_sequence, Some(5), "never goes back");
    store
        .record_handled("inbox", 6, "cz-eeb", "n-6")
        .await
        .unwrap();
    assert_eq!(
        store.snapshot().await.unwrap().subscriptions[0].failing_since,
        None
    );
}

#[tokio::test]
async fn a_live_daemon_holds_the_lock() {
    let (_dir, store) = testing::store().await;
    let me = std::process::id();
    let lock = store.claim_daemon(me).await.unwrap();
    // A second claim is refused while the lock is held, whatever the
    // lease row says: a stopped or stale row does not free it.
    sqlx::query("UPDATE daemon SET stopped_at = 1, heartbeat_at = 0")
        .execute(&store.pool)
        .await
        .unwrap();
    let err = store.claim_daemon(me).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyRunning { pid, .. } if pid == i64::from(me)),
        "{err:?}"
    );
    // Released, it is free at once, whatever the lease row says (a row of
    // a process that was killed and never stopped cleanly).
    drop(lock);
    sqlx::query("UPDATE daemon SET pid = 1, stopped_at = NULL")
        .execute(&store.pool)
        .await
        .unwrap();
    let _lock = store.claim_daemon(me).await.unwrap();
    let lease = store.snapshot().await.unwrap().daemon.unwrap();
    assert_eq!((lease.pid, lease.stopped_at), (i64::from(me), None));
}
