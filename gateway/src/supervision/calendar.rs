//! The working-day calendar of the mechanism: per year, the public holidays
//! and the weekend days that are working days (调休), with the source of
//! each year's arrangement.
//!
//! The years 2026 and 2027 are built in (`gateway/calendar/*.toml`); an
//! operator adds a year, or replaces a built-in one, with files named in
//! `[mechanism] calendar`. A year may be marked `provisional` (its official
//! arrangement was not published when the file was written): it is used,
//! and the gateway warns at start while one is loaded.
//!
//! A date whose year the calendar does not hold is never guessed: every
//! question about it is a [`MissingYear`] error, which the caller must
//! handle (a deadline that needs it waits until the year is supplied).
//!
//! This module never reads the clock and never decides a deadline; it only
//! answers which local dates are working days.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jiff::civil::{Date, Weekday};
use serde::Deserialize;

use liandong_core::toml_file::{self, FileError};

/// The built-in calendar files: (name used in errors, text).
const BUILT_IN: [(&str, &str); 2] = [
    (
        "built-in calendar 2026.toml",
        include_str!("../../calendar/2026.toml"),
    ),
    (
        "built-in calendar 2027.toml",
        include_str!("../../calendar/2027.toml"),
    ),
];

/// A calendar file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The file could not be read, or is not valid TOML of the right shape.
    #[error(transparent)]
    File(#[from] FileError),
    /// A value is wrong; names the file, the entry and the field.
    #[error("{path}: {entry}: {field}: {reason}")]
    Field {
        /// The calendar file.
        path: PathBuf,
        /// The entry, e.g. `holiday[1] (春节)` or `year`.
        entry: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Two files give the same year.
    #[error("{path}: year {year} is already given by {other}")]
    DuplicateYear {
        /// The later file.
        path: PathBuf,
        /// The year.
        year: i16,
        /// The file that gave it first.
        other: PathBuf,
    },
}

/// A question about a date whose year the calendar does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the calendar has no year {0}: add its holiday arrangement with [mechanism] calendar (docs/CASES.md, \"Calendar\")"
)]
pub struct MissingYear(pub i16);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i16,
    source: String,
    #[serde(default)]
    provisional: bool,
    #[serde(default)]
    holiday: Vec<HolidayEntry>,
    #[serde(default)]
    working_day: Vec<WorkingDayEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayEntry {
    name: String,
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkingDayEntry {
    name: String,
    date: String,
}

/// One year's arrangement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Year {
    /// Where the arrangement comes from (the notice, or the regulation).
    pub source: String,
    /// True when the official arrangement was not yet published: only the
    /// statutory holidays are known.
    pub provisional: bool,
    /// The file it was read from (or the built-in file's name).
    pub file: PathBuf,
    /// Days off.
    holidays: BTreeSet<Date>,
    /// Weekend days that are working days.
    working_days: BTreeSet<Date>,
}

/// The calendar in force: the years it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeMap<i16, Year>,
}

impl Calendar {
    /// The built-in years only.
    pub fn built_in() -> Self {
        Self::with_files(&[]).expect("the built-in calendar files are valid")
    }

    /// The built-in years, then the operator's `files`: a file for a
    /// built-in year replaces it; two operator files for one year are an
    /// error.
    pub fn load(files: &[PathBuf]) -> Result<Self, CalendarError> {
        let mut texts = Vec::with_capacity(files.len());
        for file in files {
            texts.push((file.clone(), toml_file::read(file, "calendar")?));
        }
        Self::with_files(&texts)
    }

    /// [`Calendar::load`] over texts already read.
    pub fn with_files(files: &[(PathBuf, String)]) -> Result<Self, CalendarError> {
        let mut years = BTreeMap::new();
        for (name, text) in BUILT_IN {
            let (number, year) = parse_year(Path::new(name), text)?;
            years.insert(number, year);
        }
        let mut given: BTreeMap<i16, PathBuf> = BTreeMap::new();
        for (path, text) in files {
            let (number, year) = parse_year(path, text)?;
            if let Some(other) = given.get(&number) {
                return Err(CalendarError::DuplicateYear {
                    path: path.clone(),
                    year: number,
                    other: other.clone(),
                });
            }
            given.insert(number, path.clone());
            years.insert(number, year);
        }
        Ok(Self { years })
    }

    /// The year's arrangement, when held.
    pub fn year(&self, year: i16) -> Option<&Year> {
        self.years.get(&year)
    }

