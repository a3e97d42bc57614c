//! `steward run`: the thin tokio drivers of the two loops around their sans-IO cores.
//!
//! What it is: [`run`] starts, on one task, two loops that share ONE observer and ONE
//! coordinator:
//! - the repair loop ticks, asks the [`observer::Observer`] for the cluster, publishes the view,
//!   feeds the [`Repairer`] (handing it the coordinator) and carries its commands out;
//! - the scale loop receives every published view, feeds the [`Scaler`], asks the same
//!   coordinator for a grant before a plan starts (so one disruptive action runs per cluster,
//!   and scaling waits while a repair runs or the cluster is degraded: repair outranks scaling),
//!   and carries the plan's steps out.
//!
//! Each step is journaled ([`journal`]) before it runs and its end after; a step runs as a
//! spawned task and its result comes back through the loop's `select!` as an action result. At
//! start-up the journal's half-done steps are finished or undone and the scaler's plans resumed
//! (promise 7). On shutdown (SIGTERM/SIGINT, or `--for`), no new step starts and the step in
//! flight is awaited for a while; one that does not finish stays in the journal.
//!
//! `--dry-run` observes and decides with the same cores, writes every command it would have run
//! (with its reason) to the action log, executes nothing, journals nothing and feeds nothing
//! back (a synthetic success would make the cores believe the world changed).
//!
//! What it is not: a decision maker (the cores are), an adapter (the ports are), or the HTTP
//! surface. Time is `tokio::time` only, through [`Clock`], so the loop tests run in paused time.

pub mod actions;
pub mod balancers;
pub mod config;
pub mod exec;
pub mod fleet;
pub mod journal;
pub mod lease;
pub mod observer;
pub mod options;
pub mod sim;
mod slots;
pub mod start;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use steward_adapters::patroni::PatroniApi;
use steward_coordinator::{Coordinator, Grant, GrantOutcome, Purpose};
use steward_model::observation::Observation;
use steward_model::operation::Step;
use steward_model::ports::metrics::MetricsSource;
use steward_model::ports::ErrorKind;
use steward_model::ports::{CreateSpec, Platform, PlatformMember};
use steward_model::{Role, Size, Timestamp};
use steward_repairer::{
    ActionError, Command as RepairCommand, CommandKind, Event, OperationId, OperatorCommand,
    RepairKind, RepairRecord, Repairer,
};
use steward_scaler::{Command as ScaleCommand, Event as ScaleEvent, IntentKind, Scaler};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, info_span, warn, Instrument};

use self::actions::{ActionLog, Kind, Line};
use self::balancers::BalancerSync;
use self::exec::{ActGuard, Balancers, ExecError, Executor};
use self::journal::{recovery, Concerned, Entry, LoopJournal, LoopName, Pending, Recovery};
use self::observer::{Observer, Seen};
use crate::config::Config;

/// How long a stopping Steward waits for the step in flight before leaving it to the journal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The loops' clock: a fixed [`Timestamp`] at start plus the `tokio::time` elapsed since, so
/// paused tokio time moves it deterministically.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Timestamp,
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock reading `start` now (needs a tokio runtime).
    pub fn starting_at(start: Timestamp) -> Self {
        Clock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    pub fn now(&self) -> Timestamp {
        self.start + self.origin.elapsed()
    }
}

/// The outside world, behind its ports.
pub struct Ports {
    pub platform: Arc<dyn Platform>,
    pub patroni: Arc<dyn PatroniApi>,
    /// The metric sources (Prometheus, when configured), asked in order; the platform's usage
    /// fills in what none of them answers.
    pub metrics: Vec<Arc<dyn MetricsSource>>,
    pub balancers: Option<Balancers>,
    /// Checked before every step (the lease, with several instances); `None` acts alone.
    pub guard: Option<Arc<dyn ActGuard>>,
    pub journal: Arc<dyn LoopJournal>,
    pub decisions: ActionLog,
    /// The HTTP surface's shared status and metrics, and the policy decision log, when served.
    pub telemetry: Option<Telemetry>,
}

/// Where the loops publish what they see and do for `/status`, `/metrics` and `/healthz`.
#[derive(Clone)]
pub struct Telemetry {
    pub server: crate::server::Shared,
    /// The policies' decisions that change something, as JSON lines (`decisions.jsonl`).
    pub policy_log: Option<Arc<crate::telemetry::DecisionLog>>,
}

/// How this run behaves.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub dry_run: bool,
    pub clock: Clock,
}

/// Tells the loops to stop; cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A trigger and the signal it sets.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Resolves once the trigger is pulled (or dropped: nobody can stop us any more, so stop).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// Pulls `trigger` on SIGTERM or SIGINT.
pub async fn on_signals(trigger: ShutdownTrigger) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing the current step, then stopping"),
        _ = int.recv() => info!("SIGINT: finishing the current step, then stopping"),
    }
    trigger.trigger();
    Ok(())
}

