//! The HTTP surface of a fleet (`[fleet]` with `[server]`): one listener for every cluster.
//!
//! Each cluster keeps its own [`Shared`] (status, pause flag, loop ticks), published by its
//! loops exactly as for a single cluster; they all count into one [`Metrics`], whose series
//! carry a `cluster` label. This module only reads them:
//! - `GET /status`: a summary (how many clusters are healthy, degraded, repairing, paused, not
//!   observed yet, or looked after by another instance) and one line per cluster;
//!   `GET /status?cluster=NAME` is that cluster's whole status, as a single cluster's
//!   `/status` shows it;
//! - `GET /healthz`: 200 while every cluster whose loops run in this process ticked within
//!   `stale_after` (a cluster another instance holds is not this process's to tick);
//! - `GET /metrics`: every cluster's series;
//! - `GET /sd`: every cluster's members, labelled with their cluster;
//! - `POST /pause` and `POST /resume` (bearer token): every cluster, or one with
//!   `?cluster=NAME`.
//!
//! What it is not: a second source of truth. A cluster's state here is derived from its status
//! by [`summarize`], a pure function.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use steward_model::observation::{PatroniRole, PlatformState};
use steward_model::{Role, Timestamp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{refusal_for, BearerToken, ServerError, Shared, Status, TargetGroup};
use crate::journal::OperationKind;
use crate::telemetry::Metrics;

/// A cluster's state on the fleet's `/status`, from the worst down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// An operator paused its loops.
    Paused,
    /// A member is being replaced.
    Repairing,
    /// Something is wrong that no repair is under way for yet (or that no repair fixes): no
    /// leader, a member not running, below its floor, slots holding WAL.
    Degraded,
    /// Not observed yet since this process started looking after it.
    Unknown,
    /// Another instance holds its lease and looks after it; nothing here is current.
    Elsewhere,
    Healthy,
}

impl ClusterState {
    pub const ALL: [ClusterState; 6] = [
        ClusterState::Healthy,
        ClusterState::Degraded,
        ClusterState::Repairing,
        ClusterState::Paused,
        ClusterState::Unknown,
        ClusterState::Elsewhere,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::Paused => "paused",
            ClusterState::Repairing => "repairing",
            ClusterState::Degraded => "degraded",
            ClusterState::Unknown => "unknown",
            ClusterState::Elsewhere => "elsewhere",
            ClusterState::Healthy => "healthy",
        }
    }
}

/// One cluster's line on the fleet's `/status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterSummary {
    pub name: String,
    pub state: ClusterState,
    /// Why it is not healthy, in words (empty when healthy).
    pub why: Vec<String>,
    /// The Patroni leader, when one was seen.
    pub leader: Option<String>,
    /// Database members observed.
    pub members: usize,
    /// The kinds of the operations in flight (`replace`, `resize`, ...).
    pub in_flight: Vec<String>,
    pub observed_at: Option<Timestamp>,
    /// With leases: the instance that looks after it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Patroni states of a member that serves: a leader `running`, a replica `streaming` (Patroni
/// 4) or `running` (Patroni 3, which never says `streaming`).
const SERVING: [&str; 2] = ["running", "streaming"];

/// What a cluster's status says about it, in one word and its reasons.
pub fn summarize(status: &Status) -> ClusterSummary {
    summary(status, status.paused)
}

/// Whether this process runs the cluster's loops: no lease, or this instance holds it.
fn runs_here(status: &Status) -> bool {
    status.lease.as_ref().is_none_or(|l| l.role == "leader")
}

