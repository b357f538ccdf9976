//! Who may see what. Until the full policy engine lands, delivery is
//! fail-closed: `PUBLIC` and `INTERNAL` content reaches every registered
//! subscriber; `RESTRICTED` and `CONFIDENTIAL` content reaches only its
//! listed recipients and its sender, and nobody else receives anything of
//! it. Anything this module cannot classify is not delivered.
//!
//! Decisions are made at delivery time from the current registry, never
//! stored with the notification.

use liandong_core::domain::{AgencyId, Confidentiality, FieldError};
use liandong_core::pb;
use liandong_core::registry::{Agency, Registry};

use crate::store::StoredNotification;

#[cfg(test)]
mod tests;

/// What a reader gets of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The whole notification.
    Full,
    /// A stub without content, with the reason.
    Withheld(String),
    /// Nothing at all.
    Nothing,
}

/// Checks what the policy requires of a publish beyond its form: every
/// recipient must be a registered agency.
pub fn check_publish(registry: &Registry, recipients: &[AgencyId]) -> Result<(), FieldError> {
    for (i, recipient) in recipients.iter().enumerate() {
        if registry.get(recipient).is_none() {
            return Err(FieldError::new(
                format!("notification.recipients[{i}]"),
                format!("{recipient} is not a registered agency"),
            ));
        }
    }
    Ok(())
}

/// What `reader` may receive of `stored`.
pub fn decide(reader: &Agency, stored: &StoredNotification) -> Decision {
    let Ok(level) = Confidentiality::from_wire("confidentiality", stored.confidentiality) else {
        tracing::error!(
            notification.sequence = stored.sequence,
            "stored notification has no valid level; withheld from everyone"
        );
        return Decision::Nothing;
    };
    let reader_id = reader.id.as_str();
    match level {
        Confidentiality::Public | Confidentiality::Internal => Decision::Full,
        Confidentiality::Restricted | Confidentiality::Confidential => {
            if stored.sender == reader_id || stored.recipients.iter().any(|r| r == reader_id) {
                Decision::Full
            } else {
                Decision::Nothing
            }
        }
    }
}

/// The stub of a withheld notification: identifiers, level, times and whom
/// to ask — no summary, body, recipients or note.
pub fn withheld_stub(full: &pb::Notification, sender_contact: &str) -> pb::Notification {
    pb::Notification {
        notification_id: full.notification_id.clone(),
        case_ref: full.case_ref.clone(),
        event: full.event,
        confidentiality: full.confidentiality,
        region: full.region.clone(),
        occurred_at: full.occurred_at,
        sender: full.sender.clone(),
        contact: if full.contact.is_empty() {
            sender_contact.to_owned()
        } else {
            full.contact.clone()
        },
        ..Default::default()
    }
}
