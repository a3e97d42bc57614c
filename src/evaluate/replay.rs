//! The replay: one series of usage through one sizer, and what it cost.
//!
//! What this is: the loop that feeds samples to a [`Sizer`], applies its resizes, and keeps the
//! score ([`Summary`]). Utilization is always `usage / the size the sizer has at that moment`:
//! the load is the load, and resizing only changes how full the member is.
//! What it is not: reading files or printing (see `input` and `output`).
//!
//! Accounting: sample `i` stands for the interval since sample `i-1` (the first one for the
//! interval to the second), with the size that was in place before the sizer saw it. A resize
//! decided at `t_i` counts from the next interval on.

use serde::Serialize;
use steward_model::{Action, Timestamp};

use super::sizer::{Limits, Sizer};

/// The score of one sizer over one series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Resizes made.
    pub changes: u64,
    /// Resizes in the other direction than the one before (a grow after a shrink or the
    /// reverse): flaps.
    pub direction_changes: u64,
    /// Minutes with utilization above `high`.
    pub minutes_above_high: f64,
    /// Minutes with utilization below `low`.
    pub minutes_below_low: f64,
    /// The size held over time: vCPU-hours for CPU, GiB-hours for memory and disk.
    pub resource_hours: f64,
    /// Highest utilization seen.
    pub peak_utilization: f64,
    /// The size at the end (`NaN`, printed as null, in a sum over traces).
    pub final_size: f64,
    /// Hours replayed: the intervals the samples stand for.
    pub hours: f64,
    /// The usage held over time, in the unit of `resource_hours`: what was used of what was held.
    pub used_hours: f64,
    /// Provisioned over used, `resource_hours / used_hours`: 1.0 would be no headroom at all;
    /// `None` when nothing was used. An interval whose usage is missing counts as held, not used.
    pub slack: Option<f64>,
    /// Resizes per day replayed.
    pub changes_per_day: f64,
}

impl Summary {
    /// Fills the figures derived from the others (`slack`, `changes_per_day`).
    pub fn derive(&mut self) {
        self.slack = (self.used_hours > 0.0).then(|| self.resource_hours / self.used_hours);
        self.changes_per_day = if self.hours > 0.0 {
            self.changes as f64 / (self.hours / 24.0)
        } else {
            0.0
        };
    }

    /// The sum of several replays (one per trace): counts, minutes and hours add up, the peak
    /// is the highest, slack and changes per day are those of the totals (not a mean of ratios),
    /// and there is no one final size.
    pub fn total<'a>(summaries: impl IntoIterator<Item = &'a Summary>) -> Summary {
        let mut sum = Summary {
            final_size: f64::NAN,
            ..Summary::default()
        };
        for s in summaries {
            sum.changes += s.changes;
            sum.direction_changes += s.direction_changes;
            sum.minutes_above_high += s.minutes_above_high;
            sum.minutes_below_low += s.minutes_below_low;
            sum.resource_hours += s.resource_hours;
            sum.peak_utilization = sum.peak_utilization.max(s.peak_utilization);
            sum.hours += s.hours;
            sum.used_hours += s.used_hours;
        }
        sum.derive();
        sum
    }
}

/// One resize in the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub at: Timestamp,
    pub policy: &'static str,
    /// `role.resource`, e.g. `database.cpu`.
    pub knob: String,
    pub action: Action,
    pub from: f64,
    pub to: f64,
    /// `usage / from` at the sample that caused it (`None` when the usage was missing); for the
    /// replica count, the statistic the replica policy decided on.
    pub utilization: Option<f64>,
    pub reason: String,
}

/// A sizer's whole run: the score, the resizes, and (when asked, for the chart) the size at
/// every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub policy: &'static str,
    pub summary: Summary,
    pub changes: Vec<Change>,
    pub sizes: Vec<f64>,
}

/// Keeps the score as samples go by; no allocation, so the benchmark measures the policy.
#[derive(Clone, Copy, Debug)]
pub struct Tally {
    limits: Limits,
    /// Bytes per unit of `resource_hours` (1 for CPU, 2^30 for memory and disk).
    unit: f64,
    last_direction: Option<Action>,
    pub summary: Summary,
}

impl Tally {
    pub fn new(limits: Limits, unit: f64) -> Self {
        Tally {
            limits,
            unit,
            last_direction: None,
            summary: Summary::default(),
        }
    }

    /// Counts one interval of `secs` seconds at `usage` with `size` in place. A missing usage
    /// counts toward the size held, not toward any band.
    #[inline]
    pub fn interval(&mut self, secs: f64, usage: Option<f64>, size: f64) {
        self.interval_scored(secs, usage, usage.map(|u| u / size), size);
    }

