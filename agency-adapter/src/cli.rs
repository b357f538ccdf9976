//! The command line of `liandong-adapter`: its flags and subcommands, and
//! the checked values they turn into (gateway settings, the
//! `SubscriptionOpen` of `tail`).
//!
//! Every flag is validated here, at parse time, so a bad value is refused
//! with a message naming the flag before anything is read or connected.
//! This module must never perform I/O beyond reading the config file named
//! by `--config`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use liandong_core::domain::{AgencyId, CaseRef, Event, Region, SubscriptionName};
use liandong_core::pb;
use liandong_core::subscription::{Start, SubscriptionFilter};

use crate::config::{ConfigError, GatewaySettings, PartialGateway};

#[cfg(test)]
mod tests;

/// The Liandong agency adapter: publishes this agency's notifications to the
/// gateway and receives the ones it is entitled to.
#[derive(Debug, Parser)]
#[command(name = "liandong-adapter", version)]
pub struct Cli {
    /// How log lines on standard error are written: `pretty` for people
    /// (colour only on a terminal, never with NO_COLOR set), `json` for
    /// one JSON object per line. The filter is LIANDONG_LOG.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LIANDONG_LOG_FORMAT",
        default_value_t,
        ignore_case = true
    )]
    pub log_format: LogFormat,
    /// Where the gateway is and which credentials to use.
    #[command(flatten, next_help_heading = "Gateway connection")]
    pub gateway: GatewayArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people.
    #[default]
    Pretty,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// and the spans the event happened in.
    Json,
}

/// The gateway connection flags, accepted before or after the subcommand.
/// Each flag overrides the same setting of the `--config` file; with all of
/// `--gateway`, `--ca`, `--cert` and `--key` no file is needed.
#[derive(Debug, Clone, Default, Args)]
pub struct GatewayArgs {
    /// Adapter config file (TOML); its `[gateway]` table gives the settings
    /// the flags below do not.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The gateway's address, e.g. https://127.0.0.1:7443.
    #[arg(long = "gateway", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM file of this agency's client certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM file of this agency's private key.
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Name to check against the gateway's certificate (default: the URL's
    /// host).
    #[arg(long, global = true, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl GatewayArgs {
    /// The settings to connect with: the flags that are set, over the
    /// `--config` file's `[gateway]` table (when given).
    pub fn settings(&self) -> Result<GatewaySettings, ConfigError> {
        GatewaySettings::resolve(self.config.as_deref(), self.flags())
    }

