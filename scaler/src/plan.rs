//! Rollout plans: an intent turned into ordered, checked steps, as a value that can be journaled.
//!
//! What it is: [`Plan`] (an id, the [`Intent`] it carries out, its [`PlanStep`]s and a cursor) and the
//! builders that order the steps: replicas first, the primary last; a switchover before the
//! primary whenever its step would interrupt it (a platform that resizes by restarting, or a
//! setting that needs a restart); settings after a grow and before a shrink. Each step names the
//! [`Check`] a later observation must pass before the next step starts, and the check that shows
//! its action was already applied (so a resumed plan does not redo it).
//!
//! What it is not: an executor. [`crate::Scaler`] walks the plan and emits commands; the driver
//! runs them.
//!
//! Why this order, for a database resize (N replicas, leader L):
//! - grow: resize replicas; if a setting needs a restart: PATCH those settings, restart each
//!   replica; switchover (if L would be interrupted) to a replica already resized; resize L;
//!   restart L; finally PATCH the reload-only settings. Memory is always there before a setting
//!   uses it: a restart-only setting is pending until its member's restart, which comes after
//!   that member's resize, and the reload-only settings are patched once every member is resized.
//! - shrink: PATCH every setting first (reload-only ones apply at once, everywhere); then per
//!   replica restart (so postgres picks up the smaller shared_buffers) and then resize;
//!   switchover; restart and resize the old primary. PostgreSQL never holds more than the new limit
//!   when it arrives (runc refuses a limit below what is in use: ENVIRONMENT.md).
//! - `max_worker_processes` going down on replicas before the primary is safe: Patroni starts a
//!   replica with the larger of its configured value and the primary's (from pg_controldata).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
pub use steward_model::operation::{OperationId, Step};
use steward_model::ports::platform::{Change, CreateSpec};
use steward_model::{Decision, Resource, Role, Size, Timestamp};

use crate::settings::{ConfigPatch, SettingsDiff};
use crate::view::{same_size, Snapshot};

/// What an operation is for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum IntentKind {
    /// Every member of `role` to `to` (vCPUs or bytes) for `resource`.
    Resize {
        role: Role,
        resource: Resource,
        from: f64,
        to: f64,
    },
    /// One more database member, named `member`.
    ScaleOut { member: String },
    /// One database replica less: `member`.
    ScaleIn { member: String },
    /// `shared_buffers` of every member of `role` from `from` to `to` bytes: the buffer cache
    /// was short (`policies::cache`); restart-only, no resize.
    Retune { role: Role, from: f64, to: f64 },
}

/// An operation the scaler wants to start, and why: what the coordinator approves or refuses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub kind: IntentKind,
    /// An emergency (a disk past its critical fill, an OOM-killed member's memory): it goes
    /// first, preempting an ordinary plan that waits.
    pub emergency: bool,
    /// Interrupts a member (a restart, a switchover, a removal), not only a live change.
    pub disruptive: bool,
    /// The policy decision behind it, with every reason.
    pub decision: Decision,
}

impl Intent {
    /// Whether it prevents an outage: an emergency, or any disk grow (a full disk stops
    /// PostgreSQL). Such an action does not wait for a degraded cluster's repairs, and when it
    /// disrupts nothing it may run beside one (DESIGN.md promise 12).
    pub fn prevents_outage(&self) -> bool {
        self.emergency
            || matches!(
                self.kind,
                IntentKind::Resize { resource: Resource::Disk, from, to, .. } if to > from
            )
    }
}

/// Something a later observation must show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum Check {
    /// Nothing to see (a config patch, a drain: their result is the action's answer).
    Nothing,
    /// The member has this size.
    Size { member: String, size: Size },
    /// The member runs; a database replica also streams with a lag under the limit.
    Healthy { member: String },
    /// The leader lock is no longer held by `from`, and the new leader is healthy.
    LeaderMoved { from: String },
    /// The platform knows the member.
    Exists { member: String },
    /// The member is stopped (fenced, exited) or gone.
    Stopped { member: String },
    /// The platform no longer lists the member.
    Gone { member: String },
    /// Every one of these.
    All { checks: Vec<Check> },
}

/// What must still be true when a step is about to start (else the plan fails, doing nothing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "guard")]
pub enum Guard {
    None,
    /// The member must not hold the leader lock (an old primary after its switchover).
    NotLeader {
        member: String,
    },
    /// Removing this member keeps `min_members` healthy database members, and it is not the
    /// leader.
    ScaleIn {
        member: String,
        min_members: u32,
    },
    /// A switchover needs one of these replicas healthy and streaming at its new size.
    Candidates {
        candidates: Vec<(String, Size)>,
    },
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub action: Step,
    /// Must hold in an observation after the action succeeded before the next step starts.
    pub verify: Check,
    /// When this holds as the step is about to start, the action is already applied (a resumed
    /// plan, a member already at its size): the step goes straight to verifying.
    pub applied: Option<Check>,
    pub guard: Guard,
}

