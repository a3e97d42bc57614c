//! What the libvirt platform does differently on hosts that cannot change vCPUs live (libvirt's
//! LXC driver, `lxc:///`): CPU as a CFS quota, memory as the cgroup's hard limit, both written
//! into the domain XML; and the per-member host folders (`host_dirs`) an LXC domain's root and
//! data live in.
//!
//! Facts this rests on (libvirt 9.0, checked on a cgroup v1 host with `virsh` and the cgroup
//! files; see `adapters/tests/it/libvirt_lxc.rs`):
//! - the LXC driver has no `virDomainSetVcpusFlags`; `virDomainSetSchedulerParametersFlags` with
//!   `vcpu_quota`/`vcpu_period` sets the domain cgroup's `cpu.cfs_quota_us`/`cpu.cfs_period_us`
//!   live: a quota of 150000 over 100000 is 1.5 CPUs for the whole domain (not per vCPU, as on
//!   QEMU);
//! - reading the scheduler parameters of a SHUT-OFF LXC domain crashes libvirtd 9.0 (a NULL
//!   cgroup in `lxcDomainGetSchedulerParametersFlags`; `virsh schedinfo --config` of an inactive
//!   domain kills the daemon): sizes are read from the domain XML instead, and a shut-off domain
//!   is resized by redefining it, never through the scheduler calls;
//! - at start the memory limit (`memory.limit_in_bytes`) is `<memtune><hard_limit>` when set,
//!   else `<memory>` (the maximum): `<currentMemory>` alone limits nothing. `virDomainSetMemory`
//!   (live) and the hard limit write the same cgroup file but two places in the XML, so Steward
//!   writes both, equal;
//! - `virDomainGetInfo`'s memory is the cgroup's usage on LXC, not the limit, and
//!   `virDomainMemoryStats`' "rss" is that usage too, page cache included: a local domain's
//!   working set is read from its cgroup's `memory.stat` instead ([`cgroup_memory`]).

use std::path::{Path, PathBuf};

/// The CFS period Steward writes with a quota, µs (the kernel's default).
pub(super) const QUOTA_PERIOD_US: u64 = 100_000;

/// The smallest CPU share a quota gives: 1 ms per 100 ms period (the kernel's minimum quota).
pub(super) const MIN_QUOTA_CPUS: f64 = 0.01;

/// How a libvirt host changes a member's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuControl {
    /// vCPUs plugged live within `<vcpu>`'s maximum (`virDomainSetVcpusFlags`): whole vCPUs.
    /// QEMU and the test driver.
    Vcpus,
    /// A CFS quota over the whole domain (`virDomainSetSchedulerParametersFlags`, `vcpu_quota`
    /// over a 100 ms `vcpu_period`): fractions of a CPU down to 0.01, applied live. The LXC
    /// driver, which cannot change vCPUs; `<vcpu>` is then only the ceiling of the size.
    Quota,
}

impl CpuControl {
    /// What a host of driver `driver` (`virConnectGetType`: `LXC`, `QEMU`, `Test`) does.
    pub fn of_driver(driver: &str) -> CpuControl {
        if driver.eq_ignore_ascii_case("lxc") {
            CpuControl::Quota
        } else {
            CpuControl::Vcpus
        }
    }
}

/// The size a quota-controlled domain's XML says: CPUs from `<cputune>` (None when it has no
/// positive quota: unlimited), memory KiB from `<memtune><hard_limit>`, else `<currentMemory>`.
pub(super) fn quota_size(xml: &str) -> (Option<f64>, Option<u64>) {
    let number = |parent: Option<&str>, child: &str| -> Option<i64> {
        let scope = match parent {
            Some(p) => element(xml, p).map(|(s, e)| &xml[s..e])?,
            None => xml,
        };
        let (s, e) = element(scope, child)?;
        element_text(&scope[s..e])?.trim().parse().ok()
    };
    let cpus = number(Some("cputune"), "quota")
        .filter(|q| *q > 0)
        .map(|quota| {
            let period = number(Some("cputune"), "period")
                .filter(|p| *p > 0)
                .unwrap_or(QUOTA_PERIOD_US as i64);
            quota as f64 / period as f64
        });
    let memory = number(Some("memtune"), "hard_limit")
        .or_else(|| number(None, "currentMemory"))
        .and_then(|kib| u64::try_from(kib).ok());
    (cpus, memory)
}

