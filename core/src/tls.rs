//! The client side of mutual TLS, as agencies connect to the gateway: the
//! gateway's CA as the only root, the agency's certificate and key, TLS 1.3
//! only (pinned: a server offering anything older is refused) and HTTP/2.
//!
//! Key material is held in [`ClientCredentials`], whose `Debug` never shows
//! the private key.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

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

    /// The rustls client configuration of these credentials: TLS 1.3 only,
    /// the ring provider, the gateway's CA as the only root, the agency's
    /// certificate, ALPN `h2`.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("CA certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA certificate: {e}"))?;
        }
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("client certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("client key: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Connects to the gateway at `url` (`https://host:port`) over TLS 1.3
    /// only. `server_name` overrides the name checked against the
    /// gateway's certificate (default: the URL's host).
    pub async fn connect(&self, url: &str, server_name: Option<&str>) -> Result<Channel, TlsError> {
        self.connect_tuned(url, server_name, |endpoint| endpoint)
            .await
    }

    /// [`connect`](Self::connect), with the transport settings of the
    /// endpoint adjusted by `tune` first (e.g. HTTP/2 window sizes); the
    /// TLS 1.3 connection itself is not the endpoint's to change.
    pub async fn connect_tuned(
        &self,
        url: &str,
        server_name: Option<&str>,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, TlsError> {
        let error = |reason: String| TlsError::Endpoint {
            url: url.to_owned(),
            reason,
        };
        let origin: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| error(e.to_string()))?;
        if origin.scheme_str() != Some("https") {
            return Err(error(
                "must start with https:// (the gateway only speaks mutual TLS)".into(),
            ));
        }
        let (Some(host), Some(authority)) = (origin.host(), origin.authority()) else {
            return Err(error("names no host".into()));
        };
        let name = server_name
            .unwrap_or(host.trim_start_matches('[').trim_end_matches(']'))
            .to_owned();
        let name = ServerName::try_from(name).map_err(|e| error(e.to_string()))?;
        let connector = Tls13Connector {
            tls: TlsConnector::from(self.client_config().map_err(error)?),
            server_name: name,
            address: format!("{}:{}", host, origin.port_u16().unwrap_or(443)),
        };
        // The transport sees plain HTTP/2 over the connector's TLS stream;
        // requests still name the https origin.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| error(e.to_string()))?
            .origin(origin)
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        tune(endpoint)
            .connect_with_connector(connector)
            .await
            .map_err(|e| TlsError::Connect {
                url: url.to_owned(),
                reason: error_chain(&e),
            })
    }
}

/// Opens TCP connections to the gateway and runs a TLS 1.3 handshake on
/// each, insisting on HTTP/2.
#[derive(Clone)]
struct Tls13Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    /// `host:port` of the gateway.
    address: String,
}

impl tower::Service<Uri> for Tls13Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&connector.address).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.tls.connect(connector.server_name, tcp).await?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the gateway did not negotiate HTTP/2",
                ));
            }
            Ok(TokioIo::new(stream))
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

#[cfg(test)]
mod tests;
