//! Signed checkpoints of the audit chain while the gateway runs: after
//! `[audit] checkpoint_rows` new rows, or `checkpoint_seconds` after the
//! last one when rows were added, and once more at shutdown. Each is
//! stored in `audit_checkpoints` and written as JSON to `[audit]
//! checkpoint_file`, for the operator to ship off the host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::Gateway;
use crate::config::AuditSettings;
use crate::store::StoreError;
use crate::store::audit::Checkpoint;

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
