//! Publish counts per sender, on every backend.

use liandong_core::domain::Instant;

use super::{HOUR_MICROS, PublishCounts};
use crate::store::PublishOutcome;
use crate::store::tests::{backends, new_notification};

fn at(micros: i64) -> Instant {
    Instant::from_unix_micros(micros).unwrap()
}

fn counts(agency: &str, last_5_minutes: u64, last_hour: u64) -> PublishCounts {
    PublishCounts {
        agency: agency.into(),
        last_5_minutes,
        last_hour,
    }
}

#[tokio::test]
async fn publishes_are_counted_per_sender_within_each_window() {
    for (store, _dir) in backends().await {
        assert_eq!(store.publish_counts(Instant::now()).await.unwrap(), vec![]);
        for (sender, id) in [("cz-eeb", "a"), ("cz-eeb", "b"), ("cz-psb", "c")] {
            let outcome = store
                .publish(&new_notification(sender, id, "case-1", "x"))
                .await
                .unwrap();
            assert!(matches!(outcome, PublishOutcome::Stored(_)));
        }
        let now = Instant::now().unix_micros();

        assert_eq!(
            store.publish_counts(at(now)).await.unwrap(),
            vec![counts("cz-eeb", 2, 2), counts("cz-psb", 1, 1)],
            "just published: in both windows"
        );
        assert_eq!(
            store
                .publish_counts(at(now + 10 * 60_000_000))
                .await
                .unwrap(),
            vec![counts("cz-eeb", 0, 2), counts("cz-psb", 0, 1)],
            "ten minutes on: past five minutes, within the hour"
        );
        assert_eq!(
            store
                .publish_counts(at(now + HOUR_MICROS + 1_000_000))
                .await
                .unwrap(),
            vec![],
            "an hour on: in neither window"
        );
        assert_eq!(
            store.publish_counts(at(now - HOUR_MICROS)).await.unwrap(),
            vec![],
            "an hour before: not yet received"
        );
    }
}

#[tokio::test]
async fn rows_received_before_the_hour_are_not_counted() {
    for (store, _dir) in backends().await {
        store
            .publish(&new_notification("cz-eeb", "old", "case-1", "x"))
            .await
            .unwrap();
        // Push the first row two hours into the past, as if received then.
        sqlx::query("UPDATE notifications SET received_at = received_at - $1")
            .bind(2 * HOUR_MICROS)
            .execute(store.pool())
            .await
            .unwrap();
        store
            .publish(&new_notification("cz-eeb", "new", "case-1", "x"))
            .await
            .unwrap();
        assert_eq!(
            store.publish_counts(Instant::now()).await.unwrap(),
            vec![counts("cz-eeb", 1, 1)],
            "the row of two hours ago is below the hour's boundary"
        );
    }
}
