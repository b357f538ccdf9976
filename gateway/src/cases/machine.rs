//! The case state machine: which event a case accepts in which state, and
//! the state it moves to. The whole lifecycle is the one table
//! [`TRANSITIONS`]; `docs/CASES.md` draws it.
//!
//! This module is pure: it reads no store, knows nothing of roles (who may
//! publish an event is `policy`'s rule) and never sees content.

use liandong_core::domain::Event;
use liandong_core::pb::{CaseState, EventType};

/// A case's state before an event: `None` while the gateway knows no case
/// under the reference.
pub type Stage = Option<CaseState>;

/// Where a row of the table takes the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Into this state.
    State(CaseState),
    /// Nowhere: the event is recorded in the case's history and the state
    /// stays as it was.
    Stay,
}

/// One row of the table: `event` is accepted in the states `from` and
/// takes the case to `to`.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    /// The event.
    pub event: EventType,
    /// The states that accept it (`None`: no case yet, the event opens one).
    pub from: &'static [Stage],
    /// Where it leads.
    pub to: Target,
}

use CaseState as S;

/// The states in which a case is still open: every state but the closed
/// ones ([`CLOSED`]).
pub const OPEN: &[Stage] = &[
    Some(S::Clue),
    Some(S::Penalized),
    Some(S::TransferRecommended),
    Some(S::Transferred),
    Some(S::DetentionReferred),
    Some(S::TransferReceived),
    Some(S::Filed),
    Some(S::Declined),
    Some(S::Reconsideration),
    Some(S::FilingSupervised),
    Some(S::ArrestRequested),
    Some(S::ArrestApproved),
    Some(S::ArrestDenied),
    Some(S::Prosecuted),
];

/// The closed states: they accept no further case event.
pub const CLOSED: &[CaseState] = &[S::NotProsecuted, S::Judged];

/// States of the criminal track (or on its way there), in which an
/// administrative penalty is recorded without moving the case: a penalty
/// can accompany a transfer, and must not hide a pending one.
const CRIMINAL_TRACK: &[Stage] = &[
    Some(S::TransferRecommended),
    Some(S::Transferred),
    Some(S::DetentionReferred),
    Some(S::TransferReceived),
    Some(S::Filed),
    Some(S::Declined),
    Some(S::Reconsideration),
    Some(S::FilingSupervised),
    Some(S::ArrestRequested),
    Some(S::ArrestApproved),
    Some(S::ArrestDenied),
    Some(S::Prosecuted),
];

/// The states in which a filing decision is pending.
const FILING_PENDING: &[Stage] = &[Some(S::Transferred), Some(S::TransferReceived)];

/// Where a case can be before the police decide on filing.
const BEFORE_FILING: &[Stage] = &[
    Some(S::Transferred),
    Some(S::TransferReceived),
    Some(S::Reconsideration),
];

/// Where a case can be before the procuratorate's charging decision.
const BEFORE_CHARGING: &[Stage] = &[
    Some(S::Filed),
    Some(S::ArrestRequested),
    Some(S::ArrestApproved),
    Some(S::ArrestDenied),
];

/// Where a case can be when the bureau transfers it (or refers it for
/// detention): a fresh case, a clue, a penalised case, a recommended
/// transfer; a detention referral that proves criminal is transferred too.
const BEFORE_TRANSFER: &[Stage] = &[
    None,
    Some(S::Clue),
    Some(S::Penalized),
    Some(S::TransferRecommended),
];

