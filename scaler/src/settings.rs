//! PostgreSQL settings that follow a member's size, and the Patroni `PATCH /config` body that
//! carries them.
//!
//! What it is: pure formulas from a size (vCPUs, memory bytes) to a handful of PostgreSQL
//! parameters, with a two-stage config ([`RawSettingsConfig`] -> [`SettingsConfig`]), the
//! difference between two sizes' settings ([`SettingsDiff`]), split into the parameters that need
//! a restart and those a reload applies, and the patch ([`ConfigPatch`]) that serializes to
//! `{"postgresql":{"parameters":{...}}}`.
//!
//! What it is not: a tuner. The formulas are pgtune's (<https://pgtune.leopard.in.ua>, "mixed"
//! workload), kept simple on purpose:
//!
//! - `shared_buffers` = RAM x 25 % (restart),
//! - `effective_cache_size` = RAM x 75 % (reload; a planner hint, no memory is allocated),
//! - `maintenance_work_mem` = RAM / 16, at most 2 GiB (reload),
//! - `work_mem` = (RAM - shared_buffers) / (3 x max_connections) / max(1, workers per gather),
//!   at least 4 MiB (reload): pgtune's formula; the factor 3 allows several sort/hash nodes per
//!   query, the division by the gather workers because each parallel worker gets its own work_mem,
//! - `max_worker_processes` = max(vCPU, 8) (restart; 8 is PostgreSQL's default, kept as a floor so
//!   extensions' background workers still fit on a small member),
//! - `max_parallel_workers` = vCPU (reload),
//! - `max_parallel_workers_per_gather` = vCPU / 2 (reload).
//!
//! vCPU is the size's CPU count rounded up (1.5 vCPU -> 2). Memory values are written in
//! PostgreSQL's `MB` (1024 kB), rounded down, so the sum never exceeds the formula.

use std::collections::BTreeMap;
pub use steward_model::operation::{ConfigPatch, ParamValue};

use serde::{Deserialize, Serialize};
use steward_model::{ConfigErrors, Size};
use steward_policies::RawAmount;

const MIB: u64 = 1024 * 1024;

/// Share of RAM for `shared_buffers` (pgtune: 25 %).
pub const DEFAULT_SHARED_BUFFERS_RATIO: f64 = 0.25;
/// Share of RAM for `effective_cache_size` (pgtune: 75 %).
pub const DEFAULT_EFFECTIVE_CACHE_SIZE_RATIO: f64 = 0.75;
/// Share of RAM for `maintenance_work_mem` (pgtune: 1/16).
pub const DEFAULT_MAINTENANCE_WORK_MEM_RATIO: f64 = 1.0 / 16.0;
/// Cap on `maintenance_work_mem` (pgtune: 2 GB; more rarely helps VACUUM or CREATE INDEX).
pub const DEFAULT_MAINTENANCE_WORK_MEM_MAX: &str = "2GiB";
/// `max_connections` the `work_mem` formula assumes (PostgreSQL's default).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 100;
/// Sort/hash nodes per query the `work_mem` formula allows for (pgtune's 3).
pub const DEFAULT_WORK_MEM_NODES: u32 = 3;
/// Floor of `work_mem` (PostgreSQL's default, 4 MB).
pub const DEFAULT_WORK_MEM_MIN: &str = "4MiB";
/// Floor of `max_worker_processes` (PostgreSQL's default, 8).
pub const DEFAULT_MIN_WORKER_PROCESSES: u32 = 8;

