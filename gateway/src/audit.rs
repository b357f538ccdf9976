//! What the audit log records, and the one builder for each kind of entry.
//!
//! Every disclosure of non-public content (a delivered frame, a `GetCase`
//! timeline entry), every withheld stub, every refused request or TLS
//! handshake, every reload, every stored notification and every moved
//! subscription cursor is recorded under an [`Action`]. The log is a hash
//! chain with signed checkpoints (`store::audit`, [`checkpoints`];
//! `docs/AUDIT.md`). The builders here decide what an entry
//! holds; callers decide when it is written (before what it records leaves
//! the gateway).
//!
//! An entry names agencies, sequences, notification ids, decisions, rules
//! and status codes; it never holds notification content. This module
//! writes nothing itself.

use liandong_core::domain::Confidentiality;
use liandong_core::registry::Agency;

use crate::error::ApiError;
use crate::identity::{Caller, Principal};
use crate::policy::Decision;
use crate::refusals::Rpc;
use crate::store::{AuditEntry, StoredNotification};

pub mod checkpoints;

/// What an audit entry records. Stored as [`Action::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A subscription frame was sent (full, or a withheld stub).
    Delivery,
    /// A `GetCase` timeline entry was returned.
    CaseRead,
    /// A `Publish` or `PublishStream` request was refused.
    PublishRefused,
    /// A `Subscribe` stream was refused.
    SubscribeRefused,
    /// A `GetCase` request was refused.
    CaseReadRefused,
    /// A `Supervision` request (`ListSignals`, `GetReport`) was refused.
    SupervisionRefused,
    /// A TLS handshake was refused (bad, revoked or unknown certificate,
    /// not TLS at all, timed out).
    TlsRefused,
    /// The registry, policy, TLS material or mechanism files were loaded
    /// again (`decision` says whether they were put in force).
    Reload,
    /// A notification was stored (written in the publish transaction).
    Published,
    /// A subscription's cursor moved (written in the cursor's
    /// transaction).
    Ack,
    /// An operator disabled an agency (written in the transaction that
    /// stores its state).
    AgencyDisabled,
    /// An operator enabled a disabled agency again (same transaction).
    AgencyEnabled,
    /// An operator moved a subscription's acknowledged position (written in
    /// the cursor's transaction).
    SubscriptionSeek,
    /// An `Operations` request was refused (not an operator, an unknown
    /// caller, a bad field).
    OperationsRefused,
    /// An operator raised the high-water mark past sequences a restored
    /// store never saw (`fence-sequences`; written in the fence's
    /// transaction).
    SequencesFenced,
}

impl Action {
    /// Every action, in the order above.
    pub const ALL: [Self; 15] = [
        Self::Delivery,
        Self::CaseRead,
        Self::PublishRefused,
        Self::SubscribeRefused,
        Self::CaseReadRefused,
        Self::SupervisionRefused,
        Self::TlsRefused,
        Self::Reload,
        Self::Published,
        Self::Ack,
        Self::AgencyDisabled,
        Self::AgencyEnabled,
        Self::SubscriptionSeek,
        Self::OperationsRefused,
        Self::SequencesFenced,
    ];

    /// The name stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivery => "DELIVERY",
            Self::CaseRead => "CASE_READ",
            Self::PublishRefused => "PUBLISH_REFUSED",
            Self::SubscribeRefused => "SUBSCRIBE_REFUSED",
            Self::CaseReadRefused => "CASE_READ_REFUSED",
            Self::SupervisionRefused => "SUPERVISION_REFUSED",
            Self::TlsRefused => "TLS_REFUSED",
            Self::Reload => "RELOAD",
            Self::Published => "PUBLISHED",
            Self::Ack => "ACK",
            Self::AgencyDisabled => "AGENCY_DISABLED",
            Self::AgencyEnabled => "AGENCY_ENABLED",
            Self::SubscriptionSeek => "SUBSCRIPTION_SEEK",
            Self::OperationsRefused => "OPERATIONS_REFUSED",
            Self::SequencesFenced => "SEQUENCES_FENCED",
        }
    }

    /// The action stored under `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }

    /// The action recording a refusal of `rpc`; a request to no known RPC
    /// is recorded as a refused publish.
    pub fn refused(rpc: Option<Rpc>) -> Self {
        match rpc {
            None | Some(Rpc::Publish | Rpc::PublishStream) => Self::PublishRefused,
            Some(Rpc::Subscribe) => Self::SubscribeRefused,
            Some(Rpc::GetCase) => Self::CaseReadRefused,
            Some(Rpc::ListSignals | Rpc::GetReport) => Self::SupervisionRefused,
            Some(Rpc::Operations) => Self::OperationsRefused,
        }
    }
}

