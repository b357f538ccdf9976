//! The agency registry: which agencies exist, what they are, how their
//! certificates name them, and how far they are cleared to read.
//!
//! Loaded from a TOML file and validated whole before use. Every error names
//! the file, the entry and the field, so an operator can fix it without
//! reading code. A registry that fails validation is never partly used.
//!
//! It also publishes the Ed25519 public keys that signatures are checked
//! against: each agency's (`signing_public_keys`, one or two during a
//! rollover; the single `signing_public_key` of older files is the same as
//! a one-element list) and the gateway's own (`[gateway]
//! signing_public_key`), for the notifications sent as
//! [`GATEWAY_SENDER`]. The gateway and receiving adapters read the same
//! file format and decide with [`Registry::verify_signature`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{AgencyId, Confidentiality, FieldError, Region, Role};
use crate::pb;
use crate::signing::{self, PUBLIC_KEY_LEN, SignatureError};
use crate::toml_file::{self, FileError};

#[cfg(test)]
mod tests;

/// The sender id of the notifications the gateway emits itself
/// (`SUPERVISION_ALERT`, `STATISTICS_REPORT`, `ANNOUNCEMENT_RELEASED`),
/// signed with the gateway's own key. No agency may be registered under
/// it, so no certificate can ever publish as the gateway.
pub const GATEWAY_SENDER: &str = "liandong-gateway";

/// A registry file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read, or is not valid TOML, or has unknown or
    /// mistyped keys.
    #[error(transparent)]
    File(#[from] FileError),
    /// One entry is invalid.
    #[error("{path}: agency[{index}] ({id}): {error}")]
    Entry {
        /// The registry file.
        path: PathBuf,
        /// Position of the entry in the file, from 0.
        index: usize,
        /// The entry's id as written.
        id: String,
        /// The field and what is wrong with it.
        error: FieldError,
    },
    /// The `[gateway]` table is invalid.
    #[error("{path}: gateway: {error}")]
    Gateway {
        /// The registry file.
        path: PathBuf,
        /// The field and what is wrong with it.
        error: FieldError,
    },
    /// The file lists no agency.
    #[error("{path}: the registry lists no agency")]
    Empty {
        /// The registry file.
        path: PathBuf,
    },
}

