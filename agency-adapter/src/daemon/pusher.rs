//! The pusher: the one task that sends the outbox to the gateway, in
//! acceptance order, over one long-lived `PublishStream` with up to
//! `outbox.max_in_flight` notifications awaiting their receipt.
//!
//! A row leaves the outbox only when the gateway's receipt for it arrives
//! (moved to `sent` in the same transaction as its neighbours' receipts).
//! When the connection or the stream fails, whatever has no receipt is sent
//! again on the next stream, after an exponential backoff with jitter;
//! the ids were fixed at acceptance, so the gateway answers a resend of
//! something it stored with the original receipt. Receipts come in request
//! order and a refusal ends the stream, so a refusal is always about the
//! oldest unreceipted row: when retrying cannot fix it (`INVALID_ARGUMENT`,
//! `PERMISSION_DENIED`, `FAILED_PRECONDITION` sent by the gateway) that row
//! moves to the dead letters and the rest is sent again at once.
//!
//! The one `PERMISSION_DENIED` that is not about the row is the gateway's
//! refusal of this agency as disabled by its operators (marked
//! `liandong-refusal: agency-disabled`, see [`crate::daemon::disabled`]):
//! then every row stays in the outbox and is retried with the same
//! backoff, with a warning at most once a minute, until the agency is
//! enabled again. A connection the gateway closes right after the
//! handshake (as it does for a disabled agency) is a transport failure,
//! retried the same way.
//!
//! This module must never drop a row without a receipt or a dead letter,
//! and never log content: ids, sequences and status codes only.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use liandong_core::domain::Instant;
use liandong_core::pb;
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, GatewayClient};
use crate::config::GatewaySettings;
use crate::config::daemon::OutboxSettings;
use crate::daemon::backoff::Backoff;
use crate::daemon::disabled::{self, Warnings};
use crate::error::{code_name, describe_status, is_transport_failure};
use crate::store::{SentReceipt, Store, StoreError};

#[cfg(test)]
mod tests;

/// How long a stopping pusher waits for the receipts of what it sent.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How often an idle pusher looks at the outbox even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// The gateway codes that retrying cannot fix. A refusal of this agency
/// as disabled by the gateway's operators is not one of them: it ends
/// when they enable it again.
pub fn is_permanent(status: &tonic::Status) -> bool {
    !is_transport_failure(status)
        && disabled::disabled_reason(status).is_none()
        && matches!(
            status.code(),
            tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::FailedPrecondition
        )
}

/// What the pusher needs.
#[derive(Debug, Clone)]
pub struct Pusher {
    /// The outbox.
    pub store: Store,
    /// How to reach the gateway.
    pub gateway: GatewaySettings,
    /// Window and retry settings.
    pub outbox: OutboxSettings,
    /// Woken when a row is accepted.
    pub wake: Arc<Notify>,
    /// Woken when a row becomes a dead letter.
    pub dead_letter: Arc<Notify>,
}

/// Why one stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// Asked to stop.
    Shutdown,
    /// A row became a dead letter or the gateway ended the stream cleanly:
    /// open the next stream at once.
    Reopen,
}

