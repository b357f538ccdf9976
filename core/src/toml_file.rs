//! Reading the TOML files Liandong is configured with (the gateway's config,
//! the agency registry, the policy, the adapter's config) into their serde
//! shapes, with one error for a file that cannot be read or does not parse.
//!
//! A [`FileError`] names the file and, for a parse error, the line, column
//! and `[table]` of the problem, on one line:
//! `etc/adapter.toml:4:1: in [gateway]: unknown field ...`.
//!
//! This module never interprets values: what a field means, and the errors
//! about it, stay with each file's owner. It never reads anything but the
//! file it is asked to read.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[cfg(test)]
mod tests;

/// A TOML file that could not be read, or is not valid TOML of the expected
/// shape.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: cannot read {what}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the file is, e.g. `config` or `registry`.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key its reader does not know,
    /// or a value of the wrong type.
    #[error("{path}:{location}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// `line:column` of the problem, and the table it is in.
        location: Location,
        /// What the parser found wrong, naming the key.
        reason: String,
    },
}

/// Where in a file a problem is: 1-based line and column, and the
/// `[table]` whose body it is in, when it is in one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The table header the line belongs to, e.g. `gateway`.
    pub table: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)?;
        if let Some(table) = &self.table {
            write!(f, ": in [{table}]")?;
        }
        Ok(())
    }
}

impl Location {
    /// The location of byte `offset` of `text`.
    pub fn of(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        // The table is the last header on an earlier line: an error on the
        // header line itself is about that header, not inside its table.
        let table = before[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|header| {
                header
                    .split('#')
                    .next()
                    .unwrap_or(header)
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim()
                    .to_owned()
            });
        Self {
            line,
            column,
            table,
        }
    }
}

/// Reads the file at `path`; `what` says what it is in the error (e.g.
/// `config`).
pub fn read(path: &Path, what: &'static str) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        what,
        source,
    })
}

/// Parses `text`, the content of the file at `path` (named in the error),
/// as TOML of the shape `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, FileError> {
    toml::from_str(text).map_err(|e| FileError::Syntax {
        path: path.to_owned(),
        location: Location::of(text, e.span().map_or(0, |span| span.start)),
        reason: e.message().trim().to_owned(),
    })
}
