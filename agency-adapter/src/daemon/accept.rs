//! Acceptance: the one path from what a source hands over (the JSON form of
//! a notification) to a committed outbox row. Every source (drop folder,
//! local HTTP, `send`) goes through [`Acceptor::accept_json`], so they all
//! check, identify, sign and refuse in the same way.
//!
//! In order: parse; refuse a `sender` naming another agency and a
//! signature supplied by the source; assign `<agency>-<uuid>` when the
//! source gave no `notification_id`; check the form into a typed
//! [`Notification`] (the same checks as the gateway's, so what the gateway
//! would refuse for its form is refused here, before it is accepted); sign
//! the wire form built from that checked value, so what is signed, stored
//! and sent is exactly what was checked; check the size; commit. A source
//! is told "accepted" only once [`Store::accept`] has committed.
//!
//! This module must never log content (ids only), and never commits a
//! notification that has not been checked and signed here.

use std::sync::Arc;

use liandong_core::domain::{FieldError, Notification};
use liandong_core::json::{JsonError, from_json};
use liandong_core::pb;
use liandong_core::signing::signing_bytes;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::signer::Signer;
use crate::store::{AcceptOutcome, NewRow, RowState, Store, StoreError};

#[cfg(test)]
mod tests;

/// Bytes a `PublishRequest` adds around its notification (tag and length).
const REQUEST_OVERHEAD: u64 = 6;

/// Where a notification came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A drop-folder file; `key` identifies its name and content, so a file
    /// read again after a crash is not accepted twice.
    Folder {
        /// `folder:<name>:<sha256 of the bytes>`.
        key: String,
    },
    /// The local HTTP endpoint.
    Http,
    /// `liandong-adapter send` handing over to the daemon.
    Send,
}

impl Origin {
    fn name(&self) -> &'static str {
        match self {
            Self::Folder { .. } => "folder",
            Self::Http => "http",
            Self::Send => "send",
        }
    }
}

/// A notification committed to the outbox (now or before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its local id.
    pub local_id: i64,
    /// The id it is (or was) sent with.
    pub notification_id: String,
    /// True when it had been accepted before; nothing changed.
    pub duplicate: bool,
    /// Where it is now.
    pub state: RowState,
}

/// Why a notification was not accepted. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// Not the JSON form of a notification.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// The input is empty.
    #[error("no notification (the input is empty)")]
    Empty,
    /// A field is missing or malformed.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Larger than the gateway accepts.
    #[error(
        "the notification is {bytes} bytes encoded, more than outbox.max_notification_bytes ({max})"
    )]
    TooLarge {
        /// Its encoded size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The id was accepted before with different content.
    #[error(
        "notification.notification_id: {notification_id} was accepted before (local id {local_id}) \
         with different content; use a new id"
    )]
    Conflict {
        /// The id.
        notification_id: String,
        /// The earlier row.
        local_id: i64,
    },
    /// The outbox is at its bound.
    #[error(
        "outbox full: {pending} notifications are waiting for the gateway \
         (outbox.max_pending = {max}); nothing was accepted, retry later"
    )]
    Full {
        /// Rows waiting.
        pending: u64,
        /// The bound.
        max: u64,
    },
    /// The local state failed; the notification may not have been
    /// accepted: retry with the same `notification_id`.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AcceptError {
    /// A description safe for logs: parser messages can quote values from
    /// the input, so JSON errors are reduced to their kind (the full text
    /// goes back to the agency system only).
    pub fn log_text(&self) -> String {
        match self {
            Self::Json(error) => format!(
                "invalid {} JSON (details returned to the source)",
                error.message_type
            ),
            other => other.to_string(),
        }
    }
}

impl AcceptError {
    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Field(e) => Some(e.field.clone()),
            Self::Conflict { .. } => Some("notification.notification_id".into()),
            _ => None,
        }
    }

    /// True when the input itself is wrong (retrying it unchanged cannot
    /// succeed).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Self::Json(_)
                | Self::Empty
                | Self::Field(_)
                | Self::TooLarge { .. }
                | Self::Conflict { .. }
        )
    }
}

/// Checks, signs and commits notifications for every source.
#[derive(Debug, Clone)]
pub struct Acceptor {
    store: Store,
    signer: Arc<Signer>,
    max_pending: u64,
    max_bytes: u64,
    /// Woken after each commit, so the pusher sends at once.
    wake: Arc<Notify>,
}

