//! Recordings to observations: the repair scenarios are written in the recording format.
//!
//! What it is: [`observations`], which groups [`MemberRecord`] lines (one member at one instant)
//! by time into one [`Observation`] per instant, so a recording made live by `steward observe
//! --record` drives the repair core exactly as the live observer would.
//!
//! What it is not: a file reader (the caller parses the JSON lines; this crate does no I/O).
//! Absent fields stay unknown: a member whose line has no `patroni_role` and no `patroni_state`
//! was not answered for by Patroni, which is how a silent REST API is recorded.

use std::collections::BTreeMap;

use steward_model::observation::{Figure, MemberObservation, Observation, Source};
use steward_model::record::MemberRecord;
use steward_model::Timestamp;

/// One observation per distinct `time`, in time order; members keep the order of their lines.
/// Records without a cluster belong to `cluster`.
pub fn observations(
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
        });
        observation.members.push(member(r));
    }
    by_time.into_values().collect()
}

fn member(r: MemberRecord) -> MemberObservation {
    let figure = |v: Option<f64>| v.map(|value| Figure::new(value, Source::Recorded, r.time));
    MemberObservation {
        name: r.member.clone(),
        role: Some(r.role),
        patroni_role: r.patroni_role,
        patroni_state: r.patroni_state.clone(),
        platform_state: r.platform_state,
        streaming: r.streaming,
        lag_bytes: figure(r.lag_bytes),
        cpu_used: figure(r.cpu_used),
        memory_used: figure(r.memory_used),
        disk_used: figure(r.disk_used),
        wal_bytes: figure(r.wal_bytes),
        connections: figure(r.connections),
        read_rate: figure(r.read_rate),
        oom_kills: figure(r.oom_kills),
        size: r.size,
        ..MemberObservation::default()
    }
}

#[cfg(test)]
mod tests {
    use steward_model::Role;

    use super::*;

    fn record(time: i64, member: &str) -> MemberRecord {
        MemberRecord {
            time: Timestamp::from_secs(time),
            cluster: None,
            member: member.into(),
            role: Role::Database,
            patroni_role: None,
            patroni_state: None,
            platform_state: None,
            streaming: None,
            lag_bytes: Some(5.0),
            cpu_used: None,
            memory_used: None,
            disk_used: None,
            wal_bytes: None,
            connections: None,
            read_rate: None,
            oom_kills: None,
            size: None,
        }
    }

    #[test]
    fn records_are_grouped_by_time_in_order() {
        let obs = observations([record(20, "b"), record(10, "a"), record(20, "c")], "demo");
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
        assert_eq!(obs[0].cluster, "demo");
        let lag = obs[1].members[0].lag_bytes.unwrap();
        assert_eq!((lag.value, lag.at), (5.0, Timestamp::from_secs(20)));
        assert_eq!(obs[1].members[0].cpu_used, None);
    }
}
