//! Sequence fences on both backends: the mark only rises, the next
//! publish comes after the fence, the fenced range is a declared gap for
//! the scan and the start-up check, and a fence without its audit row, a
//! row inside a fence or a gap no fence declares are still reported.

use crate::store::tests::{backends, new_notification};
use crate::store::verify::{NoProgress, SequenceRange};
use crate::store::{PublishOutcome, Store};

use super::*;

async fn publish(store: &Store, id: &str) -> u64 {
    match store
        .publish(&new_notification("cz-eeb", id, "C-1", id))
        .await
        .unwrap()
    {
        PublishOutcome::Stored(receipt) => receipt.sequence,
        other => panic!("{id}: {other:?}"),
    }
}

async fn high_water(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT high_water FROM store_state WHERE id = 1")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn execute(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

fn range(first: u64, last: u64) -> SequenceRange {
    SequenceRange { first, last }
}

#[tokio::test]
async fn fence_raises_the_mark_and_the_next_publish_comes_after_it() {
    for (store, _guard) in backends().await {
        for id in ["a", "b", "c"] {
            publish(&store, id).await;
        }
        let fence = store
            .fence_sequences(10, "restored the backup of 03:00")
            .await
            .unwrap();
        assert_eq!((fence.first, fence.last, fence.skipped()), (4, 10, 7));
        assert_eq!(high_water(&store).await, 10);
        assert_eq!(store.latest_sequence().await.unwrap(), 10);
        assert_eq!(publish(&store, "d").await, 11, "{:?}", store.backend());

        let report = store.verify(&NoProgress).await.unwrap();
        assert!(report.is_clean(), "{:?}: {report:?}", store.backend());
        assert_eq!(report.fenced, [range(4, 10)]);
        assert!(report.missing.is_empty());
        assert!(store.verify_tail(2).await.unwrap().is_clean());

        // Recorded in the audit log, whose chain still verifies.
        let audit = store.audit_entries().await.unwrap();
        let fenced: Vec<_> = audit
            .iter()
            .filter(|e| e.action == "SEQUENCES_FENCED")
            .collect();
        assert_eq!(fenced.len(), 1);
        assert_eq!(fenced[0].agency, "operator");
        assert_eq!(fenced[0].decision, "FENCED");
        assert_eq!(fenced[0].sequence, Some(10));
        assert_eq!(
            fenced[0].reason,
            "sequences 4-10 fenced: restored the backup of 03:00"
        );
        let walk = store
            .verify_audit(&Default::default(), &NoProgress)
            .await
            .unwrap();
        assert!(walk.is_clean(), "{walk:?}");
        assert_eq!(store.fences().await.unwrap(), [fence]);
    }
}

#[tokio::test]
async fn fence_below_the_latest_sequence_is_refused_and_changes_nothing() {
    for (store, _guard) in backends().await {
        for id in ["a", "b", "c"] {
            publish(&store, id).await;
        }
        let audit_rows = store.audit_entries().await.unwrap().len();
        match store.fence_sequences(2, "too low").await {
            Err(FenceError::Below { above, latest }) => assert_eq!((above, latest), (2, 3)),
            other => panic!("{:?}: {other:?}", store.backend()),
        }
        assert!(matches!(
            store.fence_sequences(20, "   ").await,
            Err(FenceError::Reason(_))
        ));
        assert!(matches!(
            store
                .fence_sequences(20, &"x".repeat(MAX_REASON_BYTES + 1))
                .await,
            Err(FenceError::Reason(_))
        ));
        assert_eq!(high_water(&store).await, 3);
        assert!(store.fences().await.unwrap().is_empty());
        assert_eq!(store.audit_entries().await.unwrap().len(), audit_rows);
        assert_eq!(publish(&store, "d").await, 4);
    }
}

#[tokio::test]
async fn fence_at_the_latest_sequence_skips_nothing_and_is_recorded() {
    for (store, _guard) in backends().await {
        publish(&store, "a").await;
        let fence = store
            .fence_sequences(1, "nothing sent since")
            .await
            .unwrap();
        assert_eq!((fence.first, fence.last, fence.range()), (2, 1, None));
        assert_eq!(publish(&store, "b").await, 2);
        let report = store.verify(&NoProgress).await.unwrap();
        assert!(report.is_clean() && report.fenced.is_empty(), "{report:?}");
        assert_eq!(
            store.latest_recorded_fence().await.unwrap().map(|f| f.id),
            Some(fence.id)
        );
        let reason = &store.audit_entries().await.unwrap()[1].reason;
        assert_eq!(
            reason,
            "no sequence fenced, the high-water mark stays at 1: nothing sent since"
        );
    }
}

#[tokio::test]
async fn gaps_no_fence_declares_are_still_reported() {
    for (store, _guard) in backends().await {
        for id in ["a", "b", "c"] {
            publish(&store, id).await;
        }
        store.fence_sequences(6, "restore").await.unwrap();
        publish(&store, "d").await; // 7
        // A row deleted behind the gateway's back is missing, fence or not.
        execute(&store, "DELETE FROM notifications WHERE sequence = 2").await;
        let report = store.verify(&NoProgress).await.unwrap();
        assert_eq!(report.missing, [range(2, 2)], "{:?}", store.backend());
        assert_eq!(report.fenced, [range(4, 6)]);
        assert!(!report.is_clean());

        // A fence added by hand, without its audit row, declares nothing.
        execute(
            &store,
            "INSERT INTO sequence_fences (id, first_sequence, last_sequence, at, reason, audit_id) \
             VALUES (2, 2, 2, 0, 'forged', 1)",
        )
        .await;
        let report = store.verify(&NoProgress).await.unwrap();
        assert_eq!(report.unrecorded_fences, [range(2, 2)]);
        assert_eq!(report.missing, [range(2, 2)]);
        assert_eq!(report.fenced, [range(4, 6)]);
        assert_eq!(
            store.latest_recorded_fence().await.unwrap().map(|f| f.id),
            Some(1),
            "a forged fence acknowledges nothing"
        );
        // Fences are append-only.
        assert!(
            sqlx::query("DELETE FROM sequence_fences WHERE id = 2")
                .execute(store.pool())
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn rows_inside_a_fence_and_links_across_it_are_checked() {
    for (store, _guard) in backends().await {
        for id in ["a", "b", "c"] {
            publish(&store, id).await;
        }
        store.fence_sequences(6, "restore").await.unwrap();
        publish(&store, "d").await; // 7, linked to 3 across the fence
        assert!(store.verify(&NoProgress).await.unwrap().is_clean());

        // A row moved into the fenced range: no gateway assigned it.
        execute(
            &store,
            "UPDATE notifications SET sequence = 5 WHERE sequence = 7",
        )
        .await;
        let report = store.verify(&NoProgress).await.unwrap();
        assert!(
            report
                .changed
                .iter()
                .any(|p| p.sequence == 5 && p.problem.contains("inside the fenced range 4-6")),
            "{:?}: {report:?}",
            store.backend()
        );
        execute(
            &store,
            "UPDATE notifications SET sequence = 7 WHERE sequence = 5",
        )
        .await;

        // The row after the fence links to the row before it: a link that
        // does not follow is reported.
        execute(
            &store,
            "UPDATE notifications SET chain = (SELECT chain FROM notifications WHERE sequence = 2) \
             WHERE sequence = 7",
        )
        .await;
        let report = store.verify(&NoProgress).await.unwrap();
        assert!(
            report.out_of_order.iter().any(|p| p.sequence == 7)
                || report.changed.iter().any(|p| p.sequence == 7),
            "{:?}: {report:?}",
            store.backend()
        );
    }
}
