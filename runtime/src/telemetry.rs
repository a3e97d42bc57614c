//! Telemetry as typed events: each event's `emit()` both logs (tracing, structured fields) and
//! counts (the Prometheus metrics served on `/metrics`), so a log line and a metric can never
//! disagree about what happened. Also the decision log: one JSON line per decision.
//!
//! What it is not: it sets up no subscriber (the binary does) and serves nothing (the server
//! does). No event carries a secret: events hold names, kinds and numbers, and errors are
//! logged through their `Display`, which by the project's error rules never includes one.
//!
//! Metrics (Prometheus conventions, `steward_` prefix):
//! Metrics (Prometheus conventions, `steward_` prefix), every one with a `cluster` label (a
//! fleet's clusters share one registry):
//! - `steward_decisions_total{cluster,loop,knob,action}`: decisions made, holds included;
//! - `steward_actions_total{cluster,kind,outcome}`: actions run against the platform or Patroni;
//! - `steward_failures_total{cluster,loop,kind}`: loop iterations or steps that failed, by
//!   error class;
//! - `steward_loop_duration_seconds{cluster,loop}`: histogram of one loop iteration;
//! - `steward_observation_age_seconds{cluster}`: age of the observation the loops last used;
//! - `steward_guard_state{cluster,guard}`: 1 when the guard is engaged (repairs frozen, ...);
//! - `steward_paused{cluster}`: 1 when an operator paused the cluster's loops;
//! - `steward_below_floor{cluster}`: 1 while the cluster has fewer database members than its
//!   floor (`min_members`);
//! - `steward_leader{cluster}`: 1 when this instance holds the cluster's lease and may act.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use steward_model::Decision;

/// The two control loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Loop {
    Scaler,
    Repairer,
}

impl Loop {
    pub const ALL: [Loop; 2] = [Loop::Scaler, Loop::Repairer];

    pub fn as_str(self) -> &'static str {
        match self {
            Loop::Scaler => "scaler",
            Loop::Repairer => "repairer",
        }
    }
}

impl EncodeLabelValue for Loop {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

impl std::fmt::Display for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for StepOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        self.as_str().encode(encoder)
    }
}

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Success,
    /// Failed; worth trying again later.
    Transient,
    /// Failed; trying again will not help.
    Permanent,
    /// Not run: `--dry-run`, paused, or not the leader.
    Skipped,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Success => "success",
            StepOutcome::Transient => "transient",
            StepOutcome::Permanent => "permanent",
            StepOutcome::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    cluster: String,
    r#loop: Loop,
    knob: String,
    action: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    cluster: String,
    kind: String,
    outcome: StepOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    cluster: String,
    r#loop: Loop,
    kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoopLabels {
    cluster: String,
    r#loop: Loop,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GuardLabels {
    cluster: String,
    guard: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

impl ClusterLabels {
    fn of(cluster: &str) -> Self {
        ClusterLabels {
            cluster: cluster.to_string(),
        }
    }
}

fn loop_histogram() -> Histogram {
    // 1 ms .. ~16 s: an iteration is a few queries and a pure evaluation; anything near the
    // top bucket means a source is timing out.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric Steward exports, registered once. Cheap to share (`Arc`); all updates are
/// atomic.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    actions: Family<ActionLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    loop_duration: Family<LoopLabels, Histogram, fn() -> Histogram>,
    observation_age: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    guard_state: Family<GuardLabels, Gauge>,
    paused: Family<ClusterLabels, Gauge>,
    below_floor: Family<ClusterLabels, Gauge>,
    leader: Family<ClusterLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("steward");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let actions = Family::<ActionLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let loop_duration =
            Family::<LoopLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                loop_histogram,
            );
        let observation_age = Family::<ClusterLabels, Gauge<f64, AtomicU64>>::default();
        let guard_state = Family::<GuardLabels, Gauge>::default();
        let paused = Family::<ClusterLabels, Gauge>::default();
        let below_floor = Family::<ClusterLabels, Gauge>::default();
        let leader = Family::<ClusterLabels, Gauge>::default();
        // Counters get `_total` and unit-carrying metrics `_seconds` from the library.
        registry.register(
            "decisions",
            "Decisions made by the loops, holds included",
            decisions.clone(),
        );
        registry.register(
            "actions",
            "Actions run against the platform or Patroni, by outcome",
            actions.clone(),
        );
        registry.register(
            "failures",
            "Failed loop iterations or steps, by error class",
            failures.clone(),
        );
        registry.register_with_unit(
            "loop_duration",
            "Duration of one loop iteration",
            Unit::Seconds,
            loop_duration.clone(),
        );
        registry.register_with_unit(
            "observation_age",
            "Age of the observation the loops last used",
            Unit::Seconds,
            observation_age.clone(),
        );
        registry.register(
            "guard_state",
            "1 when the guard is engaged",
            guard_state.clone(),
        );
        registry.register(
            "paused",
            "1 when an operator paused the loops",
            paused.clone(),
        );
        registry.register(
            "below_floor",
            "1 while the cluster has fewer database members than its floor (min_members)",
            below_floor.clone(),
        );
        registry.register(
            "leader",
            "1 when this instance holds the lease and may act",
            leader.clone(),
        );
        Metrics {
            registry,
            decisions,
            actions,
            failures,
            loop_duration,
            observation_age,
            guard_state,
            paused,
            below_floor,
            leader,
        }
    }

    /// Makes a cluster's series appear at once (at zero), so that dashboards and alerts see
    /// its loops, pause flag and floor before anything happens to them.
    pub fn add_cluster(&self, cluster: &str) {
        for l in Loop::ALL {
            let _ = self.loop_duration.get_or_create(&LoopLabels {
                cluster: cluster.to_string(),
                r#loop: l,
            });
        }
        let labels = ClusterLabels::of(cluster);
        for family in [&self.paused, &self.below_floor, &self.leader] {
            let _ = family.get_or_create(&labels);
        }
    }

    /// The Prometheus text format (0.0.4) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
}

