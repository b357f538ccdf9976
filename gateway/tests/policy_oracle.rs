//! Property tests of the delivery and publishing rules.
//!
//! An oracle written from the rules as stated (not from the gateway's code)
//! decides, for random registries, policies, notifications and readers, what
//! each reader must receive. The gateway's `disclosure::render` — the function
//! both subscriptions and `GetCase` deliver through — and its publish checks
//! (`policy::check_publish`, `api::publish_one`) must agree with it.
//!
//! Redeliveries are checked the same way across a reload: real sessions
//! over a real store send first frames under one registry and policy, the
//! rules change, and every frame sent again must be what the oracle allows
//! under the rules in force when it is sent (and audited once per frame).
//! A failing case is written to `policy_oracle.proptest-regressions` and
//! replayed first by later runs.
//!
//! A canary planted in every content field must never reach a frame the
//! reader is not entitled to read in full, a withheld reason, a refusal, the
//! audit log or the logs; a field stripped for clearance must not reach the
//! reader either.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use prost::Message;

use liandong_core::domain::{self, AgencyId, Envelope, Instant};
use liandong_core::pb;
use liandong_core::registry::{Agency, Registry};
use liandong_gateway::Gateway;
use liandong_gateway::cases::machine::{self, Stage, Step};
use liandong_gateway::disclosure::{self, Channel};
use liandong_gateway::identity::Principal;
use liandong_gateway::policy::rules::DEFAULT_POLICY;
use liandong_gateway::policy::{self, Decision, Policy, Rules};
use liandong_gateway::routing::{self, DeliverySettings};
use liandong_gateway::store::{NewNotification, PublishOutcome, Store, StoredNotification};
use liandong_gateway::{api, store::AuditEntry};

// ---------------------------------------------------------------------------
// The world: agencies, policy, notifications.

/// Planted in every content field; must never appear where content must not.
const CANARY: &str = "CANARY-7Q9Z";
/// Per-field canaries of the fields marked with a sensitivity.
const PARTY_NAME_TAG: &str = "CANARY-7Q9Z-party-name";
const PARTY_ID_TAG: &str = "CANARY-7Q9Z-party-identifier";
const PARTY_CONTACT_TAG: &str = "CANARY-7Q9Z-party-contact";
const INFORMANT_TAG: &str = "CANARY-7Q9Z-informant";

const REGIONS: [&str; 5] = ["140000", "140400", "140423", "140403", "140500"];
const ROLES: [&str; 5] = [
    "ENVIRONMENT",
    "POLICE",
    "PROCURATORATE",
    "OBSERVER",
    "OPERATOR",
];
const MEMBER_ROLES: [&str; 3] = ["ENVIRONMENT", "POLICE", "PROCURATORATE"];
// JOINT_ANNOUNCEMENT is left out: a draft reaches its co-signers only and
// is checked against the announcement rules, which
// `gateway/src/announcements` and `tests/tests/announcements.rs` prove.
const EVENTS: [&str; 24] = [
    "CLUE_SHARED",
    "JOINT_INVESTIGATION_REQUESTED",
    "CASE_TRANSFERRED",
    "DETENTION_REFERRED",
    "TRANSFER_RECEIVED",
    "CASE_FILED",
    "FILING_DECLINED",
    "RECONSIDERATION_REQUESTED",
    "EARLY_INTERVENTION",
    "TECHNICAL_ASSISTANCE_REQUESTED",
    "TECHNICAL_ASSISTANCE_PROVIDED",
    "ARREST_REQUESTED",
    "ARREST_APPROVED",
    "ARREST_DENIED",
    "PROSECUTION_FILED",
    "NON_PROSECUTION_DECIDED",
    "JUDGMENT_RECORDED",
    "TRANSFER_RECOMMENDED",
    "FILING_SUPERVISION",
    "PENALTY_DECIDED",
    "MEETING_NOTICE",
    "TRAINING_NOTICE",
    "SUPERVISION_ALERT",
    "STATISTICS_REPORT",
];
/// Events an agency may ever be granted (the last two are the gateway's).
const PUBLISHABLE: &[&str] = EVENTS.split_at(22).0;
/// A valid agency id that is not registered.
const GHOST: &str = "ghost-agency";

/// A confidentiality level, most open first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Public,
    Internal,
    Restricted,
    Confidential,
}

impl Level {
    const ALL: [Level; 4] = [
        Level::Public,
        Level::Internal,
        Level::Restricted,
        Level::Confidential,
    ];

    fn name(self) -> &'static str {
        match self {
            Level::Public => "PUBLIC",
            Level::Internal => "INTERNAL",
            Level::Restricted => "RESTRICTED",
            Level::Confidential => "CONFIDENTIAL",
        }
    }

    fn wire(self) -> i32 {
        pb::Confidentiality::from_str_name(&format!("CONFIDENTIALITY_{}", self.name()))
            .expect("a contract level") as i32
    }
}

fn event_wire(event: &str) -> i32 {
    pb::EventType::from_str_name(&format!("EVENT_TYPE_{event}")).expect("a contract event") as i32
}

#[derive(Debug, Clone)]
struct AgencySpec {
    role: &'static str,
    clearance: Level,
    region: &'static str,
    /// Index of the parent; always a lower index, so the links form a forest.
    parent: Option<usize>,
}

