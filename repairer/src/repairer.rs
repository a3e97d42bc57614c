//! The repair core: a sans-IO state machine (quinn-proto style) for one cluster.
//!
//! What it is: [`Repairer::handle`] takes one [`Event`] and `now` and returns the [`Command`]s
//! to carry out. It keeps each member's [`Health`] and signal evidence, knows which member holds
//! the leader lock, runs at most one repair at a time under a [`Grant`] of its [`Coordinator`],
//! and issues that repair's steps one by one, each only after the previous one was confirmed by
//! [`Event::ActionDone`]. So at most one disruptive command is ever in flight (promise 1).
//!
//! What it is not: a driver. It reads no clock, performs no I/O and never retries on its own
//! timer: a driver feeds it observations, action results and ticks, and journals the commands
//! (promise 7) before executing them. It does not decide sizes (the scaler does).
//!
//! The rules for the primary, which are the subtle part:
//! - The member holding the leader lock is never fenced, by any path. While it looks bad and no
//!   replica is a healthy candidate (streaming, lag under the limit), it is left alone and an
//!   alert is raised: fencing it would leave the cluster without a writer.
//! - A primary that is alive but degraded (full disk, a bad Patroni state, a restart loop) with a
//!   healthy candidate gets a switchover asked of Patroni; a dead one is Patroni's to fail over.
//! - Once the lock has moved to another member, the former primary is fenced AT ONCE, without a
//!   grace window, if it is still present and frozen, down, silent or still claiming to lead: a
//!   zombie that thaws might write (promise 10). If a repair holds the cluster's grant, the fence
//!   goes to the front of that repair's steps as soon as nothing is in flight (a repair waiting
//!   for its replacement to stream does not hold it back). The replacement of the former primary
//!   then goes through every guard.
//!
//! The repair plans (each step is one command, except the waits):
//! - fence first, for a member that might still write: drain, fence, create, await streaming,
//!   remove;
//! - create first (surge), for a member that is only slow (lagging, otherwise fine): create,
//!   await streaming, drain, fence, remove;
//! - a fenced member (e.g. a former primary) is replaced: create, await streaming, remove.
//!
//! The old member's data is kept (`Remove { delete_data: false }`) until its replacement has been
//! seen streaming; only then is `delete_data` true.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::observation::{
    Figure, Freshness, MemberObservation, Observation, PatroniRole, PlatformState,
};
use steward_model::ports::platform::{unfinished_replacements, ErrorKind, LABEL_REPLACES};
use steward_model::{NameMap, Role, Timestamp};

use crate::command::{
    ActionError, Alert, Command, CommandKind, Event, OperationId, OperatorCommand,
};
use crate::config::RepairConfig;
use crate::health::Health;
use crate::signal::{self, Evidence, Signal};
use steward_coordinator::{ClusterHealth, Coordinator, Grant, GrantOutcome, Purpose, Refusal};

/// A step that failed with a transient error or a conflict is tried this many times in all.
const MAX_ATTEMPTS: u32 = 3;
/// ... and not sooner than this after the failure (the driver ticks; the core has no timer).
const RETRY_DELAY: Duration = Duration::from_secs(10);
/// A replacement the platform refused (no host left, a size larger than any host) cannot succeed
/// before the topology changes: the member is not repaired again for this long. It is no failed
/// replacement (nothing was made), so it counts neither for the breaker nor as a retry.
const REFUSED_HOLD: Duration = Duration::from_secs(10 * 60);

/// Which plan a repair follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairKind {
    /// Drain, fence, create, await streaming, remove.
    FenceFirst,
    /// Create, await streaming, drain, fence, remove (the old member is only slow).
    Surge,
    /// Create, await streaming, remove (the old member is already fenced).
    ReplaceFenced,
    /// Fence and drain a former primary at once.
    FenceFormerLeader,
    /// Ask Patroni for a switchover and wait for the lock to move.
    Switchover,
}

/// One step of a repair's plan, waits included. Every step is idempotent against the world
/// (draining, fencing or removing what is already so is done; a create that finds the member it
/// made is done), so a repair resumed after a crash runs its first step again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStep {
    Drain(String),
    Fence(String),
    /// Create the replacement (its name is the repair's `replacement`).
    Create,
    /// Wait for the replacement to stream with a small lag (or, for a balancer, to run).
    AwaitStreaming,
    Remove(String),
    AskSwitchover {
        to: Option<String>,
    },
    AwaitLeaderMove,
}

use RepairStep as Step;

impl RepairStep {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Drain(_) => "drain",
            Step::Fence(_) => "fence",
            Step::Create => "create",
            Step::AwaitStreaming => "verify",
            Step::Remove(_) => "remove",
            Step::AskSwitchover { .. } => "switchover",
            Step::AwaitLeaderMove => "await leader move",
        }
    }

    fn is_wait(&self) -> bool {
        matches!(self, Step::AwaitStreaming | Step::AwaitLeaderMove)
    }
}

/// A repair as a whole operation, as the journal stores it: its id, its plan and, through the
/// steps not done yet, its cursor. The driver journals it before any of its steps runs and
/// after each one; a Steward that starts again hands it back with [`Repairer::resume`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepairRecord {
    pub id: OperationId,
    /// When the coordinator granted it (with `id`, the platform label of what it creates).
    pub started_at: Timestamp,
    pub kind: RepairKind,
    pub target: String,
    pub role: Role,
    /// The name the replacement gets (used only by plans that create).
    pub replacement: String,
    /// Why the repair started.
    pub why: String,
    /// Former primaries fenced in the middle of this repair, with why.
    #[serde(default)]
    pub urgent: BTreeMap<String, String>,
    /// The steps not done yet; the first may have started (it is run again on resume).
    pub steps: Vec<RepairStep>,
    /// Commands issued so far.
    pub issued: u32,
    pub target_fenced: bool,
    pub replacement_created: bool,
    pub replacement_streams: bool,
    /// The replacement failed: the remaining steps clean it up.
    pub failed: bool,
    /// Given up for a reason that says nothing about replacements.
    pub aborted: bool,
}

impl RepairRecord {
    /// The platform label of what this repair creates.
    pub fn label(&self) -> String {
        self.id.label(self.started_at)
    }
}