/// A loop made a decision (holds included).
#[derive(Debug)]
pub struct DecisionMade<'a> {
    pub cluster: &'a str,
    pub r#loop: Loop,
    pub decision: &'a Decision,
}

impl DecisionMade<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        let d = self.decision;
        let rules: Vec<&str> = d.rules.iter().map(|r| r.rule.as_str()).collect();
        if d.changes() {
            tracing::info!(
                cluster = self.cluster,
                r#loop = self.r#loop.as_str(),
                knob = %d.knob,
                action = %d.action,
                current = d.current,
                target = d.target,
                rules = ?rules,
                summary = %d.summary,
                "decision"
            );
        } else {
            tracing::debug!(
                cluster = self.cluster,
                r#loop = self.r#loop.as_str(),
                knob = %d.knob,
                action = %d.action,
                rules = ?rules,
                summary = %d.summary,
                "decision"
            );
        }
        metrics
            .decisions
            .get_or_create(&DecisionLabels {
                cluster: self.cluster.to_string(),
                r#loop: self.r#loop,
                knob: d.knob.to_string(),
                action: d.action.to_string(),
            })
            .inc();
    }
}

/// An action (one step of an operation) ended.
#[derive(Debug)]
pub struct ActionFinished<'a> {
    pub cluster: &'a str,
    /// The member acted on, if one.
    pub member: Option<&'a str>,
    /// What was done (`resize`, `fence`, `switchover`, ...).
    pub kind: &'a str,
    pub outcome: StepOutcome,
    pub duration: Duration,
    /// The operation the action belongs to.
    pub operation: Option<&'a str>,
}

impl ActionFinished<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        let secs = self.duration.as_secs_f64();
        match self.outcome {
            StepOutcome::Success | StepOutcome::Skipped => tracing::info!(
                cluster = self.cluster,
                member = self.member,
                operation = self.operation,
                kind = self.kind,
                outcome = self.outcome.as_str(),
                duration_seconds = secs,
                "action finished"
            ),
            StepOutcome::Transient | StepOutcome::Permanent => tracing::warn!(
                cluster = self.cluster,
                member = self.member,
                operation = self.operation,
                kind = self.kind,
                outcome = self.outcome.as_str(),
                duration_seconds = secs,
                "action failed"
            ),
        }
        metrics
            .actions
            .get_or_create(&ActionLabels {
                cluster: self.cluster.to_string(),
                kind: self.kind.to_string(),
                outcome: self.outcome,
            })
            .inc();
    }
}

/// A loop iteration or step failed.
#[derive(Debug)]
pub struct LoopFailed<'a> {
    pub cluster: &'a str,
    pub r#loop: Loop,
    /// The error's class (`transient`, `not_found`, `conflict`, `permanent`, `journal`, ...):
    /// a bounded set, since it is a label.
    pub kind: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl LoopFailed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            cluster = self.cluster,
            r#loop = self.r#loop.as_str(),
            kind = self.kind,
            error = %ErrorChain(self.error),
            "loop iteration failed"
        );
        metrics
            .failures
            .get_or_create(&FailureLabels {
                cluster: self.cluster.to_string(),
                r#loop: self.r#loop,
                kind: self.kind.to_string(),
            })
            .inc();
    }
}

/// `error: cause: cause`, the way people read an error.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// A loop iteration ran to its end (successfully or not).
#[derive(Debug)]
pub struct LoopTicked<'a> {
    pub cluster: &'a str,
    pub r#loop: Loop,
    pub duration: Duration,
}

impl LoopTicked<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::trace!(
            cluster = self.cluster,
            r#loop = self.r#loop.as_str(),
            duration_seconds = self.duration.as_secs_f64(),
            "loop ticked"
        );
        metrics
            .loop_duration
            .get_or_create(&LoopLabels {
                cluster: self.cluster.to_string(),
                r#loop: self.r#loop,
            })
            .observe(self.duration.as_secs_f64());
    }
}

