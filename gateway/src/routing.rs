//! Delivery of stored notifications to durable subscriptions.
//!
//! A subscription is named and owned by the agency that opened it; it keeps
//! a cursor (`acked_through`) in the store. A session reads the store after
//! the cursor in sequence order, keeps what the filter wants and the policy
//! allows, and sends it with at most `max_in_flight` unacknowledged. An
//! acknowledgement removes a delivery from the window; one not acknowledged
//! within the ack timeout is sent again with a higher `attempt`. The cursor
//! advances to just below the oldest unacknowledged delivery and is
//! persisted, so a reconnecting subscriber resumes without loss or reorder.
//!
//! One session per subscription: opening it again (a reconnect while the
//! old connection is not yet known dead) ends the older session.
//!
//! This module never decides visibility itself: it asks `policy`, with the
//! registry and policy in force at the moment of each delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant as Clock;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use liandong_core::domain::{AgencyId, CaseRef, Event, FieldError, Region, SubscriptionName};
use liandong_core::pb;
use liandong_core::registry::Agency;

use crate::Gateway;
use crate::error::ApiError;
use crate::identity::Principal;
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
/// Rows read from the store at a time.
const READ_BATCH: u32 = 256;
/// Capacity of the channel towards the subscriber: larger than any window,
/// so sending never waits while acknowledgements are pending.
pub(crate) const OUTBOUND_CAPACITY: usize = LIMIT_MAX_IN_FLIGHT as usize + 16;

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

/// The delivery `reader` may receive of `stored` under `rules`, with the
/// decision behind it, or `None` when it may receive nothing.
pub fn render(
    rules: &Rules,
    reader: &Agency,
    stored: &StoredNotification,
    attempt: u32,
) -> Option<(pb::Delivery, Decision)> {
    let decision = policy::decide(rules, reader, stored);
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
            let redacted = if stored.sender == reader.id.as_str() {
                Vec::new()
            } else {
                redact::strip_above(&mut full, reader.clearance)
            };
            (full, false, String::new(), redacted)
        }
        Decision::Withheld(reason) => {
            let contact = crate::contact_of(rules, &stored.sender);
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
        sender: stored.sender.clone(),
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
            if stored.confidentiality == pb::Confidentiality::Public as i32 {
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
        sender: stored.sender.clone(),
        notification_id: stored.notification_id.clone(),
        decision: decision.name().to_owned(),
        reason,
    })
}

struct InFlight {
    delivery: pb::Delivery,
    sent_at: Clock,
}

/// One connected subscriber of one durable subscription.
pub struct Session {
    gateway: Arc<Gateway>,
    principal: Principal,
    request: OpenRequest,
    cancel: CancellationToken,
    generation: u64,
    /// Last sequence examined (delivered or skipped).
    scan_pos: u64,
    /// Cursor as last persisted.
    persisted: u64,
    in_flight: BTreeMap<u64, InFlight>,
}

impl Session {
    /// Opens (creating if new) the subscription and ends any older session
    /// of it.
    pub async fn open(
        gateway: Arc<Gateway>,
        principal: Principal,
        request: OpenRequest,
    ) -> Result<Self, ApiError> {
        let owner = principal.agency.id.as_str();
        let name = request.name.as_str();
        let filter = request.filter.to_wire().encode_to_vec();
        let start_after = match request.start {
            Start::Beginning => 0,
            Start::Now => gateway.store.latest_sequence().await?,
            Start::After(n) => {
                let latest = gateway.store.latest_sequence().await?;
                if n > latest {
                    return Err(ApiError::InvalidArgument(FieldError::new(
                        "open.start.after_sequence",
                        format!("is beyond the latest sequence {latest}"),
                    )));
                }
                n
            }
        };
        let record = gateway
            .store
            .open_subscription(owner, name, &filter, start_after)
            .await?;
        if record.filter != filter {
            return Err(ApiError::FailedPrecondition(format!(
                "subscription {name} exists with another filter; open it with its own filter or use a new name"
            )));
        }
        let (cancel, generation) = gateway.sessions.register(&gateway.stop, owner, name);
        tracing::info!(
            agency.id = %owner,
            subscription.name = %name,
            subscription.created = record.created,
            subscription.acked_through = record.acked_through,
            "subscription opened"
        );
        Ok(Self {
            gateway,
            principal,
            request,
            cancel,
            generation,
            scan_pos: record.acked_through,
            persisted: record.acked_through,
            in_flight: BTreeMap::new(),
        })
    }

    /// Serves the session until the subscriber leaves, fails, or is
    /// replaced, or the gateway stops.
    pub async fn run(
        mut self,
        mut inbound: Streaming<pb::SubscribeRequest>,
        out: mpsc::Sender<Result<pb::Delivery, Status>>,
    ) {
        let outcome = self.pump(&mut inbound, &out).await;
        if let Err(error) = self.persist_cursor().await {
            tracing::warn!(%error, "could not persist subscription cursor at session end");
        }
        let owner = self.principal.agency.id.to_string();
        self.gateway
            .sessions
            .unregister(&owner, self.request.name.as_str(), self.generation);
        match outcome {
            Ok(()) => {
                tracing::info!(agency.id = %owner, subscription.name = %self.request.name, "subscription closed")
            }
            Err(status) => {
                tracing::info!(agency.id = %owner, subscription.name = %self.request.name, code = ?status.code(), "subscription ended");
                let _ = out.send(Err(status)).await;
            }
        }
    }

