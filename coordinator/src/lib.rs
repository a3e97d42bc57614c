//! The coordinator: the single place that lets a disruptive action start (DESIGN.md 3).
//!
//! What it is: the guards, as pure state, for ONE cluster. A loop asks
//! [`Coordinator::acquire`] for a [`Grant`] before its first disruptive command and gives it back
//! with [`Coordinator::release`] and an [`GrantOutcome`]. While a grant is out nothing else starts, so
//! at most one disruptive action runs per cluster (promise 1). Every refusal is a typed
//! [`Refusal`] that /status can show. The guards, in the order they are checked:
//!
//! 1. pause switch: nothing starts (like Patroni's pause);
//! 2. one grant at a time, except a live emergency ([`Purpose::Scale`] with `emergency` and not
//!    `disruptive`: a disk grown, or an OOM-killed member's memory grown without a restart)
//!    beside a repair: it disrupts nothing and prevents an outage, so it does not wait
//!    for a repair that may itself be waiting (it never runs beside another scaling plan, which
//!    the scaler preempts itself, nor beside another emergency);
//! 3. scaling waits while the cluster is degraded, except emergencies (so a repair, which is due
//!    exactly when the cluster is degraded, outranks ordinary scaling only);
//! 4. unhealthy majority: half of the members or more look bad and not every one of them is
//!    reported down by two independent sources (the platform and Patroni), so the observer is
//!    suspect and repairs freeze; members that both sources report down are repaired, one at a
//!    time (guard 2);
//! 5. circuit breaker after consecutive failed replacements, half-open after a cooldown;
//! 6. repair budget per hour;
//! 7. quiet period after a recovery.
//!
//! Fencing a former primary once the leader lock has moved ([`Purpose::FenceFormerLeader`]) is
//! checked against the first two guards only: it is a safety action (promise 10), its evidence
//! is positive (another member holds the lock) rather than an absence, and it replaces nothing,
//! so the guards against a suspect observer and against replacement storms do not apply.
//!
//! What it is not: a distributed lock. With several Steward instances, only the lease holder of
//! the etcd/Kubernetes election runs loops at all (promise 8); this is the in-process slot.
//! Nor does it do I/O or judge health: the runtime owns one per cluster, beside both loops; the
//! repairer's core is handed it on every event (it feeds the cluster's health with
//! [`Coordinator::set_health`] and asks for repairs), and the scale loop asks it directly.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use steward_model::operation::OperationId;
use steward_model::Timestamp;

/// Three repairs per cluster per hour: more means something larger than one member is wrong.
pub const DEFAULT_REPAIR_BUDGET_PER_HOUR: u32 = 3;
/// Three failed replacements in a row open the circuit breaker.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 3;
/// An open breaker allows one trial (half-open) after an hour.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(60 * 60);
/// Five minutes without a new repair after a recovery, so the cluster (and its metrics, which
/// lag by a scrape or two) settle first.
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(5 * 60);
/// Half of the members or more looking bad at once points at the observer (DESIGN.md 5).
pub const DEFAULT_UNHEALTHY_MAJORITY: f64 = 0.5;

/// What the coordinator enforces. Built only by the repairer config's validation (`RawRepairConfig::validate`): budget and
/// threshold at least 1, durations above zero, `unhealthy_majority` in (0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct GuardConfig {
    pub repair_budget_per_hour: u32,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub quiet_period: Duration,
    pub unhealthy_majority: f64,
    pub paused: bool,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            repair_budget_per_hour: DEFAULT_REPAIR_BUDGET_PER_HOUR,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            quiet_period: DEFAULT_QUIET_PERIOD,
            unhealthy_majority: DEFAULT_UNHEALTHY_MAJORITY,
            paused: false,
        }
    }
}

/// The budget counts repairs over a sliding hour.
const BUDGET_WINDOW: Duration = Duration::from_secs(60 * 60);

