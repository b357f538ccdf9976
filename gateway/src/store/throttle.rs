//! Log throttling: a failure that repeats (a full disk answering every
//! publish, a tampered row read by every session) is logged once per
//! interval with how often it happened since, not once per occurrence.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of failure is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Keys beyond which entries not seen for an interval are forgotten.
const MAX_KEYS: usize = 1024;

/// Decides, per key, whether an occurrence is logged now.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    /// Per key: when it was last logged, and occurrences since then.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

impl LogThrottle {
    /// A throttle logging each key at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records one occurrence of `key`. Returns `Some(n)` when it should be
    /// logged now, `n` being the occurrences (this one included) since it
    /// was last logged; `None` when it is counted silently.
    pub fn occurrence(&self, key: &str) -> Option<u64> {
        self.occurrence_at(key, Instant::now())
    }

    /// [`LogThrottle::occurrence`] at a given moment.
    pub(crate) fn occurrence_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > MAX_KEYS {
            let interval = self.interval;
            seen.retain(|_, (at, _)| now.duration_since(*at) < interval);
        }
        match seen.get_mut(key) {
            Some((at, count)) if now.duration_since(*at) < self.interval => {
                *count += 1;
                None
            }
            Some((at, count)) => {
                let total = *count + 1;
                *at = now;
                *count = 0;
                Some(total)
            }
            None => {
                seen.insert(key.to_owned(), (now, 0));
                Some(1)
            }
        }
    }
}
