//! Validated domain types. Wire structs from `liandong-proto` are converted
//! into these with `TryFrom`, destructuring every field, so a new proto field
//! fails to compile until someone decides what it means.
//!
//! Validation here is syntactic (lengths, alphabets, known enum values,
//! required fields). Whether a recipient is registered or a sender may
//! publish an event is the gateway's decision, not this module's.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

use crate::pb;

#[cfg(test)]
mod tests;

/// The SAN URI prefix that binds a client certificate to an agency.
pub const AGENCY_URI_PREFIX: &str = "urn:liandong:agency:";

/// Most characters a summary may have.
pub const MAX_SUMMARY_CHARS: usize = 500;
/// Most characters a confidentiality note may have.
pub const MAX_NOTE_CHARS: usize = 1000;
/// Most characters a contact may have.
pub const MAX_CONTACT_CHARS: usize = 200;
/// Most recipients one notification may list.
pub const MAX_RECIPIENTS: usize = 64;
/// Most characters of `body.title`, `body.location`, a party's or an
/// informant's name and contact, an attachment's name (one line each).
pub const MAX_BODY_LINE_CHARS: usize = 500;
/// Most characters of `body.description`, `body.legal_basis` and
/// `body.decision` (and of an alert's `legal_basis`): as many as the
/// gateway's default message limit has bytes, so long facts are bounded by
/// that limit first.
pub const MAX_BODY_TEXT_CHARS: usize = 262_144;
/// Most characters of a short code: `body.document_number`, a party's role
/// and identifier, an attachment's media type, a measurement's name, value
/// and unit, an alert's rule, agencies and awaited events.
pub const MAX_BODY_CODE_CHARS: usize = 200;
/// Most entries of `body.parties`, `body.attachments` and
/// `body.related_case_refs` each.
pub const MAX_BODY_ENTRIES: usize = 200;
/// Most entries of `body.measurements` (a statistics report has one per
/// agency and event).
pub const MAX_BODY_MEASUREMENTS: usize = 2_000;

