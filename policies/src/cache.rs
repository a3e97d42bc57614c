//! The buffer cache policy: when `shared_buffers` grows, and only then (issue 17).
//!
//! What it is: memory added to a database member is the workload's (an OOM kill's emergency
//! grow hands nothing to the cache, and an ordinary memory grow does not raise
//! `shared_buffers` either: see the scaler's settings). `shared_buffers` grows only when the
//! cache itself says it is short: every database member's buffer cache hit ratio (blocks found
//! in shared_buffers over blocks asked for, over the exporter's rate window) below `low` for
//! `window`, while the running `shared_buffers` is below its share of the members' memory
//! (`[scaler.settings] shared_buffers_ratio`, 25 %). Then one decision: `shared_buffers` to that
//! share. It is restart-only, so it is its own operation with its own reason (patch, restart
//! the replicas, switchover, restart the old primary), never a side effect of a resize, and at
//! most one per `cooldown`.
//!
//! It holds, and says why, when: a member's ratio or `shared_buffers` is missing or stale
//! (missing is not zero: an idle member reads no block, and has no ratio), the ratio is at or
//! above `low`, or not yet for `window`, the running value is already at its share (then more
//! memory is what would help, and the decision says so), or a retune happened within `cooldown`.
//!
//! What it is not: a judge of whether a low ratio is the cache's fault. A sequential scan of a
//! big table reads through a small ring of buffers whatever `shared_buffers` is; `low` and
//! `window` keep such a job from retuning anything, and `retune = false` turns the policy off.

use std::fmt::Write as _;
use std::time::Duration;

use humantime_serde::re::humantime::format_duration;
use serde::{Deserialize, Serialize};
use steward_model::decision::Knob;
use steward_model::observation::{Figure, Freshness, MemberObservation};
use steward_model::size::Bytes;
use steward_model::{Action, ConfigErrors, Decision, Fixed, Rule, Timestamp};

use crate::config::MAX_WINDOW;
use crate::rules::rule;

/// A hit ratio under 95 % for an hour: an OLTP database that fits its cache answers 99 % of its
/// block reads from it; 95 % for an hour is a working set that no longer fits, not a report
/// that ran once.
pub const DEFAULT_LOW: f64 = 0.95;
/// One hour below `low` before a retune: a restart of every member is not worth a burst.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60 * 60);
/// At most one retune a day: the cache takes hours to warm, and its ratio to settle.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(24 * 60 * 60);
/// A figure older than 5 minutes is stale (the ratio is a 5-minute rate already).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// `[policy.cache]`: when the database members' `shared_buffers` grows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCacheConfig {
    /// Whether a short cache retunes `shared_buffers` at all (restart-only).
    pub retune: bool,
    /// A hit ratio below this, on every database member, for `window`, is a short cache (0..1).
    pub low: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// No second retune for this long.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// A figure older than this is stale: hold.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
}

impl Default for RawCacheConfig {
    fn default() -> Self {
        RawCacheConfig {
            retune: true,
            low: DEFAULT_LOW,
            window: DEFAULT_WINDOW,
            cooldown: DEFAULT_COOLDOWN,
            stale_after: DEFAULT_STALE_AFTER,
        }
    }
}

/// The cache policy's settings, validated: `0 < low < 1`; durations above zero and at most
/// [`MAX_WINDOW`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheConfig {
    pub retune: bool,
    pub low: f64,
    pub window: Duration,
    pub cooldown: Duration,
    pub stale_after: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        RawCacheConfig::default()
            .validate_into(&mut ConfigErrors::default())
            .expect("the defaults are valid")
    }
}

impl RawCacheConfig {
    /// Validates into `errors` (paths `cache.<field>`); `None` when something was wrong.
    pub fn validate_into(&self, errors: &mut ConfigErrors) -> Option<CacheConfig> {
        let before = errors.len();
        if !(self.low > 0.0 && self.low < 1.0) {
            errors.push(
                "cache.low",
                format!("must be between 0 and 1, not {}", self.low),
            );
        }
        for (field, d) in [
            ("window", self.window),
            ("cooldown", self.cooldown),
            ("stale_after", self.stale_after),
        ] {
            if d.is_zero() {
                errors.push(format!("cache.{field}"), "must be longer than zero");
            } else if d > MAX_WINDOW {
                errors.push(
                    format!("cache.{field}"),
                    format!(
                        "at most {}",
                        steward_model::errors::short_duration(MAX_WINDOW)
                    ),
                );
            }
        }
        (errors.len() == before).then_some(CacheConfig {
            retune: self.retune,
            low: self.low,
            window: self.window,
            cooldown: self.cooldown,
            stale_after: self.stale_after,
        })
    }
}

/// The buffer cache of one cluster's database members.
#[derive(Clone, Debug)]
pub struct CachePolicy {
    config: CacheConfig,
    low_since: Option<Timestamp>,
    last_retune: Option<Timestamp>,
}

impl CachePolicy {
    pub fn new(config: CacheConfig) -> Self {
        CachePolicy {
            config,
            low_since: None,
            last_retune: None,
        }
    }

