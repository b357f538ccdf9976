//! Who may say what, and who may see what.
//!
//! Publishing: a role may publish only the events the policy grants it;
//! above `INTERNAL` every recipient must be registered and cleared for the
//! level (a notification nobody listed could read is refused at publish
//! time, not dropped later).
//!
//! Delivery: for every (reader, notification) one decision — `Full`,
//! `Withheld` (a stub without content, with the reason) or `Nothing`:
//! - the sender always reads its own notification in full;
//! - `PUBLIC`: everyone;
//! - `INTERNAL`: member agencies (environment, police, procuratorate)
//!   cleared for `INTERNAL`;
//! - `RESTRICTED`: listed recipients, and — when the policy says so — the
//!   parent agencies of the sender or of a recipient;
//! - `CONFIDENTIAL`: listed recipients;
//! - a party whose clearance is below the level gets a stub;
//! - anyone else with an oversight rule for the event within its region
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

use liandong_core::domain::{Confidentiality, Envelope, FieldError, Notification};
use liandong_core::pb;
use liandong_core::registry::{Agency, Registry};

pub use rules::{Policy, PolicyError};

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
    /// and which rule entitles the reader.
    Full(&'static str),
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

/// Checks a validated notification from `sender` against the rules.
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

/// What `reader` may receive of the notification `envelope` describes.
pub fn decide(rules: &Rules, reader: &Agency, envelope: &Envelope) -> Decision {
    if envelope.sender == reader.id {
        return Decision::Full("own notification");
    }
    let level = envelope.confidentiality;
    let is_recipient = envelope.recipients.contains(&reader.id);
    if envelope.event.to_wire() == pb::EventType::JointAnnouncement {
        // A draft is for its co-signers until the gateway releases it in a
        // notification of its own (`announcements`).
        let cleared = reader.clearance >= level.min(Confidentiality::Restricted);
        return if is_recipient && cleared {
            Decision::Full("co-signer of the draft")
        } else {
            Decision::Nothing
        };
    }
    let entitled = match level {
        Confidentiality::Public => Some("public"),
        Confidentiality::Internal => reader.role.is_member().then_some("member agency"),
        Confidentiality::Restricted if is_recipient => Some("listed recipient"),
        Confidentiality::Restricted => (rules.policy.parent_sees_branch_restricted
            && is_parent_of_party(&rules.registry, reader, envelope))
        .then_some("parent of a party"),
        Confidentiality::Confidential => is_recipient.then_some("listed recipient"),
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
        Some(rule) if reader.region.contains(&envelope.region) => Decision::Withheld(format!(
            "oversight ({}): you supervise {event} in region {}, but are not a recipient; ask the sender for the content",
            rule.name, reader.region
        )),
        _ => Decision::Nothing,
    }
}

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
