//! The libvirt platform against libvirt's real test driver (in-process, no daemon).
//!
//! Each "host" is a `test:///<dir>/host-N.xml` URI: a node file the test driver loads afresh per
//! connection, so every check starts from the same domains. Host 0 holds `stranger` (no Steward
//! metadata) and `other-0` (another cluster's metadata) beside whatever Steward creates.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use steward_adapters::platform::contract::{self, Harness};
use steward_adapters::platform::libvirt::{
    Clock, LibvirtConfigRaw, LibvirtPlatform, LibvirtStartError, RoleTemplateRaw,
};
use steward_model::observation::PlatformState;
use steward_model::ports::{Change, CpuUnit, CreateSpec, ErrorKind, Platform, ResizeOutcome};
use steward_model::{Role, Size, Timestamp};
use virt::domain::Domain;

const GIB: u64 = 1 << 30;

const TEMPLATE: &str = "<domain type='test'>
  <name>{{name}}</name>
  {{metadata}}
  <memory unit='KiB'>{{max_memory_kib}}</memory>
  <currentMemory unit='KiB'>{{memory_kib}}</currentMemory>
  <vcpu current='{{vcpus}}'>{{max_vcpus}}</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>";

/// The same with a data disk `vda`, for the disk-grow test.
const TEMPLATE_WITH_DISK: &str = "<domain type='test'>
  <name>{{name}}</name>
  {{metadata}}
  <memory unit='KiB'>{{max_memory_kib}}</memory>
  <currentMemory unit='KiB'>{{memory_kib}}</currentMemory>
  <vcpu current='{{vcpus}}'>{{max_vcpus}}</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><disk type='file' device='disk'><source file='/nonexistent/{{name}}.img'/>
    <target dev='vda' bus='virtio'/></disk></devices>
</domain>";

/// Host 0's node file: two domains Steward must not own, one adopted member of `demo`.
const HOST0: &str = "<node>
<domain type='test'>
  <name>stranger</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
<domain type='test'>
  <name>other-0</name>
  <metadata><steward:member xmlns:steward='https://steward.dev/xmlns/member/1'
    cluster='other' role='database' member='other-0' operation='theirs'/></metadata>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
<domain type='test'>
  <name>adopted-0</name>
  <metadata><steward:member xmlns:steward='https://steward.dev/xmlns/member/1'
    cluster='demo' role='balancer' member='adopted-0' operation='adopt-1'/></metadata>
  <memory unit='KiB'>2097152</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
</node>";

const EMPTY_HOST: &str = "<node></node>";

/// A clock that moves one second per reading.
fn ticking_clock() -> Clock {
    let t = Arc::new(AtomicI64::new(1_800_000_000_000));
    Arc::new(move || Timestamp::from_millis(t.fetch_add(1000, Ordering::SeqCst)))
}

fn write_hosts(dir: &Path, hosts: usize) -> Vec<String> {
    (0..hosts)
        .map(|i| {
            let path = dir.join(format!("host-{i}.xml"));
            std::fs::write(&path, if i == 0 { HOST0 } else { EMPTY_HOST }).unwrap();
            format!("test://{}", path.display())
        })
        .collect()
}

fn raw_config(cluster: &str, uris: Vec<String>, template: &str) -> LibvirtConfigRaw {
    LibvirtConfigRaw {
        cluster: cluster.into(),
        uris,
        database: RoleTemplateRaw {
            template: template.into(),
            max_vcpus: 4,
            max_memory_bytes: 4 * GIB,
            disk_target: None,
            address: "{{name}}.db.internal".into(),
            host_dirs: Vec::new(),
        },
        balancer: Some(RoleTemplateRaw {
            template: TEMPLATE.into(),
            max_vcpus: 2,
            max_memory_bytes: 2 * GIB,
            disk_target: None,
            address: "{{name}}".into(),
            host_dirs: Vec::new(),
        }),
        adopt: Vec::new(),
        addresses: Vec::new(),
        placement: Default::default(),
    }
}

async fn platform(cluster: &str, uris: Vec<String>, template: &str) -> LibvirtPlatform {
    let config = raw_config(cluster, uris, template)
        .validate()
        .expect("valid config");
    LibvirtPlatform::connect(config, ticking_clock())
        .await
        .expect("connect")
}

