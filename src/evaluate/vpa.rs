//! The Kubernetes Vertical Pod Autoscaler as a baseline: its recommender (a decaying histogram
//! of usage, a target and a range around it) and the one rule of its updater that moves a size
//! (the size left the range).
//!
//! What this is: a faithful model of the recommender's arithmetic, with every constant taken
//! from the autoscaler's own code (`kubernetes/autoscaler`, `vertical-pod-autoscaler/pkg/...`;
//! each constant names its file and Go name), fed one sample at a time like every [`Sizer`].
//! What it is not: the VPA's plumbing (checkpoints, the metrics server, pod eviction and the
//! admission webhook). A resize here is instant, like every other policy's in the replay.
//!
//! The model, sample by sample:
//! - CPU: each sample goes into a histogram with exponential buckets (5 % wide), weighted by the
//!   current size (the VPA weighs a CPU sample by the container's request, at least
//!   [`MIN_SAMPLE_WEIGHT`]) and by `2^(age / 24 h)` relative to the newest: the past fades with
//!   a half-life of [`HALF_LIFE`]. The recommender samples once a minute, so a 5-minute sample
//!   counts as five of its samples (weight and sample count alike).
//! - Memory: the histogram holds one peak per 24 h window ([`MEMORY_AGGREGATION_INTERVAL`]),
//!   each with weight 1, decayed the same way; the current window's peak replaces itself as it
//!   grows, as the recommender's `AggregateMemoryPeaks` does.
//! - Target `p90 x 1.15`, lower bound `p50 x 1.15`, upper bound `p95 x 1.15`: the safety margin
//!   applies to all three (`WithCPUMargin` wraps each estimator). Then the confidence
//!   multipliers: the upper bound times `1 + 1/confidence`, the lower bound times
//!   `(1 + 0.001/confidence)^-2`, where confidence is the history in days (the smaller of its
//!   span and its sample count over 1440 a day). With no history the range is `[0, inf)`: the
//!   updater evicts nothing; after an hour the lower bound is 95 % of its value; after a day the
//!   upper bound is twice its value, after a week 1.14x.
//! - The updater: while the size lies inside `[lower, upper]` nothing happens; once it leaves
//!   the range the size becomes the target, rounded up to the platform's step within the bounds
//!   (the bounds cap the range too, as the VPA's `minAllowed`/`maxAllowed` cap its
//!   recommendation).
//!
//! Left out: the updater's second path (a pod older than 12 h whose request differs from the
//! target by 10 % or more is updated inside the range too: `pod-update-threshold` 0.1 and
//! `in-recommendation-bounds-eviction-lifetime-threshold` 12h in `pkg/updater/main.go`); its
//! eviction rate limits and `min-replicas` (one member here); the OOM bump-up
//! (`DefaultOOMBumpUpRatio` 1.2, `DefaultOOMMinBumpUp` 100 MB); and the memory histogram's
//! 8-day window (`DefaultMemoryAggregationIntervalCount`), which the 24 h half-life makes matter
//! little. For a memory-only replay the confidence counts memory samples (the VPA counts CPU
//! samples, which a memory trace does not have).

use std::time::Duration;

use steward_model::{Resource, Timestamp};

use super::sizer::{Limits, Resize, Sizer};

