//! PostgreSQL settings follow a memory change: after it on a grow, before it on a shrink, with a
//! restart rollout when shared_buffers changes.

use steward_model::Size;
use steward_policies::PolicyConfig;
use steward_scaler::{ParamValue, PlanOutcome, Step};

use crate::world::{config, executed, labels, live, Harness, World, GIB};

#[test]
fn memory_grow_resizes_first_then_restarts_then_reloads() {
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
    assert_eq!(
        labels(&h.commands),
        [
            "resize pg-2",
            "resize pg-3",
            "patch",
            "restart pg-2",
            "restart pg-3",
            "switchover pg-1->pg-2",
            "resize pg-1",
            "restart pg-1",
            "patch",
        ]
    );
    // 3.8 GiB used / 0.65 = 5.85 GiB, rounded up to the 256 MiB step: 6 GiB.
    assert!(h.world.databases().all(|m| m.size.memory_bytes == 6 * GIB));
    let [restart, reload] = &h.world.patches[..] else {
        panic!("{:?}", h.world.patches)
    };
    // The restart-only half: 25 % of 6 GiB.
    assert_eq!(restart.0.len(), 1);
    assert_eq!(
        restart.0.get("shared_buffers"),
        Some(&ParamValue::Megabytes(1536))
    );
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
