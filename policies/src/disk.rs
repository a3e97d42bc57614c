//! The disk policy: when and by how much to grow the data disk of every member of one role.
//!
//! What it is (DESIGN.md 4): grow when the busiest member's used/size passes `high`, or when the
//! forecast time to full (a least-squares line through its used bytes over `regression_window`)
//! is shorter than `horizon`. The increment is the largest of `min_increment`, `increment_pct` of
//! the size and the forecast growth over the horizon, rounded up to `step` and clamped to `max`.
//! At most `max_changes_per_day` changes in any 24 hours; a disk never shrinks.
//!
//! WAL: when WAL's share of the growth over the window reaches `wal_share_alert`, the disk fills
//! because WAL is not being recycled (a stuck replication slot, failing archiving), and growing
//! would only feed it. The policy then holds and says so loudly, UNLESS the fill has reached
//! `critical`: a full disk stops PostgreSQL (a PANIC when WAL cannot be written), which is worse
//! than a disk grown for the wrong reason, so past `critical` it still grows, and still says
//! loudly that WAL is the cause.
//!
//! Missing and stale figures: no fresh figure at all holds; with some, the decision uses the
//! members present (growing is the safe direction, and a disk never shrinks anyway).
//!
//! What it is not: an actuator or a clock (`now` is a parameter; the caller applies the change and
//! calls [`DiskPolicy::record_change`]).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use steward_model::decision::Knob;
use steward_model::observation::Figure;
use steward_model::size::Bytes;
use steward_model::{
    Action, Decision, Explain, Fixed, Part, Resource, Role, Rule, Text, Timestamp,
};

use crate::config::DiskConfig;
use crate::figures::{ceil_step, millis, Tally};
use crate::rules::rule;
use crate::window::room_for_span;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A regression needs this many points...
const MIN_POINTS: usize = 3;
/// ...spanning at least this share of the regression window, else its slope is noise.
const MIN_SPAN_SHARE: f64 = 0.25;
/// A bound on the history: one sample a second over the default hour is 3,600; a caller feeding
/// faster loses the oldest samples first (the regression then spans less than the window).
const MAX_SAMPLES: usize = 10_000;

/// One remembered figure: 24 bytes. A fleet keeps an hour of them per cluster (360 at a 10 s
/// tick): with the WAL figure an `Option<f64>` (32 bytes) they were most of what a fleet's
/// memory grows by once the windows fill (benches/fleet.rs at 380 ticks).
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Timestamp,
    used: f64,
    /// The WAL's bytes, NaN when there was no figure ([`Sample::wal`]).
    wal_or_nan: f64,
}

impl Sample {
    fn new(at: Timestamp, used: f64, wal: Option<f64>) -> Self {
        Sample {
            at,
            used,
            wal_or_nan: wal.filter(|w| w.is_finite()).unwrap_or(f64::NAN),
        }
    }

    fn wal(&self) -> Option<f64> {
        Some(self.wal_or_nan).filter(|w| !w.is_nan())
    }
}

/// The disk policy of one role.
#[derive(Clone, Debug)]
pub struct DiskPolicy {
    role: Role,
    config: DiskConfig,
    samples: VecDeque<Sample>,
    /// When each change of the last 24 h happened (for the budget).
    changes: VecDeque<Timestamp>,
}

/// A least-squares slope in units per second, if there are enough points over a long enough span.
fn slope(points: impl Iterator<Item = (f64, f64)> + Clone, min_span_s: f64) -> Option<f64> {
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    let (mut tmin, mut tmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in points.clone() {
        n += 1.0;
        sx += x;
        sy += y;
        tmin = tmin.min(x);
        tmax = tmax.max(x);
    }
    if n < MIN_POINTS as f64 || tmax - tmin < min_span_s || tmax <= tmin {
        return None;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// A share as a whole percentage (`0.8` -> `80%`), written into its sentence.
#[derive(Clone, Copy)]
struct Pct(f64);

impl std::fmt::Display for Pct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0}%", Fixed(self.0 * 100.0))
    }
}

