//! Helpers for the tests of per-agency limits: raw gRPC calls over HTTP/2
//! and mutual TLS (to send what tonic's client will not, such as a
//! compressed message), a gzip decompression bomb, the gateway process's
//! memory, and counts read from the audit log.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::Testbed;

/// Bytes of zeros each repeated segment of a [`gzip_bomb`] inflates to.
pub const BOMB_SEGMENT: usize = 16 << 20;

/// A gzip member that inflates to `segments` × [`BOMB_SEGMENT`] zero
/// bytes; its length is about a thousandth of that.
///
/// The deflate stream is one segment of zeros compressed from an empty
/// history and ended with a sync flush (so it is byte-aligned and refers
/// only to itself), repeated, then an empty final block; the trailer's
/// CRC-32 and length are those of the whole inflated content, so any
/// gzip decoder inflates it completely and checks it.
pub fn gzip_bomb(segments: usize) -> Vec<u8> {
    use std::io::Write;
    let zeros = vec![0u8; BOMB_SEGMENT];
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&zeros).expect("compress into memory");
    encoder.flush().expect("sync flush into memory");
    let segment = encoder.get_ref().clone();
    let mut segment_crc = flate2::Crc::new();
    segment_crc.update(&zeros);
    let mut crc = flate2::Crc::new();
    // Gzip header: magic, deflate, no flags, no time, no extra flags, Unix.
    let mut bomb = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    for _ in 0..segments {
        bomb.extend_from_slice(&segment);
        crc.combine(&segment_crc);
    }
    // An empty final block with fixed codes: BFINAL, BTYPE=01, end of block.
    bomb.extend_from_slice(&[0x03, 0x00]);
    bomb.extend_from_slice(&crc.sum().to_le_bytes());
    let inflated = (segments as u64 * BOMB_SEGMENT as u64) as u32;
    bomb.extend_from_slice(&inflated.to_le_bytes());
    bomb
}

/// A gRPC length-prefixed message: the compressed flag, the length, the
/// bytes.
pub fn grpc_frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(u8::from(compressed));
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// What the gateway answered to a raw gRPC call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer {
    /// The HTTP status.
    pub http_status: u16,
    /// `grpc-status` (from the headers of a trailers-only answer, or from
    /// the trailers).
    pub grpc_status: Option<i32>,
    /// `grpc-message`, percent-decoding left undone.
    pub grpc_message: String,
    /// Bytes of response messages received.
    pub body_bytes: usize,
}

/// Sends one POST of `body` to `path` over a fresh HTTP/2 connection
/// authenticated as `agency`, with `grpc-encoding` set to `encoding` when
/// given, and reads the whole answer.
pub async fn raw_grpc(
    bed: &Testbed,
    agency: &str,
    path: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<RawAnswer> {
    let credentials = bed.pki.credentials(agency);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(credentials.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_slice_iter(credentials.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(bed.gateway.addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::from(bed.gateway.addr.ip()), tcp)
        .await?;
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("https://{}{path}", bed.gateway.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = send.send_request(request).await?;
    let http_status = response.status().as_u16();
    let header = |map: &http::HeaderMap, name: &str| {
        map.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut grpc_status = header(response.headers(), "grpc-status").and_then(|s| s.parse().ok());
    let mut grpc_message = header(response.headers(), "grpc-message").unwrap_or_default();
    let mut body = response.into_body();
    let mut body_bytes = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len();
        }
        if let Some(trailers) = frame.trailers_ref() {
            grpc_status =
                grpc_status.or(header(trailers, "grpc-status").and_then(|s| s.parse().ok()));
            if grpc_message.is_empty() {
                grpc_message = header(trailers, "grpc-message").unwrap_or_default();
            }
        }
    }
    Ok(RawAnswer {
        http_status,
        grpc_status,
        grpc_message,
        body_bytes,
    })
}

/// Resident memory of process `pid`, in KiB (`VmRSS` of
/// `/proc/<pid>/status`).
pub fn rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// Rows of the audit log with `action` whose agency is `agency`.
pub async fn audit_count(bed: &Testbed, action: &str, agency: &str) -> i64 {
    let mut conn = bed.connect_database().await;
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = $1 AND agency = $2")
        .bind(action)
        .bind(agency)
        .fetch_one(&mut conn)
        .await
        .expect("count audit rows")
}

/// Reasons of the audit rows with `action` whose agency is `agency`, in
/// order.
pub async fn audit_reasons(bed: &Testbed, action: &str, agency: &str) -> Vec<String> {
    let mut conn = bed.connect_database().await;
    sqlx::query_scalar("SELECT reason FROM audit_log WHERE action = $1 AND agency = $2 ORDER BY id")
        .bind(action)
        .bind(agency)
        .fetch_all(&mut conn)
        .await
        .expect("read audit rows")
}

/// Notification ids stored for `sender`, read straight from the database.
pub async fn stored_ids(bed: &Testbed, sender: &str) -> Vec<String> {
    let mut conn = bed.connect_database().await;
    sqlx::query_scalar(
        "SELECT notification_id FROM notifications WHERE sender = $1 ORDER BY sequence",
    )
    .bind(sender)
    .fetch_all(&mut conn)
    .await
    .expect("read stored notifications")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_bomb_inflates_to_its_declared_size_and_checks() {
        let bomb = gzip_bomb(3);
        assert!(
            bomb.len() * 500 < 3 * BOMB_SEGMENT,
            "{} bytes of gzip",
            bomb.len()
        );
        let mut decoder = flate2::read::GzDecoder::new(bomb.as_slice());
        let mut inflated = 0usize;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            // The decoder checks the CRC and the length at the end.
            let read = decoder.read(&mut buffer).expect("a valid gzip member");
            if read == 0 {
                break;
            }
            assert!(buffer[..read].iter().all(|b| *b == 0));
            inflated += read;
        }
        assert_eq!(inflated, 3 * BOMB_SEGMENT);
    }
}
