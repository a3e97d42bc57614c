//! Figures of the machine Steward runs on (sysinfo): CPUs, memory and the disk under a path,
//! to refuse a grow that cannot fit when the platform is local (Docker, libvirt on this host).
//!
//! [`HostFigures::read`] is the only I/O; [`can_fit`] is a pure function of the figures and the
//! request, with a reason for every refusal, so it is tested without touching the machine.
//! What this is not: a scheduler or a reservation. Two grows checked at once can both fit on
//! paper; the coordinator runs one disruptive action at a time, which keeps that honest.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sysinfo::{Disks, MemoryRefreshKind, System};

/// What the host has, read once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostFigures {
    /// Logical CPUs.
    pub cpus: usize,
    pub memory_total_bytes: u64,
    /// Memory the kernel can give without swapping (MemAvailable), bytes.
    pub memory_available_bytes: u64,
    /// The filesystem holding the data path, when asked for and found.
    pub disk: Option<DiskFigures>,
}

/// One filesystem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiskFigures {
    pub mount_point: PathBuf,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Reading the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading the host's cpus and memory failed")]
    System(#[source] sysinfo::Error),
    #[error("reading the host's disks failed")]
    Disks(#[source] sysinfo::Error),
}

impl HostFigures {
    /// Reads CPUs, memory and (with `data_path`) the filesystem that holds it: the mount point
    /// that is the longest prefix of the path.
    pub fn read(data_path: Option<&Path>) -> Result<HostFigures, HostError> {
        let mut sys = System::new().map_err(HostError::System)?;
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        let disk = match data_path {
            None => None,
            Some(path) => {
                let disks = Disks::new_with_refreshed_list().map_err(HostError::Disks)?;
                let all: Vec<DiskFigures> = disks
                    .iter()
                    .map(|d| DiskFigures {
                        mount_point: d.mount_point().to_path_buf(),
                        total_bytes: d.total_space(),
                        available_bytes: d.available_space(),
                    })
                    .collect();
                disk_holding(&all, path).cloned()
            }
        };
        Ok(HostFigures {
            cpus: sys.cpus().len(),
            memory_total_bytes: sys.total_memory(),
            memory_available_bytes: sys.available_memory(),
            disk,
        })
    }
}

/// The filesystem holding `path`: the deepest mount point that is a prefix of it.
pub fn disk_holding<'a>(disks: &'a [DiskFigures], path: &Path) -> Option<&'a DiskFigures> {
    disks
        .iter()
        .filter(|d| path.starts_with(&d.mount_point))
        .max_by_key(|d| d.mount_point.components().count())
}

/// What a grow asks of the host beyond what the member has now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GrowRequest {
    /// The member's new CPU limit, vCPUs (a container cannot get more than the host has).
    pub cpus: f64,
    /// Extra memory, bytes.
    pub extra_memory_bytes: u64,
    /// Extra disk, bytes.
    pub extra_disk_bytes: u64,
}

/// What must stay free after the grow, so the host itself (and Steward) keep working.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Headroom {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl Default for Headroom {
    /// 512 MiB of memory: an idle Patroni member takes ~75 MiB RSS + shared_buffers
    /// (ENVIRONMENT.md), so this leaves room for the OS, Docker and Steward with margin.
    /// 1 GiB of disk: below that, logs and the engine's own files start failing.
    fn default() -> Self {
        Headroom {
            memory_bytes: 512 * 1024 * 1024,
            disk_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Whether a grow fits, and if not, every reason why.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "reasons", rename_all = "snake_case")]
pub enum Fit {
    Fits,
    DoesNotFit(Vec<String>),
}

/// Checks a grow against the host. Pure: `host` comes from [`HostFigures::read`].
pub fn can_fit(host: &HostFigures, grow: &GrowRequest, headroom: &Headroom) -> Fit {
    let mut reasons = Vec::new();
    if grow.cpus > host.cpus as f64 {
        reasons.push(format!(
            "{} vCPUs asked, the host has {}",
            grow.cpus, host.cpus
        ));
    }
    let mem_free = host
        .memory_available_bytes
        .saturating_sub(headroom.memory_bytes);
    if grow.extra_memory_bytes > mem_free {
        reasons.push(format!(
            "{} more memory asked, {} available minus {} headroom leaves {}",
            mib(grow.extra_memory_bytes),
            mib(host.memory_available_bytes),
            mib(headroom.memory_bytes),
            mib(mem_free)
        ));
    }
    if grow.extra_disk_bytes > 0 {
        match &host.disk {
            None => reasons
                .push("more disk asked, but the filesystem of the data path is unknown".into()),
            Some(d) => {
                let free = d.available_bytes.saturating_sub(headroom.disk_bytes);
                if grow.extra_disk_bytes > free {
                    reasons.push(format!(
                        "{} more disk asked, {} available on {} minus {} headroom leaves {}",
                        mib(grow.extra_disk_bytes),
                        mib(d.available_bytes),
                        d.mount_point.display(),
                        mib(headroom.disk_bytes),
                        mib(free)
                    ));
                }
            }
        }
    }
    if reasons.is_empty() {
        Fit::Fits
    } else {
        Fit::DoesNotFit(reasons)
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}