fn spec(cluster: &str, name: &str) -> CreateSpec {
    CreateSpec {
        cluster: cluster.into(),
        role: Role::Database,
        name: name.into(),
        // The test driver's memory statistics say RSS = 1 GiB whatever the domain: 2 GiB keeps
        // the working set below the limit, as on a real host.
        size: Size {
            cpus: 2.0,
            memory_bytes: 2 * GIB,
            disk_bytes: 0,
        },
        operation_id: format!("op-{name}"),
        replaces: None,
    }
}

/// Runs `f` on the platform's own connection to `uri` (the only view of a test-driver host).
fn with_conn<T>(p: &LibvirtPlatform, uri: &str, f: impl FnOnce(&virt::connect::Connect) -> T) -> T {
    let mut conn = p.connection(uri).expect("a connection to that URI");
    let out = f(&conn);
    conn.close().expect("release the connection reference");
    out
}

// --- the contract ------------------------------------------------------------------------

struct LibvirtHarness {
    dir: tempfile::TempDir,
    round: usize,
    platform: Option<LibvirtPlatform>,
    uris: Vec<String>,
}

const HOSTS: usize = 3;

#[async_trait]
impl Harness for LibvirtHarness {
    fn name(&self) -> String {
        "libvirt".into()
    }

    async fn platform(&mut self) -> Arc<dyn Platform> {
        self.round += 1;
        // A fresh connection to a file URI reloads the file: every check starts clean.
        self.uris = write_hosts(self.dir.path(), HOSTS);
        let p = platform("lv-contract", self.uris.clone(), TEMPLATE).await;
        self.platform = Some(p.clone());
        Arc::new(p)
    }

    fn cluster(&self) -> String {
        "lv-contract".into()
    }

    fn database_spec(&mut self, index: usize) -> CreateSpec {
        spec("lv-contract", &format!("pg-r{}-{index}", self.round))
    }

    fn grown_size(&self, from: Size) -> Size {
        Size {
            cpus: from.cpus + 1.0,
            memory_bytes: from.memory_bytes + GIB / 2,
            ..from
        }
    }

    fn impossible_size(&self, from: Size) -> Option<Size> {
        // More vCPUs than the template's maximum: libvirt cannot hot-plug beyond it.
        Some(Size { cpus: 16.0, ..from })
    }

    fn database_hosts(&self) -> Option<usize> {
        Some(HOSTS)
    }

    async fn add_foreign(&mut self) -> Option<String> {
        Some("stranger".into())
    }

    async fn foreign_intact(&mut self, name: &str) -> bool {
        let p = self.platform.as_ref().expect("platform");
        with_conn(p, &self.uris[0], |conn| {
            Domain::lookup_by_name(conn, name)
                .and_then(|d| d.is_active())
                .unwrap_or(false)
        })
    }

    async fn data_exists(&mut self, _member: &str) -> Option<bool> {
        // The template has no libvirt-managed volume: nothing to tell.
        None
    }

    async fn cleanup(&mut self) {
        // Dropping the platform closes its connections; the next check reloads the files.
        self.platform = None;
    }
}

#[tokio::test]
async fn libvirt_passes_the_platform_contract() {
    let mut h = LibvirtHarness {
        dir: tempfile::tempdir().unwrap(),
        round: 0,
        platform: None,
        uris: Vec::new(),
    };
    contract::run_all(&mut h).await;
}

// --- libvirt's own features ----------------------------------------------------------------

