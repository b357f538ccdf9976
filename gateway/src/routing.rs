//! Delivery of stored notifications to durable subscriptions.
//!
//! A subscription is named and owned by the agency that opened it; it keeps
//! a cursor (`acked_through`) in the store. A session ([`session`]) reads
//! the store after the cursor in sequence order, keeps what the filter wants
//! and the policy allows, and sends it with at most `max_in_flight`
//! unacknowledged ([`window`]). An acknowledgement removes a delivery from
//! the window; one not acknowledged within the ack timeout is sent again
//! with a higher `attempt`. The cursor only ever passes what was
//! acknowledged (or what the policy gives the reader nothing of), so a
//! reconnecting subscriber resumes without loss or reorder.
//!
//! Every frame, redeliveries included, is rendered with the rules in force
//! when it is sent, and every disclosure frame is audited. A reload reaches
//! open streams at once: an agency no longer registered loses its stream
//! (`PERMISSION_DENIED`). A publish wakes only the sessions it concerns
//! ([`wake`]); idle sessions neither read nor write.
//!
//! One session per subscription: opening it again (a reconnect while the
//! old connection is not yet known dead) ends the older session. Per-agency
//! caps bound stored subscriptions and open streams.
//!
//! This module never decides visibility itself: it asks `policy`, with the
//! registry and policy in force at the moment of each delivery.

pub mod session;
pub mod wake;
pub mod window;

use std::time::Duration;

use prost::Message;

use liandong_core::domain::{Confidentiality, FieldError, SubscriptionName};
use liandong_core::pb;
use liandong_core::registry::Agency;
use liandong_core::subscription::{Start, SubscriptionFilter};

use crate::config::GatewayConfig;
use crate::policy::{self, Decision, Rules, redact};
use crate::store::{AuditEntry, StoredNotification};

#[cfg(test)]
mod tests;

/// Default and largest window of unacknowledged deliveries.
const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
const LIMIT_MAX_IN_FLIGHT: u32 = 1024;
/// Default and largest ack timeout, in seconds.
const DEFAULT_ACK_TIMEOUT_SECONDS: u32 = 30;
const LIMIT_ACK_TIMEOUT_SECONDS: u32 = 3600;

pub use session::{Outbound, OutboundSink, Session, outbound};
pub use wake::Sessions;

/// How delivery behaves, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// How often the process looks for rows stored by another replica.
    pub poll_interval: Duration,
    /// A stream none of whose frames could be sent for this long is cut.
    pub stall_timeout: Duration,
    /// Cursors are written at most this often while a stream is open.
    pub cursor_flush: Duration,
    /// Stored subscriptions per agency.
    pub max_subscriptions_per_agency: u32,
    /// Open subscription streams per agency (and, counted separately by
    /// `quota`, open `PublishStream` calls).
    pub max_streams_per_agency: u32,
}

impl DeliverySettings {
    /// The settings a configuration asks for.
    pub fn from_config(config: &GatewayConfig) -> Self {
        Self {
            poll_interval: config.poll_interval,
            stall_timeout: config.stall_timeout,
            cursor_flush: config.cursor_flush,
            max_subscriptions_per_agency: config.max_subscriptions_per_agency,
            max_streams_per_agency: config.max_streams_per_agency,
        }
    }
}

impl Default for DeliverySettings {
    /// The configuration's defaults.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(30),
            cursor_flush: Duration::from_secs(1),
            max_subscriptions_per_agency: 100,
            max_streams_per_agency: 100,
        }
    }
}

/// A validated `SubscriptionOpen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The subscription's name.
    pub name: SubscriptionName,
    /// What it wants.
    pub filter: SubscriptionFilter,
    /// Where it starts when it is new.
    pub start: Start,
    /// Window of unacknowledged deliveries.
    pub max_in_flight: usize,
    /// When an unacknowledged delivery is sent again.
    pub ack_timeout: Duration,
}

impl TryFrom<pb::SubscriptionOpen> for OpenRequest {
    type Error = FieldError;

