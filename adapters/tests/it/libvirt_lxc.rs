//! The libvirt platform on real LXC domains (`lxc:///`, a real libvirtd): the platform contract,
//! and what the LXC driver does differently, checked in the cgroup files (CPU as a quota,
//! memory as the hard limit, both live).
//!
//! libvirtd comes from `scripts/libvirtd-lxc.sh` (scripts/test.sh runs it); without one these
//! tests fail (`crate::service_missing`). Each domain runs the host's programs over an empty
//! root folder with /usr, /lib, /lib64, /bin, /sbin and /etc bind-mounted read-only, as the
//! Docker lab's containers do. No `<interface>`: a domain shares the host's network namespace
//! (checked below), so a member listens on a loopback address of its own as in the lab.
//!
//! Every domain is named `stw-<pid>-<n>-...`, and every test removes what it made when it ends,
//! also when it fails ([`Sweep`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use steward_adapters::platform::contract::{self, Harness};
use steward_adapters::platform::libvirt::{
    Clock, CpuControl, LibvirtConfigRaw, LibvirtPlatform, RoleTemplateRaw,
};
use steward_model::observation::PlatformState;
use steward_model::ports::{Change, CpuUnit, CreateSpec, ErrorKind, Platform, ResizeOutcome};
use steward_model::{Role, Size, Timestamp};
use tokio::time::Instant;
use virt::connect::Connect;
use virt::domain::Domain;

const URI: &str = "lxc:///";
const MIB: u64 = 1 << 20;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or earlier run) uses: `stw-<pid>-<n>-<tag>`.
fn unique(tag: &str) -> String {
    format!(
        "stw-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The init of a member: sleeps (no CPU), or spins (uses all the CPU its quota gives).
const SLEEP: &str = "exec sleep infinity";
const SPIN: &str = "while :; do :; done";
/// Holds 64 MiB of anonymous memory, so that a 16 MiB limit is below what it holds.
const HOLD: &str = "exec python3 -c \"import time; b = b'x' * 67108864; time.sleep(10**9)\"";

/// An LXC domain over an empty root folder with the host's programs bind-mounted read-only.
fn template(base: &Path, init: &str) -> String {
    let ro = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"]
        .iter()
        .filter(|d| Path::new(d).exists())
        .map(|d| {
            format!(
                "<filesystem type='mount' accessmode='passthrough'><source dir='{d}'/>\
                 <target dir='{d}'/><readonly/></filesystem>"
            )
        })
        .collect::<String>();
    format!(
        "<domain type='lxc'>
  <name>{{{{name}}}}</name>
  {{{{metadata}}}}
  <memory unit='KiB'>{{{{max_memory_kib}}}}</memory>
  <currentMemory unit='KiB'>{{{{memory_kib}}}}</currentMemory>
  <vcpu current='{{{{vcpus}}}}'>{{{{max_vcpus}}}}</vcpu>
  <os><type>exe</type><init>/bin/sh</init><initarg>-c</initarg><initarg>{init}</initarg></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <filesystem type='mount' accessmode='passthrough'><source dir='{}/{{{{name}}}}/root'/><target dir='/'/></filesystem>
    {ro}
    <console type='pty'/>
  </devices>
</domain>",
        base.display()
    )
}

fn ticking_clock() -> Clock {
    let t = Arc::new(AtomicI64::new(1_800_000_000_000));
    Arc::new(move || Timestamp::from_millis(t.fetch_add(1000, Ordering::SeqCst)))
}

/// A platform on `lxc:///` owning `cluster`, its members' folders under `base`; `None` when no
/// libvirtd answers and the caller may skip (`crate::service_missing`).
async fn platform(cluster: &str, base: &Path, init: &str) -> Option<LibvirtPlatform> {
    let raw = LibvirtConfigRaw {
        cluster: cluster.into(),
        uris: vec![URI.into()],
        database: RoleTemplateRaw {
            template: template(base, init),
            max_vcpus: 2,
            max_memory_bytes: 1 << 30,
            disk_target: None,
            address: "127.0.0.1".into(),
            host_dirs: vec![format!("{}/{{{{name}}}}/root", base.display())],
        },
        balancer: None,
        adopt: Vec::new(),
        addresses: Vec::new(),
        placement: Default::default(),
    };
    let config = raw.validate().expect("valid config");
    match LibvirtPlatform::connect(config, ticking_clock()).await {
        Ok(p) => {
            assert_eq!(
                p.cpu_control(URI),
                Some(CpuControl::Quota),
                "the LXC driver changes CPU as a quota"
            );
            Some(p)
        }
        Err(e) => {
            crate::service_missing(&format!(
                "no libvirtd answers on {URI} (scripts/libvirtd-lxc.sh starts one): {e:#}"
            ));
            None
        }
    }
}

fn spec(cluster: &str, name: &str, cpus: f64, memory_mib: u64) -> CreateSpec {
    CreateSpec {
        cluster: cluster.into(),
        role: Role::Database,
        name: name.into(),
        size: Size {
            cpus,
            memory_bytes: memory_mib * MIB,
            disk_bytes: 0,
        },
        operation_id: format!("op-{name}"),
        replaces: None,
    }
}

/// A connection of the test's own (not the platform's): what an operator's `virsh` sees.
fn conn() -> Connect {
    Connect::open(Some(URI)).expect("connect to lxc:///")
}

/// Destroys and undefines every domain whose name starts with its prefix when dropped: what a
/// test made goes away also when the test fails.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        sweep(&self.0);
    }
}

