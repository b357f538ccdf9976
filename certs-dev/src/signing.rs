//! Ed25519 signing keys with which agencies sign what they send through the
//! gateway (generated with ring).
//!
//! Each key is written in two forms: PKCS#8 v2 DER (`.signing.pk8`, what
//! ring writes and earlier releases read) and PKCS#8 v1 PEM (`.signing.pem`,
//! RFC 8410, which OpenSSL, Python's `cryptography` and most other tools
//! load); its public half as hex (`.signing.pub`) and as a
//! SubjectPublicKeyInfo PEM (`.signing.pub.pem`).
//!
//! This module must never expose the private key except as those two
//! encodings that are written to the key files; `Debug` redacts it.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, KeypairBytes,
    PublicKeyBytes,
};
use liandong_core::key_file::{ACCEPTED_FORMS, parse_ed25519};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::CertError;

/// Length of a raw Ed25519 public key, in bytes.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// An Ed25519 signing key for an agency. `Debug` redacts the private key.
pub struct SigningKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key_hex())
            .field("pkcs8", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// A fresh random Ed25519 key.
    pub fn generate() -> Result<Self, CertError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| CertError::Crypto("Ed25519 key generation failed".to_owned()))?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Loads a key from PKCS#8 DER (as written to `<id>.signing.pk8`): v2
    /// as ring writes it, or v1.
    pub fn from_pkcs8_der(pkcs8: &[u8]) -> Result<Self, CertError> {
        let pair = parse_ed25519(pkcs8).map_err(CertError::Crypto)?;
        Ok(SigningKey {
            pkcs8: pkcs8.to_vec(),
            pair,
        })
    }

    /// Reads a key file: PKCS#8 v1 or v2, DER or PEM (the `.signing.pk8`
    /// and `.signing.pem` that `init` writes, or a key made by OpenSSL).
    pub fn load(path: &Path) -> Result<Self, CertError> {
        let bytes = std::fs::read(path).map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| {
            CertError::Crypto(format!(
                "{}: not {ACCEPTED_FORMS}: {reason}",
                path.display()
            ))
        };
        let pair = parse_ed25519(&bytes).map_err(invalid)?;
        // Kept as DER, the form `pkcs8_der` promises, whatever the file's.
        let pkcs8 = if KeypairBytes::from_pkcs8_der(&bytes).is_ok() {
            bytes
        } else {
            let text = std::str::from_utf8(&bytes).map_err(|e| invalid(e.to_string()))?;
            KeypairBytes::from_pkcs8_pem(text)
                .and_then(|key| key.to_pkcs8_der())
                .map_err(|e| invalid(e.to_string()))?
                .as_bytes()
                .to_vec()
        };
        Ok(SigningKey { pkcs8, pair })
    }

    /// The private key as PKCS#8 DER (v2 for generated keys). Handle with
    /// care.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key as PKCS#8 v1 PEM (RFC 8410: version 0, algorithm
    /// 1.3.101.112, the 32-byte seed as an OCTET STRING inside the
    /// OCTET STRING, no public key), the form OpenSSL 3 and Python's
    /// `cryptography` load. Handle with care.
    pub fn pkcs8_v1_pem(&self) -> Result<String, CertError> {
        let mut bytes = KeypairBytes::from_pkcs8_der(&self.pkcs8)
            .map_err(|e| CertError::Crypto(format!("invalid Ed25519 PKCS#8 key: {e}")))?;
        bytes.public_key = None;
        let pem = bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| CertError::Crypto(format!("PKCS#8 PEM encoding failed: {e}")))?;
        Ok(pem.as_str().to_owned())
    }

    /// The public key as a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC
    /// KEY-----`).
    pub fn public_key_pem(&self) -> Result<String, CertError> {
        PublicKeyBytes(self.public_key())
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| CertError::Crypto(format!("public key PEM encoding failed: {e}")))
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        let mut out = [0u8; ED25519_PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// The public key as 64 lower-case hex characters.
    pub fn public_key_hex(&self) -> String {
        to_hex(&self.public_key())
    }

    /// Signs `message`, returning the 64-byte Ed25519 signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Lower-case hex encoding.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}
