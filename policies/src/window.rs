//! A time window of samples with an order statistic: the vertical policy's memory.
//!
//! What it is: a ring buffer of `(time, value, complete)` and, for windows larger than
//! [`SMALL`] samples, the same values kept sorted, so a percentile is an index. After warm-up
//! nothing allocates: the buffers keep their capacity. What it is not: a general time series; it
//! keeps at most [`MAX_SAMPLES`] samples and drops the oldest beyond that.
//!
//! Why two ways: the policy's tick is `push`, `evict_through`, `statistic`, and the usual window
//! holds 8-20 samples. Keeping those sorted costs a search and a shift per push and per eviction
//! for a statistic that is almost always the maximum (p95 of up to 12 samples is the largest) or
//! needs the top two; reading the ring when asked is one pass over a few values. So a small
//! window keeps no sorted copy and selects on demand. A large window (a long window at a fast
//! scrape) keeps the sorted copy, since a pass per tick over thousands of values would cost
//! more; and there the sorted side is updated lazily: a push only parks its value (`pending`),
//! and the eviction that follows turns "remove the oldest, insert the newest" into one
//! replacement that moves only the values between the two ranks.
//!
//! Either way the statistic is the same number: a percentile only depends on the values at two
//! ranks, and the mean is taken over the values in ascending order as before.

use std::collections::VecDeque;

use statrs::statistics::Statistics;

use crate::config::Statistic;

/// A bound on memory and on the per-tick work: 4096 samples is 17 hours at a 15 s scrape, far
/// beyond any sensible window; a caller feeding faster than that loses the oldest samples first.
pub(crate) const MAX_SAMPLES: usize = 4096;

/// Up to this many samples, the window keeps no sorted copy: a statistic reads the ring.
const SMALL: usize = 32;

/// One sample in 16 bytes: the time in ms shifted left by one, its lowest bit set when the
/// sample is incomplete (some member's figure was missing or stale), and the value. As three
/// fields it took 24 with the padding, and a cluster keeps a window per policy and resource:
/// the ring is most of a long-running fleet's memory.
#[derive(Clone, Copy, Debug)]
struct Sample {
    key: i64,
    value: f64,
}

impl Sample {
    /// Times beyond +-2^62 ms (146 million years) are held at that bound.
    fn new(at_ms: i64, value: f64, complete: bool) -> Sample {
        let at_ms = at_ms.clamp(i64::MIN >> 1, i64::MAX >> 1);
        Sample {
            key: (at_ms << 1) | i64::from(!complete),
            value,
        }
    }

    fn at_ms(self) -> i64 {
        self.key >> 1
    }

    fn complete(self) -> bool {
        self.key & 1 == 0
    }
}

