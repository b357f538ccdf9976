//! The deadline rules: which event starts a clock, which events stop it,
//! how long it runs, who must act and who supervises. Built in
//! (`deadlines.toml` beside this file) or replaced whole by the operator's
//! file (`[mechanism] deadlines`), validated whole before use: an error
//! names the file, the rule and the field.
//!
//! [`Period::end`] turns a start time into a due time: periods are counted
//! in local dates of the mechanism's time zone, the day the clock starts is
//! not counted, a period of N days ends at 24:00 of the N-th counted day,
//! and `roll_to_working_day` moves an end that falls on a non-working day
//! to 24:00 of the next working day.
//!
//! This module never reads the store or the clock.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use liandong_core::domain::Event;
use liandong_core::toml_file::{self, FileError};

use super::calendar::{Calendar, MissingYear};

/// Name under which the built-in rules are reported in errors.
const BUILT_IN_NAME: &str = "built-in deadlines.toml";

/// A deadline rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read, or is not valid TOML of the right shape.
    #[error(transparent)]
    File(#[from] FileError),
    /// A rule has a wrong value; names the file, the rule and the field.
    #[error("{path}: deadline[{index}] ({name}): {field}: {reason}")]
    Field {
        /// The rules file.
        path: PathBuf,
        /// Position of the rule in the file, from 0.
        index: usize,
        /// The rule's name as written.
        name: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// Unit of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Hours from the start time.
    Hours,
    /// Local calendar days, the start day not counted.
    CalendarDays,
    /// Working days of the calendar, the start day not counted.
    WorkingDays,
    /// Seconds from the start time: for drills and tests only (no legal
    /// time limit is counted in seconds); never rolls.
    Seconds,
}

impl FromStr for Unit {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "hours" => Ok(Self::Hours),
            "calendar_days" => Ok(Self::CalendarDays),
            "working_days" => Ok(Self::WorkingDays),
            "seconds" => Ok(Self::Seconds),
            _ => Err(()),
        }
    }
}

/// A length of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// How many units (at least 1).
    pub amount: u32,
    /// Of what.
    pub unit: Unit,
}

impl Period {
    /// When a period started at `start` ends, in `zone` with `calendar`;
    /// `roll` moves an end on a non-working day to 24:00 of the next
    /// working day. A calendar question about a year the calendar does not
    /// hold is an error, never a guess.
    pub fn end(
        &self,
        start: Timestamp,
        zone: &TimeZone,
        calendar: &Calendar,
        roll: bool,
    ) -> Result<Timestamp, MissingYear> {
        let out_of_range = || MissingYear(start.to_zoned(zone.clone()).date().year());
        let start_day = start.to_zoned(zone.clone()).date();
        let last_day = match self.unit {
            Unit::Seconds => {
                return start
                    .checked_add(SignedDuration::from_secs(i64::from(self.amount)))
                    .map_err(|_| out_of_range());
            }
            Unit::Hours => {
                let end = start
                    .checked_add(SignedDuration::from_hours(i64::from(self.amount)))
                    .map_err(|_| out_of_range())?;
                if !roll {
                    return Ok(end);
                }
                let end_day = end.to_zoned(zone.clone()).date();
                if calendar.is_working_day(end_day)? {
                    return Ok(end);
                }
                calendar.working_day_on_or_after(end_day)?
            }
            Unit::CalendarDays => {
                let mut day = start_day;
                for _ in 0..self.amount {
                    day = day.tomorrow().map_err(|_| out_of_range())?;
                }
                if roll {
                    calendar.working_day_on_or_after(day)?
                } else {
                    day
                }
            }
            Unit::WorkingDays => calendar.working_days_after(start_day, self.amount)?,
        };
        end_of_day(last_day, zone).ok_or_else(out_of_range)
    }
}

/// 24:00 local of `day`: the start of the next day in `zone`.
fn end_of_day(day: jiff::civil::Date, zone: &TimeZone) -> Option<Timestamp> {
    let next = day.tomorrow().ok()?;
    Some(next.to_zoned(zone.clone()).ok()?.timestamp())
}

