//! Inbound: each `[[subscription]]` of the config held open at the gateway,
//! every delivery handed to its sink and acknowledged only once the sink
//! took it.
//!
//! Order per delivery: skip the sink when this subscription already handed
//! over the same sequence or the same (sender, notification id) — a
//! redelivery after a reconnect or an ack timeout; otherwise hand it over,
//! retrying with backoff until the sink takes it; record it as handed
//! (committed); acknowledge it to the gateway. A crash between the sink
//! taking a delivery and the record is the one case where the sink sees it
//! twice; receivers drop duplicates by notification id. A lost connection
//! is reopened with backoff; the gateway resumes after the last
//! acknowledged sequence. So is a subscription refused or ended because
//! the gateway's operators disabled this agency (warned at most once a
//! minute, see [`crate::daemon::disabled`]): it reopens once they enable
//! it again.
//!
//! With `[verify]`, each new delivery is verified first ([`verify`]): one
//! that fails is, under `on_failure = "reject"`, written to the
//! subscription's `rejected` folder instead of the sink (atomically, with
//! the reason), recorded as handled and acknowledged; under `"warn"` it is
//! logged and handed to the sink. Every outcome is counted in the state
//! file (`status` shows the counts).
//!
//! This module must never acknowledge a delivery the sink (or the
//! `rejected` folder) has not taken, and never log content: sequences, ids
//! and subscription names only.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, GatewayClient, Subscription};
use crate::config::GatewaySettings;
use crate::config::daemon::OnFailure;
use crate::config::daemon::{RetrySettings, SubscriptionSettings};
use crate::daemon::backoff::Backoff;
use crate::daemon::disabled::{self, Warnings};
use crate::daemon::sink::{Item, Sink, SinkError, hand_with_retry, write_atomically};
use crate::error::describe_status;
use crate::store::{Store, StoreError, Verification};

pub mod verify;

use verify::{Verdict, Verifier};

#[cfg(test)]
mod tests;

/// How long a stopping subscription waits for its last acknowledgements
/// to reach the gateway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Backoff between attempts to (re)open a subscription.
const RECONNECT: RetrySettings = RetrySettings {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// One subscription and its sink.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Where progress and handed deliveries are recorded.
    pub store: Store,
    /// How to reach the gateway.
    pub gateway: GatewaySettings,
    /// The subscription.
    pub settings: SubscriptionSettings,
    /// Its sink.
    pub sink: Arc<Sink>,
    /// Verifies each delivery's signature (`[verify]`); `None`: nothing is
    /// verified.
    pub verifier: Option<Arc<Verifier>>,
}

