//! The sans-IO scaler: events in, commands out (quinn-proto style).
//!
//! What it is: [`Scaler::handle`] takes one [`Event`] and the time, feeds the policies, and returns
//! [`Command`]s. An observation runs every policy (their windows must see every sample); when no
//! operation is in flight or proposed, the most urgent changing decision becomes a [`Plan`] that
//! is *proposed* ([`Command::Propose`]). The coordinator outside answers with
//! [`Event::Permitted`] or [`Event::Refused`]; only a permitted plan starts. A started plan is
//! journaled ([`Command::Journal`]) before each step's [`Command::Execute`], and each step waits for
//! the action's result ([`Event::ActionDone`]) and then for an observation that passes the step's
//! check before the next step starts. A plan ends with [`Command::Finished`]. [`Scaler::observed`]
//! is [`Event::Observed`] with the snapshot lent: copied only when the scaler keeps it.
//!
//! What it is not: a clock, a driver or a coordinator. No tokio, no I/O; `now` is a parameter.
//!
//! Invariants the tests hold it to:
//! - at most one operation in flight or proposed at a time (the scaler's side of "one disruptive
//!   action per cluster"); nothing else is proposed meanwhile;
//! - a failed or timed-out step ends the plan; the policy's cooldown starts at the plan's start
//!   and again at its end, success or not, so a failure is not retried at once;
//! - the leader is never drained, fenced or removed, and a scale-in never leaves fewer healthy
//!   database members than the HA minimum (re-checked before each step, on the newest data).
//!
//! Priorities, when several policies want a change at once: emergency disk growth, then an OOM
//! memory grow, then a scale-out to the HA minimum, then CPU/memory (database before balancer),
//! then ordinary disk growth, then the replica count. The others wait: their windows stay
//! satisfied, so they come back on the next idle observation.
//!
//! Mixed sizes: a role whose members do not all have the same size (a rollout stopped half-way,
//! a change from outside) is judged at the size most members have, but no CPU, memory or disk
//! change is proposed for it until it is uniform again: resuming the journaled plan finishes the
//! rollout; after a failed plan, an operator decides. Starting a new resize over a mixed role would
//! turn one half-done rollout into two.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_model::observation::Figure;
use steward_model::ports::platform::{Change, CreateSpec, ErrorKind};
use steward_model::{Action as Direction, Decision, NameMap, Resource, Role, Rule, Timestamp};
use steward_policies::{CachePolicy, DiskPolicy, ReplicaPolicy, VerticalPolicy};

use crate::config::ScalerConfig;
use crate::plan::{
    resize_steps, scale_in_steps, scale_out_steps, Check, Guard, Intent, IntentKind, OperationId,
    Phase, Plan, PlanStep, Step,
};
use crate::settings::SettingsDiff;
use crate::view::{figures, same_size, Snapshot};

/// How long a step whose answer was lost ([`Phase::Unsure`]) waits for its check before the plan
/// fails (the step's own `step_timeout` if shorter). Long enough for what Patroni finishes after
/// answering late (a switchover takes up to 2 x `loop_wait`), short enough that an action that
/// truly failed does not hold the cluster's one slot for the whole step timeout.
pub const UNSURE_WAIT: Duration = Duration::from_secs(60);

/// What happens to the scaler.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new observation joined with the platform's members and capabilities.
    Observed(Snapshot),
    /// The coordinator lets the proposed operation start.
    Permitted { op: OperationId },
    /// The coordinator refuses it (another action runs, the cluster is degraded, dry-run, ...).
    Refused { op: OperationId, reason: String },
    /// The driver ran step `step` of operation `op`.
    ActionDone {
        op: OperationId,
        step: usize,
        result: Result<(), ActionError>,
    },
    /// Time passed: an unanswered proposal older than `proposal_timeout` is dropped, and a step
    /// waiting longer than `step_timeout` (for its result or its check) fails the plan. Only a
    /// tick does this, so a driver must tick (every few seconds) as well as observe.
    Tick,
}

/// A failed action, classified as the platform port classifies its errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("action failed ({kind}): {message}")]
pub struct ActionError {
    pub kind: ErrorKind,
    pub message: String,
}

/// What the scaler asks of its driver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// Ask the coordinator to let this plan start; answer with `Permitted` or `Refused`.
    Propose { plan: Plan },
    /// Persist the plan before running the next command (a crash then resumes it).
    Journal { plan: Plan },
    /// Run this step of the operation and answer with `ActionDone`.
    Execute {
        op: OperationId,
        step: usize,
        action: Step,
        emergency: bool,
    },
    /// The operation ended (the journal entry can go).
    Finished { report: Report },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub op: OperationId,
    pub intent: Intent,
    pub outcome: PlanOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PlanOutcome {
    Completed,
    /// Step `step` failed (its action, its guard, or its check in time); later steps did not run.
    Failed {
        step: usize,
        reason: String,
    },
    /// The coordinator refused it, or did not answer in time; nothing ran.
    Refused {
        reason: String,
    },
}