/// Who must act before a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateParty {
    /// The sender of the notification that started the clock.
    Starter,
    /// The sender of the case's first `CASE_TRANSFERRED`.
    Transferor,
    /// The police that last acted in the case: the sender of its latest
    /// `TRANSFER_RECEIVED`, `FILING_DECLINED` or `CASE_FILED`.
    Police,
    /// The first registered `ENVIRONMENT` agency among the starting
    /// notification's recipients (the bureau a recommendation addresses).
    AddressedEnvironment,
}

impl FromStr for LateParty {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "starter" => Ok(Self::Starter),
            "transferor" => Ok(Self::Transferor),
            "police" => Ok(Self::Police),
            "addressed_environment" => Ok(Self::AddressedEnvironment),
            _ => Err(()),
        }
    }
}

/// One deadline rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineRule {
    /// Its name, stored with every deadline it starts and shown in alerts.
    pub name: String,
    /// Its legal source, shown in alerts.
    pub legal_basis: String,
    /// Events that start a clock.
    pub starts_on: Vec<Event>,
    /// Events that stop the case's open clocks of this rule.
    pub stops_on: Vec<Event>,
    /// How long the clock runs.
    pub period: Period,
    /// The period instead, when the starting notification says
    /// `body.needs_verification`.
    pub verification_period: Option<Period>,
    /// The period, counted from the same start, once a `DEADLINE_EXTENDED`
    /// with `body.document_number` is recorded for the case.
    pub extended_period: Option<Period>,
    /// An end on a non-working day moves to 24:00 of the next working day.
    pub roll_to_working_day: bool,
    /// Who must act.
    pub late: LateParty,
    /// False for a right rather than a duty: the period is recorded and
    /// lapses without an alert.
    pub alert: bool,
}

impl DeadlineRule {
    /// What the clock waits for, in words: `CASE_FILED or FILING_DECLINED`.
    pub fn awaited(&self) -> String {
        self.stops_on
            .iter()
            .map(|event| event.name())
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// The period a clock of this rule runs: the extended one once
    /// extended, else the verification one when asked for, else the base.
    pub fn period_for(&self, needs_verification: bool, extended: bool) -> Period {
        if extended && let Some(period) = self.extended_period {
            return period;
        }
        if needs_verification && let Some(period) = self.verification_period {
            return period;
        }
        self.period
    }
}

/// The deadline rules in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineRules {
    rules: Vec<DeadlineRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    deadline: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    name: String,
    legal_basis: String,
    starts_on: Vec<String>,
    stops_on: Vec<String>,
    period: PeriodEntry,
    #[serde(default)]
    verification_period: Option<PeriodEntry>,
    #[serde(default)]
    extended_period: Option<PeriodEntry>,
    roll_to_working_day: bool,
    late: String,
    supervisor: String,
    alert: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodEntry {
    amount: u32,
    unit: String,
}

impl DeadlineRules {
    /// The built-in rules.
    pub fn built_in() -> Self {
        Self::parse(include_str!("deadlines.toml"), Path::new(BUILT_IN_NAME))
            .expect("the built-in deadline rules are valid")
    }

    /// Reads and validates an operator's rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        Self::parse(&toml_file::read(path, "deadline rules")?, path)
    }

