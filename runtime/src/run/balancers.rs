//! Keeping the HAProxy backends in step with the members (`[balancers]`).
//!
//! What it is: after each repair tick, [`BalancerSync::tick`] compares what the platform lists
//! with what every balancer's backends hold and brings the balancers in line, all of them at once
//! through the Runtime API ([`BalancerSet`]):
//! - a database member that is on the platform and not fenced, but missing from a backend, is
//!   **added in maintenance** and then **enabled after its check passes**
//!   ([`Change::EnableAfterCheck`]). A member that never passes one backend's check (a replica in
//!   the `primary` backend) is set ready once the wait is over: HAProxy forced its health down at
//!   the warm-up, so it takes traffic only after `rise` passing checks, i.e. once Patroni says it
//!   belongs there (after a failover);
//! - a server whose member this run saw on the platform and which is gone from it now (removed
//!   after a replacement or a scale-in) is **deleted** (maintenance, then `del server`); one that
//!   still has connections is tried again on a later tick.
//!
//! Draining before a fence and undraining are steps of the loops' plans ([`super::exec`]); this
//! sync never touches a server in drain, so it cannot undo them.
//!
//! What it is not: a judge of health (Patroni's `OPTIONS /primary|/replica` checks in HAProxy
//! route the traffic), nor an owner of servers it did not see come and go: a server of a name the
//! platform never listed in this run is left alone (an operator's, or a previous run's), unless
//! an operation this run resumed from the journal concerned it ([`BalancerSync::know`]).
//!
//! The sync runs as one background task at a time; a tick while it still works is skipped, so
//! a slow check never holds up the loops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use steward_adapters::haproxy::{
    AdminState, Change, CheckWait, HaproxyError, HealthCheck, ServerSpec, ServerState, Status,
};
use steward_model::observation::PlatformState;
use steward_model::ports::platform::unfinished_replacements;
use steward_model::ports::PlatformMember;
use steward_model::Role;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::actions::{ActionLog, Kind, Line};
use super::config::BalancersConfig;
use super::exec::Balancers;
use super::journal::LoopName;
use super::Clock;

/// What one member needs from the balancers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Add it (when `add`: it is missing from some backend) and enable it after its check.
    Join {
        member: String,
        addr: SocketAddr,
        add: bool,
    },
    /// Delete it from every backend: its member is gone.
    Leave { member: String },
}

/// What the balancers hold, folded over every backend and every balancer that answered.
#[derive(Debug, Default)]
pub struct Held {
    /// Every server name with its state in each (backend, balancer) that has it.
    pub servers: BTreeMap<String, Vec<ServerState>>,
    /// How many (backend, balancer) listings answered.
    pub listings: usize,
}

impl Held {
    pub fn add_listing(&mut self, servers: Vec<ServerState>) {
        self.listings += 1;
        for s in servers {
            self.servers.entry(s.name.clone()).or_default().push(s);
        }
    }
}

/// The jobs that bring the balancers in line with `listed`. `known`: members listed earlier in
/// this run (only those may leave); `pending`: members added whose enabling has not finished;
/// `left_over`: members a previous run was adding, whose servers may be left in maintenance or
/// warming up in drain ([`BalancerSync::enable_left_over`]).
///
/// Pure: the tests below drive it with plain values.
pub fn plan(
    listed: &[PlatformMember],
    held: &Held,
    known: &BTreeSet<String>,
    pending: &BTreeSet<String>,
    left_over: &BTreeSet<String>,
    port: u16,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for m in listed {
        if m.role != Role::Database || m.state == PlatformState::Fenced {
            continue;
        }
        let Ok(ip) = m.address.parse::<IpAddr>() else {
            // Dynamic servers take an IP only; without one there is nothing to point at.
            continue;
        };
        let states = held.servers.get(&m.name).map(Vec::as_slice).unwrap_or(&[]);
        let missing = states.len() < held.listings;
        let in_maintenance = states.iter().any(|s| s.status() == Status::Maint);
        // A previous run's member left warming up in drain (it died in the middle of the
        // enabling); only those: a drain of this run is a plan's, never undone here.
        let left_warming = left_over.contains(&m.name)
            && states
                .iter()
                .any(|s| matches!(s.status(), Status::Maint | Status::Drain));
        if missing || (pending.contains(&m.name) && in_maintenance) || left_warming {
            jobs.push(Job::Join {
                member: m.name.clone(),
                addr: SocketAddr::new(ip, port),
                add: missing,
            });
        }
    }
    let on_platform: BTreeSet<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    for name in held.servers.keys() {
        if known.contains(name) && !on_platform.contains(name.as_str()) {
            jobs.push(Job::Leave {
                member: name.clone(),
            });
        }
    }
    jobs
}