/// Where the plan's current step is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Not started: the next observation (or the permission) starts it.
    Ready,
    /// The command was sent at `at`; waiting for its result.
    Issued { at: Timestamp },
    /// The action succeeded at `since`; waiting for an observation that passes the check.
    Verifying { since: Timestamp },
    /// The action's answer at `since` was an error that leaves its outcome unknown (a timeout,
    /// a 5xx: `error`): it may have worked, so the check decides, for a short while
    /// ([`crate::core::UNSURE_WAIT`] at most) before the plan fails with that error.
    Unsure { since: Timestamp, error: String },
}

/// An operation as a value: journaled before each step, resumable from any step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: OperationId,
    pub intent: Intent,
    pub steps: Vec<PlanStep>,
    /// The index of the current step; `steps.len()` when done.
    pub cursor: usize,
    pub phase: Phase,
}

impl Plan {
    pub fn new(id: OperationId, intent: Intent, steps: Vec<PlanStep>) -> Self {
        Plan {
            id,
            intent,
            steps,
            cursor: 0,
            phase: Phase::Ready,
        }
    }

    pub fn current(&self) -> Option<&PlanStep> {
        self.steps.get(self.cursor)
    }

    pub fn is_done(&self) -> bool {
        self.cursor >= self.steps.len()
    }
}

/// Why no plan could be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the platform cannot change {resource}")]
    Unsupported { resource: Resource },
    #[error("no leader is observed")]
    NoLeader,
    #[error("the size of member {member} is unknown")]
    UnknownSize { member: String },
    #[error("a switchover is needed but there is no replica to switch over to")]
    NoCandidate,
    #[error("role {role} has no member")]
    NoMember { role: Role },
}

/// A resize verifies what it changed: the size, and the member's health only when the member was
/// healthy before (`check_health`): a step must not wait for a fault it did not cause (a replica
/// already stuck would hold the rollout, and the cluster's one slot, until the step timed out).
fn resize_step(member: &str, size: Size, guard: Guard, check_health: bool) -> PlanStep {
    let at_size = Check::Size {
        member: member.into(),
        size,
    };
    let verify = if check_health {
        Check::All {
            checks: vec![
                at_size.clone(),
                Check::Healthy {
                    member: member.into(),
                },
            ],
        }
    } else {
        at_size.clone()
    };
    PlanStep {
        action: Step::Resize {
            member: member.into(),
            size,
        },
        verify,
        applied: Some(at_size),
        guard,
    }
}

fn restart_step(member: &str, guard: Guard) -> PlanStep {
    PlanStep {
        action: Step::RestartMember {
            member: member.into(),
        },
        verify: Check::Healthy {
            member: member.into(),
        },
        applied: None,
        guard,
    }
}

fn patch_step(patch: ConfigPatch) -> PlanStep {
    PlanStep {
        action: Step::PatchConfig { patch },
        verify: Check::Nothing,
        applied: None,
        guard: Guard::None,
    }
}