/// What a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum Purpose {
    /// Fence and/or replace a member (counts against the budget, subject to the breaker).
    Repair { member: String },
    /// Fence a former primary after the leader lock moved (promise 10).
    FenceFormerLeader { member: String },
    /// Ask Patroni to move the leader lock away from a degraded primary.
    Switchover { from: String },
    /// A plan of the scaler. `emergency`: it prevents an outage (a disk grown, an OOM-killed
    /// member's memory); `disruptive`: it restarts or switches over a member.
    Scale { emergency: bool, disruptive: bool },
}

impl Purpose {
    fn is_repair(&self) -> bool {
        matches!(self, Purpose::Repair { .. } | Purpose::Switchover { .. })
    }

    /// An emergency that disrupts nothing: it may run beside a repair.
    fn is_live_emergency(&self) -> bool {
        matches!(
            self,
            Purpose::Scale {
                emergency: true,
                disruptive: false
            }
        )
    }
}

/// The cluster's health as the repairer last judged it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterHealth {
    /// Database members counted by the majority guard (members in a repair of ours are left out:
    /// we know why they look bad).
    pub members: usize,
    /// Of those, how many show a signal right now.
    pub looking_bad: usize,
    /// Of those, how many two independent sources report down: the platform (the member is
    /// exited, dead or paused) AND Patroni (it reports the member down, not streaming, or no
    /// longer lists it in an answering `/cluster`). Such a member is down whatever the observer's
    /// health; a suspect observer (a DCS outage, a network cut from Steward) shows members that
    /// look bad to one source only.
    pub corroborated: usize,
    /// Whether any member at all is not healthy (including those under repair).
    pub degraded: bool,
}

/// Why a disruptive action may not start now.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    Paused,
    Busy {
        holder: OperationId,
        purpose: Purpose,
    },
    Degraded {
        looking_bad: usize,
    },
    UnhealthyMajority {
        looking_bad: usize,
        members: usize,
    },
    BreakerOpen {
        failures: u32,
        trial_at: Timestamp,
    },
    BudgetSpent {
        used: u32,
        budget: u32,
        next_at: Timestamp,
    },
    QuietPeriod {
        until: Timestamp,
    },
}

impl Refusal {
    /// A stable short name (metrics label, alert key).
    pub fn key(&self) -> &'static str {
        match self {
            Refusal::Paused => "paused",
            Refusal::Busy { .. } => "busy",
            Refusal::Degraded { .. } => "degraded",
            Refusal::UnhealthyMajority { .. } => "unhealthy_majority",
            Refusal::BreakerOpen { .. } => "breaker_open",
            Refusal::BudgetSpent { .. } => "budget_spent",
            Refusal::QuietPeriod { .. } => "quiet_period",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Paused => f.write_str("the cluster is paused"),
            Refusal::Busy { holder, purpose } => {
                write!(
                    f,
                    "operation {holder} ({}) is in progress",
                    purpose_name(purpose)
                )
            }
            // `looking_bad` counts database members outside our repairs: a balancer, or a
            // member already under repair, degrades the cluster without being counted.
            Refusal::Degraded { looking_bad: 0 } => f.write_str(
                "the cluster is degraded (a member is under repair, or a balancer is not \
                 healthy): repairs come first",
            ),
            Refusal::Degraded { looking_bad } => write!(
                f,
                "the cluster is degraded ({looking_bad} member(s) look bad): repairs come first"
            ),
            Refusal::UnhealthyMajority {
                looking_bad,
                members,
            } => write!(
                f,
                "{looking_bad} of {members} members look bad at once: the observer is suspect, \
                 repairs are frozen"
            ),
            Refusal::BreakerOpen { failures, trial_at } => write!(
                f,
                "the circuit breaker is open after {failures} failed replacement(s); \
                 next trial at {trial_at}"
            ),
            Refusal::BudgetSpent {
                used,
                budget,
                next_at,
            } => write!(
                f,
                "the repair budget is spent ({used} of {budget} this hour); next at {next_at}"
            ),
            Refusal::QuietPeriod { until } => {
                write!(f, "quiet period after a recovery until {until}")
            }
        }
    }
}

