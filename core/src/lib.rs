//! What the Liandong gateway and the agency adapter both need to agree on:
//! validated domain types, the agency registry, the JSON form of the wire
//! messages and the client side of mutual TLS.
//!
//! # Layout
//! - [`domain`]: validated identifiers and enums (`AgencyId`, `CaseRef`,
//!   `Confidentiality`, …), the validated [`domain::Notification`] and its
//!   routing fields, [`domain::Envelope`].
//! - [`refusal`]: the machine-readable kinds of refusal the gateway marks
//!   a status with (`liandong-refusal` metadata), e.g. a disabled agency.
//! - [`registry`]: the agency registry file (who exists, with which role,
//!   clearance and certificate identity).
//! - [`json`]: the documented JSON form of `liandong.v1` messages.
//! - [`key_file`]: Ed25519 private key files in PKCS#8 v1 or v2, DER or
//!   PEM.
//! - [`signing`]: the canonical bytes agencies sign, key ids, verification.
//! - [`subscription`]: a subscription's normalised filter (with the bytes
//!   the gateway stores and compares) and its start position.
//! - [`tls`]: PEM loading and the client TLS settings agencies connect with.
//! - [`toml_file`]: reading a TOML file, with one error (naming the file,
//!   line and column) for a file that cannot be read or parsed.
//!
//! Nothing here performs I/O beyond reading the files it is asked to read.

pub mod domain;
pub mod json;
pub mod key_file;
pub mod refusal;
pub mod registry;
pub mod signing;
pub mod subscription;
pub mod tls;
pub mod toml_file;

pub use liandong_proto::v1 as pb;
