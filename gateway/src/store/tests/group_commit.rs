//! Group commit: writes waiting together share one transaction and one
//! commit, and each caller is answered for what happened to its own write
//! or, when the transaction failed, to all of them. Every failure here is
//! induced, on both backends.

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

type Pending<T> = JoinHandle<Result<T, StoreError>>;

/// Holds the writer inside a transaction until `release` fires: the
/// writes queued meanwhile join that transaction.
async fn hold_writer(store: &Store) -> (oneshot::Sender<()>, Pending<()>) {
    let (release, released) = oneshot::channel::<()>();
    let (entered, inside) = oneshot::channel::<()>();
    let writer = store.clone();
    let held = tokio::spawn(async move {
        writer
            .write("hold", move |_conn| {
                Box::pin(async move {
                    let _ = entered.send(());
                    let _ = released.await;
                    Ok(())
                })
            })
            .await
    });
    inside.await.expect("the held write started");
    (release, held)
}

/// Waits until `count` writes are queued behind the held one.
async fn until_waiting(store: &Store, count: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.writes_waiting() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the writes were queued");
}

fn spawn_publish(store: &Store, new: NewNotification) -> Pending<PublishOutcome> {
    let store = store.clone();
    tokio::spawn(async move { store.publish(&new).await })
}

/// A write that stores a notification and then fails: its row must not
/// survive.
fn spawn_failing_insert(store: &Store, new: NewNotification) -> Pending<()> {
    let store = store.clone();
    let backend = store.backend();
    tokio::spawn(async move {
        store
            .write("failing_insert", move |conn| {
                Box::pin(async move {
                    lock_publish(conn, backend).await?;
                    insert_in(conn, &new).await?;
                    Err(StoreError::Corrupt(
                        "induced failure after the insert".into(),
                    ))
                })
            })
            .await
    })
}

/// A write that ends the whole transaction, as SQLite does by itself on a
/// full disk or an I/O error, and then fails.
fn spawn_transaction_breaker(store: &Store) -> Pending<()> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .write("breaker", move |conn| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, "ROLLBACK").await?;
                    Err(StoreError::Corrupt(
                        "induced failure that ended the transaction".into(),
                    ))
                })
            })
            .await
    })
}

async fn ids(store: &Store) -> Vec<String> {
    let rows = store.read_after(0, 1000).await.unwrap().rows;
    rows.iter().map(|r| r.envelope.id.to_string()).collect()
}

fn published_ids(entries: &[AuditEntry]) -> Vec<&str> {
    entries
        .iter()
        .filter(|e| e.action == "PUBLISHED")
        .map(|e| e.notification_id.as_str())
        .collect()
}

#[tokio::test]
async fn writes_waiting_together_share_one_commit_with_gap_free_sequences() {
    for (store, _guard) in backends().await {
        let backend = store.backend();
        let first = stored(
            store
                .publish(&new_notification("cz-eeb", "n0", "C-1", "alone"))
                .await
                .unwrap(),
        );
        let (release, held) = hold_writer(&store).await;
        let publishes: Vec<_> = (1..=50)
            .map(|i| {
                spawn_publish(
                    &store,
                    new_notification("cz-eeb", &format!("n{i}"), "C-1", "x"),
                )
            })
            .collect();
        until_waiting(&store, 50).await;
        let (commits, writes) = store.write_counts();
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        let mut sequences = Vec::new();
        for publish in publishes {
            sequences.push(stored(publish.await.unwrap().unwrap()).sequence);
        }
        sequences.sort_unstable();
        let expected: Vec<u64> = (first.sequence + 1..=first.sequence + 50).collect();
        assert_eq!(sequences, expected, "{backend:?}: gap-free, distinct");
        let (commits_after, writes_after) = store.write_counts();
        assert_eq!(
            commits_after - commits,
            1,
            "{backend:?}: one commit for all"
        );
        assert_eq!(writes_after - writes, 51, "{backend:?}");
        // Served in order, each with its own audit row, chain intact.
        let served = ids(&store).await;
        assert_eq!(served.len(), 51, "{backend:?}");
        let entries = store.audit_entries().await.unwrap();
        assert_eq!(published_ids(&entries).len(), 51, "{backend:?}");
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
        let audit = store
            .verify_audit(&audit::AuditVerifyOptions::default(), &verify::NoProgress)
            .await
            .unwrap();
        assert!(audit.is_clean(), "{backend:?}: {audit:?}");
    }
}

