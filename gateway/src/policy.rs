//! Who may say what, and who may see what.
//!
//! Publishing: a role may publish only the events the policy grants it;
//! the notification's region must lie within the sender's registered
//! region (or its parent's, when the policy allows); above `INTERNAL` every
//! recipient must be registered and cleared for the level (a notification
//! nobody listed could read is refused at publish time, not dropped later).
//! The policy's copy rules then name the agencies the gateway adds as
//! recipients (statutory copies, 抄送), which are stored with the
//! notification as a fact of the record.
//!
//! Delivery: for every (reader, notification) one decision — `Full`,
//! `Withheld` (a stub without content, with the reason) or `Nothing`:
//! - the sender always reads its own notification in full;
//! - `PUBLIC`: everyone;
//! - `INTERNAL`: member agencies (environment, police, procuratorate)
//!   cleared for `INTERNAL`;
//! - `RESTRICTED`: listed recipients and statutory copies, and — when the
//!   policy says so — the parent agencies of the sender or of a listed
//!   recipient;
//! - `CONFIDENTIAL`: listed recipients and statutory copies;
//! - a party whose clearance is below the level gets a stub;
//! - anyone else with an oversight rule for the event, whose region
//!   contains the notification's region or the sender's registered region,
//!   gets a stub; everyone else gets nothing.
//!
//! Full deliveries then lose the body fields marked more sensitive than the
//! reader's clearance ([`redact`]). Decisions are made at delivery time from
//! the current registry and policy, never stored with the notification.
//!
//! The policy reads validated domain values only (a `Notification` to
//! publish, the `Envelope` of a stored one); it never parses a stored
//! column or the wire: a value that cannot be classified never gets here.

pub mod redact;
pub mod rules;

use std::borrow::Cow;

use liandong_core::domain::{
    AgencyId, Confidentiality, Envelope, FieldError, Notification, Region, Role, StatutoryCopy,
};
use liandong_core::pb;
use liandong_core::registry::{Agency, Registry};

pub use rules::{CopyRule, CopyTarget, Policy, PolicyError};

#[cfg(test)]
mod tests;

/// The registry and the policy in force, swapped together on reload.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Registered agencies.
    pub registry: Registry,
    /// Publishing rights and delivery rules.
    pub policy: Policy,
}

/// What a reader gets of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The whole notification (less fields above the reader's clearance),
    /// and which rule entitles the reader (`listed recipient`, `statutory
    /// copy (<rule>)`, …).
    Full(Cow<'static, str>),
    /// A stub without content, with the reason.
    Withheld(String),
    /// Nothing at all.
    Nothing,
}

impl Decision {
    /// The name recorded in the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Full(_) => "FULL",
            Self::Withheld(_) => "WITHHELD",
            Self::Nothing => "NONE",
        }
    }
}

/// Why a publish was refused by policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRefusal {
    /// A rule forbids it (`PERMISSION_DENIED`); the text names the rule.
    Forbidden(String),
    /// A field does not satisfy the policy (`INVALID_ARGUMENT`).
    Field(FieldError),
}

/// Checks a validated notification from `sender` against the rules:
/// publishing rights, jurisdiction ([`check_jurisdiction`]), the sender's
/// clearance, and the recipients.
pub fn check_publish(
    rules: &Rules,
    sender: &Agency,
    notification: &Notification,
) -> Result<(), PublishRefusal> {
    let role = rules::role_name(sender.role);
    if !rules.policy.may_publish(sender.role, notification.event) {
        let reason = if rules::GATEWAY_ONLY_EVENTS.contains(&notification.event.to_wire()) {
            format!("{} is emitted by the gateway only", notification.event)
        } else {
            format!("rule publish.{role} does not allow {}", notification.event)
        };
        return Err(PublishRefusal::Forbidden(reason));
    }
    check_jurisdiction(rules, sender, &notification.region)?;
    let level = notification.confidentiality;
    if level > sender.clearance {
        return Err(PublishRefusal::Forbidden(format!(
            "{} is cleared up to {}, below the {level} it marks",
            sender.id, sender.clearance
        )));
    }
    for (i, recipient) in notification.recipients.iter().enumerate() {
        let field = || format!("notification.recipients[{i}]");
        let Some(agency) = rules.registry.get(recipient) else {
            return Err(PublishRefusal::Field(FieldError::new(
                field(),
                format!("{recipient} is not a registered agency"),
            )));
        };
        if level.needs_recipients() && agency.clearance < level {
            return Err(PublishRefusal::Field(FieldError::new(
                field(),
                format!(
                    "{recipient} is cleared only up to {}; {level} content cannot be sent to it",
                    agency.clearance
                ),
            )));
        }
    }
    Ok(())
}