/// `[scaler.settings]`: how PostgreSQL settings follow a resize.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettingsConfig {
    /// Patch the settings after (grow) or before (shrink) a CPU or memory change.
    pub enabled: bool,
    /// `shared_buffers` = RAM x this (0 < r < 1; default 0.25).
    pub shared_buffers_ratio: f64,
    /// `effective_cache_size` = RAM x this (0 < r <= 1; default 0.75).
    pub effective_cache_size_ratio: f64,
    /// `maintenance_work_mem` = RAM x this (0 < r < 1; default 1/16)...
    pub maintenance_work_mem_ratio: f64,
    /// ...at most this much (default `"2GiB"`).
    pub maintenance_work_mem_max: RawAmount,
    /// The `max_connections` the work_mem formula divides by (>= 1; default 100).
    pub max_connections: u32,
    /// Sort/hash nodes per query the work_mem formula allows (>= 1; default 3).
    pub work_mem_nodes: u32,
    /// Floor of `work_mem` (default `"4MiB"`).
    pub work_mem_min: RawAmount,
    /// Floor of `max_worker_processes` (>= 1; default 8).
    pub min_worker_processes: u32,
}

impl Default for RawSettingsConfig {
    fn default() -> Self {
        RawSettingsConfig {
            enabled: true,
            shared_buffers_ratio: DEFAULT_SHARED_BUFFERS_RATIO,
            effective_cache_size_ratio: DEFAULT_EFFECTIVE_CACHE_SIZE_RATIO,
            maintenance_work_mem_ratio: DEFAULT_MAINTENANCE_WORK_MEM_RATIO,
            maintenance_work_mem_max: DEFAULT_MAINTENANCE_WORK_MEM_MAX.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            work_mem_nodes: DEFAULT_WORK_MEM_NODES,
            work_mem_min: DEFAULT_WORK_MEM_MIN.into(),
            min_worker_processes: DEFAULT_MIN_WORKER_PROCESSES,
        }
    }
}

/// The settings formulas, validated: ratios in range, amounts in bytes, counts >= 1.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SettingsConfig {
    pub enabled: bool,
    pub shared_buffers_ratio: f64,
    pub effective_cache_size_ratio: f64,
    pub maintenance_work_mem_ratio: f64,
    /// Bytes.
    pub maintenance_work_mem_max: u64,
    pub max_connections: u32,
    pub work_mem_nodes: u32,
    /// Bytes.
    pub work_mem_min: u64,
    pub min_worker_processes: u32,
}

impl Default for SettingsConfig {
    fn default() -> Self {
        RawSettingsConfig::default()
            .validate()
            .expect("the built-in settings defaults are valid")
    }
}

fn ratio(errors: &mut ConfigErrors, path: &str, v: f64, allow_one: bool) {
    let ok = v.is_finite() && v > 0.0 && (v < 1.0 || allow_one && v == 1.0);
    if !ok {
        let range = if allow_one { "(0, 1]" } else { "(0, 1)" };
        errors.push(path, format!("{v} is not in {range}"));
    }
}

fn bytes(errors: &mut ConfigErrors, path: &str, amount: &RawAmount) -> u64 {
    match amount.resolve(steward_model::Resource::Memory) {
        Ok(v) => v as u64,
        Err(e) => {
            errors.push(path, e.to_string());
            0
        }
    }
}

impl RawSettingsConfig {
    /// Checks every field and reports every problem with its path (relative to this section).
    pub fn validate(self) -> Result<SettingsConfig, ConfigErrors> {
        let mut e = ConfigErrors::default();
        ratio(
            &mut e,
            "shared_buffers_ratio",
            self.shared_buffers_ratio,
            false,
        );
        ratio(
            &mut e,
            "effective_cache_size_ratio",
            self.effective_cache_size_ratio,
            true,
        );
        ratio(
            &mut e,
            "maintenance_work_mem_ratio",
            self.maintenance_work_mem_ratio,
            false,
        );
        let maintenance_work_mem_max = bytes(
            &mut e,
            "maintenance_work_mem_max",
            &self.maintenance_work_mem_max,
        );
        let work_mem_min = bytes(&mut e, "work_mem_min", &self.work_mem_min);
        for (path, v) in [
            ("max_connections", self.max_connections),
            ("work_mem_nodes", self.work_mem_nodes),
            ("min_worker_processes", self.min_worker_processes),
        ] {
            if v == 0 {
                e.push(path, "must be at least 1");
            }
        }
        if maintenance_work_mem_max < MIB && e.is_empty() {
            e.push(
                "maintenance_work_mem_max",
                "must be at least 1MiB (PostgreSQL's minimum)",
            );
        }
        e.into_result(SettingsConfig {
            enabled: self.enabled,
            shared_buffers_ratio: self.shared_buffers_ratio,
            effective_cache_size_ratio: self.effective_cache_size_ratio,
            maintenance_work_mem_ratio: self.maintenance_work_mem_ratio,
            maintenance_work_mem_max,
            max_connections: self.max_connections,
            work_mem_nodes: self.work_mem_nodes,
            work_mem_min,
            min_worker_processes: self.min_worker_processes,
        })
    }
}