/// The steps that bring every member of `role` to `target` for `resource`.
///
/// `how` is how the platform changes that resource; `diff` the settings that follow (empty for
/// balancers and disks); `grow` orders the settings around the resize (see the module doc).
///
/// `healthy`: the members healthy now (their steps also wait for them to be healthy after).
/// A live disk grow (nothing restarts, nobody is switched over) goes fullest member first: the
/// disk nearest to full is the one an outage comes from.
#[allow(clippy::too_many_arguments)]
pub fn resize_steps(
    snap: &Snapshot,
    role: Role,
    resource: Resource,
    target: f64,
    how: Change,
    diff: &SettingsDiff,
    grow: bool,
    healthy: &BTreeSet<String>,
) -> Result<Vec<PlanStep>, PlanError> {
    if how == Change::Unsupported {
        return Err(PlanError::Unsupported { resource });
    }
    let members = snap.members(role);
    if members.is_empty() {
        return Err(PlanError::NoMember { role });
    }
    let target_of = |m: &str| {
        snap.size_of(m)
            .map(|s| s.with(resource, target))
            .ok_or_else(|| PlanError::UnknownSize { member: m.into() })
    };
    let needs = |m: &str, t: &Size| snap.size_of(m).is_none_or(|s| !same_size(&s, t));
    let step = |m: &str, t: Size, guard: Guard| resize_step(m, t, guard, healthy.contains(m));
    if role == Role::Balancer {
        // No Patroni, no settings: one balancer at a time, each checked (the other keeps serving).
        let mut steps = Vec::new();
        for m in &members {
            let t = target_of(m)?;
            if needs(m, &t) {
                steps.push(step(m, t, Guard::None));
            }
        }
        return Ok(steps);
    }
    if resource == Resource::Disk && grow && how == Change::Live {
        let fill = |m: &str| -> f64 {
            let used = snap
                .observation
                .members
                .iter()
                .find(|o| o.name == m)
                .and_then(|o| o.disk_used)
                .map_or(0.0, |f| f.value);
            let size = snap.size_of(m).map_or(1, |s| s.disk_bytes.max(1));
            used / size as f64
        };
        let mut by_fill: Vec<(f64, &String)> = members.iter().map(|m| (fill(m), m)).collect();
        by_fill.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut steps = Vec::new();
        for (_, m) in by_fill {
            let t = target_of(m)?;
            if needs(m, &t) {
                steps.push(step(m, t, Guard::None));
            }
        }
        return Ok(steps);
    }

    let leader = snap.leader().ok_or(PlanError::NoLeader)?.to_string();
    let replicas: Vec<String> = members.iter().filter(|m| **m != leader).cloned().collect();
    let restart_settings = !diff.restart.is_empty();
    let disruptive = how == Change::Restart || restart_settings;
    if disruptive && replicas.is_empty() {
        return Err(PlanError::NoCandidate);
    }
    let leader_target = target_of(&leader)?;
    let mut candidates = Vec::new();
    for r in &replicas {
        candidates.push((r.clone(), target_of(r)?));
    }
    let leader_guard = || {
        if disruptive {
            Guard::NotLeader {
                member: leader.clone(),
            }
        } else {
            Guard::None
        }
    };
    let switchover = || PlanStep {
        action: Step::Switchover {
            leader: leader.clone(),
            candidate: Some(candidates[0].0.clone()),
        },
        verify: Check::LeaderMoved {
            from: leader.clone(),
        },
        applied: Some(Check::LeaderMoved {
            from: leader.clone(),
        }),
        guard: Guard::Candidates {
            candidates: candidates.clone(),
        },
    };

    let mut steps = Vec::new();
    if grow {
        for (r, t) in &candidates {
            if needs(r, t) {
                steps.push(step(r, *t, Guard::None));
            }
        }
        if restart_settings {
            steps.push(patch_step(diff.restart.clone()));
            for (r, _) in &candidates {
                steps.push(restart_step(r, Guard::None));
            }
        }
        if disruptive {
            steps.push(switchover());
        }
        if needs(&leader, &leader_target) {
            steps.push(step(&leader, leader_target, leader_guard()));
        }
        if restart_settings {
            steps.push(restart_step(&leader, leader_guard()));
        }
        if !diff.reload.is_empty() {
            steps.push(patch_step(diff.reload.clone()));
        }
    } else {
        if !diff.is_empty() {
            steps.push(patch_step(diff.all()));
        }
        for (r, t) in &candidates {
            if restart_settings {
                steps.push(restart_step(r, Guard::None));
            }
            if needs(r, t) {
                steps.push(step(r, *t, Guard::None));
            }
        }
        if disruptive {
            steps.push(switchover());
        }
        if restart_settings {
            steps.push(restart_step(&leader, leader_guard()));
        }
        if needs(&leader, &leader_target) {
            steps.push(step(&leader, leader_target, leader_guard()));
        }
    }
    Ok(steps)
}

/// One new database member: created, and counted only once it streams.
pub fn scale_out_steps(spec: CreateSpec) -> Vec<PlanStep> {
    let name = spec.name.clone();
    vec![PlanStep {
        action: Step::Create { spec },
        verify: Check::Healthy {
            member: name.clone(),
        },
        applied: Some(Check::Exists { member: name }),
        guard: Guard::None,
    }]
}

/// One replica less: drained from the balancers first (no new session lands on it, running ones
/// finish or move), then fenced, then removed. Each step re-checks that it is not the leader and
/// that the HA minimum holds without it.
pub fn scale_in_steps(member: &str, min_members: u32, delete_data: bool) -> Vec<PlanStep> {
    let guard = Guard::ScaleIn {
        member: member.into(),
        min_members,
    };
    vec![
        PlanStep {
            action: Step::Drain {
                member: member.into(),
            },
            verify: Check::Nothing,
            applied: None,
            guard: guard.clone(),
        },
        PlanStep {
            action: Step::Fence {
                member: member.into(),
            },
            verify: Check::Stopped {
                member: member.into(),
            },
            applied: Some(Check::Stopped {
                member: member.into(),
            }),
            guard,
        },
        PlanStep {
            action: Step::Remove {
                member: member.into(),
                delete_data,
            },
            verify: Check::Gone {
                member: member.into(),
            },
            applied: Some(Check::Gone {
                member: member.into(),
            }),
            guard: Guard::None,
        },
    ]
}
