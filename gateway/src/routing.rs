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
//! old connection is not yet known dead) ends the older session — on this
//! process in memory, across replicas through the subscription's lease in
//! the database ([`lease`]), which a session holds while it sends.
//! Per-agency caps bound stored subscriptions and open streams.
//!
//! This module never decides visibility itself: it asks `policy`, with the
//! registry and policy in force at the moment of each delivery, and renders
//! through `disclosure`. It never builds a gRPC status: a session ends with
//! a [`SessionEnd`], mapped by `error`.

pub mod lease;
pub mod session;
pub mod wake;
pub mod window;

use std::time::Duration;

use liandong_core::domain::{FieldError, SubscriptionName};
use liandong_core::pb;
use liandong_core::subscription::{Start, SubscriptionFilter};

use crate::config::GatewayConfig;

#[cfg(test)]
mod tests;

/// Default and largest window of unacknowledged deliveries.
const DEFAULT_MAX_IN_FLIGHT: u32 = 64;
const LIMIT_MAX_IN_FLIGHT: u32 = 1024;
/// Default and largest ack timeout, in seconds.
const DEFAULT_ACK_TIMEOUT_SECONDS: u32 = 30;
const LIMIT_ACK_TIMEOUT_SECONDS: u32 = 3600;

pub use lease::LeaseKeeper;
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
    /// How long a subscription's lease lasts unless its holder renews it.
    pub subscription_lease: Duration,
    /// Stored subscriptions per agency.
    pub max_subscriptions_per_agency: u32,
    /// Open subscription streams per agency (and, counted separately by
    /// `quota`, open `PublishStream` calls).
    pub max_streams_per_agency: u32,
    /// Each agency's publish rate (`quota::rate`).
    pub publish_rate: crate::quota::rate::RateSettings,
}

impl DeliverySettings {
    /// The settings a configuration asks for.
    pub fn from_config(config: &GatewayConfig) -> Self {
        Self {
            poll_interval: config.poll_interval,
            stall_timeout: config.stall_timeout,
            cursor_flush: config.cursor_flush,
            subscription_lease: config.subscription_lease,
            max_subscriptions_per_agency: config.max_subscriptions_per_agency,
            max_streams_per_agency: config.max_streams_per_agency,
            publish_rate: config.publish_rate.clone(),
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
            subscription_lease: Duration::from_secs(10),
            max_subscriptions_per_agency: 100,
            max_streams_per_agency: 100,
            publish_rate: crate::quota::rate::RateSettings::default(),
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
