//! `status`, `agencies`, `subscriptions`, `breaches`, `audit-verify`:
//! what operators read, as tables for people or proto3 JSON (`--json`).

use std::io::IsTerminal;
use std::process::ExitCode;

use tonic::transport::Channel;

use liandong_core::pb;
use liandong_core::pb::operations_client::OperationsClient;

use super::output::{self, ago, bytes, duration, table, when};
use super::{EX_DATAERR, EX_UNAVAILABLE, refused};
use crate::reports::format::signals_table;

/// `admin status`.
pub async fn status(client: &mut OperationsClient<Channel>, json: bool) -> ExitCode {
    match client.get_status(pb::StatusRequest {}).await {
        Ok(response) => {
            let status = response.into_inner();
            output::print(&if json {
                output::json(&status, "liandong.v1.GatewayStatus")
            } else {
                status_text(&status, output::now())
            })
        }
        Err(status) => refused(&status),
    }
}

/// The status for people, times seen at `now` (unix seconds).
pub fn status_text(status: &pb::GatewayStatus, now: i64) -> String {
    let pb::GatewayStatus {
        version,
        started_at,
        uptime_seconds,
        store_backend,
        store_bytes,
        store_healthy,
        high_water,
        notifications,
        connections,
        streams,
        certificates,
        audit,
        disabled_agencies,
        breaches_open,
    } = status;
    let mut text = format!(
        "gateway       liandong-gateway {version}, up {} (since {})\n",
        duration(*uptime_seconds),
        when(started_at.as_ref())
    );
    text += &format!(
        "store         {store_backend}, {}, {}\n",
        bytes(*store_bytes),
        if *store_healthy {
            "writes work"
        } else {
            "WRITES FAIL"
        }
    );
    text +=
        &format!("sequence      high-water {high_water}, {notifications} notifications stored\n");
    text +=
        &format!("live          {connections} TLS connections, {streams} subscription streams\n");
    let audit = audit.unwrap_or_default();
    text += &format!(
        "audit log     {} rows, last appended {}\n",
        audit.rows,
        ago(audit.head_at.as_ref(), now)
    );
    text += &match audit.checkpoint_at {
        Some(at) => format!(
            "checkpoint    row {}, signed {}, {} rows since\n",
            audit.checkpoint_row,
            ago(Some(&at), now),
            audit.rows_since_checkpoint
        ),
        None => format!(
            "checkpoint    none yet, {} rows unsigned\n",
            audit.rows_since_checkpoint
        ),
    };
    text += &format!("breaches      {breaches_open} open\n");
    text += &format!(
        "disabled      {}\n",
        if disabled_agencies.is_empty() {
            "none".to_owned()
        } else {
            disabled_agencies.join(", ")
        }
    );
    if !certificates.is_empty() {
        let rows: Vec<[String; 3]> = certificates
            .iter()
            .map(|c| {
                [
                    c.what.clone(),
                    when(c.not_after.as_ref()),
                    if c.days_left < 0 {
                        format!("EXPIRED {} days ago", -c.days_left)
                    } else {
                        c.days_left.to_string()
                    },
                ]
            })
            .collect();
        text += "\n";
        text += &table(&["CERTIFICATE", "NOT AFTER", "DAYS LEFT"], &rows);
    }
    text
}

/// `admin agencies`.
pub async fn agencies(client: &mut OperationsClient<Channel>, json: bool) -> ExitCode {
    match client.list_agencies(pb::ListAgenciesRequest {}).await {
        Ok(response) => {
            let list = response.into_inner();
            output::print(&if json {
                output::json(&list, "liandong.v1.AgencyList")
            } else {
                agencies_text(&list, output::now())
            })
        }
        Err(status) => refused(&status),
    }
}

/// The agencies as a table, times seen at `now` (unix seconds).
pub fn agencies_text(list: &pb::AgencyList, now: i64) -> String {
    let rows: Vec<[String; 9]> = list
        .agencies
        .iter()
        .map(|agency| {
            let disabled = agency.state.as_ref().is_some_and(|state| state.disabled);
            [
                agency.id.clone(),
                agency.name.clone(),
                agency.role.clone(),
                if disabled { "DISABLED" } else { "enabled" }.to_owned(),
                agency.connections.to_string(),
                if agency.connections == 0 {
                    "-".to_owned()
                } else {
                    ago(agency.connected_since.as_ref(), now)
                },
                agency.streams.to_string(),
                ago(agency.last_publish.as_ref(), now),
                match &agency.last_refusal {
                    None => "-".to_owned(),
                    Some(at) => format!("{}: {}", ago(Some(at), now), agency.last_refusal_reason),
                },
            ]
        })
        .collect();
    table(
        &[
            "AGENCY",
            "NAME",
            "ROLE",
            "STATE",
            "CONNECTIONS",
            "CONNECTED",
            "STREAMS",
            "LAST PUBLISH",
            "LAST REFUSAL",
        ],
        &rows,
    )
}

