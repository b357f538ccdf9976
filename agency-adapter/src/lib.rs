//! The Liandong agency adapter: the library behind `liandong-adapter`, which
//! publishes an agency's case notifications to the gateway and receives the
//! deliveries the agency is entitled to, over mutual-TLS gRPC.
//!
//! Other programs (the end-to-end tests, an agency's own systems) use
//! [`GatewayClient`] and [`Subscription`] directly; the binary is a thin
//! command line over the same API.
//!
//! This crate must never log or print notification content (summary, body,
//! confidentiality note) other than as the requested JSON output on
//! standard output: logs carry ids only (`notification.id`, `case.ref`,
//! `subscription.name`).
//!
//! # Layout
//! Shared by the commands and the daemon:
//! - [`config`] — the adapter config file (`[gateway]` table) and the flags
//!   that override it, resolved into [`GatewaySettings`]; `config::raw` —
//!   the file as written (serde shapes, unknown keys refused);
//!   [`config::daemon`] — the daemon's settings (agency, signing key, outbox, sources,
//!   subscriptions and sinks, status limits).
//! - [`cli`] — the command line (clap), with every flag validated at parse
//!   time, and the `SubscriptionOpen` that `tail`'s flags describe.
//! - [`client`] — [`GatewayClient`] (connect, publish, get_case, subscribe)
//!   and [`Subscription`] (next, ack, close).
//! - [`signer`] — the agency's Ed25519 key and the signing of outgoing
//!   notifications (`docs/SIGNING.md`).
//! - [`store`] — the local SQLite state (outbox, sent, dead letters,
//!   subscription progress, the daemon's lease, the status snapshot); the
//!   only SQL.
//! - [`report`] — the status report of a store snapshot and its health
//!   verdict.
//! - [`error`] — the commands' typed errors, their messages and exit codes.
//! - [`shutdown`] — the stop request (SIGINT, SIGTERM).
//!
//! The one-shot [`commands`]:
//! - [`commands::send`] — JSON in, the daemon's acceptance or the gateway's
//!   receipt out.
//! - [`commands::tail`] — delivery lines out, acknowledged once printed.
//! - [`commands::status`] — the status report of the local state.
//!
//! The [`daemon`] (`run`), see `docs/ADAPTER.md`: prepares everything, runs
//! the tasks, stops them.
//! - [`daemon::accept`] — the one acceptance path every source uses:
//!   check, identify, sign, commit.
//! - [`daemon::source`] — the drop folder and the local HTTP endpoint.
//! - [`daemon::pusher`] — the outbox over one `PublishStream`, receipts,
//!   retries, dead letters.
//! - [`daemon::inbound`] — subscriptions handed to sinks, acknowledged
//!   after.
//! - [`daemon::sink`] — webhook, folder and stdout sinks; the dead-letter
//!   reporter.
//! - [`daemon::backoff`] — exponential backoff with jitter.
//!
//! Dependencies point one way: commands may use the daemon's pieces (`send`
//! prepares as [`daemon::accept`] does and hands over to its HTTP source),
//! the daemon never uses a command, and the shared modules use neither.
//!
//! Shared JSON and TLS handling come from `liandong-core` ([`liandong_core::json`],
//! [`liandong_core::tls`]); nothing here re-implements them.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod error;
pub mod report;
pub mod shutdown;
pub mod signer;
pub mod store;

#[cfg(test)]
mod testing;

pub use client::{ClientError, GatewayClient, Subscription};
pub use config::daemon::DaemonConfig;
pub use config::{AdapterConfig, ConfigError, GatewaySettings};
pub use error::{CommandError, exit};