#[derive(Debug, Clone)]
enum PolicyBase {
    /// `DEFAULT_POLICY`, with the delivery flag set as below.
    Default,
    /// A policy written from scratch: the publish list of each role of
    /// `ROLES`, in that order.
    Generated([Vec<&'static str>; 5]),
}

#[derive(Debug, Clone)]
struct PolicySpec {
    base: PolicyBase,
    parent_sees_branch_restricted: bool,
    /// Oversight rules added to the base's: role and events.
    extra_oversight: Vec<(&'static str, Vec<&'static str>)>,
}

#[derive(Debug, Clone)]
struct WorldSpec {
    agencies: Vec<AgencySpec>,
    /// The order the agencies are written in the registry file.
    file_order: Vec<usize>,
    policy: PolicySpec,
}

#[derive(Debug, Clone)]
struct PartySpec {
    name: bool,
    identifier: bool,
    contact: bool,
}

#[derive(Debug, Clone)]
struct NoteSpec {
    sender: usize,
    event: &'static str,
    level: Level,
    recipients: Vec<String>,
    region: &'static str,
    parties: Vec<PartySpec>,
    informant: bool,
    /// Whether the message names its sender (publish only).
    names_sender: bool,
    /// Agencies the gateway added as statutory copies (delivery only):
    /// those that are neither the sender nor listed count.
    copies: Vec<usize>,
}

impl NoteSpec {
    /// The statutory copies as the gateway stores them: agencies the
    /// sender left out, each once.
    fn copy_agencies(&self) -> Vec<usize> {
        let mut copies = Vec::new();
        for &i in &self.copies {
            if i != self.sender && !self.recipients.contains(&agency_id(i)) && !copies.contains(&i)
            {
                copies.push(i);
            }
        }
        copies
    }
}

// ---------------------------------------------------------------------------
// Case lifecycle: the gateway refuses case events that do not fit their
// case's state, which these tests are not about. Notes published into one
// case are made to follow the lifecycle; a note published alone gets the
// events it needs stored before it.

/// The state `event` leaves a case at `stage` in, when it accepts it.
fn after(stage: Stage, event: &str) -> Option<Stage> {
    let event = event.parse::<domain::Event>().expect("a contract event");
    match machine::step(stage, event) {
        Step::Moves { to, .. } => Some(Some(to)),
        Step::NotCaseEvent => Some(stage),
        Step::Refused => None,
    }
}

/// Walks `notes` through one case in order; a note whose event the case
/// would refuse gets, instead, one of the events it accepts (picked by the
/// generated event, so the choice varies with the input).
fn fit_to_case<'a>(notes: impl IntoIterator<Item = &'a mut NoteSpec>) {
    let mut stage: Stage = None;
    for note in notes {
        if after(stage, note.event).is_none() {
            let accepted: Vec<&'static str> = PUBLISHABLE
                .iter()
                .copied()
                .filter(|e| after(stage, e).is_some())
                .collect();
            let index = EVENTS.iter().position(|e| *e == note.event).unwrap_or(0);
            note.event = accepted[index % accepted.len()];
        }
        stage = after(stage, note.event).expect("an accepted event");
    }
}

/// The shortest run of events that brings a new case to a state that
/// accepts `event` (empty when `event` opens a case or is no case event).
fn prelude(event: &str) -> Vec<&'static str> {
    let mut paths: Vec<(Stage, Vec<&'static str>)> = vec![(None, Vec::new())];
    let mut seen = vec![None];
    while !paths.is_empty() {
        let mut next = Vec::new();
        for (stage, path) in paths {
            if after(stage, event).is_some() {
                return path;
            }
            for step in PUBLISHABLE {
                if let Some(to) = after(stage, step).filter(|to| !seen.contains(to)) {
                    seen.push(to);
                    let mut longer = path.clone();
                    longer.push(step);
                    next.push((to, longer));
                }
            }
        }
        paths = next;
    }
    panic!("no case state accepts {event}");
}

fn agency_id(i: usize) -> String {
    format!("ag-{i:02}")
}

fn registered_contact(i: usize) -> String {
    format!("{} duty office, tel 0355-20{i:02}", agency_id(i))
}

fn level_strategy() -> impl Strategy<Value = Level> {
    select(Level::ALL.to_vec())
}

fn oversight_strategy() -> impl Strategy<Value = (&'static str, Vec<&'static str>)> {
    (
        select(MEMBER_ROLES.to_vec()),
        subsequence(EVENTS.to_vec(), 1..=5),
    )
}

fn policy_strategy() -> impl Strategy<Value = PolicySpec> {
    let generated = proptest::array::uniform5(subsequence(PUBLISHABLE.to_vec(), 0..=15))
        .prop_map(PolicyBase::Generated);
    let base = prop_oneof![3 => Just(PolicyBase::Default), 1 => generated];
    let extra = prop_oneof![
        2 => Just(Vec::new()),
        1 => proptest::collection::vec(oversight_strategy(), 1..=2),
    ];
    (base, any::<bool>(), extra).prop_map(
        |(base, parent_sees_branch_restricted, extra_oversight)| PolicySpec {
            base,
            parent_sees_branch_restricted,
            extra_oversight,
        },
    )
}

fn world_strategy() -> impl Strategy<Value = WorldSpec> {
    (5usize..=12)
        .prop_flat_map(|n| {
            let agencies: Vec<_> = (0..n)
                .map(|i| {
                    let parent = if i == 0 {
                        Just(None).boxed()
                    } else {
                        proptest::option::weighted(0.6, 0..i).boxed()
                    };
                    (
                        select(ROLES.to_vec()),
                        level_strategy(),
                        select(REGIONS.to_vec()),
                        parent,
                    )
                        .prop_map(|(role, clearance, region, parent)| {
                            AgencySpec {
                                role,
                                clearance,
                                region,
                                parent,
                            }
                        })
                })
                .collect();
            (
                agencies,
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                policy_strategy(),
            )
        })
        .prop_map(|(agencies, file_order, policy)| WorldSpec {
            agencies,
            file_order,
            policy,
        })
}

fn note_strategy(n: usize) -> impl Strategy<Value = NoteSpec> {
    let pool: Vec<String> = (0..n).map(agency_id).chain([GHOST.to_owned()]).collect();
    let party =
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(name, identifier, contact)| {
            PartySpec {
                name,
                identifier,
                contact,
            }
        });
    (
        0..n,
        select(EVENTS.to_vec()),
        level_strategy(),
        subsequence(pool, 0..=4).prop_shuffle(),
        select(REGIONS.to_vec()),
        proptest::collection::vec(party, 0..=3),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => subsequence((0..n).collect::<Vec<_>>(), 1..=2),
        ],
    )
        .prop_map(
            |(
                sender,
                event,
                level,
                recipients,
                region,
                parties,
                informant,
                names_sender,
                copies,
            )| {
                NoteSpec {
                    sender,
                    event,
                    level,
                    recipients,
                    region,
                    parties,
                    informant,
                    names_sender,
                    copies,
                }
            },
        )
}

