//! A simulated Patroni cluster over the [`SimulatedPlatform`]: a fake [`PatroniApi`] whose
//! `/cluster` follows the simulated members.
//!
//! What it is: the Patroni half of the simulation, for the loop tests and the no-Docker demo.
//! The rules, each a simplified but faithful copy of what Patroni does (ENVIRONMENT.md):
//! - a running database member is a streaming replica unless it holds the leader lock; a newly
//!   created member streams only [`SimClusterConfig::join_delay`] after its creation (the clone);
//! - when the leader stops running (crashed, hung, fenced), its key stays in the DCS for
//!   [`SimClusterConfig::ttl`]; then the healthiest replica (running, joined, least lag, then
//!   name) is promoted on a new timeline;
//! - a former leader that was frozen (hung) and comes back still claims to lead, on its old
//!   timeline, until it is fenced: without a watchdog nothing stops it. This is the zombie of
//!   DESIGN.md promise 10;
//! - switchover moves the lock to a healthy candidate (412 otherwise); `PATCH /config` merges;
//! - replication lag is whatever the test injects ([`SimCluster::set_lag`]), zero otherwise.
//!
//! Resource figures (CPU, memory, disk) come from the platform's load model through
//! [`steward_model::ports::Platform::usage`], so no Prometheus is needed either.
//!
//! What it is not: PostgreSQL. There is no WAL, no data and no network: the API URLs it
//! publishes (`http://<address>:8008`) are names, never dialled. State changes are computed
//! when the fake is read, from the [`SimClock`](crate::platform::simulated::SimClock) the
//! platform reads, so a run under paused tokio time is deterministic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use steward_model::observation::{PatroniRole, PlatformState};
use steward_model::ports::{Platform, PlatformMember};
use steward_model::{Role, Timestamp};

use crate::patroni::{
    ActionOutcome, ClusterMember, ClusterView, MemberStatus, PatroniApi, PatroniError,
    RestartConditions, Switchover, WalPositions, Walsender,
};
use crate::platform::simulated::SimulatedPlatform;

/// Patroni's default `ttl`: the leader key outlives a dead leader by this long.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// A 1 GiB member streams in about 11 s here (ENVIRONMENT.md); 20 s leaves room.
pub const DEFAULT_JOIN_DELAY: Duration = Duration::from_secs(20);
/// The port every simulated REST API claims (Patroni's default).
const API_PORT: u16 = 8008;

/// How the simulated Patroni behaves.
#[derive(Clone, Debug)]
pub struct SimClusterConfig {
    /// How long the leader key survives a leader that stopped running.
    pub ttl: Duration,
    /// How long after its creation a member starts streaming.
    pub join_delay: Duration,
}