/// A refused field: which one, and why. Never carries the field's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `notification.case_ref`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn check_token(
    field: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    alphabet: &str,
) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if !value.chars().all(allowed) {
        return Err(FieldError::new(
            field,
            format!("may only contain {alphabet}"),
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr, $alphabet:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` as this identifier; `field` names it in the error.
            pub fn parse_field(field: &str, value: &str) -> Result<Self, FieldError> {
                check_token(field, value, $max, $allowed, $alphabet)?;
                Ok(Self(value.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                Self::parse_field(stringify!($name), s)
            }
        }
    };
}

string_id!(
    /// A registered agency's id: 1 to 64 characters of `[a-z0-9-]`, starting
    /// with a letter, e.g. `cz-psb-xiangyuan`.
    AgencyId,
    64,
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
    "a-z, 0-9 and '-'"
);
string_id!(
    /// A case reference, e.g. `CZ-2026-HW-0042`: 1 to 64 characters of
    /// `[A-Za-z0-9._/-]`.
    CaseRef,
    64,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'),
    "A-Z, a-z, 0-9 and . _ / -"
);
string_id!(
    /// A sender-chosen notification id (the idempotency key): 1 to 128
    /// characters of `[A-Za-z0-9._:-]`.
    NotificationId,
    128,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'),
    "A-Z, a-z, 0-9 and . _ : -"
);
string_id!(
    /// A durable subscription's name, unique per agency: 1 to 64 characters
    /// of `[A-Za-z0-9._-]`.
    SubscriptionName,
    64,
    |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    "A-Z, a-z, 0-9 and . _ -"
);
string_id!(
    /// The name of a policy rule that adds recipients (a copy rule): 1 to
    /// 64 characters of `[a-z0-9-]`, starting with a letter, e.g.
    /// `transfer-copied-to-procuratorate`.
    RuleName,
    64,
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
    "a-z, 0-9 and '-'"
);
string_id!(
    /// A GB/T 2260 administrative division code: six digits, e.g. `140423`.
    Region,
    6,
    |c: char| c.is_ascii_digit(),
    "digits"
);

impl AgencyId {
    /// Validates an agency id, which must also start with a letter.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let id = Self::parse_field(field, value)?;
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(FieldError::new(field, "must start with a letter a-z"));
        }
        Ok(id)
    }

    /// The certificate identity (SAN URI) of this agency by convention.
    pub fn uri(&self) -> String {
        format!("{AGENCY_URI_PREFIX}{}", self.0)
    }
}

impl RuleName {
    /// Validates a rule name, which must also start with a letter.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let name = Self::parse_field(field, value)?;
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(FieldError::new(field, "must start with a letter a-z"));
        }
        Ok(name)
    }
}

/// A recipient the gateway added to a notification under a copy rule of
/// its policy (抄送): a fact of the record, stored with the notification.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatutoryCopy {
    /// The agency that receives the copy.
    pub agency: AgencyId,
    /// The copy rule that added it.
    pub rule: RuleName,
}

impl StatutoryCopy {
    /// The wire form.
    pub fn to_wire(&self) -> pb::StatutoryCopy {
        pb::StatutoryCopy {
            agency: self.agency.to_string(),
            rule: self.rule.to_string(),
        }
    }
}

impl Region {
    /// Validates a region code, which must have exactly six digits.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        let region = Self::parse_field(field, value)?;
        if value.len() != 6 {
            return Err(FieldError::new(field, "must be a six-digit GB/T 2260 code"));
        }
        Ok(region)
    }

    /// True when `other` lies within this region: the same code, or for a
    /// city code (`xxxx00`) any of its districts and counties, or for a
    /// province code (`xx0000`) any code of the province.
    pub fn contains(&self, other: &Region) -> bool {
        let me = self.0.as_bytes();
        let them = other.0.as_bytes();
        if me[2..] == *b"0000" {
            me[..2] == them[..2]
        } else if me[4..] == *b"00" {
            me[..4] == them[..4]
        } else {
            me == them
        }
    }
}

/// How far content may travel, ordered from most open to most closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidentiality {
    /// Everyone, observers included.
    Public,
    /// Member agencies.
    Internal,
    /// Listed recipients and the sender.
    Restricted,
    /// Listed recipients holding that clearance, and the sender.
    Confidential,
}

impl Confidentiality {
    /// Every level, most open first.
    pub const ALL: [Confidentiality; 4] = [
        Self::Public,
        Self::Internal,
        Self::Restricted,
        Self::Confidential,
    ];

    /// Converts a wire value; 0 and unknown numbers are refused.
    pub fn from_wire(field: &str, value: i32) -> Result<Self, FieldError> {
        match pb::Confidentiality::try_from(value) {
            Ok(pb::Confidentiality::Public) => Ok(Self::Public),
            Ok(pb::Confidentiality::Internal) => Ok(Self::Internal),
            Ok(pb::Confidentiality::Restricted) => Ok(Self::Restricted),
            Ok(pb::Confidentiality::Confidential) => Ok(Self::Confidential),
            Ok(pb::Confidentiality::Unspecified) => Err(FieldError::new(
                field,
                "must be set (CONFIDENTIALITY_UNSPECIFIED is refused)",
            )),
            Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> pb::Confidentiality {
        match self {
            Self::Public => pb::Confidentiality::Public,
            Self::Internal => pb::Confidentiality::Internal,
            Self::Restricted => pb::Confidentiality::Restricted,
            Self::Confidential => pb::Confidentiality::Confidential,
        }
    }

    /// The short name used in files and logs: `PUBLIC`, `INTERNAL`, ….
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "PUBLIC",
            Self::Internal => "INTERNAL",
            Self::Restricted => "RESTRICTED",
            Self::Confidential => "CONFIDENTIAL",
        }
    }

    /// True when content at this level needs recipients and a stated reason.
    pub fn needs_recipients(self) -> bool {
        self > Self::Internal
    }
}

impl fmt::Display for Confidentiality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Confidentiality {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        let short = s.strip_prefix("CONFIDENTIALITY_").unwrap_or(s);
        Self::ALL
            .into_iter()
            .find(|level| level.name() == short)
            .ok_or_else(|| {
                FieldError::new(
                    "confidentiality",
                    "must be one of PUBLIC, INTERNAL, RESTRICTED, CONFIDENTIAL",
                )
            })
    }
}

/// An event type known to this build; never `EVENT_TYPE_UNSPECIFIED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Event(pb::EventType);

impl Event {
    /// Converts a wire value; 0 and unknown numbers are refused.
    pub fn from_wire(field: &str, value: i32) -> Result<Self, FieldError> {
        match pb::EventType::try_from(value) {
            Ok(pb::EventType::Unspecified) => Err(FieldError::new(
                field,
                "must be set (EVENT_TYPE_UNSPECIFIED is refused)",
            )),
            Ok(event) => Ok(Self(event)),
            Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> pb::EventType {
        self.0
    }

    /// The short name, e.g. `CASE_TRANSFERRED`.
    pub fn name(self) -> &'static str {
        let full = self.0.as_str_name();
        full.strip_prefix("EVENT_TYPE_").unwrap_or(full)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Event {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        let full = if s.starts_with("EVENT_TYPE_") {
            s.to_owned()
        } else {
            format!("EVENT_TYPE_{s}")
        };
        match pb::EventType::from_str_name(&full) {
            Some(pb::EventType::Unspecified) | None => Err(FieldError::new(
                "event",
                format!("unknown event type {s:?}"),
            )),
            Some(event) => Ok(Self(event)),
        }
    }
}

/// What an agency is in the mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// An environmental protection bureau or branch.
    Environment,
    /// A public security bureau or branch.
    Police,
    /// A people's procuratorate.
    Procuratorate,
    /// Reads public announcements only (e.g. a press office).
    Observer,
    /// Runs the platform; uses the operations service.
    Operator,
}

impl Role {
    /// True for the agencies of the mechanism itself (not observers or
    /// operators).
    pub fn is_member(self) -> bool {
        matches!(self, Self::Environment | Self::Police | Self::Procuratorate)
    }
}

/// A UTC instant with microsecond precision, as stored and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(OffsetDateTime);

impl Instant {
    /// Now, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_unix_micros(OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1000)
            .expect("the clock is within range")
    }

    /// From microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .ok()
            .map(Self)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1000) as i64
    }

    /// Converts a wire timestamp; a missing or out-of-range one is refused.
    pub fn from_wire(field: &str, ts: Option<prost_types::Timestamp>) -> Result<Self, FieldError> {
        let ts = ts.ok_or_else(|| FieldError::new(field, "is required"))?;
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(FieldError::new(field, "nanos must be within 0..1e9"));
        }
        let micros = ts
            .seconds
            .checked_mul(1_000_000)
            .and_then(|s| s.checked_add(i64::from(ts.nanos / 1000)))
            .ok_or_else(|| FieldError::new(field, "is out of range"))?;
        let instant = Self::from_unix_micros(micros)
            .ok_or_else(|| FieldError::new(field, "is out of range"))?;
        if instant.0.year() < 1970 || instant.0.year() > 9999 {
            return Err(FieldError::new(
                field,
                "must be between years 1970 and 9999",
            ));
        }
        Ok(instant)
    }

    /// The wire timestamp.
    pub fn to_wire(self) -> prost_types::Timestamp {
        let micros = self.unix_micros();
        prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
        }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .0
            .format(&time::format_description::well_known::Rfc3339)
        {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

/// A notification whose every field has been checked for form. The sender is
/// deliberately absent: it is whoever the certificate proves.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The sender's idempotency key.
    pub id: NotificationId,
    /// The case it belongs to.
    pub case_ref: CaseRef,
    /// What happened.
    pub event: Event,
    /// How far the content may travel.
    pub confidentiality: Confidentiality,
    /// Need-to-know list, deduplicated, in the order given.
    pub recipients: Vec<AgencyId>,
    /// The stated reason for confidentiality.
    pub confidentiality_note: String,
    /// Where it happened.
    pub region: Region,
    /// When it happened, as the sender states it.
    pub occurred_at: Instant,
    /// One-line summary.
    pub summary: String,
    /// Structured content, kept in wire form.
    pub body: Option<pb::CaseBody>,
    /// The sender the message names, if any; must match the certificate.
    pub claimed_sender: Option<AgencyId>,
    /// Who to ask about it.
    pub contact: String,
    /// Detached signature, kept as sent.
    pub signature: Vec<u8>,
    /// Id of the key that made the signature.
    pub signing_key_id: String,
}

fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), FieldError> {
    if required && value.trim().is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldError::new(field, "contains control characters"));
    }
    Ok(())
}

