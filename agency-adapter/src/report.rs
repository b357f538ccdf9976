//! The status report: what a [`Snapshot`] of the adapter's local state
//! says — outbox depth and the age of the oldest pending notification, dead
//! letters, the last successful push and the last error, each
//! subscription's last acknowledged sequence, whether the daemon runs, when
//! the client certificate expires — and
//! whether that is healthy by the config's `[status]` limits, as text for
//! people or as JSON. Shared by the `status` command
//! ([`crate::commands::status`]) and the HTTP source's `GET /v1/status`.
//!
//! This module only judges and formats what it is given (besides reading a
//! certificate file's validity when asked, [`Certificate::read`]): it never
//! reads or changes the state, never prints, and never shows content (ids, codes and
//! the gateway's reasons only).

use std::fmt::Write as _;
use std::path::Path;

use liandong_core::domain::Instant;
use serde_json::{Value, json};

use crate::config::daemon::{DaemonConfig, StatusSettings};
use crate::store::{DAEMON_STALE_AFTER, Snapshot};

#[cfg(test)]
mod tests;

/// Fewer days than this left on the client certificate earn a warning.
pub const CERTIFICATE_WARN_DAYS: i64 = 30;

const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// What is known of the adapter's client certificate (`gateway.cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certificate {
    /// Not looked at.
    Unchecked,
    /// The file could not be read or holds no certificate.
    Unreadable,
    /// Valid until this time (its notAfter, microseconds since the epoch).
    NotAfter(i64),
}

impl Certificate {
    /// The notAfter of the first certificate of the PEM file at `path`.
    pub fn read(path: &Path) -> Result<i64, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let certificate = pem
            .parse_x509()
            .map_err(|e| format!("not a certificate: {e}"))?;
        Ok(certificate
            .validity()
            .not_after
            .timestamp()
            .saturating_mul(1_000_000))
    }

    /// The state of the certificate file at `path`.
    pub fn of_file(path: &Path) -> Self {
        Self::read(path).map_or(Self::Unreadable, Self::NotAfter)
    }

    /// Whole days left at `now` (negative once expired).
    pub fn days_left(not_after: i64, now: i64) -> i64 {
        (not_after - now).div_euclid(DAY_MICROS)
    }
}

/// Logs the client certificate's end of validity: info, a warning when
/// fewer than [`CERTIFICATE_WARN_DAYS`] remain, an error once expired or
/// unreadable.
pub fn log_certificate(path: &Path, now: i64) {
    match Certificate::read(path) {
        Ok(not_after) => {
            let days = Certificate::days_left(not_after, now);
            let at = time(Some(not_after));
            if not_after <= now {
                tracing::error!(certificate.path = ?path, certificate.not_after = %at,
                    "the client certificate has expired: the gateway will refuse it; renew it");
            } else if days < CERTIFICATE_WARN_DAYS {
                tracing::warn!(certificate.path = ?path, certificate.not_after = %at,
                    certificate.days_left = days, "the client certificate expires soon; renew it");
            } else {
                tracing::info!(certificate.path = ?path, certificate.not_after = %at,
                    certificate.days_left = days, "client certificate");
            }
        }
        Err(reason) => {
            tracing::error!(certificate.path = ?path, error = %reason,
                "cannot read the client certificate's validity");
        }
    }
}

/// What health is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The `[status]` table.
    pub status: StatusSettings,
    /// `outbox.max_pending`.
    pub max_pending: u64,
    /// The client certificate's validity.
    pub certificate: Certificate,
}