    /// Like [`Tally::interval`], with the utilization the band judges given apart from the
    /// usage (the replica count: all members' demand is used, the replicas' utilization is
    /// judged). A missing utilization counts toward no band.
    #[inline]
    pub fn interval_scored(
        &mut self,
        secs: f64,
        usage: Option<f64>,
        utilization: Option<f64>,
        size: f64,
    ) {
        let hours = secs / 3600.0;
        self.summary.resource_hours += size / self.unit * hours;
        self.summary.hours += hours;
        self.summary.final_size = size;
        if let Some(usage) = usage {
            self.summary.used_hours += usage / self.unit * hours;
        }
        let Some(utilization) = utilization else {
            return;
        };
        let minutes = secs / 60.0;
        if utilization > self.limits.high {
            self.summary.minutes_above_high += minutes;
        } else if utilization < self.limits.low {
            self.summary.minutes_below_low += minutes;
        }
        if utilization > self.summary.peak_utilization {
            self.summary.peak_utilization = utilization;
        }
    }

    /// Counts one resize; returns its direction.
    #[inline]
    pub fn resize(&mut self, from: f64, to: f64) -> Action {
        let direction = if to > from {
            Action::Grow
        } else {
            Action::Shrink
        };
        self.summary.changes += 1;
        if self.last_direction.is_some_and(|d| d != direction) {
            self.summary.direction_changes += 1;
        }
        self.last_direction = Some(direction);
        self.summary.final_size = to;
        direction
    }

    /// The score, with its derived figures.
    pub fn finish(self) -> Summary {
        let mut summary = self.summary;
        summary.derive();
        summary
    }
}

/// The length of the interval sample `i` stands for, in seconds. Saturating: a recording's
/// times may lie anywhere in an `i64` of milliseconds (fuzz target `csv`).
#[inline]
pub fn interval_secs(times: &[Timestamp], i: usize) -> f64 {
    let (a, b) = match i {
        0 if times.len() >= 2 => (times[0], times[1]),
        0 => return 0.0,
        _ => (times[i - 1], times[i]),
    };
    b.as_millis().saturating_sub(a.as_millis()) as f64 / 1000.0
}