#[tokio::test]
async fn only_domains_with_our_metadata_are_seen_and_adopted_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 1);
    let p = platform("demo", uris.clone(), TEMPLATE).await;
    let members = p.list().await.unwrap();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    // `stranger` has no metadata and `other-0` is another cluster's: only the adopted one shows.
    assert_eq!(names, ["adopted-0"]);
    let adopted = &members[0];
    assert_eq!(adopted.role, Role::Balancer);
    assert_eq!(
        adopted.size,
        Size {
            cpus: 2.0,
            memory_bytes: 2 * GIB,
            disk_bytes: 0
        }
    );
    assert_eq!(adopted.state, PlatformState::Running);
    assert_eq!(adopted.host, uris[0]);
    assert_eq!(adopted.address, "adopted-0");
    assert_eq!(
        adopted.created_at, None,
        "not created by Steward: no creation time"
    );

    for foreign in ["stranger", "other-0"] {
        let size = Size {
            cpus: 1.0,
            memory_bytes: GIB,
            disk_bytes: 0,
        };
        assert_eq!(
            p.resize(foreign, size).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            p.fence(foreign).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            p.remove(foreign, true).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        let running = with_conn(&p, &uris[0], |c| {
            Domain::lookup_by_name(c, foreign)
                .unwrap()
                .is_active()
                .unwrap()
        });
        assert!(running, "{foreign} was touched");
    }
    // A name taken by a domain we do not own is still taken.
    let e = p.create(&spec("demo", "stranger")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
}

#[tokio::test]
async fn paused_destroyed_and_fenced_domains_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 1);
    let p = platform("states", uris.clone(), TEMPLATE).await;
    p.create(&spec("states", "pg-1")).await.unwrap();
    let state = |p: LibvirtPlatform| async move {
        p.list()
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.name == "pg-1")
            .unwrap()
            .state
    };
    with_conn(&p, &uris[0], |c| {
        Domain::lookup_by_name(c, "pg-1")
            .unwrap()
            .suspend()
            .unwrap()
    });
    assert_eq!(state(p.clone()).await, PlatformState::Paused);
    with_conn(&p, &uris[0], |c| {
        Domain::lookup_by_name(c, "pg-1").unwrap().resume().unwrap()
    });
    assert_eq!(state(p.clone()).await, PlatformState::Running);
    // Destroyed behind Steward's back: stopped, but not by our fence.
    with_conn(&p, &uris[0], |c| {
        Domain::lookup_by_name(c, "pg-1")
            .unwrap()
            .destroy()
            .unwrap()
    });
    assert_eq!(state(p.clone()).await, PlatformState::Exited);
    p.fence("pg-1").await.unwrap();
    assert_eq!(state(p.clone()).await, PlatformState::Fenced);
    assert!(
        !p.usage().await.unwrap().contains_key("pg-1"),
        "a stopped member has no usage"
    );
}

#[tokio::test]
async fn live_resize_stays_within_the_maxima_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 1);
    let p = platform("live", uris.clone(), TEMPLATE).await;
    p.create(&spec("live", "pg-1")).await.unwrap();
    let bigger = Size {
        cpus: 3.0,
        memory_bytes: 3 * GIB,
        disk_bytes: 0,
    };
    assert_eq!(
        p.resize("pg-1", bigger).await.unwrap(),
        ResizeOutcome::AppliedLive
    );
    let (live_vcpus, config_vcpus, memory_kib) = with_conn(&p, &uris[0], |c| {
        let d = Domain::lookup_by_name(c, "pg-1").unwrap();
        let info = d.get_info().unwrap();
        let config = d
            .get_vcpus_flags(virt::sys::VIR_DOMAIN_VCPU_CONFIG)
            .unwrap();
        (info.nr_virt_cpu, config, info.memory)
    });
    assert_eq!((live_vcpus, memory_kib), (3, 3 << 20));
    assert_eq!(
        config_vcpus, 3,
        "the definition keeps the new size for the next start"
    );

    // Above the maximum, or a fraction of a vCPU: refused, nothing changed.
    for bad in [
        Size {
            memory_bytes: 5 * GIB,
            ..bigger
        },
        Size {
            cpus: 2.5,
            ..bigger
        },
        Size {
            cpus: 5.0,
            ..bigger
        },
    ] {
        let e = p.resize("pg-1", bad).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        let m = p.list().await.unwrap().remove(0);
        assert_eq!(m.size, bigger, "refused {bad:?} changed something");
    }

    // A fenced (shut-off) domain takes the change into its definition: pending a start.
    p.fence("pg-1").await.unwrap();
    let smaller = Size {
        cpus: 1.0,
        memory_bytes: 2 * GIB,
        disk_bytes: 0,
    };
    assert_eq!(
        p.resize("pg-1", smaller).await.unwrap(),
        ResizeOutcome::PendingRestart
    );
    assert_eq!(p.list().await.unwrap()[0].size.cpus, 1.0);
}

#[tokio::test]
async fn disk_grow_on_the_test_driver_is_unsupported_and_rolls_back_cpu_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 1);
    let mut raw = raw_config("disk", uris, TEMPLATE_WITH_DISK);
    raw.database.disk_target = Some("vda".into());
    let p = LibvirtPlatform::connect(raw.validate().unwrap(), ticking_clock())
        .await
        .unwrap();
    assert_eq!(
        p.capabilities().disk_grow,
        Change::Unsupported,
        "the test driver has no blockResize"
    );
    // A driver that is not LXC changes whole vCPUs.
    assert_eq!(p.capabilities().cpu_unit, CpuUnit::Vcpus);
    let created = p.create(&spec("disk", "pg-1")).await.unwrap();
    // The test driver invents a capacity for any file disk; what matters is that it is read.
    let disk = created.size.disk_bytes;
    assert!(disk > 0, "disk size read through virDomainGetBlockInfo");
    let grown = Size {
        cpus: 3.0,
        memory_bytes: 3 * GIB,
        disk_bytes: disk + GIB,
    };
    let e = p.resize("pg-1", grown).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(
        e.message.contains("virDomainBlockResize"),
        "libvirt's message is kept: {e}"
    );
    let m = p.list().await.unwrap().remove(0);
    assert_eq!(m.size, created.size, "vCPU and memory were rolled back");
    let shrunk = Size {
        disk_bytes: disk / 2,
        ..created.size
    };
    assert_eq!(
        p.resize("pg-1", shrunk).await.unwrap_err().kind,
        ErrorKind::Refused
    );
}

