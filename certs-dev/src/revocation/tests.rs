use std::path::Path;

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::*;

const REGISTRY: &str = "[[agency]]\nid = \"cz-psb\"\n\n[[agency]]\nid = \"cz-eeb\"\n";

fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("agencies.toml");
    std::fs::write(&registry, REGISTRY).unwrap();
    crate::init(&registry, &dir.path().join("pki"), false).unwrap();
    dir
}

/// (number, serials, next update) of the CRL file.
fn parsed(path: &Path) -> (u64, Vec<Vec<u8>>, OffsetDateTime) {
    let text = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    assert_eq!(pem.label, "X509 CRL");
    let (_, crl) = CertificateRevocationList::from_der(&pem.contents).unwrap();
    let number = crl.crl_number().unwrap().to_u64_digits().first().copied();
    (
        number.unwrap_or(0),
        crl.iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect(),
        crl.next_update().unwrap().to_datetime(),
    )
}

fn serial_of(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    certificate_serial(path, &text).unwrap()
}

#[test]
fn init_writes_an_empty_crl_due_in_thirty_days() {
    let dir = pki();
    let (number, revoked, next) = parsed(&dir.path().join("pki").join(CRL_FILE));
    assert_eq!(number, 1);
    assert!(revoked.is_empty());
    let days = (next - OffsetDateTime::now_utc()).whole_days();
    assert!((29..=30).contains(&days), "{days}");
}

#[test]
fn revoke_adds_the_serial_keeps_earlier_ones_and_bumps_the_number() {
    let dir = pki();
    let out = dir.path().join("pki");
    let report = revoke(&out, "cz-psb", Some(RevocationReason::KeyCompromise), 7).unwrap();
    assert!(report.newly_revoked);
    assert_eq!((report.number, report.revoked), (2, 1));
    let report = revoke(&out, "cz-eeb", None, 7).unwrap();
    assert_eq!((report.number, report.revoked), (3, 2));
    let (number, revoked, next) = parsed(&out.join(CRL_FILE));
    assert_eq!(number, 3);
    assert_eq!(
        revoked,
        [
            serial_of(&out.join("agencies/cz-psb.crt")),
            serial_of(&out.join("agencies/cz-eeb.crt"))
        ]
    );
    assert_eq!((next - OffsetDateTime::now_utc()).whole_days(), 6);
    // Revoking again lists it once.
    let again = revoke(&out, "cz-psb", None, 7).unwrap();
    assert!(!again.newly_revoked);
    assert_eq!(again.revoked, 2);
}

#[test]
fn refresh_keeps_revocations_and_moves_next_update() {
    let dir = pki();
    let out = dir.path().join("pki");
    revoke(&out, "cz-psb", None, 1).unwrap();
    let report = refresh_crl(&out, 60).unwrap();
    assert_eq!((report.number, report.revoked), (3, 1));
    let (_, revoked, next) = parsed(&out.join(CRL_FILE));
    assert_eq!(revoked.len(), 1);
    assert_eq!((next - OffsetDateTime::now_utc()).whole_days(), 59);
}

#[test]
fn a_crl_of_another_ca_is_not_extended() {
    let dir = pki();
    let out = dir.path().join("pki");
    let other = Authority::new("other CA").unwrap();
    std::fs::write(out.join(CRL_FILE), initial_crl(&other, 30).unwrap()).unwrap();
    let before = std::fs::read(out.join(CRL_FILE)).unwrap();
    let error = revoke(&out, "cz-psb", None, 30).unwrap_err();
    assert!(matches!(error, CertError::Crl { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not signed by the CA"),
        "{error}"
    );
    assert_eq!(std::fs::read(out.join(CRL_FILE)).unwrap(), before);
}

#[test]
fn bad_arguments_are_one_clear_error() {
    let dir = pki();
    let out = dir.path().join("pki");
    let unknown = revoke(&out, "cz-nobody", None, 30).unwrap_err();
    assert!(matches!(unknown, CertError::Io { .. }), "{unknown:?}");
    assert!(unknown.to_string().contains("cz-nobody.crt"));
    assert!(revoke(&out, "../x", None, 30).unwrap_err().is_usage_error());
    assert!(refresh_crl(&out, 0).unwrap_err().is_usage_error());
    assert!(parse_reason("keycompromise").is_ok());
    assert_eq!(
        parse_reason("superseded").unwrap(),
        RevocationReason::Superseded
    );
    let error = parse_reason("bored").unwrap_err();
    assert!(
        error.to_string().starts_with("--reason: \"bored\""),
        "{error}"
    );
}