/// The entry recording that a subscription frame of `stored` was sent to
/// `reader` under `decision`, if that disclosure is recorded.
pub fn delivery(
    reader: &Agency,
    stored: &StoredNotification,
    decision: &Decision,
) -> Option<AuditEntry> {
    disclosure(Action::Delivery, reader, stored, decision)
}

/// The entry recording that `GetCase` returned `stored` to `reader` under
/// `decision`, if that disclosure is recorded.
pub fn case_read(
    reader: &Agency,
    stored: &StoredNotification,
    decision: &Decision,
) -> Option<AuditEntry> {
    disclosure(Action::CaseRead, reader, stored, decision)
}

/// Every full disclosure of non-public content and every withheld stub is
/// recorded; a full disclosure of public content, and nothing, are not.
fn disclosure(
    action: Action,
    reader: &Agency,
    stored: &StoredNotification,
    decision: &Decision,
) -> Option<AuditEntry> {
    let reason = match decision {
        Decision::Full(rule) => {
            if stored.envelope.confidentiality == Confidentiality::Public {
                return None;
            }
            rule.to_string()
        }
        Decision::Withheld(reason) => reason.clone(),
        Decision::Nothing => return None,
    };
    Some(AuditEntry {
        agency: reader.id.to_string(),
        action: action.as_str(),
        sequence: Some(stored.sequence),
        sender: stored.envelope.sender.to_string(),
        notification_id: stored.envelope.id.to_string(),
        decision: decision.name().to_owned(),
        reason,
        peer: None,
    })
}

/// The entry recording that a publish by `principal` was refused with
/// `error`; `None` when the error is a failure of the gateway rather than a
/// refusal. `notification_id` is the refused notification's, as sent.
pub fn publish_refused(
    principal: &Principal,
    notification_id: &str,
    error: &ApiError,
) -> Option<AuditEntry> {
    let code = error.refusal_code()?;
    let agency = principal.agency.id.to_string();
    Some(AuditEntry {
        agency: truncate(&agency, 256),
        action: Action::PublishRefused.as_str(),
        sequence: None,
        sender: agency,
        notification_id: truncate(notification_id, 128),
        decision: code.to_owned(),
        reason: error.to_string(),
        peer: None,
    })
}

/// The entry recording that a handler refused a call to `rpc` from
/// `caller` with `error` (an unknown caller, a cap reached, a subscription
/// or case request refused); `None` when the error is a failure of the
/// gateway rather than a refusal.
pub fn refused(rpc: Option<Rpc>, caller: &Caller, error: &ApiError) -> Option<AuditEntry> {
    let code = error.refusal_code()?;
    Some(AuditEntry {
        agency: truncate(&caller.audit_name(), 256),
        action: Action::refused(rpc).as_str(),
        sequence: None,
        sender: String::new(),
        notification_id: String::new(),
        decision: code.to_owned(),
        reason: truncate(&error.to_string(), 1024),
        peer: None,
    })
}

/// The entry recording that a `Supervision` call from `caller` was
/// refused with `error` (not a procuratorate or operator, a bad field, an
/// unknown caller); `None` when the gateway failed rather than refused.
pub fn supervision_refused(caller: &Caller, error: &ApiError) -> Option<AuditEntry> {
    refused(Some(Rpc::ListSignals), caller, error)
}

/// The entry recording that an `Operations` call from `caller` was
/// refused with `error` (not an operator, a bad field, an unknown caller);
/// `None` when the gateway failed rather than refused.
pub fn operations_refused(caller: &Caller, error: &ApiError) -> Option<AuditEntry> {
    refused(Some(Rpc::Operations), caller, error)
}

/// The entry recording that a call to `rpc` from `caller` was refused
/// before any handler ran (undecodable, or over the size limit), with the
/// status code's name and the codec's message (which names fields and
/// sizes, never content).
pub fn refused_before_handler(
    rpc: Option<Rpc>,
    caller: &Caller,
    code: &'static str,
    message: &str,
) -> AuditEntry {
    let sender = match caller {
        Caller::Agency(principal) => principal.agency.id.to_string(),
        Caller::Refused { .. } => String::new(),
    };
    AuditEntry {
        agency: truncate(&caller.audit_name(), 256),
        action: Action::refused(rpc).as_str(),
        sequence: None,
        sender,
        notification_id: String::new(),
        decision: code.to_owned(),
        reason: format!("undecodable request: {message}"),
        peer: None,
    }
}

/// The entry recording that the TLS handshake of a connection from `peer`
/// was refused, and why (rustls' reason, "timed out", "not TLS").
pub fn tls_refused(peer: std::net::SocketAddr, reason: &str) -> AuditEntry {
    AuditEntry {
        agency: truncate(&peer.to_string(), 256),
        action: Action::TlsRefused.as_str(),
        sequence: None,
        sender: String::new(),
        notification_id: String::new(),
        decision: "REFUSED".to_owned(),
        reason: truncate(reason, 1024),
        peer: Some(peer),
    }
}