/// One registered agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    /// Stable id, used in recipients, filters and logs.
    pub id: AgencyId,
    /// Display name, e.g. 长治市公安局.
    pub name: String,
    /// What the agency is in the mechanism; decides what it may publish.
    pub role: Role,
    /// The area it serves.
    pub region: Region,
    /// The municipal agency a county branch reports to.
    pub parent: Option<AgencyId>,
    /// The highest level it may read.
    pub clearance: Confidentiality,
    /// The SAN URI its client certificate must carry.
    pub identity: String,
    /// Who to ask there (office, phone), shown in withheld stubs.
    pub contact: String,
    /// Its registered Ed25519 public keys: none, one, or two during a
    /// rollover. A notification it sends is checked against the one its
    /// `signing_key_id` names.
    pub signing_keys: Vec<[u8; PUBLIC_KEY_LEN]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    gateway: Option<GatewayEntry>,
    #[serde(default)]
    agency: Vec<AgencyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayEntry {
    signing_public_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgencyEntry {
    id: String,
    name: String,
    role: Role,
    region: String,
    #[serde(default)]
    parent: Option<String>,
    clearance: String,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    contact: String,
    #[serde(default)]
    signing_public_key: Option<String>,
    #[serde(default)]
    signing_public_keys: Option<Vec<String>>,
}

/// The validated registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    agencies: BTreeMap<AgencyId, Agency>,
    by_identity: HashMap<String, AgencyId>,
    /// The gateway's own public key, when published.
    gateway_key: Option<[u8; PUBLIC_KEY_LEN]>,
    /// Every registered key, by its key id, with the agency (or
    /// [`GATEWAY_SENDER`]) it is registered for.
    key_owners: HashMap<String, String>,
    /// Every registered raw key, with the agency it is registered for.
    keys: HashMap<[u8; PUBLIC_KEY_LEN], String>,
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        Self::parse(&toml_file::read(path, "registry")?, path)
    }

    /// Validates registry text; `path` is only used to name errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml_file::parse(path, text)?;
        if file.agency.is_empty() {
            return Err(RegistryError::Empty {
                path: path.to_owned(),
            });
        }
        let mut registry = Registry::default();
        if let Some(gateway) = file.gateway {
            let key = parse_public_key("signing_public_key", &gateway.signing_public_key).map_err(
                |error| RegistryError::Gateway {
                    path: path.to_owned(),
                    error,
                },
            )?;
            registry.add_key(GATEWAY_SENDER, key);
            registry.gateway_key = Some(key);
        }
        let mut parents = Vec::new();
        for (index, entry) in file.agency.into_iter().enumerate() {
            let id_text = entry.id.clone();
            let entry_error = |error: FieldError| RegistryError::Entry {
                path: path.to_owned(),
                index,
                id: id_text.clone(),
                error,
            };
            let agency = entry.validate().map_err(entry_error)?;
            if registry.agencies.contains_key(&agency.id) {
                return Err(entry_error(FieldError::new("id", "is registered twice")));
            }
            if let Some(other) = registry.by_identity.get(&agency.identity) {
                return Err(entry_error(FieldError::new(
                    "identity",
                    format!("is already the identity of {other}"),
                )));
            }
            for key in &agency.signing_keys {
                if let Some(owner) = registry.keys.get(key) {
                    return Err(entry_error(FieldError::new(
                        "signing_public_keys",
                        format!("holds a key already registered for {owner}"),
                    )));
                }
            }
            for key in &agency.signing_keys {
                registry.add_key(agency.id.as_str(), *key);
            }
            parents.push((index, agency.id.clone(), agency.parent.clone()));
            registry
                .by_identity
                .insert(agency.identity.clone(), agency.id.clone());
            registry.agencies.insert(agency.id.clone(), agency);
        }
        for (index, id, parent) in parents {
            let Some(parent) = parent else { continue };
            let error = |reason: String| RegistryError::Entry {
                path: path.to_owned(),
                index,
                id: id.to_string(),
                error: FieldError::new("parent", reason),
            };
            if !registry.agencies.contains_key(&parent) {
                return Err(error(format!("names {parent}, which is not registered")));
            }
            let mut seen = vec![id.clone()];
            let mut cursor = Some(parent);
            while let Some(current) = cursor {
                if seen.contains(&current) {
                    return Err(error("forms a cycle".to_owned()));
                }
                seen.push(current.clone());
                cursor = registry.agencies[&current].parent.clone();
            }
        }
        Ok(registry)
    }

    fn add_key(&mut self, owner: &str, key: [u8; PUBLIC_KEY_LEN]) {
        self.key_owners
            .insert(signing::key_id(owner, &key), owner.to_owned());
        self.keys.insert(key, owner.to_owned());
    }

    /// The gateway's own public key (`[gateway] signing_public_key`), with
    /// which receivers verify the notifications sent as [`GATEWAY_SENDER`].
    pub fn gateway_key(&self) -> Option<[u8; PUBLIC_KEY_LEN]> {
        self.gateway_key
    }

    /// The keys a notification from `sender` may be signed with: the
    /// agency's registered keys, or the gateway's key for
    /// [`GATEWAY_SENDER`]; none for a sender not registered.
    pub fn signing_keys_of(&self, sender: &str) -> Vec<[u8; PUBLIC_KEY_LEN]> {
        if sender == GATEWAY_SENDER {
            return self.gateway_key.into_iter().collect();
        }
        AgencyId::parse("sender", sender)
            .ok()
            .and_then(|id| self.agencies.get(&id))
            .map(|agency| agency.signing_keys.clone())
            .unwrap_or_default()
    }

    /// Checks that `notification`, sent by `sender`, is signed by one of
    /// the keys registered for `sender` ([`Registry::signing_keys_of`]),
    /// the one its `signing_key_id` names; returns that key's id. A key id
    /// registered for someone else is [`SignatureError::OtherAgencysKey`]
    /// (naming the registered owner, never the id as sent).
    pub fn verify_signature(
        &self,
        notification: &pb::Notification,
        sender: &str,
    ) -> Result<String, SignatureError> {
        let keys = self.signing_keys_of(sender);
        signing::verify_with_any(notification, sender, &keys).map_err(|error| match error {
            SignatureError::UnknownKeyId { agency } => {
                match self.key_owners.get(&notification.signing_key_id) {
                    Some(owner) if *owner != agency => SignatureError::OtherAgencysKey {
                        agency,
                        owner: owner.clone(),
                    },
                    _ => SignatureError::UnknownKeyId { agency },
                }
            }
            other => other,
        })
    }

    /// The agency with this id.
    pub fn get(&self, id: &AgencyId) -> Option<&Agency> {
        self.agencies.get(id)
    }

    /// The agency whose certificate carries this SAN URI.
    pub fn by_identity(&self, uri: &str) -> Option<&Agency> {
        self.by_identity
            .get(uri)
            .and_then(|id| self.agencies.get(id))
    }

    /// Every agency, by id.
    pub fn agencies(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.values()
    }

    /// True when `ancestor` is `id`'s parent, or its parent's parent, ….
    pub fn is_ancestor(&self, ancestor: &AgencyId, id: &AgencyId) -> bool {
        let mut cursor = self.agencies.get(id).and_then(|a| a.parent.as_ref());
        while let Some(current) = cursor {
            if current == ancestor {
                return true;
            }
            cursor = self.agencies.get(current).and_then(|a| a.parent.as_ref());
        }
        false
    }
}

