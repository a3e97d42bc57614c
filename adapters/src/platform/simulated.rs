//! The simulated platform: members, hosts, load and faults in process memory.
//!
//! It serves the loop tests, the no-Docker demo and the scale benchmarks (10,000 clusters of 3
//! members), so a member is a few numbers and every call is a short critical section under one
//! mutex per cluster. Time is a value: every platform reads a [`SimClock`] that the test, demo or
//! benchmark moves ([`SimClock::set`], [`SimClock::advance`]) or that follows `tokio::time`
//! ([`SimClock::following_tokio`], deterministic under paused tokio time); there is no wall
//! clock inside. One clock may be shared by many platforms. [`SimConfig::latency`] makes
//! mutating calls take time, so a loop can be observed with an action in flight.
//!
//! Load model: a member's demand is a [`Signal`] times a base size ([`Load`]), e.g. a NAB trace
//! from the NAB traces (`examples/traces`) gives `cpu_used(t) = trace(t) / 100 x base.cpus`, capped at the
//! member's current size. Growing a member therefore lowers its utilization, as on a real
//! platform. Memory demand above the limit counts an OOM kill.
//!
//! Faults are injected with methods: [`SimulatedPlatform::crash`], [`SimulatedPlatform::hang`]
//! (paused), [`SimulatedPlatform::slow_disk`], [`SimulatedPlatform::fill_disk`],
//! [`SimulatedPlatform::oom_kill`], and [`SimulatedPlatform::fail_next`] for an operation that
//! fails once with a given class.
//!
//! What it is not: a model of PostgreSQL or Patroni (roles, lag, failover belong to the fakes of
//! the Patroni source); nothing here sleeps or does I/O.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use steward_model::observation::PlatformState;
use steward_model::ports::platform::Labels;
use steward_model::ports::{
    Capabilities, Change, CpuUnit, CreateSpec, ErrorKind, Platform, PlatformError, PlatformMember,
    ResizeOutcome, Usage, LABEL_CLUSTER, LABEL_MEMBER, LABEL_OPERATION, LABEL_REPLACES, LABEL_ROLE,
};
use steward_model::{NameMap, Role, Size, Timestamp};

/// The simulation's clock, shared by cheap clones.
///
/// A manual clock ([`SimClock::new`]) moves only when told. A tokio clock
/// ([`SimClock::following_tokio`]) also moves with `tokio::time`, so a loop driver that sleeps
/// with tokio under `#[tokio::test(start_paused = true)]` sees the simulation age with it,
/// deterministically. Both can be moved by hand.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    /// Milliseconds since the epoch, minus the tokio time elapsed since `origin`.
    offset: Arc<AtomicI64>,
    origin: Option<tokio::time::Instant>,
}

impl SimClock {
    /// A manual clock starting at `start`.
    pub fn new(start: Timestamp) -> Self {
        SimClock {
            offset: Arc::new(AtomicI64::new(start.as_millis())),
            origin: None,
        }
    }

    /// A clock at `start` now, moving with `tokio::time` from here on (needs a runtime).
    pub fn following_tokio(start: Timestamp) -> Self {
        SimClock {
            offset: Arc::new(AtomicI64::new(start.as_millis())),
            origin: Some(tokio::time::Instant::now()),
        }
    }

    fn elapsed_ms(&self) -> i64 {
        self.origin
            .map_or(0, |o| o.elapsed().as_millis().min(i64::MAX as u128) as i64)
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.offset.load(Ordering::Relaxed) + self.elapsed_ms())
    }

    pub fn set(&self, at: Timestamp) {
        self.offset
            .store(at.as_millis() - self.elapsed_ms(), Ordering::Relaxed);
    }

    pub fn advance(&self, by: Duration) {
        let ms = by.as_millis().min(i64::MAX as u128) as i64;
        self.offset.fetch_add(ms, Ordering::Relaxed);
    }
}

/// A recorded series: `(time, value)` points in time order, read as a step function that
/// repeats after its last point (so a two-week trace drives a run of any length).
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    points: Vec<(Timestamp, f64)>,
}

/// A trace that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("the trace has no points")]
    Empty,
}

impl Trace {
    /// Points must be in time order (they are sorted if not).
    pub fn from_points(mut points: Vec<(Timestamp, f64)>) -> Result<Trace, TraceError> {
        if points.is_empty() {
            return Err(TraceError::Empty);
        }
        points.sort_by_key(|p| p.0);
        Ok(Trace { points })
    }

