//! Per-agency limits: the publish rate ([`rate`]) and the counts of open
//! `PublishStream` calls, held against `limits.max_streams_per_agency`
//! (Subscribe streams are counted by the session registry in
//! `routing::wake`, against the same cap).
//!
//! A slot is taken when a stream opens and given back when its guard drops,
//! however the stream ends. This module never refuses on its own: it tells
//! the caller whether there is room.

pub mod rate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use liandong_core::domain::AgencyId;

/// Open publishing streams per agency in this process.
#[derive(Debug, Default)]
pub struct OpenStreams {
    open: Arc<Mutex<HashMap<AgencyId, usize>>>,
}

/// One open stream; dropping it gives the slot back.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<AgencyId, usize>>>,
    agency: AgencyId,
}

impl OpenStreams {
    /// Takes a slot for `agency`, or answers how many it has open when
    /// `cap` are open already.
    pub fn open(&self, agency: &AgencyId, cap: u32) -> Result<StreamSlot, usize> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(agency.clone()).or_default();
        if *count >= cap as usize {
            return Err(*count);
        }
        *count += 1;
        Ok(StreamSlot {
            open: self.open.clone(),
            agency: agency.clone(),
        })
    }

    /// How many streams `agency` has open.
    pub fn count(&self, agency: &AgencyId) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(agency).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.agency) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.agency);
            }
        }
    }
}

#[cfg(test)]
mod tests;
