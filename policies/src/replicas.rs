//! The replica-count policy: how many database members the cluster should have.
//!
//! What it is (DESIGN.md 4): driven by database signals, not a pod average: the capacity
//! replicas' mean CPU utilization, connections per capacity member and (if configured) read rate
//! per capacity replica, each with a band. Any signal above its `scale_out_at` (`high` for
//! connections and read rate, halfway from the band's middle to `high` for CPU) for `up_window`:
//! add one member; every signal below its `low` for `down_window`: remove one. One member at a time, never
//! below the HA minimum (`min_members`, primary included) or above `max_members`, a cooldown after
//! each change. A replica that lags more than `max_lag_bytes` or is not streaming serves stale or
//! no reads, so it is not counted as capacity. On scale-in it picks the replica that matters least:
//! not a synchronous standby if avoidable, then the most lagging, then the newest; never the
//! leader (nor a standby leader).
//!
//! Missing or stale figures, an unknown leader or an unknown lag: hold, never shrink; a scale-out
//! on the signals present is allowed. A scale-in must also not land where the same load would
//! scale out again (the load of the removed capacity member spreads over the others).
//!
//! What it is not: an actuator. The caller adds or removes the member and calls
//! [`ReplicaPolicy::record_change`].

use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use steward_model::decision::Knob;
use steward_model::observation::{Figure, Freshness, MemberObservation, Observation, PatroniRole};
use steward_model::size::Bytes;
use steward_model::{Action, Decision, Explain, Fixed, Part, Role, Rule, Text, Timestamp};

use crate::config::{Band, ReplicaConfig};
use crate::rules::rule;

/// A replica-count decision, and which replica to remove on scale-in.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaDecision {
    /// Knob [`Knob::Replicas`]; `current` and `target` are member counts (primary included).
    pub decision: Decision,
    /// On a scale-in, the member to remove (never the leader).
    pub remove: Option<String>,
}

/// The replica-count policy of one cluster.
#[derive(Clone, Debug)]
pub struct ReplicaPolicy {
    config: ReplicaConfig,
    above_since: Option<Timestamp>,
    below_since: Option<Timestamp>,
    last_change: Option<Timestamp>,
}

/// One signal's value and what it is averaged over.
#[derive(Clone, Copy, Debug)]
struct Signal {
    name: &'static str,
    band: Band,
    /// Per capacity member (or replica); `None` when no member had data.
    value: Option<f64>,
    /// How many capacity members (or replicas) the value is averaged over.
    per: usize,
}

/// The figures a decision lacked, by name.
#[derive(Default)]
struct Gaps {
    missing: Vec<&'static str>,
    stale: Vec<&'static str>,
}

impl Gaps {
    /// Records the missing-data and stale-data rules (sorted, each name once); whether nothing
    /// was missing or stale.
    fn record(self, d: &mut Decision, current: f64, stale_after: Duration) -> bool {
        let Gaps {
            mut missing,
            mut stale,
        } = self;
        missing.sort_unstable();
        missing.dedup();
        stale.sort_unstable();
        stale.dedup();
        if !missing.is_empty() {
            d.push_rule(rule(
                Rule::MissingData,
                current,
                current,
                format!("missing: {}", missing.join(", ")),
            ));
        }
        if !stale.is_empty() {
            d.push_rule(rule(
                Rule::StaleData,
                current,
                current,
                format!(
                    "older than {}: {}",
                    format_duration(stale_after),
                    stale.join(", ")
                ),
            ));
        }
        missing.is_empty() && stale.is_empty()
    }

    fn see(&mut self, name: &'static str, f: Freshness) -> Option<f64> {
        match f {
            Freshness::Fresh(v) => Some(v),
            Freshness::Stale { .. } => {
                self.stale.push(name);
                None
            }
            Freshness::Missing => {
                self.missing.push(name);
                None
            }
        }
    }
}

fn is_leader(m: &MemberObservation) -> bool {
    matches!(
        m.patroni_role,
        Some(PatroniRole::Leader | PatroniRole::StandbyLeader)
    )
}

