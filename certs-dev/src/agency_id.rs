//! Agency identity in certificates: the SAN URI that carries an agency id.
//!
//! An agency is identified on the wire by exactly one SAN URI
//! `urn:liandong:agency:<id>` in its client certificate. The id rules and the
//! URI prefix are `liandong_core`'s ([`AgencyId`], [`AGENCY_URI_PREFIX`]),
//! the ones the gateway checks certificates against; this module only
//! applies them to the PKI's inputs. It must never accept an id that
//! [`AgencyId`] refuses, nor define a rule of its own.

pub use liandong_core::domain::AGENCY_URI_PREFIX;
use liandong_core::domain::AgencyId;

use crate::CertError;

/// The SAN URI for an agency: `urn:liandong:agency:<id>`.
///
/// The id is not validated here (tests make deliberately bad certificates);
/// see [`validate_agency_id`].
pub fn agency_uri(agency_id: &str) -> String {
    format!("{AGENCY_URI_PREFIX}{agency_id}")
}

/// Why `id` is not a valid agency id, or `None` when it is valid.
pub(crate) fn agency_id_problem(id: &str) -> Option<String> {
    AgencyId::parse("agency id", id).err().map(|e| e.reason)
}

/// Checks an agency id against [`AgencyId`]'s rules: 1 to 64 characters of
/// `[a-z0-9-]`, starting with a letter.
pub fn validate_agency_id(agency_id: &str) -> Result<(), CertError> {
    match agency_id_problem(agency_id) {
        None => Ok(()),
        Some(reason) => Err(CertError::InvalidAgencyId {
            id: agency_id.to_owned(),
            reason,
        }),
    }
}
