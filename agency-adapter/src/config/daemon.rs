//! The daemon's settings (`liandong-adapter run` and `status`): which agency
//! it speaks for and with which signing key, where its outbox lives and how
//! large it may grow, where notifications come from (`[[source]]`), which
//! subscriptions it holds and where their deliveries go
//! (`[[subscription]]`), where dead letters are reported (`[dead_letter]`),
//! when `status` calls it unhealthy (`[status]`) and how deliveries are
//! verified (`[verify]`).
//!
//! Every field is documented in `docs/ADAPTER.md`. Relative paths are
//! relative to the config file's directory. Every error names the file and
//! the field (with the entry's index for lists). This module only parses and
//! checks: it must never open a key, a database or a socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use liandong_core::domain::{AgencyId, CaseRef, Event, FieldError, Region, SubscriptionName};
use liandong_core::pb;
use liandong_core::subscription::{Start, StartError, SubscriptionFilter};

use super::raw::{
    RawDeadLetter, RawFilter, RawOutbox, RawSink, RawSource, RawStatus, RawSubscription, RawVerify,
};
use super::{ConfigError, GatewaySettings, PartialGateway, parse_raw, read};

#[cfg(test)]
mod tests;

/// Default `outbox.max_pending`.
pub const DEFAULT_MAX_PENDING: u64 = 10_000;
/// Default `outbox.max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
/// Default `outbox.max_notification_bytes` (the gateway's default limit).
pub const DEFAULT_MAX_NOTIFICATION_BYTES: u64 = 262_144;
/// Default `outbox.keep_sent_days`.
pub const DEFAULT_KEEP_SENT_DAYS: u64 = 30;
/// Default first retry delay, in milliseconds.
pub const DEFAULT_RETRY_INITIAL_MS: u64 = 500;
/// Default longest retry delay, in milliseconds.
pub const DEFAULT_RETRY_MAX_MS: u64 = 60_000;
/// Default `source.poll_interval_ms` of a folder source.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 500;
/// Default `sink.timeout_ms` of a webhook.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 10_000;
/// Default `status.max_pending_age_seconds`.
pub const DEFAULT_MAX_PENDING_AGE_SECONDS: u64 = 300;
/// Default `status.max_failure_seconds`.
pub const DEFAULT_MAX_FAILURE_SECONDS: u64 = 300;

/// Everything `liandong-adapter run` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// The config file it was read from (named in messages).
    pub file: PathBuf,
    /// Where and as whom to reach the gateway.
    pub gateway: GatewaySettings,
    /// The agency this adapter speaks for; must be the one its certificate
    /// proves. Assigned ids start with it and it is the signed `sender`.
    pub agency: AgencyId,
    /// PKCS#8 DER file of the agency's Ed25519 signing key
    /// (`<id>.signing.pk8` from `liandong-certs init`).
    pub signing_key: PathBuf,
    /// The local outbox.
    pub outbox: OutboxSettings,
    /// Where notifications come from.
    pub sources: Vec<SourceSettings>,
    /// The subscriptions held open, each with its sink.
    pub subscriptions: Vec<SubscriptionSettings>,
    /// Where dead letters are reported, if anywhere besides `status`.
    pub dead_letter_sink: Option<SinkSettings>,
    /// When `status` calls the adapter unhealthy.
    pub status: StatusSettings,
    /// How deliveries' signatures are verified; `None`: they are not.
    pub verify: Option<VerifySettings>,
}

/// The `[verify]` table: every full delivery's signature is checked
/// against the keys of a registry file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    /// A registry file (the gateway's format) publishing the senders' keys
    /// and the gateway's (`[gateway] signing_public_key`).
    pub registry: PathBuf,
    /// What becomes of a delivery that fails verification.
    pub on_failure: OnFailure,
}

/// `verify.on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Written to the subscription's `rejected` folder (never to its
    /// sink), counted, logged, then acknowledged.
    Reject,
    /// Logged and counted, then handed to the sink.
    Warn,
}