impl ReplicaPolicy {
    pub fn new(config: ReplicaConfig) -> Self {
        ReplicaPolicy {
            config,
            above_since: None,
            below_since: None,
            last_change: None,
        }
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The change was applied: starts the cooldown and restarts both windows.
    pub fn record_change(&mut self, now: Timestamp, _new_count: u32) {
        self.last_change = Some(now);
        self.above_since = None;
        self.below_since = None;
    }

    /// One decision, in named steps: [`Self::assess`] the members and signals (what is capacity,
    /// what is missing or stale, where each signal stands against its band), then [`Self::grow`]
    /// (below the HA minimum, or a signal above `high`), [`Self::hold_in_band`], or
    /// [`Self::shrink`] (every signal below `low`).
    pub fn decide(&mut self, now: Timestamp, observation: &Observation) -> ReplicaDecision {
        let members: Vec<&MemberObservation> = observation.members_of(Role::Database).collect();
        let current = members.len() as f64;
        let mut d = Decision::hold(now, Knob::Replicas, current);
        if members.is_empty() {
            d.push_rule(rule(
                Rule::MissingData,
                current,
                current,
                "no database member observed",
            ));
            d.summary = "database replicas: no database member observed: hold".into();
            return keep_all(d);
        }
        let a = self.assess(now, members, &mut d);
        // The HA minimum comes first: below it, add a member whatever the load says.
        let under_min = a.count < self.config.min_members as usize;
        if under_min || !a.above.is_empty() {
            return keep_all(self.grow(now, &a, under_min, d));
        }
        if !a.below {
            return keep_all(hold_in_band(&a, d));
        }
        self.shrink(now, &a, d)
    }

    /// What the members and signals say, with the missing-data, stale-data and not-capacity
    /// rules recorded in `d`; moves the up and down windows.
    fn assess<'a>(
        &mut self,
        now: Timestamp,
        members: Vec<&'a MemberObservation>,
        d: &mut Decision,
    ) -> Assessment<'a> {
        let cfg = &self.config;
        let count = members.len();
        let current = count as f64;
        let fresh = |f: &Option<Figure>| Figure::freshness(f.as_ref(), now, cfg.stale_after);
        let leader = members.iter().find(|m| is_leader(m)).copied();
        let mut gaps = Gaps::default();
        // Which replicas are capacity.
        let mut capacity: Vec<&MemberObservation> = Vec::with_capacity(count);
        let mut not_capacity: Vec<String> = Vec::new();
        for m in members.iter().filter(|m| !is_leader(m)) {
            if m.streaming == Some(false) {
                not_capacity.push(format!("{} (not streaming)", m.name));
                continue;
            }
            match gaps.see("lag", fresh(&m.lag_bytes)) {
                Some(lag) if lag > cfg.max_lag_bytes => {
                    not_capacity.push(format!("{} (lag {})", m.name, Bytes(lag)));
                }
                // Unknown lag: counted (optimistic for a scale-out), but it blocks a scale-in.
                _ => capacity.push(m),
            }
        }
        if !not_capacity.is_empty() {
            d.push_rule(rule(
                Rule::NotCapacity,
                current,
                current,
                format!("not counted as capacity: {}", not_capacity.join(", ")),
            ));
        }
        let capacity_members = capacity.len() + usize::from(leader.is_some());

        // The signals.
        let mut cpu_sum = 0.0;
        let mut cpu_n = 0usize;
        for m in &capacity {
            let used = gaps.see("cpu", fresh(&m.cpu_used));
            let size = m.size.map(|s| s.cpus).filter(|c| *c > 0.0);
            if size.is_none() {
                gaps.missing.push("size");
            }
            if let (Some(u), Some(s)) = (used, size) {
                cpu_sum += u / s;
                cpu_n += 1;
            }
        }
        // Room for every signal at once: this runs on every observation.
        let mut signals = Vec::with_capacity(3);
        signals.push(Signal {
            name: "replica cpu",
            band: cfg.cpu,
            value: (cpu_n > 0).then(|| cpu_sum / cpu_n as f64),
            per: capacity.len(),
        });
        if let Some(band) = cfg.connections {
            let mut sum = 0.0;
            let mut any = false;
            for m in &members {
                if let Some(v) = gaps.see("connections", fresh(&m.connections)) {
                    sum += v;
                    any = true;
                }
            }
            signals.push(Signal {
                name: "connections/member",
                band,
                value: (any && capacity_members > 0).then(|| sum / capacity_members as f64),
                per: capacity_members,
            });
        }
        if let Some(band) = cfg.read_rate {
            let mut sum = 0.0;
            let mut any = false;
            for m in members.iter().filter(|m| !is_leader(m)) {
                if let Some(v) = gaps.see("read_rate", fresh(&m.read_rate)) {
                    sum += v;
                    any = true;
                }
            }
            signals.push(Signal {
                name: "read rate/replica",
                band,
                value: (any && !capacity.is_empty()).then(|| sum / capacity.len() as f64),
                per: capacity.len(),
            });
        }
        if leader.is_none() {
            gaps.missing.push("leader");
        }
        let gaps_complete = gaps.record(d, current, cfg.stale_after);
        let complete = gaps_complete && signals.iter().all(|s| s.value.is_some());
        d.statistic = signals[0].value;