/// Checks a one-line text field: at most `max` characters, no control
/// character at all (not even a newline or a tab).
fn check_line(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "contains control characters (it is one line: no newline or tab)",
        ));
    }
    Ok(())
}

/// Refuses a list of more than `max` entries.
fn check_entries(field: &str, count: usize, max: usize) -> Result<(), FieldError> {
    if count > max {
        return Err(FieldError::new(
            field,
            format!("has more than {max} entries"),
        ));
    }
    Ok(())
}

/// The free-text fields of a body: bounded, and free of control
/// characters other than newline and tab in multi-line text (none at all
/// in one-line fields).
fn check_body_text(body: &pb::CaseBody) -> Result<(), FieldError> {
    let pb::CaseBody {
        title,
        description,
        location,
        legal_basis,
        decision,
        document_number,
        parties,
        attachments,
        informant,
        related_case_refs,
        measurements,
        announcement: _,
        needs_verification: _,
        alert,
    } = body;
    let at = "notification.body";
    check_line(&format!("{at}.title"), title, MAX_BODY_LINE_CHARS)?;
    check_text(
        &format!("{at}.description"),
        description,
        MAX_BODY_TEXT_CHARS,
        false,
    )?;
    check_line(&format!("{at}.location"), location, MAX_BODY_LINE_CHARS)?;
    check_text(
        &format!("{at}.legal_basis"),
        legal_basis,
        MAX_BODY_TEXT_CHARS,
        false,
    )?;
    check_text(
        &format!("{at}.decision"),
        decision,
        MAX_BODY_TEXT_CHARS,
        false,
    )?;
    check_line(
        &format!("{at}.document_number"),
        document_number,
        MAX_BODY_CODE_CHARS,
    )?;
    check_entries(&format!("{at}.parties"), parties.len(), MAX_BODY_ENTRIES)?;
    for (i, party) in parties.iter().enumerate() {
        let pb::Party {
            role,
            name,
            identifier,
            contact,
        } = party;
        let field = format!("{at}.parties[{i}]");
        check_line(&format!("{field}.role"), role, MAX_BODY_CODE_CHARS)?;
        check_line(&format!("{field}.name"), name, MAX_BODY_LINE_CHARS)?;
        check_line(
            &format!("{field}.identifier"),
            identifier,
            MAX_BODY_CODE_CHARS,
        )?;
        check_line(&format!("{field}.contact"), contact, MAX_BODY_LINE_CHARS)?;
    }
    check_entries(
        &format!("{at}.attachments"),
        attachments.len(),
        MAX_BODY_ENTRIES,
    )?;
    for (i, attachment) in attachments.iter().enumerate() {
        let pb::Attachment {
            name,
            media_type,
            sha256: _,
            size_bytes: _,
        } = attachment;
        let field = format!("{at}.attachments[{i}]");
        check_line(&format!("{field}.name"), name, MAX_BODY_LINE_CHARS)?;
        check_line(
            &format!("{field}.media_type"),
            media_type,
            MAX_BODY_CODE_CHARS,
        )?;
    }
    if let Some(pb::Informant { name, contact }) = informant {
        check_line(&format!("{at}.informant.name"), name, MAX_BODY_LINE_CHARS)?;
        check_line(
            &format!("{at}.informant.contact"),
            contact,
            MAX_BODY_LINE_CHARS,
        )?;
    }
    check_entries(
        &format!("{at}.related_case_refs"),
        related_case_refs.len(),
        MAX_BODY_ENTRIES,
    )?;
    check_entries(
        &format!("{at}.measurements"),
        measurements.len(),
        MAX_BODY_MEASUREMENTS,
    )?;
    for (i, measurement) in measurements.iter().enumerate() {
        let pb::Measurement { name, value, unit } = measurement;
        let field = format!("{at}.measurements[{i}]");
        check_line(&format!("{field}.name"), name, MAX_BODY_CODE_CHARS)?;
        check_line(&format!("{field}.value"), value, MAX_BODY_CODE_CHARS)?;
        check_line(&format!("{field}.unit"), unit, MAX_BODY_CODE_CHARS)?;
    }
    if let Some(alert) = alert {
        let pb::SupervisionAlert {
            rule,
            legal_basis,
            started_by: _,
            started_at: _,
            due_at: _,
            late_agency,
            supervisor,
            awaited,
        } = alert;
        let field = format!("{at}.alert");
        check_line(&format!("{field}.rule"), rule, MAX_BODY_CODE_CHARS)?;
        check_text(
            &format!("{field}.legal_basis"),
            legal_basis,
            MAX_BODY_TEXT_CHARS,
            false,
        )?;
        check_line(
            &format!("{field}.late_agency"),
            late_agency,
            MAX_BODY_CODE_CHARS,
        )?;
        check_line(
            &format!("{field}.supervisor"),
            supervisor,
            MAX_BODY_CODE_CHARS,
        )?;
        check_line(&format!("{field}.awaited"), awaited, MAX_BODY_CODE_CHARS)?;
    }
    Ok(())
}

