//! The gateway now, as operators see it: status, agencies, subscriptions.
//! Shared by the status page and the `liandong.v1.Operations` service so
//! both always say the same. Read-only; never case content.

use liandong_core::pb;

use crate::Gateway;
use crate::store::{Backend, StoreError};

/// Timestamp of a `time` instant.
pub fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// The gateway's status now.
pub async fn status(gateway: &Gateway) -> Result<pb::GatewayStatus, StoreError> {
    let high_water = gateway.store.latest_sequence().await?;
    let notifications = gateway.store.count_notifications().await?;
    Ok(pb::GatewayStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: Some(timestamp(gateway.started_at)),
        uptime_seconds: gateway.started.elapsed().as_secs(),
        store_backend: match gateway.store.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
        .to_owned(),
        store_healthy: gateway.store.is_healthy(),
        high_water,
        notifications,
        connections: gateway.tls.connections.len() as u64,
        streams: gateway.sessions.len() as u64,
        disabled_agencies: gateway
            .disabled_agencies()
            .into_iter()
            .map(|state| state.agency)
            .collect(),
        ..Default::default()
    })
}

/// Every registered agency with its activity, in registry order.
pub async fn agencies(gateway: &Gateway) -> Result<Vec<pb::AgencyActivity>, StoreError> {
    let rules = gateway.rules();
    Ok(rules
        .registry
        .agencies()
        .map(|agency| pb::AgencyActivity {
            id: agency.id.to_string(),
            name: agency.name.clone(),
            role: format!("{:?}", agency.role).to_uppercase(),
            state: Some(crate::operations_api::control::agency_state(
                agency.id.as_str(),
                gateway.agency_state(agency.id.as_str()).as_ref(),
                false,
            )),
            ..Default::default()
        })
        .collect())
}

/// Every stored subscription with its position, filtered by `request`.
pub async fn subscriptions(
    gateway: &Gateway,
    request: &pb::ListSubscriptionsRequest,
) -> Result<Vec<pb::SubscriptionState>, StoreError> {
    let high_water = gateway.store.latest_sequence().await?;
    Ok(gateway
        .store
        .subscriptions()
        .await?
        .into_iter()
        .filter(|row| request.owner.is_empty() || row.owner == request.owner)
        .map(|row| pb::SubscriptionState {
            lag_messages: high_water.saturating_sub(row.acked_through),
            owner: row.owner,
            name: row.name,
            acked_through: row.acked_through,
            ..Default::default()
        })
        .filter(|state| state.lag_messages >= request.min_lag)
        .collect())
}
