//! Synthetic CPU traces with seeds: the held-out half of `evaluate`'s scorecard.
//!
//! What this is: a generator of NAB-style traces (`timestamp,value`, one sample every 5 minutes
//! for 14 days from Monday 2026-01-05 00:00 UTC, the value in percent of one machine, 0..100)
//! in seven kinds, each the shape a database's load takes somewhere: a working day
//! (`diurnal`), a working week (`weekly`), bursts on a quiet base (`bursts`), level shifts
//! (`steps`), a slow leak with restarts (`leak`), pure noise (`noise`), and all of those at
//! once (`mixed`). A seed draws the shape's parameters (levels, peak hour, burst rate...) and
//! the noise, so two seeds of one kind are two different workloads of the same type.
//! Deterministic: the same kind and seed give the same bytes on every machine (a SplitMix64
//! generator; values rounded to 3 decimals, so a trace written as CSV replays identically).
//! What it is not: a model of any real system. It exists so that defaults can be chosen on some
//! seeds and judged on others (`tests/data/evaluate/split.toml`).
//!
//! `steward evaluate --synthetic diurnal:1-5 --size 2 --baseline all` replays them;
//! `--write-synthetic DIR` also writes each as `DIR/<kind>-<seed>.csv`.

pub mod cluster;

use std::f64::consts::TAU;
use std::io::Write;
use std::str::FromStr;

use steward_model::Timestamp;

/// Samples per trace: 14 days at 5 minutes, like the NAB traces.
pub const SAMPLES: usize = 14 * SAMPLES_PER_DAY;
/// Samples per day at 5 minutes.
pub const SAMPLES_PER_DAY: usize = 288;
/// The interval between samples, seconds.
pub const INTERVAL_SECS: i64 = 300;
/// Monday 2026-01-05 00:00:00 UTC: traces start on a Monday at midnight so the week lines up.
pub const START_SECS: i64 = 1_767_571_200;

/// A kind of workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A working day: quiet nights, a morning ramp, an afternoon peak, every day alike.
    Diurnal,
    /// The working day on weekdays, little on Saturday and Sunday.
    Weekly,
    /// A steady base with bursts of 10-60 minutes at random times.
    Bursts,
    /// A level that shifts every one to three days (a deploy, a new tenant) and stays.
    Steps,
    /// A slow climb (a leak, a growing queue) reset by a restart every three to six days.
    Leak,
    /// A level and noise, without structure: no policy can plan for it.
    Noise,
    /// Diurnal, weekly, bursts and a step at once.
    Mixed,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Diurnal,
        Kind::Weekly,
        Kind::Bursts,
        Kind::Steps,
        Kind::Leak,
        Kind::Noise,
        Kind::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Diurnal => "diurnal",
            Kind::Weekly => "weekly",
            Kind::Bursts => "bursts",
            Kind::Steps => "steps",
            Kind::Leak => "leak",
            Kind::Noise => "noise",
            Kind::Mixed => "mixed",
        }
    }
}

/// Which traces to generate: `KIND:SEED`, `KIND:FROM-TO` (seeds inclusive), `KIND` alone for
/// seed 1, with `all` for every kind: `diurnal:7`, `all:6-10`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub kinds: Vec<Kind>,
    pub seeds: std::ops::RangeInclusive<u64>,
}

impl Spec {
    /// Every (kind, seed) the spec names, kind by kind.
    pub fn traces(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        self.kinds
            .iter()
            .flat_map(|&k| self.seeds.clone().map(move |s| (k, s)))
    }
}

/// Why a `--synthetic` spec could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown kind `{0}` (expected one of diurnal, weekly, bursts, steps, leak, noise, mixed, all)")]
    Kind(String),
    #[error("bad seed `{0}` (expected a number like 7 or a range like 1-5)")]
    Seed(String),
    #[error("empty seed range `{0}`")]
    EmptyRange(String),
}

