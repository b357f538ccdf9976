//! `status`, `agencies`, `subscriptions`, `breaches`, `audit-verify`.

use std::process::ExitCode;

use tonic::transport::Channel;

use liandong_core::pb;
use liandong_core::pb::operations_client::OperationsClient;

use super::refused;

/// `admin status`.
pub async fn status(client: &mut OperationsClient<Channel>, _json: bool) -> ExitCode {
    match client.get_status(pb::StatusRequest {}).await {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}

/// `admin agencies`.
pub async fn agencies(client: &mut OperationsClient<Channel>, _json: bool) -> ExitCode {
    match client.list_agencies(pb::ListAgenciesRequest {}).await {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}

/// `admin subscriptions`.
pub async fn subscriptions(
    client: &mut OperationsClient<Channel>,
    _json: bool,
    lagging: Option<u64>,
    owner: Option<String>,
) -> ExitCode {
    let request = pb::ListSubscriptionsRequest {
        min_lag: lagging.unwrap_or(0),
        owner: owner.unwrap_or_default(),
    };
    match client.list_subscriptions(request).await {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}

/// `admin breaches`.
pub async fn breaches(
    client: &mut OperationsClient<Channel>,
    _json: bool,
    region: String,
) -> ExitCode {
    match client
        .list_breaches(pb::ListBreachesRequest { region })
        .await
    {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}

/// `admin audit-verify`.
pub async fn audit_verify(client: &mut OperationsClient<Channel>, _json: bool) -> ExitCode {
    match client.verify_audit(pb::VerifyAuditRequest {}).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(status) => refused(&status),
    }
}
