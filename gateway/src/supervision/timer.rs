//! The task that fires due deadlines: one per gateway process, started by
//! `serve` and stopped with it.
//!
//! It sleeps until the earliest open due time, at most [`MAX_SLEEP`] (so a
//! clock started by another replica, or a store that recovers, is noticed
//! in time), and wakes early when a publish starts a clock. Each round
//! first computes the due time of clocks that waited for a calendar year,
//! then fires what is due ([`deadlines::fire_due`]) and wakes the
//! subscriptions the alerts concern. A failed round is logged (throttled)
//! and retried on the next one; the transaction left nothing behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Clock, GatewayKey, deadlines};
use crate::Gateway;
use crate::routing;
use crate::store::LogThrottle;

/// The longest the timer sleeps between rounds.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The shortest pause between rounds that found work failing.
const MIN_SLEEP: Duration = Duration::from_millis(10);

/// Starts the timer; it ends when the gateway stops.
pub fn spawn(gateway: Arc<Gateway>, key: Arc<GatewayKey>, clock: Arc<dyn Clock>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let log = LogThrottle::default();
        loop {
            let sleep = match round(&gateway, &key, clock.as_ref()).await {
                Ok(sleep) => sleep,
                Err(error) => {
                    if let Some(count) = log.occurrence(&error.to_string()) {
                        tracing::error!(%error, occurrences = count, "firing due deadlines failed; retrying");
                    }
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = gateway.stop.cancelled() => return,
                () = gateway.deadline_timer.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    })
}

/// One round: pending due times, then everything due now; returns how long
/// to sleep before the next.
pub async fn round(
    gateway: &Gateway,
    key: &Arc<GatewayKey>,
    clock: &dyn Clock,
) -> Result<Duration, crate::store::StoreError> {
    let mechanism = gateway.mechanism.load_full();
    deadlines::compute_pending(&gateway.store, &mechanism).await?;
    loop {
        let outcome = deadlines::fire_due(&gateway.store, &mechanism, key, clock.now()).await?;
        for fired in &outcome.fired {
            routing::wake::stored(gateway, &fired.receipt, &fired.notification);
        }
        if !outcome.more {
            break;
        }
    }
    let now = clock.now().unix_micros();
    Ok(match deadlines::next_due(&gateway.store).await? {
        Some(due) => {
            let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
            Duration::from_micros(wait).clamp(MIN_SLEEP, MAX_SLEEP)
        }
        None => MAX_SLEEP,
    })
}