fn purpose_name(p: &Purpose) -> &'static str {
    match p {
        Purpose::Repair { .. } => "repair",
        Purpose::FenceFormerLeader { .. } => "fence former leader",
        Purpose::Switchover { .. } => "switchover",
        Purpose::Scale { .. } => "scaling",
    }
}

/// How a granted action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantOutcome {
    /// A member was replaced, or the leader moved away from a degraded primary: the breaker
    /// closes (for repairs) and the quiet period starts.
    Recovered,
    /// A replacement did not come up: counts towards the breaker.
    ReplacementFailed,
    /// Finished without a recovery to settle from (a fence, a scaling step) or given up for a
    /// reason that says nothing about replacements.
    Done,
}

/// The circuit breaker over replacements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        failures: u32,
        since: Timestamp,
    },
    /// One trial is allowed; its outcome closes or reopens the breaker.
    HalfOpen {
        failures: u32,
    },
}

/// The right to run one disruptive action. Not `Clone`: there is one, and it goes back with
/// [`Coordinator::release`].
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    op: OperationId,
    purpose: Purpose,
    since: Timestamp,
}

impl Grant {
    pub fn op(&self) -> &OperationId {
        &self.op
    }
    pub fn purpose(&self) -> &Purpose {
        &self.purpose
    }
    pub fn since(&self) -> Timestamp {
        self.since
    }
}

/// The guards of one cluster.
#[derive(Clone, Debug)]
pub struct Coordinator {
    config: GuardConfig,
    paused: bool,
    holder: Option<(OperationId, Purpose, Timestamp)>,
    /// A live emergency granted beside the holder (see guard 2).
    beside: Option<OperationId>,
    health: ClusterHealth,
    breaker: Breaker,
    /// When each repair in the last hour started.
    repairs: VecDeque<Timestamp>,
    quiet_until: Option<Timestamp>,
}

impl Coordinator {
    pub fn new(config: GuardConfig) -> Self {
        Coordinator {
            paused: config.paused,
            config,
            holder: None,
            beside: None,
            health: ClusterHealth::default(),
            breaker: Breaker::Closed { failures: 0 },
            repairs: VecDeque::new(),
            quiet_until: None,
        }
    }

    pub fn set_health(&mut self, health: ClusterHealth) {
        self.health = health;
    }

