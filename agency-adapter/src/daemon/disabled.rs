//! When the gateway's operators disable this agency: every request is
//! refused with `PERMISSION_DENIED` marked `liandong-refusal:
//! agency-disabled` (the `liandong_core::refusal` marker), open streams end
//! with it, and new connections are closed right after the handshake.
//!
//! A disablement is an operator's temporary decision, not a verdict on any
//! notification: the pusher keeps every row in the outbox and retries with
//! its normal backoff, and each subscription reopens with its backoff,
//! until an operator enables the agency again. This module recognises the
//! refusal and paces the warning about it (at most once per
//! [`WARN_EVERY`] per task); it never drops, sends or acknowledges
//! anything itself.

use std::time::Duration;

use liandong_core::refusal;
use std::time::Instant;

#[cfg(test)]
mod tests;

/// The shortest time between two warnings of one task that the agency is
/// disabled.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// The operator's reason when `status` is the gateway's refusal of this
/// (disabled) agency; `None` for any other status.
pub fn disabled_reason(status: &tonic::Status) -> Option<&str> {
    if !refusal::is_agency_disabled(status) {
        return None;
    }
    // "agency <id> is disabled by an operator: <reason>"
    let message = status.message();
    Some(
        message
            .split_once("disabled by an operator: ")
            .map_or(message, |(_, reason)| reason),
    )
}

/// Paces one task's warnings that the agency is disabled.
#[derive(Debug, Default)]
pub struct Warnings {
    /// When the last warning was logged.
    last: Option<Instant>,
}

impl Warnings {
    /// True when a warning is due now (none was logged in the last
    /// [`WARN_EVERY`]); counts it as logged.
    pub fn due(&mut self) -> bool {
        self.due_at(Instant::now())
    }

    /// [`Warnings::due`] at `now`.
    fn due_at(&mut self, now: Instant) -> bool {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= WARN_EVERY);
        if due {
            self.last = Some(now);
        }
        due
    }
}