#[tokio::test]
async fn a_template_libvirt_rejects_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 1);
    // Valid for Steward's checks, not XML libvirt accepts (the <os> element is never closed).
    let broken = TEMPLATE.replace("</os>", "");
    let p = platform("broken", uris, &broken).await;
    let e = p.create(&spec("broken", "pg-1")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(p.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn usage_rates_cpu_from_the_first_reading_on() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 1);
    let p = platform("usage", uris, TEMPLATE).await;
    p.create(&spec("usage", "pg-1")).await.unwrap();
    // The first reading takes two CPU-time samples a short window apart; later ones use the
    // previous reading. Either way a running domain has a CPU figure.
    let first = p.usage().await.unwrap()["pg-1"];
    let second = p.usage().await.unwrap()["pg-1"];
    for u in [first, second] {
        assert!(
            u.cpu_used.is_some_and(|c| c.is_finite() && c >= 0.0),
            "{u:?}"
        );
        // The test driver has no memory statistics for domains it did not invent: unknown, not 0.
        assert_eq!(u.memory_used, None, "{u:?}");
    }
    assert!(second.at > first.at);
}

#[tokio::test]
async fn an_unreachable_uri_fails_at_start() {
    let raw = raw_config("x", vec!["test:///nonexistent/host.xml".into()], TEMPLATE);
    let err = LibvirtPlatform::connect(raw.validate().unwrap(), ticking_clock())
        .await
        .err();
    assert!(
        matches!(err, Some(LibvirtStartError::Connect { .. })),
        "{err:?}"
    );
}

// --- adoption (issue 15) -----------------------------------------------------------------

/// A host with domains Steward did not define: two a rule names (`legacy-pg1` explicitly,
/// `prod-pg-2`/`prod-pg-3` by pattern), look-alikes no rule takes (`legacy-pg10`, `stranger`),
/// and `prod-pg-9`, which matches the pattern but is another cluster's Steward member.
const ADOPT_HOST: &str = "<node>
<domain type='test'>
  <name>legacy-pg1</name>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu current='1'>4</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/srv/vm/legacy-pg1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/srv/iso/debian.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
  </devices>
</domain>
<domain type='test'>
  <name>legacy-pg10</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
<domain type='test'>
  <name>prod-pg-2</name>
  <memory unit='KiB'>2097152</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
<domain type='test'>
  <name>prod-pg-3</name>
  <memory unit='KiB'>2097152</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
<domain type='test'>
  <name>prod-pg-9</name>
  <metadata><steward:member xmlns:steward='https://steward.dev/xmlns/member/1'
    cluster='other' role='database' member='prod-pg-9' operation='theirs'/></metadata>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
<domain type='test'>
  <name>stranger</name>
  <memory unit='KiB'>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>
</node>";