/// The entry recording a reload of `what` (e.g. "registry, policy, TLS"):
/// `applied` when it was put in force, otherwise refused with `reason`.
pub fn reload(what: &str, applied: bool, reason: &str) -> AuditEntry {
    AuditEntry {
        agency: "operator".to_owned(),
        action: Action::Reload.as_str(),
        sequence: None,
        sender: String::new(),
        notification_id: String::new(),
        decision: if applied { "APPLIED" } else { "REFUSED" }.to_owned(),
        reason: truncate(&format!("{what}: {reason}"), 1024),
        peer: None,
    }
}

/// The entry recording a sequence fence: the sequences `first..=last`
/// will never be assigned (none when `last < first`: the mark stays at
/// `last`), because of the operator's `reason`. `sequence` holds the new
/// high-water mark. `verify-store` rebuilds this entry from the stored
/// fence and compares it with the audit row.
pub fn sequences_fenced(first: u64, last: u64, reason: &str) -> AuditEntry {
    let what = if first <= last {
        format!("sequences {first}-{last} fenced")
    } else {
        format!("no sequence fenced, the high-water mark stays at {last}")
    };
    AuditEntry {
        agency: "operator".to_owned(),
        action: Action::SequencesFenced.as_str(),
        sequence: Some(last),
        sender: String::new(),
        notification_id: String::new(),
        decision: "FENCED".to_owned(),
        reason: truncate(&format!("{what}: {reason}"), 1024),
        peer: None,
    }
}

/// The entry recording that the notification `envelope` describes was
/// stored as `sequence`, sent from `peer`.
pub fn published(
    envelope: &liandong_core::domain::Envelope,
    sequence: u64,
    peer: Option<std::net::SocketAddr>,
) -> AuditEntry {
    AuditEntry {
        agency: envelope.sender.to_string(),
        action: Action::Published.as_str(),
        sequence: Some(sequence),
        sender: envelope.sender.to_string(),
        notification_id: envelope.id.to_string(),
        decision: "STORED".to_owned(),
        reason: String::new(),
        peer,
    }
}

/// The entry recording that `owner`'s subscription `name` acknowledged
/// everything through `through` (its cursor was at `from`).
pub fn ack(
    owner: &str,
    name: &str,
    from: u64,
    through: u64,
    peer: Option<std::net::SocketAddr>,
) -> AuditEntry {
    AuditEntry {
        agency: truncate(owner, 256),
        action: Action::Ack.as_str(),
        sequence: Some(through),
        sender: String::new(),
        notification_id: String::new(),
        decision: "ACKED".to_owned(),
        reason: truncate(&format!("subscription {name}: {from} -> {through}"), 1024),
        peer,
    }
}

/// The entry recording that `operator` disabled `agency` because of
/// `reason`, from `peer`.
pub fn agency_disabled(
    operator: &str,
    agency: &str,
    reason: &str,
    peer: Option<std::net::SocketAddr>,
) -> AuditEntry {
    operator_action(
        Action::AgencyDisabled,
        operator,
        None,
        "DISABLED",
        &format!("agency {agency}: {reason}"),
        peer,
    )
}

/// The entry recording that `operator` enabled the disabled `agency`
/// again because of `reason`, from `peer`.
pub fn agency_enabled(
    operator: &str,
    agency: &str,
    reason: &str,
    peer: Option<std::net::SocketAddr>,
) -> AuditEntry {
    operator_action(
        Action::AgencyEnabled,
        operator,
        None,
        "ENABLED",
        &format!("agency {agency}: {reason}"),
        peer,
    )
}

/// The entry recording that `operator` moved `owner`'s subscription `name`
/// from `from` to `to` because of `reason`, from `peer`.
pub fn subscription_seek(
    operator: &str,
    (owner, name): (&str, &str),
    (from, to): (u64, u64),
    reason: &str,
    peer: Option<std::net::SocketAddr>,
) -> AuditEntry {
    operator_action(
        Action::SubscriptionSeek,
        operator,
        Some(to),
        "MOVED",
        &format!("subscription {owner}/{name}: {from} -> {to}: {reason}"),
        peer,
    )
}

/// An operator's change: the operator is who acted; `reason` names what it
/// concerns, then the operator's stated reason.
fn operator_action(
    action: Action,
    operator: &str,
    sequence: Option<u64>,
    decision: &str,
    reason: &str,
    peer: Option<std::net::SocketAddr>,
) -> AuditEntry {
    AuditEntry {
        agency: truncate(operator, 256),
        action: action.as_str(),
        sequence,
        sender: String::new(),
        notification_id: String::new(),
        decision: decision.to_owned(),
        reason: truncate(reason, 1024),
        peer,
    }
}

impl AuditEntry {
    /// The same entry, from `peer` (when known).
    pub fn with_peer(self, peer: Option<std::net::SocketAddr>) -> Self {
        Self { peer, ..self }
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests;
