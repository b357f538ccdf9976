//! Ed25519 signing keys with which agencies sign what they send through the
//! gateway (generated with ring).
//!
//! This module must never expose the private key except as the PKCS#8 DER
//! that is written to the agency's `.signing.pk8` file; `Debug` redacts it.

use std::fmt;

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

    /// Loads a key from PKCS#8 DER (as written to `<id>.signing.pk8`).
    pub fn from_pkcs8_der(pkcs8: &[u8]) -> Result<Self, CertError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| CertError::Crypto(format!("invalid Ed25519 PKCS#8 key: {e}")))?;
        Ok(SigningKey {
            pkcs8: pkcs8.to_vec(),
            pair,
        })
    }

    /// The private key as PKCS#8 (v2) DER. Handle with care.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
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
