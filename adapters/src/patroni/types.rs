//! What Patroni says, normalized across 3.x and 4.x.
//!
//! The wire structs (private) accept both versions' JSON and ignore fields Steward does not
//! read, since every Patroni release adds some. The public types say the same thing once:
//! `master`/`primary`/`leader` are all [`PatroniRole::Leader`], states are lowercase words joined
//! by `_` (`running`, `streaming`, `in_archive_recovery`, `start_failed`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use steward_model::observation::PatroniRole;

/// Maps any Patroni role spelling (3.x, 4.x, `/cluster` or `/patroni`) to the model's role.
pub fn normalize_role(raw: &str) -> PatroniRole {
    match raw.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "leader" | "master" | "primary" => PatroniRole::Leader,
        "replica" | "quorum_standby" => PatroniRole::Replica,
        "standby_leader" => PatroniRole::StandbyLeader,
        "sync_standby" => PatroniRole::SyncStandby,
        _ => PatroniRole::Unknown,
    }
}

/// `in archive recovery` -> `in_archive_recovery`; `Running` -> `running`.
pub fn normalize_state(raw: &str) -> String {
    raw.trim()
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
}

/// `GET /cluster`: the members as the DCS knows them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterView {
    /// The cluster's name (`scope`); 3.x does not send it in `/cluster`.
    pub scope: Option<String>,
    /// Patroni's maintenance mode (`pause`): no automatic failover while true.
    pub paused: bool,
    pub members: Vec<ClusterMember>,
}

impl ClusterView {
    /// Parses a `/cluster` body of either version (for fakes, recordings and replays).
    pub fn from_json(body: &[u8]) -> Result<ClusterView, serde_json::Error> {
        serde_json::from_slice::<WireCluster>(body).map(ClusterView::from)
    }

    pub fn leader(&self) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.role == PatroniRole::Leader)
    }

    pub fn member(&self, name: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// One member of `/cluster`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterMember {
    pub name: String,
    pub role: PatroniRole,
    /// Normalized: 3.x says `running` for a streaming replica, 4.x says `streaming`.
    pub state: String,
    /// As Patroni publishes it, e.g. `http://127.0.0.12:8008/patroni`.
    pub api_url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeline: Option<u64>,
    /// Bytes behind the leader, as Patroni computes it; `None` when Patroni says `unknown`.
    pub lag_bytes: Option<u64>,
    pub pending_restart: bool,
}

impl ClusterMember {
    /// The REST API's base URL (`http://127.0.0.12:8008`), from `api_url` without `/patroni`.
    pub fn api_base(&self) -> Option<String> {
        let url = self.api_url.as_deref()?;
        let url = url.trim_end_matches('/');
        Some(url.strip_suffix("/patroni").unwrap_or(url).to_string())
    }

    /// PostgreSQL's `host:port`.
    pub fn address(&self) -> Option<String> {
        match (&self.host, self.port) {
            (Some(h), Some(p)) => {
                // Sized once (`format!` guesses short and grows): asked of every member of
                // every cluster on each observation.
                let mut address = String::with_capacity(h.len() + 6);
                let _ = write!(address, "{h}:{p}");
                Some(address)
            }
            (Some(h), None) => Some(h.clone()),
            _ => None,
        }
    }
}

/// `GET /patroni` (and `/health`, which has the same body): one member about itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemberStatus {
    /// The member's name; 3.x does not send it.
    pub name: Option<String>,
    pub scope: Option<String>,
    pub patroni_version: Option<String>,
    pub role: PatroniRole,
    pub state: String,
    pub timeline: Option<u64>,
    /// PostgreSQL's `server_version_num`, e.g. 150018.
    pub server_version: Option<u64>,
    /// The walsenders of this member (filled on a leader): who streams from it.
    pub replication: Vec<Walsender>,
    /// A replica's own view (4.x only): `streaming`, `in archive recovery`, ...
    pub replication_state: Option<String>,
    pub wal: WalPositions,
    pub pending_restart: bool,
    /// Maintenance mode.
    pub paused: bool,
}