/// The lifecycle of a case, one row per (event, states accepted, result).
/// An event with several rows takes the first whose `from` holds the case's
/// state. Events without a row ([`is_case_event`] false) are not case
/// events: the machine never refuses them and they make no case.
pub const TRANSITIONS: &[Transition] = &[
    // Clues open a case; more clues and joint investigations keep it a clue.
    row(
        EventType::ClueShared,
        &[None, Some(S::Clue)],
        Target::State(S::Clue),
    ),
    row(
        EventType::JointInvestigationRequested,
        &[None, Some(S::Clue)],
        Target::State(S::Clue),
    ),
    // A penalty opens a case as PENALIZED, moves a clue there, and is
    // recorded without a move on the criminal track.
    row(
        EventType::PenaltyDecided,
        &[None, Some(S::Clue), Some(S::Penalized)],
        Target::State(S::Penalized),
    ),
    row(EventType::PenaltyDecided, CRIMINAL_TRACK, Target::Stay),
    // The procuratorate recommends a transfer (移送建议).
    row(
        EventType::TransferRecommended,
        &[None, Some(S::Clue), Some(S::Penalized)],
        Target::State(S::TransferRecommended),
    ),
    // The bureau transfers (涉嫌犯罪案件移送) or refers for detention.
    row(
        EventType::CaseTransferred,
        &[
            None,
            Some(S::Clue),
            Some(S::Penalized),
            Some(S::TransferRecommended),
            Some(S::DetentionReferred),
        ],
        Target::State(S::Transferred),
    ),
    row(
        EventType::DetentionReferred,
        BEFORE_TRANSFER,
        Target::State(S::DetentionReferred),
    ),
    // The police acknowledge, then file (立案) or decline (不予立案).
    row(
        EventType::TransferReceived,
        &[Some(S::Transferred)],
        Target::State(S::TransferReceived),
    ),
    row(
        EventType::CaseFiled,
        &[
            Some(S::Transferred),
            Some(S::TransferReceived),
            Some(S::Reconsideration),
            Some(S::FilingSupervised),
        ],
        Target::State(S::Filed),
    ),
    row(
        EventType::FilingDeclined,
        BEFORE_FILING,
        Target::State(S::Declined),
    ),
    // An approved extension of the filing time limit.
    row(EventType::DeadlineExtended, FILING_PENDING, Target::Stay),
    // The bureau asks for a decline to be reconsidered.
    row(
        EventType::ReconsiderationRequested,
        &[Some(S::Declined)],
        Target::State(S::Reconsideration),
    ),
    // The procuratorate requires filing (监督立案).
    row(
        EventType::FilingSupervision,
        &[
            Some(S::Transferred),
            Some(S::TransferReceived),
            Some(S::Declined),
            Some(S::Reconsideration),
        ],
        Target::State(S::FilingSupervised),
    ),
    // Arrest: requested on a filed case (again after a denial), then
    // approved or denied.
    row(
        EventType::ArrestRequested,
        &[Some(S::Filed), Some(S::ArrestDenied)],
        Target::State(S::ArrestRequested),
    ),
    row(
        EventType::ArrestApproved,
        &[Some(S::ArrestRequested)],
        Target::State(S::ArrestApproved),
    ),
    row(
        EventType::ArrestDenied,
        &[Some(S::ArrestRequested)],
        Target::State(S::ArrestDenied),
    ),
    // Charging: prosecution (提起公诉) or non-prosecution (closed).
    row(
        EventType::ProsecutionFiled,
        BEFORE_CHARGING,
        Target::State(S::Prosecuted),
    ),
    row(
        EventType::NonProsecutionDecided,
        BEFORE_CHARGING,
        Target::State(S::NotProsecuted),
    ),
    // The court's ruling closes the case; there is only one.
    row(
        EventType::JudgmentRecorded,
        &[Some(S::Prosecuted)],
        Target::State(S::Judged),
    ),
    // Working events of an open case: no move.
    row(EventType::EarlyIntervention, OPEN, Target::Stay),
    row(EventType::TechnicalAssistanceRequested, OPEN, Target::Stay),
    row(EventType::TechnicalAssistanceProvided, OPEN, Target::Stay),
];

const fn row(event: EventType, from: &'static [Stage], to: Target) -> Transition {
    Transition { event, from, to }
}

/// What an event does to a case in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not a case event (notices, announcements, reports, alerts): no case
    /// is made or changed, nothing is refused.
    NotCaseEvent,
    /// Accepted: the case goes from `from` to `to` (equal when the event
    /// is recorded without a move).
    Moves {
        /// The state before (`None`: the event opens the case).
        from: Stage,
        /// The state after.
        to: CaseState,
    },
    /// Refused: the case's state does not accept the event.
    Refused,
}

/// Whether `event` is a case event, one the machine rules on.
pub fn is_case_event(event: Event) -> bool {
    TRANSITIONS.iter().any(|t| t.event == event.to_wire())
}

/// What `event` does to a case at `stage`.
pub fn step(stage: Stage, event: Event) -> Step {
    let event = event.to_wire();
    let mut rows = TRANSITIONS.iter().filter(|t| t.event == event).peekable();
    if rows.peek().is_none() {
        return Step::NotCaseEvent;
    }
    match rows.find(|t| t.from.contains(&stage)) {
        Some(t) => Step::Moves {
            from: stage,
            to: match (t.to, stage) {
                (Target::State(to), _) => to,
                (Target::Stay, Some(current)) => current,
                // A row that accepts "no case" always names its state; a
                // `Stay` row from no case would be a table error.
                (Target::Stay, None) => return Step::Refused,
            },
        },
        None => Step::Refused,
    }
}

/// The states in which `event` is accepted, in table order, without
/// repeats (`None` first when it may open a case).
pub fn accepted_in(event: Event) -> Vec<Stage> {
    let mut states: Vec<Stage> = Vec::new();
    for t in TRANSITIONS.iter().filter(|t| t.event == event.to_wire()) {
        for stage in t.from {
            if !states.contains(stage) {
                states.push(*stage);
            }
        }
    }
    states
}

/// The short name of a state, e.g. `TRANSFER_RECEIVED`.
pub fn state_name(state: CaseState) -> &'static str {
    let full = state.as_str_name();
    full.strip_prefix("CASE_STATE_").unwrap_or(full)
}

/// Whether `state` is closed.
pub fn is_closed(state: CaseState) -> bool {
    CLOSED.contains(&state)
}