/// [`summarize`] with the pause flag given apart: the stored status does not hold it (the
/// flag is a watch channel of its own), and a fleet's summary is made under the status's read
/// lock, without a copy of every cluster's status.
fn summary(status: &Status, paused: bool) -> ClusterSummary {
    let leader = status
        .members
        .iter()
        .find(|m| m.patroni_role == Some(PatroniRole::Leader))
        .map(|m| m.name.clone());
    let databases = status
        .members
        .iter()
        .filter(|m| m.role != Some(Role::Balancer))
        .count();
    let in_flight: Vec<String> = status
        .in_flight
        .iter()
        .map(|op| op.kind.as_str().to_string())
        .collect();
    let owner = status.lease.as_ref().and_then(|l| l.leader.clone());
    let mut why = Vec::new();
    let state = if paused {
        why.push("paused by an operator".to_string());
        ClusterState::Paused
    } else if !runs_here(status) {
        ClusterState::Elsewhere
    } else if status.observed_at.is_none() {
        why.push("not observed yet".to_string());
        ClusterState::Unknown
    } else {
        why = troubles(status, leader.is_some());
        if status
            .in_flight
            .iter()
            .any(|op| op.kind == OperationKind::Replace)
        {
            ClusterState::Repairing
        } else if why.is_empty() {
            ClusterState::Healthy
        } else {
            ClusterState::Degraded
        }
    };
    ClusterSummary {
        name: status.cluster.clone(),
        state,
        why,
        leader,
        members: databases,
        in_flight,
        observed_at: status.observed_at,
        owner,
    }
}

/// What is wrong with an observed cluster, in words.
fn troubles(status: &Status, has_leader: bool) -> Vec<String> {
    let mut why = Vec::new();
    if !has_leader {
        why.push("no leader".to_string());
    }
    for m in &status.members {
        if let Some(state) = m.platform_state.filter(|s| *s != PlatformState::Running) {
            why.push(format!("{}: platform says {state:?}", m.name).to_lowercase());
            continue;
        }
        if m.role == Some(Role::Balancer) {
            continue;
        }
        match m.patroni_state.as_deref() {
            Some(s) if SERVING.contains(&s) => {}
            Some(s) => why.push(format!("{}: patroni says {s}", m.name)),
            None => why.push(format!("{}: not seen by patroni", m.name)),
        }
    }
    why.extend(status.below_floor.iter().cloned());
    why.extend(status.held_slots.iter().cloned());
    why
}

/// The fleet's summary: counts by state, and a line per cluster.
#[derive(Clone, Debug, Serialize)]
pub struct FleetStatus {
    pub clusters: usize,
    /// How many clusters are in each state (every state listed, zeros included).
    pub states: BTreeMap<&'static str, usize>,
    /// One line per cluster, by name. `/status?cluster=NAME` has the whole status.
    pub by_cluster: Vec<ClusterSummary>,
}

/// The fleet's summary of its clusters' summaries.
pub fn fleet_status(by_cluster: Vec<ClusterSummary>) -> FleetStatus {
    let mut states: BTreeMap<&'static str, usize> =
        ClusterState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for c in &by_cluster {
        *states.entry(c.state.as_str()).or_default() += 1;
    }
    FleetStatus {
        clusters: by_cluster.len(),
        states,
        by_cluster,
    }
}

/// What the fleet's handlers share: every cluster's state, one registry, one token.
#[derive(Clone)]
pub struct FleetShared {
    clusters: Arc<BTreeMap<String, Shared>>,
    metrics: Arc<Metrics>,
    token: Option<BearerToken>,
}

impl FleetShared {
    /// `clusters`' states must all count into `metrics`.
    pub fn new(
        clusters: impl IntoIterator<Item = Shared>,
        metrics: Arc<Metrics>,
        token: Option<BearerToken>,
    ) -> Self {
        let clusters = clusters
            .into_iter()
            .map(|s| (s.cluster().to_string(), s))
            .collect();
        FleetShared {
            clusters: Arc::new(clusters),
            metrics,
            token,
        }
    }

    /// Every cluster's summary, each made in place under its status's read lock.
    async fn summaries(&self) -> Vec<ClusterSummary> {
        let mut out = Vec::with_capacity(self.clusters.len());
        for shared in self.clusters.values() {
            let paused = shared.is_paused();
            out.push(summary(&*shared.inner.status.read().await, paused));
        }
        out
    }

    /// The clusters a request names: every one without `cluster`; `None` for an unknown one.
    fn select(&self, cluster: Option<&str>) -> Option<Vec<&Shared>> {
        match cluster {
            None => Some(self.clusters.values().collect()),
            Some(name) => self.clusters.get(name).map(|s| vec![s]),
        }
    }

