//! The vertical policy's long memory: what the same hours of the last days peaked at, and which
//! way the last hour is going.
//!
//! What it is: two small fixed-size records the policy feeds with its statistic (the busiest
//! member's usage, in resource units) at every tick.
//! - [`Profile`]: the highest usage of every hour of the day, for the last [`DAYS`] days (UTC).
//!   From it, [`Profile::outlook`] reads the window ahead of `now` on the days before, and
//!   judges whether those days agree (a dispersion test): a load that recurs is learned, a load
//!   that does not is reported as irregular, and a history shorter than the days needed as
//!   short. The policy uses a learned window to grow ahead of a ramp and to refuse a shrink into
//!   a trough that ends soon; otherwise it is the reactive policy it always was.
//! - [`Trend`]: the highest usage of each 5-minute slot of the last hour, and the straight line
//!   through them ([`Trend::ramp`]), so a grow during a ramp is sized for where the ramp goes.
//!
//! What it is not: a time series. Nothing here grows with the sampling rate or the history: a
//! profile is 424 bytes and a trend 56, however often the policy ticks (the scaler keeps four
//! vertical policies per cluster, for 10,000 clusters in one process; only those that learn
//! have a profile). No clock: every time is the caller's `now`, in epoch milliseconds.
//!
//! Why hourly peaks: the question the policy asks of the past is "how much did the coming
//! hour(s) need on the days before?", and the peak of an hour answers it on the safe side.
//! Peaks are stored as fractions of the knob's `max` in 16 bits (rounded up: a stored peak is
//! never below the real one): 1/65,534 of the largest size, far below any platform's step.

use statrs::statistics::Statistics;

/// Days of hourly peaks kept: a week ago plus today, so the same weekday is always there.
pub(crate) const DAYS: usize = 8;
const HOURS: usize = 24;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// A slot with no sample yet.
const UNKNOWN: u16 = u16::MAX;
const LEVELS: f64 = (u16::MAX - 1) as f64;

/// The recent days an outlook compares: "the last 3 days". Two could not tell a recurring day
/// from two alike by chance; more would wait longer before learning anything.
pub(crate) const RECENT_DAYS: usize = 3;
/// The day a week ago: the same weekday, for a load that follows the week.
const WEEK: usize = 7;
/// Days agree when their peaks' standard deviation is at most 15 % of their mean. Chosen on
/// the training set (README, "How the defaults score"): at 0.10 fewer days agree (10 % more
/// changes, 12 % more minutes above `high`); at 0.20 four traces fewer met issue 17's goal
/// (sizes held for days that only looked alike cost vCPU-hours).
pub(crate) const TOLERANCE: f64 = 0.15;
/// Today's last 2 hours are compared with the same hours of the days an outlook read. Without
/// this test a load that stepped down today was held at yesterday's size (the days before agree
/// with each other). On the training set 1 hour made 3.5 % more changes (one hour's peak is
/// noisier), 3 hours met the goal on one trace fewer.
const TODAY_HOURS: i64 = 2;

/// The highest usage of each hour of the last [`DAYS`] days.
#[derive(Clone, Debug)]
pub(crate) struct Profile {
    /// The amount a stored `LEVELS` stands for (the knob's `max`); larger usages are stored as it.
    scale: f64,
    /// The day (days since the epoch, UTC) each row holds; `i32::MIN` for none.
    days: [i32; DAYS],
    /// `peaks[day % DAYS][hour]`: the highest usage seen in that hour, as a fraction of `scale`
    /// in `LEVELS`, or `UNKNOWN`.
    peaks: [[u16; HOURS]; DAYS],
}

/// Which of the days before an outlook compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Days {
    /// The last [`RECENT_DAYS`] days.
    Recent,
    /// The last [`RECENT_DAYS`] days and the same weekday a week ago.
    RecentAndWeek,
    /// Yesterday and the same weekday a week ago (a working week: Tuesday is like Monday and
    /// like last Tuesday, but not like Sunday).
    YesterdayAndWeek,
}

impl Days {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Days::Recent => "on the last 3 days",
            Days::RecentAndWeek => "on the last 3 days and a week ago",
            Days::YesterdayAndWeek => "yesterday and a week ago",
        }
    }
}

/// The same window on the days before: what each reached, and how much they differ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Seen {
    /// The highest peak of the days compared, in resource units.
    pub peak: f64,
    /// The lowest.
    pub least: f64,
    /// The days' peaks' standard deviation over their mean (the mean floored at the step).
    pub spread: f64,
    pub days: Days,
    /// The window's first and last hour of the day (UTC), both included.
    pub hours: (u8, u8),
    /// Today's peak over the last hours, when it is what disagreed.
    pub today: Option<f64>,
}

