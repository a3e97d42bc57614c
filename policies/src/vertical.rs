//! The vertical policy: the CPU or memory size of every member of one role (DESIGN.md 4).
//!
//! What it is: hysteresis around a target. Each tick takes the busiest member's usage (members of
//! one role share one size, and any replica may become the primary), keeps it in a time window,
//! and computes a statistic (mean or percentile) over the window as a utilization of the current
//! size. Above `grow_at` (at most `high`) for `up_window`: grow; below `low` for `down_window`:
//! shrink; in between: nothing. The new size puts the statistic at `target`, rounded up to
//! `step`, limited to `max_step_factor` and clamped to `[min, max]`; a shrink never lands where
//! the same statistic would grow it again. A cooldown follows every change. Memory also has an
//! OOM emergency grow.
//!
//! What comes next counts too (issue 17; the `seasonal` module keeps the memory it takes):
//! - a grow during a ramp (the last hour's 5-minute peaks on a rising line) is sized for the
//!   usage `ramp_horizon` ahead, and no shrink happens while such a ramp lasts;
//! - with `learn`, the hourly peaks of the last 8 days: when the same window on the days before
//!   agree (the last 3 days and a week ago, or yesterday and a week ago, and today so far like
//!   them), the policy grows ahead of a window whose peak would pass `high` at this size, sizes
//!   every grow for that peak, and refuses a shrink into a trough that the days before say ends
//!   within the down window (or twice the look ahead). A grow sized for a learned window is kept
//!   through it. Every such step is a `Forecast` rule that names the window, the days and the
//!   peak. With a short or irregular history, nothing of this applies: the policy is the
//!   reactive one.
//!
//! What it is not: an actuator or a clock. The caller applies a change and then calls
//! [`VerticalPolicy::record_change`]; `now` is always a parameter.
//!
//! Missing and stale figures: a tick with no fresh figure holds and resets both windows (the
//! evidence for a change must be continuous). A tick where only some figures are fresh still feeds
//! the window, so a grow on the data present is allowed; such a sample marks the window incomplete
//! and no shrink happens until it has left the window: the missing member might be the busy one.
//! Only complete samples teach the learned day, for the same reason.
//!
//! Hot path: [`VerticalPolicy::tick`] does O(members + window samples) work and does not allocate
//! after warm-up; [`VerticalPolicy::decide`] runs the same code and keeps what it saw in one
//! allocation ([`Explained`], sharing the policy's config), from which the decision's summary
//! and details are written when something reads them ([`steward_model::Text`]).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use steward_model::decision::Knob;
use steward_model::observation::Figure;
use steward_model::size::Amount;
use steward_model::{
    Action, Decision, Explain, Fixed, Part, Resource, Role, Rule, Text, Timestamp,
};

use crate::config::{OomConfig, VerticalConfig};
use crate::figures::{ceil_step, floor_step, millis, Tally};
use crate::rules::rule;
use crate::rules::RuleSet;
use crate::seasonal::{Outlook, Profile, Ramp, Seen, Trend, RAMP_FIT};
use crate::window::Window;

/// What a tick decided, without the prose: cheap to return, `Copy`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub action: Action,
    /// The size to have; equal to the current size when the action is `Hold`.
    pub target: f64,
    /// The utilization statistic (0..1 of the current size), when there was data.
    pub statistic: Option<f64>,
    /// What the data alone asked for (size at `target` utilization), when the band was left.
    pub raw: Option<f64>,
    /// Every rule that changed or blocked the recommendation, or explains the hold.
    pub rules: RuleSet,
}

/// One rule's effect, recorded on the hot path without formatting.
#[derive(Clone, Copy, Debug)]
struct Step {
    rule: Rule,
    before: f64,
    after: f64,
    /// What a `Forecast` looked at.
    why: Ahead,
}

/// What a `Forecast` step looked at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ahead {
    Nothing,
    /// The last hour's ramp.
    Ramp,
    /// The learned day, for a grow.
    Day,
    /// The learned day, for a shrink.
    Trough,
    /// A grow sized for a learned window, kept through it.
    Kept,
}

/// A size grown for a learned window, kept through that window: without it, the grow ahead of a
/// ramp leaves the statistic below `low` for the down window, and the shrink that follows comes
/// back as a grow when the ramp arrives.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Kept {
    size: f64,
    until_ms: i64,
}

const MAX_STEPS: usize = 8;

/// Where a trace keeps its steps: nowhere for `tick` (the verdict's rule set is enough), a small
/// array for `decide`. Generic, so `tick` does not even initialize the array.
trait Steps: Copy {
    fn empty() -> Self;
    fn push(&mut self, step: Step);
}

#[derive(Clone, Copy, Debug)]
struct NoSteps;

impl Steps for NoSteps {
    fn empty() -> Self {
        NoSteps
    }

    #[inline]
    fn push(&mut self, _: Step) {}
}

/// Steps in order, as `decide` keeps them ([`StepList`]) and as an explanation keeps them
/// ([`SaidList`]).
#[derive(Clone, Copy, Debug)]
struct List<T>([Option<T>; MAX_STEPS]);

type StepList = List<Step>;

/// The steps an explanation keeps ([`Explained`]): two bytes each, where a [`Step`] takes 24.
type SaidList = List<Said>;

impl<T: Copy + From<Step>> Steps for List<T> {
    fn empty() -> Self {
        List([None; MAX_STEPS])
    }

    fn push(&mut self, step: Step) {
        // At most 6 rules apply to one decision, so the array never fills.
        if let Some(slot) = self.0.iter_mut().find(|s| s.is_none()) {
            *slot = Some(step.into());
        }
    }
}

/// A step as the texts need it: the rule, and what a forecast looked at (its values are the
/// decision's [`steward_model::RuleApplied`]).
#[derive(Clone, Copy, Debug)]
struct Said {
    rule: Rule,
    why: Ahead,
}

impl From<Step> for Said {
    fn from(step: Step) -> Self {
        Said {
            rule: step.rule,
            why: step.why,
        }
    }
}

/// Everything a tick saw, so that `decide` can explain it without recomputing.
#[derive(Clone, Copy, Debug)]
struct Trace<S> {
    verdict: Verdict,
    current: f64,
    steps: S,
    members: usize,
    missing: usize,
    stale: usize,
    /// The window statistic in resource units (busiest member's usage).
    usage: Option<f64>,
    /// How long the statistic has been above high (or below low), when it is.
    held_for: Duration,
    /// Time since the last change, when one is within the cooldown.
    since_change: Option<Duration>,
    /// Samples in the window that lacked some member.
    incomplete: usize,
    /// The learned window a decision used, or the days that disagreed.
    outlook: Option<Outlook>,
    /// The ramp a grow was sized for.
    ramp: Option<Ramp>,
    /// The ramp's projected usage.
    projected: f64,
    /// The grow was ahead of a learned window (the statistic not above high).
    ahead: bool,
    /// A grow was sized for a learned window.
    learned_grow: bool,
    /// The kept size that held a shrink up.
    kept: Option<Kept>,
}

impl<S: Steps> Trace<S> {
    fn new(current: f64, members: usize) -> Self {
        Trace {
            verdict: Verdict {
                action: Action::Hold,
                target: current,
                statistic: None,
                raw: None,
                rules: RuleSet::EMPTY,
            },
            current,
            steps: S::empty(),
            members,
            missing: 0,
            stale: 0,
            usage: None,
            held_for: Duration::ZERO,
            since_change: None,
            incomplete: 0,
            outlook: None,
            ramp: None,
            projected: f64::NAN,
            ahead: false,
            learned_grow: false,
            kept: None,
        }
    }

    /// The same trace with its steps kept in `steps`.
    fn with_steps<T: Steps>(self, steps: T) -> Trace<T> {
        Trace {
            verdict: self.verdict,
            current: self.current,
            steps,
            members: self.members,
            missing: self.missing,
            stale: self.stale,
            usage: self.usage,
            held_for: self.held_for,
            since_change: self.since_change,
            incomplete: self.incomplete,
            outlook: self.outlook,
            ramp: self.ramp,
            projected: self.projected,
            ahead: self.ahead,
            learned_grow: self.learned_grow,
            kept: self.kept,
        }
    }

    fn record(&mut self, rule: Rule, before: f64, after: f64) {
        self.note(rule, before, after, Ahead::Nothing);
    }