    /// The answer to a request naming a cluster that is not in the fleet: 404, with the names.
    fn unknown(&self, name: &str) -> Response {
        let error = json!({
            "error": format!("no cluster `{name}` in this fleet"),
            "clusters": self.clusters.keys().collect::<Vec<_>>(),
        });
        (StatusCode::NOT_FOUND, Json(error)).into_response()
    }
}

/// `?cluster=NAME`
#[derive(Debug, Default, Deserialize)]
struct Which {
    cluster: Option<String>,
}

/// The fleet's routes.
pub fn router(shared: FleetShared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/sd", get(service_discovery))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(shared)
}

/// Serves the fleet until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    shared: FleetShared,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, clusters = shared.clusters.len(), "fleet http api listening");
    }
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServerError::Serve)
}

async fn status(State(fleet): State<FleetShared>, Query(which): Query<Which>) -> Response {
    match which.cluster.as_deref() {
        None => Json(fleet_status(fleet.summaries().await)).into_response(),
        Some(name) => match fleet.select(Some(name)) {
            Some(one) => Json(one[0].status().await).into_response(),
            None => fleet.unknown(name),
        },
    }
}

async fn healthz(State(fleet): State<FleetShared>) -> Response {
    let mut healthy = true;
    let mut clusters = BTreeMap::new();
    for (name, shared) in fleet.clusters.iter() {
        // A cluster held by another instance runs no loops here.
        let here = runs_here(&*shared.inner.status.read().await);
        if !here {
            clusters.insert(name.clone(), json!({"here": false}));
            continue;
        }
        let (ok, loops) = shared.health().await;
        healthy &= ok;
        clusters.insert(name.clone(), json!({"healthy": ok, "loops": loops}));
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"healthy": healthy, "clusters": clusters})),
    )
        .into_response()
}

async fn metrics(State(fleet): State<FleetShared>) -> Response {
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        fleet.metrics.encode(),
    )
        .into_response()
}

async fn service_discovery(State(fleet): State<FleetShared>) -> Response {
    let mut groups: Vec<TargetGroup> = Vec::new();
    for shared in fleet.clusters.values() {
        groups.extend(super::target_groups(&*shared.inner.status.read().await));
    }
    Json(groups).into_response()
}

async fn pause(
    State(fleet): State<FleetShared>,
    Query(which): Query<Which>,
    headers: HeaderMap,
) -> Response {
    set_pause(&fleet, which, &headers, true, "/pause")
}

async fn resume(
    State(fleet): State<FleetShared>,
    Query(which): Query<Which>,
    headers: HeaderMap,
) -> Response {
    set_pause(&fleet, which, &headers, false, "/resume")
}