        let mut state = State {
            count,
            capacity: capacity.len(),
            signals: [None; 3],
        };
        for (slot, s) in state.signals.iter_mut().zip(&signals) {
            *slot = Some((s.name, s.value));
        }

        let above: Vec<Signal> = signals
            .iter()
            .filter(|s| s.value.is_some_and(|v| v > s.band.scale_out_at))
            .copied()
            .collect();
        let all_below = signals
            .iter()
            .all(|s| s.value.is_some_and(|v| v < s.band.low));
        let below = all_below && above.is_empty();
        self.above_since = if !above.is_empty() {
            Some(self.above_since.unwrap_or(now))
        } else {
            None
        };
        self.below_since = if below && complete {
            Some(self.below_since.unwrap_or(now))
        } else {
            None
        };
        Assessment {
            members,
            count,
            current,
            capacity,
            signals,
            complete,
            state,
            above,
            all_below,
            below,
        }
    }

    /// How long ago the last change was, while that is inside the cooldown.
    fn in_cooldown(&self, now: Timestamp) -> Option<Duration> {
        self.last_change
            .map(|t| now.since(t))
            .filter(|e| *e < self.config.cooldown)
    }

    fn cooldown_rule(&self, d: &mut Decision, raw: f64, elapsed: Duration) {
        d.push_rule(rule(
            Rule::Cooldown,
            raw,
            d.current,
            format!(
                "last change {} ago, cooldown {}",
                format_duration(elapsed),
                format_duration(self.config.cooldown)
            ),
        ));
    }

    /// Below the HA minimum, or a signal above `scale_out_at`: one member more, once the up window has
    /// passed (the minimum does not wait for it), outside the cooldown, within `max_members`.
    fn grow(
        &self,
        now: Timestamp,
        a: &Assessment<'_>,
        under_min: bool,
        mut d: Decision,
    ) -> Decision {
        let cfg = &self.config;
        let (count, current, state) = (a.count, a.current, &a.state);
        let raw = if under_min {
            cfg.min_members as f64
        } else {
            a.needed().max(current + 1.0)
        };
        d.raw = Some(raw);
        let why = if under_min {
            d.push_rule(rule(
                Rule::HaMinimum,
                current,
                cfg.min_members as f64,
                format!("{count} members, HA minimum {}", cfg.min_members),
            ));
            format!("below the HA minimum {}", cfg.min_members)
        } else {
            let held = self.above_since.map_or(Duration::ZERO, |s| now.since(s));
            let names: Vec<String> = a
                .above
                .iter()
                .map(|s| format!("{} above {:.2}", s.name, Fixed(s.band.scale_out_at)))
                .collect();
            if held < cfg.up_window {
                d.push_rule(rule(
                    Rule::UpWindow,
                    raw,
                    current,
                    format!(
                        "{} for {} of {}",
                        names.join(", "),
                        format_duration(held),
                        format_duration(cfg.up_window)
                    ),
                ));
                d.summary = format!(
                    "{state}: {} for {}: hold {count}",
                    names.join(", "),
                    format_duration(held)
                )
                .into();
                return d;
            }
            format!("{} for {}", names.join(", "), format_duration(held))
        };
        if let Some(e) = self.in_cooldown(now) {
            self.cooldown_rule(&mut d, raw, e);
            d.summary = format!(
                "{state}: {why}, but in cooldown ({}): hold {count}",
                format_duration(e)
            )
            .into();
            return d;
        }
        let mut target = raw;
        if target > current + 1.0 {
            d.push_rule(rule(
                Rule::StepLimit,
                target,
                current + 1.0,
                "one member at a time",
            ));
            target = current + 1.0;
        }
        if target > cfg.max_members as f64 {
            d.push_rule(rule(
                Rule::Bounds,
                target,
                cfg.max_members as f64,
                format!("at most {} members", cfg.max_members),
            ));
            target = cfg.max_members as f64;
        }
        if target <= current {
            d.summary = format!(
                "{state}: {why}, but already at max {} members: hold {count}",
                cfg.max_members
            )
            .into();
            return d;
        }
        d.action = Action::Grow;
        d.target = target;
        d.summary = format!("{state}: {why}: add one member, {count} -> {target}").into();
        d
    }

    /// Every signal below `low`: one member less (the one that matters least), once the data is
    /// complete and the down window has passed, outside the cooldown, never below the HA minimum,
    /// and not where the same load would scale out again.
    fn shrink(&self, now: Timestamp, a: &Assessment<'_>, mut d: Decision) -> ReplicaDecision {
        let cfg = &self.config;
        let (count, current, state) = (a.count, a.current, &a.state);
        let raw = a.needed().min(current - 1.0);
        d.raw = Some(raw);
        if !a.complete {
            d.summary = format!(
                "{state}: all signals low, but data is missing or stale: no scale-in, hold {count}"
            )
            .into();
            return keep_all(d);
        }
        let held = self.below_since.map_or(Duration::ZERO, |s| now.since(s));
        if held < cfg.down_window {
            d.push_rule(rule(
                Rule::DownWindow,
                raw,
                current,
                format!(
                    "all signals below low for {} of {}",
                    format_duration(held),
                    format_duration(cfg.down_window)
                ),
            ));
            d.summary = format!(
                "{state}: all signals below low for {}: hold {count}",
                format_duration(held)
            )
            .into();
            return keep_all(d);
        }
        if let Some(e) = self.in_cooldown(now) {
            self.cooldown_rule(&mut d, raw, e);
            d.summary = format!(
                "{state}: all signals low, but in cooldown ({}): hold {count}",
                format_duration(e)
            )
            .into();
            return keep_all(d);
        }
        let mut target = raw;
        if target < current - 1.0 {
            d.push_rule(rule(
                Rule::StepLimit,
                target,
                current - 1.0,
                "one member at a time",
            ));
            target = current - 1.0;
        }
        if target < cfg.min_members as f64 {
            d.push_rule(rule(
                Rule::HaMinimum,
                target,
                current,
                format!("{count} members, HA minimum {}", cfg.min_members),
            ));
            d.summary = format!(
                "{state}: all signals low, but at the HA minimum {}: hold {count}",
                cfg.min_members
            )
            .into();
            return keep_all(d);
        }
        let Some(victim) = choose_removal(&a.members) else {
            d.summary =
                format!("{state}: all signals low, but no replica can be removed: hold {count}")
                    .into();
            return keep_all(d);
        };
        if a.capacity.iter().any(|m| m.name == victim.name) {
            if let Some(hold) = a.regrow_after_removal(target, &mut d) {
                d.summary = hold.into();
                return keep_all(d);
            }
        }
        d.action = Action::Shrink;
        d.target = target;
        d.summary = format!(
            "{state}: all signals below low for {}: remove {}, {count} -> {target}",
            format_duration(held),
            victim.name
        )
        .into();
        ReplicaDecision {
            decision: d,
            remove: Some(victim.name.clone()),
        }
    }
}

