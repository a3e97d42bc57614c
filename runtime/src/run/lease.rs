//! `steward run` with `[lease]`: several instances, one acting (DESIGN.md promise 8).
//!
//! What it is: the outer loop around [`super::run`], over either election (`[lease] kind`: an
//! etcd lease, [`connect_patiently`], or a Kubernetes Lease, [`kubernetes_leadership`]; both
//! are a [`Leadership`] with the same contract). While this instance does not hold the
//! lease it runs the loops in **hot standby** (dry-run semantics over a memory journal: it
//! observes and decides, `/status` is populated, nothing is executed, journaled or written to
//! `actions.jsonl`) and campaigns. Once [`Leadership::campaign`] hands it a fencing token the
//! standby run is stopped and an **acting** run starts, whose every step is first checked by a
//! [`LeaseGuard`] (`Leadership::check(token)`: held under this token and before the local
//! deadline, so a cut-off leader stops acting before etcd can expire its lease and elect
//! another). The acting run is stopped as soon as the lease state leaves `Leader { token }`,
//! and the instance goes back to standby and campaigns again. On shutdown the acting run
//! finishes (and journals) its step in flight first, then the lease is resigned so a follower
//! takes over at once instead of one TTL later.
//!
//! Each transition is logged (instance, token, leader) and published on `/status` (`lease`,
//! and `leadership`) and `/metrics` (`steward_leader`).
//!
//! What it is not: the election itself (steward_adapters::lease does it on etcd's primitives,
//! steward_adapters::platform::kubernetes::lease on a Lease object) nor a decision maker.
//! Standby and acting runs do not share the cores' memory: an acting run starts from the
//! journal and fresh observations, as a restarted Steward does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use steward_adapters::lease::{
    Etcd, FencingToken, LeaderState, Leadership, LeaseBackend, LeaseError, LeaseSettings,
};
use steward_adapters::platform::kubernetes::client::KubeApi;
use steward_adapters::platform::kubernetes::lease::{KubeLeadership, KubeLeaseSettings};
use tracing::{info, warn};

use super::actions::ActionLog;
use super::exec::ActGuard;
use super::journal::MemoryJournal;
use super::{run, shutdown_channel, Clock, Options, Ports, Shutdown, Telemetry};
use crate::config::Config;

/// How often an acting run re-checks the lease besides following its state: the local
/// deadline is read directly, so even a starved election task cannot keep a stale leader acting
/// longer than this.
const RECHECK: Duration = Duration::from_millis(250);

