//! Property tests of the promises the policies keep (DESIGN.md 4 and 6): bounds, cooldowns, no
//! flapping inside the band, no regrow after a shrink, disks never shrink, missing data never
//! shrinks anything, the HA minimum holds, the leader is never removed.

use std::time::Duration;

use proptest::prelude::*;
use steward_model::observation::{Figure, MemberObservation, Observation, PatroniRole, Source};
use steward_model::{Action, Resource, Role, Size, Timestamp};
use steward_policies::{DiskPolicy, PolicyConfig, ReplicaPolicy, VerticalConfig, VerticalPolicy};

/// The scrape interval the sequences are fed at.
const STEP_S: i64 = 15;

fn cpu_config() -> VerticalConfig {
    PolicyConfig::default().database.cpu
}

fn fig(v: f64, at: Timestamp) -> Option<Figure> {
    Some(Figure::new(v, Source::Recorded, at))
}

/// One tick's usage per member (`None` is missing, otherwise vCPUs): a few steady segments at
/// random levels, each member within +-10 % of the level, about one figure in ten missing. Steady
/// segments are what let the windows fill, so shrinks and grows do happen.
fn usage_ticks(members: usize, len: usize) -> impl Strategy<Value = Vec<Vec<Option<f64>>>> {
    let segments = prop::collection::vec((0.0..16.0f64, 1usize..120), 1..8);
    let noise = prop::collection::vec(
        prop::collection::vec(
            prop_oneof![1 => Just(None), 9 => (0.9..1.1f64).prop_map(Some)],
            members,
        ),
        len,
    );
    (segments, noise).prop_map(move |(segments, noise)| {
        let levels = segments
            .iter()
            .flat_map(|&(level, n)| std::iter::repeat_n(level, n));
        levels
            .zip(noise)
            .map(|(level, jitter)| jitter.into_iter().map(|j| j.map(|j| j * level)).collect())
            .collect()
    })
}