#[tokio::test]
async fn adopted_domains_are_managed_and_their_disks_are_never_deleted() {
    use steward_adapters::platform::docker::LABEL_ADOPTED;
    use steward_adapters::platform::libvirt::{RawAdopt, RETIRED_SUFFIX};
    use steward_model::ports::LABEL_OPERATION;

    let dir = tempfile::tempdir().unwrap();
    let host0 = dir.path().join("adopt-0.xml");
    std::fs::write(&host0, ADOPT_HOST).unwrap();
    let host1 = dir.path().join("adopt-1.xml");
    std::fs::write(&host1, EMPTY_HOST).unwrap();
    let uris = vec![
        format!("test://{}", host0.display()),
        format!("test://{}", host1.display()),
    ];
    let mut raw = raw_config("demo", uris.clone(), TEMPLATE);
    raw.adopt = vec![
        RawAdopt {
            domain: Some("legacy-pg1".into()),
            member: Some("pg1".into()),
            uri: Some(uris[0].clone()),
            address: Some("192.0.2.11".into()),
            ..Default::default()
        },
        RawAdopt {
            name: Some("prod-pg-*".into()),
            member: Some("pg-{*}".into()),
            delete_data: true,
            ..Default::default()
        },
    ];
    let p = LibvirtPlatform::connect(raw.validate().expect("valid"), ticking_clock())
        .await
        .expect("connect");
    let domain = |name: &str| {
        with_conn(&p, &uris[0], |c| {
            Domain::lookup_by_name(c, name).map(|d| {
                (
                    d.is_active().unwrap(),
                    d.get_metadata(
                        virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                        Some("https://steward.dev/xmlns/member/1"),
                        0,
                    )
                    .is_ok(),
                )
            })
        })
    };

    // Listed as members, marked adopted, with nothing written on them.
    let listed = p.list().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["pg-2", "pg-3", "pg1"], "{listed:#?}");
    for m in &listed {
        assert_eq!(
            m.labels.get(LABEL_ADOPTED).map(String::as_str),
            Some("true")
        );
        assert!(!m.labels.contains_key(LABEL_OPERATION), "{m:?}");
        assert_eq!((m.role, m.state), (Role::Database, PlatformState::Running));
        assert_eq!(m.created_at, None);
    }
    let pg1 = &listed[2];
    assert_eq!(pg1.address, "192.0.2.11");
    assert_eq!(listed[0].address, "prod-pg-2.db.internal");
    assert_eq!((pg1.size.cpus, pg1.size.memory_bytes), (1.0, GIB));
    let matches = p.adopted().await.expect("resolve");
    let taken: Vec<(usize, &str, &str)> = matches
        .iter()
        .map(|m| (m.rule, m.member.as_str(), m.domain.as_str()))
        .collect();
    assert_eq!(
        taken,
        [
            (0, "pg1", "legacy-pg1"),
            (1, "pg-2", "prod-pg-2"),
            (1, "pg-3", "prod-pg-3")
        ]
    );

    // Resized live.
    let grown = Size {
        cpus: 2.0,
        memory_bytes: 3 * GIB / 2,
        disk_bytes: 0,
    };
    assert_eq!(
        p.resize("pg1", grown).await.expect("resize"),
        ResizeOutcome::AppliedLive
    );
    let (vcpus, memory_kib) = with_conn(&p, &uris[0], |c| {
        let info = Domain::lookup_by_name(c, "legacy-pg1")
            .unwrap()
            .get_info()
            .unwrap();
        (info.nr_virt_cpu, info.memory)
    });
    assert_eq!((vcpus, memory_kib), (2, 3 << 19));
    assert_eq!(
        domain("legacy-pg1").unwrap(),
        (true, false),
        "still running, still not ours"
    );

    // A replacement is Steward's from birth, and adopted members hold their host: it goes to
    // the empty one.
    let mut replacement = spec("demo", "pg-4");
    replacement.replaces = Some("pg1".into());
    let made = p.create(&replacement).await.expect("create");
    assert_eq!(made.host, uris[1]);
    assert_eq!(
        made.labels.get(LABEL_OPERATION).map(String::as_str),
        Some("op-pg-4")
    );
    assert!(!made.labels.contains_key(LABEL_ADOPTED));

    // Fenced: destroyed, and said so, without an ownership mark.
    assert_eq!(p.kept().await.expect("kept"), []);
    p.fence("pg1").await.expect("fence");
    let state = |name: &str, listed: &[steward_model::ports::PlatformMember]| {
        listed.iter().find(|m| m.name == name).map(|m| m.state)
    };
    assert_eq!(
        state("pg1", &p.list().await.unwrap()),
        Some(PlatformState::Fenced)
    );
    assert_eq!(domain("legacy-pg1").unwrap(), (false, false));
    p.fence("pg1").await.expect("fencing again is done");

    // Removed with delete_data asked: its rule keeps everything. Renamed, shut off, defined.
    p.remove("pg1", true).await.expect("remove");
    let retired = format!("legacy-pg1{RETIRED_SUFFIX}");
    assert!(domain("legacy-pg1").is_err(), "renamed");
    assert_eq!(domain(&retired).expect("kept, defined"), (false, false));
    let persistent = with_conn(&p, &uris[0], |c| {
        Domain::lookup_by_name(c, &retired)
            .unwrap()
            .is_persistent()
            .unwrap()
    });
    assert!(persistent, "its definition is kept");
    let listed = p.list().await.unwrap();
    assert_eq!(
        state("pg1", &listed),
        None,
        "a retired domain is never taken again"
    );
    assert_eq!(
        p.remove("pg1", true).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    // ... and says where its disks are and how to delete them (what /status shows).
    let kept = p.kept().await.expect("kept");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert_eq!(
        (
            kept[0].member.as_str(),
            kept[0].resource.as_str(),
            kept[0].host.as_str()
        ),
        ("pg1", retired.as_str(), uris[0].as_str())
    );
    assert_eq!(kept[0].data, ["/srv/vm/legacy-pg1.qcow2"], "no CD-ROM");
    assert_eq!(
        kept[0].delete_with,
        format!(
            "virsh -c {} undefine {retired} && rm -f /srv/vm/legacy-pg1.qcow2",
            uris[0]
        )
    );

    // A rule with delete_data: undefined (libvirt deletes no disk), not kept.
    p.fence("pg-2").await.expect("fence pg-2");
    p.remove("pg-2", false).await.expect("remove pg-2");
    assert!(domain("prod-pg-2").is_err(), "undefined");
    assert!(domain("prod-pg-2.retired").is_err());
    assert_eq!(p.kept().await.unwrap().len(), 1);

    // Look-alikes and another cluster's member: untouched, never members.
    for (name, owned) in [
        ("legacy-pg10", false),
        ("stranger", false),
        ("prod-pg-9", true),
    ] {
        assert_eq!(domain(name).unwrap(), (true, owned), "{name} was touched");
    }
    let names: Vec<String> = p
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["pg-3", "pg-4"]);
}

