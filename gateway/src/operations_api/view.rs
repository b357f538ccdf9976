//! What operators read: status, agencies, subscriptions, breaches, audit
//! verification, reports.

use std::sync::Arc;

use tonic::Status;

use liandong_core::pb;

use super::ProgressStream;
use crate::Gateway;
use crate::error::ApiError;
use crate::ops::snapshot;
use crate::reports::ReportSettings;

/// `GetStatus`.
pub async fn status(gateway: &Gateway) -> Result<pb::GatewayStatus, Status> {
    Ok(snapshot::status(gateway).await.map_err(ApiError::from)?)
}

/// `ListAgencies`.
pub async fn agencies(gateway: &Gateway) -> Result<pb::AgencyList, Status> {
    let agencies = snapshot::agencies(gateway).await.map_err(ApiError::from)?;
    Ok(pb::AgencyList { agencies })
}

/// `ListSubscriptions`.
pub async fn subscriptions(
    gateway: &Gateway,
    request: &pb::ListSubscriptionsRequest,
) -> Result<pb::SubscriptionList, Status> {
    let subscriptions = snapshot::subscriptions(gateway, request)
        .await
        .map_err(ApiError::from)?;
    Ok(pb::SubscriptionList { subscriptions })
}

/// `ListBreaches`.
pub async fn breaches(
    _gateway: &Gateway,
    _settings: &ReportSettings,
    _request: &pb::ListBreachesRequest,
) -> Result<pb::SignalsResponse, Status> {
    Err(Status::unimplemented("ListBreaches"))
}

/// `VerifyAudit`.
pub async fn verify_audit(_gateway: Arc<Gateway>) -> Result<ProgressStream, Status> {
    Err(Status::unimplemented("VerifyAudit"))
}

/// `GetReport`.
pub async fn report(
    _gateway: &Gateway,
    _settings: &ReportSettings,
    _request: &pb::ReportRequest,
) -> Result<pb::StatisticsReport, Status> {
    Err(Status::unimplemented("GetReport"))
}
