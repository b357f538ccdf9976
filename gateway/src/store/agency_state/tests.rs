//! The operators' controls on every backend: each change is stored with
//! its audit row, and a call that changes nothing writes nothing.

use super::*;
use crate::store::tests::{backends, new_notification};

fn actor<'a>(reason: &'a str) -> Actor<'a> {
    Actor {
        operator: "cz-ops",
        reason,
        peer: "127.0.0.1:4000".parse().ok(),
    }
}

#[tokio::test]
async fn disabling_is_stored_with_its_audit_row_and_only_once() {
    for (store, _dir) in backends().await {
        let first = store
            .disable_agency("cz-eeb", actor("leaked key"))
            .await
            .unwrap();
        assert!(first.changed, "{:?}", store.backend());
        let state = first.disabled.clone().unwrap();
        assert_eq!(
            (
                state.agency.as_str(),
                state.reason.as_str(),
                state.disabled_by.as_str()
            ),
            ("cz-eeb", "leaked key", "cz-ops")
        );
        // Again: nothing changes, the original reason stays, no row.
        let again = store
            .disable_agency("cz-eeb", actor("another reason"))
            .await
            .unwrap();
        assert!(!again.changed);
        assert_eq!(again.disabled, Some(state.clone()));
        assert_eq!(store.disabled_agencies().await.unwrap(), vec![state]);

        let audit = store.audit_entries().await.unwrap();
        let rows: Vec<_> = audit
            .iter()
            .filter(|e| e.action == "AGENCY_DISABLED")
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "{:?}: one row for one change",
            store.backend()
        );
        assert_eq!(rows[0].agency, "cz-ops");
        assert_eq!(rows[0].decision, "DISABLED");
        assert_eq!(rows[0].reason, "agency cz-eeb: leaked key");
        assert_eq!(rows[0].peer, "127.0.0.1:4000".parse().ok());
        store.close().await;
    }
}

#[tokio::test]
async fn enabling_removes_the_state_with_its_audit_row_and_only_once() {
    for (store, _dir) in backends().await {
        let not_disabled = store
            .enable_agency("cz-psb", actor("nothing to do"))
            .await
            .unwrap();
        assert!(!not_disabled.changed);
        store
            .disable_agency("cz-psb", actor("maintenance"))
            .await
            .unwrap();
        let enabled = store
            .enable_agency("cz-psb", actor("maintenance over"))
            .await
            .unwrap();
        assert!(enabled.changed);
        assert_eq!(enabled.disabled, None);
        assert!(store.disabled_agencies().await.unwrap().is_empty());
        let audit = store.audit_entries().await.unwrap();
        let enabled_rows: Vec<_> = audit
            .iter()
            .filter(|e| e.action == "AGENCY_ENABLED")
            .collect();
        assert_eq!(enabled_rows.len(), 1, "{:?}", store.backend());
        assert_eq!(enabled_rows[0].reason, "agency cz-psb: maintenance over");
        assert_eq!(enabled_rows[0].decision, "ENABLED");
        store.close().await;
    }
}

#[tokio::test]
async fn seek_moves_back_and_forth_within_the_high_water_mark_audited() {
    for (store, _dir) in backends().await {
        for (i, id) in ["n-1", "n-2", "n-3"].into_iter().enumerate() {
            store
                .publish(&new_notification(
                    "cz-eeb",
                    id,
                    "C-1",
                    &format!("content {i}"),
                ))
                .await
                .unwrap();
        }
        store
            .open_subscription("cz-psb", "main", b"filter", 0)
            .await
            .unwrap();
        store
            .advance_subscription("cz-psb", "main", 3, None)
            .await
            .unwrap();

        let back = store
            .seek_subscription("cz-psb", "main", 1, actor("replay"))
            .await
            .unwrap();
        assert_eq!(back, SeekOutcome::Moved { from: 3, to: 1 });
        assert_eq!(
            store.subscription_cursor("cz-psb", "main").await.unwrap(),
            Some(1)
        );
        let forward = store
            .seek_subscription("cz-psb", "main", 3, actor("skip"))
            .await
            .unwrap();
        assert_eq!(forward, SeekOutcome::Moved { from: 1, to: 3 });

        let rows_before = store.audit_entries().await.unwrap().len();
        assert_eq!(
            store
                .seek_subscription("cz-psb", "main", 4, actor("too far"))
                .await
                .unwrap(),
            SeekOutcome::BeyondHighWater { high_water: 3 }
        );
        assert_eq!(
            store
                .seek_subscription("cz-psb", "other", 1, actor("unknown"))
                .await
                .unwrap(),
            SeekOutcome::NotFound
        );
        let audit = store.audit_entries().await.unwrap();
        assert_eq!(audit.len(), rows_before, "a refused seek writes nothing");
        assert_eq!(
            store.subscription_cursor("cz-psb", "main").await.unwrap(),
            Some(3)
        );
        let seeks: Vec<_> = audit
            .iter()
            .filter(|e| e.action == "SUBSCRIPTION_SEEK")
            .map(|e| (e.agency.as_str(), e.sequence, e.reason.as_str()))
            .collect();
        assert_eq!(
            seeks,
            [
                (
                    "cz-ops",
                    Some(1),
                    "subscription cz-psb/main: 3 -> 1: replay"
                ),
                ("cz-ops", Some(3), "subscription cz-psb/main: 1 -> 3: skip"),
            ],
            "{:?}",
            store.backend()
        );
        store.close().await;
    }
}