    pub fn health(&self) -> ClusterHealth {
        self.health
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Closes the breaker: the operator says the cause of the failures is fixed.
    pub fn reset_breaker(&mut self) {
        self.breaker = Breaker::Closed { failures: 0 };
    }

    pub fn breaker(&self) -> Breaker {
        self.breaker
    }

    /// The operation holding the slot, if any.
    pub fn holder(&self) -> Option<(&OperationId, &Purpose)> {
        self.holder.as_ref().map(|(op, p, _)| (op, p))
    }

    /// Whether `purpose` may start at `now`, without taking the slot.
    pub fn check(&self, purpose: &Purpose, now: Timestamp) -> Result<(), Refusal> {
        if self.paused {
            return Err(Refusal::Paused);
        }
        if let Some((op, p, _)) = &self.holder {
            let beside_a_repair = purpose.is_live_emergency()
                && !matches!(p, Purpose::Scale { .. })
                && self.beside.is_none();
            if !beside_a_repair {
                return Err(Refusal::Busy {
                    holder: op.clone(),
                    purpose: p.clone(),
                });
            }
        }
        match purpose {
            Purpose::FenceFormerLeader { .. } => Ok(()),
            Purpose::Scale {
                emergency: true, ..
            } => Ok(()),
            Purpose::Scale {
                emergency: false, ..
            } => {
                if self.health.degraded {
                    return Err(Refusal::Degraded {
                        looking_bad: self.health.looking_bad,
                    });
                }
                self.check_quiet(now)
            }
            Purpose::Repair { .. } | Purpose::Switchover { .. } => {
                let h = self.health;
                // The guard judges the evidence, not the count: when every member that looks bad
                // is reported down by two independent sources, the observer is not what is wrong,
                // and the members are repaired (one at a time: the slot still holds).
                let all_corroborated = h.corroborated >= h.looking_bad;
                if h.members > 0
                    && h.looking_bad as f64 >= self.config.unhealthy_majority * h.members as f64
                    && !all_corroborated
                {
                    return Err(Refusal::UnhealthyMajority {
                        looking_bad: h.looking_bad,
                        members: h.members,
                    });
                }
                if matches!(purpose, Purpose::Repair { .. }) {
                    if let Breaker::Open { failures, since } = self.breaker {
                        let trial_at = since + self.config.breaker_cooldown;
                        if now < trial_at {
                            return Err(Refusal::BreakerOpen { failures, trial_at });
                        }
                    }
                }
                let used = self.repairs_in_window(now);
                if used >= self.config.repair_budget_per_hour {
                    let oldest = self
                        .repairs
                        .iter()
                        .copied()
                        .find(|t| now.since(*t) < BUDGET_WINDOW)
                        .unwrap_or(now);
                    return Err(Refusal::BudgetSpent {
                        used,
                        budget: self.config.repair_budget_per_hour,
                        next_at: oldest + BUDGET_WINDOW,
                    });
                }
                self.check_quiet(now)
            }
        }
    }

    fn check_quiet(&self, now: Timestamp) -> Result<(), Refusal> {
        match self.quiet_until {
            Some(until) if now < until => Err(Refusal::QuietPeriod { until }),
            _ => Ok(()),
        }
    }

    fn repairs_in_window(&self, now: Timestamp) -> u32 {
        self.repairs
            .iter()
            .filter(|t| now.since(**t) < BUDGET_WINDOW)
            .count() as u32
    }

    /// Takes the slot for `purpose` under operation `op`, or says why not.
    pub fn acquire(
        &mut self,
        purpose: Purpose,
        op: OperationId,
        now: Timestamp,
    ) -> Result<Grant, Refusal> {
        self.check(&purpose, now)?;
        if purpose.is_repair() {
            self.repairs.retain(|t| now.since(*t) < BUDGET_WINDOW);
            self.repairs.push_back(now);
        }
        if matches!(purpose, Purpose::Repair { .. }) {
            if let Breaker::Open { failures, .. } = self.breaker {
                // `check` let it through, so the cooldown is over: this repair is the trial.
                self.breaker = Breaker::HalfOpen { failures };
            }
        }
        if self.holder.is_some() {
            // `check` let a live emergency through beside a repair.
            self.beside = Some(op.clone());
        } else {
            self.holder = Some((op.clone(), purpose.clone(), now));
        }
        Ok(Grant {
            op,
            purpose,
            since: now,
        })
    }

    /// Takes the slot again for an operation granted before a restart (journaled, half done):
    /// only a holder refuses it. The guards judged it when it began; stopping it halfway would
    /// leave the cluster worse than finishing it (a fenced member with no replacement), and a
    /// pause still holds its steps back. A repair counts against the budget again, so restarts
    /// in a loop cannot repair without bound.
    pub fn resume(
        &mut self,
        purpose: Purpose,
        op: OperationId,
        now: Timestamp,
    ) -> Result<Grant, Refusal> {
        if let Some((holder, p, _)) = &self.holder {
            return Err(Refusal::Busy {
                holder: holder.clone(),
                purpose: p.clone(),
            });
        }
        if purpose.is_repair() {
            self.repairs.retain(|t| now.since(*t) < BUDGET_WINDOW);
            self.repairs.push_back(now);
        }
        self.holder = Some((op.clone(), purpose.clone(), now));
        Ok(Grant {
            op,
            purpose,
            since: now,
        })
    }

    /// Gives the slot back, with how the action ended.
    pub fn release(&mut self, grant: Grant, outcome: GrantOutcome, now: Timestamp) {
        if self
            .holder
            .as_ref()
            .is_some_and(|(op, _, _)| *op == grant.op)
        {
            self.holder = None;
        }
        if self.beside.as_ref() == Some(&grant.op) {
            self.beside = None;
        }
        let replaces = matches!(grant.purpose, Purpose::Repair { .. });
        match outcome {
            GrantOutcome::Recovered => {
                if replaces {
                    self.breaker = Breaker::Closed { failures: 0 };
                }
                self.quiet_until = Some(now + self.config.quiet_period);
            }
            GrantOutcome::ReplacementFailed if replaces => {
                self.breaker = match self.breaker {
                    Breaker::Closed { failures }
                        if failures + 1 < self.config.breaker_threshold =>
                    {
                        Breaker::Closed {
                            failures: failures + 1,
                        }
                    }
                    Breaker::Closed { failures }
                    | Breaker::HalfOpen { failures }
                    | Breaker::Open { failures, .. } => Breaker::Open {
                        failures: failures + 1,
                        since: now,
                    },
                };
            }
            GrantOutcome::ReplacementFailed | GrantOutcome::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> Coordinator {
        Coordinator::new(GuardConfig::default())
    }

    fn repair() -> Purpose {
        Purpose::Repair {
            member: "pg-2".into(),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    fn scale(emergency: bool, disruptive: bool) -> Purpose {
        Purpose::Scale {
            emergency,
            disruptive,
        }
    }

    /// Promise 1: one grant at a time; the second asker is told who holds it.
    #[test]
    fn one_grant_at_a_time() {
        let mut c = coordinator();
        let grant = c.acquire(repair(), OperationId::new("c", 1), t(0)).unwrap();
        for purpose in [scale(false, false), scale(true, true), repair()] {
            let refused = c.acquire(purpose, OperationId::new("c", 2), t(1));
            assert_eq!(
                refused,
                Err(Refusal::Busy {
                    holder: OperationId::new("c", 1),
                    purpose: repair()
                })
            );
        }
        c.release(grant, GrantOutcome::Done, t(2));
        assert!(c
            .acquire(scale(false, false), OperationId::new("c", 2), t(3))
            .is_ok());
    }

    /// Emergencies first (issue 14): a live emergency (a disk or memory grown without a restart)
    /// runs beside a repair that holds the slot, one at a time, and never beside a scaling plan;
    /// the repair's slot is untouched by it.
    #[test]
    fn a_live_emergency_runs_beside_a_repair_and_only_one() {
        let mut c = coordinator();
        let repairing = c.acquire(repair(), OperationId::new("c", 1), t(0)).unwrap();
        let disk = c
            .acquire(scale(true, false), OperationId::new("c", 2), t(1))
            .expect("a live emergency beside a repair");
        assert!(matches!(
            c.acquire(scale(true, false), OperationId::new("c", 3), t(2)),
            Err(Refusal::Busy { .. })
        ));
        c.release(disk, GrantOutcome::Done, t(3));
        assert_eq!(
            c.holder().map(|(op, _)| op.clone()),
            Some(OperationId::new("c", 1))
        );
        assert!(c
            .acquire(scale(true, false), OperationId::new("c", 4), t(4))
            .is_ok());
        c.release(repairing, GrantOutcome::Done, t(5));
        assert!(c.holder().is_none());

        let mut c = coordinator();
        let _plan = c
            .acquire(scale(false, false), OperationId::new("c", 1), t(0))
            .unwrap();
        assert!(matches!(
            c.acquire(scale(true, false), OperationId::new("c", 2), t(1)),
            Err(Refusal::Busy { .. })
        ));
    }

    /// Scaling waits while degraded, except emergencies.
    #[test]
    fn scaling_waits_while_degraded_except_emergencies() {
        let mut c = coordinator();
        c.set_health(ClusterHealth {
            members: 3,
            looking_bad: 1,
            corroborated: 0,
            degraded: true,
        });
        assert_eq!(
            c.check(&scale(false, false), t(0)),
            Err(Refusal::Degraded { looking_bad: 1 })
        );
        assert_eq!(c.check(&scale(true, false), t(0)), Ok(()));
        assert_eq!(c.check(&scale(true, true), t(0)), Ok(()));
    }

    /// The breaker opens after the threshold, lets one trial through after the cooldown, and
    /// reopens when the trial fails.
    #[test]
    fn breaker_opens_half_opens_and_reopens() {
        let mut c = coordinator();
        let cfg = GuardConfig::default();
        let mut now = t(0);
        for i in 0..cfg.breaker_threshold {
            let grant = c
                .acquire(repair(), OperationId::new("c", u64::from(i)), now)
                .unwrap();
            c.release(grant, GrantOutcome::ReplacementFailed, now);
            // Spread the repairs so the budget is not what stops them.
            now = now + BUDGET_WINDOW;
        }
        let opened = now - BUDGET_WINDOW;
        assert_eq!(
            c.breaker(),
            Breaker::Open {
                failures: cfg.breaker_threshold,
                since: opened
            }
        );
        let early = opened + cfg.breaker_cooldown - Duration::from_secs(1);
        assert!(matches!(
            c.check(&repair(), early),
            Err(Refusal::BreakerOpen { .. })
        ));
        let trial_time = opened + cfg.breaker_cooldown;
        let grant = c
            .acquire(repair(), OperationId::new("c", 9), trial_time)
            .unwrap();
        assert!(matches!(c.breaker(), Breaker::HalfOpen { .. }));
        c.release(grant, GrantOutcome::ReplacementFailed, trial_time);
        assert!(matches!(c.breaker(), Breaker::Open { since, .. } if since == trial_time));
        c.reset_breaker();
        assert_eq!(c.check(&repair(), trial_time), Ok(()));
    }

    /// The budget is a sliding hour.
    #[test]
    fn budget_is_a_sliding_hour() {
        let mut c = coordinator();
        let budget = GuardConfig::default().repair_budget_per_hour;
        for i in 0..budget {
            let at = t(i64::from(i) * 600);
            let grant = c
                .acquire(repair(), OperationId::new("c", u64::from(i)), at)
                .unwrap();
            c.release(grant, GrantOutcome::Done, at);
        }
        let refused = c.check(&repair(), t(1800));
        assert_eq!(
            refused,
            Err(Refusal::BudgetSpent {
                used: budget,
                budget,
                next_at: t(0) + BUDGET_WINDOW
            })
        );
        assert_eq!(c.check(&repair(), t(3600)), Ok(()));
    }

    /// A fence of a former leader passes every guard but pause and the slot.
    #[test]
    fn fencing_a_former_leader_is_only_stopped_by_pause_and_the_slot() {
        let mut c = coordinator();
        c.set_health(ClusterHealth {
            members: 3,
            looking_bad: 2,
            corroborated: 0,
            degraded: true,
        });
        let fence = Purpose::FenceFormerLeader {
            member: "pg-1".into(),
        };
        assert!(matches!(
            c.check(&repair(), t(0)),
            Err(Refusal::UnhealthyMajority { .. })
        ));
        assert_eq!(c.check(&fence, t(0)), Ok(()));
        c.set_paused(true);
        assert_eq!(c.check(&fence, t(0)), Err(Refusal::Paused));
    }

    /// The majority guard judges the evidence: most members looking bad freezes repairs while
    /// any of them looks bad to one source only (the observer is suspect); when the platform and
    /// Patroni both report every one of them down, repairs go on, one at a time.
    #[test]
    fn a_majority_down_by_two_sources_is_repaired_one_at_a_time() {
        let mut c = coordinator();
        let health = |corroborated| ClusterHealth {
            members: 3,
            looking_bad: 2,
            corroborated,
            degraded: true,
        };
        c.set_health(health(1));
        assert_eq!(
            c.check(&repair(), t(0)),
            Err(Refusal::UnhealthyMajority {
                looking_bad: 2,
                members: 3
            }),
            "one of the two looks bad to one source only: the observer is suspect"
        );
        c.set_health(health(2));
        let grant = c.acquire(repair(), OperationId::new("c", 1), t(0)).unwrap();
        assert!(
            matches!(c.check(&repair(), t(0)), Err(Refusal::Busy { .. })),
            "still one repair at a time"
        );
        c.release(grant, GrantOutcome::Done, t(1));
        assert_eq!(c.check(&repair(), t(1) + DEFAULT_QUIET_PERIOD), Ok(()));
    }
}
