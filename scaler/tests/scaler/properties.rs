//! Whatever the observations, failures, failovers and answers: at most one operation in flight,
//! the leader is never drained, fenced or removed, and no fence leaves fewer healthy members than
//! the HA minimum.

use proptest::prelude::*;
use steward_model::observation::PlatformState;
use steward_model::{Role, Size};
use steward_scaler::{Command, Event, IntentKind, Step};

use crate::safety::assert_one_at_a_time;
use crate::world::{config, live, quick_policy, restart_only, Harness, World, GIB, MIB, PERIOD};

#[derive(Clone, Debug)]
enum Move {
    /// Loads as shares of the size (None = missing), connections per member, one member's lag.
    Observe {
        cpu: Option<f64>,
        memory: Option<f64>,
        connections: Option<f64>,
        lag: (usize, u64),
        /// Observed this many times in a row (loads hold a while, so windows fill).
        times: usize,
    },
    /// Patroni promotes a streaming replica.
    Failover(usize),
    /// From now on (or no longer), before each observation Patroni promotes the replica a
    /// scale-in in flight is removing: the adversarial case for the leader guard.
    ToggleAdversary,
    /// A replica stops (or resumes) streaming.
    ToggleStreaming(usize),
    /// The next action fails.
    FailNext,
    /// The coordinator starts refusing (or permitting).
    TogglePermit,
    /// The coordinator stops answering (or answers again).
    ToggleSilent,
    /// An OOM kill on a member.
    Oom(usize),
    Tick,
}

fn moves() -> impl Strategy<Value = Move> {
    prop_oneof![
        6 => (
            proptest::option::weighted(0.9, prop_oneof![0.0..0.3f64, 0.0..1.3f64]),
            proptest::option::weighted(0.9, 0.1..1.1f64),
            proptest::option::weighted(0.9, prop_oneof![0.0..20.0f64, 0.0..120.0f64]),
            (0..6usize, prop_oneof![Just(0u64), 0..64 * MIB]),
            1..12usize,
        )
            .prop_map(|(cpu, memory, connections, lag, times)| Move::Observe {
                cpu,
                memory,
                connections,
                lag,
                times
            }),
        1 => (0..6usize).prop_map(Move::Failover),
        1 => Just(Move::ToggleAdversary),
        1 => (0..6usize).prop_map(Move::ToggleStreaming),
        1 => Just(Move::FailNext),
        1 => Just(Move::TogglePermit),
        1 => Just(Move::ToggleSilent),
        1 => (0..6usize).prop_map(Move::Oom),
        1 => Just(Move::Tick),
    ]
}

/// The healthy database members in the world, leader included.
fn healthy(world: &World) -> Vec<String> {
    world
        .databases()
        .filter(|m| {
            m.state == PlatformState::Running
                && (m.leader || m.streaming && m.lag <= (16 * MIB) as f64)
        })
        .map(|m| m.name.clone())
        .collect()
}

fn check_command(world: &World, c: &Command) -> Result<(), TestCaseError> {
    if let Command::Execute { action, .. } = c {
        match action {
            Step::Drain { member } | Step::Fence { member } | Step::Remove { member, .. } => {
                prop_assert!(
                    world.leader() != Some(member.as_str()),
                    "{action:?} targets the leader"
                );
                if matches!(action, Step::Fence { .. }) {
                    let left = healthy(world).iter().filter(|m| *m != member).count();
                    prop_assert!(left >= 3, "fencing {member} leaves {left} healthy members");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Patroni's failover: the leader lock moves to `to`; the old leader follows it as a replica.
fn promote(world: &mut World, to: &str) {
    for m in world
        .members
        .iter_mut()
        .filter(|m| m.role == Role::Database)
    {
        if m.leader {
            m.leader = false;
            m.streaming = true;
        }
    }
    world.member_mut(to).leader = true;
    world.member_mut(to).streaming = false;
}

/// Promotes the member a scale-in in flight is removing, if it still runs and streams.
fn promote_victim(h: &mut Harness) {
    let victim = h.scaler.in_flight().and_then(|p| match &p.intent.kind {
        IntentKind::ScaleIn { member } => Some(member.clone()),
        _ => None,
    });
    let alive = victim.filter(|v| {
        h.world
            .members
            .iter()
            .any(|m| &m.name == v && m.streaming && m.state == PlatformState::Running)
    });
    if let Some(v) = alive {
        promote(&mut h.world, &v);
    }
}

/// Judges each command against the world as it was when the command was made: replays them over
/// a copy of the world from before the event.
fn replay(
    mut world: World,
    out: &[Command],
    now: steward_model::Timestamp,
) -> Result<(), TestCaseError> {
    for c in out {
        check_command(&world, c)?;
        if let Command::Execute { action, .. } = c {
            let _ = world.apply(action, now);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn one_operation_at_a_time_and_the_leader_is_never_removed(
        n in 3..=5usize,
        restart in any::<bool>(),
        script in proptest::collection::vec(moves(), 20..160),
    ) {
        let caps = if restart { restart_only() } else { live() };
        let world = World::new(n, Size { cpus: 2.0, memory_bytes: 4 * GIB, disk_bytes: 100 * GIB }, caps);
        let mut h = Harness::new(config(quick_policy()), world);
        let mut adversary = false;
        for m in script {
            match m {
                Move::Observe { cpu, memory, connections, lag, times } => {
                    h.world.load_databases(cpu, memory);
                    let names: Vec<String> = h.world.databases().map(|m| m.name.clone()).collect();
                    for (i, name) in names.iter().enumerate() {
                        let member = h.world.member_mut(name);
                        member.connections = connections;
                        if i == lag.0 % names.len() && !member.leader {
                            member.lag = lag.1 as f64;
                        }
                    }
                    for _ in 0..times {
                        if adversary {
                            promote_victim(&mut h);
                        }
                        h.now = h.now + PERIOD;
                        let snap = h.world.snapshot(h.now);
                        let before = h.world.clone();
                        let out = h.feed(Event::Observed(snap));
                        replay(before, &out, h.now)?;
                    }
                }
                Move::Failover(i) => {
                    let candidates: Vec<String> = h
                        .world
                        .databases()
                        .filter(|m| !m.leader && m.streaming && m.state == PlatformState::Running)
                        .map(|m| m.name.clone())
                        .collect();
                    if !candidates.is_empty() {
                        promote(&mut h.world, &candidates[i % candidates.len()]);
                    }
                }
                Move::ToggleAdversary => adversary = !adversary,
                Move::ToggleStreaming(i) => {
                    let names: Vec<String> = h.world.databases().filter(|m| !m.leader).map(|m| m.name.clone()).collect();
                    if !names.is_empty() {
                        let m = h.world.member_mut(&names[i % names.len()]);
                        m.streaming = !m.streaming;
                    }
                }
                Move::FailNext => {
                    h.world.fail_at = Some(h.world.executed.len());
                }
                Move::TogglePermit => {
                    h.permit = !h.permit;
                }
                Move::ToggleSilent => {
                    h.silent = !h.silent;
                }
                Move::Oom(i) => {
                    let names: Vec<String> = h.world.databases().map(|m| m.name.clone()).collect();
                    let name = names[i % names.len()].clone();
                    h.world.member_mut(&name).oom_kills += 1.0;
                }
                Move::Tick => {
                    h.now = h.now + std::time::Duration::from_secs(120);
                    let before = h.world.clone();
                    let out = h.feed(Event::Tick);
                    replay(before, &out, h.now)?;
                }
            }
        }
        assert_one_at_a_time(&h.commands);
    }
}
