//! The agency registry: which agencies exist, what they are, how their
//! certificates name them, and how far they are cleared to read.
//!
//! Loaded from a TOML file and validated whole before use. Every error names
//! the file, the entry and the field, so an operator can fix it without
//! reading code. A registry that fails validation is never partly used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{AgencyId, Confidentiality, FieldError, Region, Role};
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
    /// Its Ed25519 public key, when registered.
    pub signing_public_key: Option<[u8; 32]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    agency: Vec<AgencyEntry>,
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
}

/// The validated registry.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    agencies: BTreeMap<AgencyId, Agency>,
    by_identity: HashMap<String, AgencyId>,
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
        let signing_public_key = signing_public_key
            .map(|hex_key| parse_public_key(&hex_key))
            .transpose()?;
        Ok(Agency {
            id,
            name,
            role,
            region,
            parent,
            clearance,
            identity,
            contact,
            signing_public_key,
        })
    }
}

fn parse_public_key(text: &str) -> Result<[u8; 32], FieldError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        FieldError::new(
            "signing_public_key",
            "must be 64 hex digits (a raw Ed25519 public key)",
        )
    })?;
    Ok(key)
}
