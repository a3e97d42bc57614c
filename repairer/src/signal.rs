//! Repair signals: what makes one member look bad, each with its evidence.
//!
//! What it is: [`Evidence`], the little memory one member needs across observations (when its
//! REST API last answered, since when its lag is over the limit, when the platform restarted it),
//! and [`Evidence::signals`], which turns that memory plus the latest [`MemberObservation`] into
//! a list of [`Signal`]s. An empty list means the member looks fine.
//!
//! What it is not: a verdict. One bad reading makes a member Suspect, not Confirmed; the grace
//! window lives in [`crate::health`]. Missing or stale figures are never evidence (promise 3):
//! a lag or disk figure that is absent or older than `stale_after` produces no signal.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use steward_model::observation::{
    Figure, Freshness, MemberObservation, PatroniRole, PlatformState,
};
use steward_model::{Role, Timestamp};

use crate::config::SignalConfig;

/// Patroni states that mean PostgreSQL is not running and Patroni is not bringing it up.
/// Anything else (`running`, `streaming`, `starting`, `creating replica`, ...) is no signal:
/// transient states are what the grace window is for.
const BAD_PATRONI_STATES: [&str; 5] = [
    "stopped",
    "crashed",
    "start failed",
    "restart failed",
    "failed",
];

/// One reason a member looks bad, with the evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// The platform says the container/VM/pod is not running normally.
    Platform { state: PlatformState },
    /// Patroni reports PostgreSQL down (`stopped`, `crashed`, `start failed`, ...).
    Patroni { state: String },
    /// The member's Patroni REST API has not answered for longer than the silence limit.
    Silent {
        last_heard: Option<Timestamp>,
        silent_ms: u64,
    },
    /// A replica that the leader does not list as streaming.
    NotStreaming,
    /// A replica over the lag limit for the whole lag window.
    Lagging {
        lag_bytes: f64,
        over_since: Timestamp,
    },
    /// The platform restarted the member `restarts` times within the restart-loop window.
    RestartLoop { restarts: u32, window_ms: u64 },
    /// The data disk is full (used / size at or above the limit).
    DiskFull { used_bytes: f64, disk_bytes: u64 },
    /// A replica whose received WAL position (Patroni's `/patroni` xlog) has stood still since
    /// `since` while the leader's written position moved on: stuck, whatever its lag in bytes.
    Stalled {
        received: u64,
        leader: u64,
        since: Timestamp,
    },
}

impl Signal {
    /// Whether the signal says the member is only slow: lagging, but otherwise fine. A slow
    /// member is replaced create-first (surge); anything else might still write and is fenced
    /// first.
    pub fn is_only_slow(&self) -> bool {
        matches!(self, Signal::Lagging { .. })
    }

    /// Whether the signal says the member may be frozen or gone rather than merely degraded:
    /// used to recognise a zombie former primary.
    pub fn is_frozen_or_down(&self) -> bool {
        matches!(self, Signal::Silent { .. } | Signal::Platform { .. })
    }
}

/// Whether two independent sources report the member down: the platform (its container, VM or
/// pod exited, died or is paused) AND Patroni (it reports PostgreSQL down, the leader does not
/// list the replica as streaming, or an answering `/cluster` no longer lists the member). A
/// member that looks bad to one source only (its REST API silent, the platform says running) may
/// be a fault of the observer (a DCS outage, a network cut from Steward), which the majority
/// guard must not mistake for dead members.
pub fn corroborated(signals: &[Signal], m: &MemberObservation, cluster_answered: bool) -> bool {
    let platform = signals.iter().any(|s| matches!(s, Signal::Platform { .. }));
    let patroni = signals
        .iter()
        .any(|s| matches!(s, Signal::Patroni { .. } | Signal::NotStreaming))
        || (cluster_answered && m.patroni_state.is_none());
    platform && patroni
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::Platform { state } => write!(f, "the platform reports it {state:?}"),
            Signal::Patroni { state } => write!(f, "Patroni reports it `{state}`"),
            Signal::Silent { silent_ms, .. } => {
                write!(f, "its REST API has been silent for {} s", silent_ms / 1000)
            }
            Signal::NotStreaming => f.write_str("it is a replica that does not stream"),
            Signal::Lagging {
                lag_bytes,
                over_since,
            } => {
                write!(
                    f,
                    "it lags {lag_bytes:.0} bytes, over the limit since {over_since}"
                )
            }
            Signal::RestartLoop {
                restarts,
                window_ms,
            } => write!(
                f,
                "the platform restarted it {restarts} times within {} s",
                window_ms / 1000
            ),
            Signal::DiskFull {
                used_bytes,
                disk_bytes,
            } => {
                write!(
                    f,
                    "its disk is full ({used_bytes:.0} of {disk_bytes} bytes)"
                )
            }
            Signal::Stalled {
                received,
                leader,
                since,
            } => write!(
                f,
                "it is stuck: the WAL it received stands at {} since {since} while the leader \
                 wrote on to {} (patroni's /patroni xlog positions)",
                lsn(*received),
                lsn(*leader)
            ),
        }
    }
}