    /// Reads the NAB format of `examples/traces`: a `timestamp,value` header, then one
    /// `YYYY-MM-DD HH:MM:SS,value` line per sample.
    pub fn from_csv(text: &str) -> Result<Trace, TraceError> {
        let mut points = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (i == 0 && line.starts_with("timestamp")) {
                continue;
            }
            let err = |message: String| TraceError::Line {
                line: i + 1,
                message,
            };
            let (t, v) = line
                .split_once(',')
                .ok_or_else(|| err("expected `timestamp,value`".into()))?;
            let at = Timestamp::parse(t).map_err(err)?;
            let value = v
                .trim()
                .parse::<f64>()
                .map_err(|e| err(format!("value `{v}`: {e}")))?;
            points.push((at, value));
        }
        Trace::from_points(points)
    }

    /// The time of the first point.
    pub fn start(&self) -> Timestamp {
        self.points[0].0
    }

    /// The value at `at`, with the trace repeated from its first point.
    pub fn at(&self, at: Timestamp) -> f64 {
        let start = self.points[0].0.as_millis();
        let end = self.points[self.points.len() - 1].0.as_millis();
        // One sampling step past the last point, so the last value lasts as long as the others.
        let step = if self.points.len() > 1 {
            (end - start) / (self.points.len() as i64 - 1)
        } else {
            1
        };
        let period = (end - start + step).max(1);
        let offset = (at.as_millis() - start).rem_euclid(period);
        let t = Timestamp::from_millis(start + offset);
        let i = self.points.partition_point(|p| p.0 <= t);
        self.points[i.saturating_sub(1)].1
    }
}

/// A demand as a fraction of a base amount.
#[derive(Clone, Debug, PartialEq)]
pub enum Signal {
    /// The same fraction at every instant (0.5 = half the base).
    Constant(f64),
    /// A trace in percent (NAB CPU traces), scaled by `1/100`.
    TracePercent(Arc<Trace>),
}

impl Signal {
    fn fraction(&self, at: Timestamp) -> f64 {
        match self {
            Signal::Constant(f) => *f,
            Signal::TracePercent(t) => t.at(at) / 100.0,
        }
    }
}

/// What a member demands: `cpu(t) x base.cpus` vCPUs, `memory(t) x base.memory_bytes` bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub cpu: Signal,
    pub memory: Signal,
    /// The size the signals are fractions of (usually the member's size at creation).
    pub base: Size,
}

/// The simulated hosts and what the platform can do.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub cluster: String,
    /// Host names; members of one role go to different hosts.
    pub hosts: Vec<String>,
    /// vCPUs of each host: a larger member cannot be made (Refused).
    pub host_cpus: f64,
    /// Memory of each host, bytes.
    pub host_memory_bytes: u64,
    pub capabilities: Capabilities,
    /// Load given to members created without one ([`SimulatedPlatform::set_load`]); `None` =
    /// a constant 10 % CPU and 25 % memory of the created size.
    pub default_load: Option<Load>,
    /// Load given to balancer members created without one; `None` = `default_load`'s rule.
    pub balancer_load: Option<Load>,
    /// Fraction of the disk used at creation.
    pub initial_disk_fraction: f64,
    /// How long create, resize, fence and remove take (a `tokio::time::sleep` before the
    /// change lands, so a loop can be caught with an action in flight). Default zero.
    pub latency: Duration,
}

impl SimConfig {
    /// `hosts` hosts named `sim-host-1..`, 16 vCPUs and 64 GiB each, everything live except a
    /// disk shrink.
    pub fn new(cluster: impl Into<String>, hosts: usize) -> Self {
        SimConfig {
            cluster: cluster.into(),
            hosts: (1..=hosts).map(|i| format!("sim-host-{i}")).collect(),
            host_cpus: 16.0,
            host_memory_bytes: 64 << 30,
            capabilities: Capabilities {
                cpu_unit: CpuUnit::Quota,
                cpu: Change::Live,
                memory: Change::Live,
                disk_grow: Change::Live,
                disk_shrink: Change::Unsupported,
                multi_host: true,
            },
            default_load: None,
            balancer_load: None,
            initial_disk_fraction: 0.2,
            latency: Duration::ZERO,
        }
    }
}

/// The platform operations [`SimulatedPlatform::fail_next`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimOp {
    List,
    Create,
    Resize,
    Fence,
    Remove,
    Usage,
}

