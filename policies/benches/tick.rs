//! Throughput of the vertical policy's hot path, `VerticalPolicy::tick`, in samples per second.
//!
//! A sample is one member's figure. Two shapes: one member per tick (the cost of the window and
//! the statistic dominates) and 1,000 members per tick (the busiest-member scan dominates), both
//! at a 15 s interval through the default 5 min window (20 samples in the window), with a load
//! that moves across the band so grows, shrinks and holds all happen.
//!
//! A third shape, `vertical_tick_learned`, replays two weeks of a working day at 5-minute samples
//! with and without `learn`: the cost of reading the learned day on every tick.
//!
//! A fourth, `decide_texts`, is what a decision's texts cost: `decide` (the vertical policy on
//! three members, the disk policy on a slowly filling disk) with the texts left unread, as most
//! are, against the same with the summary and every detail read (written) once.
//!
//! Run: `cargo bench -p steward-policies --bench tick`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use steward_model::observation::{Figure, Source};
use steward_model::{Action, Decision, Resource, Role, Timestamp};
use steward_policies::{DiskPolicy, PolicyConfig, VerticalConfig, VerticalPolicy};

const TICKS: usize = 10_000;

/// `TICKS` ticks of `members` figures each, 15 s apart: a slow wave across the band.
fn input(members: usize) -> Vec<(Timestamp, Vec<Option<Figure>>)> {
    (0..TICKS)
        .map(|i| {
            let now = Timestamp::from_secs(i as i64 * 15);
            let wave = 1.0 + 0.9 * ((i as f64) / 200.0).sin();
            let figures = (0..members)
                .map(|m| {
                    Some(Figure::new(
                        wave * (0.5 + (m % 7) as f64 / 14.0),
                        Source::Recorded,
                        now,
                    ))
                })
                .collect();
            (now, figures)
        })
        .collect()
}

fn run(policy: &mut VerticalPolicy, input: &[(Timestamp, Vec<Option<Figure>>)]) -> f64 {
    let mut size = 2.0;
    for (now, figures) in input {
        let v = policy.tick(*now, figures, size);
        if v.action != Action::Hold {
            size = v.target;
            policy.record_change(*now, size);
        }
    }
    size
}

fn bench(c: &mut Criterion) {
    let cfg = PolicyConfig::default().database.cpu;
    let mut group = c.benchmark_group("vertical_tick");
    for members in [1usize, 3, 1000] {
        let data = input(members);
        group.throughput(Throughput::Elements((TICKS * members) as u64));
        group.bench_function(format!("{members}_members"), |b| {
            b.iter(|| {
                let mut policy = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg.clone());
                black_box(run(&mut policy, black_box(&data)))
            })
        });
    }
    group.finish();

    // The learned day's cost: two weeks of a working day at 5-minute samples, where from the
    // fourth day every tick reads the profile (the window ahead, today's last hours).
    let mut group = c.benchmark_group("vertical_tick_learned");
    let days = learned_days();
    group.throughput(Throughput::Elements(days.len() as u64));
    for learn in [false, true] {
        let cfg = VerticalConfig {
            learn,
            ..cfg.clone()
        };
        group.bench_function(if learn { "learning" } else { "reactive" }, |b| {
            b.iter(|| {
                let mut policy = VerticalPolicy::new(Role::Database, Resource::Cpu, cfg.clone());
                black_box(run(&mut policy, black_box(&days)))
            })
        });
    }
    group.finish();
}

/// The bytes a decision's texts take when read: what a reader (`/status`, the log) pays.
fn read(d: &Decision) -> usize {
    d.summary.to_string().len()
        + d.rules
            .iter()
            .map(|r| r.detail.to_string().len())
            .sum::<usize>()
}

fn bench_texts(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_texts");
    let cpu = PolicyConfig::default().database.cpu;
    let data = input(3);
    group.throughput(Throughput::Elements(TICKS as u64));
    for reading in [false, true] {
        let name = format!("vertical_{}", if reading { "read" } else { "unread" });
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut policy = VerticalPolicy::new(Role::Database, Resource::Cpu, cpu.clone());
                let mut bytes = 0;
                for (now, figures) in &data {
                    let d = policy.decide(*now, figures, 2.0);
                    if reading {
                        bytes += read(&d);
                    }
                    black_box(&d);
                }
                bytes
            })
        });
    }
    // 20 GiB of 100 growing 0.5 GiB an hour, every 15 s: a hold that says when it would fill.
    let disk = PolicyConfig::default().database.disk;
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let used: Vec<(Timestamp, [Option<Figure>; 1])> = (0..TICKS)
        .map(|i| {
            let now = Timestamp::from_secs(i as i64 * 15);
            let used = 20.0 * GIB + 0.5 * GIB * (i as f64 * 15.0 / 3600.0);
            (now, [Some(Figure::new(used, Source::Recorded, now))])
        })
        .collect();
    for reading in [false, true] {
        let name = format!("disk_{}", if reading { "read" } else { "unread" });
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut policy = DiskPolicy::new(Role::Database, disk.clone());
                let mut bytes = 0;
                for (now, used) in &used {
                    let d = policy.decide(*now, used, &[None], 100.0 * GIB);
                    if reading {
                        bytes += read(&d);
                    }
                    black_box(&d);
                }
                bytes
            })
        });
    }
    group.finish();
}

/// 14 days of one member every 5 minutes: quiet nights, a ramp to a peak at 14:00, some noise.
fn learned_days() -> Vec<(Timestamp, Vec<Option<Figure>>)> {
    (0..14 * 288)
        .map(|i| {
            let now = Timestamp::from_secs(1_767_571_200 + i as i64 * 300);
            let hour = (i % 288) as f64 / 12.0;
            let day = (-((hour - 14.0) / 3.0).powi(2)).exp();
            let noise = 0.05 * ((i * 7919) % 13) as f64 / 13.0;
            let usage = 0.3 + 1.2 * day + noise;
            (now, vec![Some(Figure::new(usage, Source::Recorded, now))])
        })
        .collect()
}

criterion_group!(benches, bench, bench_texts);
criterion_main!(benches);
