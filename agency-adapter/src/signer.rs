//! The agency's Ed25519 signing key (ring), and the signing of each
//! outgoing notification over the canonical bytes of
//! [`liandong_core::signing::signing_bytes`] (`docs/SIGNING.md`).
//!
//! This module must never reveal the private key: `Debug` shows the key id
//! only, and errors name the file, never its bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use liandong_core::domain::AgencyId;
use liandong_core::key_file::{ACCEPTED_FORMS, KeyFileError, load_ed25519, parse_ed25519};
use liandong_core::pb;
use liandong_core::signing::{PUBLIC_KEY_LEN, key_id, signing_bytes};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

#[cfg(test)]
mod tests;

/// The signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The file could not be read.
    #[error("{path}: cannot read the signing key: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 private key in a form the adapter reads
    /// (PKCS#8 v1 or v2, DER or PEM).
    #[error("{path}: not {ACCEPTED_FORMS}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Signs notifications as one agency.
pub struct Signer {
    agency: AgencyId,
    pair: Ed25519KeyPair,
    key_id: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("agency", &self.agency.as_str())
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the agency's private key: `<id>.signing.pk8` or
    /// `<id>.signing.pem` as `liandong-certs init` writes them, or a key
    /// made by other tools (`openssl genpkey -algorithm ed25519`): PKCS#8
    /// v1 or v2, DER or PEM.
    pub fn load(agency: AgencyId, path: &Path) -> Result<Self, SignerError> {
        let pair = load_ed25519(path).map_err(|error| match error {
            KeyFileError::Read { path, source } => SignerError::Read { path, source },
            KeyFileError::Key { path, reason } => SignerError::Key { path, reason },
        })?;
        Ok(Self::from_key_pair(agency, pair))
    }

    /// A signer from the bytes of a key file (PKCS#8 v1 or v2, DER or
    /// PEM).
    pub fn from_pkcs8(agency: AgencyId, key: &[u8]) -> Result<Self, String> {
        Ok(Self::from_key_pair(agency, parse_ed25519(key)?))
    }

    fn from_key_pair(agency: AgencyId, pair: Ed25519KeyPair) -> Self {
        let public: [u8; PUBLIC_KEY_LEN] = pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes");
        let key_id = key_id(agency.as_str(), &public);
        Self {
            agency,
            pair,
            key_id,
        }
    }

    /// The agency it signs for.
    pub fn agency(&self) -> &AgencyId {
        &self.agency
    }

    /// `<agency>:<16 hex>`, the id of this key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Sets `sender` to the agency, `signing_key_id` to this key and
    /// `signature` to the Ed25519 signature of the signing bytes.
    pub fn sign(&self, notification: &mut pb::Notification) {
        notification.sender = self.agency.as_str().to_owned();
        let bytes = signing_bytes(notification, self.agency.as_str());
        notification.signature = self.pair.sign(&bytes).as_ref().to_vec();
        notification.signing_key_id = self.key_id.clone();
    }
}