fn sweep(prefix: &str) {
    let Ok(mut c) = Connect::open(Some(URI)) else {
        return;
    };
    for d in c.list_all_domains(0).unwrap_or_default() {
        if d.get_name().is_ok_and(|n| n.starts_with(prefix)) {
            if d.is_active().unwrap_or(false) {
                let _ = d.destroy();
            }
            let _ = d.undefine();
        }
    }
    let _ = c.close();
}

/// The cgroup folder of a running domain for `controller` (`cpu`, `memory`), cgroup v1 or v2.
fn cgroup(name: &str, controller: &str) -> PathBuf {
    let c = conn();
    let id = Domain::lookup_by_name(&c, name)
        .ok()
        .and_then(|d| d.get_id())
        .unwrap_or_else(|| panic!("{name} is not running"));
    let leaf = format!("lxc-{id}-{name}.libvirt-lxc");
    [
        format!("/sys/fs/cgroup/{controller}/machine/{leaf}"),
        format!("/sys/fs/cgroup/machine/{leaf}"),
        format!("/sys/fs/cgroup/machine.slice/{leaf}"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("no cgroup folder for {leaf}"))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// CPUs the kernel gives the domain (quota / period), and its memory limit in bytes, from the
/// cgroup files themselves.
fn enforced(name: &str) -> (f64, u64) {
    let cpu = cgroup(name, "cpu");
    let cpus = if cpu.join("cpu.cfs_quota_us").exists() {
        let quota: f64 = read(cpu.join("cpu.cfs_quota_us")).parse().unwrap();
        let period: f64 = read(cpu.join("cpu.cfs_period_us")).parse().unwrap();
        quota / period
    } else {
        let max = read(cpu.join("cpu.max"));
        let (q, p) = max.split_once(' ').unwrap();
        q.parse::<f64>().unwrap_or(f64::INFINITY) / p.parse::<f64>().unwrap()
    };
    let memory = cgroup(name, "memory");
    let limit = if memory.join("memory.limit_in_bytes").exists() {
        read(memory.join("memory.limit_in_bytes"))
    } else {
        read(memory.join("memory.max"))
    };
    (cpus, limit.parse().unwrap_or(u64::MAX))
}

/// The PID (on the host) of the domain's init: the first process in its cgroup.
fn init_pid(name: &str) -> u32 {
    let procs = read(cgroup(name, "cpu").join("cgroup.procs"));
    procs
        .lines()
        .filter_map(|l| l.parse().ok())
        .min()
        .unwrap_or_else(|| panic!("no process in {name}'s cgroup"))
}

// --- the contract ------------------------------------------------------------------------

struct LxcHarness {
    base: tempfile::TempDir,
    prefix: String,
    cluster: String,
    round: usize,
    foreign: Option<String>,
}

#[async_trait]
impl Harness for LxcHarness {
    fn name(&self) -> String {
        "libvirt-lxc".into()
    }

    async fn platform(&mut self) -> Arc<dyn Platform> {
        self.round += 1;
        let p = platform(&self.cluster, self.base.path(), SLEEP)
            .await
            .expect("libvirtd answered before");
        Arc::new(p)
    }

    fn cluster(&self) -> String {
        self.cluster.clone()
    }

    fn database_spec(&mut self, index: usize) -> CreateSpec {
        let name = format!("{}-r{}-{index}", self.prefix, self.round);
        spec(&self.cluster, &name, 0.5, 256)
    }

    fn grown_size(&self, from: Size) -> Size {
        Size {
            cpus: from.cpus + 0.75,
            memory_bytes: from.memory_bytes + 128 * MIB,
            ..from
        }
    }

    fn impossible_size(&self, from: Size) -> Option<Size> {
        // More CPU than the template's ceiling of 2.
        Some(Size { cpus: 16.0, ..from })
    }

    fn database_hosts(&self) -> Option<usize> {
        Some(1)
    }

    async fn add_foreign(&mut self) -> Option<String> {
        // A domain without Steward's metadata, running, beside the members.
        let name = format!("{}-r{}-stranger", self.prefix, self.round);
        std::fs::create_dir_all(self.base.path().join(&name).join("root")).unwrap();
        let xml = template(self.base.path(), SLEEP)
            .replace("{{name}}", &name)
            .replace("{{metadata}}", "")
            .replace("{{max_memory_kib}}", "262144")
            .replace("{{memory_kib}}", "262144")
            .replace("{{vcpus}}", "1")
            .replace("{{max_vcpus}}", "1");
        let mut c = conn();
        let d = Domain::define_xml(&c, &xml).expect("define the foreign domain");
        d.create().expect("start the foreign domain");
        c.close().unwrap();
        self.foreign = Some(name.clone());
        Some(name)
    }

    async fn foreign_intact(&mut self, name: &str) -> bool {
        let mut c = conn();
        let running = Domain::lookup_by_name(&c, name)
            .and_then(|d| d.is_active())
            .unwrap_or(false);
        c.close().unwrap();
        running && self.base.path().join(name).join("root").exists()
    }

    async fn data_exists(&mut self, member: &str) -> Option<bool> {
        Some(self.base.path().join(member).exists())
    }

    async fn cleanup(&mut self) {
        sweep(&format!("{}-r{}-", self.prefix, self.round));
        self.foreign = None;
    }
}

#[tokio::test]
async fn lxc_domains_pass_the_platform_contract() {
    let base = tempfile::tempdir().unwrap();
    let prefix = unique("c");
    let _sweep = Sweep(prefix.clone());
    if platform("probe", base.path(), SLEEP).await.is_none() {
        return;
    }
    let mut h = LxcHarness {
        base,
        cluster: format!("{prefix}-cluster"),
        prefix,
        round: 0,
        foreign: None,
    };
    contract::run_all(&mut h).await;
}

// --- what LXC does differently -------------------------------------------------------------

#[tokio::test]
async fn cpu_is_a_quota_and_memory_a_limit_both_changed_live_in_the_cgroup() {
    let base = tempfile::tempdir().unwrap();
    let name = unique("live");
    let _sweep = Sweep(name.clone());
    let Some(p) = platform("live", base.path(), SLEEP).await else {
        return;
    };
    let caps = p.capabilities();
    assert_eq!((caps.cpu, caps.memory), (Change::Live, Change::Live));
    // Live CPU on LXC is a quota, and the capability says so.
    assert_eq!(caps.cpu_unit, CpuUnit::Quota);
    assert_eq!(caps.disk_grow, Change::Unsupported, "no disk_target");

    let started = Instant::now();
    let m = p
        .create(&spec("live", &name, 0.5, 256))
        .await
        .expect("create");
    let create_took = started.elapsed();
    assert_eq!(m.state, PlatformState::Running);
    assert_eq!((m.size.cpus, m.size.memory_bytes), (0.5, 256 * MIB));
    // Enforced from the start: the quota and the limit are in the definition it started from.
    assert_eq!(enforced(&name), (0.5, 256 * MIB));
    let pid = init_pid(&name);

    // Up: a fraction of a CPU more, and memory.
    let bigger = Size {
        cpus: 1.25,
        memory_bytes: 384 * MIB,
        disk_bytes: 0,
    };
    let started = Instant::now();
    let outcome = p.resize(&name, bigger).await.expect("resize up");
    let resize_took = started.elapsed();
    assert_eq!(outcome, ResizeOutcome::AppliedLive);
    assert_eq!(enforced(&name), (1.25, 384 * MIB));
    assert_eq!(
        init_pid(&name),
        pid,
        "the same process runs on: a live change"
    );
    let listed = p.list().await.unwrap().remove(0);
    assert_eq!(listed.size, bigger);

    // Down again, below a whole CPU.
    let smaller = Size {
        cpus: 0.25,
        memory_bytes: 128 * MIB,
        disk_bytes: 0,
    };
    p.resize(&name, smaller).await.expect("resize down");
    assert_eq!(enforced(&name), (0.25, 128 * MIB));
    assert_eq!(init_pid(&name), pid);

    // Refused, and nothing changed: above the template's ceiling, below the kernel's minimum,
    // above the maximum memory.
    for bad in [
        Size {
            cpus: 2.5,
            ..smaller
        },
        Size {
            cpus: 0.001,
            ..smaller
        },
        Size {
            memory_bytes: 2 << 30,
            ..smaller
        },
    ] {
        let e = p.resize(&name, bad).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert_eq!(
            enforced(&name),
            (0.25, 128 * MIB),
            "{bad:?} changed something"
        );
    }

    // The definition keeps the size: a fenced member restarted by an operator has it.
    p.fence(&name).await.expect("fence");
    let c = conn();
    Domain::lookup_by_name(&c, &name).unwrap().create().unwrap();
    assert_eq!(enforced(&name), (0.25, 128 * MIB));
    eprintln!(
        "lxc figures: create (define + start) {} ms, live resize (quota + memory) {} ms",
        create_took.as_millis(),
        resize_took.as_millis()
    );
}

#[tokio::test]
async fn the_quota_holds_a_busy_member_to_its_share_and_a_live_change_moves_it() {
    let base = tempfile::tempdir().unwrap();
    let name = unique("spin");
    let _sweep = Sweep(name.clone());
    let Some(p) = platform("spin", base.path(), SPIN).await else {
        return;
    };
    p.create(&spec("spin", &name, 0.5, 128))
        .await
        .expect("create");
    // CPUs used over a window of real time (the platform's own rate between two readings).
    let used = |p: LibvirtPlatform, name: String| async move {
        p.usage().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        p.usage().await.unwrap()[&name]
            .cpu_used
            .expect("a CPU figure")
    };
    // At most its quota (with some slack for the rate's window); at least a share of it, part of
    // which other work on a shared 2-core machine may take.
    let half = used(p.clone(), name.clone()).await;
    assert!(
        (0.15..=0.6).contains(&half),
        "at a 0.5 CPU quota it used {half}"
    );
    p.resize(
        &name,
        Size {
            cpus: 0.2,
            memory_bytes: 128 * MIB,
            disk_bytes: 0,
        },
    )
    .await
    .expect("resize");
    let fifth = used(p.clone(), name.clone()).await;
    assert!(
        (0.05..=0.3).contains(&fifth),
        "at a 0.2 CPU quota it used {fifth}"
    );
    eprintln!("lxc figures: a spinning init used {half:.3} CPU at a 0.5 quota, {fifth:.3} at 0.2");
    let memory = p.usage().await.unwrap()[&name].memory_used;
    assert!(
        memory.is_some_and(|m| m > 0 && m <= 128 * MIB),
        "memory used {memory:?}"
    );
}

#[tokio::test]
async fn a_limit_below_what_the_member_holds_is_refused_and_nothing_changes() {
    let base = tempfile::tempdir().unwrap();
    let name = unique("hold");
    let _sweep = Sweep(name.clone());
    let Some(p) = platform("hold", base.path(), HOLD).await else {
        return;
    };
    p.create(&spec("hold", &name, 0.5, 256))
        .await
        .expect("create");
    // Until python holds its 64 MiB.
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.usage().await.unwrap()[&name]
        .memory_used
        .is_none_or(|m| m < 64 * MIB)
    {
        assert!(Instant::now() < deadline, "the holder never held 64 MiB");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // CPU and memory together: the memory is refused, and the quota goes back.
    let too_small = Size {
        cpus: 1.0,
        memory_bytes: 16 * MIB,
        disk_bytes: 0,
    };
    let e = p.resize(&name, too_small).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert!(e.message.contains("below what the domain holds"), "{e}");
    assert_eq!(enforced(&name), (0.5, 256 * MIB), "all or nothing");
    let m = p.list().await.unwrap().remove(0);
    assert_eq!((m.size.cpus, m.size.memory_bytes), (0.5, 256 * MIB));
    assert_eq!(m.state, PlatformState::Running);
}

/// Writes 96 MiB into a file of its root (page cache charged to its cgroup), then sleeps.
const CACHE: &str = "dd if=/dev/zero of=/cache bs=1M count=96 2>/dev/null; exec sleep infinity";

#[tokio::test]
async fn memory_used_is_the_working_set_not_the_page_cache() {
    let base = tempfile::tempdir().unwrap();
    let name = unique("cache");
    let _sweep = Sweep(name.clone());
    let Some(p) = platform("cache", base.path(), CACHE).await else {
        return;
    };
    p.create(&spec("cache", &name, 0.5, 256))
        .await
        .expect("create");
    let file = base.path().join(&name).join("root/cache");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&file).map_or(0, |m| m.len()) < 96 * MIB {
        assert!(Instant::now() < deadline, "dd did not write its file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let memory = cgroup(&name, "memory");
    let charged: u64 = ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .find_map(|f| std::fs::read_to_string(memory.join(f)).ok())
        .and_then(|t| t.trim().parse().ok())
        .expect("the cgroup's usage");
    let usage = p.usage().await.unwrap()[&name];
    let used = usage.memory_used.expect("a memory figure");
    assert!(
        charged > 64 * MIB && used < 32 * MIB,
        "the cgroup holds {charged} bytes (page cache included), the working set is {used}"
    );
    assert_eq!(usage.oom_kills, Some(0), "the kernel's OOM counter is read");
}

#[tokio::test]
async fn a_domain_without_interfaces_shares_the_host_network() {
    let base = tempfile::tempdir().unwrap();
    let name = unique("net");
    let _sweep = Sweep(name.clone());
    let Some(p) = platform("net", base.path(), SLEEP).await else {
        return;
    };
    p.create(&spec("net", &name, 0.5, 128))
        .await
        .expect("create");
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let pid = init_pid(&name).to_string();
    assert_eq!(
        ns(&pid),
        ns("self"),
        "a member listens on the host's loopback addresses, as in the Docker lab"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap(),
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        "but has its own root"
    );
}

#[tokio::test]
async fn killed_fenced_resized_while_off_and_removed_with_or_without_its_folder() {
    let base = tempfile::tempdir().unwrap();
    let prefix = unique("life");
    let _sweep = Sweep(prefix.clone());
    let Some(p) = platform("life", base.path(), SLEEP).await else {
        return;
    };
    let keep = format!("{prefix}-keep");
    let drop = format!("{prefix}-drop");
    p.create(&spec("life", &keep, 0.5, 128))
        .await
        .expect("create");
    let state = |p: LibvirtPlatform, name: String| async move {
        p.list()
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.state)
    };

    // A member whose init is killed (what a crash of Patroni's container looks like) stops by
    // itself: Exited, not Fenced.
    let pid = init_pid(&keep);
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(p.clone(), keep.clone()).await != Some(PlatformState::Exited) {
        assert!(
            Instant::now() < deadline,
            "a killed init did not stop the domain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.fence(&keep).await.expect("fence a stopped member");
    assert_eq!(
        state(p.clone(), keep.clone()).await,
        Some(PlatformState::Fenced)
    );

    // Resized while shut off: redefined, no scheduler call (which kills libvirtd 9.0 on a
    // shut-off LXC domain), and the next start has the new size.
    let off = Size {
        cpus: 1.5,
        memory_bytes: 192 * MIB,
        disk_bytes: 0,
    };
    assert_eq!(
        p.resize(&keep, off).await.expect("resize while off"),
        ResizeOutcome::PendingRestart
    );
    let m = p.list().await.expect("libvirtd still answers");
    assert_eq!(m.iter().find(|m| m.name == keep).unwrap().size, off);
    let c = conn();
    Domain::lookup_by_name(&c, &keep).unwrap().create().unwrap();
    assert_eq!(enforced(&keep), (1.5, 192 * MIB));

    // Removed: the folder stays unless asked.
    p.fence(&keep).await.unwrap();
    p.remove(&keep, false).await.expect("remove, data kept");
    assert!(base.path().join(&keep).join("root").exists());
    // One database member per host: the next one has room only now.
    p.create(&spec("life", &drop, 0.5, 128))
        .await
        .expect("create");
    p.fence(&drop).await.unwrap();
    p.remove(&drop, true).await.expect("remove with data");
    assert!(!base.path().join(&drop).exists(), "its folder is deleted");
    for name in [&keep, &drop] {
        assert!(
            Domain::lookup_by_name(&c, name).is_err(),
            "{name} undefined"
        );
    }
    // The host's programs were bind-mounted inside: they are all still there.
    assert!(Path::new("/usr/bin/env").exists() && Path::new("/etc/passwd").exists());
}
