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
            match judge(figure.as_ref(), now, stale_ms) {
                Judged::Missing => t.missing += 1,
                Judged::Stale => t.stale += 1,
                Judged::Fresh(v) => {
                    if t.busiest.is_none_or(|(_, b)| v > b) {
                        t.busiest = Some((i, v));
                    }
                }
            }
        }
        t
    }

    /// One figure's value when it is a fresh measurement.
    pub fn fresh(figure: Option<&Figure>, now: Timestamp, stale_ms: i64) -> Option<f64> {
        match judge(figure, now, stale_ms) {
            Judged::Fresh(v) => Some(v),
            Judged::Missing | Judged::Stale => None,
        }
    }

    /// Every figure present and fresh.
    pub fn complete(&self) -> bool {
        self.missing == 0 && self.stale == 0
    }
}

enum Judged {
    Missing,
    Stale,
    Fresh(f64),
}

/// Absent, NaN, infinite or negative: not a measurement; older than `stale_ms`: stale.
fn judge(figure: Option<&Figure>, now: Timestamp, stale_ms: i64) -> Judged {
    match figure {
        Some(f) if f.value.is_finite() && f.value >= 0.0 => {
            if now.0.saturating_sub(f.at.0) > stale_ms {
                Judged::Stale
            } else {
                Judged::Fresh(f.value)
            }
        }
        _ => Judged::Missing,
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
        assert_eq!(Tally::fresh(fig(3.0, 99).as_ref(), now, 30_000), Some(3.0));
        assert_eq!(
            Tally::fresh(fig(3.0, 10).as_ref(), now, 30_000),
            None,
            "stale"
        );
        assert_eq!(
            Tally::fresh(fig(f64::INFINITY, 99).as_ref(), now, 30_000),
            None
        );
        assert_eq!(Tally::fresh(None, now, 30_000), None);
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
