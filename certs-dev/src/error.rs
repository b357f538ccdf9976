//! The one error type of the development PKI library.
//!
//! Every failure the library can report is a [`CertError`] variant that names
//! the file, registry entry or operation involved. Error messages must never
//! contain private key material.

use std::path::PathBuf;

use liandong_core::toml_file::FileError;

/// Everything that can go wrong while creating certificates, keys or the
/// on-disk development PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),

    /// A cryptographic primitive (key generation, PKCS#8 parsing) failed.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),

    /// An agency id does not follow the id rules.
    #[error("invalid agency id {id:?}: {reason}")]
    InvalidAgencyId {
        /// The offending id.
        id: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A server certificate was requested without any subject alternative name.
    #[error("a server certificate needs at least one subject alternative name")]
    NoServerNames,

    /// The registry file could not be read, or is not valid TOML or does
    /// not have the expected shape (the error gives the line and column).
    #[error(transparent)]
    RegistryFile(#[from] FileError),

    /// The registry lists no agencies at all.
    #[error("agency registry {} contains no [[agency]] entries", path.display())]
    RegistryEmpty {
        /// The registry file.
        path: PathBuf,
    },

    /// One `[[agency]]` entry of the registry is invalid (bad or duplicate id).
    #[error(
        "agency registry {}: [[agency]] entry {entry} (id {id:?}) is invalid: {reason}",
        path.display()
    )]
    RegistryEntry {
        /// The registry file.
        path: PathBuf,
        /// 1-based position of the entry among the `[[agency]]` tables.
        entry: usize,
        /// The id found in that entry.
        id: String,
        /// Why the entry was rejected.
        reason: String,
    },

    /// `init` found existing PKI files and was not told to overwrite them.
    #[error(
        "refusing to overwrite existing files (use --force): {}",
        display_paths(paths)
    )]
    WouldOverwrite {
        /// The files that already exist.
        paths: Vec<PathBuf>,
    },

    /// The registry text could not be edited (not TOML, or a key field of
    /// an unexpected type).
    #[error("agency registry {}: cannot write the signing keys: {reason}", path.display())]
    RegistryEdit {
        /// The registry file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A key command named an agency the registry does not list.
    #[error("agency registry {} has no [[agency]] with id {id:?}", path.display())]
    AgencyNotInRegistry {
        /// The registry file.
        path: PathBuf,
        /// The agency asked for.
        id: String,
    },

    /// `rotate-key` found a rollover already under way (two keys
    /// registered): the old key must be retired first.
    #[error(
        "agency {id} already has {count} signing keys registered in {}: finish that rollover          with retire-key before rotating again",
        path.display()
    )]
    RolloverInProgress {
        /// The registry file.
        path: PathBuf,
        /// The agency.
        id: String,
        /// How many keys it lists.
        count: usize,
    },

    /// The agency's current key file holds a key the registry does not
    /// list, so retiring the others would leave it with no valid key.
    #[error(
        "the key in {} ({key}) is not registered for {id} in {}; refusing to retire the          registered keys",
        key_file.display(),
        path.display()
    )]
    KeyNotRegistered {
        /// The registry file.
        path: PathBuf,
        /// The agency.
        id: String,
        /// The current key file.
        key_file: PathBuf,
        /// Its public key, hex.
        key: String,
    },

    /// A certificate revocation list (or the certificate to revoke) cannot
    /// be used.
    #[error("{}: {reason}", path.display())]
    Crl {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A command-line argument has a value that cannot work.
    #[error("{argument}: {reason}")]
    InvalidArgument {
        /// The argument (`--reason`, …).
        argument: String,
        /// What is wrong.
        reason: String,
    },

    /// Reading or writing a file of the PKI failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

impl CertError {
    /// True when the error is caused by the caller's input or configuration
    /// (unreadable or invalid registry, refusing to overwrite, bad agency id,
    /// a key command that does not fit the registry)
    /// rather than by a failure of the machine or of the crypto libraries.
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            CertError::InvalidAgencyId { .. }
                | CertError::NoServerNames
                | CertError::RegistryFile(_)
                | CertError::RegistryEmpty { .. }
                | CertError::RegistryEntry { .. }
                | CertError::WouldOverwrite { .. }
                | CertError::RegistryEdit { .. }
                | CertError::AgencyNotInRegistry { .. }
                | CertError::RolloverInProgress { .. }
                | CertError::KeyNotRegistered { .. }
                | CertError::Crl { .. }
                | CertError::InvalidArgument { .. }
        )
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