/// The repair in progress.
#[derive(Debug)]
struct Repair {
    grant: Grant,
    started_at: Timestamp,
    kind: RepairKind,
    target: String,
    role: Role,
    /// The name the replacement gets (used only by plans that create).
    replacement: String,
    /// Why the repair started, for every command's reason.
    why: String,
    /// Former primaries fenced in the middle of this repair (promise 10), with why.
    urgent: BTreeMap<String, String>,
    steps: VecDeque<Step>,
    /// The command in flight: its id and the step (still at the front of `steps`).
    in_flight: Option<OperationId>,
    /// Commands issued so far (numbers the command ids `<repair>/<n>`).
    issued: u32,
    /// Failed attempts of the front step.
    attempts: u32,
    retry_after: Option<Timestamp>,
    /// When the current wait (streaming, leader move) began.
    waiting_since: Option<Timestamp>,
    target_fenced: bool,
    replacement_created: bool,
    replacement_streams: bool,
    /// The replacement failed: the remaining steps clean it up.
    failed: bool,
    /// Given up for a reason that says nothing about replacements.
    aborted: bool,
}

/// What the core remembers about one member.
#[derive(Clone, Debug)]
struct Tracked {
    /// Kept from the last observation that said it: a fenced member may drop out of view.
    role: Option<Role>,
    health: Health,
    evidence: Evidence,
    signals: Vec<Signal>,
}

impl Tracked {
    fn new() -> Self {
        Tracked {
            role: None,
            health: Health::Healthy,
            evidence: Evidence::default(),
            signals: Vec::new(),
        }
    }
}

/// The repairer of one cluster.
#[derive(Debug)]
pub struct Repairer {
    cluster: String,
    config: RepairConfig,
    /// By name, in name order: a few, so a list (a `BTreeMap` node has room for 11). Boxed:
    /// the list keeps spare places (a fourth for three members), empty boxes rather than
    /// empty records.
    members: NameMap<Box<Tracked>>,
    last: Option<Observation>,
    /// The member last known to hold the leader lock.
    leader: Option<String>,
    /// The member that held it before `leader`, until it is fenced, gone, or a healthy replica.
    former_leader: Option<String>,
    repair: Option<Repair>,
    next_seq: u64,
    /// Keys of the condition alerts raised and not yet cleared.
    raised: BTreeSet<String>,
    last_refusal: Option<Refusal>,
    /// Members whose replacement the platform refused, and until when they are left alone.
    held_back: BTreeMap<String, Timestamp>,
    /// From the last listing: running replacements (by name) whose label says which member
    /// they replace, while that member is still listed. Outside a repair, that is a repair whose
    /// journal record was lost: it is finished (see `try_start`).
    unfinished: BTreeMap<String, String>,
}

enum Verification {
    Streams,
    Waiting,
    Failed(String),
}

/// `name`'s entry, made if new (one search; the name copied only when new).
fn tracked<'a>(members: &'a mut NameMap<Box<Tracked>>, name: &str) -> &'a mut Tracked {
    members.get_or_insert_with(name, || Box::new(Tracked::new()))
}

