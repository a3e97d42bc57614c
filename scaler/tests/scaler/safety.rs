//! Holding still: while an operation is in flight, after a failure, on missing data, in dry-run.

use std::time::Duration;

use steward_model::Size;
use steward_policies::{PolicyConfig, RawPolicyConfig};
use steward_scaler::{Command, Event, OperationId, PlanOutcome};

use crate::world::{config, labels, live, restart_only, Harness, World, GIB};

fn size() -> Size {
    Size {
        cpus: 2.0,
        memory_bytes: 4 * GIB,
        disk_bytes: 100 * GIB,
    }
}

/// Fails when a proposal or an execution belongs to another operation than the open one.
pub fn assert_one_at_a_time(commands: &[Command]) {
    let mut open: Option<OperationId> = None;
    for (i, c) in commands.iter().enumerate() {
        match c {
            Command::Propose { plan } => {
                assert!(
                    open.is_none(),
                    "command {i}: proposal {} while {open:?} is open",
                    plan.id
                );
                open = Some(plan.id.clone());
            }
            Command::Execute { op, .. } => {
                assert_eq!(
                    open.as_ref(),
                    Some(op),
                    "command {i}: execution outside its operation"
                );
            }
            Command::Finished { report } => {
                assert_eq!(
                    open.as_ref(),
                    Some(&report.op),
                    "command {i}: finish of a closed operation"
                );
                open = None;
            }
            Command::Journal { plan } => {
                assert_eq!(
                    open.as_ref(),
                    Some(&plan.id),
                    "command {i}: journal of another operation"
                );
            }
        }
    }
}

/// No scale-out possible (max = 3 members), so only the vertical policies act.
fn no_scale_out() -> PolicyConfig {
    let mut raw = RawPolicyConfig::default();
    raw.replicas.max_members = 3;
    raw.validate().unwrap()
}

#[test]
fn nothing_else_starts_while_an_operation_is_in_flight() {
    // CPU and memory both under pressure, and a restart rollout: two operations, one after the
    // other, never interleaved.
    let mut world = World::new(3, size(), restart_only());
    world.load_databases(Some(0.95), Some(0.95));
    let mut h = Harness::new(config(no_scale_out()), world);
    assert!(h.run_until_finished(40).is_some());
    let first = h.commands.len();
    // The coordinator is slow to answer the second: the scaler waits, proposing nothing else.
    h.permit = false;
    let mut proposals = 0;
    for _ in 0..60 {
        for c in h.observe() {
            if matches!(c, Command::Propose { .. }) {
                proposals += 1;
            }
        }
    }
    assert!(
        proposals > 0,
        "the second change is proposed once the first is done"
    );
    assert_one_at_a_time(&h.commands);
    // Refused proposals executed nothing.
    assert_eq!(labels(&h.commands[first..]), Vec::<String>::new());
}

#[test]
fn an_unanswered_proposal_blocks_everything_until_it_expires() {
    let mut world = World::new(3, size(), live());
    world.load_databases(Some(0.95), Some(0.55));
    let mut h = Harness::new(config(no_scale_out()), world);
    // The coordinator does not answer.
    h.silent = true;
    let mut proposed = None;
    for _ in 0..40 {
        for c in h.observe() {
            if let Command::Propose { plan } = c {
                assert!(
                    proposed.is_none(),
                    "a second proposal while the first waits"
                );
                proposed = Some(plan.id);
            }
        }
    }
    let op = proposed.expect("proposed");
    assert!(h.scaler.in_flight().is_none());
    h.now = h.now + Duration::from_secs(61);
    let out = h.scaler.handle(Event::Tick, h.now);
    assert!(
        matches!(&out[..], [Command::Finished { report }] if report.op == op && matches!(report.outcome, PlanOutcome::Refused { .. })),
        "{out:?}"
    );
    // A late permission for the expired proposal starts nothing.
    assert!(h.scaler.handle(Event::Permitted { op }, h.now).is_empty());
    assert!(h.scaler.in_flight().is_none());
}