/// Why one stream failed: worth a retry after a delay.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Connect(#[from] ClientError),
    #[error("{}", describe_status(.0))]
    Status(tonic::Status),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Pusher {
    /// Sends the outbox until `shutdown` is cancelled; then waits up to
    /// [`DRAIN_GRACE`] for the receipts of what was sent.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.outbox.retry);
        // Kept across streams (a dead letter reopens the stream, not the
        // connection); dropped after any failure.
        let mut client = None;
        let mut warnings = Warnings::default();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.stream(&shutdown, &mut backoff, &mut client).await {
                Ok(StreamEnd::Shutdown) => return,
                Ok(StreamEnd::Reopen) => continue,
                Err(error) => {
                    client = None;
                    let message = error.to_string();
                    let delay = backoff.next_delay();
                    match error.disabled_reason() {
                        Some(reason) => self.disabled(reason, delay, &mut warnings).await,
                        None => tracing::warn!(
                            error = %message,
                            retry.in_ms = delay.as_millis() as u64,
                            "cannot push to the gateway; retrying"
                        ),
                    }
                    if let Err(e) = self.store.record_push_error(&message).await {
                        tracing::error!(error = %e, "cannot record the push error");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection and one stream: sends rows in order, marks them sent
    /// as receipts arrive.
    async fn stream(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        client: &mut Option<GatewayClient>,
    ) -> Result<StreamEnd, StreamError> {
        // Do not connect while nothing waits: an idle adapter keeps no
        // connection it does not need.
        if self.store.pending_after(0, 1).await?.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(StreamEnd::Shutdown),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            return Ok(StreamEnd::Reopen);
        }
        let client = match client {
            Some(client) => client,
            None => client.insert(GatewayClient::connect(&self.gateway).await?),
        };
        let window = self.outbox.max_in_flight as usize;
        let (requests, receiver) = mpsc::channel(window);
        let mut receipts = client
            .publish_stream(receiver)
            .await
            .map_err(StreamError::Status)?;
        tracing::debug!("publish stream open");
        let mut requests = Some(requests);
        let mut in_flight: VecDeque<(i64, String)> = VecDeque::new();
        let mut cursor = 0i64;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            if let Some(sender) = requests.as_ref().filter(|_| in_flight.len() < window) {
                let room = (window - in_flight.len()) as u32;
                for row in self.store.pending_after(cursor, room).await? {
                    let notification =
                        pb::Notification::decode(row.payload.as_slice()).map_err(|e| {
                            StreamError::Protocol(format!(
                                "outbox row {} does not decode: {e}",
                                row.local_id
                            ))
                        })?;
                    let request = pb::PublishRequest {
                        notification: Some(notification),
                    };
                    if sender.send(request).await.is_err() {
                        return Err(StreamError::Protocol("the publish stream closed".into()));
                    }
                    tracing::debug!(
                        notification.id = %row.notification_id,
                        outbox.local_id = row.local_id,
                        "sent"
                    );
                    cursor = row.local_id;
                    in_flight.push_back((row.local_id, row.notification_id));
                }
            }
            if requests.is_none() && in_flight.is_empty() {
                return Ok(StreamEnd::Shutdown);
            }
            let deadline = drain_deadline;
            let until_drained = async move {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let first = tokio::select! {
                () = shutdown.cancelled(), if requests.is_some() => {
                    // Stop sending; the gateway ends the stream once it has
                    // answered everything already sent.
                    requests = None;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    continue;
                }
                () = until_drained => {
                    tracing::info!(
                        in_flight = in_flight.len(),
                        "stopping without the last receipts; they are sent again at the next start"
                    );
                    return Ok(StreamEnd::Shutdown);
                }
                () = self.wake.notified(), if requests.is_some() && in_flight.len() < window => {
                    continue;
                }
                () = tokio::time::sleep(IDLE_POLL), if requests.is_some() => continue,
                message = receipts.message() => message,
            };
            // Take every answer already here, then commit their receipts
            // in one transaction.
            let mut answers = vec![first];
            while matches!(answers.last(), Some(Ok(Some(_)))) {
                match receipts.message().now_or_never() {
                    Some(next) => answers.push(next),
                    None => break,
                }
            }
            let mut sent = Vec::new();
            let mut end = None;
            for answer in answers {
                match answer {
                    Ok(Some(receipt)) => {
                        let Some((local_id, notification_id)) = in_flight.pop_front() else {
                            end = Some(Err(StreamError::Protocol(
                                "a receipt for nothing sent".into(),
                            )));
                            break;
                        };
                        if receipt.notification_id != notification_id {
                            end = Some(Err(StreamError::Protocol(format!(
                                "receipt for {} where {notification_id} was expected",
                                receipt.notification_id
                            ))));
                            break;
                        }
                        tracing::info!(
                            notification.id = %notification_id,
                            outbox.local_id = local_id,
                            receipt.sequence = receipt.sequence,
                            receipt.duplicate = receipt.duplicate,
                            "receipted"
                        );
                        sent.push(SentReceipt {
                            local_id,
                            sequence: receipt.sequence,
                            received_at: received_at(receipt.received_at),
                            duplicate: receipt.duplicate,
                        });
                    }
                    Ok(None) => {
                        end = Some(if requests.is_none() && in_flight.is_empty() {
                            Ok(StreamEnd::Shutdown)
                        } else if in_flight.is_empty() {
                            Ok(StreamEnd::Reopen)
                        } else {
                            Err(StreamError::Protocol(format!(
                                "the gateway ended the stream with {} notifications unanswered",
                                in_flight.len()
                            )))
                        });
                        break;
                    }
                    Err(status) => {
                        end = Some(self.refused(status, &in_flight).await);
                        break;
                    }
                }
            }
            if !sent.is_empty() {
                self.store.mark_sent(&sent).await?;
                backoff.reset();
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// The gateway refused this agency as disabled by its operators: says
    /// so at most once per [`disabled::WARN_EVERY`], with how many rows
    /// wait; nothing leaves the outbox.
    async fn disabled(&self, reason: &str, delay: Duration, warnings: &mut Warnings) {
        if !warnings.due() {
            tracing::debug!(
                retry.in_ms = delay.as_millis() as u64,
                "the agency is still disabled by the gateway's operators; retrying"
            );
            return;
        }
        match self.store.outbox_depth().await {
            Ok(waiting) => tracing::warn!(
                outbox.pending = waiting,
                retry.in_ms = delay.as_millis() as u64,
                "the gateway's operators have disabled this agency: {reason}; \
                 {waiting} notifications wait in the outbox"
            ),
            Err(error) => tracing::warn!(
                %error,
                retry.in_ms = delay.as_millis() as u64,
                "the gateway's operators have disabled this agency: {reason}; \
                 the notifications wait in the outbox"
            ),
        }
    }

    /// The stream ended with `status`: a dead letter for the oldest row
    /// when retrying cannot fix it, otherwise an error to retry.
    async fn refused(
        &self,
        status: tonic::Status,
        in_flight: &VecDeque<(i64, String)>,
    ) -> Result<StreamEnd, StreamError> {
        match in_flight.front() {
            Some((local_id, notification_id)) if is_permanent(&status) => {
                let code = code_name(status.code());
                tracing::warn!(
                    notification.id = %notification_id,
                    outbox.local_id = local_id,
                    status.code = code,
                    "refused by the gateway for good: moved to the dead letters"
                );
                self.store
                    .dead_letter_row(*local_id, code, status.message())
                    .await?;
                self.store
                    .record_push_error(&format!("{notification_id}: {}", describe_status(&status)))
                    .await?;
                self.dead_letter.notify_one();
                Ok(StreamEnd::Reopen)
            }
            _ => Err(StreamError::Status(status)),
        }
    }
}

impl StreamError {
    /// The operator's reason when the gateway refused this agency as
    /// disabled.
    fn disabled_reason(&self) -> Option<&str> {
        match self {
            Self::Status(status) => disabled::disabled_reason(status),
            _ => None,
        }
    }
}

fn received_at(timestamp: Option<prost_types::Timestamp>) -> i64 {
    Instant::from_wire("received_at", timestamp)
        .map(Instant::unix_micros)
        .unwrap_or_else(|_| Instant::now().unix_micros())
}
