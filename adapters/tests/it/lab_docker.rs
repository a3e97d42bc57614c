//! Steward's Docker platform against the lab (scripts/lab.sh; lab/README.md): with the template of
//! examples/lab.toml it creates, fences and removes REAL Patroni members, and it times a replica's
//! replacement (kill -> fence -> new member streaming).
//!
//! What it is not: the platform's contract (docker.rs runs that with sleeping containers), nor a
//! test of Steward's repair decisions (the repairer's); here the test plays the repairer.
//!
//! Needs root, the lab up, `STEWARD_LAB=1` and the lab's variables:
//! `scripts/lab.sh up; eval "$(scripts/lab.sh env)"; STEWARD_LAB=1 cargo test -p steward-adapters
//! --test it lab_docker -- --nocapture`. Without them the lab test fails (`crate::service_missing`
//! names the opt-out). It changes the lab for about a minute (a fourth member comes and goes, a replica is
//! killed and replaced) and leaves it healthy with its three members: `scripts/lab.sh up` brings
//! the killed one back, also after a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::{KillContainerOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures::FutureExt;
use steward_adapters::patroni::{PatroniApi, PatroniClient, PatroniSettings};
use steward_adapters::platform::docker::{
    DockerConfig, DockerPlatform, Endpoint, RawDockerConfig, VolumeKind,
};
use steward_model::observation::{PatroniRole, PlatformState};
use steward_model::ports::{
    CreateSpec, ErrorKind, Platform, PlatformMember, LABEL_CLUSTER, LABEL_MEMBER,
};
use steward_model::Role;
use tokio::time::Instant;