    async fn pump(
        &mut self,
        inbound: &mut Streaming<pb::SubscribeRequest>,
        out: &mpsc::Sender<Result<pb::Delivery, Status>>,
    ) -> Result<(), Status> {
        let mut latest = self.gateway.latest.subscribe();
        loop {
            if !self.fill(out).await? || !self.redeliver_due(out).await {
                return Ok(());
            }
            self.persist_cursor().await?;
            let poll = Clock::now() + self.gateway.poll_interval;
            let wake = self
                .in_flight
                .values()
                .map(|f| f.sent_at + self.request.ack_timeout)
                .min()
                .map_or(poll, |due| due.min(poll));
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    return Err(if self.gateway.stop.is_cancelled() {
                        Status::unavailable("the gateway is shutting down; reconnect to resume")
                    } else {
                        Status::aborted("the subscription was opened by a newer connection")
                    });
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.handle(request)?,
                    Ok(None) => return Ok(()),
                    Err(status) => return Err(status),
                },
                changed = latest.changed() => {
                    if changed.is_err() {
                        return Err(Status::unavailable("the gateway is shutting down; reconnect to resume"));
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = out.closed() => return Ok(()),
            }
        }
    }

    fn handle(&mut self, request: pb::SubscribeRequest) -> Result<(), Status> {
        match request.kind {
            Some(pb::subscribe_request::Kind::Ack(ack)) => {
                for sequence in ack.sequences {
                    self.in_flight.remove(&sequence);
                }
                Ok(())
            }
            Some(pb::subscribe_request::Kind::Open(_)) => Err(Status::invalid_argument(
                "open: may only be sent once, as the first request",
            )),
            None => Err(Status::invalid_argument(
                "request: carries neither open nor ack",
            )),
        }
    }

    /// Sends new deliveries until the window is full or the store has no
    /// more. Disclosures are written to the audit log before anything is
    /// sent; if that fails, nothing is sent. Returns false when the
    /// subscriber is gone.
    async fn fill(
        &mut self,
        out: &mpsc::Sender<Result<pb::Delivery, Status>>,
    ) -> Result<bool, Status> {
        while self.in_flight.len() < self.request.max_in_flight {
            let batch = self
                .gateway
                .store
                .read_after(self.scan_pos, READ_BATCH)
                .await
                .map_err(ApiError::from)?;
            let Some(through) = batch.through else {
                break;
            };
            let rows = batch.rows;
            let rules = self.gateway.rules();
            let reader = rules
                .registry
                .get(&self.principal.agency.id)
                .cloned()
                .ok_or_else(|| Status::permission_denied("your agency is no longer registered"))?;
            let mut batch = Vec::new();
            let mut audit = Vec::new();
            // Rows refused for integrity are passed over with the rest.
            let mut scanned = through;
            for row in &rows {
                if self.in_flight.len() + batch.len() >= self.request.max_in_flight {
                    scanned = row.sequence - 1;
                    break;
                }
                if !self.request.filter.matches(row) {
                    continue;
                }
                let Some((delivery, decision)) = render(&rules, &reader, row, 1) else {
                    continue;
                };
                audit.extend(audit_entry(&reader, "DELIVERY", row, &decision));
                batch.push(delivery);
            }
            self.gateway
                .store
                .append_audit(&audit)
                .await
                .map_err(ApiError::from)?;
            self.scan_pos = scanned;
            for delivery in batch {
                if out.send(Ok(delivery.clone())).await.is_err() {
                    return Ok(false);
                }
                self.in_flight.insert(
                    delivery.sequence,
                    InFlight {
                        delivery,
                        sent_at: Clock::now(),
                    },
                );
            }
        }
        Ok(true)
    }

    /// Sends again, in sequence order, every delivery whose ack timeout
    /// passed. Returns false when the subscriber is gone.
    async fn redeliver_due(&mut self, out: &mpsc::Sender<Result<pb::Delivery, Status>>) -> bool {
        let now = Clock::now();
        for entry in self.in_flight.values_mut() {
            if entry.sent_at + self.request.ack_timeout > now {
                continue;
            }
            entry.delivery.attempt += 1;
            entry.sent_at = now;
            tracing::debug!(
                notification.sequence = entry.delivery.sequence,
                attempt = entry.delivery.attempt,
                "redelivering unacknowledged notification"
            );
            if out.send(Ok(entry.delivery.clone())).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn persist_cursor(&mut self) -> Result<(), ApiError> {
        let cursor = self
            .in_flight
            .keys()
            .next()
            .map_or(self.scan_pos, |oldest| oldest - 1);
        if cursor > self.persisted {
            self.gateway
                .store
                .advance_subscription(
                    self.principal.agency.id.as_str(),
                    self.request.name.as_str(),
                    cursor,
                )
                .await?;
            self.persisted = cursor;
        }
        Ok(())
    }
}

/// The live sessions, so that a newer connection replaces an older one.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: std::sync::Mutex<SessionsInner>,
}

#[derive(Debug, Default)]
struct SessionsInner {
    next_generation: u64,
    live: std::collections::HashMap<(String, String), (u64, CancellationToken)>,
}

impl Sessions {
    /// Registers a new session of `(owner, name)`, cancelling the previous
    /// one. Its token is a child of the gateway's stop token.
    fn register(
        &self,
        parent: &CancellationToken,
        owner: &str,
        name: &str,
    ) -> (CancellationToken, u64) {
        let token = parent.child_token();
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.next_generation += 1;
        let generation = inner.next_generation;
        if let Some((_, previous)) = inner.live.insert(
            (owner.to_owned(), name.to_owned()),
            (generation, token.clone()),
        ) {
            previous.cancel();
        }
        (token, generation)
    }

    fn unregister(&self, owner: &str, name: &str, generation: u64) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (owner.to_owned(), name.to_owned());
        if inner.live.get(&key).is_some_and(|(g, _)| *g == generation) {
            inner.live.remove(&key);
        }
    }
}
