//! Verification of what a subscription receives: each full delivery's
//! signature checked against the keys a registry file publishes (the
//! sender's keys, or the gateway's key for `liandong-gateway`), over the
//! notification exactly as received, so a subscriber can prove who said
//! what without trusting the gateway.
//!
//! Deliveries the gateway withheld (a stub) or redacted (the signature
//! covers the unredacted form) cannot be verified: they are
//! [`Verdict::Unverifiable`]. An unsigned delivery, one from a sender
//! without a registered key, or one whose signature does not verify is a
//! [`Verdict::Failed`]; what happens to it is the subscription's
//! `on_failure` (reject to its `rejected` folder, or warn and pass).
//!
//! The registry file is read again whenever its modification time changes
//! (a key rollover needs no restart); a file that no longer loads keeps the
//! keys last loaded, with an error logged once per change. This module
//! never logs content, nor the key id a delivery names.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use liandong_core::pb;
use liandong_core::registry::{Registry, RegistryError};
use liandong_core::signing::SignatureError;

use crate::config::daemon::{OnFailure, VerifySettings};

#[cfg(test)]
mod tests;

/// What verification says about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verifies with this registered key.
    Verified {
        /// The id of the key that verified.
        key_id: String,
    },
    /// Nothing can be verified: the gateway withheld or redacted content.
    Unverifiable {
        /// Why, for the debug log.
        reason: &'static str,
    },
    /// The delivery is unsigned, its sender has no registered key, or its
    /// signature does not verify.
    Failed(SignatureError),
}

/// The registry's keys and what to do with a delivery that fails.
#[derive(Debug)]
pub struct Verifier {
    path: PathBuf,
    on_failure: OnFailure,
    /// The registry last loaded and the modification time it was read at.
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    registry: Arc<Registry>,
    modified: Option<SystemTime>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Verifier {
    /// Loads the registry `settings` names; an unusable file is an error
    /// (the adapter does not start).
    pub fn load(settings: &VerifySettings) -> Result<Self, RegistryError> {
        let modified = modified(&settings.registry);
        let registry = Registry::load(&settings.registry)?;
        Ok(Self {
            path: settings.registry.clone(),
            on_failure: settings.on_failure,
            loaded: Mutex::new(Loaded {
                registry: Arc::new(registry),
                modified,
            }),
        })
    }

    /// What to do with a delivery that fails verification.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// The registry in force now, read again first if its file changed.
    fn registry(&self) -> Arc<Registry> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let now = modified(&self.path);
        if now != loaded.modified {
            loaded.modified = now;
            match Registry::load(&self.path) {
                Ok(registry) => {
                    loaded.registry = Arc::new(registry);
                    tracing::info!(registry = %self.path.display(), "verification registry reloaded");
                }
                Err(error) => tracing::error!(
                    %error,
                    "verification registry unusable; the keys last loaded stay in force"
                ),
            }
        }
        loaded.registry.clone()
    }

    /// Verifies one delivery, exactly as received.
    pub fn check(&self, delivery: &pb::Delivery) -> Verdict {
        verdict(&self.registry(), delivery)
    }
}

/// The verdict on `delivery` under `registry`.
pub fn verdict(registry: &Registry, delivery: &pb::Delivery) -> Verdict {
    if delivery.withheld {
        return Verdict::Unverifiable {
            reason: "withheld by the gateway (a stub carries no signed content)",
        };
    }
    if !delivery.redacted_fields.is_empty() {
        return Verdict::Unverifiable {
            reason: "redacted by the gateway (the signature covers the unredacted form)",
        };
    }
    let Some(notification) = &delivery.notification else {
        return Verdict::Failed(SignatureError::Missing);
    };
    match registry.verify_signature(notification, &delivery.sender) {
        Ok(key_id) => Verdict::Verified { key_id },
        Err(error) => Verdict::Failed(error),
    }
}
