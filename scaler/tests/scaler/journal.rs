//! Plans are values: they round-trip through JSON and resume from any step.

use steward_model::Size;
use steward_policies::PolicyConfig;
use steward_scaler::{Plan, PlanOutcome};

use crate::world::{config, labels, restart_only, Harness, World, GIB};

fn original() -> Harness {
    let mut world = World::new(
        3,
        Size {
            cpus: 2.0,
            memory_bytes: 4 * GIB,
            disk_bytes: 100 * GIB,
        },
        restart_only(),
    );
    world.load_databases(Some(0.6), Some(0.95));
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    h
}

#[test]
fn plans_round_trip_through_json() {
    let h = original();
    // Five steps (the memory grow restarts nothing for its settings since issue 17; the
    // restart-only platform restarts each member to resize it).
    assert!(h.journal.len() >= 5, "{}", h.journal.len());
    for (json, _) in &h.journal {
        let plan: Plan = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&plan).unwrap(), *json);
    }
}

#[test]
fn a_plan_resumes_from_any_step() {
    let h = original();
    let all = labels(&h.commands);
    for (k, (json, world)) in h.journal.iter().enumerate() {
        // Crashed right after journaling step k, before running it: step k runs again.
        let plan: Plan = serde_json::from_str(json).unwrap();
        let mut r = Harness::new(config(PolicyConfig::default()), world.clone());
        r.now = h.now;
        r.scaler.resume(plan, r.now).unwrap();
        assert_eq!(
            r.run_until_finished(20),
            Some(PlanOutcome::Completed),
            "resumed at {k}"
        );
        assert_eq!(labels(&r.commands), all[k..], "resumed at {k}");
        assert_eq!(
            r.world.members, h.world.members,
            "resumed at {k}: same end state"
        );
    }
}

#[test]
fn a_step_already_applied_is_not_run_again() {
    let h = original();
    let all = labels(&h.commands);
    // Crashed after step k ran but before its answer: the world is the one of journal k + 1.
    for k in 0..h.journal.len() - 1 {
        let plan: Plan = serde_json::from_str(&h.journal[k].0).unwrap();
        let world = h.journal[k + 1].1.clone();
        let mut r = Harness::new(config(PolicyConfig::default()), world);
        r.now = h.now;
        r.scaler.resume(plan, r.now).unwrap();
        assert_eq!(
            r.run_until_finished(20),
            Some(PlanOutcome::Completed),
            "resumed at {k}"
        );
        let resumed = labels(&r.commands);
        // Sizes and switchovers show they happened; restarts and patches are run again
        // (idempotent, and nothing observable proves they ran).
        let idempotent_rerun = all[k].starts_with("restart") || all[k] == "patch";
        let expected = if idempotent_rerun {
            &all[k..]
        } else {
            &all[k + 1..]
        };
        assert_eq!(resumed, expected, "resumed at {k}");
    }
}
