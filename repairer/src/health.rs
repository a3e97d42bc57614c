//! The member health state machine of DESIGN.md 5.
//!
//! ```text
//! Healthy -> Suspect -> Confirmed -> Fencing -> Fenced -> Replacing -> Verifying -> Retired
//!    ^          |           |
//!    +----------+-----------+   (signals cleared before a repair started)
//! ```
//!
//! What it is: the states and the one transition that depends only on time and signals,
//! [`Health::judge`] (Healthy/Suspect/Confirmed). A member is Confirmed only when it has looked
//! bad at every reading for the whole grace window; one good reading sends it back to Healthy.
//!
//! What it is not: the repair itself. Fencing, Fenced, Replacing, Verifying and Retired are
//! entered by the repair core ([`crate::Repairer`]) as its commands are issued and confirmed;
//! `judge` leaves those states alone. A lagging member is repaired create-first, so it passes
//! Replacing and Verifying before Fencing; the states are the same, only the order differs.

use std::time::Duration;

use serde::Serialize;
use steward_model::Timestamp;

/// Where one member stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// Looked bad at every reading since `since`, not yet for the whole grace window.
    Suspect {
        since: Timestamp,
    },
    /// Looked bad for the whole grace window (since `since`): to be repaired.
    Confirmed {
        since: Timestamp,
    },
    /// Being drained and stopped.
    Fencing,
    /// Can no longer serve or write; its data is kept.
    Fenced,
    /// Its replacement is being created.
    Replacing {
        replacement: String,
    },
    /// Its replacement exists; waiting for it to stream with a small lag.
    Verifying {
        replacement: String,
        since: Timestamp,
    },
    /// Removed: the replacement streams.
    Retired,
}

impl Health {
    /// The signal-driven step: `bad` is whether the member shows any signal at `now`.
    /// States past Confirmed belong to the repair and are returned unchanged.
    pub fn judge(&self, bad: bool, now: Timestamp, grace: Duration) -> Health {
        match (self, bad) {
            (Health::Healthy, false) => Health::Healthy,
            (Health::Healthy, true) => Health::Suspect { since: now },
            (Health::Suspect { .. } | Health::Confirmed { .. }, false) => Health::Healthy,
            (Health::Suspect { since }, true) if now.since(*since) >= grace => {
                Health::Confirmed { since: *since }
            }
            (other, _) => other.clone(),
        }
    }

    /// Whether the repair core owns this state (Fencing and beyond).
    pub fn is_under_repair(&self) -> bool {
        !matches!(
            self,
            Health::Healthy | Health::Suspect { .. } | Health::Confirmed { .. }
        )
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self, Health::Confirmed { .. })
    }

    /// A short name for status pages and transcripts.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Suspect { .. } => "suspect",
            Health::Confirmed { .. } => "confirmed",
            Health::Fencing => "fencing",
            Health::Fenced => "fenced",
            Health::Replacing { .. } => "replacing",
            Health::Verifying { .. } => "verifying",
            Health::Retired => "retired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn confirmed_only_after_the_whole_grace_window() {
        let t0 = Timestamp::from_secs(100);
        let s = Health::Healthy.judge(true, t0, GRACE);
        assert_eq!(s, Health::Suspect { since: t0 });
        let s = s.judge(true, t0 + Duration::from_secs(59), GRACE);
        assert_eq!(s, Health::Suspect { since: t0 });
        let s = s.judge(true, t0 + GRACE, GRACE);
        assert_eq!(s, Health::Confirmed { since: t0 });
    }

    #[test]
    fn one_good_reading_resets_and_repair_states_are_left_alone() {
        let t0 = Timestamp::from_secs(100);
        let s = Health::Suspect { since: t0 }.judge(false, t0, GRACE);
        assert_eq!(s, Health::Healthy);
        assert_eq!(
            Health::Confirmed { since: t0 }.judge(false, t0, GRACE),
            Health::Healthy
        );
        for state in [Health::Fencing, Health::Fenced, Health::Retired] {
            assert_eq!(state.judge(false, t0, GRACE), state);
            assert!(state.is_under_repair());
        }
    }
}
