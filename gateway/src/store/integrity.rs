//! What makes a stored row trustworthy: its content hash, the routing
//! columns the policy uses, and its link in the hash chain.
//!
//! A row is served only when its payload hashes to its `content_hash`, the
//! payload decodes, every routing column the policy reads (sender, id,
//! case, event, confidentiality, recipients, region) parses into its domain
//! type, and each equals the payload's field; the row is handed on with
//! those parsed values (its [`Envelope`]), so nothing after the store
//! parses them again. The `copies` column (the statutory copies the
//! gateway added) must parse too and name neither the sender nor a listed
//! recipient; it is not in the payload, so the chain link covers it
//! instead. When the row before it is at hand, its `chain` must also follow
//! from that row's chain. Nothing here trusts a column on its own.
//!
//! This module never logs content: a failure names the sequence and the
//! field that disagrees, not the values.

use prost::Message;
use sha2::{Digest, Sha256};

use liandong_core::domain::{
    AgencyId, CaseRef, Confidentiality, Envelope, Event, FieldError, NotificationId, Region,
    RuleName, StatutoryCopy,
};
use liandong_core::pb;

/// Length of a SHA-256 digest, the size of a chain link.
pub(crate) const CHAIN_LEN: usize = 32;

/// The chain link of a row: SHA-256 over the previous row's link (32 zero
/// bytes for the first row), the sequence and `received_at` as 8-byte
/// big-endian integers, and the content hash.
pub fn chain_link(
    previous: Option<&[u8]>,
    sequence: u64,
    received_at_micros: i64,
    content_hash: &[u8],
) -> Vec<u8> {
    let mut hasher = Sha256::new();
    match previous {
        Some(previous) => hasher.update(previous),
        None => hasher.update([0u8; CHAIN_LEN]),
    }
    hasher.update(sequence.to_be_bytes());
    hasher.update(received_at_micros.to_be_bytes());
    hasher.update(content_hash);
    hasher.finalize().to_vec()
}

/// The chain link of a row as stored: [`chain_link`] for a row without
/// copies (the formula rows had before copies existed); for a row with
/// copies, SHA-256 over the same inputs followed by SHA-256 of the `copies`
/// column, so a copy added or removed by hand breaks the link.
pub fn row_link(
    previous: Option<&[u8]>,
    sequence: u64,
    received_at_micros: i64,
    content_hash: &[u8],
    copies: &str,
) -> Vec<u8> {
    if copies.is_empty() {
        return chain_link(previous, sequence, received_at_micros, content_hash);
    }
    let mut hasher = Sha256::new();
    match previous {
        Some(previous) => hasher.update(previous),
        None => hasher.update([0u8; CHAIN_LEN]),
    }
    hasher.update(sequence.to_be_bytes());
    hasher.update(received_at_micros.to_be_bytes());
    hasher.update(content_hash);
    hasher.update(Sha256::digest(copies.as_bytes()));
    hasher.finalize().to_vec()
}

/// The columns of a stored row, as read, before anything is trusted.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub(crate) sequence: u64,
    pub(crate) sender: String,
    pub(crate) notification_id: String,
    pub(crate) case_ref: String,
    pub(crate) event: i64,
    pub(crate) confidentiality: i64,
    pub(crate) region: String,
    pub(crate) recipients: String,
    pub(crate) received_at: i64,
    pub(crate) content_hash: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) chain: Option<Vec<u8>>,
    pub(crate) copies: String,
}

/// Why a row may not be served. The text names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The payload does not hash to the stored content hash.
    #[error("payload does not match its content hash")]
    ContentHash,
    /// The payload is not an encoded notification.
    #[error("payload does not decode")]
    Undecodable,
    /// A routing column disagrees with the payload.
    #[error("column {0} disagrees with the payload")]
    Column(&'static str),
    /// A routing column does not hold a valid value of its type (an
    /// unknown level or event, a malformed region or agency id).
    #[error("column {0} does not hold a valid value")]
    Unparseable(&'static str),
    /// The row has no chain link.
    #[error("chain link is missing")]
    ChainMissing,
    /// The chain link does not follow from the previous row.
    #[error("chain link does not follow from the previous row")]
    ChainBroken,
    /// `received_at` is outside the representable range.
    #[error("received_at is out of range")]
    ReceivedAt,
    /// The row's sequence is above the highest ever assigned: it was not
    /// stored by a gateway.
    #[error("sequence is above the high-water mark")]
    AboveHighWater,
}

impl Violation {
    /// True when the row's own content or columns were changed (as opposed
    /// to its place in the chain).
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            Self::ContentHash
                | Self::Undecodable
                | Self::Column(_)
                | Self::Unparseable(_)
                | Self::ReceivedAt
                | Self::AboveHighWater
        )
    }
}

