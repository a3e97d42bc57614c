//! The recording format: JSON lines, one member at one instant per line.
//!
//! `steward evaluate --jsonl` reads it, `steward observe --record` appends it, and the loop
//! scenarios under `tests/data/` are written in it, so an incident recorded live becomes a
//! regression test. Absent fields are unknown, never zero.
//!
//! ```json
//! {"time":"2026-11-26T10:00:00Z","cluster":"demo","member":"pg-1","role":"database",
//!  "patroni_role":"leader","cpu_used":0.42,"memory_used":536870912,
//!  "size":{"cpus":2.0,"memory_bytes":2147483648,"disk_bytes":10737418240}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::observation::{
    Figure, MemberObservation, Observation, PatroniRole, PlatformState, Source,
};
use crate::size::{Role, Size};
use crate::time::Timestamp;

/// One line of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub member: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni_role: Option<PatroniRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_state: Option<PlatformState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Bytes behind the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<f64>,
    /// vCPUs in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_used: Option<f64>,
    /// Working-set bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<f64>,
    /// The buffer cache's hit ratio lately, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_ratio: Option<f64>,
    /// `shared_buffers`, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_buffers: Option<f64>,
    /// Restarts the platform counted since the member was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
}

impl MemberRecord {
    /// The record of one observed member. `value` decides which figures are recorded (e.g.
    /// only fresh ones); a member without a role is recorded as a database.
    pub fn from_observed(
        m: &MemberObservation,
        at: Timestamp,
        cluster: &str,
        value: impl Fn(Option<&Figure>) -> Option<f64>,
    ) -> MemberRecord {
        MemberRecord {
            time: at,
            cluster: Some(cluster.to_string()),
            member: m.name.clone(),
            role: m.role.unwrap_or(Role::Database),
            patroni_role: m.patroni_role,
            patroni_state: m.patroni_state.clone(),
            platform_state: m.platform_state,
            timeline: m.timeline,
            streaming: m.streaming,
            lag_bytes: value(m.lag_bytes.as_ref()),
            cpu_used: value(m.cpu_used.as_ref()),
            memory_used: value(m.memory_used.as_ref()),
            disk_used: value(m.disk_used.as_ref()),
            wal_bytes: value(m.wal_bytes.as_ref()),
            connections: value(m.connections.as_ref()),
            read_rate: value(m.read_rate.as_ref()),
            oom_kills: value(m.oom_kills.as_ref()),
            cache_hit_ratio: value(m.cache_hit_ratio.as_ref()),
            shared_buffers: value(m.shared_buffers.as_ref()),
            restart_count: m.restart_count,
            size: m.size,
        }
    }

    /// The member as an observation would hold it: every figure marked [`Source::Recorded`] at
    /// the record's time.
    pub fn to_member(&self) -> MemberObservation {
        let figure =
            |v: Option<f64>| v.map(|value| Figure::new(value, Source::Recorded, self.time));
        MemberObservation {
            name: self.member.clone(),
            role: Some(self.role),
            patroni_role: self.patroni_role,
            patroni_state: self.patroni_state.clone(),
            platform_state: self.platform_state,
            timeline: self.timeline,
            streaming: self.streaming,
            lag_bytes: figure(self.lag_bytes),
            cpu_used: figure(self.cpu_used),
            memory_used: figure(self.memory_used),
            disk_used: figure(self.disk_used),
            wal_bytes: figure(self.wal_bytes),
            connections: figure(self.connections),
            read_rate: figure(self.read_rate),
            oom_kills: figure(self.oom_kills),
            cache_hit_ratio: figure(self.cache_hit_ratio),
            shared_buffers: figure(self.shared_buffers),
            restart_count: self.restart_count,
            size: self.size,
            ..MemberObservation::default()
        }
    }
}

/// One observation per distinct `time`, in time order; members keep the order of their lines.
/// Records without a cluster belong to `cluster`.
pub fn group_by_time(
    records: impl IntoIterator<Item = MemberRecord>,
    cluster: &str,
) -> Vec<Observation> {
    let mut by_time: BTreeMap<Timestamp, Observation> = BTreeMap::new();
    for r in records {
        let observation = by_time.entry(r.time).or_insert_with(|| Observation {
            at: r.time,
            cluster: r.cluster.clone().unwrap_or_else(|| cluster.to_string()),
            members: Vec::new(),
            notes: Vec::new(),
            slots: Vec::new(),
        });
        observation.members.push(r.to_member());
    }
    by_time.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let line = r#"{"time":"2026-11-26T10:00:00Z","cluster":"demo","member":"pg-1","role":"database","patroni_role":"leader","cpu_used":0.42,"memory_used":536870912,"size":{"cpus":2.0,"memory_bytes":2147483648,"disk_bytes":10737418240}}"#;
        let r: MemberRecord = serde_json::from_str(line).unwrap();
        assert_eq!(r.member, "pg-1");
        assert_eq!(r.patroni_role, Some(PatroniRole::Leader));
        assert_eq!(r.disk_used, None);
        let back = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MemberRecord>(&back).unwrap(), r);
    }

    #[test]
    fn a_member_round_trips_through_its_record() {
        let line = r#"{"time":"2026-11-26T10:00:00Z","member":"pg-2","role":"database","timeline":3,"restart_count":2,"lag_bytes":1024}"#;
        let r: MemberRecord = serde_json::from_str(line).unwrap();
        let m = r.to_member();
        assert_eq!((m.timeline, m.restart_count), (Some(3), Some(2)));
        assert_eq!(m.lag_bytes.unwrap().source, Source::Recorded);
        let back = MemberRecord::from_observed(&m, r.time, "demo", |f| f.map(|f| f.value));
        assert_eq!(
            MemberRecord {
                cluster: None,
                ..back
            },
            r
        );
    }

    #[test]
    fn records_group_by_time_in_order() {
        let rec = |t: i64, m: &str| MemberRecord {
            time: Timestamp::from_secs(t),
            cluster: None,
            member: m.into(),
            role: Role::Database,
            patroni_role: None,
            patroni_state: None,
            platform_state: None,
            timeline: None,
            streaming: None,
            lag_bytes: None,
            cpu_used: None,
            memory_used: None,
            disk_used: None,
            wal_bytes: None,
            connections: None,
            read_rate: None,
            oom_kills: None,
            cache_hit_ratio: None,
            shared_buffers: None,
            restart_count: None,
            size: None,
        };
        let obs = group_by_time([rec(20, "b"), rec(10, "a"), rec(20, "c")], "demo");
        let shape: Vec<(i64, Vec<&str>)> = obs
            .iter()
            .map(|o| {
                (
                    o.at.as_millis() / 1000,
                    o.members.iter().map(|m| m.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(shape, [(10, vec!["a"]), (20, vec!["b", "c"])]);
        assert!(obs.iter().all(|o| o.cluster == "demo"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let line = r#"{"time":"2026-11-26T10:00:00Z","member":"pg-1","role":"database","cpu":1}"#;
        let err = serde_json::from_str::<MemberRecord>(line)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpu`"), "{err}");
    }
}
