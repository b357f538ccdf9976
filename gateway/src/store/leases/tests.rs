//! The lease contract on every backend: acquired when free, expired or
//! already the caller's; refused (with the takeover request recorded)
//! while another process holds it; renewed and released only by its
//! holder, under the hold it was acquired with.

use std::time::Duration;

use super::*;
use crate::store::tests::backends;

const LEASE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_free_lease_is_acquired_renewed_and_released_by_its_holder() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let acquired = store
            .acquire_lease("cz-psb", "main", "gw-a", 1, LEASE)
            .await
            .unwrap();
        assert_eq!(
            acquired,
            Acquire::Acquired {
                expired_holder: None
            },
            "{backend:?}"
        );
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!((state.holder.as_str(), state.hold), ("gw-a", 1));
        assert!(
            state.expires_in_micros > 9_000_000 && state.expires_in_micros <= 10_000_000,
            "{backend:?}: expires in {} µs on the database's clock",
            state.expires_in_micros
        );
        assert_eq!(state.takeover_by, None);

        let renewed = store.renew_leases("gw-a", &[1], LEASE).await.unwrap();
        assert_eq!(
            renewed,
            [Renewed {
                hold: 1,
                takeover_requested: false
            }]
        );
        // Another process's name or another hold renews nothing.
        assert!(
            store
                .renew_leases("gw-b", &[1], LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .renew_leases("gw-a", &[2], LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !store
                .release_lease("cz-psb", "main", "gw-b", 1)
                .await
                .unwrap(),
            "{backend:?}: another process releases nothing"
        );
        assert!(
            store
                .release_lease("cz-psb", "main", "gw-a", 1)
                .await
                .unwrap()
        );
        assert_eq!(store.lease("cz-psb", "main").await.unwrap(), None);
        assert!(
            !store
                .release_lease("cz-psb", "main", "gw-a", 1)
                .await
                .unwrap()
        );
        store.close().await;
    }
}

#[tokio::test]
async fn another_holder_is_refused_and_its_takeover_request_recorded() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        store
            .acquire_lease("cz-psb", "main", "gw-a", 1, LEASE)
            .await
            .unwrap();
        let refused = store
            .acquire_lease("cz-psb", "main", "gw-b", 7, LEASE)
            .await
            .unwrap();
        let Acquire::Held { holder, expires_in } = refused else {
            panic!("{backend:?}: a live lease of another process is not taken: {refused:?}");
        };
        assert_eq!(holder, "gw-a");
        assert!(expires_in > Duration::from_secs(9), "{expires_in:?}");
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(
            (
                state.holder.as_str(),
                state.hold,
                state.takeover_by.as_deref()
            ),
            ("gw-a", 1, Some("gw-b")),
            "{backend:?}: still the holder's, with the request recorded"
        );
        assert_eq!(store.takeover_requests("gw-a").await.unwrap(), [1]);
        assert!(store.takeover_requests("gw-b").await.unwrap().is_empty());
        let renewed = store.renew_leases("gw-a", &[1], LEASE).await.unwrap();
        assert_eq!(
            renewed,
            [Renewed {
                hold: 1,
                takeover_requested: true
            }]
        );
        // The holder hands over: the requester acquires, request cleared.
        assert!(
            store
                .release_lease("cz-psb", "main", "gw-a", 1)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .acquire_lease("cz-psb", "main", "gw-b", 7, LEASE)
                .await
                .unwrap(),
            Acquire::Acquired {
                expired_holder: None
            }
        );
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!((state.holder.as_str(), state.hold), ("gw-b", 7));
        assert_eq!(state.takeover_by, None);
        assert!(store.takeover_requests("gw-b").await.unwrap().is_empty());
        // Another subscription of the same owner is a lease of its own.
        assert_eq!(
            store
                .acquire_lease("cz-psb", "other", "gw-a", 2, LEASE)
                .await
                .unwrap(),
            Acquire::Acquired {
                expired_holder: None
            }
        );
        store.close().await;
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_holder_keeps_nothing() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        store
            .acquire_lease("cz-psb", "main", "gw-a", 1, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert!(state.expired(), "{backend:?}: {state:?}");
        assert_eq!(
            store
                .acquire_lease("cz-psb", "main", "gw-b", 5, LEASE)
                .await
                .unwrap(),
            Acquire::Acquired {
                expired_holder: Some("gw-a".into())
            },
            "{backend:?}"
        );
        // The old holder's renewal finds it gone; its release deletes
        // nothing.
        assert!(
            store
                .renew_leases("gw-a", &[1], LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            !store
                .release_lease("cz-psb", "main", "gw-a", 1)
                .await
                .unwrap()
        );
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!((state.holder.as_str(), state.hold), ("gw-b", 5));
        assert!(!state.expired());
        store.close().await;
    }
}

