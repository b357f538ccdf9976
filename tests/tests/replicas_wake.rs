//! Gateway replicas on one PostgreSQL database wake each other's
//! subscribers through LISTEN/NOTIFY: a notification published on one
//! replica reaches a subscriber connected to another at once, not at the
//! next poll; when the listening connection is cut, it comes back and the
//! next notification is heard again.

use std::time::{Duration, Instant};

use liandong_tests::{Subscriber, Testbed, publish_clues, skip_unless_postgres};

/// The poll interval of these test beds: longer than any test waits, so
/// only the announcement can deliver in time.
const POLL: &str = "[delivery]\npoll_interval_ms = 60000\nsubscription_lease_seconds = 3\n";
/// The case the clues of these tests are shared on.
const CASE: &str = "C-WAKE";
/// What the tests wait for a delivery: well under the poll interval.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn cross_replica_delivery_is_woken_not_polled() {
    if skip_unless_postgres("gateway replicas share one PostgreSQL database") {
        return;
    }
    let bed = Testbed::start_with(POLL).unwrap();
    let replica = bed.start_replica("b").unwrap();
    let mut police = bed.client_of(&replica, "cz-psb").await;
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    // The subscriber's replica looks once when the subscription opens;
    // every publish after that is heard, not polled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let started = Instant::now();
        let receipt = publish_clues(&mut eeb, "w-", CASE, n..n + 1)
            .await
            .remove(0);
        let delivery = inbox
            .expect_delivery(WAIT, "the notification stored on replica A")
            .await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(
            delivery.sequence, receipt.sequence,
            "in order, none skipped"
        );
        inbox.ack(&[delivery.sequence]).await;
    }
    assert!(
        slowest < WAIT,
        "every delivery came within {WAIT:?}, far under the 60 s poll (slowest {slowest:?})"
    );
}

#[tokio::test]
async fn a_cut_listener_reconnects_and_hears_again() {
    if skip_unless_postgres("gateway replicas share one PostgreSQL database") {
        return;
    }
    let bed = Testbed::start_with(POLL).unwrap();
    let replica = bed.start_replica("b").unwrap();
    let mut police = bed.client_of(&replica, "cz-psb").await;
    let mut inbox = Subscriber::open(&mut police, "inbox").await.unwrap();
    let mut eeb = bed.client("cz-eeb").await;
    let mut db = bed.connect_database().await;

    // Both replicas listen once a subscription opened on B (A listens
    // when its own first subscription opens: none here).
    let listeners = wait_for_listeners(&mut db, 1).await;
    // Cut every listening connection, as a network fault or an operator
    // would.
    for pid in &listeners {
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(*pid)
            .fetch_one(&mut db)
            .await
            .unwrap();
    }
    // The listener connects again (a new backend process).
    let deadline = Instant::now() + WAIT;
    loop {
        let now = wait_for_listeners(&mut db, 1).await;
        if now.iter().all(|pid| !listeners.contains(pid)) {
            break;
        }
        assert!(Instant::now() < deadline, "the listener did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipt = publish_clues(&mut eeb, "after-cut-", CASE, 0..1)
        .await
        .remove(0);
    let delivery = inbox
        .expect_delivery(WAIT, "the notification stored after the listener came back")
        .await;
    assert_eq!(delivery.sequence, receipt.sequence);
}

/// The backend processes listening for announcements, once there are at
/// least `count`.
async fn wait_for_listeners(db: &mut sqlx::AnyConnection, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut *db)
        .await
        .unwrap();
        if pids.len() >= count {
            return pids;
        }
        assert!(Instant::now() < deadline, "no listener connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
