//! PostgreSQL settings follow a memory change: after it on a grow, before it on a shrink, with a
//! restart rollout when shared_buffers changes. A memory grow leaves shared_buffers where it is
//! (issue 17): the buffer cache grows on its own signal, as its own restart-only operation.

use steward_model::Size;
use steward_policies::PolicyConfig;
use steward_scaler::{ParamValue, PlanOutcome, Step};

use crate::world::{config, executed, labels, live, Harness, World, GIB, MIB};

#[test]
fn memory_grow_resizes_live_then_reloads_and_leaves_shared_buffers() {
    let mut world = World::new(
        3,
        Size {
            cpus: 2.0,
            memory_bytes: 4 * GIB,
            disk_bytes: 100 * GIB,
        },
        live(),
    );
    world.load_databases(Some(0.6), Some(0.95));
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(40), Some(PlanOutcome::Completed));
    // Nothing restarts and nobody is switched over: the memory is the workload's.
    assert_eq!(
        labels(&h.commands),
        ["resize pg-2", "resize pg-3", "resize pg-1", "patch"]
    );
    // 3.8 GiB used / 0.65 = 5.85 GiB, rounded up to the 256 MiB step: 6 GiB.
    assert!(h.world.databases().all(|m| m.size.memory_bytes == 6 * GIB));
    let [reload] = &h.world.patches[..] else {
        panic!("{:?}", h.world.patches)
    };
    // The reload half, once every member has its memory: 75 %, 1/16, pgtune's work_mem.
    assert_eq!(
        reload.0.get("effective_cache_size"),
        Some(&ParamValue::Megabytes(4608))
    );
    assert_eq!(
        reload.0.get("maintenance_work_mem"),
        Some(&ParamValue::Megabytes(384))
    );
    // (6144 - 1536) MB / (3 x 100) / 1 = 15.36 MB.
    assert_eq!(reload.0.get("work_mem"), Some(&ParamValue::Megabytes(15)));
    assert!(!reload.0.contains_key("shared_buffers"));
}

/// A memory shrink lowers shared_buffers (with its restarts) only when the running value is
/// above the smaller size's share; here it already fits, so the shrink restarts nothing.
#[test]
fn memory_shrink_keeps_a_shared_buffers_that_fits_the_new_size() {
    let mut world = World::new(
        3,
        Size {
            cpus: 2.0,
            memory_bytes: 8 * GIB,
            disk_bytes: 100 * GIB,
        },
        live(),
    );
    world.load_databases(Some(0.6), Some(0.2));
    for m in world
        .members
        .iter_mut()
        .filter(|m| m.role == steward_model::Role::Database)
    {
        m.shared_buffers = Some((128 * MIB) as f64);
        m.cache_hit_ratio = Some(0.999);
    }
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    assert_eq!(h.run_until_finished(200), Some(PlanOutcome::Completed));
    let steps = labels(&h.commands);
    assert!(
        !steps
            .iter()
            .any(|l| l.starts_with("restart") || l.starts_with("switchover")),
        "{steps:?}"
    );
    assert!(h.world.member("pg-1").size.memory_bytes < 8 * GIB);
    let patched: Vec<&String> = h.world.patches.iter().flat_map(|p| p.0.keys()).collect();
    assert!(
        !patched.iter().any(|k| *k == "shared_buffers"),
        "{patched:?}"
    );
}