fn set_pause(
    fleet: &FleetShared,
    which: Which,
    headers: &HeaderMap,
    paused: bool,
    path: &str,
) -> Response {
    if let Some(refusal) = refusal_for(fleet.token.as_ref(), headers, path) {
        return refusal;
    }
    let Some(chosen) = fleet.select(which.cluster.as_deref()) else {
        return fleet.unknown(which.cluster.as_deref().unwrap_or_default());
    };
    let mut now = BTreeMap::new();
    for shared in chosen {
        shared.set_paused(paused, "api");
        now.insert(shared.cluster().to_string(), shared.is_paused());
    }
    Json(json!({"paused": now})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{LeaseStatus, MemberStatus};

    fn member(name: &str, role: PatroniRole, state: &str) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            role: Some(Role::Database),
            patroni_role: Some(role),
            patroni_state: Some(state.into()),
            platform_state: Some(PlatformState::Running),
            ..MemberStatus::default()
        }
    }

    fn healthy(name: &str) -> Status {
        Status {
            cluster: name.into(),
            observed_at: Some(Timestamp::from_secs(1_800_000_000)),
            members: vec![
                member("a-1", PatroniRole::Leader, "running"),
                member("a-2", PatroniRole::Replica, "streaming"),
                member("a-3", PatroniRole::Replica, "running"),
            ],
            ..Status::default()
        }
    }

    #[test]
    fn a_cluster_with_a_leader_and_every_member_serving_is_healthy() {
        let s = summarize(&healthy("a"));
        assert_eq!(s.state, ClusterState::Healthy, "{:?}", s.why);
        assert_eq!(s.leader.as_deref(), Some("a-1"));
        assert_eq!(s.members, 3);
    }

    #[test]
    fn each_trouble_degrades_and_says_why() {
        let mut no_leader = healthy("a");
        no_leader.members[0].patroni_role = Some(PatroniRole::Replica);
        let mut stopped = healthy("a");
        stopped.members[1].platform_state = Some(PlatformState::Exited);
        let mut starting = healthy("a");
        starting.members[2].patroni_state = Some("starting".into());
        let mut unseen = healthy("a");
        unseen.members[2].patroni_state = None;
        let mut floor = healthy("a");
        floor.below_floor = Some("2 database members, below the floor of 3".into());
        let mut slots = healthy("a");
        slots.held_slots = vec!["slot a_4 holds 1 GiB".into()];
        for (status, said) in [
            (no_leader, "no leader"),
            (stopped, "a-2: platform says exited"),
            (starting, "a-3: patroni says starting"),
            (unseen, "a-3: not seen by patroni"),
            (floor, "below the floor"),
            (slots, "slot a_4"),
        ] {
            let s = summarize(&status);
            assert_eq!(s.state, ClusterState::Degraded, "{said}");
            assert!(
                s.why.iter().any(|w| w.contains(said)),
                "{said}: {:?}",
                s.why
            );
        }
    }

    #[test]
    fn pause_lease_observation_and_repairs_take_precedence_in_that_order() {
        let mut paused = healthy("a");
        paused.paused = true;
        paused.members.clear();
        assert_eq!(summarize(&paused).state, ClusterState::Paused);

        let mut elsewhere = healthy("a");
        elsewhere.lease = Some(LeaseStatus {
            instance: "steward-a".into(),
            role: "follower".into(),
            leader: Some("steward-b".into()),
            token: None,
        });
        let s = summarize(&elsewhere);
        assert_eq!(s.state, ClusterState::Elsewhere);
        assert_eq!(s.owner.as_deref(), Some("steward-b"));

        let mut unseen = healthy("a");
        unseen.observed_at = None;
        assert_eq!(summarize(&unseen).state, ClusterState::Unknown);

        let mut repairing = healthy("a");
        repairing.members[1].platform_state = Some(PlatformState::Fenced);
        repairing.in_flight = vec![operation(OperationKind::Replace)];
        let s = summarize(&repairing);
        assert_eq!(s.state, ClusterState::Repairing);
        assert_eq!(s.in_flight, ["replace"]);
        // A resize in flight is ordinary work on a healthy cluster.
        let mut resizing = healthy("a");
        resizing.in_flight = vec![operation(OperationKind::Resize)];
        assert_eq!(summarize(&resizing).state, ClusterState::Healthy);
    }

    #[test]
    fn the_fleet_counts_every_state_and_lists_every_cluster() {
        let mut b = healthy("b");
        b.paused = true;
        let fleet = fleet_status(
            [healthy("a"), b, healthy("c")]
                .iter()
                .map(summarize)
                .collect(),
        );
        assert_eq!(fleet.clusters, 3);
        assert_eq!(fleet.states["healthy"], 2);
        assert_eq!(fleet.states["paused"], 1);
        assert_eq!(fleet.states["degraded"], 0);
        assert_eq!(fleet.states.len(), ClusterState::ALL.len());
        let names: Vec<&str> = fleet.by_cluster.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    fn operation(kind: OperationKind) -> crate::journal::Operation {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = crate::journal::Journal::open(dir.path(), 4)
            .unwrap()
            .journal;
        let new = crate::journal::NewOperation {
            kind,
            cluster: "a".into(),
            targets: vec!["a-2".into()],
            plan: serde_json::Value::Null,
        };
        journal
            .begin(new, Timestamp::from_secs(1_800_000_000))
            .unwrap()
    }
}
