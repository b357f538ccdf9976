//! Agency identity: the id syntax and the SAN URI that carries it.
//!
//! An agency is identified on the wire by exactly one SAN URI
//! `urn:liandong:agency:<id>` in its client certificate. This module owns the
//! id rules so every part of the PKI agrees on them. It must never accept an
//! id that could smuggle extra URI structure (`:`, `/`, upper case, spaces…).

use crate::CertError;

/// Prefix of the SAN URI that names an agency in its client certificate.
pub const AGENCY_URI_PREFIX: &str = "urn:liandong:agency:";

/// Longest allowed agency id, in characters.
pub const MAX_AGENCY_ID_LEN: usize = 64;

/// The SAN URI for an agency: `urn:liandong:agency:<id>`.
///
/// The id is not validated here; see [`validate_agency_id`].
pub fn agency_uri(agency_id: &str) -> String {
    format!("{AGENCY_URI_PREFIX}{agency_id}")
}

/// Why `id` is not a valid agency id, or `None` when it is valid.
pub(crate) fn agency_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("must not be empty");
    }
    if id.len() > MAX_AGENCY_ID_LEN {
        return Some("must be at most 64 characters");
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("must start with a lower-case letter a-z");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("may only contain a-z, 0-9 and '-'");
    }
    None
}

/// Checks an agency id: 1 to 64 characters of `[a-z0-9-]`, starting with a
/// letter.
pub fn validate_agency_id(agency_id: &str) -> Result<(), CertError> {
    match agency_id_problem(agency_id) {
        None => Ok(()),
        Some(reason) => Err(CertError::InvalidAgencyId {
            id: agency_id.to_owned(),
            reason,
        }),
    }
}
