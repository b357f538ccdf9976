//! `disable`, `enable`, `seek`.

use std::process::ExitCode;

use tonic::transport::Channel;

use liandong_core::pb;
use liandong_core::pb::operations_client::OperationsClient;

use super::refused;

/// `admin disable`.
pub async fn disable(
    client: &mut OperationsClient<Channel>,
    _json: bool,
    agency: String,
    reason: String,
) -> ExitCode {
    match client
        .disable_agency(pb::DisableAgencyRequest { agency, reason })
        .await
    {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}

/// `admin enable`.
pub async fn enable(
    client: &mut OperationsClient<Channel>,
    _json: bool,
    agency: String,
    reason: String,
) -> ExitCode {
    match client
        .enable_agency(pb::EnableAgencyRequest { agency, reason })
        .await
    {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}

/// `admin seek`.
pub async fn seek(
    client: &mut OperationsClient<Channel>,
    _json: bool,
    owner: String,
    name: String,
    to: u64,
    reason: String,
) -> ExitCode {
    let request = pb::SeekSubscriptionRequest {
        owner,
        name,
        acked_through: to,
        reason,
    };
    match client.seek_subscription(request).await {
        Ok(response) => {
            println!("{:?}", response.into_inner());
            ExitCode::SUCCESS
        }
        Err(status) => refused(&status),
    }
}