    /// The years held, in order.
    pub fn years(&self) -> impl Iterator<Item = (i16, &Year)> {
        self.years.iter().map(|(number, year)| (*number, year))
    }

    /// The years marked provisional.
    pub fn provisional_years(&self) -> Vec<i16> {
        self.years
            .iter()
            .filter(|(_, year)| year.provisional)
            .map(|(number, _)| *number)
            .collect()
    }

    /// Whether `date` is a working day: a make-up working day is; a holiday
    /// is not; otherwise Monday to Friday are.
    pub fn is_working_day(&self, date: Date) -> Result<bool, MissingYear> {
        let year = self
            .years
            .get(&date.year())
            .ok_or(MissingYear(date.year()))?;
        if year.working_days.contains(&date) {
            return Ok(true);
        }
        if year.holidays.contains(&date) {
            return Ok(false);
        }
        Ok(!matches!(
            date.weekday(),
            Weekday::Saturday | Weekday::Sunday
        ))
    }

    /// The `n`-th working day after `date` (`date` itself is not counted);
    /// `n = 0` is `date`.
    pub fn working_days_after(&self, date: Date, n: u32) -> Result<Date, MissingYear> {
        let mut current = date;
        let mut counted = 0;
        while counted < n {
            current = next_day(current)?;
            if self.is_working_day(current)? {
                counted += 1;
            }
        }
        Ok(current)
    }

    /// `date` when it is a working day, else the first working day after it.
    pub fn working_day_on_or_after(&self, date: Date) -> Result<Date, MissingYear> {
        let mut current = date;
        while !self.is_working_day(current)? {
            current = next_day(current)?;
        }
        Ok(current)
    }
}

/// The day after `date`; the end of jiff's range counts as a missing year.
fn next_day(date: Date) -> Result<Date, MissingYear> {
    date.tomorrow().map_err(|_| MissingYear(date.year()))
}

fn parse_year(path: &Path, text: &str) -> Result<(i16, Year), CalendarError> {
    let file: YearFile = toml_file::parse(path, text)?;
    let YearFile {
        year,
        source,
        provisional,
        holiday,
        working_day,
    } = file;
    let error = |entry: String, field: &str, reason: String| CalendarError::Field {
        path: path.to_owned(),
        entry,
        field: field.to_owned(),
        reason,
    };
    if !(2000..=2200).contains(&year) {
        return Err(error(
            "year".into(),
            "year",
            "must be between 2000 and 2200".into(),
        ));
    }
    if source.trim().is_empty() {
        return Err(error(
            "source".into(),
            "source",
            "is required: name the notice or regulation the dates come from".into(),
        ));
    }
    let date_in_year = |entry: &str, field: &str, text: &str| -> Result<Date, CalendarError> {
        let date: Date = text.parse().map_err(|_| {
            error(
                entry.to_owned(),
                field,
                format!("{text:?} is not a date YYYY-MM-DD"),
            )
        })?;
        if date.year() != year {
            return Err(error(
                entry.to_owned(),
                field,
                format!("{text} is not in {year}"),
            ));
        }
        Ok(date)
    };
    let mut holidays = BTreeSet::new();
    for (index, entry) in holiday.iter().enumerate() {
        let name = format!("holiday[{index}] ({})", entry.name);
        if entry.name.trim().is_empty() {
            return Err(error(name, "name", "is required".into()));
        }
        let from = date_in_year(&name, "from", &entry.from)?;
        let to = date_in_year(&name, "to", &entry.to)?;
        if to < from {
            return Err(error(name, "to", format!("{to} is before from ({from})")));
        }
        let mut day = from;
        while day <= to {
            holidays.insert(day);
            day = match day.tomorrow() {
                Ok(next) => next,
                Err(_) => break,
            };
        }
    }
    let mut working_days = BTreeSet::new();
    for (index, entry) in working_day.iter().enumerate() {
        let name = format!("working_day[{index}] ({})", entry.name);
        if entry.name.trim().is_empty() {
            return Err(error(name, "name", "is required".into()));
        }
        let date = date_in_year(&name, "date", &entry.date)?;
        if !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) {
            return Err(error(
                name,
                "date",
                format!("{date} is a weekday: only a Saturday or Sunday can be made a working day"),
            ));
        }
        if holidays.contains(&date) {
            return Err(error(
                name,
                "date",
                format!("{date} is also listed as a holiday"),
            ));
        }
        working_days.insert(date);
    }
    Ok((
        year,
        Year {
            source,
            provisional,
            file: path.to_owned(),
            holidays,
            working_days,
        },
    ))
}
