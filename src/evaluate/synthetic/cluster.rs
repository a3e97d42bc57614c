//! Synthetic whole-cluster recordings with seeds: the held-out half of the replica count's
//! scorecard, and recordings with OOM kills in them.
//!
//! What this is: a recording as `steward observe --record` writes it (one JSON line per member
//! and instant, [`MemberRecord`]), 14 days at 5 minutes, of a cluster of three database members
//! (2 vCPU, 4 GiB, 20 GiB each; one leader, two streaming replicas) behind two balancers (0.5
//! vCPU, 256 MiB). The load is the CPU trace of the same kind and seed ([`super::generate`]):
//! the cluster's demand, in members' worth, is `0.3 + 3.6 x value / 100` (a value of 100 % asks
//! for 3.9 members, more than the default `max_members` of 5 can give at the replica band's
//! target). The leader carries the writes (a share of 25-40 % drawn per seed), the replicas the
//! reads, evenly (HAProxy sends 5433 to the least busy replica); a member's CPU never exceeds
//! its vCPUs (a saturated member is throttled, and its recorded use says so). Connections and
//! read rate follow the member's share of the load. Memory is a base, a part that follows the
//! member's load and now and then a big sort (a few a week per member, 10-30 minutes, 0.8-1.8
//! GiB); where that would pass 95 % of the limit the kernel's OOM killer ends the backend: the
//! member's `oom_kills` counter goes up and its memory is recorded at the limit's 95 %. The disk
//! fills slowly, faster with more writes; WAL follows the writes.
//!
//! What it is not: a model of any real system, nor of how the load would move had Steward
//! resized anything: the recording is fixed, as a real one is (`evaluate`'s replica replay
//! spreads the replicas' recorded reads over the count a policy holds, see
//! `recording::respread`).
//!
//! `steward evaluate --synthetic-cluster diurnal:6-10 --baseline hpa` replays them;
//! `--write-synthetic DIR` also writes each as `DIR/<kind>-<seed>.jsonl`.

use std::io::Write;

use steward_model::observation::{PatroniRole, PlatformState};
use steward_model::record::MemberRecord;
use steward_model::{Role, Size};

use super::{Kind, SplitMix64, SAMPLES_PER_DAY};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// A database member's size.
pub const DATABASE: Size = Size {
    cpus: 2.0,
    memory_bytes: 4 * 1024 * 1024 * 1024,
    disk_bytes: 20 * 1024 * 1024 * 1024,
};
/// A balancer's size.
pub const BALANCER: Size = Size {
    cpus: 0.5,
    memory_bytes: 256 * 1024 * 1024,
    disk_bytes: 0,
};
/// The members' names: the leader first.
const DATABASES: [&str; 3] = ["pg-1", "pg-2", "pg-3"];
const BALANCERS: [&str; 2] = ["lb-1", "lb-2"];
/// Memory above this share of the limit is an OOM kill.
const OOM_AT: f64 = 0.95;

/// One generated recording: its name and its records, instant by instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// `synthetic-cluster:<kind>:<seed>`.
    pub name: String,
    pub records: Vec<MemberRecord>,
}

