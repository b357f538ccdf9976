//! The policy file: publishing rights by role, jurisdiction, delivery
//! options, oversight rules and copy rules (抄送). Parsed and validated whole; an error names the file,
//! the entry and the field. A policy that fails validation is never used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use liandong_core::domain::{Event, Role, RuleName};
use liandong_core::pb;
use liandong_core::toml_file::{self, FileError};

/// The policy that applies when the configuration names no policy file:
/// the mechanism's defaults, documented in docs/POLICY.md.
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// Events only the gateway itself may emit.
pub const GATEWAY_ONLY_EVENTS: [pb::EventType; 3] = [
    pb::EventType::SupervisionAlert,
    pb::EventType::StatisticsReport,
    pb::EventType::AnnouncementReleased,
];

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read, or is not valid TOML, or has unknown or
    /// mistyped keys.
    #[error(transparent)]
    File(#[from] FileError),
    /// One entry is invalid.
    #[error("{path}: {entry}: {reason}")]
    Entry {
        /// The policy file.
        path: PathBuf,
        /// The entry and field, e.g. `publish.POLICE[3]`.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    publish: PublishSection,
    #[serde(default)]
    jurisdiction: JurisdictionSection,
    delivery: DeliverySection,
    #[serde(default)]
    oversight: Vec<OversightEntry>,
    #[serde(default)]
    copy: Vec<CopyEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JurisdictionSection {
    #[serde(default)]
    allow_parent_region: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyEntry {
    name: String,
    events: Vec<String>,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
struct PublishSection {
    #[serde(default)]
    ENVIRONMENT: Vec<String>,
    #[serde(default)]
    POLICE: Vec<String>,
    #[serde(default)]
    PROCURATORATE: Vec<String>,
    #[serde(default)]
    OBSERVER: Vec<String>,
    #[serde(default)]
    OPERATOR: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverySection {
    parent_sees_branch_restricted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OversightEntry {
    name: String,
    role: Role,
    events: Vec<String>,
}

/// One oversight rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversight {
    /// Its name, quoted in withheld reasons.
    pub name: String,
    /// The role that oversees.
    pub role: Role,
    /// The events it oversees.
    pub events: BTreeSet<Event>,
}

/// Whom a copy rule adds as a recipient, resolved against the registry in
/// force when the notification is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CopyTarget {
    /// `same_level_procuratorate`: the registered procuratorate whose
    /// registered region equals the sender's registered region.
    SameLevelProcuratorate,
    /// `case_transferor`: the agency that published the case's first
    /// `CASE_TRANSFERRED`.
    CaseTransferor,
}

impl CopyTarget {
    /// Every target, in the order of [`CopyTarget::name`].
    pub const ALL: [Self; 2] = [Self::SameLevelProcuratorate, Self::CaseTransferor];

    /// The name written in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Self::SameLevelProcuratorate => "same_level_procuratorate",
            Self::CaseTransferor => "case_transferor",
        }
    }
}

/// One copy rule: the events it applies to and whom it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRule {
    /// Its name, recorded with every copy it adds.
    pub name: RuleName,
    /// The events it applies to.
    pub events: BTreeSet<Event>,
    /// Whom it adds, in the order written.
    pub to: Vec<CopyTarget>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    publish: BTreeMap<RoleKey, BTreeSet<Event>>,
    /// Whether a notification's region may lie within the sender's parent
    /// agency's region (instead of only the sender's own).
    pub allow_parent_region: bool,
    /// Whether parents see their branches' RESTRICTED traffic in full.
    pub parent_sees_branch_restricted: bool,
    /// Oversight rules.
    pub oversight: Vec<Oversight>,
    /// Copy rules, in the order written.
    pub copy: Vec<CopyRule>,
}

/// `Role` is not `Ord`; this orders it for the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RoleKey(u8);

fn key(role: Role) -> RoleKey {
    RoleKey(match role {
        Role::Environment => 0,
        Role::Police => 1,
        Role::Procuratorate => 2,
        Role::Observer => 3,
        Role::Operator => 4,
    })
}

/// The name of a role as written in files: `ENVIRONMENT`, ….
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Environment => "ENVIRONMENT",
        Role::Police => "POLICE",
        Role::Procuratorate => "PROCURATORATE",
        Role::Observer => "OBSERVER",
        Role::Operator => "OPERATOR",
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Self::parse(&toml_file::read(path, "policy")?, path)
    }

    /// The built-in default policy.
    pub fn default_policy() -> Self {
        Self::parse(DEFAULT_POLICY, Path::new("<built-in policy>"))
            .expect("the built-in policy is valid")
    }

    /// Validates policy text; `path` only names errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml_file::parse(path, text)?;
        let entry_error = |entry: String, reason: String| PolicyError::Entry {
            path: path.to_owned(),
            entry,
            reason,
        };
        let events = |entry: &str, names: &[String]| -> Result<BTreeSet<Event>, PolicyError> {
            let mut set = BTreeSet::new();
            for (i, name) in names.iter().enumerate() {
                let event: Event = name.parse().map_err(|_| {
                    entry_error(
                        format!("{entry}[{i}]"),
                        format!("unknown event type {name:?}"),
                    )
                })?;
                if !set.insert(event) {
                    return Err(entry_error(
                        format!("{entry}[{i}]"),
                        format!("{name} is listed twice"),
                    ));
                }
                if GATEWAY_ONLY_EVENTS.contains(&event.to_wire()) && entry.starts_with("publish.") {
                    return Err(entry_error(
                        format!("{entry}[{i}]"),
                        format!("{name} is emitted by the gateway only and cannot be granted"),
                    ));
                }
            }
            Ok(set)
        };
        let PublishSection {
            ENVIRONMENT,
            POLICE,
            PROCURATORATE,
            OBSERVER,
            OPERATOR,
        } = file.publish;
        let mut publish = BTreeMap::new();
        for (role, names) in [
            (Role::Environment, ENVIRONMENT),
            (Role::Police, POLICE),
            (Role::Procuratorate, PROCURATORATE),
            (Role::Observer, OBSERVER),
            (Role::Operator, OPERATOR),
        ] {
            publish.insert(
                key(role),
                events(&format!("publish.{}", role_name(role)), &names)?,
            );
        }
        let mut oversight = Vec::new();
        for (i, entry) in file.oversight.into_iter().enumerate() {
            let OversightEntry {
                name,
                role,
                events: names,
            } = entry;
            if name.trim().is_empty() {
                return Err(entry_error(
                    format!("oversight[{i}].name"),
                    "is required".into(),
                ));
            }
            if oversight.iter().any(|o: &Oversight| o.name == name) {
                return Err(entry_error(
                    format!("oversight[{i}].name"),
                    format!("{name:?} is used twice"),
                ));
            }
            if !role.is_member() {
                return Err(entry_error(
                    format!("oversight[{i}].role"),
                    format!(
                        "{} is not a member role; only members may oversee",
                        role_name(role)
                    ),
                ));
            }
            if names.is_empty() {
                return Err(entry_error(
                    format!("oversight[{i}].events"),
                    "lists no event".into(),
                ));
            }
            let events = events(&format!("oversight[{i}].events"), &names)?;
            oversight.push(Oversight { name, role, events });
        }
        let mut copy: Vec<CopyRule> = Vec::new();
        for (i, entry) in file.copy.into_iter().enumerate() {
            let CopyEntry {
                name,
                events: names,
                to,
            } = entry;
            let name = RuleName::parse("name", &name)
                .map_err(|error| entry_error(format!("copy[{i}].name"), error.reason))?;
            if copy.iter().any(|rule| rule.name == name) {
                return Err(entry_error(
                    format!("copy[{i}].name"),
                    format!("{:?} is used twice", name.as_str()),
                ));
            }
            if names.is_empty() {
                return Err(entry_error(
                    format!("copy[{i}].events"),
                    "lists no event".into(),
                ));
            }
            let events = events(&format!("copy[{i}].events"), &names)?;
            if to.is_empty() {
                return Err(entry_error(
                    format!("copy[{i}].to"),
                    "lists no target".into(),
                ));
            }
            let mut targets = Vec::with_capacity(to.len());
            for (j, target) in to.iter().enumerate() {
                let Some(parsed) = CopyTarget::ALL.into_iter().find(|t| t.name() == target) else {
                    return Err(entry_error(
                        format!("copy[{i}].to[{j}]"),
                        format!(
                            "unknown target {target:?} (expected {})",
                            CopyTarget::ALL.map(CopyTarget::name).join(" or ")
                        ),
                    ));
                };
                if targets.contains(&parsed) {
                    return Err(entry_error(
                        format!("copy[{i}].to[{j}]"),
                        format!("{target} is listed twice"),
                    ));
                }
                targets.push(parsed);
            }
            copy.push(CopyRule {
                name,
                events,
                to: targets,
            });
        }
        Ok(Self {
            publish,
            allow_parent_region: file.jurisdiction.allow_parent_region,
            parent_sees_branch_restricted: file.delivery.parent_sees_branch_restricted,
            oversight,
            copy,
        })
    }

    /// The copy rules that apply to `event`, in the order written.
    pub fn copy_rules_for(&self, event: Event) -> impl Iterator<Item = &CopyRule> {
        self.copy
            .iter()
            .filter(move |rule| rule.events.contains(&event))
    }

    /// True when a copy rule for `event` needs the case's transferor.
    pub fn needs_transferor(&self, event: Event) -> bool {
        self.copy_rules_for(event)
            .any(|rule| rule.to.contains(&CopyTarget::CaseTransferor))
    }

    /// True when agencies of `role` may publish `event`.
    pub fn may_publish(&self, role: Role, event: Event) -> bool {
        self.publish
            .get(&key(role))
            .is_some_and(|events| events.contains(&event))
    }

    /// The oversight rule giving `role` a stub of `event`, if any.
    pub fn oversight_for(&self, role: Role, event: Event) -> Option<&Oversight> {
        self.oversight
            .iter()
            .find(|rule| rule.role == role && rule.events.contains(&event))
    }
}
