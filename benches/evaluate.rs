//! Evaluation throughput: samples per second per core through Steward's vertical policy.
//!
//! 1,000 members, one day each at one sample every 15 s (5,760 samples), replayed the way
//! `steward evaluate` does it (the [`replay`] loop with its score keeping) and, for comparison,
//! straight through `VerticalPolicy::tick`. Criterion reports elements/s = samples/s; the bench
//! runs on one thread, so that is per core.
//!
//! Run: `cargo bench -p steward --bench evaluate`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use steward::evaluate::replay::replay;
use steward::evaluate::sizer::Sizer;
use steward::evaluate::steward::{limits_of, StewardVertical};
use steward_model::observation::{Figure, Source};
use steward_model::{Resource, Role, Timestamp};
use steward_policies::vertical::VerticalPolicy;
use steward_policies::PolicyConfig;

const MEMBERS: usize = 1_000;
const SAMPLES: usize = 5_760;
const PATTERNS: usize = 16;

/// Deterministic usage in vCPUs on a 2 vCPU member: a daily wave, a few surges, and noise from a
/// fixed-seed LCG, so every policy decision path (hold, grow, shrink, cooldown) is exercised.
fn patterns() -> Vec<Vec<Option<f64>>> {
    let mut seed: u64 = 0x5eed;
    (0..PATTERNS)
        .map(|p| {
            (0..SAMPLES)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5;
                    let wave = 1.0
                        + 0.6
                            * (i as f64 / SAMPLES as f64 * std::f64::consts::TAU + p as f64).sin();
                    let surge = if (i / 240 + p) % 7 == 0 { 1.2 } else { 0.0 };
                    Some((wave + surge + 0.3 * noise).max(0.0))
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = PolicyConfig::default();
    let cpu = config.database.cpu.clone();
    let limits = limits_of(&cpu);
    let times: Vec<Timestamp> = (0..SAMPLES as i64)
        .map(|i| Timestamp::from_secs(1_800_000_000 + i * 15))
        .collect();
    let usage = patterns();

    let mut group = c.benchmark_group("evaluate");
    group.sample_size(10);
    group.throughput(Throughput::Elements((MEMBERS * SAMPLES) as u64));

    group.bench_function("replay_steward_vertical_1000x5760", |b| {
        b.iter(|| {
            let mut changes = 0;
            for m in 0..MEMBERS {
                let mut sizer =
                    StewardVertical::new(Role::Database, Resource::Cpu, cpu.clone(), false);
                let track = replay(
                    &mut sizer as &mut dyn Sizer,
                    "database.cpu",
                    &times,
                    &usage[m % PATTERNS],
                    2.0,
                    limits,
                    1.0,
                    false,
                    &mut |_| {},
                );
                changes += track.summary.changes;
            }
            black_box(changes)
        })
    });

    group.bench_function("tick_only_1000x5760", |b| {
        b.iter(|| {
            let mut grows = 0u64;
            for m in 0..MEMBERS {
                let mut policy = VerticalPolicy::new(Role::Database, Resource::Cpu, cpu.clone());
                let mut size = 2.0;
                for (&at, &u) in times.iter().zip(&usage[m % PATTERNS]) {
                    let v =
                        policy.tick(at, &[u.map(|u| Figure::new(u, Source::Recorded, at))], size);
                    if v.target != size {
                        policy.record_change(at, v.target);
                        size = v.target;
                        grows += 1;
                    }
                }
            }
            black_box(grows)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