fn registry_text(world: &WorldSpec) -> String {
    let mut text = String::new();
    for &i in &world.file_order {
        let a = &world.agencies[i];
        writeln!(text, "[[agency]]").unwrap();
        writeln!(text, "id = \"{}\"", agency_id(i)).unwrap();
        writeln!(text, "name = \"测试机构 {i}\"").unwrap();
        writeln!(text, "role = \"{}\"", a.role).unwrap();
        writeln!(text, "region = \"{}\"", a.region).unwrap();
        writeln!(text, "clearance = \"{}\"", a.clearance.name()).unwrap();
        writeln!(text, "contact = \"{}\"", registered_contact(i)).unwrap();
        if let Some(parent) = a.parent {
            writeln!(text, "parent = \"{}\"", agency_id(parent)).unwrap();
        }
        text.push('\n');
    }
    text
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn policy_text(spec: &PolicySpec) -> String {
    let flag = format!(
        "parent_sees_branch_restricted = {}",
        spec.parent_sees_branch_restricted
    );
    let mut text = match &spec.base {
        PolicyBase::Default => {
            assert!(DEFAULT_POLICY.contains("parent_sees_branch_restricted = true"));
            DEFAULT_POLICY.replace("parent_sees_branch_restricted = true", &flag)
        }
        PolicyBase::Generated(publish) => {
            let mut text = String::from("[publish]\n");
            for (role, events) in ROLES.iter().zip(publish) {
                writeln!(text, "{role} = [{}]", quoted_list(events)).unwrap();
            }
            writeln!(text, "\n[delivery]\n{flag}").unwrap();
            text
        }
    };
    for (i, (role, events)) in spec.extra_oversight.iter().enumerate() {
        write!(
            text,
            "\n[[oversight]]\nname = \"extra-{i}\"\nrole = \"{role}\"\nevents = [{}]\n",
            quoted_list(events)
        )
        .unwrap();
    }
    text
}

// ---------------------------------------------------------------------------
// The oracle, from the rules as stated.

/// The policy as the oracle reads it from the policy text.
#[derive(Debug)]
struct OraclePolicy {
    publish: BTreeMap<String, BTreeSet<String>>,
    parent_sees_branch_restricted: bool,
    /// Whether a notification may name a region within the sender's
    /// parent's region.
    allow_parent_region: bool,
    /// Role and events of each oversight rule.
    oversight: Vec<(String, BTreeSet<String>)>,
}

fn strings(value: &toml::Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn oracle_policy(text: &str) -> OraclePolicy {
    let table: toml::Table = toml::from_str(text).expect("policy text is TOML");
    let publish = table["publish"]
        .as_table()
        .expect("[publish]")
        .iter()
        .map(|(role, events)| (role.clone(), strings(events)))
        .collect();
    let parent_sees_branch_restricted = table["delivery"]["parent_sees_branch_restricted"]
        .as_bool()
        .expect("a bool");
    let oversight = table
        .get("oversight")
        .and_then(toml::Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .map(|rule| {
                    (
                        rule["role"].as_str().expect("a role").to_owned(),
                        strings(&rule["events"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let allow_parent_region = table
        .get("jurisdiction")
        .and_then(|j| j.get("allow_parent_region"))
        .map(|flag| flag.as_bool().expect("a bool"))
        .unwrap_or(false);
    OraclePolicy {
        publish,
        parent_sees_branch_restricted,
        allow_parent_region,
        oversight,
    }
}

/// GB/T 2260: a province code contains its province, a city code its city.
fn region_contains(outer: &str, inner: &str) -> bool {
    if outer.ends_with("0000") {
        outer[..2] == inner[..2]
    } else if outer.ends_with("00") {
        outer[..4] == inner[..4]
    } else {
        outer == inner
    }
}

/// What the rules say a reader gets, and by which rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Full(&'static str),
    Withheld(&'static str),
    Nothing(&'static str),
}

impl Expect {
    fn class(self) -> &'static str {
        match self {
            Expect::Full(_) => "FULL",
            Expect::Withheld(_) => "WITHHELD",
            Expect::Nothing(_) => "NONE",
        }
    }
}

/// One generated world, built into the gateway's rules and the oracle's.
struct Case {
    world: WorldSpec,
    oracle: OraclePolicy,
    rules: Rules,
    /// The registered agency of each index.
    agencies: Vec<Agency>,
}

impl Case {
    fn new(world: &WorldSpec) -> Self {
        let registry = Registry::parse(&registry_text(world), Path::new("<generated registry>"))
            .expect("the generated registry is valid");
        let text = policy_text(&world.policy);
        let is_default = matches!(world.policy.base, PolicyBase::Default)
            && world.policy.parent_sees_branch_restricted
            && world.policy.extra_oversight.is_empty();
        let policy = if is_default {
            Policy::default_policy()
        } else {
            Policy::parse(&text, Path::new("<generated policy>"))
                .expect("the generated policy is valid")
        };
        let agencies: Vec<Agency> = (0..world.agencies.len())
            .map(|i| {
                let id = AgencyId::parse("id", &agency_id(i)).unwrap();
                let agency = registry.get(&id).expect("registered").clone();
                let spec = &world.agencies[i];
                assert_eq!(agency.clearance.name(), spec.clearance.name());
                assert_eq!(agency.region.as_str(), spec.region);
                assert_eq!(
                    agency.parent.as_ref().map(|p| p.to_string()),
                    spec.parent.map(agency_id)
                );
                agency
            })
            .collect();
        Self {
            world: world.clone(),
            oracle: oracle_policy(&text),
            rules: Rules { registry, policy },
            agencies,
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        (0..self.world.agencies.len()).find(|&i| agency_id(i) == id)
    }

    /// True when `ancestor` is `of`'s parent, its parent's parent, ….
    fn is_ancestor(&self, ancestor: usize, of: usize) -> bool {
        let mut cursor = self.world.agencies[of].parent;
        while let Some(current) = cursor {
            if current == ancestor {
                return true;
            }
            cursor = self.world.agencies[current].parent;
        }
        false
    }

    fn ancestor_depth(&self, ancestor: usize, of: usize) -> Option<usize> {
        let mut cursor = self.world.agencies[of].parent;
        let mut depth = 1;
        while let Some(current) = cursor {
            if current == ancestor {
                return Some(depth);
            }
            cursor = self.world.agencies[current].parent;
            depth += 1;
        }
        None
    }

    fn expect(&self, reader: usize, note: &NoteSpec) -> Expect {
        if reader == note.sender {
            return Expect::Full("own");
        }
        let r = &self.world.agencies[reader];
        let listed = note.recipients.contains(&agency_id(reader));
        // A statutory copy counts as a listed recipient, but not for the
        // parent rule.
        let copied = note.copy_agencies().contains(&reader);
        let is_member = MEMBER_ROLES.contains(&r.role);
        let parent_of_party = || {
            std::iter::once(note.sender)
                .chain(note.recipients.iter().filter_map(|id| self.index_of(id)))
                .any(|party| self.is_ancestor(reader, party))
        };
        let entitled = match note.level {
            Level::Public => Some("public"),
            Level::Internal if copied => is_member.then_some("copy"),
            Level::Internal => is_member.then_some("member"),
            Level::Restricted | Level::Confidential if listed => Some("listed"),
            Level::Restricted | Level::Confidential if copied => Some("copy"),
            Level::Restricted => (self.oracle.parent_sees_branch_restricted && parent_of_party())
                .then_some("ancestor"),
            Level::Confidential => None,
        };
        if let Some(rule) = entitled {
            if r.clearance >= note.level {
                return Expect::Full(rule);
            }
            if note.level >= Level::Restricted {
                return Expect::Withheld("clearance");
            }
        }
        let oversees = self
            .oracle
            .oversight
            .iter()
            .any(|(role, events)| role == r.role && events.contains(note.event));
        let sender_region = self.world.agencies[note.sender].region;
        if oversees
            && (region_contains(r.region, note.region) || region_contains(r.region, sender_region))
        {
            Expect::Withheld("oversight")
        } else if entitled.is_some() {
            Expect::Nothing("internal-below-clearance")
        } else {
            Expect::Nothing("not entitled")
        }
    }

    /// Publish refusals the rules demand.
    /// The rule of POLICY.md that refuses this publish, if any.
    fn publish_refusal(&self, note: &NoteSpec) -> Option<&'static str> {
        let sender = &self.world.agencies[note.sender];
        let may_publish = self
            .oracle
            .publish
            .get(sender.role)
            .is_some_and(|events| events.contains(note.event));
        let parent_region = sender
            .parent
            .map(|p| self.world.agencies[p].region)
            .filter(|_| self.oracle.allow_parent_region);
        let within = region_contains(sender.region, note.region)
            || parent_region.is_some_and(|region| region_contains(region, note.region));
        let recipient_below = note.level > Level::Internal
            && note.recipients.iter().any(|id| {
                self.index_of(id)
                    .is_some_and(|i| self.world.agencies[i].clearance < note.level)
            });
        if !may_publish {
            Some("refused: event not granted")
        } else if !within {
            Some("refused: region outside the sender's jurisdiction")
        } else if sender.clearance < note.level {
            Some("refused: marked above the sender's clearance")
        } else if note.recipients.iter().any(|id| self.index_of(id).is_none()) {
            Some("refused: an unregistered recipient")
        } else if recipient_below {
            Some("refused: a recipient below the level")
        } else {
            None
        }
    }

    fn describe(&self, reader: usize, note: &NoteSpec) -> String {
        let r = &self.world.agencies[reader];
        let s = &self.world.agencies[note.sender];
        format!(
            "reader {} ({} cleared {} in {}, parent {:?}); notification from {} ({} cleared {} in {}, parent {:?}): {} {} in {} to {:?}, copied to {:?}; parent_sees_branch_restricted={}, oversight={:?}",
            agency_id(reader),
            r.role,
            r.clearance.name(),
            r.region,
            r.parent.map(agency_id),
            agency_id(note.sender),
            s.role,
            s.clearance.name(),
            s.region,
            s.parent.map(agency_id),
            note.level.name(),
            note.event,
            note.region,
            note.recipients,
            note.copy_agencies()
                .into_iter()
                .map(agency_id)
                .collect::<Vec<_>>(),
            self.oracle.parent_sees_branch_restricted,
            self.oracle.oversight,
        )
    }
}

// ---------------------------------------------------------------------------
// Notifications with canaries.

fn notification(note: &NoteSpec, case_ref: &str, id: &str) -> pb::Notification {
    let parties = note
        .parties
        .iter()
        .enumerate()
        .map(|(k, p)| pb::Party {
            role: format!("{CANARY}-party-role-{k} suspect"),
            name: if p.name {
                format!("{PARTY_NAME_TAG}-{k} 张三")
            } else {
                String::new()
            },
            identifier: if p.identifier {
                format!("{PARTY_ID_TAG}-{k} 91140400MA0000000X")
            } else {
                String::new()
            },
            contact: if p.contact {
                format!("{PARTY_CONTACT_TAG}-{k} 139-0000-0000")
            } else {
                String::new()
            },
        })
        .collect();
    let informant = note.informant.then(|| pb::Informant {
        name: format!("{INFORMANT_TAG}-name 李四"),
        contact: format!("{INFORMANT_TAG}-contact 138-0000-0000"),
    });
    pb::Notification {
        notification_id: id.to_owned(),
        case_ref: case_ref.to_owned(),
        event: event_wire(note.event),
        confidentiality: note.level.wire(),
        recipients: note.recipients.clone(),
        confidentiality_note: format!("{CANARY}-note 涉及举报人身份"),
        region: note.region.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
        summary: format!("{CANARY}-summary 某化工厂夜间偷排"),
        body: Some(pb::CaseBody {
            title: format!("{CANARY}-title"),
            description: format!("{CANARY}-description 暗管排放含铬废水"),
            location: format!("{CANARY}-location"),
            parties,
            informant,
            ..Default::default()
        }),
        sender: if note.names_sender {
            agency_id(note.sender)
        } else {
            String::new()
        },
        contact: format!("{CANARY}-contact 办案人 王五"),
        signature: Vec::new(),
        signing_key_id: String::new(),
    }
}

/// The envelope of `full` as its sender publishes it.
fn envelope(note: &NoteSpec, full: &pb::Notification) -> Envelope {
    Envelope {
        sender: AgencyId::parse("sender", &agency_id(note.sender)).unwrap(),
        id: domain::NotificationId::parse_field("id", &full.notification_id).unwrap(),
        case_ref: domain::CaseRef::parse_field("case_ref", &full.case_ref).unwrap(),
        event: domain::Event::from_wire("event", full.event).unwrap(),
        confidentiality: domain::Confidentiality::from_wire("level", full.confidentiality).unwrap(),
        region: domain::Region::parse("region", &full.region).unwrap(),
        recipients: full
            .recipients
            .iter()
            .map(|r| AgencyId::parse("recipient", r).unwrap())
            .collect(),
        copies: note
            .copy_agencies()
            .into_iter()
            .map(|i| domain::StatutoryCopy {
                agency: AgencyId::parse("copy", &agency_id(i)).unwrap(),
                rule: domain::RuleName::parse("rule", "oracle-copy-rule").unwrap(),
            })
            .collect(),
    }
}

fn stored(note: &NoteSpec, full: &pb::Notification, sequence: u64) -> StoredNotification {
    let mut payload = full.clone();
    payload.sender = agency_id(note.sender);
    StoredNotification {
        sequence,
        envelope: envelope(note, full),
        received_at: Instant::from_unix_micros(1_767_229_200_000_000 + sequence as i64).unwrap(),
        payload: payload.encode_to_vec(),
    }
}

/// The full notification as a reader cleared to `clearance` must receive it
/// (`None`: the sender, who gets it untouched), the removed paths, and the
/// canaries of the removed fields.
fn expected_full(
    original: &pb::Notification,
    clearance: Option<Level>,
) -> (pb::Notification, BTreeSet<String>, Vec<&'static str>) {
    let mut n = original.clone();
    let mut paths = BTreeSet::new();
    let mut tags = Vec::new();
    let Some(clearance) = clearance else {
        return (n, paths, tags);
    };
    if clearance < Level::Restricted {
        tags.push(PARTY_NAME_TAG);
    }
    if clearance < Level::Confidential {
        tags.extend([PARTY_ID_TAG, PARTY_CONTACT_TAG, INFORMANT_TAG]);
    }
    if let Some(body) = n.body.as_mut() {
        for party in &mut body.parties {
            for (value, level, path) in [
                (&mut party.name, Level::Restricted, "body.parties.name"),
                (
                    &mut party.identifier,
                    Level::Confidential,
                    "body.parties.identifier",
                ),
                (
                    &mut party.contact,
                    Level::Confidential,
                    "body.parties.contact",
                ),
            ] {
                if clearance < level && !value.is_empty() {
                    value.clear();
                    paths.insert(path.to_owned());
                }
            }
        }
        if clearance < Level::Confidential && body.informant.take().is_some() {
            paths.insert("body.informant".to_owned());
        }
    }
    (n, paths, tags)
}

// ---------------------------------------------------------------------------
// Checking one delivery.

type Stats = RefCell<BTreeMap<String, usize>>;

fn count(stats: &Stats, key: impl Into<String>) {
    *stats.borrow_mut().entry(key.into()).or_default() += 1;
}

/// The notification `note` describes as its sender publishes it, and as
/// the gateway hands it to the store.
fn to_store(note: &NoteSpec, case_ref: &str, id: &str) -> (pb::Notification, NewNotification) {
    let mut wire = notification(note, case_ref, id);
    wire.sender = agency_id(note.sender);
    let new = NewNotification::new(envelope(note, &wire), wire.encode_to_vec());
    (wire, new)
}

fn class_of(got: Option<&(pb::Delivery, Decision)>) -> &'static str {
    match got {
        None => "NONE",
        Some((d, _)) if d.withheld => "WITHHELD",
        Some(_) => "FULL",
    }
}

#[allow(clippy::too_many_arguments)]
fn check_delivery(
    case: &Case,
    reader: usize,
    note: &NoteSpec,
    original: &pb::Notification,
    stored: &StoredNotification,
    attempt: u32,
    got: Option<&(pb::Delivery, Decision)>,
    stats: &Stats,
) -> Result<(), TestCaseError> {
    let expect = case.expect(reader, note);
    let actual = class_of(got);
    if actual != expect.class() {
        return Err(TestCaseError::fail(format!(
            "DISAGREEMENT: expected {} (rule: {:?}), gateway gave {actual} (decision {:?}); {}",
            expect.class(),
            expect,
            got.map(|(_, decision)| decision),
            case.describe(reader, note)
        )));
    }
    count(stats, format!("{expect:?}"));
    let is_ancestor_of_party = std::iter::once(note.sender)
        .chain(note.recipients.iter().filter_map(|id| case.index_of(id)))
        .any(|party| case.is_ancestor(reader, party));
    if note.level == Level::Restricted
        && is_ancestor_of_party
        && !note.recipients.contains(&agency_id(reader))
        && !case.oracle.parent_sees_branch_restricted
    {
        count(stats, format!("ancestor with the flag off: {expect:?}"));
    }
    let Some((delivery, decision)) = got else {
        return Ok(());
    };
    let context = || case.describe(reader, note);
    prop_assert_eq!(decision.name(), expect.class(), "{}", context());
    prop_assert_eq!(delivery.sequence, stored.sequence);
    prop_assert_eq!(&delivery.sender, &agency_id(note.sender));
    prop_assert_eq!(delivery.attempt, attempt);
    prop_assert_eq!(delivery.received_at, Some(stored.received_at.to_wire()));
    let text = format!("{delivery:?}");
    let mut payload = original.clone();
    payload.sender = agency_id(note.sender);
    match expect {
        Expect::Full(rule) => {
            prop_assert!(delivery.withheld_reason.is_empty(), "{}", context());
            let copies = note.copy_agencies();
            let expected_copies: Vec<pb::StatutoryCopy> = copies
                .iter()
                .map(|&i| pb::StatutoryCopy {
                    agency: agency_id(i),
                    rule: "oracle-copy-rule".into(),
                })
                .collect();
            prop_assert_eq!(&delivery.copies, &expected_copies, "copies: {}", context());
            let copied = copies.contains(&reader);
            prop_assert_eq!(
                delivery.copied_by_rule.as_str(),
                if copied { "oracle-copy-rule" } else { "" },
                "copied_by_rule: {}",
                context()
            );
            if rule == "copy" {
                let Decision::Full(reason) = decision else {
                    return Err(TestCaseError::fail("full frame without a full decision"));
                };
                prop_assert!(
                    reason == "statutory copy (oracle-copy-rule)" || reason == "sent frame",
                    "reason {reason:?}: {}",
                    context()
                );
            }
            let clearance =
                (reader != note.sender).then_some(case.world.agencies[reader].clearance);
            let (expected, paths, tags) = expected_full(&payload, clearance);
            prop_assert_eq!(
                delivery.notification.as_ref(),
                Some(&expected),
                "FULL delivery is not the notification stripped per clearance: {}",
                context()
            );
            let listed: BTreeSet<String> = delivery.redacted_fields.iter().cloned().collect();
            prop_assert_eq!(
                listed.len(),
                delivery.redacted_fields.len(),
                "redacted_fields repeats a path"
            );
            prop_assert_eq!(&listed, &paths, "redacted_fields: {}", context());
            for tag in tags {
                prop_assert!(
                    !text.contains(tag),
                    "stripped field {tag} reached {}",
                    context()
                );
            }
            if !paths.is_empty() {
                count(stats, "full, with fields stripped");
            }
            if rule == "ancestor" {
                let depth = std::iter::once(note.sender)
                    .chain(note.recipients.iter().filter_map(|id| case.index_of(id)))
                    .filter_map(|party| case.ancestor_depth(reader, party))
                    .min();
                count(stats, format!("full via ancestor at depth {depth:?}"));
            }
        }
        Expect::Withheld(_) => {
            prop_assert!(delivery.withheld);
            prop_assert!(delivery.copies.is_empty() && delivery.copied_by_rule.is_empty());
            prop_assert!(
                !delivery.withheld_reason.trim().is_empty(),
                "empty withheld reason"
            );
            prop_assert!(delivery.redacted_fields.is_empty());
            let stub = delivery.notification.clone().unwrap_or_default();
            prop_assert!(stub.summary.is_empty(), "stub has a summary");
            prop_assert!(stub.body.is_none(), "stub has a body");
            prop_assert!(stub.confidentiality_note.is_empty(), "stub has a note");
            prop_assert!(stub.recipients.is_empty(), "stub has recipients");
            let expected = pb::Notification {
                notification_id: payload.notification_id.clone(),
                case_ref: payload.case_ref.clone(),
                event: payload.event,
                confidentiality: payload.confidentiality,
                region: payload.region.clone(),
                occurred_at: payload.occurred_at,
                sender: agency_id(note.sender),
                contact: registered_contact(note.sender),
                ..Default::default()
            };
            prop_assert_eq!(&stub, &expected, "stub: {}", context());
            prop_assert!(!text.contains(CANARY), "canary in a withheld frame");
            let Decision::Withheld(reason) = decision else {
                return Err(TestCaseError::fail(
                    "withheld frame without a withheld decision",
                ));
            };
            prop_assert!(!reason.contains(CANARY), "canary in a withheld reason");
        }
        Expect::Nothing(_) => unreachable!("a frame was checked to exist"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Harness: runner, captured logs, runtime.

/// Runs `test` on `cases` inputs; the error is the shrunk failure, as text.
fn run<S: Strategy>(
    cases: u32,
    strategy: &S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String> {
    TestRunner::new(Config {
        cases,
        // A failing case is written here and replayed first by every later
        // run, until the file is deleted.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/policy_oracle.proptest-regressions"
        )))),
        ..Config::default()
    })
    .run(strategy, test)
    .map_err(|error| error.to_string())
}

fn finish(result: Result<(), String>) {
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Ends a property test: its result first, then that the logs were
/// captured (`captured` appears in them, when given) and carry no content,
/// then that every `wanted` kind of case was exercised.
fn conclude(
    result: Result<(), String>,
    logs: &Arc<Mutex<Vec<u8>>>,
    captured: Option<&str>,
    stats: Stats,
    wanted: &[&str],
) {
    finish(result);
    let logs = logged(logs);
    if let Some(marker) = captured {
        assert!(logs.contains(marker), "logs are not captured");
    }
    assert!(
        !logs.contains(CANARY),
        "notification content was logged:\n{logs}"
    );
    let stats = stats.into_inner();
    for wanted in wanted {
        assert!(
            stats.get(*wanted).copied().unwrap_or(0) > 0,
            "no case exercised {wanted}: {stats:?}"
        );
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A subscriber writing every event, at every level, into a buffer.
fn capture() -> (Arc<Mutex<Vec<u8>>>, impl tracing::Subscriber + Send + Sync) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Sink(writer.clone()))
        .finish();
    (buffer, subscriber)
}

fn logged(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("store.db").display())
}

static UNIQUE: AtomicU64 = AtomicU64::new(1);

fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn delivery_matches_the_oracle_and_leaks_nothing() {
    let strategy = world_strategy().prop_flat_map(|world| {
        let n = world.agencies.len();
        (
            Just(world),
            proptest::collection::vec(note_strategy(n), 1..=4),
        )
    });
    let stats = Stats::default();
    let (logs, subscriber) = capture();
    let result = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("log capture is live");
        run(256, &strategy, |(world, notes)| {
            let case = Case::new(&world);
            for (k, note) in notes.iter().enumerate() {
                let original = notification(note, "CZ-2026-HW-0042", &format!("n-{k}"));
                let stored = stored(note, &original, k as u64 + 1);
                for reader in 0..world.agencies.len() {
                    let got = disclosure::render(&case.rules, &case.agencies[reader], &stored, 1);
                    check_delivery(
                        &case,
                        reader,
                        note,
                        &original,
                        &stored,
                        1,
                        got.as_ref(),
                        &stats,
                    )?;
                }
            }
            Ok(())
        })
    });
    conclude(
        result,
        &logs,
        Some("log capture is live"),
        stats,
        &[
            "Full(\"own\")",
            "Full(\"public\")",
            "Full(\"member\")",
            "Full(\"listed\")",
            "Full(\"copy\")",
            "Full(\"ancestor\")",
            "full, with fields stripped",
            "full via ancestor at depth Some(2)",
            "Withheld(\"clearance\")",
            "Withheld(\"oversight\")",
            "Nothing(\"not entitled\")",
            "Nothing(\"internal-below-clearance\")",
            "ancestor with the flag off: Nothing(\"not entitled\")",
        ],
    );
}

#[test]
fn case_timeline_is_exactly_what_the_oracle_allows_in_order() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::connect(&sqlite_url(&dir), 2)).unwrap();
    let strategy = world_strategy().prop_flat_map(|world| {
        let n = world.agencies.len();
        (
            Just(world),
            proptest::collection::vec(note_strategy(n), 2..=8),
            proptest::collection::vec((note_strategy(n), 0usize..8), 0..=2),
        )
    });
    let stats = Stats::default();
    let (logs, subscriber) = capture();
    let result = tracing::subscriber::with_default(subscriber, || {
        run(96, &strategy, |(world, mut notes, mut decoys)| {
            fit_to_case(notes.iter_mut());
            // Decoys are published in the order of their position.
            decoys.sort_by_key(|(_, at)| *at);
            fit_to_case(decoys.iter_mut().map(|(decoy, _)| decoy));
            let case = Case::new(&world);
            let k = unique();
            let case_ref = format!("CZ-2026-HW-{k:05}");
            let other_ref = format!("CZ-2026-XX-{k:05}");
            let mut originals = BTreeMap::new();
            let mut publish = |note: &NoteSpec, case_ref: &str, i: usize| {
                let id = format!("t{k}-{case_ref}-{i}");
                let (wire, new) = to_store(note, case_ref, &id);
                let outcome = rt.block_on(store.publish(&new)).unwrap();
                assert!(matches!(outcome, PublishOutcome::Stored(_)));
                originals.insert(id.clone(), (note.clone(), wire));
                id
            };
            let mut order = Vec::new();
            for (i, note) in notes.iter().enumerate() {
                for (j, (decoy, _)) in decoys.iter().enumerate().filter(|(_, (_, at))| *at == i) {
                    publish(decoy, &other_ref, j);
                }
                order.push(publish(note, &case_ref, i));
            }
            let rows = rt.block_on(store.case_timeline(&case_ref)).unwrap();
            let row_ids: Vec<&str> = rows.iter().map(|r| r.envelope.id.as_str()).collect();
            prop_assert_eq!(&row_ids, &order, "the store's timeline");
            for reader in 0..world.agencies.len() {
                let agency = &case.agencies[reader];
                // What GetCase does with the rows.
                let mut timeline = Vec::new();
                let mut audit: Vec<AuditEntry> = Vec::new();
                for row in &rows {
                    if let Some(disclosed) =
                        disclosure::disclose(&case.rules, agency, row, 0, Channel::CaseRead)
                    {
                        audit.extend(disclosed.audit);
                        timeline.push((disclosed.frame, disclosed.decision));
                    }
                }
                let expected: Vec<(String, &str)> = rows
                    .iter()
                    .filter_map(|row| {
                        let (note, _) = &originals[row.envelope.id.as_str()];
                        let class = case.expect(reader, note).class();
                        (class != "NONE").then(|| (row.envelope.id.to_string(), class))
                    })
                    .collect();
                let got: Vec<(String, &str)> = timeline
                    .iter()
                    .map(|entry| {
                        let id = entry
                            .0
                            .notification
                            .as_ref()
                            .map(|n| n.notification_id.clone())
                            .unwrap_or_default();
                        (id, class_of(Some(entry)))
                    })
                    .collect();
                prop_assert_eq!(
                    &got,
                    &expected,
                    "timeline of {} ({:?})",
                    agency_id(reader),
                    &case.world.agencies[reader]
                );
                let mut entries = timeline.iter();
                for row in &rows {
                    let (note, wire) = &originals[row.envelope.id.as_str()];
                    if case.expect(reader, note).class() == "NONE" {
                        continue;
                    }
                    let entry = entries.next();
                    check_delivery(&case, reader, note, wire, row, 0, entry, &stats)?;
                }
                for entry in &audit {
                    let text = format!("{entry:?}");
                    prop_assert!(!text.contains(CANARY), "canary in audit");
                }
                count(
                    &stats,
                    format!("timeline of {} entries", timeline.len().min(3)),
                );
            }
            Ok(())
        })
    });
    conclude(
        result,
        &logs,
        None,
        stats,
        &[
            "timeline of 0 entries",
            "timeline of 3 entries",
            "Withheld(\"clearance\")",
            "Withheld(\"oversight\")",
        ],
    );
}

/// The frame a session sent, with the decision it shows, for
/// `check_delivery`.
fn as_rendered(frame: pb::Delivery) -> (pb::Delivery, Decision) {
    let decision = if frame.withheld {
        Decision::Withheld(frame.withheld_reason.clone())
    } else {
        Decision::Full("sent frame".into())
    };
    (frame, decision)
}

/// The next frame of a session's stream; `None` once it ends.
async fn next_frame(stream: &mut routing::Outbound) -> Option<pb::Delivery> {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(status))) => panic!("the session ended with {status:?}"),
        Ok(None) => None,
        Err(_) => panic!("no frame within 20 s"),
    }
}