fn base_name(name: &str) -> &str {
    // `pg-1-r7` -> `pg-1`, so that repeated replacements do not grow the name.
    match name.rsplit_once("-r") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

impl Repairer {
    pub fn new(cluster: impl Into<String>, config: RepairConfig) -> Self {
        Repairer {
            cluster: cluster.into(),
            config,
            members: NameMap::new(),
            last: None,
            leader: None,
            former_leader: None,
            repair: None,
            next_seq: 1,
            raised: BTreeSet::new(),
            last_refusal: None,
            held_back: BTreeMap::new(),
            unfinished: BTreeMap::new(),
        }
    }

    /// Feeds one event in; returns what to do now. `coordinator` is the cluster's one
    /// coordinator (the runtime's, shared with the scale loop): the repairer feeds it the
    /// cluster's health and asks it before a repair starts.
    pub fn handle(
        &mut self,
        event: Event,
        now: Timestamp,
        coordinator: &mut Coordinator,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::Observed(observation) => self.observe(observation),
            Event::PlatformListed { at, members } => {
                self.unfinished = unfinished_replacements(&self.cluster, &members);
                for m in members.iter().filter(|m| m.cluster == self.cluster) {
                    tracked(&mut self.members, &m.name)
                        .evidence
                        .observe_restarts(m.restart_count, at, &self.config.signals);
                }
            }
            Event::ActionDone { op, result } => self.action_done(&op, result, now, &mut out),
            Event::Tick => {}
            Event::Operator(OperatorCommand::Pause) => coordinator.set_paused(true),
            Event::Operator(OperatorCommand::Resume) => coordinator.set_paused(false),
            Event::Operator(OperatorCommand::ResetBreaker) => coordinator.reset_breaker(),
        }
        self.judge(now, coordinator);
        self.decide(now, &mut out, coordinator);
        out
    }

    // -----------------------------------------------------------------------------------------
    // What the status page reads.
    // -----------------------------------------------------------------------------------------

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn health(&self, member: &str) -> Option<&Health> {
        self.members.get(member).map(|t| &t.health)
    }

    pub fn signals(&self, member: &str) -> Option<&[Signal]> {
        self.members.get(member).map(|t| t.signals.as_slice())
    }

    /// Every tracked member with its health and current signals, by name.
    pub fn members(&self) -> impl Iterator<Item = (&str, &Health, &[Signal])> {
        self.members
            .iter()
            .map(|(n, t)| (n.as_str(), &t.health, t.signals.as_slice()))
    }

    /// The member believed to hold the leader lock.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The last refusal a guard gave the repairer (cleared when a repair starts).
    pub fn last_refusal(&self) -> Option<&Refusal> {
        self.last_refusal.as_ref()
    }

    /// The command awaiting its result, if any.
    pub fn in_flight(&self) -> Option<&OperationId> {
        self.repair.as_ref().and_then(|r| r.in_flight.as_ref())
    }

    /// The repair in progress: its kind and the member it repairs.
    pub fn current_repair(&self) -> Option<(RepairKind, &str)> {
        self.repair.as_ref().map(|r| (r.kind, r.target.as_str()))
    }

    /// The repair in progress as a whole operation, for the journal: written before any of
    /// its steps runs and after each one (the driver compares snapshots and writes the changed).
    pub fn ongoing(&self) -> Option<RepairRecord> {
        self.repair.as_ref().map(|r| RepairRecord {
            id: r.grant.op().clone(),
            started_at: r.started_at,
            kind: r.kind,
            target: r.target.clone(),
            role: r.role,
            replacement: r.replacement.clone(),
            why: r.why.clone(),
            urgent: r.urgent.clone(),
            steps: r.steps.iter().cloned().collect(),
            issued: r.issued,
            target_fenced: r.target_fenced,
            replacement_created: r.replacement_created,
            replacement_streams: r.replacement_streams,
            failed: r.failed,
            aborted: r.aborted,
        })
    }

    /// Takes back a repair a previous Steward journaled and did not finish: the coordinator's
    /// slot is taken again ([`Coordinator::resume`]) and the repair goes on from its first step
    /// not known done, which runs again (every step is idempotent). A wait it was in starts its
    /// window afresh. Refused only when the slot is held (by another resumed operation).
    pub fn resume(
        &mut self,
        record: RepairRecord,
        now: Timestamp,
        coordinator: &mut Coordinator,
    ) -> Result<(), Refusal> {
        let purpose = match record.kind {
            RepairKind::FenceFirst | RepairKind::Surge | RepairKind::ReplaceFenced => {
                Purpose::Repair {
                    member: record.target.clone(),
                }
            }
            RepairKind::FenceFormerLeader => Purpose::FenceFormerLeader {
                member: record.target.clone(),
            },
            RepairKind::Switchover => Purpose::Switchover {
                from: record.target.clone(),
            },
        };
        let grant = coordinator.resume(purpose, record.id.clone(), now)?;
        if let Some(seq) = record
            .id
            .as_str()
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
        {
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
        }
        let target = tracked(&mut self.members, &record.target);
        target.role = Some(record.role);
        target.health = if record.replacement_created {
            Health::Verifying {
                replacement: record.replacement.clone(),
                since: now,
            }
        } else if record.target_fenced {
            Health::Fenced
        } else {
            Health::Fencing
        };
        if record.kind == RepairKind::Switchover || record.kind == RepairKind::FenceFormerLeader {
            // Nothing of the member is replaced: what it is, the observations say afresh.
            target.health = Health::Confirmed { since: now };
        }
        let waiting = record.steps.first().is_some_and(RepairStep::is_wait);
        self.repair = Some(Repair {
            grant,
            started_at: record.started_at,
            kind: record.kind,
            target: record.target,
            role: record.role,
            replacement: record.replacement,
            why: record.why,
            urgent: record.urgent,
            steps: record.steps.into(),
            in_flight: None,
            issued: record.issued,
            attempts: 0,
            retry_after: None,
            waiting_since: (waiting || record.replacement_created).then_some(now),
            target_fenced: record.target_fenced,
            replacement_created: record.replacement_created,
            replacement_streams: record.replacement_streams,
            failed: record.failed,
            aborted: record.aborted,
        });
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Observing and judging.
    // -----------------------------------------------------------------------------------------

    fn observe(&mut self, observation: Observation) {
        if observation.cluster != self.cluster {
            // Another cluster's snapshot, misrouted by a driver: not evidence about ours.
            return;
        }
        // A member the platform answered without (removed by a scale-in or a finished repair,
        // or never ours) is nothing to repair: Patroni keeps a stopped member's key until its
        // TTL, and what the platform does not list cannot be fenced or replaced by us. Unless a
        // repair of ours still concerns it.
        let concerned: BTreeSet<String> = self
            .repair
            .iter()
            .flat_map(|r| [r.target.clone(), r.replacement.clone()])
            .chain(
                self.members
                    .iter()
                    .filter(|(_, t)| t.health.is_under_repair())
                    .map(|(n, _)| n.clone()),
            )
            .collect();
        let ours = |m: &&MemberObservation| {
            m.in_platform != Some(false) || concerned.contains(m.name.as_str())
        };
        let leader_position = observation.leader().and_then(|l| l.wal_position);
        for m in observation.members.iter().filter(ours) {
            let tracked = tracked(&mut self.members, &m.name);
            if m.role.is_some() {
                tracked.role = m.role;
            }
            tracked.evidence.observe(
                m,
                leader_position.as_ref(),
                observation.at,
                &self.config.signals,
            );
        }
        // A handful of names: a list, not a set (a node allocated per observation).
        let present: Vec<&str> = observation
            .members
            .iter()
            .filter(ours)
            .map(|m| m.name.as_str())
            .collect();
        let repair = self.repair.as_ref();
        // Forget members that are gone, unless a repair of ours still concerns them (a fenced
        // member awaiting its replacement may drop out of Patroni's list).
        self.members.retain(|name, t| {
            present.contains(&name.as_str())
                || t.health.is_under_repair()
                || repair.is_some_and(|r| r.target == *name || r.replacement == *name)
        });
        self.last = Some(observation);
    }

    /// Recomputes every present member's signals and health at `now`, then the leader.
    fn judge(&mut self, now: Timestamp, coordinator: &mut Coordinator) {
        let Some(observation) = &self.last else {
            return;
        };
        let replacement = self.repair.as_ref().map(|r| r.replacement.as_str());
        for m in &observation.members {
            let Some(t) = self.members.get_mut(&m.name) else {
                continue;
            };
            if Some(m.name.as_str()) == replacement {
                // A member still joining is judged by the verification step, not by signals.
                t.signals.clear();
                continue;
            }
            // Judged at the time of the evidence: between two looks (an action's result, the
            // platform's list before the observation of the same tick) nothing new was heard,
            // and time passing is not silence. A slow tick (a dead member's address timing out
            // on a real network) made every member "silent" at once otherwise.
            t.signals = t.evidence.signals(m, observation.at, &self.config.signals);
            t.health = t
                .health
                .judge(!t.signals.is_empty(), now, self.config.signals.grace_window);
        }
        self.update_leader();
        let health = self.cluster_health();
        coordinator.set_health(health);
    }

    fn update_leader(&mut self) {
        let Some(observation) = &self.last else {
            return;
        };
        let claims = |m: &&MemberObservation| m.patroni_role == Some(PatroniRole::Leader);
        let mut claimants = observation.members.iter().filter(claims);
        // Borrowed, and without a list for the usual one claimant: judged three times a tick,
        // and the holder rarely changes.
        let holder: Option<&str> = match (claimants.next(), claimants.next()) {
            (None, _) => None,
            (Some(only), None) => Some(only.name.as_str()),
            _ => {
                let several: Vec<&MemberObservation> =
                    observation.members.iter().filter(claims).collect();
                // Two members claim the lock: one is stale (a frozen primary's last answer).
                // Believe the one that shows no signal; failing that the newest timeline.
                let fine: Vec<_> = several
                    .iter()
                    .filter(|m| {
                        self.members
                            .get(&m.name)
                            .is_some_and(|t| t.signals.is_empty())
                    })
                    .collect();
                if let [one] = fine.as_slice() {
                    Some(one.name.as_str())
                } else {
                    let top = several.iter().filter_map(|m| m.timeline).max();
                    let on_top: Vec<_> = several
                        .iter()
                        .filter(|m| top.is_some() && m.timeline == top)
                        .collect();
                    match on_top.as_slice() {
                        [one] => Some(one.name.as_str()),
                        // Ambiguous: keep what we knew.
                        _ => None,
                    }
                }
            }
        };
        if let Some(holder) = holder {
            if self.leader.as_deref() != Some(holder) {
                if let Some(old) = self.leader.take() {
                    self.former_leader = Some(old);
                }
                self.leader = Some(holder.to_string());
            }
        }
        if let Some(former) = &self.former_leader {
            let healthy_replica = observation.members.iter().any(|m| {
                m.name == *former
                    && matches!(
                        m.patroni_role,
                        Some(PatroniRole::Replica | PatroniRole::SyncStandby)
                    )
                    && self
                        .members
                        .get(former)
                        .is_some_and(|t| t.signals.is_empty())
            });
            // It rejoined as a healthy replica, it is the leader again, or we no longer track it.
            if healthy_replica
                || self.leader.as_ref() == Some(former)
                || !self.members.contains_key(former)
            {
                self.former_leader = None;
            }
        }
    }

    fn cluster_health(&self) -> ClusterHealth {
        let Some(observation) = &self.last else {
            return ClusterHealth::default();
        };
        // The members a repair works on, and replacements a lost repair left (still joining,
        // like the replacement of a repair under way): none is evidence about the observer.
        let ours = |name: &str| {
            self.repair
                .as_ref()
                .is_some_and(|r| r.target == name || r.replacement == name)
                || self.unfinished.contains_key(name)
        };
        // Patroni's `/cluster` answered when it named anyone: only then does a member's absence
        // from it say something.
        let cluster_answered = observation
            .members
            .iter()
            .any(|m| m.patroni_state.is_some());
        let mut health = ClusterHealth::default();
        for m in &observation.members {
            let Some(t) = self.members.get(&m.name) else {
                continue;
            };
            if t.health != Health::Healthy {
                health.degraded = true;
            }
            if m.role == Some(Role::Balancer) || t.health.is_under_repair() || ours(&m.name) {
                continue;
            }
            health.members += 1;
            if !t.signals.is_empty() {
                health.looking_bad += 1;
                if signal::corroborated(&t.signals, m, cluster_answered) {
                    health.corroborated += 1;
                }
            }
        }
        if self.members.values().any(|t| t.health.is_under_repair()) {
            health.degraded = true;
        }
        health
    }

    fn observed(&self, name: &str) -> Option<&MemberObservation> {
        self.last.as_ref()?.members.iter().find(|m| m.name == name)
    }

    fn signals_of(&self, name: &str) -> &[Signal] {
        self.members
            .get(name)
            .map(|t| t.signals.as_slice())
            .unwrap_or(&[])
    }

    /// The replica best placed to take over: a healthy candidate with the least lag.
    fn best_candidate(&self, now: Timestamp) -> Option<String> {
        let observation = self.last.as_ref()?;
        let replacement = self.repair.as_ref().map(|r| r.replacement.as_str());
        observation
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != self.leader.as_deref())
            .filter(|m| Some(m.name.as_str()) != replacement)
            .filter(|m| {
                signal::is_healthy_candidate(m, self.signals_of(&m.name), now, &self.config.signals)
            })
            .min_by(|a, b| {
                let lag = |m: &MemberObservation| m.lag_bytes.map_or(f64::MAX, |f| f.value);
                lag(a).total_cmp(&lag(b)).then_with(|| a.name.cmp(&b.name))
            })
            .map(|m| m.name.clone())
    }

    /// The former primary, if it must be fenced now (promise 10).
    fn zombie(&self) -> Option<String> {
        let former = self.former_leader.as_ref()?;
        let holder = self.leader.as_ref()?;
        if former == holder {
            return None;
        }
        let t = self.members.get(former)?;
        if t.health.is_under_repair() {
            return None;
        }
        let m = self.observed(former)?;
        let claims_lead = m.patroni_role == Some(PatroniRole::Leader);
        let frozen = t.signals.iter().any(Signal::is_frozen_or_down);
        (claims_lead || frozen).then(|| former.clone())
    }

    // -----------------------------------------------------------------------------------------
    // Deciding.
    // -----------------------------------------------------------------------------------------

    fn next_op(&mut self) -> OperationId {
        let op = OperationId::new(&self.cluster, self.next_seq);
        self.next_seq = self.next_seq.saturating_add(1);
        op
    }

    /// `<base>-r<n>` for the replacement of `target`, with `n` the first from `from` that no
    /// member seen (in the platform's list or Patroni's) already has: a Steward started again
    /// counts from 1, and the name of a member made before must not be planned again.
    fn free_name(&self, target: &str, from: u64) -> String {
        let base = base_name(target);
        let taken = |name: &str| {
            self.members.contains_key(name)
                || self
                    .last
                    .as_ref()
                    .is_some_and(|o| o.members.iter().any(|m| m.name == name))
        };
        (from..)
            .map(|n| format!("{base}-r{n}"))
            .find(|name| !taken(name))
            .unwrap_or_else(|| format!("{base}-r{from}"))
    }

    fn decide(&mut self, now: Timestamp, out: &mut Vec<Command>, coordinator: &mut Coordinator) {
        if coordinator.is_paused() {
            // Like Patroni's pause: observe and judge, nothing else. A step in flight still
            // reports back, but no new step starts.
            return;
        }
        if self.repair.is_some() {
            self.advance(now, out, coordinator);
            if self.repair.is_some() {
                return;
            }
        }
        self.start_next(now, out, coordinator);
    }

    fn start_next(
        &mut self,
        now: Timestamp,
        out: &mut Vec<Command>,
        coordinator: &mut Coordinator,
    ) {
        if self.last.is_none() {
            return;
        }
        let mut alerts: Vec<(Alert, String)> = Vec::new();
        let started = self.try_start(now, &mut alerts, coordinator);
        self.emit_alerts(alerts, out);
        if started {
            self.advance(now, out, coordinator);
        }
    }

    /// Picks the one repair to start, if any guard allows it. Returns whether one started.
    fn try_start(
        &mut self,
        now: Timestamp,
        alerts: &mut Vec<(Alert, String)>,
        coordinator: &mut Coordinator,
    ) -> bool {
        // 1. A former primary that may thaw: at once, before anything else.
        if let Some(zombie) = self.zombie() {
            let holder = self.leader.clone().unwrap_or_default();
            let why = format!(
                "the leader lock moved to {holder} and the former primary {zombie} is still \
                 present ({}); it is fenced at once, before it can thaw and write",
                self.describe_former(&zombie)
            );
            let steps = [Step::Fence(zombie.clone()), Step::Drain(zombie.clone())];
            let purpose = Purpose::FenceFormerLeader {
                member: zombie.clone(),
            };
            return self.start(
                purpose,
                RepairKind::FenceFormerLeader,
                &zombie,
                why,
                steps,
                now,
                alerts,
                coordinator,
            );
        }

        // 2. The leader looks bad.
        let holder = self.leader.clone();
        if let Some(leader) = &holder {
            if self
                .members
                .get(leader)
                .is_some_and(|t| t.health.is_confirmed())
            {
                let signals = signal::describe(self.signals_of(leader));
                match self.best_candidate(now) {
                    None => alerts.push((
                        Alert::NoHealthyCandidate {
                            leader: leader.clone(),
                        },
                        format!(
                            "the leader {leader} looks bad ({signals}) but no replica streams \
                             with lag under the limit: it is not fenced, Patroni keeps the lock"
                        ),
                    )),
                    Some(candidate) if self.leader_alive(leader) => {
                        let why = format!(
                            "the leader {leader} is alive but degraded ({signals}); {candidate} \
                             is a healthy candidate, so Patroni is asked to hand the lock over"
                        );
                        let steps = [
                            Step::AskSwitchover {
                                to: Some(candidate),
                            },
                            Step::AwaitLeaderMove,
                        ];
                        let purpose = Purpose::Switchover {
                            from: leader.clone(),
                        };
                        if self.start(
                            purpose,
                            RepairKind::Switchover,
                            leader,
                            why,
                            steps,
                            now,
                            alerts,
                            coordinator,
                        ) {
                            return true;
                        }
                    }
                    // Down rather than degraded: Patroni fails over by itself within its ttl.
                    Some(_) => {}
                }
            }
        }

        // 3. Members to replace: already fenced ones first (they serve nobody), then confirmed
        // ones, by name. Never the lock holder, and no database member while nobody is known to
        // hold the lock (we could not tell whom fencing would hit).
        self.held_back.retain(|_, until| now < *until);
        let held = |n: &String| self.held_back.contains_key(n);
        // A replacement the platform lists with the name of the member it replaces, while that
        // member is still there and no repair runs: a repair whose journal record was lost (the
        // state folder wiped, a crash before the disk kept it). Finished rather than done again:
        // a second replacement would be one member too many and the old one would stay.
        let unfinished = self
            .unfinished
            .iter()
            .find(|(_, target)| {
                Some(*target) != holder.as_ref()
                    && !held(target)
                    && (holder.is_some() || self.role_of(target) == Role::Balancer)
            })
            .map(|(r, t)| (r.clone(), t.clone()));
        if let Some((replacement, target)) = unfinished {
            return self.finish_unrecorded(replacement, target, now, alerts, coordinator);
        }
        let fenced = self
            .members
            .iter()
            .find(|(n, t)| t.health == Health::Fenced && !held(n))
            .map(|(n, _)| n.clone());
        let confirmed = self
            .members
            .iter()
            .filter(|(n, t)| t.health.is_confirmed() && Some(*n) != holder.as_ref() && !held(n))
            .map(|(n, _)| n.clone())
            .find(|n| holder.is_some() || self.role_of(n) == Role::Balancer);
        if let Some(name) = fenced {
            let why = format!("{name} is fenced and must be replaced");
            let steps = [
                Step::Create,
                Step::AwaitStreaming,
                Step::Remove(name.clone()),
            ];
            let purpose = Purpose::Repair {
                member: name.clone(),
            };
            return self.start(
                purpose,
                RepairKind::ReplaceFenced,
                &name,
                why,
                steps,
                now,
                alerts,
                coordinator,
            );
        }
        if let Some(name) = confirmed {
            let signals = self.signals_of(&name).to_vec();
            let slow = !signals.is_empty() && signals.iter().all(Signal::is_only_slow);
            let why = format!(
                "{name} looked bad for the whole grace window ({})",
                signal::describe(&signals)
            );
            let purpose = Purpose::Repair {
                member: name.clone(),
            };
            return if slow {
                let steps = [
                    Step::Create,
                    Step::AwaitStreaming,
                    Step::Drain(name.clone()),
                    Step::Fence(name.clone()),
                    Step::Remove(name.clone()),
                ];
                self.start(
                    purpose,
                    RepairKind::Surge,
                    &name,
                    why,
                    steps,
                    now,
                    alerts,
                    coordinator,
                )
            } else {
                let steps = [
                    Step::Drain(name.clone()),
                    Step::Fence(name.clone()),
                    Step::Create,
                    Step::AwaitStreaming,
                    Step::Remove(name.clone()),
                ];
                self.start(
                    purpose,
                    RepairKind::FenceFirst,
                    &name,
                    why,
                    steps,
                    now,
                    alerts,
                    coordinator,
                )
            };
        }
        false
    }

    /// Takes over the replacement of `target` by `replacement`, which the platform lists and no
    /// journal record covers: waits for it to stream, then drains, fences and removes `target`
    /// (each step is done already if the world is so).
    fn finish_unrecorded(
        &mut self,
        replacement: String,
        target: String,
        now: Timestamp,
        alerts: &mut Vec<(Alert, String)>,
        coordinator: &mut Coordinator,
    ) -> bool {
        let why = format!(
            "{replacement} was created to replace {target} (its {LABEL_REPLACES} label) and no \
             journal record covers that repair (the state folder was lost): the repair is \
             finished, not started again"
        );
        let steps = [
            Step::AwaitStreaming,
            Step::Drain(target.clone()),
            Step::Fence(target.clone()),
            Step::Remove(target.clone()),
        ];
        let purpose = Purpose::Repair {
            member: target.clone(),
        };
        let started = self.start(
            purpose,
            RepairKind::Surge,
            &target,
            why,
            steps,
            now,
            alerts,
            coordinator,
        );
        if let Some(r) = self.repair.as_mut().filter(|_| started) {
            r.replacement = replacement.clone();
            r.replacement_created = true;
            r.waiting_since = Some(now);
            self.unfinished.remove(&replacement);
            if let Some(t) = self.members.get_mut(&target) {
                t.health = Health::Verifying {
                    replacement,
                    since: now,
                };
            }
        }
        started
    }

    #[allow(clippy::too_many_arguments)]
    fn start<const N: usize>(
        &mut self,
        purpose: Purpose,
        kind: RepairKind,
        target: &str,
        why: String,
        steps: [Step; N],
        now: Timestamp,
        alerts: &mut Vec<(Alert, String)>,
        coordinator: &mut Coordinator,
    ) -> bool {
        // The id is taken only when the grant is granted, so refusals do not consume ids.
        let op = OperationId::new(&self.cluster, self.next_seq);
        match coordinator.acquire(purpose, op, now) {
            Ok(grant) => {
                let role = self.role_of(target);
                self.next_seq = self.next_seq.saturating_add(1);
                self.last_refusal = None;
                let replacement = self.free_name(target, self.next_seq - 1);
                self.repair = Some(Repair {
                    grant,
                    started_at: now,
                    kind,
                    target: target.to_string(),
                    role,
                    replacement,
                    why,
                    urgent: BTreeMap::new(),
                    // Balancers are not behind a balancer: there is nothing to drain them from.
                    steps: steps
                        .into_iter()
                        .filter(|s| !(role == Role::Balancer && matches!(s, Step::Drain(_))))
                        .collect(),
                    in_flight: None,
                    issued: 0,
                    attempts: 0,
                    retry_after: None,
                    waiting_since: None,
                    target_fenced: self
                        .members
                        .get(target)
                        .is_some_and(|t| t.health == Health::Fenced),
                    replacement_created: false,
                    replacement_streams: false,
                    failed: false,
                    aborted: false,
                });
                true
            }
            Err(refusal) => {
                match &refusal {
                    Refusal::UnhealthyMajority {
                        looking_bad,
                        members,
                    } => {
                        // Each member that looks bad, and why: the operator judges the observer.
                        let bad: Vec<String> = self
                            .members
                            .iter()
                            .filter(|(name, t)| !t.signals.is_empty() && name.as_str() != target)
                            .map(|(name, t)| format!("{name}: {}", signal::describe(&t.signals)))
                            .collect();
                        let others = if bad.is_empty() {
                            String::new()
                        } else {
                            format!(" (also looking bad: {})", bad.join("; "))
                        };
                        alerts.push((
                            Alert::UnhealthyMajority {
                                looking_bad: *looking_bad,
                                members: *members,
                            },
                            format!("{refusal}; {target} is not repaired: {why}{others}"),
                        ))
                    }
                    Refusal::BudgetSpent { .. } | Refusal::BreakerOpen { .. } => alerts.push((
                        Alert::RepairRefused {
                            member: target.to_string(),
                            refusal: refusal.clone(),
                        },
                        format!("{target} is due for repair but {refusal}"),
                    )),
                    // Waiting is the answer: the slot frees, the period ends.
                    Refusal::Paused
                    | Refusal::Busy { .. }
                    | Refusal::Degraded { .. }
                    | Refusal::QuietPeriod { .. } => {}
                }
                self.last_refusal = Some(refusal);
                false
            }
        }
    }

    /// Emits condition alerts not raised yet; conditions absent this time are cleared.
    fn emit_alerts(&mut self, alerts: Vec<(Alert, String)>, out: &mut Vec<Command>) {
        let mut now_raised = BTreeSet::new();
        for (alert, reason) in alerts {
            let key = alert.condition_key();
            let fresh = key.as_ref().is_none_or(|k| !self.raised.contains(k));
            if let Some(k) = key {
                now_raised.insert(k);
            }
            if fresh {
                let op = self.next_op();
                out.push(Command {
                    op,
                    kind: CommandKind::Alert { alert },
                    reason,
                });
            }
        }
        self.raised = now_raised;
    }

    fn describe_former(&self, name: &str) -> String {
        let signals = signal::describe(self.signals_of(name));
        let claims = self
            .observed(name)
            .is_some_and(|m| m.patroni_role == Some(PatroniRole::Leader));
        match (claims, signals.is_empty()) {
            (true, true) => "it still claims to lead".into(),
            (true, false) => format!("it still claims to lead; {signals}"),
            (false, _) => signals,
        }
    }

    fn role_of(&self, name: &str) -> Role {
        // A member seen only by Patroni is a database.
        self.members
            .get(name)
            .and_then(|t| t.role)
            .unwrap_or(Role::Database)
    }

    /// Alive enough to hand the lock over: running and answering.
    fn leader_alive(&self, name: &str) -> bool {
        let running = self
            .observed(name)
            .is_some_and(|m| matches!(m.platform_state, None | Some(PlatformState::Running)));
        running
            && !self
                .signals_of(name)
                .iter()
                .any(|s| matches!(s, Signal::Silent { .. }))
    }

    // -----------------------------------------------------------------------------------------
    // Running the repair.
    // -----------------------------------------------------------------------------------------

    /// Issues the next step of the repair, passes finished waits, or finishes it.
    fn advance(&mut self, now: Timestamp, out: &mut Vec<Command>, coordinator: &mut Coordinator) {
        if self.last.is_none() {
            // A repair resumed after a restart waits for the cluster to be seen once: its
            // steps are judged against what is there now.
            return;
        }
        let Some(mut r) = self.repair.take() else {
            return;
        };
        if r.in_flight.is_none() {
            self.fence_zombie_first(&mut r);
        }
        if r.in_flight.is_some() || r.retry_after.is_some_and(|t| now < t) {
            self.repair = Some(r);
            return;
        }
        r.retry_after = None;
        loop {
            match r.steps.front().cloned() {
                None => {
                    let outcome = if r.failed {
                        GrantOutcome::ReplacementFailed
                    } else if r.aborted || r.kind == RepairKind::FenceFormerLeader {
                        GrantOutcome::Done
                    } else {
                        GrantOutcome::Recovered
                    };
                    self.finish(r, outcome, now, coordinator);
                    return;
                }
                Some(Step::AwaitStreaming) => match self.verify(&r, now) {
                    Verification::Streams => {
                        r.replacement_streams = true;
                        r.steps.pop_front();
                    }
                    Verification::Failed(reason) => self.fail_replacement(&mut r, reason, out),
                    Verification::Waiting => break,
                },
                Some(Step::AwaitLeaderMove) => {
                    if self.leader.as_deref() != Some(r.target.as_str()) {
                        r.steps.pop_front();
                    } else if r
                        .waiting_since
                        .is_some_and(|t| now.since(t) > self.config.switchover_timeout)
                    {
                        let op = self.next_op();
                        out.push(Command {
                            op,
                            kind: CommandKind::Alert {
                                alert: Alert::SwitchoverStuck {
                                    from: r.target.clone(),
                                },
                            },
                            reason: format!(
                                "a switchover away from {} was asked for but the leader lock \
                                 did not move within {} s",
                                r.target,
                                self.config.switchover_timeout.as_secs()
                            ),
                        });
                        r.steps.clear();
                        r.aborted = true;
                    } else {
                        break;
                    }
                }
                Some(Step::AskSwitchover { .. })
                    if self.leader.is_some() && self.leader.as_deref() != Some(&r.target) =>
                {
                    // The lock already moved (asked before a restart, or Patroni's own doing):
                    // nothing to ask.
                    r.steps.pop_front();
                }
                Some(Step::Drain(m) | Step::Fence(m) | Step::Remove(m))
                    if self.leader.as_deref() == Some(m.as_str()) =>
                {
                    // Patroni promoted the member while we were repairing it: the lock holder
                    // is never fenced, drained or removed. Give the repair up.
                    let op = self.next_op();
                    out.push(Command {
                        op,
                        kind: CommandKind::Alert {
                            alert: Alert::RepairFailed {
                                member: r.target.clone(),
                                step: "fence".into(),
                                error: format!("{m} now holds the leader lock"),
                            },
                        },
                        reason: format!(
                            "{m} now holds the leader lock: the repair of {} is given up rather \
                             than fence the leader",
                            r.target
                        ),
                    });
                    r.steps.clear();
                    r.aborted = true;
                }
                Some(step) => {
                    self.issue(&mut r, step, out);
                    break;
                }
            }
        }
        self.repair = Some(r);
    }

    /// A former primary that may thaw does not wait for the repair in progress to finish: with
    /// nothing in flight, its fence and drain go to the front of this repair's steps, under the
    /// same grant (so still one disruptive command at a time).
    fn fence_zombie_first(&mut self, r: &mut Repair) {
        let Some(zombie) = self.zombie() else { return };
        if zombie == r.target || zombie == r.replacement || r.urgent.contains_key(&zombie) {
            return;
        }
        let holder = self.leader.clone().unwrap_or_default();
        let why = format!(
            "the leader lock moved to {holder} and the former primary {zombie} is still present \
             ({}); it is fenced at once, ahead of the repair of {} in progress",
            self.describe_former(&zombie),
            r.target
        );
        r.urgent.insert(zombie.clone(), why);
        r.steps.push_front(Step::Drain(zombie.clone()));
        r.steps.push_front(Step::Fence(zombie));
        // The step waiting for a retry comes after the fence; its delay has no reason to hold
        // the fence back.
        r.retry_after = None;
    }

    fn verify(&self, r: &Repair, now: Timestamp) -> Verification {
        let timed_out = r
            .waiting_since
            .is_some_and(|t| now.since(t) > self.config.verify_timeout);
        let Some(m) = self.observed(&r.replacement) else {
            return if timed_out {
                Verification::Failed(format!("{} never appeared", r.replacement))
            } else {
                Verification::Waiting
            };
        };
        if let Some(state @ (PlatformState::Exited | PlatformState::OomKilled)) = m.platform_state {
            return Verification::Failed(format!(
                "the platform reports {} {state:?}",
                r.replacement
            ));
        }
        let streams = match r.role {
            // A balancer has nothing to stream: running is what it can prove.
            Role::Balancer => m.platform_state == Some(PlatformState::Running),
            Role::Database => {
                m.streaming == Some(true)
                    && matches!(
                        Figure::freshness(m.lag_bytes.as_ref(), now, self.config.signals.stale_after),
                        Freshness::Fresh(lag) if lag <= self.config.signals.lag_limit_bytes as f64
                    )
            }
        };
        if streams {
            Verification::Streams
        } else if timed_out {
            Verification::Failed(format!(
                "{} did not stream within {} s",
                r.replacement,
                self.config.verify_timeout.as_secs()
            ))
        } else {
            Verification::Waiting
        }
    }

    /// The replacement did not come up: alert, then fence and remove it (keeping its data: it
    /// never streamed, and keeping is the rule until a replacement has).
    fn fail_replacement(&mut self, r: &mut Repair, reason: String, out: &mut Vec<Command>) {
        let op = self.next_op();
        out.push(Command {
            op,
            kind: CommandKind::Alert {
                alert: Alert::RepairFailed {
                    member: r.target.clone(),
                    step: "verify".into(),
                    error: reason.clone(),
                },
            },
            reason: format!("the replacement of {} failed: {reason}", r.target),
        });
        r.failed = true;
        r.steps.clear();
        if r.replacement_created {
            r.steps.push_back(Step::Fence(r.replacement.clone()));
            r.steps.push_back(Step::Remove(r.replacement.clone()));
        }
    }

    fn issue(&mut self, r: &mut Repair, step: Step, out: &mut Vec<Command>) {
        r.issued += 1;
        let op = OperationId(format!("{}/{}", r.grant.op(), r.issued));
        let urgent = match &step {
            Step::Drain(m) | Step::Fence(m) => r.urgent.get(m).cloned(),
            _ => None,
        };
        let why = if let Some(why) = urgent {
            why
        } else if r.failed {
            format!("cleaning up the failed replacement of {}", r.target)
        } else {
            r.why.clone()
        };
        let (kind, what) = match &step {
            Step::Drain(m) => (
                CommandKind::Drain { member: m.clone() },
                format!("drain {m}"),
            ),
            Step::Fence(m) => (
                CommandKind::Fence { member: m.clone() },
                format!("fence {m}"),
            ),
            Step::Create => (
                CommandKind::Create {
                    role: r.role,
                    name: r.replacement.clone(),
                    replacing: r.target.clone(),
                    label: r.grant.op().label(r.started_at),
                },
                format!("create {} to replace {}", r.replacement, r.target),
            ),
            Step::Remove(m) => {
                let delete_data = r.replacement_streams;
                let data = if delete_data && r.role == Role::Balancer {
                    "its replacement runs; a balancer keeps no data"
                } else if delete_data {
                    "its replacement streams, so its data goes too"
                } else {
                    "its data is kept: no replacement has streamed yet"
                };
                (
                    CommandKind::Remove {
                        member: m.clone(),
                        delete_data,
                    },
                    format!("remove {m} ({data})"),
                )
            }
            Step::AskSwitchover { to } => (
                CommandKind::AskSwitchover {
                    from: r.target.clone(),
                    to: to.clone(),
                },
                format!("ask Patroni to switch over from {}", r.target),
            ),
            Step::AwaitStreaming | Step::AwaitLeaderMove => unreachable!("waits issue nothing"),
        };
        if let Step::Fence(m) = &step {
            if r.urgent.contains_key(m) {
                if let Some(t) = self.members.get_mut(m) {
                    t.health = Health::Fencing;
                }
            }
        }
        if let Some(t) = self.members.get_mut(&r.target) {
            match &step {
                Step::Drain(m) | Step::Fence(m) if *m == r.target && !r.target_fenced => {
                    t.health = Health::Fencing;
                }
                Step::Create => {
                    t.health = Health::Replacing {
                        replacement: r.replacement.clone(),
                    };
                }
                _ => {}
            }
        }
        r.in_flight = Some(op.clone());
        out.push(Command {
            op,
            kind,
            reason: format!("{what}: {why}"),
        });
    }

    fn action_done(
        &mut self,
        op: &OperationId,
        result: Result<(), ActionError>,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let Some(mut r) = self.repair.take() else {
            return;
        };
        if r.in_flight.as_ref() != Some(op) {
            // Not ours (a replayed or late result): ignore it.
            self.repair = Some(r);
            return;
        }
        r.in_flight = None;
        let Some(step) = r.steps.front().cloned() else {
            self.repair = Some(r);
            return;
        };
        // Fencing, draining and removing are idempotent: "not found" means already done.
        let result = match result {
            Err(e)
                if e.kind == ErrorKind::NotFound
                    && matches!(step, Step::Drain(_) | Step::Fence(_) | Step::Remove(_)) =>
            {
                Ok(())
            }
            other => other,
        };
        match result {
            Ok(()) => {
                r.steps.pop_front();
                r.attempts = 0;
                self.step_done(&mut r, &step, now);
            }
            Err(e)
                if matches!(e.kind, ErrorKind::Transient | ErrorKind::Conflict)
                    && r.attempts + 1 < MAX_ATTEMPTS =>
            {
                r.attempts += 1;
                r.retry_after = Some(now + RETRY_DELAY);
            }
            Err(e) => {
                let urgent = match &step {
                    Step::Drain(m) | Step::Fence(m) if r.urgent.contains_key(m) => Some(m.clone()),
                    _ => None,
                };
                let member = urgent.clone().unwrap_or_else(|| r.target.clone());
                let op = self.next_op();
                let refused = e.kind == ErrorKind::Refused && step == Step::Create;
                let consequence = if urgent.is_some() {
                    format!("the repair of {} goes on", r.target)
                } else if refused {
                    format!(
                        "the platform refused it, which will not change before the topology \
                         does (add a host, or set placement = \"preferred\"); {} is left as it \
                         is for {} s, and this counts as no failed replacement",
                        r.target,
                        REFUSED_HOLD.as_secs()
                    )
                } else {
                    "the repair is given up".to_string()
                };
                out.push(Command {
                    op,
                    kind: CommandKind::Alert {
                        alert: Alert::RepairFailed {
                            member: member.clone(),
                            step: step.name().into(),
                            error: e.to_string(),
                        },
                    },
                    reason: format!(
                        "{} of {member} failed for good ({e}); {consequence}",
                        step.name()
                    ),
                });
                if let Some(m) = urgent {
                    // The fence of a former primary failed: drop its steps but not the repair
                    // in progress; the former primary is judged afresh and fenced again after.
                    r.steps
                        .retain(|s| !matches!(s, Step::Drain(x) | Step::Fence(x) if *x == m));
                    if let Some(t) = self.members.get_mut(&m) {
                        if t.health == Health::Fencing {
                            t.health = Health::Confirmed { since: now };
                        }
                    }
                    self.repair = Some(r);
                    return;
                }
                r.steps.clear();
                if refused && !r.failed {
                    self.held_back.insert(r.target.clone(), now + REFUSED_HOLD);
                    r.aborted = true;
                } else if step == Step::Create && !r.failed {
                    r.failed = true;
                } else if !r.failed {
                    r.aborted = true;
                }
            }
        }
        self.repair = Some(r);
    }

    fn step_done(&mut self, r: &mut Repair, step: &Step, now: Timestamp) {
        if let Step::Fence(m) = step {
            if r.urgent.contains_key(m) {
                if let Some(t) = self.members.get_mut(m) {
                    t.health = Health::Fenced;
                }
                return;
            }
        }
        let target = self.members.get_mut(&r.target);
        match step {
            Step::Fence(m) if *m == r.target => {
                r.target_fenced = true;
                if let Some(t) = target {
                    t.health = Health::Fenced;
                }
            }
            Step::Create => {
                r.replacement_created = true;
                r.waiting_since = Some(now);
                if let Some(t) = target {
                    t.health = Health::Verifying {
                        replacement: r.replacement.clone(),
                        since: now,
                    };
                }
            }
            Step::Remove(m) if *m == r.target => {
                if let Some(t) = target {
                    t.health = Health::Retired;
                }
            }
            Step::AskSwitchover { .. } => r.waiting_since = Some(now),
            _ => {}
        }
    }

    fn finish(
        &mut self,
        r: Repair,
        outcome: GrantOutcome,
        now: Timestamp,
        coordinator: &mut Coordinator,
    ) {
        // What the last listing said of this repair is out of date now.
        self.unfinished
            .retain(|replacement, target| *target != r.target && *replacement != r.replacement);
        if let Some(t) = self.members.get_mut(&r.target) {
            if t.health == Health::Retired {
                self.members.remove(&r.target);
            } else if r.failed || r.aborted {
                // Back to what the member really is: fenced, or still running and bad.
                t.health = if r.target_fenced {
                    Health::Fenced
                } else {
                    Health::Confirmed { since: now }
                };
            }
        }
        for member in r.urgent.keys() {
            // A fence that did not complete: judge the member afresh (it will be found again).
            if let Some(t) = self.members.get_mut(member) {
                if t.health == Health::Fencing {
                    t.health = Health::Confirmed { since: now };
                }
            }
        }
        if outcome == GrantOutcome::ReplacementFailed && r.replacement_created {
            // Its leftovers were fenced and removed by the cleanup steps.
            self.members.remove(&r.replacement);
        }
        coordinator.release(r.grant, outcome, now);
    }
}
