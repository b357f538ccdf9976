//! Which notifications must be signed, and by which key: the gateway's
//! decision on an agency's signature at publish time, and the start-up and
//! reload checks of the registry's keys against the configuration.
//!
//! With `[signing] require_signatures = true` every notification must
//! carry a valid signature by a key registered for its sender; off, only
//! an agency with a registered key must sign (and is then checked). The
//! key is chosen among the sender's keys (two during a rollover) by the
//! notification's `signing_key_id`, in the registry in force at that
//! publish, never in one carried over from when a connection opened.
//!
//! This module must never put the `signing_key_id` a client sent into an
//! error, a log line or an audit reason: it names registered agencies and
//! registered key ids only.

use std::path::Path;

use liandong_core::pb;
use liandong_core::registry::Registry;
use liandong_core::signing::{SignatureError, key_id};

use crate::supervision::{GatewayKey, KeyError};

#[cfg(test)]
mod tests;

/// Checks the signature of `notification`, published by `sender`, under
/// `registry`: required when `require` is on or when `sender` has a
/// registered key; then it must verify with the key its `signing_key_id`
/// names among the sender's keys. Returns the id of the key that
/// verified, or `None` when no signature was required (and none checked).
pub fn check_publish(
    registry: &Registry,
    require: bool,
    notification: &pb::Notification,
    sender: &str,
) -> Result<Option<String>, SignatureError> {
    if !require && registry.signing_keys_of(sender).is_empty() {
        return Ok(None);
    }
    registry.verify_signature(notification, sender).map(Some)
}

/// The checks of a registry about to be put in force (at start and at
/// each reload), for a gateway signing with `key`:
///
/// - a `[gateway] signing_public_key` that is not `key`'s public key is
///   an error (receivers would refuse every alert the gateway signs);
///   none published is a warning (receivers cannot verify them);
/// - with `require` on, agencies without a registered key are named in a
///   warning (each of their publishes will be refused); with it off, a
///   warning says unsigned notifications are accepted from them.
pub fn check_registry(
    registry: &Registry,
    registry_path: &Path,
    key: &GatewayKey,
    require: bool,
) -> Result<(), KeyError> {
    match registry.gateway_key() {
        Some(published) if published != key.public_key() => {
            return Err(KeyError::NotPublished {
                registry: registry_path.to_owned(),
                published: key_id(liandong_core::registry::GATEWAY_SENDER, &published),
                own: key.key_id().to_owned(),
                public_hex: hex::encode(key.public_key()),
            });
        }
        Some(_) => {}
        None => tracing::warn!(
            registry = %registry_path.display(),
            signing.key_id = %key.key_id(),
            "the registry publishes no [gateway] signing_public_key: receivers cannot verify \
             the alerts, releases and reports the gateway signs; add the gateway's public key there"
        ),
    }
    let keyless: Vec<&str> = registry
        .agencies()
        .filter(|agency| agency.signing_keys.is_empty())
        .map(|agency| agency.id.as_str())
        .collect();
    if require {
        if !keyless.is_empty() {
            tracing::warn!(
                agencies = %keyless.join(", "),
                "signatures are required, but these agencies have no signing key registered: \
                 every notification they publish will be refused"
            );
        }
    } else {
        tracing::warn!(
            agencies_without_key = %keyless.join(", "),
            "[signing] require_signatures is off: unsigned notifications from agencies without \
             a registered key are accepted"
        );
    }
    Ok(())
}