/// Faults currently injected into one member.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimFaults {
    /// Disk latency multiplier (1.0 or absent = normal); a source fake may report it.
    pub slow_disk: Option<f64>,
    /// Disk filling at this many bytes per second since `since`.
    pub disk_fill: Option<(f64, Timestamp)>,
}

#[derive(Clone, Debug)]
struct SimMember {
    role: Role,
    size: Size,
    state: PlatformState,
    host: String,
    address: String,
    /// Shared with every listing of the member ([`Labels`]).
    labels: Labels,
    created_at: Timestamp,
    restart_count: u32,
    load: Option<Load>,
    faults: SimFaults,
    /// Disk bytes used apart from an injected fill.
    disk_used: u64,
    oom_kills: u64,
    /// Whether memory demand was over the limit at the last reading (counts each OOM once).
    over_memory: bool,
}

#[derive(Debug, Default)]
struct SimState {
    /// By name, in name order (a few: not a `BTreeMap` node with room for 11).
    members: NameMap<SimMember>,
    /// Data of removed members kept (`delete_data == false`), by member name.
    kept_data: BTreeMap<String, u64>,
    /// Resources beside the members that carry no Steward label for this cluster.
    foreign: BTreeMap<String, PlatformState>,
    failures: VecDeque<(SimOp, ErrorKind)>,
    /// Every successful mutating call, in order (`create pg-1`, `resize pg-1`, ...).
    history: Vec<String>,
    next_address: u32,
}

/// An in-process [`Platform`] for one cluster.
#[derive(Debug)]
pub struct SimulatedPlatform {
    config: SimConfig,
    clock: SimClock,
    state: Mutex<SimState>,
}

