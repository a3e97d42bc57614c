//! What every policy does first and the same way: sort its members' figures into missing, stale
//! and fresh (holding on what is missing is DESIGN.md 4's "no scale-down on missing data,
//! scale-up only on data that is present"), and round to the platform's step.

use std::time::Duration;

use steward_model::observation::Figure;
use steward_model::Timestamp;

/// Milliseconds of a duration, saturating (a config value of centuries stays a large bound).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Rounds up to a multiple of `step`, ignoring float dust (2.0000000001 stays 2.0 at step 0.5).
pub(crate) fn ceil_step(v: f64, step: f64) -> f64 {
    (v / step - 1e-9).ceil() * step
}

/// Rounds down to a multiple of `step`, ignoring float dust.
pub(crate) fn floor_step(v: f64, step: f64) -> f64 {
    (v / step + 1e-9).floor() * step
}

/// The members' figures of one kind, sorted: how many are missing (absent, NaN, infinite or
/// negative: not a measurement), how many are older than the stale bound, and the busiest fresh
/// one (its index among the members and its value; the first of equals).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Tally {
    pub missing: usize,
    pub stale: usize,
    pub busiest: Option<(usize, f64)>,
}

impl Tally {
    /// `stale_ms`: a figure older than this many milliseconds at `now` is stale.
    pub fn of(figures: &[Option<Figure>], now: Timestamp, stale_ms: i64) -> Tally {
        let mut t = Tally::default();
        for (i, figure) in figures.iter().enumerate() {
            match figure {
                Some(f) if f.value.is_finite() && f.value >= 0.0 => {
                    if now.0.saturating_sub(f.at.0) > stale_ms {
                        t.stale += 1;
                    } else if t.busiest.is_none_or(|(_, b)| f.value > b) {
                        t.busiest = Some((i, f.value));
                    }
                }
                _ => t.missing += 1,
            }
        }
        t
    }

    /// Every figure present and fresh.
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.stale == 0
    }
}

#[cfg(test)]
mod tests {
    use steward_model::observation::Source;

    use super::*;

    fn fig(v: f64, at: i64) -> Option<Figure> {
        Some(Figure::new(v, Source::Recorded, Timestamp::from_secs(at)))
    }

    #[test]
    fn missing_stale_and_the_busiest_fresh_figure() {
        let now = Timestamp::from_secs(100);
        let figures = [
            fig(5.0, 100),
            None,
            fig(f64::NAN, 100),
            fig(-1.0, 100),
            fig(9.0, 10),
            fig(7.0, 95),
            fig(7.0, 99),
        ];
        let t = Tally::of(&figures, now, 30_000);
        assert_eq!(
            t.missing, 3,
            "absent, NaN and negative are not measurements"
        );
        assert_eq!(t.stale, 1, "90 s old with a 30 s bound");
        assert_eq!(
            t.busiest,
            Some((5, 7.0)),
            "the stale 9.0 does not count; first of equals"
        );
        assert!(!t.complete());
        assert!(Tally::of(&[fig(1.0, 100)], now, 30_000).complete());
        assert_eq!(Tally::of(&[], now, 0), Tally::default());
    }

    #[test]
    fn steps_round_without_float_dust() {
        assert_eq!(ceil_step(2.000_000_000_1, 0.5), 2.0);
        assert_eq!(ceil_step(2.1, 0.5), 2.5);
        assert_eq!(floor_step(2.499_999_999_9, 0.5), 2.5);
        assert_eq!(floor_step(2.4, 0.5), 2.0);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