/// Runs a vertical policy over `ticks`, applying every change, and returns each decision with the
/// size it was made at.
fn run_vertical(
    cfg: &VerticalConfig,
    start: f64,
    ticks: &[Vec<Option<f64>>],
    mut check: impl FnMut(Timestamp, &steward_model::Decision),
) {
    let mut p = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg.clone());
    let mut size = start;
    for (i, tick) in ticks.iter().enumerate() {
        let now = Timestamp::from_secs(i as i64 * STEP_S);
        let usage: Vec<Option<Figure>> = tick.iter().map(|u| u.and_then(|v| fig(v, now))).collect();
        let d = p.decide(now, &usage, size);
        check(now, &d);
        if d.changes() {
            size = d.target;
            p.record_change(now, size);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn vertical_changes_stay_within_bounds(ticks in usage_ticks(3, 400), start in 1.0..16.0f64) {
        let cfg = cpu_config();
        run_vertical(&cfg, start, &ticks, |_, d| {
            if d.changes() {
                assert!(d.target >= cfg.min && d.target <= cfg.max, "{d:?}");
                assert!(d.target <= d.current * cfg.max_step_factor + 1e-9, "{d:?}");
                assert!(d.target >= d.current / cfg.max_step_factor - 1e-9, "{d:?}");
            } else {
                assert_eq!(d.target, d.current);
            }
        });
    }

    #[test]
    fn vertical_never_acts_inside_a_cooldown(ticks in usage_ticks(2, 400), start in 1.0..16.0f64) {
        let cfg = cpu_config();
        let mut last_change: Option<Timestamp> = None;
        run_vertical(&cfg, start, &ticks, |now, d| {
            if d.changes() {
                if let Some(t) = last_change {
                    assert!(now.since(t) >= cfg.cooldown, "changed {:?} after the last change", now.since(t));
                }
                last_change = Some(now);
            }
        });
    }

    /// Inside the band and below `grow_at` (where a grow starts since issue 17; 0.70 for CPU).
    #[test]
    fn a_signal_inside_the_band_never_acts(
        utilizations in prop::collection::vec(0.501..0.699f64, 1..400),
        size in 1.0..16.0f64,
    ) {
        let cfg = cpu_config();
        prop_assert!(cfg.grow_at >= 0.699);
        let ticks: Vec<Vec<Option<f64>>> = utilizations.iter().map(|u| vec![Some(u * size)]).collect();
        run_vertical(&cfg, size, &ticks, |_, d| {
            assert_eq!(d.action, Action::Hold, "{d:?}");
        });
    }

    #[test]
    fn a_shrink_never_lands_where_the_same_data_grows_it(ticks in usage_ticks(2, 400), start in 1.0..16.0f64) {
        let cfg = cpu_config();
        run_vertical(&cfg, start, &ticks, |_, d| {
            if d.action == Action::Shrink {
                // The statistic was a utilization of `current`; at the new size it is:
                let projected = d.statistic.unwrap() * d.current / d.target;
                assert!(projected <= cfg.grow_at, "{projected} at the new size: {d:?}");
            }
        });
    }

    #[test]
    fn no_grow_right_after_a_shrink_on_the_same_data(level in 0.05..0.45f64, size in 2.0..16.0f64) {
        // A steady low load shrinks the size; feeding the same load at the new size must not grow.
        let mut cfg = cpu_config();
        // No cooldown (only a hand-built config can say so): the tick right after a shrink could
        // grow, so only the sizing itself stands between a shrink and a regrow.
        cfg.cooldown = Duration::ZERO;
        let usage = level * size;
        let ticks: Vec<Vec<Option<f64>>> = (0..2000).map(|_| vec![Some(usage)]).collect();
        let mut shrunk = false;
        run_vertical(&cfg, size, &ticks, |_, d| {
            assert_ne!(d.action, Action::Grow, "{d:?}");
            shrunk |= d.action == Action::Shrink;
        });
        prop_assert!(shrunk || size <= cfg.min + cfg.step);
    }

    #[test]
    fn missing_data_never_shrinks_a_vertical_size(ticks in usage_ticks(3, 400), hole in 0usize..3, start in 1.0..16.0f64) {
        // One member's figure is missing on every tick.
        let ticks: Vec<Vec<Option<f64>>> = ticks
            .into_iter()
            .map(|mut t| {
                t[hole] = None;
                t
            })
            .collect();
        run_vertical(&cpu_config(), start, &ticks, |_, d| {
            assert_ne!(d.action, Action::Shrink, "{d:?}");
        });
    }

    #[test]
    fn a_disk_never_shrinks(
        ticks in prop::collection::vec((prop::option::of(0.0..2e12f64), prop::option::of(0.0..1e12f64)), 1..300),
        size in 1e9..2e12f64,
        gap_s in 1i64..3600,
    ) {
        let mut p = DiskPolicy::new(Role::Database, PolicyConfig::default().database.disk);
        let mut size = size;
        for (i, (used, wal)) in ticks.into_iter().enumerate() {
            let now = Timestamp::from_secs(i as i64 * gap_s);
            let d = p.decide(now, &[used.and_then(|v| fig(v, now))], &[wal.and_then(|v| fig(v, now))], size);
            prop_assert_ne!(d.action, Action::Shrink);
            prop_assert!(d.target >= size, "{:?}", d);
            if used.is_none() {
                prop_assert_eq!(d.action, Action::Hold);
            }
            if d.changes() {
                size = d.target;
                p.record_change(now, size);
            }
        }
    }
}

/// (patroni role: 0 leader, 1 replica, 2 sync, 3 unknown; streaming; lag bytes; cpu used of 2 vCPU;
/// connections; figures stale; created_at seconds)
type RandomMember = (
    u8,
    Option<bool>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    bool,
    u8,
);

/// A random database member: any figure may be missing or stale.
fn member_strategy() -> impl Strategy<Value = RandomMember> {
    (
        0u8..4,                          // patroni role: 0 leader, 1 replica, 2 sync, 3 unknown
        prop::option::of(any::<bool>()), // streaming
        prop::option::of(0.0..1e8f64),   // lag bytes
        prop::option::of(0.0..2.0f64),   // cpu used (of 2 vCPU)
        prop::option::of(0.0..200.0f64), // connections
        any::<bool>(),                   // figures stale
        0u8..100,                        // created_at
    )
}

fn observation(now: Timestamp, members: &[RandomMember]) -> Observation {
    let members = members
        .iter()
        .enumerate()
        .map(|(i, &(role, streaming, lag, cpu, conns, stale, created))| {
            let at = if stale {
                now - Duration::from_secs(3600)
            } else {
                now
            };
            let f = |v: Option<f64>| v.map(|v| Figure::new(v, Source::Recorded, at));
            MemberObservation {
                name: format!("pg-{i}"),
                role: Some(Role::Database),
                patroni_role: Some(match role {
                    0 => PatroniRole::Leader,
                    1 => PatroniRole::Replica,
                    2 => PatroniRole::SyncStandby,
                    _ => PatroniRole::Unknown,
                }),
                streaming,
                lag_bytes: f(lag),
                cpu_used: f(cpu),
                connections: f(conns),
                size: Some(Size {
                    cpus: 2.0,
                    memory_bytes: 1 << 30,
                    disk_bytes: 10 << 30,
                }),
                created_at: Some(Timestamp::from_secs(created as i64)),
                ..Default::default()
            }
        })
        .collect();
    Observation {
        at: now,
        cluster: "prop".into(),
        members,
        notes: vec![],
        slots: Vec::new(),
    }
}

/// What a scale-in needs: every member's connections, every streaming replica's lag, and the CPU of
/// every replica counted as capacity, all fresh.
fn complete(o: &Observation, now: Timestamp, cfg: &steward_policies::ReplicaConfig) -> bool {
    let fresh = |f: Option<Figure>| f.is_some_and(|f| f.age(now) <= cfg.stale_after);
    o.members.iter().all(|m| {
        let leader = m.patroni_role == Some(PatroniRole::Leader);
        let counted = !leader && m.streaming != Some(false);
        let capacity = counted && m.lag_bytes.is_some_and(|l| l.value <= cfg.max_lag_bytes);
        fresh(m.connections) && (!counted || fresh(m.lag_bytes)) && (!capacity || fresh(m.cpu_used))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_keep_the_ha_minimum_and_never_remove_the_leader(
        seq in prop::collection::vec(prop::collection::vec(member_strategy(), 1..8), 1..200),
    ) {
        let cfg = PolicyConfig::default().replicas;
        let mut p = ReplicaPolicy::new(cfg.clone());
        let mut last_change: Option<Timestamp> = None;
        for (i, members) in seq.iter().enumerate() {
            let now = Timestamp::from_secs(i as i64 * 60);
            let o = observation(now, members);
            let r = p.decide(now, &o);
            let d = &r.decision;
            prop_assert_eq!(d.current, o.members.len() as f64);
            if d.changes() {
                prop_assert!((d.target - d.current).abs() == 1.0, "one at a time: {:?}", d);
                prop_assert!(d.target <= cfg.max_members as f64);
                if let Some(t) = last_change {
                    prop_assert!(now.since(t) >= cfg.cooldown);
                }
                last_change = Some(now);
                p.record_change(now, d.target as u32);
            }
            if d.action == Action::Shrink {
                prop_assert!(d.target >= cfg.min_members as f64, "{:?}", d);
                prop_assert!(complete(&o, now, &cfg), "shrank on missing or stale data: {:?}", d);
                let victim = r.remove.as_deref().expect("a shrink names the member to remove");
                let m = o.members.iter().find(|m| m.name == victim).expect("the victim is a member");
                prop_assert_ne!(m.patroni_role, Some(PatroniRole::Leader));
                prop_assert!(o.leader().is_some(), "no shrink without a known leader");
            } else {
                prop_assert_eq!(&r.remove, &None);
            }
        }
    }

    #[test]
    fn a_steady_quiet_cluster_with_a_hole_in_its_data_never_scales_in(
        n in 4usize..8,
        hole in 1usize..4,
        which in 0u8..3,
    ) {
        // Every figure says "idle", except one replica's figure that is missing: hold.
        let cfg = PolicyConfig::default().replicas;
        let mut p = ReplicaPolicy::new(cfg);
        for i in 0..300 {
            let now = Timestamp::from_secs(i * 15);
            let members: Vec<_> = (0..n)
                .map(|k| {
                    let lag = if k == 0 { None } else { Some(0.0) };
                    let mut m = (if k == 0 { 0 } else { 1 }, Some(k != 0), lag, Some(0.01), Some(1.0), false, 0u8);
                    if k == hole {
                        match which {
                            0 => m.2 = None,
                            1 => m.3 = None,
                            _ => m.4 = None,
                        }
                    }
                    m
                })
                .collect();
            let r = p.decide(now, &observation(now, &members));
            prop_assert_ne!(r.decision.action, Action::Shrink, "{:?}", r.decision);
        }
    }
}

/// A quiet cluster that the policy should shrink to its HA minimum, with a few random disturbances
/// (a figure missing or stale, a CPU spike) at random ticks. Members join and leave as decided.
#[derive(Clone, Debug)]
struct Quiet {
    n: usize,
    leader: Option<usize>,
    /// Per member: (lag in MiB, not streaming, sync standby, created_at seconds).
    replicas: Vec<(f64, bool, bool, u8)>,
    /// (tick, member, kind): 0 no cpu, 1 no connections, 2 no lag, 3 all stale, 4 cpu spike.
    disturbances: Vec<(usize, usize, u8)>,
}

fn quiet_strategy() -> impl Strategy<Value = Quiet> {
    (1usize..8)
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::option::weighted(0.9, 0..n),
                prop::collection::vec(
                    (
                        0.0..40.0f64,
                        prop::bool::weighted(0.1),
                        prop::bool::weighted(0.2),
                        0u8..100,
                    ),
                    n,
                ),
                prop::collection::vec((0usize..400, 0..n, 0u8..5), 0..4),
            )
        })
        .prop_map(|(n, leader, replicas, disturbances)| Quiet {
            n,
            leader,
            replicas,
            disturbances,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn scale_in_keeps_the_ha_minimum_spares_the_leader_and_needs_complete_data(q in quiet_strategy()) {
        const MIB: f64 = 1024.0 * 1024.0;
        let cfg = PolicyConfig::default().replicas;
        let mut p = ReplicaPolicy::new(cfg.clone());
        // (name, leader, lag MiB, not streaming, sync, created_at)
        let mut members: Vec<(String, bool, f64, bool, bool, i64)> = (0..q.n)
            .map(|i| {
                let (lag, down, sync, created) = q.replicas[i];
                (format!("pg-{i}"), q.leader == Some(i), lag, down, sync, created as i64)
            })
            .collect();
        let mut shrinks = 0;
        for tick in 0..400usize {
            let now = Timestamp::from_secs(tick as i64 * STEP_S);
            let fresh = |v: f64| Some(Figure::new(v, Source::Recorded, now));
            let mut o = Observation { at: now, cluster: "prop".into(), members: vec![], notes: vec![], slots: vec![] };
            for (i, (name, leader, lag, down, sync, created)) in members.iter().enumerate() {
                let mut m = MemberObservation {
                    name: name.clone(),
                    role: Some(Role::Database),
                    patroni_role: Some(if *leader {
                        PatroniRole::Leader
                    } else if *sync {
                        PatroniRole::SyncStandby
                    } else {
                        PatroniRole::Replica
                    }),
                    streaming: if *leader { None } else { Some(!down) },
                    lag_bytes: if *leader { None } else { fresh(lag * MIB) },
                    cpu_used: fresh(0.05),
                    connections: fresh(2.0),
                    size: Some(Size { cpus: 2.0, memory_bytes: 1 << 30, disk_bytes: 10 << 30 }),
                    created_at: Some(Timestamp::from_secs(*created)),
                    ..Default::default()
                };
                for &(t, who, kind) in &q.disturbances {
                    // A disturbance lasts a minute (4 ticks).
                    if who == i && (t..t + 4).contains(&tick) {
                        let old = Some(Figure::new(0.05, Source::Recorded, now - Duration::from_secs(3600)));
                        match kind {
                            0 => m.cpu_used = None,
                            1 => m.connections = None,
                            2 => m.lag_bytes = None,
                            3 => {
                                m.cpu_used = old;
                                m.connections = old;
                                m.lag_bytes = m.lag_bytes.and(old);
                            }
                            _ => m.cpu_used = fresh(1.9),
                        }
                    }
                }
                o.members.push(m);
            }
            let r = p.decide(now, &o);
            let d = &r.decision;
            match d.action {
                Action::Shrink => {
                    shrinks += 1;
                    prop_assert!(d.target >= cfg.min_members as f64, "{:?}", d);
                    prop_assert!(complete(&o, now, &cfg), "shrank on missing or stale data: {:?}", d);
                    let victim = r.remove.clone().expect("a shrink names the member to remove");
                    let k = members.iter().position(|m| m.0 == victim).expect("the victim is a member");
                    prop_assert!(!members[k].1, "the leader was chosen: {:?}", d);
                    members.remove(k);
                    p.record_change(now, d.target as u32);
                }
                Action::Grow => {
                    members.push((format!("new-{tick}"), false, 0.0, false, false, tick as i64 * STEP_S));
                    p.record_change(now, d.target as u32);
                }
                Action::Hold => prop_assert_eq!(&r.remove, &None),
            }
            prop_assert!(
                members.len() >= cfg.min_members as usize || members.len() >= q.n,
                "an action of ours went below the HA minimum"
            );
        }
        // Not vacuous: an undisturbed, fully known, idle cluster above the minimum does shrink.
        // (Two capacity replicas at least: with one, removing it would leave the reads nowhere.)
        let capacity = (0..q.n)
            .filter(|i| q.leader != Some(*i) && !q.replicas[*i].1 && q.replicas[*i].0 * MIB <= cfg.max_lag_bytes)
            .count();
        if q.leader.is_some() && q.disturbances.is_empty() && capacity >= 2 && q.n > cfg.min_members as usize {
            prop_assert!(shrinks > 0, "an idle cluster of {} never shrank", q.n);
        }
    }
}
