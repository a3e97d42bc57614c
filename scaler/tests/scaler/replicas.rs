//! Horizontal scaling: a new member counts once it streams; a removed one is drained first, is
//! never the leader, and never takes the cluster below its HA minimum.

use steward_model::{Size, Timestamp};
use steward_policies::PolicyConfig;
use steward_scaler::{Command, PlanOutcome, Step};

use crate::world::{config, executed, labels, live, quick_policy, Harness, World, GIB, MIB};

fn size() -> Size {
    Size {
        cpus: 1.0,
        memory_bytes: 4 * GIB,
        disk_bytes: 100 * GIB,
    }
}

#[test]
fn scale_out_creates_one_member_and_waits_until_it_streams() {
    // Two members: below the HA minimum of 3.
    let mut world = World::new(2, size(), live());
    world.warmup = 6;
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    let first = h.observe();
    let created: Vec<_> = executed(&first)
        .into_iter()
        .filter_map(|a| match a {
            Step::Create { spec } => Some(spec),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{first:?}");
    assert_eq!(created[0].name, "pg-3");
    assert_eq!(created[0].size, size());
    let op = h.scaler.in_flight().expect("in flight").id.clone();
    assert_eq!(created[0].operation_id, op.0);
    // Creating, then running but not streaming: not counted, nothing else happens.
    for i in 0..5 {
        let out = h.observe();
        assert!(out.is_empty(), "observation {i}: {out:?}");
        assert_eq!(h.scaler.in_flight().map(|p| &p.id), Some(&op));
    }
    let done = h.observe();
    assert!(
        matches!(&done[..], [Command::Finished { report }] if report.outcome == PlanOutcome::Completed),
        "{done:?}"
    );
    // Three members now: the HA minimum holds, no second create.
    for _ in 0..10 {
        assert!(labels(&h.observe()).is_empty());
    }
    assert_eq!(h.world.databases().count(), 3);
}

fn low_load(n: usize) -> Harness {
    let mut world = World::new(n, size(), live());
    world.load_databases(Some(0.1), Some(0.55));
    for m in world.members.iter_mut() {
        m.connections = m.connections.map(|_| 5.0);
    }
    Harness::new(config(quick_policy()), world)
}

fn removed(commands: &[Command]) -> Vec<String> {
    executed(commands)
        .into_iter()
        .filter_map(|a| match a {
            Step::Remove { member, .. } => Some(member),
            _ => None,
        })
        .collect()
}

#[test]
fn scale_in_drains_then_fences_then_removes_the_most_lagging_then_the_newest() {
    let mut h = low_load(5);
    h.world.member_mut("pg-3").lag = MIB as f64;
    h.world.member_mut("pg-4").created_at = Timestamp::from_secs(100);
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert_eq!(
        labels(&h.commands),
        ["drain pg-3", "fence pg-3", "remove pg-3"]
    );
    // Equal lag: the newest goes (pg-4 was created last).
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert_eq!(removed(&h.commands), ["pg-3", "pg-4"]);
    // Three left: the HA minimum stops it there.
    for _ in 0..40 {
        h.observe();
    }
    assert_eq!(removed(&h.commands), ["pg-3", "pg-4"]);
    assert_eq!(h.world.leader(), Some("pg-1"));
    assert!(h.commands.iter().all(|c| !matches!(
        c,
        Command::Execute {
            action: Step::Remove {
                delete_data: true,
                ..
            },
            ..
        }
    )));
}

#[test]
fn scale_in_never_goes_below_the_minimum_of_healthy_members() {
    // Four members, but two of them are not healthy (one does not stream, one lags too far):
    // removing either would leave two healthy members.
    let mut h = low_load(4);
    h.world.member_mut("pg-2").streaming = false;
    h.world.member_mut("pg-3").lag = 64.0 * MIB as f64;
    for _ in 0..40 {
        h.observe();
    }
    let touched: Vec<String> = labels(&h.commands)
        .into_iter()
        .filter(|l| l.starts_with("drain") || l.starts_with("fence") || l.starts_with("remove"))
        .collect();
    assert_eq!(touched, Vec::<String>::new());
}

#[test]
fn a_failover_during_scale_in_stops_it_before_fencing_the_new_leader() {
    let mut h = low_load(4);
    h.world.member_mut("pg-4").created_at = Timestamp::from_secs(100);
    let mut drained = false;
    for _ in 0..40 {
        if labels(&h.observe()) == ["drain pg-4"] {
            drained = true;
            break;
        }
    }
    assert!(drained);
    // Patroni promotes the member being removed.
    h.world.member_mut("pg-1").leader = false;
    h.world.member_mut("pg-1").streaming = true;
    h.world.member_mut("pg-4").leader = true;
    let out = h.observe();
    assert!(
        matches!(&out[..], [Command::Execute { .. }, Command::Finished { report }] if matches!(report.outcome, PlanOutcome::Failed { step: 1, .. })),
        "{out:?}"
    );
    // Not fenced, and put back into the balancers: it is the primary now.
    assert_eq!(labels(&out), ["undrain pg-4"]);
    assert!(!labels(&h.commands).contains(&"fence pg-4".to_string()));
}
