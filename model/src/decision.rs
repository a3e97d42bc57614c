//! What a policy decided, and why, in a form both machines and people can read.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::size::{Resource, Role};
use crate::time::Timestamp;

/// The knob a decision turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Knob {
    /// The size of every member of a role, for one resource.
    Vertical { role: Role, resource: Resource },
    /// The number of database members (primary included).
    Replicas,
    /// The databases' `shared_buffers`, bytes: the buffer cache (issue 17).
    SharedBuffers,
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Knob::Vertical { role, resource } => write!(f, "{role}.{resource}"),
            Knob::Replicas => f.write_str("database.replicas"),
            Knob::SharedBuffers => f.write_str("database.shared_buffers"),
        }
    }
}

/// Which way a decision moves its knob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Hold,
    Grow,
    Shrink,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Hold => "hold",
            Action::Grow => "grow",
            Action::Shrink => "shrink",
        })
    }
}

/// A rule that shaped a decision. Each one a policy applies is recorded in [`Decision::rules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The statistic is inside [low, high]: nothing to do.
    Band,
    /// Above `high`, but not yet for the whole `up_window`.
    UpWindow,
    /// Below `low`, but not yet for the whole `down_window`.
    DownWindow,
    /// A change happened less than `cooldown` ago.
    Cooldown,
    /// Rounded to the platform's step.
    Rounding,
    /// Clamped to [min, max].
    Bounds,
    /// Limited by the maximum step factor (or one member at a time for replicas).
    StepLimit,
    /// A shrink was raised so that the same data would not grow it again.
    NoRegrow,
    /// The budget of changes per period is spent.
    Budget,
    /// A figure the policy needs is missing: hold.
    MissingData,
    /// A figure the policy needs is too old: hold.
    StaleData,
    /// An OOM kill triggered the emergency memory grow.
    OomEmergency,
    /// The forecast time to full is shorter than the horizon.
    Forecast,
    /// Used space passed the disk's `high` threshold.
    Threshold,
    /// WAL, not data, is what fills the disk: growing will not fix it.
    WalGrowth,
    /// The HA minimum number of members holds the count up.
    HaMinimum,
    /// Some members were not counted as capacity (lagging or not streaming).
    NotCapacity,
    /// A disk never shrinks.
    NeverShrink,
    /// The buffer cache's hit ratio stayed below `low`: `shared_buffers` grows.
    CacheShort,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Band => "band",
            Rule::UpWindow => "up_window",
            Rule::DownWindow => "down_window",
            Rule::Cooldown => "cooldown",
            Rule::Rounding => "rounding",
            Rule::Bounds => "bounds",
            Rule::StepLimit => "step_limit",
            Rule::NoRegrow => "no_regrow",
            Rule::Budget => "budget",
            Rule::MissingData => "missing_data",
            Rule::StaleData => "stale_data",
            Rule::OomEmergency => "oom_emergency",
            Rule::Forecast => "forecast",
            Rule::Threshold => "threshold",
            Rule::WalGrowth => "wal_growth",
            Rule::HaMinimum => "ha_minimum",
            Rule::NotCapacity => "not_capacity",
            Rule::NeverShrink => "never_shrink",
            Rule::CacheShort => "cache_short",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's effect on a decision: the value before and after it, and a short detail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleApplied {
    pub rule: Rule,
    /// The recommended value before this rule.
    pub before: f64,
    /// The recommended value after this rule (equal to `before` when the rule only blocked).
    pub after: f64,
    /// What the rule saw, e.g. `above 0.80 for 60 s of 180 s`.
    pub detail: String,
}

/// What a policy decided at one instant, with every reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: Timestamp,
    pub knob: Knob,
    pub action: Action,
    /// The size (or count) before the decision.
    pub current: f64,
    /// What the data alone asked for, before any rule (None when there was no usable data).
    pub raw: Option<f64>,
    /// The final value; equal to `current` when the action is `Hold`.
    pub target: f64,
    /// The statistic the decision was based on (utilization 0..1, or a count), when there was one.
    pub statistic: Option<f64>,
    /// Each rule that changed or blocked the recommendation, in the order applied.
    pub rules: Vec<RuleApplied>,
    /// One sentence a person can read.
    pub summary: String,
}

impl Decision {
    /// A decision that keeps the current value.
    pub fn hold(at: Timestamp, knob: Knob, current: f64) -> Self {
        Decision {
            at,
            knob,
            action: Action::Hold,
            current,
            raw: None,
            target: current,
            statistic: None,
            rules: Vec::new(),
            summary: String::new(),
        }
    }

    /// Adds a rule's effect. The list grows one at a time: most decisions have one rule and
    /// are kept until the next observation (the scaler's last decisions, `/status`), and a
    /// `Vec`'s first push makes room for four (224 bytes where 56 do, ~8 MB in a fleet of
    /// 10,000 clusters, benches/fleet.rs).
    pub fn push_rule(&mut self, rule: RuleApplied) {
        self.rules.reserve_exact(1);
        self.rules.push(rule);
    }

    /// Whether a rule of this kind shaped the decision.
    pub fn has_rule(&self, rule: Rule) -> bool {
        self.rules.iter().any(|r| r.rule == rule)
    }

    pub fn changes(&self) -> bool {
        self.action != Action::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_serializes_with_readable_names() {
        let mut d = Decision::hold(
            Timestamp::from_secs(1),
            Knob::Vertical {
                role: Role::Database,
                resource: Resource::Cpu,
            },
            2.0,
        );
        d.rules.push(RuleApplied {
            rule: Rule::Cooldown,
            before: 3.0,
            after: 2.0,
            detail: "x".into(),
        });
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains(r#""kind":"vertical""#), "{json}");
        assert!(json.contains(r#""rule":"cooldown""#), "{json}");
        assert!(d.has_rule(Rule::Cooldown));
        assert!(!d.changes());
    }
}
