//! Carrying out one step through the ports: the repairer's and the scaler's commands become a
//! [`Work`] (plain data, journaled before it runs), and the [`Executor`] runs it against the
//! platform, Patroni and the balancers.
//!
//! What it is: the translation from commands to port calls, and the classification of every
//! failure into the platform port's [`ErrorKind`] so each core can choose between retrying and
//! giving up. Steps are made idempotent here where the port is not: a create whose name is taken
//! by a member carrying this very operation's label is a success (it is a re-run after a crash).
//!
//! What it is not: a decision maker or a retrier. It runs a step once and reports.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use steward_adapters::haproxy::{AdminState, BalancerSet, Change};
use steward_adapters::patroni::{PatroniApi, PatroniError, RestartConditions, Switchover};
use steward_model::ports::{CreateSpec, ErrorKind, Platform, PlatformError, LABEL_OPERATION};
use steward_model::Size;

/// One step, as journaled and executed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum Work {
    /// Ask Patroni to hand the leader lock from `leader` to `candidate` (or its choice).
    Switchover {
        leader: String,
        candidate: Option<String>,
    },
    /// Take the member out of every balancer backend (open sessions go on).
    Drain {
        member: String,
    },
    /// Put it back.
    Undrain {
        member: String,
    },
    Fence {
        member: String,
    },
    Create {
        spec: CreateSpec,
    },
    Remove {
        member: String,
        delete_data: bool,
    },
    Resize {
        member: String,
        size: Size,
    },
    /// `PATCH /config` with this body.
    PatchConfig {
        patch: serde_json::Value,
    },
    /// Restart PostgreSQL on the member through Patroni.
    Restart {
        member: String,
    },
}

impl Work {
    /// The member the step acts upon, for spans and logs.
    pub fn member(&self) -> Option<&str> {
        match self {
            Work::Switchover { leader, .. } => Some(leader),
            Work::Drain { member }
            | Work::Undrain { member }
            | Work::Fence { member }
            | Work::Remove { member, .. }
            | Work::Resize { member, .. }
            | Work::Restart { member } => Some(member),
            Work::Create { spec } => Some(&spec.name),
            Work::PatchConfig { .. } => None,
        }
    }
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Work::Switchover {
                leader,
                candidate: Some(c),
            } => write!(f, "switchover {leader} -> {c}"),
            Work::Switchover { leader, .. } => write!(f, "switchover {leader}"),
            Work::Drain { member } => write!(f, "drain {member}"),
            Work::Undrain { member } => write!(f, "undrain {member}"),
            Work::Fence { member } => write!(f, "fence {member}"),
            Work::Create { spec } => write!(
                f,
                "create {} {} ({} vCPU, {} MiB)",
                spec.role,
                spec.name,
                spec.size.cpus,
                spec.size.memory_bytes >> 20
            ),
            Work::Remove {
                member,
                delete_data,
            } => write!(
                f,
                "remove {member} ({})",
                if *delete_data {
                    "delete data"
                } else {
                    "keep data"
                }
            ),
            Work::Resize { member, size } => write!(
                f,
                "resize {member} to {} vCPU, {} MiB, {} GiB disk",
                size.cpus,
                size.memory_bytes >> 20,
                size.disk_bytes >> 30
            ),
            Work::PatchConfig { patch } => write!(f, "patch config {patch}"),
            Work::Restart { member } => write!(f, "restart {member}"),
        }
    }
}

/// A failed step, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl From<PlatformError> for ExecError {
    fn from(e: PlatformError) -> Self {
        ExecError {
            kind: e.kind,
            message: e.to_string(),
        }
    }
}

impl From<PatroniError> for ExecError {
    fn from(e: PatroniError) -> Self {
        ExecError {
            kind: e.class(),
            message: e.to_string(),
        }
    }
}

/// The balancers and the backends a member is drained from.
#[derive(Clone)]
pub struct Balancers {
    pub set: BalancerSet,
    /// Backend names each database member may be in (e.g. `primary`, `replicas`).
    pub backends: Vec<String>,
}

/// What must still hold, checked right before every step: with several instances, that this
/// one holds the lease under the token it was given (DESIGN.md promise 8).
pub trait ActGuard: Send + Sync {
    /// `Err(why)` refuses the step; nothing is called.
    fn may_act(&self) -> Result<(), String>;
}

/// Runs steps through the ports.
#[derive(Clone)]
pub struct Executor {
    pub platform: Arc<dyn Platform>,
    pub patroni: Arc<dyn PatroniApi>,
    pub balancers: Option<Balancers>,
    /// Checked before every step; `None` when this instance acts alone.
    pub guard: Option<Arc<dyn ActGuard>>,
}

impl Executor {
    /// Runs `work`. `api_urls` maps member names to their Patroni REST base URL (for restart).
    pub async fn run(
        &self,
        work: &Work,
        api_urls: &BTreeMap<String, String>,
    ) -> Result<(), ExecError> {
        if let Some(guard) = &self.guard {
            guard.may_act().map_err(|why| ExecError {
                kind: ErrorKind::Conflict,
                message: format!("refused before {work}: {why}"),
            })?;
        }
        match work {
            Work::Switchover { leader, candidate } => {
                let request = Switchover {
                    leader: leader.clone(),
                    candidate: candidate.clone(),
                    scheduled_at: None,
                };
                self.patroni.switchover(&request).await?;
                Ok(())
            }
            Work::Drain { member } => self.set_state(member, AdminState::Drain).await,
            Work::Undrain { member } => self.set_state(member, AdminState::Ready).await,
            Work::Fence { member } => Ok(self.platform.fence(member).await?),
            Work::Create { spec } => match self.platform.create(spec).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind == ErrorKind::Conflict => {
                    // Taken by ourselves, in this very operation (a re-run after a crash)?
                    let listed = self.platform.list().await?;
                    let ours = listed.iter().any(|m| {
                        m.name == spec.name
                            && m.labels.get(LABEL_OPERATION) == Some(&spec.operation_id)
                    });
                    if ours {
                        Ok(())
                    } else {
                        Err(e.into())
                    }
                }
                Err(e) => Err(e.into()),
            },
            Work::Remove {
                member,
                delete_data,
            } => Ok(self.platform.remove(member, *delete_data).await?),
            Work::Resize { member, size } => {
                self.platform.resize(member, *size).await?;
                Ok(())
            }
            Work::PatchConfig { patch } => {
                self.patroni.patch_config(patch).await?;
                Ok(())
            }
            Work::Restart { member } => {
                let base = api_urls.get(member).ok_or_else(|| ExecError {
                    kind: ErrorKind::NotFound,
                    message: format!("no patroni api url known for {member}"),
                })?;
                self.patroni
                    .restart(base, &RestartConditions::default())
                    .await?;
                Ok(())
            }
        }
    }

    async fn set_state(&self, member: &str, state: AdminState) -> Result<(), ExecError> {
        let Some(b) = &self.balancers else {
            // No balancer configured: clients reach members through Patroni's own endpoints, so
            // there is nothing to drain from.
            return Ok(());
        };
        for backend in &b.backends {
            let change = Change::SetState {
                backend: backend.clone(),
                server: member.to_string(),
                state,
            };
            let report = b.set.apply(&change).await;
            if let Some((name, e)) = report.failed.first() {
                return Err(ExecError {
                    kind: ErrorKind::Transient,
                    message: format!("balancer {name}: {e}"),
                });
            }
        }
        Ok(())
    }
}