/// The events that carry `body.announcement`: a draft, its answers and
/// its release.
const ANNOUNCEMENT_EVENTS: [pb::EventType; 4] = [
    pb::EventType::JointAnnouncement,
    pb::EventType::AnnouncementApproved,
    pb::EventType::AnnouncementRejected,
    pb::EventType::AnnouncementReleased,
];

fn check_body(body: &pb::CaseBody, event: Event) -> Result<(), FieldError> {
    check_body_text(body)?;
    let pb::CaseBody {
        title: _,
        description: _,
        location: _,
        legal_basis: _,
        decision: _,
        document_number: _,
        parties: _,
        attachments,
        informant: _,
        related_case_refs,
        measurements: _,
        announcement,
        needs_verification: _,
        alert: _,
    } = body;
    for (i, attachment) in attachments.iter().enumerate() {
        check_digest(
            &format!("notification.body.attachments[{i}].sha256"),
            &attachment.sha256,
        )?;
    }
    if let Some(announcement) = announcement {
        let field = "notification.body.announcement";
        if !ANNOUNCEMENT_EVENTS.contains(&event.to_wire()) {
            return Err(FieldError::new(
                field,
                format!("is only for announcements, not {event}"),
            ));
        }
        if announcement.release_at.is_some() {
            Instant::from_wire(&format!("{field}.release_at"), announcement.release_at)?;
        }
        let refs = announcement
            .draft
            .iter()
            .map(|draft| (format!("{field}.draft"), draft))
            .chain(
                announcement
                    .approvals
                    .iter()
                    .enumerate()
                    .map(|(i, approval)| (format!("{field}.approvals[{i}]"), approval)),
            );
        for (field, reference) in refs {
            check_reference(&field, reference)?;
        }
    }
    for (i, case_ref) in related_case_refs.iter().enumerate() {
        CaseRef::parse_field(
            &format!("notification.body.related_case_refs[{i}]"),
            case_ref,
        )?;
    }
    Ok(())
}