/// The longest wait between two attempts to reach etcd at start-up (from 1 s, doubling).
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Connects to etcd for the lease(s), retrying while it cannot be reached: at boot etcd may come
/// up after Steward, and an instance that gave up would leave the others one fewer. Nothing
/// acts meanwhile (no lease, no acting run). A password file that cannot be read is an error at
/// once (retrying will not fix it); `None` when asked to stop before etcd answered.
pub async fn connect_patiently(
    settings: &LeaseSettings,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Etcd>> {
    if let LeaseBackend::Kubernetes { .. } = settings.backend {
        anyhow::bail!(
            "[lease] kind = \"kubernetes\" elects the acting instance of one cluster; a [fleet] \
             shares its clusters out on etcd leases only: use kind = \"etcd\" with a [fleet]"
        );
    }
    let mut stop = shutdown.clone();
    let mut delay = Duration::from_secs(1);
    loop {
        match Etcd::connect(settings.clone()).await {
            Ok(etcd) => return Ok(Some(etcd)),
            Err(e @ LeaseError::Credentials { .. }) => {
                return Err(anyhow::Error::new(e).context("connecting to etcd for the lease"))
            }
            Err(e) => {
                warn!(
                    error = %format!("{:#}", anyhow::Error::new(e)),
                    retry_in = ?delay,
                    "etcd cannot be reached: not campaigning for the lease yet (nothing acts); retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait() => return Ok(None),
                }
                delay = (delay * 2).min(CONNECT_RETRY_MAX);
            }
        }
    }
}

/// The election on a Kubernetes Lease (`[lease] kind = "kubernetes"`): over the platform's API
/// connection when the platform is Kubernetes, else one found as the platform's would be
/// (KUBECONFIG, `~/.kube/config`, the pod's service account). The Lease's namespace is
/// `[lease] namespace`, else the platform's, else the connection's default (the pod's own).
/// Building it asks nothing of the API server: the election task reads the Lease, retrying
/// while the server cannot be reached (nothing acts meanwhile).
pub async fn kubernetes_leadership(
    settings: &LeaseSettings,
    api: Option<KubeApi>,
    platform_namespace: Option<&str>,
    clock: Clock,
) -> anyhow::Result<Arc<dyn Leadership>> {
    let LeaseBackend::Kubernetes { namespace, name } = &settings.backend else {
        anyhow::bail!("not a kubernetes lease");
    };
    let api = match api {
        Some(api) => api,
        None => KubeApi::connect(
            None,
            None,
            steward_adapters::platform::kubernetes::DEFAULT_MAX_BODY_BYTES,
            |k| std::env::var(k).ok(),
        )
        .await
        .context("setting up the kubernetes client for [lease] kind = \"kubernetes\"")?,
    };
    let namespace = namespace
        .clone()
        .or_else(|| platform_namespace.map(str::to_string))
        .unwrap_or_else(|| api.default_namespace().to_string());
    info!(
        lease = %format!("{namespace}/{name}"),
        instance = %settings.instance,
        source = %api.source(),
        "electing on a kubernetes lease"
    );
    let kube = KubeLeaseSettings {
        namespace,
        name: name.clone(),
        instance: settings.instance.clone(),
        ttl: settings.ttl,
        keepalive: settings.keepalive,
        safety_margin: settings.safety_margin,
        request_timeout: settings.request_timeout,
    };
    let wall = Arc::new(move || clock.now());
    Ok(Arc::new(KubeLeadership::start(&api, kube, wall)))
}

/// How long a stopping instance waits for etcd to take its resignation; past it the lease
/// simply expires (one TTL) and a follower takes over then.
const RESIGN_TIMEOUT: Duration = Duration::from_secs(5);

/// Refuses every step unless the lease is still held under `token` (and before its local
/// deadline): what an acting run's executor checks right before each step.
pub struct LeaseGuard {
    pub leadership: Arc<dyn Leadership>,
    pub token: FencingToken,
}

impl ActGuard for LeaseGuard {
    fn may_act(&self) -> Result<(), String> {
        self.leadership
            .check(self.token)
            .map_err(|e| format!("lease: {e}"))
    }
}

/// A hot standby's guard: refuses everything. The standby runs with dry-run semantics and
/// starts no step at all; this is the second lock on the same door.
struct StandbyGuard;

impl ActGuard for StandbyGuard {
    fn may_act(&self) -> Result<(), String> {
        Err("hot standby: this instance does not hold the lease".to_string())
    }
}

/// What an elected `steward run` builds its runs from.
pub struct ElectedPorts {
    /// The acting runs' ports: the journal on disk, `actions.jsonl`, the policy log. Its `guard`
    /// is replaced by a [`LeaseGuard`] for each acting run.
    pub acting: Ports,
    /// Where a standby run's decision lines go: the terminal at most, never the actions file
    /// (a standby executes nothing, and the actions file lists what this instance did).
    pub standby_decisions: ActionLog,
}

/// `steward run` under the lease: standby until elected, acting while elected, until
/// `shutdown`. `instance` is this instance's id (the lease's value), for logs and `/status`.
/// Returns an error when a run cannot go on safely or the election task stopped.
pub async fn run_elected(
    config: &Config,
    leadership: Arc<dyn Leadership>,
    instance: &str,
    ports: ElectedPorts,
    clock: Clock,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let publisher = ports
        .acting
        .telemetry
        .clone()
        .map(|t| tokio::spawn(publish(leadership.current(), instance.to_string(), t)));
    let result = elect_and_run(config, &leadership, instance, &ports, clock, &mut shutdown).await;
    // Whatever ended the runs, hand the lease over now rather than one TTL later.
    match tokio::time::timeout(RESIGN_TIMEOUT, leadership.resign()).await {
        Ok(Ok(())) => info!(instance, "lease resigned"),
        Ok(Err(e)) => warn!(instance, error = %e, "cannot resign the lease; it expires by itself"),
        Err(_) => warn!(
            instance,
            "etcd did not take the resignation in time; the lease expires by itself"
        ),
    }
    if let Some(p) = publisher {
        p.abort();
    }
    result
}

async fn elect_and_run(
    config: &Config,
    leadership: &Arc<dyn Leadership>,
    instance: &str,
    ports: &ElectedPorts,
    clock: Clock,
    shutdown: &mut Shutdown,
) -> anyhow::Result<()> {
    loop {
        // Standby, campaigning.
        let (stop_standby, standby_shutdown) = shutdown_channel();
        // Boxed, so that it can be dropped once elected.
        let mut standby = Box::pin(run(
            config,
            standby_ports(ports),
            Options {
                dry_run: true,
                clock,
            },
            standby_shutdown,
        ));
        info!(
            instance,
            "hot standby: observing and deciding, executing nothing; campaigning for the lease"
        );
        let token = tokio::select! {
            elected = leadership.campaign() => elected,
            _ = shutdown.wait() => {
                stop_standby.trigger();
                return standby.await;
            }
            ended = &mut standby => {
                // A standby only ends by itself on an error (it journals nothing, so rarely).
                ended?;
                anyhow::bail!("the standby run stopped by itself");
            }
        };
        // A standby has nothing to finish (no step in flight, a memory journal): it is dropped
        // mid-tick rather than drained, so taking over does not wait for its observation.
        drop(standby);
        drop(stop_standby);
        let token = token?;
        if let Err(e) = leadership.check(token) {
            // Lost again before the acting run could start (cut off right after winning).
            warn!(instance, %token, error = %e, "elected, but the lease is already lost: not acting");
            continue;
        }
        info!(instance, %token, leader = instance, "became leader: acting");

        // Acting, while the lease is held under this token.
        let (stop_acting, acting_shutdown) = shutdown_channel();
        let acting = run(
            config,
            acting_ports(ports, leadership, token),
            Options {
                dry_run: false,
                clock,
            },
            acting_shutdown,
        );
        tokio::pin!(acting);
        tokio::select! {
            lost = until_lost(leadership.as_ref(), token) => {
                // The guard already refuses every new step; this stops the loops too.
                warn!(instance, %token, leader = ?holder(&lost), state = ?lost, "lost the lease: stopped acting");
                stop_acting.trigger();
                acting.await?;
                info!(instance, %token, "acting run stopped; back to standby");
            }
            _ = shutdown.wait() => {
                stop_acting.trigger();
                let ended = acting.await;
                info!(instance, %token, "acting run stopped for shutdown");
                return ended;
            }
            ended = &mut acting => {
                ended?;
                anyhow::bail!("the acting run stopped by itself");
            }
        }
    }
}

/// Resolves once the lease is no longer held under `token` (or its local deadline passed),
/// with the state then.
async fn until_lost(leadership: &dyn Leadership, token: FencingToken) -> LeaderState {
    let mut states = leadership.current();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let state = states.borrow_and_update().clone();
        if state.token() != Some(token) {
            return state;
        }
        if leadership.check(token).is_err() {
            // Past the local deadline while the state still says leader (its task is late).
            return LeaderState::Unknown;
        }
        tokio::select! {
            changed = states.changed() => {
                if changed.is_err() {
                    return LeaderState::Unknown;
                }
            }
            _ = recheck.tick() => {}
        }
    }
}