impl MemberStatus {
    /// Parses a `/patroni` (or `/health`) body of either version.
    pub fn from_json(body: &[u8]) -> Result<MemberStatus, serde_json::Error> {
        serde_json::from_slice::<WireStatus>(body).map(MemberStatus::from)
    }

    /// Whether `member` has a walsender in state `streaming` on this member: the one rule
    /// [`Self::streaming_members`] applies to each name, asked of one member without making
    /// the set.
    pub fn streams_to(&self, member: &str) -> bool {
        self.replication
            .iter()
            .any(|w| w.state == "streaming" && w.application_name == member)
    }

    /// The members (among `names`) that have a walsender in state `streaming` on this member.
    ///
    /// Only walsenders whose `application_name` is a member name count: `pg_basebackup`'s own
    /// stream also says `streaming` while a replica is still being cloned.
    pub fn streaming_members<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        names
            .into_iter()
            .filter(|n| self.streams_to(n))
            .map(str::to_string)
            .collect()
    }
}

/// One row of `pg_stat_replication` as Patroni reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Walsender {
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: Option<String>,
}

/// WAL positions in bytes (LSNs as integers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WalPositions {
    /// The leader's current write position.
    pub location: Option<u64>,
    /// A replica's received and replayed positions.
    pub received: Option<u64>,
    pub replayed: Option<u64>,
}

/// The answer of a probe endpoint (`/health`, `/liveness`): 200 is up, 503 is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub ok: bool,
    pub status: u16,
}

/// One line of `GET /history`: a timeline switch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub timeline: u64,
    /// Where the timeline was switched, bytes.
    pub lsn: u64,
    pub reason: String,
    pub at: Option<String>,
    pub new_leader: Option<String>,
}

/// One sample of a member's `GET /metrics` text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// `POST /switchover`. Patroni requires `leader` (the current one, checked: a mismatch is a
/// 412), `candidate` is optional, and `scheduled_at` makes it a 202 "scheduled".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Switchover {
    pub leader: String,
    pub candidate: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
}

/// `POST /restart` and its conditions: Patroni restarts only when every given one holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestartConditions {
    /// Restart at this time instead of now.
    pub schedule: Option<DateTime<Utc>>,
    /// Only when PostgreSQL has settings waiting for a restart.
    pub restart_pending: bool,
    /// Only when the member has this role (sent as `primary` or `replica`).
    pub role: Option<PatroniRole>,
    /// Only when the running version is lower than this (e.g. `15.5`).
    pub postgres_version: Option<String>,
    /// How long Patroni waits for PostgreSQL to come back before giving up.
    pub timeout: Option<Duration>,
}

/// What Patroni answered to an action: 200 done, 202 accepted or scheduled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    pub status: u16,
    /// Patroni's text, e.g. `Successfully switched over to "pg2"`.
    pub message: String,
}

// ---- wire formats (both versions) -------------------------------------------------------

#[derive(Deserialize)]
pub(crate) struct WireCluster {
    #[serde(default)]
    members: Vec<WireClusterMember>,
    scope: Option<String>,
    #[serde(default)]
    pause: bool,
}

#[derive(Deserialize)]
struct WireClusterMember {
    name: String,
    role: String,
    state: Option<String>,
    api_url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    timeline: Option<u64>,
    /// An integer, or the string `unknown` when Patroni cannot tell.
    lag: Option<serde_json::Value>,
    #[serde(default)]
    pending_restart: bool,
}