    fn note(&mut self, rule: Rule, before: f64, after: f64, why: Ahead) {
        self.verdict.rules.insert(rule);
        self.steps.push(Step {
            rule,
            before,
            after,
            why,
        });
    }
}

/// The vertical policy of one role and one resource (CPU or memory).
#[derive(Clone, Debug)]
pub struct VerticalPolicy {
    role: Role,
    resource: Resource,
    /// Shared with the decisions' explanations ([`Explained`]).
    config: Arc<VerticalConfig>,
    oom: OomConfig,
    window: Window,
    // Durations in milliseconds, precomputed for the hot path (Timestamp is epoch milliseconds).
    window_ms: i64,
    stale_ms: i64,
    above_since: Option<Timestamp>,
    below_since: Option<Timestamp>,
    /// When the previous fresh sample arrived. A sample stands for the interval since the one
    /// before it (a CloudWatch or `rate()` figure is an average over that interval), so a
    /// condition that starts with this sample has held since then.
    last_sample: Option<Timestamp>,
    last_change: Option<Timestamp>,
    /// The hourly peaks of the last days, when `learn` is on (boxed: most of the policy's size).
    /// Made with the first complete sample, not before: a scaler has policies for balancers
    /// too, and a cluster without any would carry two empty profiles (a fleet of 10,000: 8 MB).
    profile: Option<Box<Profile>>,
    /// The last hour's 5-minute peaks.
    trend: Trend,
    lookahead_ms: i64,
    /// The window a learned grow is sized for.
    size_ms: i64,
    /// The last verdict's grow, when it was sized for a learned window: kept once applied.
    sized_for: Option<Kept>,
    /// The size of the last applied grow sized for a learned window, until that window ends.
    kept: Option<Kept>,
    /// How far ahead a shrink must be safe: the down window (the least a new size should last)
    /// plus the up window (a grow would be needed that much before the load arrives), or the
    /// window a grow ahead is sized for, if longer.
    trough_ms: i64,
}

/// A grow ahead of a learned window is sized for the peak of twice the look ahead: the rest of
/// the ramp, so that one grow a morning does. On the training set 1x made 2.7 % more changes;
/// 3x 1.6 % fewer, but two traces fewer met the goal (vCPU-hours). Shrinks look at least this
/// far ahead too, so a shrink never lands where a grow ahead would undo it.
const SIZE_FOR_LOOKAHEADS: i64 = 2;

const HOUR_MS: i64 = 3_600_000;

/// "clamped to [1 vCPU, 16 vCPU]".
fn bounds_detail(resource: Resource, cfg: &VerticalConfig) -> String {
    format!(
        "clamped to [{}, {}]",
        Amount(resource, cfg.min),
        Amount(resource, cfg.max)
    )
}