/// The standby's ports: the acting ports' observers, a memory journal, no actions file, no
/// policy log, and a guard that refuses everything.
fn standby_ports(ports: &ElectedPorts) -> Ports {
    let a = &ports.acting;
    Ports {
        platform: Arc::clone(&a.platform),
        patroni: Arc::clone(&a.patroni),
        metrics: a.metrics.clone(),
        balancers: a.balancers.clone(),
        guard: Some(Arc::new(StandbyGuard)),
        journal: Arc::new(MemoryJournal::default()),
        decisions: ports.standby_decisions.clone(),
        telemetry: a.telemetry.as_ref().map(|t| Telemetry {
            server: t.server.clone(),
            policy_log: None,
        }),
    }
}

fn acting_ports(
    ports: &ElectedPorts,
    leadership: &Arc<dyn Leadership>,
    token: FencingToken,
) -> Ports {
    let a = &ports.acting;
    Ports {
        platform: Arc::clone(&a.platform),
        patroni: Arc::clone(&a.patroni),
        metrics: a.metrics.clone(),
        balancers: a.balancers.clone(),
        guard: Some(Arc::new(LeaseGuard {
            leadership: Arc::clone(leadership),
            token,
        })),
        journal: Arc::clone(&a.journal),
        decisions: a.decisions.clone(),
        telemetry: a.telemetry.clone(),
    }
}

/// Who holds the lease in `state`, when known (`None` for "this instance" is never returned:
/// the caller knows its own name).
fn holder(state: &LeaderState) -> Option<&str> {
    match state {
        LeaderState::Follower { leader } => leader.as_deref(),
        _ => None,
    }
}