impl DiskPolicy {
    pub fn new(role: Role, config: DiskConfig) -> Self {
        DiskPolicy {
            role,
            config,
            samples: VecDeque::new(),
            changes: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &DiskConfig {
        &self.config
    }

    pub fn knob(&self) -> Knob {
        Knob::Vertical {
            role: self.role,
            resource: Resource::Disk,
        }
    }

    /// The change was applied: it counts against the daily budget. The usage history is kept (the
    /// used bytes do not change with the size).
    pub fn record_change(&mut self, now: Timestamp, _new_size: f64) {
        self.changes.push_back(now);
    }

    /// Decides on the role's disk size. `used[i]` and `wal[i]` are member i's used bytes and WAL
    /// bytes (`None` = missing); `current_size` is the role's disk size in bytes.
    ///
    /// In named steps: the missing-data hold, [`Self::remember`] the busiest member's figures,
    /// [`Self::trend`] (fill, growth, time to full, WAL's share), the triggers (threshold,
    /// forecast), the WAL alarm, [`Self::increment`], the daily budget, [`Self::clamp`].
    pub fn decide(
        &mut self,
        now: Timestamp,
        used: &[Option<Figure>],
        wal: &[Option<Figure>],
        current_size: f64,
    ) -> Decision {
        let cfg = self.config.clone();
        // "database disk" is written into each sentence, not kept in a string of its own.
        let role = self.role;
        let mut d = Decision::hold(now, self.knob(), current_size);

        // The busiest fresh member, and its WAL figure if fresh.
        let stale_ms = millis(cfg.stale_after);
        let Tally {
            missing,
            stale,
            busiest,
        } = Tally::of(used, now, stale_ms);
        if missing > 0 {
            d.push_rule(rule(
                Rule::MissingData,
                current_size,
                current_size,
                format!(
                    "{missing} of {} members have no used-bytes figure",
                    used.len()
                ),
            ));
        }
        if stale > 0 {
            d.push_rule(rule(
                Rule::StaleData,
                current_size,
                current_size,
                format!(
                    "{stale} of {} members' figures are older than {}",
                    used.len(),
                    format_duration(cfg.stale_after)
                ),
            ));
        }
        if !(current_size.is_finite() && current_size > 0.0) {
            d.push_rule(rule(
                Rule::MissingData,
                current_size,
                current_size,
                "the disk size is unknown",
            ));
            d.summary = format!("{role} disk: the disk size is unknown: hold").into();
            return d;
        }
        let Some((index, used_now)) = busiest else {
            if used.is_empty() {
                d.push_rule(rule(
                    Rule::MissingData,
                    current_size,
                    current_size,
                    "no member",
                ));
            }
            d.summary = format!(
                "{role} disk: no fresh used-bytes figure ({missing} missing, {stale} stale of {}): hold {}",
                used.len(),
                Bytes(current_size)
            ).into();
            return d;
        };
        let wal_now = Tally::fresh(wal.get(index).and_then(Option::as_ref), now, stale_ms);
        self.remember(now, used_now, wal_now);

        let trend = self.trend(current_size, used_now);
        d.statistic = Some(trend.fill);
        let over = trend.fill >= cfg.high;
        let forecast = trend.time_to_full.is_some_and(|t| t < cfg.horizon);
        let said = Said {
            role,
            fill: trend.fill,
            high: cfg.high,
            growth: trend.growth,
            time_to_full: trend.time_to_full,
            current_size,
        };
        if !over && !forecast {
            // Nearly every decision on every observation: its sentence is written when read.
            d.summary = Text::later(Arc::new(said), Part::Summary);
            return d;
        }
        let full_in = said.full_in();
        let mut state = String::with_capacity(96);
        said.state(&full_in, &mut state);
        if over {
            d.push_rule(rule(
                Rule::Threshold,
                current_size,
                current_size,
                format!("{} used >= high {}", Pct(trend.fill), Pct(cfg.high)),
            ));
        }
        if forecast {
            d.push_rule(rule(
                Rule::Forecast,
                current_size,
                current_size,
                format!(
                    "{full_in}, within the horizon {}",
                    format_duration(cfg.horizon)
                ),
            ));
        }

        let wal_alarm = trend.wal_share.filter(|s| *s >= cfg.wal_share_alert);
        let critical = trend.fill >= cfg.critical;
        let mut wal_note = String::new();
        if let Some(share) = wal_alarm {
            d.push_rule(rule(
                Rule::WalGrowth,
                current_size,
                current_size,
                format!(
                    "WAL makes {} of the growth over {} (alert at {})",
                    Pct(share.min(9.99)),
                    format_duration(cfg.regression_window),
                    Pct(cfg.wal_share_alert)
                ),
            ));
            wal_note = format!(
                "WAL IS FILLING THE DISK ({} of the growth): check replication slots and WAL archiving",
                Pct(share.min(9.99))
            );
            if !critical {
                d.summary = format!(
                    "{state}: {wal_note}; not growing below critical {}",
                    Pct(cfg.critical)
                )
                .into();
                return d;
            }
        }

        let (raw, why) = self.increment(current_size, &trend);
        d.raw = Some(raw);

        if self.changes.len() >= cfg.max_changes_per_day as usize {
            d.push_rule(rule(
                Rule::Budget,
                raw,
                current_size,
                format!(
                    "{} changes in the last 24 h, at most {}",
                    self.changes.len(),
                    cfg.max_changes_per_day
                ),
            ));
            let mut summary = format!(
                "{state}: WANTS TO GROW but the budget of {} changes per 24 h is spent: hold {}",
                cfg.max_changes_per_day,
                Bytes(current_size)
            );
            if !wal_note.is_empty() {
                let _ = write!(summary, "; {wal_note}");
            }
            d.summary = summary.into();
            return d;
        }

        let target = self.clamp(raw, current_size, &mut d);
        if target <= current_size {
            d.summary = format!(
                "{state}: DISK AT MAX {}: cannot grow; raise max or free space",
                Bytes(current_size)
            )
            .into();
            return d;
        }
        d.action = Action::Grow;
        d.target = target;
        let mut summary = format!(
            "{state}: grow {} -> {} (+{}: {why})",
            Bytes(current_size),
            Bytes(target),
            Bytes(target - current_size)
        );
        if !wal_note.is_empty() {
            let _ = write!(
                summary,
                "; above critical {}, but {wal_note}",
                Pct(cfg.critical)
            );
        }
        d.summary = summary.into();
        d
    }

    /// Keeps the busiest member's figures for the regression (one sample per `now`, at most
    /// [`MAX_SAMPLES`], none older than the regression window) and forgets changes older than a
    /// day (the budget's window).
    fn remember(&mut self, now: Timestamp, used_now: f64, wal_now: Option<f64>) {
        if self.samples.back().is_none_or(|s| s.at <= now) {
            if self.samples.len() >= MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.make_room(now);
            self.samples.push_back(Sample::new(now, used_now, wal_now));
        }
        let horizon_start = now - self.config.regression_window;
        while self.samples.front().is_some_and(|s| s.at < horizon_start) {
            self.samples.pop_front();
        }
        let day_start = now - DAY;
        while self.changes.front().is_some_and(|t| *t <= day_start) {
            self.changes.pop_front();
        }
    }

    /// Before a push into a full history: room as a `VecDeque` grows it (doubling), but never
    /// beyond what the regression window holds at the pace of the last two samples, plus a
    /// tenth (an hour at a 10 s tick is 361 samples, which doubling gives 512 places). A faster
    /// pace later grows it again.
    fn make_room(&mut self, now: Timestamp) {
        let len = self.samples.len();
        let Some(last) = self.samples.back().map(|s| s.at) else {
            return;
        };
        if len < self.samples.capacity() || len < 2 {
            return;
        }
        let step = now.since(last).as_secs_f64();
        if step <= 0.0 {
            return;
        }
        let span = self.config.regression_window.as_secs_f64();
        if let Some(wanted) = room_for_span(len, span, step, MAX_SAMPLES) {
            self.samples.reserve_exact(wanted - len);
        }
    }

    /// Where the disk stands and where it is going, from the remembered samples.
    fn trend(&self, current_size: f64, used_now: f64) -> Trend {
        let cfg = &self.config;
        let fill = used_now / current_size;
        let min_span = cfg.regression_window.as_secs_f64() * MIN_SPAN_SHARE;
        let t0 = self.samples.front().map_or(0.0, |s| s.at.as_secs_f64());
        let used_slope = slope(
            self.samples
                .iter()
                .map(|s| (s.at.as_secs_f64() - t0, s.used)),
            min_span,
        );
        let wal_slope = slope(
            self.samples
                .iter()
                .filter_map(|s| s.wal().map(|w| (s.at.as_secs_f64() - t0, w))),
            min_span,
        );
        let growth = used_slope.filter(|s| *s > 0.0);
        let time_to_full = growth
            .map(|s| Duration::from_secs_f64(((current_size - used_now).max(0.0) / s).min(1e12)));
        let wal_share = match (growth, wal_slope) {
            (Some(g), Some(w)) => Some(w / g),
            _ => None,
        };
        Trend {
            fill,
            growth,
            time_to_full,
            wal_share,
        }
    }

    /// The new size before rounding: the size plus the largest of the fixed minimum, the
    /// percentage and the forecast growth over the horizon; and which of them it was.
    fn increment(&self, current_size: f64, trend: &Trend) -> (f64, String) {
        let cfg = &self.config;
        let forecast_growth = trend.growth.map_or(0.0, |g| g * cfg.horizon.as_secs_f64());
        let increment = cfg
            .min_increment
            .max(cfg.increment_pct * current_size)
            .max(forecast_growth);
        let why = if forecast_growth >= cfg.min_increment.max(cfg.increment_pct * current_size) {
            format!("forecast growth over {}", format_duration(cfg.horizon))
        } else if cfg.increment_pct * current_size >= cfg.min_increment {
            format!("{} of the size", Pct(cfg.increment_pct))
        } else {
            "the minimum increment".to_string()
        };
        (current_size + increment, why)
    }

    /// Rounded up to the step, at most `max`, never below the current size (a disk never
    /// shrinks); each rule that changed it recorded in `d`.
    fn clamp(&self, raw: f64, current_size: f64, d: &mut Decision) -> f64 {
        let cfg = &self.config;
        let mut target = ceil_step(raw, cfg.step);
        if target != raw {
            d.push_rule(rule(
                Rule::Rounding,
                raw,
                target,
                format!("rounded up to the {} step", Bytes(cfg.step)),
            ));
        }
        if target > cfg.max {
            d.push_rule(rule(
                Rule::Bounds,
                target,
                cfg.max,
                format!("at most {}", Bytes(cfg.max)),
            ));
            target = cfg.max;
        }
        if target < current_size {
            d.push_rule(rule(
                Rule::NeverShrink,
                target,
                current_size,
                format!(
                    "max {} is below the current size: a disk never shrinks",
                    Bytes(cfg.max)
                ),
            ));
            target = current_size;
        }
        target
    }
}

/// Where a disk stands and where it is going (see [`DiskPolicy::trend`]).
struct Trend {
    /// Used over size, of the busiest member.
    fill: f64,
    /// Bytes a second, when the regression says the disk grows.
    growth: Option<f64>,
    time_to_full: Option<Duration>,
    /// WAL's growth over the used bytes' growth.
    wal_share: Option<f64>,
}

/// Where the disk stands, as every disk sentence begins; kept to write a hold's sentence when it
/// is read ([`Text`]).
#[derive(Clone, Copy, Debug)]
struct Said {
    role: Role,
    fill: f64,
    high: f64,
    growth: Option<f64>,
    time_to_full: Option<Duration>,
    current_size: f64,
}

impl Said {
    /// `full in 3h 20m at 1.2 GiB/h` or `not growing`.
    fn full_in(&self) -> Cow<'static, str> {
        match self.time_to_full {
            None => Cow::Borrowed("not growing"),
            Some(t) => {
                let mut text = format!(
                    "full in {}",
                    format_duration(Duration::from_secs(t.as_secs()))
                );
                if let Some(g) = self.growth {
                    let _ = write!(text, " at {}/h", Bytes(g * 3600.0));
                }
                Cow::Owned(text)
            }
        }
    }

    /// `database disk 45% used (high 80%), full in ...`, with [`Self::full_in`]'s text.
    fn state(&self, full_in: &str, out: &mut String) {
        let _ = write!(
            out,
            "{} disk {} used (high {}), {full_in}",
            self.role,
            Pct(self.fill),
            Pct(self.high),
        );
    }
}

impl Explain for Said {
    fn write(&self, part: Part, out: &mut String) {
        // A hold has no rule of its own to detail.
        if part == Part::Summary {
            self.state(&self.full_in(), out);
            let _ = write!(out, ": hold {}", Bytes(self.current_size));
        }
    }
}

#[cfg(test)]
mod tests {
    use steward_model::observation::Source;