/// What both loops share.
struct Shared {
    cluster: String,
    dry_run: bool,
    clock: Clock,
    exec: Executor,
    journal: Arc<dyn LoopJournal>,
    log: ActionLog,
    telemetry: Option<Telemetry>,
    /// The repairer's core and the cluster's coordinator. Locked briefly, never across an await.
    cores: Mutex<Cores>,
    /// The guards' states last published to `/metrics`.
    published_guards: Mutex<BTreeMap<String, bool>>,
    /// The repair as last journaled (to write it only when it changed).
    journaled_repair: Mutex<Option<RepairRecord>>,
}

/// The repairer's core and the cluster's one coordinator, behind one lock. The coordinator is
/// the runtime's: the repairer is handed it on every event (it feeds it the cluster's health and
/// asks it before a repair), and the scale loop asks it for a grant directly. Repair outranks
/// scaling because a degraded cluster refuses scaling.
struct Cores {
    repairer: Repairer,
    coordinator: Coordinator,
}

impl Cores {
    fn handle(&mut self, event: Event, now: Timestamp) -> Vec<RepairCommand> {
        self.repairer.handle(event, now, &mut self.coordinator)
    }
}

impl Shared {
    fn cores(&self) -> MutexGuard<'_, Cores> {
        self.cores.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Journals the repair in progress as it now stands, if it changed since the last write:
    /// called after every turn of the repairer's core and before any of its commands runs, so
    /// the record names the step about to run (promise 7). A repair that ended is archived.
    fn journal_repair(&self) -> anyhow::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let now = self.clock.now();
        let current = self.cores().repairer.ongoing();
        let mut journaled = self
            .journaled_repair
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *journaled == current {
            return Ok(());
        }
        if let Some(previous) = journaled.as_ref() {
            let ended = current.as_ref().is_none_or(|c| c.id != previous.id);
            if ended {
                let outcome = if previous.failed {
                    "the replacement failed and was cleaned up"
                } else if previous.aborted {
                    "given up"
                } else {
                    "finished"
                };
                self.journal
                    .append(&Entry::RepairEnd {
                        at: now,
                        op: previous.id.to_string(),
                        outcome: outcome.to_string(),
                    })
                    .with_context(|| format!("journaling the end of repair {}", previous.id))?;
            }
        }
        if let Some(repair) = &current {
            self.journal
                .append(&Entry::Repair {
                    at: now,
                    repair: repair.clone(),
                })
                .with_context(|| format!("journaling repair {} before its next step", repair.id))?;
        }
        *journaled = current;
        Ok(())
    }

    /// Issue 15: a cluster below its floor (`min_members`) is an alert on stdout (the action
    /// log), `/status` and `/metrics`, whatever the cause, also when nothing is left on the
    /// platform to replace. `/status` and the gauge follow at once; the alert line comes once
    /// the cluster has been below for [`FLOOR_ALERT_AFTER`] (a repair under way is not news),
    /// and a line says when it is back.
    async fn watch_floor(&self, observation: &Observation, min_members: u32, floor: &mut Floor) {
        let serving = serving_members(observation);
        let now = self.clock.now();
        let below = serving < min_members as usize;
        match (below, floor.since) {
            (true, None) => floor.since = Some(now),
            (false, Some(_)) => {
                floor.since = None;
                if floor.alerted {
                    self.line(
                        LoopName::Scale,
                        Kind::Result,
                        &self.cluster,
                        "floor_restored".into(),
                        format!("{serving} database members serve again (floor {min_members})"),
                    );
                }
                floor.alerted = false;
            }
            _ => {}
        }
        let text = below.then(|| {
            format!(
                "{serving} database member(s) serve, below the floor of {min_members} \
                 (min_members): members are added or replaced one at a time; if none comes (no \
                 host, no template, repairs frozen), add one by hand"
            )
        });
        if let (Some(since), Some(t)) = (floor.since, &text) {
            if !floor.alerted && now.since(since) >= FLOOR_ALERT_AFTER {
                floor.alerted = true;
                warn!(cluster = %self.cluster, serving, min_members, "alert: below the floor");
                // The op is the cluster: a condition of the cluster, not of an operation.
                self.line(
                    LoopName::Scale,
                    Kind::Alert,
                    &self.cluster,
                    "below_floor".into(),
                    t.clone(),
                );
            }
        }
        if floor.shown != below {
            floor.shown = below;
            if let Some(t) = &self.telemetry {
                crate::telemetry::FloorChanged {
                    cluster: &self.cluster,
                    below: below.then_some((serving, min_members as usize)),
                }
                .emit(t.server.metrics());
            }
        }
        if let Some(t) = &self.telemetry {
            t.server.update_status(|s| s.below_floor = text).await;
        }
    }

    fn line(&self, by: LoopName, kind: Kind, op: &str, what: String, reason: String) {
        self.log.write(&Line {
            at: self.clock.now(),
            by,
            kind,
            op: op.to_string(),
            what,
            reason,
            dry_run: self.dry_run,
        });
    }

    /// Starts `work` as a task whose result comes back through `inflight`. Its operation (the
    /// scaler's plan, the repair) is journaled with the step as its cursor before this is called.
    fn start_step(
        &self,
        by: LoopName,
        op: String,
        step: Option<usize>,
        work: Step,
        api_urls: BTreeMap<String, String>,
        inflight: &mut JoinSet<StepDone>,
    ) {
        let span = info_span!(
            "action",
            loop = by.as_str(),
            cluster = %self.cluster,
            member = work.member().unwrap_or(""),
            op = %op,
        );
        let exec = self.exec.clone();
        inflight.spawn(
            async move {
                info!(step = %work, "running");
                let began = tokio::time::Instant::now();
                let result = exec.run(&work, &api_urls).await;
                let took = began.elapsed();
                match &result {
                    Ok(()) => info!(step = %work, "done"),
                    Err(e) => warn!(step = %work, error = %e, "failed"),
                }
                StepDone {
                    op,
                    took,
                    step,
                    work,
                    result,
                }
            }
            .instrument(span),
        );
    }

    /// Logs a step's result (its operation's record, rewritten by the core's next turn, is the
    /// journal of it).
    fn end_step(&self, by: LoopName, done: &StepDone) {
        let result = match &done.result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        self.line(by, Kind::Result, &done.op, done.work.to_string(), result);
        if let Some(t) = &self.telemetry {
            let outcome = match &done.result {
                Ok(()) => crate::telemetry::StepOutcome::Success,
                Err(e) if matches!(e.kind, ErrorKind::Transient | ErrorKind::Conflict) => {
                    crate::telemetry::StepOutcome::Transient
                }
                Err(_) => crate::telemetry::StepOutcome::Permanent,
            };
            let kind = work_kind(&done.work);
            crate::telemetry::ActionFinished {
                cluster: &self.cluster,
                member: done.work.member(),
                kind,
                outcome,
                duration: done.took,
                operation: Some(&done.op),
            }
            .emit(t.server.metrics());
        }
    }

    /// After a repair tick: members, guards and the tick for `/status` and `/healthz`; the
    /// operator's pause flag into the repairer.
    async fn publish_repair_tick(
        &self,
        seen: &Seen,
        held: &[steward_policies::slots::HeldSlot],
        took: Duration,
    ) {
        let Some(t) = &self.telemetry else { return };
        let now = self.clock.now();
        let paused = t.server.is_paused();
        let guards = {
            let mut r = self.cores();
            if r.coordinator.is_paused() != paused {
                let op = if paused {
                    OperatorCommand::Pause
                } else {
                    OperatorCommand::Resume
                };
                // Pausing or resuming issues nothing by itself; the next tick decides.
                let _ = r.handle(Event::Operator(op), now);
            }
            guard_status(&r)
        };
        {
            // /metrics: each guard's gauge when it changes (the log says why), and the age of
            // the observation the loops just used.
            let mut published = self
                .published_guards
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (name, g) in &guards {
                if published.get(name) != Some(&g.engaged) {
                    published.insert(name.clone(), g.engaged);
                    crate::telemetry::GuardChanged {
                        cluster: &self.cluster,
                        guard: name,
                        engaged: g.engaged,
                        reason: &g.reason,
                    }
                    .emit(t.server.metrics());
                }
            }
        }
        crate::telemetry::ObservationUsed {
            cluster: &self.cluster,
            age: Duration::from_millis(
                now.as_millis()
                    .saturating_sub(seen.snapshot.observation.at.as_millis())
                    .max(0) as u64,
            ),
        }
        .emit(t.server.metrics());
        let members = seen
            .snapshot
            .observation
            .members
            .iter()
            .map(|m| crate::server::MemberStatus::from_observation(m, None))
            .collect();
        t.server
            .update_status(|s| {
                s.observed_at = Some(seen.snapshot.observation.at);
                s.notes = seen.snapshot.observation.notes.clone();
                s.members = members;
                s.guards = guards;
                s.held_slots = held.iter().map(ToString::to_string).collect();
                s.kept_data = seen.kept.clone();
            })
            .await;
        t.server
            .record_tick(crate::telemetry::Loop::Repairer, now, Vec::new())
            .await;
        crate::telemetry::LoopTicked {
            cluster: &self.cluster,
            r#loop: crate::telemetry::Loop::Repairer,
            duration: took,
        }
        .emit(t.server.metrics());
    }

    /// After a scale tick: the policies' decisions (logged when they change something).
    async fn publish_scale_tick(&self, decisions: &[steward_model::Decision], took: Duration) {
        let Some(t) = &self.telemetry else { return };
        let now = self.clock.now();
        for d in decisions {
            crate::telemetry::DecisionMade {
                cluster: &self.cluster,
                r#loop: crate::telemetry::Loop::Scaler,
                decision: d,
            }
            .emit(t.server.metrics());
            if let (Some(log), true) = (&t.policy_log, d.changes()) {
                if let Err(e) = log.append(&self.cluster, crate::telemetry::Loop::Scaler, d) {
                    warn!(error = %e, "cannot write the policy decision log");
                }
            }
        }
        t.server
            .record_tick(crate::telemetry::Loop::Scaler, now, decisions.to_vec())
            .await;
        crate::telemetry::LoopTicked {
            cluster: &self.cluster,
            r#loop: crate::telemetry::Loop::Scaler,
            duration: took,
        }
        .emit(t.server.metrics());
    }
}

