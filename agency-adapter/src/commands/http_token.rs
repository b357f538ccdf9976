//! `liandong-adapter http-token`: creates the HTTP source's `token_file`
//! named by the daemon config — 32 random bytes as 64 hex digits, in a new
//! file readable by its owner only — unless it exists, in which case it is
//! checked as the daemon checks it and kept. Prints one JSON line:
//! `{"token_file": PATH, "created": BOOL}`.
//!
//! It never prints or logs the token, and never replaces an existing file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ring::rand::SecureRandom as _;
use serde_json::json;

use crate::commands::write_json_line;
use crate::config::ConfigError;
use crate::config::daemon::DaemonConfig;
use crate::daemon::source::http::{HttpToken, TokenError};
use crate::error::CommandError;

#[cfg(test)]
mod tests;

/// Bytes of randomness in a new token.
pub const TOKEN_BYTES: usize = 32;

/// The `http-token` command for `config`, answering on `out`.
pub fn http_token(config: &DaemonConfig, out: &mut impl Write) -> Result<(), CommandError> {
    let Some(source) = config.http_source() else {
        return Err(ConfigError::MissingEntry {
            path: config.file.clone(),
            field: "source (kind = \"http\")".into(),
        }
        .into());
    };
    let path = &source.token_file;
    let created = match create(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            return Err(TokenError {
                path: path.clone(),
                reason: format!("cannot create the token file: {e}"),
            }
            .into());
        }
    };
    // What the daemon will read, checked the same way (an existing file
    // may be unusable).
    HttpToken::load(path)?;
    write_json_line(
        out,
        &json!({ "token_file": path.display().to_string(), "created": created }),
    )
}

/// Writes a fresh token to `path`, which must not exist (a symbolic link
/// there counts as existing), with mode 0600 from the start.
fn create(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut random = [0u8; TOKEN_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| std::io::Error::other("the system's random source failed"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut text = hex::encode(random);
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
