//! The gateway's rustls server configuration, from the configured files:
//! TLS 1.3 only, the ring provider, ALPN `h2`, client certificates
//! required, verified against the configured CAs and checked against their
//! certificate revocation lists, and carrying the clientAuth extended key
//! usage.
//!
//! Revocation fails closed: every CA of the bundle must be covered by a CRL
//! it signed that has not expired, or the configuration is refused; a
//! certificate whose revocation status is unknown is refused; a CRL past
//! its nextUpdate makes handshakes fail. There is no switch to turn that
//! off.
//!
//! Session resumption is off (no tickets, no session cache): a resumed
//! session skips client certificate verification, so after a CRL or CA
//! change it could carry on an identity the new material refuses. Every
//! connection does a full handshake under the configuration in force.
//!
//! It reads files and builds a configuration; it never accepts connections
//! and never decides who a peer is.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::config::TlsFiles;

/// The TLS files could not be turned into a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file is unreadable or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A CA of the bundle has no CRL it signed among `[tls] crls`.
    #[error(
        "no CRL for CA {ca} (in {}): add a CRL it signed to [tls] crls; revocation cannot be turned off",
        file.display()
    )]
    NoCrl {
        /// The CA's subject.
        ca: String,
        /// The CA bundle.
        file: PathBuf,
    },
    /// A CRL is past its nextUpdate.
    #[error("CRL {} expired at {at}: fetch a fresh one from its CA", file.display())]
    CrlExpired {
        /// The CRL file.
        file: PathBuf,
        /// Its nextUpdate.
        at: OffsetDateTime,
    },
    /// A CRL names a configured CA as its issuer but that CA did not sign it.
    #[error("CRL {} names CA {ca} as issuer but is not signed by it", file.display())]
    CrlSignature {
        /// The CRL file.
        file: PathBuf,
        /// The CA's subject.
        ca: String,
    },
    /// rustls refused the certificates, key or CRLs.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// A date the operator must act before: a certificate's notAfter or a
/// CRL's nextUpdate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// What expires ("server certificate", "CA certificate CN=…", "CRL of
    /// CN=…").
    pub what: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// When.
    pub at: OffsetDateTime,
}

/// A server configuration built from the TLS files, with the verifier it
/// uses (to re-verify live connections) and the dates to warn about.
pub struct TlsMaterial {
    /// The rustls configuration new connections are accepted with.
    pub config: Arc<ServerConfig>,
    /// The client certificate verifier inside `config`.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Certificates' and CRLs' expiry dates.
    pub expiries: Vec<Expiry>,
    /// Set once an expired CRL has been reported for this material, so a
    /// stream of refused handshakes logs it once.
    expired_crl_reported: AtomicBool,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("expiries", &self.expiries)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Logs one warning for each certificate or CRL that expires within
    /// `days` of `now` (or has expired), naming the file and the date.
    pub fn warn_expiring(&self, days: u32, now: OffsetDateTime) {
        let horizon = now + time::Duration::days(i64::from(days));
        for expiry in self.expiries.iter().filter(|e| e.at <= horizon) {
            if expiry.at <= now {
                tracing::error!(file = %expiry.file.display(), expired_at = %expiry.at, "{} has expired; replace it", expiry.what);
            } else {
                tracing::warn!(file = %expiry.file.display(), expires_at = %expiry.at, within_days = days, "{} expires soon; replace it before then", expiry.what);
            }
        }
    }

    /// Called when a handshake failed with `error`: an expired CRL is
    /// logged once per configuration, as an error saying what to do.
    pub fn note_handshake_error(&self, error: &rustls::Error) {
        let expired = matches!(
            error,
            rustls::Error::InvalidCertificate(
                CertificateError::ExpiredRevocationList
                    | CertificateError::ExpiredRevocationListContext { .. }
            )
        );
        if expired && !self.expired_crl_reported.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "a CRL in [tls] crls has passed its nextUpdate: every client certificate of its CA \
                 is refused until a fresh CRL is installed (liandong-certs crl, or fetch it from the CA), \
                 then reload (SIGHUP or the file change)"
            );
        }
    }
}

/// Builds the server's rustls configuration from the configured files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsSetupError> {
    load(files, OffsetDateTime::now_utc()).map(|material| material.config)
}

/// Reads and checks every TLS file and builds the configuration, as of
/// `now` (CRL expiry).
pub fn load(files: &TlsFiles, now: OffsetDateTime) -> Result<TlsMaterial, TlsSetupError> {
    let ca = read_certs(&files.ca)?;
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("cannot read private key: {e}")))?;
    let mut crls = Vec::new();
    for path in &files.crls {
        for crl in read_crls(path)? {
            crls.push((path.clone(), crl));
        }
    }
    let mut expiries = check_crl_coverage(&files.ca, &ca, &crls, now)?;
    for (what, file, cert) in ca
        .iter()
        .map(|cert| ("CA certificate", &files.ca, cert))
        .chain(
            chain
                .first()
                .map(|cert| ("server certificate", &files.cert, cert)),
        )
    {
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| file_error(file, format!("certificate does not parse: {e}")))?;
        expiries.push(Expiry {
            what: format!("{what} {}", parsed.subject()),
            file: file.clone(),
            at: parsed.validity().not_after.to_datetime(),
        });
    }

    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| file_error(&files.ca, format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Full-chain revocation checking and unknown status refused are the
    // builder's defaults; expired CRLs are refused too.
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls.into_iter().map(|(_, crl)| crl))
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(RequireClientAuth { inner: webpki });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    disable_resumption(&mut config);
    Ok(TlsMaterial {
        config: Arc::new(config),
        verifier,
        expiries,
        expired_crl_reported: AtomicBool::new(false),
    })
}

