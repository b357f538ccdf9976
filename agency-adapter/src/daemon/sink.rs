//! Sinks: how deliveries (and dead-letter reports) are handed to the
//! agency system — POSTed to a webhook, written as one file each into a
//! folder (atomically: a temporary dot-file, synced, then renamed), or
//! printed as one JSON line on standard output.
//!
//! Every sink receives the same JSON envelope (`docs/ADAPTER.md`):
//! `{"kind": "delivery", "subscription": NAME, "delivery": DELIVERY}` with
//! the JSON form of `liandong.v1.Delivery`, or `{"kind": "dead_letter",
//! "dead_letter": {...}}`. A hand-over succeeds only when the webhook
//! answered 2xx, the file was renamed into place, or the line was flushed;
//! callers acknowledge only then. This module must never log content or
//! webhook headers (they may hold secrets): ids, status codes and paths.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liandong_core::domain::Instant;
use liandong_core::json::to_json;
use liandong_core::pb;
use liandong_core::tls::error_chain;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::daemon::{RetrySettings, SinkSettings, WebhookSink};
use crate::daemon::backoff::Backoff;
use crate::store::{DeadLetter, Store};

#[cfg(test)]
mod tests;

/// Retry bounds of the folder and stdout sinks.
pub const LOCAL_SINK_RETRY: RetrySettings = RetrySettings {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// A hand-over failed; the caller retries later.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink could not be set up (bad CA file).
    #[error("{0}")]
    Setup(String),
    /// The webhook answered, but not with 2xx.
    #[error("webhook answered {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The webhook could not be reached or did not answer in time.
    #[error("webhook unreachable: {0}")]
    Unreachable(String),
    /// The file could not be written.
    #[error("{path}: cannot write: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Standard output could not be written.
    #[error("stdout: {0}")]
    Stdout(std::io::Error),
}

/// One thing to hand over.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `delivery` or `dead_letter`.
    pub kind: &'static str,
    /// The file name a folder sink writes it under.
    pub file_name: String,
    /// The subscription it came from (deliveries).
    pub subscription: Option<String>,
    /// Its gateway sequence (deliveries).
    pub sequence: Option<u64>,
    /// The notification's id.
    pub notification_id: String,
    /// The envelope.
    pub body: serde_json::Value,
}

impl Item {
    /// The envelope of a delivery of `subscription`.
    pub fn delivery(subscription: &str, delivery: &pb::Delivery) -> Self {
        let notification_id = delivery
            .notification
            .as_ref()
            .map(|n| n.notification_id.clone())
            .unwrap_or_default();
        Self {
            kind: "delivery",
            file_name: format!("{subscription}-{:020}.json", delivery.sequence),
            subscription: Some(subscription.to_owned()),
            sequence: Some(delivery.sequence),
            notification_id,
            body: json!({
                "kind": "delivery",
                "subscription": subscription,
                "delivery": to_json(delivery),
            }),
        }
    }

    /// The envelope of a dead-letter report.
    pub fn dead_letter(dead: &DeadLetter) -> Self {
        let time = |micros: i64| {
            Instant::from_unix_micros(micros)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        Self {
            kind: "dead_letter",
            file_name: format!("dead-letter-{:020}.json", dead.local_id),
            subscription: None,
            sequence: None,
            notification_id: dead.notification_id.clone(),
            body: json!({
                "kind": "dead_letter",
                "dead_letter": {
                    "local_id": dead.local_id,
                    "notification_id": dead.notification_id,
                    "source": dead.source,
                    "code": dead.code,
                    "reason": dead.reason,
                    "accepted_at": time(dead.accepted_at),
                    "dead_at": time(dead.dead_at),
                },
            }),
        }
    }
}

/// A sink, ready to hand items over.
#[derive(Debug)]
pub enum Sink {
    /// POST to a URL.
    Webhook {
        /// The client (timeouts, CA).
        client: reqwest::Client,
        /// The settings.
        settings: WebhookSink,
    },
    /// One file per item.
    Folder {
        /// The folder.
        path: PathBuf,
    },
    /// One line per item.
    Stdout,
}

/// Serialises writers of standard output.
static STDOUT: Mutex<()> = Mutex::new(());

impl Sink {
    /// Builds the sink `settings` describe (reading a webhook's CA file,
    /// creating a folder).
    pub fn build(settings: &SinkSettings) -> Result<Self, SinkError> {
        match settings {
            SinkSettings::Webhook(webhook) => {
                let mut builder = reqwest::Client::builder()
                    .timeout(webhook.timeout)
                    .connect_timeout(webhook.timeout)
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(ca) = &webhook.ca {
                    // Pinned: the configured CA is the only root, so a
                    // certificate from any other CA (a system one
                    // included) is refused.
                    builder = builder.tls_built_in_root_certs(false);
                    for certificate in read_ca(ca)? {
                        builder = builder.add_root_certificate(certificate);
                    }
                }
                let client = builder.build().map_err(|e| {
                    SinkError::Setup(format!("webhook client: {}", error_chain(&e)))
                })?;
                Ok(Self::Webhook {
                    client,
                    settings: webhook.clone(),
                })
            }
            SinkSettings::Folder(folder) => {
                std::fs::create_dir_all(&folder.path)
                    .and_then(|()| check_owned_dir(&folder.path))
                    .map_err(|source| SinkError::Io {
                        path: folder.path.clone(),
                        source,
                    })?;
                Ok(Self::Folder {
                    path: folder.path.clone(),
                })
            }
            SinkSettings::Stdout => Ok(Self::Stdout),
        }
    }

    /// The retry bounds for failed hand-overs.
    pub fn retry(&self) -> RetrySettings {
        match self {
            Self::Webhook { settings, .. } => settings.retry,
            Self::Folder { .. } | Self::Stdout => LOCAL_SINK_RETRY,
        }
    }

