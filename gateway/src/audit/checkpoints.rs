//! Signed checkpoints of the audit chain while the gateway runs: after
//! `[audit] checkpoint_rows` new rows, or `checkpoint_seconds` after the
//! last one when rows were added, and once more at shutdown. Each is
//! stored in `audit_checkpoints` and written as JSON to `[audit]
//! checkpoint_file`, for the operator to ship off the host.
//!
//! At start, [`restore_check`] compares that file with the store: a file
//! ahead of the store's audit log means the store was restored from an
//! older backup (or cut short), and the gateway refuses to serve it until
//! a sequence fence declared after the file was signed says the operator
//! dealt with it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::Gateway;
use crate::config::AuditSettings;
use crate::store::audit::Checkpoint;
use crate::store::{Store, StoreError};

/// How often the task looks at how many rows were appended.
const POLL: Duration = Duration::from_secs(1);

/// Checkpoints in the background until the gateway stops; the final
/// checkpoint is [`checkpoint_now`]'s, called by shutdown once every write
/// is done.
pub fn spawn(gateway: Arc<Gateway>, settings: AuditSettings) -> JoinHandle<()> {
    tokio::spawn(async move {
        publish_latest(&gateway, &settings.checkpoint_file).await;
        let mut last = tokio::time::Instant::now();
        let poll = POLL.min(settings.checkpoint_interval);
        loop {
            tokio::select! {
                () = gateway.stop.cancelled() => return,
                () = tokio::time::sleep(poll) => {}
            }
            let rows = match gateway.store.audit_rows_since_checkpoint().await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::error!(%error, "cannot read the audit chain head; no checkpoint now");
                    continue;
                }
            };
            let due = rows >= settings.checkpoint_rows
                || (rows > 0 && last.elapsed() >= settings.checkpoint_interval);
            if !due {
                continue;
            }
            last = tokio::time::Instant::now();
            if let Err(error) = checkpoint_now(&gateway, &settings.checkpoint_file).await {
                tracing::error!(%error, "audit checkpoint failed; retried at the next interval");
            }
        }
    })
}

/// Why a checkpoint was not made or not written out.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store could not sign and store it.
    #[error("audit checkpoint: {0}")]
    Store(#[from] StoreError),
    /// It was stored but the file could not be written.
    #[error("audit checkpoint stored, but {path} could not be written: {source}")]
    File {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Signs the chain head now (when rows were added since the last
/// checkpoint), stores it and writes it to `file`.
pub async fn checkpoint_now(
    gateway: &Gateway,
    file: &Path,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let Some(checkpoint) = gateway.store.audit_checkpoint(gateway.key.clone()).await? else {
        return Ok(None);
    };
    write(&checkpoint, file)?;
    tracing::info!(
        audit.row = checkpoint.row_id,
        file = %file.display(),
        "audit chain checkpoint signed"
    );
    Ok(Some(checkpoint))
}

/// Writes the latest stored checkpoint to `file` unless the file already
/// holds it or a later one (a restart after a checkpoint whose file was
/// not written).
async fn publish_latest(gateway: &Gateway, file: &Path) {
    let latest = match gateway.store.latest_audit_checkpoint().await {
        Ok(Some(latest)) => latest,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, "cannot read the latest audit checkpoint");
            return;
        }
    };
    let current = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| Checkpoint::from_json(&text).ok());
    if current.is_some_and(|current| current.row_id >= latest.row_id) {
        return;
    }
    if let Err(error) = write(&latest, file) {
        tracing::error!(%error, "cannot write the audit checkpoint file");
    }
}

fn write(checkpoint: &Checkpoint, file: &Path) -> Result<(), CheckpointError> {
    checkpoint
        .write_file(file)
        .map_err(|source| CheckpointError::File {
            path: file.to_owned(),
            source,
        })
}

/// Compares the checkpoint file this host wrote with the store, before
/// the gateway serves it. Returns why it must not be served when the file
/// is ahead of the store's audit log (it covers a row the store does not
/// have) or names a row the store holds with another hash — the store was
/// restored from an older backup (or cut short, or rewritten) — unless a
/// fence recorded after the file was signed acknowledges it. A missing or
/// unreadable file, or one whose signature is not the gateway's, proves
/// nothing: it is logged and passed over.
pub async fn restore_check(
    store: &Store,
    public_key: &[u8; 32],
    file: &Path,
) -> Result<Option<String>, StoreError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "cannot read the audit checkpoint file; not compared with the store");
            return Ok(None);
        }
    };
    let checkpoint = match Checkpoint::from_json(&text) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "the audit checkpoint file does not parse; not compared with the store");
            return Ok(None);
        }
    };
    if !checkpoint.signature_verifies(public_key) {
        tracing::warn!(
            file = %file.display(),
            "the audit checkpoint file's signature does not verify with the gateway's key; not compared with the store"
        );
        return Ok(None);
    }
    let head = store.audit_last_id().await?;
    let found = if checkpoint.row_id > head {
        format!(
            "the audit checkpoint file {} covers audit row {} (signed {}), but the store's audit log ends at row {head}: the store was restored from an older backup or cut short",
            file.display(),
            checkpoint.row_id,
            signed_at(checkpoint.at)
        )
    } else {
        match store.audit_row_hash(checkpoint.row_id).await? {
            Some(hash) if hash == checkpoint.row_hash => return Ok(None),
            _ => format!(
                "the audit checkpoint file {} signed audit row {} (at {}) with another hash than the store holds: the store was restored from an older backup and written since, or its audit log was rewritten (run audit verify --checkpoint {})",
                file.display(),
                checkpoint.row_id,
                signed_at(checkpoint.at),
                file.display()
            ),
        }
    };
    if let Some(fence) = store.latest_recorded_fence().await?
        && fence.at > checkpoint.at
    {
        tracing::warn!(
            file = %file.display(),
            audit.row = checkpoint.row_id,
            fence.first = fence.first,
            fence.last = fence.last,
            "{found}; acknowledged by the sequence fence declared at {}",
            signed_at(fence.at)
        );
        return Ok(None);
    }
    Ok(Some(format!(
        "{found}. Agencies may hold notifications the store no longer has, and new ones would reuse their sequences. Find the highest sequence any agency may have received (docs/OPERATIONS.md, \"Restoring a backup\"), then run `liandong-gateway fence-sequences --config … --above N --reason …` before serving; --allow-integrity-failures does not override this"
    )))
}

fn signed_at(micros: i64) -> String {
    liandong_core::domain::Instant::from_unix_micros(micros)
        .map_or_else(|| micros.to_string(), |at| at.to_string())
}
