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
//! when it is sent, and every disclosure frame is audited (both through
//! `disclosure`). A reload reaches
//! open streams at once: an agency no longer registered loses its stream
//! (`PERMISSION_DENIED`). A publish wakes only the sessions it concerns
//! ([`wake`]); idle sessions neither read nor write.
//!
//! One session per subscription: opening it again (a reconnect while the
//! old connection is not yet known dead) ends the older session. Per-agency
//! caps bound stored subscriptions and open streams.
//!
//! This module never decides visibility itself: it asks `policy`, with the
//! registry and policy in force at the moment of each delivery, and renders
//! through `disclosure`. It never builds a gRPC status: a session ends with
//! a [`SessionEnd`], mapped by `error`.

pub mod session;
pub mod wake;
pub mod window;

use std::time::Duration;

use liandong_core::domain::{AgencyId, CaseRef, Event, FieldError, Region, SubscriptionName};
use liandong_core::pb;

use crate::config::GatewayConfig;
use crate::store::StoredNotification;

#[cfg(test)]
mod tests;

/// Default and largest window of unacknowledged deliveries.
const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
const LIMIT_MAX_IN_FLIGHT: u32 = 1024;
/// Default and largest ack timeout, in seconds.
const DEFAULT_ACK_TIMEOUT_SECONDS: u32 = 30;
const LIMIT_ACK_TIMEOUT_SECONDS: u32 = 3600;

pub use session::{Outbound, OutboundSink, Session, SessionEnd, outbound};
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

/// What a subscription wants: every non-empty criterion must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    events: Vec<Event>,
    case_ref_prefix: String,
    senders: Vec<AgencyId>,
    regions: Vec<Region>,
}

impl Filter {
    /// Validates and normalises (sorts, deduplicates) a wire filter.
    pub fn from_wire(wire: Option<pb::SubscriptionFilter>) -> Result<Self, FieldError> {
        let pb::SubscriptionFilter {
            events,
            case_ref_prefix,
            senders,
            regions,
        } = wire.unwrap_or_default();
        let mut filter = Filter {
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, e)| Event::from_wire(&format!("open.filter.events[{i}]"), e))
                .collect::<Result<_, _>>()?,
            case_ref_prefix: String::new(),
            senders: senders
                .iter()
                .enumerate()
                .map(|(i, s)| AgencyId::parse(&format!("open.filter.senders[{i}]"), s))
                .collect::<Result<_, _>>()?,
            regions: regions
                .iter()
                .enumerate()
                .map(|(i, r)| Region::parse(&format!("open.filter.regions[{i}]"), r))
                .collect::<Result<_, _>>()?,
        };
        if !case_ref_prefix.is_empty() {
            CaseRef::parse_field("open.filter.case_ref_prefix", &case_ref_prefix)?;
            filter.case_ref_prefix = case_ref_prefix;
        }
        filter.events.sort();
        filter.events.dedup();
        filter.senders.sort();
        filter.senders.dedup();
        filter.regions.sort();
        filter.regions.dedup();
        Ok(filter)
    }

    /// The normalised wire form, as stored with the subscription.
    pub fn to_wire(&self) -> pb::SubscriptionFilter {
        pb::SubscriptionFilter {
            events: self.events.iter().map(|e| e.to_wire() as i32).collect(),
            case_ref_prefix: self.case_ref_prefix.clone(),
            senders: self.senders.iter().map(|s| s.to_string()).collect(),
            regions: self.regions.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// True when the filter wants this notification. A region criterion
    /// matches the region itself and, for a city or province code, every
    /// code within it.
    pub fn matches(&self, stored: &StoredNotification) -> bool {
        (self.events.is_empty()
            || self
                .events
                .iter()
                .any(|e| e.to_wire() as i32 == stored.event))
            && stored.case_ref.starts_with(&self.case_ref_prefix)
            && (self.senders.is_empty() || self.senders.iter().any(|s| s.as_str() == stored.sender))
            && (self.regions.is_empty()
                || Region::parse("region", &stored.region)
                    .is_ok_and(|region| self.regions.iter().any(|r| r.contains(&region))))
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Everything stored so far.
    Beginning,
    /// Only what is stored from now on.
    Now,
    /// Everything above this sequence.
    After(u64),
}

/// A validated `SubscriptionOpen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The subscription's name.
    pub name: SubscriptionName,
    /// What it wants.
    pub filter: Filter,
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
        let filter = Filter::from_wire(filter)?;
        let start = match start.and_then(|s| s.position) {
            None => Start::Beginning,
            Some(pb::start_position::Position::Beginning(true)) => Start::Beginning,
            Some(pb::start_position::Position::Now(true)) => Start::Now,
            Some(pb::start_position::Position::AfterSequence(n)) => Start::After(n),
            Some(_) => {
                return Err(FieldError::new(
                    "open.start",
                    "a chosen position must be true",
                ));
            }
        };
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
