//! Who is talking: the gateway's TLS settings, the accept loop, and the
//! mapping from a verified client certificate to a registered agency.
//!
//! - [`tls`]: the rustls server configuration — TLS 1.3 only, ring
//!   provider, ALPN `h2`, no session resumption, client certificates
//!   required and verified against the configured CAs and their CRLs
//!   (fail closed: every CA needs a current CRL), with validity dates and
//!   the clientAuth extended key usage checked.
//! - [`live`]: the TLS configuration in force (replaced on reload) and the
//!   registry of live connections: per-identity connection cap, and
//!   re-verification of every live chain after each reload and every 30 s,
//!   closing those that fail.
//! - [`connection`]: the accept loop, each handshake in its own task with a
//!   timeout so a stalled client cannot hold up others, every refusal
//!   audited, and the verified connection that carries the peer's SAN URIs
//!   to every request and closes when revoked or idle.
//! - [`principal`]: the peer's single SAN URI looked up in the registry;
//!   the [`ResolveCaller`] layer does this once per request, before any
//!   handler, and handlers read the result.
//!
//! Identity never comes from a message field, and this module never builds
//! a gRPC status: its refusals are [`IdentityError`]s, mapped by `error`.

pub mod connection;
pub mod live;
pub mod principal;
pub mod tls;

pub use connection::{AcceptSettings, PeerIdentity, TlsConnection, incoming, san_uris};
pub use live::{LiveConnections, TlsState, recheck};
pub use principal::{Caller, IdentityError, Principal, ResolveCaller, authenticate};
pub use tls::{TlsMaterial, TlsSetupError, server_config};

#[cfg(test)]
mod tests;