/// The `recipients` column of a need-to-know list: the ids, space-separated.
pub(crate) fn recipients_column(recipients: &[AgencyId]) -> String {
    recipients
        .iter()
        .map(AgencyId::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `copies` column of a list of statutory copies: `<agency>:<rule>`
/// entries, space-separated, in the order added; empty for none.
pub(crate) fn copies_column(copies: &[StatutoryCopy]) -> String {
    copies
        .iter()
        .map(|copy| format!("{}:{}", copy.agency, copy.rule))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a `copies` column; `None` when it is not one the gateway writes
/// (a malformed entry, or an agency named twice).
pub(crate) fn parse_copies(column: &str) -> Option<Vec<StatutoryCopy>> {
    let mut copies: Vec<StatutoryCopy> = Vec::new();
    for entry in column.split(' ').filter(|_| !column.is_empty()) {
        let (agency, rule) = entry.split_once(':')?;
        let copy = StatutoryCopy {
            agency: AgencyId::parse("copies", agency).ok()?,
            rule: RuleName::parse("copies", rule).ok()?,
        };
        if copies.iter().any(|c| c.agency == copy.agency) {
            return None;
        }
        copies.push(copy);
    }
    Some(copies)
}

/// The routing columns of `row` as domain values; the error names the first
/// column that does not parse (never its value).
fn parse_columns(row: &RawRow) -> Result<Envelope, Violation> {
    parse_routing(&RoutingColumns {
        sender: row.sender.clone(),
        notification_id: row.notification_id.clone(),
        case_ref: row.case_ref.clone(),
        event: row.event,
        confidentiality: row.confidentiality,
        region: row.region.clone(),
        recipients: row.recipients.clone(),
        copies: row.copies.clone(),
    })
}

/// The routing columns of a notification row, as stored: what deciding
/// who may see it needs, without its payload.
#[derive(Debug, Clone)]
pub(crate) struct RoutingColumns {
    pub(crate) sender: String,
    pub(crate) notification_id: String,
    pub(crate) case_ref: String,
    pub(crate) event: i64,
    pub(crate) confidentiality: i64,
    pub(crate) region: String,
    pub(crate) recipients: String,
    pub(crate) copies: String,
}

/// Parses routing columns into an envelope (unchecked against any
/// payload: a reader disclosing the row reads it checked).
pub(crate) fn parse_routing(row: &RoutingColumns) -> Result<Envelope, Violation> {
    fn column<T>(name: &'static str, parsed: Result<T, FieldError>) -> Result<T, Violation> {
        parsed.map_err(|_| Violation::Unparseable(name))
    }
    let wire = |value: i64| i32::try_from(value).unwrap_or(i32::MIN);
    Ok(Envelope {
        sender: column("sender", AgencyId::parse("sender", &row.sender))?,
        id: column(
            "notification_id",
            NotificationId::parse_field("notification_id", &row.notification_id),
        )?,
        case_ref: column("case_ref", CaseRef::parse_field("case_ref", &row.case_ref))?,
        event: column("event", Event::from_wire("event", wire(row.event)))?,
        confidentiality: column(
            "confidentiality",
            Confidentiality::from_wire("confidentiality", wire(row.confidentiality)),
        )?,
        region: column("region", Region::parse("region", &row.region))?,
        recipients: row
            .recipients
            .split_whitespace()
            .map(|id| column("recipients", AgencyId::parse("recipients", id)))
            .collect::<Result<_, _>>()?,
        copies: parse_copies(&row.copies).ok_or(Violation::Unparseable("copies"))?,
    })
}

/// Checks a row's content against its hash, parses its routing columns and
/// checks them against the decoded payload; returns the parsed columns.
pub(crate) fn verify_content(row: &RawRow) -> Result<Envelope, Violation> {
    if Sha256::digest(&row.payload).as_slice() != row.content_hash.as_slice() {
        return Err(Violation::ContentHash);
    }
    let decoded =
        pb::Notification::decode(row.payload.as_slice()).map_err(|_| Violation::Undecodable)?;
    let envelope = parse_columns(row)?;
    // The gateway stores the need-to-know list as validated: repeats
    // dropped, first occurrences in order.
    let mut listed: Vec<&str> = Vec::with_capacity(decoded.recipients.len());
    for recipient in &decoded.recipients {
        if !listed.contains(&recipient.as_str()) {
            listed.push(recipient);
        }
    }
    let checks: [(&'static str, bool); 7] = [
        ("sender", decoded.sender == envelope.sender.as_str()),
        (
            "notification_id",
            decoded.notification_id == envelope.id.as_str(),
        ),
        ("case_ref", decoded.case_ref == envelope.case_ref.as_str()),
        ("event", decoded.event == envelope.event.to_wire() as i32),
        (
            "confidentiality",
            decoded.confidentiality == envelope.confidentiality.to_wire() as i32,
        ),
        ("region", decoded.region == envelope.region.as_str()),
        (
            "recipients",
            listed
                .iter()
                .copied()
                .eq(envelope.recipients.iter().map(AgencyId::as_str)),
        ),
    ];
    if let Some((column, _)) = checks.iter().find(|(_, equal)| !equal) {
        return Err(Violation::Column(column));
    }
    // The gateway copies only agencies the sender left out.
    if envelope
        .copies
        .iter()
        .any(|copy| copy.agency == envelope.sender || envelope.recipients.contains(&copy.agency))
    {
        return Err(Violation::Column("copies"));
    }
    Ok(envelope)
}

/// Checks a row's chain link against the previous row's link. `previous`
/// is `None` when the row before is not at hand (the first row, or a gap):
/// then only the presence of a link is checked.
pub(crate) fn verify_link(row: &RawRow, previous: Option<Option<&[u8]>>) -> Result<(), Violation> {
    let Some(chain) = &row.chain else {
        return Err(Violation::ChainMissing);
    };
    if let Some(previous) = previous {
        let expected = row_link(
            previous,
            row.sequence,
            row.received_at,
            &row.content_hash,
            &row.copies,
        );
        if expected != *chain {
            return Err(Violation::ChainBroken);
        }
    }
    Ok(())
}
