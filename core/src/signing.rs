//! The canonical byte string an agency signs for each notification, the id
//! of the key that signed it, and verification of a detached signature.
//!
//! The encoding is specified in `docs/SIGNING.md` precisely enough for any
//! language to reproduce it: the ASCII prefix [`DOMAIN_PREFIX`] followed by
//! the deterministic protobuf encoding of the notification with
//! `signature` and `signing_key_id` cleared and `sender` set to the signing
//! agency. The adapter signs these bytes; the gateway and any receiver can
//! verify them with the same function.
//!
//! This module must never sign or verify anything but [`signing_bytes`],
//! and never log: it returns typed errors that name no content.

use prost::Message;
use ring::signature::{ED25519, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::pb;

#[cfg(test)]
mod tests;

/// Domain separation: the bytes every signed message starts with, so a
/// signature over a notification can never be taken for one over anything
/// else.
pub const DOMAIN_PREFIX: &[u8] = b"liandong.v1.Notification\n";

/// Length of a raw Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The bytes that are signed for `notification` sent by `sender`:
/// [`DOMAIN_PREFIX`], then the deterministic protobuf encoding of the
/// notification with `signature` and `signing_key_id` empty and `sender`
/// set to `sender` (known fields in ascending field-number order, proto3
/// defaults omitted, no unknown fields; prost's encoding is exactly that).
pub fn signing_bytes(notification: &pb::Notification, sender: &str) -> Vec<u8> {
    let canonical = pb::Notification {
        sender: sender.to_owned(),
        signature: Vec::new(),
        signing_key_id: String::new(),
        ..notification.clone()
    };
    let mut out = Vec::with_capacity(DOMAIN_PREFIX.len() + canonical.encoded_len());
    out.extend_from_slice(DOMAIN_PREFIX);
    canonical
        .encode(&mut out)
        .expect("a Vec grows to fit the encoding");
    out
}

/// The digest that pins a notification as `sender` signed it: lower-case
/// hex SHA-256 of its [`signing_bytes`]. A reference to a notification
/// (an approval of a draft, the notification that started a deadline)
/// names it by this digest, which any receiver can recompute.
pub fn signed_digest(notification: &pb::Notification, sender: &str) -> String {
    hex::encode(Sha256::digest(signing_bytes(notification, sender)))
}

/// The id of an agency's signing key: `<agency>:<first 16 lower-case hex
/// characters of the SHA-256 of the raw 32-byte public key>`.
pub fn key_id(agency: &str, public_key: &[u8; PUBLIC_KEY_LEN]) -> String {
    let digest = Sha256::digest(public_key);
    let hex = hex::encode(digest);
    format!("{agency}:{}", &hex[..16])
}

/// Why a notification's signature does not verify.
///
/// No variant carries the `signing_key_id` the notification names: that
/// text comes from the sender and is never repeated back (in a status, a
/// log line or an audit reason). Variants name registered agencies and the
/// ids of registered keys only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The notification carries no signature.
    #[error("notification.signature: is missing")]
    Missing,
    /// The signature is not 64 bytes long.
    #[error("notification.signature: is {0} bytes long, not {SIGNATURE_LEN}")]
    Length(usize),
    /// The sender has no registered key, and a signature is required.
    #[error("notification.signature: no signing key registered for {agency}")]
    NoKeyRegistered {
        /// The sender, as registered.
        agency: String,
    },
    /// `signing_key_id` names none of the keys registered for the sender
    /// (nor any other registered key).
    #[error("notification.signing_key_id: unknown key id (not a key registered for {agency})")]
    UnknownKeyId {
        /// The sender, as registered.
        agency: String,
    },
    /// `signing_key_id` names a key registered for another agency.
    #[error("notification.signing_key_id: names a key registered for {owner}, not for {agency}")]
    OtherAgencysKey {
        /// The sender, as registered.
        agency: String,
        /// The agency (or `liandong-gateway`) the key is registered for.
        owner: String,
    },
    /// `signing_key_id` does not name the one key it was checked against.
    #[error("notification.signing_key_id: does not name the key {expected}")]
    KeyId {
        /// The id of the key it was checked against.
        expected: String,
    },
    /// The signature does not match the signing bytes and the key.
    #[error("notification.signature: does not verify with the key {key_id}")]
    Invalid {
        /// The key it was checked against.
        key_id: String,
    },
}

/// Checks that `notification`, sent by `sender`, carries a valid Ed25519
/// signature by `public_key` over [`signing_bytes`], and that its
/// `signing_key_id` names that key.
pub fn verify(
    notification: &pb::Notification,
    sender: &str,
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> Result<(), SignatureError> {
    let expected = key_id(sender, public_key);
    check_form(notification)?;
    if notification.signing_key_id != expected {
        return Err(SignatureError::KeyId { expected });
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            &signing_bytes(notification, sender),
            &notification.signature,
        )
        .map_err(|_| SignatureError::Invalid { key_id: expected })
}

/// Checks `notification`, sent by `sender`, against the keys registered
/// for `sender` (one, or two during a rollover): the key is chosen by the
/// notification's `signing_key_id`, then [`verify`] decides. Returns the
/// id of the key that verified.
///
/// No registered key is [`SignatureError::NoKeyRegistered`]; a key id
/// naming none of `keys` is [`SignatureError::UnknownKeyId`] (a caller
/// that knows other agencies' keys may tell [`SignatureError::OtherAgencysKey`]
/// apart, as `Registry::verify_signature` does).
pub fn verify_with_any(
    notification: &pb::Notification,
    sender: &str,
    keys: &[[u8; PUBLIC_KEY_LEN]],
) -> Result<String, SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoKeyRegistered {
            agency: sender.to_owned(),
        });
    }
    check_form(notification)?;
    let key = keys
        .iter()
        .find(|key| key_id(sender, key) == notification.signing_key_id)
        .ok_or_else(|| SignatureError::UnknownKeyId {
            agency: sender.to_owned(),
        })?;
    verify(notification, sender, key)?;
    Ok(key_id(sender, key))
}

/// A signature is present and 64 bytes long.
fn check_form(notification: &pb::Notification) -> Result<(), SignatureError> {
    if notification.signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    if notification.signature.len() != SIGNATURE_LEN {
        return Err(SignatureError::Length(notification.signature.len()));
    }
    Ok(())
}
