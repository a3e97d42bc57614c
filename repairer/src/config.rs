//! The repairer's config, in two stages: [`RawRepairConfig`] as written (serde,
//! `deny_unknown_fields`, every field defaulted, durations as humantime strings such as `"90s"`),
//! then [`RawRepairConfig::validate`], which collects EVERY problem with its field path and
//! returns a [`RepairConfig`] whose invariants the core relies on.
//!
//! What it is not: file loading, or the rest of Steward's config (the binary nests this section
//! and prefixes the paths, e.g. `repair.grace_window`).
//!
//! Each default is a named constant with the reason for its value.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::ConfigErrors;

/// A member must look bad for 60 s before it is confirmed: longer than Patroni's leader ttl
/// (30 s in ENVIRONMENT.md), so Patroni's own failover acts first, and longer than a platform
/// restart of a container (a few seconds), which must not count as a failure.
pub const DEFAULT_GRACE_WINDOW: Duration = Duration::from_secs(60);
/// A REST API silent for longer than 30 s (Patroni's ttl) belongs to a member that has lost or
/// would lose the leader key anyway; shorter silences are a slow scrape.
pub const DEFAULT_SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// 64 MiB behind the leader (four WAL segments): a replica further behind is not a candidate
/// for promotion and serves stale reads.
pub const DEFAULT_LAG_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// The lag must stay over the limit for 5 minutes: a burst of writes (a bulk load) passes.
pub const DEFAULT_LAG_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Three restarts ...
pub const DEFAULT_RESTART_LOOP_COUNT: u32 = 3;
/// ... within 10 minutes is a loop, not bad luck.
pub const DEFAULT_RESTART_LOOP_WINDOW: Duration = Duration::from_secs(10 * 60);
/// 95 % of the data disk used: PostgreSQL stops accepting writes when WAL cannot be written, and
/// the disk policy (which grows at 80 %) has evidently not managed to.
pub const DEFAULT_DISK_FULL_RATIO: f64 = 0.95;
/// A replica whose received WAL position has not moved for 60 s while the leader's has is stuck:
/// PostgreSQL's own `wal_sender_timeout` (60 s by default) would cut its connection by then, so
/// a replica still not receiving is frozen or wedged, not slow.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);
/// A figure older than 60 s (four missed 15 s scrapes) is stale and is no evidence (promise 3).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60);
/// A replacement must stream within 15 minutes: a 1 GiB member streams in about 11 s here
/// (ENVIRONMENT.md), pg_basebackup runs at about 250 MB/s, so this covers ~200 GB.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Patroni hands the leader lock over within seconds when the candidate is healthy; two minutes
/// without a move means the switchover did not happen.
pub const DEFAULT_SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(120);
pub use steward_coordinator::{
    DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_THRESHOLD, DEFAULT_QUIET_PERIOD,
    DEFAULT_REPAIR_BUDGET_PER_HOUR, DEFAULT_UNHEALTHY_MAJORITY,
};

/// The `[repair]` section as written. Every field may be left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRepairConfig {
    /// How long a member must look bad, without a break, before it is confirmed and repaired.
    #[serde(with = "humantime_serde")]
    pub grace_window: Duration,
    /// A member whose Patroni REST API has not answered for longer than this is silent.
    #[serde(with = "humantime_serde")]
    pub silence_limit: Duration,
    /// Replication lag, bytes, above which a replica is lagging (and is no failover candidate).
    pub lag_limit_bytes: u64,
    /// How long the lag must stay above the limit before it is a signal.
    #[serde(with = "humantime_serde")]
    pub lag_window: Duration,
    /// This many platform restarts ...
    pub restart_loop_count: u32,
    /// ... within this window make a restart loop.
    #[serde(with = "humantime_serde")]
    pub restart_loop_window: Duration,
    /// Disk used / disk size at or above this ratio (0..1] is a full disk.
    pub disk_full_ratio: f64,
    /// A replica whose received WAL position stands still this long while the leader's moves
    /// on is stuck (a zombie), however small its lag in bytes.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// A figure older than this is no evidence either way.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// How long a replacement may take to stream before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub verify_timeout: Duration,
    /// How long a switchover asked of Patroni may take to move the leader lock before the repair
    /// waiting for it is given up (with an alert) and the slot freed.
    #[serde(with = "humantime_serde")]
    pub switchover_timeout: Duration,
    /// Repairs that may start per cluster in any hour.
    pub repair_budget_per_hour: u32,
    /// Consecutive failed replacements that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker waits before allowing one trial.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// No new repair for this long after a recovery.
    #[serde(with = "humantime_serde")]
    pub quiet_period: Duration,
    /// Fraction (0..1] of the database members which, looking bad at once, freezes repairs.
    pub unhealthy_majority: f64,
    /// Like Patroni's pause: observe, decide nothing, act on nothing.
    pub paused: bool,
}

