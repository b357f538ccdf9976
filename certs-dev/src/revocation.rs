//! The development CA's certificate revocation list (`ca.crl` beside
//! `ca.crt`): the empty list `init` writes, `liandong-certs revoke` adding an
//! agency's certificate to it, and `liandong-certs crl` re-issuing it with a
//! fresh nextUpdate.
//!
//! Every new list keeps the earlier revocations, carries the previous CRL
//! number plus one, and replaces the file atomically, so a gateway that
//! watches it never reads half a list. A list this CA did not sign is never
//! extended: that is refused. It never prints private keys.

use std::path::{Path, PathBuf};

use rcgen::RevocationReason;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::init::write_atomic;
use crate::{AGENCIES_DIR, Authority, CertError, CrlContents, Revocation, validate_agency_id};

/// File name of the CRL, in the PKI directory beside `ca.crt`.
pub const CRL_FILE: &str = "ca.crl";

/// Days until nextUpdate of a CRL written without `--next-update-days`.
pub const DEFAULT_CRL_DAYS: u32 = 30;

/// How far back thisUpdate is set, to tolerate clock skew.
const THIS_UPDATE_BACKDATE: Duration = Duration::hours(1);

/// What a CRL write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlReport {
    /// The CRL file written.
    pub path: PathBuf,
    /// Its CRL number.
    pub number: u64,
    /// How many certificates it lists.
    pub revoked: usize,
    /// When relying parties stop accepting it.
    pub next_update: OffsetDateTime,
    /// False when `revoke` found the certificate already listed (the list
    /// is re-issued all the same).
    pub newly_revoked: bool,
}

/// The reason names `--reason` accepts (RFC 5280 §5.3.1, camelCase).
pub const REASONS: [&str; 10] = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "removeFromCRL",
    "privilegeWithdrawn",
    "aACompromise",
];

/// The revocation reason named `name` (one of [`REASONS`], any case).
pub fn parse_reason(name: &str) -> Result<RevocationReason, CertError> {
    use RevocationReason::*;
    let all = [
        Unspecified,
        KeyCompromise,
        CaCompromise,
        AffiliationChanged,
        Superseded,
        CessationOfOperation,
        CertificateHold,
        RemoveFromCrl,
        PrivilegeWithdrawn,
        AaCompromise,
    ];
    REASONS
        .iter()
        .zip(all)
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, reason)| reason)
        .ok_or_else(|| CertError::InvalidArgument {
            argument: "--reason".into(),
            reason: format!("{name:?} is not one of {}", REASONS.join(", ")),
        })
}

/// The first, empty CRL of a new CA: number 1, nextUpdate in `days` days.
pub fn initial_crl(ca: &Authority, days: u32) -> Result<String, CertError> {
    let now = OffsetDateTime::now_utc();
    ca.crl(&CrlContents {
        number: 1,
        this_update: now - THIS_UPDATE_BACKDATE,
        next_update: now + Duration::days(i64::from(days)),
        revoked: Vec::new(),
    })
}

/// Adds the certificate `init` wrote for `agency` (`agencies/<id>.crt`
/// under `out`) to the CA's CRL in `out`, keeping the earlier revocations,
/// with the CRL number plus one and nextUpdate in `next_update_days` days.
pub fn revoke(
    out: &Path,
    agency: &str,
    reason: Option<RevocationReason>,
    next_update_days: u32,
) -> Result<CrlReport, CertError> {
    validate_agency_id(agency)?;
    let cert_path = out.join(AGENCIES_DIR).join(format!("{agency}.crt"));
    let cert_pem = read(&cert_path)?;
    let serial = certificate_serial(&cert_path, &cert_pem)?;
    reissue(out, next_update_days, Some((serial, reason)))
}

/// Issues the CA's CRL in `out` again with the same revocations, the CRL
/// number plus one and nextUpdate in `next_update_days` days (run it from
/// cron well before nextUpdate).
pub fn refresh_crl(out: &Path, next_update_days: u32) -> Result<CrlReport, CertError> {
    reissue(out, next_update_days, None)
}