/// The lab's own database members (scripts/lab.sh MEMBERS).
const LAB_MEMBERS: [&str; 3] = ["lab-pg-1", "lab-pg-2", "lab-pg-3"];
/// The member the test adds and removes again.
const FOURTH: &str = "lab-pg-4";
/// The replacement of the killed replica.
const REPLACEMENT: &str = "lab-pg-5";
/// From creation to streaming: the lab measured 4-11 s (ENVIRONMENT.md), a new name waiting up
/// to one loop_wait for its slot; the margin is for a loaded 2-core machine.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(90);
/// A gracefully stopped Patroni deletes its member key at once; a killed one lingers a ttl (20 s).
const STOPPED_TIMEOUT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `[platform.docker]` of examples/lab.toml, as the platform reads it, and `[cluster].name`.
fn lab_toml() -> (RawDockerConfig, toml::Table) {
    let path = repo().join("examples/lab.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docker = doc
        .get("platform")
        .and_then(|p| p.get("docker"))
        .cloned()
        .expect("examples/lab.toml has a [platform.docker] table");
    let raw: RawDockerConfig = docker
        .try_into()
        .unwrap_or_else(|e| panic!("[platform.docker] is not a RawDockerConfig: {e}"));
    (raw, doc)
}

fn lab_config() -> DockerConfig {
    lab_toml()
        .0
        .validate()
        .unwrap_or_else(|e| panic!("examples/lab.toml [platform.docker] is invalid:\n{e}"))
}

/// The `export NAME='value'` lines of `scripts/lab.sh env` (it needs neither root nor the lab).
fn lab_sh_env() -> BTreeMap<String, String> {
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/lab.sh"))
        .arg("env")
        .output()
        .expect("bash runs scripts/lab.sh env");
    assert!(out.status.success(), "scripts/lab.sh env failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// The file and the lab agree: cluster name, Patroni URLs, member addresses in the pool, disk
/// root. Runs without the lab: it only reads files and `lab.sh env`.
#[test]
fn the_lab_config_validates_and_agrees_with_lab_sh() {
    let (raw, doc) = lab_toml();
    let config = raw
        .validate()
        .unwrap_or_else(|e| panic!("examples/lab.toml [platform.docker] is invalid:\n{e}"));
    let env = lab_sh_env();
    let cluster_name = doc
        .get("cluster")
        .and_then(|c| c.get("name"))
        .and_then(|n| n.as_str());
    assert_eq!(cluster_name, Some(config.cluster.as_str()));
    assert_eq!(env.get("STEWARD_LAB_CLUSTER"), Some(&config.cluster));

    let lab_urls: Vec<&str> = env["PATRONI_URLS"].split(',').collect();
    let toml_urls: Vec<&str> = doc["patroni"]["urls"]
        .as_array()
        .expect("[patroni].urls is a list")
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(
        toml_urls, lab_urls,
        "[patroni].urls vs lab.sh's PATRONI_URLS"
    );
    // The lab's members must hold addresses of the pool, or the platform would hand their
    // addresses out again to a new member.
    for url in &lab_urls {
        let host = url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or_default();
        let address: std::net::Ipv4Addr = host.parse().expect("a member address");
        assert!(
            config.addresses.contains(&address),
            "{address} is not in the pool"
        );
    }
    assert_eq!(
        config.volumes,
        VolumeKind::LoopXfs(PathBuf::from(&env["STEWARD_LAB_DISKS"])),
        "Steward's volumes must be the lab's disks"
    );
    assert!(
        config.hosts.iter().any(|h| h.endpoint
            == Endpoint::Unix(
                env["STEWARD_LAB_SECOND_ENGINE"]
                    .trim_start_matches("unix://")
                    .into()
            )),
        "the lab's second engine is one of the hosts"
    );
}

/// The lab's Patroni URLs when the lab test is wanted (`STEWARD_LAB=1` and the lab's variables);
/// `None` = skip, where `crate::service_missing` allows it.
fn lab_wanted() -> Option<Vec<String>> {
    let on = std::env::var("STEWARD_LAB").is_ok_and(|v| v == "1");
    match (on, std::env::var("PATRONI_URLS")) {
        (true, Ok(urls)) => Some(urls.split(',').map(str::to_string).collect()),
        _ => {
            crate::service_missing(
                "no lab (`scripts/lab.sh up; eval \"$(scripts/lab.sh env)\"` and STEWARD_LAB=1)",
            );
            None
        }
    }
}

async fn lab_sh_up() {
    let out = tokio::process::Command::new(repo().join("scripts/lab.sh"))
        .arg("up")
        .output()
        .await
        .expect("scripts/lab.sh runs");
    assert!(
        out.status.success(),
        "scripts/lab.sh up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn engine(endpoint: &Endpoint) -> Docker {
    let Endpoint::Unix(path) = endpoint else {
        panic!("the lab's engines are local sockets, not {endpoint:?}");
    };
    Docker::connect_with_unix(&path.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
        .expect("docker socket")
        .negotiate_version()
        .await
        .expect("the engine answers")
}

/// Polls `probe` every half second until it gives a value; panics after `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The members among `names` streaming from the leader (its `/patroni` `replication[]`, counting
/// only walsenders named after a member). `None` while there is no leader or it does not answer.
async fn streaming(patroni: &PatroniClient, names: &[&str]) -> Option<BTreeSet<String>> {
    let view = patroni.cluster().await.ok()?;
    let api = view.leader()?.api_base()?;
    let status = patroni.member_status(&api).await.ok()?;
    Some(status.streaming_members(names.iter().copied()))
}

async fn wait_streaming(patroni: &PatroniClient, member: &str) {
    wait_for(
        &format!("{member} streaming from the leader"),
        STREAMING_TIMEOUT,
        || async {
            let in_cluster = patroni.cluster().await.ok()?.member(member).is_some();
            let streams = streaming(patroni, &[member]).await?.contains(member);
            (in_cluster && streams).then_some(())
        },
    )
    .await;
}

/// Patroni no longer counts `member`: gone from `/cluster` or `stopped` there, and no walsender.
async fn wait_not_running(patroni: &PatroniClient, member: &str) {
    wait_for(
        &format!("Patroni to see {member} stopped"),
        STOPPED_TIMEOUT,
        || async {
            let view = patroni.cluster().await.ok()?;
            let stopped = view.member(member).is_none_or(|m| m.state == "stopped");
            let streams = streaming(patroni, &[member]).await?.contains(member);
            (stopped && !streams).then_some(())
        },
    )
    .await;
}

fn spec(cluster: &str, name: &str, like: &PlatformMember) -> CreateSpec {
    CreateSpec {
        cluster: cluster.to_string(),
        role: Role::Database,
        name: name.to_string(),
        size: like.size,
        operation_id: format!("lab-docker-test-{}", std::process::id()),
        replaces: None,
    }
}

async fn member(platform: &DockerPlatform, name: &str) -> PlatformMember {
    platform
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// A container's recipe as the engine stored it, with the member's own name and address put back
/// as placeholders, so two members made the same way compare equal.
#[derive(Debug, PartialEq)]
struct Recipe {
    image: Option<String>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    env: BTreeSet<String>,
    /// A set: `docker run -v` does not keep the order of its mounts (none of them nest).
    binds: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    network_mode: Option<String>,
    nano_cpus: Option<i64>,
    memory: Option<i64>,
    memory_swap: Option<i64>,
    shm_size: Option<i64>,
    restart: Option<String>,
    log_driver: Option<String>,
    privileged: Option<bool>,
}

async fn recipe(docker: &Docker, container: &str, member: &str, address: &str) -> Recipe {
    let c = docker
        .inspect_container(container, None)
        .await
        .unwrap_or_else(|e| panic!("inspect {container}: {e}"));
    let general = |s: &str| s.replace(member, "{member}").replace(address, "{address}");
    let config = c.config.unwrap_or_default();
    let host = c.host_config.unwrap_or_default();
    // The lab's own bookkeeping and the creating operation are the only labels allowed to differ.
    let labels = config
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("io.steward.lab") && k != "io.steward.operation")
        .map(|(k, v)| (k, general(&v)))
        .collect();
    Recipe {
        image: config.image,
        cmd: config.cmd,
        user: config.user,
        env: config
            .env
            .unwrap_or_default()
            .iter()
            .map(|e| general(e))
            .collect(),
        binds: host
            .binds
            .unwrap_or_default()
            .iter()
            .map(|b| general(b))
            .collect(),
        labels,
        network_mode: host.network_mode,
        nano_cpus: host.nano_cpus,
        memory: host.memory,
        memory_swap: host.memory_swap,
        shm_size: host.shm_size,
        restart: host
            .restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string()),
        log_driver: host.log_config.and_then(|l| l.typ),
        privileged: host.privileged,
    }
}

/// Containers of the lab's cluster claiming to be `member`, on every engine.
async fn containers_of(engines: &[Docker], cluster: &str, member: &str) -> usize {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_CLUSTER}={cluster}"),
            format!("{LABEL_MEMBER}={member}"),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut n = 0;
    for e in engines {
        n += e
            .list_containers(Some(options.clone()))
            .await
            .expect("list containers")
            .len();
    }
    n
}

/// Removes the members the test adds (at its end, or what a failed run left); a missing member
/// is fine. Fenced first: a gracefully stopped Patroni deletes its member key, so `/cluster` is
/// back to the lab's three at once instead of after a ttl.
async fn remove_extra_members(platform: &DockerPlatform) {
    for name in [FOURTH, REPLACEMENT] {
        match platform.fence(name).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot fence {name}: {e}"),
        }
        match platform.remove(name, true).await {
            Ok(()) => eprintln!("lab_docker: removed {name}"),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove leftover {name}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_adds_fences_removes_and_replaces_real_lab_members() {
    let Some(urls) = lab_wanted() else {
        return;
    };
    let config = lab_config();
    let cluster = config.cluster.clone();
    let VolumeKind::LoopXfs(disks) = config.volumes.clone() else {
        panic!("the lab's volumes are loop-xfs");
    };
    // Healthy to begin with (idempotent, about a second); it also starts the second engine.
    lab_sh_up().await;
    let mut engines = Vec::new();
    for h in &config.hosts {
        engines.push(engine(&h.endpoint).await);
    }
    let platform = DockerPlatform::connect(config.clone())
        .await
        .expect("the platform connects to the lab's engines");
    let settings = PatroniSettings::with_urls(urls).expect("the lab's Patroni URLs are valid");
    let patroni = PatroniClient::with_seed(&settings, 7).expect("patroni client");
    remove_extra_members(&platform).await;

    let outcome = AssertUnwindSafe(exercise(&platform, &patroni, &engines, &cluster, &disks))
        .catch_unwind()
        .await;
    // Whatever happened: the extra members go, and `up` brings the lab back to its three.
    remove_extra_members(&platform).await;
    lab_sh_up().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let names: Vec<String> = platform
        .list()
        .await
        .expect("list")
        .into_iter()
        .filter(|m| m.state == PlatformState::Running)
        .map(|m| m.name)
        .collect();
    assert_eq!(names, LAB_MEMBERS, "the lab is back with its three members");
    let others: Vec<&str> = LAB_MEMBERS.to_vec();
    assert_eq!(
        streaming(&patroni, &others).await.map(|s| s.len()),
        Some(2),
        "the restored lab has two replicas streaming"
    );
}

async fn exercise(
    platform: &DockerPlatform,
    patroni: &PatroniClient,
    engines: &[Docker],
    cluster: &str,
    disks: &Path,
) {
    // 1. The platform sees exactly the lab's members, with their sizes, and nothing else
    //    (etcd, HAProxy, Prometheus and the exporters carry no cluster label).
    let listed = platform.list().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, LAB_MEMBERS);
    for m in &listed {
        assert_eq!(m.role, Role::Database, "{}", m.name);
        assert_eq!(m.state, PlatformState::Running, "{}", m.name);
        assert_eq!(m.host, "host-a", "{}", m.name);
        let image = std::fs::metadata(disks.join(format!("{}.img", m.name)))
            .unwrap_or_else(|e| panic!("{}'s disk image: {e}", m.name));
        assert_eq!(
            m.size.disk_bytes,
            image.len(),
            "{}: the disk is the lab's image",
            m.name
        );
        assert!(
            m.size.cpus > 0.0 && m.size.memory_bytes > 0,
            "{}: {:?}",
            m.name,
            m.size
        );
    }
    let usage = platform.usage().await.expect("usage");
    assert_eq!(
        usage.keys().map(String::as_str).collect::<Vec<_>>(),
        LAB_MEMBERS,
        "usage of the three running members"
    );
    let first = listed[0].clone();

    // 2. A fourth member, made from the template, joins the cluster and streams.
    let started = Instant::now();
    let fourth = platform
        .create(&spec(cluster, FOURTH, &first))
        .await
        .unwrap_or_else(|e| panic!("create {FOURTH}: {e}"));
    assert_eq!(
        fourth.address, "127.0.0.14",
        "the first free address of the pool"
    );
    assert_eq!(
        fourth.host, "host-b",
        "one database member per host: the second engine"
    );
    assert_eq!(fourth.size, first.size);
    wait_streaming(patroni, FOURTH).await;
    eprintln!(
        "lab_docker: {FOURTH} created and streaming in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Made exactly like the lab's own members (lab.sh's member_run_args).
    let made = recipe(&engines[1], FOURTH, FOURTH, &fourth.address).await;
    let lab = recipe(&engines[0], &first.name, &first.name, &first.address).await;
    assert_eq!(made, lab, "{FOURTH} (platform) vs {} (lab.sh)", first.name);

    // 3. Fenced: Patroni sees it stopped; the platform says fenced.
    platform.fence(FOURTH).await.expect("fence");
    wait_not_running(patroni, FOURTH).await;
    assert_eq!(member(platform, FOURTH).await.state, PlatformState::Fenced);

    // 4. Removed with its data: no container left on any engine, no disk image.
    platform.remove(FOURTH, true).await.expect("remove");
    assert_eq!(containers_of(engines, cluster, FOURTH).await, 0);
    assert!(
        !disks.join(format!("{FOURTH}.img")).exists(),
        "its disk image is deleted"
    );

    // 5. A replica dies; the test, as Steward's repairer would, fences it and creates a
    //    replacement. Timed from the kill to the replacement streaming.
    let view = patroni.cluster().await.expect("cluster");
    let replicas: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.role != PatroniRole::Leader && LAB_MEMBERS.contains(&m.name.as_str()))
        .map(|m| m.name.as_str())
        .collect();
    // lab-pg-3 unless it leads now (an earlier failover).
    let victim = if replicas.contains(&"lab-pg-3") {
        "lab-pg-3".to_string()
    } else {
        replicas.first().expect("a replica").to_string()
    };
    let victim_member = member(platform, &victim).await;
    let killed = Instant::now();
    let kill = KillContainerOptionsBuilder::new().signal("KILL").build();
    engines[0]
        .kill_container(&victim, Some(kill))
        .await
        .unwrap_or_else(|e| panic!("docker kill {victim}: {e}"));
    platform
        .fence(&victim)
        .await
        .expect("fence the dead replica");
    let fenced = killed.elapsed();
    assert_eq!(member(platform, &victim).await.state, PlatformState::Fenced);
    let replacement = platform
        .create(&spec(cluster, REPLACEMENT, &victim_member))
        .await
        .unwrap_or_else(|e| panic!("create {REPLACEMENT}: {e}"));
    let created = killed.elapsed();
    assert_eq!(replacement.host, "host-b");
    wait_streaming(patroni, REPLACEMENT).await;
    let total = killed.elapsed();
    eprintln!(
        "lab_docker: REPLACE victim={victim} replacement={REPLACEMENT} fenced_s={:.2} created_s={:.2} streaming_s={:.2}",
        fenced.as_secs_f64(),
        created.as_secs_f64(),
        total.as_secs_f64()
    );
    let streams = streaming(patroni, &LAB_MEMBERS).await.expect("a leader");
    assert!(
        !streams.contains(&victim),
        "the killed {victim} does not stream"
    );

    // The old one goes, data and all (its name returns with `lab.sh up`, freshly cloned).
    platform
        .remove(&victim, true)
        .await
        .expect("remove the dead replica");
    assert_eq!(containers_of(engines, cluster, &victim).await, 0);
}