    use super::*;
    use crate::config::PolicyConfig;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn policy() -> DiskPolicy {
        DiskPolicy::new(Role::Database, PolicyConfig::default().database.disk)
    }

    fn fig(v: f64, at: Timestamp) -> Option<Figure> {
        Some(Figure::new(v, Source::Recorded, at))
    }

    /// Feeds one member every minute for `minutes`, used = used0 + rate x minutes, WAL as given.
    fn run(
        p: &mut DiskPolicy,
        minutes: i64,
        used0: f64,
        gib_per_hour: f64,
        wal: impl Fn(i64) -> Option<f64>,
        size: f64,
    ) -> Decision {
        let mut last = None;
        for m in 0..=minutes {
            let now = Timestamp::from_secs(m * 60);
            let used = used0 + gib_per_hour * GIB * m as f64 / 60.0;
            last = Some(p.decide(
                now,
                &[fig(used, now)],
                &[wal(m).and_then(|w| fig(w, now))],
                size,
            ));
        }
        last.unwrap()
    }

    #[test]
    fn an_hour_of_history_takes_the_room_it_needs_not_a_doubling() {
        // The default regression window (1 h) at a 10 s tick: 361 samples kept.
        let mut p = policy();
        for t in 0..=720 {
            let now = Timestamp::from_secs(t * 10);
            let wal = (t % 2 == 0).then_some(GIB);
            p.decide(
                now,
                &[fig(5.0 * GIB, now)],
                &[wal.and_then(|w| fig(w, now))],
                20.0 * GIB,
            );
        }
        assert_eq!(p.samples.len(), 361);
        let room = p.samples.capacity();
        assert!(
            (361..=400).contains(&room),
            "room for {room} samples (doubling gives 512)"
        );
        // The WAL figure is kept where there was one, and only there.
        let kept: Vec<Option<f64>> = p.samples.iter().rev().take(2).map(Sample::wal).collect();
        assert_eq!(kept, [Some(GIB), None]);
    }

