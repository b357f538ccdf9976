//! The task that emits what falls due with time: one per gateway process,
//! started by `serve` and stopped with it.
//!
//! It sleeps until the earliest open due time or announcement release
//! time, at most [`MAX_SLEEP`] (so a clock started by another replica, or a
//! store that recovers, is noticed in time), and wakes early when a publish
//! starts a clock. Each round first computes the due time of clocks that
//! waited for a calendar year, then fires what is due
//! ([`deadlines::fire_due`]), releases the announcements whose time came
//! ([`announcements::due_in`]) and sends the statistics reports of a period
//! that ended ([`scheduled::emit_due`]), and wakes the subscriptions what
//! it emitted concerns. Each looks first with a read, so a round with
//! nothing due writes nothing. A failed round is logged (throttled) and
//! retried on the next one; its transaction left nothing behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use liandong_core::domain::Instant;

use super::emit::{Emitted, Emitter};
use super::{Clock, deadlines};
use crate::Gateway;
use crate::announcements;
use crate::reports::ReportSettings;
use crate::reports::scheduled;
use crate::routing;
use crate::store::{self, LogThrottle, StoreError};

#[cfg(test)]
mod tests;

/// The longest the timer sleeps between rounds.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The shortest pause between rounds that found work failing.
const MIN_SLEEP: Duration = Duration::from_millis(10);

/// Starts the timer; it ends when the gateway stops.
pub fn spawn(
    gateway: Arc<Gateway>,
    reports: ReportSettings,
    clock: Arc<dyn Clock>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let log = LogThrottle::default();
        loop {
            let sleep = match round(&gateway, &reports, clock.as_ref()).await {
                Ok(sleep) => sleep,
                Err(error) => {
                    if let Some(count) = log.occurrence(&error.to_string()) {
                        tracing::error!(%error, occurrences = count, "emitting what fell due failed; retrying");
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
    reports: &ReportSettings,
    clock: &dyn Clock,
) -> Result<Duration, StoreError> {
    let mechanism = gateway.mechanism.load_full();
    deadlines::compute_pending(&gateway.store, &mechanism).await?;
    loop {
        let outcome =
            deadlines::fire_due(&gateway.store, &mechanism, &gateway.key, clock.now()).await?;
        wake(gateway, &outcome.fired);
        if !outcome.more {
            break;
        }
    }
    release_announcements(gateway, clock.now()).await?;
    send_reports(gateway, reports, clock.now()).await?;
    let now = clock.now().unix_micros();
    let release = announcements::next_release(&gateway.store).await?;
    let next = [deadlines::next_due(&gateway.store).await?, release]
        .into_iter()
        .flatten()
        .min();
    Ok(match next {
        Some(due) => {
            let wait = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
            Duration::from_micros(wait).clamp(MIN_SLEEP, MAX_SLEEP)
        }
        None => MAX_SLEEP,
    })
}

fn wake(gateway: &Gateway, emitted: &[Emitted]) {
    for notification in emitted {
        routing::wake::stored(gateway, &notification.receipt, &notification.notification);
    }
}

/// Releases, in one transaction, the announcements whose release time has
/// come with every approval (or version) in.
async fn release_announcements(gateway: &Gateway, now: Instant) -> Result<(), StoreError> {
    if announcements::next_release(&gateway.store)
        .await?
        .is_none_or(|at| at > now.unix_micros())
    {
        return Ok(());
    }
    let backend = gateway.store.backend();
    let key = gateway.key.clone();
    let released = gateway
        .store
        .write("release_announcements", move |conn| {
            Box::pin(async move {
                store::lock_publish(conn, backend).await?;
                let mut emitted = Vec::new();
                for release in announcements::due_in(conn, now).await? {
                    emitted.push(announcements::release_in(conn, &key, &release, now).await?);
                }
                Ok(emitted)
            })
        })
        .await?;
    wake(gateway, &released);
    Ok(())
}

/// Sends each member agency its statistics report of the period that
/// ended last, once.
async fn send_reports(
    gateway: &Gateway,
    reports: &ReportSettings,
    now: Instant,
) -> Result<(), StoreError> {
    let rules = gateway.rules();
    let pending = {
        let mut conn = gateway.store.read_connection().await?;
        scheduled::pending(&mut conn, &rules, reports.schedule, &reports.time_zone, now).await?
    };
    let Some(period) = pending else {
        return Ok(());
    };
    let backend = gateway.store.backend();
    let emitter = Arc::new(Emitter::new(gateway.key.clone()));
    let (schedule, zone) = (reports.schedule, reports.time_zone.clone());
    let sender = emitter.clone();
    let sent = gateway
        .store
        .write("statistics_reports", move |conn| {
            Box::pin(async move {
                store::lock_publish(conn, backend).await?;
                scheduled::emit_due(conn, sender.as_ref(), &rules, schedule, &zone, now).await
            })
        })
        .await?;
    tracing::info!(
        period = %period.name(),
        reports = sent.len(),
        "statistics reports sent to the member agencies"
    );
    wake(gateway, &emitter.take());
    Ok(())
}
