//! The case picture: where each case stands, kept by the gateway from the
//! case events it stores.
//!
//! [`machine`] holds the lifecycle (which event a case accepts in which
//! state). The store applies it inside the publishing transaction
//! (`store::cases`): it reads the case's row, asks the machine, and either
//! writes the notification together with the case's new state and a
//! history row, or refuses with nothing written. This module holds the
//! values that pass between them: the [`CaseChange`] a stored event made,
//! the [`CaseRefusal`] of an event that does not fit, and the
//! [`CaseRecord`] that `GetCase` and supervision read.
//!
//! It never reads content: only the routing fields of an envelope.

pub mod machine;
pub mod page;

#[cfg(test)]
mod tests;

use std::fmt;

use liandong_core::domain::{AgencyId, CaseRef, Event, Instant};
use liandong_core::pb::CaseState;

use machine::Stage;

/// What a stored case event did to its case: made in the publishing
/// transaction, right after the notification row and the case row were
/// written, for the mechanism code that reacts to it in that same
/// transaction (deadlines started or stopped, announcements tracked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseChange {
    /// The case.
    pub case_ref: CaseRef,
    /// The event that made the change.
    pub event: Event,
    /// Who published it (its certificate's agency).
    pub sender: AgencyId,
    /// The state before; `None` when the event opened the case.
    pub from: Stage,
    /// The state after (equal to `from` for an event recorded without a
    /// move).
    pub to: CaseState,
    /// The notification's sequence.
    pub sequence: u64,
    /// When the gateway stored it: deadlines run on this time.
    pub received_at: Instant,
}

impl CaseChange {
    /// True when the event opened the case.
    pub fn opened(&self) -> bool {
        self.from.is_none()
    }

    /// True when the case changed state (or was opened).
    pub fn moved(&self) -> bool {
        self.from != Some(self.to)
    }
}

/// A case event refused because its case's state does not accept it.
/// Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRefusal {
    /// The case.
    pub case_ref: CaseRef,
    /// The refused event.
    pub event: Event,
    /// The case's state (`None`: the gateway knows no such case).
    pub state: Stage,
}

impl CaseRefusal {
    /// The states in which the event would have been accepted.
    pub fn accepted(&self) -> Vec<Stage> {
        machine::accepted_in(self.event)
    }
}

/// Names the case, its state and what the event needs, e.g. `case CZ-1 is
/// CLUE; CASE_FILED needs TRANSFERRED, TRANSFER_RECEIVED, RECONSIDERATION
/// or FILING_SUPERVISED`. Never content.
impl fmt::Display for CaseRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            None => write!(f, "case {} does not exist", self.case_ref)?,
            Some(state) if machine::is_closed(state) => write!(
                f,
                "case {} is {}, which is closed",
                self.case_ref,
                machine::state_name(state)
            )?,
            Some(state) => write!(
                f,
                "case {} is {}",
                self.case_ref,
                machine::state_name(state)
            )?,
        }
        write!(f, "; {} {}", self.event, needs(&self.accepted()))
    }
}

/// "needs A, B or C", "opens a case or needs A", "needs an open case".
fn needs(accepted: &[Stage]) -> String {
    let opens = accepted.contains(&None);
    let states: Vec<CaseState> = accepted.iter().filter_map(|s| *s).collect();
    let open: Vec<CaseState> = machine::OPEN.iter().filter_map(|s| *s).collect();
    let listed = if states == open {
        "an open case".to_owned()
    } else {
        let names: Vec<&str> = states.iter().map(|s| machine::state_name(*s)).collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    };
    match (opens, listed.is_empty()) {
        (true, true) => "needs a new case".to_owned(),
        (true, false) => format!("opens a new case or needs {listed}"),
        (false, _) => format!("needs {listed}"),
    }
}

/// A case as the projection holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    /// The case.
    pub case_ref: CaseRef,
    /// Where it stands.
    pub state: CaseState,
    /// The region of the notification that opened it.
    pub region: String,
    /// Every agency that published a case event of it, sorted.
    pub agencies: Vec<String>,
    /// When it was opened (gateway time).
    pub opened_at: Instant,
    /// When it entered its state (gateway time).
    pub state_since: Instant,
    /// The sequence of its latest case event.
    pub last_sequence: u64,
    /// The bureau that transferred it (the latest CASE_TRANSFERRED).
    pub transferor: Option<String>,
    /// The police agency that acknowledged the transfer or decided on
    /// filing (the latest to do so).
    pub police: Option<String>,
    /// When its first administrative penalty was stored.
    pub penalized_at: Option<Instant>,
}

/// Whether the sender of `event` becomes the case's `transferor`.
pub(crate) fn names_transferor(event: Event) -> bool {
    event.to_wire() == liandong_core::pb::EventType::CaseTransferred
}

/// Whether the sender of `event` becomes the case's `police`: the police
/// acknowledge a transfer, decide on filing, or record an extension of
/// the filing time limit.
pub(crate) fn names_police(event: Event) -> bool {
    use liandong_core::pb::EventType as E;
    matches!(
        event.to_wire(),
        E::TransferReceived | E::CaseFiled | E::FilingDeclined | E::DeadlineExtended
    )
}