/// A SHA-256 digest as the contract writes it: 64 lower-case hex digits.
fn check_digest(field: &str, digest: &str) -> Result<(), FieldError> {
    if digest.len() != 64
        || !digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(FieldError::new(field, "must be 64 lower-case hex digits"));
    }
    Ok(())
}

/// A reference to a stored notification: sender, id and digest, each
/// well formed.
fn check_reference(field: &str, reference: &pb::NotificationRef) -> Result<(), FieldError> {
    AgencyId::parse(&format!("{field}.sender"), &reference.sender)?;
    NotificationId::parse_field(
        &format!("{field}.notification_id"),
        &reference.notification_id,
    )?;
    check_digest(&format!("{field}.sha256"), &reference.sha256)
}

impl TryFrom<pb::Notification> for Notification {
    type Error = FieldError;

    fn try_from(wire: pb::Notification) -> Result<Self, FieldError> {
        let pb::Notification {
            notification_id,
            case_ref,
            event,
            confidentiality,
            recipients,
            confidentiality_note,
            region,
            occurred_at,
            summary,
            body,
            sender,
            contact,
            signature,
            signing_key_id,
        } = wire;
        let id = NotificationId::parse_field("notification.notification_id", &notification_id)?;
        let case_ref = CaseRef::parse_field("notification.case_ref", &case_ref)?;
        let event = Event::from_wire("notification.event", event)?;
        let confidentiality =
            Confidentiality::from_wire("notification.confidentiality", confidentiality)?;
        if recipients.len() > MAX_RECIPIENTS {
            return Err(FieldError::new(
                "notification.recipients",
                format!("lists more than {MAX_RECIPIENTS} agencies"),
            ));
        }
        let mut parsed_recipients: Vec<AgencyId> = Vec::with_capacity(recipients.len());
        for (i, recipient) in recipients.iter().enumerate() {
            let id = AgencyId::parse(&format!("notification.recipients[{i}]"), recipient)?;
            if !parsed_recipients.contains(&id) {
                parsed_recipients.push(id);
            }
        }
        check_text(
            "notification.confidentiality_note",
            &confidentiality_note,
            MAX_NOTE_CHARS,
            false,
        )?;
        if confidentiality.needs_recipients() {
            if parsed_recipients.is_empty() {
                return Err(FieldError::new(
                    "notification.recipients",
                    format!("are required for {confidentiality} content"),
                ));
            }
            if confidentiality_note.trim().is_empty() {
                return Err(FieldError::new(
                    "notification.confidentiality_note",
                    format!("a stated reason is required for {confidentiality} content"),
                ));
            }
        }
        let region = Region::parse("notification.region", &region)?;
        let occurred_at = Instant::from_wire("notification.occurred_at", occurred_at)?;
        check_text("notification.summary", &summary, MAX_SUMMARY_CHARS, true)?;
        if let Some(body) = &body {
            check_body(body, event)?;
        }
        let claimed_sender = if sender.is_empty() {
            None
        } else {
            Some(AgencyId::parse("notification.sender", &sender)?)
        };
        check_text("notification.contact", &contact, MAX_CONTACT_CHARS, false)?;
        if signature.len() > 512 {
            return Err(FieldError::new(
                "notification.signature",
                "is longer than 512 bytes",
            ));
        }
        check_text("notification.signing_key_id", &signing_key_id, 128, false)?;
        Ok(Self {
            id,
            case_ref,
            event,
            confidentiality,
            recipients: parsed_recipients,
            confidentiality_note,
            region,
            occurred_at,
            summary,
            body,
            claimed_sender,
            contact,
            signature,
            signing_key_id,
        })
    }
}

