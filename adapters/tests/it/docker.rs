//! The Docker platform against the real engines of this machine (`scripts/dockerd.sh` starts
//! them): the contract suite with `fixed` and with `loop-xfs` volumes over two engines, then
//! what only Docker has (OOM-score env, memory+swap, runc's refusal, the stats working set,
//! fencing a paused container, online XFS growth).
//!
//! A missing engine fails these tests (`crate::service_missing`). Every
//! container is named with a prefix unique to the test and removed at the end, also on failure.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::FutureExt;
use steward_adapters::platform::contract::{self, Harness};
use steward_adapters::platform::docker::{
    ConnectError, DockerConfig, DockerPlatform, Engine, Network, RawDockerConfig, FENCED_SUFFIX,
};
use steward_adapters::platform::volume::{FixedVolumes, LoopXfsVolumes, VolumeProvider};
use steward_model::observation::PlatformState;
use steward_model::ports::{CreateSpec, ErrorKind, Placement, Platform};
use steward_model::{Role, Size};

const MIB: u64 = 1 << 20;
const FIRST: &str = "/var/run/docker.sock";
const SECOND: &str = "/run/steward-docker2.sock";
const IMAGE: &str = "steward-empty:1";
/// Holds 64 MiB of anonymous memory, so that a 16 MiB limit is below what it holds.
const HOLDER: &str = "import time; b = b'x' * (64 << 20); time.sleep(10**9)";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "sttest-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn sh(script: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .await
        .map_err(|e| format!("sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{script}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure the engine at `socket` answers, starting it with scripts/dockerd.sh if needed,
/// and that it has the empty image. `None` = skip (only where `crate::service_missing` allows it).
async fn engine(socket: &str, which: &str) -> Option<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dockerd.sh");
    let ready = sh(&format!("{} {which}", script.display())).await;
    let image = match ready {
        Ok(_) => {
            // An empty tar makes an image; the host's programs come in by bind mounts.
            sh(&format!(
                "docker -H unix://{socket} image inspect {IMAGE} >/dev/null 2>&1 || \
                 tar cf - -T /dev/null | docker -H unix://{socket} import - {IMAGE}"
            ))
            .await
        }
        Err(e) => Err(e),
    };
    match image {
        Ok(_) => Some(()),
        Err(e) => {
            crate::service_missing(&format!("no Docker engine at {socket} ({e})"));
            None
        }
    }
}

fn config(
    cluster: &str,
    prefix: &str,
    hosts: &[&str],
    volumes: (&str, &Path),
    tmp: &Path,
) -> DockerConfig {
    let hosts: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"name": format!("host-{i}"), "endpoint": format!("unix://{s}")}))
        .collect();
    let raw = serde_json::json!({
        "cluster": cluster,
        "hosts": hosts,
        "addresses": ["127.0.77.10-127.0.77.40"],
        "fence_grace": "1s",
        "name_prefix": prefix,
        "volumes": {"kind": volumes.0, "root": volumes.1},
        "database": {
            "image": IMAGE,
            "command": ["/usr/bin/python3", "-c", HOLDER],
            "user": "65534:65534",
            "mounts": ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "/bin:/bin:ro", "/sbin:/sbin:ro", "/etc:/etc:ro"],
            "data_path": "/data",
            "tmp_root": tmp,
            "env": {"MEMBER_BIND": "{address}"},
            "postgres_oom_score_adj": 900
        }
    });
    let raw: RawDockerConfig = serde_json::from_value(raw).expect("test config parses");
    raw.validate()
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// Removes every container whose name starts with `prefix` on the given engines.
async fn remove_prefixed(sockets: &[&str], prefix: &str) {
    for s in sockets {
        let Ok(client) = Docker::connect_with_unix(s, 30, bollard::API_DEFAULT_VERSION) else {
            continue;
        };
        let Ok(client) = client.negotiate_version().await else {
            continue;
        };
        let filters = HashMap::from([("name".to_string(), vec![prefix.to_string()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        for c in client
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
        {
            let rm = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = client
                .remove_container(c.id.as_deref().unwrap_or_default(), Some(rm))
                .await;
        }
    }
}

async fn client(socket: &str) -> Docker {
    Docker::connect_with_unix(socket, 30, bollard::API_DEFAULT_VERSION)
        .expect("socket")
        .negotiate_version()
        .await
        .expect("engine answers")
}

struct DockerHarness {
    cluster: String,
    prefix: String,
    sockets: Vec<&'static str>,
    volumes: (&'static str, PathBuf),
    tmp: PathBuf,
    round: usize,
    members: Vec<String>,
    platform: Option<Arc<DockerPlatform>>,
    disk: u64,
}

impl DockerHarness {
    fn new(kind: &'static str, sockets: Vec<&'static str>, dir: &Path) -> Self {
        let prefix = unique(kind);
        DockerHarness {
            cluster: format!("{prefix}c"),
            prefix: format!("{prefix}-"),
            sockets,
            volumes: (kind, dir.join("volumes")),
            tmp: dir.join("tmp"),
            round: 0,
            members: Vec::new(),
            platform: None,
            // XFS needs about 300 MB; fixed volumes have no size of their own.
            disk: if kind == "loop-xfs" { 300 * MIB } else { 0 },
        }
    }
}

#[async_trait]
impl Harness for DockerHarness {
    fn name(&self) -> String {
        format!("docker/{}", self.volumes.0)
    }

    async fn platform(&mut self) -> Arc<dyn Platform> {
        self.round += 1;
        let config = config(
            &self.cluster,
            &self.prefix,
            &self.sockets,
            (self.volumes.0, &self.volumes.1),
            &self.tmp,
        );
        let p = Arc::new(
            DockerPlatform::connect(config)
                .await
                .expect("engines answer"),
        );
        self.platform = Some(p.clone());
        p
    }

    fn cluster(&self) -> String {
        self.cluster.clone()
    }

    fn database_spec(&mut self, index: usize) -> CreateSpec {
        let name = format!("r{}-pg{index}", self.round);
        if !self.members.contains(&name) {
            self.members.push(name.clone());
        }
        CreateSpec {
            cluster: self.cluster.clone(),
            role: Role::Database,
            name,
            size: Size {
                cpus: 0.5,
                memory_bytes: 256 * MIB,
                disk_bytes: self.disk,
            },
            operation_id: format!("op-{}-{index}", self.round),
            replaces: None,
        }
    }

    fn grown_size(&self, from: Size) -> Size {
        Size {
            cpus: 1.0,
            memory_bytes: 384 * MIB,
            ..from
        }
    }

    fn impossible_size(&self, from: Size) -> Option<Size> {
        // The member holds 64 MiB of anonymous memory and has no swap: runc must refuse 16 MiB.
        // The CPU change rides along, to show that it is not applied either.
        Some(Size {
            cpus: 1.0,
            memory_bytes: 16 * MIB,
            ..from
        })
    }

    fn database_hosts(&self) -> Option<usize> {
        Some(self.sockets.len())
    }

    async fn add_foreign(&mut self) -> Option<String> {
        let name = format!("{}foreign{}", self.prefix, self.round);
        let c = client(self.sockets[0]).await;
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["/bin/sleep".into(), "infinity".into()]),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("host".into()),
                binds: Some(vec![
                    "/usr:/usr:ro".into(),
                    "/lib:/lib:ro".into(),
                    "/lib64:/lib64:ro".into(),
                    "/bin:/bin:ro".into(),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let id = c
            .create_container(Some(options), body)
            .await
            .expect("foreign container")
            .id;
        c.start_container(&id, None).await.expect("foreign starts");
        Some(name)
    }

    async fn foreign_intact(&mut self, name: &str) -> bool {
        let c = client(self.sockets[0]).await;
        c.inspect_container(name, None)
            .await
            .is_ok_and(|i| i.state.and_then(|s| s.running) == Some(true))
    }

    async fn data_exists(&mut self, member: &str) -> Option<bool> {
        let path = match self.volumes.0 {
            "loop-xfs" => self.volumes.1.join(format!("{member}.img")),
            _ => self.volumes.1.join(member),
        };
        Some(path.exists())
    }

    async fn member_ready(&mut self, member: &str) {
        // The holder allocates its 64 MiB right after start; wait until the cgroup shows it.
        let p = self.platform.clone().expect("platform");
        for _ in 0..50 {
            let held = p
                .usage()
                .await
                .ok()
                .and_then(|u| u.get(member).and_then(|u| u.memory_used));
            if held.is_some_and(|b| b >= 64 * MIB) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("member {member} never held its 64 MiB");
    }

    async fn cleanup(&mut self) {
        remove_prefixed(&self.sockets, &self.prefix).await;
        let loops = LoopXfsVolumes::new(&self.volumes.1);
        for m in self.members.drain(..) {
            if self.volumes.0 == "loop-xfs" {
                if let Err(e) = loops.delete(&m).await {
                    eprintln!("cleanup of volume {m}: {e}");
                }
            }
        }
        self.platform = None;
    }
}

async fn both_engines() -> Option<Vec<&'static str>> {
    engine(FIRST, "first").await?;
    engine(SECOND, "second").await?;
    Some(vec![FIRST, SECOND])
}

#[tokio::test]
async fn docker_with_fixed_volumes_passes_the_contract() {
    let Some(sockets) = both_engines().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = DockerHarness::new("fixed", sockets, dir.path());
    contract::run_all(&mut h).await;
}

#[tokio::test]
async fn docker_with_loop_xfs_volumes_passes_the_contract() {
    let Some(sockets) = both_engines().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = DockerHarness::new("loop-xfs", sockets, dir.path());
    contract::run_all(&mut h).await;
}

/// Runs `body` with a one-engine platform, then removes its containers and volumes even when
/// `body` panicked.
async fn with_platform<F>(
    tag: &'static str,
    body: impl FnOnce(Arc<DockerPlatform>, DockerHarness) -> F,
) where
    F: std::future::Future<Output = DockerHarness>,
{
    if engine(FIRST, "first").await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = DockerHarness::new(tag, vec![FIRST], dir.path());
    let platform = h.platform().await;
    drop(platform);
    let p = h.platform.clone().expect("platform");
    let prefix = h.prefix.clone();
    let outcome = AssertUnwindSafe(body(p, h)).catch_unwind().await;
    remove_prefixed(&[FIRST], &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn postgres_gets_its_oom_score_env_and_memory_swap_moves_with_memory() {
    with_platform("fixed", |p, mut h| async move {
        let spec = h.database_spec(0);
        p.create(&spec).await.expect("create");
        let c = client(FIRST).await;
        let name = format!("{}{}", h.prefix, spec.name);
        let inspect = c.inspect_container(&name, None).await.expect("inspect");
        // The running process sees the variables (read from /proc, not from the config).
        let pid = inspect.state.as_ref().and_then(|s| s.pid).expect("pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let environ = String::from_utf8_lossy(&environ);
        for var in [
            "PG_OOM_ADJUST_VALUE=900",
            "PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj",
            "STEWARD_PG_OOM_SCORE_ADJ=900",
        ] {
            assert!(
                environ.split('\0').any(|v| v == var),
                "{var} missing from {environ}"
            );
        }
        let address = p.list().await.expect("list")[0].address.clone();
        assert!(
            environ
                .split('\0')
                .any(|v| v == format!("MEMBER_BIND={address}")),
            "placeholder: {environ}"
        );
        assert!(address.starts_with("127.0.77."), "{address}");

        p.resize(
            &spec.name,
            Size {
                cpus: 1.5,
                memory_bytes: 512 * MIB,
                disk_bytes: 0,
            },
        )
        .await
        .expect("resize");
        let hc = c
            .inspect_container(&name, None)
            .await
            .expect("inspect")
            .host_config
            .expect("host config");
        assert_eq!(hc.memory, Some(512 * MIB as i64));
        assert_eq!(
            hc.memory_swap,
            Some(512 * MIB as i64),
            "swap follows memory"
        );
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        h
    })
    .await;
}

#[tokio::test]
async fn runc_refuses_a_limit_below_what_the_member_holds_and_nothing_changes() {
    with_platform("fixed", |p, mut h| async move {
        let spec = h.database_spec(0);
        p.create(&spec).await.expect("create");
        // Let python allocate its 64 MiB.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let e = p
            .resize(
                &spec.name,
                Size {
                    cpus: 1.0,
                    memory_bytes: 16 * MIB,
                    disk_bytes: 0,
                },
            )
            .await
            .expect_err("refused");
        eprintln!("refused as expected: {e}");
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert!(
            e.message.to_lowercase().contains("memory") || e.message.contains("runc"),
            "runc's message kept: {e}"
        );
        let m = p.list().await.expect("list").remove(0);
        assert_eq!(
            (m.size.cpus, m.size.memory_bytes),
            (0.5, 256 * MIB),
            "nothing changed"
        );
        assert_eq!(m.state, PlatformState::Running);
        h
    })
    .await;
}

#[tokio::test]
async fn usage_memory_is_the_working_set_without_page_cache() {
    with_platform("fixed", |p, mut h| async move {
        let mut spec = h.database_spec(0);
        spec.size.memory_bytes = 512 * MIB;
        // Write 150 MiB to a file (page cache charged to the container), then hold 64 MiB.
        let cache = "open('/tmp/cache', 'wb').write(b'y' * (150 << 20)); ";
        let mut cfg = p.config().clone();
        cfg.database.command = vec![
            "/usr/bin/python3".into(),
            "-c".into(),
            format!("{cache}{HOLDER}"),
        ];
        let p = Arc::new(DockerPlatform::connect(cfg).await.expect("connect"));
        p.create(&spec).await.expect("create");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let u = p.usage().await.expect("usage")[&spec.name];
        let used = u.memory_used.expect("working set");
        assert!(
            (60 * MIB..130 * MIB).contains(&used),
            "working set {} MiB",
            used / MIB
        );
        let cpu = u.cpu_used.expect("cpu");
        assert!((0.0..0.5).contains(&cpu), "an idle holder uses {cpu} vCPU");
        // The raw usage (which the platform must not report) does include the cache.
        let c = client(FIRST).await;
        let name = format!("{}{}", h.prefix, spec.name);
        let options = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .build();
        let raw = futures::StreamExt::next(&mut c.stats(&name, Some(options)))
            .await
            .expect("stats")
            .expect("stats ok");
        let raw_usage = raw.memory_stats.and_then(|m| m.usage).expect("raw usage");
        assert!(
            raw_usage > used + 100 * MIB,
            "raw {} MiB vs working set {} MiB",
            raw_usage / MIB,
            used / MIB
        );
        h
    })
    .await;
}

#[tokio::test]
async fn a_paused_member_is_fenced_by_kill() {
    with_platform("fixed", |p, mut h| async move {
        let spec = h.database_spec(0);
        p.create(&spec).await.expect("create");
        let c = client(FIRST).await;
        let name = format!("{}{}", h.prefix, spec.name);
        c.pause_container(&name).await.expect("pause");
        assert_eq!(
            p.list().await.expect("list")[0].state,
            PlatformState::Paused
        );
        p.fence(&spec.name).await.expect("fence a paused member");
        let running = c
            .inspect_container(&format!("{name}{FENCED_SUFFIX}"), None)
            .await
            .expect("inspect")
            .state
            .and_then(|s| s.running);
        assert_eq!(running, Some(false));
        assert_eq!(
            p.list().await.expect("list")[0].state,
            PlatformState::Fenced
        );
        // A new process (Steward restarted) still tells fenced from exited.
        let again = DockerPlatform::connect(p.config().clone())
            .await
            .expect("connect");
        assert_eq!(
            again.list().await.expect("list")[0].state,
            PlatformState::Fenced
        );
        again
            .fence(&spec.name)
            .await
            .expect("fencing again is a no-op");
        h
    })
    .await;
}

#[tokio::test]
async fn an_oom_kill_inside_a_running_member_is_counted() {
    with_platform("fixed", |p, mut h| async move {
        let mut spec = h.database_spec(0);
        spec.size.memory_bytes = 96 * MIB;
        // A child asks for 200 MiB under a 96 MiB limit without swap: the kernel kills the
        // child, the member (its shell, then sleep) keeps running, as postgres does when a
        // backend is killed.
        let mut cfg = p.config().clone();
        cfg.database.command = vec![
            "/bin/sh".into(),
            "-c".into(),
            "/usr/bin/python3 -c 'b = b\"x\" * (200 << 20)'; exec /bin/sleep infinity".into(),
        ];
        let p = DockerPlatform::connect(cfg).await.expect("connect");
        p.create(&spec).await.expect("create");
        let mut kills = None;
        for _ in 0..20 {
            kills = p
                .usage()
                .await
                .expect("usage")
                .get(&spec.name)
                .and_then(|u| u.oom_kills);
            if kills.is_some_and(|k| k > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(kills, Some(1), "one OOM kill counted");
        assert_eq!(
            p.list().await.expect("list")[0].state,
            PlatformState::Running
        );
        h
    })
    .await;
}

#[tokio::test]
async fn another_clusters_members_are_invisible() {
    with_platform("fixed", |p, mut h| async move {
        let spec = h.database_spec(0);
        p.create(&spec).await.expect("create");
        let mut other_cfg = p.config().clone();
        other_cfg.cluster = format!("{}-other", other_cfg.cluster);
        let other = DockerPlatform::connect(other_cfg.clone())
            .await
            .expect("connect");
        assert!(
            other.list().await.expect("list").is_empty(),
            "another cluster's member listed"
        );
        assert!(other.usage().await.expect("usage").is_empty());
        let e = other.fence(&spec.name).await.expect_err("not owned");
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = other.remove(&spec.name, true).await.expect_err("not owned");
        assert_eq!(e.kind, ErrorKind::NotFound);
        // Placement is per cluster: the other cluster may use the same (only) host.
        let mut mine = spec.clone();
        mine.cluster = other_cfg.cluster.clone();
        mine.name = format!("{}-b", spec.name);
        other
            .create(&mine)
            .await
            .expect("the other cluster has its own placement");
        assert_eq!(
            p.list().await.expect("list").len(),
            1,
            "each sees only its own"
        );
        assert_eq!(
            p.list().await.expect("list")[0].state,
            PlatformState::Running
        );
        h
    })
    .await;
}

#[tokio::test]
async fn a_member_is_not_created_over_a_foreign_container_of_the_same_name() {
    with_platform("fixed", |p, mut h| async move {
        let spec = h.database_spec(0);
        let c = client(FIRST).await;
        let foreign = format!("{}{}", h.prefix, spec.name);
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["/bin/true".into()]),
            ..Default::default()
        };
        c.create_container(
            Some(CreateContainerOptionsBuilder::new().name(&foreign).build()),
            body,
        )
        .await
        .expect("foreign");
        let e = p.create(&spec).await.expect_err("name taken");
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains("taken"), "{e}");
        assert!(
            p.list().await.expect("list").is_empty(),
            "the foreign container is not adopted"
        );
        c.inspect_container(&foreign, None)
            .await
            .expect("the foreign container is still there");
        h
    })
    .await;
}

#[tokio::test]
async fn loop_xfs_grows_online_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = LoopXfsVolumes::new(dir.path());
    let member = unique("xfs");
    let outcome = AssertUnwindSafe(async {
        let vol = v.ensure(&member, 300 * MIB).await.expect("ensure");
        let file = vol.host_path.join("kept");
        std::fs::write(&file, b"data").expect("write");
        let before = v.usage(&member).await.expect("usage").expect("mounted");
        v.grow(&member, 400 * MIB).await.expect("grow");
        let after = v.usage(&member).await.expect("usage").expect("mounted");
        assert!(
            after.size_bytes >= before.size_bytes + 90 * MIB,
            "{before:?} -> {after:?}"
        );
        assert_eq!(v.size(&member).await, Some(400 * MIB));
        assert_eq!(std::fs::read(&file).expect("read"), b"data");
        assert!(matches!(
            v.grow(&member, 350 * MIB).await,
            Err(steward_adapters::platform::volume::VolumeError::Shrink { .. })
        ));
        // Released and ensured again: the same data comes back.
        v.release(&member).await.expect("release");
        assert!(
            v.loop_device(&member).await.expect("losetup").is_none(),
            "loop device freed at unmount"
        );
        v.ensure(&member, 300 * MIB).await.expect("ensure again");
        assert_eq!(std::fs::read(&file).expect("read again"), b"data");
        // A small image fills up for real.
        let big = vol.host_path.join("big");
        let filled = sh(&format!(
            "dd if=/dev/zero of={} bs=1M count=500",
            big.display()
        ))
        .await;
        assert!(
            filled.is_err_and(|e| e.contains("No space left")),
            "a 400 MiB disk took 500 MiB"
        );
        // Full for writes is full for the policies: used is measured against the image's size,
        // the filesystem's own share included (df's "used" is ~10 % short of it here).
        let full = v.usage(&member).await.expect("usage").expect("mounted");
        assert_eq!(full.size_bytes, 400 * MIB, "{full:?}");
        assert!(
            full.used_bytes as f64 >= 0.99 * full.size_bytes as f64,
            "a volume that refuses writes reads {:.1} % used: {full:?}",
            100.0 * full.used_bytes as f64 / full.size_bytes as f64
        );
    })
    .catch_unwind()
    .await;
    if let Err(e) = v.delete(&member).await {
        eprintln!("cleanup: {e}");
    }
    assert!(
        v.loop_device(&member)
            .await
            .map(|d| d.is_none())
            .unwrap_or(true),
        "loop device left behind"
    );
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Engine failures are classified: a wiremock engine answers what a real one answers in the
/// cases a real one cannot be made to (a busy engine, a dead socket).
mod classified {
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn engine() -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path_regex(r"^(/v[0-9.]+)?/version$"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"Version": "20.10.24", "ApiVersion": "1.41"})),
            )
            .mount(&server)
            .await;
        server
    }

    async fn platform(url: &str) -> Result<DockerPlatform, String> {
        let raw = json!({
            "cluster": "c", "hosts": [{"name": "h", "endpoint": url}], "addresses": ["127.0.0.2"],
            "volumes": {"kind": "fixed", "root": "/nonexistent"},
            "database": {"image": "i", "command": ["c"]}
        });
        let config = serde_json::from_value::<RawDockerConfig>(raw)
            .expect("parses")
            .validate()
            .expect("valid");
        DockerPlatform::connect(config)
            .await
            .map_err(|e| e.to_string())
    }

    fn owned_container() -> serde_json::Value {
        json!([{"Id": "abc", "Names": ["/pg-1"], "State": "running",
                "Labels": {"io.steward.cluster": "c", "io.steward.member": "pg-1", "io.steward.role": "database"}}])
    }

    #[tokio::test]
    async fn a_busy_engine_is_transient() {
        let server = engine().await;
        Mock::given(method("GET"))
            .and(path_regex(r"^(/v[0-9.]+)?/containers/json$"))
            .respond_with(
                ResponseTemplate::new(503).set_body_json(json!({"message": "engine busy"})),
            )
            .mount(&server)
            .await;
        let p = platform(&server.uri()).await.expect("connect");
        let e = p.list().await.expect_err("503");
        assert_eq!(e.kind, ErrorKind::Transient, "{e}");
        assert!(e.message.contains("engine busy"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_update_is_refused_with_runcs_message() {
        let server = engine().await;
        Mock::given(method("GET"))
            .and(path_regex(r"^(/v[0-9.]+)?/containers/json$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(owned_container()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^(/v[0-9.]+)?/containers/abc/json$"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "Id": "abc", "Name": "/pg-1", "State": {"Status": "running", "Running": true},
                "HostConfig": {"NanoCpus": 500000000, "Memory": 268435456},
                "Config": {"Labels": {"io.steward.cluster": "c", "io.steward.member": "pg-1"}}
            })))
            .mount(&server)
            .await;
        let runc = "Cannot update container abc: runc did not terminate successfully: exit status 1: \
                    failed to write \"16777216\" to \"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes\": \
                    write /sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes: device or resource busy";
        Mock::given(method("POST"))
            .and(path_regex(r"^(/v[0-9.]+)?/containers/abc/update$"))
            .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": runc})))
            .expect(1)
            .mount(&server)
            .await;
        let p = platform(&server.uri()).await.expect("connect");
        let e = p
            .resize(
                "pg-1",
                Size {
                    cpus: 1.0,
                    memory_bytes: 16 * MIB,
                    disk_bytes: 0,
                },
            )
            .await
            .expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert_eq!(e.message, runc, "runc's message verbatim");
        // An unknown member never reaches the engine's update.
        let e = p
            .resize(
                "pg-9",
                Size {
                    cpus: 1.0,
                    memory_bytes: MIB,
                    disk_bytes: 0,
                },
            )
            .await
            .expect_err("unknown");
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_dead_engine_is_transient() {
        // A port nobody listens on (bound, then closed again).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let raw = json!({
            "cluster": "c", "hosts": [{"name": "h", "endpoint": url}], "addresses": ["127.0.0.2"],
            "volumes": {"kind": "fixed", "root": "/nonexistent"},
            "database": {"image": "i", "command": ["c"]}
        });
        let config = serde_json::from_value::<RawDockerConfig>(raw)
            .expect("parses")
            .validate()
            .expect("valid");
        let client =
            Docker::connect_with_http(&url, 5, bollard::API_DEFAULT_VERSION).expect("client");
        let engines = vec![Engine {
            name: "h".into(),
            client,
        }];
        let p = DockerPlatform::with_engines(
            config,
            engines,
            Arc::new(FixedVolumes::new("/nonexistent")),
        );
        let e = p.list().await.expect_err("nobody answers");
        assert_eq!(e.kind, ErrorKind::Transient, "{e}");
        let e = DockerPlatform::connect(p.config().clone())
            .await
            .expect_err("connect fails");
        assert!(e.to_string().contains("`h`"), "{e}");
    }
}

#[tokio::test]
async fn roles_share_a_host_but_a_role_does_not() {
    with_platform("fixed", |p, mut h| async move {
        let db = h.database_spec(0);
        let balancer = CreateSpec {
            role: Role::Balancer,
            name: format!("{}-lb", db.name),
            ..db.clone()
        };
        let e = p.create(&balancer).await.expect_err("no balancer template");
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
        assert!(e.message.contains("no template for balancer"), "{e}");

        let mut cfg = p.config().clone();
        let mut template = cfg.database.clone();
        template.postgres_oom_score_adj = None;
        template.data_path = None;
        cfg.balancer = Some(template);
        let p = DockerPlatform::connect(cfg).await.expect("connect");
        let a = p.create(&db).await.expect("database");
        let b = p
            .create(&balancer)
            .await
            .expect("a balancer beside the database");
        assert_eq!(a.host, b.host);
        assert_ne!(a.address, b.address, "each member has its own address");
        let second = CreateSpec {
            name: format!("{}-lb2", db.name),
            ..balancer.clone()
        };
        let e = p.create(&second).await.expect_err("one balancer per host");
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
        assert!(e.message.contains("no host left without a balancer"), "{e}");
        // A balancer has no data volume: growing its disk is refused, not attempted.
        let e = p
            .resize(
                &balancer.name,
                Size {
                    disk_bytes: 1 << 30,
                    ..b.size
                },
            )
            .await
            .expect_err("no volume");
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
        h
    })
    .await;
}

#[tokio::test]
async fn fence_gives_a_running_member_its_grace_and_a_paused_one_none() {
    with_platform("fixed", |p, mut h| async move {
        let (a, b) = (h.database_spec(0), h.database_spec(1));
        // One engine, one database member at a time: `a` is removed before `b` is created.
        let started = tokio::time::Instant::now();
        p.create(&a).await.expect("create");
        let create = started.elapsed();
        let started = tokio::time::Instant::now();
        p.resize(
            &a.name,
            Size {
                cpus: 1.0,
                memory_bytes: 384 * MIB,
                disk_bytes: 0,
            },
        )
        .await
        .expect("resize");
        let resize = started.elapsed();
        // python as PID 1 ignores SIGTERM: stop must wait the whole 1 s grace, then kill.
        let started = tokio::time::Instant::now();
        p.fence(&a.name).await.expect("fence");
        let fence_running = started.elapsed();
        assert!(
            fence_running >= Duration::from_secs(1),
            "fenced in {fence_running:?}, before the grace ran out"
        );
        let started = tokio::time::Instant::now();
        p.remove(&a.name, true).await.expect("remove");
        let remove = started.elapsed();

        p.create(&b).await.expect("create");
        let c = client(FIRST).await;
        c.pause_container(&format!("{}{}", h.prefix, b.name))
            .await
            .expect("pause");
        let started = tokio::time::Instant::now();
        p.fence(&b.name).await.expect("fence");
        let fence_paused = started.elapsed();
        assert!(
            fence_paused < Duration::from_secs(1),
            "a frozen member waited for a grace: {fence_paused:?}"
        );
        eprintln!(
            "docker timings: create {create:?}, live resize {resize:?}, fence running (1 s grace) \
             {fence_running:?}, fence paused {fence_paused:?}, remove {remove:?}"
        );
        h
    })
    .await;
}

#[tokio::test]
async fn a_member_serves_on_its_own_loopback_address() {
    with_platform("fixed", |p, mut h| async move {
        let port = 20_000 + (std::process::id() % 10_000) as u16;
        let mut cfg = p.config().clone();
        cfg.database.command = [
            "/usr/bin/python3",
            "-m",
            "http.server",
            "--bind",
            "{address}",
            &port.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let p = DockerPlatform::connect(cfg).await.expect("connect");
        let spec = h.database_spec(0);
        let m = p.create(&spec).await.expect("create");
        let target = format!("{}:{port}", m.address);
        let mut answered = None;
        for _ in 0..50 {
            let attempt = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(&target),
            )
            .await;
            if let Ok(Ok(mut stream)) = attempt {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                stream
                    .write_all(b"GET / HTTP/1.0\r\n\r\n")
                    .await
                    .expect("write");
                let mut reply = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut reply))
                        .await;
                answered = Some(reply);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let reply = answered.unwrap_or_else(|| panic!("nobody answered on {target}"));
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        // Only on its own address: 127.0.0.1 (another member's address space) has no listener.
        let other = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await;
        assert!(
            !matches!(other, Ok(Ok(_))),
            "the member listens beyond its address"
        );
        h
    })
    .await;
}

/// Issue 15: members on a named Docker network, with addresses that are not the host's. The
/// test makes a bridge network with a subnet of its own (10.213.46.0/24, inside a network it
/// creates and removes: the only place non-loopback test traffic may go), and checks that a
/// member gets its static address there and serves on it, and that `connect` refuses a pool
/// outside the subnet and a network that does not exist, saying which.
#[tokio::test]
async fn a_member_on_a_named_network_serves_on_its_address_there() {
    if engine(FIRST, "first").await.is_none() {
        return;
    }
    const NETWORK: &str = "steward-test-net-adapters";
    const SUBNET: &str = "10.213.46.0/24";
    let _ = sh(&format!("docker network rm {NETWORK} 2>/dev/null")).await;
    sh(&format!(
        "docker network create --subnet {SUBNET} {NETWORK}"
    ))
    .await
    .expect("docker network create");
    let outcome = AssertUnwindSafe(with_platform("fixed", |p, mut h| async move {
        let port = 8080;
        let mut cfg = p.config().clone();
        cfg.network = Network::Named(NETWORK.into());
        // One engine, two members: they share it.
        cfg.placement = Placement::Preferred;
        cfg.addresses = (10..=20).map(|i| Ipv4Addr::new(10, 213, 46, i)).collect();
        cfg.database.command = [
            "/usr/bin/python3",
            "-m",
            "http.server",
            "--bind",
            "{address}",
            &port.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let p = DockerPlatform::connect(cfg.clone()).await.expect("connect");
        let first = p.create(&h.database_spec(0)).await.expect("create");
        let second = p.create(&h.database_spec(1)).await.expect("create");
        assert_eq!(first.address, "10.213.46.10");
        assert_eq!(second.address, "10.213.46.11");
        // The engine put it on the network with that address.
        let c = client(FIRST).await;
        let inspected = c
            .inspect_container(&format!("{}{}", h.prefix, first.name), None)
            .await
            .expect("inspect");
        let settings = inspected
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        assert_eq!(
            settings
                .get(NETWORK)
                .and_then(|e| e.ip_address.clone())
                .as_deref(),
            Some("10.213.46.10"),
            "{settings:?}"
        );
        let target = format!("{}:{port}", first.address);
        let mut answered = None;
        for _ in 0..50 {
            if let Ok(Ok(reply)) = tokio::time::timeout(
                Duration::from_secs(2),
                reqwest::get(format!("http://{target}/")),
            )
            .await
            {
                answered = Some(reply.status());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            answered.map(|s| s.as_u16()),
            Some(200),
            "nobody answered on {target}"
        );

        let mut outside = cfg.clone();
        outside.addresses = vec![Ipv4Addr::new(10, 213, 99, 1)];
        let Err(e) = DockerPlatform::connect(outside).await else {
            panic!("connect took what it must refuse (outside)");
        };
        let text = e.to_string();
        assert!(
            matches!(e, ConnectError::Network { .. })
                && text.contains(SUBNET)
                && text.contains("10.213.99.1"),
            "{text}"
        );
        let mut missing = cfg;
        missing.network = Network::Named(format!("{NETWORK}-missing"));
        let Err(e) = DockerPlatform::connect(missing).await else {
            panic!("connect took what it must refuse (missing)");
        };
        assert!(e.to_string().contains("does not exist"), "{e}");
        h
    }))
    .catch_unwind()
    .await;
    let removed = sh(&format!("docker network rm {NETWORK}")).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    removed.expect("the test's network is removed once its members are");
}

/// A container made with `docker run` by someone else (no Steward label), for the adoption test.
async fn run_foreign(
    c: &Docker,
    name: &str,
    labels: &[(&str, &str)],
    env: &[&str],
    host_config: bollard::models::HostConfig,
) -> String {
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["/bin/sleep".into(), "infinity".into()]),
        env: Some(env.iter().map(|e| e.to_string()).collect()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("host".into()),
            ..host_config
        }),
        ..Default::default()
    };
    let created = c
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    c.start_container(&created.id, None)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    created.id
}

/// Issue 15: containers Steward did not create, named by an explicit rule (container -> member)
/// and by a label selector (a project label, the member name in another label), are listed,
/// resized live (NanoCpus on one, a CPU quota on the other), fenced and "removed" without
/// anything deleted: stopped, renamed `.retired`, the data folder intact, never listed again.
/// A replacement made beside them skips the adopted member's address, and containers with a
/// similar name or another project's label are never touched.
#[tokio::test]
async fn adopted_containers_are_managed_and_their_data_is_never_deleted() {
    with_platform("fixed", |p, mut h| async move {
        use steward_adapters::platform::docker::{Adopt, Selector, LABEL_ADOPTED, RETIRED_SUFFIX};
        let c = client(FIRST).await;
        let data = tempfile::tempdir().expect("data dir");
        std::fs::write(data.path().join("PG_VERSION"), "15\n").unwrap();
        let mounts = |extra: Option<String>| {
            let mut b: Vec<String> = ["/usr", "/lib", "/lib64", "/bin"]
                .iter()
                .map(|m| format!("{m}:{m}:ro"))
                .collect();
            b.extend(extra);
            Some(b)
        };
        let legacy1 = format!("{}legacy-1", h.prefix);
        let legacy2 = format!("{}legacy-2", h.prefix);
        let similar = format!("{}legacy-10", h.prefix);
        let other_project = format!("{}legacy-3", h.prefix);
        let project = ("com.example.project", h.prefix.as_str());
        // The first address of the platform's pool: a member Steward creates must skip it.
        run_foreign(
            &c,
            &legacy1,
            &[],
            &["PATRONI_POSTGRESQL_CONNECT_ADDRESS=127.0.77.10:5432"],
            bollard::models::HostConfig {
                nano_cpus: Some(1_000_000_000),
                memory: Some(128 * MIB as i64),
                binds: mounts(Some(format!("{}:/data:rw", data.path().display()))),
                ..Default::default()
            },
        )
        .await;
        run_foreign(
            &c,
            &legacy2,
            &[project, ("patroni.name", "pg-legacy-2")],
            &[],
            // No memory limit: run as many operators run their containers.
            bollard::models::HostConfig {
                cpu_period: Some(100_000),
                cpu_quota: Some(50_000),
                binds: mounts(None),
                ..Default::default()
            },
        )
        .await;
        run_foreign(
            &c,
            &similar,
            &[],
            &[],
            bollard::models::HostConfig {
                binds: mounts(None),
                ..Default::default()
            },
        )
        .await;
        run_foreign(
            &c,
            &other_project,
            &[
                ("com.example.project", "someone-else"),
                ("patroni.name", "pg-x"),
            ],
            &[],
            bollard::models::HostConfig {
                binds: mounts(None),
                ..Default::default()
            },
        )
        .await;

        let mut config = p.config().clone();
        // One engine here: adopted members count, so Steward's own must be let share it.
        config.placement = steward_model::ports::Placement::Preferred;
        config.adopt = vec![
            Adopt {
                selector: Selector::Container {
                    container: legacy1.clone(),
                    member: "legacy1".into(),
                },
                host: None,
                role: Role::Database,
                address: None,
                delete_data: false,
            },
            Adopt {
                selector: Selector::Label {
                    key: project.0.into(),
                    value: Some(project.1.into()),
                    member_label: Some("patroni.name".into()),
                },
                host: None,
                role: Role::Database,
                address: None,
                delete_data: false,
            },
        ];
        let adopting = DockerPlatform::connect(config).await.expect("connect");

        let listed = adopting.list().await.expect("list");
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["legacy1", "pg-legacy-2"], "{listed:#?}");
        assert!(listed.iter().all(|m| m.state == PlatformState::Running
            && m.labels.get(LABEL_ADOPTED).map(String::as_str) == Some("true")));
        assert_eq!(listed[0].address, "127.0.77.10");
        assert_eq!((listed[0].size.cpus, listed[1].size.cpus), (1.0, 0.5));
        assert_eq!(listed[0].size.memory_bytes, 128 * MIB);

        // Live resizes, each in the container's own kind of CPU limit.
        let before = c.inspect_container(&legacy1, None).await.unwrap();
        let grown = Size {
            cpus: 2.0,
            memory_bytes: 256 * MIB,
            disk_bytes: 0,
        };
        adopting
            .resize("legacy1", grown)
            .await
            .expect("resize legacy1");
        let after = c.inspect_container(&legacy1, None).await.unwrap();
        let hc = after.host_config.clone().unwrap();
        assert_eq!(
            (hc.nano_cpus, hc.memory),
            (Some(2_000_000_000), Some(256 * MIB as i64))
        );
        assert_eq!(
            (after.id, after.state.unwrap().started_at),
            (before.id, before.state.unwrap().started_at),
            "resized live, not restarted"
        );
        // Without a memory limit (0: none), a CPU resize keeps none (found on the lab's own
        // HAProxy, adopted: "has no CPU or no memory" refused every balancer grow).
        assert_eq!(listed[1].size.memory_bytes, 0);
        adopting
            .resize(
                "pg-legacy-2",
                Size {
                    cpus: 1.0,
                    memory_bytes: 0,
                    disk_bytes: 0,
                },
            )
            .await
            .expect("resize pg-legacy-2");
        let hc = c
            .inspect_container(&legacy2, None)
            .await
            .unwrap()
            .host_config
            .unwrap();
        assert_eq!(
            (hc.cpu_quota, hc.cpu_period, hc.memory.unwrap_or(0)),
            (Some(100_000), Some(100_000), 0)
        );
        // A limit is never taken off: 0 where there is one is refused.
        let e = adopting
            .resize(
                "legacy1",
                Size {
                    memory_bytes: 0,
                    ..grown
                },
            )
            .await
            .expect_err("taking legacy1's memory limit off");
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
        let e = adopting
            .resize(
                "legacy1",
                Size {
                    disk_bytes: 10 << 30,
                    ..grown
                },
            )
            .await
            .expect_err("an adopted disk is not Steward's");
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");

        // A member Steward creates skips the adopted member's address.
        let spec = h.database_spec(0);
        let made = adopting
            .create(&spec)
            .await
            .expect("create beside adopted ones");
        assert_eq!(made.address, "127.0.77.11");

        // Fenced, then removed with delete_data asked: the rule keeps everything.
        assert_eq!(adopting.kept().await.expect("kept"), []);
        adopting.fence("legacy1").await.expect("fence");
        let fenced = adopting.list().await.expect("list");
        let l1 = fenced
            .iter()
            .find(|m| m.name == "legacy1")
            .expect("still listed");
        assert_eq!(l1.state, PlatformState::Fenced);
        adopting.remove("legacy1", true).await.expect("remove");
        let retired = format!("{legacy1}{RETIRED_SUFFIX}");
        let kept = c
            .inspect_container(&retired, None)
            .await
            .expect("kept, renamed");
        assert_ne!(kept.state.unwrap().running, Some(true));
        assert!(
            data.path().join("PG_VERSION").exists(),
            "its data was deleted"
        );
        // ... and says where it is and how to delete it (what /status shows).
        let kept_data = adopting.kept().await.expect("kept");
        assert_eq!(kept_data.len(), 1, "{kept_data:#?}");
        assert_eq!(kept_data[0].member, "legacy1");
        assert_eq!(kept_data[0].resource, retired);
        let folder = data.path().display().to_string();
        assert!(kept_data[0].data.contains(&folder), "{kept_data:#?}");
        assert!(
            kept_data[0]
                .delete_with
                .contains(&format!("docker rm -v {retired}"))
                && kept_data[0].delete_with.contains(&folder),
            "{kept_data:#?}"
        );
        let names: Vec<String> = adopting
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["pg-legacy-2".to_string(), spec.name.clone()]);

        // Nothing outside the adopted set was touched.
        for name in [&similar, &other_project] {
            let i = c.inspect_container(name, None).await.expect("still there");
            assert_eq!(i.state.unwrap().running, Some(true), "{name}");
            let hc = i.host_config.unwrap();
            assert_eq!(hc.nano_cpus.unwrap_or(0), 0, "{name} was resized");
        }
        h
    })
    .await;
}

/// The TLS engine `scripts/dockerd.sh tls` starts, as a remote host serves one.
const TLS_ENGINE: &str = "127.0.0.41:2376";
const TLS_CERTS: &str = "/var/lib/steward-docker-tls/certs";

/// Issue 15: a remote engine over TCP with TLS client certificates. The platform reaches it
/// with the client's certificate (no socket), makes a member there, resizes it live, fences
/// and removes it; without the certificate the engine does not answer.
#[tokio::test]
async fn a_remote_engine_over_tls_runs_members() {
    // Both rustls providers are compiled into the tests (see Cargo.toml); the product has one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dockerd.sh");
    let docker = format!(
        "docker -H tcp://{TLS_ENGINE} --tlsverify --tlscacert {TLS_CERTS}/ca.pem \
         --tlscert {TLS_CERTS}/cert.pem --tlskey {TLS_CERTS}/key.pem"
    );
    let ready = sh(&format!("{} tls", script.display())).await.and(
        sh(&format!(
            "{docker} image inspect {IMAGE} >/dev/null 2>&1 || tar cf - -T /dev/null | \
             {docker} import - {IMAGE}"
        ))
        .await,
    );
    if let Err(e) = ready {
        crate::service_missing(&format!("no TLS Docker engine ({e})"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("{}-", unique("tls"));
    let host = |tls: bool| {
        let mut h =
            serde_json::json!({"name": "remote", "endpoint": format!("tcp://{TLS_ENGINE}")});
        if tls {
            h["tls"] = serde_json::json!({
                "ca": format!("{TLS_CERTS}/ca.pem"),
                "cert": format!("{TLS_CERTS}/cert.pem"),
                "key": format!("{TLS_CERTS}/key.pem"),
            });
        }
        h
    };
    let raw = |tls: bool| -> RawDockerConfig {
        serde_json::from_value(serde_json::json!({
            "cluster": format!("{prefix}c"),
            "hosts": [host(tls)],
            "addresses": ["127.0.78.10-127.0.78.20"],
            "fence_grace": "1s",
            "name_prefix": prefix,
            "volumes": {"kind": "fixed", "root": dir.path()},
            "database": {
                "image": IMAGE,
                "command": ["/bin/sleep", "infinity"],
                "mounts": ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "/bin:/bin:ro"],
            }
        }))
        .expect("test config parses")
    };
    // Loopback plain TCP validates (off loopback it needs `insecure`: the unit tests), but the
    // engine, which verifies clients, does not answer it.
    let plain = DockerPlatform::connect(raw(false).validate().expect("valid on loopback")).await;
    assert!(
        plain.is_err(),
        "the TLS engine answered without a certificate"
    );
    let p = DockerPlatform::connect(raw(true).validate().expect("valid"))
        .await
        .expect("the TLS engine answers with the client's certificate");
    let spec = CreateSpec {
        cluster: format!("{prefix}c"),
        role: Role::Database,
        name: "m1".into(),
        size: Size {
            cpus: 0.5,
            memory_bytes: 64 * MIB,
            disk_bytes: 0,
        },
        operation_id: "tls-test".into(),
        replaces: None,
    };
    let outcome = AssertUnwindSafe(async {
        let made = p.create(&spec).await.expect("create on the remote engine");
        assert_eq!(
            (made.host.as_str(), made.state),
            ("remote", PlatformState::Running)
        );
        let grown = Size {
            cpus: 1.0,
            ..spec.size
        };
        p.resize("m1", grown).await.expect("resize over TLS");
        let listed = p.list().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size.cpus, 1.0);
        p.fence("m1").await.expect("fence");
        p.remove("m1", true).await.expect("remove");
        assert!(p.list().await.expect("list").is_empty());
    })
    .catch_unwind()
    .await;
    let _ = sh(&format!(
        "{docker} ps -aq --filter name=^{prefix} | xargs -r {docker} rm -f"
    ))
    .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A volume refused as too small leaves nothing behind, not even an empty mount point (the
/// adoption test's replacements, asked with an unknown size, left empty folders).
#[tokio::test]
async fn a_loop_xfs_volume_refused_as_too_small_leaves_no_folder() {
    let root = tempfile::tempdir().unwrap();
    let volumes = LoopXfsVolumes::new(root.path());
    let e = volumes
        .ensure("m1", 0)
        .await
        .expect_err("0 bytes is too small");
    assert!(e.to_string().contains("minimum"), "{e}");
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