/// `admin subscriptions`.
pub async fn subscriptions(
    client: &mut OperationsClient<Channel>,
    json: bool,
    lagging: Option<u64>,
    owner: Option<String>,
) -> ExitCode {
    let request = pb::ListSubscriptionsRequest {
        min_lag: lagging.unwrap_or(0),
        owner: owner.unwrap_or_default(),
    };
    match client.list_subscriptions(request).await {
        Ok(response) => {
            let list = response.into_inner();
            output::print(&if json {
                output::json(&list, "liandong.v1.SubscriptionList")
            } else {
                subscriptions_text(&list, output::now())
            })
        }
        Err(status) => refused(&status),
    }
}

/// The subscriptions as a table, times seen at `now` (unix seconds).
pub fn subscriptions_text(list: &pb::SubscriptionList, now: i64) -> String {
    if list.subscriptions.is_empty() {
        return "no subscription matches\n".to_owned();
    }
    let rows: Vec<[String; 9]> = list
        .subscriptions
        .iter()
        .map(|s| {
            [
                s.owner.clone(),
                s.name.clone(),
                if s.connected { "yes" } else { "no" }.to_owned(),
                if s.held_by.is_empty() {
                    "-".to_owned()
                } else {
                    s.held_by.clone()
                },
                s.acked_through.to_string(),
                output::lag(s.lag_messages, s.lag_capped, s.lag_seconds),
                s.in_flight.to_string(),
                ago(s.updated_at.as_ref(), now),
                s.filter.clone(),
            ]
        })
        .collect();
    table(
        &[
            "OWNER",
            "NAME",
            "CONNECTED",
            "HELD BY",
            "ACKED THROUGH",
            "LAG",
            "IN FLIGHT",
            "MOVED",
            "FILTER",
        ],
        &rows,
    )
}

/// `admin breaches`.
pub async fn breaches(
    client: &mut OperationsClient<Channel>,
    json: bool,
    region: String,
) -> ExitCode {
    match client
        .list_breaches(pb::ListBreachesRequest { region })
        .await
    {
        Ok(response) => {
            let list = response.into_inner();
            output::print(&if json {
                output::json(&list, "liandong.v1.SignalsResponse")
            } else if list.signals.is_empty() {
                "no open breach\n".to_owned()
            } else {
                signals_table(&list.signals)
            })
        }
        Err(status) => refused(&status),
    }
}

/// `admin audit-verify`: a progress bar on a terminal (none with
/// `--json`), then the result; exit 65 when a problem was found.
pub async fn audit_verify(client: &mut OperationsClient<Channel>, json: bool) -> ExitCode {
    let mut stream = match client.verify_audit(pb::VerifyAuditRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => return refused(&status),
    };
    let bar = indicatif::ProgressBar::hidden();
    if !json && std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "verifying the audit log {bar:40} {pos}/{len} rows ({eta} left)",
    ) {
        bar.set_style(style);
    }
    let last = loop {
        match stream.message().await {
            Ok(Some(progress)) if progress.done => break progress,
            Ok(Some(progress)) => {
                bar.set_length(progress.rows_total);
                bar.set_position(progress.rows_checked);
            }
            Ok(None) => {
                bar.finish_and_clear();
                eprintln!("liandong-gateway admin: the gateway ended the walk without a result");
                return ExitCode::from(EX_UNAVAILABLE);
            }
            Err(status) => {
                bar.finish_and_clear();
                return refused(&status);
            }
        }
    };
    bar.finish_and_clear();
    let printed = output::print(&if json {
        output::json(&last, "liandong.v1.AuditVerifyProgress")
    } else {
        audit_text(&last)
    });
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    if last.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EX_DATAERR)
    }
}

/// The result of an audit walk for people.
pub fn audit_text(result: &pb::AuditVerifyProgress) -> String {
    let mut text = if result.clean {
        format!(
            "audit log: {} rows checked, no problem found; {} signed checkpoint(s) match\n",
            result.rows_checked, result.checkpoints_verified
        )
    } else {
        format!(
            "audit log: {} rows checked, {} problem(s); {} signed checkpoint(s) match\n",
            result.rows_checked,
            result.problems.len(),
            result.checkpoints_verified
        )
    };
    for problem in &result.problems {
        text += &format!("  {problem}\n");
    }
    text
}

#[cfg(test)]
mod tests;
