//! The sizers a replay compares: one trait, the HPA, naive and fixed (hindsight) baselines, and
//! Steward's own vertical and disk policies behind it (the VPA is in `vpa`).
//!
//! What this is: small adapters that see one (time, usage, size) sample at a time and answer
//! with a new size or nothing. What it is not: the policies themselves (they live in
//! `steward-policies`) nor the bookkeeping of what a replay cost (see `replay`).

use std::collections::VecDeque;
use std::time::Duration;

use steward_model::Timestamp;

/// The band and bounds every sizer of one knob shares, so the comparison is fair.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Limits {
    /// Utilization (0..1) below which a member is too big.
    pub low: f64,
    /// Utilization above which a member is too small.
    pub high: f64,
    /// The utilization a resize aims for.
    pub target: f64,
    /// Smallest size, in the resource's unit.
    pub min: f64,
    /// Largest size, in the resource's unit.
    pub max: f64,
    /// The platform's step: sizes are multiples of it.
    pub step: f64,
}

impl Limits {
    /// The smallest multiple of `step` at or above `amount`, clamped to [min, max].
    ///
    /// The tiny slack keeps `2.0000000001 / 0.5` from rounding up a whole step: float noise in
    /// `usage / target` must not cost a step.
    pub fn ceil_to_step(&self, amount: f64) -> f64 {
        let steps = if self.step > 0.0 {
            (amount / self.step - 1e-9).ceil() * self.step
        } else {
            amount
        };
        steps.clamp(self.min, self.max.max(self.min))
    }
}

/// What a sizer did with one sample, when it changed the size.
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    /// The new size.
    pub to: f64,
    /// Why, for people.
    pub reason: String,
}

/// One policy under evaluation: fed every sample in time order.
pub trait Sizer {
    /// A short name for tables and JSON keys (`steward`, `hpa`, `vpa`, `naive`, `fixed`).
    fn name(&self) -> &'static str;

    /// Sees `usage` (in the resource's unit; `None` when the figure is missing) at `at` while
    /// the member has `size`; returns the new size when it changes it. The caller applies the
    /// change (the next call sees it).
    fn step(&mut self, at: Timestamp, usage: Option<f64>, size: f64) -> Option<Resize>;
}

/// The Kubernetes Horizontal Pod Autoscaler's algorithm, applied to a size instead of a replica
/// count: `desired = ceil(current x utilization / target)` in steps, nothing within the
/// tolerance, and scale-down stabilization (the highest recommendation of the last window).
///
/// Left out on purpose: the HPA's scale-up rate policies (double or +4 per 15 s by default); at
/// the sample periods of recorded traces they never bind, and Steward's step limit is its own.
#[derive(Debug, Clone)]
pub struct Hpa {
    limits: Limits,
    /// `|utilization / target - 1|` up to this does nothing (Kubernetes: 0.1).
    pub tolerance: f64,
    /// Scale-down stabilization window (Kubernetes: 300 s).
    pub stabilization: Duration,
    /// The controller's sync period (Kubernetes: 15 s): samples closer than this are not seen.
    pub sync_period: Duration,
    /// Recommendations with the time each was made; each stays in force until the next.
    recommendations: VecDeque<(Timestamp, f64)>,
    last_sync: Option<Timestamp>,
}

impl Hpa {
    pub fn new(limits: Limits) -> Self {
        Hpa {
            limits,
            tolerance: 0.1,
            stabilization: Duration::from_secs(300),
            sync_period: Duration::from_secs(15),
            recommendations: VecDeque::new(),
            last_sync: None,
        }
    }
}

impl Sizer for Hpa {
    fn name(&self) -> &'static str {
        "hpa"
    }

    fn step(&mut self, at: Timestamp, usage: Option<f64>, size: f64) -> Option<Resize> {
        // Kubernetes skips a sync whose metric is missing: no recommendation is recorded.
        let usage = usage?;
        if self
            .last_sync
            .is_some_and(|last| at < last + self.sync_period)
        {
            return None;
        }
        self.last_sync = Some(at);
        let utilization = usage / size;
        let ratio = utilization / self.limits.target;
        let recommendation = if (ratio - 1.0).abs() <= self.tolerance {
            size
        } else {
            self.limits.ceil_to_step(size * ratio)
        };
        // A recommendation made at t_i stays in force at every sync until t_{i+1}; it is in the
        // window when t_{i+1} is later than the window's start.
        let start = at - self.stabilization;
        while self.recommendations.len() >= 2 && self.recommendations[1].0 <= start {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((at, recommendation));
        let highest = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .fold(f64::MIN, f64::max);
        let desired = if recommendation > size {
            recommendation
        } else if highest < size {
            highest
        } else {
            size
        };
        (desired != size).then(|| Resize {
            to: desired,
            reason: if desired > size {
                format!("utilization {utilization:.2} is {ratio:.2}x the target {:.2}", self.limits.target)
            } else {
                format!(
                    "utilization {utilization:.2}; highest recommendation of the last {} s is {desired}",
                    self.stabilization.as_secs()
                )
            },
        })
    }
}