impl Default for RawRepairConfig {
    fn default() -> Self {
        RawRepairConfig {
            grace_window: DEFAULT_GRACE_WINDOW,
            silence_limit: DEFAULT_SILENCE_LIMIT,
            lag_limit_bytes: DEFAULT_LAG_LIMIT_BYTES,
            lag_window: DEFAULT_LAG_WINDOW,
            restart_loop_count: DEFAULT_RESTART_LOOP_COUNT,
            restart_loop_window: DEFAULT_RESTART_LOOP_WINDOW,
            disk_full_ratio: DEFAULT_DISK_FULL_RATIO,
            stall_after: DEFAULT_STALL_AFTER,
            stale_after: DEFAULT_STALE_AFTER,
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
            switchover_timeout: DEFAULT_SWITCHOVER_TIMEOUT,
            repair_budget_per_hour: DEFAULT_REPAIR_BUDGET_PER_HOUR,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            quiet_period: DEFAULT_QUIET_PERIOD,
            unhealthy_majority: DEFAULT_UNHEALTHY_MAJORITY,
            paused: false,
        }
    }
}

/// What makes a member look bad. Built only by [`RawRepairConfig::validate`]: every duration is
/// above zero, `lag_limit_bytes` and `restart_loop_count` are at least 1, `disk_full_ratio` is in
/// (0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct SignalConfig {
    pub grace_window: Duration,
    pub silence_limit: Duration,
    pub lag_limit_bytes: u64,
    pub lag_window: Duration,
    pub restart_loop_count: u32,
    pub restart_loop_window: Duration,
    pub disk_full_ratio: f64,
    pub stall_after: Duration,
    pub stale_after: Duration,
}

pub use steward_coordinator::GuardConfig;

/// The validated repairer config.
#[derive(Clone, Debug, PartialEq)]
pub struct RepairConfig {
    pub signals: SignalConfig,
    pub guards: GuardConfig,
    pub verify_timeout: Duration,
    pub switchover_timeout: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RawRepairConfig::default()
            .validate()
            .expect("the documented defaults are valid")
    }
}

impl RawRepairConfig {
    /// Checks every field and reports every problem at once, each with its path (relative to the
    /// repair section).
    pub fn validate(self) -> Result<RepairConfig, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        // Upper bounds (issue 16): a sign that lasts a day is not a repair's signal, a wait of
        // more than an hour holds the cluster's one slot, and a breaker open for more than a
        // week is a pause (say `paused = true`).
        const HOUR: Duration = Duration::from_secs(3_600);
        const DAY: Duration = Duration::from_secs(86_400);
        for (path, d, max) in [
            ("grace_window", self.grace_window, HOUR),
            ("silence_limit", self.silence_limit, HOUR),
            ("lag_window", self.lag_window, HOUR),
            ("restart_loop_window", self.restart_loop_window, DAY),
            ("stall_after", self.stall_after, HOUR),
            ("stale_after", self.stale_after, HOUR),
            ("verify_timeout", self.verify_timeout, HOUR),
            ("switchover_timeout", self.switchover_timeout, HOUR),
            ("breaker_cooldown", self.breaker_cooldown, 7 * DAY),
            ("quiet_period", self.quiet_period, DAY),
        ] {
            errors.positive_at_most(path, d, max);
        }
        for (path, n) in [
            ("lag_limit_bytes", self.lag_limit_bytes),
            ("restart_loop_count", u64::from(self.restart_loop_count)),
            (
                "repair_budget_per_hour",
                u64::from(self.repair_budget_per_hour),
            ),
            ("breaker_threshold", u64::from(self.breaker_threshold)),
        ] {
            if n == 0 {
                errors.push(path, "must be at least 1");
            }
        }
        for (path, ratio) in [
            ("disk_full_ratio", self.disk_full_ratio),
            ("unhealthy_majority", self.unhealthy_majority),
        ] {
            // Written so that NaN fails too.
            if !(ratio > 0.0 && ratio <= 1.0) {
                errors.push(path, format!("must be in (0, 1], not {ratio}"));
            }
        }
        errors.into_result(RepairConfig {
            signals: SignalConfig {
                grace_window: self.grace_window,
                silence_limit: self.silence_limit,
                lag_limit_bytes: self.lag_limit_bytes,
                lag_window: self.lag_window,
                restart_loop_count: self.restart_loop_count,
                restart_loop_window: self.restart_loop_window,
                disk_full_ratio: self.disk_full_ratio,
                stall_after: self.stall_after,
                stale_after: self.stale_after,
            },
            guards: GuardConfig {
                repair_budget_per_hour: self.repair_budget_per_hour,
                breaker_threshold: self.breaker_threshold,
                breaker_cooldown: self.breaker_cooldown,
                quiet_period: self.quiet_period,
                unhealthy_majority: self.unhealthy_majority,
                paused: self.paused,
            },
            verify_timeout: self.verify_timeout,
            switchover_timeout: self.switchover_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_section_is_merged_onto_the_defaults() {
        let raw: RawRepairConfig =
            serde_json::from_str(r#"{"grace_window":"90s","paused":true}"#).unwrap();
        let config = raw.validate().unwrap();
        assert_eq!(config.signals.grace_window, Duration::from_secs(90));
        assert!(config.guards.paused);
        assert_eq!(config.signals.silence_limit, DEFAULT_SILENCE_LIMIT);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<RawRepairConfig>(r#"{"grace":"90s"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `grace`"), "{err}");
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let raw = RawRepairConfig {
            grace_window: Duration::ZERO,
            breaker_threshold: 0,
            disk_full_ratio: 1.5,
            unhealthy_majority: f64::NAN,
            ..RawRepairConfig::default()
        };
        let errors = raw.validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "grace_window",
                "breaker_threshold",
                "disk_full_ratio",
                "unhealthy_majority"
            ]
        );
    }
}
