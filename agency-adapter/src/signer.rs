//! The agency's Ed25519 signing key (ring), and the signing of each
//! outgoing notification over the canonical bytes of
//! [`liandong_core::signing::signing_bytes`] (`docs/SIGNING.md`).
//!
//! This module must never reveal the private key: `Debug` shows the key id
//! only, and errors name the file, never its bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use liandong_core::domain::AgencyId;
use liandong_core::pb;
use liandong_core::signing::{key_id, signing_bytes};
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
    /// The file is not an Ed25519 key in PKCS#8 DER.
    #[error("{path}: not an Ed25519 PKCS#8 (DER) signing key: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What ring said.
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
    /// Loads `<id>.signing.pk8` (as written by `liandong-certs init`).
    pub fn load(agency: AgencyId, path: &Path) -> Result<Self, SignerError> {
        let der = std::fs::read(path).map_err(|source| SignerError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pkcs8(agency, &der).map_err(|reason| SignerError::Key {
            path: path.to_owned(),
            reason,
        })
    }

    /// A signer from PKCS#8 DER bytes.
    pub fn from_pkcs8(agency: AgencyId, der: &[u8]) -> Result<Self, String> {
        // PKCS#8 v2 (with the public key, as liandong-certs writes it), or
        // v1 as `openssl genpkey -algorithm ed25519 -outform DER` writes it.
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|e| e.to_string())?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "the public key is not 32 bytes".to_owned())?;
        let key_id = key_id(agency.as_str(), &public);
        Ok(Self {
            agency,
            pair,
            key_id,
        })
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
