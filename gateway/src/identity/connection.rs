//! The accept loop and the verified connection.
//!
//! Each TCP connection's TLS handshake runs in a task of its own with a
//! timeout, under the TLS configuration in force when it arrives; a
//! connection whose handshake (client certificate included) completes is
//! registered as live (within its identity's connection cap) and handed to
//! the server together with what the handshake proved: the peer's address
//! and the SAN URIs of its leaf certificate ([`PeerIdentity`]), which tonic
//! attaches to every request. Every refusal (not TLS, handshake failed or
//! timed out, cap reached) is logged and audited from the connection's own
//! task, so a flood of bad handshakes never queues anything.
//!
//! A connection whose certificate names an agency an operator disabled is
//! refused once its handshake completes, and audited like the others.
//!
//! A live connection fails its reads and writes, and so ends with its
//! streams, when it is closed (re-verification failed, its agency was
//! disabled) or has moved no byte for the idle timeout.
//!
//! It never looks a peer up in the registry: that is `principal`'s.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

use super::live::Registration;
use crate::Gateway;
use crate::audit;

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
    /// Its place among the live connections; removed on drop.
    _registration: Registration,
    /// Completes when the connection must close (re-verification failed).
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// No byte either way for this long closes the connection.
    idle_timeout: Duration,
    /// When a byte last moved.
    last_activity: Instant,
    /// Fires at the earliest moment the connection can have been idle for
    /// `idle_timeout`; moved on when it fires early.
    idle_timer: Pin<Box<Sleep>>,
    /// Set once the idle timeout closed the connection (logged once).
    idle_expired: bool,
}

impl TlsConnection {
    /// An error when the connection has been closed or has been idle too
    /// long; registers the task to be woken for either.
    fn check_open(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed: its certificate no longer passes verification",
            ));
        }
        let idle = || io::Error::new(io::ErrorKind::TimedOut, "connection closed: idle timeout");
        if self.idle_expired {
            return Some(idle());
        }
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            let due = self.last_activity + self.idle_timeout;
            if due <= Instant::now() {
                tracing::info!(
                    peer.addr = %self.peer.remote_addr,
                    idle_seconds = self.idle_timeout.as_secs(),
                    "idle connection closed"
                );
                self.idle_expired = true;
                return Some(idle());
            }
            self.idle_timer.as_mut().reset(due);
        }
        None
    }
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
        if let Some(error) = self.check_open(cx) {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last_activity = Instant::now();
        }
        result
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.check_open(cx) {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.last_activity = Instant::now();
        }
        result
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
        if let Some(error) = self.check_open(cx) {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.last_activity = Instant::now();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How connections are accepted.
#[derive(Debug, Clone, Copy)]
pub struct AcceptSettings {
    /// A client that has not completed its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// A live connection that moved no byte for this long is closed.
    pub idle_timeout: Duration,
    /// Live connections one client identity may hold.
    pub max_connections_per_identity: u32,
}

/// Why a connection was refused before it reached the server.
#[derive(Debug)]
enum Refusal {
    /// Closed before sending anything (a port probe): not audited.
    Silent,
    /// Anything else: logged with `message` and audited with `reason`.
    Audited {
        /// The log line's message.
        message: &'static str,
        /// The reason, in the log and the audit entry.
        reason: String,
    },
}

impl Refusal {
    fn handshake(reason: String) -> Self {
        Self::Audited {
            message: "TLS handshake refused",
            reason,
        }
    }
}

/// What the first bytes of a connection say when they are not a TLS
/// handshake record, or `None` when they are.
fn not_tls(first: &[u8]) -> Option<String> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    match first.first() {
        None | Some(&TLS_HANDSHAKE_RECORD) => None,
        Some(_) if first.starts_with(b"PRI * HTTP/2") => {
            Some("not TLS: plaintext HTTP/2 on the TLS port".into())
        }
        Some(_) => {
            let method_like = first
                .iter()
                .take_while(|b| **b != b' ')
                .all(u8::is_ascii_uppercase)
                && first.contains(&b' ');
            Some(if method_like {
                "not TLS: plaintext HTTP/1 on the TLS port".into()
            } else {
                format!("not TLS: first byte 0x{:02x}", first[0])
            })
        }
    }
}