impl From<Notification> for pb::Notification {
    fn from(n: Notification) -> Self {
        pb::Notification {
            notification_id: n.id.0,
            case_ref: n.case_ref.0,
            event: n.event.to_wire() as i32,
            confidentiality: n.confidentiality.to_wire() as i32,
            recipients: n.recipients.into_iter().map(|r| r.0).collect(),
            confidentiality_note: n.confidentiality_note,
            region: n.region.0,
            occurred_at: Some(n.occurred_at.to_wire()),
            summary: n.summary,
            body: n.body,
            sender: n.claimed_sender.map(|s| s.0).unwrap_or_default(),
            contact: n.contact,
            signature: n.signature,
            signing_key_id: n.signing_key_id,
        }
    }
}

/// What routing and the delivery policy read of a notification: who sent
/// it, which one it is, its case, kind, level, region and need-to-know list
/// — every field already validated, none of the content — and the
/// recipients the gateway added to it under its copy rules. Parsed once
/// where a notification enters (a publish, a stored row), then passed on as
/// is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The proven sender (from its certificate, never from the message).
    pub sender: AgencyId,
    /// The sender's idempotency key.
    pub id: NotificationId,
    /// The case it belongs to.
    pub case_ref: CaseRef,
    /// What happened.
    pub event: Event,
    /// How far the content may travel.
    pub confidentiality: Confidentiality,
    /// Where it happened.
    pub region: Region,
    /// Need-to-know list, deduplicated, in the order given.
    pub recipients: Vec<AgencyId>,
    /// Recipients the gateway added under its copy rules: never the sender
    /// nor a listed recipient, each agency once. Not part of the signed
    /// notification; stored beside it as a fact of the record.
    pub copies: Vec<StatutoryCopy>,
}

impl Envelope {
    /// The envelope of `notification` as published by `sender`, without
    /// copies (the gateway adds them when it accepts the notification).
    pub fn of(sender: AgencyId, notification: &Notification) -> Self {
        Self {
            sender,
            id: notification.id.clone(),
            case_ref: notification.case_ref.clone(),
            event: notification.event,
            confidentiality: notification.confidentiality,
            region: notification.region.clone(),
            recipients: notification.recipients.clone(),
            copies: Vec::new(),
        }
    }

    /// The copy rule under which `agency` receives this notification, if
    /// the gateway added it as a statutory copy.
    pub fn copy_for(&self, agency: &AgencyId) -> Option<&StatutoryCopy> {
        self.copies.iter().find(|copy| copy.agency == *agency)
    }
}