/// Why a journaled plan cannot be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("operation {running} is already in flight")]
    Busy { running: OperationId },
    #[error("plan {op} has its cursor at {cursor} of {steps} steps")]
    BadCursor {
        op: OperationId,
        cursor: usize,
        steps: usize,
    },
}

/// How PostgreSQL's settings follow a resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settings {
    /// Not at all (a disk).
    Keep,
    /// Every size-derived setting (pgtune's formulas).
    Follow,
    /// Only what allocates nothing: the resize is headroom for the workload (an OOM kill).
    Headroom,
}

/// One role's vertical and disk policies. Plain fields, not a map: a scaler per cluster, and a
/// B-tree's nodes (room for 11 policies each) made up most of a fleet's 75 MB of scalers.
#[derive(Debug)]
struct RolePolicies {
    cpu: VerticalPolicy,
    memory: VerticalPolicy,
    disk: DiskPolicy,
}

impl RolePolicies {
    /// Fresh policies for `role`, from its part of `config`.
    fn new(config: &ScalerConfig, role: Role) -> Self {
        let p = config.policy.role(role);
        let shared = |resource| {
            config
                .vertical(role, resource)
                .expect("cpu and memory have vertical configs")
        };
        RolePolicies {
            cpu: VerticalPolicy::new(role, Resource::Cpu, shared(Resource::Cpu)),
            memory: VerticalPolicy::new(role, Resource::Memory, shared(Resource::Memory))
                .with_oom(p.oom.clone()),
            disk: DiskPolicy::new(role, p.disk.clone()),
        }
    }

    fn vertical(&mut self, resource: Resource) -> Option<&mut VerticalPolicy> {
        match resource {
            Resource::Cpu => Some(&mut self.cpu),
            Resource::Memory => Some(&mut self.memory),
            Resource::Disk => None,
        }
    }
}

/// The scaler's pure core. See the module doc.
#[derive(Debug)]
pub struct Scaler {
    /// Shared: a fleet's clusters hold one copy (an `Arc`), not one each.
    config: Arc<ScalerConfig>,
    database: RolePolicies,
    /// Made when the cluster's first balancer is seen ([`Self::policies`]): a cluster whose
    /// balancers Steward does not size (adopted with its own, observer-only, a fleet's
    /// simulated clusters) carries none (1.2 KB each: 12 MB in a fleet of 10,000).
    balancer: Option<Box<RolePolicies>>,
    replicas: ReplicaPolicy,
    /// The databases' buffer cache: when `shared_buffers` grows.
    cache: CachePolicy,
    /// The last OOM-kill counter seen per member (a few: a `BTreeMap` node has room for 11
    /// whatever the members, ~0.5 KB a cluster).
    oom_seen: NameMap<f64>,
    /// The last snapshot, while a plan is in flight or proposed (its steps are checked and
    /// guarded against it). Idle, it is dropped after each observation: nothing reads it
    /// before the next, and a fleet held a copy of every cluster's for nothing (3.6 KB each).
    last: Option<Snapshot>,
    /// Database members in the last snapshot: what a replica change is recorded against.
    databases: usize,
    /// A proposed plan and when it was proposed.
    /// Boxed, as is `plan`: most clusters have neither most of the time, and inline they
    /// were a fifth of an idle scaler (~480 bytes).
    pending: Option<Box<(Plan, Timestamp)>>,
    plan: Option<Box<Plan>>,
    seq: u64,
    /// The highest member number ever seen, so a removed member's name (and kept data) is not
    /// reused by a later scale-out.
    highest_number: u64,
    decisions: Vec<Decision>,
}

/// A candidate change: its priority (lower first), the intent, and how to build its steps.
struct Candidate {
    priority: u8,
    intent: Intent,
    build: Build,
}

enum Build {
    Resize {
        role: Role,
        resource: Resource,
        target: f64,
        how: Change,
        diff: SettingsDiff,
        grow: bool,
    },
    ScaleOut,
    ScaleIn {
        member: String,
    },
}

/// The `shared_buffers` the database members run (the largest), when every one of them says.
fn running_shared_buffers(snap: &Snapshot) -> Option<f64> {
    snap.observation
        .members_of(Role::Database)
        .map(|m| m.shared_buffers.map(|f| f.value).filter(|v| v.is_finite()))
        .try_fold(None, |max: Option<f64>, v| {
            v.map(|v| Some(max.map_or(v, |m| m.max(v))))
        })
        .flatten()
}