/// The `[balancers]` section turned into the set of balancers and the backends a member is in.
pub fn build(config: &BalancersConfig) -> Balancers {
    Balancers::new(
        config.runtime_apis.clone(),
        config.member_api_port,
        config.backends.clone(),
    )
}

/// The members the sync remembers across ticks.
#[derive(Debug, Default)]
struct Memory {
    known: BTreeSet<String>,
    pending: BTreeSet<String>,
    /// Members a previous run was adding, until their servers are enabled.
    left_over: BTreeSet<String>,
    /// Whether a pass has run: the first one also takes the replacements a dead run left
    /// half-done as left over (their labels say so, whatever the journal knows).
    passed: bool,
}

struct Inner {
    balancers: Balancers,
    port: u16,
    check: HealthCheck,
    wait: CheckWait,
    memory: Mutex<Memory>,
    log: ActionLog,
    clock: Clock,
    cluster: String,
}

/// Drives the balancers towards the members, one background pass at a time.
pub struct BalancerSync {
    inner: Arc<Inner>,
    running: Option<JoinHandle<()>>,
}

impl BalancerSync {
    /// Members an operation of a previous run concerned (a resumed repair's old member and
    /// replacement): their servers are ours to delete when the member is gone, though this run
    /// never listed them (it may have started after the member was removed).
    pub fn know(&self, members: impl IntoIterator<Item = String>) {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .known
            .extend(members);
    }

    /// Members a previous run was adding (a resumed repair's replacement, a resumed scale-out's
    /// new member): their servers, if left in maintenance or warming up in drain, are enabled
    /// after their check, as this run's own would be.
    pub fn enable_left_over(&self, members: impl IntoIterator<Item = String>) {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .left_over
            .extend(members);
    }

    pub fn new(
        balancers: Balancers,
        config: &BalancersConfig,
        log: ActionLog,
        clock: Clock,
        cluster: String,
    ) -> Self {
        let check = HealthCheck {
            port: Some(config.check_port),
            ..HealthCheck::patroni()
        };
        BalancerSync {
            inner: Arc::new(Inner {
                balancers,
                port: config.port,
                check,
                wait: CheckWait {
                    timeout: config.enable_timeout,
                    ..CheckWait::default()
                },
                memory: Mutex::new(Memory::default()),
                log,
                clock,
                cluster,
            }),
            running: None,
        }
    }

    /// Starts a pass over `listed` unless one is still running.
    pub fn tick(&mut self, listed: &[PlatformMember]) {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let listed = listed.to_vec();
        let span = tracing::info_span!("balancers", cluster = %self.inner.cluster);
        self.running = Some(tokio::spawn(
            async move { inner.pass(&listed).await }.instrument(span),
        ));
    }

    /// Waits for the pass in flight (at shutdown: its changes are idempotent, but a finished
    /// pass leaves no server half-way in a warm-up it could have finished).
    pub async fn finish(&mut self) {
        if let Some(h) = self.running.take() {
            if let Err(e) = h.await {
                warn!(error = %e, "the balancer sync task failed");
            }
        }
    }
}