fn reissue(
    out: &Path,
    next_update_days: u32,
    add: Option<(Vec<u8>, Option<RevocationReason>)>,
) -> Result<CrlReport, CertError> {
    if next_update_days == 0 {
        return Err(CertError::InvalidArgument {
            argument: "--next-update-days".into(),
            reason: "must be at least 1".into(),
        });
    }
    let ca_cert = read(&out.join("ca.crt"))?;
    let ca = Authority::from_pem(&ca_cert, &read(&out.join("ca.key"))?)?;
    let crl_path = out.join(CRL_FILE);
    let (previous_number, mut revoked) = read_crl(&crl_path, &ca_cert)?;
    let now = OffsetDateTime::now_utc();
    let mut newly_revoked = false;
    if let Some((serial, reason)) = add
        && !revoked.iter().any(|r| r.serial == serial)
    {
        revoked.push(Revocation {
            serial,
            revoked_at: now,
            reason,
        });
        newly_revoked = true;
    }
    let contents = CrlContents {
        number: previous_number + 1,
        this_update: now - THIS_UPDATE_BACKDATE,
        next_update: now + Duration::days(i64::from(next_update_days)),
        revoked,
    };
    let pem = ca.crl(&contents)?;
    write_atomic(&crl_path, pem.as_bytes(), false)?;
    Ok(CrlReport {
        path: crl_path,
        number: contents.number,
        revoked: contents.revoked.len(),
        next_update: contents.next_update,
        newly_revoked,
    })
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The serial number of the PEM certificate at `path`.
fn certificate_serial(path: &Path, pem: &str) -> Result<Vec<u8>, CertError> {
    let bad = |reason: String| CertError::Crl {
        path: path.to_owned(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    Ok(cert.raw_serial().to_vec())
}

/// The CRL number and revocations of the CRL at `path`, which must be
/// signed by the CA of `ca_pem`; a missing file counts as number 0 with
/// nothing revoked.
fn read_crl(path: &Path, ca_pem: &str) -> Result<(u64, Vec<Revocation>), CertError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, Vec::new())),
        Err(source) => {
            return Err(CertError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let bad = |reason: String| CertError::Crl {
        path: path.to_owned(),
        reason,
    };
    let der = match x509_parser::pem::parse_x509_pem(&text) {
        Ok((_, pem)) => pem.contents,
        Err(_) => text,
    };
    let (_, crl) = CertificateRevocationList::from_der(&der)
        .map_err(|e| bad(format!("not an X.509 CRL: {e}")))?;
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| bad(format!("the CA certificate is not PEM: {e}")))?;
    let ca = ca
        .parse_x509()
        .map_err(|e| bad(format!("the CA certificate does not parse: {e}")))?;
    if crl.issuer().as_raw() != ca.subject().as_raw()
        || crl.verify_signature(ca.public_key()).is_err()
    {
        return Err(bad(format!(
            "not signed by the CA in ca.crt ({}); refusing to extend it",
            ca.subject()
        )));
    }
    let number = match crl.crl_number() {
        Some(number) => {
            let digits = number.to_u64_digits();
            match digits.as_slice() {
                [] => 0,
                [n] => *n,
                _ => return Err(bad("CRL number too large".into())),
            }
        }
        None => 0,
    };
    let revoked = crl
        .iter_revoked_certificates()
        .map(|entry| Revocation {
            serial: entry.raw_serial().to_vec(),
            revoked_at: entry.revocation_date.to_datetime(),
            reason: entry
                .reason_code()
                .and_then(|(_, code)| reason_of_code(code.0)),
        })
        .collect();
    Ok((number, revoked))
}

fn reason_of_code(code: u8) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match code {
        0 => Unspecified,
        1 => KeyCompromise,
        2 => CaCompromise,
        3 => AffiliationChanged,
        4 => Superseded,
        5 => CessationOfOperation,
        6 => CertificateHold,
        8 => RemoveFromCrl,
        9 => PrivilegeWithdrawn,
        10 => AaCompromise,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