    /// Validates rules text; `path` names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RulesError> {
        let file: RulesFile = toml_file::parse(path, text)?;
        let mut rules = Vec::with_capacity(file.deadline.len());
        let mut names = BTreeSet::new();
        for (index, entry) in file.deadline.into_iter().enumerate() {
            let name = entry.name.clone();
            let error = |field: &str, reason: String| RulesError::Field {
                path: path.to_owned(),
                index,
                name: name.clone(),
                field: field.to_owned(),
                reason,
            };
            let rule = entry.validate(&error)?;
            if !names.insert(rule.name.clone()) {
                return Err(error("name", "is used by an earlier rule".into()));
            }
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Every rule, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &DeadlineRule> {
        self.rules.iter()
    }

    /// The rule of this name.
    pub fn get(&self, name: &str) -> Option<&DeadlineRule> {
        self.rules.iter().find(|rule| rule.name == name)
    }

    /// The rules `event` starts.
    pub fn started_by(&self, event: Event) -> impl Iterator<Item = &DeadlineRule> {
        self.rules
            .iter()
            .filter(move |rule| rule.starts_on.contains(&event))
    }

    /// The rules `event` stops.
    pub fn stopped_by(&self, event: Event) -> impl Iterator<Item = &DeadlineRule> {
        self.rules
            .iter()
            .filter(move |rule| rule.stops_on.contains(&event))
    }
}

impl RuleEntry {
    fn validate(
        self,
        error: &impl Fn(&str, String) -> RulesError,
    ) -> Result<DeadlineRule, RulesError> {
        let RuleEntry {
            name,
            legal_basis,
            starts_on,
            stops_on,
            period,
            verification_period,
            extended_period,
            roll_to_working_day,
            late,
            supervisor,
            alert,
        } = self;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(error(
                "name",
                "must be 1 to 64 characters of a-z, 0-9 and -".into(),
            ));
        }
        if legal_basis.trim().is_empty() {
            return Err(error(
                "legal_basis",
                "is required: name the provision the time limit comes from".into(),
            ));
        }
        let events = |field: &str, names: &[String]| -> Result<Vec<Event>, RulesError> {
            if names.is_empty() {
                return Err(error(field, "needs at least one event".into()));
            }
            names
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    Event::from_str(text).map_err(|_| {
                        error(&format!("{field}[{i}]"), format!("unknown event {text:?}"))
                    })
                })
                .collect()
        };
        let starts_on = events("starts_on", &starts_on)?;
        let stops_on = events("stops_on", &stops_on)?;
        if let Some(both) = starts_on.iter().find(|event| stops_on.contains(event)) {
            return Err(error(
                "stops_on",
                format!("{both} also starts the rule's clock"),
            ));
        }
        let period_of = |field: &str, entry: &PeriodEntry| -> Result<Period, RulesError> {
            let unit: Unit = entry.unit.parse().map_err(|()| {
                error(
                    &format!("{field}.unit"),
                    format!(
                        "{:?} is not one of hours, calendar_days, working_days, seconds",
                        entry.unit
                    ),
                )
            })?;
            if entry.amount == 0 {
                return Err(error(
                    &format!("{field}.amount"),
                    "must be at least 1".into(),
                ));
            }
            if unit == Unit::Seconds && roll_to_working_day {
                return Err(error(
                    &format!("{field}.unit"),
                    "seconds (for drills and tests) never roll: set roll_to_working_day = false"
                        .into(),
                ));
            }
            Ok(Period {
                amount: entry.amount,
                unit,
            })
        };
        let period = period_of("period", &period)?;
        let verification_period = verification_period
            .as_ref()
            .map(|entry| period_of("verification_period", entry))
            .transpose()?;
        let extended_period = extended_period
            .as_ref()
            .map(|entry| period_of("extended_period", entry))
            .transpose()?;
        let late: LateParty = late.parse().map_err(|()| {
            error(
                "late",
                format!(
                    "{late:?} is not one of starter, transferor, police, addressed_environment"
                ),
            )
        })?;
        if supervisor != "procuratorate" {
            return Err(error(
                "supervisor",
                format!(
                    "{supervisor:?} is not supported: the supervisor is the registered procuratorate at the late agency's level (\"procuratorate\")"
                ),
            ));
        }
        Ok(DeadlineRule {
            name,
            legal_basis,
            starts_on,
            stops_on,
            period,
            verification_period,
            extended_period,
            roll_to_working_day,
            late,
            alert,
        })
    }
}
