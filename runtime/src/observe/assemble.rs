//! Assembling one [`Observation`] from what the sources answered.
//!
//! Pure: the sources' answers and `now` go in, the observation comes out; no I/O and no clock,
//! so every rule below is tested with recorded answers. The rules:
//! - One member per name in Patroni's `/cluster` or in the platform's list (when a platform
//!   list is given); `in_patroni`/`in_platform` say who knows it.
//! - "Streams" is judged from the LEADER's `/patroni` `replication[]`, counting only walsenders
//!   whose `application_name` is a member name (pg_basebackup's stream also says streaming).
//!   3.x never says `streaming` in `/cluster`, so its state alone cannot tell.
//! - A member's own `/patroni` state wins over `/cluster`'s (the DCS copy lags by up to a
//!   `loop_wait`); `/cluster` is the fallback when the member does not answer. In 4.x a
//!   replica's own `running` + `replication_state: streaming` reads `streaming`, as in `/cluster`.
//! - Lag comes from Patroni's `/cluster` (bytes), else from Prometheus.
//! - Prometheus values are matched to a member by the member label's value: the member's name,
//!   its PostgreSQL `host:port`, or its host. Missing stays `None`; a stale value is kept with
//!   its old timestamp (readers judge it with `Figure::freshness`) and named in the notes.
//!
//! What this is not: a judge of health. It records what was seen; policies decide.

use std::collections::{BTreeMap, BTreeSet};

use steward_adapters::patroni::{ClusterView, MemberStatus};
use steward_adapters::prometheus::{Metric, MetricReading, Reading};
use steward_model::observation::{
    Figure, MemberObservation, Observation, PatroniRole, SlotObservation, Source,
};
use steward_model::ports::platform::PlatformMember;
use steward_model::record::MemberRecord;
use steward_model::{Role, Timestamp};
use steward_policies::slots::is_slot_of;

/// What the sources answered in one pass, lent to [`assemble`]: the observer owns them, and
/// a fleet's driver (benches/fleet.rs) lends the same answers without copying them.
#[derive(Clone, Debug, Default)]
pub struct Answers<'a> {
    /// Patroni's `/cluster`, when any member answered.
    pub cluster: Option<&'a ClusterView>,
    /// Each member's own `/patroni` with the member's name, in any order (absent: not asked
    /// or did not answer). A few pairs: a list, not a map (a map's node has room for 11).
    pub statuses: &'a [(String, MemberStatus)],
    /// One reading per metric, all members each.
    pub metrics: BTreeMap<Metric, MetricReading>,
    /// The platform's members, when a platform was asked.
    pub platform: Option<&'a [PlatformMember]>,
    /// Problems met while asking (a source that did not answer), passed through.
    pub notes: Vec<String>,
}