/// Neither a signal above `high` nor every signal below `low`: hold, and say whether it is the
/// band or the data that holds.
fn hold_in_band(a: &Assessment<'_>, mut d: Decision) -> Decision {
    let (current, state) = (a.current, &a.state);
    let some_low = a
        .signals
        .iter()
        .any(|s| s.value.is_some_and(|v| v < s.band.low));
    let data_short = a.all_below || some_low && !a.complete;
    if !data_short {
        d.push_rule(rule(
            Rule::Band,
            current,
            current,
            "no signal above high, not all below low",
        ));
    }
    // Nearly every decision on every observation: its sentence is written when read.
    let said = InBand {
        state: *state,
        data_short,
    };
    d.summary = Text::later(Arc::new(said), Part::Summary);
    d
}

/// The members and each signal's value, as every replica sentence opens: `database replicas:
/// 3 members (2 capacity replicas), replica cpu 0.45, connections/member 20.00`.
#[derive(Clone, Copy, Debug)]
struct State {
    count: usize,
    capacity: usize,
    /// Each signal's name and value, in order (at most three: CPU, connections, read rate).
    signals: [Option<(&'static str, Option<f64>)>; 3],
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database replicas: {} members ({} capacity replicas)",
            self.count, self.capacity
        )?;
        for (name, value) in self.signals.iter().flatten() {
            match value {
                Some(v) => write!(f, ", {name} {:.2}", Fixed(*v))?,
                None => write!(f, ", {name} unknown")?,
            }
        }
        Ok(())
    }
}

