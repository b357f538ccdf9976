//! The gateway's configuration file (TOML) and its environment overrides.
//!
//! Paths in the file are relative to the file's own directory, so a config
//! and its PKI can be moved together. `LIANDONG_LISTEN` and
//! `LIANDONG_DATABASE_URL` override the listen address and the database URL.
//! Loading validates everything it can without touching the network; an
//! error names the file and the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use liandong_core::toml_file::{self, FileError};
use serde::Deserialize;

use liandong_core::domain::AgencyId;

use crate::quota::rate::{self, Rate, RateSettings};
use crate::reports::{CrimeThreshold, Schedule, SupervisionSettings};
use crate::supervision::{DEFAULT_TIME_ZONE, MechanismFiles};

#[cfg(test)]
mod tests;

/// Environment variable overriding `listen`.
pub const ENV_LISTEN: &str = "LIANDONG_LISTEN";
/// Environment variable overriding `database.url`.
pub const ENV_DATABASE_URL: &str = "LIANDONG_DATABASE_URL";
/// Environment variable overriding `ops.listen` (`off` turns the ops
/// HTTP port off).
pub const ENV_OPS_LISTEN: &str = "LIANDONG_OPS_LISTEN";
/// Where the ops HTTP port (status page, `/metrics`, `/healthz`,
/// `/readyz`) listens when `[ops] listen` is not set: loopback only.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9464";

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, or is not valid TOML, or has unknown or
    /// mistyped keys.
    #[error(transparent)]
    File(#[from] FileError),
    /// A field has a value that cannot work.
    #[error("{path}: {field}: {reason}")]
    Field {
        /// The config file.
        path: PathBuf,
        /// Dotted name of the field (or the environment variable).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: String,
    registry: PathBuf,
    #[serde(default)]
    policy: Option<PathBuf>,
    tls: TlsSection,
    database: DatabaseSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    delivery: DeliverySection,
    #[serde(default)]
    shutdown: ShutdownSection,
    #[serde(default)]
    reports: ReportsSection,
    #[serde(default)]
    supervision: SupervisionSection,
    signing: SigningSection,
    #[serde(default)]
    mechanism: MechanismSection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default)]
    ops: OpsSection,
    #[serde(default)]
    tracing: TracingSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsSection {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    ready_certificate_days: Option<u32>,
}

/// The `[ops]` section: the operators' HTTP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsSettings {
    /// Where the status page, `/metrics`, `/healthz` and `/readyz` are
    /// served (`None`: `listen = "off"`). Loopback by default
    /// ([`DEFAULT_OPS_LISTEN`]); docs/OPERATIONS.md says how to expose it.
    pub listen: Option<SocketAddr>,
    /// `/readyz` fails when a certificate or CRL the gateway relies on
    /// expires within this many days (default 1).
    pub ready_certificate_days: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditSection {
    #[serde(default)]
    checkpoint_rows: Option<u64>,
    #[serde(default)]
    checkpoint_seconds: Option<u64>,
    #[serde(default)]
    checkpoint_file: Option<PathBuf>,
    #[serde(default)]
    startup_check_rows: Option<u64>,
}