/// A plain threshold rule: above `high`, size for `target` at once; below `low`, the same. No
/// windows, no cooldown: what a first attempt at autoscaling looks like.
#[derive(Debug, Clone)]
pub struct Naive {
    limits: Limits,
}

impl Naive {
    pub fn new(limits: Limits) -> Self {
        Naive { limits }
    }
}

impl Sizer for Naive {
    fn name(&self) -> &'static str {
        "naive"
    }

    fn step(&mut self, _at: Timestamp, usage: Option<f64>, size: f64) -> Option<Resize> {
        let usage = usage?;
        let utilization = usage / size;
        if utilization > self.limits.high || utilization < self.limits.low {
            let to = self.limits.ceil_to_step(usage / self.limits.target);
            (to != size).then(|| Resize {
                to,
                reason: format!(
                    "utilization {utilization:.2} outside [{:.2}, {:.2}]",
                    self.limits.low, self.limits.high
                ),
            })
        } else {
            None
        }
    }
}

/// The share of the time a [`Fixed`] size must keep the usage at or under `high`.
pub const FIXED_COVERAGE: f64 = 0.99;

/// The cost floor of a static size, known only in hindsight: one size for the whole trace, the
/// smallest (a multiple of the step within the bounds) that keeps the usage at or under `high`
/// of it [`FIXED_COVERAGE`] of the time (time with a known usage, each sample weighted by the
/// interval it stands for). It has read the whole trace before the first sample, so it is not a
/// policy anyone could run: it is the cheapest that never resizing could be while meeting the
/// band, the reference a resizing policy must beat on resource-hours to be worth its changes.
/// It makes at most one change, at the first sample.
#[derive(Debug, Clone)]
pub struct Fixed {
    size: f64,
    done: bool,
}

impl Fixed {
    /// Reads the whole trace (`usage[i]` stands for `secs[i]` seconds) and picks the size.
    pub fn hindsight(limits: Limits, usage: &[Option<f64>], secs: &[f64]) -> Self {
        let known: Vec<(f64, f64)> = usage
            .iter()
            .zip(secs)
            .filter_map(|(u, &s)| u.map(|u| (u, s)))
            .collect();
        let total: f64 = known.iter().map(|&(_, s)| s).sum();
        let allowed = (1.0 - FIXED_COVERAGE) * total;
        let above = |size: f64| -> f64 {
            known
                .iter()
                .filter(|&&(u, _)| u / size > limits.high)
                .map(|&(_, s)| s)
                .sum()
        };
        let top = limits.max.max(limits.min);
        let mut size = limits.ceil_to_step(limits.min);
        if limits.step > 0.0 {
            while size < top && above(size) > allowed {
                size = limits.ceil_to_step(size + limits.step);
            }
        } else {
            // No step: the time-weighted quantile itself, over `high`.
            let mut sorted = known.clone();
            sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut over = 0.0;
            let mut quantile = 0.0;
            for (u, s) in sorted {
                quantile = u;
                over += s;
                if over > allowed {
                    break;
                }
            }
            size = limits.ceil_to_step(quantile / limits.high);
        }
        Fixed { size, done: false }
    }

    /// The size it holds.
    pub fn size(&self) -> f64 {
        self.size
    }
}