/// A hold inside the bands (or on data too short to shrink), kept to write its sentence when
/// it is read ([`Text`]).
#[derive(Debug)]
struct InBand {
    /// Its count is the count held.
    state: State,
    /// Some signal low but the data incomplete: the data, not the band, holds.
    data_short: bool,
}

impl Explain for InBand {
    fn write(&self, part: Part, out: &mut String) {
        let (state, count) = (self.state, self.state.count);
        // Its one rule's detail is written beforehand; only the summary is written here.
        if part == Part::Summary {
            let _ = if self.data_short {
                write!(
                    out,
                    "{state}: data is missing or stale: no scale-in, hold {count}"
                )
            } else {
                write!(out, "{state}: inside the bands: hold {count}")
            };
        }
    }
}

/// Every decision but a scale-in removes no one.
fn keep_all(decision: Decision) -> ReplicaDecision {
    ReplicaDecision {
        decision,
        remove: None,
    }
}

/// What one observation says about the replica count (see [`ReplicaPolicy::assess`]).
struct Assessment<'a> {
    members: Vec<&'a MemberObservation>,
    count: usize,
    current: f64,
    /// Replicas that serve reads: streaming, lag known to be under the limit (or unknown).
    capacity: Vec<&'a MemberObservation>,
    signals: Vec<Signal>,
    /// Every figure present and fresh, every signal known.
    complete: bool,
    /// The decision summary's opening: the members and each signal's value.
    state: State,
    /// The signals above their `high`.
    above: Vec<Signal>,
    /// Every signal below its `low`.
    all_below: bool,
    /// Every signal below its `low` and none above its `high`.
    below: bool,
}

impl Assessment<'_> {
    /// Members needed to bring the worst signal back to the middle of its band.
    fn needed(&self) -> f64 {
        let worst = self
            .signals
            .iter()
            .filter_map(|s| s.value.map(|v| v / ((s.band.low + s.band.high) / 2.0)))
            .fold(0.0_f64, f64::max);
        (self.count - self.capacity.len()) as f64 + (self.capacity.len() as f64 * worst).ceil()
    }

    /// The removed capacity member's load spreads over the others: the summary of a hold (with
    /// its rule recorded) when that would push a signal over `high`.
    fn regrow_after_removal(&self, target: f64, d: &mut Decision) -> Option<String> {
        for s in &self.signals {
            let Some(v) = s.value else { continue };
            // Spread over one member fewer; with none left the load has nowhere to go.
            let projected = if s.per > 1 {
                v * s.per as f64 / (s.per - 1) as f64
            } else {
                f64::INFINITY
            };
            if projected > s.band.high {
                d.push_rule(rule(
                    Rule::NoRegrow,
                    target,
                    self.current,
                    format!(
                        "{} would be {projected:.2} > high {:.2} with one member fewer",
                        s.name, s.band.high
                    ),
                ));
                return Some(format!(
                    "{}: all signals low, but with one member fewer {} would be {projected:.2}, above high: hold {}",
                    self.state, s.name, self.count
                ));
            }
        }
        None
    }
}

/// The replica that matters least: never the leader; not a synchronous standby if another will
/// do; then the most lagging (not streaming counts as the most); then the newest; then by name,
/// so the choice is deterministic.
fn choose_removal<'a>(members: &[&'a MemberObservation]) -> Option<&'a MemberObservation> {
    let lag = |m: &MemberObservation| -> f64 {
        if m.streaming == Some(false) {
            return f64::INFINITY;
        }
        m.lag_bytes
            .map(|f| f.value)
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    };
    members
        .iter()
        .copied()
        .filter(|m| !is_leader(m))
        .min_by(|a, b| {
            let sync = |m: &MemberObservation| m.patroni_role == Some(PatroniRole::SyncStandby);
            sync(a)
                .cmp(&sync(b))
                .then_with(|| lag(b).partial_cmp(&lag(a)).unwrap_or(Ordering::Equal))
                .then_with(|| b.created_at.cmp(&a.created_at))
                .then_with(|| b.name.cmp(&a.name))
        })
}