impl FromStr for Spec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Spec, SpecError> {
        let (kind, seeds) = text.trim().split_once(':').unwrap_or((text.trim(), "1"));
        let kinds = match kind {
            "all" => Kind::ALL.to_vec(),
            k => vec![Kind::ALL
                .into_iter()
                .find(|c| c.name() == k)
                .ok_or_else(|| SpecError::Kind(k.to_string()))?],
        };
        let number = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| SpecError::Seed(seeds.into()))
        };
        let seeds = match seeds.split_once('-') {
            Some((a, b)) => number(a)?..=number(b)?,
            None => number(seeds)?..=number(seeds)?,
        };
        if seeds.is_empty() {
            return Err(SpecError::EmptyRange(text.to_string()));
        }
        Ok(Spec { kinds, seeds })
    }
}

/// One generated trace: times and values in percent of the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// `synthetic:<kind>:<seed>`.
    pub name: String,
    pub times: Vec<Timestamp>,
    pub values: Vec<f64>,
}

impl Trace {
    /// Writes the trace as a NAB-style CSV: a `timestamp,value` header, then
    /// `2026-01-05 00:00:00,12.345` rows.
    pub fn write_csv(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "timestamp,value")?;
        for (t, v) in self.times.iter().zip(&self.values) {
            let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t.as_millis())
                .ok_or_else(|| std::io::Error::other("a synthetic time out of range"))?;
            writeln!(out, "{},{v:.3}", dt.format("%Y-%m-%d %H:%M:%S"))?;
        }
        Ok(())
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator whose output depends on the seed
/// alone, on every platform.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(f64::MIN_POSITIVE);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }
}

/// The working day's shape at `hour` (0..24): 0 at night, 1 at the peak hour, a ramp between.
fn day_shape(hour: f64, peak: f64, width: f64) -> f64 {
    let d = (hour - peak + 36.0) % 24.0 - 12.0; // hours from the peak, in -12..12
    if d.abs() >= width / 2.0 {
        0.0
    } else {
        0.5 * (1.0 + (TAU * d / width).cos())
    }
}

/// Slow AR(1) noise: each value 0.8 of the last plus a fresh draw (real CPU noise is correlated).
struct Wobble {
    last: f64,
    sigma: f64,
}

impl Wobble {
    fn next(&mut self, rng: &mut SplitMix64) -> f64 {
        self.last = 0.8 * self.last + self.sigma * rng.normal();
        self.last
    }
}

