//! A fake cluster and a fake driver: the world the scaler's commands act on, and the loop that
//! feeds the scaler (observations, permissions, action results). Fakes, not mocks: the world
//! applies each action the way a platform and Patroni would, and the tests look at its state.

use std::time::Duration;

use steward_model::observation::{
    Figure, MemberObservation, Observation, PatroniRole, PlatformState, Source,
};
use steward_model::ports::platform::{Capabilities, Change, ErrorKind, PlatformMember};
use steward_model::{Role, Size, Timestamp};
use steward_policies::{PolicyConfig, RawPolicyConfig};
use steward_scaler::{
    ActionError, Command, ConfigPatch, Event, ParamValue, PlanOutcome, RawScalerConfig, Scaler,
    ScalerConfig, Snapshot, Step,
};

pub const GIB: u64 = 1024 * 1024 * 1024;
pub const MIB: u64 = 1024 * 1024;
/// Observations come every 15 s.
pub const PERIOD: Duration = Duration::from_secs(15);

/// One member as the world holds it. Loads are absolute (vCPUs, bytes): a resize changes the
/// utilization, not the load.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub size: Size,
    pub state: PlatformState,
    pub leader: bool,
    pub streaming: bool,
    pub lag: f64,
    pub cpu_used: Option<f64>,
    pub memory_used: Option<f64>,
    pub disk_used: Option<f64>,
    pub connections: Option<f64>,
    pub oom_kills: f64,
    /// The buffer cache's hit ratio and `shared_buffers` (bytes), as postgres_exporter says.
    pub cache_hit_ratio: Option<f64>,
    pub shared_buffers: Option<f64>,
    pub created_at: Timestamp,
    /// Observations left before a new member streams.
    pub warming: u32,
}

#[derive(Clone, Debug)]
pub struct World {
    pub cluster: String,
    pub members: Vec<Member>,
    pub caps: Capabilities,
    pub patches: Vec<ConfigPatch>,
    /// The leader's replication slots, as the metrics report them.
    pub slots: Vec<steward_model::observation::SlotObservation>,
    /// Every action executed, in order.
    pub executed: Vec<Step>,
    /// Fail the action with this index in `executed` order (0-based), once, with `fail_kind`.
    pub fail_at: Option<usize>,
    pub fail_kind: ErrorKind,
    /// Carry out the action with this index, then answer it with a timeout (a lost answer).
    pub lose_answer_at: Option<usize>,
    /// Observations a created member needs before it streams.
    pub warmup: u32,
    /// A load for newly created members.
    pub new_member_cpu: Option<f64>,
}

pub fn live() -> Capabilities {
    Capabilities {
        cpu: Change::Live,
        cpu_unit: steward_model::ports::CpuUnit::Quota,
        memory: Change::Live,
        disk_grow: Change::Live,
        disk_shrink: Change::Unsupported,
        multi_host: true,
    }
}

pub fn restart_only() -> Capabilities {
    Capabilities {
        cpu: Change::Restart,
        cpu_unit: steward_model::ports::CpuUnit::Quota,
        memory: Change::Restart,
        disk_grow: Change::Restart,
        ..live()
    }
}

