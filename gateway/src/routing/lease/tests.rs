//! The lease keeper against a real store, on every backend: sessions of
//! one process share a lease, another process's open takes it over only
//! once it is handed over or has expired, and a lease that cannot be
//! renewed, or is found taken, ends its sessions.

use std::time::Duration;

use super::*;
use crate::store::tests::backends;

fn keeper(store: &Store, instance: &str, duration: Duration) -> (LeaseKeeper, CancellationToken) {
    let stop = CancellationToken::new();
    (
        LeaseKeeper::new(store.clone(), instance.to_owned(), duration, stop.clone()),
        stop,
    )
}

/// Runs `sql` through the store's writer (a test's own change to the
/// table, in a transaction like any write).
async fn change(store: &Store, sql: &'static str) {
    store
        .write("test_change", move |conn| {
            Box::pin(async move {
                sqlx::query(sql).execute(&mut *conn).await?;
                Ok(())
            })
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_session_on_this_process_shares_the_live_lease() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (a, stop) = keeper(&store, "gw-a", Duration::from_secs(10));
        let mut first = a.acquire("cz-psb", "main").await.unwrap();
        let mut second = a.acquire("cz-psb", "main").await.unwrap();
        assert_eq!(first.hold(), second.hold(), "{backend:?}: one lease");
        assert_eq!(a.len(), 1);
        first.release().await;
        let state = store.lease("cz-psb", "main").await.unwrap();
        assert!(state.is_some(), "{backend:?}: still used by the second");
        second.release().await;
        assert_eq!(store.lease("cz-psb", "main").await.unwrap(), None);
        assert!(a.is_empty());
        stop.cancel();
        store.close().await;
    }
}

#[tokio::test]
async fn another_process_takes_over_once_the_holder_hands_over() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (a, stop_a) = keeper(&store, "gw-a", Duration::from_secs(10));
        let (b, stop_b) = keeper(&store, "gw-b", Duration::from_secs(10));
        let mut held = a.acquire("cz-psb", "main").await.unwrap();
        let waiting = tokio::spawn(async move { b.acquire("cz-psb", "main").await });
        tokio::time::timeout(Duration::from_secs(5), held.ended())
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: the holder is told to hand over"));
        assert_eq!(held.end(), SessionEnd::Replaced);
        assert!(held.check().is_err(), "nothing more is sent under it");
        assert!(
            !waiting.is_finished(),
            "{backend:?}: not before the release"
        );
        held.release().await;
        let taken = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("acquired once released")
            .unwrap()
            .unwrap();
        assert!(taken.check().is_ok());
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(state.holder, "gw-b", "{backend:?}");
        assert_eq!(state.takeover_by, None);
        stop_a.cancel();
        stop_b.cancel();
        drop(taken);
        store.close().await;
    }
}

#[tokio::test]
async fn a_holder_that_stopped_renewing_is_waited_for_until_its_lease_expires() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let duration = Duration::from_secs(2);
        let (a, stop_a) = keeper(&store, "gw-a", duration);
        let (b, stop_b) = keeper(&store, "gw-b", duration);
        let dead = a.acquire("cz-psb", "main").await.unwrap();
        // The holder's process stops renewing and checking.
        stop_a.cancel();
        let asked = Instant::now();
        let taken = b.acquire("cz-psb", "main").await.unwrap();
        assert!(
            asked.elapsed() <= b.takeover_wait(),
            "{backend:?}: within the bound"
        );
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(state.holder, "gw-b", "{backend:?}");
        // The dead holder's session would have stopped sending before the
        // lease could expire.
        assert!(
            matches!(
                dead.check(),
                Err(SessionEnd::HoldLost(HoldLoss::NotRenewed { .. }))
            ),
            "{backend:?}: {:?}",
            dead.check()
        );
        drop(dead);
        drop(taken);
        stop_b.cancel();
        store.close().await;
    }
}

#[tokio::test]
async fn an_open_is_refused_when_the_holder_does_not_hand_over() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let duration = Duration::from_secs(2);
        let (a, stop_a) = keeper(&store, "gw-a", duration);
        let (b, stop_b) = keeper(&store, "gw-b", duration);
        // Told to hand over, its session never releases the lease; the
        // process keeps renewing it.
        let stuck = a.acquire("cz-psb", "main").await.unwrap();
        let asked = Instant::now();
        let refused = b.acquire("cz-psb", "main").await;
        assert!(
            matches!(refused, Err(AcquireError::HeldElsewhere { seconds: 4 })),
            "{backend:?}: {refused:?}"
        );
        assert!(asked.elapsed() >= b.takeover_wait());
        assert_eq!(stuck.end(), SessionEnd::Replaced);
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(state.holder, "gw-a", "{backend:?}: never two holders");
        assert!(!state.expired());
        stop_a.cancel();
        stop_b.cancel();
        drop(stuck);
        store.close().await;
    }
}

#[tokio::test]
async fn a_lease_whose_renewals_fail_lapses_and_ends_its_session() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let duration = Duration::from_secs(2);
        let (a, stop) = keeper(&store, "gw-a", duration);
        let held = a.acquire("cz-psb", "main").await.unwrap();
        let acquired = Instant::now();
        change(
            &store,
            "ALTER TABLE subscription_leases RENAME TO subscription_leases_away",
        )
        .await;
        // In memory, at once: past its validity (well before the lease
        // can expire at the database) the session may not send.
        tokio::time::sleep_until(acquired + valid_for(duration)).await;
        assert!(held.check().is_err(), "{backend:?}: lapsed");
        tokio::time::timeout(Duration::from_secs(5), held.ended())
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: the lapse ends the session"));
        assert!(matches!(
            held.end(),
            SessionEnd::HoldLost(HoldLoss::NotRenewed { .. })
        ));
        assert!(held.check().is_err());
        let text = held.end().to_string();
        assert!(
            text.contains("lost its hold") && text.contains("reconnect to resume"),
            "{text}"
        );
        change(
            &store,
            "ALTER TABLE subscription_leases_away RENAME TO subscription_leases",
        )
        .await;
        stop.cancel();
        drop(held);
        store.close().await;
    }
}

#[tokio::test]
async fn a_renewal_finding_the_lease_taken_ends_the_session() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (a, stop) = keeper(&store, "gw-a", Duration::from_secs(2));
        let held = a.acquire("cz-psb", "main").await.unwrap();
        change(
            &store,
            "UPDATE subscription_leases SET holder = 'gw-x' WHERE name = 'main'",
        )
        .await;
        tokio::time::timeout(Duration::from_secs(5), held.ended())
            .await
            .unwrap_or_else(|_| panic!("{backend:?}: the next renewal notices"));
        assert_eq!(held.end(), SessionEnd::HoldLost(HoldLoss::TakenOver));
        assert!(held.check().is_err());
        assert!(a.is_empty(), "no longer renewed");
        drop(held);
        // Its release leaves the other holder's lease alone.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(state.holder, "gw-x", "{backend:?}");
        stop.cancel();
        store.close().await;
    }
}

#[tokio::test]
async fn opens_of_one_subscription_at_once_on_this_process_share_one_lease() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let (a, stop) = keeper(&store, "gw-a", Duration::from_secs(10));
        let (first, second) =
            tokio::join!(a.acquire("cz-psb", "main"), a.acquire("cz-psb", "main"));
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.hold(), second.hold(), "{backend:?}: one acquisition");
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(state.hold, first.hold());
        assert!(
            lock(&a.shared.acquiring).is_empty(),
            "{backend:?}: no open waits any more"
        );
        drop((first, second));
        stop.cancel();
        store.close().await;
    }
}
