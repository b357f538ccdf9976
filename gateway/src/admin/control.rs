//! `disable`, `enable`, `seek`: one line for people, or the answer's
//! proto3 JSON form with `--json` (the form `report --format json`
//! prints).

use std::process::ExitCode;

use prost::Message;
use tonic::transport::Channel;

use liandong_core::pb;
use liandong_core::pb::operations_client::OperationsClient;

use super::refused;
use crate::reports::format::json_of;

/// `admin disable`.
pub async fn disable(
    client: &mut OperationsClient<Channel>,
    json: bool,
    agency: String,
    reason: String,
) -> ExitCode {
    match client
        .disable_agency(pb::DisableAgencyRequest { agency, reason })
        .await
    {
        Ok(response) => {
            let state = response.into_inner();
            answer(json, &state, "liandong.v1.AgencyState", state_line(&state))
        }
        Err(status) => refused(&status),
    }
}

/// `admin enable`.
pub async fn enable(
    client: &mut OperationsClient<Channel>,
    json: bool,
    agency: String,
    reason: String,
) -> ExitCode {
    match client
        .enable_agency(pb::EnableAgencyRequest { agency, reason })
        .await
    {
        Ok(response) => {
            let state = response.into_inner();
            answer(json, &state, "liandong.v1.AgencyState", state_line(&state))
        }
        Err(status) => refused(&status),
    }
}

/// `admin seek`.
pub async fn seek(
    client: &mut OperationsClient<Channel>,
    json: bool,
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
            let state = response.into_inner();
            let line = format!(
                "{}/{} acknowledged through {}: delivery resumes after it ({} behind{})",
                state.owner,
                state.name,
                state.acked_through,
                state.lag_messages,
                if state.lag_capped { " or more" } else { "" }
            );
            answer(json, &state, "liandong.v1.SubscriptionState", line)
        }
        Err(status) => refused(&status),
    }
}

/// The line people read for an agency's state after a disable or enable.
pub fn state_line(state: &pb::AgencyState) -> String {
    match (state.disabled, state.changed) {
        (true, true) => format!("{} disabled: {}", state.agency, state.reason),
        (true, false) => format!(
            "{} already disabled (by {}: {})",
            state.agency, state.disabled_by, state.reason
        ),
        (false, true) => format!("{} enabled", state.agency),
        (false, false) => format!("{} already enabled", state.agency),
    }
}

/// Prints `message` as proto3 JSON (`json`) or `line`.
fn answer(json: bool, message: &impl Message, full_name: &str, line: String) -> ExitCode {
    if json {
        println!("{}", json_of(message, full_name));
    } else {
        println!("{line}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests;