#[tokio::test]
async fn the_holder_acquiring_again_moves_the_hold_and_drops_a_pending_request() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        store
            .acquire_lease("cz-psb", "main", "gw-a", 1, LEASE)
            .await
            .unwrap();
        store
            .acquire_lease("cz-psb", "main", "gw-b", 1, LEASE)
            .await
            .unwrap();
        assert_eq!(
            store
                .acquire_lease("cz-psb", "main", "gw-a", 2, LEASE)
                .await
                .unwrap(),
            Acquire::Acquired {
                expired_holder: None
            },
            "{backend:?}: its own lease"
        );
        let state = store.lease("cz-psb", "main").await.unwrap().unwrap();
        assert_eq!(
            (state.holder.as_str(), state.hold, state.takeover_by),
            ("gw-a", 2, None)
        );
        // The earlier hold neither renews nor releases the lease now.
        let renewed = store.renew_leases("gw-a", &[1, 2], LEASE).await.unwrap();
        assert_eq!(
            renewed,
            [Renewed {
                hold: 2,
                takeover_requested: false
            }]
        );
        assert!(
            !store
                .release_lease("cz-psb", "main", "gw-a", 1)
                .await
                .unwrap()
        );
        assert!(store.lease("cz-psb", "main").await.unwrap().is_some());
        store.close().await;
    }
}

#[tokio::test]
async fn many_leases_renew_in_one_call_and_clearing_removes_them_all() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        let holds: Vec<u64> = (1..=1200).collect();
        for &hold in &holds[..3] {
            store
                .acquire_lease("cz-psb", &format!("s{hold}"), "gw-a", hold, LEASE)
                .await
                .unwrap();
        }
        // Holds beyond one statement's share are renewed too.
        store
            .acquire_lease("cz-psb", "s1200", "gw-a", 1200, LEASE)
            .await
            .unwrap();
        let mut renewed: Vec<u64> = store
            .renew_leases("gw-a", &holds, LEASE)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.hold)
            .collect();
        renewed.sort_unstable();
        assert_eq!(renewed, [1, 2, 3, 1200], "{backend:?}");
        assert_eq!(store.clear_leases().await.unwrap(), 4);
        assert_eq!(store.lease("cz-psb", "s1").await.unwrap(), None);
        assert_eq!(store.clear_leases().await.unwrap(), 0);
        store.close().await;
    }
}

#[tokio::test]
async fn the_operators_view_names_the_holder_of_a_live_lease_only() {
    for (store, _dir) in backends().await {
        let backend = store.backend();
        store
            .open_subscription("cz-psb", "main", b"filter", 0)
            .await
            .unwrap();
        store
            .open_subscription("cz-psb", "other", b"filter", 0)
            .await
            .unwrap();
        store
            .acquire_lease("cz-psb", "main", "gw-a", 1, LEASE)
            .await
            .unwrap();
        store
            .acquire_lease("cz-psb", "other", "gw-b", 1, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held: Vec<(String, Option<String>)> = store
            .subscriptions()
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.name, row.held_by))
            .collect();
        assert_eq!(
            held,
            [
                ("main".to_owned(), Some("gw-a".to_owned())),
                ("other".to_owned(), None)
            ],
            "{backend:?}: an expired lease names nobody"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_takeover_request_is_announced_on_postgres_at_commit() {
    let Some(url) = crate::store::tests::postgres_schema_url().await else {
        return;
    };
    let store = Store::connect(&url, 2).await.unwrap();
    // Another replica's store listens (a store passes over its own
    // writer's announcements).
    let other = Store::connect(&url, 2).await.unwrap();
    let mut listener = other
        .listen(&[TAKEOVER_CHANNEL])
        .await
        .unwrap()
        .expect("PostgreSQL listens");
    store
        .acquire_lease("cz-psb", "main", "gw-a", 1, LEASE)
        .await
        .unwrap();
    store
        .acquire_lease("cz-psb", "main", "gw-b", 1, LEASE)
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("the takeover request is announced")
        .unwrap();
    assert_eq!(
        heard,
        crate::store::listen::Heard::Channel(TAKEOVER_CHANNEL.to_owned())
    );
    store.close().await;
    other.close().await;
}
