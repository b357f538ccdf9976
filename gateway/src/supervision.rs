//! Supervision of the mechanism's time limits: the working-day calendar,
//! the deadline rules, the deadlines started and stopped by publishes, and
//! the alerts the gateway itself emits, signed with its own key, when a
//! deadline passes without the act it waits for.
//!
//! - [`calendar`]: holidays and make-up working days per year.
//! - [`rules`]: the deadline rules and how a period is counted.
//! - [`deadlines`]: the `deadlines` table: clocks started, stopped and
//!   extended inside the publish transaction, and fired — exactly once —
//!   with their alert in one transaction.
//! - [`key`]: the gateway's Ed25519 signing key.
//! - [`emit`]: notifications the gateway signs and stores itself.
//! - [`timer`]: the task that fires due deadlines.
//!
//! Deadlines run on the gateway's `received_at`, never on a sender's
//! `occurred_at`. Who must act and who supervises are facts of the record,
//! decided when the clock starts and stored with it; who may read an alert
//! is decided at each delivery, like any notification. This module never
//! decides visibility and never logs content.

use std::path::PathBuf;
use std::sync::Arc;

use jiff::tz::TimeZone;
use tokio::sync::Notify;

use liandong_core::domain::Instant;

use crate::policy::Rules;

pub mod calendar;
pub mod deadlines;
pub mod emit;
pub mod key;
pub mod rules;
pub mod timer;

#[cfg(test)]
mod tests;

pub use calendar::{Calendar, CalendarError, MissingYear};
pub use emit::{Emitted, emit_in};
pub use key::{GatewayKey, KeyError};
pub use rules::{DeadlineRule, DeadlineRules, RulesError};

/// The mechanism's time zone when the config names none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

/// The mechanism's files, as the config names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MechanismFiles {
    /// The operator's deadline rules; `None` uses the built-in rules.
    pub deadlines: Option<PathBuf>,
    /// Calendar years added to, or replacing, the built-in ones.
    pub calendar: Vec<PathBuf>,
    /// IANA name of the time zone whose local dates periods count.
    pub time_zone: String,
}

impl Default for MechanismFiles {
    fn default() -> Self {
        Self {
            deadlines: None,
            calendar: Vec::new(),
            time_zone: DEFAULT_TIME_ZONE.to_owned(),
        }
    }
}

/// The mechanism's rules, calendar or time zone cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MechanismError {
    /// The deadline rules file is unusable.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A calendar file is unusable.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// The time zone is unknown.
    #[error(
        "mechanism.time_zone: {0:?} is not a time zone of the bundled database (e.g. Asia/Shanghai)"
    )]
    TimeZone(String),
}

/// The deadline rules, calendar and time zone in force; replaced whole on
/// reload.
#[derive(Debug, Clone)]
pub struct Mechanism {
    /// The deadline rules.
    pub rules: DeadlineRules,
    /// Working days per year.
    pub calendar: Calendar,
    /// The zone whose local dates periods count.
    pub zone: TimeZone,
}

impl Mechanism {
    /// The built-in rules and calendar, in `Asia/Shanghai`.
    pub fn built_in() -> Self {
        Self {
            rules: DeadlineRules::built_in(),
            calendar: Calendar::built_in(),
            zone: TimeZone::get(DEFAULT_TIME_ZONE).expect("the bundled database has Asia/Shanghai"),
        }
    }

    /// Loads what `files` names (built-ins where it names nothing).
    pub fn load(files: &MechanismFiles) -> Result<Self, MechanismError> {
        let zone = TimeZone::get(&files.time_zone)
            .map_err(|_| MechanismError::TimeZone(files.time_zone.clone()))?;
        let rules = match &files.deadlines {
            Some(path) => DeadlineRules::load(path)?,
            None => DeadlineRules::built_in(),
        };
        let calendar = Calendar::load(&files.calendar)?;
        Ok(Self {
            rules,
            calendar,
            zone,
        })
    }

    /// Logs a warning for every provisional calendar year in force.
    pub fn warn_provisional(&self) {
        for (number, year) in self.calendar.years() {
            if year.provisional {
                tracing::warn!(
                    calendar.year = number,
                    calendar.file = %year.file.display(),
                    "calendar year is PROVISIONAL (statutory holidays only, no make-up working days): \
                     replace it with the published arrangement through [mechanism] calendar"
                );
            }
        }
    }
}

/// What the publish transaction needs to start, stop and extend deadlines:
/// the registry in force (who supervises whom), the mechanism in force,
/// and the timer to wake when a clock starts.
#[derive(Debug, Clone)]
pub struct Context {
    /// Registry and policy in force.
    pub rules: Arc<Rules>,
    /// Deadline rules, calendar and zone in force.
    pub mechanism: Arc<Mechanism>,
    /// Woken when a deadline starts, so the timer looks at its due time —
    /// once the publish has committed (`deadline_started` says so), never
    /// from inside its transaction, where the timer could look before the
    /// new clock is visible and sleep past its due time.
    pub timer: Arc<Notify>,
    /// Set by a publish transaction that started a clock.
    pub deadline_started: Arc<std::sync::atomic::AtomicBool>,
    /// The gateway's key, for what a publish makes it emit at once (an
    /// announcement released by its last approval).
    pub key: Arc<GatewayKey>,
}

/// Where "now" comes from for firing deadlines: the real clock in `serve`,
/// a controlled one in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// `micros` (unix microseconds) as a jiff timestamp.
pub(crate) fn timestamp_of_micros(micros: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_microsecond(micros).unwrap_or(jiff::Timestamp::MAX)
}

/// Checks what the mechanism requires of a notification beyond its form:
/// a `DEADLINE_EXTENDED` must name the approval that extends the time
/// limit in `body.document_number`.
pub fn check_notification(
    notification: &liandong_core::domain::Notification,
) -> Result<(), liandong_core::domain::FieldError> {
    if notification.event.to_wire() == liandong_core::pb::EventType::DeadlineExtended
        && notification
            .body
            .as_ref()
            .is_none_or(|body| body.document_number.trim().is_empty())
    {
        return Err(liandong_core::domain::FieldError::new(
            "body.document_number",
            "is required for DEADLINE_EXTENDED: the number of the approval that extends the time limit",
        ));
    }
    Ok(())
}