impl Inner {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn pass(&self, listed: &[PlatformMember]) {
        let (joined, left) = self.balancers.follow(listed);
        for balancer in &joined {
            info!(%balancer, "a balancer member joined the balancers kept in step");
        }
        for balancer in &left {
            info!(%balancer, "a balancer member left the balancers kept in step (not running)");
        }
        let set = self.balancers.set();
        let mut held = Held::default();
        for backend in &self.balancers.backends {
            for (balancer, answer) in set.servers(backend).await {
                match answer {
                    Ok(servers) => held.add_listing(servers),
                    // An unreachable balancer is judged again next tick; the others go on.
                    Err(e) => {
                        warn!(%balancer, backend, class = %e.class(), error = %e, "cannot list the backend's servers")
                    }
                }
            }
        }
        let jobs = {
            let mut memory = self.memory();
            memory.known.extend(listed.iter().map(|m| m.name.clone()));
            if !std::mem::replace(&mut memory.passed, true) {
                // A state folder lost with the dead run: the journal could not say whom it was
                // adding, the platform's labels can (the repairer finishes the same repairs).
                let unfinished = unfinished_replacements(&self.cluster, listed);
                memory.left_over.extend(unfinished.into_keys());
            }
            let jobs = plan(
                listed,
                &held,
                &memory.known,
                &memory.pending,
                &memory.left_over,
                self.port,
            );
            // A pending member that is no longer in maintenance anywhere has been enabled.
            let joining: BTreeSet<&str> = jobs
                .iter()
                .filter_map(|j| match j {
                    Job::Join { member, .. } => Some(member.as_str()),
                    Job::Leave { .. } => None,
                })
                .collect();
            memory.pending.retain(|m| joining.contains(m.as_str()));
            // A previous run's member is looked at once: enabled now, or it needs nothing.
            memory.left_over.retain(|m| joining.contains(m.as_str()));
            jobs
        };
        let results = futures::future::join_all(jobs.iter().map(|job| self.carry_out(job))).await;
        let mut memory = self.memory();
        for (job, result) in jobs.iter().zip(results) {
            match (job, result) {
                (Job::Join { member, .. }, Ok(())) => {
                    memory.pending.remove(member);
                    memory.left_over.remove(member);
                }
                (Job::Join { member, .. }, Err(_)) => {
                    memory.pending.insert(member.clone());
                }
                (Job::Leave { member }, Ok(())) => {
                    memory.known.remove(member);
                }
                (Job::Leave { .. }, Err(_)) => {}
            }
        }
    }

    fn line(&self, what: String, reason: String) {
        self.log.write(&Line {
            at: self.clock.now(),
            by: LoopName::Repair,
            kind: Kind::Command,
            op: "balancers".into(),
            what,
            reason,
            dry_run: false,
        });
    }

    async fn carry_out(&self, job: &Job) -> Result<(), String> {
        match job {
            Job::Join { member, addr, add } => {
                if *add {
                    self.line(
                        format!(
                            "add {member} ({addr}) to {} in maintenance",
                            self.backends()
                        ),
                        "a member on the platform that the balancers do not list".into(),
                    );
                }
                if *add {
                    for backend in &self.balancers.backends {
                        let change = Change::Add {
                            backend: backend.clone(),
                            server: ServerSpec {
                                name: member.clone(),
                                addr: *addr,
                                check: Some(self.check.clone()),
                            },
                        };
                        self.apply(&change).await?;
                    }
                }
                // Every backend at once: the one whose check passes (replicas, for a replica)
                // takes traffic as soon as it does, not after the other's wait.
                let enabled = futures::future::join_all(
                    self.balancers
                        .backends
                        .iter()
                        .map(|backend| self.enable(backend, member)),
                )
                .await;
                enabled.into_iter().collect::<Result<Vec<()>, String>>()?;
                info!(member, "in every balancer, traffic as its checks say");
                self.line(
                    format!("enable {member} in {}", self.backends()),
                    "its checks run; HAProxy routes to it only while Patroni's check passes".into(),
                );
                Ok(())
            }
            Job::Leave { member } => {
                self.line(
                    format!("delete {member} from {}", self.backends()),
                    "its member is gone from the platform".into(),
                );
                for backend in &self.balancers.backends {
                    let change = Change::Delete {
                        backend: backend.clone(),
                        server: member.clone(),
                    };
                    self.apply(&change).await?;
                }
                Ok(())
            }
        }
    }

    /// Enable after a passing check; a check that does not pass within the wait (a replica in
    /// the primary backend) hands the server to HAProxy's own rise/fall: ready, but down until
    /// its check passes `rise` times.
    async fn enable(&self, backend: &str, member: &str) -> Result<(), String> {
        let change = Change::EnableAfterCheck {
            backend: backend.to_string(),
            server: member.to_string(),
            wait: self.wait,
        };
        let report = self.balancers.set().apply(&change).await;
        if report.all_applied() {
            return Ok(());
        }
        let only_check_failed = report
            .failed
            .iter()
            .all(|(_, e)| matches!(e, HaproxyError::CheckNotPassed { .. }));
        if !only_check_failed {
            return Err(describe(&report.failed));
        }
        let ready = Change::SetState {
            backend: backend.to_string(),
            server: member.to_string(),
            state: AdminState::Ready,
        };
        self.apply(&ready).await
    }