/// No session tickets and no session cache: a resumed session would skip
/// the client certificate checks, so every connection does a full
/// handshake under the configuration in force. (The default ticketer
/// produces no tickets; it is left as is.)
fn disable_resumption(config: &mut ServerConfig) {
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
}

fn file_error(path: &Path, reason: String) -> TlsSetupError {
    TlsSetupError::File {
        path: path.to_owned(),
        reason,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE found".into()));
    }
    Ok(certs)
}

/// The CRLs of a file: one or more PEM `X509 CRL` blocks, or one DER CRL.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsSetupError> {
    let bytes =
        std::fs::read(path).map_err(|e| file_error(path, format!("cannot read CRL: {e}")))?;
    let crls = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, format!("invalid PEM: {e}")))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(file_error(path, "no X509 CRL found".into()));
    }
    Ok(crls)
}

/// Checks that every CA certificate of the bundle `ca_file` is covered by
/// a CRL whose issuer is that CA and which it signed, and that no CRL has
/// passed its nextUpdate (or lacks one). Returns the CRLs' nextUpdate
/// dates. A CRL of no configured CA is logged and otherwise unused.
pub fn check_crl_coverage(
    ca_file: &Path,
    cas: &[CertificateDer<'_>],
    crls: &[(PathBuf, CertificateRevocationListDer<'_>)],
    now: OffsetDateTime,
) -> Result<Vec<Expiry>, TlsSetupError> {
    let mut parsed_crls = Vec::with_capacity(crls.len());
    for (path, der) in crls {
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
            .map_err(|e| file_error(path, format!("not an X.509 CRL: {e}")))?;
        let Some(next_update) = crl.next_update() else {
            return Err(file_error(
                path,
                "CRL has no nextUpdate; relying parties cannot tell when it is stale".into(),
            ));
        };
        let at = next_update.to_datetime();
        if at <= now {
            return Err(TlsSetupError::CrlExpired {
                file: path.clone(),
                at,
            });
        }
        parsed_crls.push((path, crl, at));
    }
    let mut covered = vec![false; parsed_crls.len()];
    let mut expiries = Vec::new();
    for cert in cas {
        let (_, ca) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| file_error(ca_file, format!("CA certificate does not parse: {e}")))?;
        let mut found = false;
        for (i, (path, crl, at)) in parsed_crls.iter().enumerate() {
            if crl.issuer().as_raw() != ca.subject().as_raw() {
                continue;
            }
            if crl.verify_signature(ca.public_key()).is_err() {
                return Err(TlsSetupError::CrlSignature {
                    file: (*path).clone(),
                    ca: ca.subject().to_string(),
                });
            }
            found = true;
            covered[i] = true;
            expiries.push(Expiry {
                what: format!("CRL of {}", ca.subject()),
                file: (*path).clone(),
                at: *at,
            });
        }
        if !found {
            return Err(TlsSetupError::NoCrl {
                ca: ca.subject().to_string(),
                file: ca_file.to_owned(),
            });
        }
    }
    for ((path, crl, _), covered) in parsed_crls.iter().zip(covered) {
        if !covered {
            tracing::warn!(file = %path.display(), issuer = %crl.issuer(), "CRL of no configured CA; ignored");
        }
    }
    Ok(expiries)
}

/// Why a client certificate's key usage is refused. `Debug` prints the
/// message too: rustls shows a custom verifier's error through it.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// The certificate does not parse.
    #[error("client certificate does not parse")]
    Unparseable,
    /// No extended key usage extension at all.
    #[error("client certificate has no extended key usage; clientAuth is required")]
    NoExtendedKeyUsage,
    /// An extended key usage without clientAuth.
    #[error("client certificate's extended key usage lacks clientAuth")]
    NotClientAuth,
}

impl fmt::Debug for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Checks that a client certificate carries the clientAuth extended key
/// usage. A certificate without the extension is refused too (webpki
/// accepts it as unrestricted).
pub fn check_client_auth_usage(der: &[u8]) -> Result<(), UsageError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| UsageError::Unparseable)?;
    match cert.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => Ok(()),
        Ok(Some(_)) => Err(UsageError::NotClientAuth),
        Ok(None) => Err(UsageError::NoExtendedKeyUsage),
        Err(_) => Err(UsageError::Unparseable),
    }
}

/// webpki's client verifier, then the clientAuth usage check on the leaf.
/// Everything else (root hints, chain, revocation, signatures) is
/// delegated.
#[derive(Debug)]
struct RequireClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequireClientAuth {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_client_auth_usage(end_entity.as_ref()).map_err(|error| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}