/// The places a full ring of `len` samples should have before its next push: as a doubling
/// gives, but no more than what `span` holds at one sample per `step` (same unit) plus a tenth
/// and two, and one more at least; `None` when it holds `max` already (the oldest goes
/// instead). The vertical window and the disk history grow by it.
pub(crate) fn room_for_span(len: usize, span: f64, step: f64, max: usize) -> Option<usize> {
    if len >= max {
        return None;
    }
    let expected = span / step * 1.1 + 2.0;
    Some((expected.ceil() as usize).min(len * 2).clamp(len + 1, max))
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Window {
    samples: VecDeque<Sample>,
    /// When `tracking`: the values of `samples`, sorted ascending, except `pending` when set.
    sorted: Vec<f64>,
    /// Whether `sorted` is kept up to date: set when a statistic is asked of a large window,
    /// dropped when one is asked of a small window (or on `clear`).
    tracking: bool,
    /// The newest sample's value when it is in `samples` but not yet in `sorted`.
    pending: Option<f64>,
    /// How many samples are not complete (some member's figure was missing or stale).
    incomplete: usize,
}

impl Window {
    /// Adds a sample. `value` must be finite; a sample older than the newest one is ignored so
    /// that the ring stays ordered by time (returns false).
    pub(crate) fn push(&mut self, at_ms: i64, value: f64, complete: bool) -> bool {
        debug_assert!(value.is_finite());
        if self.samples.back().is_some_and(|s| s.at_ms() > at_ms) {
            return false;
        }
        // Only one value is ever parked: it is always the newest sample's.
        self.settle();
        if self.samples.len() >= MAX_SAMPLES {
            self.pop_oldest();
        }
        self.samples.push_back(Sample::new(at_ms, value, complete));
        if self.tracking {
            self.pending = Some(value);
        }
        if !complete {
            self.incomplete += 1;
        }
        true
    }

    /// Before a push at `at_ms` into a full ring: room as a `VecDeque` grows it (doubling), but
    /// never beyond what `span_ms` holds at the pace of the last sample, plus a tenth (30 minutes
    /// at a 10 s tick is 181 samples, which doubling gives 256 places). A faster pace later grows
    /// it again. The sorted copy of a large window gets the same room.
    pub(crate) fn make_room(&mut self, at_ms: i64, span_ms: i64) {
        let len = self.samples.len();
        let Some(last) = self.samples.back().map(|s| s.at_ms()) else {
            return;
        };
        let step = at_ms.saturating_sub(last);
        if len < self.samples.capacity() || len < 2 || step <= 0 {
            return;
        }
        let Some(wanted) = room_for_span(len, span_ms as f64, step as f64, MAX_SAMPLES) else {
            return; // at the bound: the push drops the oldest instead
        };
        self.samples.reserve_exact(wanted - len);
        if self.tracking {
            self.sorted
                .reserve_exact(wanted.saturating_sub(self.sorted.len()));
        }
    }

    /// Drops every sample taken at or before `cutoff_ms`.
    pub(crate) fn evict_through(&mut self, cutoff_ms: i64) {
        while self.samples.front().is_some_and(|s| s.at_ms() <= cutoff_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(s) = self.samples.pop_front() else {
            return;
        };
        if !s.complete() {
            self.incomplete -= 1;
        }
        if !self.tracking {
            return;
        }
        match self.pending.take() {
            // The parked value was the only sample: it never reached `sorted`.
            Some(_) if self.samples.is_empty() => {}
            Some(new) => replace(&mut self.sorted, s.value, new),
            None => {
                let i = rank(&self.sorted, s.value);
                debug_assert!(self.sorted.get(i) == Some(&s.value));
                self.sorted.remove(i);
            }
        }
    }

    /// Puts the parked value, if any, into `sorted`.
    fn settle(&mut self) {
        if let Some(value) = self.pending.take() {
            let i = rank(&self.sorted, value);
            self.sorted.insert(i, value);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
        self.sorted.clear();
        self.tracking = false;
        self.pending = None;
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
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        if n <= SMALL {
            // Stop keeping the sorted copy: it would be rebuilt if the window grows again.
            self.tracking = false;
            self.pending = None;
            return Some(small_statistic(&self.samples, statistic));
        }
        if self.tracking {
            self.settle();
        } else {
            self.sorted.clear();
            // As much room as the ring: a push into a full copy would double it.
            self.sorted.reserve_exact(self.samples.capacity());
            self.sorted.extend(self.samples.iter().map(|s| s.value));
            self.sorted.sort_unstable_by(f64::total_cmp);
            self.pending = None;
            self.tracking = true;
        }
        Some(match statistic {
            Statistic::Mean => self.sorted.iter().mean(),
            Statistic::Percentile(p) => quantile_sorted(&self.sorted, p / 100.0),
        })
    }
}

/// The statistic of a few samples (at most [`SMALL`]). A percentile needs the values at two
/// ranks; the common cases (the largest, the top two) are found in one pass over the ring, and
/// only the others copy and sort the values.
fn small_statistic(samples: &VecDeque<Sample>, statistic: Statistic) -> f64 {
    let n = samples.len();
    let values = || {
        let (a, b) = samples.as_slices();
        a.iter().chain(b).map(|s| s.value)
    };
    let sorted = || {
        let mut buf = [0.0; SMALL];
        for (slot, v) in buf.iter_mut().zip(values()) {
            *slot = v;
        }
        buf[..n].sort_unstable_by(f64::total_cmp);
        buf
    };
    let tau = match statistic {
        Statistic::Percentile(p) => p / 100.0,
        // Summed in ascending order, as over the sorted copy, so the same rounding.
        Statistic::Mean => return sorted()[..n].iter().mean(),
    };
    // The ranks exactly as `quantile_sorted` picks them.
    let h = (n as f64 + 1.0 / 3.0) * tau + 1.0 / 3.0;
    let hf = h as i64;
    if hf >= n as i64 || tau >= 1.0 {
        return values().fold(f64::NEG_INFINITY, f64::max);
    }
    if hf == n as i64 - 1 && tau > 0.0 && hf > 0 {
        // The two largest, in one pass.
        let (mut first, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for v in values() {
            if v > second {
                if v > first {
                    second = first;
                    first = v;
                } else {
                    second = v;
                }
            }
        }
        return second + (h - hf as f64) * (first - second);
    }
    quantile_sorted(&sorted()[..n], tau)
}

/// Replaces `old` (which `sorted` holds) by `new`, keeping `sorted` ascending: the values
/// between the two ranks move one slot toward `old`'s. Equal values are interchangeable, so
/// where among its equals `new` lands does not change any statistic.
fn replace(sorted: &mut [f64], old: f64, new: f64) {
    let i = rank(sorted, old);
    debug_assert!(sorted.get(i) == Some(&old));
    let j = rank(sorted, new);
    if j > i {
        // new > old: old's successors below new move down one; new takes the last freed slot.
        sorted.copy_within(i + 1..j, i);
        sorted[j - 1] = new;
    } else {
        // new <= old: the values from new's rank up to old move up one, over old.
        sorted.copy_within(j..i, j + 1);
        sorted[j] = new;
    }
}

/// How many values of `sorted` are below `value`: its first slot. For the usual small window a
/// plain count (compare, add; no branch to mispredict, vectorized) beats the binary search,
/// whose data-dependent steps were most of an eviction's cost on noisy data.
fn rank(sorted: &[f64], value: f64) -> usize {
    if sorted.len() <= SMALL {
        sorted.iter().map(|x| usize::from(*x < value)).sum()
    } else {
        sorted.partition_point(|x| *x < value)
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

        /// The window against the obvious model (every sample in a list, sorted when asked),
        /// over random sequences of the operations the policy makes, duplicates included.
        #[test]
        fn the_window_agrees_with_a_plain_list(
            ops in prop::collection::vec(
                prop_oneof![
                    6 => (0i64..40, 0u8..12, any::<bool>()).prop_map(|(dt, v, c)| Op::Push(dt, f64::from(v) / 4.0, c)),
                    4 => (0i64..1500).prop_map(Op::Evict),
                    3 => prop_oneof![Just(Statistic::Mean), (1.0..=100.0f64).prop_map(Statistic::Percentile)].prop_map(Op::Stat),
                    1 => Just(Op::Clear),
                ],
                0..200,
            ),
        ) {
            let mut w = Window::default();
            // (time, value, complete) per sample.
            let mut model: Vec<(i64, f64, bool)> = Vec::new();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Push(dt, value, complete) => {
                        // Mostly forward in time; now and then a step back, which is refused.
                        let at = if dt == 0 { now - 1 } else { now + dt };
                        let accepted = w.push(at, value, complete);
                        prop_assert_eq!(accepted, model.last().is_none_or(|s| s.0 <= at));
                        if accepted {
                            now = at;
                            model.push((at, value, complete));
                        }
                    }
                    Op::Evict(back) => {
                        w.evict_through(now - back);
                        model.retain(|s| s.0 > now - back);
                    }
                    Op::Stat(statistic) => {
                        let mut values: Vec<f64> = model.iter().map(|s| s.1).collect();
                        values.sort_by(f64::total_cmp);
                        let expected = (!values.is_empty()).then(|| match statistic {
                            Statistic::Mean => values.iter().mean(),
                            Statistic::Percentile(p) => Data::new(values.clone()).quantile(p / 100.0),
                        });
                        prop_assert_eq!(w.statistic(statistic), expected);
                    }
                    Op::Clear => {
                        w.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(w.len(), model.len());
                prop_assert_eq!(w.incomplete(), model.iter().filter(|s| !s.2).count());
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(i64, f64, bool),
        Evict(i64),
        Stat(Statistic),
        Clear,
    }

    #[test]
    fn a_rank_is_the_same_counted_or_searched() {
        let big: Vec<f64> = (0..100).map(|i| f64::from(i / 3)).collect();
        for v in [-1.0, 0.0, 5.0, 5.5, 33.0, 40.0] {
            let expected = big.iter().filter(|x| **x < v).count();
            assert_eq!(rank(&big, v), expected, "{v} in 100 values");
            assert_eq!(
                rank(&big[..SMALL], v),
                big[..SMALL].iter().filter(|x| **x < v).count()
            );
        }
    }

    #[test]
    fn replacing_keeps_the_values_sorted() {
        // A large window's values, where the sorted copy is kept.
        let mut big: Vec<f64> = (0..2 * SMALL).map(|i| i as f64).collect();
        replace(&mut big, 3.0, 40.5);
        replace(&mut big, 50.0, 0.5);
        let mut expected: Vec<f64> = (0..2 * SMALL)
            .map(|i| i as f64)
            .filter(|v| *v != 3.0 && *v != 50.0)
            .chain([40.5, 0.5])
            .collect();
        expected.sort_by(f64::total_cmp);
        assert_eq!(big, expected);

        let mut v = [1.0, 2.0, 3.0, 4.0, 5.0];
        replace(&mut v, 2.0, 4.5);
        assert_eq!(v, [1.0, 3.0, 4.0, 4.5, 5.0]);
        replace(&mut v, 4.5, 0.5);
        assert_eq!(v, [0.5, 1.0, 3.0, 4.0, 5.0]);
        replace(&mut v, 5.0, 5.0);
        assert_eq!(v, [0.5, 1.0, 3.0, 4.0, 5.0]);
        replace(&mut v, 0.5, 9.0);
        assert_eq!(v, [1.0, 3.0, 4.0, 5.0, 9.0]);
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
    fn a_window_growing_past_small_and_shrinking_back_agrees_with_statrs() {
        // Noisy values through both ways of keeping the window: selection while it is small,
        // the sorted copy once it is larger than SMALL, and back.
        let mut w = Window::default();
        let mut seed = 7u64;
        let mut values: VecDeque<f64> = VecDeque::new();
        let steps = (0..3 * SMALL as i64)
            .map(|t| (t, true))
            .chain((0..3 * SMALL as i64).map(|t| (t, false)));
        for (i, (t, growing)) in steps.enumerate() {
            if growing {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = (seed >> 40) as f64 / 1024.0;
                w.push(t, v, true);
                values.push_back(v);
            } else {
                w.evict_through(t);
                values.pop_front();
            }
            if values.is_empty() {
                assert_eq!(w.statistic(Statistic::Mean), None);
                continue;
            }
            let p = [50.0, 90.0, 95.0, 99.0, 100.0][i % 5];
            let expected =
                Data::new(values.iter().copied().collect::<Vec<_>>()).quantile(p / 100.0);
            assert_eq!(
                w.statistic(Statistic::Percentile(p)),
                Some(expected),
                "step {i}, {} values",
                values.len()
            );
        }
    }

    #[test]
    fn a_push_then_an_eviction_is_one_replacement() {
        // The policy's steady state: one in, one out, the statistic read in between each.
        let mut w = Window::default();
        for (i, v) in [3.0, 1.0, 2.0].into_iter().enumerate() {
            w.push(i as i64, v, true);
        }
        w.push(3, 0.5, true);
        w.evict_through(0); // 3.0 out, 0.5 in: 0.5, 1, 2
        assert_eq!(w.statistic(Statistic::Percentile(100.0)), Some(2.0));
        assert_eq!(w.statistic(Statistic::Mean), Some(3.5 / 3.0));
        w.push(4, 7.0, true);
        w.evict_through(3); // the window is now the new sample alone
        assert_eq!(w.len(), 1);
        assert_eq!(w.statistic(Statistic::Percentile(1.0)), Some(7.0));
        w.evict_through(4);
        w.push(5, 8.0, true);
        w.evict_through(5); // the parked sample itself goes, before it was ever sorted
        assert_eq!(w.len(), 0);
        assert_eq!(w.statistic(Statistic::Mean), None);
        w.push(6, 9.0, true);
        assert_eq!(w.statistic(Statistic::Mean), Some(9.0));
    }

    #[test]
    fn a_sample_keeps_its_time_and_completeness_in_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Sample>(), 16);
        for at in [
            i64::MIN >> 1,
            -10_001,
            -1,
            0,
            1,
            1_800_000_000_000,
            i64::MAX >> 1,
        ] {
            for complete in [true, false] {
                let s = Sample::new(at, 0.5, complete);
                assert_eq!((s.at_ms(), s.complete(), s.value), (at, complete, 0.5));
            }
        }
        // Beyond the bound a time is held at it, in order.
        assert_eq!(Sample::new(i64::MAX, 1.0, true).at_ms(), i64::MAX >> 1);
        assert_eq!(Sample::new(i64::MIN, 1.0, false).at_ms(), i64::MIN >> 1);
    }

    #[test]
    fn a_window_at_a_steady_pace_keeps_room_for_its_span_not_a_doubling() {
        // 30 minutes at a 10 s pace: 181 samples; doubling would give 256 places.
        let (span, pace) = (30 * 60_000, 10_000);
        let mut w = Window::default();
        for i in 0..1_000 {
            let at = i * pace;
            w.make_room(at, span);
            w.push(at, (i % 7) as f64, true);
            w.evict_through(at - span);
            // A large window keeps its sorted copy from the first statistic on.
            w.statistic(Statistic::Percentile(95.0));
        }
        assert_eq!(w.len(), 180);
        let room = (span / pace) as usize * 11 / 10 + 3;
        assert!(w.samples.capacity() <= room, "{}", w.samples.capacity());
        assert!(w.sorted.capacity() <= room, "{}", w.sorted.capacity());
        // A faster pace later still finds room: 400 more, beside the 140 older ones still in.
        for i in 0..400 {
            let at = 1_000 * pace + i * 1_000;
            w.make_room(at, span);
            assert!(w.push(at, 1.0, true));
            w.evict_through(at - span);
        }
        assert_eq!(w.len(), 540);
    }

    #[test]
    fn a_full_window_at_its_bound_drops_its_oldest_and_keeps_its_room() {
        // A span far beyond what the bound holds at this pace: the ring grows to the bound,
        // then each push drops the oldest.
        let mut w = Window::default();
        for at in 0..(MAX_SAMPLES as i64 + 100) {
            w.make_room(at, i64::MAX / 4);
            assert!(w.push(at, 1.0, true));
        }
        assert_eq!(w.len(), MAX_SAMPLES);
        assert!(
            w.samples.capacity() <= MAX_SAMPLES * 2,
            "{}",
            w.samples.capacity()
        );
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
