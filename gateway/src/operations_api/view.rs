//! What operators read: status, agencies, subscriptions, breaches, audit
//! verification, reports. Nothing here changes anything or returns case
//! content; a bad argument is `INVALID_ARGUMENT` naming the field.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use liandong_core::domain::AgencyId;
use liandong_core::pb;

use super::ProgressStream;
use crate::Gateway;
use crate::error::ApiError;
use crate::ops::snapshot;
use crate::reports::{self, ReportSettings, Viewer};
use crate::store::audit::{AuditReport, AuditVerifyOptions};
use crate::store::verify::Progress;

/// Progress messages a `VerifyAudit` stream may hold before the walk
/// skips sending one (the final message is always sent).
const PROGRESS_BUFFER: usize = 16;

/// Progress messages sent over a walk, at most (plus the first and last).
const PROGRESS_STEPS: u64 = 100;

/// `GetStatus`.
pub async fn status(gateway: &Gateway) -> Result<pb::GatewayStatus, ApiError> {
    Ok(snapshot::status(gateway).await?)
}

/// `ListAgencies`.
pub async fn agencies(gateway: &Gateway) -> Result<pb::AgencyList, ApiError> {
    let agencies = snapshot::agencies(gateway).await?;
    Ok(pb::AgencyList { agencies })
}

/// `ListSubscriptions`: `owner` empty or an agency id (registered or
/// not: a removed agency's subscriptions stay stored).
pub async fn subscriptions(
    gateway: &Gateway,
    request: &pb::ListSubscriptionsRequest,
) -> Result<pb::SubscriptionList, ApiError> {
    if !request.owner.is_empty() {
        AgencyId::parse("owner", &request.owner)?;
    }
    let subscriptions = snapshot::subscriptions(gateway, request).await?;
    Ok(pb::SubscriptionList { subscriptions })
}

/// `ListBreaches`: `region` empty or six digits.
pub async fn breaches(
    gateway: &Gateway,
    settings: &ReportSettings,
    request: &pb::ListBreachesRequest,
) -> Result<pb::SignalsResponse, ApiError> {
    let pb::ListBreachesRequest { region } = request;
    let region = reports::parse_region(region)?;
    let signals = snapshot::breaches(gateway, &settings.supervision, region).await?;
    Ok(pb::SignalsResponse { signals })
}

/// `VerifyAudit`: walks the audit chain (against the gateway's own public
/// key) in a task of its own, streaming progress, then the result. The
/// walk stops when the caller goes away.
pub async fn verify_audit(gateway: Arc<Gateway>) -> Result<ProgressStream, Status> {
    let (sender, receiver) = mpsc::channel(PROGRESS_BUFFER);
    tokio::spawn(async move {
        let progress = StreamProgress {
            sender: sender.clone(),
            total: AtomicU64::new(0),
            checked: AtomicU64::new(0),
        };
        let options = AuditVerifyOptions {
            from_id: 0,
            public_key: Some(gateway.key.public_key()),
            checkpoint_file: None,
        };
        let walk = gateway.store.verify_audit(&options, &progress);
        let last = tokio::select! {
            result = walk => match result {
                Ok(report) => Ok(conclusion(&report, progress.total.load(Ordering::Relaxed))),
                Err(error) => Err(Status::from(ApiError::from(error))),
            },
            () = sender.closed() => return,
        };
        let _ = sender.send(last).await;
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// The last message of a walk: its result.
fn conclusion(report: &AuditReport, total: u64) -> pb::AuditVerifyProgress {
    let mut problems: Vec<String> = report
        .problems
        .iter()
        .map(|problem| match problem.row {
            Some(row) => format!("{} at row {row}: {}", problem.kind.as_str(), problem.detail),
            None => format!("{}: {}", problem.kind.as_str(), problem.detail),
        })
        .collect();
    if report.problems_omitted > 0 {
        problems.push(format!("… and {} more", report.problems_omitted));
    }
    pb::AuditVerifyProgress {
        rows_checked: report.rows_checked,
        rows_total: total.max(report.rows_checked),
        done: true,
        clean: report.is_clean(),
        problems,
        checkpoints_verified: report
            .checkpoints
            .iter()
            .filter(|c| c.matches && c.signature_valid == Some(true))
            .count() as u64,
    }
}

/// Sends a progress message at the start and every hundredth of the walk,
/// dropping one when the caller reads slower than the walk goes.
struct StreamProgress {
    sender: mpsc::Sender<Result<pb::AuditVerifyProgress, Status>>,
    total: AtomicU64,
    checked: AtomicU64,
}

impl StreamProgress {
    fn report(&self, checked: u64) {
        let _ = self.sender.try_send(Ok(pb::AuditVerifyProgress {
            rows_checked: checked,
            rows_total: self.total.load(Ordering::Relaxed).max(checked),
            ..Default::default()
        }));
    }
}

impl Progress for StreamProgress {
    fn start(&self, rows: u64) {
        self.total.store(rows, Ordering::Relaxed);
        self.report(0);
    }

    fn advance(&self) {
        let checked = self.checked.fetch_add(1, Ordering::Relaxed) + 1;
        let step = (self.total.load(Ordering::Relaxed) / PROGRESS_STEPS).max(1);
        if checked.is_multiple_of(step) {
            self.report(checked);
        }
    }
}

/// `GetReport`: the operator's view (everything stored), with the same
/// validation as `Supervision.GetReport`.
pub async fn report(
    gateway: &Gateway,
    settings: &ReportSettings,
    request: &pb::ReportRequest,
) -> Result<pb::StatisticsReport, ApiError> {
    reports::answer(
        &gateway.store,
        &gateway.rules(),
        &Viewer::Operator,
        settings,
        request,
    )
    .await
}

#[cfg(test)]
mod tests;