/// What `/status` shows of the lease.
pub fn lease_status(instance: &str, state: &LeaderState) -> crate::server::LeaseStatus {
    let (role, leader, token) = match state {
        LeaderState::Leader { token, .. } => ("leader", Some(instance.to_string()), Some(token.0)),
        LeaderState::Follower { leader } => ("follower", leader.clone(), None),
        LeaderState::Unknown => ("unknown", None, None),
    };
    crate::server::LeaseStatus {
        instance: instance.to_string(),
        role: role.to_string(),
        leader,
        token,
    }
}

/// Follows the lease state into `/status` and `/metrics`, logging each change, until aborted
/// or the election stops.
pub(super) async fn publish(
    mut states: tokio::sync::watch::Receiver<LeaderState>,
    instance: String,
    telemetry: Telemetry,
) {
    let mut was_leader = None;
    loop {
        let state = states.borrow_and_update().clone();
        let status = lease_status(&instance, &state);
        let is_leader = status.role == "leader";
        info!(
            instance = %instance,
            role = %status.role,
            leader = status.leader.as_deref(),
            token = status.token,
            "lease state"
        );
        if was_leader != Some(is_leader) {
            crate::telemetry::LeadershipChanged {
                cluster: telemetry.server.cluster(),
                leader: is_leader,
                holder: status.leader.as_deref(),
            }
            .emit(telemetry.server.metrics());
            was_leader = Some(is_leader);
        }
        telemetry
            .server
            .update_status(|s| {
                s.leadership = crate::server::Leadership {
                    is_leader,
                    holder: status.leader.clone(),
                };
                s.lease = Some(status);
            })
            .await;
        if states.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The outer loop's transitions, without etcd: a fake [`Leadership`] whose state the test
    //! sets, over the simulated cluster in paused time. What is checked is what happened on the
    //! platform and in the logs, never what the code meant to do.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use steward_adapters::lease::{LeaseError, NotLeader};
    use steward_model::ports::Platform;
    use tokio::sync::watch;

    use super::super::config::{FaultKind, RawFault, RawSimulated};
    use super::super::sim::SimWorld;
    use super::*;
    use crate::config::parse_raw;
    use steward_adapters::patroni::PatroniApi;

    /// The election as the test decides it.
    struct FakeLeadership {
        state: watch::Sender<LeaderState>,
        resigned: AtomicUsize,
    }

    impl FakeLeadership {
        fn new(state: LeaderState) -> Arc<Self> {
            Arc::new(FakeLeadership {
                state: watch::Sender::new(state),
                resigned: AtomicUsize::new(0),
            })
        }

        fn set(&self, state: LeaderState) {
            self.state.send_replace(state);
        }
    }

    fn leader(token: i64) -> LeaderState {
        LeaderState::Leader {
            token: FencingToken(token),
            since: tokio::time::Instant::now(),
        }
    }

    fn follower_of(name: &str) -> LeaderState {
        LeaderState::Follower {
            leader: Some(name.to_string()),
        }
    }

    #[async_trait]
    impl Leadership for FakeLeadership {
        async fn campaign(&self) -> Result<FencingToken, LeaseError> {
            let mut rx = self.state.subscribe();
            let state = rx
                .wait_for(|s| s.token().is_some())
                .await
                .map_err(|_| LeaseError::Stopped)?;
            state.token().ok_or(LeaseError::Stopped)
        }

        fn current(&self) -> watch::Receiver<LeaderState> {
            self.state.subscribe()
        }

        fn check(&self, token: FencingToken) -> Result<(), NotLeader> {
            if self.state.borrow().token() == Some(token) {
                Ok(())
            } else {
                Err(NotLeader::NotHolder { token })
            }
        }

        async fn resign(&self) -> Result<(), LeaseError> {
            self.resigned.fetch_add(1, Ordering::SeqCst);
            self.state.send_modify(|s| {
                if s.token().is_some() {
                    *s = LeaderState::Follower { leader: None };
                }
            });
            Ok(())
        }
    }

    use crate::run::tests::Buf;

    fn crash(at_secs: u64, member: &str) -> RawFault {
        RawFault {
            at: Duration::from_secs(at_secs),
            fault: FaultKind::Crash,
            member: Some(member.to_string()),
            value: None,
        }
    }

    fn minutes(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    /// The simulated cluster, the ports over it and what the runs leave behind.
    struct Bench {
        world: Arc<SimWorld>,
        config: Config,
        acting_log: Buf,
        standby_log: Buf,
        journal: MemoryJournal,
        server: crate::server::Shared,
    }

    impl Bench {
        async fn new(faults: Vec<RawFault>) -> Bench {
            let settings = RawSimulated {
                faults,
                ..RawSimulated::default()
            }
            .validate()
            .unwrap();
            let world = Arc::new(SimWorld::build("demo", &settings, None).await.unwrap());
            tokio::spawn(Arc::clone(&world).play());
            let config = parse_raw("[cluster]\nname = \"demo\"\nstate_dir = \"/nonexistent\"\n")
                .unwrap()
                .validate()
                .unwrap();
            let server_config = crate::server::RawServerConfig::default()
                .validate()
                .unwrap();
            let server = crate::server::Shared::new(
                "demo",
                &server_config,
                None,
                Arc::new(crate::telemetry::Metrics::new()),
                crate::telemetry::Loop::ALL.to_vec(),
            );
            Bench {
                world,
                config,
                acting_log: Buf::default(),
                standby_log: Buf::default(),
                journal: MemoryJournal::default(),
                server,
            }
        }

        fn ports(&self) -> ElectedPorts {
            ElectedPorts {
                acting: Ports {
                    platform: Arc::clone(&self.world.platform) as Arc<dyn Platform>,
                    patroni: Arc::clone(&self.world.patroni) as Arc<dyn PatroniApi>,
                    metrics: Vec::new(),
                    balancers: None,
                    guard: None,
                    journal: Arc::new(self.journal.clone()),
                    decisions: ActionLog::new(Some(Box::new(self.acting_log.clone()))),
                    telemetry: Some(Telemetry {
                        server: self.server.clone(),
                        policy_log: None,
                    }),
                },
                standby_decisions: ActionLog::new(Some(Box::new(self.standby_log.clone()))),
            }
        }

        /// Mutating platform calls after the bootstrap's creates.
        fn actions(&self) -> Vec<String> {
            let n = self.world.settings.members as usize;
            self.world.platform.history().into_iter().skip(n).collect()
        }

        async fn lease(&self) -> Option<crate::server::LeaseStatus> {
            self.server.status().await.lease
        }
    }

    fn commands(lines: &[serde_json::Value]) -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["kind"] == "command")
            .map(|l| l["what"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Standby decides but executes nothing; elected, the same instance repairs; deposed, it
    /// stops (a later crash is left alone); elected again, it repairs again; stopped, it resigns.
    #[tokio::test(start_paused = true)]
    async fn only_the_lease_holder_acts_and_a_lost_lease_stops_the_acting_run() {
        let bench = Bench::new(vec![crash(30, "pg-3"), crash(25 * 60, "pg-2")]).await;
        let election = FakeLeadership::new(follower_of("b"));
        let (trigger, shutdown) = shutdown_channel();
        let clock = Clock::starting_at(bench.world.clock.now());
        let leadership = Arc::clone(&election) as Arc<dyn Leadership>;
        let elected = run_elected(
            &bench.config,
            leadership,
            "a",
            bench.ports(),
            clock,
            shutdown,
        );

        let script = async {
            // Standby: the crash of pg-3 is seen and decided upon, not acted upon.
            tokio::time::sleep(minutes(5)).await;
            assert_eq!(bench.actions(), Vec::<String>::new());
            let would = commands(&bench.standby_log.lines());
            assert!(would.iter().any(|c| c == "drain pg-3"), "{would:?}");
            assert!(bench
                .standby_log
                .lines()
                .iter()
                .all(|l| l["dry_run"] == true));
            assert!(bench.acting_log.lines().is_empty());
            assert!(bench.journal.entries().is_empty());
            let status = bench.server.status().await;
            assert!(
                !status.members.is_empty(),
                "a standby publishes what it sees"
            );
            let lease = bench.lease().await.expect("lease status");
            assert_eq!(
                (lease.role.as_str(), lease.leader.as_deref()),
                ("follower", Some("b"))
            );
            assert!(!status.leadership.is_leader);

            // Elected: the acting run repairs pg-3 under token 7.
            election.set(leader(7));
            tokio::time::sleep(minutes(12)).await;
            let acted = bench.actions();
            assert!(acted.iter().any(|a| a == "fence pg-3"), "{acted:?}");
            assert!(acted.iter().any(|a| a == "create pg-3-r1"), "{acted:?}");
            let lease = bench.lease().await.unwrap();
            assert_eq!((lease.role.as_str(), lease.token), ("leader", Some(7)));
            assert!(bench
                .server
                .metrics()
                .encode()
                .lines()
                .any(|l| l == "steward_leader{cluster=\"demo\"} 1"));

            // Deposed: pg-2 crashes at 25 min and nobody here touches it.
            election.set(follower_of("b"));
            tokio::time::sleep(minutes(20)).await;
            let acted = bench.actions();
            assert!(
                !acted.iter().any(|a| a.contains("pg-2")),
                "a deposed instance acted: {acted:?}"
            );
            let would = commands(&bench.standby_log.lines());
            assert!(would.iter().any(|c| c == "drain pg-2"), "{would:?}");
            let lease = bench.lease().await.unwrap();
            assert_eq!((lease.role.as_str(), lease.token), ("follower", None));
            assert!(bench
                .server
                .metrics()
                .encode()
                .lines()
                .any(|l| l == "steward_leader{cluster=\"demo\"} 0"));

            // Elected again under a new token: it campaigned again, and now repairs pg-2.
            election.set(leader(9));
            tokio::time::sleep(minutes(12)).await;
            let acted = bench.actions();
            assert!(acted.iter().any(|a| a == "fence pg-2"), "{acted:?}");
            assert_eq!(election.resigned.load(Ordering::SeqCst), 0);
            trigger.trigger();
        };
        let (result, ()) = tokio::join!(elected, script);
        result.unwrap();
        // Stopped while leading: the lease is handed over at once.
        assert_eq!(election.resigned.load(Ordering::SeqCst), 1);
        assert_eq!(election.state.borrow().token(), None);
        // Every acting step was journaled and ended.
        let pending = super::super::journal::Pending::from_entries(&bench.journal.entries());
        assert!(pending.is_empty());
    }

    /// A `[fleet]` shares clusters on etcd leases only: given a Kubernetes Lease it stops at
    /// once, saying so, rather than waiting for an etcd that was never configured.
    #[tokio::test]
    async fn a_fleet_refuses_a_kubernetes_lease() {
        use steward_adapters::lease::{LeaseConfig, LeaseKind};
        let settings = LeaseConfig {
            kind: LeaseKind::Kubernetes,
            instance: Some("a".into()),
            scope: Some("orders".into()),
            ..LeaseConfig::default()
        }
        .validate_with_env(|_| None)
        .unwrap();
        let (_trigger, shutdown) = shutdown_channel();
        let e = connect_patiently(&settings, &shutdown).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("a [fleet] shares its clusters out on etcd leases only"),
            "{e:#}"
        );
    }

    /// A guard under an old token refuses, with the reason; under the current one it allows.
    #[tokio::test(start_paused = true)]
    async fn the_lease_guard_allows_only_the_current_token() {
        let election = FakeLeadership::new(leader(5));
        let guard = LeaseGuard {
            leadership: Arc::clone(&election) as Arc<dyn Leadership>,
            token: FencingToken(5),
        };
        assert_eq!(guard.may_act(), Ok(()));
        election.set(leader(6));
        let why = guard.may_act().unwrap_err();
        assert!(why.contains("token 5"), "{why}");
        election.set(LeaderState::Unknown);
        assert!(guard.may_act().is_err());
    }

    /// Shut down while standing by: the standby run stops and nothing was ever executed.
    #[tokio::test(start_paused = true)]
    async fn a_standby_stops_on_shutdown_without_acting() {
        let bench = Bench::new(vec![crash(30, "pg-3")]).await;
        let election = FakeLeadership::new(LeaderState::Unknown);
        let (trigger, shutdown) = shutdown_channel();
        let clock = Clock::starting_at(bench.world.clock.now());
        let leadership = Arc::clone(&election) as Arc<dyn Leadership>;
        let elected = run_elected(
            &bench.config,
            leadership,
            "a",
            bench.ports(),
            clock,
            shutdown,
        );
        let script = async {
            tokio::time::sleep(minutes(10)).await;
            let lease = bench.lease().await.unwrap();
            assert_eq!((lease.role.as_str(), lease.leader), ("unknown", None));
            trigger.trigger();
        };
        let (result, ()) = tokio::join!(elected, script);
        result.unwrap();
        assert_eq!(bench.actions(), Vec::<String>::new());
        assert!(bench.journal.entries().is_empty());
    }
}
