//! Vertical rollouts: member by member, replicas first, the primary last, each step checked.

use steward_model::ports::platform::ErrorKind;
use steward_model::{Resource, Role, Size};
use steward_policies::PolicyConfig;
use steward_scaler::core::UNSURE_WAIT;
use steward_scaler::{Command, IntentKind, ParamValue, PlanOutcome, Step};

use crate::world::{config, labels, live, restart_only, Harness, World, GIB, PERIOD};

fn small() -> Size {
    Size {
        cpus: 2.0,
        memory_bytes: 4 * GIB,
        disk_bytes: 100 * GIB,
    }
}

fn cpu_pressure(caps: steward_model::ports::platform::Capabilities) -> Harness {
    let mut world = World::new(3, small(), caps);
    world.load_databases(Some(0.95), Some(0.55));
    Harness::new(config(PolicyConfig::default()), world)
}

/// Observes until the first step goes out (at most 40 observations); its labels.
fn first_step(h: &mut Harness) -> Vec<String> {
    for _ in 0..40 {
        let out = labels(&h.observe());
        if !out.is_empty() {
            return out;
        }
    }
    Vec::new()
}

/// A lent observation (`Scaler::observed`, which copies the snapshot only to keep it) drives
/// the scaler exactly as a given one: the same commands and journal through a whole rollout,
/// and the same idle ticks after it.
#[test]
fn a_lent_observation_is_an_observation() {
    let run = |lend: bool| {
        let mut h = cpu_pressure(live());
        h.lend = lend;
        let outcome = h.run_until_finished(40);
        for _ in 0..5 {
            h.observe();
        }
        let journal: Vec<String> = h.journal.iter().map(|(j, _)| j.clone()).collect();
        (outcome, h.commands, journal, h.scaler.decisions().to_vec())
    };
    let given = run(false);
    assert_eq!(given.0, Some(PlanOutcome::Completed));
    assert!(!given.1.is_empty());
    assert_eq!(run(true), given);
}

#[test]
fn cpu_pressure_resizes_replica_replica_primary_then_patches() {
    let mut h = cpu_pressure(live());
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert_eq!(
        labels(&h.commands),
        ["resize pg-2", "resize pg-3", "resize pg-1", "patch"]
    );
    for m in h.world.databases() {
        assert_eq!(
            m.size.cpus, 3.0,
            "{} at 1.9 vCPU used / 0.65 target, step 0.5",
            m.name
        );
        assert_eq!(m.size.memory_bytes, 4 * GIB, "memory untouched");
    }
    // 3 vCPU: max_parallel_workers 3; per gather stays 1, max_worker_processes stays at 8.
    let patch = &h.world.patches[0];
    assert_eq!(
        patch.0.get("max_parallel_workers"),
        Some(&ParamValue::Count(3))
    );
    assert!(!patch.0.contains_key("max_worker_processes"), "{patch:?}");
    assert_eq!(
        h.world.leader(),
        Some("pg-1"),
        "a live change needs no switchover"
    );
}

#[test]
fn each_step_waits_for_the_member_to_be_healthy_again() {
    let mut h = cpu_pressure(live());
    // Until the first resize goes out.
    assert_eq!(first_step(&mut h), ["resize pg-2"]);
    // pg-2 came back but does not stream: the rollout waits.
    h.world.member_mut("pg-2").streaming = false;
    for _ in 0..5 {
        assert_eq!(labels(&h.observe()), Vec::<String>::new());
    }
    // Lag over the limit is not healthy either.
    h.world.member_mut("pg-2").streaming = true;
    h.world.member_mut("pg-2").lag = 64.0 * 1024.0 * 1024.0;
    assert_eq!(labels(&h.observe()), Vec::<String>::new());
    h.world.member_mut("pg-2").lag = 0.0;
    assert_eq!(labels(&h.observe()), ["resize pg-3"]);
    assert_eq!(labels(&h.observe()), ["resize pg-1"]);
}

/// A CPU grow on a platform that resizes by restarting: replicas, switchover, the old primary,
/// then the reload-only settings.
const RESTART_ROLLOUT: [&str; 5] = [
    "resize pg-2",
    "resize pg-3",
    "switchover pg-1->pg-2",
    "resize pg-1",
    "patch",
];

#[test]
fn a_restart_only_platform_switches_over_before_the_primary() {
    let mut h = cpu_pressure(restart_only());
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert_eq!(labels(&h.commands), RESTART_ROLLOUT);
    assert_eq!(h.world.leader(), Some("pg-2"));
    // The switchover went to a replica already at the new size.
    let intent_disruptive = h
        .commands
        .iter()
        .any(|c| matches!(c, Command::Propose { plan } if plan.intent.disruptive));
    assert!(intent_disruptive, "a restart rollout is marked disruptive");
}