fn err(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> PlatformError {
    PlatformError::new(kind, operation, message)
}

fn not_found(operation: String, name: &str) -> PlatformError {
    err(
        ErrorKind::NotFound,
        operation,
        format!("no member `{name}` in this cluster"),
    )
}

impl SimulatedPlatform {
    pub fn new(config: SimConfig, clock: SimClock) -> Self {
        SimulatedPlatform {
            config,
            clock,
            state: Mutex::new(SimState::default()),
        }
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain numbers behind: keep going with them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits out the configured latency of a mutating call (no lock is held meanwhile).
    async fn delay(&self) {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
    }

    fn take_failure(state: &mut SimState, op: SimOp, operation: &str) -> Result<(), PlatformError> {
        if let Some(i) = state.failures.iter().position(|(o, _)| *o == op) {
            let (_, kind) = state
                .failures
                .remove(i)
                .unwrap_or((op, ErrorKind::Transient));
            return Err(err(kind, operation, "injected failure"));
        }
        Ok(())
    }

    fn with_member<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut SimMember, Timestamp) -> T,
    ) -> Result<T, PlatformError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let m = state
            .members
            .get_mut(name)
            .ok_or_else(|| not_found(format!("fault {name}"), name))?;
        Ok(f(m, now))
    }

    /// The next `op` fails once with `kind` (queued; several may be queued).
    pub fn fail_next(&self, op: SimOp, kind: ErrorKind) {
        self.lock().failures.push_back((op, kind));
    }

    /// Sets the load of a member (replacing the default).
    pub fn set_load(&self, member: &str, load: Load) -> Result<(), PlatformError> {
        self.with_member(member, |m, _| m.load = Some(load))
    }

    /// The member's process died: it is listed as exited and has no usage.
    pub fn crash(&self, member: &str) -> Result<(), PlatformError> {
        self.with_member(member, |m, _| m.state = PlatformState::Exited)
    }

    /// The member hangs (like `docker pause`): listed as paused, uses no CPU.
    pub fn hang(&self, member: &str) -> Result<(), PlatformError> {
        self.with_member(member, |m, _| m.state = PlatformState::Paused)
    }

    /// Undoes [`hang`](Self::hang), or brings a crashed member back as the platform's restart
    /// policy would (counting a restart).
    pub fn recover(&self, member: &str) -> Result<(), PlatformError> {
        self.with_member(member, |m, _| {
            if matches!(m.state, PlatformState::Exited | PlatformState::OomKilled) {
                m.restart_count += 1;
            }
            if m.state != PlatformState::Fenced {
                m.state = PlatformState::Running;
            }
        })
    }

    /// The member's disk answers `factor` times slower (1.0 heals it).
    pub fn slow_disk(&self, member: &str, factor: f64) -> Result<(), PlatformError> {
        self.with_member(member, |m, _| {
            m.faults.slow_disk = (factor != 1.0).then_some(factor)
        })
    }

    /// The member's disk fills at `bytes_per_sec` from now on (0 stops it, keeping what was
    /// written).
    pub fn fill_disk(&self, member: &str, bytes_per_sec: f64) -> Result<(), PlatformError> {
        self.with_member(member, |m, now| {
            m.disk_used = disk_used(m, now);
            m.faults.disk_fill = (bytes_per_sec > 0.0).then_some((bytes_per_sec, now));
        })
    }

    /// The kernel killed the member's largest process: counted, and with `whole` the member
    /// as a whole is OOM-killed (state [`PlatformState::OomKilled`]).
    pub fn oom_kill(&self, member: &str, whole: bool) -> Result<(), PlatformError> {
        self.with_member(member, |m, _| {
            m.oom_kills += 1;
            if whole {
                m.state = PlatformState::OomKilled;
            }
        })
    }

    /// The faults injected into a member.
    pub fn faults(&self, member: &str) -> Option<SimFaults> {
        self.lock().members.get(member).map(|m| m.faults.clone())
    }

    /// Puts a resource without this cluster's labels beside the members (a container someone
    /// else runs on the same engine).
    pub fn add_foreign(&self, name: &str) {
        self.lock()
            .foreign
            .insert(name.to_string(), PlatformState::Running);
    }

    /// The state of a foreign resource, if it still exists.
    pub fn foreign(&self, name: &str) -> Option<PlatformState> {
        self.lock().foreign.get(name).copied()
    }

    /// Whether a removed member's data was kept.
    pub fn kept_data(&self, member: &str) -> bool {
        self.lock().kept_data.contains_key(member)
    }

    /// Successful mutating calls so far, oldest first (`create pg-1`, `fence pg-2`, ...).
    pub fn history(&self) -> Vec<String> {
        self.lock().history.clone()
    }

    fn to_member(&self, name: &str, m: &SimMember) -> PlatformMember {
        PlatformMember {
            name: name.to_string(),
            cluster: self.config.cluster.clone(),
            role: m.role,
            size: m.size,
            state: m.state,
            address: m.address.clone(),
            host: m.host.clone(),
            labels: m.labels.clone(),
            created_at: Some(m.created_at),
            restart_count: m.restart_count,
        }
    }

    fn load_of(&self, m: &SimMember) -> Load {
        let default = match (&self.config.balancer_load, m.role) {
            (Some(l), Role::Balancer) => Some(l),
            _ => self.config.default_load.as_ref(),
        };
        match (&m.load, default) {
            (Some(l), _) | (None, Some(l)) => l.clone(),
            (None, None) => Load {
                cpu: Signal::Constant(0.1),
                memory: Signal::Constant(0.25),
                base: m.size,
            },
        }
    }
}

fn disk_used(m: &SimMember, now: Timestamp) -> u64 {
    let filled = match m.faults.disk_fill {
        Some((rate, since)) => (rate * now.since(since).as_secs_f64()) as u64,
        None => 0,
    };
    m.disk_used.saturating_add(filled).min(m.size.disk_bytes)
}

/// The outcome a change of this kind has on this platform, or the refusal.
fn outcome_of(change: Change, what: &str, operation: &str) -> Result<ResizeOutcome, PlatformError> {
    match change {
        Change::Live => Ok(ResizeOutcome::AppliedLive),
        Change::Restart => Ok(ResizeOutcome::AppliedWithRestart),
        Change::Unsupported => Err(err(
            ErrorKind::Permanent,
            operation,
            format!("the platform cannot change {what}"),
        )),
    }
}

#[async_trait]
impl Platform for SimulatedPlatform {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn capabilities(&self) -> Capabilities {
        self.config.capabilities
    }

    async fn list(&self) -> Result<Vec<PlatformMember>, PlatformError> {
        let mut state = self.lock();
        Self::take_failure(&mut state, SimOp::List, "list members")?;
        Ok(state
            .members
            .iter()
            .map(|(n, m)| self.to_member(n, m))
            .collect())
    }