    fn try_from(wire: pb::SubscriptionOpen) -> Result<Self, FieldError> {
        let pb::SubscriptionOpen {
            name,
            filter,
            start,
            max_in_flight,
            ack_timeout_seconds,
        } = wire;
        let name = SubscriptionName::parse_field("open.name", &name)?;
        let filter = SubscriptionFilter::from_wire("open.filter", filter.unwrap_or_default())?;
        let start = Start::from_wire("open.start", start)?;
        let max_in_flight = match max_in_flight {
            0 => DEFAULT_MAX_IN_FLIGHT,
            n if n <= LIMIT_MAX_IN_FLIGHT => n,
            _ => {
                return Err(FieldError::new(
                    "open.max_in_flight",
                    format!("must be at most {LIMIT_MAX_IN_FLIGHT}"),
                ));
            }
        };
        let ack_timeout = match ack_timeout_seconds {
            0 => DEFAULT_ACK_TIMEOUT_SECONDS,
            n if n <= LIMIT_ACK_TIMEOUT_SECONDS => n,
            _ => {
                return Err(FieldError::new(
                    "open.ack_timeout_seconds",
                    format!("must be at most {LIMIT_ACK_TIMEOUT_SECONDS}"),
                ));
            }
        };
        Ok(Self {
            name,
            filter,
            start,
            max_in_flight: max_in_flight as usize,
            ack_timeout: Duration::from_secs(u64::from(ack_timeout)),
        })
    }
}

/// The delivery `reader` may receive of `stored` under `rules`, with the
/// decision behind it, or `None` when it may receive nothing.
pub fn render(
    rules: &Rules,
    reader: &Agency,
    stored: &StoredNotification,
    attempt: u32,
) -> Option<(pb::Delivery, Decision)> {
    let decision = policy::decide(rules, reader, &stored.envelope);
    if decision == Decision::Nothing {
        return None;
    }
    let full = match pb::Notification::decode(stored.payload.as_slice()) {
        Ok(full) => full,
        Err(error) => {
            tracing::error!(notification.sequence = stored.sequence, %error, "stored payload does not decode; not delivered");
            return None;
        }
    };
    let (notification, withheld, withheld_reason, redacted_fields) = match &decision {
        Decision::Full(_) => {
            let mut full = full;
            let redacted = if stored.envelope.sender == reader.id {
                Vec::new()
            } else {
                redact::strip_above(&mut full, reader.clearance)
            };
            (full, false, String::new(), redacted)
        }
        Decision::Withheld(reason) => {
            let contact = crate::contact_of(rules, &stored.envelope.sender);
            (
                policy::withheld_stub(&full, &contact),
                true,
                reason.clone(),
                Vec::new(),
            )
        }
        Decision::Nothing => return None,
    };
    let delivery = pb::Delivery {
        sequence: stored.sequence,
        sender: stored.envelope.sender.to_string(),
        received_at: Some(stored.received_at.to_wire()),
        notification: Some(notification),
        withheld,
        withheld_reason,
        attempt,
        redacted_fields,
    };
    Some((delivery, decision))
}

/// The audit entry a disclosure needs: every full delivery of non-public
/// content and every withheld stub.
pub fn audit_entry(
    reader: &Agency,
    action: &'static str,
    stored: &StoredNotification,
    decision: &Decision,
) -> Option<AuditEntry> {
    let reason = match decision {
        Decision::Full(rule) => {
            if stored.envelope.confidentiality == Confidentiality::Public {
                return None;
            }
            (*rule).to_owned()
        }
        Decision::Withheld(reason) => reason.clone(),
        Decision::Nothing => return None,
    };
    Some(AuditEntry {
        agency: reader.id.to_string(),
        action,
        sequence: Some(stored.sequence),
        sender: stored.envelope.sender.to_string(),
        notification_id: stored.envelope.id.to_string(),
        decision: decision.name().to_owned(),
        reason,
    })
}