/// The loops used an observation of this age.
#[derive(Debug)]
pub struct ObservationUsed<'a> {
    pub cluster: &'a str,
    pub age: Duration,
}

impl ObservationUsed<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::trace!(
            cluster = self.cluster,
            age_seconds = self.age.as_secs_f64(),
            "observation used"
        );
        metrics
            .observation_age
            .get_or_create(&ClusterLabels::of(self.cluster))
            .set(self.age.as_secs_f64());
    }
}

/// A guard was engaged or released.
#[derive(Debug)]
pub struct GuardChanged<'a> {
    pub cluster: &'a str,
    /// The guard's name (`observer_doubt`, `repair_budget`, `circuit_breaker`, `quiet_period`).
    pub guard: &'a str,
    pub engaged: bool,
    /// Why, for people.
    pub reason: &'a str,
}

impl GuardChanged<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        if self.engaged {
            tracing::warn!(
                cluster = self.cluster,
                guard = self.guard,
                reason = self.reason,
                "guard engaged"
            );
        } else {
            tracing::info!(
                cluster = self.cluster,
                guard = self.guard,
                reason = self.reason,
                "guard released"
            );
        }
        metrics
            .guard_state
            .get_or_create(&GuardLabels {
                cluster: self.cluster.to_string(),
                guard: self.guard.to_string(),
            })
            .set(i64::from(self.engaged));
    }
}

/// An operator paused or resumed the loops.
#[derive(Debug)]
pub struct PauseChanged<'a> {
    pub cluster: &'a str,
    pub paused: bool,
    /// Where the request came from (`api`, `config`, ...), never who with which credential.
    pub via: &'a str,
}

impl PauseChanged<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            cluster = self.cluster,
            paused = self.paused,
            via = self.via,
            "pause state changed"
        );
        metrics
            .paused
            .get_or_create(&ClusterLabels::of(self.cluster))
            .set(i64::from(self.paused));
    }
}

/// The cluster fell below its floor (`min_members`) or came back to it (issue 15): an alert
/// whatever the cause, also when nothing is left on the platform to replace.
#[derive(Debug)]
pub struct FloorChanged<'a> {
    pub cluster: &'a str,
    /// `Some((members, floor))` while below it.
    pub below: Option<(usize, usize)>,
}

impl FloorChanged<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        match self.below {
            Some((members, floor)) => tracing::warn!(
                cluster = self.cluster,
                members,
                floor,
                "the cluster is below its floor of database members"
            ),
            None => tracing::info!(cluster = self.cluster, "the cluster is back at its floor"),
        }
        metrics
            .below_floor
            .get_or_create(&ClusterLabels::of(self.cluster))
            .set(i64::from(self.below.is_some()));
    }
}

/// This instance gained or lost the lease.
#[derive(Debug)]
pub struct LeadershipChanged<'a> {
    pub cluster: &'a str,
    pub leader: bool,
    /// The lease holder's identity, if known.
    pub holder: Option<&'a str>,
}

impl LeadershipChanged<'_> {
    pub fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            cluster = self.cluster,
            leader = self.leader,
            holder = self.holder,
            "leadership changed"
        );
        metrics
            .leader
            .get_or_create(&ClusterLabels::of(self.cluster))
            .set(i64::from(self.leader));
    }
}

/// A request to a protected endpoint was refused. Logs the path and why, never what
/// credential was offered.
#[derive(Debug)]
pub struct AuthRejected<'a> {
    pub path: &'a str,
    pub reason: &'a str,
}

impl AuthRejected<'_> {
    pub fn emit(&self) {
        tracing::warn!(path = self.path, reason = self.reason, "request refused");
    }
}

/// Why the decision log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    #[error("cannot open decision log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot append to decision log {path}")]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The decision log: `decisions.jsonl` in the state directory, one decision per line with its
/// cluster and loop, appended (never rewritten).
///
/// Each line is written with a single `write` on a file opened in append mode, so lines from
/// the two loops never interleave. It is not fsynced per line: it is a record for people and
/// for `evaluate`, not a journal; the journal is what crash recovery relies on.
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// One line of the decision log.
#[derive(Serialize)]
struct DecisionLine<'a> {
    cluster: &'a str,
    r#loop: Loop,
    #[serde(flatten)]
    decision: &'a Decision,
}

impl DecisionLog {
    /// The file name inside the state directory.
    pub const FILE_NAME: &'static str = "decisions.jsonl";

    pub fn open(state_dir: &Path) -> Result<Self, DecisionLogError> {
        let path = state_dir.join(Self::FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| DecisionLogError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(DecisionLog {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(
        &self,
        cluster: &str,
        r#loop: Loop,
        decision: &Decision,
    ) -> Result<(), DecisionLogError> {
        let err = |source| DecisionLogError::Append {
            path: self.path.clone(),
            source,
        };
        let line = DecisionLine {
            cluster,
            r#loop,
            decision,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|e| err(io::Error::other(e)))?;
        bytes.push(b'\n');
        // A poisoned lock only means another append panicked mid-call; the file is still fine.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&bytes).map_err(err)
    }
}
