//! What an attacker on the adapter's own host uses in the adapter attack
//! tests: raw HTTP/1.1 requests with chosen headers (as a web page's
//! `fetch` or a DNS-rebound page would send them) and an HTTPS webhook
//! server whose certificate comes from a CA of the test's choosing.
//!
//! Nothing here fakes the adapter: requests go to the real daemon's socket
//! and the webhook is a real TLS server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liandong_certs::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::adapter_bed::Answer;

/// Sends `head` (the request line and headers, each line ending in CRLF,
/// without the blank line) then `body` to `127.0.0.1:port`, with a
/// `Content-Length` and `Connection: close` added, and reads the answer.
pub fn raw_request(port: u16, head: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP source");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

/// An HTTPS webhook on `127.0.0.1` presenting a given certificate; it
/// answers `204` to every complete request and counts handshakes that
/// failed and requests it answered.
pub struct TlsWebhook {
    /// `https://127.0.0.1:PORT/hook`.
    pub url: String,
    answered: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl TlsWebhook {
    /// Starts the server with `identity` (a certificate for `127.0.0.1`).
    pub fn start(identity: &CertifiedKey) -> Self {
        let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("the webhook's certificate");
        let key =
            PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("the webhook's key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the webhook's TLS config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook");
        let url = format!(
            "https://127.0.0.1:{}/hook",
            listener.local_addr().expect("address").port()
        );
        let answered = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (a, f, b) = (
            Arc::clone(&answered),
            Arc::clone(&failed_handshakes),
            Arc::clone(&bodies),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, a, f, b) = (
                    Arc::clone(&config),
                    Arc::clone(&a),
                    Arc::clone(&f),
                    Arc::clone(&b),
                );
                std::thread::spawn(move || serve_one(stream, config, &a, &f, &b));
            }
        });
        Self {
            url,
            answered,
            failed_handshakes,
            bodies,
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed so far.
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }

    /// The bodies of the requests answered.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("bodies").clone()
    }
}

fn serve_one(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    answered: &AtomicUsize,
    failed: &AtomicUsize,
    bodies: &Mutex<Vec<String>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let connection = rustls::ServerConnection::new(config).expect("a TLS connection");
    let mut tls = rustls::StreamOwned::new(connection, stream);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    let mut reader = BufReader::new(&mut tls);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    drop(reader);
    bodies
        .lock()
        .expect("bodies")
        .push(String::from_utf8_lossy(&body).into_owned());
    answered.fetch_add(1, Ordering::SeqCst);
    let _ =
        tls.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
}
