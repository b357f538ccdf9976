//! The window of one subscription session: which sequences are in flight,
//! when each is due again, and how far the cursor may go.
//!
//! Pure bookkeeping, no I/O. A sequence enters the window *before* its
//! frame is sent and leaves it only when acknowledged or when the policy
//! at send time gives its reader nothing; the cursor is just below the
//! oldest sequence still in the window, so it can never pass a frame that
//! was not acknowledged — in particular one whose send failed.
//!
//! The window holds sequences only, never rendered frames: every frame is
//! rendered again from the store under the rules in force when it is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// Frames sent so far (0: admitted, not yet sent).
    attempts: u32,
    /// When it is sent again unless acknowledged; `None` until first sent.
    due: Option<Instant>,
}

/// Sequences in flight for one session, and the scan position behind them.
#[derive(Debug, Clone)]
pub struct Window {
    slots: BTreeMap<u64, Slot>,
    /// Highest sequence examined: everything at or below it that is not in
    /// the window is done for this subscription (acknowledged, filtered
    /// out, or nothing under the policy).
    scanned: u64,
    capacity: usize,
    ack_timeout: Duration,
}

impl Window {
    /// An empty window starting after `cursor`.
    pub fn new(cursor: u64, capacity: usize, ack_timeout: Duration) -> Self {
        Self {
            slots: BTreeMap::new(),
            scanned: cursor,
            capacity: capacity.max(1),
            ack_timeout,
        }
    }

    /// How many more sequences may be admitted.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.slots.len())
    }

    /// Sequences in the window.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when `sequence` is in the window.
    pub fn contains(&self, sequence: u64) -> bool {
        self.slots.contains_key(&sequence)
    }

    /// Where the next read of the store starts after.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Takes `sequence` into the window, before its first frame is sent.
    pub fn admit(&mut self, sequence: u64) {
        debug_assert!(sequence > self.scanned);
        self.slots.insert(
            sequence,
            Slot {
                attempts: 0,
                due: None,
            },
        );
    }

    /// Everything up to `through` has been examined (admitted or passed
    /// over).
    pub fn scanned_through(&mut self, through: u64) {
        self.scanned = self.scanned.max(through);
    }

    /// The attempt number the next frame of `sequence` carries.
    pub fn next_attempt(&self, sequence: u64) -> Option<u32> {
        self.slots.get(&sequence).map(|slot| slot.attempts + 1)
    }

    /// A frame of `sequence` was handed to the stream at `now`.
    pub fn sent(&mut self, sequence: u64, now: Instant) {
        if let Some(slot) = self.slots.get_mut(&sequence) {
            slot.attempts += 1;
            slot.due = Some(now + self.ack_timeout);
        }
    }

    /// `sequence` is done without an acknowledgement: the policy now gives
    /// its reader nothing, or the store no longer serves it.
    pub fn drop_done(&mut self, sequence: u64) {
        self.slots.remove(&sequence);
    }

    /// Acknowledgements remove their sequences, when a frame of each was
    /// sent to this session; any other sequence (never delivered here,
    /// admitted but not yet sent, delivered to another subscription) is
    /// ignored and changes nothing. Returns how many were removed.
    pub fn ack(&mut self, sequences: &[u64]) -> usize {
        sequences
            .iter()
            .filter(|sequence| {
                let sent = self
                    .slots
                    .get(sequence)
                    .is_some_and(|slot| slot.attempts > 0);
                sent && self.slots.remove(sequence).is_some()
            })
            .count()
    }

    /// Sequences whose ack timeout has passed at `now`, in order.
    pub fn due(&self, now: Instant) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.due.is_some_and(|due| due <= now))
            .map(|(sequence, _)| *sequence)
            .collect()
    }

    /// The earliest moment a redelivery falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots.values().filter_map(|slot| slot.due).min()
    }

    /// The cursor: every sequence at or below it is done.
    pub fn cursor(&self) -> u64 {
        self.slots
            .keys()
            .next()
            .map_or(self.scanned, |oldest| oldest - 1)
    }
}

#[cfg(test)]
mod tests;
