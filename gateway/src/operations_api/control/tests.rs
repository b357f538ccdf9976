//! The controls without a network: what each refuses (audited, nothing
//! changed), and what a change puts in force.

use std::path::Path;
use std::sync::Arc;

use liandong_core::registry::Registry;
use tonic::Code;

use super::*;
use crate::policy::{Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::Store;

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

async fn gateway(dir: &tempfile::TempDir) -> Arc<Gateway> {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let rules = Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    Arc::new(Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    ))
}

fn operator() -> Operator {
    Operator {
        id: AgencyId::parse("id", "cz-ops").unwrap(),
        peer: "127.0.0.1:4000".parse().ok(),
    }
}

fn disable_request(agency: &str, reason: &str) -> pb::DisableAgencyRequest {
    pb::DisableAgencyRequest {
        agency: agency.into(),
        reason: reason.into(),
    }
}

async fn refusal_rows(gateway: &Gateway) -> Vec<(String, String)> {
    gateway
        .store
        .audit_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "OPERATIONS_REFUSED")
        .map(|e| (e.decision, e.reason))
        .collect()
}

#[tokio::test]
async fn bad_disables_are_refused_audited_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let cases = [
        (
            disable_request("cz-ops", "testing"),
            Code::FailedPrecondition,
        ),
        (disable_request("cz-nobody", "testing"), Code::NotFound),
        (disable_request("cz-eeb", "  "), Code::InvalidArgument),
        (
            disable_request("Not An Id!", "testing"),
            Code::InvalidArgument,
        ),
        (
            disable_request("cz-eeb", &"x".repeat(MAX_REASON_CHARS + 1)),
            Code::InvalidArgument,
        ),
    ];
    let expected = cases.len();
    for (request, code) in cases {
        let status = disable(&gateway, &operator(), request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {}", status.message());
    }
    assert!(gateway.disabled_agencies().is_empty());
    assert!(gateway.store.disabled_agencies().await.unwrap().is_empty());
    let rows = refusal_rows(&gateway).await;
    assert_eq!(rows.len(), expected, "{rows:?}");
    assert!(
        rows[0].1.contains("cz-ops may not disable itself"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_disable_is_put_in_force_once_and_an_enable_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let mut version = gateway.rules_version.subscribe();
    let state = disable(
        &gateway,
        &operator(),
        disable_request("cz-eeb", "key leaked"),
    )
    .await
    .unwrap();
    assert!(state.disabled && state.changed);
    assert_eq!(
        (state.reason.as_str(), state.disabled_by.as_str()),
        ("key leaked", "cz-ops")
    );
    assert!(state.disabled_at.is_some());
    // Open sessions are told at once.
    assert!(version.has_changed().unwrap());
    version.borrow_and_update();
    let in_force = gateway.agency_state("cz-eeb").unwrap();
    assert_eq!(
        in_force.to_string(),
        "agency cz-eeb is disabled by an operator: key leaked"
    );

    let again = disable(&gateway, &operator(), disable_request("cz-eeb", "other"))
        .await
        .unwrap();
    assert!(again.disabled && !again.changed);
    assert_eq!(again.reason, "key leaked", "the first reason stays");

    let enabled = enable(
        &gateway,
        &operator(),
        pb::EnableAgencyRequest {
            agency: "cz-eeb".into(),
            reason: "key replaced".into(),
        },
    )
    .await
    .unwrap();
    assert!(!enabled.disabled && enabled.changed);
    assert!(gateway.agency_state("cz-eeb").is_none());
    assert!(version.has_changed().unwrap());
    let actions: Vec<_> = gateway
        .store
        .audit_entries()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["AGENCY_DISABLED", "AGENCY_ENABLED"]);
}

#[tokio::test]
async fn seek_refuses_unknown_subscriptions_and_positions_past_the_high_water_mark() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(&dir).await;
    let request = |name: &str, to: u64, reason: &str| pb::SeekSubscriptionRequest {
        owner: "cz-psb".into(),
        name: name.into(),
        acked_through: to,
        reason: reason.into(),
    };
    let unknown = seek(&gateway, &operator(), request("main", 0, "replay"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{}", unknown.message());
    gateway
        .store
        .open_subscription("cz-psb", "main", b"filter", 0)
        .await
        .unwrap();
    let beyond = seek(&gateway, &operator(), request("main", 1, "skip"))
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), Code::InvalidArgument);
    assert!(
        beyond.message().starts_with("acked_through"),
        "{}",
        beyond.message()
    );
    let no_reason = seek(&gateway, &operator(), request("main", 0, ""))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    let moved = seek(&gateway, &operator(), request("main", 0, "replay"))
        .await
        .unwrap();
    assert_eq!(
        (
            moved.owner.as_str(),
            moved.name.as_str(),
            moved.acked_through
        ),
        ("cz-psb", "main", 0)
    );
    assert_eq!(refusal_rows(&gateway).await.len(), 3);
}