    #[test]
    fn a_quiet_half_empty_disk_holds() {
        let mut p = policy();
        let d = run(&mut p, 120, 50.0 * GIB, 0.0, |_| None, 100.0 * GIB);
        assert_eq!(d.action, Action::Hold);
        assert!(d.summary.as_str().contains("50% used"), "{}", d.summary);
        assert!(d.summary.as_str().contains("not growing"), "{}", d.summary);
    }

    /// The hold's sentence is written when read: the same words as every disk sentence begins
    /// with, and the size held.
    #[test]
    fn a_slowly_filling_disk_holds_and_says_when_it_would_be_full() {
        let mut p = policy();
        // 20 GiB of 100, +0.5 GiB/h: full in ~160 h, far beyond the 12 h horizon.
        let d = run(&mut p, 120, 20.0 * GIB, 0.5, |_| None, 100.0 * GIB);
        assert_eq!(d.action, Action::Hold);
        assert!(d.rules.is_empty(), "{:?}", d.rules);
        let summary = d.summary.to_string();
        assert_eq!(
            summary,
            "database disk 21% used (high 80%), full in 6days 14h at 512.0 MiB/h: hold 100.0 GiB"
        );
        // Read twice, written twice, the same.
        assert_eq!(d.summary.to_string(), summary);
    }