/// The parameters the formulas set, and whether each needs a restart.
pub const PARAMETERS: [(&str, bool); 7] = [
    ("shared_buffers", true),
    ("effective_cache_size", false),
    ("maintenance_work_mem", false),
    ("work_mem", false),
    ("max_worker_processes", true),
    ("max_parallel_workers", false),
    ("max_parallel_workers_per_gather", false),
];

/// Whether PostgreSQL must restart for `name` to take effect (postmaster context).
pub fn needs_restart(name: &str) -> bool {
    PARAMETERS.iter().any(|(n, restart)| *n == name && *restart)
}

/// The settings for one size, by parameter name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings(pub BTreeMap<String, ParamValue>);

impl Settings {
    pub fn get(&self, name: &str) -> Option<ParamValue> {
        self.0.get(name).copied()
    }
}

fn megabytes(bytes: f64) -> u64 {
    (bytes.max(0.0) / MIB as f64).floor() as u64
}

impl SettingsConfig {
    /// The settings for a member of `size` (only CPU and memory matter).
    pub fn settings_for(&self, size: &Size) -> Settings {
        let ram = size.memory_bytes as f64;
        let vcpu = size.cpus.max(0.0).ceil() as u64;
        let per_gather = vcpu / 2;
        let shared = ram * self.shared_buffers_ratio;
        let work_mem = ((ram - shared)
            / (f64::from(self.work_mem_nodes) * f64::from(self.max_connections))
            / per_gather.max(1) as f64)
            .max(self.work_mem_min as f64);
        let maintenance =
            (ram * self.maintenance_work_mem_ratio).min(self.maintenance_work_mem_max as f64);
        let mut m = BTreeMap::new();
        let mut put = |name: &str, v: ParamValue| {
            m.insert(name.to_string(), v);
        };
        put("shared_buffers", ParamValue::Megabytes(megabytes(shared)));
        put(
            "effective_cache_size",
            ParamValue::Megabytes(megabytes(ram * self.effective_cache_size_ratio)),
        );
        put(
            "maintenance_work_mem",
            ParamValue::Megabytes(megabytes(maintenance)),
        );
        put("work_mem", ParamValue::Megabytes(megabytes(work_mem)));
        put(
            "max_worker_processes",
            ParamValue::Count(vcpu.max(u64::from(self.min_worker_processes))),
        );
        put("max_parallel_workers", ParamValue::Count(vcpu));
        put(
            "max_parallel_workers_per_gather",
            ParamValue::Count(per_gather),
        );
        Settings(m)
    }

    /// `shared_buffers` for a member of `size`, in bytes (whole megabytes, as it is written).
    /// Computed alone: the scaler asks it on every observation, and the whole settings map
    /// took eight allocations a tick per cluster (benches/fleet.rs).
    pub fn shared_buffers_for(&self, size: &Size) -> f64 {
        (megabytes(size.memory_bytes as f64 * self.shared_buffers_ratio) * MIB) as f64
    }

    /// The restart-only diff of a cache retune: `shared_buffers` to its share of `size`.
    pub fn cache_retune(&self, size: &Size) -> SettingsDiff {
        let mut diff = SettingsDiff::default();
        if let Some(v) = self.settings_for(size).get("shared_buffers") {
            diff.restart.0.insert("shared_buffers".into(), v);
        }
        diff
    }

