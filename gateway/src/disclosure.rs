//! What a reader receives of a stored notification, and its audit entry:
//! the one disclosure path, used by subscription delivery
//! (`routing::session`) and by `GetCase` (`api`).
//!
//! For each (reader, stored row) the policy in force decides `Full`,
//! `Withheld` or `Nothing` (`policy::decide`); a full disclosure loses the
//! body fields above the reader's clearance (`policy::redact`) unless the
//! reader is the sender; a withheld one becomes a stub without content
//! carrying the sender's *registered* contact (`policy::withheld_stub`).
//! A full disclosure lists the statutory copies the gateway added to the
//! notification, and names the copy rule when the reader receives it as
//! one of them.
//! Every disclosure of non-public content and every stub comes with the
//! audit entry that must be written before it leaves (`audit`).
//!
//! This module never decides visibility itself (it asks `policy`), never
//! writes the audit log or sends anything (its callers do, audit first),
//! and never logs content.

use prost::Message;

use liandong_core::domain::{AgencyId, StatutoryCopy};
use liandong_core::pb;
use liandong_core::registry::Agency;

use crate::audit;
use crate::policy::{self, Decision, Rules, redact};
use crate::store::{AuditEntry, StoredNotification};

/// Where a disclosure goes, which decides how it is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A subscription frame ([`audit::delivery`]).
    Delivery,
    /// A `GetCase` timeline entry ([`audit::case_read`]).
    CaseRead,
}

/// One stored notification as disclosed to one reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Disclosure {
    /// What the reader receives.
    pub frame: pb::Delivery,
    /// The policy's decision behind it.
    pub decision: Decision,
    /// The audit entry to write before the frame leaves, when this
    /// disclosure is recorded.
    pub audit: Option<AuditEntry>,
}

/// What `reader` receives of `stored` under `rules` through `channel`, with
/// its audit entry, or `None` when it receives nothing.
pub fn disclose(
    rules: &Rules,
    reader: &Agency,
    stored: &StoredNotification,
    attempt: u32,
    channel: Channel,
) -> Option<Disclosure> {
    let (frame, decision) = render(rules, reader, stored, attempt)?;
    let audit = match channel {
        Channel::Delivery => audit::delivery(reader, stored, &decision),
        Channel::CaseRead => audit::case_read(reader, stored, &decision),
    };
    Some(Disclosure {
        frame,
        decision,
        audit,
    })
}

/// The most encoded bytes of timeline entries one `GetCase` page carries
/// (a single entry larger than this comes alone on its page).
pub const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// One `GetCase` page being filled: the entries a reader may see, in
/// order, up to a number of entries and [`PAGE_BYTES`], with the audit
/// entries to write before the page is returned.
#[derive(Debug, Clone, PartialEq)]
pub struct CasePage {
    /// The entries, in sequence order.
    pub timeline: Vec<pb::Delivery>,
    /// Their audit entries.
    pub audit: Vec<AuditEntry>,
    /// True when an entry the reader may see was left for the next page.
    pub more: bool,
    /// The most entries this page takes.
    max_entries: usize,
    /// Encoded size of `timeline` within a `CaseView`.
    bytes: usize,
}

impl CasePage {
    /// An empty page of at most `max_entries` entries.
    pub fn new(max_entries: usize) -> Self {
        Self {
            timeline: Vec::new(),
            audit: Vec::new(),
            more: false,
            max_entries,
            bytes: 0,
        }
    }

    /// The sequence of the page's last entry.
    pub fn last_sequence(&self) -> Option<u64> {
        self.timeline.last().map(|entry| entry.sequence)
    }

    /// Encoded size of the page's entries within a `CaseView`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Adds to `page` what `reader` may see of a case's stored `rows` (in
/// order), until the page is full: the first visible row that does not fit
/// sets `page.more` and ends the page; rows the reader may not see are
/// passed over. Nothing is added once `page.more` is set.
pub fn case_timeline(
    rules: &Rules,
    reader: &Agency,
    rows: &[StoredNotification],
    page: &mut CasePage,
) {
    for row in rows {
        if page.more {
            return;
        }
        let Some(disclosure) = disclose(rules, reader, row, 0, Channel::CaseRead) else {
            continue;
        };
        let size = entry_len(&disclosure.frame);
        let full = page.timeline.len() >= page.max_entries
            || (!page.timeline.is_empty() && page.bytes + size > PAGE_BYTES);
        if full {
            page.more = true;
            return;
        }
        page.bytes += size;
        page.audit.extend(disclosure.audit);
        page.timeline.push(disclosure.frame);
    }
}

/// Encoded size of one `CaseView.timeline` entry: tag, length, message.
fn entry_len(frame: &pb::Delivery) -> usize {
    let len = frame.encoded_len();
    1 + prost::length_delimiter_len(len) + len
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
    let mut copied_by_rule = String::new();
    let mut copies = Vec::new();
    let (notification, withheld, withheld_reason, redacted_fields) = match &decision {
        Decision::Full(_) => {
            let mut full = full;
            let redacted = if stored.envelope.sender == reader.id {
                Vec::new()
            } else {
                redact::strip_above(&mut full, reader.clearance)
            };
            if let Some(copy) = stored.envelope.copy_for(&reader.id) {
                copied_by_rule = copy.rule.to_string();
            }
            copies = stored
                .envelope
                .copies
                .iter()
                .map(StatutoryCopy::to_wire)
                .collect();
            (full, false, String::new(), redacted)
        }
        Decision::Withheld(reason) => {
            let contact = contact_of(rules, &stored.envelope.sender);
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
        copied_by_rule,
        copies,
    };
    Some((delivery, decision))
}

/// The registered contact of an agency, for withheld stubs (empty when it
/// is not registered).
pub fn contact_of(rules: &Rules, agency: &AgencyId) -> String {
    rules
        .registry
        .get(agency)
        .map(|a| a.contact.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