/// Accepts TCP connections until `stop` is cancelled and yields those whose
/// TLS handshake (client certificate included), under the configuration in
/// force, completes within the handshake timeout and whose identity is
/// within its connection cap. Refusals are logged and audited.
pub fn incoming(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    settings: AcceptSettings,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(64);
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
            let gateway = gateway.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match accept_one(tcp, remote_addr, &gateway, settings).await {
                    Ok(connection) => {
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Err(Refusal::Silent) => {
                        tracing::debug!(peer.addr = %remote_addr, "connection closed before the TLS handshake");
                    }
                    Err(Refusal::Audited { message, reason }) => {
                        tracing::warn!(peer.addr = %remote_addr, %reason, "{message}");
                        if let Err(error) = gateway
                            .store
                            .append_audit(&[audit::tls_refused(remote_addr, &reason)])
                            .await
                        {
                            tracing::error!(%error, peer.addr = %remote_addr, "cannot audit a TLS refusal");
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// One connection's handshake and registration; the socket is closed
/// before this returns a refusal.
async fn accept_one(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    gateway: &Gateway,
    settings: AcceptSettings,
) -> Result<TlsConnection, Refusal> {
    let Some(material) = gateway.tls.current() else {
        return Err(Refusal::handshake("no TLS configuration in force".into()));
    };
    let timeout = settings.handshake_timeout;
    let handshake = async {
        let mut first = [0u8; 16];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err(Refusal::Silent),
            Ok(n) => {
                if let Some(reason) = not_tls(&first[..n]) {
                    crate::ops::metrics::handshake_plaintext();
                    return Err(Refusal::Audited {
                        message: "not a TLS connection; refused",
                        reason,
                    });
                }
            }
            Err(error) => return Err(Refusal::handshake(format!("connection failed: {error}"))),
        }
        TlsAcceptor::from(material.config.clone())
            .accept(tcp)
            .await
            .map_err(|error| {
                crate::ops::metrics::handshake_error(&error);
                if let Some(tls) = error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    material.note_handshake_error(tls);
                }
                Refusal::handshake(format!("TLS handshake failed: {error}"))
            })
    };
    let stream = match tokio::time::timeout(timeout, handshake).await {
        Ok(result) => result?,
        Err(_) => {
            crate::ops::metrics::handshake_timeout();
            return Err(Refusal::Audited {
                message: "TLS handshake timed out",
                reason: format!("TLS handshake timed out after {} ms", timeout.as_millis()),
            });
        }
    };
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let uris = chain
        .first()
        .map(|leaf| san_uris(leaf.as_ref()))
        .unwrap_or_default();
    let identity = if uris.is_empty() {
        "<no identity>".to_owned()
    } else {
        uris.join(" ")
    };
    // Decided now, under the registry and agency states in force: an agency
    // an operator disabled gets no connection.
    if let [uri] = uris.as_slice()
        && let Some(agency) = gateway.rules().registry.by_identity(uri)
        && let Some(disabled) = gateway.agency_state(agency.id.as_str())
    {
        return Err(Refusal::Audited {
            message: "connection of a disabled agency refused",
            reason: disabled.to_string(),
        });
    }
    let registration = gateway
        .tls
        .connections
        .register(
            remote_addr,
            &identity,
            &chain,
            settings.max_connections_per_identity,
        )
        .map_err(|cap| Refusal::Audited {
            message: "connection refused",
            reason: format!("connection cap {} reached for {identity}", cap.cap),
        })?;
    let closed = Box::pin(registration.close.clone().cancelled_owned());
    let now = Instant::now();
    Ok(TlsConnection {
        stream,
        peer: PeerIdentity { remote_addr, uris },
        _registration: registration,
        closed,
        idle_timeout: settings.idle_timeout,
        last_activity: now,
        idle_timer: Box::pin(tokio::time::sleep_until(now + settings.idle_timeout)),
        idle_expired: false,
    })
}