    /// The gateway flags alone.
    pub fn flags(&self) -> PartialGateway {
        PartialGateway {
            url: self.url.clone(),
            server_name: self.server_name.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hand one notification (JSON form) to the running daemon's outbox,
    /// or publish it directly when no daemon runs, and print the answer
    /// (acceptance or the gateway's receipt) as one JSON line.
    Send(SendArgs),
    /// Open a durable subscription and print each delivery as one JSON
    /// line, acknowledging it once printed.
    Tail(TailArgs),
    /// Run the daemon (needs --config): outbox, signing, sources,
    /// subscriptions with their sinks. SIGTERM stops it (exit 0).
    Run(RunArgs),
    /// Report the adapter's state from its local state file (needs
    /// --config); exit 2 when unhealthy.
    Status(StatusArgs),
    /// Create the HTTP source's token file named by the config (needs
    /// --config): random, readable by its owner only; an existing one is
    /// checked and kept.
    HttpToken(HttpTokenArgs),
}

/// Flags of `http-token` (none besides --config).
#[derive(Debug, Clone, Args)]
pub struct HttpTokenArgs {}

/// Flags of `run` (none besides --config).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {}

/// Flags of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of the summary for people.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// File holding one notification in the JSON form; standard input when
    /// absent or `-`.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Publish directly to the gateway even when the config names a
    /// daemon's HTTP source (normally the notification is handed to the
    /// running daemon's outbox, and published directly only when no daemon
    /// listens).
    #[arg(long)]
    pub direct: bool,
}

impl SendArgs {
    /// The file to read, or `None` for standard input.
    pub fn input(&self) -> Option<&Path> {
        self.file.as_deref().filter(|p| p.as_os_str() != "-")
    }
}

/// Flags of `tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Name of the durable subscription (1 to 64 of A-Z a-z 0-9 . _ -).
    #[arg(long, value_name = "NAME", value_parser = parse_subscription_name)]
    pub subscription: SubscriptionName,
    /// Only these events (repeatable), short (CASE_FILED) or full
    /// (EVENT_TYPE_CASE_FILED).
    #[arg(long = "event", value_name = "EVENT", value_parser = parse_event)]
    pub events: Vec<Event>,
    /// Only cases whose reference starts with this.
    #[arg(long, value_name = "PREFIX", value_parser = parse_case_ref_prefix)]
    pub case_ref_prefix: Option<CaseRef>,
    /// Only notifications from this agency (repeatable).
    #[arg(long = "sender", value_name = "AGENCY", value_parser = parse_agency)]
    pub senders: Vec<AgencyId>,
    /// Only notifications of this six-digit region code (repeatable).
    #[arg(long = "region", value_name = "CODE", value_parser = parse_region)]
    pub regions: Vec<Region>,
    /// Where a new subscription starts: beginning, now or after:N (N a
    /// sequence). An existing subscription resumes where it was.
    #[arg(long, value_name = "START", default_value = "beginning")]
    pub from: Start,
    /// Deliveries the gateway may have unacknowledged at once (1-1024;
    /// default: the gateway's, 64).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_in_flight: Option<u32>,
    /// Seconds before an unacknowledged delivery is sent again (1-3600;
    /// default: the gateway's, 30).
    #[arg(long, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub ack_timeout: Option<u32>,
    /// Exit after this many deliveries (once they are acknowledged).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Exit when no delivery arrived for this many seconds (decimals
    /// allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub idle_exit: Option<Duration>,
}

impl TailArgs {
    /// The filter the flags describe (normalised: the same flags in
    /// another order describe the same fixed filter).
    pub fn filter(&self) -> SubscriptionFilter {
        SubscriptionFilter::new(
            self.events.iter().copied(),
            self.case_ref_prefix.clone(),
            self.senders.iter().cloned(),
            self.regions.iter().cloned(),
        )
    }

    /// The first request of the subscription: name, filter, start and
    /// limits (0 where the flag is absent: the gateway's default).
    pub fn subscription_open(&self) -> pb::SubscriptionOpen {
        pb::SubscriptionOpen {
            name: self.subscription.as_str().to_owned(),
            filter: Some(self.filter().to_wire()),
            start: Some(self.from.to_wire()),
            max_in_flight: self.max_in_flight.unwrap_or(0),
            ack_timeout_seconds: self.ack_timeout.unwrap_or(0),
        }
    }
}

fn parse_subscription_name(s: &str) -> Result<SubscriptionName, String> {
    SubscriptionName::parse_field("subscription", s).map_err(|e| e.reason)
}

fn parse_event(s: &str) -> Result<Event, String> {
    Event::from_str(s).map_err(|e| {
        let known: Vec<&str> = (1..)
            .map_while(|n| Event::from_wire("event", n).ok())
            .map(Event::name)
            .collect();
        format!("{}; known events: {}", e.reason, known.join(", "))
    })
}

fn parse_case_ref_prefix(s: &str) -> Result<CaseRef, String> {
    CaseRef::parse_field("case_ref_prefix", s).map_err(|e| e.reason)
}

fn parse_agency(s: &str) -> Result<AgencyId, String> {
    AgencyId::parse("sender", s).map_err(|e| e.reason)
}

fn parse_region(s: &str) -> Result<Region, String> {
    Region::parse("region", s).map_err(|e| e.reason)
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let seconds: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if seconds.is_nan() || seconds <= 0.0 {
        return Err("must be more than 0 seconds".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}
