//! A time window of samples with an order statistic: the vertical policy's memory.
//!
//! What it is: a ring buffer of `(time, value, complete)` plus the same values kept sorted, so a
//! percentile is an index and a push or an eviction is a binary search and a short `memmove`. After warm-up nothing allocates: both
//! buffers keep their capacity. What it is not: a general time series; it keeps at most
//! [`MAX_SAMPLES`] samples and drops the oldest beyond that.

use std::collections::VecDeque;

use statrs::statistics::Statistics;

use crate::config::Statistic;

/// A bound on memory and on the per-tick work: 4096 samples is 17 hours at a 15 s scrape, far
/// beyond any sensible window; a caller feeding faster than that loses the oldest samples first.
pub(crate) const MAX_SAMPLES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Sample {
    at_ms: i64,
    value: f64,
    /// Every member had a fresh figure when this sample was taken.
    complete: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Window {
    samples: VecDeque<Sample>,
    /// The values of `samples`, sorted ascending.
    sorted: Vec<f64>,
    /// How many samples are not complete (some member's figure was missing or stale).
    incomplete: usize,
}

impl Window {
    /// Adds a sample. `value` must be finite; a sample older than the newest one is ignored so
    /// that the ring stays ordered by time (returns false).
    pub(crate) fn push(&mut self, at_ms: i64, value: f64, complete: bool) -> bool {
        debug_assert!(value.is_finite());
        if self.samples.back().is_some_and(|s| s.at_ms > at_ms) {
            return false;
        }
        if self.samples.len() >= MAX_SAMPLES {
            self.pop_oldest();
        }
        self.samples.push_back(Sample {
            at_ms,
            value,
            complete,
        });
        let i = self.sorted.partition_point(|x| *x < value);
        self.sorted.insert(i, value);
        if !complete {
            self.incomplete += 1;
        }
        true
    }

    /// Drops every sample taken at or before `cutoff_ms`.
    pub(crate) fn evict_through(&mut self, cutoff_ms: i64) {
        while self.samples.front().is_some_and(|s| s.at_ms <= cutoff_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(s) = self.samples.pop_front() {
            let i = self.sorted.partition_point(|x| *x < s.value);
            debug_assert!(self.sorted.get(i) == Some(&s.value));
            self.sorted.remove(i);
            if !s.complete {
                self.incomplete -= 1;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
        self.sorted.clear();
        self.incomplete = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(crate) fn incomplete(&self) -> usize {
        self.incomplete
    }

    /// The statistic over the window; `None` when it is empty.
    pub(crate) fn statistic(&mut self, statistic: Statistic) -> Option<f64> {
        if self.sorted.is_empty() {
            return None;
        }
        Some(match statistic {
            Statistic::Mean => self.sorted.iter().mean(),
            Statistic::Percentile(p) => quantile_sorted(&self.sorted, p / 100.0),
        })
    }
}

/// The `tau` quantile of sorted, non-empty data by R's type 8 (median-unbiased), exactly as
/// statrs's `OrderStatistics::quantile` computes it. statrs checks the order of the whole slice
/// twice per call before it indexes; on sorted data that is pure cost, and it was half of a tick,
/// so the hot path indexes directly. `quantile_matches_statrs` holds the two together.
fn quantile_sorted(sorted: &[f64], tau: f64) -> f64 {
    let n = sorted.len();
    let h = (n as f64 + 1.0 / 3.0) * tau + 1.0 / 3.0;
    let hf = h as i64;
    if hf <= 0 || tau <= 0.0 {
        return sorted[0];
    }
    if hf >= n as i64 || tau >= 1.0 {
        return sorted[n - 1];
    }
    let (a, b) = (sorted[hf as usize - 1], sorted[hf as usize]);
    a + (h - hf as f64) * (b - a)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use statrs::statistics::{Data, OrderStatistics};

    use super::*;

    proptest! {
        #[test]
        fn quantile_matches_statrs(
            mut values in prop::collection::vec(0.0..100.0f64, 1..50),
            p in 0.1..=100.0f64,
        ) {
            let expected = Data::new(values.clone()).quantile(p / 100.0);
            values.sort_by(f64::total_cmp);
            prop_assert_eq!(quantile_sorted(&values, p / 100.0), expected);
        }
    }

    #[test]
    fn percentile_and_mean_follow_the_window() {
        let mut w = Window::default();
        for (i, v) in [5.0, 1.0, 4.0, 2.0, 3.0].into_iter().enumerate() {
            assert!(w.push(i as i64 * 1000, v, true));
        }
        assert_eq!(w.statistic(Statistic::Mean), Some(3.0));
        assert_eq!(w.statistic(Statistic::Percentile(100.0)), Some(5.0));
        assert_eq!(w.statistic(Statistic::Percentile(50.0)), Some(3.0));
        // Evicting the first two (5.0 and 1.0) leaves 4, 2, 3.
        w.evict_through(1000);
        assert_eq!(w.len(), 3);
        assert_eq!(w.statistic(Statistic::Percentile(100.0)), Some(4.0));
        assert_eq!(w.statistic(Statistic::Mean), Some(3.0));
    }

    #[test]
    fn incomplete_samples_are_counted_until_evicted() {
        let mut w = Window::default();
        w.push(0, 1.0, false);
        w.push(1000, 1.0, true);
        assert_eq!(w.incomplete(), 1);
        w.evict_through(0);
        assert_eq!(w.incomplete(), 0);
        assert!(!w.push(500, 2.0, true), "an out-of-order sample is ignored");
        w.clear();
        assert_eq!(w.statistic(Statistic::Mean), None);
    }

    #[test]
    fn the_ring_is_bounded() {
        let mut w = Window::default();
        for i in 0..(MAX_SAMPLES as i64 + 10) {
            w.push(i, i as f64, true);
        }
        assert_eq!(w.len(), MAX_SAMPLES);
        assert_eq!(
            w.statistic(Statistic::Percentile(100.0)),
            Some((MAX_SAMPLES + 9) as f64)
        );
    }
}
