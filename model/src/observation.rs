//! What Steward saw: one snapshot per member, every figure with its source and time.
//!
//! A figure that is missing is `None`, never zero; one that is too old is judged stale by
//! whoever reads it, with [`Figure::freshness`], against a limit from the config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::size::{Role, Size};
use crate::time::Timestamp;

/// Where a figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Patroni,
    Prometheus,
    Platform,
    Host,
    /// Read back from a recording (CSV or JSONL) by `evaluate`.
    Recorded,
}

/// One measured value, with where and when it was measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub value: f64,
    pub source: Source,
    /// When the value was sampled (not when Steward read it).
    pub at: Timestamp,
}

/// A figure judged against a staleness limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Freshness {
    Fresh(f64),
    Stale { value: f64, age: Duration },
    Missing,
}

impl Figure {
    pub fn new(value: f64, source: Source, at: Timestamp) -> Self {
        Figure { value, source, at }
    }

    /// How old the figure is at `now`.
    pub fn age(&self, now: Timestamp) -> Duration {
        now.since(self.at)
    }

    /// Fresh when younger than `max_age` and finite; a non-finite value counts as missing.
    pub fn freshness(figure: Option<&Figure>, now: Timestamp, max_age: Duration) -> Freshness {
        match figure {
            None => Freshness::Missing,
            Some(f) if !f.value.is_finite() => Freshness::Missing,
            Some(f) if f.age(now) > max_age => Freshness::Stale {
                value: f.value,
                age: f.age(now),
            },
            Some(f) => Freshness::Fresh(f.value),
        }
    }
}

/// The role Patroni gives a database member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatroniRole {
    /// Holds the leader lock (`leader`, `primary` in 4.x, `master` in 3.x).
    Leader,
    Replica,
    StandbyLeader,
    SyncStandby,
    Unknown,
}

/// What the platform says about a member's container, VM or pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformState {
    Creating,
    Running,
    Paused,
    Restarting,
    /// Exited by itself (crash or clean exit).
    Exited,
    /// Killed by the kernel's OOM killer (the container as a whole).
    OomKilled,
    /// Stopped by us (fenced).
    Fenced,
    Unknown,
}

/// One member as seen at one instant. Every figure is optional: absent means not known.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberObservation {
    pub name: String,
    pub role: Option<Role>,
    pub patroni_role: Option<PatroniRole>,
    /// Patroni's state string as normalized: `running`, `streaming`, `stopped`, `starting`, ...
    pub patroni_state: Option<String>,
    pub platform_state: Option<PlatformState>,
    pub timeline: Option<u64>,
    /// The member's Patroni REST URL, when known.
    pub api_url: Option<String>,
    /// The member's address (host:port of PostgreSQL), when known.
    pub address: Option<String>,
    /// Whether the leader's `replication[]` lists this member as streaming (None on the leader
    /// or when the leader could not be asked).
    pub streaming: Option<bool>,
    /// Replication lag behind the leader, bytes.
    pub lag_bytes: Option<Figure>,
    /// Where the member is in the WAL, bytes (an LSN): on the leader the position written, on a
    /// replica the position received (Patroni's own `/patroni` `xlog`). A replica whose position
    /// stands still while the leader's moves on is stuck, whatever its lag in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_position: Option<Figure>,
    /// CPU in use, vCPUs.
    pub cpu_used: Option<Figure>,
    /// Memory working set (RSS + shared memory, not page cache), bytes.
    pub memory_used: Option<Figure>,
    /// Data disk used, bytes.
    pub disk_used: Option<Figure>,
    /// Of the disk used, bytes held by WAL (`pg_wal`).
    pub wal_bytes: Option<Figure>,
    /// Client connections to PostgreSQL.
    pub connections: Option<Figure>,
    /// Read load: transactions (or tuples read) per second, as the metric defines it.
    pub read_rate: Option<Figure>,
    /// OOM kills seen since the member started (a counter).
    pub oom_kills: Option<Figure>,
    /// The share of block reads the buffer cache answered lately, 0..1.
    pub cache_hit_ratio: Option<Figure>,
    /// The `shared_buffers` PostgreSQL runs with, bytes.
    pub shared_buffers: Option<Figure>,
    /// The size the platform gave the member.
    pub size: Option<Size>,
    /// Seen by the platform (true), only by Patroni (false), or not asked (None).
    pub in_platform: Option<bool>,
    /// Listed in Patroni's `/cluster` (true), only by the platform (false), or not asked (None).
    pub in_patroni: Option<bool>,
    /// When the member was created, if known (used to pick the newest replica).
    pub created_at: Option<Timestamp>,
    /// Restarts the platform counted since the member was created (restart loops).
    pub restart_count: Option<u32>,
}

/// One snapshot of a whole cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub at: Timestamp,
    pub cluster: String,
    pub members: Vec<MemberObservation>,
    /// Problems met while observing (a source that did not answer, ...), for people.
    pub notes: Vec<String>,
    /// The leader's replication slots that hold WAL, when a metric says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotObservation>,
}

/// One replication slot on the leader and the WAL it keeps from being recycled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotObservation {
    pub name: String,
    /// WAL kept for the slot, bytes (`pg_wal_lsn_diff(current, restart_lsn)`).
    pub wal_bytes: Figure,
    /// The member of the cluster (in Patroni's `/cluster` or on the platform) the slot is
    /// named after, if any: Patroni names a member's slot after the member.
    pub member: Option<String>,
}

impl Observation {
    pub fn members_of(&self, role: Role) -> impl Iterator<Item = &MemberObservation> {
        self.members.iter().filter(move |m| m.role == Some(role))
    }

    pub fn leader(&self) -> Option<&MemberObservation> {
        self.members
            .iter()
            .find(|m| m.patroni_role == Some(PatroniRole::Leader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_nan_and_stale_are_never_fresh() {
        let now = Timestamp::from_secs(100);
        let limit = Duration::from_secs(30);
        assert_eq!(Figure::freshness(None, now, limit), Freshness::Missing);
        let nan = Figure::new(f64::NAN, Source::Prometheus, now);
        assert_eq!(
            Figure::freshness(Some(&nan), now, limit),
            Freshness::Missing
        );
        let old = Figure::new(1.0, Source::Prometheus, Timestamp::from_secs(60));
        assert!(matches!(
            Figure::freshness(Some(&old), now, limit),
            Freshness::Stale { .. }
        ));
        let young = Figure::new(1.0, Source::Prometheus, Timestamp::from_secs(90));
        assert_eq!(
            Figure::freshness(Some(&young), now, limit),
            Freshness::Fresh(1.0)
        );
    }
}