    /// What changes between the settings of `from` and `to`.
    pub fn diff(&self, from: &Size, to: &Size) -> SettingsDiff {
        let (old, new) = (self.settings_for(from), self.settings_for(to));
        let mut diff = SettingsDiff::default();
        for (name, value) in new.0 {
            if old.get(&name) == Some(value) {
                continue;
            }
            if needs_restart(&name) {
                diff.restart.0.insert(name, value);
            } else {
                diff.reload.0.insert(name, value);
            }
        }
        diff
    }
}

/// The parameters that allocate memory per server or per backend.
const ALLOCATING: [&str; 3] = ["shared_buffers", "work_mem", "maintenance_work_mem"];

/// The parameters that change, split by how they take effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsDiff {
    /// Take effect only after PostgreSQL restarts (`shared_buffers`, `max_worker_processes`).
    pub restart: ConfigPatch,
    /// Take effect on the reload Patroni does after `PATCH /config`.
    pub reload: ConfigPatch,
}

impl SettingsDiff {
    pub fn is_empty(&self) -> bool {
        self.restart.0.is_empty() && self.reload.0.is_empty()
    }

    /// The diff of a memory grow made because the workload ran out of memory (an OOM kill):
    /// the new memory is the workload's headroom, so nothing that allocates follows it
    /// (`shared_buffers` would hand most of it to the buffer cache, and restart every member;
    /// `work_mem` and `maintenance_work_mem` would let each backend use it up again). Only
    /// `effective_cache_size`, a planner hint that allocates nothing, stays (issue 17).
    pub fn for_headroom(&self) -> SettingsDiff {
        let keep = |patch: &ConfigPatch| {
            ConfigPatch(
                patch
                    .0
                    .iter()
                    .filter(|(name, _)| !ALLOCATING.contains(&name.as_str()))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
            )
        };
        SettingsDiff {
            restart: keep(&self.restart),
            reload: keep(&self.reload),
        }
    }

    /// The diff of an ordinary memory grow: `shared_buffers` stays where it is. The new memory
    /// is the workload's until the buffer cache says it is short (`policies::cache`, its own
    /// restart-only decision), so a memory grow restarts nothing for it (issue 17).
    pub fn for_memory_grow(&self) -> SettingsDiff {
        let mut diff = self.clone();
        diff.restart.0.remove("shared_buffers");
        diff
    }

    /// The diff of a memory shrink when the members run `running` bytes of `shared_buffers`
    /// (the largest; `None` unknown): it goes down only when it is above what the new size's
    /// settings give it (a shrink must not leave the cache bigger than its share). Unknown, it
    /// follows the size, as every setting does.
    pub fn for_memory_shrink(&self, running: Option<f64>) -> SettingsDiff {
        let mut diff = self.clone();
        let fits = match (running, diff.restart.0.get("shared_buffers")) {
            (Some(running), Some(ParamValue::Megabytes(new))) => running <= (new * MIB) as f64,
            _ => false,
        };
        if fits {
            diff.restart.0.remove("shared_buffers");
        }
        diff
    }