#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error(transparent)]
    Connect(#[from] ClientError),
    #[error("{}", describe_status(.0))]
    Status(tonic::Status),
    #[error("the gateway ended the subscription")]
    Ended,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write a rejected delivery: {0}")]
    Reject(#[from] SinkError),
}

impl InboundError {
    /// The operator's reason when the gateway refused this agency as
    /// disabled.
    fn disabled_reason(&self) -> Option<&str> {
        match self {
            Self::Status(status) => disabled::disabled_reason(status),
            _ => None,
        }
    }
}

enum Handled {
    Acked,
    Shutdown,
}

impl Inbound {
    /// Follows the subscription until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.settings.name.as_str().to_owned();
        if let Err(error) = self.store.ensure_subscription(&name).await {
            tracing::error!(
                subscription.name = %name,
                error = %error,
                "cannot record the subscription"
            );
        }
        let mut backoff = Backoff::new(RECONNECT);
        let mut warnings = Warnings::default();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.session(&shutdown, &mut backoff).await {
                Ok(()) => return,
                Err(error) => {
                    let delay = backoff.next_delay();
                    match error.disabled_reason() {
                        Some(reason) if warnings.due() => tracing::warn!(
                            subscription.name = %name,
                            retry.in_ms = delay.as_millis() as u64,
                            "the gateway's operators have disabled this agency: {reason}; \
                             the subscription reopens once it is enabled"
                        ),
                        Some(_) => tracing::debug!(
                            subscription.name = %name,
                            retry.in_ms = delay.as_millis() as u64,
                            "the agency is still disabled by the gateway's operators; reopening"
                        ),
                        None => tracing::warn!(
                            subscription.name = %name,
                            error = %error,
                            retry.in_ms = delay.as_millis() as u64,
                            "subscription interrupted; reopening"
                        ),
                    }
                    if let Err(e) = self
                        .store
                        .record_subscription_error(&name, &error.to_string())
                        .await
                    {
                        tracing::error!(error = %e, "cannot record the subscription error");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), InboundError> {
        let name = self.settings.name.as_str();
        let mut client = GatewayClient::connect(&self.gateway).await?;
        let mut subscription = client
            .subscribe(self.settings.open())
            .await
            .map_err(InboundError::Status)?;
        tracing::info!(subscription.name = %name, "subscription open");
        self.store.clear_subscription_failure(name).await?;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => {
                    close(subscription, name).await;
                    return Ok(());
                }
                next = subscription.next() => next,
            };
            let delivery = match next {
                Ok(Some(delivery)) => delivery,
                Ok(None) => return Err(InboundError::Ended),
                Err(status) => return Err(InboundError::Status(status)),
            };
            match self.handle(&subscription, delivery, shutdown).await? {
                Handled::Acked => backoff.reset(),
                Handled::Shutdown => {
                    close(subscription, name).await;
                    return Ok(());
                }
            }
        }
    }

    async fn handle(
        &self,
        subscription: &Subscription,
        delivery: liandong_core::pb::Delivery,
        shutdown: &CancellationToken,
    ) -> Result<Handled, InboundError> {
        let name = self.settings.name.as_str();
        let sequence = delivery.sequence;
        let notification_id = delivery
            .notification
            .as_ref()
            .map(|n| n.notification_id.clone())
            .unwrap_or_default();
        let sender = delivery.sender.clone();
        if self
            .store
            .is_handled(name, sequence, &sender, &notification_id)
            .await?
        {
            tracing::info!(
                subscription.name = %name,
                delivery.sequence = sequence,
                delivery.attempt = delivery.attempt,
                notification.id = %notification_id,
                "handed to the sink before; acknowledging without handing it again"
            );
        } else {
            match self.verdict(&delivery) {
                Some((OnFailure::Reject, Verdict::Failed(error))) => {
                    self.reject(&delivery, &notification_id, &error.to_string())
                        .await?;
                }
                verdict => {
                    let verification = self.verification(verdict, &delivery, &notification_id);
                    let item = Item::delivery(name, &delivery);
                    let handed =
                        hand_with_retry(&self.sink, &item, shutdown, Some((&self.store, name)))
                            .await;
                    if !handed {
                        return Ok(Handled::Shutdown);
                    }
                    self.store
                        .record_handled_as(name, sequence, &sender, &notification_id, verification)
                        .await?;
                    tracing::info!(
                        subscription.name = %name,
                        delivery.sequence = sequence,
                        delivery.withheld = delivery.withheld,
                        notification.id = %notification_id,
                        "handed to the sink"
                    );
                }
            }
        }
        if subscription.ack(&[sequence]).await.is_err() {
            return Err(InboundError::Ended);
        }
        self.store.record_acked(name, sequence).await?;
        Ok(Handled::Acked)
    }
}

impl Inbound {
    /// Writes a delivery that failed verification into the `rejected`
    /// folder — never to the sink — and records it as handled, so it is
    /// then acknowledged. A failure to write leaves it unacknowledged, to
    /// come again.
    async fn reject(
        &self,
        delivery: &liandong_core::pb::Delivery,
        notification_id: &str,
        reason: &str,
    ) -> Result<(), InboundError> {
        let name = self.settings.name.as_str();
        self.write_rejected(delivery, reason)?;
        self.store
            .record_handled_as(
                name,
                delivery.sequence,
                &delivery.sender,
                notification_id,
                Some(Verification::Rejected),
            )
            .await?;
        tracing::warn!(
            subscription.name = %name,
            delivery.sequence = delivery.sequence,
            delivery.sender = %delivery.sender,
            notification.id = %notification_id,
            folder = %self.settings.rejected.display(),
            reason = %reason,
            "delivery rejected: its signature does not verify; written to the rejected folder, not to the sink"
        );
        Ok(())
    }

    /// What `[verify]` says of `delivery`, under the registry in force
    /// now, with what to do on failure; `None` without `[verify]`.
    fn verdict(&self, delivery: &liandong_core::pb::Delivery) -> Option<(OnFailure, Verdict)> {
        let verifier = self.verifier.as_ref()?;
        Some((verifier.on_failure(), verifier.check(delivery)))
    }

    /// How a delivery about to be handed to the sink fared under
    /// `[verify]`, logged (a failure passed on: `on_failure = "warn"`).
    fn verification(
        &self,
        verdict: Option<(OnFailure, Verdict)>,
        delivery: &liandong_core::pb::Delivery,
        id: &str,
    ) -> Option<Verification> {
        let (_, verdict) = verdict?;
        let name = self.settings.name.as_str();
        Some(match verdict {
            Verdict::Verified { key_id } => {
                tracing::debug!(
                    subscription.name = %name,
                    delivery.sequence = delivery.sequence,
                    signing.key_id = %key_id,
                    "signature verified"
                );
                Verification::Verified
            }
            Verdict::Unverifiable { reason } => {
                tracing::debug!(
                    subscription.name = %name,
                    delivery.sequence = delivery.sequence,
                    notification.id = %id,
                    reason,
                    "cannot verify the signature; passed on"
                );
                Verification::Unverifiable
            }
            Verdict::Failed(error) => {
                tracing::warn!(
                    subscription.name = %name,
                    delivery.sequence = delivery.sequence,
                    delivery.sender = %delivery.sender,
                    notification.id = %id,
                    reason = %error,
                    "the delivery's signature does not verify; handed to the sink anyway (verify.on_failure = \"warn\")"
                );
                Verification::FailedPassed
            }
        })
    }

    /// Writes a rejected delivery, with the reason, into the
    /// subscription's `rejected` folder, atomically.
    fn write_rejected(
        &self,
        delivery: &liandong_core::pb::Delivery,
        reason: &str,
    ) -> Result<(), SinkError> {
        let name = self.settings.name.as_str();
        let body = serde_json::json!({
            "kind": "rejected_delivery",
            "subscription": name,
            "reason": reason,
            "delivery": liandong_core::json::to_json(delivery),
        });
        let mut bytes = serde_json::to_vec_pretty(&body).expect("a JSON value serialises");
        bytes.push(b'\n');
        let target = self
            .settings
            .rejected
            .join(format!("{name}-{:020}.json", delivery.sequence));
        write_atomically(&target, &bytes)
    }
}

/// Creates a subscription's `rejected` folder (and its parents) and
/// makes it readable by the adapter's user only (0700).
pub fn prepare_rejected(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

async fn close(subscription: Subscription, name: &str) {
    if let Err(status) = subscription.close(CLOSE_GRACE).await {
        tracing::info!(
            subscription.name = %name,
            status = %describe_status(&status),
            "subscription ended with an error while closing"
        );
    }
}
