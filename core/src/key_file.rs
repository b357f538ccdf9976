//! Reading an Ed25519 private key file, whichever common form it has:
//! PKCS#8 v2 (what ring writes, with the public key) or PKCS#8 v1 (RFC
//! 8410, what `openssl genpkey -algorithm ed25519` and Python's
//! `cryptography` write), each as DER or as PEM (`-----BEGIN PRIVATE
//! KEY-----`). The adapter's signing key and the gateway's own key are
//! loaded through here.
//!
//! This module must never reveal key bytes: errors name the file and the
//! accepted forms, never the content.

use std::path::{Path, PathBuf};

use ring::signature::Ed25519KeyPair;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::{self, PemObject};

#[cfg(test)]
mod tests;

/// The forms [`load_ed25519`] accepts, as error messages name them.
pub const ACCEPTED_FORMS: &str =
    "an Ed25519 private key in PKCS#8 (v1 or v2), DER or PEM (-----BEGIN PRIVATE KEY-----)";

/// An Ed25519 key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("{}: cannot read the key file: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("{}: not {ACCEPTED_FORMS}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it (never its bytes).
        reason: String,
    },
}

impl KeyFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Key { path, .. } => path,
        }
    }
}

/// Reads the Ed25519 key in `path` (see [`parse_ed25519`] for the forms).
pub fn load_ed25519(path: &Path) -> Result<Ed25519KeyPair, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_ed25519(&bytes).map_err(|reason| KeyFileError::Key {
        path: path.to_owned(),
        reason,
    })
}

/// An Ed25519 key from the bytes of a key file: PKCS#8 v1 or v2, DER or
/// PEM. The error says what was wrong, without any of the bytes.
pub fn parse_ed25519(bytes: &[u8]) -> Result<Ed25519KeyPair, String> {
    let der = if looks_like_pem(bytes) {
        match PrivatePkcs8KeyDer::from_pem_slice(bytes) {
            Ok(der) => der.secret_pkcs8_der().to_vec(),
            Err(pem::Error::NoItemsFound) => {
                return Err(
                    "the PEM file has no PRIVATE KEY section (an \"EC PRIVATE KEY\", \
                     \"OPENSSH PRIVATE KEY\" or \"ENCRYPTED PRIVATE KEY\" is not accepted)"
                        .to_owned(),
                );
            }
            Err(error) => return Err(format!("invalid PEM: {error}")),
        }
    } else {
        bytes.to_vec()
    };
    // v2 is checked against its public key; v1 carries none to check.
    Ed25519KeyPair::from_pkcs8(&der)
        .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der))
        .map_err(|error| format!("not an Ed25519 PKCS#8 key ({error})"))
}

/// True when the bytes start, after blank space, with a PEM boundary.
fn looks_like_pem(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes[start..].starts_with(b"-----BEGIN ")
}