/// `HH:MM` of an epoch-millisecond time, UTC.
fn clock(ms: i64) -> String {
    let minutes = ms.rem_euclid(86_400_000) / 60_000;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The longest gap between two samples that the later one still stands for: 5 minutes, the
/// period of CloudWatch's basic monitoring, the coarsest resolution metrics are commonly kept at.
/// Live, Steward samples every few seconds and `stale_after` is the bound that matters.
const MAX_SAMPLE_INTERVAL_MS: i64 = 5 * 60 * 1000;

impl VerticalPolicy {
    /// A policy with the default OOM emergency settings (see [`VerticalPolicy::with_oom`]).
    /// `config` may be shared (an `Arc`) by many policies: a fleet's scalers share theirs.
    pub fn new(role: Role, resource: Resource, config: impl Into<Arc<VerticalConfig>>) -> Self {
        let config = config.into();
        VerticalPolicy {
            role,
            resource,
            window_ms: millis(config.window),
            stale_ms: millis(config.stale_after),
            profile: None,
            trend: Trend::default(),
            sized_for: None,
            kept: None,
            lookahead_ms: millis(config.lookahead),
            size_ms: millis(config.lookahead).saturating_mul(SIZE_FOR_LOOKAHEADS),
            trough_ms: millis(config.down_window)
                .saturating_add(millis(config.up_window))
                .max(millis(config.lookahead).saturating_mul(SIZE_FOR_LOOKAHEADS)),
            config,
            oom: OomConfig::default(),
            window: Window::default(),
            above_since: None,
            below_since: None,
            last_sample: None,
            last_change: None,
        }
    }

    /// Sets the OOM emergency grow (memory only; the config's `[policy.<role>.oom]`).
    pub fn with_oom(mut self, oom: OomConfig) -> Self {
        self.oom = oom;
        self
    }

    pub fn config(&self) -> &VerticalConfig {
        &self.config
    }

    pub fn knob(&self) -> Knob {
        Knob::Vertical {
            role: self.role,
            resource: self.resource,
        }
    }

    /// Cheap, allocation-free after warm-up: the hot path of `evaluate`. `usage[i]` is member i's
    /// usage in resource units (vCPUs or bytes; `None` = missing); `current` is the role's size.
    pub fn tick(&mut self, now: Timestamp, usage: &[Option<Figure>], current: f64) -> Verdict {
        self.evaluate::<NoSteps>(now, usage, current).verdict
    }

    /// [`tick`](Self::tick) plus the full explanation.
    pub fn decide(&mut self, now: Timestamp, usage: &[Option<Figure>], current: f64) -> Decision {
        let trace = self.evaluate::<StepList>(now, usage, current);
        self.explain(now, trace)
    }

    /// The change was applied: starts the cooldown and resets the windows (the samples were
    /// utilizations of the old size).
    pub fn record_change(&mut self, now: Timestamp, new_size: f64) {
        self.last_change = Some(now);
        // A grow sized for a learned window is kept through it (see `Kept`).
        self.kept = self.sized_for.take().filter(|k| k.size == new_size);
        self.window.clear();
        self.above_since = None;
        self.below_since = None;
    }

    /// An OOM kill was seen: grow memory at once, x `factor` and at least `+min_increment`, rounded
    /// up to the step and clamped to `max`.
    ///
    /// It ignores the windows AND the cooldown: an OOM kill is an emergency (a backend or the
    /// whole member died), and waiting out a cooldown would let it die again. It does not change
    /// the policy's state: the caller applies the change and calls `record_change`, which starts a
    /// cooldown as after any change.
    ///
    /// For CPU an OOM kill says nothing: the decision is a hold that says so.
    pub fn record_oom(&mut self, now: Timestamp, current: f64) -> Decision {
        let mut d = Decision::hold(now, self.knob(), current);
        let name = format!("{} {}", self.role, self.resource);
        if self.resource != Resource::Memory {
            d.summary = format!(
                "{name}: an OOM kill concerns memory, not {}: hold",
                self.resource
            )
            .into();
            return d;
        }
        if !(current.is_finite() && current > 0.0) {
            d.push_rule(rule(
                Rule::MissingData,
                current,
                current,
                "the current size is unknown",
            ));
            d.summary = format!("{name}: OOM kill, but the current size is unknown: hold").into();
            return d;
        }
        let cfg = &self.config;
        let raw = (current * self.oom.factor).max(current + self.oom.min_increment);
        d.raw = Some(raw);
        d.push_rule(rule(
            Rule::OomEmergency,
            current,
            raw,
            format!(
                "x{} or +{}, whichever is larger; windows and cooldown ignored",
                self.oom.factor,
                self.amount(self.oom.min_increment)
            ),
        ));
        let mut v = ceil_step(raw, cfg.step);
        if v != raw {
            d.push_rule(rule(
                Rule::Rounding,
                raw,
                v,
                format!("rounded up to the {} step", self.amount(cfg.step)),
            ));
        }
        let clamped = v.clamp(cfg.min, cfg.max);
        if clamped != v {
            d.push_rule(rule(
                Rule::Bounds,
                v,
                clamped,
                bounds_detail(self.resource, cfg),
            ));
            v = clamped;
        }
        if v > current {
            d.action = Action::Grow;
            d.target = v;
            d.summary = format!(
                "{name}: OOM kill: emergency grow {} -> {} (raw {})",
                self.amount(current),
                self.amount(v),
                self.amount(raw)
            )
            .into();
        } else {
            d.summary = format!(
                "{name}: OOM KILL AT MAX: memory is already {} (max {}); cannot grow, raise max or fix the workload",
                self.amount(current),
                self.amount(cfg.max)
            ).into();
        }
        d
    }

    /// `v` for people, written into the sentence it is part of.
    fn amount(&self, v: f64) -> Amount {
        Amount(self.resource, v)
    }

    /// The policy itself; `tick` and `decide` both run it, `tick` without keeping the steps.
    fn evaluate<S: Steps>(
        &mut self,
        now: Timestamp,
        usage: &[Option<Figure>],
        current: f64,
    ) -> Trace<S> {
        let t = self.judge::<S>(now, usage, current);
        // Through the end of the last hour the learned window covers.
        self.sized_for = (t.verdict.action == Action::Grow && t.learned_grow).then(|| Kept {
            size: t.verdict.target,
            until_ms: (now.0.saturating_add(self.size_ms) / HOUR_MS + 1).saturating_mul(HOUR_MS),
        });
        t
    }

    fn judge<S: Steps>(
        &mut self,
        now: Timestamp,
        usage: &[Option<Figure>],
        current: f64,
    ) -> Trace<S> {
        let cfg = &self.config;
        let mut t = Trace::new(current, usage.len());

        // The busiest fresh member; count the others.
        let tally = Tally::of(usage, now, self.stale_ms);
        (t.missing, t.stale) = (tally.missing, tally.stale);
        let busiest = tally.busiest.map(|(_, v)| v);
        if t.missing > 0 {
            t.record(Rule::MissingData, current, current);
        }
        if t.stale > 0 {
            t.record(Rule::StaleData, current, current);
        }
        if !(current.is_finite() && current > 0.0) {
            // Without a size there is no utilization: hold (and say it is the size that is missing).
            t.record(Rule::MissingData, current, current);
            return t;
        }
        let Some(busiest) = busiest else {
            if usage.is_empty() {
                t.record(Rule::MissingData, current, current);
            }
            // Nothing fresh: hold, and restart both windows, so a change needs continuous evidence.
            self.above_since = None;
            self.below_since = None;
            self.last_sample = None;
            return t;
        };

        let complete = tally.complete();
        self.window.make_room(now.0, self.window_ms);
        self.window.push(now.0, busiest, complete);
        self.window
            .evict_through(now.0.saturating_sub(self.window_ms));
        t.incomplete = self.window.incomplete();
        let Some(usage_stat) = self.window.statistic(cfg.statistic) else {
            return t; // unreachable: a sample was just pushed or the window kept newer ones
        };
        let utilization = usage_stat / current;
        t.usage = Some(usage_stat);
        t.verdict.statistic = Some(utilization);

        // The long memory takes the statistic (what the band judges), in resource units: a size
        // change does not change it. Only complete samples teach the day: a missing member may
        // be the busy one, and a peak learned without it would be too low.
        if !cfg.ramp_horizon.is_zero() {
            self.trend.record(now.0, usage_stat);
        }
        if complete && cfg.learn {
            let max = cfg.max;
            self.profile
                .get_or_insert_with(|| Box::new(Profile::new(max)))
                .record(now.0, usage_stat);
        }

        let above = utilization > cfg.grow_at;
        let below = utilization < cfg.low;
        // The interval this sample stands for began at the previous sample, unless the gap is
        // longer than a sample can vouch for (then only this instant counts).
        let covered_from = match self.last_sample {
            Some(prev)
                if now.0.saturating_sub(prev.0) <= self.stale_ms.max(MAX_SAMPLE_INTERVAL_MS) =>
            {
                prev
            }
            _ => now,
        };
        self.last_sample = Some(now);
        self.above_since = if above {
            Some(self.above_since.unwrap_or(covered_from))
        } else {
            None
        };
        // A shrink needs a complete window: a missing member may be the busy one.
        self.below_since = if below && t.incomplete == 0 {
            Some(self.below_since.unwrap_or(covered_from))
        } else {
            None
        };

        if !above {
            // A ramp that recurs: grow before the window ahead passes high at this size.
            if let Some(seen) = self.outlook(now, self.lookahead_ms).learned() {
                if seen.peak / current > cfg.high {
                    return self.grow_ahead(t, now, seen, usage_stat);
                }
            }
        }
        if !above && !below {
            t.record(Rule::Band, current, current);
            return t;
        }
        let raw = usage_stat / cfg.target;
        t.verdict.raw = Some(raw);
        if below && t.incomplete > 0 {
            // Blocked by missing data: the MissingData/StaleData rule is recorded (now or when the
            // sample entered the window); make sure one is.
            if !t.verdict.rules.contains(Rule::MissingData)
                && !t.verdict.rules.contains(Rule::StaleData)
            {
                t.record(Rule::MissingData, raw, current);
            }
            return t;
        }
        let (since, needed, window_rule) = if above {
            (self.above_since, cfg.up_window, Rule::UpWindow)
        } else {
            (self.below_since, cfg.down_window, Rule::DownWindow)
        };
        t.held_for = since.map_or(Duration::ZERO, |s| now.since(s));
        if t.held_for < needed {
            t.record(window_rule, raw, current);
            return t;
        }
        if let Some(last) = self.last_change {
            let elapsed = now.since(last);
            if elapsed < cfg.cooldown {
                t.since_change = Some(elapsed);
                t.record(Rule::Cooldown, raw, current);
                return t;
            }
        }

        let target = if above {
            let raw = self.sized_for_what_comes(&mut t, now, raw, usage_stat);
            self.grow_target(&mut t, raw)
        } else {
            let v = self.shrink_target(&mut t, raw, usage_stat);
            self.keep_for_what_comes(&mut t, now, v)
        };
        if above && target > current {
            t.verdict.action = Action::Grow;
            t.verdict.target = target;
        } else if below && target < current {
            t.verdict.action = Action::Shrink;
            t.verdict.target = target;
        }
        t
    }

    /// What the profile says about `[now, now + horizon]`; short when not learning.
    fn outlook(&self, now: Timestamp, horizon_ms: i64) -> Outlook {
        match self.profile.as_deref() {
            Some(p) => p.outlook(now.0, horizon_ms, self.config.step),
            // Learning, with no complete sample yet: what an empty profile says.
            None if self.config.learn => {
                Profile::new(self.config.max).outlook(now.0, horizon_ms, self.config.step)
            }
            None => Outlook::Short,
        }
    }

    /// The grow ahead of a learned window: the statistic is not above high yet, but the same
    /// window on the days before was, at this size. It needs no up window (the days are the
    /// evidence), but it waits out a cooldown.
    fn grow_ahead<S: Steps>(
        &self,
        mut t: Trace<S>,
        now: Timestamp,
        seen: Seen,
        usage_stat: f64,
    ) -> Trace<S> {
        let cfg = &self.config;
        // Sized for the longer window when the days agree on it too.
        let seen = self
            .outlook(now, self.size_ms)
            .learned()
            .filter(|longer| longer.peak >= seen.peak)
            .unwrap_or(seen);
        t.outlook = Some(Outlook::Learned(seen));
        t.ahead = true;
        t.learned_grow = true;
        let raw = (seen.peak / cfg.grow_at).max(usage_stat / cfg.target);
        t.verdict.raw = Some(raw);
        t.note(Rule::Forecast, t.current, raw, Ahead::Day);
        if let Some(last) = self.last_change {
            let elapsed = now.since(last);
            if elapsed < cfg.cooldown {
                t.since_change = Some(elapsed);
                t.record(Rule::Cooldown, raw, t.current);
                return t;
            }
        }
        let target = self.grow_target(&mut t, raw);
        if target > t.current {
            t.verdict.action = Action::Grow;
            t.verdict.target = target;
        }
        t
    }

    /// A grow's size, raised for what comes: the usage the last hour's ramp reaches
    /// `ramp_horizon` ahead, and the peak of the learned window ahead.
    fn sized_for_what_comes<S: Steps>(
        &self,
        t: &mut Trace<S>,
        now: Timestamp,
        raw: f64,
        usage_stat: f64,
    ) -> f64 {
        let cfg = &self.config;
        let mut raw = raw;
        if !cfg.ramp_horizon.is_zero() {
            if let Some(ramp) = self.trend.ramp(now.0) {
                if ramp.per_hour > 0.0 && ramp.fit >= RAMP_FIT {
                    let projected =
                        usage_stat + ramp.per_hour * cfg.ramp_horizon.as_secs_f64() / 3600.0;
                    let want = projected / cfg.grow_at;
                    if want > raw {
                        t.ramp = Some(ramp);
                        t.projected = projected;
                        t.note(Rule::Forecast, raw, want, Ahead::Ramp);
                        raw = want;
                    }
                }
            }
        }
        match self.outlook(now, self.size_ms) {
            Outlook::Learned(seen) => {
                let want = seen.peak / cfg.grow_at;
                if want > raw {
                    t.outlook = Some(Outlook::Learned(seen));
                    t.note(Rule::Forecast, raw, want, Ahead::Day);
                    t.learned_grow = true;
                    raw = want;
                }
            }
            irregular @ Outlook::Irregular(_) => t.outlook = Some(irregular),
            Outlook::Short => {}
        }
        raw
    }

    /// A shrink's size, kept up for what comes: while the last hour rises on a line, the usage
    /// `ramp_horizon` ahead; with a learned day, the peak of the same window on the days before
    /// over the down window plus the up window (or twice the look ahead, if longer). Either must
    /// sit at or below `grow_at` at the new size. Kept at the current size, the shrink is
    /// refused: the trough ends too soon.
    fn keep_for_what_comes<S: Steps>(&self, t: &mut Trace<S>, now: Timestamp, v: f64) -> f64 {
        let cfg = &self.config;
        let floor = |need: f64| ceil_step(need / cfg.grow_at, cfg.step).clamp(cfg.min, cfg.max);
        let mut v = v;
        if v >= t.current {
            return v;
        }
        if let Some(k) = self.kept.filter(|k| now.0 < k.until_ms) {
            let kept = k.size.min(t.current);
            if kept > v {
                t.kept = Some(k);
                t.note(Rule::Forecast, v, kept, Ahead::Kept);
                v = kept;
            }
        }
        if !cfg.ramp_horizon.is_zero() {
            if let Some(ramp) = self.trend.ramp(now.0) {
                if ramp.per_hour > 0.0 && ramp.fit >= RAMP_FIT {
                    let projected = t.usage.unwrap_or(0.0)
                        + ramp.per_hour * cfg.ramp_horizon.as_secs_f64() / 3600.0;
                    let kept = floor(projected).min(t.current);
                    if kept > v {
                        t.ramp = Some(ramp);
                        t.projected = projected;
                        t.note(Rule::Forecast, v, kept, Ahead::Ramp);
                        v = kept;
                    }
                }
            }
        }
        match self.outlook(now, self.trough_ms) {
            Outlook::Learned(seen) => {
                let kept = floor(seen.peak).min(t.current);
                if kept > v {
                    t.outlook = Some(Outlook::Learned(seen));
                    t.note(Rule::Forecast, v, kept, Ahead::Trough);
                    v = kept;
                }
            }
            irregular @ Outlook::Irregular(_) => t.outlook = Some(irregular),
            Outlook::Short => {}
        }
        v
    }

    fn grow_target<S: Steps>(&self, t: &mut Trace<S>, raw: f64) -> f64 {
        let cfg = &self.config;
        let limit = t.current * cfg.max_step_factor;
        let mut v = raw;
        if v > limit {
            t.record(Rule::StepLimit, v, limit);
            v = limit;
        }
        let mut rounded = ceil_step(v, cfg.step);
        if rounded > limit * (1.0 + 1e-9) {
            // Rounding up would pass the step limit: round down instead.
            rounded = floor_step(limit, cfg.step);
        }
        if rounded != v {
            t.record(Rule::Rounding, v, rounded);
            v = rounded;
        }
        self.clamp(t, v)
    }

    fn shrink_target<S: Steps>(&self, t: &mut Trace<S>, raw: f64, usage_stat: f64) -> f64 {
        let cfg = &self.config;
        let limit = t.current / cfg.max_step_factor;
        let mut v = raw;
        if v < limit {
            t.record(Rule::StepLimit, v, limit);
            v = limit;
        }
        // Up, not to the nearest: a shrink must stay on the safe side.
        let rounded = ceil_step(v, cfg.step);
        if rounded != v {
            t.record(Rule::Rounding, v, rounded);
            v = rounded;
        }
        v = self.clamp(t, v);
        // The same data must not grow the new size again. With target < grow_at this only bites
        // when a bound pulled the size down; a size at max cannot grow anyway, so stop there.
        if usage_stat / v > cfg.grow_at {
            let safe = ceil_step(usage_stat / cfg.grow_at * (1.0 + 1e-9), cfg.step).min(cfg.max);
            if safe > v {
                t.record(Rule::NoRegrow, v, safe);
                v = safe;
            }
        }
        v
    }

    fn clamp<S: Steps>(&self, t: &mut Trace<S>, v: f64) -> f64 {
        let clamped = v.clamp(self.config.min, self.config.max);
        if clamped != v {
            t.record(Rule::Bounds, v, clamped);
        }
        clamped
    }

    /// The decision a trace makes; its texts are written when read ([`Explained`]).
    fn explain(&self, now: Timestamp, t: Trace<StepList>) -> Decision {
        let v = &t.verdict;
        let mut d = Decision::hold(now, self.knob(), t.current);
        d.action = v.action;
        d.target = v.target;
        d.raw = v.raw;
        d.statistic = v.statistic;
        let mut steps = SaidList::empty();
        for step in t.steps.0.iter().flatten() {
            steps.push(*step);
        }
        let said: Arc<dyn Explain> = Arc::new(Explained {
            role: self.role,
            resource: self.resource,
            config: Arc::clone(&self.config),
            trough_ms: self.trough_ms,
            trace: t.with_steps(steps),
        });
        for (n, step) in t.steps.0.iter().flatten().enumerate() {
            // At most MAX_STEPS (a handful): the index fits.
            let detail = Text::later(Arc::clone(&said), Part::Detail(n as u8));
            d.push_rule(rule(step.rule, step.before, step.after, detail));
        }
        d.summary = Text::later(said, Part::Summary);
        d
    }
}

/// What `decide` saw, kept to write the decision's texts when they are read: a policy decides
/// on every observation, and most of its decisions are never read (see [`Text`]).
#[derive(Debug)]
struct Explained {
    role: Role,
    resource: Resource,
    /// The policy's, shared.
    config: Arc<VerticalConfig>,
    trough_ms: i64,
    trace: Trace<SaidList>,
}

impl Explain for Explained {
    fn write(&self, part: Part, out: &mut String) {
        match part {
            Part::Summary => out.push_str(&self.summary()),
            Part::Detail(n) => {
                if let Some(step) = self.trace.steps.0.iter().flatten().nth(usize::from(n)) {
                    out.push_str(&self.detail(step));
                }
            }
        }
    }
}

impl Explained {
    /// `v` for people, written into the sentence it is part of.
    fn amount(&self, v: f64) -> Amount {
        Amount(self.resource, v)
    }

    fn bounds_detail(&self) -> String {
        bounds_detail(self.resource, &self.config)
    }

    /// What one rule saw.
    fn detail(&self, step: &Said) -> String {
        let cfg = &self.config;
        let t = &self.trace;
        let stat_name = cfg.statistic;
        let util = t.verdict.statistic.unwrap_or(f64::NAN);
        match step.rule {
            Rule::Band => format!(
                "{stat_name} {:.2} inside [{:.2}, {:.2}]",
                Fixed(util),
                Fixed(cfg.low),
                Fixed(cfg.high)
            ),
            Rule::UpWindow => format!(
                "above {:.2} for {} of {}",
                Fixed(cfg.grow_at),
                format_duration(t.held_for),
                format_duration(cfg.up_window)
            ),
            Rule::DownWindow => format!(
                "below {:.2} for {} of {}",
                Fixed(cfg.low),
                format_duration(t.held_for),
                format_duration(cfg.down_window)
            ),
            Rule::Cooldown => format!(
                "last change {} ago, cooldown {}",
                format_duration(t.since_change.unwrap_or_default()),
                format_duration(cfg.cooldown)
            ),
            Rule::Rounding => format!("rounded to the {} step", self.amount(cfg.step)),
            Rule::Bounds => self.bounds_detail(),
            Rule::StepLimit => format!("at most x{} per change", cfg.max_step_factor),
            Rule::NoRegrow => {
                format!(
                    "raised so that {stat_name} at the new size stays at or below grow_at {:.2}",
                    cfg.grow_at
                )
            }
            Rule::MissingData if !(t.current.is_finite() && t.current > 0.0) => {
                "the current size is unknown".to_string()
            }
            Rule::MissingData | Rule::StaleData => self.data_detail(),
            Rule::Forecast => self.forecast_detail(step.why),
            other => other.to_string(),
        }
    }

    /// "the same window (11:00-12:59 UTC) on the last 3 days peaked at 1.40 vCPU".
    fn seen_text(&self, seen: &Seen) -> String {
        format!(
            "the same window ({:02}:00-{:02}:59 UTC) {} peaked at {}",
            seen.hours.0,
            seen.hours.1,
            seen.days.describe(),
            self.amount(seen.peak)
        )
    }

    /// Why a change was reactive although the policy learns.
    fn irregular_text(&self, seen: &Seen) -> String {
        match seen.today {
            Some(today) => format!(
                "reactive: today's last hours (peak {}) differ from the days before (spread {:.2})",
                self.amount(today),
                seen.spread
            ),
            None => format!(
                "reactive: the days before disagree ({} to {}, spread {:.2})",
                self.amount(seen.least),
                self.amount(seen.peak),
                seen.spread
            ),
        }
    }

    fn forecast_detail(&self, why: Ahead) -> String {
        let t = &self.trace;
        let cfg = &self.config;
        let seen = match t.outlook {
            Some(Outlook::Learned(seen)) => Some(seen),
            _ => None,
        };
        match (why, t.ramp, seen) {
            (Ahead::Ramp, Some(r), _) => format!(
                "rising {}/h over the last {} (fit {:.2}): sized for the usage {} ahead, {}",
                self.amount(r.per_hour),
                format_duration(Duration::from_millis(r.span_ms.max(0) as u64)),
                r.fit,
                format_duration(cfg.ramp_horizon),
                self.amount(t.projected)
            ),
            (Ahead::Day, _, Some(seen)) => format!(
                "{} (least {}, spread {:.2}): sized so that peak is {:.2} of the size",
                self.seen_text(&seen),
                self.amount(seen.least),
                seen.spread,
                cfg.grow_at
            ),
            (Ahead::Trough, _, Some(seen)) => format!(
                "{} (least {}, spread {:.2}): no shrink below what that needs at {:.2}",
                self.seen_text(&seen),
                self.amount(seen.least),
                seen.spread,
                cfg.grow_at
            ),
            (Ahead::Kept, ..) => match t.kept {
                Some(k) => format!(
                    "grown to {} for a learned window: kept until {} UTC",
                    self.amount(k.size),
                    clock(k.until_ms)
                ),
                None => Rule::Forecast.to_string(),
            },
            _ => Rule::Forecast.to_string(),
        }
    }

    fn data_detail(&self) -> String {
        let t = &self.trace;
        let mut s = String::new();
        if t.missing > 0 {
            let _ = write!(s, "{} of {} members have no figure", t.missing, t.members);
        }
        if t.stale > 0 {
            if !s.is_empty() {
                s.push_str(", ");
            }
            let _ = write!(
                s,
                "{} of {} members' figures are older than {}",
                t.stale,
                t.members,
                format_duration(self.config.stale_after)
            );
        }
        if s.is_empty() && t.incomplete > 0 {
            let _ = write!(s, "{} samples in the window lacked a member", t.incomplete);
        }
        s.push_str(if t.usage.is_some() {
            "; no shrink on incomplete data"
        } else {
            "; hold"
        });
        s
    }

    fn summary(&self) -> String {
        let t = &self.trace;
        let cfg = &self.config;
        let v = &t.verdict;
        // Room for the usual summary, so the writes below do not grow it piecemeal.
        let mut name = String::with_capacity(96);
        let _ = write!(name, "{} {}", self.role, self.resource);
        let Some(util) = v.statistic else {
            if !(t.current.is_finite() && t.current > 0.0) {
                return format!("{name}: the current size is unknown: hold");
            }
            return format!(
                "{name}: no fresh figure ({} missing, {} stale of {}): hold {}",
                t.missing,
                t.stale,
                t.members,
                self.amount(t.current)
            );
        };
        let has = |r| v.rules.contains(r);
        // One string written in place: this runs for every policy on every observation.
        let mut s = name;
        let _ = write!(s, " {} {:.2} ", cfg.statistic, Fixed(util));
        let _ = if util > cfg.high {
            write!(s, "above high {:.2}", Fixed(cfg.high))
        } else if util > cfg.grow_at {
            write!(s, "above grow_at {:.2}", Fixed(cfg.grow_at))
        } else if util < cfg.low {
            write!(s, "below low {:.2}", Fixed(cfg.low))
        } else {
            write!(s, "inside [{:.2}, {:.2}]", Fixed(cfg.low), Fixed(cfg.high))
        };
        let learned = match t.outlook {
            Some(Outlook::Learned(seen)) => Some(seen),
            _ => None,
        };
        let forecast = |why| {
            t.steps
                .0
                .iter()
                .flatten()
                .any(|step| step.rule == Rule::Forecast && step.why == why)
        };
        if v.action != Action::Hold {
            match (t.ahead, learned) {
                (true, Some(seen)) => {
                    let _ = write!(
                        s,
                        ", but {}: {} {} -> {} ahead of it",
                        self.seen_text(&seen),
                        v.action,
                        self.amount(t.current),
                        self.amount(v.target)
                    );
                }
                _ => {
                    let _ = write!(
                        s,
                        " for {}: {} {} -> {}",
                        format_duration(t.held_for),
                        v.action,
                        self.amount(t.current),
                        self.amount(v.target)
                    );
                }
            }
            let mut notes = Vec::new();
            if let Some(raw) = v.raw {
                notes.push(format!("raw {}", self.amount(raw)));
            }
            if let (true, Some(r)) = (forecast(Ahead::Ramp), t.ramp) {
                notes.push(format!(
                    "sized for the ramp, {}/h, {} ahead: {}",
                    self.amount(r.per_hour),
                    format_duration(cfg.ramp_horizon),
                    self.amount(t.projected)
                ));
            }
            if let (false, true, Some(seen)) = (t.ahead, forecast(Ahead::Day), learned) {
                notes.push(format!("sized for {}", self.seen_text(&seen)));
            }
            if let (true, Some(seen)) = (forecast(Ahead::Trough), learned) {
                notes.push(format!("kept for {}", self.seen_text(&seen)));
            }
            if let (true, Some(k)) = (forecast(Ahead::Kept), t.kept) {
                notes.push(format!(
                    "kept at {} until {} UTC, the learned window it was grown for",
                    self.amount(k.size),
                    clock(k.until_ms)
                ));
            }
            if let Some(Outlook::Irregular(seen)) = t.outlook {
                notes.push(self.irregular_text(&seen));
            }
            if has(Rule::Rounding) {
                notes.push(format!("rounded to {} step", self.amount(cfg.step)));
            }
            if has(Rule::StepLimit) {
                notes.push(format!("limited to x{} per step", cfg.max_step_factor));
            }
            if has(Rule::Bounds) {
                notes.push(self.bounds_detail());
            }
            if has(Rule::NoRegrow) {
                notes.push("raised so it does not regrow".into());
            }
            if has(Rule::MissingData) || has(Rule::StaleData) {
                notes.push("on the members with data".into());
            }
            let _ = write!(s, " ({})", notes.join(", "));
            return s;
        }
        let why = if let (true, Some(k)) = (forecast(Ahead::Kept), t.kept) {
            format!(
                "for {}, but grown for a learned window: kept until {} UTC",
                format_duration(t.held_for),
                clock(k.until_ms)
            )
        } else if let (true, Some(seen)) = (forecast(Ahead::Trough), learned) {
            format!(
                "for {}, but {}: no shrink into a trough that ends within {}",
                format_duration(t.held_for),
                self.seen_text(&seen),
                format_duration(Duration::from_millis(self.trough_ms.max(0) as u64))
            )
        } else if let (true, Some(r)) = (forecast(Ahead::Ramp), t.ramp) {
            format!(
                "for {}, but rising {}/h: no shrink while the load climbs",
                format_duration(t.held_for),
                self.amount(r.per_hour)
            )
        } else if let (true, Some(seen)) = (t.ahead, learned) {
            format!(
                "but {}: a grow ahead of it waits for the cooldown ({} of {})",
                self.seen_text(&seen),
                format_duration(t.since_change.unwrap_or_default()),
                format_duration(cfg.cooldown)
            )
        } else if has(Rule::Cooldown) {
            format!(
                "in cooldown ({} of {})",
                format_duration(t.since_change.unwrap_or_default()),
                format_duration(cfg.cooldown)
            )
        } else if has(Rule::UpWindow) {
            format!(
                "for {} of up window {}",
                format_duration(t.held_for),
                format_duration(cfg.up_window)
            )
        } else if has(Rule::DownWindow) {
            format!(
                "for {} of down window {}",
                format_duration(t.held_for),
                format_duration(cfg.down_window)
            )
        } else if util < cfg.low
            && (has(Rule::MissingData) || has(Rule::StaleData) || t.incomplete > 0)
        {
            "but data is missing or stale: no shrink".to_string()
        } else if has(Rule::Bounds) {
            format!("but already at the bound ({})", self.bounds_detail())
        } else {
            String::new()
        };
        if !why.is_empty() {
            s.push(' ');
            s.push_str(&why);
        }
        let _ = write!(s, ": hold {}", self.amount(t.current));
        s
    }
}

#[cfg(test)]
mod tests {
    use steward_model::observation::Source;

    use super::*;
    use crate::config::PolicyConfig;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;

    /// The default database CPU config with the down window and step factor these tests were
    /// written around pinned (300 s, x2): they check the mechanics, not the defaults' values.
    fn cpu_config() -> VerticalConfig {
        let mut cfg = PolicyConfig::default().database.cpu;
        cfg.down_window = Duration::from_secs(300);
        cfg.max_step_factor = 2.0;
        cfg
    }

    fn cpu() -> VerticalPolicy {
        VerticalPolicy::new(Role::Database, Resource::Cpu, cpu_config())
    }

    fn fig(v: f64, at: Timestamp) -> Option<Figure> {
        Some(Figure::new(v, Source::Recorded, at))
    }

    /// Feeds `usage` (one member) every 15 s from `from` for `secs`, returning the last decision.
    fn feed(p: &mut VerticalPolicy, from: i64, secs: i64, usage: f64, current: f64) -> Decision {
        let mut last = None;
        let mut s = from;
        while s <= from + secs {
            let now = Timestamp::from_secs(s);
            last = Some(p.decide(now, &[fig(usage, now)], current));
            s += 15;
        }
        last.unwrap()
    }

    #[test]
    fn inside_the_band_nothing_happens() {
        let mut p = cpu();
        let d = feed(&mut p, 0, 3600, 1.3, 2.0); // 0.65 of 2 vCPU
        assert_eq!(d.action, Action::Hold);
        assert!(d.has_rule(Rule::Band), "{d:?}");
        assert!(
            d.summary.as_str().contains("inside [0.50, 0.80]"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn grow_waits_for_the_up_window_then_sizes_to_target() {
        let mut p = cpu();
        // 1.82 vCPU of 2 = 0.91 > 0.80; the up window is 3 min.
        let d = feed(&mut p, 0, 165, 1.82, 2.0);
        assert_eq!(d.action, Action::Hold);
        assert!(d.has_rule(Rule::UpWindow), "{d:?}");
        let d = p.decide(
            Timestamp::from_secs(180),
            &[fig(1.82, Timestamp::from_secs(180))],
            2.0,
        );
        assert_eq!(d.action, Action::Grow, "{d:?}");
        // raw = 1.82 / 0.65 = 2.8, rounded up to the 0.5 step: 3.0.
        assert!((d.raw.unwrap() - 2.8).abs() < 1e-9);
        assert_eq!(d.target, 3.0);
        assert!(d.has_rule(Rule::Rounding));
        assert_eq!(
            d.summary,
            "database cpu p95 0.91 above high 0.80 for 3m: grow 2.00 vCPU -> 3.00 vCPU \
             (raw 2.80 vCPU, rounded to 0.50 vCPU step)"
        );
    }

    /// A coarse sample (a 5-minute CloudWatch average) stands for the interval since the one
    /// before it: one such sample above high is 5 minutes of evidence, more than the up window.
    #[test]
    fn a_sample_stands_for_the_interval_since_the_previous_one() {
        let mut p = cpu();
        let t0 = Timestamp::from_secs(0);
        let t1 = Timestamp::from_secs(300);
        assert_eq!(p.decide(t0, &[fig(1.0, t0)], 2.0).action, Action::Hold);
        let d = p.decide(t1, &[fig(1.82, t1)], 2.0);
        assert_eq!(d.action, Action::Grow, "{d:?}");

        // After a gap longer than a sample can vouch for, only the instant counts.
        let mut p = cpu();
        let t1 = Timestamp::from_secs(301 + 300);
        assert_eq!(p.decide(t0, &[fig(1.0, t0)], 2.0).action, Action::Hold);
        let d = p.decide(t1, &[fig(1.82, t1)], 2.0);
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::UpWindow), "{d:?}");
    }

    #[test]
    fn shrink_waits_for_the_longer_down_window_and_rounds_up() {
        let mut p = cpu();
        // 0.9 of 4 vCPU = 0.225: raw 0.9 / 0.65 = 1.38 -> 1.5 (step 0.5, rounded UP).
        let d = feed(&mut p, 0, 285, 0.9, 4.0);
        assert!(d.has_rule(Rule::DownWindow), "{d:?}");
        let d = feed(&mut p, 300, 0, 0.9, 4.0);
        assert_eq!(d.action, Action::Shrink, "{d:?}");
        // Limited to halving per step: 4 / 2 = 2.0.
        assert_eq!(d.target, 2.0);
        assert!(d.has_rule(Rule::StepLimit));
    }

    #[test]
    fn a_shrink_rounds_up_not_down() {
        let mut p = cpu();
        // 0.9 of 2 vCPU = 0.45 < 0.5; raw 1.385 -> 1.5, not 1.0.
        let d = feed(&mut p, 0, 300, 0.9, 2.0);
        assert_eq!((d.action, d.target), (Action::Shrink, 1.5), "{d:?}");
        assert!(0.9 / d.target < p.config().high);
    }

    #[test]
    fn bounds_clamp_and_block_at_max() {
        let mut p = cpu();
        let d = feed(&mut p, 0, 180, 15.9, 16.0);
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::Bounds));
        assert!(
            d.summary.as_str().contains("already at the bound"),
            "{}",
            d.summary
        );
        let mut cfg = cpu_config();
        cfg.min = 1.5;
        let mut p = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg);
        // raw 0.15, halved-at-most 1.0, then up to min 1.5.
        let d = feed(&mut p, 0, 300, 0.1, 2.0);
        assert_eq!((d.action, d.target), (Action::Shrink, 1.5), "{d:?}");
        assert!(d.has_rule(Rule::Bounds));
    }

    #[test]
    fn a_grow_is_limited_by_the_step_factor() {
        let mut p = cpu();
        let d = feed(&mut p, 0, 180, 1.99, 1.0);
        // raw 3.06, limited to 2.0.
        assert_eq!((d.action, d.target), (Action::Grow, 2.0), "{d:?}");
        assert!(d.has_rule(Rule::StepLimit));
    }

    #[test]
    fn no_regrow_guards_even_a_hand_built_config() {
        // `validate` keeps target < grow_at, and rounding goes up, so with a validated config a
        // shrink never lands above grow_at by construction; the guard still holds if someone
        // builds the config by hand with target above high (and grow_at).
        let mut cfg = cpu_config();
        cfg.target = 0.9;
        cfg.grow_at = cfg.high;
        cfg.max_step_factor = 4.0;
        let mut p = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg);
        // 1.8 of 8 = 0.225: raw 1.8 / 0.9 = 2.0, where p95 would be 0.9 > 0.8: raised to 2.5.
        let d = feed(&mut p, 0, 300, 1.8, 8.0);
        assert_eq!((d.action, d.target), (Action::Shrink, 2.5), "{d:?}");
        assert!(d.has_rule(Rule::NoRegrow), "{d:?}");
        assert!(
            d.summary.as_str().contains("does not regrow"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn cooldown_blocks_after_a_change_and_windows_restart() {
        let mut p = cpu();
        let d = feed(&mut p, 0, 180, 1.82, 2.0);
        assert_eq!(d.action, Action::Grow);
        p.record_change(Timestamp::from_secs(180), 3.0);
        // Still hot at 3 vCPU (2.9 / 3 = 0.97): the up window restarts, then the cooldown holds.
        let d = feed(&mut p, 195, 180, 2.9, 3.0);
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::Cooldown), "{d:?}");
        assert!(d.summary.as_str().contains("in cooldown"), "{}", d.summary);
        let d = feed(&mut p, 390, 90, 2.9, 3.0);
        assert_eq!(d.action, Action::Grow, "{d:?}");
    }

    #[test]
    fn missing_data_holds_and_never_shrinks() {
        let mut p = cpu();
        let mut last = None;
        for s in (0..=600).step_by(15) {
            let now = Timestamp::from_secs(s);
            last = Some(p.decide(now, &[fig(0.1, now), None], 4.0));
        }
        let d = last.unwrap();
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::MissingData));
        assert!(d.summary.as_str().contains("no shrink"), "{}", d.summary);
        // Nothing at all: hold with no statistic.
        let d = p.decide(Timestamp::from_secs(700), &[None, None], 4.0);
        assert_eq!((d.action, d.statistic), (Action::Hold, None));
        assert!(
            d.summary.as_str().contains("no fresh figure"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn a_grow_on_the_members_present_is_allowed() {
        let mut p = cpu();
        let mut last = None;
        for s in (0..=180).step_by(15) {
            let now = Timestamp::from_secs(s);
            last = Some(p.decide(now, &[fig(1.9, now), None], 2.0));
        }
        let d = last.unwrap();
        assert_eq!(d.action, Action::Grow, "{d:?}");
        assert!(d.has_rule(Rule::MissingData));
    }

    #[test]
    fn stale_figures_count_as_absent() {
        let mut p = cpu();
        let mut last = None;
        for s in (0..=600).step_by(15) {
            let now = Timestamp::from_secs(s);
            // The second member's figure stopped at t = 0.
            last = Some(p.decide(
                now,
                &[fig(0.1, now), fig(0.1, Timestamp::from_secs(0))],
                4.0,
            ));
        }
        let d = last.unwrap();
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::StaleData));
    }

    #[test]
    fn the_busiest_member_decides() {
        let mut p = cpu();
        let mut last = None;
        for s in (0..=180).step_by(15) {
            let now = Timestamp::from_secs(s);
            last = Some(p.decide(now, &[fig(0.2, now), fig(1.9, now), fig(0.4, now)], 2.0));
        }
        assert_eq!(last.unwrap().action, Action::Grow);
    }

    #[test]
    fn a_burst_shorter_than_up_window_minus_window_never_grows() {
        let mut p = cpu();
        feed(&mut p, 0, 600, 1.3, 2.0);
        // 45 s of 0.98 (4 samples), then back to 0.65: the statistic stays above high for
        // 45 s + the 2 min window < the 3 min up window.
        for s in (615..=1800).step_by(15) {
            let now = Timestamp::from_secs(s);
            let u = if s < 660 { 1.96 } else { 1.3 };
            let d = p.decide(now, &[fig(u, now)], 2.0);
            assert_eq!(d.action, Action::Hold, "at {s} s: {d:?}");
        }
        // The same burst lasting 2 min does grow.
        let mut grew = false;
        for s in (1815..=2400).step_by(15) {
            let now = Timestamp::from_secs(s);
            let u = if s < 1935 { 1.96 } else { 1.3 };
            grew |= p.decide(now, &[fig(u, now)], 2.0).action == Action::Grow;
        }
        assert!(grew);
    }

    #[test]
    fn tick_and_decide_agree() {
        let mut a = cpu();
        let mut b = cpu();
        for s in (0..3600).step_by(15) {
            let now = Timestamp::from_secs(s);
            let u = 1.0 + ((s / 300) % 3) as f64 * 0.5;
            let v = a.tick(now, &[fig(u, now)], 2.0);
            let d = b.decide(now, &[fig(u, now)], 2.0);
            assert_eq!(
                (v.action, v.target, v.statistic, v.raw),
                (d.action, d.target, d.statistic, d.raw)
            );
            for r in &d.rules {
                assert!(v.rules.contains(r.rule));
            }
        }
    }

    #[test]
    fn oom_grows_memory_at_once_even_in_cooldown() {
        let cfg = PolicyConfig::default();
        let mut p = VerticalPolicy::new(
            Role::Database,
            Resource::Memory,
            cfg.database.memory.clone(),
        )
        .with_oom(cfg.database.oom.clone());
        p.record_change(Timestamp::from_secs(0), 2.0 * GIB);
        let d = p.record_oom(Timestamp::from_secs(10), 2.0 * GIB);
        // x1.2 = 2.4 GiB vs +256 MiB = 2.25 GiB: 2.4 GiB, rounded up to 256 MiB: 2.5 GiB.
        assert_eq!((d.action, d.target), (Action::Grow, 2.5 * GIB), "{d:?}");
        assert!(d.has_rule(Rule::OomEmergency));
        // Small limit: +256 MiB wins over x1.2.
        let d = p.record_oom(Timestamp::from_secs(10), 1.0 * GIB);
        assert_eq!(d.target, 1.0 * GIB + 256.0 * MIB);
        // At max: hold, loudly.
        let d = p.record_oom(Timestamp::from_secs(10), 64.0 * GIB);
        assert_eq!(d.action, Action::Hold);
        assert!(
            d.summary.as_str().contains("OOM KILL AT MAX"),
            "{}",
            d.summary
        );
        // CPU: not concerned.
        let d = cpu().record_oom(Timestamp::from_secs(10), 2.0);
        assert_eq!(d.action, Action::Hold);
        assert!(
            d.summary.as_str().contains("concerns memory"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn an_unknown_size_holds() {
        let mut p = cpu();
        let now = Timestamp::from_secs(0);
        let d = p.decide(now, &[fig(1.0, now)], f64::NAN);
        assert_eq!(d.action, Action::Hold);
        assert!(d.has_rule(Rule::MissingData));
        assert!(
            d.summary.as_str().contains("size is unknown"),
            "{}",
            d.summary
        );
        let d = p.decide(now, &[], 2.0);
        assert_eq!(d.action, Action::Hold);
        assert!(
            d.has_rule(Rule::MissingData),
            "no member at all is missing data: {d:?}"
        );
    }

    // -----------------------------------------------------------------------------------------
    // What comes next (issue 17): grow_at, the ramp, the learned day.
    // -----------------------------------------------------------------------------------------

    /// Monday 2026-01-05 00:00 UTC, in seconds.
    const MONDAY: i64 = 1_767_571_200;

    /// Replays `usage(day, minute of the day)` every 5 minutes for `days` days from `size`,
    /// applying every change; returns each decision with its day and minute.
    fn replay(
        cfg: VerticalConfig,
        size: f64,
        days: i64,
        usage: impl Fn(i64, i64) -> f64,
    ) -> Vec<(i64, i64, f64, Decision)> {
        let mut p = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg);
        let mut size = size;
        let mut out = Vec::new();
        for i in 0..days * 288 {
            let (day, minute) = (i / 288, i % 288 * 5);
            let now = Timestamp::from_secs(MONDAY + i * 300);
            let u = usage(day, minute);
            let d = p.decide(now, &[fig(u, now)], size);
            let at = size;
            if d.changes() {
                size = d.target;
                p.record_change(now, size);
            }
            out.push((day, minute, u / at, d));
        }
        out
    }

    /// A working day: 0.3 vCPU at night, a ramp from 08:00 to 12:00 up to 1.5 vCPU, held until
    /// 16:00, down to 0.3 by 17:00.
    fn working_day(minute: i64) -> f64 {
        let h = minute as f64 / 60.0;
        match h {
            h if h < 8.0 => 0.3,
            h if h < 12.0 => 0.3 + (h - 8.0) * 0.3,
            h if h < 16.0 => 1.5,
            h if h < 17.0 => 1.5 - (h - 16.0) * 1.2,
            _ => 0.3,
        }
    }

    fn ahead(d: &Decision) -> bool {
        d.rules
            .iter()
            .any(|r| r.rule == Rule::Forecast && r.detail.as_str().contains("sized so that peak"))
    }

    #[test]
    fn a_load_between_grow_at_and_high_grows_before_it_passes_high() {
        let mut p = cpu();
        assert!(p.config().grow_at < p.config().high);
        // 1.5 of 2 vCPU = 0.75: inside the band, above grow_at 0.70.
        let d = feed(&mut p, 0, 180, 1.5, 2.0);
        assert_eq!((d.action, d.target), (Action::Grow, 2.5), "{d:?}");
        assert!(
            d.summary.as_str().contains("above grow_at 0.70 for 3m"),
            "{}",
            d.summary
        );
        // With grow_at = high, as before issue 17: nothing.
        let mut cfg = cpu_config();
        cfg.grow_at = cfg.high;
        let mut p = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg);
        assert_eq!(feed(&mut p, 0, 600, 1.5, 2.0).action, Action::Hold);
    }

    #[test]
    fn a_day_that_repeats_is_grown_ahead_of_its_ramp_from_day_4_not_on_day_1() {
        let decisions = replay(cpu_config(), 1.0, 5, |_, m| working_day(m));
        // Day 1 (Monday) knows nothing: every grow is reactive, once above grow_at.
        let monday: Vec<_> = decisions.iter().filter(|(day, ..)| *day == 0).collect();
        let grows: Vec<_> = monday
            .iter()
            .filter(|(.., d)| d.action == Action::Grow)
            .collect();
        assert!(!grows.is_empty(), "the ramp grows the size on Monday");
        for (_, minute, util, d) in &grows {
            assert!(!ahead(d), "at {minute}: {}", d.summary);
            assert!(*util > 0.70, "at {minute}: {util}");
        }
        // Day 4 (Thursday) has three days like it behind: the first grow comes at 08:00, ahead
        // of the ramp, sized for the peak those days reached in the window it opens (08:00 to
        // 10:59: 1.18 vCPU, at grow_at 0.70: 1.68 -> 2.0), and no sample is above high all day.
        let thursday: Vec<_> = decisions.iter().filter(|(day, ..)| *day == 3).collect();
        let (_, minute, util, d) = thursday
            .iter()
            .find(|(.., d)| d.action == Action::Grow)
            .unwrap();
        assert!(ahead(d), "{}", d.summary);
        assert!((*minute, *util) == (8 * 60, 0.3), "at {minute}: {util}");
        assert!(
            d.summary.as_str().contains(
                "the same window (08:00-10:59 UTC) on the last 3 days peaked at 1.18 vCPU: \
                 grow 1.00 vCPU -> 2.00 vCPU ahead of it"
            ),
            "{}",
            d.summary
        );
        let hot: Vec<_> = thursday.iter().filter(|(_, _, u, _)| *u > 0.8).collect();
        assert!(hot.is_empty(), "above high on Thursday: {hot:?}");
        let monday_hot = monday.iter().filter(|(_, _, u, _)| *u > 0.7).count();
        assert!(monday_hot > 0, "Monday's grows wait for grow_at");
    }

    #[test]
    fn no_shrink_into_a_trough_that_the_days_before_say_ends_soon() {
        // Busy 08:00-10:00 and 11:30-15:00, a 90-minute trough between: longer than the down
        // window, so a reactive policy shrinks in it and grows back when it ends.
        let usage = |_: i64, minute: i64| match minute {
            m if (8 * 60..10 * 60).contains(&m) => 1.5,
            m if (11 * 60 + 30..15 * 60).contains(&m) => 1.5,
            _ => 0.3,
        };
        let trough = |m: &i64| (10 * 60..11 * 60 + 30).contains(m);
        let decisions = replay(cpu_config(), 1.0, 5, usage);
        let shrinks_in_trough = |day| {
            decisions
                .iter()
                .filter(|(d, m, _, dec)| *d == day && trough(m) && dec.action == Action::Shrink)
                .count()
        };
        assert!(shrinks_in_trough(0) >= 1, "Monday shrinks into the trough");
        assert_eq!(shrinks_in_trough(4), 0, "Friday knows the trough ends soon");
        let held = decisions
            .iter()
            .find(|(d, m, _, dec)| *d == 4 && trough(m) && dec.has_rule(Rule::Forecast))
            .map(|(.., dec)| dec.summary.clone())
            .unwrap_or_default();
        assert!(
            held.as_str()
                .contains("no shrink into a trough that ends within 2h")
                && held
                    .as_str()
                    .contains("the same window (10:00-12:59 UTC) on the last 3 days"),
            "{held}"
        );
    }

    #[test]
    fn an_irregular_history_is_reactive_and_says_so() {
        // Quiet and busy days alternate: the last 3 days never agree.
        let usage = |day: i64, minute: i64| {
            let busy = if day % 2 == 0 { 2.0 } else { 1.0 };
            working_day(minute) * busy
        };
        let decisions = replay(cpu_config(), 1.0, 6, usage);
        assert!(decisions.iter().all(|(.., d)| !ahead(d)));
        let reactive = decisions
            .iter()
            .filter(|(day, ..)| *day >= 3)
            .find(|(.., d)| d.changes() && d.summary.as_str().contains("reactive:"));
        assert!(reactive.is_some(), "no change explains that it is reactive");
    }

    #[test]
    fn a_grow_during_a_ramp_is_sized_for_the_ramp() {
        // 1.2 vCPU an hour, from 0.3 vCPU on 1 vCPU.
        let ramp = |_: i64, minute: i64| 0.3 + 1.2 * minute as f64 / 60.0;
        let first_grow = |cfg: VerticalConfig| {
            replay(cfg, 1.0, 1, ramp)
                .into_iter()
                .find(|(.., d)| d.action == Action::Grow)
                .map(|(.., d)| d)
                .unwrap()
        };
        let d = first_grow(cpu_config());
        // At 0.71 vCPU: this instant asks for 0.71 / 0.65 = 1.1 -> 1.5; 30 minutes on, the ramp
        // is at 1.31 vCPU, which at grow_at 0.70 needs 1.87 -> 2.0.
        assert_eq!(d.target, 2.0, "{}", d.summary);
        assert!(
            d.summary.as_str().contains("sized for the ramp"),
            "{}",
            d.summary
        );
        let rule = d.rules.iter().find(|r| r.rule == Rule::Forecast).unwrap();
        assert!(
            rule.detail.as_str().starts_with("rising 1.20 vCPU/h"),
            "{}",
            rule.detail
        );
        let mut cfg = cpu_config();
        cfg.ramp_horizon = Duration::ZERO;
        assert_eq!(first_grow(cfg).target, 1.5);
    }

    #[test]
    fn tick_and_decide_agree_over_learned_days() {
        let mut a = cpu();
        let mut b = cpu();
        let (mut size_a, mut size_b) = (1.0, 1.0);
        for i in 0..6 * 288 {
            let now = Timestamp::from_secs(MONDAY + i * 300);
            let u = working_day(i % 288 * 5) * (1.0 + 0.05 * ((i * 7) % 5) as f64);
            let v = a.tick(now, &[fig(u, now)], size_a);
            let d = b.decide(now, &[fig(u, now)], size_b);
            assert_eq!(
                (v.action, v.target, v.statistic, v.raw),
                (d.action, d.target, d.statistic, d.raw),
                "at {i}: {}",
                d.summary
            );
            for r in &d.rules {
                assert!(v.rules.contains(r.rule));
            }
            if v.action != Action::Hold {
                (size_a, size_b) = (v.target, d.target);
                a.record_change(now, size_a);
                b.record_change(now, size_b);
            }
        }
    }

    #[test]
    fn the_learned_state_stays_small() {
        use crate::seasonal::{Profile, Trend};
        // Per knob, whatever the history: the hourly peaks of 8 days and the last hour's trend.
        let learned = std::mem::size_of::<Profile>() + std::mem::size_of::<Trend>();
        assert!(learned <= 480, "{learned} bytes");
        // A policy that does not learn keeps no profile; one that learns makes it with its
        // first complete sample.
        let mut cfg = cpu_config();
        cfg.learn = false;
        let at = Timestamp::from_secs(1_800_000_000);
        let sample = [Some(Figure::new(1.0, Source::Prometheus, at))];
        let mut off = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg);
        off.decide(at, &sample, 2.0);
        assert!(off.profile.is_none());
        let mut on = cpu();
        assert!(on.profile.is_none());
        on.decide(at, &sample, 2.0);
        assert!(on.profile.is_some());
    }
}
