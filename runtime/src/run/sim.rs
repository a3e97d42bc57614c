//! The simulated world of `[platform] kind = "simulated"`: a [`SimulatedPlatform`] with its
//! members and load, the [`SimCluster`] fake of Patroni over it, and the scripted faults.
//!
//! What it is: construction from [`SimSettings`] and a task that plays the fault script in
//! `tokio::time`, so under paused time (the binary runs the simulation that way, and so do the
//! tests) a run is deterministic and as fast as the CPU allows.
//!
//! What it is not: part of the loops. The loops see only the ports; this is one way to fill them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use steward_adapters::platform::simulated::{
    Load, Signal, SimClock, SimConfig, SimulatedPlatform, Trace,
};
use steward_adapters::simcluster::{SimCluster, SimClusterConfig};
use steward_model::ports::{CreateSpec, Platform};
use steward_model::{Role, Size, Timestamp};
use tracing::info;

use super::config::{FaultKind, RawFault, SimSettings};

/// The simulation: platform, Patroni fake, and the clock both read.
pub struct SimWorld {
    pub platform: Arc<SimulatedPlatform>,
    pub patroni: Arc<SimCluster>,
    pub clock: SimClock,
    pub settings: SimSettings,
    trace: Option<Trace>,
}

/// Members existed before the run started: created this long before `start`, so they stream
/// from the first tick.
const HISTORY: Duration = Duration::from_secs(3600);

fn scaled(trace: &Trace, factor: f64, start: Timestamp, span: Duration) -> Trace {
    // Sample the (repeating) trace every 5 minutes over the span: enough for a run, and it
    // keeps the trace's own shape.
    let step = Duration::from_secs(300);
    let mut points = Vec::new();
    let mut t = start;
    while t <= start + span {
        points.push((t, trace.at(t) * factor));
        t = t + step;
    }
    Trace::from_points(points).unwrap_or_else(|_| trace.clone())
}

impl SimWorld {
    /// Builds the cluster `cluster` at `settings.start` (needs a tokio runtime: the clock follows
    /// tokio time). `trace_text` is the CSV of `settings.trace`, already read.
    pub async fn build(
        cluster: &str,
        settings: &SimSettings,
        trace_text: Option<&str>,
    ) -> anyhow::Result<SimWorld> {
        let trace = trace_text
            .map(Trace::from_csv)
            .transpose()
            .context("reading the load trace")?;
        let clock = SimClock::following_tokio(settings.start - HISTORY);
        let mut sim = SimConfig::new(cluster, settings.hosts as usize);
        sim.default_load = Some(Self::load(
            trace.as_ref(),
            settings,
            settings.size,
            settings.load_factor,
        ));
        sim.balancer_load = Some(Self::load(
            trace.as_ref(),
            settings,
            settings.balancer_size,
            settings.load_factor,
        ));
        let platform = Arc::new(SimulatedPlatform::new(sim, clock.clone()));
        for i in 1..=settings.members {
            platform
                .create(&CreateSpec {
                    cluster: cluster.to_string(),
                    role: Role::Database,
                    name: format!("{}{i}", settings.prefix),
                    size: settings.size,
                    operation_id: "bootstrap".into(),
                    replaces: None,
                })
                .await
                .with_context(|| format!("creating simulated member {}{i}", settings.prefix))?;
        }
        for i in 1..=settings.balancers {
            let name = format!("{}{i}", settings.balancer_prefix);
            platform
                .create(&CreateSpec {
                    cluster: cluster.to_string(),
                    role: Role::Balancer,
                    name: name.clone(),
                    size: settings.balancer_size,
                    operation_id: "bootstrap".into(),
                    replaces: None,
                })
                .await
                .with_context(|| format!("creating simulated balancer {name}"))?;
        }
        let patroni = Arc::new(SimCluster::new(
            Arc::clone(&platform),
            cluster,
            SimClusterConfig {
                ttl: settings.ttl,
                join_delay: settings.join_delay,
            },
        ));
        patroni.bootstrap(&format!("{}1", settings.prefix));
        clock.set(settings.start);
        Ok(SimWorld {
            platform,
            patroni,
            clock,
            settings: settings.clone(),
            trace,
        })
    }

    /// The load of a member of size `base`: the trace (or 10 %) of its vCPUs, half its memory.
    fn load(trace: Option<&Trace>, settings: &SimSettings, base: Size, factor: f64) -> Load {
        let cpu = match trace {
            Some(t) => Signal::TracePercent(Arc::new(scaled(
                t,
                factor,
                settings.start - HISTORY,
                Duration::from_secs(14 * 24 * 3600),
            ))),
            None => Signal::Constant(0.1 * factor),
        };
        Load {
            cpu,
            memory: Signal::Constant(0.5),
            base,
        }
    }

    /// Applies one fault now.
    pub async fn apply(&self, fault: &RawFault) -> anyhow::Result<()> {
        let member = fault.member.as_deref().unwrap_or_default();
        match fault.fault {
            FaultKind::Crash => self.platform.crash(member)?,
            FaultKind::Hang => self.platform.hang(member)?,
            FaultKind::Recover => self.platform.recover(member)?,
            FaultKind::MemorySpike => {
                let base = self.base_of(member).await?;
                let mut load = Self::load(self.trace.as_ref(), &self.settings, base, 1.0);
                load.memory = Signal::Constant(2.0);
                self.platform.set_load(member, load)?;
            }
            FaultKind::Load => {
                let factor = fault.value.unwrap_or(1.0);
                for m in self.platform.list().await? {
                    let base = self.base_size(m.role);
                    let load = Self::load(self.trace.as_ref(), &self.settings, base, factor);
                    self.platform.set_load(&m.name, load)?;
                }
            }
            FaultKind::Lag => self
                .patroni
                .set_lag(member, fault.value.unwrap_or(0.0) as u64),
        }
        Ok(())
    }

    /// The size a member of `role` starts at: what its load is a fraction of.
    fn base_size(&self, role: Role) -> Size {
        match role {
            Role::Database => self.settings.size,
            Role::Balancer => self.settings.balancer_size,
        }
    }

    async fn base_of(&self, member: &str) -> anyhow::Result<Size> {
        let listed = self.platform.list().await?;
        let m = listed
            .iter()
            .find(|m| m.name == member)
            .with_context(|| format!("no simulated member {member}"))?;
        Ok(self.base_size(m.role))
    }

    /// Plays the fault script: each fault at `start + at`, in tokio time. A fault that cannot
    /// be applied (its member is gone) is logged and skipped.
    pub async fn play(self: Arc<Self>) {
        let mut faults = self.settings.faults.clone();
        faults.sort_by_key(|f| f.at);
        for fault in faults {
            let due = self.settings.start + fault.at;
            let wait = due.since(self.clock.now());
            tokio::time::sleep(wait).await;
            match self.apply(&fault).await {
                Ok(()) => info!(
                    fault = ?fault.fault,
                    member = fault.member.as_deref().unwrap_or(""),
                    "simulated fault injected"
                ),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), fault = ?fault.fault, "simulated fault not applied")
                }
            }
        }
    }
}
