//! The client side of mutual TLS, as agencies connect to the gateway: the
//! gateway's CA, the agency's certificate and key, TLS 1.3 and HTTP/2.
//!
//! Key material is held in [`ClientCredentials`], whose `Debug` never shows
//! the private key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A file of credentials that could not be used, or a gateway address that
/// is not a valid URL.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{path}: no PEM {kind} found")]
    NoPem {
        /// The file.
        path: PathBuf,
        /// What was looked for ("CERTIFICATE", "PRIVATE KEY").
        kind: &'static str,
    },
    /// The gateway could not be reached or the handshake failed.
    #[error("gateway {url}: cannot connect: {reason}")]
    Connect {
        /// The URL as given.
        url: String,
        /// The transport's error chain.
        reason: String,
    },
    /// The gateway URL or TLS settings were refused by the transport.
    #[error("gateway {url}: {reason}")]
    Endpoint {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// An agency's credentials for talking to the gateway.
#[derive(Clone)]
pub struct ClientCredentials {
    /// PEM of the CA that signed the gateway's certificate.
    pub ca_pem: String,
    /// PEM of the agency's client certificate.
    pub cert_pem: String,
    /// PEM of the agency's private key. Never logged.
    pub key_pem: String,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn read_pem(path: &Path, kind: &'static str) -> Result<String, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !text.contains(&format!("-----BEGIN {kind}")) && !text.contains(&format!(" {kind}-----")) {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            kind,
        });
    }
    Ok(text)
}

impl ClientCredentials {
    /// Reads the three PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            ca_pem: read_pem(ca, "CERTIFICATE")?,
            cert_pem: read_pem(cert, "CERTIFICATE")?,
            key_pem: read_pem(key, "PRIVATE KEY")?,
        })
    }

    /// An endpoint for `url` (`https://host:port`) using these credentials.
    /// `server_name` overrides the name checked against the gateway's
    /// certificate (default: the URL's host).
    pub fn endpoint(&self, url: &str, server_name: Option<&str>) -> Result<Endpoint, TlsError> {
        let error = |reason: String| TlsError::Endpoint {
            url: url.to_owned(),
            reason,
        };
        if !url.starts_with("https://") {
            return Err(error(
                "must start with https:// (the gateway only speaks mutual TLS)".into(),
            ));
        }
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        if let Some(name) = server_name {
            tls = tls.domain_name(name);
        }
        Endpoint::from_shared(url.to_owned())
            .map_err(|e| error(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| error(e.to_string()))
            .map(|endpoint| {
                endpoint
                    .connect_timeout(Duration::from_secs(10))
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(20))
            })
    }

    /// Connects to the gateway at `url`.
    pub async fn connect(&self, url: &str, server_name: Option<&str>) -> Result<Channel, TlsError> {
        let endpoint = self.endpoint(url, server_name)?;
        endpoint.connect().await.map_err(|e| TlsError::Connect {
            url: url.to_owned(),
            reason: error_chain(&e),
        })
    }
}

/// An error and all its sources, joined by ": " (transport errors keep
/// their useful detail in the sources).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