/// Bursts: a Poisson arrival per sample with `per_day` bursts a day, each 2-12 samples long
/// and `height` percent tall.
fn bursts(rng: &mut SplitMix64, per_day: f64, height: (f64, f64)) -> Vec<f64> {
    let mut out = vec![0.0; SAMPLES];
    let p = per_day / SAMPLES_PER_DAY as f64;
    let mut i = 0;
    while i < SAMPLES {
        if rng.unit() < p {
            let len = 2 + (rng.unit() * 11.0) as usize;
            let h = rng.range(height.0, height.1);
            for v in out.iter_mut().skip(i).take(len) {
                *v += h;
            }
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// Generates the trace of `kind` and `seed`.
pub fn generate(kind: Kind, seed: u64) -> Trace {
    // Each kind gets its own stream: diurnal:1 and bursts:1 share nothing.
    let kind_index = Kind::ALL.iter().position(|&k| k == kind).unwrap_or(0) as u64;
    let mut rng = SplitMix64(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (kind_index << 56));
    let hour_of = |i: usize| (i % SAMPLES_PER_DAY) as f64 * 24.0 / SAMPLES_PER_DAY as f64;
    let weekend = |i: usize| (i / SAMPLES_PER_DAY) % 7 >= 5;
    let mut noise = Wobble {
        last: 0.0,
        sigma: rng.range(1.5, 3.5),
    };
    let raw: Vec<f64> = match kind {
        Kind::Diurnal | Kind::Weekly => {
            let (base, amplitude) = (rng.range(6.0, 14.0), rng.range(30.0, 55.0));
            let (peak, width) = (rng.range(13.0, 16.0), rng.range(12.0, 16.0));
            let weekend_share = rng.range(0.1, 0.3);
            (0..SAMPLES)
                .map(|i| {
                    let share = if kind == Kind::Weekly && weekend(i) {
                        weekend_share
                    } else {
                        1.0
                    };
                    base + amplitude * share * day_shape(hour_of(i), peak, width)
                        + noise.next(&mut rng)
                })
                .collect()
        }
        Kind::Bursts => {
            let base = rng.range(12.0, 25.0);
            let per_day = rng.range(4.0, 10.0);
            let b = bursts(&mut rng, per_day, (30.0, 60.0));
            b.iter().map(|x| base + x + noise.next(&mut rng)).collect()
        }
        Kind::Steps => {
            let mut level = rng.range(10.0, 40.0);
            let mut next_shift = (rng.range(1.0, 3.0) * SAMPLES_PER_DAY as f64) as usize;
            (0..SAMPLES)
                .map(|i| {
                    if i == next_shift {
                        // A shift of at least 15 points, up or down, within 5..75 %.
                        let mut to = rng.range(5.0, 75.0);
                        while (to - level).abs() < 15.0 {
                            to = rng.range(5.0, 75.0);
                        }
                        level = to;
                        next_shift += (rng.range(1.0, 3.0) * SAMPLES_PER_DAY as f64) as usize;
                    }
                    level + noise.next(&mut rng)
                })
                .collect()
        }
        Kind::Leak => {
            let base = rng.range(8.0, 20.0);
            let per_day = rng.range(6.0, 14.0);
            let mut since_restart = 0usize;
            let mut restart_after = (rng.range(3.0, 6.0) * SAMPLES_PER_DAY as f64) as usize;
            (0..SAMPLES)
                .map(|_| {
                    if since_restart == restart_after {
                        since_restart = 0;
                        restart_after = (rng.range(3.0, 6.0) * SAMPLES_PER_DAY as f64) as usize;
                    }
                    let leaked = per_day * since_restart as f64 / SAMPLES_PER_DAY as f64;
                    since_restart += 1;
                    base + leaked + noise.next(&mut rng)
                })
                .collect()
        }
        Kind::Noise => {
            let (level, sigma) = (rng.range(30.0, 50.0), rng.range(10.0, 18.0));
            (0..SAMPLES).map(|_| level + sigma * rng.normal()).collect()
        }
        Kind::Mixed => {
            let (base, amplitude) = (rng.range(6.0, 12.0), rng.range(25.0, 45.0));
            let (peak, width) = (rng.range(13.0, 16.0), rng.range(12.0, 16.0));
            let weekend_share = rng.range(0.2, 0.4);
            let per_day = rng.range(2.0, 5.0);
            let b = bursts(&mut rng, per_day, (15.0, 35.0));
            let step_at = (rng.range(4.0, 10.0) * SAMPLES_PER_DAY as f64) as usize;
            let step = rng.range(10.0, 20.0);
            (0..SAMPLES)
                .map(|i| {
                    let share = if weekend(i) { weekend_share } else { 1.0 };
                    let shift = if i >= step_at { step } else { 0.0 };
                    base + shift
                        + amplitude * share * day_shape(hour_of(i), peak, width)
                        + b[i]
                        + noise.next(&mut rng)
                })
                .collect()
        }
    };
    Trace {
        name: format!("synthetic:{}:{seed}", kind.name()),
        times: (0..SAMPLES as i64)
            .map(|i| Timestamp::from_secs(START_SECS + i * INTERVAL_SECS))
            .collect(),
        values: raw
            .into_iter()
            .map(|v| (v.clamp(0.0, 100.0) * 1000.0).round() / 1000.0)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(kind: Kind, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        generate(kind, seed).write_csv(&mut out).unwrap();
        out
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Autocorrelation of `v` at `lag` samples (the covariance per overlapping pair over the
    /// variance, so a long lag is not penalised for its shorter overlap).
    fn autocorrelation(v: &[f64], lag: usize) -> f64 {
        let m = mean(v);
        let var: f64 = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        let pairs = v.len() - lag;
        let cov: f64 = v
            .iter()
            .zip(&v[lag..])
            .map(|(a, b)| (a - m) * (b - m))
            .sum();
        cov / pairs as f64 / var
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_seeds_differ() {
        for kind in Kind::ALL {
            assert_eq!(csv(kind, 3), csv(kind, 3), "{kind:?}");
            assert_ne!(csv(kind, 3), csv(kind, 4), "{kind:?}");
        }
        assert_ne!(csv(Kind::Diurnal, 1), csv(Kind::Bursts, 1));
        // A pinned value: the generator (and so the split's results) must not drift silently.
        let t = generate(Kind::Diurnal, 1);
        assert_eq!(t.values.len(), SAMPLES);
        let text = String::from_utf8(csv(Kind::Diurnal, 1)).unwrap();
        assert!(
            text.starts_with("timestamp,value\n2026-01-05 00:00:00,"),
            "{}",
            &text[..60]
        );
    }

    #[test]
    fn a_written_trace_reads_back_as_the_same_samples() {
        let t = generate(Kind::Mixed, 2);
        let bytes = csv(Kind::Mixed, 2);
        let series = crate::evaluate::input::read_csv(&bytes[..], "m.csv", false).unwrap();
        let values: Vec<f64> = series.samples.iter().map(|s| s.value).collect();
        let times: Vec<Timestamp> = series.samples.iter().map(|s| s.at).collect();
        assert_eq!(values, t.values);
        assert_eq!(times, t.times);
    }

    #[test]
    fn every_value_is_a_percentage() {
        for kind in Kind::ALL {
            for seed in 1..=3 {
                let t = generate(kind, seed);
                assert!(
                    t.values.iter().all(|v| (0.0..=100.0).contains(v)),
                    "{kind:?}"
                );
            }
        }
    }

    #[test]
    fn diurnal_repeats_every_day() {
        for seed in 1..=5 {
            let v = generate(Kind::Diurnal, seed).values;
            let day = autocorrelation(&v, SAMPLES_PER_DAY);
            let half = autocorrelation(&v, SAMPLES_PER_DAY / 2);
            assert!(
                day > 0.8 && half < 0.0,
                "seed {seed}: day {day:.2}, half a day {half:.2}"
            );
        }
    }

    #[test]
    fn weekly_is_quiet_at_the_weekend() {
        for seed in 1..=5 {
            let v = generate(Kind::Weekly, seed).values;
            let (mut weekday, mut weekend) = (Vec::new(), Vec::new());
            // The working hours, 11:00 to 17:00: nights are alike every day.
            let working = SAMPLES_PER_DAY * 11 / 24..SAMPLES_PER_DAY * 17 / 24;
            for (i, x) in v.iter().enumerate() {
                if !working.contains(&(i % SAMPLES_PER_DAY)) {
                    continue;
                }
                let day = (i / SAMPLES_PER_DAY) % 7;
                if day >= 5 { &mut weekend } else { &mut weekday }.push(*x);
            }
            let (wd, we) = (mean(&weekday), mean(&weekend));
            assert!(
                wd > 2.0 * we,
                "seed {seed}: weekdays {wd:.1}, weekend {we:.1}"
            );
            // A week later the same hour of the same weekday looks alike; a day later often not.
            let week = autocorrelation(&v, 7 * SAMPLES_PER_DAY);
            assert!(week > 0.7, "seed {seed}: {week:.2}");
        }
    }

    #[test]
    fn bursts_come_as_episodes_above_the_base() {
        for seed in 1..=5 {
            let v = generate(Kind::Bursts, seed).values;
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let base = sorted[v.len() / 2];
            // Episodes: runs of at least two samples 20 points above the median.
            let mut episodes = 0;
            let mut run = 0;
            for x in &v {
                if *x > base + 20.0 {
                    run += 1;
                    if run == 2 {
                        episodes += 1;
                    }
                } else {
                    run = 0;
                }
            }
            assert!(episodes >= 30, "seed {seed}: {episodes} bursts in 14 days");
        }
    }

    #[test]
    fn steps_hold_a_level_between_few_large_shifts() {
        for seed in 1..=5 {
            let v = generate(Kind::Steps, seed).values;
            let jumps: Vec<f64> = v.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
            let big = jumps.iter().filter(|j| **j > 12.0).count();
            let mut sorted = jumps.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            assert!((3..=14).contains(&big), "seed {seed}: {big} shifts");
            assert!(median < 4.0, "seed {seed}: median step {median:.1}");
        }
    }

    #[test]
    fn a_leak_climbs_and_a_restart_drops_it() {
        for seed in 1..=5 {
            let v = generate(Kind::Leak, seed).values;
            // The first three days climb (the first restart comes after three days or more).
            let first = mean(&v[..SAMPLES_PER_DAY / 4]);
            let third =
                mean(&v[2 * SAMPLES_PER_DAY + SAMPLES_PER_DAY * 3 / 4..3 * SAMPLES_PER_DAY]);
            assert!(
                third > first + 10.0,
                "seed {seed}: {first:.1} -> {third:.1}"
            );
            // And at least one restart: a drop of 15 points or more within an hour.
            let drops = v.windows(12).filter(|w| w[0] - w[11] > 15.0).count();
            assert!(drops >= 1, "seed {seed}");
        }
    }

    #[test]
    fn noise_has_no_daily_structure() {
        for seed in 1..=5 {
            let v = generate(Kind::Noise, seed).values;
            let day = autocorrelation(&v, SAMPLES_PER_DAY);
            let m = mean(&v);
            let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            assert!(
                day.abs() < 0.1 && sd > 8.0,
                "seed {seed}: {day:.2}, sd {sd:.1}"
            );
        }
    }

    #[test]
    fn mixed_has_a_day_a_week_and_a_step() {
        for seed in 1..=5 {
            let v = generate(Kind::Mixed, seed).values;
            assert!(autocorrelation(&v, SAMPLES_PER_DAY) > 0.4, "seed {seed}");
            // The nights of the second week sit higher than those of the first (the step).
            let night = |day: usize| mean(&v[day * SAMPLES_PER_DAY..day * SAMPLES_PER_DAY + 48]);
            let first: f64 = (0..3).map(night).sum::<f64>() / 3.0;
            let last: f64 = (11..14).map(night).sum::<f64>() / 3.0;
            assert!(
                last > first + 5.0,
                "seed {seed}: nights {first:.1} -> {last:.1}"
            );
        }
    }

    #[test]
    fn specs_name_kinds_and_seed_ranges() {
        let s: Spec = "diurnal:7".parse().unwrap();
        assert_eq!(s.traces().collect::<Vec<_>>(), vec![(Kind::Diurnal, 7)]);
        let all: Spec = "all:1-5".parse().unwrap();
        assert_eq!(all.traces().count(), 35);
        assert_eq!("leak".parse::<Spec>().unwrap().seeds, 1..=1);
        assert!(matches!("sine:1".parse::<Spec>(), Err(SpecError::Kind(_))));
        assert!(matches!("noise:x".parse::<Spec>(), Err(SpecError::Seed(_))));
        assert!(matches!(
            "noise:5-1".parse::<Spec>(),
            Err(SpecError::EmptyRange(_))
        ));
    }
}