fn split_number(name: &str) -> Option<(&str, u64)> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (prefix, n) = name.split_at(name.len() - digits);
    n.parse().ok().map(|n| (prefix, n))
}

impl Scaler {
    /// The policies of `role`, made for balancers when first asked for.
    fn policies(&mut self, role: Role) -> &mut RolePolicies {
        match role {
            Role::Database => &mut self.database,
            Role::Balancer => {
                let config = &self.config;
                self.balancer
                    .get_or_insert_with(|| Box::new(RolePolicies::new(config, Role::Balancer)))
            }
        }
    }

    /// A scaler with `config`: a `ScalerConfig`, or an `Arc` of one that many scalers share.
    pub fn new(config: impl Into<Arc<ScalerConfig>>) -> Self {
        let config = config.into();
        Scaler {
            replicas: ReplicaPolicy::new(config.policy.replicas.clone()),
            cache: CachePolicy::new(config.policy.cache.clone()),
            database: RolePolicies::new(&config, Role::Database),
            balancer: None,
            config,
            oom_seen: NameMap::new(),
            last: None,
            databases: 0,
            pending: None,
            plan: None,
            seq: 0,
            highest_number: 0,
            decisions: Vec::new(),
        }
    }

    /// The operation in flight, if any.
    pub fn in_flight(&self) -> Option<&Plan> {
        self.plan.as_deref()
    }

    /// The proposal waiting for the coordinator, if any.
    pub fn proposed(&self) -> Option<&Plan> {
        self.pending.as_deref().map(|(p, _)| p)
    }

    /// The cluster's floor: the replica policy's HA minimum (database members, primary
    /// included).
    pub fn min_members(&self) -> u32 {
        self.config.policy.replicas.min_members
    }

    /// Every policy decision of the last observation, for the decision log.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// Takes over a journaled plan after a restart. A step that was issued but not answered is
    /// run again unless the next observation shows it applied (every action is idempotent:
    /// a size, a config value, a fence); a step being verified goes on being verified. The
    /// policy's cooldown starts now.
    pub fn resume(&mut self, mut plan: Plan, now: Timestamp) -> Result<(), ResumeError> {
        if let Some(running) = &self.plan {
            return Err(ResumeError::Busy {
                running: running.id.clone(),
            });
        }
        if plan.cursor > plan.steps.len() {
            return Err(ResumeError::BadCursor {
                op: plan.id,
                cursor: plan.cursor,
                steps: plan.steps.len(),
            });
        }
        if matches!(plan.phase, Phase::Issued { .. }) {
            plan.phase = Phase::Ready;
        }
        self.pending = None;
        self.record_change(&plan.intent, now, false);
        self.plan = Some(Box::new(plan));
        Ok(())
    }

    /// [`Event::Observed`] with the snapshot lent, not given: the scaler copies it only when it
    /// keeps it (a plan in flight or proposed, or a change to propose). A driver that hands the
    /// same observation to the repairer next passes it on instead of copying it for each core;
    /// most ticks change nothing, and in a fleet of 10,000 that copy was a tenth of the tick.
    pub fn observed(&mut self, snap: &Snapshot, now: Timestamp) -> Vec<Command> {
        let mut out = Vec::new();
        self.on_observed(Cow::Borrowed(snap), now, &mut out);
        self.forget_when_idle();
        out
    }

    fn on_observed(&mut self, snap: Cow<'_, Snapshot>, now: Timestamp, out: &mut Vec<Command>) {
        let busy = self.plan.is_some() || self.pending.is_some();
        let candidates = self.decide(&snap, now, busy);
        self.databases = snap.count(Role::Database);
        // Idle with nothing to propose, nothing below reads the snapshot.
        self.last = (busy || !candidates.is_empty()).then(|| snap.into_owned());
        self.yield_to_emergency(&candidates, now, out);
        if self.plan.is_some() {
            self.advance(now, true, out);
        } else if self.pending.is_none() {
            if let Some(plan) = self.propose(candidates, now) {
                out.push(Command::Propose { plan: plan.clone() });
                self.pending = Some(Box::new((plan, now)));
            }
        }
    }

    /// Drops the last snapshot when neither a plan nor a proposal needs it.
    fn forget_when_idle(&mut self) {
        if self.plan.is_none() && self.pending.is_none() {
            self.last = None;
        }
    }