/// A short buffer cache (hit ratio under 0.95 on every member for an hour) with shared_buffers
/// below its share of memory: its own operation, the restart-only rollout and nothing else.
#[test]
fn a_short_cache_retunes_shared_buffers_as_its_own_restart_rollout() {
    let mut world = World::new(
        3,
        Size {
            cpus: 2.0,
            memory_bytes: 4 * GIB,
            disk_bytes: 100 * GIB,
        },
        live(),
    );
    // Load inside every band: no resize competes.
    world.load_databases(Some(0.6), Some(0.6));
    for m in world
        .members
        .iter_mut()
        .filter(|m| m.role == steward_model::Role::Database)
    {
        m.shared_buffers = Some((128 * MIB) as f64);
        m.cache_hit_ratio = Some(0.91);
    }
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    // Observations are 15 s apart: the hour's window is 240 of them.
    assert_eq!(h.run_until_finished(400), Some(PlanOutcome::Completed));
    assert_eq!(
        labels(&h.commands),
        [
            "patch",
            "restart pg-2",
            "restart pg-3",
            "switchover pg-1->pg-2",
            "restart pg-1",
        ]
    );
    let [patch] = &h.world.patches[..] else {
        panic!("{:?}", h.world.patches)
    };
    // 25 % of 4 GiB, and nothing else.
    assert_eq!(patch.0.len(), 1, "{patch:?}");
    assert_eq!(
        patch.0.get("shared_buffers"),
        Some(&ParamValue::Megabytes(1024))
    );
    assert!(h.world.databases().all(|m| m.size.memory_bytes == 4 * GIB));
    assert!(h
        .world
        .databases()
        .all(|m| m.shared_buffers == Some(GIB as f64)));
    let retunes: Vec<_> = h
        .journal
        .iter()
        .filter(|(json, _)| json.contains("\"kind\":\"retune\""))
        .collect();
    assert!(!retunes.is_empty(), "the plan is journaled as a retune");
    // Two more hours as short: shared_buffers is at its share now, so nothing more happens,
    // and the decision says more memory is what would help.
    for _ in 0..480 {
        h.observe();
    }
    assert_eq!(h.world.patches.len(), 1, "{:?}", h.world.patches);
    let decision = h
        .scaler
        .decisions()
        .iter()
        .find(|d| d.knob == steward_model::decision::Knob::SharedBuffers)
        .expect("the cache decision is reported");
    assert!(
        decision.has_rule(steward_model::Rule::Bounds),
        "{decision:?}"
    );
    assert!(
        decision
            .summary
            .as_str()
            .contains("more memory is what would help"),
        "{}",
        decision.summary
    );
}

#[test]
fn memory_shrink_patches_settings_before_any_resize() {
    let mut world = World::new(
        3,
        Size {
            cpus: 2.0,
            memory_bytes: 8 * GIB,
            disk_bytes: 100 * GIB,
        },
        live(),
    );
    world.load_databases(Some(0.6), Some(0.2));
    let mut h = Harness::new(config(PolicyConfig::default()), world);
    // The memory down window is 30 min: 120 observations and then some.
    assert_eq!(h.run_until_finished(200), Some(PlanOutcome::Completed));
    assert_eq!(
        labels(&h.commands),
        [
            "patch",
            "restart pg-2",
            "resize pg-2",
            "restart pg-3",
            "resize pg-3",
            "switchover pg-1->pg-2",
            "restart pg-1",
            "resize pg-1",
        ]
    );
    // Whatever size the policy chose (smaller, the same for all), the settings are its own.
    let new = h.world.member("pg-1").size.memory_bytes;
    assert!(new < 8 * GIB, "{new}");
    assert!(h.world.databases().all(|m| m.size.memory_bytes == new));
    let mb = new / (1024 * 1024);
    let patch = &h.world.patches[0];
    assert_eq!(
        patch.0.get("shared_buffers"),
        Some(&ParamValue::Megabytes(mb / 4))
    );
    assert_eq!(
        patch.0.get("effective_cache_size"),
        Some(&ParamValue::Megabytes(mb * 3 / 4))
    );
    assert_eq!(
        patch.0.get("maintenance_work_mem"),
        Some(&ParamValue::Megabytes(mb / 16))
    );
    // Each member restarts with the smaller shared_buffers before its limit drops.
    let actions = executed(&h.commands);
    for m in ["pg-1", "pg-2", "pg-3"] {
        let restart = actions
            .iter()
            .position(|a| matches!(a, Step::RestartMember { member } if member == m));
        let resize = actions
            .iter()
            .position(|a| matches!(a, Step::Resize { member, .. } if member == m));
        assert!(
            restart < resize,
            "{m}: restart {restart:?} before resize {resize:?}"
        );
    }
}