impl Default for SimClusterConfig {
    fn default() -> Self {
        SimClusterConfig {
            ttl: DEFAULT_TTL,
            join_delay: DEFAULT_JOIN_DELAY,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    leader: Option<String>,
    timeline: u64,
    /// When the leader was first seen not running.
    leader_down_since: Option<Timestamp>,
    /// Former leaders that still believe they lead, with the timeline they lead on.
    zombies: BTreeMap<String, u64>,
    lag: BTreeMap<String, u64>,
    dynamic_config: serde_json::Value,
    /// Leader changes and actions, oldest first (`promote pg-2 (timeline 2)`, ...).
    history: Vec<String>,
}

/// The fake Patroni of one simulated cluster.
#[derive(Debug)]
pub struct SimCluster {
    platform: Arc<SimulatedPlatform>,
    config: SimClusterConfig,
    scope: String,
    state: Mutex<State>,
}

fn status_error(method: &'static str, url: &str, status: u16, body: &str) -> PatroniError {
    PatroniError::Status {
        method,
        url: url.to_string(),
        status,
        body: body.to_string(),
    }
}

fn api_base(m: &PlatformMember) -> String {
    format!("http://{}:{API_PORT}", m.address)
}

impl SimCluster {
    pub fn new(
        platform: Arc<SimulatedPlatform>,
        scope: impl Into<String>,
        config: SimClusterConfig,
    ) -> Self {
        SimCluster {
            platform,
            config,
            scope: scope.into(),
            state: Mutex::new(State {
                dynamic_config: serde_json::json!({}),
                ..State::default()
            }),
        }
    }

    pub fn platform(&self) -> &Arc<SimulatedPlatform> {
        &self.platform
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `member` the leader (at bootstrap; later leaders come from failover/switchover).
    pub fn bootstrap(&self, member: &str) {
        let mut s = self.lock();
        s.leader = Some(member.to_string());
        s.timeline = s.timeline.max(1);
        s.history.push(format!("bootstrap {member} (timeline 1)"));
    }

    /// Sets a replica's lag behind the leader, bytes (0 clears it).
    pub fn set_lag(&self, member: &str, bytes: u64) {
        self.lock().lag.insert(member.to_string(), bytes);
    }

    /// The member holding the leader lock, as last computed.
    pub fn leader(&self) -> Option<String> {
        self.lock().leader.clone()
    }

    pub fn timeline(&self) -> u64 {
        self.lock().timeline
    }

    /// Leader changes and actions so far, oldest first.
    pub fn history(&self) -> Vec<String> {
        self.lock().history.clone()
    }

    /// The dynamic configuration as patched so far.
    pub fn dynamic_config(&self) -> serde_json::Value {
        self.lock().dynamic_config.clone()
    }

    fn joined(&self, m: &PlatformMember, now: Timestamp) -> bool {
        m.state == PlatformState::Running
            && m.created_at
                .is_none_or(|c| now.since(c) >= self.config.join_delay)
    }

    /// Reads the platform and moves the cluster's state to `now`: bootstrap, failover after the
    /// ttl, zombies forgotten once fenced or gone.
    async fn sync(&self) -> Result<(Vec<PlatformMember>, Timestamp), PatroniError> {
        let members: Vec<PlatformMember> = self
            .platform
            .list()
            .await
            .map_err(|e| status_error("GET", "sim:///cluster", 503, &e.to_string()))?
            .into_iter()
            .filter(|m| m.role == Role::Database)
            .collect();
        let now = self.platform.clock().now();
        let mut s = self.lock();
        let find = |name: &str| members.iter().find(|m| m.name == name);
        if s.leader.is_none() {
            if let Some(first) = members.iter().find(|m| m.state == PlatformState::Running) {
                s.leader = Some(first.name.clone());
                s.timeline = s.timeline.max(1);
                s.history
                    .push(format!("bootstrap {} (timeline 1)", first.name));
            }
        }
        if let Some(leader) = s.leader.clone() {
            let running = find(&leader).is_some_and(|m| m.state == PlatformState::Running);
            if running {
                s.leader_down_since = None;
            } else {
                let since = *s.leader_down_since.get_or_insert(now);
                if now.since(since) >= self.config.ttl {
                    let candidate = members
                        .iter()
                        .filter(|m| m.name != leader && !s.zombies.contains_key(&m.name))
                        .filter(|m| self.joined(m, now))
                        .min_by(|a, b| {
                            let lag = |m: &PlatformMember| s.lag.get(&m.name).copied().unwrap_or(0);
                            lag(a).cmp(&lag(b)).then_with(|| a.name.cmp(&b.name))
                        })
                        .map(|m| m.name.clone());
                    if let Some(candidate) = candidate {
                        if find(&leader).is_some_and(|m| m.state != PlatformState::Fenced) {
                            let timeline = s.timeline;
                            s.zombies.insert(leader.clone(), timeline);
                        }
                        s.timeline += 1;
                        let line =
                            format!("failover {leader} -> {candidate} (timeline {})", s.timeline);
                        s.history.push(line);
                        s.leader = Some(candidate);
                        s.leader_down_since = None;
                    }
                }
            }
        }
        s.zombies
            .retain(|name, _| find(name).is_some_and(|m| m.state != PlatformState::Fenced));
        Ok((members, now))
    }

    /// What `/cluster` shows for one member, if it shows it at all.
    fn view_of(&self, s: &State, m: &PlatformMember, now: Timestamp) -> Option<ClusterMember> {
        let base = |role, state: &str, timeline, lag| ClusterMember {
            name: m.name.clone(),
            role,
            state: state.to_string(),
            api_url: Some(format!("{}/patroni", api_base(m))),
            host: Some(m.address.clone()),
            port: Some(5432),
            timeline,
            lag_bytes: lag,
            pending_restart: false,
        };
        if m.state == PlatformState::Fenced {
            // Stopped by us: its key is deleted when Patroni stops.
            return None;
        }
        if s.leader.as_deref() == Some(m.name.as_str()) {
            // A leader that stopped keeps its key (and so its role here) until the ttl.
            return Some(base(PatroniRole::Leader, "running", Some(s.timeline), None));
        }
        if let Some(&tl) = s.zombies.get(&m.name) {
            // Frozen: its key expired. Thawed: it writes its own key again, claiming to lead.
            return (m.state == PlatformState::Running)
                .then(|| base(PatroniRole::Leader, "running", Some(tl), None));
        }
        match m.state {
            PlatformState::Running if self.joined(m, now) => {
                let lag = s.lag.get(&m.name).copied().unwrap_or(0);
                Some(base(
                    PatroniRole::Replica,
                    "streaming",
                    Some(s.timeline),
                    Some(lag),
                ))
            }
            PlatformState::Running => {
                Some(base(PatroniRole::Replica, "creating_replica", None, None))
            }
            _ => Some(base(PatroniRole::Replica, "stopped", None, None)),
        }
    }

    fn build_view(&self, members: &[PlatformMember], now: Timestamp) -> ClusterView {
        let s = self.lock();
        ClusterView {
            scope: Some(self.scope.clone()),
            paused: false,
            members: members
                .iter()
                .filter_map(|m| self.view_of(&s, m, now))
                .collect(),
        }
    }

    fn best_candidate(
        &self,
        s: &State,
        members: &[PlatformMember],
        now: Timestamp,
    ) -> Option<String> {
        members
            .iter()
            .filter(|m| s.leader.as_deref() != Some(m.name.as_str()))
            .filter(|m| !s.zombies.contains_key(&m.name) && self.joined(m, now))
            .min_by_key(|m| (s.lag.get(&m.name).copied().unwrap_or(0), m.name.clone()))
            .map(|m| m.name.clone())
    }
}

fn merge(into: &mut serde_json::Value, patch: &serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

#[async_trait]
impl PatroniApi for SimCluster {
    async fn cluster(&self) -> Result<ClusterView, PatroniError> {
        let (members, now) = self.sync().await?;
        Ok(self.build_view(&members, now))
    }

    async fn member_status(&self, api_base_url: &str) -> Result<MemberStatus, PatroniError> {
        let (members, now) = self.sync().await?;
        let url = format!("{api_base_url}/patroni");
        let m = members
            .iter()
            .find(|m| api_base(m) == api_base_url.trim_end_matches('/'))
            .ok_or_else(|| status_error("GET", &url, 404, "no such member"))?;
        if m.state != PlatformState::Running {
            // Hung, crashed or fenced: the REST API does not answer.
            return Err(status_error("GET", &url, 503, "member not answering"));
        }
        let s = self.lock();
        let leads = s.leader.as_deref() == Some(m.name.as_str());
        let zombie = s.zombies.get(&m.name).copied();
        let joined = self.joined(m, now);
        let replication = if leads {
            members
                .iter()
                .filter(|r| r.name != m.name && !s.zombies.contains_key(&r.name))
                .filter(|r| self.joined(r, now))
                .map(|r| Walsender {
                    application_name: r.name.clone(),
                    client_addr: Some(r.address.clone()),
                    state: "streaming".into(),
                    sync_state: Some("async".into()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let (role, timeline) = match (leads, zombie) {
            (true, _) => (PatroniRole::Leader, Some(s.timeline)),
            (false, Some(tl)) => (PatroniRole::Leader, Some(tl)),
            (false, None) => (PatroniRole::Replica, joined.then_some(s.timeline)),
        };
        Ok(MemberStatus {
            name: Some(m.name.clone()),
            scope: Some(self.scope.clone()),
            patroni_version: Some("4.1.5".into()),
            role,
            state: if joined || leads {
                "running"
            } else {
                "creating replica"
            }
            .into(),
            timeline,
            server_version: Some(150_000),
            replication,
            replication_state: (!leads && zombie.is_none() && joined).then(|| "streaming".into()),
            wal: WalPositions::default(),
            pending_restart: false,
            paused: false,
        })
    }

    async fn switchover(&self, request: &Switchover) -> Result<ActionOutcome, PatroniError> {
        let (members, now) = self.sync().await?;
        let url = "sim:///switchover";
        let mut s = self.lock();
        if s.leader.as_deref() != Some(request.leader.as_str()) {
            return Err(status_error("POST", url, 412, "leader name does not match"));
        }
        let candidate = match &request.candidate {
            Some(c) => members
                .iter()
                .find(|m| m.name == *c && !s.zombies.contains_key(c) && self.joined(m, now))
                .map(|m| m.name.clone()),
            None => self.best_candidate(&s, &members, now),
        }
        .ok_or_else(|| status_error("POST", url, 412, "no healthy candidate"))?;
        s.timeline += 1;
        let line = format!(
            "switchover {} -> {candidate} (timeline {})",
            request.leader, s.timeline
        );
        s.history.push(line);
        s.leader = Some(candidate.clone());
        Ok(ActionOutcome {
            status: 200,
            message: format!("Successfully switched over to \"{candidate}\""),
        })
    }

    async fn failover(&self, candidate: &str) -> Result<ActionOutcome, PatroniError> {
        let (members, now) = self.sync().await?;
        let mut s = self.lock();
        if !members
            .iter()
            .any(|m| m.name == candidate && self.joined(m, now))
        {
            return Err(status_error(
                "POST",
                "sim:///failover",
                412,
                "candidate not healthy",
            ));
        }
        s.timeline += 1;
        let line = format!("failover to {candidate} (timeline {})", s.timeline);
        s.history.push(line);
        s.leader = Some(candidate.to_string());
        Ok(ActionOutcome {
            status: 200,
            message: format!("Successfully failed over to \"{candidate}\""),
        })
    }

    async fn restart(
        &self,
        api_base_url: &str,
        _conditions: &RestartConditions,
    ) -> Result<ActionOutcome, PatroniError> {
        self.lock().history.push(format!("restart {api_base_url}"));
        Ok(ActionOutcome {
            status: 200,
            message: "restarted successfully".into(),
        })
    }

    async fn reinitialize(
        &self,
        api_base_url: &str,
        _force: bool,
    ) -> Result<ActionOutcome, PatroniError> {
        self.lock()
            .history
            .push(format!("reinitialize {api_base_url}"));
        Ok(ActionOutcome {
            status: 200,
            message: "reinitialize started".into(),
        })
    }

    async fn reload(&self, _api_base_url: &str) -> Result<ActionOutcome, PatroniError> {
        Ok(ActionOutcome {
            status: 202,
            message: "reload scheduled".into(),
        })
    }

    async fn config(&self) -> Result<serde_json::Value, PatroniError> {
        Ok(self.lock().dynamic_config.clone())
    }

    async fn patch_config(
        &self,
        patch: &serde_json::Value,
    ) -> Result<serde_json::Value, PatroniError> {
        let mut s = self.lock();
        merge(&mut s.dynamic_config, patch);
        s.history.push("patch config".into());
        Ok(s.dynamic_config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::simulated::{SimClock, SimConfig};
    use steward_model::ports::CreateSpec;
    use steward_model::Size;

    async fn cluster(n: usize) -> (Arc<SimulatedPlatform>, SimCluster) {
        let clock = SimClock::new(Timestamp::from_secs(1_000));
        let platform = Arc::new(SimulatedPlatform::new(SimConfig::new("demo", n + 1), clock));
        for i in 1..=n {
            platform
                .create(&CreateSpec {
                    cluster: "demo".into(),
                    role: Role::Database,
                    name: format!("pg-{i}"),
                    size: Size {
                        cpus: 2.0,
                        memory_bytes: 4 << 30,
                        disk_bytes: 20 << 30,
                    },
                    operation_id: "boot".into(),
                    replaces: None,
                })
                .await
                .unwrap();
        }
        let sim = SimCluster::new(Arc::clone(&platform), "demo", SimClusterConfig::default());
        sim.bootstrap("pg-1");
        (platform, sim)
    }

    fn roles(view: &ClusterView) -> Vec<(String, PatroniRole, String)> {
        view.members
            .iter()
            .map(|m| (m.name.clone(), m.role, m.state.clone()))
            .collect()
    }

    #[tokio::test]
    async fn replicas_stream_after_the_join_delay() {
        let (platform, sim) = cluster(3).await;
        let view = sim.cluster().await.unwrap();
        assert_eq!(view.leader().unwrap().name, "pg-1");
        assert_eq!(view.member("pg-2").unwrap().state, "creating_replica");
        platform.clock().advance(DEFAULT_JOIN_DELAY);
        let view = sim.cluster().await.unwrap();
        assert_eq!(view.member("pg-2").unwrap().state, "streaming");
        let leader = sim.member_status("http://127.0.0.1:8008").await.unwrap();
        assert_eq!(leader.role, PatroniRole::Leader);
        assert_eq!(leader.replication.len(), 2);
    }

    /// The zombie of promise 10: promoted-over and thawed, it claims to lead until fenced.
    #[tokio::test]
    async fn a_frozen_leader_is_failed_over_and_thaws_as_a_second_leader() {
        let (platform, sim) = cluster(3).await;
        platform.clock().advance(DEFAULT_JOIN_DELAY);
        sim.set_lag("pg-2", 1 << 20);
        platform.hang("pg-1").unwrap();
        sim.cluster().await.unwrap();
        platform
            .clock()
            .advance(DEFAULT_TTL - Duration::from_secs(1));
        assert_eq!(sim.cluster().await.unwrap().leader().unwrap().name, "pg-1");
        platform.clock().advance(Duration::from_secs(1));
        let view = sim.cluster().await.unwrap();
        // pg-3 has less lag than pg-2: it is promoted.
        assert_eq!(view.leader().unwrap().name, "pg-3");
        assert!(view.member("pg-1").is_none());
        assert_eq!(sim.timeline(), 2);
        platform.recover("pg-1").unwrap();
        let view = sim.cluster().await.unwrap();
        let leaders: Vec<_> = roles(&view)
            .into_iter()
            .filter(|(_, r, _)| *r == PatroniRole::Leader)
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(leaders, ["pg-1", "pg-3"]);
        platform.fence("pg-1").await.unwrap();
        let view = sim.cluster().await.unwrap();
        assert!(view.member("pg-1").is_none());
    }

    #[tokio::test]
    async fn switchover_needs_the_right_leader_and_a_healthy_candidate() {
        let (platform, sim) = cluster(2).await;
        let req = |leader: &str| Switchover {
            leader: leader.into(),
            candidate: Some("pg-2".into()),
            scheduled_at: None,
        };
        // pg-2 has not joined yet.
        let err = sim.switchover(&req("pg-1")).await.unwrap_err();
        assert_eq!(err.class(), steward_model::ports::ErrorKind::Conflict);
        platform.clock().advance(DEFAULT_JOIN_DELAY);
        let err = sim.switchover(&req("pg-2")).await.unwrap_err();
        assert_eq!(err.class(), steward_model::ports::ErrorKind::Conflict);
        sim.switchover(&req("pg-1")).await.unwrap();
        assert_eq!(sim.leader().as_deref(), Some("pg-2"));
        let view = sim.cluster().await.unwrap();
        assert_eq!(view.member("pg-1").unwrap().role, PatroniRole::Replica);
    }

    #[tokio::test]
    async fn patch_config_merges_and_null_deletes() {
        let (_platform, sim) = cluster(1).await;
        sim.patch_config(
            &serde_json::json!({"postgresql": {"parameters": {"work_mem": "8MB", "x": 1}}}),
        )
        .await
        .unwrap();
        let out = sim
            .patch_config(&serde_json::json!({"postgresql": {"parameters": {"x": null}}}))
            .await
            .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"postgresql": {"parameters": {"work_mem": "8MB"}}})
        );
    }
}