/// What the profile says about the window ahead.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Outlook {
    /// The days agree: the load recurs, and `Seen::peak` is what the window needs.
    Learned(Seen),
    /// The days disagree: no pattern to act on.
    Irregular(Seen),
    /// Not enough days of history for the window (fewer than needed, or with holes).
    Short,
}

impl Outlook {
    pub(crate) fn learned(self) -> Option<Seen> {
        match self {
            Outlook::Learned(seen) => Some(seen),
            Outlook::Irregular(_) | Outlook::Short => None,
        }
    }
}

impl Profile {
    /// An empty profile for a knob whose sizes reach `max` (in resource units, above zero).
    pub(crate) fn new(max: f64) -> Self {
        Profile {
            scale: max,
            days: [i32::MIN; DAYS],
            peaks: [[UNKNOWN; HOURS]; DAYS],
        }
    }

    /// Adds one sample of usage at `at_ms`. A sample from a day older than the row it would go
    /// into is ignored: the past is not rewritten.
    pub(crate) fn record(&mut self, at_ms: i64, usage: f64) {
        let Ok(day) = i32::try_from(at_ms.div_euclid(DAY_MS)) else {
            return;
        };
        let hour = (at_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize;
        let row = day.rem_euclid(DAYS as i32) as usize;
        if self.days[row] != day {
            if self.days[row] > day {
                return;
            }
            self.days[row] = day;
            self.peaks[row] = [UNKNOWN; HOURS];
        }
        let level = self.quantize(usage);
        let slot = &mut self.peaks[row][hour];
        if *slot == UNKNOWN || level > *slot {
            *slot = level;
        }
    }

    fn quantize(&self, usage: f64) -> u16 {
        let fraction = (usage / self.scale).clamp(0.0, 1.0);
        // Up, so a stored peak is never below the real one; NaN (never fed) maps to 0.
        (fraction * LEVELS).ceil() as u16
    }

    fn amount(&self, level: u16) -> f64 {
        f64::from(level) / LEVELS * self.scale
    }

    /// The highest usage `days_back` days before the hours `first..=last` (hours since the
    /// epoch); `None` when any of those hours has no sample.
    fn peak_of(&self, first: i64, last: i64, days_back: usize) -> Option<f64> {
        let mut peak: Option<u16> = None;
        for hour in first..=last {
            let then = hour - 24 * days_back as i64;
            let day = i32::try_from(then.div_euclid(24)).ok()?;
            let row = day.rem_euclid(DAYS as i32) as usize;
            if self.days[row] != day {
                return None;
            }
            let level = self.peaks[row][then.rem_euclid(24) as usize];
            if level == UNKNOWN {
                return None;
            }
            peak = Some(peak.map_or(level, |p| p.max(level)));
        }
        peak.map(|p| self.amount(p))
    }

    /// What the days before say about the window `[now, now + horizon]` (whole hours of the day,
    /// at most one day). Learned when two dispersion tests pass ([`TOLERANCE`]): the days agree
    /// on the window ahead (the last 3 days and, when known, a week ago; failing that, yesterday
    /// and a week ago), and today's last [`TODAY_HOURS`] hours agree with the same hours of
    /// those days. `step` is the knob's step: a spread smaller than one step changes no
    /// decision, so the mean the spread is judged against is floored at it.
    pub(crate) fn outlook(&self, now_ms: i64, horizon_ms: i64, step: f64) -> Outlook {
        let answer = self.ahead(now_ms, horizon_ms, step);
        let Outlook::Learned(seen) = answer else {
            return answer;
        };
        // Today so far must look like the days the outlook read: a level that moved (a step, a
        // holiday) leaves the days before agreeing with each other but not with today.
        let first = now_ms.div_euclid(HOUR_MS);
        let (from, to) = (first - TODAY_HOURS, first - 1);
        let Some(today) = self.peak_of(from, to, 0) else {
            return Outlook::Short;
        };
        let days: &[usize] = match seen.days {
            Days::Recent => &[1, 2, 3],
            Days::RecentAndWeek => &[1, 2, 3, WEEK],
            Days::YesterdayAndWeek => &[1, WEEK],
        };
        let mut values = [today; RECENT_DAYS + 2];
        for (slot, &back) in values[1..].iter_mut().zip(days) {
            match self.peak_of(from, to, back) {
                Some(v) => *slot = v,
                None => return Outlook::Short,
            }
        }
        let spread = spread(&values[..=days.len()], step);
        if spread <= TOLERANCE {
            answer
        } else {
            Outlook::Irregular(Seen {
                spread,
                today: Some(today),
                ..seen
            })
        }
    }

    /// The first test of [`Profile::outlook`]: the days before, on the window ahead.
    fn ahead(&self, now_ms: i64, horizon_ms: i64, step: f64) -> Outlook {
        let first = now_ms.div_euclid(HOUR_MS);
        let last = now_ms
            .saturating_add(horizon_ms.max(0))
            .div_euclid(HOUR_MS)
            .min(first + 23);
        let hours = (first.rem_euclid(24) as u8, last.rem_euclid(24) as u8);
        let peak = |days_back| self.peak_of(first, last, days_back);
        let judge = |values: &[f64], days| {
            let spread = spread(values, step);
            let seen = Seen {
                peak: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                least: values.iter().copied().fold(f64::INFINITY, f64::min),
                spread,
                days,
                hours,
                today: None,
            };
            if spread <= TOLERANCE {
                Outlook::Learned(seen)
            } else {
                Outlook::Irregular(seen)
            }
        };
        let week = peak(WEEK);
        let mut recent = [0.0; RECENT_DAYS + 1];
        let mut known = 0;
        for (slot, days_back) in recent.iter_mut().zip(1..=RECENT_DAYS) {
            match peak(days_back) {
                Some(v) => {
                    *slot = v;
                    known += 1;
                }
                None => break,
            }
        }
        let mut first_answer = None;
        if known == RECENT_DAYS {
            let (values, days) = match week {
                Some(w) => {
                    recent[RECENT_DAYS] = w;
                    (&recent[..], Days::RecentAndWeek)
                }
                None => (&recent[..RECENT_DAYS], Days::Recent),
            };
            let answer = judge(values, days);
            if matches!(answer, Outlook::Learned(_)) {
                return answer;
            }
            first_answer = Some(answer);
        }
        if let (Some(w), true) = (week, known >= 1) {
            let answer = judge(&[recent[0], w], Days::YesterdayAndWeek);
            if matches!(answer, Outlook::Learned(_)) {
                return answer;
            }
            first_answer = first_answer.or(Some(answer));
        }
        first_answer.unwrap_or(Outlook::Short)
    }
}

/// The standard deviation of `values` over their mean, the mean floored at `step`.
fn spread(values: &[f64], step: f64) -> f64 {
    values.std_dev() / values.mean().max(step)
}

/// Slots of the trend: 12 of 5 minutes, the last hour.
const TREND_SLOTS: usize = 12;
const TREND_SLOT_MS: i64 = 5 * 60 * 1000;
/// The fewest slots a ramp is fitted through: half an hour.
const TREND_MIN_SLOTS: usize = 6;
/// A ramp is a line that fits: r² at least 0.9. A step, a burst or noise fits worse (a step in
/// the last slot of a flat hour fits at about 0.3). 0.8 scored the same on the training set.
pub(crate) const RAMP_FIT: f64 = 0.9;

/// The highest usage of each 5-minute slot of the last hour.
#[derive(Clone, Debug)]
pub(crate) struct Trend {
    /// `maxima[slot % TREND_SLOTS]`; NaN for a slot without a sample.
    maxima: [f32; TREND_SLOTS],
    /// The newest slot (5-minute periods since the epoch); `i64::MIN` before the first sample.
    newest: i64,
}

impl Default for Trend {
    fn default() -> Self {
        Trend {
            maxima: [f32::NAN; TREND_SLOTS],
            newest: i64::MIN,
        }
    }
}

/// A straight line through the last hour's 5-minute peaks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ramp {
    /// The line's slope, resource units per hour.
    pub per_hour: f64,
    /// How well the line fits (r², 0..1): 1 for a steady ramp, low for a step or noise.
    pub fit: f64,
    /// The time the fitted slots span, milliseconds.
    pub span_ms: i64,
}

