//! An independent statement of who may read what, for the notifications
//! the harness publishes, under the registry in force at a given moment.
//!
//! It restates the documented rules (docs/POLICY.md) for the dev registry
//! rather than calling the gateway's policy code, so a fault that makes the
//! gateway decide wrongly cannot make the oracle agree with it.

use std::time::{Duration, Instant};

use liandong_core::pb::Confidentiality as Level;

use super::history::{Change, Epoch};

/// What a reader may receive of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The content.
    Full,
    /// A stub without content.
    Withheld,
    /// Nothing at all.
    Nothing,
}

/// One agency of the dev registry: (id, member agency, parent, clearance).
const AGENCIES: &[(&str, bool, Option<&str>, Level)] = &[
    ("cz-eeb", true, None, Level::Confidential),
    ("cz-eeb-luzhou", true, Some("cz-eeb"), Level::Restricted),
    ("cz-eeb-xiangyuan", true, Some("cz-eeb"), Level::Restricted),
    ("cz-procuratorate", true, None, Level::Confidential),
    (
        "cz-procuratorate-xiangyuan",
        true,
        Some("cz-procuratorate"),
        Level::Confidential,
    ),
    ("cz-psb", true, None, Level::Confidential),
    (
        "cz-psb-xiangyuan",
        true,
        Some("cz-psb"),
        Level::Confidential,
    ),
    ("cz-press-office", false, None, Level::Public),
    ("cz-ops", false, None, Level::Internal),
];

/// How long after a reload is logged the gateway may still act on the
/// previous rules (open streams are re-evaluated "within a second or two").
pub const RELOAD_GRACE: Duration = Duration::from_secs(2);

/// The registry: the dev registry, or with one agency changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registry(pub Option<(Change, &'static str)>);

impl Registry {
    fn agency(self, id: &str) -> Option<(bool, Option<&'static str>, Level)> {
        let &(_, member, parent, clearance) = AGENCIES.iter().find(|a| a.0 == id)?;
        match self.0 {
            Some((Change::Removed, target)) if target == id => None,
            Some((Change::Lowered, target)) if target == id => {
                Some((member, parent, clearance.min(Level::Internal)))
            }
            _ => Some((member, parent, clearance)),
        }
    }

    /// What `reader` may receive of a notification of `sender` at `level`
    /// addressed to `recipients` (a clue: no oversight rule applies).
    pub fn decide(
        self,
        reader: &str,
        sender: &str,
        level: Level,
        recipients: &[String],
    ) -> Decision {
        let Some((member, _, clearance)) = self.agency(reader) else {
            return Decision::Nothing;
        };
        if reader == sender {
            return Decision::Full;
        }
        let is_parent_of = |party: &str| {
            self.agency(party)
                .and_then(|(_, parent, _)| parent)
                .is_some_and(|p| p == reader)
        };
        let entitled = match level {
            Level::Public => true,
            Level::Internal => member && clearance >= Level::Internal,
            Level::Restricted => {
                recipients.iter().any(|r| r == reader)
                    || std::iter::once(sender)
                        .chain(recipients.iter().map(String::as_str))
                        .any(is_parent_of)
            }
            Level::Confidential => recipients.iter().any(|r| r == reader),
            Level::Unspecified => false,
        };
        match (entitled, clearance >= level) {
            (true, true) => Decision::Full,
            (true, false) if level >= Level::Restricted => Decision::Withheld,
            _ => Decision::Nothing,
        }
    }

    /// The registries that may have been in force at `at`, given the
    /// changes made during the run.
    pub fn in_force(epochs: &[Epoch], at: Instant) -> Vec<Registry> {
        for epoch in epochs {
            let changed = Registry(Some((epoch.change, epoch.target)));
            if at < epoch.sent || at > epoch.restored + RELOAD_GRACE {
                continue;
            }
            if at >= epoch.applied + RELOAD_GRACE && at < epoch.restore_sent {
                return vec![changed];
            }
            return vec![Registry(None), changed];
        }
        vec![Registry(None)]
    }
}