#[cfg(test)]
mod tests {
    use steward_model::observation::Source;
    use steward_model::Size;

    use super::*;
    use crate::config::PolicyConfig;

    const MIB: f64 = 1024.0 * 1024.0;

    fn member(name: &str, leader: bool, cpu: f64, now: Timestamp) -> MemberObservation {
        let f = |v: f64| Some(Figure::new(v, Source::Recorded, now));
        MemberObservation {
            name: name.into(),
            role: Some(Role::Database),
            patroni_role: Some(if leader {
                PatroniRole::Leader
            } else {
                PatroniRole::Replica
            }),
            streaming: if leader { None } else { Some(true) },
            lag_bytes: if leader { None } else { f(0.0) },
            cpu_used: f(cpu),
            connections: f(5.0),
            size: Some(Size {
                cpus: 2.0,
                memory_bytes: 1 << 30,
                disk_bytes: 10 << 30,
            }),
            created_at: Some(Timestamp::from_secs(0)),
            ..Default::default()
        }
    }

    /// A cluster with `n` members (pg-0 the leader), every replica using `cpu` of 2 vCPU.
    fn cluster(n: usize, cpu: f64, now: Timestamp) -> Observation {
        Observation {
            at: now,
            cluster: "demo".into(),
            members: (0..n)
                .map(|i| member(&format!("pg-{i}"), i == 0, cpu, now))
                .collect(),
            notes: vec![],
            slots: Vec::new(),
        }
    }

    fn run(
        p: &mut ReplicaPolicy,
        from: i64,
        secs: i64,
        mut obs: impl FnMut(Timestamp) -> Observation,
    ) -> ReplicaDecision {
        let mut last = None;
        let mut s = from;
        while s <= from + secs {
            let now = Timestamp::from_secs(s);
            last = Some(p.decide(now, &obs(now)));
            s += 15;
        }
        last.unwrap()
    }

    fn policy() -> ReplicaPolicy {
        ReplicaPolicy::new(PolicyConfig::default().replicas)
    }

    #[test]
    fn replica_cpu_scales_out_from_scale_out_at_before_it_reaches_high() {
        // 1.3 of 2 vCPU = 0.65: above scale_out_at (0.6 by default), below high (0.7).
        let mut p = policy();
        let d = run(&mut p, 0, 300, |t| cluster(3, 1.3, t));
        assert_eq!(
            (d.decision.action, d.decision.target),
            (Action::Grow, 4.0),
            "{d:?}"
        );
        assert!(
            d.decision
                .summary
                .as_str()
                .contains("replica cpu above 0.60"),
            "{}",
            d.decision.summary
        );
        // With scale_out_at = high, the same load is inside the band: hold.
        let mut cfg = PolicyConfig::default().replicas;
        cfg.cpu.scale_out_at = cfg.cpu.high;
        let mut p = ReplicaPolicy::new(cfg);
        let d = run(&mut p, 0, 300, |t| cluster(3, 1.3, t));
        assert_eq!(d.decision.action, Action::Hold, "{d:?}");
    }

    /// The hold inside the bands, the decision of nearly every observation, says the signals
    /// word for word (its sentence is written when read).
    #[test]
    fn a_cluster_inside_the_bands_holds_and_says_each_signal() {
        let mut p = policy();
        // 1.0 of 2 vCPU = 0.5: inside the CPU band.
        let d = run(&mut p, 0, 300, |t| cluster(3, 1.0, t)).decision;
        assert_eq!(d.action, Action::Hold);
        assert!(d.has_rule(Rule::Band), "{d:?}");
        assert_eq!(
            d.summary.to_string(),
            "database replicas: 3 members (2 capacity replicas), replica cpu 0.50, connections/member 5.00: inside the bands: hold 3"
        );
        // CPU low but a replica's figure missing, connections inside their band: the data
        // holds, not the band.
        let now = Timestamp::from_secs(400);
        let mut short = cluster(3, 0.2, now);
        for m in &mut short.members {
            m.connections = Some(Figure::new(50.0, Source::Recorded, now));
        }
        short.members[1].cpu_used = None;
        let d = p.decide(now, &short).decision;
        assert_eq!(
            d.summary.to_string(),
            "database replicas: 3 members (2 capacity replicas), replica cpu 0.10, connections/member 50.00: data is missing or stale: no scale-in, hold 3"
        );
    }

