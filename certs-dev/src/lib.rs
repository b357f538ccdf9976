//! Development PKI for Liandong.
//!
//! Makes a certificate authority, the gateway's server certificate, agency
//! client certificates (identified by the single SAN URI
//! `urn:liandong:agency:<id>`) and agency Ed25519 signing keys. Used by
//! developers through `liandong-certs init` and by tests to create good and
//! deliberately bad certificates at test time.
//!
//! This crate must never be used to issue production certificates, and must
//! never print private keys: every type holding one has a redacting `Debug`.

mod agency_id;
mod authority;
mod error;
mod init;
mod keys;
mod registry;
mod revocation;
mod signing;

pub use agency_id::{AGENCY_URI_PREFIX, agency_uri, validate_agency_id};
pub use authority::{Authority, CertifiedKey, ClientSpec, CrlContents, KeyUsage, Revocation};
pub use error::CertError;
pub use init::{AGENCIES_DIR, DEV_CA_COMMON_NAME, GATEWAY_SANS, InitReport, init};
pub use keys::{KeyFiles, Retirement, Rotation, register_keys, retire_key, rotate_key};
/// Revocation reasons of CRL entries (re-exported from rcgen).
pub use rcgen::RevocationReason;
pub use registry::{AgencyKeys, read_agency_ids, registered_signing_keys, write_signing_keys};
pub use revocation::{
    CRL_FILE, CrlReport, DEFAULT_CRL_DAYS, REASONS, initial_crl, parse_reason, refresh_crl, revoke,
};
pub use signing::{ED25519_PUBLIC_KEY_LEN, SigningKey};

#[cfg(test)]
mod tests;
