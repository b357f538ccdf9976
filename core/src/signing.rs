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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The notification carries no signature.
    #[error("notification.signature: is missing")]
    Missing,
    /// The signature is not 64 bytes long.
    #[error("notification.signature: is {0} bytes long, not {SIGNATURE_LEN}")]
    Length(usize),
    /// `signing_key_id` does not name the key it was checked against.
    #[error("notification.signing_key_id: names {found:?}, expected {expected:?}")]
    KeyId {
        /// The id in the notification.
        found: String,
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
    if notification.signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    if notification.signature.len() != SIGNATURE_LEN {
        return Err(SignatureError::Length(notification.signature.len()));
    }
    if notification.signing_key_id != expected {
        return Err(SignatureError::KeyId {
            found: notification.signing_key_id.clone(),
            expected,
        });
    }
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(
            &signing_bytes(notification, sender),
            &notification.signature,
        )
        .map_err(|_| SignatureError::Invalid { key_id: expected })
}