    #[test]
    fn a_busy_cluster_adds_one_member_after_the_up_window() {
        let mut p = policy();
        // 1.8 of 2 vCPU = 0.9 > 0.7.
        let d = run(&mut p, 0, 285, |t| cluster(3, 1.8, t));
        assert!(d.decision.has_rule(Rule::UpWindow), "{d:?}");
        let d = run(&mut p, 300, 0, |t| cluster(3, 1.8, t));
        assert_eq!(
            (d.decision.action, d.decision.target),
            (Action::Grow, 4.0),
            "{d:?}"
        );
        // Needed: 1 + ceil(2 x 0.9 / 0.5) = 5 members; one at a time.
        assert_eq!(d.decision.raw, Some(5.0));
        assert!(d.decision.has_rule(Rule::StepLimit));
        assert!(
            d.decision
                .summary
                .as_str()
                .contains("add one member, 3 -> 4"),
            "{}",
            d.decision.summary
        );
    }

    #[test]
    fn a_quiet_cluster_removes_the_most_lagging_then_newest_replica() {
        let mut p = policy();
        let obs = |t: Timestamp| {
            let mut o = cluster(5, 0.2, t);
            for m in &mut o.members {
                m.connections = Some(Figure::new(5.0, Source::Recorded, t));
            }
            o.members[1].created_at = Some(Timestamp::from_secs(100)); // newest
            o.members[2].lag_bytes = Some(Figure::new(MIB, Source::Recorded, t)); // most lagging
            o
        };
        let d = run(&mut p, 0, 1800, obs);
        assert_eq!(
            (d.decision.action, d.decision.target),
            (Action::Shrink, 4.0),
            "{d:?}"
        );
        assert_eq!(d.remove.as_deref(), Some("pg-2"));
        let mut o = obs(Timestamp::from_secs(0));
        o.members[2].lag_bytes = Some(Figure::new(0.0, Source::Recorded, Timestamp::from_secs(0)));
        let members: Vec<&MemberObservation> = o.members.iter().collect();
        assert_eq!(choose_removal(&members).unwrap().name, "pg-1");
    }

    #[test]
    fn the_ha_minimum_is_never_crossed_and_restored_one_at_a_time() {
        let mut p = policy();
        let d = run(&mut p, 0, 3600, |t| cluster(3, 0.1, t));
        assert_eq!(d.decision.action, Action::Hold);
        assert!(d.decision.has_rule(Rule::HaMinimum), "{d:?}");
        let d = p.decide(
            Timestamp::from_secs(4000),
            &cluster(1, 0.1, Timestamp::from_secs(4000)),
        );
        assert_eq!(
            (d.decision.action, d.decision.target),
            (Action::Grow, 2.0),
            "{d:?}"
        );
        assert!(d.decision.has_rule(Rule::HaMinimum));
    }

    #[test]
    fn lagging_and_not_streaming_replicas_are_not_capacity() {
        let mut p = policy();
        let now = Timestamp::from_secs(0);
        let mut o = cluster(3, 0.6, now);
        o.members[1].streaming = Some(false);
        o.members[2].lag_bytes = Some(Figure::new(100.0 * MIB, Source::Recorded, now));
        for m in &mut o.members {
            m.connections = Some(Figure::new(30.0, Source::Recorded, now));
        }
        let d = p.decide(now, &o);
        assert!(d.decision.has_rule(Rule::NotCapacity), "{d:?}");
        let detail = &d
            .decision
            .rules
            .iter()
            .find(|r| r.rule == Rule::NotCapacity)
            .unwrap()
            .detail;
        assert!(
            detail.as_str().contains("pg-1 (not streaming)")
                && detail.as_str().contains("pg-2 (lag 100.0 MiB)"),
            "{detail}"
        );
        // With no capacity replica, connections per member is 90 / 1 = 90 > 80: scale out.
        assert!(
            d.decision.summary.as_str().contains("0 capacity replicas"),
            "{}",
            d.decision.summary
        );
        assert!(d.decision.has_rule(Rule::UpWindow), "{d:?}");
    }