impl World {
    /// `n` database members pg-1..pg-n (pg-1 leads) of `size`, and two balancers.
    pub fn new(n: usize, size: Size, caps: Capabilities) -> World {
        let mut members = Vec::new();
        for i in 1..=n {
            members.push(Member {
                name: format!("pg-{i}"),
                role: Role::Database,
                size,
                state: PlatformState::Running,
                leader: i == 1,
                streaming: i != 1,
                lag: 0.0,
                cpu_used: Some(size.cpus * 0.6),
                memory_used: Some(size.memory_bytes as f64 * 0.55),
                disk_used: Some(size.disk_bytes as f64 * 0.3),
                connections: Some(50.0),
                oom_kills: 0.0,
                cache_hit_ratio: None,
                shared_buffers: None,
                created_at: Timestamp::from_secs(i as i64),
                warming: 0,
            });
        }
        for i in 1..=2 {
            let size = Size {
                cpus: 1.0,
                memory_bytes: GIB,
                disk_bytes: 4 * GIB,
            };
            members.push(Member {
                name: format!("lb-{i}"),
                role: Role::Balancer,
                size,
                state: PlatformState::Running,
                leader: false,
                streaming: false,
                lag: 0.0,
                cpu_used: Some(0.6),
                memory_used: Some(GIB as f64 * 0.55),
                disk_used: Some(GIB as f64),
                connections: None,
                oom_kills: 0.0,
                cache_hit_ratio: None,
                shared_buffers: None,
                created_at: Timestamp::from_secs(0),
                warming: 0,
            });
        }
        World {
            cluster: "demo".into(),
            members,
            caps,
            patches: Vec::new(),
            slots: Vec::new(),
            executed: Vec::new(),
            fail_at: None,
            fail_kind: ErrorKind::Refused,
            lose_answer_at: None,
            warmup: 2,
            new_member_cpu: None,
        }
    }

    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    pub fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    pub fn databases(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == Role::Database)
    }

    pub fn leader(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.leader)
            .map(|m| m.name.as_str())
    }

    /// Sets a load on every database member: CPU and memory as shares of the current size.
    pub fn load_databases(&mut self, cpu_share: Option<f64>, memory_share: Option<f64>) {
        for m in self.members.iter_mut().filter(|m| m.role == Role::Database) {
            m.cpu_used = cpu_share.map(|s| s * m.size.cpus);
            m.memory_used = memory_share.map(|s| s * m.size.memory_bytes as f64);
        }
    }

    /// What Steward would observe at `at`.
    pub fn snapshot(&mut self, at: Timestamp) -> Snapshot {
        for m in &mut self.members {
            if m.warming > 0 {
                m.warming -= 1;
                if m.warming == 0 {
                    m.state = PlatformState::Running;
                    m.streaming = true;
                }
            }
        }
        let fig = |v: Option<f64>, source| v.map(|v| Figure::new(v, source, at));
        let members = self
            .members
            .iter()
            .map(|m| {
                let db = m.role == Role::Database;
                let running = m.state == PlatformState::Running;
                MemberObservation {
                    name: m.name.clone(),
                    role: Some(m.role),
                    patroni_role: (db && running).then_some(if m.leader {
                        PatroniRole::Leader
                    } else {
                        PatroniRole::Replica
                    }),
                    patroni_state: (db && running).then(|| {
                        if m.leader || !m.streaming {
                            "running"
                        } else {
                            "streaming"
                        }
                        .to_string()
                    }),
                    platform_state: Some(m.state),
                    streaming: (db && !m.leader).then_some(m.streaming && running),
                    lag_bytes: (db && !m.leader && running)
                        .then(|| Figure::new(m.lag, Source::Patroni, at)),
                    cpu_used: fig(m.cpu_used, Source::Prometheus),
                    memory_used: fig(m.memory_used, Source::Prometheus),
                    disk_used: fig(m.disk_used, Source::Prometheus),
                    connections: if db {
                        fig(m.connections, Source::Prometheus)
                    } else {
                        None
                    },
                    oom_kills: Some(Figure::new(m.oom_kills, Source::Platform, at)),
                    cache_hit_ratio: fig(m.cache_hit_ratio, Source::Prometheus),
                    shared_buffers: fig(m.shared_buffers, Source::Prometheus),
                    size: Some(m.size),
                    in_platform: Some(true),
                    in_patroni: Some(db),
                    created_at: Some(m.created_at),
                    ..MemberObservation::default()
                }
            })
            .collect();
        let platform = self
            .members
            .iter()
            .map(|m| PlatformMember {
                name: m.name.clone(),
                cluster: self.cluster.clone(),
                role: m.role,
                size: m.size,
                state: m.state,
                address: "127.0.0.1".into(),
                host: format!("host-{}", m.name),
                labels: Default::default(),
                created_at: Some(m.created_at),
                restart_count: 0,
            })
            .collect();
        Snapshot {
            observation: Observation {
                at,
                cluster: self.cluster.clone(),
                members,
                notes: Vec::new(),
                slots: self
                    .slots
                    .iter()
                    .map(|s| steward_model::observation::SlotObservation {
                        wal_bytes: steward_model::observation::Figure { at, ..s.wal_bytes },
                        ..s.clone()
                    })
                    .collect(),
            },
            platform,
            capabilities: self.caps,
        }
    }

    /// Runs one action as the platform and Patroni would.
    pub fn apply(&mut self, action: &Step, at: Timestamp) -> Result<(), ActionError> {
        let index = self.executed.len();
        self.executed.push(action.clone());
        if self.fail_at == Some(index) {
            self.fail_at = None;
            return Err(ActionError {
                kind: self.fail_kind,
                message: "refused by the fake".into(),
            });
        }
        if self.lose_answer_at == Some(index) {
            self.lose_answer_at = None;
            self.executed.pop();
            self.apply(action, at)?;
            return Err(ActionError {
                kind: ErrorKind::Transient,
                message: "the answer timed out".into(),
            });
        }
        let gone = |w: &World, name: &str| !w.members.iter().any(|m| m.name == name);
        match action {
            Step::Resize { member, size } => {
                if gone(self, member) {
                    return Err(ActionError {
                        kind: ErrorKind::NotFound,
                        message: member.clone(),
                    });
                }
                let m = self.member_mut(member);
                // Load is absolute: scale the shares back to the new size.
                m.size = *size;
            }
            Step::PatchConfig { patch } => self.patches.push(patch.clone()),
            Step::Switchover { leader, candidate } => {
                assert!(
                    self.member(leader).leader,
                    "switchover from a non-leader {leader}"
                );
                let candidate = candidate
                    .as_deref()
                    .expect("the scaler names its candidate");
                self.member_mut(leader).leader = false;
                self.member_mut(leader).streaming = true;
                self.member_mut(candidate).leader = true;
                self.member_mut(candidate).streaming = false;
            }
            Step::RestartMember { member } => {
                // A restart applies the last shared_buffers patched (a pending restart setting).
                let patched = self
                    .patches
                    .iter()
                    .rev()
                    .find_map(|p| p.0.get("shared_buffers").copied());
                let m = self.member_mut(member);
                if let (Some(ParamValue::Megabytes(mb)), Some(_)) = (patched, m.shared_buffers) {
                    m.shared_buffers = Some((mb * 1024 * 1024) as f64);
                }
            }
            Step::Drain { .. } | Step::Undrain { .. } => {}
            Step::Create { spec } => {
                let mut m = self.databases().next().expect("a database member").clone();
                m.name = spec.name.clone();
                m.size = spec.size;
                m.state = PlatformState::Creating;
                m.leader = false;
                m.streaming = false;
                m.lag = 0.0;
                m.created_at = at;
                m.warming = self.warmup;
                if let Some(c) = self.new_member_cpu {
                    m.cpu_used = Some(c);
                }
                self.members.push(m);
            }
            Step::Fence { member } => self.member_mut(member).state = PlatformState::Fenced,
            Step::Remove { member, .. } => self.members.retain(|m| &m.name != member),
        }
        Ok(())
    }
}