/// Refuses a notification whose `region` lies outside the jurisdiction of
/// `sender`: its registered region, or (when the policy's
/// `jurisdiction.allow_parent_region` says so) its parent agency's
/// registered region.
///
/// Only agencies publish through this check: notifications the gateway
/// emits itself have no registered sender and are exempt from it.
pub fn check_jurisdiction(
    rules: &Rules,
    sender: &Agency,
    region: &Region,
) -> Result<(), PublishRefusal> {
    if sender.region.contains(region) {
        return Ok(());
    }
    let parent = sender
        .parent
        .as_ref()
        .and_then(|parent| rules.registry.get(parent));
    if rules.policy.allow_parent_region
        && let Some(parent) = parent.filter(|parent| parent.region.contains(region))
    {
        tracing::debug!(agency.parent = %parent.id, "region within the parent agency's region");
        return Ok(());
    }
    let parent_note = match parent {
        Some(parent) if rules.policy.allow_parent_region => format!(
            ", nor its parent {}'s registered region {}",
            parent.id, parent.region
        ),
        _ => String::new(),
    };
    Err(PublishRefusal::Forbidden(format!(
        "region {region} lies outside the jurisdiction of {}: not within its registered region {}{parent_note}",
        sender.id, sender.region
    )))
}

/// The statutory copies the policy's copy rules add to `envelope`, a
/// notification `sender` is publishing, under the registry in force.
/// `transferor` is the agency that published the case's first
/// `CASE_TRANSFERRED`, when there is one (needed only when
/// [`Policy::needs_transferor`] says so).
///
/// A copy is added only for an agency the sender left out of its
/// recipients and that is not the sender; each agency at most once (under
/// the first rule that names it). When a target names no registered
/// agency, the notification goes on without that copy and a warning names
/// the rule and the sender.
pub fn statutory_copies(
    rules: &Rules,
    sender: &Agency,
    envelope: &Envelope,
    transferor: Option<&AgencyId>,
) -> Vec<StatutoryCopy> {
    let mut copies: Vec<StatutoryCopy> = Vec::new();
    for rule in rules.policy.copy_rules_for(envelope.event) {
        for target in &rule.to {
            let agencies: Vec<&Agency> = match target {
                CopyTarget::SameLevelProcuratorate => rules
                    .registry
                    .agencies()
                    .filter(|a| a.role == Role::Procuratorate && a.region == sender.region)
                    .collect(),
                CopyTarget::CaseTransferor => transferor
                    .and_then(|id| rules.registry.get(id))
                    .into_iter()
                    .collect(),
            };
            if agencies.is_empty() {
                tracing::warn!(
                    policy.rule = %rule.name,
                    copy.target = target.name(),
                    agency.id = %sender.id,
                    case.ref = %envelope.case_ref,
                    "no competent agency is registered for this copy; the notification goes on without it"
                );
            }
            for agency in agencies {
                let left_out = agency.id != envelope.sender
                    && !envelope.recipients.contains(&agency.id)
                    && !copies.iter().any(|copy| copy.agency == agency.id);
                if left_out {
                    copies.push(StatutoryCopy {
                        agency: agency.id.clone(),
                        rule: rule.name.clone(),
                    });
                }
            }
        }
    }
    copies
}