/// How long a cluster may be below its floor before it is an alert line: a replica killed and
/// replaced is below for the replacement's time (20-30 s on the lab); longer means stuck.
const FLOOR_ALERT_AFTER: Duration = Duration::from_secs(120);

/// What the scale loop knows about the floor.
#[derive(Default)]
struct Floor {
    /// Since when the cluster is below it.
    since: Option<Timestamp>,
    /// The alert line was written for this stretch.
    alerted: bool,
    /// What `/metrics` shows.
    shown: bool,
}

/// Database members that serve: listed by Patroni, running on the platform (when it says),
/// and the leader or not reported as not streaming. A fenced or exited member holds a host but
/// serves nobody.
fn serving_members(observation: &Observation) -> usize {
    use steward_model::observation::{PatroniRole, PlatformState};
    observation
        .members_of(Role::Database)
        .filter(|m| m.in_patroni != Some(false) && m.patroni_role.is_some())
        .filter(|m| {
            !matches!(
                m.platform_state,
                Some(PlatformState::Fenced | PlatformState::Exited | PlatformState::OomKilled)
            )
        })
        .filter(|m| {
            matches!(
                m.patroni_role,
                Some(PatroniRole::Leader | PatroniRole::StandbyLeader)
            ) || m.streaming != Some(false)
        })
        .count()
}

