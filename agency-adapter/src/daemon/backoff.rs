//! Exponential backoff with jitter, for every retry loop of the daemon
//! (reaching the gateway, a failing webhook or sink).
//!
//! Each delay doubles from `initial` up to `max`; the delay actually waited
//! is drawn between half of it and all of it ("equal jitter"), so adapters
//! that lost the gateway together do not come back in step. This module
//! must never sleep itself: callers wait the delays it returns.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

use crate::config::daemon::RetrySettings;

#[cfg(test)]
mod tests;

/// The retry delays of one loop.
#[derive(Debug)]
pub struct Backoff {
    settings: RetrySettings,
    /// The next delay before jitter; `None` before the first failure.
    next: Option<Duration>,
    rng: SystemRandom,
}

impl Backoff {
    /// A backoff within `settings`.
    pub fn new(settings: RetrySettings) -> Self {
        Self {
            settings,
            next: None,
            rng: SystemRandom::new(),
        }
    }

    /// The delay to wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .next
            .unwrap_or(self.settings.initial)
            .min(self.settings.max);
        self.next = Some(base.saturating_mul(2).min(self.settings.max));
        let half = base / 2;
        half + self.random_up_to(base - half)
    }

    /// Starts again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.next = None;
    }

    /// The delay before jitter the next failure would use.
    pub fn current(&self) -> Duration {
        self.next.unwrap_or(self.settings.initial)
    }

    fn random_up_to(&self, limit: Duration) -> Duration {
        let mut bytes = [0u8; 8];
        if self.rng.fill(&mut bytes).is_err() {
            return limit;
        }
        let nanos = limit.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(u64::from_le_bytes(bytes) % (nanos + 1))
    }
}
