//! The accept loop and the verified connection.
//!
//! Each TCP connection's TLS handshake runs in a task of its own with a
//! timeout; a connection whose handshake (client certificate included)
//! completes is handed to the server together with what the handshake
//! proved: the peer's address and the SAN URIs of its leaf certificate
//! ([`PeerIdentity`]), which tonic attaches to every request.
//!
//! It never looks a peer up in the registry: that is `principal`'s.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

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