/// What `reader` may receive of the notification `envelope` describes.
pub fn decide(rules: &Rules, reader: &Agency, envelope: &Envelope) -> Decision {
    if envelope.sender == reader.id {
        return Decision::Full(Cow::Borrowed("own notification"));
    }
    let level = envelope.confidentiality;
    let is_recipient = envelope.recipients.contains(&reader.id);
    if envelope.event.to_wire() == pb::EventType::JointAnnouncement {
        // A draft is for its co-signers until the gateway releases it in a
        // notification of its own (`announcements`).
        let cleared = reader.clearance >= level.min(Confidentiality::Restricted);
        return if is_recipient && cleared {
            Decision::Full(Cow::Borrowed("co-signer of the draft"))
        } else {
            Decision::Nothing
        };
    }
    // A statutory copy is a recipient by law: treated as a listed one,
    // named by its rule (a listed recipient is never also a copy).
    let copy: Option<Cow<'static, str>> = envelope
        .copy_for(&reader.id)
        .filter(|_| !is_recipient)
        .map(|copy| Cow::Owned(format!("statutory copy ({})", copy.rule)));
    let as_party = if is_recipient {
        Some(Cow::Borrowed("listed recipient"))
    } else {
        copy.clone()
    };
    let entitled = match level {
        Confidentiality::Public => Some(Cow::Borrowed("public")),
        Confidentiality::Internal => reader
            .role
            .is_member()
            .then(|| copy.unwrap_or(Cow::Borrowed("member agency"))),
        Confidentiality::Restricted => as_party.or_else(|| {
            (rules.policy.parent_sees_branch_restricted
                && is_parent_of_party(&rules.registry, reader, envelope))
            .then_some(Cow::Borrowed("parent of a party"))
        }),
        Confidentiality::Confidential => as_party,
    };
    if let Some(rule) = entitled {
        if reader.clearance >= level {
            return Decision::Full(rule);
        }
        if level.needs_recipients() {
            return Decision::Withheld(format!(
                "your clearance {} is below this notification's level {level}",
                reader.clearance
            ));
        }
    }
    let event = envelope.event;
    match rules.policy.oversight_for(reader.role, event) {
        Some(rule) if oversees(rules, reader, envelope) => Decision::Withheld(format!(
            "oversight ({}): you supervise {event} in region {}, but are not a recipient; ask the sender for the content",
            rule.name, reader.region
        )),
        _ => Decision::Nothing,
    }
}

/// True when the notification falls within `reader`'s region for
/// oversight: its region field does, or its sender's registered region
/// (in the registry in force now) does — so a sender cannot steer a
/// notification out of its supervisor's sight by naming another region.
fn oversees(rules: &Rules, reader: &Agency, envelope: &Envelope) -> bool {
    reader.region.contains(&envelope.region)
        || rules
            .registry
            .get(&envelope.sender)
            .is_some_and(|sender| reader.region.contains(&sender.region))
}

/// The parent rule extends the sender's own choice of parties (the sender
/// and its listed recipients); a statutory copy does not extend it further.
fn is_parent_of_party(registry: &Registry, reader: &Agency, envelope: &Envelope) -> bool {
    std::iter::once(&envelope.sender)
        .chain(&envelope.recipients)
        .any(|party| registry.is_ancestor(&reader.id, party))
}

/// The stub of a withheld notification: identifiers, level, times and whom
/// to ask — no summary, body, recipients or note. The contact is the
/// sender's registered one, never text from the notification itself.
pub fn withheld_stub(full: &pb::Notification, sender_contact: &str) -> pb::Notification {
    pb::Notification {
        notification_id: full.notification_id.clone(),
        case_ref: full.case_ref.clone(),
        event: full.event,
        confidentiality: full.confidentiality,
        region: full.region.clone(),
        occurred_at: full.occurred_at,
        sender: full.sender.clone(),
        contact: sender_contact.to_owned(),
        ..Default::default()
    }
}
