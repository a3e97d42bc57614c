//! The default CPU policy over a real trace: two weeks of an Amazon RDS instance's CPU (NAB,
//! `tests/data/rds_cpu_utilization_cc0c53.csv`, MIT licence in `tests/data/LICENSE-NAB.txt`).
//!
//! The trace is the utilization in percent of one fixed-size machine, one sample every 5 min; as
//! the traces' README says, usage = value / 100 x the size the machine had. The replay applies
//! every change (the load is the load: utilization is usage / the size the policy has now).

use steward_model::observation::{Figure, Source};
use steward_model::{Action, Resource, Role, Timestamp};
use steward_policies::{PolicyConfig, VerticalPolicy};

fn trace() -> Vec<(Timestamp, f64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rds_cpu_utilization_cc0c53.csv"
    );
    let text = std::fs::read_to_string(path).expect("the trace is in tests/data");
    text.lines()
        .skip(1)
        .enumerate()
        .map(|(i, line)| {
            let (time, value) = line
                .split_once(',')
                .unwrap_or_else(|| panic!("line {}: no comma", i + 2));
            let t = Timestamp::parse(time).unwrap_or_else(|e| panic!("line {}: {e}", i + 2));
            let v: f64 = value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("line {}: {e}", i + 2));
            (t, v)
        })
        .collect()
}

struct Replay {
    changes: usize,
    direction_changes: usize,
    sizes_seen: (f64, f64),
    final_size: f64,
}

/// Replays the trace as a machine of `machine_cpus` vCPUs, the policy starting at `start`.
fn replay(machine_cpus: f64, start: f64) -> Replay {
    let cfg = PolicyConfig::default().database.cpu;
    let mut policy = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg);
    let mut size = start;
    let mut r = Replay {
        changes: 0,
        direction_changes: 0,
        sizes_seen: (size, size),
        final_size: size,
    };
    let mut last_direction = None;
    let samples = trace();
    assert_eq!(samples.len(), 4032, "the whole trace was read");
    for (t, percent) in samples {
        let usage = percent / 100.0 * machine_cpus;
        let d = policy.decide(t, &[Some(Figure::new(usage, Source::Recorded, t))], size);
        if d.action != Action::Hold {
            assert!(!d.summary.is_empty());
            if last_direction.is_some_and(|a| a != d.action) {
                r.direction_changes += 1;
            }
            last_direction = Some(d.action);
            r.changes += 1;
            size = d.target;
            policy.record_change(t, size);
            r.sizes_seen = (r.sizes_seen.0.min(size), r.sizes_seen.1.max(size));
        }
    }
    r.final_size = size;
    r
}

#[test]
fn the_default_cpu_policy_makes_few_changes_on_a_real_rds_trace() {
    // As recorded: a 2 vCPU machine at 5-25 %: one shrink to the 1 vCPU minimum, then nothing.
    let r = replay(2.0, 2.0);
    assert_eq!(r.changes, 1, "changes");
    assert_eq!(r.final_size, 1.0);
    assert_eq!(r.sizes_seen, (1.0, 2.0));
}

#[test]
fn a_busier_version_of_the_trace_stays_within_bounds_and_barely_flaps() {
    // The same shape on a machine 8 times smaller (0.4-2 vCPU of load), starting small, so the
    // policy must grow through the daily peaks: it must settle, not chase every peak.
    let cfg = PolicyConfig::default().database.cpu;
    let r = replay(8.0, cfg.min);
    assert!(r.changes >= 1, "it grows at least once");
    assert!(r.changes <= 6, "{} changes in two weeks", r.changes);
    // 3 since issue 17: growing from grow_at 0.70 instead of high 0.80 adds one grow (at 0.77 on
    // 27 February, shrunk back after the down window).
    assert!(r.direction_changes <= 3, "{} flaps", r.direction_changes);
    assert!(
        r.sizes_seen.0 >= cfg.min && r.sizes_seen.1 <= cfg.max,
        "{:?}",
        r.sizes_seen
    );
}