/// A short, bounded name for a step (a metrics label).
fn work_kind(work: &Step) -> &'static str {
    match work {
        Step::Switchover { .. } => "switchover",
        Step::Drain { .. } => "drain",
        Step::Undrain { .. } => "undrain",
        Step::Fence { .. } => "fence",
        Step::Create { .. } => "create",
        Step::Remove { .. } => "remove",
        Step::Resize { .. } => "resize",
        Step::PatchConfig { .. } => "patch_config",
        Step::RestartMember { .. } => "restart",
    }
}

/// The coordinator's guards as `/status` shows them.
fn guard_status(cores: &Cores) -> BTreeMap<String, crate::server::GuardStatus> {
    use steward_coordinator::Breaker;
    let c = &cores.coordinator;
    let mut guards = BTreeMap::new();
    let (open, why) = match c.breaker() {
        Breaker::Closed { failures } => (false, format!("closed ({failures} failure(s))")),
        Breaker::HalfOpen { failures } => (true, format!("half-open after {failures} failure(s)")),
        Breaker::Open { failures, since } => (
            true,
            format!("open since {since} after {failures} failed replacement(s)"),
        ),
    };
    guards.insert(
        "circuit_breaker".to_string(),
        crate::server::GuardStatus {
            engaged: open,
            reason: why,
            since: None,
        },
    );
    guards.insert(
        "paused".to_string(),
        crate::server::GuardStatus {
            engaged: c.is_paused(),
            reason: if c.is_paused() {
                "paused by an operator: nothing starts".to_string()
            } else {
                "running".to_string()
            },
            since: None,
        },
    );
    let holder = c.holder().map(|(op, _)| op.to_string());
    guards.insert(
        "slot".to_string(),
        crate::server::GuardStatus {
            engaged: holder.is_some(),
            reason: holder.map_or_else(
                || "free".to_string(),
                |op| format!("held by operation {op}"),
            ),
            since: None,
        },
    );
    if let Some(refusal) = cores.repairer.last_refusal() {
        guards.insert(
            refusal.key().to_string(),
            crate::server::GuardStatus {
                engaged: true,
                reason: refusal.to_string(),
                since: None,
            },
        );
    }
    guards
}

/// A finished step.
struct StepDone {
    op: String,
    /// How long the step took.
    took: Duration,
    /// The scaler's step index.
    step: Option<usize>,
    work: Step,
    result: Result<(), ExecError>,
}

/// Runs both loops until `shutdown`. Returns an error only when Steward cannot go on safely
/// (the journal cannot be written, a task panicked).
pub async fn run(
    config: &Config,
    ports: Ports,
    options: Options,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let cluster = config.cluster.name.clone();
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        dry_run: options.dry_run,
        clock: options.clock,
        exec: Executor {
            platform: Arc::clone(&ports.platform),
            patroni: Arc::clone(&ports.patroni),
            balancers: ports.balancers.clone(),
            guard: ports.guard.clone(),
        },
        journal: Arc::clone(&ports.journal),
        log: ports.decisions.clone(),
        telemetry: ports.telemetry.clone(),
        cores: Mutex::new(Cores {
            repairer: Repairer::new(cluster.clone(), config.repair.clone()),
            coordinator: Coordinator::new(config.repair.guards.clone()),
        }),
        published_guards: Mutex::default(),
        journaled_repair: Mutex::default(),
    });
    let mut scaler = Scaler::new(Arc::clone(&config.scaler));
    let mut grant = None;
    let concerned = recover(&shared, &mut scaler, &mut grant).await?;
    info!(cluster = %cluster, dry_run = options.dry_run, platform = ports.platform.kind(), "steward runs");

    let observer = Observer::new(
        cluster,
        Arc::clone(&ports.platform),
        Arc::clone(&ports.patroni),
        ports.metrics.clone(),
    );
    let sync = match (&config.balancers, &ports.balancers) {
        (Some(settings), Some(set)) if !options.dry_run => {
            let sync = BalancerSync::new(
                set.clone(),
                settings,
                ports.decisions.clone(),
                options.clock,
                config.cluster.name.clone(),
            );
            sync.know(concerned.members);
            sync.enable_left_over(concerned.joining);
            Some(sync)
        }
        _ => None,
    };
    let (tx, rx) = watch::channel(None);
    let slots = SlotsSetup {
        config: config.policy.slots.clone(),
        max_age: config
            .prometheus
            .as_ref()
            .map_or(steward_adapters::prometheus::DEFAULT_MAX_AGE, |p| p.max_age),
    };
    let repair = repair_loop(
        Arc::clone(&shared),
        observer,
        sync,
        tx,
        config.run.tick,
        slots,
        shutdown.clone(),
    );
    let scale = scale_loop(Arc::clone(&shared), scaler, grant, rx, shutdown);
    let (r, s) = tokio::join!(repair, scale);
    r.and(s)
}

