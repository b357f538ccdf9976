//! The one-shot commands: each connects or reads, does one job, writes its
//! answer on standard output and returns; `main` maps the result to the
//! exit code.
//!
//! - [`send`]: one notification in (JSON), the daemon's acceptance or the
//!   gateway's receipt out.
//! - [`tail`]: a subscription's deliveries out as JSON lines, each
//!   acknowledged once printed.
//! - [`status`]: the status report of the local state, and its verdict.
//! - [`http_token`]: creates the HTTP source's token file.
//!
//! Commands write only their JSON lines (and `status`'s report) on
//! standard output, and never notification content to logs. They never run
//! the daemon's tasks; `send` only hands over to a running daemon through
//! its HTTP source, or prepares a notification the way the daemon would.

use std::io::Write;

use crate::error::CommandError;

pub mod http_token;
pub mod send;
pub mod status;
pub mod tail;

/// Writes `value` as one line of JSON and flushes.
pub(crate) fn write_json_line(
    out: &mut impl Write,
    value: &serde_json::Value,
) -> Result<(), CommandError> {
    let mut line = value.to_string();
    line.push('\n');
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CommandError::Output)
}