#[tokio::test]
async fn a_write_that_fails_in_a_shared_transaction_fails_alone() {
    for (store, _guard) in backends().await {
        let backend = store.backend();
        let (release, held) = hold_writer(&store).await;
        let before = spawn_publish(&store, new_notification("cz-eeb", "a", "C-1", "x"));
        until_waiting(&store, 1).await;
        let failing = spawn_failing_insert(&store, new_notification("cz-eeb", "lost", "C-1", "x"));
        until_waiting(&store, 2).await;
        let after = spawn_publish(&store, new_notification("cz-eeb", "b", "C-1", "x"));
        until_waiting(&store, 3).await;
        let (commits, _) = store.write_counts();
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        let a = stored(before.await.unwrap().unwrap());
        let failed = failing.await.unwrap();
        assert!(
            matches!(failed, Err(StoreError::Corrupt(_))),
            "{backend:?}: the failing write gets its own error, got {failed:?}"
        );
        let b = stored(after.await.unwrap().unwrap());
        // The failed write's sequence was rolled back with it: no gap.
        assert_eq!(b.sequence, a.sequence + 1, "{backend:?}");
        assert_eq!(store.write_counts().0 - commits, 1, "{backend:?}");
        assert_eq!(ids(&store).await, ["a", "b"], "{backend:?}");
        assert_eq!(
            published_ids(&store.audit_entries().await.unwrap()),
            ["a", "b"],
            "{backend:?}"
        );
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
    }
}

#[tokio::test]
async fn a_failed_commit_answers_every_write_in_it_and_stores_none() {
    for (store, guard) in backends().await {
        let backend = store.backend();
        let first = stored(
            store
                .publish(&new_notification("cz-eeb", "n1", "C-1", "before"))
                .await
                .unwrap(),
        );
        fail_commits_of_case(&store).await;
        let (release, held) = hold_writer(&store).await;
        let a = spawn_publish(&store, new_notification("cz-eeb", "a", "C-1", "x"));
        until_waiting(&store, 1).await;
        let doomed = spawn_publish(
            &store,
            new_notification("cz-eeb", "doomed", "FAIL-AT-COMMIT", "x"),
        );
        until_waiting(&store, 2).await;
        let b = spawn_publish(&store, new_notification("cz-eeb", "b", "C-1", "x"));
        until_waiting(&store, 3).await;
        release.send(()).unwrap();
        // Every write of the transaction is told it failed: no receipt.
        assert!(held.await.unwrap().is_err(), "{backend:?}");
        for (name, publish) in [("a", a), ("doomed", doomed), ("b", b)] {
            let outcome = publish.await.unwrap();
            assert!(
                matches!(outcome, Err(StoreError::Shared(_))),
                "{backend:?}: {name} must fail with the transaction, got {outcome:?}"
            );
        }
        assert!(!store.is_healthy(), "{backend:?}");
        // The writer works again and the failed sequences are reused,
        // since none was ever visible.
        let next = stored(
            store
                .publish(&new_notification("cz-eeb", "a", "C-1", "x"))
                .await
                .unwrap(),
        );
        assert_eq!(next.sequence, first.sequence + 1, "{backend:?}");
        assert!(store.is_healthy(), "{backend:?}");
        let store = match guard.as_ref() {
            // What a fresh process sees.
            Some(dir) => {
                store.close().await;
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                Store::connect(&url, 2).await.unwrap()
            }
            None => store,
        };
        assert_eq!(ids(&store).await, ["n1", "a"], "{backend:?}");
        assert_eq!(
            published_ids(&store.audit_entries().await.unwrap()),
            ["n1", "a"],
            "{backend:?}"
        );
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
    }
}