// --- members' own addresses --------------------------------------------------------------

#[tokio::test]
async fn members_get_free_addresses_from_the_pool_and_hold_them_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let uris = write_hosts(dir.path(), 3);
    let mut raw = raw_config("pool", uris, TEMPLATE);
    raw.addresses = vec!["127.0.0.31-127.0.0.32".into()];
    raw.database.address = "{{address}}".into();
    // The address reaches the domain too (here a description; an LXC member's PATRONI_*
    // variables in examples/libvirt-lxc.toml).
    raw.database.template = TEMPLATE.replace(
        "{{metadata}}",
        "{{metadata}}<description>listens on {{address}}</description>",
    );
    let p = LibvirtPlatform::connect(raw.validate().expect("valid"), ticking_clock())
        .await
        .unwrap();
    let a = p.create(&spec("pool", "pg-a")).await.unwrap();
    let b = p.create(&spec("pool", "pg-b")).await.unwrap();
    assert_eq!(
        (a.address.as_str(), b.address.as_str()),
        ("127.0.0.31", "127.0.0.32")
    );
    let description = with_conn(&p, &a.host, |c| {
        Domain::lookup_by_name(c, "pg-a")
            .unwrap()
            .get_xml_desc(0)
            .unwrap()
    });
    assert!(
        description.contains("listens on 127.0.0.31"),
        "{description}"
    );
    let e = p.create(&spec("pool", "pg-c")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert!(e.message.contains("no address left"), "{e}");
    // A fenced member still holds its address; a removed one gives it back.
    p.fence("pg-a").await.unwrap();
    assert_eq!(
        p.create(&spec("pool", "pg-c")).await.unwrap_err().kind,
        ErrorKind::Refused
    );
    p.remove("pg-a", true).await.unwrap();
    let c = p.create(&spec("pool", "pg-c")).await.unwrap();
    assert_eq!(c.address, "127.0.0.31");
    let listed: Vec<(String, String)> = p
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.address))
        .collect();
    assert_eq!(
        listed,
        [
            ("pg-b".to_string(), "127.0.0.32".to_string()),
            ("pg-c".to_string(), "127.0.0.31".to_string())
        ]
    );

    // `{{address}}` without a pool, and a bad pool, are configuration errors.
    let mut bad = raw_config("pool", vec!["test:///default".into()], TEMPLATE);
    bad.database.address = "{{address}}".into();
    bad.addresses = Vec::new();
    let errors: Vec<String> = bad
        .clone()
        .validate()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        ["database: uses `{{address}}`, but `addresses` gives none"]
    );
    bad.addresses = vec!["127.0.0.9-127.0.0.1".into(), "nonsense".into()];
    let errors: Vec<String> = bad
        .validate()
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        [
            "addresses[0]: range `127.0.0.9-127.0.0.1` runs backwards",
            "addresses[1]: `nonsense` is not an IPv4 address"
        ]
    );
}
