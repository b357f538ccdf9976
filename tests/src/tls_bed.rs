//! Helpers for end-to-end tests of the gateway's TLS layer: reloads and
//! waiting for them, the `liandong-certs` binary, raw TCP and raw TLS
//! clients, and the audit rows of refusals and reloads.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use liandong_core::tls::ClientCredentials;

use crate::{Testbed, binary};

/// What the gateway logs when a reload put everything in force.
pub const RELOADED: &str =
    "registry and policy reloaded, with the deadline rules and calendar and the TLS configuration";

/// What the gateway logs (once, at error level) when a reload is refused.
pub const RELOAD_REFUSED: &str = "reload refused";

/// The HTTP/2 client connection preface and an empty SETTINGS frame.
pub const H2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// How long a test waits for a condition.
pub const WAIT: Duration = Duration::from_secs(10);

/// How many lines of the gateway's log contain `needle`.
pub fn occurrences(bed: &Testbed, needle: &str) -> usize {
    bed.log().lines().filter(|l| l.contains(needle)).count()
}

/// Waits until at least `count` log lines contain `needle`.
pub async fn wait_for_lines(bed: &Testbed, needle: &str, count: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    while occurrences(bed, needle) < count {
        assert!(Instant::now() < deadline, "{what}:\n{}", bed.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGHUP and waits until a reload more than before was applied.
pub async fn reload(bed: &Testbed) {
    let before = occurrences(bed, RELOADED);
    bed.gateway.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for_lines(bed, RELOADED, before + 1, "the reload was not applied").await;
}

/// Runs the `liandong-certs` binary with `args`.
pub fn certs_cli<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    std::process::Command::new(binary("liandong-certs"))
        .args(args)
        .output()
        .expect("run liandong-certs")
}

/// Connects with `credentials` and makes one health check over the
/// connection: `Ok` when the gateway served it, otherwise the error chain.
pub async fn try_call(bed: &Testbed, credentials: &ClientCredentials) -> Result<(), String> {
    let channel = credentials
        .connect(&bed.gateway.url(), None)
        .await
        .map_err(|e| liandong_core::tls::error_chain(&e))?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    tokio::time::timeout(
        WAIT,
        health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map_err(|_| "no answer".to_owned())?
    .map(|_| ())
    .map_err(|status| format!("{status:?}"))
}

/// Waits until `credentials` are served (`true`) or refused (`false`),
/// trying a fresh connection every 100 ms.
pub async fn wait_until_served(bed: &Testbed, credentials: &ClientCredentials, served: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let outcome = try_call(bed, credentials).await;
        if outcome.is_ok() == served {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {outcome:?} after {WAIT:?}:\n{}",
            bed.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `bytes` on a plain TCP connection and returns everything the
/// gateway answers before it closes the connection (within [`WAIT`]).
pub async fn plaintext_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway kept the connection open");
    answer
}

/// A TLS connection made with rustls directly (not through tonic), after
/// sending the HTTP/2 preface and reading the gateway's first bytes: the
/// handshake kind and the gateway's certificate, or why it failed.
pub async fn raw_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(rustls::HandshakeKind, Vec<u8>), String> {
    raw_tls_stream(addr, config)
        .await
        .map(|(kind, cert, _)| (kind, cert))
}

/// A TLS stream open on the gateway: like [`raw_tls`], and the stream
/// itself, still open.
pub async fn raw_tls_stream(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        rustls::HandshakeKind,
        Vec<u8>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ),
    String,
> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(H2_PREFACE)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut first = [0u8; 9];
    // The gateway refuses a client certificate after the client's side of
    // a TLS 1.3 handshake is done: the refusal arrives on the first read.
    tokio::time::timeout(WAIT, tls.read_exact(&mut first))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let (_, connection) = tls.get_ref();
    let kind = connection
        .handshake_kind()
        .ok_or_else(|| "handshake not done".to_owned())?;
    let server_cert = connection
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.as_ref().to_vec())
        .ok_or_else(|| "no server certificate".to_owned())?;
    Ok((kind, server_cert, tls))
}

/// One audit row: (agency or peer address, decision, reason).
pub type AuditRow = (String, String, String);

/// The audit rows of `action` (`TLS_REFUSED`, `RELOAD`), oldest first.
pub async fn audit_rows(bed: &Testbed, action: &str) -> Vec<AuditRow> {
    let mut conn = bed.connect_database().await;
    sqlx::query_as("SELECT agency, decision, reason FROM audit_log WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(&mut conn)
        .await
        .expect("read the audit log")
}

/// Waits until an audit row of `action` satisfies `matches`; returns it.
pub async fn wait_for_audit(
    bed: &Testbed,
    action: &str,
    what: &str,
    matches: impl Fn(&AuditRow) -> bool,
) -> AuditRow {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = audit_rows(bed, action).await;
        if let Some(row) = rows.iter().find(|row| matches(row)) {
            return row.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {action} audit row for {what}; rows: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `[tls]` section's `crls` line of the test bed's config, replaced by
/// `line`, written to a new config file beside it; returns its path.
pub fn config_with_crls(bed: &Testbed, line: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&bed.config).expect("read the config");
    let original = "crls = [\"pki/ca.crl\"]\n";
    assert!(
        text.contains(original),
        "the test bed's config has no crls line"
    );
    let path = bed.dir.path().join("gateway-crls.toml");
    std::fs::write(&path, text.replacen(original, &format!("{line}\n"), 1))
        .expect("write the config");
    path
}