    async fn create(&self, spec: &CreateSpec) -> Result<PlatformMember, PlatformError> {
        let operation = format!("create member {}", spec.name);
        self.delay().await;
        if spec.cluster != self.config.cluster {
            let message = format!(
                "this platform owns cluster `{}`, not `{}`",
                self.config.cluster, spec.cluster
            );
            return Err(err(ErrorKind::Permanent, operation, message));
        }
        let now = self.clock.now();
        let mut state = self.lock();
        Self::take_failure(&mut state, SimOp::Create, &operation)?;
        if state.members.contains_key(&spec.name) || state.foreign.contains_key(&spec.name) {
            return Err(err(
                ErrorKind::Conflict,
                operation,
                format!("the name `{}` is taken", spec.name),
            ));
        }
        if spec.size.cpus > self.config.host_cpus
            || spec.size.memory_bytes > self.config.host_memory_bytes
        {
            return Err(err(
                ErrorKind::Refused,
                operation,
                "the size is larger than a host",
            ));
        }
        let host = self
            .config
            .hosts
            .iter()
            .find(|h| {
                !state
                    .members
                    .values()
                    .any(|m| m.role == spec.role && &m.host == *h)
            })
            .cloned()
            .ok_or_else(|| {
                let message = format!(
                    "no host left without a {} member ({} hosts, all taken)",
                    spec.role,
                    self.config.hosts.len()
                );
                err(ErrorKind::Refused, operation.clone(), message)
            })?;
        state.next_address += 1;
        let n = state.next_address;
        let mut labels = BTreeMap::from([
            (LABEL_CLUSTER.to_string(), spec.cluster.clone()),
            (LABEL_ROLE.to_string(), spec.role.as_str().to_string()),
            (LABEL_MEMBER.to_string(), spec.name.clone()),
            (LABEL_OPERATION.to_string(), spec.operation_id.clone()),
        ]);
        if let Some(replaced) = &spec.replaces {
            labels.insert(LABEL_REPLACES.to_string(), replaced.clone());
        }
        // A member created under the name of a removed one finds its kept data again.
        let fresh = (spec.size.disk_bytes as f64 * self.config.initial_disk_fraction) as u64;
        let disk = state.kept_data.remove(&spec.name).unwrap_or(fresh);
        let member = SimMember {
            role: spec.role,
            size: spec.size,
            state: PlatformState::Running,
            host,
            address: format!("127.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff),
            labels: labels.into(),
            created_at: now,
            restart_count: 0,
            load: None,
            faults: SimFaults::default(),
            disk_used: disk.min(spec.size.disk_bytes),
            oom_kills: 0,
            over_memory: false,
        };
        let listed = self.to_member(&spec.name, &member);
        state.members.insert(spec.name.clone(), member);
        state.history.push(format!("create {}", spec.name));
        tracing::debug!(cluster = %self.config.cluster, member = %spec.name, "simulated member created");
        Ok(listed)
    }

    async fn resize(&self, member: &str, size: Size) -> Result<ResizeOutcome, PlatformError> {
        let operation = format!("resize member {member}");
        self.delay().await;
        let now = self.clock.now();
        let caps = self.config.capabilities;
        let mut state = self.lock();
        Self::take_failure(&mut state, SimOp::Resize, &operation)?;
        let Some(m) = state.members.get(member) else {
            return Err(not_found(operation, member));
        };
        // Validate everything first: the change is applied whole or not at all.
        let mut outcomes = Vec::new();
        if size.cpus != m.size.cpus {
            if !(size.cpus > 0.0 && size.cpus <= self.config.host_cpus) {
                let message = format!(
                    "{} vCPU does not fit a host of {} vCPU",
                    size.cpus, self.config.host_cpus
                );
                return Err(err(ErrorKind::Refused, operation, message));
            }
            outcomes.push(outcome_of(caps.cpu, "CPU", &operation)?);
        }
        if size.memory_bytes != m.size.memory_bytes {
            let load = self.load_of(m);
            let in_use = (load.memory.fraction(now) * load.base.memory_bytes as f64) as u64;
            if size.memory_bytes < in_use.min(m.size.memory_bytes)
                || size.memory_bytes > self.config.host_memory_bytes
            {
                let message = format!(
                    "memory limit {} bytes is below the {} bytes in use or above the host's {}",
                    size.memory_bytes,
                    in_use.min(m.size.memory_bytes),
                    self.config.host_memory_bytes
                );
                return Err(err(ErrorKind::Refused, operation, message));
            }
            outcomes.push(outcome_of(caps.memory, "memory", &operation)?);
        }
        if size.disk_bytes < m.size.disk_bytes {
            outcomes.push(outcome_of(caps.disk_shrink, "disk (shrink)", &operation)?);
            if size.disk_bytes < disk_used(m, now) {
                return Err(err(
                    ErrorKind::Refused,
                    operation,
                    "the disk holds more than the new size",
                ));
            }
        } else if size.disk_bytes > m.size.disk_bytes {
            outcomes.push(outcome_of(caps.disk_grow, "disk", &operation)?);
        }
        let restart = outcomes.contains(&ResizeOutcome::AppliedWithRestart);
        let m = state
            .members
            .get_mut(member)
            .ok_or_else(|| not_found(operation.clone(), member))?;
        m.size = size;
        if restart {
            m.restart_count += 1;
        }
        state.history.push(format!("resize {member}"));
        Ok(if restart {
            ResizeOutcome::AppliedWithRestart
        } else {
            ResizeOutcome::AppliedLive
        })
    }

    async fn fence(&self, member: &str) -> Result<(), PlatformError> {
        let operation = format!("fence member {member}");
        self.delay().await;
        let mut state = self.lock();
        Self::take_failure(&mut state, SimOp::Fence, &operation)?;
        let m = state
            .members
            .get_mut(member)
            .ok_or_else(|| not_found(operation, member))?;
        m.state = PlatformState::Fenced;
        state.history.push(format!("fence {member}"));
        Ok(())
    }

    async fn remove(&self, member: &str, delete_data: bool) -> Result<(), PlatformError> {
        let operation = format!("remove member {member}");
        self.delay().await;
        let now = self.clock.now();
        let mut state = self.lock();
        Self::take_failure(&mut state, SimOp::Remove, &operation)?;
        let m = state
            .members
            .remove(member)
            .ok_or_else(|| not_found(operation, member))?;
        if delete_data {
            state.kept_data.remove(member);
        } else {
            state
                .kept_data
                .insert(member.to_string(), disk_used(&m, now));
        }
        state.history.push(format!("remove {member}"));
        Ok(())
    }

    async fn usage(&self) -> Result<BTreeMap<String, Usage>, PlatformError> {
        let now = self.clock.now();
        let mut state = self.lock();
        Self::take_failure(&mut state, SimOp::Usage, "read usage")?;
        let mut out = BTreeMap::new();
        for (name, m) in state.members.iter_mut() {
            if !matches!(m.state, PlatformState::Running | PlatformState::Paused) {
                continue;
            }
            let load = self.load_of(m);
            let cpu = if m.state == PlatformState::Paused {
                0.0
            } else {
                (load.cpu.fraction(now) * load.base.cpus).clamp(0.0, m.size.cpus)
            };
            let wanted =
                (load.memory.fraction(now) * load.base.memory_bytes as f64).max(0.0) as u64;
            let over = wanted > m.size.memory_bytes;
            if over && !m.over_memory {
                // The kernel kills the largest process once per excursion above the limit.
                m.oom_kills += 1;
            }
            m.over_memory = over;
            out.insert(
                name.clone(),
                Usage {
                    at: now,
                    cpu_used: Some(cpu),
                    memory_used: Some(wanted.min(m.size.memory_bytes)),
                    disk_used: Some(disk_used(m, now)),
                    disk_size: Some(m.size.disk_bytes),
                    oom_kills: Some(m.oom_kills),
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_a_repeating_step_function() {
        let t =
            Trace::from_csv("timestamp,value\n2014-02-14 14:30:00,10\n2014-02-14 14:35:00,30\n")
                .unwrap();
        let start = Timestamp::parse("2014-02-14 14:30:00").unwrap();
        assert_eq!(t.at(start), 10.0);
        assert_eq!(t.at(start + Duration::from_secs(299)), 10.0);
        assert_eq!(t.at(start + Duration::from_secs(300)), 30.0);
        // Period = 2 steps of 5 min: 10 min later it starts over.
        assert_eq!(t.at(start + Duration::from_secs(600)), 10.0);
        assert_eq!(t.at(start + Duration::from_secs(900)), 30.0);
    }

    #[test]
    fn bad_trace_lines_name_their_line() {
        let e = Trace::from_csv("timestamp,value\n2014-02-14 14:30:00,x\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
        assert!(matches!(
            Trace::from_csv("timestamp,value\n"),
            Err(TraceError::Empty)
        ));
    }
}
