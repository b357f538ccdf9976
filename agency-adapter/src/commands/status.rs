//! `liandong-adapter status`: reads the adapter's local SQLite state, so it
//! works whether or not the daemon runs, and writes the status report
//! ([`crate::report`]) as text or as one JSON line.
//!
//! Exit code: 0 healthy, [`crate::exit::UNHEALTHY`] otherwise, for
//! monitoring scripts. This module only reads; it must never change the
//! state nor print content (ids, codes and the gateway's reasons only).

use std::io::Write;

use liandong_core::domain::Instant;

use crate::commands::write_json_line;
use crate::config::daemon::DaemonConfig;
use crate::error::CommandError;
use crate::report::{Limits, evaluate, report_json, report_text};
use crate::store::Store;

/// The `status` command: reads the state named by `config`, writes the
/// report to `out`, and returns whether it is healthy.
pub async fn status(
    config: &DaemonConfig,
    json: bool,
    out: &mut impl Write,
) -> Result<bool, CommandError> {
    let store = Store::open_existing(&config.outbox.path).await?;
    let snapshot = store.snapshot().await?;
    store.close().await;
    let limits = Limits::from(config);
    let now = Instant::now().unix_micros();
    let healthy = evaluate(&snapshot, &limits, now).healthy;
    if json {
        write_json_line(out, &report_json(&snapshot, &limits, now))?;
    } else {
        out.write_all(report_text(&snapshot, &limits, now).as_bytes())
            .and_then(|()| out.flush())
            .map_err(CommandError::Output)?;
    }
    Ok(healthy)
}