/// Patroni answers a switchover once it is done, and an answer can outlive the request's
/// timeout (the lab's rolling restart, issue 14): the step's outcome is unknown, not failed, and
/// the next observation, which shows the leader moved, lets the plan go on without a second
/// switchover.
#[test]
fn a_switchover_whose_answer_was_lost_but_which_happened_goes_on() {
    let mut h = cpu_pressure(restart_only());
    h.world.lose_answer_at = Some(2);
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert_eq!(labels(&h.commands), RESTART_ROLLOUT);
    assert_eq!(h.world.leader(), Some("pg-2"));
}

/// The same unknown outcome for an action that did NOT happen: the plan waits for its check no
/// longer than UNSURE_WAIT (not the whole step timeout) and fails with the action's own error.
#[test]
fn a_step_whose_answer_was_lost_and_which_did_not_happen_fails_after_the_unsure_wait() {
    let mut h = cpu_pressure(live());
    h.world.fail_at = Some(0);
    h.world.fail_kind = ErrorKind::Transient;
    let mut issued_at = None;
    let mut outcome = None;
    for _ in 0..40 {
        let mut out = h.observe();
        out.extend(h.feed(steward_scaler::Event::Tick));
        for c in out {
            match c {
                Command::Execute { .. } if issued_at.is_none() => issued_at = Some(h.now),
                Command::Finished { report } => outcome = Some((h.now, report.outcome)),
                _ => {}
            }
        }
        if outcome.is_some() {
            break;
        }
    }
    let (ended, outcome) = outcome.expect("the plan ends");
    let waited = ended.since(issued_at.expect("a step was issued"));
    let PlanOutcome::Failed { step, reason } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(step, 0);
    assert!(reason.contains("refused by the fake"), "{reason}");
    assert!(reason.contains("check did not pass"), "{reason}");
    assert!(
        waited > UNSURE_WAIT && waited <= UNSURE_WAIT + PERIOD * 2,
        "failed {waited:?} after the step was issued"
    );
    assert_eq!(h.world.member("pg-2").size, small(), "nothing was resized");
}

#[test]
fn the_switchover_skips_a_candidate_that_is_not_healthy() {
    let mut h = cpu_pressure(restart_only());
    for _ in 0..40 {
        let l = labels(&h.observe());
        if l == ["resize pg-3"] {
            break;
        }
    }
    // pg-3 is resized and healthy; now pg-2 stops streaming (still at the new size).
    h.world.member_mut("pg-2").streaming = false;
    let next = labels(&h.observe());
    assert_eq!(next, ["switchover pg-1->pg-3"]);
}

#[test]
fn balancers_are_resized_one_at_a_time() {
    let mut world = World::new(3, small(), live());
    for lb in ["lb-1", "lb-2"] {
        world.member_mut(lb).cpu_used = Some(0.95);
    }
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert_eq!(labels(&h.commands), ["resize lb-1", "resize lb-2"]);
    assert!(
        h.world.patches.is_empty(),
        "balancers have no PostgreSQL settings"
    );
}

#[test]
fn emergency_disk_growth_is_marked_and_rolled_out() {
    let mut world = World::new(3, small(), live());
    world.member_mut("pg-1").disk_used = Some(97.0 * GIB as f64);
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(5), Some(PlanOutcome::Completed));
    let emergency: Vec<bool> = h
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::Execute {
                emergency,
                action: Step::Resize { .. },
                ..
            } => Some(*emergency),
            _ => None,
        })
        .collect();
    assert_eq!(emergency, [true, true, true]);
    // A live disk grow disrupts nothing: the fullest disk (the primary's) goes first.
    assert_eq!(
        labels(&h.commands),
        ["resize pg-1", "resize pg-2", "resize pg-3"]
    );
    assert!(h.world.databases().all(|m| m.size.disk_bytes > 100 * GIB));
}

