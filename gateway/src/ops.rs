//! What operators see of a running gateway, outside the agencies' gRPC
//! port: the ops HTTP port (status page, Prometheus `/metrics`, `/healthz`
//! and `/readyz`) and the snapshots that the status page and the
//! `liandong.v1.Operations` service answer from.
//!
//! - [`http`]: the ops HTTP server and its routes (loopback by default,
//!   `[ops] listen`).
//! - [`snapshot`]: the gateway now: status, agencies and their activity,
//!   subscriptions and their lag. Read-only; never case content.
//! - [`page`]: the status page, server-rendered HTML in Chinese and
//!   English, with its assets embedded in the binary.
//! - [`metrics`]: the Prometheus recorder and the values read at scrape
//!   time.
//! - [`health`]: liveness and readiness.

pub mod health;
pub mod http;
pub mod metrics;
pub mod page;
pub mod snapshot;
