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
//! - [`config`] — the adapter config file (`[gateway]` table) and the flags
//!   that override it, resolved into [`GatewaySettings`].
//! - [`cli`] — the command line (clap), with every flag validated at parse
//!   time, and the `SubscriptionOpen` that `tail`'s flags describe.
//! - [`client`] — [`GatewayClient`] (connect, publish, get_case, subscribe)
//!   and [`Subscription`] (next, ack, close).
//! - [`send`] — the `send` command (JSON in, receipt line out).
//! - [`tail`] — the `tail` command (delivery lines out, acknowledged once
//!   printed).
//! - [`error`] — the commands' typed errors, their messages and exit codes.
//!
//! The daemon (`run`), see `docs/ADAPTER.md`:
//! - [`config::daemon`] — the daemon's settings (agency, signing key,
//!   outbox, sources, subscriptions and sinks, status limits).
//! - [`daemon`] — prepares everything, runs the tasks, stops them.
//! - [`store`] — the local SQLite state (outbox, sent, dead letters,
//!   subscription progress, the daemon's lease); the only SQL.
//! - [`accept`] — the one acceptance path every source uses: check,
//!   identify, sign, commit.
//! - [`signer`] — the agency's Ed25519 key and the signing of outgoing
//!   notifications (`docs/SIGNING.md`).
//! - [`source`] — the drop folder and the local HTTP endpoint.
//! - [`pusher`] — the outbox over one `PublishStream`, receipts, retries,
//!   dead letters.
//! - [`inbound`] — subscriptions handed to sinks, acknowledged after.
//! - [`sink`] — webhook, folder and stdout sinks; the dead-letter reporter.
//! - [`backoff`] — exponential backoff with jitter.
//! - [`status`] — the `status` report and its health verdict.
//!
//! Shared JSON and TLS handling come from `liandong-core` ([`liandong_core::json`],
//! [`liandong_core::tls`]); nothing here re-implements them.

pub mod accept;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod inbound;
pub mod pusher;
pub mod send;
pub mod signer;
pub mod sink;
pub mod source;
pub mod status;
pub mod store;
pub mod tail;

#[cfg(test)]
mod testing;

pub use client::{ClientError, GatewayClient, Subscription};
pub use config::daemon::DaemonConfig;
pub use config::{AdapterConfig, ConfigError, GatewaySettings};
pub use error::{CommandError, exit};