impl Sizer for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }

    fn step(&mut self, _at: Timestamp, _usage: Option<f64>, size: f64) -> Option<Resize> {
        if std::mem::replace(&mut self.done, true) || self.size == size {
            return None;
        }
        Some(Resize {
            to: self.size,
            reason: format!(
                "hindsight: the smallest size keeping the whole trace under high {:.0} % of the time",
                FIXED_COVERAGE * 100.0
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        low: 0.3,
        high: 0.8,
        target: 0.6,
        min: 0.5,
        max: 16.0,
        step: 0.5,
    };

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn ceil_to_step_rounds_up_and_clamps() {
        assert_eq!(LIMITS.ceil_to_step(1.01), 1.5);
        assert_eq!(LIMITS.ceil_to_step(1.0 + 1e-12), 1.0);
        assert_eq!(LIMITS.ceil_to_step(0.01), 0.5);
        assert_eq!(LIMITS.ceil_to_step(100.0), 16.0);
    }

    #[test]
    fn hpa_follows_the_documented_formula() {
        let mut hpa = Hpa::new(LIMITS);
        // 1.8 vCPU used on 2: utilization 0.9, ratio 1.5, desired ceil(2 x 1.5) = 3.
        assert_eq!(hpa.step(at(0), Some(1.8), 2.0).map(|r| r.to), Some(3.0));
    }

    #[test]
    fn hpa_ignores_changes_within_the_tolerance() {
        let mut hpa = Hpa::new(LIMITS);
        // Utilization 0.65: ratio 1.083, inside the 0.1 tolerance.
        assert_eq!(hpa.step(at(0), Some(1.3), 2.0), None);
    }

    #[test]
    fn hpa_scale_down_waits_for_the_stabilization_window() {
        let mut hpa = Hpa::new(LIMITS);
        assert_eq!(hpa.step(at(0), Some(1.8), 2.0).map(|r| r.to), Some(3.0));
        // Load drops at once: the recommendation of 3 made at t=0 holds the size for 300 s.
        assert_eq!(hpa.step(at(60), Some(0.3), 3.0), None);
        assert_eq!(hpa.step(at(299), Some(0.3), 3.0), None);
        assert_eq!(hpa.step(at(361), Some(0.3), 3.0).map(|r| r.to), Some(0.5));
    }

    #[test]
    fn hpa_skips_samples_between_syncs() {
        let mut hpa = Hpa::new(LIMITS);
        assert_eq!(hpa.step(at(0), Some(1.2), 2.0), None);
        assert_eq!(hpa.step(at(5), Some(1.8), 2.0), None);
        assert_eq!(hpa.step(at(15), Some(1.8), 2.0).map(|r| r.to), Some(3.0));
    }

    #[test]
    fn missing_data_changes_nothing() {
        assert_eq!(Hpa::new(LIMITS).step(at(0), None, 8.0), None);
        assert_eq!(Naive::new(LIMITS).step(at(0), None, 8.0), None);
    }

    /// 100 five-minute samples at 1 vCPU, some at 3 vCPU: one 3 (1 % of the time) may stay above
    /// `high`, two (2 %) may not.
    #[test]
    fn fixed_keeps_the_trace_under_high_99_percent_of_the_time() {
        let secs = vec![300.0; 100];
        let trace = |peaks: usize| -> Vec<Option<f64>> {
            (0..100)
                .map(|i| Some(if i < peaks { 3.0 } else { 1.0 }))
                .collect()
        };
        // One peak: size for 1 vCPU, 1 / 0.8 = 1.25: 1.5 in steps of 0.5.
        assert_eq!(Fixed::hindsight(LIMITS, &trace(1), &secs).size(), 1.5);
        // Two peaks: 3 / 0.8 = 3.75: 4.0.
        assert_eq!(Fixed::hindsight(LIMITS, &trace(2), &secs).size(), 4.0);
        // Time, not samples: one peak standing for 2 % of the time counts as two.
        let mut long = secs.clone();
        long[0] = 600.0;
        assert_eq!(Fixed::hindsight(LIMITS, &trace(1), &long).size(), 4.0);
        // Missing samples are not time under or over high.
        let mut gappy = trace(1);
        gappy[50..].iter_mut().for_each(|u| *u = None);
        assert_eq!(Fixed::hindsight(LIMITS, &gappy, &secs).size(), 4.0);
        // The bounds hold: nothing beyond max.
        let huge: Vec<Option<f64>> = vec![Some(100.0); 100];
        assert_eq!(Fixed::hindsight(LIMITS, &huge, &secs).size(), 16.0);
    }

    #[test]
    fn fixed_changes_once_at_the_first_sample() {
        let secs = vec![300.0; 3];
        let mut fixed = Fixed::hindsight(LIMITS, &[Some(1.0); 3], &secs);
        assert_eq!(fixed.step(at(0), Some(1.0), 8.0).map(|r| r.to), Some(1.5));
        assert_eq!(fixed.step(at(300), Some(10.0), 1.5), None);
        let mut already = Fixed::hindsight(LIMITS, &[Some(1.0); 3], &secs);
        assert_eq!(already.step(at(0), Some(1.0), 1.5), None);
        assert_eq!(
            already.step(at(300), Some(1.0), 2.0),
            None,
            "never a second change"
        );
    }

    #[test]
    fn naive_acts_outside_the_band_only() {
        let mut naive = Naive::new(LIMITS);
        assert_eq!(naive.step(at(0), Some(1.2), 2.0), None);
        assert_eq!(naive.step(at(1), Some(1.8), 2.0).map(|r| r.to), Some(3.0));
        assert_eq!(naive.step(at(2), Some(0.5), 2.0).map(|r| r.to), Some(1.0));
    }
}
