//! The gateway's own Ed25519 signing key, with which it signs the
//! notifications it emits (`SUPERVISION_ALERT`, and the other gateway
//! events) exactly as an agency signs its own (`docs/SIGNING.md`), under
//! the sender id [`GATEWAY_SENDER`].
//!
//! This module never reveals the private key: `Debug` shows the key id
//! only, and errors name the file, never its bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use liandong_core::key_file::{ACCEPTED_FORMS, KeyFileError, load_ed25519, parse_ed25519};
use liandong_core::pb;
use liandong_core::registry::GATEWAY_SENDER;
use liandong_core::signing::{PUBLIC_KEY_LEN, key_id, signing_bytes};

#[cfg(test)]
mod tests;

/// The signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("signing.key: {path}: cannot read the gateway's signing key: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 private key in a form the gateway reads
    /// (PKCS#8 v1 or v2, DER or PEM).
    #[error("signing.key: {path}: not {ACCEPTED_FORMS}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry publishes another key as the gateway's.
    #[error(
        "{registry}: [gateway] signing_public_key is the key {published}, but signing.key is \
         {own}; publish signing_public_key = \"{public_hex}\" (or configure the matching key)"
    )]
    NotPublished {
        /// The registry file.
        registry: PathBuf,
        /// The id of the key the registry publishes.
        published: String,
        /// The id of the configured key.
        own: String,
        /// The configured key's public key, hex.
        public_hex: String,
    },
}

/// The gateway's signing key.
pub struct GatewayKey {
    pair: Ed25519KeyPair,
    public: [u8; PUBLIC_KEY_LEN],
    key_id: String,
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl GatewayKey {
    /// Loads the gateway's private key: `gateway.signing.pk8` or
    /// `gateway.signing.pem` as `liandong-certs init` writes them, or a key
    /// made by other tools (`openssl genpkey -algorithm ed25519`): PKCS#8
    /// v1 or v2, DER or PEM.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pair = load_ed25519(path).map_err(|error| match error {
            KeyFileError::Read { path, source } => KeyError::Read { path, source },
            KeyFileError::Key { path, reason } => KeyError::Key { path, reason },
        })?;
        Ok(Self::from_key_pair(pair))
    }

    /// A fresh key, kept in memory only: for tests and tools that run a
    /// gateway without a configured identity. `serve` always loads the
    /// configured key ([`GatewayKey::load`]).
    pub fn generate() -> Self {
        let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .expect("the system random source works");
        Self::from_pkcs8(der.as_ref()).expect("a generated key is valid PKCS#8")
    }

    /// A key from the bytes of a key file (PKCS#8 v1 or v2, DER or PEM).
    pub fn from_pkcs8(key: &[u8]) -> Result<Self, String> {
        Ok(Self::from_key_pair(parse_ed25519(key)?))
    }

    fn from_key_pair(pair: Ed25519KeyPair) -> Self {
        let public: [u8; PUBLIC_KEY_LEN] = pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes");
        Self {
            key_id: key_id(GATEWAY_SENDER, &public),
            pair,
            public,
        }
    }

    /// The raw public key, for receivers that verify the gateway's
    /// notifications.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// The key id (`liandong-gateway:<16 hex>`), as SIGNING.md defines it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// An Ed25519 signature over exactly `message`. Every caller prefixes
    /// a domain of its own (e.g. `liandong.v1.AuditCheckpoint\n`), distinct
    /// from the notifications' `liandong.v1.Notification\n`, so a signature
    /// made for one purpose never verifies for another.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// Sets `sender` to [`GATEWAY_SENDER`] and signs `notification` over
    /// its signing bytes, filling `signature` and `signing_key_id`.
    pub fn sign(&self, notification: &mut pb::Notification) {
        notification.sender = GATEWAY_SENDER.to_owned();
        let bytes = signing_bytes(notification, GATEWAY_SENDER);
        notification.signature = self.pair.sign(&bytes).as_ref().to_vec();
        notification.signing_key_id = self.key_id.clone();
    }
}