/// Issue 14: when the disk fills and a replication slot keeps WAL for a member that left, the
/// disk decision says so (growing only buys time), naming the slot and how much it keeps.
#[test]
fn a_filling_disk_names_the_slot_that_keeps_its_wal() {
    use steward_model::observation::{Figure, SlotObservation, Source};
    let mut world = World::new(3, small(), live());
    world.member_mut("pg-1").disk_used = Some(97.0 * GIB as f64);
    world.slots = vec![SlotObservation {
        name: "pg_9".into(),
        wal_bytes: Figure::new(
            40.0 * GIB as f64,
            Source::Prometheus,
            steward_model::Timestamp::default(),
        ),
        member: None,
    }];
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    let plan = (0..5)
        .flat_map(|_| h.observe())
        .find_map(|c| match c {
            Command::Propose { plan } => Some(plan),
            _ => None,
        })
        .expect("a disk grow is proposed");
    let summary = &plan.intent.decision.summary;
    assert!(
        summary
            .as_str()
            .contains("replication slot pg_9 keeps 40.0 GiB of WAL for a member that left"),
        "{summary}"
    );
}

/// Emergencies first (issue 14): an ordinary rollout that waits for a member gives way to an
/// emergency disk grow: it ends as failed ("preempted", with the emergency's reason), and the
/// disk plan is proposed on the same observation, fullest member first.
#[test]
fn an_ordinary_rollout_waiting_gives_way_to_an_emergency() {
    let mut h = cpu_pressure(live());
    assert_eq!(first_step(&mut h), ["resize pg-2"]);
    // pg-2 stops streaming after its resize: the rollout waits for it.
    h.world.member_mut("pg-2").streaming = false;
    assert!(h.observe().is_empty());
    // Meanwhile the primary's disk fills past the critical ratio.
    h.world.member_mut("pg-1").disk_used = Some(97.0 * GIB as f64);
    let mut out = Vec::new();
    for _ in 0..5 {
        out = h.observe();
        if !out.is_empty() {
            break;
        }
    }
    let preempted = out.iter().find_map(|c| match c {
        Command::Finished { report } => Some(report.outcome.clone()),
        _ => None,
    });
    assert!(
        matches!(&preempted, Some(PlanOutcome::Failed { reason, .. }) if reason.starts_with("preempted")),
        "{out:?}"
    );
    let proposed = out.iter().find_map(|c| match c {
        Command::Propose { plan } => Some(plan.clone()),
        _ => None,
    });
    let plan = proposed.expect("the emergency is proposed at once");
    assert!(plan.intent.emergency, "{plan:?}");
    assert!(matches!(
        plan.intent.kind,
        IntentKind::Resize {
            resource: Resource::Disk,
            ..
        }
    ));
    assert_eq!(labels(&out), ["resize pg-1"], "fullest first");
}

/// Promise 12: any disk grow prevents an outage (a full disk stops PostgreSQL) and disrupts
/// nothing when live, so the driver asks the coordinator for it as such (it does not wait for a
/// degraded cluster's repairs, and runs beside one); only a disk past `critical` is an emergency
/// that preempts other plans. A CPU grow is neither.
#[test]
fn a_disk_grow_prevents_an_outage_and_only_a_critical_one_is_an_emergency() {
    let mut world = World::new(3, small(), live());
    for m in ["pg-1", "pg-2", "pg-3"] {
        world.member_mut(m).disk_used = Some(85.0 * GIB as f64);
    }
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    h.silent = true;
    let plan = (0..10)
        .flat_map(|_| h.observe())
        .find_map(|c| match c {
            Command::Propose { plan } => Some(plan),
            _ => None,
        })
        .expect("a disk grow is proposed");
    assert!(matches!(
        plan.intent.kind,
        IntentKind::Resize {
            resource: Resource::Disk,
            ..
        }
    ));
    assert!(plan.intent.prevents_outage() && !plan.intent.emergency && !plan.intent.disruptive);

    let mut h = cpu_pressure(live());
    h.silent = true;
    let plan = (0..40)
        .flat_map(|_| h.observe())
        .find_map(|c| match c {
            Command::Propose { plan } => Some(plan),
            _ => None,
        })
        .expect("a CPU grow is proposed");
    assert!(!plan.intent.prevents_outage(), "{:?}", plan.intent.kind);
}

/// A step waits for what it changed: a disk grow of a member that was already not streaming is
/// verified by its size (a stuck replica must not hold a rollout, and the cluster's slot, until
/// the step times out); a healthy member's step still waits for it to be healthy again.
#[test]
fn a_step_does_not_wait_for_a_fault_it_did_not_cause() {
    let mut world = World::new(3, small(), live());
    for m in ["pg-1", "pg-2", "pg-3"] {
        world.member_mut(m).disk_used = Some(85.0 * GIB as f64);
    }
    world.member_mut("pg-3").streaming = false;
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(20), Some(PlanOutcome::Completed));
    assert!(h.world.databases().all(|m| m.size.disk_bytes > 100 * GIB));
    assert!(
        !h.world.member("pg-3").streaming,
        "still stuck, still grown"
    );
}