/// `xml` with the CPU quota (`<cputune>` period and quota) and the memory limit
/// (`<memtune><hard_limit>` and `<currentMemory>`, KiB) set, everything else as it was.
pub(super) fn with_quota(xml: &str, quota_us: i64, memory_kib: u64) -> String {
    let xml = upsert_child(
        xml,
        "cputune",
        "period",
        &format!("<period>{QUOTA_PERIOD_US}</period>"),
    );
    let xml = upsert_child(
        &xml,
        "cputune",
        "quota",
        &format!("<quota>{quota_us}</quota>"),
    );
    let xml = upsert_child(
        &xml,
        "memtune",
        "hard_limit",
        &format!("<hard_limit unit='KiB'>{memory_kib}</hard_limit>"),
    );
    let current = format!("<currentMemory unit='KiB'>{memory_kib}</currentMemory>");
    match element(&xml, "currentMemory") {
        Some((s, e)) => format!("{}{current}{}", &xml[..s], &xml[e..]),
        None => insert_in_domain(&xml, &current),
    }
}

/// The byte range of the first element `<name ...>...</name>` (or `<name .../>`) in `xml`.
/// libvirt formats its XML regularly and none of the elements asked for nests in itself.
fn element(xml: &str, name: &str) -> Option<(usize, usize)> {
    let open = format!("<{name}");
    let mut from = 0;
    loop {
        let at = from + xml[from..].find(&open)?;
        let after = at + open.len();
        let next = xml[after..].chars().next()?;
        if next == '>' || next == '/' || next.is_whitespace() {
            let tag_end = after + xml[after..].find('>')?;
            if xml[..tag_end].ends_with('/') {
                return Some((at, tag_end + 1));
            }
            let close = format!("</{name}>");
            let end = tag_end + xml[tag_end..].find(&close)? + close.len();
            return Some((at, end));
        }
        from = after;
    }
}

/// The text between an element's opening and closing tags (None for `<x/>`).
fn element_text(element: &str) -> Option<&str> {
    let start = element.find('>')? + 1;
    let end = element.rfind("</")?;
    (start <= end).then(|| &element[start..end])
}

/// `xml` with `new_child` in place of `parent`'s `child` element, or added to `parent`, or in a
/// new `parent` element at the end of the domain.
fn upsert_child(xml: &str, parent: &str, child: &str, new_child: &str) -> String {
    let Some((s, e)) = element(xml, parent) else {
        return insert_in_domain(xml, &format!("<{parent}>{new_child}</{parent}>"));
    };
    let old = &xml[s..e];
    let new = if old.ends_with("/>") {
        let attrs = old[1 + parent.len()..old.len() - 2].trim_end();
        format!("<{parent}{attrs}>{new_child}</{parent}>")
    } else if let Some((cs, ce)) = element(old, child) {
        format!("{}{new_child}{}", &old[..cs], &old[ce..])
    } else {
        let close = old.len() - parent.len() - 3;
        format!("{}{new_child}{}", &old[..close], &old[close..])
    };
    format!("{}{new}{}", &xml[..s], &xml[e..])
}

/// `xml` with `element` added as the domain's last child (libvirt does not care about order).
fn insert_in_domain(xml: &str, element: &str) -> String {
    match xml.rfind("</domain>") {
        Some(at) => format!("{}{element}{}", &xml[..at], &xml[at..]),
        None => xml.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Memory from the cgroup
// ---------------------------------------------------------------------------------------------

/// What the kernel says of a running local LXC domain's memory: its working set (RSS + shared
/// memory, not page cache, as the platform port asks; libvirt's own "rss" is the cgroup's whole
/// usage, page cache included) and its OOM kills. The domain's id is the pid of its controller
/// (`libvirt_lxc`), which lives in the domain's cgroup. None when that cgroup is not readable
/// here (a remote host, another layout).
pub(super) fn cgroup_memory(domain_id: u32) -> Option<(u64, Option<u64>)> {
    let table = std::fs::read_to_string(format!("/proc/{domain_id}/cgroup")).ok()?;
    let dir = memory_cgroup(&table)?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let used = working_set(&stat)?;
    let ooms = ["memory.oom_control", "memory.events"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|text| crate::platform::docker::parse_oom_kill(&text));
    Some((used, ooms))
}

/// The memory cgroup folder of a `/proc/<pid>/cgroup` table: v1's `memory` hierarchy, else v2's.
fn memory_cgroup(table: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in table.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(Path::new("/sys/fs/cgroup/memory").join(path));
        }
        if controllers.is_empty() {
            unified = Some(Path::new("/sys/fs/cgroup").join(path));
        }
    }
    unified
}