impl From<&DaemonConfig> for Limits {
    /// The limits of `config`, the client certificate read from its file.
    fn from(config: &DaemonConfig) -> Self {
        Self {
            status: config.status,
            max_pending: config.outbox.max_pending,
            certificate: Certificate::of_file(&config.gateway.cert),
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// True when nothing below is wrong.
    pub healthy: bool,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// What will soon be wrong (not unhealthy yet), one line each.
    pub warnings: Vec<String>,
}

fn seconds(micros: i64) -> i64 {
    micros.max(0) / 1_000_000
}

fn time(micros: Option<i64>) -> Value {
    micros
        .and_then(Instant::from_unix_micros)
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// True when the snapshot shows a live daemon at `now`.
pub fn daemon_running(snapshot: &Snapshot, now: i64) -> bool {
    snapshot.daemon.is_some_and(|lease| {
        lease.stopped_at.is_none()
            && now - lease.heartbeat_at < DAEMON_STALE_AFTER.as_micros() as i64
    })
}

/// Judges `snapshot` at `now` (microseconds since the epoch).
pub fn evaluate(snapshot: &Snapshot, limits: &Limits, now: i64) -> Health {
    let mut problems = Vec::new();
    if snapshot.outbox_depth >= limits.max_pending {
        problems.push(format!(
            "outbox full: {} pending (outbox.max_pending = {}); sources are refused",
            snapshot.outbox_depth, limits.max_pending
        ));
    }
    if let Some(oldest) = snapshot.oldest_pending_accepted_at {
        let age = seconds(now - oldest);
        if age > limits.status.max_pending_age.as_secs() as i64 {
            problems.push(format!(
                "the oldest pending notification has waited {age}s \
                 (status.max_pending_age_seconds = {})",
                limits.status.max_pending_age.as_secs()
            ));
        }
    }
    if snapshot.dead_letter_count > limits.status.max_dead_letters {
        problems.push(format!(
            "{} dead letters (status.max_dead_letters = {})",
            snapshot.dead_letter_count, limits.status.max_dead_letters
        ));
    }
    for subscription in &snapshot.subscriptions {
        if let Some(since) = subscription.failing_since {
            let age = seconds(now - since);
            if age > limits.status.max_failure.as_secs() as i64 {
                problems.push(format!(
                    "subscription {} has been failing for {age}s: {}",
                    subscription.name,
                    subscription
                        .last_error
                        .as_deref()
                        .unwrap_or("unknown error")
                ));
            }
        }
    }
    if limits.status.require_daemon && !daemon_running(snapshot, now) {
        problems.push("the daemon is not running".into());
    }
    let mut warnings = Vec::new();
    match limits.certificate {
        Certificate::Unchecked => {}
        Certificate::Unreadable => {
            problems.push("the client certificate (gateway.cert) cannot be read".into());
        }
        Certificate::NotAfter(not_after) if not_after <= now => {
            problems.push(format!(
                "the client certificate expired at {}; the gateway refuses it: renew it",
                time(Some(not_after)).as_str().unwrap_or("?")
            ));
        }
        Certificate::NotAfter(not_after) => {
            let days = Certificate::days_left(not_after, now);
            if days < CERTIFICATE_WARN_DAYS {
                warnings.push(format!(
                    "the client certificate expires in {days} days (at {}); renew it",
                    time(Some(not_after)).as_str().unwrap_or("?")
                ));
            }
        }
    }
    Health {
        healthy: problems.is_empty(),
        problems,
        warnings,
    }
}

/// The certificate part of the JSON report.
fn certificate_json(certificate: Certificate, now: i64) -> Value {
    match certificate {
        Certificate::Unchecked => Value::Null,
        Certificate::Unreadable => json!({ "readable": false }),
        Certificate::NotAfter(not_after) => json!({
            "readable": true,
            "not_after": time(Some(not_after)),
            "days_left": Certificate::days_left(not_after, now),
        }),
    }
}

/// The report as JSON (`status --json`, `GET /v1/status`).
pub fn report_json(snapshot: &Snapshot, limits: &Limits, now: i64) -> Value {
    let health = evaluate(snapshot, limits, now);
    let lease = snapshot.daemon;
    json!({
        "healthy": health.healthy,
        "problems": health.problems,
        "warnings": health.warnings,
        "certificate": certificate_json(limits.certificate, now),
        "outbox": {
            "pending": snapshot.outbox_depth,
            "max_pending": limits.max_pending,
            "oldest_pending_at": time(snapshot.oldest_pending_accepted_at),
            "oldest_pending_age_seconds":
                snapshot.oldest_pending_accepted_at.map(|t| seconds(now - t)),
            "sent_kept": snapshot.sent,
        },
        "push": {
            "last_success_at": time(snapshot.last_success_at),
            "last_error": snapshot.last_error,
            "last_error_at": time(snapshot.last_error_at),
        },
        "dead_letters": {
            "count": snapshot.dead_letter_count,
            "recent": snapshot.dead_letters.iter().map(|d| json!({
                "local_id": d.local_id,
                "notification_id": d.notification_id,
                "source": d.source,
                "code": d.code,
                "reason": d.reason,
                "accepted_at": time(Some(d.accepted_at)),
                "dead_at": time(Some(d.dead_at)),
                "reported_at": time(d.reported_at),
            })).collect::<Vec<_>>(),
        },
        "subscriptions": snapshot.subscriptions.iter().map(|s| json!({
            "name": s.name,
            "last_acked_sequence": s.last_acked_sequence,
            "last_acked_at": time(s.last_acked_at),
            "failing_since": time(s.failing_since),
            "last_error": s.last_error,
            "last_error_at": time(s.last_error_at),
            "verification": {
                "verified": s.verified,
                "unverifiable": s.unverifiable,
                "failed_passed": s.failed_passed,
                "rejected": s.rejected,
            },
        })).collect::<Vec<_>>(),
        "daemon": {
            "running": daemon_running(snapshot, now),
            "pid": lease.map(|l| l.pid),
            "started_at": time(lease.map(|l| l.started_at)),
            "heartbeat_at": time(lease.map(|l| l.heartbeat_at)),
            "stopped_at": time(lease.and_then(|l| l.stopped_at)),
        },
    })
}

/// The report for people.
pub fn report_text(snapshot: &Snapshot, limits: &Limits, now: i64) -> String {
    let health = evaluate(snapshot, limits, now);
    let at = |micros: Option<i64>| match micros.and_then(Instant::from_unix_micros) {
        Some(t) => format!("{t} ({}s ago)", seconds(now - t.unix_micros())),
        None => "never".to_owned(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "healthy:       {}",
        if health.healthy { "yes" } else { "NO" }
    );
    for problem in &health.problems {
        let _ = writeln!(out, "  - {problem}");
    }
    for warning in &health.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    let daemon = match snapshot.daemon {
        Some(lease) if daemon_running(snapshot, now) => {
            format!(
                "running (pid {}, heartbeat {})",
                lease.pid,
                at(Some(lease.heartbeat_at))
            )
        }
        Some(lease) => match lease.stopped_at {
            Some(stopped) => format!("stopped {}", at(Some(stopped))),
            None => format!(
                "not running (last heartbeat {})",
                at(Some(lease.heartbeat_at))
            ),
        },
        None => "never ran".into(),
    };
    let _ = writeln!(out, "daemon:        {daemon}");
    if let Certificate::NotAfter(not_after) = limits.certificate {
        let _ = writeln!(
            out,
            "certificate:   valid until {} ({} days left)",
            time(Some(not_after)).as_str().unwrap_or("?"),
            Certificate::days_left(not_after, now)
        );
    }
    let oldest = match snapshot.oldest_pending_accepted_at {
        Some(t) => format!(", oldest accepted {}", at(Some(t))),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "outbox:        {} pending of at most {}{oldest}",
        snapshot.outbox_depth, limits.max_pending
    );
    let _ = writeln!(out, "last push:     {}", at(snapshot.last_success_at));
    match &snapshot.last_error {
        Some(error) => {
            let _ = writeln!(
                out,
                "last error:    {} at {}",
                error,
                at(snapshot.last_error_at)
            );
        }
        None => {
            let _ = writeln!(out, "last error:    none");
        }
    }
    let _ = writeln!(out, "dead letters:  {}", snapshot.dead_letter_count);
    for dead in &snapshot.dead_letters {
        let _ = writeln!(
            out,
            "  - {} (local id {}, from {}): {}: {}",
            dead.notification_id, dead.local_id, dead.source, dead.code, dead.reason
        );
    }
    if snapshot.subscriptions.is_empty() {
        let _ = writeln!(out, "subscriptions: none");
    }
    for s in &snapshot.subscriptions {
        let acked = match s.last_acked_sequence {
            Some(sequence) => format!("last acked sequence {sequence} at {}", at(s.last_acked_at)),
            None => "nothing acked yet".into(),
        };
        let failing = match (s.failing_since, &s.last_error) {
            (Some(since), Some(error)) => format!("; failing since {}: {error}", at(Some(since))),
            _ => String::new(),
        };
        let _ = writeln!(out, "subscription:  {}: {acked}{failing}", s.name);
        if s.verified + s.unverifiable + s.failed_passed + s.rejected > 0 {
            let _ = writeln!(
                out,
                "  signatures:  {} verified, {} unverifiable (withheld or redacted), \
                 {} failed and passed, {} rejected",
                s.verified, s.unverifiable, s.failed_passed, s.rejected
            );
        }
    }
    out
}