#[test]
fn redeliveries_across_a_reload_follow_the_rules_in_force_when_sent() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::connect(&sqlite_url(&dir), 4)).unwrap();
    // Two worlds with the same agencies and parents: the second redraws
    // every clearance and the policy's parent flag, as a reload may.
    let strategy = world_strategy().prop_flat_map(|world| {
        let n = world.agencies.len();
        (
            Just(world),
            proptest::collection::vec(note_strategy(n), 1..=3),
            proptest::collection::vec(level_strategy(), n),
            any::<bool>(),
        )
    });
    let stats = Stats::default();
    let (logs, subscriber) = capture();
    let result = tracing::subscriber::with_default(subscriber, || {
        run(12, &strategy, |(world, mut notes, clearances, flag)| {
            fit_to_case(notes.iter_mut());
            let mut reloaded = world.clone();
            for (agency, clearance) in reloaded.agencies.iter_mut().zip(&clearances) {
                agency.clearance = *clearance;
            }
            reloaded.policy.parent_sees_branch_restricted = flag;
            let before = Case::new(&world);
            let after = Case::new(&reloaded);
            let k = unique();
            let case_ref = format!("CZ-2026-RD-{k:05}");
            let latest = rt.block_on(store.latest_sequence()).unwrap();
            let gateway = Arc::new(Gateway::new(
                store.clone(),
                before.rules.clone(),
                latest,
                DeliverySettings::default(),
                Arc::new(liandong_gateway::supervision::GatewayKey::generate()),
            ));
            let mut rows = Vec::new();
            for (i, note) in notes.iter().enumerate() {
                let (wire, new) = to_store(note, &case_ref, &format!("r{k}-{i}"));
                let PublishOutcome::Stored(receipt) = rt.block_on(store.publish(&new)).unwrap()
                else {
                    panic!("a new id is stored");
                };
                let mut row = stored(note, &wire, receipt.sequence);
                row.received_at = receipt.received_at;
                rows.push((note, wire, row));
            }
            // One session per reader, none acknowledging anything.
            let opened = std::time::Instant::now();
            let mut streams = Vec::new();
            for reader in 0..world.agencies.len() {
                let open = routing::OpenRequest::try_from(pb::SubscriptionOpen {
                    name: format!("oracle-{k}"),
                    filter: Some(pb::SubscriptionFilter {
                        case_ref_prefix: case_ref.clone(),
                        ..Default::default()
                    }),
                    start: Some(pb::StartPosition {
                        position: Some(pb::start_position::Position::AfterSequence(latest)),
                    }),
                    ack_timeout_seconds: 1,
                    ..Default::default()
                })
                .unwrap();
                let principal = Principal {
                    agency: before.agencies[reader].clone(),
                };
                let session = rt
                    .block_on(routing::Session::open(gateway.clone(), principal, open))
                    .unwrap();
                let (requests, inbound) = tokio::sync::mpsc::channel(4);
                let (sink, stream) = routing::outbound();
                let task = rt
                    .spawn(session.run(tokio_stream::wrappers::ReceiverStream::new(inbound), sink));
                streams.push((requests, stream, task));
            }
            // First frames, under the rules before the reload.
            for (reader, (_, stream, _)) in streams.iter_mut().enumerate() {
                for (note, wire, row) in &rows {
                    if before.expect(reader, note).class() == "NONE" {
                        continue;
                    }
                    let frame = rt.block_on(next_frame(stream)).expect("a first frame");
                    let got = as_rendered(frame);
                    check_delivery(&before, reader, note, wire, row, 1, Some(&got), &stats)?;
                }
            }
            if opened.elapsed() >= Duration::from_millis(900) {
                // The ack timeout (1 s) may have passed before the reload,
                // so a redelivery may rightly follow the old rules: this
                // case proves nothing either way.
                count(&stats, "inconclusive: slower than the ack timeout");
                return Ok(());
            }
            gateway.put_in_force(after.rules.clone());
            // Frames sent after the reload, per reader and row. Each is
            // decided under the rules in force when it is sent, so under
            // the new rules: what they refuse is not sent again.
            let mut after_reload: BTreeMap<(usize, u64), usize> = BTreeMap::new();
            for (reader, (requests, mut stream, task)) in streams.into_iter().enumerate() {
                let nothing_before = rows
                    .iter()
                    .all(|(note, _, _)| before.expect(reader, note).class() == "NONE");
                // A session that was due nothing before the reload may have
                // read the rows before it (and then sends nothing) or only
                // after it (and then sends each row the new rules allow).
                // Either way its frames are checked below; it is not waited
                // for.
                if !nothing_before {
                    for (note, wire, row) in &rows {
                        let was_sent = before.expect(reader, note).class() != "NONE";
                        let now = after.expect(reader, note).class();
                        if !was_sent {
                            continue;
                        }
                        if now == "NONE" {
                            count(&stats, "redelivery: now nothing");
                            continue;
                        }
                        let frame = rt.block_on(next_frame(&mut stream)).expect("a redelivery");
                        prop_assert_eq!(frame.sequence, row.sequence, "redeliveries come in order");
                        prop_assert!(frame.attempt >= 2, "a redelivery: {:?}", frame);
                        let attempt = frame.attempt;
                        let got = as_rendered(frame);
                        check_delivery(
                            &after,
                            reader,
                            note,
                            wire,
                            row,
                            attempt,
                            Some(&got),
                            &stats,
                        )?;
                        *after_reload.entry((reader, row.sequence)).or_default() += 1;
                        count(&stats, format!("redelivery: now {now}"));
                    }
                }
                drop(requests);
                // The rest, until the stream ends: later redeliveries (the
                // test may have been slower than the ack timeout) and a late
                // reader's frames, all under the new rules.
                let mut first_sends = BTreeSet::new();
                while let Some(frame) = rt.block_on(next_frame(&mut stream)) {
                    let Some((note, wire, row)) = rows
                        .iter()
                        .find(|(_, _, row)| row.sequence == frame.sequence)
                    else {
                        return Err(TestCaseError::fail(format!(
                            "a frame of another case: {frame:?}"
                        )));
                    };
                    prop_assert!(
                        after.expect(reader, note).class() != "NONE",
                        "a frame the rules in force refuse: {:?}",
                        frame
                    );
                    if frame.attempt == 1 {
                        prop_assert!(
                            nothing_before && first_sends.insert(row.sequence),
                            "a first send after the reload to a reader already served: {:?}",
                            frame
                        );
                    }
                    let attempt = frame.attempt;
                    let got = as_rendered(frame);
                    check_delivery(&after, reader, note, wire, row, attempt, Some(&got), &stats)?;
                    *after_reload.entry((reader, row.sequence)).or_default() += 1;
                }
                if !first_sends.is_empty() {
                    // Read after the reload: every row the new rules allow
                    // was sent, once.
                    let allowed = rows
                        .iter()
                        .filter(|(note, _, _)| after.expect(reader, note).class() != "NONE")
                        .count();
                    prop_assert_eq!(first_sends.len(), allowed, "a late reader's first sends");
                    count(&stats, "first read after the reload");
                }
                rt.block_on(task).unwrap();
            }
            // One audit row per disclosed frame.
            let audit = rt.block_on(store.audit_entries()).unwrap();
            for (reader, _) in world.agencies.iter().enumerate() {
                for (note, _, row) in &rows {
                    let audited = |class: &str| {
                        class == "WITHHELD" || (class == "FULL" && note.level != Level::Public)
                    };
                    let first = before.expect(reader, note).class();
                    let again = after.expect(reader, note).class();
                    let sent_after = after_reload
                        .get(&(reader, row.sequence))
                        .copied()
                        .unwrap_or(0);
                    let frames = usize::from(first != "NONE" && audited(first))
                        + if audited(again) { sent_after } else { 0 };
                    let rows_audited = audit
                        .iter()
                        .filter(|entry| {
                            entry.action == "DELIVERY"
                                && entry.sequence == Some(row.sequence)
                                && entry.agency == agency_id(reader)
                        })
                        .count();
                    prop_assert_eq!(
                        rows_audited,
                        frames,
                        "audit rows of {} for {}",
                        agency_id(reader),
                        row.sequence
                    );
                }
            }
            Ok(())
        })
    });
    conclude(
        result,
        &logs,
        None,
        stats,
        &[
            "redelivery: now FULL",
            "redelivery: now WITHHELD",
            "redelivery: now nothing",
        ],
    );
}

