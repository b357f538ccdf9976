//! The `tail` command: open a durable subscription, print each delivery as
//! one JSON line on standard output (flushed per line) and acknowledge it
//! once printed, until a stop rule (`--limit`, `--idle-exit`), a signal or
//! the gateway ends it.
//!
//! A delivery is acknowledged only after its line was written and flushed,
//! so a delivery that could not be printed is delivered again. On stopping,
//! the subscription is closed cleanly so the last acknowledgements reach
//! the gateway. This module must never log notification content: only the
//! sequence, notification id and case reference.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use liandong_core::json::to_json;

use crate::cli::TailArgs;
use crate::client::{GatewayClient, Subscription};
use crate::commands::write_json_line;
use crate::config::GatewaySettings;
use crate::error::{CommandError, code_name};
use crate::shutdown;

#[cfg(test)]
mod tests;

/// How long `tail` waits, when it stops on its own, for the gateway to end
/// the call after the request stream was closed (see
/// [`Subscription::close`]).
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// When [`follow`] stops on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopRules {
    /// Stop after this many deliveries, once they are acknowledged.
    pub limit: Option<u64>,
    /// Stop when no delivery arrived for this long.
    pub idle_exit: Option<Duration>,
}

impl From<&TailArgs> for StopRules {
    fn from(args: &TailArgs) -> Self {
        Self {
            limit: args.limit,
            idle_exit: args.idle_exit,
        }
    }
}

/// Why [`follow`] stopped without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailEnd {
    /// `limit` deliveries were printed and acknowledged.
    Limit,
    /// No delivery arrived for `idle_exit`.
    Idle,
    /// The gateway ended the stream with status OK.
    Ended,
    /// The shutdown future completed (a signal).
    Interrupted,
}

/// How [`follow`] ended, and how many deliveries it printed and
/// acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailSummary {
    /// Why it stopped.
    pub end: TailEnd,
    /// Deliveries printed and acknowledged.
    pub deliveries: u64,
}

/// Prints each delivery of `subscription` to `out` as one JSON line (the
/// JSON form of `Delivery`), flushed, then acknowledges it; stops by
/// `rules`, when `shutdown` completes, or when the gateway ends the stream.
/// A stream ended with an error status is returned as
/// [`CommandError::Gateway`]. Does not close the subscription.
pub async fn follow(
    subscription: &mut Subscription,
    name: &str,
    rules: StopRules,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<TailSummary, CommandError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut deliveries = 0u64;
    let summary = |end, deliveries| Ok(TailSummary { end, deliveries });
    loop {
        if rules.limit.is_some_and(|limit| deliveries >= limit) {
            return summary(TailEnd::Limit, deliveries);
        }
        let next = async {
            match rules.idle_exit {
                Some(idle) => tokio::time::timeout(idle, subscription.next()).await.ok(),
                None => Some(subscription.next().await),
            }
        };
        let received = tokio::select! {
            () = &mut shutdown => return summary(TailEnd::Interrupted, deliveries),
            received = next => received,
        };
        let delivery = match received {
            None => return summary(TailEnd::Idle, deliveries),
            Some(Ok(None)) => return summary(TailEnd::Ended, deliveries),
            Some(Err(status)) => return Err(status.into()),
            Some(Ok(Some(delivery))) => delivery,
        };
        let (notification_id, case_ref) = delivery
            .notification
            .as_ref()
            .map(|n| (n.notification_id.as_str(), n.case_ref.as_str()))
            .unwrap_or_default();
        tracing::debug!(
            subscription.name = %name,
            delivery.sequence = delivery.sequence,
            delivery.attempt = delivery.attempt,
            delivery.withheld = delivery.withheld,
            notification.id = %notification_id,
            case.ref = %case_ref,
            "delivery"
        );
        write_json_line(out, &to_json(&delivery))?;
        if let Err(error) = subscription.ack(&[delivery.sequence]).await {
            // The call has ended; its status says why, when it has one.
            return match tokio::time::timeout(CLOSE_GRACE, subscription.next()).await {
                Ok(Err(status)) => Err(status.into()),
                _ => Err(error.into()),
            };
        }
        deliveries += 1;
    }
}

/// The `tail` command: opens the subscription `args` describes with
/// `settings` and follows it on standard output until a stop rule, SIGINT
/// or SIGTERM (all exit 0), or the gateway ends it.
pub async fn tail(
    settings: &GatewaySettings,
    args: &TailArgs,
) -> Result<TailSummary, CommandError> {
    let name = args.subscription.as_str();
    let mut client = GatewayClient::connect(settings).await?;
    let mut subscription = client.subscribe(args.subscription_open()).await?;
    tracing::info!(subscription.name = %name, "following");
    let mut stdout = std::io::stdout();
    let result = follow(
        &mut subscription,
        name,
        StopRules::from(args),
        &mut stdout,
        shutdown::signal(),
    )
    .await;
    let ended_by_gateway = matches!(
        &result,
        Ok(TailSummary {
            end: TailEnd::Ended,
            ..
        }) | Err(CommandError::Gateway(_))
    );
    if !ended_by_gateway {
        // We stop: let the acknowledgements already queued reach the gateway.
        if let Err(status) = subscription.close(CLOSE_GRACE).await {
            tracing::info!(
                subscription.name = %name,
                status.code = code_name(status.code()),
                "the gateway ended the subscription with an error while closing"
            );
        }
    }
    if let Ok(summary) = &result {
        tracing::info!(
            subscription.name = %name,
            deliveries = summary.deliveries,
            end = ?summary.end,
            "stopped"
        );
    }
    result
}
