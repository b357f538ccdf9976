//! What operators change: disable and enable an agency, move a
//! subscription's position. Each change is audited with the operator.

use tonic::Status;

use liandong_core::pb;

use super::Operator;
use crate::Gateway;

/// `DisableAgency`.
pub async fn disable(
    _gateway: &Gateway,
    _operator: &Operator,
    _request: pb::DisableAgencyRequest,
) -> Result<pb::AgencyState, Status> {
    Err(Status::unimplemented("DisableAgency"))
}

/// `EnableAgency`.
pub async fn enable(
    _gateway: &Gateway,
    _operator: &Operator,
    _request: pb::EnableAgencyRequest,
) -> Result<pb::AgencyState, Status> {
    Err(Status::unimplemented("EnableAgency"))
}

/// `SeekSubscription`.
pub async fn seek(
    _gateway: &Gateway,
    _operator: &Operator,
    _request: pb::SeekSubscriptionRequest,
) -> Result<pb::SubscriptionState, Status> {
    Err(Status::unimplemented("SeekSubscription"))
}