    /// Handles one event at `now` and returns what to do.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::Observed(snap) => self.on_observed(Cow::Owned(snap), now, &mut out),
            Event::Permitted { op } => {
                if self.plan.is_none() && self.pending.as_deref().is_some_and(|(p, _)| p.id == op) {
                    let (plan, _) = *self.pending.take().expect("checked above");
                    if let IntentKind::ScaleOut { member } = &plan.intent.kind {
                        if let Some((_, n)) = split_number(member) {
                            self.highest_number = self.highest_number.max(n);
                        }
                    }
                    self.record_change(&plan.intent, now, false);
                    self.plan = Some(Box::new(plan));
                    self.advance(now, false, &mut out);
                }
            }
            Event::Refused { op, reason } => {
                if self.pending.as_deref().is_some_and(|(p, _)| p.id == op) {
                    let (plan, _) = *self.pending.take().expect("checked above");
                    out.push(Command::Finished {
                        report: Report {
                            op,
                            intent: plan.intent,
                            outcome: PlanOutcome::Refused { reason },
                        },
                    });
                }
            }
            Event::ActionDone { op, step, result } => {
                let Some(plan) = self.plan.as_mut() else {
                    return out;
                };
                if plan.id != op
                    || plan.cursor != step
                    || !matches!(plan.phase, Phase::Issued { .. })
                {
                    // A late or duplicate answer: the plan has moved on (or was resumed).
                    return out;
                }
                match result {
                    // The request may have been carried out all the same (a switchover whose
                    // answer outlived the timeout): the next observations tell.
                    Err(e) if e.kind == ErrorKind::Transient => {
                        plan.phase = Phase::Unsure {
                            since: now,
                            error: e.to_string(),
                        }
                    }
                    Err(e) => self.fail(now, e.to_string(), &mut out),
                    // Even a step with nothing to check waits for the next observation: the
                    // next step's guard must be judged on data newer than this action (a drain
                    // is followed by a fence only if the member is still not the leader).
                    Ok(()) => plan.phase = Phase::Verifying { since: now },
                }
            }
            Event::Tick => self.check_timeouts(now, &mut out),
        }
        self.forget_when_idle();
        out
    }

    /// Emergencies first: an ordinary plan (or proposal) gives way to an emergency (a disk over
    /// its critical ratio, an OOM-killed member's memory) when nothing of it is in flight: it
    /// ends as failed, saying why, and the emergency is proposed at once. A plan with an action
    /// running is left to get its answer first (a step is never cut in half).
    fn yield_to_emergency(
        &mut self,
        candidates: &[Candidate],
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let Some(urgent) = candidates.iter().find(|c| c.intent.emergency) else {
            return;
        };
        let why = format!("preempted: {}", urgent.intent.decision.summary);
        if self
            .pending
            .as_deref()
            .is_some_and(|(p, _)| !p.intent.emergency)
        {
            self.drop_proposal(why.clone(), out);
        }
        let idle = self
            .plan
            .as_ref()
            .is_some_and(|p| !p.intent.emergency && !matches!(p.phase, Phase::Issued { .. }));
        if idle {
            self.fail(now, why, out);
        }
    }

    /// Drops the proposal waiting for the coordinator: it ends as refused, with `reason`.
    fn drop_proposal(&mut self, reason: String, out: &mut Vec<Command>) {
        if let Some((plan, _)) = self.pending.take().map(|b| *b) {
            out.push(Command::Finished {
                report: Report {
                    op: plan.id,
                    intent: plan.intent,
                    outcome: PlanOutcome::Refused { reason },
                },
            });
        }
    }

    fn check_timeouts(&mut self, now: Timestamp, out: &mut Vec<Command>) {
        if self
            .pending
            .as_deref()
            .is_some_and(|(_, at)| now.since(*at) > self.config.proposal_timeout)
        {
            self.drop_proposal("no answer from the coordinator in time".into(), out);
        }
        let Some(plan) = &self.plan else { return };
        let step_timeout = self.config.step_timeout;
        let started = match &plan.phase {
            Phase::Issued { at } => Some((*at, step_timeout, "no result for the action".into())),
            Phase::Verifying { since } => {
                Some((*since, step_timeout, "the check did not pass".into()))
            }
            Phase::Unsure { since, error } => Some((
                *since,
                step_timeout.min(UNSURE_WAIT),
                format!("{error}, and the check did not pass either"),
            )),
            Phase::Ready => None,
        };
        if let Some((at, limit, what)) = started {
            if now.since(at) > limit {
                let reason = format!("{what} within {}s", limit.as_secs());
                self.fail(now, reason, out);
            }
        }
    }

    fn fail(&mut self, now: Timestamp, reason: String, out: &mut Vec<Command>) {
        let Some(plan) = self.plan.take() else { return };
        self.record_change(&plan.intent, now, true);
        // A scale-in stopped after its drain but before the fence leaves a running member
        // drained: put it back. Best effort, outside the plan (its answer is not awaited; the
        // balancers' own sync is level-triggered and would catch up anyway).
        if let IntentKind::ScaleIn { member } = &plan.intent.kind {
            let drained = plan.steps[..plan.cursor.min(plan.steps.len())]
                .iter()
                .any(|s| matches!(s.action, Step::Drain { .. }));
            let fenced = plan.steps[..plan.cursor.min(plan.steps.len())]
                .iter()
                .any(|s| matches!(s.action, Step::Fence { .. }));
            if drained && !fenced {
                out.push(Command::Execute {
                    op: plan.id.clone(),
                    step: plan.steps.len(),
                    action: Step::Undrain {
                        member: member.clone(),
                    },
                    emergency: false,
                });
            }
        }
        out.push(Command::Finished {
            report: Report {
                op: plan.id,
                intent: plan.intent,
                outcome: PlanOutcome::Failed {
                    step: plan.cursor,
                    reason,
                },
            },
        });
    }

    /// Starts the policy's cooldown (at a plan's start and again at its end, so it counts from
    /// when the cluster settled). A disk change counts once against the daily budget: at the
    /// start only.
    fn record_change(&mut self, intent: &Intent, now: Timestamp, at_end: bool) {
        match &intent.kind {
            IntentKind::Resize {
                role,
                resource: Resource::Disk,
                to,
                ..
            } => {
                if !at_end {
                    self.policies(*role).disk.record_change(now, *to);
                }
            }
            IntentKind::Resize {
                role, resource, to, ..
            } => {
                if let Some(p) = self.policies(*role).vertical(*resource) {
                    p.record_change(now, *to);
                }
            }
            IntentKind::Retune { .. } => self.cache.record_retune(now),
            IntentKind::ScaleOut { .. } | IntentKind::ScaleIn { .. } => {
                self.replicas.record_change(now, self.databases as u32);
            }
        }
    }

    fn max_lag(&self) -> f64 {
        self.config.policy.replicas.max_lag_bytes
    }

    fn holds(&self, snap: &Snapshot, check: &Check) -> bool {
        let (lag, stale) = (self.max_lag(), self.config.policy.replicas.stale_after);
        match check {
            Check::Nothing => true,
            Check::Size { member, size } => {
                snap.size_of(member).is_some_and(|s| same_size(&s, size))
            }
            Check::Healthy { member } => snap.healthy(member, lag, stale),
            Check::LeaderMoved { from } => snap
                .leader()
                .is_some_and(|l| l != from && snap.healthy(l, lag, stale)),
            Check::Exists { member } => snap.platform.iter().any(|m| &m.name == member),
            Check::Stopped { member } => snap.stopped(member),
            Check::Gone { member } => snap.gone(member),
            Check::All { checks } => checks.iter().all(|c| self.holds(snap, c)),
        }
    }

    /// `Ok(Some(candidate))` for a switchover, `Ok(None)` when the step may start, else why not.
    fn guard(&self, snap: &Snapshot, guard: &Guard) -> Result<Option<String>, String> {
        let (lag, stale) = (self.max_lag(), self.config.policy.replicas.stale_after);
        match guard {
            Guard::None => Ok(None),
            Guard::NotLeader { member } => {
                if snap.is_leader(member) {
                    Err(format!("{member} still holds the leader lock"))
                } else {
                    Ok(None)
                }
            }
            Guard::ScaleIn {
                member,
                min_members,
            } => {
                if snap.leader().is_none_or(|l| l == member) {
                    return Err(format!("{member} is the leader, or no leader is observed"));
                }
                let left = snap
                    .healthy_databases(lag, stale)
                    .iter()
                    .filter(|m| *m != member)
                    .count();
                if left < *min_members as usize {
                    return Err(format!(
                        "removing {member} would leave {left} healthy members, below the HA minimum {min_members}"
                    ));
                }
                Ok(None)
            }
            Guard::Candidates { candidates } => candidates
                .iter()
                .find(|(name, size)| {
                    !snap.is_leader(name)
                        && snap.size_of(name).is_some_and(|s| same_size(&s, size))
                        && snap.healthy(name, lag, stale)
                })
                .map(|(name, _)| Some(name.clone()))
                .ok_or_else(|| {
                    "no healthy streaming replica at the new size to switch over to".into()
                }),
        }
    }

    /// Walks the plan as far as the newest observation allows. `fresh`: the observation came
    /// after the current step's action, so it may verify it.
    fn advance(&mut self, now: Timestamp, mut fresh: bool, out: &mut Vec<Command>) {
        loop {
            let Some(snap) = self.last.clone() else {
                return;
            };
            let Some(plan) = self.plan.as_ref() else {
                return;
            };
            let Some(step) = plan.current().cloned() else {
                let plan = self.plan.take().expect("checked above");
                self.record_change(&plan.intent, now, true);
                out.push(Command::Finished {
                    report: Report {
                        op: plan.id,
                        intent: plan.intent,
                        outcome: PlanOutcome::Completed,
                    },
                });
                return;
            };
            match plan.phase {
                Phase::Issued { .. } => return,
                Phase::Verifying { .. } | Phase::Unsure { .. } => {
                    if !fresh || !self.holds(&snap, &step.verify) {
                        return;
                    }
                    let plan = self.plan.as_mut().expect("checked above");
                    plan.cursor += 1;
                    plan.phase = Phase::Ready;
                }
                Phase::Ready => {
                    if step.applied.as_ref().is_some_and(|c| self.holds(&snap, c)) {
                        // Already done: verify on this same observation (it is what showed it).
                        let plan = self.plan.as_mut().expect("checked above");
                        plan.phase = Phase::Verifying { since: now };
                        fresh = true;
                        continue;
                    }
                    let candidate = match self.guard(&snap, &step.guard) {
                        Ok(c) => c,
                        Err(reason) => return self.fail(now, reason, out),
                    };
                    let plan = self.plan.as_mut().expect("checked above");
                    let index = plan.cursor;
                    if let (Some(c), Step::Switchover { candidate, .. }) =
                        (candidate, &mut plan.steps[index].action)
                    {
                        *candidate = Some(c);
                    }
                    plan.phase = Phase::Issued { at: now };
                    out.push(Command::Journal {
                        plan: Plan::clone(plan),
                    });
                    out.push(Command::Execute {
                        op: plan.id.clone(),
                        step: index,
                        action: plan.steps[index].action.clone(),
                        emergency: plan.intent.emergency,
                    });
                    return;
                }
            }
        }
    }

    /// Runs every policy on the snapshot; returns the changes they ask for.
    fn decide(&mut self, snap: &Snapshot, now: Timestamp, busy: bool) -> Vec<Candidate> {
        // The last observation's list, emptied: its room is reused, not made again.
        let mut decisions = std::mem::take(&mut self.decisions);
        decisions.clear();
        let mut candidates = Vec::new();
        let caps = snap.capabilities;
        for role in Role::ALL {
            let Some(rs) = snap.role_size(role) else {
                continue;
            };
            let current = rs.size;
            let observed = snap.observed_members(role);
            let cpu = figures(&observed, |m| m.cpu_used);
            let mem = figures(&observed, |m| m.memory_used);
            let used = figures(&observed, |m| m.disk_used);
            let wal = figures(&observed, |m| m.wal_bytes);
            let policies = self.policies(role);
            let cpu_d = policies.cpu.decide(now, &cpu, current.cpus);
            let mem_d = policies
                .memory
                .decide(now, &mem, current.memory_bytes as f64);
            let mut disk_d = policies
                .disk
                .decide(now, &used, &wal, current.disk_bytes as f64);
            if role == Role::Database
                && (disk_d.has_rule(Rule::Threshold) || disk_d.has_rule(Rule::Forecast))
            {
                // Issue 14: a filling disk whose WAL a slot keeps for nobody says so; growing
                // only buys time (`[policy.slots] release_above` releases such slots).
                let held = steward_policies::slots::held_slots(
                    &snap.observation,
                    &self.config.policy.slots,
                    self.config.policy.role(role).disk.stale_after,
                );
                if !held.is_empty() {
                    let named: Vec<String> = held.iter().map(ToString::to_string).collect();
                    disk_d.summary = format!("{}; {}", disk_d.summary, named.join("; ")).into();
                }
            }

            // OOM kills: a counter going up. While busy the counters are not consumed, so an
            // OOM during a rollout is acted on once the rollout ends.
            let mut oom = false;
            if !busy {
                for m in snap.observation.members_of(role) {
                    let Some(kills) = m
                        .oom_kills
                        .map(|f: Figure| f.value)
                        .filter(|v| v.is_finite())
                    else {
                        continue;
                    };
                    // Updated in place: a new key only for a new member, not every tick.
                    match self.oom_seen.get_mut(&m.name) {
                        Some(seen) => {
                            oom |= kills > *seen;
                            *seen = kills;
                        }
                        None => {
                            self.oom_seen.insert(m.name.clone(), kills);
                        }
                    }
                }
            }
            let oom_d = oom.then(|| {
                self.policies(role)
                    .memory
                    .record_oom(now, current.memory_bytes as f64)
            });

            // The busiest member's fill, for the emergency mark.
            let fill = used
                .iter()
                .flatten()
                .map(|f| f.value / current.disk_bytes.max(1) as f64)
                .fold(0.0_f64, f64::max);
            let critical = self.config.policy.role(role).disk.critical;

            let resize = |d: &Decision,
                          resource: Resource,
                          how: Change,
                          settings: Settings,
                          priority: u8,
                          emergency: bool| {
                let diff = if settings != Settings::Keep
                    && role == Role::Database
                    && resource != Resource::Disk
                    && self.config.settings.enabled
                {
                    let diff = self
                        .config
                        .settings
                        .diff(&current, &current.with(resource, d.target));
                    match (settings, resource, d.action) {
                        (Settings::Headroom, _, _) => diff.for_headroom(),
                        // The buffer cache grows on its own signal only (`policies::cache`).
                        (_, Resource::Memory, Direction::Grow) => diff.for_memory_grow(),
                        (_, Resource::Memory, _) => {
                            diff.for_memory_shrink(running_shared_buffers(snap))
                        }
                        _ => diff,
                    }
                } else {
                    SettingsDiff::default()
                };
                let disruptive = how == Change::Restart || !diff.restart.is_empty();
                Candidate {
                    priority,
                    intent: Intent {
                        kind: IntentKind::Resize {
                            role,
                            resource,
                            from: d.current,
                            to: d.target,
                        },
                        emergency,
                        disruptive,
                        decision: d.clone(),
                    },
                    build: Build::Resize {
                        role,
                        resource,
                        target: d.target,
                        how,
                        diff,
                        grow: d.action == Direction::Grow,
                    },
                }
            };
            let role_rank = u8::from(role == Role::Balancer);
            // A disk grow needs the disks alike, not the whole sizes: a CPU rollout stopped
            // half-way must not keep a disk from growing (each member keeps its own CPU and
            // memory; only the disk changes).
            let disks_alike = snap.disks_are(role, current.disk_bytes);
            if disks_alike && disk_d.action == Direction::Grow {
                let emergency = fill >= critical;
                let priority = if emergency { 0 } else { 5 };
                candidates.push(resize(
                    &disk_d,
                    Resource::Disk,
                    caps.disk_grow,
                    Settings::Keep,
                    priority,
                    emergency,
                ));
            }
            if !rs.mixed {
                if let Some(d) = oom_d.as_ref().filter(|d| d.action == Direction::Grow) {
                    // An OOM-killed member is an outage in the making, like a full disk; the
                    // memory added is the workload's, not the buffer cache's: no restart.
                    candidates.push(resize(
                        d,
                        Resource::Memory,
                        caps.memory,
                        Settings::Headroom,
                        1,
                        true,
                    ));
                }
                if cpu_d.changes() {
                    candidates.push(resize(
                        &cpu_d,
                        Resource::Cpu,
                        caps.cpu,
                        Settings::Follow,
                        3 + role_rank,
                        false,
                    ));
                }
                if mem_d.changes() {
                    candidates.push(resize(
                        &mem_d,
                        Resource::Memory,
                        caps.memory,
                        Settings::Follow,
                        3 + role_rank,
                        false,
                    ));
                }
            }
            decisions.extend([cpu_d, mem_d, disk_d]);
            decisions.extend(oom_d);
            if role == Role::Database {
                let settings = &self.config.settings;
                let share = settings
                    .enabled
                    .then(|| settings.shared_buffers_for(&current))
                    .filter(|s| *s > 0.0);
                let members: Vec<&steward_model::observation::MemberObservation> =
                    snap.observation.members_of(role).collect();
                let cache_d = self.cache.decide(now, &members, share);
                if cache_d.changes() && !rs.mixed {
                    // Its own operation: patch, restart the replicas, switchover, restart the
                    // old primary; the resize builder with nothing to resize does exactly that.
                    candidates.push(Candidate {
                        priority: 7,
                        intent: Intent {
                            kind: IntentKind::Retune {
                                role,
                                from: cache_d.current,
                                to: cache_d.target,
                            },
                            emergency: false,
                            disruptive: true,
                            decision: cache_d.clone(),
                        },
                        build: Build::Resize {
                            role,
                            resource: Resource::Memory,
                            target: current.memory_bytes as f64,
                            how: Change::Live,
                            diff: self.config.settings.cache_retune(&current),
                            grow: true,
                        },
                    });
                }
                decisions.push(cache_d);
            }
        }

        let rd = self.replicas.decide(now, &snap.observation);
        // Moved into the list, copied only into a candidate: most decisions hold.
        let d = rd.decision;
        match d.action {
            Direction::Grow => {
                let priority = if d.has_rule(Rule::HaMinimum) { 2 } else { 6 };
                candidates.push(Candidate {
                    priority,
                    intent: Intent {
                        kind: IntentKind::ScaleOut {
                            member: String::new(),
                        },
                        emergency: false,
                        disruptive: false,
                        decision: d.clone(),
                    },
                    build: Build::ScaleOut,
                });
            }
            Direction::Shrink => {
                if let Some(member) = rd.remove {
                    candidates.push(Candidate {
                        priority: 6,
                        intent: Intent {
                            kind: IntentKind::ScaleIn {
                                member: member.clone(),
                            },
                            emergency: false,
                            disruptive: true,
                            decision: d.clone(),
                        },
                        build: Build::ScaleIn { member },
                    });
                }
            }
            Direction::Hold => {}
        }
        decisions.push(d);
        // Kept until the next observation: no spare room (a vector grown one by one to five
        // decisions has room for eight, 336 bytes a cluster). The same count next time fits.
        decisions.shrink_to_fit();
        self.decisions = decisions;
        candidates.sort_by_key(|c| c.priority);
        candidates
    }

    /// The first candidate a plan can be built for.
    fn propose(&mut self, candidates: Vec<Candidate>, now: Timestamp) -> Option<Plan> {
        // Most ticks have nothing to propose: don't copy the snapshot for them (a fleet of
        // 10,000 clusters spent a large share of its tick on this copy; benches/fleet.rs).
        if candidates.is_empty() {
            return None;
        }
        let snap = self.last.clone()?;
        let (lag, stale) = (self.max_lag(), self.config.policy.replicas.stale_after);
        for c in candidates {
            let id = self.next_id(&snap, now);
            let mut intent = c.intent;
            let steps: Vec<PlanStep> = match c.build {
                Build::Resize {
                    role,
                    resource,
                    target,
                    how,
                    diff,
                    grow,
                } => match resize_steps(
                    &snap,
                    role,
                    resource,
                    target,
                    how,
                    &diff,
                    grow,
                    &snap
                        .members(role)
                        .into_iter()
                        .filter(|m| snap.healthy(m, lag, stale))
                        .collect(),
                ) {
                    Ok(steps) if !steps.is_empty() => steps,
                    _ => continue,
                },
                Build::ScaleOut => {
                    let Some(size) = snap.role_size(Role::Database).map(|r| r.size) else {
                        continue;
                    };
                    let name = self.next_name(&snap);
                    intent.kind = IntentKind::ScaleOut {
                        member: name.clone(),
                    };
                    scale_out_steps(CreateSpec {
                        cluster: snap.observation.cluster.clone(),
                        role: Role::Database,
                        name,
                        size,
                        operation_id: id.0.clone(),
                        replaces: None,
                    })
                }
                Build::ScaleIn { member } => {
                    // The policy already never picks the leader; checked again here, on the
                    // same data the guards will use.
                    let min = self.config.policy.replicas.min_members;
                    let healthy_left = snap
                        .healthy_databases(lag, stale)
                        .iter()
                        .filter(|m| **m != member)
                        .count();
                    if snap.leader().is_none_or(|l| l == member) || healthy_left < min as usize {
                        continue;
                    }
                    scale_in_steps(&member, min, self.config.delete_data_on_scale_in)
                }
            };
            return Some(Plan::new(id, intent, steps));
        }
        None
    }

    fn next_id(&mut self, snap: &Snapshot, now: Timestamp) -> OperationId {
        self.seq += 1;
        let cluster = if snap.observation.cluster.is_empty() {
            "cluster"
        } else {
            &snap.observation.cluster
        };
        OperationId(format!("{cluster}-scale-{}-{}", now.as_millis(), self.seq))
    }

    /// The next database member's name: the shared prefix (or the configured one) and one more
    /// than the highest number ever seen.
    fn next_name(&self, snap: &Snapshot) -> String {
        let names = snap.members(Role::Database);
        let prefix = match &self.config.member_prefix {
            Some(p) => p.clone(),
            None => {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for (p, _) in names.iter().filter_map(|n| split_number(n)) {
                    *counts.entry(p).or_default() += 1;
                }
                counts
                    .into_iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| format!("{}-db-", snap.observation.cluster))
            }
        };
        let highest = names
            .iter()
            .filter_map(|n| split_number(n))
            .filter(|(p, _)| *p == prefix)
            .map(|(_, n)| n)
            .max()
            .unwrap_or(0)
            .max(self.highest_number);
        format!("{prefix}{}", highest + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_numbers_split_off_the_name() {
        assert_eq!(split_number("pg-12"), Some(("pg-", 12)));
        assert_eq!(split_number("db7"), Some(("db", 7)));
        assert_eq!(split_number("primary"), None);
    }

    #[test]
    fn action_errors_read_as_one_lowercase_line() {
        let e = ActionError {
            kind: ErrorKind::Refused,
            message: "memory below usage".into(),
        };
        assert_eq!(e.to_string(), "action failed (refused): memory below usage");
    }
}
