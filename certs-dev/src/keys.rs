//! Signing public keys into the registry, and key rotation:
//! `liandong-certs init --register-keys`, `rotate-key` and `retire-key`.
//!
//! A rollover keeps two keys valid for an agency: `rotate-key` makes a new
//! key, keeps the old one beside it as `<id>.signing.previous.{pk8,pem}`
//! and registers both (`signing_public_keys = [new, old]`); once the
//! adapter signs with the new key, `retire-key` registers the current key
//! alone and deletes the previous one. Every step can be run again after a
//! crash: what is on disk always lets the next step (or a rerun) finish.
//!
//! This module must never leave the registry listing a key whose private
//! half is not on disk as the current or the previous key, and never print
//! private keys.

use std::io;
use std::path::{Path, PathBuf};

use crate::init::write_atomic;
use crate::registry::{AgencyKeys, registered_signing_keys, write_signing_keys};
use crate::{AGENCIES_DIR, CertError, SigningKey, read_agency_ids};

#[cfg(test)]
mod tests;

/// The files of an agency's signing key (or of the previous one during a
/// rollover) in a PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// PKCS#8 v2 DER (`<id>.signing.pk8`).
    pub pk8: PathBuf,
    /// PKCS#8 v1 PEM (`<id>.signing.pem`).
    pub pem: PathBuf,
}

impl KeyFiles {
    /// The current key of `agency` in the PKI at `out`.
    pub fn current(out: &Path, agency: &str) -> Self {
        let dir = out.join(AGENCIES_DIR);
        Self {
            pk8: dir.join(format!("{agency}.signing.pk8")),
            pem: dir.join(format!("{agency}.signing.pem")),
        }
    }

    /// The previous key of `agency` kept during a rollover.
    pub fn previous(out: &Path, agency: &str) -> Self {
        let dir = out.join(AGENCIES_DIR);
        Self {
            pk8: dir.join(format!("{agency}.signing.previous.pk8")),
            pem: dir.join(format!("{agency}.signing.previous.pem")),
        }
    }
}

/// Writes every agency's public key (from `<out>/agencies/<id>.signing.pk8`)
/// and the gateway's (from `<out>/gateway.signing.pk8`) into `registry`,
/// as `init --register-keys` does after writing the PKI. Replaces any keys
/// the registry listed before. Returns the agencies registered.
pub fn register_keys(registry: &Path, out: &Path) -> Result<Vec<String>, CertError> {
    let ids = read_agency_ids(registry)?;
    let mut agencies = Vec::with_capacity(ids.len());
    for id in &ids {
        let key = SigningKey::load(&KeyFiles::current(out, id).pk8)?;
        agencies.push(AgencyKeys {
            id: id.clone(),
            keys: vec![key.public_key()],
        });
    }
    let gateway = SigningKey::load(&out.join("gateway.signing.pk8"))?;
    write_signing_keys(registry, &agencies, Some(gateway.public_key()))?;
    Ok(ids)
}

/// What [`rotate_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new key's public key, hex (registered first).
    pub new_key: String,
    /// The previous key's public key, hex (still registered).
    pub old_key: String,
    /// The files written, in order.
    pub files: Vec<PathBuf>,
}