/// The target's percentile: `targetCPUPercentile` / `targetMemoryPercentile` (flags
/// `--target-cpu-percentile`, `--target-memory-percentile`, default 0.9),
/// `vertical-pod-autoscaler/pkg/recommender/logic/recommender.go`.
pub const TARGET_PERCENTILE: f64 = 0.9;
/// The lower bound's percentile: `lowerBoundCPUPercentile` / `lowerBoundMemoryPercentile`
/// (default 0.5), `pkg/recommender/logic/recommender.go`.
pub const LOWER_BOUND_PERCENTILE: f64 = 0.5;
/// The upper bound's percentile: `upperBoundCPUPercentile` / `upperBoundMemoryPercentile`
/// (default 0.95), `pkg/recommender/logic/recommender.go`.
pub const UPPER_BOUND_PERCENTILE: f64 = 0.95;
/// The safety margin added to target, lower and upper bound: `safetyMarginFraction` (flag
/// `--recommendation-margin-fraction`, default 0.15), `pkg/recommender/logic/recommender.go`.
pub const SAFETY_MARGIN: f64 = 0.15;
/// The upper bound's confidence multiplier `(1 + 1.0/confidence)^1.0`:
/// `WithCPUConfidenceMultiplier(1.0, 1.0, upperBoundCPU, ...)`,
/// `pkg/recommender/logic/recommender.go` (the formula: `pkg/recommender/logic/estimator.go`).
pub const UPPER_CONFIDENCE: (f64, f64) = (1.0, 1.0);
/// The lower bound's confidence multiplier `(1 + 0.001/confidence)^-2`:
/// `WithCPUConfidenceMultiplier(0.001, -2.0, lowerBoundCPU, ...)`, same file.
pub const LOWER_CONFIDENCE: (f64, f64) = (0.001, -2.0);
/// Confidence is the history's length in days, and samples count at one a minute:
/// `getConfidence` divides `TotalSamplesCount` by `60 * 24`, `pkg/recommender/logic/estimator.go`
/// (the day is `confidenceIntervalCPU`, default 24h, in recommender.go).
pub const SAMPLES_PER_DAY: f64 = 60.0 * 24.0;
/// The decay's half-life, CPU and memory: `DefaultCPUHistogramDecayHalfLife` and
/// `DefaultMemoryHistogramDecayHalfLife` (`time.Hour * 24`),
/// `pkg/recommender/model/aggregations_config.go`.
pub const HALF_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Each bucket is 5 % wider than the one before: `DefaultHistogramBucketSizeGrowth` (0.05),
/// `pkg/recommender/model/aggregations_config.go`.
pub const BUCKET_GROWTH: f64 = 0.05;
/// CPU histogram: first bucket 0.01 core, up to 1000 cores: `cpuHistogramOptions`
/// (`NewExponentialHistogramOptions(1000.0, 0.01, ...)`), `pkg/recommender/model/aggregations_config.go`.
/// (One later revision has 0.001 there under the same "0.01 core" comment; it only changes
/// buckets below 0.01 core.)
pub const CPU_HISTOGRAM: (f64, f64) = (1000.0, 0.01);
/// Memory histogram: first bucket 10 MB, up to 1 TB: `memoryHistogramOptions`
/// (`NewExponentialHistogramOptions(1e12, 1e7, ...)`), same file.
pub const MEMORY_HISTOGRAM: (f64, f64) = (1e12, 1e7);
/// The least weight of a CPU sample, whatever the request: `minSampleWeight` (0.1),
/// `pkg/recommender/model/aggregations_config.go`.
pub const MIN_SAMPLE_WEIGHT: f64 = 0.1;
/// A bucket lighter than this is empty: `epsilon = 0.001 * minSampleWeight`, same file.
pub const EPSILON: f64 = 0.001 * MIN_SAMPLE_WEIGHT;
/// Memory peaks are taken per window of this length: `DefaultMemoryAggregationInterval`
/// (`time.Hour * 24`), same file.
pub const MEMORY_AGGREGATION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The least recommendation: `podMinCPUMillicores` (25) and `podMinMemoryMb` (250),
/// `pkg/recommender/logic/recommender.go`. Steward's bounds are far above both.
pub const POD_MIN: (f64, f64) = (0.025, 250.0 * 1024.0 * 1024.0);
/// The renormalisation point of the decay: `maxDecayExponent` (100),
/// `pkg/recommender/util/decaying_histogram.go`.
const MAX_DECAY_EXPONENT: f64 = 100.0;

