//! Steward's own policies behind the [`Sizer`] trait, so the replay treats them like the
//! baselines.
//!
//! What this is: thin adapters that turn one usage sample into the figure slice the policies
//! read, and tell the policy when its change was applied. What it is not: policy logic; every
//! decision is `steward-policies`'.

use steward_model::observation::{Figure, Source};
use steward_model::{Action, Decision, Resource, Role, Timestamp};
use steward_policies::disk::DiskPolicy;
use steward_policies::vertical::VerticalPolicy;
use steward_policies::{DiskConfig, OomConfig, VerticalConfig};

use super::sizer::{Limits, Resize, Sizer};

/// The band and bounds of a vertical config, shared with the baselines.
pub fn limits_of(config: &VerticalConfig) -> Limits {
    Limits {
        low: config.low,
        high: config.high,
        target: config.target,
        min: config.min,
        max: config.max,
        step: config.step,
    }
}

/// The band of a disk config: a disk is "too full" above `high` and never too empty.
pub fn disk_limits_of(config: &DiskConfig) -> Limits {
    Limits {
        low: 0.0,
        high: config.high,
        target: config.high,
        min: 0.0,
        max: config.max,
        step: config.step,
    }
}

/// Why a decision changed the size, for the timeline.
pub fn reason_of(decision: &Decision) -> String {
    if decision.summary.is_empty() {
        let rules: Vec<&str> = decision.rules.iter().map(|r| r.rule.as_str()).collect();
        rules.join(", ")
    } else {
        decision.summary.clone()
    }
}

/// [`VerticalPolicy`] as a sizer.
pub struct StewardVertical {
    policy: VerticalPolicy,
    /// Ask for the full [`Decision`] (with reasons, allocating) instead of the cheap verdict.
    /// The CLI explains; the benchmark measures the hot path.
    explain: bool,
}

impl StewardVertical {
    pub fn new(role: Role, resource: Resource, config: VerticalConfig, explain: bool) -> Self {
        StewardVertical {
            policy: VerticalPolicy::new(role, resource, config),
            explain,
        }
    }

    /// Sets the OOM emergency grow (memory; `[policy.<role>.oom]`).
    pub fn with_oom(mut self, oom: OomConfig) -> Self {
        self.policy = self.policy.with_oom(oom);
        self
    }

    /// An OOM kill was seen at `at`: the emergency path, windows and cooldown ignored.
    pub fn oom(&mut self, at: Timestamp, size: f64) -> Option<Resize> {
        let d = self.policy.record_oom(at, size);
        if d.action == Action::Hold || d.target == size {
            return None;
        }
        self.policy.record_change(at, d.target);
        Some(Resize {
            to: d.target,
            reason: reason_of(&d),
        })
    }
}

impl Sizer for StewardVertical {
    fn name(&self) -> &'static str {
        "steward"
    }

    #[inline]
    fn step(&mut self, at: Timestamp, usage: Option<f64>, size: f64) -> Option<Resize> {
        let figures = [usage.map(|u| Figure::new(u, Source::Recorded, at))];
        let (action, target, reason) = if self.explain {
            let d = self.policy.decide(at, &figures, size);
            (d.action, d.target, Some(d))
        } else {
            let v = self.policy.tick(at, &figures, size);
            (v.action, v.target, None)
        };
        if action == Action::Hold || target == size {
            return None;
        }
        self.policy.record_change(at, target);
        Some(Resize {
            to: target,
            reason: reason.as_ref().map(reason_of).unwrap_or_default(),
        })
    }
}

/// [`DiskPolicy`] as a sizer (no WAL figure: a CSV trace has none).
pub struct StewardDisk {
    policy: DiskPolicy,
}

impl StewardDisk {
    pub fn new(role: Role, config: DiskConfig) -> Self {
        StewardDisk {
            policy: DiskPolicy::new(role, config),
        }
    }

    /// One sample with its WAL figure, for recordings that have one.
    pub fn step_with_wal(
        &mut self,
        at: Timestamp,
        used: Option<f64>,
        wal: Option<f64>,
        size: f64,
    ) -> Option<Resize> {
        let figure = |v: Option<f64>| [v.map(|v| Figure::new(v, Source::Recorded, at))];
        let d = self.policy.decide(at, &figure(used), &figure(wal), size);
        if d.action == Action::Hold || d.target == size {
            return None;
        }
        self.policy.record_change(at, d.target);
        Some(Resize {
            to: d.target,
            reason: reason_of(&d),
        })
    }
}

impl Sizer for StewardDisk {
    fn name(&self) -> &'static str {
        "steward"
    }

    fn step(&mut self, at: Timestamp, usage: Option<f64>, size: f64) -> Option<Resize> {
        self.step_with_wal(at, usage, None, size)
    }
}
