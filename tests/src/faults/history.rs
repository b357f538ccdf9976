//! What the harness saw: every operation with its outcome, every frame each
//! subscription received, every acknowledgement it sent, and every fault
//! with the window in which it was active.
//!
//! The history is written by the workload and the fault injectors while the
//! run goes on and read once by the checker at the end; it never decides
//! anything itself.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use liandong_core::pb;

use super::Fault;

/// How a notification entered the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A gRPC `Publish` by the harness itself.
    Direct,
    /// `POST /v1/notifications` to an adapter daemon's HTTP source.
    AdapterHttp,
    /// A file renamed into an adapter daemon's drop folder.
    AdapterFolder,
}

/// What an operation's caller was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (only seen if the run is torn down mid-call).
    Pending,
    /// A receipt (direct: with its sequence) or a local acceptance by an
    /// adapter (no sequence until its outbox has delivered it).
    Ok {
        /// The receipt's sequence, when the caller got one.
        sequence: Option<u64>,
        /// Whether the gateway said it had the notification already.
        duplicate: bool,
    },
    /// A definite refusal: nothing may be stored.
    Refused {
        /// gRPC code name or HTTP status.
        code: String,
    },
    /// No answer that says either way (deadline, cut connection).
    Unknown {
        /// What happened to the call.
        reason: String,
    },
}

/// One publish attempt.
#[derive(Debug, Clone)]
pub struct Op {
    /// The agency the notification is published as.
    pub sender: String,
    /// How it was published.
    pub via: Via,
    /// The notification as sent (sender not filled in).
    pub notification: pb::Notification,
    /// What the caller was told.
    pub outcome: Outcome,
    /// When the call started.
    pub started: Instant,
    /// The answer to republishing an unknown outcome at the end.
    pub resolution: Option<Outcome>,
}

/// One frame a subscription received.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The subscription's key (`owner/name`).
    pub subscription: String,
    /// Which connection of the subscription it came on (1, 2, …).
    pub session: u32,
    /// The gateway sequence.
    pub sequence: u64,
    /// Whether it was a withheld stub.
    pub withheld: bool,
    /// The gateway's attempt counter.
    pub attempt: u32,
    /// Its sender.
    pub sender: String,
    /// Its notification id.
    pub notification_id: String,
    /// The summary it carried (empty in stubs).
    pub summary: String,
    /// When it was received.
    pub at: Instant,
}

/// An acknowledgement sent on a session.
#[derive(Debug, Clone)]
pub struct AckSent {
    /// The subscription's key.
    pub subscription: String,
    /// The session it was sent on.
    pub session: u32,
    /// The sequence acknowledged.
    pub sequence: u64,
    /// When it was sent.
    pub at: Instant,
}

/// How a registry change altered one agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its clearance lowered to INTERNAL.
    Lowered,
    /// Removed from the registry.
    Removed,
}

/// A registry change, from the SIGHUP that made it to the one that undid it.
#[derive(Debug, Clone)]
pub struct Epoch {
    /// What changed.
    pub change: Change,
    /// The agency it changed.
    pub target: &'static str,
    /// SIGHUP sent with the changed registry.
    pub sent: Instant,
    /// The gateway logged the reload.
    pub applied: Instant,
    /// SIGHUP sent with the original registry.
    pub restore_sent: Instant,
    /// The gateway logged that reload.
    pub restored: Instant,
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    /// Which fault.
    pub fault: Fault,
    /// When it began.
    pub started: Instant,
    /// When the system was back to normal.
    pub ended: Instant,
    /// What was observed, in a few words.
    pub outcome: String,
}

/// A broken rule.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The rule's short name.
    pub rule: &'static str,
    /// The fault active when it happened (by time), if any.
    pub fault: Option<Fault>,
    /// Which operation, frame or row, precisely.
    pub detail: String,
}

/// Everything recorded during a run.
#[derive(Debug, Default)]
pub struct History {
    /// Publish attempts, in the order they started.
    pub ops: Vec<Op>,
    /// Frames received, in the order received.
    pub frames: Vec<Frame>,
    /// Acknowledgements sent.
    pub acks: Vec<AckSent>,
    /// Sessions that ended with a status: (subscription, session, status, when).
    pub session_ends: Vec<(String, u32, String, Instant)>,
    /// Registry changes.
    pub epochs: Vec<Epoch>,
    /// Injected faults.
    pub faults: Vec<FaultEvent>,
    /// Periods during which the gateway served a tampered store.
    pub tampered_live: Vec<(Instant, Instant)>,
    /// Sequences whose rows the harness changed behind the gateway's back
    /// (what was delivered of them while changed is judged by the tamper
    /// rules, not by the order rules).
    pub tampered: Vec<u64>,
    /// Notifications (sender, id) whose rows were changed and could not be
    /// put back (the checker does not expect them stored as received).
    pub tamper_lost: Vec<(String, String)>,
    /// Violations found by the injectors while the run went on.
    pub violations: Vec<Violation>,
}

/// The history, shared by the workload and the injectors.
pub type Shared = Arc<Mutex<History>>;

impl History {
    /// The history as text, one event a line in time order, times in
    /// milliseconds since `origin` (written when `LIANDONG_FAULTS_HISTORY`
    /// names a file, to study a failure).
    pub fn dump(&self, origin: Instant) -> String {
        let ms = |at: Instant| at.saturating_duration_since(origin).as_millis();
        let mut lines: Vec<(u128, String)> = Vec::new();
        for op in &self.ops {
            lines.push((
                ms(op.started),
                format!(
                    "publish {} {} {:?} level {} -> {:?} resolved {:?}",
                    op.sender,
                    op.notification.notification_id,
                    op.via,
                    op.notification.confidentiality,
                    op.outcome,
                    op.resolution
                ),
            ));
        }
        for f in &self.frames {
            lines.push((
                ms(f.at),
                format!(
                    "frame {} s{} seq {} attempt {} withheld {} {} {}",
                    f.subscription,
                    f.session,
                    f.sequence,
                    f.attempt,
                    f.withheld,
                    f.sender,
                    f.notification_id
                ),
            ));
        }
        for a in &self.acks {
            lines.push((
                ms(a.at),
                format!("ack {} s{} seq {}", a.subscription, a.session, a.sequence),
            ));
        }
        for (s, session, status, at) in &self.session_ends {
            lines.push((ms(*at), format!("end {s} s{session} {status}")));
        }
        for f in &self.faults {
            lines.push((ms(f.started), format!("fault {} begins", f.fault.name())));
            lines.push((
                ms(f.ended),
                format!("fault {} ends: {}", f.fault.name(), f.outcome),
            ));
        }
        lines.sort_by_key(|(at, _)| *at);
        lines
            .into_iter()
            .map(|(at, line)| format!("{at:>8} {line}\n"))
            .collect()
    }

    /// The fault active at `at`, if any.
    pub fn fault_at(&self, at: Instant) -> Option<Fault> {
        self.faults
            .iter()
            .find(|f| f.started <= at && at <= f.ended)
            .map(|f| f.fault)
    }
}
