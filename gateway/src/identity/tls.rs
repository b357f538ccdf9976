//! The gateway's rustls server configuration, from the configured PEM
//! files: TLS 1.3 only, the ring provider, ALPN `h2`, and client
//! certificates required and verified against the configured CA.
//!
//! It reads files and builds a configuration; it never accepts connections
//! and never decides who a peer is.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsFiles;

/// The TLS files could not be turned into a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file is unreadable or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or key.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// Builds the server's rustls configuration from the configured files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let file_error = |path: &std::path::Path, reason: String| TlsSetupError::File {
        path: path.to_owned(),
        reason,
    };
    let read_certs =
        |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| file_error(path, format!("cannot read certificates: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(path, format!("invalid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(file_error(path, "no CERTIFICATE found".into()));
            }
            Ok(certs)
        };
    let ca = read_certs(&files.ca)?;
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("cannot read private key: {e}")))?;

    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| file_error(&files.ca, format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