impl Recording {
    /// Writes the recording as JSON lines, the format `--jsonl` reads.
    pub fn write_jsonl(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for r in &self.records {
            serde_json::to_writer(&mut *out, r).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        Ok(())
    }
}

/// A member's big sorts: at each sample, the extra memory it holds (0 most of the time).
fn sorts(rng: &mut SplitMix64, samples: usize) -> Vec<f64> {
    let mut out = vec![0.0; samples];
    let p = rng.range(0.2, 0.6) / SAMPLES_PER_DAY as f64;
    let mut i = 0;
    while i < samples {
        if rng.unit() < p {
            let len = 2 + (rng.unit() * 5.0) as usize;
            let extra = rng.range(0.8, 1.8) * GIB;
            for v in out.iter_mut().skip(i).take(len) {
                *v = extra;
            }
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// Rounds to 3 decimals, so a recording written and read back replays identically.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Generates the recording of `kind` and `seed`.
pub fn generate(kind: Kind, seed: u64) -> Recording {
    let load = super::generate(kind, seed);
    // Its own stream, apart from the CPU trace's: the same seed, another purpose.
    let kind_index = Kind::ALL.iter().position(|&k| k == kind).unwrap_or(0) as u64;
    let mut rng = SplitMix64(seed.wrapping_mul(0x9e6c_63d0_676a_9a99) ^ (kind_index << 48) ^ 0xc1);
    let samples = load.values.len();
    let write_share = rng.range(0.25, 0.4);
    let base_memory = rng.range(0.8, 1.2) * GIB;
    let disk_start = rng.range(4.0, 8.0) * GIB;
    let sort_memory: Vec<Vec<f64>> = DATABASES.iter().map(|_| sorts(&mut rng, samples)).collect();
    let mut oom_kills = [0u32; DATABASES.len()];
    let mut over = [false; DATABASES.len()];
    let mut disk_used = disk_start;
    let mut records = Vec::with_capacity(samples * (DATABASES.len() + BALANCERS.len()));
    for (i, (&time, &value)) in load.times.iter().zip(&load.values).enumerate() {
        // The cluster's demand in members' worth, and what each member is asked for (vCPUs).
        let demand = 0.3 + 3.6 * value / 100.0;
        let vcpus = demand * DATABASE.cpus;
        let replicas = (DATABASES.len() - 1) as f64;
        let asked = |leader: bool| {
            if leader {
                write_share * vcpus
            } else {
                (1.0 - write_share) * vcpus / replicas
            }
        };
        let writes = asked(true) / DATABASE.cpus;
        disk_used += (0.02 + 0.1 * writes) * GIB / SAMPLES_PER_DAY as f64;
        for (m, name) in DATABASES.iter().enumerate() {
            let leader = m == 0;
            let cpu = asked(leader).min(DATABASE.cpus * 0.98);
            let utilization = cpu / DATABASE.cpus;
            let limit = DATABASE.memory_bytes as f64;
            let mut memory = base_memory + 2.0 * GIB * utilization + sort_memory[m][i];
            // The kernel ends the backend once as the memory crosses the line; the member
            // stays at the line until the sort is over.
            let crossed = memory > OOM_AT * limit;
            if crossed && !over[m] {
                oom_kills[m] += 1;
            }
            over[m] = crossed;
            memory = memory.min(OOM_AT * limit);
            records.push(MemberRecord {
                time,
                cluster: Some("synthetic".to_string()),
                member: name.to_string(),
                role: Role::Database,
                patroni_role: Some(if leader {
                    PatroniRole::Leader
                } else {
                    PatroniRole::Replica
                }),
                patroni_state: Some(if leader { "running" } else { "streaming" }.to_string()),
                platform_state: Some(PlatformState::Running),
                timeline: Some(1),
                streaming: (!leader).then_some(true),
                lag_bytes: (!leader).then(|| round(4096.0 + 64.0 * 1024.0 * writes * rng.unit())),
                cpu_used: Some(round(cpu)),
                memory_used: Some(memory.round()),
                disk_used: Some(disk_used.round()),
                wal_bytes: Some((0.3 * GIB + 0.7 * GIB * writes).round()),
                connections: Some(
                    if leader {
                        8.0 + 40.0 * utilization
                    } else {
                        4.0 + 70.0 * utilization
                    }
                    .round(),
                ),
                read_rate: (!leader).then(|| round(50.0 + 4000.0 * utilization)),
                oom_kills: Some(f64::from(oom_kills[m])),
                // A cache that holds the working set: a little worse under load.
                cache_hit_ratio: Some(round(0.995 - 0.02 * utilization)),
                shared_buffers: Some(DATABASE.memory_bytes as f64 / 4.0),
                restart_count: Some(0),
                size: Some(DATABASE),
            });
        }
        for name in BALANCERS {
            let cpu = (0.02 + 0.08 * demand).min(BALANCER.cpus * 0.98);
            records.push(MemberRecord {
                time,
                cluster: Some("synthetic".to_string()),
                member: name.to_string(),
                role: Role::Balancer,
                patroni_role: None,
                patroni_state: None,
                platform_state: Some(PlatformState::Running),
                timeline: None,
                streaming: None,
                lag_bytes: None,
                cpu_used: Some(round(cpu)),
                memory_used: Some((48.0 * MIB + 6.0 * MIB * demand).round()),
                disk_used: None,
                wal_bytes: None,
                connections: None,
                read_rate: None,
                oom_kills: Some(0.0),
                cache_hit_ratio: None,
                shared_buffers: None,
                restart_count: Some(0),
                size: Some(BALANCER),
            });
        }
    }
    Recording {
        name: format!("synthetic-cluster:{}:{seed}", kind.name()),
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonl(kind: Kind, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        generate(kind, seed).write_jsonl(&mut out).unwrap();
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_seeds_differ() {
        for kind in [Kind::Diurnal, Kind::Bursts, Kind::Mixed] {
            assert_eq!(jsonl(kind, 3), jsonl(kind, 3), "{kind:?}");
            assert_ne!(jsonl(kind, 3), jsonl(kind, 4), "{kind:?}");
        }
    }

    #[test]
    fn members_stay_within_their_size_and_the_leader_is_one() {
        for kind in Kind::ALL {
            let r = generate(kind, 1);
            assert_eq!(r.records.len(), super::super::SAMPLES * 5, "{kind:?}");
            for m in &r.records {
                let size = m.size.unwrap();
                assert!(m.cpu_used.unwrap() <= size.cpus, "{m:?}");
                assert!(m.memory_used.unwrap() <= size.memory_bytes as f64, "{m:?}");
                if let Some(disk) = m.disk_used {
                    assert!(disk < size.disk_bytes as f64, "{m:?}");
                }
            }
            let leaders = r
                .records
                .iter()
                .filter(|m| m.patroni_role == Some(PatroniRole::Leader))
                .count();
            assert_eq!(leaders, super::super::SAMPLES, "{kind:?}");
        }
    }

    #[test]
    fn oom_kills_come_where_memory_meets_the_limit_and_the_counter_only_rises() {
        let mut with_kills = 0;
        for kind in Kind::ALL {
            for seed in 1..=5 {
                let r = generate(kind, seed);
                let mut last: std::collections::HashMap<&str, f64> = Default::default();
                let mut kills = 0;
                for m in &r.records {
                    let count = m.oom_kills.unwrap();
                    let before = last.insert(&m.member, count).unwrap_or(0.0);
                    assert!(count >= before, "{m:?}");
                    if count > before {
                        kills += 1;
                        // Killed at the line: the memory recorded there.
                        let limit = m.size.unwrap().memory_bytes as f64;
                        assert!(m.memory_used.unwrap() >= OOM_AT * limit - 1.0, "{m:?}");
                    }
                }
                with_kills += usize::from(kills > 0);
            }
        }
        // Some recordings have OOM kills and some have none: both paths get replayed.
        assert!(
            with_kills > 0 && with_kills < Kind::ALL.len() * 5,
            "{with_kills}"
        );
    }
}
