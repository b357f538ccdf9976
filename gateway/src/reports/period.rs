//! Periods of local dates, and the schedule of the periodic reports.
//!
//! The mechanism's time zone decides calendar days: a period `[from, to]`
//! covers every notification whose gateway `received_at` falls on or after
//! local midnight at the start of `from` and before local midnight at the
//! start of the day after `to`. The sender's `occurred_at` is never used.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use liandong_core::domain::FieldError;

/// The mechanism's time zone when none is configured.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

/// Longest period a report may cover, in days (a little over ten years).
pub const MAX_PERIOD_DAYS: i32 = 3700;

/// The default time zone, `Asia/Shanghai` (from the bundled time zone
/// database, so it works on hosts without one).
pub fn default_time_zone() -> TimeZone {
    TimeZone::get(DEFAULT_TIME_ZONE).expect("the bundled time zone database has Asia/Shanghai")
}

/// A period of local dates, both included, in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// The first day.
    pub from: Date,
    /// The last day.
    pub to: Date,
    /// The zone whose midnights bound the days.
    pub time_zone: TimeZone,
}

impl Period {
    /// The period from `from` to `to` (`YYYY-MM-DD`, both included) in
    /// `time_zone`; each error names the field (`from` or `to`).
    pub fn parse(from: &str, to: &str, time_zone: TimeZone) -> Result<Self, FieldError> {
        let from_date = parse_date("from", from)?;
        let to_date = parse_date("to", to)?;
        if to_date < from_date {
            return Err(FieldError::new(
                "to",
                format!("{to_date} is before from ({from_date})"),
            ));
        }
        let days = from_date
            .until(to_date)
            .map(|span| span.get_days())
            .unwrap_or(i32::MAX);
        if days >= MAX_PERIOD_DAYS {
            return Err(FieldError::new(
                "to",
                format!("the period may cover at most {MAX_PERIOD_DAYS} days"),
            ));
        }
        let period = Self {
            from: from_date,
            to: to_date,
            time_zone,
        };
        // Both bounds must exist in the zone.
        period.bounds().map(|_| period)
    }

    /// Unix microseconds of local midnight at the start of `from`
    /// (included) and at the start of the day after `to` (excluded).
    pub fn bounds(&self) -> Result<(i64, i64), FieldError> {
        let start = midnight(self.from, &self.time_zone)
            .ok_or_else(|| FieldError::new("from", "is out of range"))?;
        let end = self
            .to
            .tomorrow()
            .ok()
            .and_then(|day| midnight(day, &self.time_zone))
            .ok_or_else(|| FieldError::new("to", "is out of range"))?;
        Ok((start, end))
    }

    /// The period's name as `report_runs` stores it: `YYYY-MM-DD..YYYY-MM-DD`.
    pub fn name(&self) -> String {
        format!("{}..{}", self.from, self.to)
    }
}

/// Parses a local date `YYYY-MM-DD`; the error names `field`.
pub fn parse_date(field: &str, text: &str) -> Result<Date, FieldError> {
    let well_formed = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !well_formed {
        return Err(FieldError::new(
            field,
            format!("{text:?} is not a date YYYY-MM-DD"),
        ));
    }
    text.parse::<Date>()
        .map_err(|_| FieldError::new(field, format!("{text} is not a calendar date")))
}

/// Unix microseconds of the first instant of `day` in `time_zone` (local
/// midnight, or the first instant after a gap at midnight).
fn midnight(day: Date, time_zone: &TimeZone) -> Option<i64> {
    day.to_zoned(time_zone.clone())
        .ok()
        .map(|zoned| zoned.timestamp().as_microsecond())
}

/// The local date of a gateway time (Unix microseconds) in `time_zone`.
pub fn local_date(micros: i64, time_zone: &TimeZone) -> Option<Date> {
    Timestamp::from_microsecond(micros)
        .ok()
        .map(|ts| ts.to_zoned(time_zone.clone()).date())
}

/// How often the gateway sends each member agency its statistics report
/// (config `[reports] schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Each calendar month, after it ends (the default).
    #[default]
    Monthly,
    /// Each week, Monday to Sunday, after it ends.
    Weekly,
    /// Never.
    Off,
}

impl Schedule {
    /// The schedule named in the config: `monthly`, `weekly` or `off`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "monthly" => Some(Self::Monthly),
            "weekly" => Some(Self::Weekly),
            "off" => Some(Self::Off),
            _ => None,
        }
    }

    /// The period that most recently ended before `now` in `time_zone`
    /// (last calendar month, or last Monday-to-Sunday week); `None` when
    /// the schedule is off. Whether it was reported already is for
    /// `report_runs` to say.
    pub fn due_period(self, now: Timestamp, time_zone: &TimeZone) -> Option<Period> {
        let today = now.to_zoned(time_zone.clone()).date();
        let (from, to) = match self {
            Self::Off => return None,
            Self::Monthly => {
                let to = today.first_of_month().yesterday().ok()?;
                (to.first_of_month(), to)
            }
            Self::Weekly => {
                let since_monday = i64::from(today.weekday().since(Weekday::Monday));
                let this_monday = today.checked_sub(since_monday.days()).ok()?;
                let to = this_monday.yesterday().ok()?;
                (this_monday.checked_sub(7.days()).ok()?, to)
            }
        };
        Some(Period {
            from,
            to,
            time_zone: time_zone.clone(),
        })
    }
}