#[test]
fn a_failed_step_stops_the_plan() {
    let mut world = World::new(3, size(), live());
    world.load_databases(Some(0.95), Some(0.55));
    world.fail_at = Some(1);
    let mut h = Harness::new(config(no_scale_out()), world);
    assert!(matches!(
        h.run_until_finished(40),
        Some(PlanOutcome::Failed { step: 1, .. })
    ));
    assert_eq!(labels(&h.commands), ["resize pg-2", "resize pg-3"]);
    // The role is now half resized: no new resize is started over it.
    for _ in 0..40 {
        h.observe();
    }
    assert_eq!(labels(&h.commands), ["resize pg-2", "resize pg-3"]);
    assert_one_at_a_time(&h.commands);
}

#[test]
fn a_failure_is_not_retried_before_the_cooldown() {
    let mut world = World::new(3, size(), live());
    world.load_databases(Some(0.95), Some(0.55));
    world.fail_at = Some(0);
    let mut h = Harness::new(config(no_scale_out()), world);
    assert!(matches!(
        h.run_until_finished(40),
        Some(PlanOutcome::Failed { step: 0, .. })
    ));
    let failed_at = h.now;
    let mut retry_at = None;
    for _ in 0..60 {
        if !labels(&h.observe()).is_empty() {
            retry_at = Some(h.now);
            break;
        }
    }
    let retry_at = retry_at.expect("retried after the cooldown");
    // CPU cooldown 5 min, then the 3 min up window fills again.
    assert!(
        retry_at.since(failed_at) >= Duration::from_secs(5 * 60),
        "{:?}",
        retry_at.since(failed_at)
    );
}

#[test]
fn a_step_that_never_verifies_times_out() {
    let mut world = World::new(3, size(), live());
    world.load_databases(Some(0.95), Some(0.55));
    let mut h = Harness::new(config(no_scale_out()), world);
    for _ in 0..40 {
        if !labels(&h.observe()).is_empty() {
            break;
        }
    }
    h.world.member_mut("pg-2").streaming = false;
    let mut outcome = None;
    for _ in 0..60 {
        h.observe();
        h.now = h.now + Duration::from_secs(1);
        for c in h.feed(Event::Tick) {
            if let Command::Finished { report } = c {
                outcome = Some(report.outcome);
            }
        }
        if outcome.is_some() {
            break;
        }
    }
    assert!(
        matches!(outcome, Some(PlanOutcome::Failed { step: 0, .. })),
        "{outcome:?}"
    );
    assert_eq!(labels(&h.commands), ["resize pg-2"]);
}

#[test]
fn missing_metrics_produce_no_commands() {
    let mut world = World::new(3, size(), live());
    for m in world.members.iter_mut() {
        m.cpu_used = None;
        m.memory_used = None;
        m.disk_used = None;
        m.connections = None;
    }
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    for _ in 0..200 {
        let out = h.observe();
        assert!(out.is_empty(), "{out:?}");
    }
    // The same world with its figures back would act: the test can fail.
    h.world.load_databases(Some(0.95), Some(0.55));
    assert!(h.run_until_finished(40).is_some());
}

#[test]
fn dry_run_refuses_and_nothing_moves() {
    let mut world = World::new(3, size(), live());
    world.load_databases(Some(0.95), Some(0.55));
    let mut h = Harness::new(config(no_scale_out()), world);
    h.permit = false;
    let mut proposals = 0;
    for _ in 0..40 {
        for c in h.observe() {
            match c {
                Command::Propose { plan } => {
                    proposals += 1;
                    assert_eq!(plan.steps.len(), 4, "the whole plan is shown");
                }
                Command::Execute { .. } | Command::Journal { .. } => {
                    panic!("dry-run executed {c:?}")
                }
                _ => {}
            }
        }
    }
    assert!(
        proposals > 1,
        "proposed again on each observation while the data asks for it"
    );
    assert!(h.world.databases().all(|m| m.size.cpus == 2.0));
    assert_one_at_a_time(&h.commands);
}