/// Promise 11, nothing waits forever: a member frozen in the middle of a rollout (healthy when
/// its resize went out, never healthy again) holds the step only until `step_timeout`; then the
/// plan fails with the reason and ends, so the driver gives the cluster's slot back.
#[test]
fn a_member_frozen_in_the_middle_of_a_rollout_fails_the_step_at_its_deadline() {
    let mut h = cpu_pressure(live());
    assert_eq!(first_step(&mut h), ["resize pg-2"]);
    h.world.member_mut("pg-2").streaming = false;
    let timeout = steward_scaler::config::DEFAULT_STEP_TIMEOUT;
    let began = h.now;
    let mut ended = None;
    while ended.is_none() && h.now.since(began) < timeout * 2 {
        let mut out = h.observe();
        out.extend(h.feed(steward_scaler::Event::Tick));
        ended = out.into_iter().find_map(|c| match c {
            Command::Finished { report } => Some(report.outcome),
            _ => None,
        });
    }
    let waited = h.now.since(began);
    match ended {
        Some(PlanOutcome::Failed { step: 0, reason }) => {
            assert!(reason.contains("did not pass within"), "{reason}")
        }
        other => panic!("the rollout did not end at its deadline: {other:?}"),
    }
    assert!(
        waited > timeout && waited <= timeout + std::time::Duration::from_secs(30),
        "ended after {waited:?}, deadline {timeout:?}"
    );
    assert!(h.scaler.in_flight().is_none(), "the slot is free again");
}

#[test]
fn an_oom_kill_grows_memory_at_once() {
    let mut world = World::new(3, small(), live());
    world.load_databases(Some(0.6), Some(0.55));
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    // The first observation sets the counters' baseline; in band, nothing happens.
    assert!(h.observe().is_empty());
    h.world.member_mut("pg-3").oom_kills += 1.0;
    let out = h.observe();
    let Some(Command::Propose { plan }) = out.first() else {
        panic!("{out:?}")
    };
    // x1.2 of 4 GiB = 4.8 GiB, rounded up to the 256 MiB step: 5 GiB; no window waited for.
    assert_eq!(
        plan.intent.kind,
        IntentKind::Resize {
            role: Role::Database,
            resource: Resource::Memory,
            from: (4 * GIB) as f64,
            to: (5 * GIB) as f64
        }
    );
    assert_eq!(labels(&out), ["resize pg-2"]);
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    assert!(h.world.databases().all(|m| m.size.memory_bytes == 5 * GIB));
    // The memory added is the workload's headroom (issue 17): no setting that allocates
    // follows it, so no restart and no switchover; the planner hint does.
    let steps = labels(&h.commands);
    assert!(
        !steps
            .iter()
            .any(|l| l.starts_with("restart") || l.starts_with("switchover")),
        "{steps:?}"
    );
    let patched: Vec<&String> = h.world.patches.iter().flat_map(|p| p.0.keys()).collect();
    for allocating in ["shared_buffers", "work_mem", "maintenance_work_mem"] {
        assert!(
            !patched.iter().any(|k| *k == allocating),
            "{allocating} followed an OOM grow: {patched:?}"
        );
    }
    assert!(
        patched.iter().any(|k| *k == "effective_cache_size"),
        "{patched:?}"
    );
}

/// Memory grown because its usage stays high is the workload's too (issue 17): shared_buffers
/// stays (it grows on the cache's own signal, `policies::cache`), so the grow restarts nothing;
/// the settings that follow the size by reload do.
#[test]
fn a_memory_grow_for_usage_leaves_shared_buffers_and_restarts_nothing() {
    let mut world = World::new(3, small(), live());
    world.load_databases(Some(0.6), Some(0.97));
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(400), Some(PlanOutcome::Completed));
    let grown = h
        .world
        .databases()
        .map(|m| m.size.memory_bytes)
        .min()
        .unwrap();
    assert!(grown > 4 * GIB, "memory grew: {grown}");
    let patched: Vec<&String> = h.world.patches.iter().flat_map(|p| p.0.keys()).collect();
    assert!(
        !patched.iter().any(|k| *k == "shared_buffers"),
        "{patched:?}"
    );
    assert!(
        patched.iter().any(|k| *k == "effective_cache_size"),
        "{patched:?}"
    );
    let steps = labels(&h.commands);
    assert!(
        !steps
            .iter()
            .any(|l| l.starts_with("restart") || l.starts_with("switchover")),
        "{steps:?}"
    );
}