    async fn apply(&self, change: &Change) -> Result<(), String> {
        let report = self.balancers.set().apply(change).await;
        if report.all_applied() {
            Ok(())
        } else {
            Err(describe(&report.failed))
        }
    }

    fn backends(&self) -> String {
        self.balancers.backends.join(", ")
    }
}

fn describe(failed: &[(String, HaproxyError)]) -> String {
    failed
        .iter()
        .map(|(b, e)| format!("{b}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_adapters::haproxy::{CheckResult, Operational};
    use steward_model::Size;

    fn member(name: &str, address: &str, state: PlatformState) -> PlatformMember {
        PlatformMember {
            name: name.into(),
            cluster: "c".into(),
            role: Role::Database,
            size: Size {
                cpus: 1.0,
                memory_bytes: 1 << 30,
                disk_bytes: 1 << 30,
            },
            state,
            address: address.into(),
            host: "h".into(),
            labels: Default::default(),
            created_at: None,
            restart_count: 0,
        }
    }

    /// Issue 15: with `member_api_port`, the balancers kept in step are the configured ones
    /// plus the platform's running balancer members; one that dies leaves, its replacement
    /// joins, database members never do.
    #[test]
    fn the_set_follows_the_running_balancer_members() {
        use steward_adapters::haproxy::Endpoint;
        let fixed = vec![(
            "127.0.0.21:9999".to_string(),
            Endpoint::Tcp("127.0.0.21:9999".parse().unwrap()),
        )];
        let balancers = Balancers::new(fixed.clone(), Some(9999), vec!["primary".into()]);
        let lb = |name: &str, address: &str, state| PlatformMember {
            role: Role::Balancer,
            ..member(name, address, state)
        };
        let names = |b: &Balancers| b.set().names().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(names(&balancers), ["127.0.0.21:9999"]);
        let listed = vec![
            member("pg-1", "127.0.0.11", PlatformState::Running),
            lb("lb-1", "127.0.0.22", PlatformState::Running),
            lb("lb-2", "127.0.0.23", PlatformState::Exited),
            lb("lb-3", "not an address", PlatformState::Running),
        ];
        assert_eq!(
            balancers.follow(&listed),
            (vec!["lb-1".to_string()], vec![])
        );
        assert_eq!(names(&balancers), ["127.0.0.21:9999", "lb-1"]);
        assert_eq!(
            balancers.follow(&listed),
            (vec![], vec![]),
            "nothing changed"
        );
        // lb-1 dies, lb-4 is made in its place.
        let listed = vec![
            lb("lb-1", "127.0.0.22", PlatformState::Exited),
            lb("lb-4", "127.0.0.24", PlatformState::Running),
        ];
        assert_eq!(
            balancers.follow(&listed),
            (vec!["lb-4".to_string()], vec!["lb-1".to_string()])
        );
        assert_eq!(names(&balancers), ["127.0.0.21:9999", "lb-4"]);
        // Without member_api_port the set is what the config says, whatever is listed.
        let fixed_only = Balancers::new(fixed, None, vec!["primary".into()]);
        assert_eq!(fixed_only.follow(&listed), (vec![], vec![]));
        assert_eq!(names(&fixed_only), ["127.0.0.21:9999"]);
    }

    fn server(name: &str, maintenance: bool, drain: bool) -> ServerState {
        ServerState {
            backend: "replicas".into(),
            name: name.into(),
            addr: "127.0.0.11".into(),
            port: 5432,
            operational: Operational::Up,
            maintenance,
            drain,
            weight: 1,
            check_configured: true,
            check_enabled: true,
            check_result: CheckResult::Passed,
            check_health: 3,
        }
    }

    /// Two balancers answered for one backend, both holding `servers`.
    fn held(servers: &[ServerState]) -> Held {
        let mut h = Held::default();
        h.add_listing(servers.to_vec());
        h.add_listing(servers.to_vec());
        h
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_member_is_added_and_one_held_everywhere_is_left_alone() {
        let listed = [
            member("m1", "127.0.0.11", PlatformState::Running),
            member("m4", "127.0.0.14", PlatformState::Creating),
        ];
        let jobs = plan(
            &listed,
            &held(&[server("m1", false, false)]),
            &names(&["m1"]),
            &names(&[]),
            &names(&[]),
            5432,
        );
        assert_eq!(
            jobs,
            vec![Job::Join {
                member: "m4".into(),
                addr: "127.0.0.14:5432".parse().unwrap(),
                add: true
            }]
        );
    }

    #[test]
    fn missing_from_one_balancer_only_is_added_again() {
        let mut h = Held::default();
        h.add_listing(vec![server("m1", false, false)]);
        h.add_listing(vec![]);
        let listed = [member("m1", "127.0.0.11", PlatformState::Running)];
        let jobs = plan(&listed, &h, &names(&["m1"]), &names(&[]), &names(&[]), 5432);
        assert!(
            matches!(&jobs[..], [Job::Join { add: true, .. }]),
            "{jobs:?}"
        );
    }

    #[test]
    fn a_drained_member_is_never_touched_and_a_fenced_one_never_added() {
        let listed = [
            member("m1", "127.0.0.11", PlatformState::Running),
            member("m2", "127.0.0.12", PlatformState::Fenced),
        ];
        // m1 drained by a plan (pending or not), m2 fenced and absent.
        let jobs = plan(
            &listed,
            &held(&[server("m1", false, true)]),
            &names(&["m1", "m2"]),
            &names(&["m1"]),
            &names(&[]),
            5432,
        );
        assert_eq!(jobs, vec![]);
    }

    #[test]
    fn our_member_left_in_maintenance_is_enabled_again_but_an_operators_is_not() {
        let listed = [
            member("m1", "127.0.0.11", PlatformState::Running),
            member("m2", "127.0.0.12", PlatformState::Running),
        ];
        let h = held(&[server("m1", true, false), server("m2", true, false)]);
        let jobs = plan(
            &listed,
            &h,
            &names(&["m1", "m2"]),
            &names(&["m1"]),
            &names(&[]),
            5432,
        );
        assert_eq!(
            jobs,
            vec![Job::Join {
                member: "m1".into(),
                addr: "127.0.0.11:5432".parse().unwrap(),
                add: false
            }]
        );
    }

    /// A run that died while enabling a new member's server left it warming up in drain; the
    /// next run, told the member was being added, enables it. A drained server of a member it
    /// was not adding is left alone (a repair's drain before its fence, an operator's).
    #[test]
    fn a_server_left_warming_up_by_a_previous_run_is_enabled() {
        let listed = [
            member("m1", "127.0.0.11", PlatformState::Running),
            member("m2", "127.0.0.12", PlatformState::Running),
        ];
        let h = held(&[server("m1", false, true), server("m2", false, true)]);
        let jobs = plan(&listed, &h, &names(&[]), &names(&[]), &names(&["m1"]), 5432);
        assert_eq!(
            jobs,
            vec![Job::Join {
                member: "m1".into(),
                addr: "127.0.0.11:5432".parse().unwrap(),
                add: false
            }]
        );
    }

    #[test]
    fn only_servers_of_members_seen_in_this_run_leave() {
        let listed = [member("m1", "127.0.0.11", PlatformState::Running)];
        let h = held(&[
            server("m1", false, false),
            server("m2", false, false),
            server("theirs", false, false),
        ]);
        let jobs = plan(
            &listed,
            &h,
            &names(&["m1", "m2"]),
            &names(&[]),
            &names(&[]),
            5432,
        );
        assert_eq!(
            jobs,
            vec![Job::Leave {
                member: "m2".into()
            }]
        );
    }

    #[test]
    fn a_member_without_an_ip_is_not_pointed_at() {
        let listed = [member("m1", "db-1.example", PlatformState::Running)];
        let jobs = plan(
            &listed,
            &held(&[]),
            &names(&[]),
            &names(&[]),
            &names(&[]),
            5432,
        );
        assert_eq!(jobs, vec![]);
    }
}