/// Start-up: settle what a crash left in the journal (nothing in dry-run: it acts on nothing).
/// Returns the members the operations resumed, or ended recently, concerned.
async fn recover(
    shared: &Shared,
    scaler: &mut Scaler,
    grant: &mut Option<Grant>,
) -> anyhow::Result<Concerned> {
    let pending = Pending::from_entries(&shared.journal.read().context("reading the journal")?);
    // A run that died right after an operation ended may have left the servers of the members
    // it removed in the balancers, or its new member's still warming up.
    let mut concerned = shared.journal.recent_members();
    if pending.is_empty() {
        return Ok(concerned);
    }
    if shared.dry_run {
        warn!(
            steps = pending.steps.len(),
            plans = pending.plans.len(),
            repairs = pending.repairs.len(),
            "the journal holds unfinished operations; a dry run leaves them alone"
        );
        return Ok(concerned);
    }
    let now = shared.clock.now();
    for repair in pending.repairs {
        concerned.members.push(repair.target.clone());
        concerned.members.extend(repair.urgent.keys().cloned());
        if matches!(
            repair.kind,
            RepairKind::FenceFirst | RepairKind::Surge | RepairKind::ReplaceFenced
        ) {
            concerned.members.push(repair.replacement.clone());
            concerned.joining.push(repair.replacement.clone());
        }
        let id = repair.id.to_string();
        let what = format!("resume repair of {}", repair.target);
        let next = repair
            .steps
            .first()
            .map_or("its end", steward_repairer::RepairStep::name);
        let resumed = {
            let mut cores = shared.cores();
            let Cores {
                repairer,
                coordinator,
            } = &mut *cores;
            repairer.resume(repair.clone(), now, coordinator)
        };
        match resumed {
            Ok(()) => {
                *shared
                    .journaled_repair
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(repair);
                shared.line(
                    LoopName::Repair,
                    Kind::Recovery,
                    &id,
                    what,
                    format!("journaled before the restart; it goes on from its {next} step"),
                );
            }
            Err(refusal) => {
                // Only a held slot refuses: two repairs cannot both have been under way.
                warn!(op = %id, %refusal, "cannot resume a journaled repair; the loops judge afresh");
                shared.journal.append(&Entry::RepairEnd {
                    at: now,
                    op: id.clone(),
                    outcome: format!("not resumed: {refusal}"),
                })?;
                shared.line(
                    LoopName::Repair,
                    Kind::Recovery,
                    &id,
                    what,
                    format!("not resumed ({refusal}); the loops judge the member afresh"),
                );
            }
        }
    }
    let none = BTreeMap::new();
    for (op, by, work) in pending.steps {
        let how = recovery(by, &work);
        let result = match &how {
            Recovery::Finish(w) => match shared.exec.run(w, &none).await {
                Ok(()) => format!("recovered: finished {w}"),
                Err(e) if e.kind == steward_model::ports::ErrorKind::NotFound => {
                    format!("recovered: {w} needs nothing more (not found)")
                }
                Err(e) => format!("recovered: {w} failed again ({e}); the loops judge afresh"),
            },
            Recovery::Undo(steps) => {
                let mut failed = Vec::new();
                for w in steps {
                    match shared.exec.run(w, &none).await {
                        Ok(()) => {}
                        Err(e) if e.kind == steward_model::ports::ErrorKind::NotFound => {}
                        Err(e) => failed.push(format!("{w}: {e}")),
                    }
                }
                if failed.is_empty() {
                    format!("recovered: undid {work}")
                } else {
                    format!("recovered: undoing {work} failed ({})", failed.join("; "))
                }
            }
            Recovery::Abandon => format!("recovered: {work} left to patroni's own state"),
            Recovery::WithPlan => "recovered: resumed with its plan".to_string(),
        };
        shared.journal.append(&Entry::End {
            at: shared.clock.now(),
            op: op.clone(),
            result: result.clone(),
        })?;
        shared.line(by, Kind::Recovery, &op, work.to_string(), result);
    }
    for plan in pending.plans {
        match &plan.intent.kind {
            IntentKind::ScaleOut { member } => {
                concerned.members.push(member.clone());
                concerned.joining.push(member.clone());
            }
            IntentKind::ScaleIn { member } => concerned.members.push(member.clone()),
            IntentKind::Resize { .. } | IntentKind::Retune { .. } => {}
        }
        let op = plan.id.clone();
        let purpose = Purpose::Scale {
            emergency: plan.intent.prevents_outage(),
            disruptive: plan.intent.disruptive,
        };
        // The plan was permitted before the crash; take the slot again so a repair waits for it.
        match shared.cores().coordinator.acquire(purpose, op.clone(), now) {
            Ok(l) => *grant = Some(l),
            Err(refusal) => warn!(op = %op, %refusal, "resuming a journaled plan without the slot"),
        }
        match scaler.resume(plan, now) {
            Ok(()) => shared.line(
                LoopName::Scale,
                Kind::Recovery,
                &op.0,
                "resume plan".into(),
                "journaled before the restart; it goes on from its current step".into(),
            ),
            Err(e) => {
                warn!(op = %op, error = %e, "cannot resume a journaled plan");
                shared
                    .journal
                    .append(&Entry::PlanEnd { at: now, op: op.0 })?;
            }
        }
    }
    Ok(concerned)
}