impl Answers<'_> {
    /// `name`'s own `/patroni`, if it answered.
    pub fn status(&self, name: &str) -> Option<&MemberStatus> {
        self.statuses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// Where [`assemble_with`] reads the metrics of one pass: readings by metric and by key (the
/// value of the metric's member label). `answers.metrics`, a map per metric, is one;
/// [`super::fleet::ClusterReadings`], a cluster's share of a fleet's answers, is another.
pub trait MetricsView {
    /// The reading of `metric` under `key` (a member's name, address or host).
    fn reading(&self, metric: Metric, key: &str) -> Option<&Reading>;
    /// Whether `metric` was asked and its answer held no series at all (missing for everyone).
    fn answered_empty(&self, metric: Metric) -> bool;
    /// The slot metric's readings by slot name, in name order; `None` when it was not asked.
    fn slots(&self) -> Option<Vec<(&str, &Reading)>>;
}

impl MetricsView for BTreeMap<Metric, MetricReading> {
    fn reading(&self, metric: Metric, key: &str) -> Option<&Reading> {
        self.get(&metric)?.values.get(key)
    }

    fn answered_empty(&self, metric: Metric) -> bool {
        self.get(&metric).is_some_and(|r| r.values.is_empty())
    }

    fn slots(&self) -> Option<Vec<(&str, &Reading)>> {
        let reading = self.get(&Metric::SlotWalBytes)?;
        Some(
            reading
                .values
                .iter()
                .map(|(k, r)| (k.as_str(), r))
                .collect(),
        )
    }
}

/// Builds the observation of `cluster_name` at `now`.
pub fn assemble(cluster_name: &str, now: Timestamp, answers: &Answers<'_>) -> Observation {
    assemble_with(cluster_name, now, answers, &answers.metrics)
}

/// [`assemble`] with the metrics read from `metrics` instead of `answers.metrics` (which is
/// not read): a fleet files its answers per cluster without a map per cluster and metric.
pub fn assemble_with(
    cluster_name: &str,
    now: Timestamp,
    answers: &Answers<'_>,
    metrics: &dyn MetricsView,
) -> Observation {
    let mut notes = answers.notes.clone();
    let patroni_members = answers
        .cluster
        .map(|c| c.members.as_slice())
        .unwrap_or_default();
    let names: BTreeSet<&str> = patroni_members
        .iter()
        .map(|m| m.name.as_str())
        .chain(
            answers
                .platform
                .unwrap_or_default()
                .iter()
                .map(|p| p.name.as_str()),
        )
        .collect();

    // The leader's walsenders decide who streams. Unknown (None) when there is no leader or
    // it did not answer: "not streaming" would be a claim we cannot make.
    let leader = patroni_members
        .iter()
        .find(|m| m.role == PatroniRole::Leader);
    let leader_status = leader.and_then(|l| answers.status(&l.name));
    if answers.cluster.is_some() && leader.is_none() {
        notes.push("patroni lists no leader: failover in progress or the cluster is down".into());
    }

    // Sized once: a member is 440 bytes, and the repairer keeps the observation (a vector's
    // first growth makes room for four: a fifth of a fleet's kept observations was that room).
    let mut members = Vec::with_capacity(names.len());
    for &name in &names {
        let pm = patroni_members.iter().find(|m| m.name == name);
        let platform = answers
            .platform
            .and_then(|list| list.iter().find(|p| p.name == name));
        let status = answers.status(name);
        let role = platform.map(|p| p.role).or(pm.map(|_| Role::Database));
        let mut m = MemberObservation {
            name: name.to_string(),
            role,
            ..Default::default()
        };
        if let Some(pm) = pm {
            m.patroni_role = Some(
                status
                    .map(|s| s.role)
                    .filter(|r| *r != PatroniRole::Unknown)
                    .unwrap_or(pm.role),
            );
            m.patroni_state = Some(status.map(own_state).unwrap_or_else(|| pm.state.clone()));
            m.timeline = status.and_then(|s| s.timeline).or(pm.timeline);
            m.api_url = pm.api_base();
            m.address = pm.address();
            m.lag_bytes = pm
                .lag_bytes
                .map(|b| Figure::new(b as f64, Source::Patroni, now));
            if pm.role != PatroniRole::Leader {
                m.streaming = leader_status.map(|s| s.streams_to(name));
            }
            // The leader's written position, a replica's received one (its own answer).
            m.wal_position = status
                .and_then(|s| match s.role {
                    PatroniRole::Leader | PatroniRole::StandbyLeader => s.wal.location,
                    _ => s.wal.received,
                })
                .map(|lsn| Figure::new(lsn as f64, Source::Patroni, now));
        }
        if let Some(p) = platform {
            m.platform_state = Some(p.state);
            m.size = Some(p.size);
            m.created_at = p.created_at;
            if m.address.is_none() {
                m.address = Some(p.address.clone());
            }
        }
        // Balancers are not Patroni members: "not in Patroni" would be noise for them.
        if answers.cluster.is_some() && role != Some(Role::Balancer) {
            m.in_patroni = Some(pm.is_some());
        }
        if answers.platform.is_some() {
            m.in_platform = Some(platform.is_some());
        }
        if pm.is_none() && answers.cluster.is_some() && role == Some(Role::Database) {
            notes.push(format!(
                "{name}: on the platform but not in patroni's /cluster"
            ));
        }
        if platform.is_none() && answers.platform.is_some() {
            notes.push(format!(
                "{name}: in patroni's /cluster but not on the platform (not owned, or removed)"
            ));
        }
        apply_metrics(
            &mut m,
            pm.and_then(|p| p.host.as_deref()),
            now,
            metrics,
            &mut notes,
        );
        members.push(m);
    }

    for metric in Metric::ALL {
        if metrics.answered_empty(metric) {
            notes.push(format!(
                "{}: prometheus answered no series (missing for every member)",
                metric.as_str()
            ));
        }
    }

    let slots = slots(&names, metrics, &mut notes);
    Observation {
        at: now,
        cluster: cluster_name.to_string(),
        members,
        notes,
        slots,
    }
}

/// The leader's replication slots, each with the member it is named after (Patroni's naming,
/// [`steward_policies::slots::slot_name`]) if the cluster still has one.
fn slots(
    names: &BTreeSet<&str>,
    metrics: &dyn MetricsView,
    notes: &mut Vec<String>,
) -> Vec<SlotObservation> {
    let Some(readings) = metrics.slots() else {
        return Vec::new();
    };
    readings
        .into_iter()
        .filter_map(|(slot, r)| {
            let wal_bytes = match r {
                Reading::Fresh(f) => *f,
                Reading::Stale(f) => {
                    notes.push(format!("slot {slot}: slot_wal_bytes is stale"));
                    *f
                }
                Reading::Missing => return None,
            };
            Some(SlotObservation {
                name: slot.to_string(),
                wal_bytes,
                // The last name the slot could be, as a map from slot to name built in
                // order would keep.
                member: names
                    .iter()
                    .rev()
                    .find(|n| is_slot_of(slot, n))
                    .map(|m| m.to_string()),
            })
        })
        .collect()
}

/// A member's state in its own words. 4.x adds `replication_state` (`streaming`, ...) beside a
/// `running` postgres: that is what `/cluster` shows as the state, so use it the same way.
fn own_state(s: &MemberStatus) -> String {
    match (&s.state[..], &s.replication_state) {
        ("running", Some(r)) => r.clone(),
        _ => s.state.clone(),
    }
}

fn apply_metrics(
    m: &mut MemberObservation,
    host: Option<&str>,
    now: Timestamp,
    metrics: &dyn MetricsView,
    notes: &mut Vec<String>,
) {
    // Keys a metric may use for this member, most specific first (borrowed: this runs per
    // member and metric, a fleet's tick 240,000 times).
    let MemberObservation {
        name,
        address,
        lag_bytes,
        cpu_used,
        memory_used,
        disk_used,
        wal_bytes,
        connections,
        read_rate,
        oom_kills,
        cache_hit_ratio,
        shared_buffers,
        ..
    } = m;
    let keys = [Some(name.as_str()), address.as_deref(), host];
    for metric in Metric::ALL {
        let Some(r) = keys
            .iter()
            .flatten()
            .find_map(|k| metrics.reading(metric, k))
        else {
            continue;
        };
        let figure = match r {
            Reading::Fresh(f) => *f,
            Reading::Stale(f) => {
                notes.push(format!(
                    "{}: {} is stale ({} s old)",
                    name,
                    metric.as_str(),
                    now.since(f.at).as_secs()
                ));
                *f
            }
            Reading::Missing => continue,
        };
        let slot = match metric {
            Metric::CpuUsed => &mut *cpu_used,
            Metric::MemoryUsed => &mut *memory_used,
            Metric::DiskUsed => &mut *disk_used,
            Metric::WalBytes => &mut *wal_bytes,
            Metric::Connections => &mut *connections,
            Metric::ReadRate => &mut *read_rate,
            Metric::OomKills => &mut *oom_kills,
            Metric::CacheHitRatio => &mut *cache_hit_ratio,
            Metric::SharedBuffers => &mut *shared_buffers,
            // Keyed by slot, not member: see `slots`.
            Metric::SlotWalBytes => continue,
            // Patroni's own lag (bytes, from the DCS) is preferred; Prometheus fills the gap.
            Metric::LagBytes if lag_bytes.is_some() => continue,
            Metric::LagBytes => &mut *lag_bytes,
        };
        *slot = Some(figure);
    }
}

/// The observation as recording lines. Only figures fresh at the observation's time (younger
/// than `max_age`) are written: a recording has no notion of staleness, and a replay must not
/// act on what the live loop would have held still on.
pub fn to_records(obs: &Observation, max_age: std::time::Duration) -> Vec<MemberRecord> {
    let fresh = |f: &Option<Figure>| match steward_model::observation::Figure::freshness(
        f.as_ref(),
        obs.at,
        max_age,
    ) {
        steward_model::observation::Freshness::Fresh(v) => Some(v),
        _ => None,
    };
    obs.members
        .iter()
        .map(|m| MemberRecord::from_observed(m, obs.at, &obs.cluster, |f| fresh(&f.copied())))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use steward_model::observation::PlatformState;
    use steward_model::Size;

    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_795_708_800);

    fn fixture(rel: &str) -> Vec<u8> {
        let p = format!(
            "{}/../tests/data/fixtures/{rel}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn cluster(rel: &str) -> ClusterView {
        ClusterView::from_json(&fixture(rel)).unwrap()
    }

    fn status(rel: &str) -> MemberStatus {
        MemberStatus::from_json(&fixture(rel)).unwrap()
    }

    fn platform_member(name: &str, role: Role, address: &str) -> PlatformMember {
        PlatformMember {
            name: name.into(),
            cluster: "pglab".into(),
            role,
            size: Size {
                cpus: 2.0,
                memory_bytes: 2 << 30,
                disk_bytes: 10 << 30,
            },
            state: PlatformState::Running,
            address: address.into(),
            host: "local".into(),
            labels: Default::default(),
            created_at: Some(Timestamp::from_secs(1_795_700_000)),
            restart_count: 0,
        }
    }

    #[test]
    fn patroni_3x_replicas_stream_by_the_leaders_walsenders_not_by_their_state() {
        let c = cluster("patroni-3.0.2/cluster.leader.http200.json");
        let statuses = [(
            "pg1".into(),
            status("patroni-3.0.2/patroni.leader.http200.json"),
        )];
        let a = Answers {
            cluster: Some(&c),
            statuses: &statuses,
            ..Default::default()
        };
        let obs = assemble("pglab", NOW, &a);
        let by = |n: &str| obs.members.iter().find(|m| m.name == n).unwrap();
        assert_eq!(by("pg1").patroni_role, Some(PatroniRole::Leader));
        assert_eq!(by("pg1").streaming, None, "the leader does not stream");
        assert_eq!(by("pg2").patroni_state.as_deref(), Some("running"));
        assert_eq!(by("pg2").streaming, Some(true));
        assert_eq!(by("pg3").streaming, Some(true));
        assert_eq!(
            by("pg2").lag_bytes.map(|f| (f.value, f.source)),
            Some((0.0, Source::Patroni))
        );
        assert_eq!(by("pg2").api_url.as_deref(), Some("http://127.0.0.12:8008"));
        assert_eq!(by("pg2").in_patroni, Some(true));
        assert_eq!(by("pg2").in_platform, None, "no platform was asked");
        assert!(obs.notes.is_empty(), "{:?}", obs.notes);
    }

    /// Each member's WAL position is its own answer's: the leader's written location, a
    /// replica's received one (recorded Patroni 4.1.5 `/patroni`); without its answer, missing.
    #[test]
    fn wal_positions_are_the_leaders_written_and_the_replicas_received() {
        let c = cluster("patroni-4.1.5/cluster.leader.http200.json");
        let leader = status("patroni-4.1.5/patroni.leader.http200.json");
        let replica = status("patroni-4.1.5/patroni.replica.http200.json");
        let (written, received) = (leader.wal.location, replica.wal.received);
        assert!(written.is_some() && received.is_some());
        let statuses = [("pg1".into(), leader), ("pg2".into(), replica)];
        let a = Answers {
            cluster: Some(&c),
            statuses: &statuses,
            ..Default::default()
        };
        let obs = assemble("pglab", NOW, &a);
        let by = |n: &str| obs.members.iter().find(|m| m.name == n).unwrap();
        let position = |n: &str| by(n).wal_position.map(|f| (f.value as u64, f.source, f.at));
        assert_eq!(
            position("pg1"),
            Some((written.unwrap(), Source::Patroni, NOW))
        );
        assert_eq!(
            position("pg2"),
            Some((received.unwrap(), Source::Patroni, NOW))
        );
        assert_eq!(position("pg3"), None, "pg3's /patroni was not asked");
    }

    #[test]
    fn a_stopped_replica_with_unknown_lag_is_not_streaming() {
        // Recorded in the lab: lab-pg-3's postgres stopped; its lag is "unknown".
        let c = cluster("patroni-4.1.5-extra/cluster.leader.member_stopped.http200.json");
        let statuses = [(
            "lab-pg-1".into(),
            status("patroni-4.1.5-extra/patroni.leader.member_stopped.http200.json"),
        )];
        let a = Answers {
            cluster: Some(&c),
            statuses: &statuses,
            ..Default::default()
        };
        let obs = assemble("steward-lab", NOW, &a);
        let pg3 = obs.members.iter().find(|m| m.name == "lab-pg-3").unwrap();
        assert_eq!(pg3.patroni_state.as_deref(), Some("stopped"));
        assert_eq!(pg3.streaming, Some(false));
        assert_eq!(pg3.lag_bytes, None, "unknown lag is missing, not zero");
        let pg2 = obs.members.iter().find(|m| m.name == "lab-pg-2").unwrap();
        assert_eq!(pg2.streaming, Some(true));
    }

    #[test]
    fn without_the_leaders_answer_streaming_is_unknown_and_no_leader_is_noted() {
        let c = cluster("patroni-4.1.5/cluster.leader.http200.json");
        let a = Answers {
            cluster: Some(&c),
            ..Default::default()
        };
        let obs = assemble("pglab", NOW, &a);
        assert!(obs.members.iter().all(|m| m.streaming.is_none()));
        // Mid-failover (recorded): no member holds the leader role.
        let mid = ClusterView::from_json(
            br#"{"members":[{"name":"a","role":"replica","state":"running"}]}"#,
        )
        .unwrap();
        let obs = assemble(
            "x",
            NOW,
            &Answers {
                cluster: Some(&mid),
                ..Default::default()
            },
        );
        assert!(
            obs.notes.iter().any(|n| n.contains("no leader")),
            "{:?}",
            obs.notes
        );
    }

    #[test]
    fn platform_and_patroni_disagreements_are_flagged_both_ways() {
        let c = cluster("patroni-4.1.5/cluster.leader.http200.json");
        let platform = vec![
            platform_member("pg1", Role::Database, "127.0.0.11"),
            platform_member("pg2", Role::Database, "127.0.0.12"),
            platform_member("pg4", Role::Database, "127.0.0.14"),
            platform_member("lb1", Role::Balancer, "127.0.0.21"),
        ];
        let a = Answers {
            cluster: Some(&c),
            platform: Some(&platform),
            ..Default::default()
        };
        let obs = assemble("pglab", NOW, &a);
        let flags: Vec<(&str, Option<bool>, Option<bool>)> = obs
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.in_patroni, m.in_platform))
            .collect();
        assert_eq!(
            flags,
            [
                ("lb1", None, Some(true)),
                ("pg1", Some(true), Some(true)),
                ("pg2", Some(true), Some(true)),
                ("pg3", Some(true), Some(false)),
                ("pg4", Some(false), Some(true)),
            ]
        );
        let pg4 = obs.members.iter().find(|m| m.name == "pg4").unwrap();
        assert_eq!(pg4.address.as_deref(), Some("127.0.0.14"));
        assert_eq!(pg4.size.map(|s| s.cpus), Some(2.0));
        assert_eq!(obs.notes.len(), 2, "{:?}", obs.notes);
    }

    /// Issue 14: slot figures are the cluster's, keyed by slot; each is tied to the member
    /// Patroni names it after (members `pg1`..`pg3` here), a slot of no member to none, and no
    /// member gets a slot's figure as its own.
    #[test]
    fn slots_are_tied_to_the_member_patroni_names_them_after() {
        let c = cluster("patroni-4.1.5/cluster.leader.http200.json");
        let fig = |v: f64| Figure::new(v, Source::Prometheus, NOW);
        let mut metrics = BTreeMap::new();
        metrics.insert(
            Metric::SlotWalBytes,
            MetricReading {
                metric: Metric::SlotWalBytes,
                label: "slot_name".into(),
                values: [
                    ("pg2".to_string(), Reading::Fresh(fig(1.0))),
                    ("pg_old_4".to_string(), Reading::Fresh(fig(2.0))),
                    ("pg3".to_string(), Reading::Missing),
                ]
                .into(),
            },
        );
        let a = Answers {
            cluster: Some(&c),
            metrics,
            ..Default::default()
        };
        let obs = assemble("pglab", NOW, &a);
        let slots: Vec<(&str, Option<&str>, f64)> = obs
            .slots
            .iter()
            .map(|s| (&s.name[..], s.member.as_deref(), s.wal_bytes.value))
            .collect();
        assert_eq!(slots, [("pg2", Some("pg2"), 1.0), ("pg_old_4", None, 2.0)]);
        assert!(obs.members.iter().all(|m| m.wal_bytes.is_none()));
    }

    #[test]
    fn prometheus_values_match_by_name_or_address_and_missing_stays_missing() {
        let c = cluster("patroni-4.1.5/cluster.leader.http200.json");
        let fig = |v: f64, at: Timestamp| Figure::new(v, Source::Prometheus, at);
        let mut metrics = BTreeMap::new();
        metrics.insert(
            Metric::CpuUsed,
            MetricReading {
                metric: Metric::CpuUsed,
                label: "member".into(),
                values: [
                    ("pg1".to_string(), Reading::Fresh(fig(0.5, NOW))),
                    ("pg2".to_string(), Reading::Missing),
                    (
                        "pg3".to_string(),
                        Reading::Stale(fig(0.3, NOW - Duration::from_secs(600))),
                    ),
                ]
                .into(),
            },
        );
        metrics.insert(
            Metric::Connections,
            MetricReading {
                metric: Metric::Connections,
                label: "server".into(),
                values: [("127.0.0.12:5432".to_string(), Reading::Fresh(fig(4.0, NOW)))].into(),
            },
        );
        metrics.insert(
            Metric::MemoryUsed,
            MetricReading {
                metric: Metric::MemoryUsed,
                label: "member".into(),
                values: BTreeMap::new(),
            },
        );
        let a = Answers {
            cluster: Some(&c),
            metrics,
            ..Default::default()
        };
        let obs = assemble("pglab", NOW, &a);
        let by = |n: &str| obs.members.iter().find(|m| m.name == n).unwrap();
        assert_eq!(by("pg1").cpu_used.map(|f| f.value), Some(0.5));
        assert_eq!(by("pg2").cpu_used, None, "NaN is missing, not zero");
        assert_eq!(
            by("pg2").connections.map(|f| f.value),
            Some(4.0),
            "matched by host:port"
        );
        assert_eq!(
            by("pg3").cpu_used.map(|f| f.at),
            Some(NOW - Duration::from_secs(600))
        );
        assert!(obs.members.iter().all(|m| m.memory_used.is_none()));
        assert!(
            obs.notes
                .iter()
                .any(|n| n == "pg3: cpu_used is stale (600 s old)"),
            "{:?}",
            obs.notes
        );
        assert!(
            obs.notes
                .iter()
                .any(|n| n.starts_with("memory_used: prometheus answered no series")),
            "{:?}",
            obs.notes
        );

        // The recording keeps only what was fresh.
        let records = to_records(&obs, Duration::from_secs(150));
        let pg3 = records.iter().find(|r| r.member == "pg3").unwrap();
        assert_eq!(pg3.cpu_used, None);
        let pg1 = records.iter().find(|r| r.member == "pg1").unwrap();
        assert_eq!(
            (pg1.cpu_used, pg1.patroni_role, pg1.cluster.as_deref()),
            (Some(0.5), Some(PatroniRole::Leader), Some("pglab"))
        );
    }
}