/// Starts a rollover for `agency`: generates a new key, keeps the current
/// one as `<id>.signing.previous.{pk8,pem}`, writes the new one under the
/// usual names (`.signing.pk8`, `.signing.pem`, `.signing.pub`,
/// `.signing.pub.pem`) and registers `signing_public_keys = [new, old]`.
///
/// Refused when the registry already lists two keys for the agency (a
/// rollover not yet retired), lists a key other than the current one, or
/// does not list the agency.
pub fn rotate_key(registry: &Path, out: &Path, agency: &str) -> Result<Rotation, CertError> {
    let registered = registered_signing_keys(registry, agency)?;
    if registered.len() > 1 {
        return Err(CertError::RolloverInProgress {
            path: registry.to_owned(),
            id: agency.to_owned(),
            count: registered.len(),
        });
    }
    let current = KeyFiles::current(out, agency);
    let previous = KeyFiles::previous(out, agency);
    let old = SigningKey::load(&current.pk8)?;
    if let Some(other) = registered
        .iter()
        .find(|k| !k.eq_ignore_ascii_case(&old.public_key_hex()))
    {
        // The registry names a key this PKI does not hold as current:
        // replacing it would be a silent change of identity.
        return Err(CertError::KeyNotRegistered {
            path: registry.to_owned(),
            id: agency.to_owned(),
            key_file: current.pk8,
            key: format!("{} (registered: {other})", old.public_key_hex()),
        });
    }
    let new = SigningKey::generate()?;
    let dir = out.join(AGENCIES_DIR);

    // Order matters for a crash in between: first the old key is kept
    // under its previous names, then both keys are registered, and only
    // then is the new key put in place. A rerun after a crash before the
    // registry edit starts again; after it, retire-key returns to the old
    // key (still current) and a new rotation can begin.
    let mut files = Vec::new();
    write_atomic(&previous.pk8, old.pkcs8_der(), true)?;
    files.push(previous.pk8);
    write_atomic(&previous.pem, old.pkcs8_v1_pem()?.as_bytes(), true)?;
    files.push(previous.pem);
    write_signing_keys(
        registry,
        &[AgencyKeys {
            id: agency.to_owned(),
            keys: vec![new.public_key(), old.public_key()],
        }],
        None,
    )?;
    files.push(registry.to_owned());
    for (path, contents, secret) in [
        (current.pk8, new.pkcs8_der().to_vec(), true),
        (current.pem, new.pkcs8_v1_pem()?.into_bytes(), true),
        (
            dir.join(format!("{agency}.signing.pub")),
            format!("{}\n", new.public_key_hex()).into_bytes(),
            false,
        ),
        (
            dir.join(format!("{agency}.signing.pub.pem")),
            new.public_key_pem()?.into_bytes(),
            false,
        ),
    ] {
        write_atomic(&path, &contents, secret)?;
        files.push(path);
    }
    Ok(Rotation {
        new_key: new.public_key_hex(),
        old_key: old.public_key_hex(),
        files,
    })
}

/// What [`retire_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// The key left registered, hex.
    pub kept: String,
    /// The keys no longer registered, hex.
    pub retired: Vec<String>,
    /// The previous key files deleted.
    pub deleted: Vec<PathBuf>,
}

/// Ends a rollover for `agency`: registers only its current key (the one in
/// `<id>.signing.pk8`) and deletes `<id>.signing.previous.{pk8,pem}`.
///
/// Refused when the current key is not among the registered ones (that
/// would leave the agency without a valid registered key).
pub fn retire_key(registry: &Path, out: &Path, agency: &str) -> Result<Retirement, CertError> {
    let registered = registered_signing_keys(registry, agency)?;
    let current = KeyFiles::current(out, agency);
    let key = SigningKey::load(&current.pk8)?;
    let kept = key.public_key_hex();
    if !registered.iter().any(|k| k.eq_ignore_ascii_case(&kept)) {
        return Err(CertError::KeyNotRegistered {
            path: registry.to_owned(),
            id: agency.to_owned(),
            key_file: current.pk8,
            key: kept,
        });
    }
    write_signing_keys(
        registry,
        &[AgencyKeys {
            id: agency.to_owned(),
            keys: vec![key.public_key()],
        }],
        None,
    )?;
    let mut deleted = Vec::new();
    let previous = KeyFiles::previous(out, agency);
    for path in [previous.pk8, previous.pem] {
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(CertError::Io { path, source }),
        }
    }
    Ok(Retirement {
        retired: registered
            .into_iter()
            .filter(|k| !k.eq_ignore_ascii_case(&kept))
            .collect(),
        kept,
        deleted,
    })
}