/// The size a replacement of `member` gets: the member's own, else the most common of its role.
fn replacement_size(listed: &[PlatformMember], member: &str, role: Role) -> Option<Size> {
    if let Some(m) = listed.iter().find(|m| m.name == member) {
        return Some(m.size);
    }
    let sizes: Vec<Size> = listed
        .iter()
        .filter(|m| m.role == role)
        .map(|m| m.size)
        .collect();
    sizes
        .iter()
        .max_by_key(|s| sizes.iter().filter(|o| o == s).count())
        .copied()
}

/// What the repair tick needs to judge replication slots ([`slots::SlotWatch`]).
struct SlotsSetup {
    config: steward_policies::slots::SlotsConfig,
    /// Slot figures older than this are not acted on (Prometheus's `max_age`).
    max_age: Duration,
}

async fn repair_loop(
    shared: Arc<Shared>,
    mut observer: Observer,
    mut sync: Option<BalancerSync>,
    publish: watch::Sender<Option<Arc<Seen>>>,
    tick: Duration,
    slots: SlotsSetup,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut slot_watch = slots::SlotWatch::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight: JoinSet<StepDone> = JoinSet::new();
    let mut last: Option<Arc<Seen>> = None;
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                    let done = joined.context("a repair step's task failed")?;
                    shared.end_step(LoopName::Repair, &done);
                    let now = shared.clock.now();
                    let event = Event::ActionDone {
                        op: OperationId(done.op.clone()),
                        result: done.result.map_err(|e| ActionError::new(e.kind, e.message)),
                    };
                    let commands = shared.cores().handle(event, now);
                    dispatch_repair(&shared, commands, last.as_deref(), &mut inflight)?;
                }
                _ = interval.tick() => {
                    let now = shared.clock.now();
                    let began = tokio::time::Instant::now();
                    let span = info_span!("tick", loop = "repair", cluster = %shared.cluster);
                    let seen = Arc::new(observer.observe(now).instrument(span.clone()).await);
                    for note in &seen.snapshot.observation.notes {
                        tracing::debug!(parent: &span, %note, "observation note");
                    }
                    let commands = {
                        let mut r = shared.cores();
                        let mut c = r.handle(
                            Event::PlatformListed { at: now, members: seen.snapshot.platform.clone() },
                            now,
                        );
                        c.extend(r.handle(Event::Observed(seen.snapshot.observation.clone()), now));
                        c
                    };
                    last = Some(Arc::clone(&seen));
                    publish.send_replace(Some(Arc::clone(&seen)));
                    span.in_scope(|| dispatch_repair(&shared, commands, last.as_deref(), &mut inflight))?;
                    if let Some(sync) = &mut sync {
                        // The balancers follow the platform's members; only an instance that may
                        // act touches them.
                        match shared.exec.guard.as_ref().map(|g| g.may_act()) {
                            None | Some(Ok(())) => sync.tick(&seen.snapshot.platform),
                            Some(Err(why)) => tracing::debug!(%why, "balancers left alone"),
                        }
                    }
                    let held = slot_watch
                        .tick(&shared, &seen.snapshot.observation, &slots.config, slots.max_age)
                        .instrument(span.clone())
                        .await;
                    shared.publish_repair_tick(&seen, &held, began.elapsed()).await;
                }
            }
        }
        Ok(())
    }
    .await;
    drop(publish);
    finish_in_flight(&shared, LoopName::Repair, &mut inflight).await;
    if let Some(sync) = &mut sync {
        sync.finish().await;
    }
    result
}