/// A histogram with exponentially growing buckets whose samples decay with a half-life, as
/// `pkg/recommender/util/{histogram,decaying_histogram}.go`.
#[derive(Clone, Debug)]
pub struct DecayingHistogram {
    first_bucket: f64,
    ratio: f64,
    weights: Vec<f64>,
    total: f64,
    half_life_ms: f64,
    /// Weights are relative to this time (a sample at `reference + h` weighs `2^(h/half-life)`).
    reference: Option<Timestamp>,
}

impl DecayingHistogram {
    /// Buckets from 0 to at least `max`, the first `first_bucket` wide.
    pub fn new((max, first_bucket): (f64, f64), half_life: Duration) -> Self {
        let ratio = 1.0 + BUCKET_GROWTH;
        let buckets = ((max * (ratio - 1.0) / first_bucket + 1.0).ln() / ratio.ln()).ceil() + 1.0;
        DecayingHistogram {
            first_bucket,
            ratio,
            weights: vec![0.0; buckets as usize],
            total: 0.0,
            half_life_ms: half_life.as_millis() as f64,
            reference: None,
        }
    }

    fn bucket(&self, value: f64) -> usize {
        if value < self.first_bucket {
            return 0;
        }
        let b = ((value * (self.ratio - 1.0) / self.first_bucket + 1.0).ln() / self.ratio.ln())
            .floor() as usize;
        b.min(self.weights.len() - 1)
    }

    fn bucket_start(&self, bucket: usize) -> f64 {
        if bucket == 0 {
            0.0
        } else {
            self.first_bucket * (self.ratio.powi(bucket as i32) - 1.0) / (self.ratio - 1.0)
        }
    }

    /// `2^((at - reference) / half-life)`, shifting the reference forward (and scaling every
    /// weight down) when the exponent would pass [`MAX_DECAY_EXPONENT`].
    fn decay(&mut self, at: Timestamp) -> f64 {
        let reference = *self.reference.get_or_insert(at);
        let mut exponent =
            at.as_millis().saturating_sub(reference.as_millis()) as f64 / self.half_life_ms;
        if exponent > MAX_DECAY_EXPONENT {
            let shift = exponent.round();
            let scale = (-shift).exp2();
            for w in &mut self.weights {
                *w *= scale;
            }
            self.total *= scale;
            self.reference = Some(Timestamp::from_millis(
                reference
                    .as_millis()
                    .saturating_add((shift * self.half_life_ms) as i64),
            ));
            exponent -= shift;
        }
        exponent.exp2()
    }

    /// Adds `value` with `weight` (before decay) at `at`.
    pub fn add(&mut self, value: f64, weight: f64, at: Timestamp) {
        let w = weight * self.decay(at);
        let b = self.bucket(value);
        self.weights[b] += w;
        self.total += w;
    }

    /// Takes back a sample added with the same value, weight and time (never below zero).
    pub fn subtract(&mut self, value: f64, weight: f64, at: Timestamp) {
        let b = self.bucket(value);
        let w = (weight * self.decay(at)).min(self.weights[b]);
        self.weights[b] -= w;
        self.total -= w;
    }

    /// The `p` quantile (0..1): the end of the bucket where the running weight reaches
    /// `p x total` (the last bucket's start for the last one); 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        let Some(first) = self.weights.iter().position(|&w| w >= EPSILON) else {
            return 0.0;
        };
        let last = self
            .weights
            .iter()
            .rposition(|&w| w >= EPSILON)
            .unwrap_or(first);
        let threshold = p * self.total;
        let mut sum = 0.0;
        let mut bucket = first;
        while bucket < last {
            sum += self.weights[bucket];
            if sum >= threshold {
                break;
            }
            bucket += 1;
        }
        if bucket < self.weights.len() - 1 {
            self.bucket_start(bucket + 1)
        } else {
            self.bucket_start(bucket)
        }
    }
}

/// What the recommender says at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recommendation {
    pub target: f64,
    pub lower: f64,
    pub upper: f64,
}

