//! The status page's static files, embedded in the binary: nothing is
//! read from disk at run time, and only these names are served.

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The name under `/assets/`.
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every asset served under `/assets/`.
pub const ASSETS: [Asset; 2] = [
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("style.css"),
    },
    Asset {
        name: "logo.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("logo.svg"),
    },
];

/// The refresh script, inlined into the page (its hash is in the page's
/// `Content-Security-Policy`, so no other inline script can run).
pub const REFRESH_SCRIPT: &str = include_str!("refresh.js");

/// The asset named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

/// `sha256-<base64>` of [`REFRESH_SCRIPT`], as CSP writes a script hash.
pub fn script_hash() -> String {
    format!(
        "sha256-{}",
        base64(&Sha256::digest(REFRESH_SCRIPT.as_bytes()))
    )
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