/// The `[outbox]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// The SQLite file holding the outbox and the sinks' state.
    pub path: PathBuf,
    /// Most notifications waiting to be sent; past it sources are refused
    /// with "outbox full".
    pub max_pending: u64,
    /// Most notifications sent on the stream without a receipt yet.
    pub max_in_flight: u32,
    /// Largest encoded notification accepted (the gateway's limit).
    pub max_notification_bytes: u64,
    /// How long sent notifications are remembered (for idempotency of
    /// client-supplied ids and for `GET /v1/notifications/{id}`).
    pub keep_sent: Duration,
    /// Backoff between attempts to reach the gateway.
    pub retry: RetrySettings,
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay between retries.
    pub max: Duration,
}

/// One `[[source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    /// A drop folder the agency system writes JSON files into.
    Folder(FolderSource),
    /// A local HTTP endpoint.
    Http(HttpSource),
}

/// A `kind = "folder"` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSource {
    /// The folder watched; `done/` and `rejected/` are made inside it.
    pub path: PathBuf,
    /// How often the folder is scanned.
    pub poll_interval: Duration,
}

/// A `kind = "http"` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSource {
    /// The address to listen on; loopback unless `allow_non_loopback`.
    pub listen: SocketAddr,
    /// The file holding the secret every request must present as
    /// `Authorization: Bearer <token>`; readable by its owner only.
    pub token_file: PathBuf,
    /// `host:port` clients name in `Host` when the endpoint is reached on
    /// a non-loopback address (only with `allow_non_loopback`); loopback
    /// names are always accepted.
    pub public_address: Option<String>,
}

/// One `[[subscription]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSettings {
    /// The durable subscription's name at the gateway.
    pub name: SubscriptionName,
    /// Its filter (fixed when the subscription is created).
    pub filter: SubscriptionFilter,
    /// Where a new subscription starts.
    pub start: Start,
    /// Unacknowledged deliveries the gateway may send (0: its default).
    pub max_in_flight: u32,
    /// Seconds before the gateway sends an unacknowledged delivery again
    /// (0: its default).
    pub ack_timeout_seconds: u32,
    /// Where each delivery is handed.
    pub sink: SinkSettings,
    /// Where deliveries that fail verification are written when
    /// `verify.on_failure = "reject"` (default `rejected/<name>` beside the
    /// config file); created with mode 0700.
    pub rejected: PathBuf,
}

impl SubscriptionSettings {
    /// The first request of the subscription.
    pub fn open(&self) -> pb::SubscriptionOpen {
        pb::SubscriptionOpen {
            name: self.name.as_str().to_owned(),
            filter: Some(self.filter.to_wire()),
            start: Some(self.start.to_wire()),
            max_in_flight: self.max_in_flight,
            ack_timeout_seconds: self.ack_timeout_seconds,
        }
    }
}

/// Where deliveries (or dead letters) are handed to the agency system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSettings {
    /// POST each as JSON; success is a 2xx answer.
    Webhook(WebhookSink),
    /// One JSON file each, written atomically.
    Folder(FolderSink),
    /// One JSON line each on standard output.
    Stdout,
}

/// A `kind = "webhook"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSink {
    /// `https://` URL to POST to (`http://` only to a loopback host).
    pub url: String,
    /// Extra request headers (e.g. `Authorization`); never logged.
    pub headers: BTreeMap<String, String>,
    /// PEM file of the CA(s) to trust for an `https://` URL: when set,
    /// the only roots trusted (pinned); the system's roots otherwise.
    pub ca: Option<PathBuf>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Backoff between failed attempts.
    pub retry: RetrySettings,
}

/// A `kind = "folder"` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSink {
    /// The folder files are written into.
    pub path: PathBuf,
}

/// The `[status]` table: when `status` exits non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSettings {
    /// Unhealthy when the oldest pending notification is older.
    pub max_pending_age: Duration,
    /// Unhealthy when there are more dead letters.
    pub max_dead_letters: u64,
    /// Unhealthy when a subscription's sink has failed for longer.
    pub max_failure: Duration,
    /// Unhealthy when the daemon is not running.
    pub require_daemon: bool,
}

/// Builds errors naming the file.
struct Checker<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::InvalidEntry {
            path: self.file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn missing(&self, field: impl Into<String>) -> ConfigError {
        ConfigError::MissingEntry {
            path: self.file.to_owned(),
            field: field.into(),
        }
    }