    /// Hands `item` over once.
    pub async fn hand(&self, item: &Item) -> Result<(), SinkError> {
        match self {
            Self::Webhook { client, settings } => {
                let mut request = client
                    .post(&settings.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("Liandong-Kind", item.kind)
                    .header("Liandong-Notification-Id", &item.notification_id);
                if let Some(subscription) = &item.subscription {
                    request = request.header("Liandong-Subscription", subscription);
                }
                if let Some(sequence) = item.sequence {
                    request = request.header("Liandong-Sequence", sequence.to_string());
                }
                for (name, value) in &settings.headers {
                    request = request.header(name, value);
                }
                let response = request
                    .body(item.body.to_string())
                    .send()
                    .await
                    .map_err(|e| SinkError::Unreachable(error_chain(&e.without_url())))?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(SinkError::Refused {
                        status: status.as_u16(),
                    })
                }
            }
            Self::Folder { path } => {
                let target = path.join(&item.file_name);
                let mut bytes =
                    serde_json::to_vec_pretty(&item.body).expect("a JSON value serialises");
                bytes.push(b'\n');
                tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
                    .await
                    .map_err(|e| SinkError::Setup(format!("writer task: {e}")))?
            }
            Self::Stdout => {
                let mut line = item.body.to_string();
                line.push('\n');
                let _guard = STDOUT.lock().unwrap_or_else(|p| p.into_inner());
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(SinkError::Stdout)
            }
        }
    }
}

/// The certificates of a PEM file of CAs; at least one.
fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, SinkError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let setup = |reason: String| SinkError::Setup(format!("{}: {reason}", path.display()));
    let pem = std::fs::read(path).map_err(|e| setup(format!("cannot read: {e}")))?;
    let mut certificates = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| setup(format!("not a PEM certificate: {e}")))?;
        let certificate = reqwest::Certificate::from_der(&der)
            .map_err(|e| setup(format!("not a certificate: {}", error_chain(&e))))?;
        certificates.push(certificate);
    }
    if certificates.is_empty() {
        return Err(setup("no PEM CERTIFICATE found".into()));
    }
    Ok(certificates)
}

/// Checks that `dir` is a folder the adapter may write into: a real
/// directory (not a symbolic link), owned by the adapter's own user, and
/// not writable by others. Whoever could swap or share the folder could
/// otherwise make the adapter write where they choose.
pub fn check_owned_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |reason: String| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{}: {reason}; refusing to write into it", dir.display()),
        )
    };
    let metadata = std::fs::symlink_metadata(dir)?;
    if metadata.file_type().is_symlink() {
        return Err(refuse("is a symbolic link, not a folder".into()));
    }
    if !metadata.is_dir() {
        return Err(refuse("is not a folder".into()));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != uid {
        return Err(refuse(format!(
            "is owned by uid {}, not by the adapter's uid {uid}",
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o002 != 0 {
        return Err(refuse(format!(
            "is writable by others (mode {:o})",
            metadata.mode() & 0o7777
        )));
    }
    Ok(())
}

/// True when `name` can be used as one file name in a folder: not empty,
/// not `.` or `..`, no `/`, no control character.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// Writes `bytes` to `target` so that a reader sees the whole file or
/// none, and so that nothing planted in the folder can redirect the
/// write: the folder is checked first ([`check_owned_dir`]); the data goes
/// to a new temporary `.<name>.<random>.tmp` in the same folder, created
/// exclusively (`O_CREAT|O_EXCL`: it fails on any existing entry, a
/// symbolic link included, and never follows one), synced, renamed over
/// `target` (a rename replaces a link at `target` rather than following
/// it), then the folder is synced.
pub fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let io = |source| SinkError::Io {
        path: target.to_owned(),
        source,
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_safe_file_name(n))
        .ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a plain file name",
            ))
        })?;
    check_owned_dir(dir).map_err(io)?;
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(io)?;
    file.persist(target).map_err(|e| io(e.error))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        // Makes the rename durable; not every platform can sync a folder.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Hands `item` to `sink` until it succeeds (true) or `shutdown` is
/// cancelled (false), waiting a backoff between attempts and recording
/// each failure as the error of the subscription `record` names.
pub async fn hand_with_retry(
    sink: &Sink,
    item: &Item,
    shutdown: &CancellationToken,
    record: Option<(&Store, &str)>,
) -> bool {
    let mut backoff = Backoff::new(sink.retry());
    loop {
        if shutdown.is_cancelled() {
            return false;
        }
        match sink.hand(item).await {
            Ok(()) => return true,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    notification.id = %item.notification_id,
                    sink.kind = item.kind,
                    error = %error,
                    retry.in_ms = delay.as_millis() as u64,
                    "the sink did not take it; retrying"
                );
                if let Some((store, subscription)) = record
                    && let Err(e) = store
                        .record_subscription_error(subscription, &error.to_string())
                        .await
                {
                    tracing::error!(error = %e, "cannot record the sink error");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Reports every dead letter not yet reported to `sink`, oldest first,
/// until `shutdown`; `wake` is notified when a new one appears.
pub async fn report_dead_letters(
    store: Store,
    sink: Arc<Sink>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let batch = match store.unreported_dead_letters(50).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(error = %error, "cannot read the dead letters");
                Vec::new()
            }
        };
        for dead in &batch {
            let item = Item::dead_letter(dead);
            let handed = hand_with_retry(&sink, &item, &shutdown, None).await;
            if !handed {
                return;
            }
            if let Err(error) = store.mark_reported(dead.local_id).await {
                tracing::error!(error = %error, "cannot record a dead-letter report");
            }
            tracing::info!(notification.id = %dead.notification_id, "dead letter reported");
        }
        if batch.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }
}