#[test]
fn publish_refusals_follow_the_rules_and_leak_nothing() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::connect(&sqlite_url(&dir), 2)).unwrap();
    let gateway = Gateway::new(
        store,
        Rules {
            registry: Registry::default(),
            policy: Policy::default_policy(),
        },
        0,
        DeliverySettings::default(),
        Arc::new(liandong_gateway::supervision::GatewayKey::generate()),
    );
    let strategy = world_strategy().prop_flat_map(|world| {
        let n = world.agencies.len();
        (
            Just(world),
            note_strategy(n),
            any::<bool>(),
            any::<proptest::sample::Index>(),
        )
    });
    let stats = Stats::default();
    let (logs, subscriber) = capture();
    let result = tracing::subscriber::with_default(subscriber, || {
        run(256, &strategy, |(world, mut note, granted, pick)| {
            let case = Case::new(&world);
            // Half the time, an event the sender's role is granted.
            let role = world.agencies[note.sender].role;
            let granted_events: Vec<&'static str> = EVENTS
                .into_iter()
                .filter(|e| {
                    case.oracle
                        .publish
                        .get(role)
                        .is_some_and(|g| g.contains(*e))
                })
                .collect();
            if granted && !granted_events.is_empty() {
                note.event = *pick.get(&granted_events);
            }
            gateway.rules.store(Arc::new(case.rules.clone()));
            let k = unique();
            let case_ref = format!("CZ-2026-PB-{k:05}");
            // The case is brought to a state that accepts the note's event,
            // stored directly: only the note goes through the publish checks.
            for (i, event) in prelude(note.event).into_iter().enumerate() {
                let step = NoteSpec {
                    event,
                    ..note.clone()
                };
                let (_, new) = to_store(&step, &case_ref, &format!("p-{k}-prelude-{i}"));
                let outcome = rt.block_on(gateway.store.publish(&new)).unwrap();
                prop_assert!(matches!(outcome, PublishOutcome::Stored(_)), "{outcome:?}");
            }
            let wire = notification(&note, &case_ref, &format!("p-{k}"));
            let sender = &case.agencies[note.sender];
            let checked = match domain::Notification::try_from(wire.clone()) {
                Err(error) => {
                    // The only invalid notifications generated: no recipients above INTERNAL.
                    prop_assert!(note.level > Level::Internal && note.recipients.is_empty());
                    let text = format!("{error} {error:?}");
                    prop_assert!(!text.contains(CANARY), "canary in {}", text);
                    count(&stats, "invalid");
                    None
                }
                Ok(valid) => {
                    let outcome = policy::check_publish(&case.rules, sender, &valid);
                    let refusal = case.publish_refusal(&note);
                    if refusal.is_some() {
                        prop_assert!(
                            outcome.is_err(),
                            "DISAGREEMENT: publish accepted, rules refuse it: {}",
                            case.describe(note.sender, &note)
                        );
                    } else {
                        prop_assert!(
                            outcome.is_ok(),
                            "DISAGREEMENT: publish refused ({outcome:?}), rules accept it: {}",
                            case.describe(note.sender, &note)
                        );
                    }
                    if let Err(refusal) = &outcome {
                        let text = format!("{refusal:?}");
                        prop_assert!(!text.contains(CANARY), "canary in refusal {refusal:?}");
                    }
                    count(&stats, refusal.unwrap_or("accepted"));
                    Some(outcome.is_ok())
                }
            };
            let principal = Principal {
                agency: sender.clone(),
            };
            let published = rt.block_on(api::publish_one(
                &gateway,
                &principal,
                pb::PublishRequest {
                    notification: Some(wire),
                },
            ));
            prop_assert_eq!(published.is_ok(), checked == Some(true));
            if let Err(error) = &published {
                let text = format!("{error} {error:?}");
                prop_assert!(
                    !text.contains(CANARY),
                    "canary in publish refusal {error:?}"
                );
            }
            Ok(())
        })
    });
    conclude(
        result,
        &logs,
        Some("publish refused"),
        stats,
        &[
            "accepted",
            "refused: event not granted",
            "refused: a recipient below the level",
            "refused: marked above the sender's clearance",
            "refused: an unregistered recipient",
            "refused: region outside the sender's jurisdiction",
            "invalid",
        ],
    );
    let audit = rt.block_on(gateway.store.audit_entries()).unwrap();
    assert!(audit.iter().any(|e| e.action == "PUBLISH_REFUSED"));
    for entry in &audit {
        assert!(
            !format!("{entry:?}").contains(CANARY),
            "canary in audit: {entry:?}"
        );
    }
}

