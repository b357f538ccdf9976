//! Who is talking: the gateway's TLS settings, the accept loop, and the
//! mapping from a verified client certificate to a registered agency.
//!
//! - [`tls`]: the rustls server configuration — TLS 1.3 only, ring
//!   provider, ALPN `h2`, client certificates required and verified against
//!   the configured CA (which also checks validity dates and the clientAuth
//!   key usage).
//! - [`connection`]: the accept loop, each handshake in its own task with a
//!   timeout so a stalled client cannot hold up others, and the verified
//!   connection that carries the peer's SAN URIs to every request.
//! - [`principal`]: the peer's single SAN URI looked up in the registry;
//!   the [`ResolveCaller`] layer does this once per request, before any
//!   handler, and handlers read the result.
//!
//! Identity never comes from a message field, and this module never builds
//! a gRPC status: its refusals are [`IdentityError`]s, mapped by `error`.

pub mod connection;
pub mod principal;
pub mod tls;

pub use connection::{PeerIdentity, TlsConnection, incoming, san_uris};
pub use principal::{Caller, IdentityError, Principal, ResolveCaller, authenticate};
pub use tls::{TlsSetupError, server_config};

#[cfg(test)]
mod tests;