/// On the way out: await the steps in flight for a while and log their results. Their
/// operations stay journaled with the step as the cursor: the next start runs it again (every
/// step is idempotent) and goes on.
async fn finish_in_flight(shared: &Shared, by: LoopName, inflight: &mut JoinSet<StepDone>) {
    let drain = async {
        while let Some(joined) = inflight.join_next().await {
            match joined {
                Ok(done) => shared.end_step(by, &done),
                Err(e) => warn!(error = %e, "a step's task failed while stopping"),
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(loop = by.as_str(), "a step did not finish in time; its operation's record keeps it for the next start");
        inflight.abort_all();
    }
}

fn dispatch_repair(
    shared: &Shared,
    commands: Vec<RepairCommand>,
    seen: Option<&Seen>,
    inflight: &mut JoinSet<StepDone>,
) -> anyhow::Result<()> {
    shared.journal_repair()?;
    for c in commands {
        let op = c.op.to_string();
        if let CommandKind::Alert { alert } = &c.kind {
            warn!(cluster = %shared.cluster, op = %op, ?alert, reason = %c.reason, "alert");
            shared.line(
                LoopName::Repair,
                Kind::Alert,
                &op,
                c.kind.to_string(),
                c.reason.clone(),
            );
            continue;
        }
        shared.line(
            LoopName::Repair,
            Kind::Command,
            &op,
            c.kind.to_string(),
            c.reason.clone(),
        );
        if shared.dry_run {
            info!(cluster = %shared.cluster, op = %op, command = %c.kind, reason = %c.reason, "dry-run: not executed");
            continue;
        }
        let listed = seen
            .map(|s| s.snapshot.platform.as_slice())
            .unwrap_or_default();
        let work = match c.kind {
            CommandKind::AskSwitchover { from, to } => Step::Switchover {
                leader: from,
                candidate: to,
            },
            CommandKind::Drain { member } => Step::Drain { member },
            CommandKind::Fence { member } => Step::Fence { member },
            CommandKind::Remove {
                member,
                delete_data,
            } => Step::Remove {
                member,
                delete_data,
            },
            CommandKind::Create {
                role,
                name,
                replacing,
                label,
            } => {
                let Some(size) = replacement_size(listed, &replacing, role) else {
                    // Nothing to size it from: report the step failed for good.
                    let event = Event::ActionDone {
                        op: c.op.clone(),
                        result: Err(ActionError::new(
                            steward_model::ports::ErrorKind::Permanent,
                            format!("no size known for a replacement of {replacing}"),
                        )),
                    };
                    let now = shared.clock.now();
                    let more = shared.cores().handle(event, now);
                    dispatch_repair(shared, more, seen, inflight)?;
                    continue;
                };
                Step::Create {
                    spec: CreateSpec {
                        cluster: shared.cluster.clone(),
                        role,
                        name,
                        size,
                        operation_id: label,
                        replaces: Some(replacing),
                    },
                }
            }
            CommandKind::Alert { .. } => unreachable!("alerts are handled above"),
        };
        let urls = seen.map(|s| s.api_urls.clone()).unwrap_or_default();
        shared.start_step(LoopName::Repair, op, None, work, urls, inflight);
    }
    Ok(())
}

async fn scale_loop(
    shared: Arc<Shared>,
    mut scaler: Scaler,
    mut grant: Option<Grant>,
    mut views: watch::Receiver<Option<Arc<Seen>>>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut inflight: JoinSet<StepDone> = JoinSet::new();
    let mut last: Option<Arc<Seen>> = None;
    let mut said = Said::default();
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                    let done = joined.context("a scaling step's task failed")?;
                    shared.end_step(LoopName::Scale, &done);
                    let now = shared.clock.now();
                    let event = ScaleEvent::ActionDone {
                        op: steward_scaler::OperationId(done.op.clone()),
                        step: done.step.unwrap_or(0),
                        result: done.result.map_err(|e| steward_scaler::ActionError {
                            kind: e.kind,
                            message: e.message,
                        }),
                    };
                    let commands = scaler.handle(event, now);
                    dispatch_scale(&shared, &mut scaler, &mut grant, commands, last.as_deref(), &mut said, &mut inflight)?;
                }
                changed = views.changed() => {
                    if changed.is_err() {
                        // The repair loop (the observer's owner) has stopped.
                        break;
                    }
                    let Some(seen) = views.borrow_and_update().clone() else { continue };
                    let now = shared.clock.now();
                    let began = tokio::time::Instant::now();
                    let span = info_span!("tick", loop = "scale", cluster = %shared.cluster);
                    // Lent, not copied: the scaler copies it only to keep it (a plan under way).
                    let mut commands = scaler.observed(&seen.snapshot, now);
                    commands.extend(scaler.handle(ScaleEvent::Tick, now));
                    last = Some(Arc::clone(&seen));
                    span.in_scope(|| dispatch_scale(&shared, &mut scaler, &mut grant, commands, last.as_deref(), &mut said, &mut inflight))?;
                    shared.publish_scale_tick(scaler.decisions(), began.elapsed()).await;
                    let floor = scaler.min_members();
                    shared.watch_floor(&seen.snapshot.observation, floor, &mut said.floor).await;
                }
            }
        }
        Ok(())
    }
    .await;
    finish_in_flight(&shared, LoopName::Scale, &mut inflight).await;
    result
}

/// What the scale loop last wrote, so a proposal refused tick after tick is written once.
#[derive(Default)]
struct Said {
    proposal: Option<String>,
    refusal: Option<String>,
    floor: Floor,
}

