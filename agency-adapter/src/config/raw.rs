//! The config file as written: the serde shape of every table, with every
//! field optional so that a missing one can be named with its full dotted
//! path, and unknown keys refused.
//!
//! This module only describes the file: it never checks a value (that is
//! [`super`]'s job for `[gateway]` and [`super::daemon`]'s for the rest) and
//! never reads anything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) gateway: Option<RawGateway>,
    // The daemon's settings (see `super::daemon`); ignored by `send` and
    // `tail`.
    pub(super) agency: Option<String>,
    pub(super) signing_key: Option<PathBuf>,
    pub(super) outbox: Option<RawOutbox>,
    #[serde(default)]
    pub(super) source: Vec<RawSource>,
    #[serde(default)]
    pub(super) subscription: Vec<RawSubscription>,
    pub(super) dead_letter: Option<RawDeadLetter>,
    pub(super) status: Option<RawStatus>,
    pub(super) verify: Option<RawVerify>,
}

/// `[verify]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub(super) registry: Option<PathBuf>,
    pub(super) on_failure: Option<String>,
}

/// `[gateway]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) url: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}

/// `[outbox]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbox {
    pub(super) path: Option<PathBuf>,
    pub(super) max_pending: Option<u64>,
    pub(super) max_in_flight: Option<u64>,
    pub(super) max_notification_bytes: Option<u64>,
    pub(super) keep_sent_days: Option<u64>,
    pub(super) retry_initial_ms: Option<u64>,
    pub(super) retry_max_ms: Option<u64>,
}

/// `[[source]]` as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawSource {
    Folder {
        path: Option<PathBuf>,
        poll_interval_ms: Option<u64>,
    },
    Http {
        listen: Option<String>,
        allow_non_loopback: Option<bool>,
        token_file: Option<PathBuf>,
        public_address: Option<String>,
    },
}

/// `[[subscription]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscription {
    pub(super) name: Option<String>,
    pub(super) start: Option<String>,
    pub(super) max_in_flight: Option<u64>,
    pub(super) ack_timeout_seconds: Option<u64>,
    pub(super) filter: Option<RawFilter>,
    pub(super) sink: Option<RawSink>,
    pub(super) rejected: Option<PathBuf>,
}

/// A subscription's `filter` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilter {
    #[serde(default)]
    pub(super) events: Vec<String>,
    pub(super) case_ref_prefix: Option<String>,
    #[serde(default)]
    pub(super) senders: Vec<String>,
    #[serde(default)]
    pub(super) regions: Vec<String>,
}

/// A sink as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawSink {
    Webhook {
        url: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        ca: Option<PathBuf>,
        timeout_ms: Option<u64>,
        retry_initial_ms: Option<u64>,
        retry_max_ms: Option<u64>,
    },
    Folder {
        path: Option<PathBuf>,
    },
    Stdout {},
}

/// `[dead_letter]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadLetter {
    pub(super) sink: Option<RawSink>,
}

/// `[status]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    pub(super) max_pending_age_seconds: Option<u64>,
    pub(super) max_dead_letters: Option<u64>,
    pub(super) max_failure_seconds: Option<u64>,
    pub(super) require_daemon: Option<bool>,
}