    #[test]
    fn missing_or_stale_data_never_scales_in() {
        let mut p = policy();
        let d = run(&mut p, 0, 3600, |t| {
            let mut o = cluster(5, 0.1, t);
            for m in &mut o.members {
                m.connections = Some(Figure::new(1.0, Source::Recorded, t));
            }
            o.members[3].cpu_used = None;
            o
        });
        assert_eq!(d.decision.action, Action::Hold, "{d:?}");
        assert!(d.decision.has_rule(Rule::MissingData));
        assert!(
            d.decision.summary.as_str().contains("no scale-in"),
            "{}",
            d.decision.summary
        );
        let mut p = policy();
        let d = run(&mut p, 0, 3600, |t| {
            let mut o = cluster(5, 0.1, t);
            for m in &mut o.members {
                m.connections = Some(Figure::new(1.0, Source::Recorded, t));
            }
            o.members[2].lag_bytes =
                Some(Figure::new(0.0, Source::Recorded, Timestamp::from_secs(0)));
            o
        });
        assert_eq!(d.decision.action, Action::Hold, "{d:?}");
        assert!(d.decision.has_rule(Rule::StaleData));
    }

    #[test]
    fn without_a_leader_nothing_is_removed() {
        let mut p = policy();
        let d = run(&mut p, 0, 3600, |t| {
            let mut o = cluster(5, 0.1, t);
            o.members[0].patroni_role = Some(PatroniRole::Replica);
            for m in &mut o.members {
                m.connections = Some(Figure::new(1.0, Source::Recorded, t));
            }
            o
        });
        assert_eq!(d.decision.action, Action::Hold, "{d:?}");
        assert_eq!(d.remove, None);
    }

    #[test]
    fn a_scale_in_that_would_scale_out_again_holds() {
        let mut p = policy();
        // 4 members, 3 capacity replicas at 0.25 CPU: 3 -> 2 replicas makes it 0.375 < 0.7: fine.
        // Connections: 19 per member x 4 = 76 over 3 members = 25 > low... use a tight band.
        let mut cfg = PolicyConfig::default().replicas;
        cfg.cpu = Band {
            low: 0.3,
            high: 0.35,
            scale_out_at: 0.35,
        };
        cfg.connections = None;
        p = ReplicaPolicy { config: cfg, ..p };
        let d = run(&mut p, 0, 1800, |t| cluster(4, 0.5, t));
        assert_eq!(d.decision.action, Action::Hold, "{d:?}");
        assert!(d.decision.has_rule(Rule::NoRegrow), "{d:?}");
    }

    #[test]
    fn read_rate_per_replica_scales_out_when_configured() {
        let mut cfg = PolicyConfig::default().replicas;
        cfg.read_rate = Some(Band {
            low: 100.0,
            high: 1000.0,
            scale_out_at: 1000.0,
        });
        let mut p = ReplicaPolicy::new(cfg);
        // CPU and connections are quiet; 2 replicas read 1,500/s each.
        let d = run(&mut p, 0, 300, |t| {
            let mut o = cluster(3, 0.2, t);
            for m in o.members.iter_mut().skip(1) {
                m.read_rate = Some(Figure::new(1500.0, Source::Recorded, t));
            }
            o
        });
        assert_eq!(d.decision.action, Action::Grow, "{d:?}");
        assert!(
            d.decision
                .summary
                .as_str()
                .contains("read rate/replica above 1000.00"),
            "{}",
            d.decision.summary
        );
    }

    #[test]
    fn cooldown_blocks_after_a_change() {
        let mut p = policy();
        let d = run(&mut p, 0, 300, |t| cluster(3, 1.8, t));
        assert_eq!(d.decision.action, Action::Grow);
        p.record_change(Timestamp::from_secs(300), 4);
        let d = run(&mut p, 315, 600, |t| cluster(4, 1.8, t));
        assert_eq!(d.decision.action, Action::Hold);
        assert!(d.decision.has_rule(Rule::Cooldown), "{d:?}");
        let d = run(&mut p, 1200, 0, |t| cluster(4, 1.8, t));
        assert_eq!(
            (d.decision.action, d.decision.target),
            (Action::Grow, 5.0),
            "{d:?}"
        );
        // At max (5): hold.
        p.record_change(Timestamp::from_secs(1200), 5);
        let d = run(&mut p, 1215, 1800, |t| cluster(5, 1.8, t));
        assert_eq!(d.decision.action, Action::Hold);
        assert!(d.decision.has_rule(Rule::Bounds), "{d:?}");
    }
}
