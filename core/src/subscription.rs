//! What a durable subscription asks for: its filter and where it starts.
//!
//! A [`SubscriptionFilter`] is always normalised (lists sorted by value and
//! deduplicated, an empty case-reference prefix meaning "any case"), so the
//! same filter written in another order is the same filter and has the same
//! [`canonical_bytes`](SubscriptionFilter::canonical_bytes). The gateway
//! stores those bytes with a subscription and compares them when it is
//! opened again; the adapter's `tail` flags and `[[subscription]]` tables
//! build the same value, so the two sides cannot drift apart.
//!
//! This module only validates and compares values: it never reads the
//! store, never decides visibility (that is the gateway's policy) and
//! performs no I/O.

use std::fmt;
use std::str::FromStr;

use prost::Message;

use crate::domain::{AgencyId, CaseRef, Envelope, Event, FieldError, Region};
use crate::pb;

#[cfg(test)]
mod tests;

/// What a subscription wants: every non-empty criterion must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionFilter {
    /// Wanted event types, sorted and deduplicated; empty: any.
    events: Vec<Event>,
    /// Wanted case-reference prefix; `None`: any case.
    case_ref_prefix: Option<CaseRef>,
    /// Wanted senders, sorted and deduplicated; empty: any.
    senders: Vec<AgencyId>,
    /// Wanted regions (each with the codes within it), sorted and
    /// deduplicated; empty: any.
    regions: Vec<Region>,
}

impl SubscriptionFilter {
    /// The filter of these criteria, normalised: lists sorted by value and
    /// deduplicated.
    pub fn new(
        events: impl IntoIterator<Item = Event>,
        case_ref_prefix: Option<CaseRef>,
        senders: impl IntoIterator<Item = AgencyId>,
        regions: impl IntoIterator<Item = Region>,
    ) -> Self {
        fn normalised<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
            let mut items: Vec<T> = items.into_iter().collect();
            items.sort();
            items.dedup();
            items
        }
        Self {
            events: normalised(events),
            case_ref_prefix,
            senders: normalised(senders),
            regions: normalised(regions),
        }
    }

    /// Validates and normalises a wire filter; `field` names it in errors
    /// (e.g. `open.filter`, giving `open.filter.senders[1]`).
    pub fn from_wire(field: &str, wire: pb::SubscriptionFilter) -> Result<Self, FieldError> {
        let pb::SubscriptionFilter {
            events,
            case_ref_prefix,
            senders,
            regions,
        } = wire;
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| Event::from_wire(&format!("{field}.events[{i}]"), e))
            .collect::<Result<Vec<_>, _>>()?;
        let case_ref_prefix = match case_ref_prefix.as_str() {
            "" => None,
            prefix => Some(CaseRef::parse_field(
                &format!("{field}.case_ref_prefix"),
                prefix,
            )?),
        };
        let senders = senders
            .iter()
            .enumerate()
            .map(|(i, s)| AgencyId::parse(&format!("{field}.senders[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let regions = regions
            .iter()
            .enumerate()
            .map(|(i, r)| Region::parse(&format!("{field}.regions[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(events, case_ref_prefix, senders, regions))
    }

    /// The normalised wire form.
    pub fn to_wire(&self) -> pb::SubscriptionFilter {
        pb::SubscriptionFilter {
            events: self.events.iter().map(|e| e.to_wire() as i32).collect(),
            case_ref_prefix: self.case_ref_prefix().to_owned(),
            senders: self.senders.iter().map(|s| s.as_str().to_owned()).collect(),
            regions: self.regions.iter().map(|r| r.as_str().to_owned()).collect(),
        }
    }

    /// The bytes stored with a subscription and compared when it is opened
    /// again: the encoded normalised wire form. Two filters are the same
    /// filter exactly when these bytes are equal.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.to_wire().encode_to_vec()
    }

    /// The wanted case-reference prefix; `""` when any case is wanted.
    pub fn case_ref_prefix(&self) -> &str {
        self.case_ref_prefix.as_ref().map_or("", CaseRef::as_str)
    }

    /// True when the filter wants a notification of `event` about
    /// `case_ref`, sent by `sender`, in `region`. A region criterion
    /// matches the region itself and, for a city or province code, every
    /// code within it.
    pub fn matches(
        &self,
        event: Event,
        case_ref: &CaseRef,
        sender: &AgencyId,
        region: &Region,
    ) -> bool {
        (self.events.is_empty() || self.events.contains(&event))
            && case_ref.as_str().starts_with(self.case_ref_prefix())
            && (self.senders.is_empty() || self.senders.contains(sender))
            && (self.regions.is_empty() || self.regions.iter().any(|r| r.contains(region)))
    }

    /// True when the filter wants the notification with this envelope.
    pub fn wants(&self, envelope: &Envelope) -> bool {
        self.matches(
            envelope.event,
            &envelope.case_ref,
            &envelope.sender,
            &envelope.region,
        )
    }
}

/// Where a new subscription starts. An existing subscription resumes after
/// its last acknowledged sequence whatever its opener asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Everything stored so far, then new notifications.
    #[default]
    Beginning,
    /// Only notifications stored after the subscription is created.
    Now,
    /// Notifications with a sequence greater than this one.
    After(u64),
}

impl Start {
    /// Validates a wire start position; absent means [`Start::Beginning`].
    /// `field` names it in errors (e.g. `open.start`).
    pub fn from_wire(field: &str, wire: Option<pb::StartPosition>) -> Result<Self, FieldError> {
        use pb::start_position::Position;
        match wire.and_then(|s| s.position) {
            None | Some(Position::Beginning(true)) => Ok(Self::Beginning),
            Some(Position::Now(true)) => Ok(Self::Now),
            Some(Position::AfterSequence(n)) => Ok(Self::After(n)),
            Some(Position::Beginning(false) | Position::Now(false)) => {
                Err(FieldError::new(field, "a chosen position must be true"))
            }
        }
    }

    /// The wire form.
    pub fn to_wire(self) -> pb::StartPosition {
        use pb::start_position::Position;
        let position = match self {
            Self::Beginning => Position::Beginning(true),
            Self::Now => Position::Now(true),
            Self::After(sequence) => Position::AfterSequence(sequence),
        };
        pb::StartPosition {
            position: Some(position),
        }
    }
}

/// As written in a config file or on the command line: `beginning`, `now`
/// or `after:N`.
impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Beginning => f.write_str("beginning"),
            Self::Now => f.write_str("now"),
            Self::After(sequence) => write!(f, "after:{sequence}"),
        }
    }
}

/// A start position that is not `beginning`, `now` or `after:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected beginning, now or after:N (N a sequence number), not {0:?}")]
pub struct StartError(String);

impl FromStr for Start {
    type Err = StartError;
    fn from_str(s: &str) -> Result<Self, StartError> {
        match s {
            "beginning" => Ok(Self::Beginning),
            "now" => Ok(Self::Now),
            _ => s
                .strip_prefix("after:")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(Self::After)
                .ok_or_else(|| StartError(s.to_owned())),
        }
    }
}