/// A WAL position as PostgreSQL writes it: `0/4000060`.
fn lsn(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xFFFF_FFFF)
}

/// Joins signals into one clause for a reason sentence.
pub fn describe(signals: &[Signal]) -> String {
    let parts: Vec<String> = signals.iter().map(Signal::to_string).collect();
    parts.join("; ")
}

/// What one member's signals need to remember between observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// When the member was first observed (silence is measured from here until it answers).
    first_seen: Option<Timestamp>,
    /// When its Patroni REST API last answered.
    last_heard: Option<Timestamp>,
    /// Since when its (fresh) lag has been over the limit without a break.
    lag_over_since: Option<Timestamp>,
    /// The platform's restart counter at the last listing.
    restart_count: Option<u32>,
    /// When the counter went up, one entry per restart, pruned to the restart-loop window.
    restarts: VecDeque<Timestamp>,
    /// A replica's received WAL position, since when it has stood there, and the leader's
    /// position then.
    received: Option<(f64, Timestamp, f64)>,
    /// The leader's position at the last observation that had one.
    leader_position: Option<f64>,
}

fn is_replica(m: &MemberObservation) -> bool {
    matches!(
        m.patroni_role,
        Some(PatroniRole::Replica | PatroniRole::SyncStandby)
    )
}

fn is_database(m: &MemberObservation) -> bool {
    // Unknown role: a member seen only by Patroni is a database.
    m.role != Some(Role::Balancer)
}

impl Evidence {
    /// Folds one observation of the member, made at `at`, into the memory. `leader_position`
    /// is the leader's WAL position in the same observation, if it answered.
    pub fn observe(
        &mut self,
        m: &MemberObservation,
        leader_position: Option<&Figure>,
        at: Timestamp,
        config: &SignalConfig,
    ) {
        self.first_seen.get_or_insert(at);
        self.observe_progress(m, leader_position, at, config);
        // Any answer from Patroni about the member counts as being heard.
        if m.patroni_state.is_some() || m.patroni_role.is_some() {
            self.last_heard = Some(at);
        }
        if is_replica(m) {
            // Missing or stale lag leaves the window where it was: no evidence either way.
            if let Freshness::Fresh(lag) =
                Figure::freshness(m.lag_bytes.as_ref(), at, config.stale_after)
            {
                if lag > config.lag_limit_bytes as f64 {
                    self.lag_over_since.get_or_insert(at);
                } else {
                    self.lag_over_since = None;
                }
            }
        } else {
            self.lag_over_since = None;
        }
    }

    /// Whether a replica's received WAL position moves: a fresh position further on than the
    /// one remembered starts a new "standing since"; the same one keeps it. Missing or stale
    /// figures are no evidence and leave the memory as it is.
    fn observe_progress(
        &mut self,
        m: &MemberObservation,
        leader_position: Option<&Figure>,
        at: Timestamp,
        config: &SignalConfig,
    ) {
        if !is_replica(m) {
            self.received = None;
            return;
        }
        let fresh = |f: Option<&Figure>| match Figure::freshness(f, at, config.stale_after) {
            Freshness::Fresh(v) => Some(v),
            _ => None,
        };
        let leader = fresh(leader_position);
        if leader.is_some() {
            self.leader_position = leader;
        }
        let Some(position) = fresh(m.wal_position.as_ref()) else {
            return;
        };
        match self.received {
            Some((was, _, _)) if position <= was => {}
            _ => self.received = Some((position, at, self.leader_position.unwrap_or(0.0))),
        }
    }

