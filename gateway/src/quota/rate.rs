//! The per-agency publish rate: a token bucket per registered agency
//! (GCRA, `governor`), shared by every connection and replica task of this
//! process, refilled at `limits.publish_per_second` and holding at most
//! `limits.publish_burst` notifications. `[limits.agency.<id>]` gives an
//! agency a bucket of its own size.
//!
//! Each notification takes one token, whether it comes by unary `Publish`
//! or as one message of a `PublishStream`. A unary publish finding the
//! bucket empty is refused ([`RateLimited`], `RESOURCE_EXHAUSTED`); a
//! stream waits for the next token ([`PublishRate::until_ready`]), so the
//! stream is paced rather than ended.
//!
//! Keys are only ever agencies of the registry in force: callers are
//! resolved (and unknown ones refused) before anything here is asked.
//! Buckets that are full again are forgotten at most every
//! [`SWEEP_INTERVAL`], so agencies removed from the registry do not stay
//! in memory. This module never builds a status and never audits: the
//! caller does, with the refusal it returns.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use liandong_core::domain::AgencyId;

#[cfg(test)]
mod tests;

/// Default notifications per second per agency (`limits.publish_per_second`).
pub const DEFAULT_PER_SECOND: u32 = 50;
/// Default bucket size per agency (`limits.publish_burst`).
pub const DEFAULT_BURST: u32 = 200;
/// Largest rate or burst the configuration accepts.
pub const MAX_SETTING: u32 = 1_000_000;
/// Full buckets are forgotten at most this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// One bucket's size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: NonZeroU32,
    /// Most tokens the bucket holds: how many notifications may arrive at
    /// once after a quiet period.
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            per_second: NonZeroU32::new(DEFAULT_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(DEFAULT_BURST).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The publish rates a configuration asks for (`[limits]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateSettings {
    /// Every agency's bucket unless overridden.
    pub default: Rate,
    /// Agencies with a bucket of their own size (`[limits.agency.<id>]`).
    pub agencies: BTreeMap<AgencyId, Rate>,
}

/// A notification refused because its sender's bucket is empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "publish rate limit of {} per second (burst {}) reached for {agency}; retry after ~{} ms",
    rate.per_second,
    rate.burst,
    retry_after.as_millis().max(1)
)]
pub struct RateLimited {
    /// The sender.
    pub agency: AgencyId,
    /// Its bucket.
    pub rate: Rate,
    /// When the next token is there.
    pub retry_after: Duration,
}

type Keyed<C> = RateLimiter<
    AgencyId,
    DefaultKeyedStateStore<AgencyId>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The buckets of every agency publishing through this process.
pub struct PublishRate<C: Clock = DefaultClock> {
    clock: C,
    /// The default rate, keyed by agency.
    shared: Keyed<C>,
    default: Rate,
    /// Agencies with a rate of their own.
    own: HashMap<AgencyId, (Rate, Direct<C>)>,
    /// When full buckets were last forgotten.
    swept: Mutex<C::Instant>,
}

impl<C: Clock> std::fmt::Debug for PublishRate<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishRate")
            .field("default", &self.default)
            .field("agencies", &self.shared.len())
            .field("own", &self.own.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PublishRate {
    /// The buckets `settings` describe, on the system's monotonic clock.
    pub fn new(settings: &RateSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl Default for PublishRate {
    fn default() -> Self {
        Self::new(&RateSettings::default())
    }
}

impl<C: Clock + Clone> PublishRate<C> {
    /// The buckets `settings` describe, on `clock`.
    pub fn with_clock(settings: &RateSettings, clock: C) -> Self {
        let own = settings
            .agencies
            .iter()
            .map(|(agency, rate)| {
                let limiter = RateLimiter::direct_with_clock(rate.quota(), clock.clone());
                (agency.clone(), (*rate, limiter))
            })
            .collect();
        Self {
            shared: RateLimiter::dashmap_with_clock(settings.default.quota(), clock.clone()),
            default: settings.default,
            own,
            swept: Mutex::new(clock.now()),
            clock,
        }
    }

    /// Takes one token from `agency`'s bucket, or says when the next one
    /// is there.
    pub fn check(&self, agency: &AgencyId) -> Result<(), RateLimited> {
        self.sweep();
        let (rate, outcome) = match self.own.get(agency) {
            Some((rate, limiter)) => (*rate, limiter.check()),
            None => (self.default, self.shared.check_key(agency)),
        };
        outcome.map_err(|not_until| RateLimited {
            agency: agency.clone(),
            rate,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Waits until `agency`'s bucket has a token and takes it. Each wait is
    /// at most one refill interval, so a paced stream never waits long
    /// for one notification.
    pub async fn until_ready(&self, agency: &AgencyId) {
        while let Err(limited) = self.check(agency) {
            tokio::time::sleep(limited.retry_after.max(Duration::from_millis(1))).await;
        }
    }

    /// Agencies whose bucket is in memory under the default rate.
    pub fn tracked(&self) -> usize {
        self.shared.len()
    }

    /// Forgets full buckets now (an agency absent that long starts full
    /// again, so nothing changes for it).
    pub fn forget_full(&self) {
        self.shared.retain_recent();
        self.shared.shrink_to_fit();
    }

    /// [`forget_full`](Self::forget_full) when the last sweep is older
    /// than [`SWEEP_INTERVAL`]; never waits for another caller's sweep.
    fn sweep(&self) {
        let Ok(mut swept) = self.swept.try_lock() else {
            return;
        };
        let now = self.clock.now();
        if Duration::from(now.duration_since(*swept)) >= SWEEP_INTERVAL {
            *swept = now;
            drop(swept);
            self.forget_full();
        }
    }
}
