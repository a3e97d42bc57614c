//! The repair core's inputs ([`Event`]) and outputs ([`Command`]).
//!
//! What it is: plain data. A driver feeds events in and carries commands out to the platform,
//! Patroni and the balancers, then feeds each command's result back as [`Event::ActionDone`]
//! with the command's [`OperationId`].
//!
//! What it is not: the execution of anything. Every command carries a reason sentence for the
//! decision log, and an operation id that is deterministic (cluster name and a counter), so a
//! replay of the same events yields the same ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use steward_model::observation::Observation;
use steward_model::ports::platform::{ErrorKind, PlatformMember};
use steward_model::{Role, Timestamp};

use steward_coordinator::Refusal;
pub use steward_model::operation::OperationId;

/// Why an action failed, as the driver classified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionError {
    pub kind: ErrorKind,
    /// The executor's message (never a secret: drivers pass platform messages, not requests).
    pub message: String,
}

impl ActionError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ActionError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

/// What an operator can tell the repairer while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Like `patronictl pause`: keep observing, act on nothing.
    Pause,
    Resume,
    /// Close an open circuit breaker without waiting for its cooldown.
    ResetBreaker,
}

/// Everything the core reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A new snapshot of the cluster.
    Observed(Observation),
    /// The platform's own listing, read at `at`: restart counters (restart loops) live here,
    /// not in the observation.
    PlatformListed {
        at: Timestamp,
        members: Vec<PlatformMember>,
    },
    /// The result of a command, by its operation id.
    ActionDone {
        op: OperationId,
        result: Result<(), ActionError>,
    },
    /// Time passed: windows and timeouts are re-evaluated against `now`.
    Tick,
    Operator(OperatorCommand),
}

/// Something an operator must look at.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum Alert {
    /// Half of the database members or more look bad at once: the observer is suspect, repairs
    /// are frozen.
    UnhealthyMajority { looking_bad: usize, members: usize },
    /// The leader looks bad and no replica could take over: it is left alone.
    NoHealthyCandidate { leader: String },
    /// A guard refused a repair that is due (budget spent, breaker open).
    RepairRefused { member: String, refusal: Refusal },
    /// A repair step failed for good.
    RepairFailed {
        member: String,
        step: String,
        error: String,
    },
    /// A switchover was asked for, but the leader lock did not move in time.
    SwitchoverStuck { from: String },
}

impl Alert {
    /// Alerts about a lasting condition are raised once until the condition clears; this is
    /// the key they are remembered by. Alerts about an event return `None` (always raised).
    pub fn condition_key(&self) -> Option<String> {
        match self {
            Alert::UnhealthyMajority { .. } => Some("unhealthy_majority".into()),
            Alert::NoHealthyCandidate { leader } => Some(format!("no_healthy_candidate/{leader}")),
            Alert::RepairRefused { refusal, .. } => Some(format!("refused/{}", refusal.key())),
            Alert::RepairFailed { .. } | Alert::SwitchoverStuck { .. } => None,
        }
    }
}

/// What a command asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CommandKind {
    /// Ask Patroni to hand the leader lock over (to `to`, or to a candidate of its choice).
    AskSwitchover { from: String, to: Option<String> },
    /// Take the member out of both balancers.
    Drain { member: String },
    /// Make the member unable to serve or write (stop, destroy, delete the pod).
    Fence { member: String },
    /// Create a member named `name` that joins as a replica, replacing `replacing`. `label` is
    /// the repair's platform label ([`OperationId::label`]): the same after a restart, so a
    /// create run again finds the member it made before and counts it as done.
    Create {
        role: Role,
        name: String,
        replacing: String,
        label: String,
    },
    /// Remove a fenced member. `delete_data` is false until its replacement has streamed.
    Remove { member: String, delete_data: bool },
    /// Tell a person.
    Alert { alert: Alert },
}

/// One command: what, under which operation id, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Command {
    pub op: OperationId,
    #[serde(flatten)]
    pub kind: CommandKind,
    /// One sentence for the decision log and /status.
    pub reason: String,
}

impl Command {
    /// Whether the command changes the cluster (everything but alerts). At most one disruptive
    /// command per cluster is ever in flight.
    pub fn is_disruptive(&self) -> bool {
        !matches!(self.kind, CommandKind::Alert { .. })
    }

    /// The member the command acts upon, if any.
    pub fn member(&self) -> Option<&str> {
        match &self.kind {
            CommandKind::AskSwitchover { from, .. } => Some(from),
            CommandKind::Drain { member }
            | CommandKind::Fence { member }
            | CommandKind::Remove { member, .. } => Some(member),
            CommandKind::Create { replacing, .. } => Some(replacing),
            CommandKind::Alert { .. } => None,
        }
    }
}

impl fmt::Display for CommandKind {
    /// A compact form, used by transcripts: `fence pg-1`, `remove pg-3 keep-data`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandKind::AskSwitchover { from, to: Some(to) } => {
                write!(f, "switchover {from} to {to}")
            }
            CommandKind::AskSwitchover { from, to: None } => write!(f, "switchover {from}"),
            CommandKind::Drain { member } => write!(f, "drain {member}"),
            CommandKind::Fence { member } => write!(f, "fence {member}"),
            CommandKind::Create {
                role,
                name,
                replacing,
                ..
            } => {
                write!(f, "create {role} {name} replacing {replacing}")
            }
            CommandKind::Remove {
                member,
                delete_data,
            } => {
                let data = if *delete_data {
                    "delete-data"
                } else {
                    "keep-data"
                };
                write!(f, "remove {member} {data}")
            }
            CommandKind::Alert { alert } => {
                let name = match alert {
                    Alert::UnhealthyMajority { .. } => "unhealthy_majority",
                    Alert::NoHealthyCandidate { .. } => "no_healthy_candidate",
                    Alert::RepairRefused { refusal, .. } => refusal.key(),
                    Alert::RepairFailed { .. } => "repair_failed",
                    Alert::SwitchoverStuck { .. } => "switchover_stuck",
                };
                write!(f, "alert {name}")
            }
        }
    }
}