    /// Folds in the platform's restart counter for the member, read at `at`.
    pub fn observe_restarts(&mut self, count: u32, at: Timestamp, config: &SignalConfig) {
        if let Some(previous) = self.restart_count {
            // A smaller count is a new container (counter reset), not negative restarts. More
            // than the loop count at once is recorded as the loop count: enough to fire.
            let new = count
                .saturating_sub(previous)
                .min(config.restart_loop_count);
            for _ in 0..new {
                self.restarts.push_back(at);
            }
        }
        self.restart_count = Some(count);
        let horizon = at - config.restart_loop_window;
        while self.restarts.front().is_some_and(|t| *t <= horizon) {
            self.restarts.pop_front();
        }
    }

    /// The signals the member shows at `now`, given its latest observation.
    pub fn signals(
        &self,
        m: &MemberObservation,
        now: Timestamp,
        config: &SignalConfig,
    ) -> Vec<Signal> {
        let mut signals = Vec::new();
        if let Some(state) = m.platform_state {
            // Creating and Unknown are not evidence of a fault; Running is fine.
            if !matches!(
                state,
                PlatformState::Running | PlatformState::Creating | PlatformState::Unknown
            ) {
                signals.push(Signal::Platform { state });
            }
        }
        if let Some(state) = &m.patroni_state {
            if BAD_PATRONI_STATES.contains(&state.as_str()) {
                signals.push(Signal::Patroni {
                    state: state.clone(),
                });
            }
        }
        if is_database(m) {
            if let Some(reference) = self.last_heard.or(self.first_seen) {
                let silent = now.since(reference);
                if silent > config.silence_limit {
                    signals.push(Signal::Silent {
                        last_heard: self.last_heard,
                        silent_ms: silent.as_millis() as u64,
                    });
                }
            }
        }
        if is_replica(m) && m.streaming == Some(false) {
            signals.push(Signal::NotStreaming);
        }
        if let (Some(since), Freshness::Fresh(lag)) = (
            self.lag_over_since,
            Figure::freshness(m.lag_bytes.as_ref(), now, config.stale_after),
        ) {
            if is_replica(m)
                && lag > config.lag_limit_bytes as f64
                && now.since(since) >= config.lag_window
            {
                signals.push(Signal::Lagging {
                    lag_bytes: lag,
                    over_since: since,
                });
            }
        }
        let horizon = now - config.restart_loop_window;
        let recent = self.restarts.iter().filter(|t| **t > horizon).count() as u32;
        if recent >= config.restart_loop_count {
            signals.push(Signal::RestartLoop {
                restarts: recent,
                window_ms: duration_ms(config.restart_loop_window),
            });
        }
        if let (true, Some((received, since, leader_then)), Some(leader)) =
            (is_replica(m), self.received, self.leader_position)
        {
            // Stuck: standing still for the whole window while the leader wrote past it.
            if now.since(since) >= config.stall_after && leader > received && leader > leader_then {
                signals.push(Signal::Stalled {
                    received: received as u64,
                    leader: leader as u64,
                    since,
                });
            }
        }
        if let (Freshness::Fresh(used), Some(size)) = (
            Figure::freshness(m.disk_used.as_ref(), now, config.stale_after),
            m.size,
        ) {
            if size.disk_bytes > 0 && used / size.disk_bytes as f64 >= config.disk_full_ratio {
                signals.push(Signal::DiskFull {
                    used_bytes: used,
                    disk_bytes: size.disk_bytes,
                });
            }
        }
        signals
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Whether a replica can take over from the leader: it streams, its lag is known, fresh and
/// under the limit, and it shows no signal. This is the "healthy candidate" of DESIGN.md 5.
pub fn is_healthy_candidate(
    m: &MemberObservation,
    signals: &[Signal],
    now: Timestamp,
    config: &SignalConfig,
) -> bool {
    is_replica(m)
        && m.streaming == Some(true)
        && signals.is_empty()
        && matches!(
            Figure::freshness(m.lag_bytes.as_ref(), now, config.stale_after),
            Freshness::Fresh(lag) if lag <= config.lag_limit_bytes as f64
        )
}

#[cfg(test)]
mod tests {
    use steward_model::observation::Source;
    use steward_model::Size;

    use super::*;
    use crate::config::RepairConfig;

    fn config() -> SignalConfig {
        RepairConfig::default().signals
    }

    fn replica(at: Timestamp, lag: f64) -> MemberObservation {
        MemberObservation {
            name: "pg-2".into(),
            role: Some(Role::Database),
            patroni_role: Some(PatroniRole::Replica),
            patroni_state: Some("streaming".into()),
            platform_state: Some(PlatformState::Running),
            streaming: Some(true),
            lag_bytes: Some(Figure::new(lag, Source::Prometheus, at)),
            ..MemberObservation::default()
        }
    }

    /// Issue 14: a replica stuck by progress, not bytes. Its received position stands still
    /// while the leader writes on: a signal once it has stood for `stall_after`, with a lag far
    /// under the byte limit. A replica that stands still because the leader wrote nothing is
    /// fine, and one that moves again is fine at once.
    #[test]
    fn a_replica_whose_received_wal_stands_still_while_the_leader_writes_is_stalled() {
        let c = config();
        let at = |s: i64| Timestamp::from_secs(1000 + s);
        let observe = |e: &mut Evidence, s: i64, received: f64, leader: f64| {
            let mut m = replica(at(s), 1024.0);
            m.wal_position = Some(Figure::new(received, Source::Patroni, at(s)));
            let leader = Figure::new(leader, Source::Patroni, at(s));
            e.observe(&m, Some(&leader), at(s), &c);
            e.signals(&m, at(s), &c)
        };
        let stall = c.stall_after.as_secs() as i64;

        // Idle leader: nothing moves, nothing is wrong.
        let mut idle = Evidence::default();
        for s in (0..=stall * 2).step_by(10) {
            assert!(observe(&mut idle, s, 5_000.0, 5_000.0).is_empty());
        }

        // The leader writes, the replica's position stands: stalled after the window.
        let mut stuck = Evidence::default();
        for s in (0..stall).step_by(10) {
            assert!(observe(&mut stuck, s, 5_000.0, 5_000.0 + s as f64 * 100.0).is_empty());
        }
        let signals = observe(&mut stuck, stall, 5_000.0, 20_000.0);
        assert!(
            matches!(
                signals.as_slice(),
                [Signal::Stalled {
                    received: 5_000,
                    leader: 20_000,
                    ..
                }]
            ),
            "{signals:?}"
        );
        assert!(signals[0].to_string().contains("0/1388"), "{}", signals[0]);
        // It moves again: fine at once.
        assert!(observe(&mut stuck, stall + 10, 6_000.0, 21_000.0).is_empty());

        // A stale position is no evidence either way.
        let mut unknown = Evidence::default();
        let m = replica(at(0), 1024.0);
        unknown.observe(&m, None, at(0), &c);
        let later = unknown.signals(&m, at(stall * 2), &c);
        assert!(
            !later.iter().any(|s| matches!(s, Signal::Stalled { .. })),
            "{later:?}"
        );
    }

    #[test]
    fn lag_is_a_signal_only_after_the_whole_window() {
        let c = config();
        let mut e = Evidence::default();
        let over = c.lag_limit_bytes as f64 * 2.0;
        let t0 = Timestamp::from_secs(1000);
        e.observe(&replica(t0, over), None, t0, &c);
        let almost = t0 + c.lag_window - Duration::from_secs(1);
        e.observe(&replica(almost, over), None, almost, &c);
        assert!(e.signals(&replica(almost, over), almost, &c).is_empty());
        let full = t0 + c.lag_window;
        e.observe(&replica(full, over), None, full, &c);
        let signals = e.signals(&replica(full, over), full, &c);
        assert_eq!(
            signals,
            [Signal::Lagging {
                lag_bytes: over,
                over_since: t0
            }]
        );
        // One reading under the limit restarts the window.
        e.observe(&replica(full, 0.0), None, full, &c);
        e.observe(&replica(full, over), None, full, &c);
        assert!(e.signals(&replica(full, over), full, &c).is_empty());
    }

    #[test]
    fn a_stale_lag_figure_is_no_evidence() {
        let c = config();
        let mut e = Evidence::default();
        let t0 = Timestamp::from_secs(1000);
        let over = c.lag_limit_bytes as f64 * 2.0;
        e.observe(&replica(t0, over), None, t0, &c);
        let later = t0 + c.lag_window + c.stale_after + Duration::from_secs(1);
        // The figure still says t0: too old to count (the member is silent by now, which is
        // its own signal).
        let signals = e.signals(&replica(t0, over), later, &c);
        assert!(
            !signals.iter().any(|s| matches!(s, Signal::Lagging { .. })),
            "{signals:?}"
        );
        assert!(
            signals.iter().any(|s| matches!(s, Signal::Silent { .. })),
            "{signals:?}"
        );
    }

    #[test]
    fn silence_is_measured_from_the_last_answer() {
        let c = config();
        let mut e = Evidence::default();
        let t0 = Timestamp::from_secs(1000);
        e.observe(&replica(t0, 0.0), None, t0, &c);
        let mut mute = replica(t0, 0.0);
        mute.patroni_role = None;
        mute.patroni_state = None;
        mute.streaming = None;
        let later = t0 + c.silence_limit + Duration::from_secs(1);
        e.observe(&mute, None, later, &c);
        assert!(matches!(
            e.signals(&mute, later, &c).as_slice(),
            [Signal::Silent { last_heard: Some(t), .. }] if *t == t0
        ));
        let edge = t0 + c.silence_limit;
        assert!(e.signals(&mute, edge, &c).is_empty());
    }

    #[test]
    fn restart_loops_count_increments_within_the_window() {
        let c = config();
        let mut e = Evidence::default();
        let m = replica(Timestamp::from_secs(0), 0.0);
        let t0 = Timestamp::from_secs(10_000);
        e.observe_restarts(5, t0, &c);
        for i in 1..c.restart_loop_count {
            e.observe_restarts(5 + i, t0 + Duration::from_secs(u64::from(i)), &c);
        }
        let t = t0 + Duration::from_secs(10);
        let fresh = replica(t, 0.0);
        e.observe(&fresh, None, t, &c);
        assert!(e
            .signals(&m, t, &c)
            .iter()
            .all(|s| !matches!(s, Signal::RestartLoop { .. })));
        e.observe_restarts(5 + c.restart_loop_count, t, &c);
        assert!(e
            .signals(&fresh, t, &c)
            .iter()
            .any(|s| matches!(s, Signal::RestartLoop { .. })));
        // Outside the window they no longer count.
        let later = t + c.restart_loop_window + Duration::from_secs(60);
        assert!(!e
            .signals(&fresh, later, &c)
            .iter()
            .any(|s| matches!(s, Signal::RestartLoop { .. })));
    }

    #[test]
    fn full_disk_platform_and_patroni_states_are_signals() {
        let c = config();
        let e = Evidence::default();
        let t = Timestamp::from_secs(50);
        let mut m = replica(t, 0.0);
        m.size = Some(Size {
            cpus: 1.0,
            memory_bytes: 1 << 30,
            disk_bytes: 100,
        });
        m.disk_used = Some(Figure::new(96.0, Source::Platform, t));
        m.platform_state = Some(PlatformState::OomKilled);
        m.patroni_state = Some("crashed".into());
        m.streaming = Some(false);
        let s = e.signals(&m, t, &c);
        assert_eq!(
            s,
            [
                Signal::Platform {
                    state: PlatformState::OomKilled
                },
                Signal::Patroni {
                    state: "crashed".into()
                },
                Signal::NotStreaming,
                Signal::DiskFull {
                    used_bytes: 96.0,
                    disk_bytes: 100
                },
            ]
        );
        assert!(!is_healthy_candidate(&m, &s, t, &c));
        let ok = replica(t, 10.0);
        assert!(is_healthy_candidate(&ok, &e.signals(&ok, t, &c), t, &c));
    }
}