    #[test]
    fn the_threshold_grows_by_the_largest_increment() {
        let mut p = policy();
        let d = run(&mut p, 0, 85.0 * GIB, 0.0, |_| None, 100.0 * GIB);
        assert_eq!(d.action, Action::Grow, "{d:?}");
        assert!(d.has_rule(Rule::Threshold));
        // 10 % of 100 GiB beats the 1 GiB minimum.
        assert_eq!(d.target, 110.0 * GIB);
        assert!(
            d.summary.as_str().contains("10% of the size"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn the_forecast_grows_before_the_threshold() {
        let mut p = policy();
        // 40 GiB used of 100, +10 GiB/h: full in 6 h < horizon 12 h.
        let d = run(&mut p, 60, 30.0 * GIB, 10.0, |_| None, 100.0 * GIB);
        assert_eq!(d.action, Action::Grow, "{d:?}");
        assert!(d.has_rule(Rule::Forecast));
        assert!(!d.has_rule(Rule::Threshold));
        // Forecast growth over 12 h = 120 GiB beats 10 %.
        assert_eq!(d.target, 220.0 * GIB);
        assert!(
            d.summary.as_str().contains("forecast growth"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn a_short_history_does_not_forecast() {
        let mut p = policy();
        // Only 5 minutes of a steep climb: a quarter of the window (15 min) is needed.
        let d = run(&mut p, 5, 30.0 * GIB, 100.0, |_| None, 100.0 * GIB);
        assert_eq!(d.action, Action::Hold, "{d:?}");
    }

    #[test]
    fn wal_growth_holds_loudly_below_critical_and_grows_above() {
        let mut p = policy();
        // Growth is all WAL: 2 GiB/h, WAL tracks it.
        let d = run(
            &mut p,
            60,
            80.0 * GIB,
            2.0,
            |m| Some(1.0 * GIB + 2.0 * GIB * m as f64 / 60.0),
            100.0 * GIB,
        );
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::WalGrowth));
        assert!(
            d.summary.as_str().contains("WAL IS FILLING THE DISK"),
            "{}",
            d.summary
        );
        let mut p = policy();
        let d = run(
            &mut p,
            60,
            94.0 * GIB,
            2.0,
            |m| Some(1.0 * GIB + 2.0 * GIB * m as f64 / 60.0),
            100.0 * GIB,
        );
        assert_eq!(d.action, Action::Grow, "{d:?}");
        assert!(d.has_rule(Rule::WalGrowth));
        assert!(
            d.summary.as_str().contains("above critical"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn data_growth_with_steady_wal_is_not_a_wal_alarm() {
        let mut p = policy();
        let d = run(
            &mut p,
            60,
            80.0 * GIB,
            2.0,
            |_| Some(1.0 * GIB),
            100.0 * GIB,
        );
        assert_eq!(d.action, Action::Grow);
        assert!(!d.has_rule(Rule::WalGrowth));
    }

    #[test]
    fn the_daily_budget_holds_then_frees() {
        let mut cfg = PolicyConfig::default().database.disk;
        cfg.max_changes_per_day = 2;
        let mut p = DiskPolicy::new(Role::Database, cfg);
        let size = 100.0 * GIB;
        let at = |h: i64| Timestamp::from_secs(h * 3600);
        p.record_change(at(0), size);
        p.record_change(at(1), size);
        let d = p.decide(at(2), &[fig(90.0 * GIB, at(2))], &[None], size);
        assert_eq!(d.action, Action::Hold);
        assert!(d.has_rule(Rule::Budget), "{d:?}");
        assert!(d.summary.as_str().contains("budget"), "{}", d.summary);
        // 24 h after the first change, one slot is free again.
        let d = p.decide(at(24), &[fig(90.0 * GIB, at(24))], &[None], size);
        assert_eq!(d.action, Action::Grow, "{d:?}");
    }

    #[test]
    fn max_clamps_and_a_disk_never_shrinks() {
        let mut cfg = PolicyConfig::default().database.disk;
        cfg.max = 105.0 * GIB;
        let mut p = DiskPolicy::new(Role::Database, cfg.clone());
        let now = Timestamp::from_secs(0);
        let d = p.decide(now, &[fig(90.0 * GIB, now)], &[None], 100.0 * GIB);
        assert_eq!((d.action, d.target), (Action::Grow, 105.0 * GIB));
        assert!(d.has_rule(Rule::Bounds));
        // Already above max (grown by hand): never shrink to max.
        let d = p.decide(now, &[fig(190.0 * GIB, now)], &[None], 200.0 * GIB);
        assert_eq!((d.action, d.target), (Action::Hold, 200.0 * GIB), "{d:?}");
        assert!(d.has_rule(Rule::NeverShrink));
        assert!(d.summary.as_str().contains("DISK AT MAX"), "{}", d.summary);
    }

    #[test]
    fn missing_data_holds_and_a_present_member_still_counts() {
        let mut p = policy();
        let now = Timestamp::from_secs(0);
        let d = p.decide(now, &[None, None], &[None, None], 100.0 * GIB);
        assert_eq!(d.action, Action::Hold);
        assert!(d.has_rule(Rule::MissingData));
        let old = Figure::new(99.0 * GIB, Source::Recorded, Timestamp::from_secs(0));
        let later = Timestamp::from_secs(3600);
        let d = p.decide(later, &[Some(old)], &[None], 100.0 * GIB);
        assert_eq!(
            d.action,
            Action::Hold,
            "a stale full disk is not grown on: {d:?}"
        );
        assert!(d.has_rule(Rule::StaleData));
        let d = p.decide(
            later,
            &[Some(old), fig(90.0 * GIB, later)],
            &[None, None],
            100.0 * GIB,
        );
        assert_eq!(d.action, Action::Grow);
    }

    #[test]
    fn least_squares_finds_the_slope() {
        let pts = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)];
        assert_eq!(slope(pts.iter().copied(), 1.0), Some(2.0));
        assert_eq!(slope(pts.iter().copied(), 10.0), None);
        assert_eq!(slope(pts[..2].iter().copied(), 0.0), None);
    }
}
