//! A certificate authority for development and tests, and the certificates it
//! issues: the gateway's server certificate, agency client certificates and
//! deliberately malformed client certificates for negative tests.
//!
//! All keys are ECDSA P-256 generated fresh by rcgen. This module must never
//! print or log private keys: every type holding one has a redacting `Debug`.
//! It is a development PKI and must never be used to issue production
//! certificates.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::{CertError, agency_uri, validate_agency_id};

/// Validity of the CA certificate.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of server and agency certificates issued by [`Authority`].
const LEAF_VALIDITY: Duration = Duration::days(365);
/// How far in the past certificates start, to tolerate clock skew.
const BACKDATE: Duration = Duration::days(1);
/// Organization put in the CA's subject.
const CA_ORGANIZATION: &str = "Liandong development PKI";

const REDACTED: &str = "[redacted]";

/// A PEM certificate together with its PEM (PKCS#8) private key.
///
/// `Debug` redacts the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate, PEM encoded (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The private key, PEM encoded PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &REDACTED)
            .finish()
    }
}

/// Extended key usage of a client certificate built from a [`ClientSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    /// EKU `clientAuth` only: a proper client certificate.
    ClientAuth,
    /// EKU `serverAuth` only: a certificate that must be rejected as a client.
    ServerOnly,
    /// No extended key usage extension at all: also rejected as a client.
    NoExtendedKeyUsage,
}

/// One certificate listed in a certificate revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked certificate's serial number (big-endian bytes, as in the
    /// certificate).
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Why, when known.
    pub reason: Option<RevocationReason>,
}

/// What a certificate revocation list says, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlContents {
    /// The CRL number, one more than the previous CRL's.
    pub number: u64,
    /// When it is issued.
    pub this_update: OffsetDateTime,
    /// When the next one is due; relying parties refuse it after that.
    pub next_update: OffsetDateTime,
    /// The revoked certificates.
    pub revoked: Vec<Revocation>,
}

/// What a client certificate should look like.
///
/// Meant for tests that need valid as well as deliberately bad client
/// certificates (no URI, several URIs, expired, wrong EKU…). No field is
/// validated by [`Authority::client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    /// Subject common name; an empty string leaves the subject without CN.
    pub common_name: String,
    /// SAN URIs (zero, one or several).
    pub uris: Vec<String>,
    /// SAN DNS names.
    pub dns_names: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Extended key usage.
    pub usage: KeyUsage,
}

impl ClientSpec {
    /// A valid agency client certificate: CN = id, exactly one SAN URI
    /// [`agency_uri`]`(id)`, EKU clientAuth, valid from now - 1 day to
    /// now + 1 year. The id is not validated.
    pub fn agency(agency_id: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        ClientSpec {
            common_name: agency_id.to_owned(),
            uris: vec![agency_uri(agency_id)],
            dns_names: Vec::new(),
            not_before: now - BACKDATE,
            not_after: now + LEAF_VALIDITY,
            usage: KeyUsage::ClientAuth,
        }
    }

    /// The same certificate, but expired: valid from now - 30 days to
    /// now - 1 day.
    pub fn expired(self) -> Self {
        let now = OffsetDateTime::now_utc();
        ClientSpec {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
            ..self
        }
    }
}

/// A certificate authority able to sign leaf certificates.
///
/// `Debug` redacts the CA private key.
pub struct Authority {
    common_name: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("common_name", &self.common_name)
            .field("cert_pem", &self.cert_pem)
            .field("key", &REDACTED)
            .finish()
    }
}

impl Authority {
    /// A new self-signed CA with a fresh ECDSA P-256 key, valid from
    /// now - 1 day to now + 10 years.
    pub fn new(common_name: &str) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, CA_ORGANIZATION);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            common_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its PEM certificate and PEM PKCS#8 key (as
    /// written by [`crate::init`] to `ca.crt` and `ca.key`), so more
    /// certificates can be issued later.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let common_name = x509_common_name(cert_pem).unwrap_or_default();
        Ok(Authority {
            common_name,
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key, PEM encoded PKCS#8. Handle with care.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate with EKU serverAuth. Each SAN that parses as an
    /// IP address becomes an IP SAN, every other one a DNS SAN. The first SAN
    /// is also the subject CN. Valid from now - 1 day to now + 1 year.
    pub fn server(&self, sans: &[&str]) -> Result<CertifiedKey, CertError> {
        let Some(first) = sans.first() else {
            return Err(CertError::NoServerNames);
        };
        let now = OffsetDateTime::now_utc();
        let mut params = leaf_params(first, now - BACKDATE, now + LEAF_VALIDITY);
        for san in sans {
            params.subject_alt_names.push(match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into()?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(&params)
    }

    /// An agency client certificate: EKU clientAuth, CN = id and exactly one
    /// SAN, the URI [`agency_uri`]`(id)`. Rejects invalid ids.
    pub fn agency(&self, agency_id: &str) -> Result<CertifiedKey, CertError> {
        validate_agency_id(agency_id)?;
        self.client(&ClientSpec::agency(agency_id))
    }

    /// A client certificate exactly as described by `spec`, good or bad.
    pub fn client(&self, spec: &ClientSpec) -> Result<CertifiedKey, CertError> {
        let mut params = leaf_params(&spec.common_name, spec.not_before, spec.not_after);
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        params.extended_key_usages = match spec.usage {
            KeyUsage::ClientAuth => vec![ExtendedKeyUsagePurpose::ClientAuth],
            KeyUsage::ServerOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
            KeyUsage::NoExtendedKeyUsage => Vec::new(),
        };
        self.issue(&params)
    }

    /// A certificate revocation list signed by this CA (PEM, `-----BEGIN
    /// X509 CRL-----`), with the CRL number and authority key identifier
    /// extensions RFC 5280 requires.
    pub fn crl(&self, contents: &CrlContents) -> Result<String, CertError> {
        let params = CertificateRevocationListParams {
            this_update: contents.this_update,
            next_update: contents.next_update,
            crl_number: SerialNumber::from(contents.number),
            issuing_distribution_point: None,
            revoked_certs: contents
                .revoked
                .iter()
                .map(|revocation| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&revocation.serial),
                    revocation_time: revocation.revoked_at,
                    reason_code: revocation.reason,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn issue(&self, params: &CertificateParams) -> Result<CertifiedKey, CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Parameters shared by every leaf certificate: subject CN (none if empty),
/// validity, not a CA, digitalSignature, authority key identifier.
fn leaf_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if !common_name.is_empty() {
        dn.push(DnType::CommonName, common_name);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// The subject CN of a PEM certificate, if it can be read.
fn x509_common_name(cert_pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