impl Acceptor {
    /// An acceptor committing to `store` (at most `max_pending` waiting,
    /// each at most `max_bytes` encoded) and waking `wake` on each commit.
    pub fn new(
        store: Store,
        signer: Arc<Signer>,
        max_pending: u64,
        max_bytes: u64,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            signer,
            max_pending,
            max_bytes,
            wake,
        }
    }

    /// The state it commits to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Accepts the JSON form of one notification.
    pub async fn accept_json(&self, text: &str, origin: Origin) -> Result<Accepted, AcceptError> {
        if text.trim().is_empty() {
            return Err(AcceptError::Empty);
        }
        let notification: pb::Notification = from_json(text)?;
        self.accept(notification, origin).await
    }

    /// Accepts one notification.
    pub async fn accept(
        &self,
        notification: pb::Notification,
        origin: Origin,
    ) -> Result<Accepted, AcceptError> {
        let Prepared {
            notification,
            signed,
            content_hash,
        } = prepare(&self.signer, notification)?;
        let payload = signed.encode_to_vec();
        let bytes = payload.len() as u64 + REQUEST_OVERHEAD;
        if bytes > self.max_bytes {
            return Err(AcceptError::TooLarge {
                bytes,
                max: self.max_bytes,
            });
        }
        let notification_id = notification.id.as_str().to_owned();
        let row = NewRow {
            notification_id: notification_id.clone(),
            source_key: match &origin {
                Origin::Folder { key } => Some(key.clone()),
                Origin::Http | Origin::Send => None,
            },
            source: origin.name(),
            content_hash,
            payload,
        };
        match self.store.accept(row, self.max_pending).await? {
            AcceptOutcome::Accepted { local_id } => {
                tracing::info!(
                    notification.id = %notification_id,
                    outbox.local_id = local_id,
                    source = origin.name(),
                    "accepted"
                );
                self.wake.notify_one();
                Ok(Accepted {
                    local_id,
                    notification_id,
                    duplicate: false,
                    state: RowState::Pending,
                })
            }
            AcceptOutcome::Duplicate {
                local_id,
                notification_id,
                state,
            } => {
                tracing::info!(
                    notification.id = %notification_id,
                    outbox.local_id = local_id,
                    source = origin.name(),
                    "accepted before; nothing changed"
                );
                Ok(Accepted {
                    local_id,
                    notification_id,
                    duplicate: true,
                    state,
                })
            }
            AcceptOutcome::Conflict { local_id } => Err(AcceptError::Conflict {
                notification_id,
                local_id,
            }),
            AcceptOutcome::Full { pending } => {
                tracing::warn!(
                    notification.id = %notification_id,
                    outbox.pending = pending,
                    "refused: outbox full"
                );
                Err(AcceptError::Full {
                    pending,
                    max: self.max_pending,
                })
            }
        }
    }
}

/// A notification ready for the outbox: checked, identified and signed.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The checked notification, with its id (assigned when the source gave
    /// none).
    pub notification: Notification,
    /// The same notification in wire form, signed by the agency: built from
    /// [`Prepared::notification`], so what is signed and sent is exactly
    /// what was checked.
    pub signed: pb::Notification,
    /// SHA-256 (hex) of its signing bytes: the same content gives the same
    /// hash, which is how a repeat is told from a reused id.
    pub content_hash: String,
}

/// Checks `notification` for `signer`'s agency, assigns an id when it has
/// none, and signs the checked form.
pub fn prepare(
    signer: &Signer,
    mut notification: pb::Notification,
) -> Result<Prepared, AcceptError> {
    let agency = signer.agency().as_str();
    if !notification.sender.is_empty() && notification.sender != agency {
        return Err(FieldError::new(
            "notification.sender",
            format!("names another agency; this adapter publishes as {agency} (leave it out)"),
        )
        .into());
    }
    if !notification.signature.is_empty() || !notification.signing_key_id.is_empty() {
        return Err(FieldError::new(
            "notification.signature",
            "is made by the adapter; leave signature and signing_key_id out",
        )
        .into());
    }
    if notification.notification_id.is_empty() {
        notification.notification_id = assign_id(agency);
    }
    let checked = Notification::try_from(notification)?;
    let mut signed = pb::Notification::from(checked.clone());
    let content_hash = hex::encode(Sha256::digest(signing_bytes(&signed, agency)));
    signer.sign(&mut signed);
    Ok(Prepared {
        notification: checked,
        signed,
        content_hash,
    })
}

/// A fresh notification id: `<agency>-<uuid v4, 32 hex digits>`.
pub fn assign_id(agency: &str) -> String {
    format!("{agency}-{}", uuid::Uuid::new_v4().simple())
}