impl AgencyEntry {
    fn validate(self) -> Result<Agency, FieldError> {
        let AgencyEntry {
            id,
            name,
            role,
            region,
            parent,
            clearance,
            identity,
            contact,
            signing_public_key,
            signing_public_keys,
        } = self;
        let id = AgencyId::parse("id", &id)?;
        if id.as_str() == GATEWAY_SENDER {
            return Err(FieldError::new(
                "id",
                format!("{GATEWAY_SENDER} is reserved for the gateway's own notifications"),
            ));
        }
        if name.trim().is_empty() {
            return Err(FieldError::new("name", "is required"));
        }
        let region = Region::parse("region", &region)?;
        let parent = parent.map(|p| AgencyId::parse("parent", &p)).transpose()?;
        if parent.as_ref() == Some(&id) {
            return Err(FieldError::new("parent", "names the agency itself"));
        }
        let clearance: Confidentiality = clearance.parse().map_err(|_| {
            FieldError::new(
                "clearance",
                "must be one of PUBLIC, INTERNAL, RESTRICTED, CONFIDENTIAL",
            )
        })?;
        let identity = identity.unwrap_or_else(|| id.uri());
        if !identity.starts_with("urn:") && !identity.starts_with("spiffe://") {
            return Err(FieldError::new(
                "identity",
                "must be a URI such as urn:liandong:agency:<id>",
            ));
        }
        let signing_keys = signing_keys(signing_public_key, signing_public_keys)?;
        Ok(Agency {
            id,
            name,
            role,
            region,
            parent,
            clearance,
            identity,
            contact,
            signing_keys,
        })
    }
}

/// An agency's keys from `signing_public_keys` (one or two, distinct) or
/// the legacy `signing_public_key`; both at once is an error.
fn signing_keys(
    single: Option<String>,
    list: Option<Vec<String>>,
) -> Result<Vec<[u8; PUBLIC_KEY_LEN]>, FieldError> {
    match (single, list) {
        (None, None) => Ok(Vec::new()),
        (Some(_), Some(_)) => Err(FieldError::new(
            "signing_public_key",
            "and signing_public_keys are both set; keep signing_public_keys only",
        )),
        (Some(text), None) => Ok(vec![parse_public_key("signing_public_key", &text)?]),
        (None, Some(texts)) => {
            if !(1..=2).contains(&texts.len()) {
                return Err(FieldError::new(
                    "signing_public_keys",
                    format!(
                        "lists {} keys; list one, or two during a rollover",
                        texts.len()
                    ),
                ));
            }
            let mut keys = Vec::with_capacity(texts.len());
            for (i, text) in texts.iter().enumerate() {
                let key = parse_public_key(&format!("signing_public_keys[{i}]"), text)?;
                if keys.contains(&key) {
                    return Err(FieldError::new(
                        format!("signing_public_keys[{i}]"),
                        "is listed twice",
                    ));
                }
                keys.push(key);
            }
            Ok(keys)
        }
    }
}

fn parse_public_key(field: &str, text: &str) -> Result<[u8; PUBLIC_KEY_LEN], FieldError> {
    let mut key = [0u8; PUBLIC_KEY_LEN];
    hex::decode_to_slice(text.trim(), &mut key)
        .map_err(|_| FieldError::new(field, "must be 64 hex digits (a raw Ed25519 public key)"))?;
    Ok(key)
}