    /// Both halves in one patch.
    pub fn all(&self) -> ConfigPatch {
        let mut p = self.restart.clone();
        p.0.extend(self.reload.0.clone());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * MIB;

    #[test]
    fn shared_buffers_alone_is_what_the_settings_write() {
        let config = SettingsConfig::default();
        for memory_bytes in [0, 1, MIB - 1, MIB, 3 << 30, (4 << 30) + 12345, 1 << 40] {
            let size = Size {
                cpus: 2.0,
                memory_bytes,
                disk_bytes: 10 << 30,
            };
            let written = match config.settings_for(&size).get("shared_buffers") {
                Some(ParamValue::Megabytes(mb)) => (mb * MIB) as f64,
                other => panic!("shared_buffers written as {other:?}"),
            };
            assert_eq!(
                config.shared_buffers_for(&size),
                written,
                "{memory_bytes} bytes"
            );
        }
    }

    #[test]
    fn defaults_follow_pgtune() {
        let s = SettingsConfig::default().settings_for(&Size {
            cpus: 4.0,
            memory_bytes: 8 * GIB,
            disk_bytes: 0,
        });
        assert_eq!(s.get("shared_buffers"), Some(ParamValue::Megabytes(2048)));
        assert_eq!(
            s.get("effective_cache_size"),
            Some(ParamValue::Megabytes(6144))
        );
        assert_eq!(
            s.get("maintenance_work_mem"),
            Some(ParamValue::Megabytes(512))
        );
        // (8192 - 2048) MB / (3 x 100) / 2 = 10.24 MB -> 10 MB.
        assert_eq!(s.get("work_mem"), Some(ParamValue::Megabytes(10)));
        assert_eq!(s.get("max_worker_processes"), Some(ParamValue::Count(8)));
        assert_eq!(s.get("max_parallel_workers"), Some(ParamValue::Count(4)));
        assert_eq!(
            s.get("max_parallel_workers_per_gather"),
            Some(ParamValue::Count(2))
        );
    }

    #[test]
    fn floors_and_caps_apply() {
        let cfg = SettingsConfig::default();
        let small = cfg.settings_for(&Size {
            cpus: 1.0,
            memory_bytes: GIB,
            disk_bytes: 0,
        });
        assert_eq!(small.get("work_mem"), Some(ParamValue::Megabytes(4)));
        assert_eq!(
            small.get("max_worker_processes"),
            Some(ParamValue::Count(8))
        );
        let big = cfg.settings_for(&Size {
            cpus: 16.0,
            memory_bytes: 64 * GIB,
            disk_bytes: 0,
        });
        assert_eq!(
            big.get("maintenance_work_mem"),
            Some(ParamValue::Megabytes(2048))
        );
        assert_eq!(big.get("max_worker_processes"), Some(ParamValue::Count(16)));
    }

    #[test]
    fn diff_splits_restart_from_reload() {
        let cfg = SettingsConfig::default();
        let from = Size {
            cpus: 2.0,
            memory_bytes: 4 * GIB,
            disk_bytes: 0,
        };
        let cpu_only = cfg.diff(&from, &Size { cpus: 4.0, ..from });
        // 2 -> 4 vCPU keeps max_worker_processes at its floor of 8: no restart needed.
        assert!(cpu_only.restart.is_empty(), "{cpu_only:?}");
        assert!(cpu_only.reload.0.contains_key("max_parallel_workers"));
        let mem = cfg.diff(
            &from,
            &Size {
                memory_bytes: 8 * GIB,
                ..from
            },
        );
        assert_eq!(mem.restart.0.keys().collect::<Vec<_>>(), ["shared_buffers"]);
        assert!(!mem.reload.0.contains_key("max_parallel_workers"));
    }

    #[test]
    fn patch_has_patronis_shape_and_round_trips() {
        let mut p = ConfigPatch::default();
        p.0.insert("shared_buffers".into(), ParamValue::Megabytes(1024));
        p.0.insert("max_worker_processes".into(), ParamValue::Count(8));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"postgresql":{"parameters":{"max_worker_processes":8,"shared_buffers":"1024MB"}}}"#
        );
        assert_eq!(serde_json::from_str::<ConfigPatch>(&json).unwrap(), p);
    }

    #[test]
    fn validate_reports_every_field() {
        let raw = RawSettingsConfig {
            shared_buffers_ratio: 1.5,
            effective_cache_size_ratio: 0.0,
            max_connections: 0,
            work_mem_min: "4 parsecs".into(),
            ..RawSettingsConfig::default()
        };
        let e = raw.validate().unwrap_err();
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "shared_buffers_ratio",
                "effective_cache_size_ratio",
                "work_mem_min",
                "max_connections"
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<RawSettingsConfig>(r#"{"shared_buffer_ratio":0.3}"#);
        assert!(e.unwrap_err().to_string().contains("unknown field"));
    }
}