impl Trend {
    pub(crate) fn record(&mut self, at_ms: i64, usage: f64) {
        let slot = at_ms.div_euclid(TREND_SLOT_MS);
        if slot < self.newest {
            return;
        }
        if slot > self.newest {
            // The slots skipped over (at most a whole ring's worth) have no sample.
            let skipped = slot.saturating_sub(self.newest).min(TREND_SLOTS as i64);
            for back in 0..skipped {
                self.maxima[(slot - back).rem_euclid(TREND_SLOTS as i64) as usize] = f32::NAN;
            }
            self.newest = slot;
        }
        let m = &mut self.maxima[slot.rem_euclid(TREND_SLOTS as i64) as usize];
        let usage = usage as f32;
        if m.is_nan() || usage > *m {
            *m = usage;
        }
    }

    /// The least-squares line through the last hour's slots, when at least half an hour of them
    /// have a sample and the newest is the slot of `now` or the one before.
    pub(crate) fn ramp(&self, now_ms: i64) -> Option<Ramp> {
        let now_slot = now_ms.div_euclid(TREND_SLOT_MS);
        if self.newest == i64::MIN || now_slot - self.newest > 1 {
            return None;
        }
        let (mut n, mut sx, mut sy, mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        let mut oldest = 0;
        for back in 0..TREND_SLOTS as i64 {
            let v = self.maxima[(self.newest - back).rem_euclid(TREND_SLOTS as i64) as usize];
            if v.is_nan() {
                continue;
            }
            // Hours before the newest slot.
            let (x, y) = (-(back as f64) / 12.0, f64::from(v));
            n += 1.0;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
            syy += y * y;
            oldest = back;
        }
        if (n as usize) < TREND_MIN_SLOTS {
            return None;
        }
        let vx = n * sxx - sx * sx;
        let vy = n * syy - sy * sy;
        let cov = n * sxy - sx * sy;
        let per_hour = cov / vx;
        // A flat line fits perfectly: no variance, no ramp.
        let fit = if vy > 0.0 { cov * cov / (vx * vy) } else { 1.0 };
        Some(Ramp {
            per_hour,
            fit,
            span_ms: oldest * TREND_SLOT_MS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 20_000 * DAY_MS; // a Monday would not matter: days are just days

    /// Feeds one day of `shape(hour)` every 5 minutes.
    fn feed_day(p: &mut Profile, day: i64, shape: impl Fn(f64) -> f64) {
        feed_until(p, day, 24, shape);
    }

    /// Feeds `day` from midnight to `hours` o'clock.
    fn feed_until(p: &mut Profile, day: i64, hours: i64, shape: impl Fn(f64) -> f64) {
        for i in 0..hours * 12 {
            let at = T0 + day * DAY_MS + i * 300_000;
            p.record(at, shape(i as f64 / 12.0));
        }
    }

    fn ramp(hour: f64) -> f64 {
        if hour < 8.0 {
            0.3
        } else {
            0.3 + (hour - 8.0).min(4.0) * 0.3
        }
    }

    #[test]
    fn a_profile_stays_small() {
        assert!(
            std::mem::size_of::<Profile>() <= 424,
            "{}",
            std::mem::size_of::<Profile>()
        );
        assert!(
            std::mem::size_of::<Trend>() <= 56,
            "{}",
            std::mem::size_of::<Trend>()
        );
    }

    #[test]
    fn peaks_are_kept_per_hour_and_never_understated() {
        let mut p = Profile::new(16.0);
        p.record(T0 + 10 * HOUR_MS, 1.234);
        p.record(T0 + 10 * HOUR_MS + 1000, 0.5);
        let day_after = T0 + DAY_MS + 10 * HOUR_MS;
        let first = day_after.div_euclid(HOUR_MS);
        let v = p.peak_of(first, first, 1).unwrap();
        assert!(v >= 1.234 && v - 1.234 < 16.0 / LEVELS, "{v}");
        assert_eq!(p.peak_of(first, first + 1, 1), None, "11:00 was never seen");
    }

    #[test]
    fn a_day_repeated_three_times_is_learned() {
        let mut p = Profile::new(16.0);
        for day in 0..3 {
            feed_day(&mut p, day, ramp);
        }
        // Day 3 at 9:00, its night like the others: the next hour (9:00-10:59) peaked at 10:55
        // on each day.
        feed_until(&mut p, 3, 9, ramp);
        let now = T0 + 3 * DAY_MS + 9 * HOUR_MS;
        let Outlook::Learned(seen) = p.outlook(now, HOUR_MS, 0.5) else {
            panic!("{:?}", p.outlook(now, HOUR_MS, 0.5));
        };
        let expected = ramp(10.0 + 55.0 / 60.0);
        assert!(
            (seen.peak - expected).abs() < 1e-3,
            "{seen:?} vs {expected}"
        );
        assert_eq!((seen.days, seen.hours), (Days::Recent, (9, 10)));
        // Two days are not enough.
        let now = T0 + 2 * DAY_MS + 9 * HOUR_MS;
        assert_eq!(p.outlook(now, HOUR_MS, 0.5), Outlook::Short);
    }

    #[test]
    fn a_today_unlike_the_days_before_is_irregular() {
        let mut p = Profile::new(16.0);
        for day in 0..3 {
            feed_day(&mut p, day, ramp);
        }
        // Day 3's night runs at twice the level: the days agree, today does not.
        feed_until(&mut p, 3, 9, |h| 2.0 * ramp(h));
        let now = T0 + 3 * DAY_MS + 9 * HOUR_MS;
        let Outlook::Irregular(seen) = p.outlook(now, HOUR_MS, 0.5) else {
            panic!("{:?}", p.outlook(now, HOUR_MS, 0.5));
        };
        let today = 2.0 * ramp(8.0 + 55.0 / 60.0);
        assert!(
            seen.today.is_some_and(|t| (t - today).abs() < 1e-3),
            "{seen:?}"
        );
        // Without today's hours at all (a hole in the data), nothing is learned either.
        let mut p = Profile::new(16.0);
        for day in 0..3 {
            feed_day(&mut p, day, ramp);
        }
        assert_eq!(p.outlook(now, HOUR_MS, 0.5), Outlook::Short);
    }

    #[test]
    fn days_that_disagree_are_irregular() {
        let mut p = Profile::new(16.0);
        feed_day(&mut p, 0, ramp);
        feed_day(&mut p, 1, |_| 0.3);
        feed_day(&mut p, 2, ramp);
        feed_until(&mut p, 3, 9, ramp);
        let now = T0 + 3 * DAY_MS + 9 * HOUR_MS;
        assert!(matches!(
            p.outlook(now, HOUR_MS, 0.5),
            Outlook::Irregular(_)
        ));
    }

    #[test]
    fn a_working_week_is_learned_from_yesterday_and_a_week_ago() {
        let mut p = Profile::new(16.0);
        // Days 0-4 work, 5-6 rest, 7 (Monday) works.
        for day in 0..8 {
            if day % 7 < 5 {
                feed_day(&mut p, day, ramp);
            } else {
                feed_day(&mut p, day, |_| 0.3);
            }
        }
        // Tuesday (day 8): Monday, Sunday and Saturday disagree; Monday and last Tuesday agree.
        feed_until(&mut p, 8, 9, ramp);
        let now = T0 + 8 * DAY_MS + 9 * HOUR_MS;
        let Outlook::Learned(seen) = p.outlook(now, HOUR_MS, 0.5) else {
            panic!("{:?}", p.outlook(now, HOUR_MS, 0.5));
        };
        assert_eq!(seen.days, Days::YesterdayAndWeek);
        // Saturday (day 12 after the same week again): Friday, Thursday, Wednesday agree, but
        // last Saturday does not, and neither does yesterday with it.
        for day in 8..12 {
            feed_day(&mut p, day, ramp);
        }
        feed_until(&mut p, 12, 9, |_| 0.3);
        let now = T0 + 12 * DAY_MS + 9 * HOUR_MS;
        assert!(matches!(
            p.outlook(now, HOUR_MS, 0.5),
            Outlook::Irregular(_)
        ));
    }

    #[test]
    fn a_ramp_is_a_line_and_a_step_is_not() {
        let mut t = Trend::default();
        for i in 0..12 {
            t.record(i * TREND_SLOT_MS, 1.0 + 0.05 * i as f64);
        }
        let r = t.ramp(11 * TREND_SLOT_MS).unwrap();
        assert!((r.per_hour - 0.6).abs() < 1e-4 && r.fit > 0.99, "{r:?}");
        assert_eq!(r.span_ms, 11 * TREND_SLOT_MS);
        let mut t = Trend::default();
        for i in 0..12 {
            t.record(i * TREND_SLOT_MS, if i < 11 { 1.0 } else { 2.0 });
        }
        let r = t.ramp(11 * TREND_SLOT_MS).unwrap();
        assert!(r.fit < 0.5, "{r:?}");
        // Too old, or too few slots: no ramp.
        assert_eq!(t.ramp(20 * TREND_SLOT_MS), None);
        let mut t = Trend::default();
        t.record(0, 1.0);
        t.record(5 * TREND_SLOT_MS, 2.0);
        assert_eq!(t.ramp(5 * TREND_SLOT_MS), None);
    }
}
