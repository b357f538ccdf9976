//! Reads the agency ids out of the agency registry (a TOML file owned by the
//! gateway's configuration), and writes signing public keys into it.
//!
//! Only `[[agency]].id` is read; every other field and unknown key is
//! ignored, and invalid or duplicated ids are rejected. The only edit this
//! module makes is to the signing keys (`[[agency]] signing_public_keys`,
//! `[gateway] signing_public_key`), with `toml_edit` so that comments and
//! layout stay as they were, replacing the file atomically.

use std::collections::HashMap;
use std::path::Path;

use liandong_core::toml_file;
use serde::Deserialize;

use toml_edit::{Array, DocumentMut, Item, Table, value};

use crate::CertError;
use crate::agency_id::agency_id_problem;
use crate::init::write_atomic;
use crate::signing::ED25519_PUBLIC_KEY_LEN;

#[derive(Deserialize)]
struct RegistryFile {
    #[serde(default)]
    agency: Vec<AgencyEntry>,
}

#[derive(Deserialize)]
struct AgencyEntry {
    id: String,
}

/// Reads the agency ids, in file order, from a registry file.
///
/// Fails if the file cannot be read or parsed, lists no agency, or contains
/// an invalid or duplicate id (the error names the file, the 1-based entry
/// number and the id).
pub fn read_agency_ids(registry: &Path) -> Result<Vec<String>, CertError> {
    let text = toml_file::read(registry, "agency registry")?;
    parse_agency_ids(registry, &text)
}

/// Parses registry text; `path` is only used in error messages.
pub(crate) fn parse_agency_ids(path: &Path, text: &str) -> Result<Vec<String>, CertError> {
    let file: RegistryFile = toml_file::parse(path, text)?;
    if file.agency.is_empty() {
        return Err(CertError::RegistryEmpty {
            path: path.to_owned(),
        });
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, entry) in file.agency.iter().enumerate() {
        let number = i + 1;
        let reason = agency_id_problem(&entry.id).or_else(|| {
            seen.insert(&entry.id, number)
                .map(|first| format!("duplicate of entry {first}"))
        });
        if let Some(reason) = reason {
            return Err(CertError::RegistryEntry {
                path: path.to_owned(),
                entry: number,
                id: entry.id.clone(),
                reason,
            });
        }
    }
    Ok(file.agency.into_iter().map(|a| a.id).collect())
}

/// Where [`write_signing_keys`] puts the keys of one agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyKeys {
    /// The agency's id, as in its `[[agency]]` entry.
    pub id: String,
    /// Its raw Ed25519 public keys, the one in use first (two during a
    /// rollover).
    pub keys: Vec<[u8; ED25519_PUBLIC_KEY_LEN]>,
}

/// Writes signing public keys into the registry file, keeping its comments,
/// order and layout (`toml_edit`): each listed agency's entry gets
/// `signing_public_keys = ["<hex>", …]` (a legacy `signing_public_key` line
/// is removed), and `gateway`, when given, becomes the top-level
/// `[gateway] signing_public_key = "<hex>"`. Nothing else changes.
///
/// The file is replaced atomically; on any error it is left as it was.
pub fn write_signing_keys(
    registry: &Path,
    agencies: &[AgencyKeys],
    gateway: Option<[u8; ED25519_PUBLIC_KEY_LEN]>,
) -> Result<(), CertError> {
    let text = toml_file::read(registry, "agency registry")?;
    // Validates ids the same way `init` does before anything is edited.
    parse_agency_ids(registry, &text)?;
    let edited = edit_signing_keys(registry, &text, agencies, gateway)?;
    write_atomic(registry, edited.as_bytes(), false)
}

/// The signing public keys the registry text lists for `id`, in file
/// order: `signing_public_keys`, or the legacy single `signing_public_key`.
pub fn registered_signing_keys(registry: &Path, id: &str) -> Result<Vec<String>, CertError> {
    let text = toml_file::read(registry, "agency registry")?;
    parse_agency_ids(registry, &text)?;
    let document = parse_document(registry, &text)?;
    let entry = agency_entry(registry, &document, id)?;
    let edit_error = |reason: String| CertError::RegistryEdit {
        path: registry.to_owned(),
        reason,
    };
    let mut keys = Vec::new();
    if let Some(list) = entry.get("signing_public_keys") {
        let array = list
            .as_array()
            .ok_or_else(|| edit_error(format!("agency {id}: signing_public_keys is not a list")))?;
        for key in array {
            let key = key.as_str().ok_or_else(|| {
                edit_error(format!(
                    "agency {id}: signing_public_keys holds a non-string"
                ))
            })?;
            keys.push(key.to_owned());
        }
    }
    if let Some(key) = entry.get("signing_public_key") {
        let key = key.as_str().ok_or_else(|| {
            edit_error(format!("agency {id}: signing_public_key is not a string"))
        })?;
        keys.push(key.to_owned());
    }
    Ok(keys)
}

/// Applies [`write_signing_keys`]'s edit to registry text; `path` only
/// names errors.
pub(crate) fn edit_signing_keys(
    path: &Path,
    text: &str,
    agencies: &[AgencyKeys],
    gateway: Option<[u8; ED25519_PUBLIC_KEY_LEN]>,
) -> Result<String, CertError> {
    let mut document = parse_document(path, text)?;
    for agency in agencies {
        let entry = agency_entry_mut(path, &mut document, &agency.id)?;
        let mut list = Array::new();
        for key in &agency.keys {
            list.push(hex::encode(key));
        }
        entry.remove("signing_public_key");
        entry.insert("signing_public_keys", value(list));
    }
    if let Some(key) = gateway {
        let table = document
            .entry("gateway")
            .or_insert_with(|| {
                let mut table = Table::new();
                table.decor_mut().set_prefix(
                    "\n# The gateway's own Ed25519 public key (gateway.signing.pub): receivers\n\
                     # verify the notifications it emits (sender liandong-gateway) with it.\n",
                );
                Item::Table(table)
            })
            .as_table_mut()
            .ok_or_else(|| CertError::RegistryEdit {
                path: path.to_owned(),
                reason: "`gateway` is not a table".to_owned(),
            })?;
        table.insert("signing_public_key", value(hex::encode(key)));
    }
    Ok(document.to_string())
}

fn parse_document(path: &Path, text: &str) -> Result<DocumentMut, CertError> {
    text.parse::<DocumentMut>()
        .map_err(|e| CertError::RegistryEdit {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn agency_entry<'d>(
    path: &Path,
    document: &'d DocumentMut,
    id: &str,
) -> Result<&'d Table, CertError> {
    document
        .get("agency")
        .and_then(Item::as_array_of_tables)
        .and_then(|entries| {
            entries
                .iter()
                .find(|entry| entry.get("id").and_then(Item::as_str) == Some(id))
        })
        .ok_or_else(|| CertError::AgencyNotInRegistry {
            path: path.to_owned(),
            id: id.to_owned(),
        })
}

fn agency_entry_mut<'d>(
    path: &Path,
    document: &'d mut DocumentMut,
    id: &str,
) -> Result<&'d mut Table, CertError> {
    document
        .get_mut("agency")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|entries| {
            entries
                .iter_mut()
                .find(|entry| entry.get("id").and_then(Item::as_str) == Some(id))
        })
        .ok_or_else(|| CertError::AgencyNotInRegistry {
            path: path.to_owned(),
            id: id.to_owned(),
        })
}
