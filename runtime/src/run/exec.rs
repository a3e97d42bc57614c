//! Carrying out one step through the ports: the repairer's and the scaler's commands are a
//! `steward_model::operation::Step` (plain data, journaled before it runs), and the
//! [`Executor`] runs it against the platform, Patroni and the balancers.
//!
//! What it is: the translation from commands to port calls, and the classification of every
//! failure into the platform port's [`ErrorKind`] so each core can choose between retrying and
//! giving up. Steps are made idempotent here where the port is not: a create whose name is taken
//! by a member carrying this very operation's label is a success (it is a re-run after a crash).
//!
//! What it is not: a decision maker or a retrier. It runs a step once and reports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use steward_adapters::haproxy::{AdminState, BalancerSet, Change, Endpoint, RuntimeApi};
use steward_adapters::patroni::{PatroniApi, PatroniError, RestartConditions, Switchover};
use steward_model::observation::PlatformState;
use steward_model::operation::Step;
use steward_model::ports::{ErrorKind, Platform, PlatformError, PlatformMember, LABEL_OPERATION};
use steward_model::Role;

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
///
/// The set is `[balancers] runtime_apis`, plus, with `member_api_port`, the platform's running
/// `balancer` members at their address and that port: [`Balancers::follow`] brings it up to
/// date from each listing (the balancer sync calls it every pass), so a balancer that died
/// leaves the set and the one made in its place joins it.
#[derive(Clone)]
pub struct Balancers {
    now: Arc<std::sync::Mutex<BalancerSet>>,
    fixed: Vec<(String, Endpoint)>,
    member_api_port: Option<u16>,
    /// Backend names each database member may be in (e.g. `primary`, `replicas`).
    pub backends: Vec<String>,
}

impl Balancers {
    /// `fixed`: the balancers always in the set (name, Runtime API).
    pub fn new(
        fixed: Vec<(String, Endpoint)>,
        member_api_port: Option<u16>,
        backends: Vec<String>,
    ) -> Balancers {
        let set = Self::build(fixed.iter().cloned());
        Balancers {
            now: Arc::new(std::sync::Mutex::new(set)),
            fixed,
            member_api_port,
            backends,
        }
    }

    fn build(apis: impl Iterator<Item = (String, Endpoint)>) -> BalancerSet {
        apis.fold(BalancerSet::new(), |set, (name, endpoint)| {
            set.with(name, Arc::new(RuntimeApi::new(endpoint)))
        })
    }

    /// The balancers now.
    pub fn set(&self) -> BalancerSet {
        self.now.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// With `member_api_port`: the set becomes the fixed balancers plus every running
    /// `balancer` member of `listed`. Returns the names that joined and left (empty when
    /// nothing changed, and always without `member_api_port`).
    pub fn follow(&self, listed: &[PlatformMember]) -> (Vec<String>, Vec<String>) {
        let Some(port) = self.member_api_port else {
            return (Vec::new(), Vec::new());
        };
        let members = listed.iter().filter_map(|m| {
            let ip = m.address.parse::<std::net::IpAddr>().ok()?;
            (m.role == Role::Balancer && m.state == PlatformState::Running).then(|| {
                (
                    m.name.clone(),
                    Endpoint::Tcp(std::net::SocketAddr::new(ip, port)),
                )
            })
        });
        let want: Vec<(String, Endpoint)> = self.fixed.iter().cloned().chain(members).collect();
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        let had: BTreeSet<String> = now.names().map(str::to_string).collect();
        let has: BTreeSet<String> = want.iter().map(|(n, _)| n.clone()).collect();
        if had == has {
            return (Vec::new(), Vec::new());
        }
        *now = Self::build(want.into_iter());
        (
            has.difference(&had).cloned().collect(),
            had.difference(&has).cloned().collect(),
        )
    }
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
    /// Runs `step`. `api_urls` maps member names to their Patroni REST base URL (for restart).
    pub async fn run(
        &self,
        step: &Step,
        api_urls: &BTreeMap<String, String>,
    ) -> Result<(), ExecError> {
        if let Some(guard) = &self.guard {
            guard.may_act().map_err(|why| ExecError {
                kind: ErrorKind::Conflict,
                message: format!("refused before {step}: {why}"),
            })?;
        }
        match step {
            Step::Switchover { leader, candidate } => {
                let request = Switchover {
                    leader: leader.clone(),
                    candidate: candidate.clone(),
                    scheduled_at: None,
                };
                self.patroni.switchover(&request).await?;
                Ok(())
            }
            Step::Drain { member } => self.set_state(member, AdminState::Drain).await,
            Step::Undrain { member } => self.set_state(member, AdminState::Ready).await,
            Step::Fence { member } => Ok(self.platform.fence(member).await?),
            Step::Create { spec } => match self.platform.create(spec).await {
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
            Step::Remove {
                member,
                delete_data,
            } => Ok(self.platform.remove(member, *delete_data).await?),
            Step::Resize { member, size } => {
                self.platform.resize(member, *size).await?;
                Ok(())
            }
            Step::PatchConfig { patch } => {
                // A patch is a map of names to strings and numbers: it always serializes.
                let body = serde_json::to_value(patch).map_err(|e| ExecError {
                    kind: ErrorKind::Permanent,
                    message: format!("cannot encode the config patch {patch}: {e}"),
                })?;
                self.patroni.patch_config(&body).await?;
                Ok(())
            }
            Step::RestartMember { member } => {
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
            let report = b.set().apply(&change).await;
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