/// A policy config with short windows, for tests that need many changes.
pub fn quick_policy() -> PolicyConfig {
    let mut raw = RawPolicyConfig::default();
    for role in [&mut raw.database, &mut raw.balancer] {
        for v in [&mut role.cpu, &mut role.memory] {
            v.window = Duration::from_secs(15);
            v.up_window = Duration::from_secs(30);
            v.down_window = Duration::from_secs(60);
            v.cooldown = Duration::from_secs(60);
        }
    }
    raw.replicas.up_window = Duration::from_secs(30);
    raw.replicas.down_window = Duration::from_secs(60);
    raw.replicas.cooldown = Duration::from_secs(60);
    raw.validate().expect("valid quick policy")
}

pub fn config(policy: PolicyConfig) -> ScalerConfig {
    RawScalerConfig::default()
        .validate(policy)
        .expect("valid scaler config")
}

/// The scaler, the world and a driver loop between them.
pub struct Harness {
    pub scaler: Scaler,
    pub world: World,
    pub now: Timestamp,
    /// Every command, in order.
    pub commands: Vec<Command>,
    /// Answer proposals with `Permitted` (else `Refused`).
    pub permit: bool,
    /// Do not answer proposals at all (a slow or absent coordinator).
    pub silent: bool,
    /// Journal entries with the world as it was when each was written (for resume tests).
    pub journal: Vec<(String, World)>,
    /// Observations are lent (`Scaler::observed`) instead of given (`Event::Observed`).
    pub lend: bool,
}