/// The VPA recommender and updater as a sizer.
#[derive(Clone, Debug)]
pub struct Vpa {
    limits: Limits,
    resource: Resource,
    histogram: DecayingHistogram,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    /// Recommender samples (one a minute) seen.
    samples: f64,
    /// Memory: the current window's start and its peak so far.
    window: Option<(Timestamp, f64)>,
}

impl Vpa {
    pub fn new(limits: Limits, resource: Resource) -> Self {
        let options = match resource {
            Resource::Cpu => CPU_HISTOGRAM,
            Resource::Memory | Resource::Disk => MEMORY_HISTOGRAM,
        };
        Vpa {
            limits,
            resource,
            histogram: DecayingHistogram::new(options, HALF_LIFE),
            first: None,
            last: None,
            samples: 0.0,
            window: None,
        }
    }

    /// Feeds one sample of `usage` while the member has `size`.
    pub fn observe(&mut self, at: Timestamp, usage: f64, size: f64) {
        // The recommender takes a sample a minute: a longer interval stands for several.
        let minutes = self.last.map_or(1.0, |last| {
            at.as_millis().saturating_sub(last.as_millis()) as f64 / 60_000.0
        });
        self.first.get_or_insert(at);
        self.last = Some(at);
        self.samples += minutes;
        match self.resource {
            Resource::Cpu => {
                let weight = size.max(MIN_SAMPLE_WEIGHT) * minutes;
                self.histogram.add(usage, weight, at);
            }
            Resource::Memory | Resource::Disk => {
                let interval = MEMORY_AGGREGATION_INTERVAL;
                match self.window {
                    Some((start, peak)) if at < start + interval => {
                        if usage > peak {
                            self.histogram.subtract(peak, 1.0, start);
                            self.histogram.add(usage, 1.0, start);
                            self.window = Some((start, usage));
                        }
                    }
                    Some((start, _)) => {
                        // Windows follow one another from the first sample on.
                        let length = interval.as_millis() as i64;
                        let n = at.as_millis().saturating_sub(start.as_millis()) / length;
                        let start = Timestamp::from_millis(
                            start.as_millis().saturating_add(n.saturating_mul(length)),
                        );
                        self.histogram.add(usage, 1.0, start);
                        self.window = Some((start, usage));
                    }
                    None => {
                        self.histogram.add(usage, 1.0, at);
                        self.window = Some((at, usage));
                    }
                }
            }
        }
    }

    /// The history's worth in days: `getConfidence`.
    fn confidence(&self) -> f64 {
        let span_days = match (self.first, self.last) {
            (Some(a), Some(b)) => b.as_millis().saturating_sub(a.as_millis()) as f64 / 86_400_000.0,
            _ => 0.0,
        };
        span_days.min(self.samples / SAMPLES_PER_DAY)
    }

    /// Target and range now, capped to the bounds.
    pub fn recommendation(&self) -> Recommendation {
        let least = match self.resource {
            Resource::Cpu => POD_MIN.0,
            Resource::Memory | Resource::Disk => POD_MIN.1,
        };
        let estimate = |p: f64| (self.histogram.percentile(p) * (1.0 + SAFETY_MARGIN)).max(least);
        let confidence = self.confidence();
        let multiplier = |(m, e): (f64, f64)| (1.0 + m / confidence).powf(e);
        let cap = |v: f64| v.clamp(self.limits.min, self.limits.max.max(self.limits.min));
        Recommendation {
            target: cap(estimate(TARGET_PERCENTILE)),
            lower: cap(estimate(LOWER_BOUND_PERCENTILE) * multiplier(LOWER_CONFIDENCE)),
            upper: cap(estimate(UPPER_BOUND_PERCENTILE) * multiplier(UPPER_CONFIDENCE)),
        }
    }
}