    fn path(&self, field: &str, value: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
        let value = value.ok_or_else(|| self.missing(field))?;
        if value.as_os_str().is_empty() {
            return Err(self.invalid(field, "must not be empty"));
        }
        Ok(self.base.join(value))
    }

    fn ranged(
        &self,
        field: &str,
        value: Option<u64>,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let value = value.unwrap_or(default);
        if !range.contains(&value) {
            return Err(self.invalid(
                field,
                format!(
                    "{value} is out of range ({} to {})",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }

    fn retry(
        &self,
        prefix: &str,
        initial_ms: Option<u64>,
        max_ms: Option<u64>,
    ) -> Result<RetrySettings, ConfigError> {
        let initial = self.ranged(
            &format!("{prefix}retry_initial_ms"),
            initial_ms,
            DEFAULT_RETRY_INITIAL_MS,
            1..=3_600_000,
        )?;
        let max = self.ranged(
            &format!("{prefix}retry_max_ms"),
            max_ms,
            DEFAULT_RETRY_MAX_MS.max(initial),
            1..=86_400_000,
        )?;
        if max < initial {
            return Err(self.invalid(
                format!("{prefix}retry_max_ms"),
                format!("{max} is less than retry_initial_ms ({initial})"),
            ));
        }
        Ok(RetrySettings {
            initial: Duration::from_millis(initial),
            max: Duration::from_millis(max),
        })
    }
}

impl DaemonConfig {
    /// Reads and checks the config file at `file`. `flags` override its
    /// `[gateway]` table (as for `send` and `tail`).
    pub fn load(file: &Path, flags: PartialGateway) -> Result<Self, ConfigError> {
        Self::parse(file, &read(file)?, flags)
    }

    /// Checks `text` as the content of the config file at `file`.
    pub fn parse(file: &Path, text: &str, flags: PartialGateway) -> Result<Self, ConfigError> {
        flags.check_flags()?;
        let raw = parse_raw(file, text)?;
        let base = file.parent().unwrap_or(Path::new(""));
        let check = Checker { file, base };
        let gateway = flags
            .over(PartialGateway::from_raw(file, raw.gateway)?.unwrap_or_default())
            .complete(Some(file))?;
        let agency = raw.agency.ok_or_else(|| check.missing("agency"))?;
        let agency =
            AgencyId::parse("agency", &agency).map_err(|e| check.invalid(e.field, e.reason))?;
        let signing_key = check.path("signing_key", raw.signing_key)?;
        let outbox = outbox(&check, &agency, raw.outbox.unwrap_or_default())?;
        let mut sources = Vec::with_capacity(raw.source.len());
        for (i, source) in raw.source.into_iter().enumerate() {
            sources.push(self::source(&check, i, source, &sources)?);
        }
        let mut subscriptions: Vec<SubscriptionSettings> = Vec::new();
        for (i, entry) in raw.subscription.into_iter().enumerate() {
            let subscription = self::subscription(&check, i, entry)?;
            if subscriptions.iter().any(|s| s.name == subscription.name) {
                return Err(check.invalid(
                    format!("subscription[{i}].name"),
                    format!("{} is used by an earlier subscription", subscription.name),
                ));
            }
            subscriptions.push(subscription);
        }
        let dead_letter_sink = match raw.dead_letter {
            Some(RawDeadLetter { sink: Some(sink) }) => {
                Some(self::sink(&check, "dead_letter.sink", sink)?)
            }
            Some(RawDeadLetter { sink: None }) => return Err(check.missing("dead_letter.sink")),
            None => None,
        };
        let status = status(&check, raw.status.unwrap_or_default())?;
        let verify = raw.verify.map(|v| verify(&check, v)).transpose()?;
        Ok(Self {
            file: file.to_owned(),
            gateway,
            agency,
            signing_key,
            outbox,
            sources,
            subscriptions,
            dead_letter_sink,
            status,
            verify,
        })
    }

    /// The HTTP source, when there is one.
    pub fn http_source(&self) -> Option<&HttpSource> {
        self.sources.iter().find_map(|source| match source {
            SourceSettings::Http(http) => Some(http),
            SourceSettings::Folder(_) => None,
        })
    }

    /// The address of the HTTP source, when there is one.
    pub fn http_listen(&self) -> Option<SocketAddr> {
        self.sources.iter().find_map(|source| match source {
            SourceSettings::Http(http) => Some(http.listen),
            SourceSettings::Folder(_) => None,
        })
    }
}

/// True when the config file at `path` has the daemon's `agency` key (so
/// `send` can hand notifications to a running daemon).
pub fn is_daemon_config(path: &Path) -> Result<bool, ConfigError> {
    Ok(parse_raw(path, &read(path)?)?.agency.is_some())
}

fn verify(check: &Checker<'_>, raw: RawVerify) -> Result<VerifySettings, ConfigError> {
    let RawVerify {
        registry,
        on_failure,
    } = raw;
    let registry = check.path("verify.registry", registry)?;
    let on_failure = match on_failure.as_deref() {
        None | Some("reject") => OnFailure::Reject,
        Some("warn") => OnFailure::Warn,
        Some(other) => {
            return Err(check.invalid(
                "verify.on_failure",
                format!("{other:?} is not \"reject\" or \"warn\""),
            ));
        }
    };
    Ok(VerifySettings {
        registry,
        on_failure,
    })
}

fn outbox(
    check: &Checker<'_>,
    agency: &AgencyId,
    raw: RawOutbox,
) -> Result<OutboxSettings, ConfigError> {
    let RawOutbox {
        path,
        max_pending,
        max_in_flight,
        max_notification_bytes,
        keep_sent_days,
        retry_initial_ms,
        retry_max_ms,
    } = raw;
    let path = match path {
        Some(path) => check.path("outbox.path", Some(path))?,
        None => check.base.join(format!("{agency}.adapter.db")),
    };
    Ok(OutboxSettings {
        path,
        max_pending: check.ranged(
            "outbox.max_pending",
            max_pending,
            DEFAULT_MAX_PENDING,
            1..=100_000_000,
        )?,
        max_in_flight: check.ranged(
            "outbox.max_in_flight",
            max_in_flight,
            u64::from(DEFAULT_MAX_IN_FLIGHT),
            1..=1024,
        )? as u32,
        max_notification_bytes: check.ranged(
            "outbox.max_notification_bytes",
            max_notification_bytes,
            DEFAULT_MAX_NOTIFICATION_BYTES,
            1024..=64 * 1024 * 1024,
        )?,
        keep_sent: Duration::from_secs(
            86_400
                * check.ranged(
                    "outbox.keep_sent_days",
                    keep_sent_days,
                    DEFAULT_KEEP_SENT_DAYS,
                    1..=3650,
                )?,
        ),
        retry: check.retry("outbox.", retry_initial_ms, retry_max_ms)?,
    })
}

fn source(
    check: &Checker<'_>,
    i: usize,
    raw: RawSource,
    earlier: &[SourceSettings],
) -> Result<SourceSettings, ConfigError> {
    match raw {
        RawSource::Folder {
            path,
            poll_interval_ms,
        } => {
            let path = check.path(&format!("source[{i}].path"), path)?;
            if earlier
                .iter()
                .any(|s| matches!(s, SourceSettings::Folder(f) if f.path == path))
            {
                return Err(check.invalid(
                    format!("source[{i}].path"),
                    "is watched by an earlier source",
                ));
            }
            let poll = check.ranged(
                &format!("source[{i}].poll_interval_ms"),
                poll_interval_ms,
                DEFAULT_POLL_INTERVAL_MS,
                10..=3_600_000,
            )?;
            Ok(SourceSettings::Folder(FolderSource {
                path,
                poll_interval: Duration::from_millis(poll),
            }))
        }
        RawSource::Http {
            listen,
            allow_non_loopback,
            token_file,
            public_address,
        } => {
            let field = format!("source[{i}].listen");
            let listen = listen.ok_or_else(|| check.missing(&field))?;
            let listen: SocketAddr = listen.parse().map_err(|_| {
                check.invalid(
                    &field,
                    format!("{listen:?} is not an IP address and port, e.g. 127.0.0.1:7601"),
                )
            })?;
            if !listen.ip().is_loopback() && !allow_non_loopback.unwrap_or(false) {
                return Err(check.invalid(
                    &field,
                    format!(
                        "{listen} is not a loopback address; any host that reaches it can try \
                         the token, so set source[{i}].allow_non_loopback = true to bind it anyway"
                    ),
                ));
            }
            if earlier.iter().any(|s| matches!(s, SourceSettings::Http(_))) {
                return Err(check.invalid(
                    format!("source[{i}].kind"),
                    "only one http source is allowed",
                ));
            }
            let token_file = check.path(&format!("source[{i}].token_file"), token_file)?;
            let public_address = match public_address {
                None => None,
                Some(_) if !allow_non_loopback.unwrap_or(false) => {
                    return Err(check.invalid(
                        format!("source[{i}].public_address"),
                        "is only for an endpoint with allow_non_loopback = true",
                    ));
                }
                Some(address) => Some(public_address_field(check, i, &address)?),
            };
            Ok(SourceSettings::Http(HttpSource {
                listen,
                token_file,
                public_address,
            }))
        }
    }
}

/// `public_address` of the http source: `host:port`, lower-cased, as a
/// client names it in `Host`.
fn public_address_field(
    check: &Checker<'_>,
    i: usize,
    address: &str,
) -> Result<String, ConfigError> {
    let field = format!("source[{i}].public_address");
    let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && port.parse::<u16>().is_ok_and(|p| p != 0)
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
    });
    if !valid {
        return Err(check.invalid(
            field,
            format!("{address:?} is not host:port, e.g. adapter.eeb.example:7601"),
        ));
    }
    Ok(address.to_ascii_lowercase())
}

fn subscription(
    check: &Checker<'_>,
    i: usize,
    raw: RawSubscription,
) -> Result<SubscriptionSettings, ConfigError> {
    let RawSubscription {
        name,
        start,
        max_in_flight,
        ack_timeout_seconds,
        filter,
        sink,
        rejected,
    } = raw;
    let field = |name: &str| format!("subscription[{i}].{name}");
    let name = name.ok_or_else(|| check.missing(field("name")))?;
    let name = SubscriptionName::parse_field(&field("name"), &name)
        .map_err(|e| check.invalid(e.field, e.reason))?;
    let start = match start {
        None => Start::Beginning,
        Some(start) => start
            .parse()
            .map_err(|e: StartError| check.invalid(field("start"), e.to_string()))?,
    };
    let max_in_flight = match max_in_flight {
        None => 0,
        Some(n) => check.ranged(&field("max_in_flight"), Some(n), 0, 1..=1024)? as u32,
    };
    let ack_timeout_seconds = match ack_timeout_seconds {
        None => 0,
        Some(n) => check.ranged(&field("ack_timeout_seconds"), Some(n), 0, 1..=3600)? as u32,
    };
    let filter = self::filter(check, &field("filter"), filter.unwrap_or_default())?;
    let sink = sink.ok_or_else(|| check.missing(field("sink")))?;
    let sink = self::sink(check, &field("sink"), sink)?;
    let rejected = match rejected {
        Some(path) => check.path(&field("rejected"), Some(path))?,
        None => check.base.join("rejected").join(name.as_str()),
    };
    Ok(SubscriptionSettings {
        name,
        filter,
        start,
        max_in_flight,
        ack_timeout_seconds,
        sink,
        rejected,
    })
}

/// The `filter` table of a subscription, each entry checked and named in
/// errors; the result is normalised, so the same filter written in another
/// order is the same fixed filter.
fn filter(
    check: &Checker<'_>,
    prefix: &str,
    raw: RawFilter,
) -> Result<SubscriptionFilter, ConfigError> {
    let RawFilter {
        events,
        case_ref_prefix,
        senders,
        regions,
    } = raw;
    let invalid = |e: FieldError| check.invalid(e.field, e.reason);
    let events = events
        .iter()
        .enumerate()
        .map(|(j, event)| {
            event
                .parse::<Event>()
                .map_err(|e: FieldError| check.invalid(format!("{prefix}.events[{j}]"), e.reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let case_ref_prefix = match case_ref_prefix {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => {
            Some(CaseRef::parse_field(&format!("{prefix}.case_ref_prefix"), &p).map_err(invalid)?)
        }
    };
    let senders = senders
        .iter()
        .enumerate()
        .map(|(j, sender)| AgencyId::parse(&format!("{prefix}.senders[{j}]"), sender))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let regions = regions
        .iter()
        .enumerate()
        .map(|(j, region)| Region::parse(&format!("{prefix}.regions[{j}]"), region))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    Ok(SubscriptionFilter::new(
        events,
        case_ref_prefix,
        senders,
        regions,
    ))
}

fn sink(check: &Checker<'_>, prefix: &str, raw: RawSink) -> Result<SinkSettings, ConfigError> {
    match raw {
        RawSink::Webhook {
            url,
            headers,
            ca,
            timeout_ms,
            retry_initial_ms,
            retry_max_ms,
        } => {
            let url = url.ok_or_else(|| check.missing(format!("{prefix}.url")))?;
            let parsed = reqwest::Url::parse(&url).map_err(|e| {
                check.invalid(
                    format!("{prefix}.url"),
                    format!("{url:?} is not a URL: {e}"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(check.invalid(
                    format!("{prefix}.url"),
                    format!("{url:?} must be an http:// or https:// URL with a host"),
                ));
            }
            if parsed.scheme() == "http" && !is_loopback_host(&parsed) {
                return Err(check.invalid(
                    format!("{prefix}.url"),
                    format!(
                        "{url:?}: plain http:// is only allowed to a loopback host \
                         (127.0.0.1, [::1], localhost); use https:// for another host"
                    ),
                ));
            }
            for (name, value) in &headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(check.invalid(
                        format!("{prefix}.headers"),
                        format!("{name:?} is not a header name"),
                    ));
                }
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    // The value may be a secret: never quote it.
                    return Err(check.invalid(
                        format!("{prefix}.headers.{name}"),
                        "is not a valid header value",
                    ));
                }
            }
            let ca = match ca {
                Some(_) if parsed.scheme() == "http" => {
                    return Err(
                        check.invalid(format!("{prefix}.ca"), "is only for an https:// url")
                    );
                }
                Some(ca) => Some(check.path(&format!("{prefix}.ca"), Some(ca))?),
                None => None,
            };
            let timeout = check.ranged(
                &format!("{prefix}.timeout_ms"),
                timeout_ms,
                DEFAULT_WEBHOOK_TIMEOUT_MS,
                1..=600_000,
            )?;
            Ok(SinkSettings::Webhook(WebhookSink {
                url,
                headers,
                ca,
                timeout: Duration::from_millis(timeout),
                retry: check.retry(&format!("{prefix}."), retry_initial_ms, retry_max_ms)?,
            }))
        }
        RawSink::Folder { path } => Ok(SinkSettings::Folder(FolderSink {
            path: check.path(&format!("{prefix}.path"), path)?,
        })),
        RawSink::Stdout {} => Ok(SinkSettings::Stdout),
    }
}

/// True when `url` names a loopback host: `localhost`, 127.0.0.0/8 or
/// `[::1]`.
fn is_loopback_host(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

fn status(check: &Checker<'_>, raw: RawStatus) -> Result<StatusSettings, ConfigError> {
    let RawStatus {
        max_pending_age_seconds,
        max_dead_letters,
        max_failure_seconds,
        require_daemon,
    } = raw;
    Ok(StatusSettings {
        max_pending_age: Duration::from_secs(check.ranged(
            "status.max_pending_age_seconds",
            max_pending_age_seconds,
            DEFAULT_MAX_PENDING_AGE_SECONDS,
            1..=31_536_000,
        )?),
        max_dead_letters: max_dead_letters.unwrap_or(0),
        max_failure: Duration::from_secs(check.ranged(
            "status.max_failure_seconds",
            max_failure_seconds,
            DEFAULT_MAX_FAILURE_SECONDS,
            1..=31_536_000,
        )?),
        require_daemon: require_daemon.unwrap_or(true),
    })
}
