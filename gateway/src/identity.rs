//! Who is talking: the gateway's TLS settings, the accept loop, and the
//! mapping from a verified client certificate to a registered agency.
//!
//! TLS 1.3 only, ring provider, ALPN `h2`, client certificates required and
//! verified against the configured CA (which also checks validity dates and
//! the clientAuth key usage). Each handshake runs in its own task with a
//! timeout, so a stalled client cannot hold up others.
//!
//! An agency is identified by the single SAN URI of its certificate, looked
//! up in the registry. Identity never comes from a message field.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use liandong_core::registry::{Agency, Registry};

use crate::config::TlsFiles;
use crate::error::ApiError;

#[cfg(test)]
mod tests;

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

/// What the handshake proved about the peer; attached to every request.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's socket address.
    pub remote_addr: SocketAddr,
    /// The SAN URIs of its verified leaf certificate.
    pub uris: Vec<String>,
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("remote_addr", &self.remote_addr)
            .field("uris", &self.uris)
            .finish()
    }
}

/// The SAN URIs of a DER certificate (empty when it has none or does not
/// parse: the caller then refuses it).
pub fn san_uris(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

/// A verified agency, as handlers see it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The registered agency.
    pub agency: Agency,
}

/// Resolves a peer's identity to a registered agency: exactly one SAN URI,
/// registered. Anything else is `UNAUTHENTICATED`, and logged.
pub fn authenticate(
    peer: Option<&PeerIdentity>,
    registry: &Registry,
) -> Result<Principal, ApiError> {
    let Some(peer) = peer else {
        tracing::warn!("request without a verified TLS peer refused");
        return Err(ApiError::Unauthenticated(
            "no verified client certificate".into(),
        ));
    };
    match peer.uris.as_slice() {
        [uri] => match registry.by_identity(uri) {
            Some(agency) => Ok(Principal {
                agency: agency.clone(),
            }),
            None => {
                tracing::warn!(peer.addr = %peer.remote_addr, peer.uri = %uri, "certificate names no registered agency; refused");
                Err(ApiError::Unauthenticated(
                    "the certificate's identity is not a registered agency".into(),
                ))
            }
        },
        uris => {
            tracing::warn!(peer.addr = %peer.remote_addr, peer.uri_count = uris.len(), "certificate without exactly one SAN URI; refused");
            Err(ApiError::Unauthenticated(
                "the certificate must carry exactly one SAN URI".into(),
            ))
        }
    }
}

/// A TLS connection whose client certificate has been verified.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerIdentity,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections until `stop` is cancelled and yields those whose
/// TLS handshake (client certificate included) completes within `timeout`.
/// Failed handshakes are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    timeout: Duration,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote_addr) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let uris = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|leaf| san_uris(leaf.as_ref()))
                            .unwrap_or_default();
                        let connection = TlsConnection {
                            stream,
                            peer: PeerIdentity { remote_addr, uris },
                        };
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(peer.addr = %remote_addr, %error, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(peer.addr = %remote_addr, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