impl Sizer for Vpa {
    fn name(&self) -> &'static str {
        "vpa"
    }

    fn step(&mut self, at: Timestamp, usage: Option<f64>, size: f64) -> Option<Resize> {
        // No usage, no sample: the recommender has nothing to add and the range stands.
        let usage = usage?;
        self.observe(at, usage, size);
        let r = self.recommendation();
        if size >= r.lower && size <= r.upper {
            return None;
        }
        let to = self.limits.ceil_to_step(r.target);
        (to != size).then(|| Resize {
            to,
            reason: format!(
                "size outside the recommended range [{:.3}, {:.3}]: target {:.3} (p90 x 1.15)",
                r.lower, r.upper, r.target
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        low: 0.5,
        high: 0.8,
        target: 0.65,
        min: 1.0,
        max: 16.0,
        step: 0.5,
    };

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + minutes * 60)
    }

    /// Replays `usage(minute)` every 5 minutes for `days`, applying every resize; returns the
    /// final size and the resizes.
    fn run(vpa: &mut Vpa, size: f64, days: i64, usage: impl Fn(i64) -> f64) -> (f64, Vec<f64>) {
        let mut size = size;
        let mut resizes = Vec::new();
        for m in (0..days * 24 * 60).step_by(5) {
            if let Some(r) = vpa.step(at(m), Some(usage(m)), size) {
                size = r.to;
                resizes.push(r.to);
            }
        }
        (size, resizes)
    }

    #[test]
    fn the_histogram_quantile_is_the_end_of_its_bucket() {
        let mut h = DecayingHistogram::new(CPU_HISTOGRAM, HALF_LIFE);
        assert_eq!(h.percentile(0.9), 0.0, "empty");
        h.add(1.0, 1.0, at(0));
        let p = h.percentile(0.5);
        // Buckets are 5 % wide: the answer is above the value and within one bucket of it.
        assert!(p > 1.0 && p <= 1.05 + 1e-9, "{p}");
    }

    #[test]
    fn a_constant_load_converges_to_p90_plus_the_margin_rounded_to_the_step() {
        // 1.6 vCPU: p90 is the end of its bucket (buckets are under 6 % wide there), in
        // [1.6, 1.7); x 1.15 in [1.84, 1.95]: 2.0 vCPU.
        let mut vpa = Vpa::new(LIMITS, Resource::Cpu);
        let (size, resizes) = run(&mut vpa, 4.0, 3, |_| 1.6);
        assert_eq!(size, 2.0);
        assert_eq!(
            resizes,
            vec![2.0],
            "one shrink, once the upper bound is confident"
        );
        let r = vpa.recommendation();
        assert!(r.target >= 1.6 * 1.15 && r.target < 1.7 * 1.15, "{r:?}");
    }

    #[test]
    fn the_first_day_shrinks_nothing_because_the_upper_bound_is_not_confident() {
        // The upper bound is p95 x 1.15 x (1 + 1/days): at 1.6 vCPU used it passes under 4 vCPU
        // only after about 23 hours (x 2.04).
        let mut vpa = Vpa::new(LIMITS, Resource::Cpu);
        for m in (0..20 * 60).step_by(5) {
            assert_eq!(vpa.step(at(m), Some(1.6), 4.0), None, "minute {m}");
        }
        assert!(
            vpa.recommendation().upper > 4.0,
            "{:?}",
            vpa.recommendation()
        );
    }

    #[test]
    fn it_does_not_move_while_the_size_is_inside_its_range() {
        // Load swings between 1.0 and 1.6 vCPU every hour: p50 x 1.15 <= 2 <= p95 x 1.15 x
        // (1 + 1/days) once settled, so after the first change nothing moves for ten days.
        let mut vpa = Vpa::new(LIMITS, Resource::Cpu);
        let swing = |m: i64| if (m / 60) % 2 == 0 { 1.0 } else { 1.6 };
        let (size, first) = run(&mut vpa, 2.0, 2, swing);
        assert!(first.len() <= 1, "{first:?}");
        let mut settled = size;
        for m in (2 * 24 * 60..12 * 24 * 60).step_by(5) {
            let r = vpa.step(at(m), Some(swing(m)), settled);
            assert_eq!(r, None, "minute {m}: {:?}", vpa.recommendation());
            settled = r.map_or(settled, |r| r.to);
        }
    }

    #[test]
    fn a_size_below_the_lower_bound_grows_to_the_target_at_once() {
        // 3 vCPU used on 1 vCPU: after 5 minutes the lower bound is already 60 % of p50 x 1.15.
        let mut vpa = Vpa::new(LIMITS, Resource::Cpu);
        assert_eq!(
            vpa.step(at(0), Some(3.0), 1.0),
            None,
            "no history: range [0, inf)"
        );
        let grow = vpa.step(at(5), Some(3.0), 1.0).expect("a grow");
        // 3 vCPU's bucket ends at 3.03; x 1.15 = 3.48: 3.5.
        assert_eq!(grow.to, 3.5, "{}", grow.reason);
    }

    #[test]
    fn old_peaks_fade_with_a_half_life_of_a_day() {
        // One day at 3 vCPU, then 1 vCPU. The day of peak holds (2^1 - 1) of the weight against
        // (2^(1+t) - 1) in all after t more days: it leaves the top 10 % (p90 falls to the
        // quiet level) when 2^(1+t) > 11, t = 2.46 days.
        let target_after = |days: f64| {
            let mut vpa = Vpa::new(LIMITS, Resource::Cpu);
            let end = ((1.0 + days) * 24.0 * 60.0) as i64;
            for m in (0..end).step_by(5) {
                let u = if m < 24 * 60 { 3.0 } else { 1.0 };
                vpa.observe(at(m), u, 2.0);
            }
            vpa.recommendation().target
        };
        assert!(
            target_after(0.0) > 3.0 * 1.15,
            "the peak day: {}",
            target_after(0.0)
        );
        assert!(target_after(2.3) > 3.0 * 1.15, "{}", target_after(2.3));
        assert!(target_after(2.7) < 1.1 * 1.15, "{}", target_after(2.7));
    }

    #[test]
    fn a_cpu_sample_weighs_as_much_as_the_size_it_was_taken_at() {
        // Weights: the first sample 1 minute, then 5-minute samples: 1, 5 and 5 at size 1, so
        // the median is the 1 vCPU bucket; taken at size 8 the last weighs 40 and the median
        // moves to 3 vCPU.
        let median = |last_size: f64| {
            let mut vpa = Vpa::new(LIMITS, Resource::Cpu);
            vpa.observe(at(0), 1.0, 1.0);
            vpa.observe(at(5), 1.0, 1.0);
            vpa.observe(at(10), 3.0, last_size);
            vpa.histogram.percentile(0.5)
        };
        assert!(median(1.0) < 1.1, "{}", median(1.0));
        assert!(median(8.0) > 3.0, "{}", median(8.0));
    }

    #[test]
    fn memory_keeps_one_peak_per_day() {
        let gib = 1024f64.powi(3);
        let limits = Limits {
            min: gib,
            max: 64.0 * gib,
            step: 0.25 * gib,
            ..LIMITS
        };
        let mut vpa = Vpa::new(limits, Resource::Memory);
        // Within a day the peak replaces itself: one sample of weight 1 at 3 GiB.
        for (m, u) in [(0, 1.0), (60, 3.0), (120, 2.0)] {
            vpa.observe(at(m), u * gib, 4.0 * gib);
        }
        assert!(
            (vpa.histogram.total - 1.0).abs() < 1e-9,
            "{}",
            vpa.histogram.total
        );
        let p50 = vpa.histogram.percentile(0.5) / gib;
        assert!((3.0..3.2).contains(&p50), "{p50}");
        // The next day adds a second peak.
        vpa.observe(at(24 * 60 + 1), gib, 4.0 * gib);
        assert!(vpa.histogram.total > 1.5);
    }

    #[test]
    fn missing_usage_changes_nothing() {
        assert_eq!(Vpa::new(LIMITS, Resource::Cpu).step(at(0), None, 8.0), None);
    }
}
