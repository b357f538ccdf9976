//! Reads the agency ids out of the agency registry (a TOML file owned by the
//! gateway's configuration).
//!
//! Only `[[agency]].id` is looked at; every other field and unknown key is
//! ignored. This module must never write to or reinterpret the registry; it
//! only rejects ids that are invalid or duplicated.

use std::collections::HashMap;
use std::path::Path;

use liandong_core::toml_file;
use serde::Deserialize;

use crate::CertError;
use crate::agency_id::agency_id_problem;

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