/// RSS + shared memory from `memory.stat`: cgroup v1's `total_rss` + `total_shmem`, or v2's
/// `anon` + `shmem`.
fn working_set(stat: &str) -> Option<u64> {
    let value = |key: &str| {
        stat.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (value("total_rss"), value("anon")) {
        (Some(rss), _) => Some(rss + value("total_shmem").unwrap_or(0)),
        (None, Some(anon)) => Some(anon + value("shmem").unwrap_or(0)),
        (None, None) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Host folders
// ---------------------------------------------------------------------------------------------

/// Makes a member's `host_dirs` (mode 0755, root's). Returns the member's own folders that did
/// not exist before: what to delete again when the create fails.
pub(super) fn make_host_dirs(dirs: &[String], member: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for dir in dirs {
        let (path, own) = super::member_folder(dir, member)
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidInput, m))?;
        if !own.exists() && !made.contains(&own) {
            made.push(own);
        }
        std::fs::create_dir_all(&path)?;
    }
    Ok(made)
}

/// A member's own folders (one per distinct folder named after it).
pub(super) fn member_folders(dirs: &[String], member: &str) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| super::member_folder(d, member).ok().map(|(_, own)| own))
        .collect();
    folders.dedup();
    folders
}

/// Deletes a member's folder, refusing while anything is mounted inside it: an LXC domain's
/// root holds bind mounts of the host's /usr, /etc, ... while it runs, and deleting through one
/// would delete the host's files. Checked in this process's mount table and in `also` (e.g.
/// libvirtd's, which runs in a mount namespace of its own).
pub(super) fn delete_member_folder(folder: &Path, also: &[PathBuf]) -> std::io::Result<()> {
    let mut tables = vec![PathBuf::from("/proc/self/mountinfo")];
    tables.extend(also.iter().cloned());
    for table in &tables {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        let inside = mount_points(&text).find(|p| p.starts_with(folder));
        if let Some(point) = inside {
            return Err(std::io::Error::other(format!(
                "{} is mounted inside {} ({}): not deleted",
                point.display(),
                folder.display(),
                table.display()
            )));
        }
    }
    match std::fs::remove_dir_all(folder) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The mount points of a `/proc/<pid>/mountinfo` table (field 5, octal escapes undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| {
        let raw = line.split(' ').nth(4)?;
        let mut out = Vec::with_capacity(raw.len());
        let bytes = raw.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\' && i + 4 <= bytes.len() {
                let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(digits, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        Some(PathBuf::from(String::from_utf8_lossy(&out).into_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What libvirt 9.0's LXC driver returned for a domain Steward created (trimmed).
    const LIVE: &str = "<domain type='lxc' id='26951'>
  <name>pg-1</name>
  <memory unit='KiB'>1048576</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <memtune>
    <hard_limit unit='KiB'>524288</hard_limit>
  </memtune>
  <vcpu placement='static'>2</vcpu>
  <cputune>
    <period>100000</period>
    <quota>150000</quota>
  </cputune>
  <os><type arch='x86_64'>exe</type><init>/bin/sleep</init></os>
</domain>";

    #[test]
    fn the_size_is_read_from_the_quota_and_the_hard_limit() {
        assert_eq!(quota_size(LIVE), (Some(1.5), Some(524_288)));
        // No quota (unlimited) and no hard limit: CPUs unknown, memory the current figure.
        let plain = "<domain type='lxc'><memory unit='KiB'>1048576</memory>\
            <currentMemory unit='KiB'>262144</currentMemory><vcpu>1</vcpu>\
            <cputune><quota>-1</quota></cputune></domain>";
        assert_eq!(quota_size(plain), (None, Some(262_144)));
    }

    #[test]
    fn writing_the_quota_replaces_what_is_there_and_keeps_the_rest() {
        let xml = with_quota(LIVE, 50_000, 262_144);
        assert_eq!(quota_size(&xml), (Some(0.5), Some(262_144)));
        assert_eq!(xml.matches("<quota>").count(), 1, "{xml}");
        assert_eq!(xml.matches("<currentMemory").count(), 1, "{xml}");
        assert!(xml.contains("<init>/bin/sleep</init>"));
        assert!(
            xml.contains("<memory unit='KiB'>1048576</memory>"),
            "the maximum stays"
        );
        // Added where missing, inside an existing element or a new one; siblings kept.
        let bare = "<domain type='lxc'><name>x</name><cputune><shares>2048</shares></cputune>\
            <memtune/></domain>";
        let xml = with_quota(bare, 200_000, 65_536);
        assert_eq!(quota_size(&xml), (Some(2.0), Some(65_536)));
        assert!(xml.contains("<shares>2048</shares>"), "{xml}");
        assert!(xml.ends_with("</domain>"), "{xml}");
        let xml = with_quota("<domain type='lxc'><name>x</name></domain>", 100_000, 1024);
        assert_eq!(quota_size(&xml), (Some(1.0), Some(1024)));
    }

    #[test]
    fn elements_are_matched_by_their_whole_name() {
        let xml = "<domain><memoryBacking/><memory>1</memory><currentMemory>2</currentMemory>\
            <cputune><emulator_quota>5</emulator_quota><quota>7</quota></cputune></domain>";
        let (s, e) = element(xml, "memory").unwrap();
        assert_eq!(&xml[s..e], "<memory>1</memory>");
        assert_eq!(quota_size(xml), (Some(7.0 / 100_000.0), Some(2)));
    }

    #[test]
    fn the_working_set_is_rss_and_shared_memory_of_the_memory_cgroup() {
        // /proc/<controller pid>/cgroup of an LXC domain on this cgroup v1 host.
        let v1 = "9:name=systemd:/\n8:pids:/\n4:memory:/machine/lxc-6823-pg-1.libvirt-lxc\n\
            1:cpu:/machine/lxc-6823-pg-1.libvirt-lxc\n0::/\n";
        assert_eq!(
            memory_cgroup(v1),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/machine/lxc-6823-pg-1.libvirt-lxc"
            ))
        );
        let v2 = "0::/machine.slice/machine-lxc\\x2d6823\\x2dpg\\x2d1.scope\n";
        assert_eq!(
            memory_cgroup(v2),
            Some(PathBuf::from(
                "/sys/fs/cgroup/machine.slice/machine-lxc\\x2d6823\\x2dpg\\x2d1.scope"
            ))
        );
        // Page cache (a clone's data files) is not counted.
        let stat_v1 = "cache 1400000000\nrss 70021120\nshmem 0\ntotal_cache 1400000000\n\
            total_rss 70021120\ntotal_shmem 134217728\ntotal_rss_huge 0\n";
        assert_eq!(working_set(stat_v1), Some(70_021_120 + 134_217_728));
        let stat_v2 = "anon 70021120\nfile 1400000000\nshmem 1048576\nanon_thp 0\n";
        assert_eq!(working_set(stat_v2), Some(70_021_120 + 1_048_576));
        assert_eq!(working_set("nothing 1\n"), None);
    }

    #[test]
    fn mount_points_undo_octal_escapes() {
        let table = "36 35 98:0 /mnt1 /mnt/with\\040space rw - ext3 /dev/root rw\n\
            37 35 98:0 / /var/lib/steward-lxc/pg-1/root/usr ro - ext4 /dev/sda rw\n";
        let points: Vec<PathBuf> = mount_points(table).collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/var/lib/steward-lxc/pg-1/root/usr")
            ]
        );
    }

    #[test]
    fn a_folder_with_a_mount_inside_is_not_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let folder = dir.join("pg-1");
        std::fs::create_dir_all(folder.join("root/usr")).unwrap();
        let table = dir.join("mountinfo");
        std::fs::write(
            &table,
            format!(
                "37 35 98:0 / {}/root/usr ro - ext4 /dev/sda rw\n",
                folder.display()
            ),
        )
        .unwrap();
        let e = delete_member_folder(&folder, std::slice::from_ref(&table)).unwrap_err();
        assert!(e.to_string().contains("not deleted"), "{e}");
        assert!(folder.exists());
        delete_member_folder(&folder, &[]).unwrap();
        assert!(!folder.exists());
        delete_member_folder(&folder, &[]).expect("already gone is done");
    }
}