fn describe_intent(kind: &IntentKind) -> String {
    match kind {
        IntentKind::Resize {
            role,
            resource,
            from,
            to,
        } => {
            let unit = resource.unit();
            format!("{role} {resource} {from:.2} -> {to:.2} {unit}")
        }
        IntentKind::ScaleOut { member } => format!("scale out: add {member}"),
        IntentKind::ScaleIn { member } => format!("scale in: remove {member}"),
        IntentKind::Retune { role, from, to } => format!(
            "{role} shared_buffers {} -> {} (the buffer cache is short)",
            steward_model::size::human_bytes(*from),
            steward_model::size::human_bytes(*to)
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn dispatch_scale(
    shared: &Shared,
    scaler: &mut Scaler,
    grant: &mut Option<Grant>,
    commands: Vec<ScaleCommand>,
    seen: Option<&Seen>,
    said: &mut Said,
    inflight: &mut JoinSet<StepDone>,
) -> anyhow::Result<()> {
    let mut queue: std::collections::VecDeque<ScaleCommand> = commands.into();
    while let Some(c) = queue.pop_front() {
        let now = shared.clock.now();
        match c {
            ScaleCommand::Propose { plan } => {
                let op = plan.id.clone();
                let what = describe_intent(&plan.intent.kind);
                let reason = plan.intent.decision.summary.to_string();
                // The same change proposed tick after tick (refused meanwhile) is written once.
                if said.proposal.as_deref() != Some(what.as_str()) {
                    said.proposal = Some(what.clone());
                    said.refusal = None;
                    shared.line(LoopName::Scale, Kind::Proposal, &op.0, what, reason);
                }
                if shared.dry_run {
                    queue.extend(scaler.handle(
                        ScaleEvent::Refused {
                            op,
                            reason: "dry-run".into(),
                        },
                        now,
                    ));
                    continue;
                }
                let purpose = Purpose::Scale {
                    emergency: plan.intent.prevents_outage(),
                    disruptive: plan.intent.disruptive,
                };
                let granted = shared.cores().coordinator.acquire(purpose, op.clone(), now);
                match granted {
                    Ok(l) => {
                        *grant = Some(l);
                        said.proposal = None;
                        queue.extend(scaler.handle(ScaleEvent::Permitted { op }, now));
                    }
                    Err(refusal) => {
                        let reason = refusal.to_string();
                        if said.refusal.as_deref() != Some(reason.as_str()) {
                            shared.line(
                                LoopName::Scale,
                                Kind::Refused,
                                &op.0,
                                "scaling waits".into(),
                                reason.clone(),
                            );
                            said.refusal = Some(reason.clone());
                        }
                        queue.extend(scaler.handle(ScaleEvent::Refused { op, reason }, now));
                    }
                }
            }
            ScaleCommand::Journal { plan } => {
                if !shared.dry_run {
                    shared
                        .journal
                        .append(&Entry::Plan {
                            at: now,
                            plan: plan.clone(),
                        })
                        .with_context(|| format!("journaling plan {}", plan.id))?;
                }
            }
            // The scaler's step is what the executor runs: no translation.
            ScaleCommand::Execute {
                op,
                step,
                action: work,
                ..
            } => {
                shared.line(
                    LoopName::Scale,
                    Kind::Command,
                    &op.0,
                    work.to_string(),
                    format!("step {} of operation {op}", step + 1),
                );
                if shared.dry_run {
                    continue;
                }
                let urls = seen.map(|s| s.api_urls.clone()).unwrap_or_default();
                shared.start_step(LoopName::Scale, op.0, Some(step), work, urls, inflight);
            }
            ScaleCommand::Finished { report } => {
                let op = report.op.0.clone();
                if let Some(l) = grant.take() {
                    // A scaling step is no recovery: nothing for the breaker or the quiet period.
                    shared
                        .cores()
                        .coordinator
                        .release(l, GrantOutcome::Done, now);
                }
                let refused_dry = matches!(&report.outcome, steward_scaler::PlanOutcome::Refused { reason } if reason == "dry-run");
                if shared.dry_run || refused_dry {
                    continue;
                }
                if matches!(report.outcome, steward_scaler::PlanOutcome::Refused { .. }) {
                    // Refused proposals never started: nothing was journaled.
                    continue;
                }
                shared
                    .journal
                    .append(&Entry::PlanEnd {
                        at: now,
                        op: op.clone(),
                    })
                    .with_context(|| format!("journaling the end of plan {op}"))?;
                let outcome = match &report.outcome {
                    steward_scaler::PlanOutcome::Completed => "completed".to_string(),
                    steward_scaler::PlanOutcome::Failed { step, reason } => {
                        format!("failed at step {}: {reason}", step + 1)
                    }
                    steward_scaler::PlanOutcome::Refused { reason } => format!("refused: {reason}"),
                };
                shared.line(
                    LoopName::Scale,
                    Kind::Finished,
                    &op,
                    describe_intent(&report.intent.kind),
                    outcome,
                );
            }
        }
    }
    Ok(())
}