impl Harness {
    pub fn new(config: ScalerConfig, world: World) -> Harness {
        Harness {
            scaler: Scaler::new(config),
            world,
            now: Timestamp::from_secs(1_800_000_000),
            commands: Vec::new(),
            permit: true,
            silent: false,
            journal: Vec::new(),
            lend: false,
        }
    }

    /// Feeds one event and then every answer the driver owes (permissions, action results),
    /// returning every command produced.
    pub fn feed(&mut self, event: Event) -> Vec<Command> {
        let first = self.scaler.handle(event, self.now);
        self.answer(first)
    }

    /// Runs what the driver owes for `first` (the commands of one event) and for every command
    /// that follows, returning every command produced.
    fn answer(&mut self, first: Vec<Command>) -> Vec<Command> {
        let mut queue = Vec::new();
        let mut produced = Vec::new();
        let mut batch = first;
        loop {
            for c in batch {
                match &c {
                    Command::Propose { .. } if self.silent => {}
                    Command::Propose { plan } => queue.push(if self.permit {
                        Event::Permitted {
                            op: plan.id.clone(),
                        }
                    } else {
                        Event::Refused {
                            op: plan.id.clone(),
                            reason: "dry-run".into(),
                        }
                    }),
                    Command::Journal { plan } => self.journal.push((
                        serde_json::to_string(plan).expect("plan serializes"),
                        self.world.clone(),
                    )),
                    Command::Execute {
                        op, step, action, ..
                    } => {
                        let result = self.world.apply(action, self.now);
                        queue.push(Event::ActionDone {
                            op: op.clone(),
                            step: *step,
                            result,
                        });
                    }
                    Command::Finished { .. } => {}
                }
                produced.push(c);
            }
            let Some(e) = queue.pop() else { break };
            batch = self.scaler.handle(e, self.now);
        }
        self.commands.extend(produced.iter().cloned());
        produced
    }

    /// One period later: observe the world and run what follows.
    pub fn observe(&mut self) -> Vec<Command> {
        self.now = self.now + PERIOD;
        let snap = self.world.snapshot(self.now);
        if self.lend {
            let first = self.scaler.observed(&snap, self.now);
            return self.answer(first);
        }
        self.feed(Event::Observed(snap))
    }

    /// Observes until an operation finishes (or `max` observations), returning its outcome.
    pub fn run_until_finished(&mut self, max: usize) -> Option<PlanOutcome> {
        for _ in 0..max {
            for c in self.observe() {
                if let Command::Finished { report } = c {
                    if !matches!(report.outcome, PlanOutcome::Refused { .. }) {
                        return Some(report.outcome);
                    }
                }
            }
        }
        None
    }
}

/// The actions of `commands`, in order.
pub fn executed(commands: &[Command]) -> Vec<Step> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Execute { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect()
}

/// A short name for an action: `resize pg-2`, `switchover pg-1->pg-2`, `patch`.
pub fn label(a: &Step) -> String {
    match a {
        Step::Resize { member, .. } => format!("resize {member}"),
        Step::PatchConfig { .. } => "patch".into(),
        Step::Switchover { leader, candidate } => {
            format!(
                "switchover {leader}->{}",
                candidate.as_deref().unwrap_or("?")
            )
        }
        Step::RestartMember { member } => format!("restart {member}"),
        Step::Create { spec } => format!("create {}", spec.name),
        Step::Drain { member } => format!("drain {member}"),
        Step::Undrain { member } => format!("undrain {member}"),
        Step::Fence { member } => format!("fence {member}"),
        Step::Remove { member, .. } => format!("remove {member}"),
    }
}

pub fn labels(commands: &[Command]) -> Vec<String> {
    executed(commands).iter().map(label).collect()
}