impl From<WireCluster> for ClusterView {
    fn from(w: WireCluster) -> Self {
        ClusterView {
            scope: w.scope,
            paused: w.pause,
            members: w
                .members
                .into_iter()
                .map(|m| ClusterMember {
                    role: normalize_role(&m.role),
                    state: m
                        .state
                        .as_deref()
                        .map(normalize_state)
                        .unwrap_or_else(|| "unknown".into()),
                    lag_bytes: m.lag.as_ref().and_then(serde_json::Value::as_u64),
                    name: m.name,
                    api_url: m.api_url,
                    host: m.host,
                    port: m.port,
                    timeline: m.timeline,
                    pending_restart: m.pending_restart,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct WireStatus {
    state: Option<String>,
    role: Option<String>,
    timeline: Option<u64>,
    server_version: Option<u64>,
    patroni: Option<WirePatroni>,
    #[serde(default)]
    replication: Vec<Walsender>,
    replication_state: Option<String>,
    xlog: Option<WireXlog>,
    #[serde(default)]
    pending_restart: bool,
    #[serde(default)]
    pause: bool,
}

#[derive(Deserialize)]
struct WirePatroni {
    name: Option<String>,
    scope: Option<String>,
    version: Option<String>,
}

#[derive(Deserialize)]
struct WireXlog {
    location: Option<u64>,
    received_location: Option<u64>,
    replayed_location: Option<u64>,
}

impl From<WireStatus> for MemberStatus {
    fn from(w: WireStatus) -> Self {
        let patroni = w.patroni.unwrap_or(WirePatroni {
            name: None,
            scope: None,
            version: None,
        });
        let xlog = w.xlog.unwrap_or(WireXlog {
            location: None,
            received_location: None,
            replayed_location: None,
        });
        MemberStatus {
            name: patroni.name,
            scope: patroni.scope,
            patroni_version: patroni.version,
            role: w
                .role
                .as_deref()
                .map(normalize_role)
                .unwrap_or(PatroniRole::Unknown),
            state: w
                .state
                .as_deref()
                .map(normalize_state)
                .unwrap_or_else(|| "unknown".into()),
            timeline: w.timeline,
            server_version: w.server_version,
            replication: w.replication,
            replication_state: w.replication_state.as_deref().map(normalize_state),
            wal: WalPositions {
                location: xlog.location,
                received: xlog.received_location,
                replayed: xlog.replayed_location,
            },
            pending_restart: w.pending_restart,
            paused: w.pause,
        }
    }
}

/// `/history` is a list of arrays: `[timeline, lsn, reason, timestamp?, new_leader?]`.
pub(crate) fn history_from_json(rows: Vec<Vec<serde_json::Value>>) -> Vec<HistoryEntry> {
    rows.into_iter()
        .filter_map(|row| {
            let text = |i: usize| row.get(i).and_then(|v| v.as_str()).map(str::to_string);
            Some(HistoryEntry {
                timeline: row.first()?.as_u64()?,
                lsn: row.get(1)?.as_u64()?,
                reason: text(2).unwrap_or_default(),
                at: text(3),
                new_leader: text(4),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_both_versions_normalize() {
        assert_eq!(normalize_role("master"), PatroniRole::Leader);
        assert_eq!(normalize_role("primary"), PatroniRole::Leader);
        assert_eq!(normalize_role("leader"), PatroniRole::Leader);
        assert_eq!(normalize_role("standby-leader"), PatroniRole::StandbyLeader);
        assert_eq!(normalize_role("sync_standby"), PatroniRole::SyncStandby);
        assert_eq!(normalize_role("uninitialized"), PatroniRole::Unknown);
        assert_eq!(
            normalize_state("in archive recovery"),
            "in_archive_recovery"
        );
        assert_eq!(normalize_state(" Streaming "), "streaming");
    }

    #[test]
    fn history_rows_of_three_to_five_fields_parse() {
        let rows: Vec<Vec<serde_json::Value>> = serde_json::from_str(
            r#"[[1, 25623960, "no recovery target specified", "2026-11-26T10:00:00+00:00", "pg2"],
                [2, 50331808, "no recovery target specified"], ["bad"]]"#,
        )
        .unwrap();
        let h = history_from_json(rows);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].new_leader.as_deref(), Some("pg2"));
        assert_eq!(h[1].timeline, 2);
        assert_eq!(h[1].at, None);
    }
}
