//! Notifications the gateway emits itself (supervision alerts, announcement
//! releases, statistics reports): signed with the gateway's key, validated
//! like any publish, and inserted inside the open transaction whose state
//! change causes them, so they commit with it or not at all.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use prost::Message;
use sqlx::AnyConnection;

use liandong_core::domain::{AgencyId, Envelope, Notification};
use liandong_core::pb;
use liandong_core::registry::GATEWAY_SENDER;

use super::GatewayKey;
use crate::reports::scheduled::GatewayEmitter;
use crate::store::{self, NewNotification, Receipt, StoreError};

/// A notification the gateway stored: its receipt and row, to wake the
/// subscriptions it concerns once the transaction committed.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// Its receipt.
    pub receipt: Receipt,
    /// The notification as stored.
    pub notification: NewNotification,
}

/// Signs `wire` as the gateway and stores it as the next notification
/// inside the open transaction on `conn`, whose caller holds the publish
/// lock. A notification the gateway builds wrong is an error, never stored.
pub async fn emit_in(
    conn: &mut AnyConnection,
    key: &GatewayKey,
    mut wire: pb::Notification,
) -> Result<Emitted, StoreError> {
    key.sign(&mut wire);
    let checked = Notification::try_from(wire.clone()).map_err(|error| {
        StoreError::Corrupt(format!(
            "a notification the gateway emits is not valid: {error}"
        ))
    })?;
    let sender = AgencyId::parse("sender", GATEWAY_SENDER)
        .expect("the gateway's sender id is a valid agency id");
    let new = NewNotification::new(Envelope::of(sender, &checked), wire.encode_to_vec());
    let receipt = store::insert_in(conn, &new).await?;
    Ok(Emitted {
        receipt,
        notification: new,
    })
}

/// The gateway's emitter for code that emits through
/// [`GatewayEmitter`]: emits with the gateway's key and keeps what it
/// stored, for the caller to wake subscribers after the commit.
#[derive(Debug)]
pub struct Emitter {
    key: Arc<GatewayKey>,
    emitted: Mutex<Vec<Emitted>>,
}

impl Emitter {
    /// An emitter signing with `key`.
    pub fn new(key: Arc<GatewayKey>) -> Self {
        Self {
            key,
            emitted: Mutex::new(Vec::new()),
        }
    }

    /// What it stored so far (valid only once the transaction committed).
    pub fn take(&self) -> Vec<Emitted> {
        std::mem::take(&mut *self.emitted.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl GatewayEmitter for Emitter {
    fn emit<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        notification: pb::Notification,
    ) -> BoxFuture<'c, Result<u64, StoreError>> {
        Box::pin(async move {
            let emitted = emit_in(conn, &self.key, notification).await?;
            let sequence = emitted.receipt.sequence;
            self.emitted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(emitted);
            Ok(sequence)
        })
    }
}