    /// A retune was started at `at`: the cooldown runs from there.
    pub fn record_retune(&mut self, at: Timestamp) {
        self.last_retune = Some(at);
        self.low_since = None;
    }

    /// Decides on the database `members` at `now`. `share` is `shared_buffers` at its share of
    /// the members' memory, in bytes (`None` when their size is unknown). The decision's
    /// `current` and `target` are bytes of `shared_buffers` (the running value, the largest
    /// among the members); its statistic the highest hit ratio (every member must be short).
    pub fn decide(
        &mut self,
        now: Timestamp,
        members: &[&MemberObservation],
        share: Option<f64>,
    ) -> Decision {
        let cfg = &self.config;
        let fresh = |f: &Option<Figure>| Figure::freshness(f.as_ref(), now, cfg.stale_after);
        let mut ratios = Vec::with_capacity(members.len());
        let mut running: Option<f64> = None;
        let mut gaps: Vec<String> = Vec::new();
        for m in members {
            match fresh(&m.cache_hit_ratio) {
                Freshness::Fresh(v) => ratios.push(v),
                Freshness::Stale { .. } => gaps.push(format!("{}: hit ratio stale", m.name)),
                Freshness::Missing => gaps.push(format!("{}: no hit ratio", m.name)),
            }
            match fresh(&m.shared_buffers) {
                Freshness::Fresh(v) => running = Some(running.map_or(v, |r: f64| r.max(v))),
                Freshness::Stale { .. } => gaps.push(format!("{}: shared_buffers stale", m.name)),
                Freshness::Missing => gaps.push(format!("{}: shared_buffers unknown", m.name)),
            }
        }
        let current = running.unwrap_or(0.0);
        let mut d = Decision::hold(now, Knob::SharedBuffers, current);
        // Every member must be short: the best ratio is the one judged (one replica serving a
        // report is that replica's workload, not the cache's size).
        let best = ratios.iter().copied().reduce(f64::max);
        d.statistic = best;
        if !cfg.retune {
            self.low_since = None;
            d.summary =
                "database shared_buffers: retune off ([policy.cache] retune = false): hold".into();
            return d;
        }
        if members.is_empty() || !gaps.is_empty() {
            self.low_since = None;
            let detail = if members.is_empty() {
                "no database member observed".to_string()
            } else {
                gaps.join(", ")
            };
            d.push_rule(rule(Rule::MissingData, current, current, detail.clone()));
            d.summary = format!("database shared_buffers: {detail}: hold").into();
            return d;
        }
        let best = best.expect("every member has a fresh ratio");
        // Room for the hold's whole sentence, which goes on from this one.
        let mut state = String::with_capacity(128);
        let _ = write!(
            state,
            "database shared_buffers {}: buffer cache hit ratio {:.3} or lower on every member",
            Bytes(current),
            Fixed(best)
        );
        if best >= cfg.low {
            self.low_since = None;
            d.push_rule(rule(
                Rule::Band,
                current,
                current,
                format!(
                    "hit ratio {:.3} at or above low {:.3}",
                    Fixed(best),
                    Fixed(cfg.low)
                ),
            ));
            let _ = write!(state, ", at or above {:.3}: hold", Fixed(cfg.low));
            d.summary = state.into();
            return d;
        }
        let since = *self.low_since.get_or_insert(now);
        let held = now.since(since);
        if held < cfg.window {
            d.push_rule(rule(
                Rule::DownWindow,
                current,
                current,
                format!(
                    "below {:.3} for {} of {}",
                    Fixed(cfg.low),
                    format_duration(held),
                    format_duration(cfg.window)
                ),
            ));
            d.summary = format!(
                "{state}, below {:.3} for {}: hold",
                Fixed(cfg.low),
                format_duration(held)
            )
            .into();
            return d;
        }
        let Some(share) = share else {
            d.push_rule(rule(
                Rule::MissingData,
                current,
                current,
                "the members' memory is unknown",
            ));
            d.summary = format!(
                "{state}, short for {}, but the members' memory is unknown: hold",
                format_duration(held)
            )
            .into();
            return d;
        };
        d.raw = Some(share);
        // Within a megabyte of its share is at its share (the settings write whole megabytes).
        if current >= share - 1024.0 * 1024.0 {
            d.push_rule(rule(
                Rule::Bounds,
                share,
                current,
                format!("already at its share of memory ({})", Bytes(share)),
            ));
            d.summary = format!(
                "{state}, short for {}, but shared_buffers is already at its share of memory: more memory is what would help: hold",
                format_duration(held)
            ).into();
            return d;
        }
        if let Some(e) = self
            .last_retune
            .map(|t| now.since(t))
            .filter(|e| *e < cfg.cooldown)
        {
            d.push_rule(rule(
                Rule::Cooldown,
                share,
                current,
                format!("retuned {} ago", format_duration(e)),
            ));
            d.summary = format!(
                "{state}, short, but retuned {} ago: hold",
                format_duration(e)
            )
            .into();
            return d;
        }
        d.push_rule(rule(
            Rule::CacheShort,
            current,
            share,
            format!(
                "hit ratio below {:.3} for {} on every database member",
                cfg.low,
                format_duration(held)
            ),
        ));
        d.action = Action::Grow;
        d.target = share;
        d.summary = format!(
            "{state}, below {:.3} for {}: the cache is short: shared_buffers {} -> {} (its share of memory; restart-only: a rolling restart with a switchover)",
            cfg.low,
            format_duration(held),
            Bytes(current),
            Bytes(share)
        ).into();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_model::observation::Source;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn member(
        name: &str,
        ratio: Option<f64>,
        buffers: Option<f64>,
        at: Timestamp,
    ) -> MemberObservation {
        let figure = |v: f64| Figure::new(v, Source::Prometheus, at);
        MemberObservation {
            name: name.into(),
            cache_hit_ratio: ratio.map(figure),
            shared_buffers: buffers.map(figure),
            ..MemberObservation::default()
        }
    }

    /// Runs the policy every 15 s from `from` for `secs` on members of these ratios.
    fn run(
        p: &mut CachePolicy,
        from: i64,
        secs: i64,
        ratios: &[Option<f64>],
        buffers: f64,
    ) -> Decision {
        let mut last = None;
        let mut s = from;
        while s <= from + secs {
            let now = Timestamp::from_secs(s);
            let members: Vec<MemberObservation> = ratios
                .iter()
                .enumerate()
                .map(|(i, r)| member(&format!("pg-{i}"), *r, Some(buffers), now))
                .collect();
            let refs: Vec<&MemberObservation> = members.iter().collect();
            last = Some(p.decide(now, &refs, Some(GIB)));
            s += 15;
        }
        last.unwrap()
    }

    #[test]
    fn a_short_cache_for_the_window_grows_shared_buffers_to_its_share() {
        let mut p = CachePolicy::new(CacheConfig::default());
        let d = run(
            &mut p,
            0,
            3585,
            &[Some(0.90), Some(0.92), Some(0.93)],
            128.0 * 1024.0 * 1024.0,
        );
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::DownWindow), "{d:?}");
        let d = run(
            &mut p,
            3600,
            0,
            &[Some(0.90), Some(0.92), Some(0.93)],
            128.0 * 1024.0 * 1024.0,
        );
        assert_eq!((d.action, d.target), (Action::Grow, GIB), "{d:?}");
        assert!(d.has_rule(Rule::CacheShort), "{d:?}");
        assert_eq!(d.statistic, Some(0.93));
        assert!(
            d.summary.as_str().contains("128.0 MiB -> 1.0 GiB"),
            "{}",
            d.summary
        );
        // Once retuned, not again within the cooldown.
        p.record_retune(Timestamp::from_secs(3600));
        let d = run(
            &mut p,
            3615,
            7200,
            &[Some(0.90); 3],
            128.0 * 1024.0 * 1024.0,
        );
        assert!(d.has_rule(Rule::Cooldown), "{d:?}");
    }

    #[test]
    fn one_member_with_a_good_ratio_or_a_missing_figure_holds_and_restarts_the_window() {
        let mut p = CachePolicy::new(CacheConfig::default());
        let d = run(&mut p, 0, 4000, &[Some(0.90), Some(0.97)], 0.1 * GIB);
        assert!(d.has_rule(Rule::Band) && d.action == Action::Hold, "{d:?}");
        // Missing is not zero: an idle member has no ratio, and nothing is decided.
        let d = run(&mut p, 0, 4000, &[Some(0.90), None], 0.1 * GIB);
        assert!(
            d.has_rule(Rule::MissingData) && d.action == Action::Hold,
            "{d:?}"
        );
        assert!(
            d.summary.as_str().contains("pg-1: no hit ratio"),
            "{}",
            d.summary
        );
        // The window starts again after a gap.
        let d = run(&mut p, 4015, 1800, &[Some(0.90); 2], 0.1 * GIB);
        assert!(d.has_rule(Rule::DownWindow), "{d:?}");
    }

    #[test]
    fn at_its_share_already_it_says_memory_is_what_would_help() {
        let mut p = CachePolicy::new(CacheConfig::default());
        let d = run(&mut p, 0, 3600, &[Some(0.80); 3], GIB);
        assert_eq!(d.action, Action::Hold, "{d:?}");
        assert!(d.has_rule(Rule::Bounds), "{d:?}");
        assert!(
            d.summary
                .as_str()
                .contains("more memory is what would help"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn retune_off_never_grows() {
        let config = CacheConfig {
            retune: false,
            ..CacheConfig::default()
        };
        let mut p = CachePolicy::new(config);
        let d = run(&mut p, 0, 7200, &[Some(0.5); 3], 0.1 * GIB);
        assert_eq!(d.action, Action::Hold, "{d:?}");
    }

    #[test]
    fn bad_settings_are_refused_with_their_paths() {
        let raw = RawCacheConfig {
            low: 1.0,
            window: Duration::ZERO,
            ..RawCacheConfig::default()
        };
        let mut errors = ConfigErrors::default();
        assert!(raw.validate_into(&mut errors).is_none());
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("cache.low:"), "{text:?}");
        assert!(text[1].starts_with("cache.window:"), "{text:?}");
    }
}