/// The `[audit]` section: when the chain head is signed, where the latest
/// checkpoint is written, and how much of the chain the start-up check
/// walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// A checkpoint is signed after this many new rows (default 1000).
    pub checkpoint_rows: u64,
    /// … or this long after the last one, when rows were added (default
    /// 60 s).
    pub checkpoint_interval: Duration,
    /// Where the latest checkpoint is written as JSON (default: beside the
    /// SQLite database, or beside the config file on PostgreSQL).
    pub checkpoint_file: PathBuf,
    /// How many of the newest audit rows the start-up check walks (0:
    /// none; default 1000).
    pub startup_check_rows: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningSection {
    key: PathBuf,
    #[serde(default)]
    require_signatures: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsSection {
    #[serde(default)]
    schedule: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisionSection {
    #[serde(default)]
    filed_idle_days: Option<u32>,
    /// Measurement name -> least crime-level value; replaces the defaults
    /// when present.
    #[serde(default)]
    crime_thresholds: Option<std::collections::BTreeMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MechanismSection {
    #[serde(default)]
    deadlines: Option<PathBuf>,
    #[serde(default)]
    calendar: Vec<PathBuf>,
    #[serde(default)]
    time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default = "default_handshake_timeout")]
    handshake_timeout_seconds: u64,
    #[serde(default)]
    crls: Vec<PathBuf>,
    #[serde(default = "default_idle_timeout_seconds")]
    idle_timeout_seconds: u64,
    #[serde(default = "default_expiry_warning_days")]
    expiry_warning_days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    url: String,
    #[serde(default = "default_max_connections")]
    max_connections: u32,
    #[serde(default = "default_startup_check_rows")]
    startup_check_rows: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: usize,
    #[serde(default = "default_max_subscriptions_per_agency")]
    max_subscriptions_per_agency: u32,
    #[serde(default = "default_max_streams_per_agency")]
    max_streams_per_agency: u32,
    #[serde(default = "default_max_connections_per_agency")]
    max_connections_per_agency: u32,
    #[serde(default = "default_max_concurrent_streams_per_connection")]
    max_concurrent_streams_per_connection: u32,
    #[serde(default = "default_publish_per_second")]
    publish_per_second: u32,
    #[serde(default = "default_publish_burst")]
    publish_burst: u32,
    /// Agency id -> its own publish rate.
    #[serde(default)]
    agency: std::collections::BTreeMap<String, AgencyLimitsSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgencyLimitsSection {
    #[serde(default)]
    publish_per_second: Option<u32>,
    #[serde(default)]
    publish_burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverySection {
    #[serde(default = "default_poll_interval_ms")]
    poll_interval_ms: u64,
    #[serde(default = "default_stall_timeout_seconds")]
    stall_timeout_seconds: u64,
    #[serde(default = "default_cursor_flush_ms")]
    cursor_flush_ms: u64,
    #[serde(default = "default_subscription_lease_seconds")]
    subscription_lease_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownSection {
    #[serde(default = "default_grace_seconds")]
    grace_seconds: u64,
}

fn default_handshake_timeout() -> u64 {
    10
}
fn default_idle_timeout_seconds() -> u64 {
    300
}
fn default_expiry_warning_days() -> u32 {
    30
}
fn default_max_connections_per_agency() -> u32 {
    32
}
fn default_max_concurrent_streams_per_connection() -> u32 {
    200
}
fn default_max_connections() -> u32 {
    8
}
fn default_startup_check_rows() -> u64 {
    1000
}
fn default_max_message_bytes() -> usize {
    256 * 1024
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_stall_timeout_seconds() -> u64 {
    30
}
fn default_cursor_flush_ms() -> u64 {
    1000
}
fn default_subscription_lease_seconds() -> u64 {
    10
}
fn default_max_subscriptions_per_agency() -> u32 {
    100
}
fn default_max_streams_per_agency() -> u32 {
    100
}
fn default_publish_per_second() -> u32 {
    rate::DEFAULT_PER_SECOND
}
fn default_publish_burst() -> u32 {
    rate::DEFAULT_BURST
}
fn default_grace_seconds() -> u64 {
    10
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_message_bytes: default_max_message_bytes(),
            max_subscriptions_per_agency: default_max_subscriptions_per_agency(),
            max_streams_per_agency: default_max_streams_per_agency(),
            publish_per_second: default_publish_per_second(),
            publish_burst: default_publish_burst(),
            agency: std::collections::BTreeMap::new(),
            max_connections_per_agency: default_max_connections_per_agency(),
            max_concurrent_streams_per_connection: default_max_concurrent_streams_per_connection(),
        }
    }
}
impl Default for DeliverySection {
    fn default() -> Self {
        Self {
            poll_interval_ms: default_poll_interval_ms(),
            stall_timeout_seconds: default_stall_timeout_seconds(),
            cursor_flush_ms: default_cursor_flush_ms(),
            subscription_lease_seconds: default_subscription_lease_seconds(),
        }
    }
}
impl Default for ShutdownSection {
    fn default() -> Self {
        Self {
            grace_seconds: default_grace_seconds(),
        }
    }
}

/// The files of the gateway's TLS identity and of the CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that sign agency client certificates.
    pub ca: PathBuf,
    /// The gateway's certificate chain.
    pub cert: PathBuf,
    /// The gateway's private key.
    pub key: PathBuf,
    /// Certificate revocation lists (PEM or DER); every CA of `ca` must be
    /// covered by one it signed that has not expired.
    pub crls: Vec<PathBuf>,
}

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Where to accept connections.
    pub listen: SocketAddr,
    /// The agency registry file.
    pub registry: PathBuf,
    /// The policy file; `None` uses the built-in default policy.
    pub policy: Option<PathBuf>,
    /// TLS identity and trust.
    pub tls: TlsFiles,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// A connection that moved no byte either way for this long is closed
    /// (HTTP/2 keepalive pings count).
    pub idle_timeout: Duration,
    /// Certificates and CRLs expiring within this many days are warned
    /// about at start, on reload and daily.
    pub expiry_warning_days: u32,
    /// Live TLS connections one client identity (SAN URI) may hold; one
    /// more is closed at once.
    pub max_connections_per_agency: u32,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams_per_connection: u32,
    /// `sqlite://PATH` or `postgres://…`; relative SQLite paths are resolved
    /// against the config file's directory.
    pub database_url: String,
    /// Size of the database connection pool.
    pub max_connections: u32,
    /// How many of the newest notifications the start-up integrity check
    /// verifies (0: none).
    pub startup_check_rows: u64,
    /// Largest encoded request accepted; larger is `RESOURCE_EXHAUSTED`.
    pub max_message_bytes: usize,
    /// How often the gateway looks for notifications stored by another
    /// replica (one look per process, not per subscription).
    pub poll_interval: Duration,
    /// A subscription stream none of whose frames could be sent for this
    /// long (the subscriber stopped reading) is cut; it resumes on
    /// reconnect.
    pub stall_timeout: Duration,
    /// Subscription cursors are written at most this often while a stream
    /// is open (and once at its end), only when they moved.
    pub cursor_flush: Duration,
    /// How long a subscription's lease lasts unless the gateway process
    /// serving it renews it (every third of it): how long a subscriber
    /// waits, at most, to resume on another replica after the one serving
    /// it died.
    pub subscription_lease: Duration,
    /// Stored subscriptions one agency may have; a new one beyond is
    /// `RESOURCE_EXHAUSTED`.
    pub max_subscriptions_per_agency: u32,
    /// Subscribe streams one agency may have open at once, and, counted
    /// separately, `PublishStream` calls; one more of either is
    /// `RESOURCE_EXHAUSTED`.
    pub max_streams_per_agency: u32,
    /// Notifications per second each agency may publish, and how many at
    /// once after a pause (`limits.publish_per_second`, `publish_burst`,
    /// `[limits.agency.<id>]`); more is `RESOURCE_EXHAUSTED`.
    pub publish_rate: RateSettings,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// How often member agencies receive their statistics report
    /// (`[reports] schedule`: `monthly`, the default, `weekly` or `off`).
    pub report_schedule: Schedule,
    /// Crime thresholds and idle limits of the supervision signals
    /// (`[supervision]`; defaults in `reports::signals`).
    pub supervision: SupervisionSettings,
    /// The gateway's Ed25519 signing key (PKCS#8 DER), with which it signs
    /// the notifications it emits itself.
    pub signing_key: PathBuf,
    /// `[signing] require_signatures`: every notification must carry a
    /// valid signature by a key registered for its sender. Off (the
    /// default), an agency without a registered key may publish unsigned.
    pub require_signatures: bool,
    /// The deadline rules, calendar files and time zone of the mechanism.
    pub mechanism: MechanismFiles,
    /// The audit chain's checkpoints and start-up check (`[audit]`).
    pub audit: AuditSettings,
    /// `[ops]`: the operators' HTTP port.
    pub ops: OpsSettings,
    /// `[tracing]`: span export over OTLP/HTTP; `None` (no
    /// `otlp_endpoint`, the default) exports nothing.
    pub tracing: Option<TracingSettings>,
}

impl GatewayConfig {
    /// Reads `path`, applying overrides from `env` (normally
    /// `std::env::var`).
    pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::parse(&toml_file::read(path, "config")?, path, env)
    }

    /// Validates config text; `path` names errors and anchors relative paths.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml_file::parse(path, text)?;
        let field = |field: &str, reason: String| ConfigError::Field {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };

        let (listen_field, listen) = match env(ENV_LISTEN) {
            Some(value) => (ENV_LISTEN, value),
            None => ("listen", file.listen),
        };
        let listen: SocketAddr = listen.parse().map_err(|_| {
            field(
                listen_field,
                format!("{listen:?} is not an address such as 127.0.0.1:7443"),
            )
        })?;

        let (url_field, url) = match env(ENV_DATABASE_URL) {
            Some(value) => (ENV_DATABASE_URL, value),
            None => ("database.url", file.database.url),
        };
        let database_url =
            resolve_database_url(&url, base).map_err(|reason| field(url_field, reason))?;
        if file.database.max_connections == 0 {
            return Err(field(
                "database.max_connections",
                "must be at least 1".into(),
            ));
        }
        if file.tls.handshake_timeout_seconds == 0 {
            return Err(field(
                "tls.handshake_timeout_seconds",
                "must be at least 1".into(),
            ));
        }
        if !(1..=86_400).contains(&file.tls.idle_timeout_seconds) {
            return Err(field(
                "tls.idle_timeout_seconds",
                "must be between 1 and 86400".into(),
            ));
        }
        if !(1..=3650).contains(&file.tls.expiry_warning_days) {
            return Err(field(
                "tls.expiry_warning_days",
                "must be between 1 and 3650".into(),
            ));
        }
        if !(1..=100_000).contains(&file.limits.max_connections_per_agency) {
            return Err(field(
                "limits.max_connections_per_agency",
                "must be between 1 and 100000".into(),
            ));
        }
        if !(1..=10_000).contains(&file.limits.max_concurrent_streams_per_connection) {
            return Err(field(
                "limits.max_concurrent_streams_per_connection",
                "must be between 1 and 10000".into(),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&file.limits.max_message_bytes) {
            return Err(field(
                "limits.max_message_bytes",
                "must be between 1024 and 16777216".into(),
            ));
        }
        if !(10..=60_000).contains(&file.delivery.poll_interval_ms) {
            return Err(field(
                "delivery.poll_interval_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        if !(1..=3600).contains(&file.delivery.stall_timeout_seconds) {
            return Err(field(
                "delivery.stall_timeout_seconds",
                "must be between 1 and 3600".into(),
            ));
        }
        if !(10..=60_000).contains(&file.delivery.cursor_flush_ms) {
            return Err(field(
                "delivery.cursor_flush_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        if !(2..=300).contains(&file.delivery.subscription_lease_seconds) {
            return Err(field(
                "delivery.subscription_lease_seconds",
                "must be between 2 and 300".into(),
            ));
        }
        if !(1..=100_000).contains(&file.limits.max_subscriptions_per_agency) {
            return Err(field(
                "limits.max_subscriptions_per_agency",
                "must be between 1 and 100000".into(),
            ));
        }
        if !(1..=100_000).contains(&file.limits.max_streams_per_agency) {
            return Err(field(
                "limits.max_streams_per_agency",
                "must be between 1 and 100000".into(),
            ));
        }
        let publish_rate = publish_rate(&file.limits, &field)?;
        let report_schedule = match file.reports.schedule.as_deref() {
            None => Schedule::default(),
            Some(text) => Schedule::parse(text).ok_or_else(|| {
                field(
                    "reports.schedule",
                    format!("{text:?} is not one of \"monthly\", \"weekly\", \"off\""),
                )
            })?,
        };
        let supervision = supervision_settings(file.supervision, &field)?;
        let checkpoint_rows = file.audit.checkpoint_rows.unwrap_or(1000);
        if !(1..=10_000_000).contains(&checkpoint_rows) {
            return Err(field(
                "audit.checkpoint_rows",
                "must be between 1 and 10000000".into(),
            ));
        }
        let checkpoint_seconds = file.audit.checkpoint_seconds.unwrap_or(60);
        if !(1..=86_400).contains(&checkpoint_seconds) {
            return Err(field(
                "audit.checkpoint_seconds",
                "must be between 1 and 86400".into(),
            ));
        }
        let checkpoint_file = match &file.audit.checkpoint_file {
            Some(path) => resolve(path),
            None => match database_url.strip_prefix("sqlite://") {
                Some(rest) => {
                    let db = rest.split_once('?').map_or(rest, |(db, _)| db);
                    PathBuf::from(format!("{db}.audit-checkpoint.json"))
                }
                None => base.join("audit-checkpoint.json"),
            },
        };
        let audit = AuditSettings {
            checkpoint_rows,
            checkpoint_interval: Duration::from_secs(checkpoint_seconds),
            checkpoint_file,
            startup_check_rows: file.audit.startup_check_rows.unwrap_or(1000),
        };
        let time_zone = file
            .mechanism
            .time_zone
            .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned());
        if jiff::tz::TimeZone::get(&time_zone).is_err() {
            return Err(field(
                "mechanism.time_zone",
                format!(
                    "{time_zone:?} is not a time zone of the bundled database (e.g. Asia/Shanghai)"
                ),
            ));
        }
        let ops = ops_settings(file.ops, &env, &field)?;
        let tracing = tracing_settings(file.tracing, &field)?;
        Ok(Self {
            listen,
            registry: resolve(&file.registry),
            policy: file.policy.as_deref().map(resolve),
            tls: TlsFiles {
                ca: resolve(&file.tls.ca),
                cert: resolve(&file.tls.cert),
                key: resolve(&file.tls.key),
                crls: file.tls.crls.iter().map(|p| resolve(p)).collect(),
            },
            handshake_timeout: Duration::from_secs(file.tls.handshake_timeout_seconds),
            idle_timeout: Duration::from_secs(file.tls.idle_timeout_seconds),
            expiry_warning_days: file.tls.expiry_warning_days,
            max_connections_per_agency: file.limits.max_connections_per_agency,
            max_concurrent_streams_per_connection: file
                .limits
                .max_concurrent_streams_per_connection,
            database_url,
            max_connections: file.database.max_connections,
            startup_check_rows: file.database.startup_check_rows,
            max_message_bytes: file.limits.max_message_bytes,
            poll_interval: Duration::from_millis(file.delivery.poll_interval_ms),
            stall_timeout: Duration::from_secs(file.delivery.stall_timeout_seconds),
            cursor_flush: Duration::from_millis(file.delivery.cursor_flush_ms),
            subscription_lease: Duration::from_secs(file.delivery.subscription_lease_seconds),
            max_subscriptions_per_agency: file.limits.max_subscriptions_per_agency,
            max_streams_per_agency: file.limits.max_streams_per_agency,
            publish_rate,
            shutdown_grace: Duration::from_secs(file.shutdown.grace_seconds),
            report_schedule,
            supervision,
            signing_key: resolve(&file.signing.key),
            require_signatures: file.signing.require_signatures,
            mechanism: MechanismFiles {
                deadlines: file.mechanism.deadlines.as_deref().map(resolve),
                calendar: file.mechanism.calendar.iter().map(|p| resolve(p)).collect(),
                time_zone,
            },
            audit,
            ops,
            tracing,
        })
    }
}

/// The `[ops]` section, validated, with [`ENV_OPS_LISTEN`] applied.
fn ops_settings(
    ops: OpsSection,
    env: &impl Fn(&str) -> Option<String>,
    field: &impl Fn(&str, String) -> ConfigError,
) -> Result<OpsSettings, ConfigError> {
    let (listen_field, listen) = match env(ENV_OPS_LISTEN) {
        Some(value) => (ENV_OPS_LISTEN, value),
        None => (
            "ops.listen",
            ops.listen.unwrap_or_else(|| DEFAULT_OPS_LISTEN.to_owned()),
        ),
    };
    let listen = if listen == "off" {
        None
    } else {
        Some(listen.parse::<SocketAddr>().map_err(|_| {
            field(
                listen_field,
                format!("{listen:?} is not an address such as 127.0.0.1:9464, nor \"off\""),
            )
        })?)
    };
    let ready_certificate_days = ops.ready_certificate_days.unwrap_or(1);
    if ready_certificate_days > 3650 {
        return Err(field(
            "ops.ready_certificate_days",
            "must be between 0 and 3650".into(),
        ));
    }
    Ok(OpsSettings {
        listen,
        ready_certificate_days,
    })
}

/// The `[supervision]` section, validated: idle days between 1 and 3650,
/// threshold names of `[a-z0-9_]` with a unit word, finite positive
/// minimums.
fn supervision_settings(
    section: SupervisionSection,
    field: &impl Fn(&str, String) -> ConfigError,
) -> Result<SupervisionSettings, ConfigError> {
    let mut settings = SupervisionSettings::default();
    if let Some(days) = section.filed_idle_days {
        if !(1..=3650).contains(&days) {
            return Err(field(
                "supervision.filed_idle_days",
                "must be between 1 and 3650".into(),
            ));
        }
        settings.filed_idle_days = days;
    }
    if let Some(thresholds) = section.crime_thresholds {
        settings.crime_thresholds = Vec::with_capacity(thresholds.len());
        for (name, minimum) in thresholds {
            let key = format!("supervision.crime_thresholds.{name}");
            let well_formed = name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && name.contains('_')
                && !name.ends_with('_')
                && !name.starts_with('_');
            if !well_formed {
                return Err(field(
                    &key,
                    "a measurement name is lower-case a-z, 0-9 and _, ending in its unit \
                     (e.g. hazardous_waste_tonnes)"
                        .into(),
                ));
            }
            if !(minimum.is_finite() && minimum > 0.0) {
                return Err(field(&key, "must be a number above 0".into()));
            }
            settings.crime_thresholds.push(CrimeThreshold {
                measurement: name,
                minimum,
            });
        }
    }
    Ok(settings)
}

/// The publish rates of `[limits]`, validated: rates and bursts between 1
/// and [`rate::MAX_SETTING`], agency tables named by a well-formed agency
/// id (an agency's table may set either value; the other is the default).
fn publish_rate(
    limits: &LimitsSection,
    field: &impl Fn(&str, String) -> ConfigError,
) -> Result<RateSettings, ConfigError> {
    let setting = |name: &str, value: u32| {
        std::num::NonZeroU32::new(value)
            .filter(|value| value.get() <= rate::MAX_SETTING)
            .ok_or_else(|| field(name, format!("must be between 1 and {}", rate::MAX_SETTING)))
    };
    let default = Rate {
        per_second: setting("limits.publish_per_second", limits.publish_per_second)?,
        burst: setting("limits.publish_burst", limits.publish_burst)?,
    };
    let mut agencies = std::collections::BTreeMap::new();
    for (id, own) in &limits.agency {
        let key = format!("limits.agency.{id}");
        let agency = AgencyId::parse(&key, id)
            .map_err(|_| field(&key, format!("{id:?} is not an agency id")))?;
        let rate = Rate {
            per_second: match own.publish_per_second {
                Some(value) => setting(&format!("{key}.publish_per_second"), value)?,
                None => default.per_second,
            },
            burst: match own.publish_burst {
                Some(value) => setting(&format!("{key}.publish_burst"), value)?,
                None => default.burst,
            },
        };
        agencies.insert(agency, rate);
    }
    Ok(RateSettings { default, agencies })
}

fn resolve_database_url(url: &str, base: &Path) -> Result<String, String> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let (file, query) = match rest.split_once('?') {
            Some((file, query)) => (file, Some(query)),
            None => (rest, None),
        };
        if file.is_empty() || file == ":memory:" {
            return Err("a SQLite database needs a file path (sqlite://data/liandong.db)".into());
        }
        let file = Path::new(file);
        let file = if file.is_absolute() {
            file.to_owned()
        } else {
            base.join(file)
        };
        let mut resolved = format!("sqlite://{}", file.display());
        if let Some(query) = query {
            resolved.push('?');
            resolved.push_str(query);
        }
        Ok(resolved)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TracingSection {
    #[serde(default)]
    otlp_endpoint: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    sample_ratio: Option<f64>,
}

/// The service name spans are exported under unless `[tracing]
/// service_name` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "liandong-gateway";

/// The `[tracing]` section: where spans are exported, as what, and how
/// many.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/HTTP endpoint (`http://127.0.0.1:4318`); spans are posted
    /// to its `/v1/traces`.
    pub otlp_endpoint: String,
    /// The `service.name` of the exported spans (default
    /// [`DEFAULT_SERVICE_NAME`]); replicas share it.
    pub service_name: String,
    /// The share of new traces exported, from 0 to 1 (default 1); a call
    /// continuing a sampled trace is always exported.
    pub sample_ratio: f64,
}

// `sample_ratio` is checked finite, so equality is an equivalence.
impl Eq for TracingSettings {}

/// The `[tracing]` section, validated: `None` without an `otlp_endpoint`.
fn tracing_settings(
    section: TracingSection,
    field: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<TracingSettings>, ConfigError> {
    let service_name = section
        .service_name
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.is_empty()
        || service_name.len() > 255
        || service_name.chars().any(char::is_control)
    {
        return Err(field(
            "tracing.service_name",
            "must be 1 to 255 printable characters".into(),
        ));
    }
    let sample_ratio = section.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(field(
            "tracing.sample_ratio",
            "must be a number from 0 to 1".into(),
        ));
    }
    let Some(endpoint) = section.otlp_endpoint else {
        return Ok(None);
    };
    let uri: Option<http::Uri> = endpoint.parse().ok();
    let well_formed = uri.as_ref().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
            && uri.query().is_none()
    });
    if !well_formed {
        return Err(field(
            "tracing.otlp_endpoint",
            format!("{endpoint:?} is not an http:// or https:// URL such as http://127.0.0.1:4318"),
        ));
    }
    Ok(Some(TracingSettings {
        otlp_endpoint: endpoint,
        service_name,
        sample_ratio,
    }))
}