#[test]
fn unreadable_rows_reach_nobody_and_their_content_is_not_logged() {
    let world = WorldSpec {
        agencies: (0..5)
            .map(|i| AgencySpec {
                role: ROLES[i],
                clearance: Level::Confidential,
                region: "140000",
                parent: None,
            })
            .collect(),
        file_order: (0..5).collect(),
        policy: PolicySpec {
            base: PolicyBase::Default,
            parent_sees_branch_restricted: true,
            extra_oversight: Vec::new(),
        },
    };
    let case = Case::new(&world);
    let note = NoteSpec {
        sender: 0,
        event: "CASE_TRANSFERRED",
        level: Level::Public,
        recipients: Vec::new(),
        region: "140423",
        parties: vec![PartySpec {
            name: true,
            identifier: true,
            contact: true,
        }],
        informant: true,
        names_sender: true,
        copies: Vec::new(),
    };
    let good = stored(&note, &notification(&note, "CZ-2026-HW-0042", "n-1"), 1);
    // A payload that does not decode but carries content. (A row whose
    // routing columns the policy could not classify never leaves the
    // store: see its contract tests.)
    let mut truncated = good.clone();
    truncated.payload.truncate(truncated.payload.len() - 3);
    truncated
        .payload
        .extend_from_slice(format!("{CANARY}-garbage").as_bytes());
    let (logs, subscriber) = capture();
    tracing::subscriber::with_default(subscriber, || {
        for row in [&truncated] {
            for agency in &case.agencies {
                let got = disclosure::render(&case.rules, agency, row, 1);
                assert!(got.is_none(), "{} received {got:?}", agency.id);
            }
        }
    });
    let logs = logged(&logs);
    assert!(logs.contains("ERROR"), "nothing was logged: {logs}");
    assert!(
        !logs.contains(CANARY),
        "notification content was logged:\n{logs}"
    );
}