#[tokio::test]
async fn a_write_that_ends_the_transaction_fails_every_write_before_it() {
    for (store, _guard) in backends().await {
        let backend = store.backend();
        let (release, held) = hold_writer(&store).await;
        let a = spawn_publish(&store, new_notification("cz-eeb", "a", "C-1", "x"));
        until_waiting(&store, 1).await;
        let breaker = spawn_transaction_breaker(&store);
        until_waiting(&store, 2).await;
        let b = spawn_publish(&store, new_notification("cz-eeb", "b", "C-1", "x"));
        until_waiting(&store, 3).await;
        release.send(()).unwrap();
        assert!(held.await.unwrap().is_err(), "{backend:?}");
        let a = a.await.unwrap();
        assert!(
            matches!(a, Err(StoreError::Shared(_))),
            "{backend:?}: a write before the break fails with it, got {a:?}"
        );
        assert!(breaker.await.unwrap().is_err(), "{backend:?}");
        // The write after the break was not taken into the broken
        // transaction: it gets the next one, and the first sequence.
        let b = stored(b.await.unwrap().unwrap());
        assert_eq!(b.sequence, 1, "{backend:?}");
        assert_eq!(ids(&store).await, ["b"], "{backend:?}");
        assert_eq!(
            published_ids(&store.audit_entries().await.unwrap()),
            ["b"],
            "{backend:?}"
        );
        assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
    }
}

#[tokio::test]
async fn sqlite_full_disk_in_a_shared_transaction_gives_receipts_only_for_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    stored(
        store
            .publish(&new_notification("cz-eeb", "n0", "C-1", "fits"))
            .await
            .unwrap(),
    );
    forbid_growth(&store).await;
    let big = "x".repeat(64 * 1024);
    let (release, held) = hold_writer(&store).await;
    let mut publishes = Vec::new();
    for i in 0..6 {
        let content = if i % 2 == 0 { "small" } else { big.as_str() };
        publishes.push((
            format!("w{i}"),
            spawn_publish(
                &store,
                new_notification("cz-eeb", &format!("w{i}"), "C-1", content),
            ),
        ));
        until_waiting(&store, i + 1).await;
    }
    release.send(()).unwrap();
    let _ = held.await.unwrap();
    let mut receipts = Vec::new();
    let mut refused = 0;
    for (id, publish) in publishes {
        match publish.await.unwrap() {
            Ok(outcome) => receipts.push((id, stored(outcome).sequence)),
            Err(_) => refused += 1,
        }
    }
    assert!(
        refused >= 3,
        "the large writes cannot fit: {refused} refused"
    );
    store.set_writer_setup(Vec::new()).await;
    store.close().await;
    // A fresh process finds exactly the writes that got a receipt, under
    // the sequences they were told, and nothing else.
    let store = Store::connect(&url, 2).await.unwrap();
    let rows = store.read_after(0, 100).await.unwrap().rows;
    let found: Vec<(String, u64)> = rows
        .iter()
        .skip(1)
        .map(|r| (r.envelope.id.to_string(), r.sequence))
        .collect();
    assert_eq!(found, receipts);
    assert!(store.verify(&verify::NoProgress).await.unwrap().is_clean());
}

/// Two replicas' writers on one PostgreSQL. Replica A's transaction holds
/// the audit lock (an audit-only write) and then carries a publish, which
/// needs the publish lock; replica B's publish, meanwhile, holds the
/// publish lock and needs the audit lock. Every writer transaction takes
/// both cross-replica locks up front, in one order, so B waits for A and
/// nothing deadlocks.
#[tokio::test]
async fn postgres_replicas_mixing_audit_writes_and_publishes_never_deadlock() {
    let Some(url) = postgres_schema_url().await else {
        return;
    };
    let a = Store::connect(&url, 2).await.unwrap();
    let b = Store::connect(&url, 2).await.unwrap();
    let (entered, inside) = oneshot::channel::<()>();
    let first = {
        let a = a.clone();
        tokio::spawn(async move {
            a.write("audit_then_wait", move |conn| {
                Box::pin(async move {
                    let entry = crate::audit::reload("test", true, "applied");
                    audit::append_in(
                        conn,
                        Backend::Postgres,
                        &[entry],
                        Instant::now().unix_micros(),
                    )
                    .await?;
                    let _ = entered.send(());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(())
                })
            })
            .await
        })
    };
    inside.await.expect("the audit write started");
    let second = spawn_publish(&a, new_notification("cz-eeb", "on-a", "C-1", "x"));
    until_waiting(&a, 1).await;
    let third = spawn_publish(&b, new_notification("cz-eeb", "on-b", "C-1", "x"));
    first.await.unwrap().expect("the audit write commits");
    stored(second.await.unwrap().expect("replica A's publish commits"));
    stored(third.await.unwrap().expect("replica B's publish commits"));
    let ids = ids(&a).await;
    assert_eq!(ids, ["on-a", "on-b"]);
    assert!(b.verify(&verify::NoProgress).await.unwrap().is_clean());
}