/// Replays `usage` (in the resource's unit, one per time in `times`, `None` where missing)
/// through `sizer`, starting at `initial`. `progress` is called with the count of samples done,
/// now and then.
#[allow(clippy::too_many_arguments)]
pub fn replay<S: Sizer + ?Sized>(
    sizer: &mut S,
    knob: &str,
    times: &[Timestamp],
    usage: &[Option<f64>],
    initial: f64,
    limits: Limits,
    unit: f64,
    keep_sizes: bool,
    progress: &mut dyn FnMut(u64),
) -> Track {
    let mut tally = Tally::new(limits, unit);
    let mut size = initial;
    tally.summary.final_size = size;
    let mut changes = Vec::new();
    let mut sizes = Vec::with_capacity(if keep_sizes { times.len() } else { 0 });
    for (i, (&at, &used)) in times.iter().zip(usage).enumerate() {
        tally.interval(interval_secs(times, i), used, size);
        if keep_sizes {
            sizes.push(size);
        }
        if let Some(resize) = sizer.step(at, used, size) {
            if resize.to != size {
                let action = tally.resize(size, resize.to);
                changes.push(Change {
                    at,
                    policy: sizer.name(),
                    knob: knob.to_string(),
                    action,
                    from: size,
                    to: resize.to,
                    utilization: used.map(|u| u / size),
                    reason: resize.reason,
                });
                size = resize.to;
            }
        }
        if i % 4096 == 4095 {
            progress(4096);
        }
    }
    progress(times.len() as u64 % 4096);
    Track {
        policy: sizer.name(),
        summary: tally.finish(),
        changes,
        sizes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::sizer::{Naive, Resize};

    const LIMITS: Limits = Limits {
        low: 0.3,
        high: 0.8,
        target: 0.6,
        min: 0.5,
        max: 16.0,
        step: 0.5,
    };

    fn times(n: usize) -> Vec<Timestamp> {
        (0..n as i64)
            .map(|i| Timestamp::from_secs(i * 300))
            .collect()
    }

    /// Sizes by a script: at sample `i` it answers `script[i]`.
    struct Scripted(Vec<Option<f64>>, usize);
    impl Sizer for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn step(&mut self, _: Timestamp, _: Option<f64>, _: f64) -> Option<Resize> {
            self.1 += 1;
            self.0[self.1 - 1].map(|to| Resize {
                to,
                reason: String::new(),
            })
        }
    }

    /// Found by the `csv` fuzz target: the two ends of the timestamp range, 584 million
    /// years apart, overflowed the interval's subtraction.
    #[test]
    fn times_at_both_ends_of_the_range_do_not_overflow() {
        let series = crate::evaluate::input::read_csv(
            &b"timestamp,value\n-9223372036854775,10\n9223372036854775,20\n"[..],
            "extreme.csv",
            false,
        )
        .unwrap();
        let times: Vec<Timestamp> = series.samples.iter().map(|s| s.at).collect();
        assert_eq!(interval_secs(&times, 1), i64::MAX as f64 / 1000.0);
        let mut s = Scripted(vec![None, None], 0);
        let t = replay(
            &mut s,
            "database.cpu",
            &times,
            &[Some(1.0), Some(1.0)],
            2.0,
            LIMITS,
            1.0,
            false,
            &mut |_| {},
        );
        assert!(t.summary.resource_hours.is_finite());
    }

    #[test]
    fn utilization_uses_the_size_in_place_and_counts_minutes() {
        // 1.8 vCPU on 2: 0.9 > high for the first two 5-minute intervals; then 4 vCPU: 0.45.
        let mut s = Scripted(vec![None, Some(4.0), None, None], 0);
        let t = replay(
            &mut s,
            "database.cpu",
            &times(4),
            &[Some(1.8); 4],
            2.0,
            LIMITS,
            1.0,
            true,
            &mut |_| {},
        );
        assert_eq!(t.summary.changes, 1);
        assert_eq!(t.summary.minutes_above_high, 10.0);
        assert_eq!(t.summary.minutes_below_low, 0.0);
        // 2 vCPU for 2 x 5 min, 4 vCPU for 2 x 5 min: 1/3 + 2/3 hours.
        assert!(
            (t.summary.resource_hours - 1.0).abs() < 1e-9,
            "{}",
            t.summary.resource_hours
        );
        assert_eq!(t.sizes, vec![2.0, 2.0, 4.0, 4.0]);
        assert_eq!(t.changes[0].action, Action::Grow);
        assert_eq!(t.changes[0].utilization, Some(0.9));
    }

    #[test]
    fn direction_changes_count_reversals_only() {
        let mut s = Scripted(
            vec![
                Some(3.0),
                Some(4.0),
                Some(2.0),
                Some(1.0),
                Some(2.0),
                Some(2.0),
            ],
            0,
        );
        let t = replay(
            &mut s,
            "k",
            &times(6),
            &[Some(1.0); 6],
            2.0,
            LIMITS,
            1.0,
            false,
            &mut |_| {},
        );
        // 3, 4 (up), 2, 1 (down: one reversal), 2 (up: two); the last answer keeps the size.
        assert_eq!(t.summary.changes, 5);
        assert_eq!(t.summary.direction_changes, 2);
        assert_eq!(t.summary.final_size, 2.0);
        assert!(t.sizes.is_empty());
    }

    /// The scorecard's figures by hand: 4 samples 5 minutes apart, usage 0.4, 0.4, 1.8, 0.4
    /// vCPU; sizes 2, 2, then shrink to 1, grow to 3, shrink to 1.
    #[test]
    fn scorecard_figures_on_a_tiny_trace() {
        let mut s = Scripted(vec![None, Some(1.0), Some(3.0), Some(1.0)], 0);
        let usage = [Some(0.4), Some(0.4), Some(1.8), Some(0.4)];
        let t = replay(
            &mut s,
            "k",
            &times(4),
            &usage,
            2.0,
            LIMITS,
            1.0,
            false,
            &mut |_| {},
        );
        let s = t.summary;
        assert_eq!((s.changes, s.direction_changes), (3, 2));
        // Utilization 0.2, 0.2, 1.8, 0.13: below low, below, above high, below.
        assert_eq!(s.minutes_below_low, 15.0);
        assert_eq!(s.minutes_above_high, 5.0);
        // Held: (2 + 2 + 1 + 3) x 5 min = 8/12 vCPU-hours; used: 3.0 x 5 min = 3/12.
        assert!((s.resource_hours - 8.0 / 12.0).abs() < 1e-12, "{s:?}");
        assert!((s.used_hours - 3.0 / 12.0).abs() < 1e-12, "{s:?}");
        assert!((s.slack.unwrap() - 8.0 / 3.0).abs() < 1e-12, "{s:?}");
        // 3 changes in 20 minutes: 216 a day.
        assert!((s.hours - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.changes_per_day - 216.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.final_size, 1.0);

        // The sum of two such traces: counts add, ratios are those of the totals.
        let sum = Summary::total([&s, &s]);
        assert_eq!((sum.changes, sum.direction_changes), (6, 4));
        assert_eq!(sum.minutes_below_low, 30.0);
        assert!((sum.slack.unwrap() - 8.0 / 3.0).abs() < 1e-12);
        assert!((sum.changes_per_day - 216.0).abs() < 1e-9);
        assert!(sum.final_size.is_nan(), "no one final size");
        let idle = Summary {
            hours: 1.0,
            resource_hours: 2.0,
            ..Summary::default()
        };
        assert_eq!(
            Summary::total([&idle]).slack,
            None,
            "nothing used: no slack"
        );
    }

    #[test]
    fn naive_flaps_on_a_sawtooth() {
        let usage: Vec<Option<f64>> = (0..20)
            .map(|i| Some(if i % 2 == 0 { 1.9 } else { 0.2 }))
            .collect();
        let t = replay(
            &mut Naive::new(LIMITS),
            "k",
            &times(20),
            &usage,
            2.0,
            LIMITS,
            1.0,
            false,
            &mut |_| {},
        );
        assert!(t.summary.direction_changes >= 18, "{:?}", t.summary);
    }

    #[test]
    fn missing_usage_costs_size_but_no_band_minutes() {
        let mut s = Scripted(vec![None; 3], 0);
        let t = replay(
            &mut s,
            "k",
            &times(3),
            &[None, Some(0.1), None],
            2.0,
            LIMITS,
            1.0,
            false,
            &mut |_| {},
        );
        assert_eq!(t.summary.minutes_below_low, 5.0);
        assert!((t.summary.resource_hours - 0.5).abs() < 1e-9);
    }

    #[test]
    fn progress_reports_every_sample_once() {
        let n = 10_000;
        let mut seen = 0;
        replay(
            &mut Naive::new(LIMITS),
            "k",
            &times(n),
            &vec![Some(1.0); n],
            2.0,
            LIMITS,
            1.0,
            false,
            &mut |d| seen += d,
        );
        assert_eq!(seen, n as u64);
    }

    proptest::proptest! {
        /// For any load, every sizer stays within bounds, the score adds up, and a flap is a change.
        #[test]
        fn every_sizer_keeps_bounds_and_a_consistent_score(
            load in proptest::collection::vec(proptest::option::of(0.0f64..40.0), 1..300),
            period in 1i64..600,
        ) {
            let config = steward_policies::PolicyConfig::default().database.cpu;
            let limits = crate::evaluate::steward::limits_of(&config);
            let times: Vec<Timestamp> =
                (0..load.len() as i64).map(|i| Timestamp::from_secs(i * period)).collect();
            let sizers: Vec<Box<dyn Sizer>> = vec![
                Box::new(crate::evaluate::steward::StewardVertical::new(
                    steward_model::Role::Database, steward_model::Resource::Cpu, config, true)),
                Box::new(crate::evaluate::sizer::Hpa::new(limits)),
                Box::new(Naive::new(limits)),
            ];
            let span_ms = times[times.len() - 1].as_millis() - times[0].as_millis();
            let total_minutes = interval_secs(&times, 0) / 60.0 + span_ms as f64 / 60_000.0;
            for mut sizer in sizers {
                let t = replay(sizer.as_mut(), "k", &times, &load, 2.0, limits, 1.0, true, &mut |_| {});
                let s = t.summary;
                let in_bounds = |c: &Change| c.to >= limits.min && c.to <= limits.max;
                proptest::prop_assert!(t.changes.iter().all(in_bounds), "{}: {:?}", t.policy, t.changes);
                proptest::prop_assert_eq!(s.changes as usize, t.changes.len());
                proptest::prop_assert!(s.direction_changes < s.changes.max(1));
                proptest::prop_assert!(s.minutes_above_high + s.minutes_below_low <= total_minutes + 1e-6);
                // Resource-hours are the size held over time.
                let hours: f64 =
                    t.sizes.iter().enumerate().map(|(i, size)| size * interval_secs(&times, i) / 3600.0).sum();
                proptest::prop_assert!((s.resource_hours - hours).abs() <= 1e-6 * hours.max(1.0));
                // Nothing grows on missing data.
                proptest::prop_assert!(t.changes.iter().all(|c| c.utilization.is_some()), "{:?}", t.changes);
            }
        }
    }
}
