//! End-to-end ADOPTION test (issue 15): `steward run` looking after a Patroni cluster that
//! another tool made, behind its own HAProxy pair.
//!
//! The test makes that deployment itself, the way an operator's script would: three `docker
//! run` members (`legacy-db-1..3`, with their own scope `legacy-e2e`), data in bind-mounted host
//! folders under /var/lib/steward-lab/adopt, no `io.steward.*` label, only the deployment's own
//! `com.example.project=legacy-e2e`; two HAProxy containers (`legacy-lb-1,2`, the lab's
//! haproxy.cfg with these three members as servers, Runtime API on :9999). Beside them stands a
//! look-alike, `legacy-db-10`, a sleeping container without that label.
//!
//! Steward is told to adopt what carries the project label (`[[platform.docker.adopt]]`) and to
//! keep both balancers in step (`[balancers]`), and a replica is `docker kill`ed. Within
//! `REPAIR_TIMEOUT` it must be replaced as an owned one would:
//! - three members running, one of them the replacement, which carries Steward's labels, and
//!   Patroni listing those three, one leader and two streaming;
//! - both balancers serving exactly those three as servers of `primary` and `replicas`, none in
//!   maintenance, and answering through both ports (5432 reaches the primary, 5433 a replica);
//! - the killed container kept, stopped, renamed `legacy-db-N.retired`, its data folder intact
//!   (Steward never deletes what it did not create: the rule has no `delete_data`);
//! - the look-alike untouched (still running), no alert.
//!
//! It runs three times: with Patroni 4.1.5 (the lab's) and with Patroni 3.0.2 (the 3.x line
//! Debian 12 packages, which says `master` and never `streaming`; `scripts/lab.sh` installs it in
//! its own venv and a member picks it with `STEWARD_LAB_PATRONI`), both on the host network with
//! loopback addresses (127.0.0.31-33, the lab's etcd), and with 4.1.5 on a Docker network the
//! test makes and removes (`steward-e2e-adopt`, 10.213.47.0/24: the only non-loopback addresses a
//! test may use), with its own etcd there (10.213.47.2) and every member, balancer and Steward's
//! replacement at an address of that network (`[platform.docker] network`): Steward reaches
//! members and balancers at addresses that are not the host's. Steward's replacement runs the
//! same Patroni and configuration as the cluster it joins (the test's template sets the same
//! variables).
//!
//! Needs what tests/cli/e2e.rs needs (root, the lab up for its images and engines (and etcd,
//! for the loopback runs), `STEWARD_LAB=1`, the lab lock). It leaves nothing: its containers
//! (every engine), Steward's replacement and its disk, the data folders, the network and the
//! scope's keys in the lab's etcd are removed at the end, also when it fails. About a minute
//! each.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use steward_adapters::patroni::PatroniApi;
use steward_adapters::platform::docker::{DockerPlatform, RawDockerConfig};
use steward_model::observation::PlatformState;
use steward_model::ports::{Platform, LABEL_CLUSTER};
use tokio::time::Instant;

use crate::e2e::{
    balancer_servers, lab, leader_and_streaming, patroni, repo, sh, with_lab, Steward,
    LAB_BALANCERS, LAB_MEMBERS, REPAIR_TIMEOUT,
};

const SCOPE: &str = "legacy-e2e";
/// A container with a similar name that is not part of the deployment.
const LOOK_ALIKE: &str = "legacy-db-10";
const PROJECT_LABEL: &str = "com.example.project=legacy-e2e";
/// Where the deployment keeps its members' data (bind mounts), their /tmp, the balancers'
/// configuration and, on the network, etcd's data and Patroni's configuration.
const ROOT: &str = "/var/lib/steward-lab/adopt";
const ENGINES: [&str; 2] = [
    "unix:///var/run/docker.sock",
    "unix:///run/steward-docker2.sock",
];
/// The lab's etcd (scripts/lab.sh ETCD_ADDR), v3 JSON gateway.
const LAB_ETCD: &str = "127.0.0.2:2379";
/// The lab's Patroni configuration, which a loopback member reads as it is.
const LAB_PATRONI_CONFIG: &str = "/var/lib/steward-lab/patroni/patroni.yml";
/// From `docker run` to a leader and two streaming replicas.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);
/// From the replacement streaming to both balancers in step with the members.
const BALANCERS_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the hand-made deployment lives.
struct Site {
    /// `None`: host networking. Some((name, subnet)): a bridge the test makes.
    network: Option<(&'static str, &'static str)>,
    members: [(&'static str, &'static str); 3],
    balancers: [(&'static str, &'static str); 2],
    /// Steward's pool for the replacement.
    pool: &'static str,
    /// etcd's client address; on a network, a container the test runs there.
    etcd: &'static str,
}

const LOOPBACK: Site = Site {
    network: None,
    members: [
        ("legacy-db-1", "127.0.0.31"),
        ("legacy-db-2", "127.0.0.32"),
        ("legacy-db-3", "127.0.0.33"),
    ],
    balancers: [("legacy-lb-1", "127.0.0.28"), ("legacy-lb-2", "127.0.0.29")],
    pool: "127.0.0.34-127.0.0.39",
    etcd: LAB_ETCD,
};

const NETWORK: Site = Site {
    network: Some(("steward-e2e-adopt", "10.213.47.0/24")),
    members: [
        ("legacy-db-1", "10.213.47.11"),
        ("legacy-db-2", "10.213.47.12"),
        ("legacy-db-3", "10.213.47.13"),
    ],
    balancers: [
        ("legacy-lb-1", "10.213.47.3"),
        ("legacy-lb-2", "10.213.47.4"),
    ],
    pool: "10.213.47.14-10.213.47.19",
    etcd: "10.213.47.2:2379",
};

impl Site {
    fn apis(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|(_, a)| format!("http://{a}:8008"))
            .collect()
    }

    fn runtime_apis(&self) -> Vec<String> {
        self.balancers
            .iter()
            .map(|(_, a)| format!("{a}:9999"))
            .collect()
    }

    /// `docker run` arguments that put a container at `address`.
    fn placed_at(&self, address: &str) -> Vec<String> {
        match self.network {
            None => vec!["--network".into(), "host".into()],
            Some((name, _)) => vec![
                "--network".into(),
                name.into(),
                "--ip".into(),
                address.into(),
            ],
        }
    }

    /// The Patroni configuration members read: the lab's, or on the network a copy (written
    /// by [`Site::write_patroni_config`]) that points at the network's etcd and lets the
    /// network's addresses in.
    fn patroni_config(&self) -> PathBuf {
        match self.network {
            None => PathBuf::from(LAB_PATRONI_CONFIG),
            Some(_) => Path::new(ROOT).join("patroni/patroni.yml"),
        }
    }

    fn write_patroni_config(&self) {
        let Some((_, subnet)) = self.network else {
            return;
        };
        let lab = std::fs::read_to_string(LAB_PATRONI_CONFIG).expect("the lab's patroni.yml");
        let text = lab
            .replace(
                &format!("hosts: {LAB_ETCD}"),
                &format!("hosts: {}", self.etcd),
            )
            .replace(
                "    - host all all 127.0.0.0/8 scram-sha-256",
                &format!(
                    "    - host all all 127.0.0.0/8 scram-sha-256\n    \
                     - host replication replicator {subnet} scram-sha-256\n    \
                     - host all all {subnet} scram-sha-256"
                ),
            );
        assert!(
            text.contains(self.etcd) && text.contains(subnet),
            "the lab's patroni.yml changed shape: {LAB_PATRONI_CONFIG}"
        );
        let path = self.patroni_config();
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The host's programs, read-only, as every lab container has them.
fn host_programs() -> Vec<String> {
    ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt"]
        .iter()
        .flat_map(|m| ["-v".to_string(), format!("{m}:{m}:ro")])
        .collect()
}

async fn docker_run(args: Vec<String>, what: &str) {
    let mut all = vec!["run".to_string(), "-d".into()];
    all.extend(args);
    let argv: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = sh("docker", &argv).await;
    assert!(out.status.success(), "docker run {what}: {out:?}");
}

/// `docker run` of one member as the operator's script would write it.
async fn run_member(site: &Site, name: &str, address: &str, patroni: &str, config: &Path) {
    let data = Path::new(ROOT).join(name);
    let tmp = Path::new(ROOT).join(format!("{name}-tmp"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let vol = |host: &str, inside: &str, mode: &str| format!("{host}:{inside}:{mode}");
    let mut args: Vec<String> = ["--name", name, "--label", PROJECT_LABEL]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(site.placed_at(address));
    args.extend(
        [
            "--user",
            "0:0",
            "--cpus",
            "1",
            "--memory",
            "1g",
            "--memory-swap",
            "1g",
        ]
        .map(String::from),
    );
    args.extend(host_programs());
    let config_dir = config.parent().unwrap().display().to_string();
    let mut shared = vec![
        "/var/lib/steward-lab/patroni".to_string(),
        "/var/lib/steward-lab/patroni-secrets".into(),
    ];
    if !shared.contains(&config_dir) {
        shared.push(config_dir);
    }
    for m in &shared {
        args.extend(["-v".into(), vol(m, m, "ro")]);
    }
    args.extend(["-v".into(), vol(&data.display().to_string(), "/data", "rw")]);
    args.extend(["-v".into(), vol(&tmp.display().to_string(), "/tmp", "rw")]);
    for e in [
        "HOME=/tmp".to_string(),
        "LANG=C.UTF-8".into(),
        format!("PATRONI_SCOPE={SCOPE}"),
        format!("PATRONI_NAME={name}"),
        format!("PATRONI_RESTAPI_LISTEN={address}:8008"),
        format!("PATRONI_RESTAPI_CONNECT_ADDRESS={address}:8008"),
        format!("PATRONI_POSTGRESQL_LISTEN={address}:5432"),
        format!("PATRONI_POSTGRESQL_CONNECT_ADDRESS={address}:5432"),
        "PATRONI_POSTGRESQL_DATA_DIR=/data/pgdata".into(),
        format!("STEWARD_LAB_PATRONI={patroni}"),
        format!("STEWARD_LAB_PATRONI_CONFIG={}", config.display()),
    ] {
        args.extend(["-e".into(), e]);
    }
    args.extend([
        "steward-empty:1".into(),
        "/var/lib/steward-lab/patroni/member.sh".into(),
    ]);
    docker_run(args, name).await;
}

/// The network's own etcd (on the host network the lab's serves).
async fn run_etcd(site: &Site) {
    let Some((network, _)) = site.network else {
        return;
    };
    let (address, _) = site.etcd.split_once(':').unwrap();
    let data = Path::new(ROOT).join("etcd");
    std::fs::create_dir_all(&data).unwrap();
    let mut args: Vec<String> = vec!["--name".into(), "legacy-etcd".into()];
    args.extend(site.placed_at(address));
    args.extend(host_programs());
    args.extend(["-v".into(), format!("{}:/etcd:rw", data.display())]);
    args.extend(
        [
            "steward-empty:1",
            "/usr/bin/etcd",
            "--name",
            "legacy-etcd",
            "--data-dir",
            "/etcd/data",
        ]
        .map(String::from),
    );
    for (flag, url) in [
        ("--listen-client-urls", format!("http://{address}:2379")),
        ("--advertise-client-urls", format!("http://{address}:2379")),
        ("--listen-peer-urls", format!("http://{address}:2380")),
        (
            "--initial-advertise-peer-urls",
            format!("http://{address}:2380"),
        ),
        (
            "--initial-cluster",
            format!("legacy-etcd=http://{address}:2380"),
        ),
    ] {
        args.extend([flag.to_string(), url]);
    }
    docker_run(args, &format!("etcd on {network}")).await;
}

/// The deployment's balancers: the lab's haproxy.cfg, these three members as servers.
async fn run_balancers(site: &Site) {
    let template = std::fs::read_to_string(repo().join("lab/haproxy.cfg.tmpl")).unwrap();
    let servers: Vec<String> = site
        .members
        .iter()
        .map(|(m, a)| format!("    server {m} {a}:5432 check port 8008"))
        .collect();
    for (name, address) in site.balancers {
        let dir = Path::new(ROOT).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = template
            .replace("@ADDR@", address)
            .replace("@STATE_DIR@", &dir.display().to_string())
            .replace("@PRIMARY_SERVERS@", &servers.join("\n"))
            .replace("@REPLICA_SERVERS@", &servers.join("\n"));
        std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
        run_haproxy(name, site.placed_at(address), &dir).await;
    }
}

/// `docker run` of HAProxy as the lab runs it (the empty image, the host's programs), named
/// `name`, placed by `placement` (`--network ...`), configured by `<dir>/haproxy.cfg` (the
/// folder mounted at its own path, for its admin socket).
pub(crate) async fn run_haproxy(name: &str, placement: Vec<String>, dir: &Path) {
    let dir = dir.display().to_string();
    let mut args: Vec<String> = vec!["--name".into(), name.into()];
    args.extend(placement);
    args.extend(host_programs());
    args.extend(["-v".into(), format!("{dir}:{dir}:rw")]);
    args.extend([
        "steward-empty:1".to_string(),
        "/usr/sbin/haproxy".into(),
        "-W".into(),
        "-db".into(),
        "-f".into(),
        format!("{dir}/haproxy.cfg"),
    ]);
    docker_run(args, name).await;
}

/// The Steward config: the lab's, pointed at this deployment, adopting what carries the label
/// and keeping its balancers in step.
fn write_config(
    site: &Site,
    dir: &Path,
    state_dir: &Path,
    patroni: &str,
    patroni_config: &Path,
) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("tests/data/e2e/lab.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let cluster = doc["cluster"].as_table_mut().unwrap();
    cluster.insert("name".into(), SCOPE.into());
    cluster.insert("state_dir".into(), state_dir.display().to_string().into());
    doc["patroni"]
        .as_table_mut()
        .unwrap()
        .insert("urls".into(), site.apis().into());
    let docker = doc["platform"]["docker"].as_table_mut().unwrap();
    docker.insert("cluster".into(), SCOPE.into());
    docker.insert("addresses".into(), vec![site.pool].into());
    docker.insert("placement".into(), "preferred".into());
    if let Some((network, _)) = site.network {
        // The network is a bridge of the first engine only.
        docker.insert("network".into(), network.into());
        let first = docker["hosts"].as_array().unwrap()[0].clone();
        docker.insert("hosts".into(), toml::Value::Array(vec![first]));
    }
    // The adopted members' disks are bind-mounted folders, not Steward's volumes: their size is
    // unknown, so a replacement gets this one (the lab's disks are 512 MiB).
    docker["volumes"]
        .as_table_mut()
        .unwrap()
        .insert("default_size".into(), "512MiB".into());
    // A replacement runs the Patroni and the configuration the cluster runs.
    let database = docker["database"].as_table_mut().unwrap();
    let env = database["env"].as_table_mut().unwrap();
    env.insert("STEWARD_LAB_PATRONI".into(), patroni.into());
    env.insert(
        "STEWARD_LAB_PATRONI_CONFIG".into(),
        patroni_config.display().to_string().into(),
    );
    let config_dir = patroni_config.parent().unwrap().display().to_string();
    let mounts = database["mounts"].as_array_mut().unwrap();
    let mount = toml::Value::from(format!("{config_dir}:{config_dir}:ro"));
    if !mounts
        .iter()
        .any(|m| m.as_str().unwrap().starts_with(&format!("{config_dir}:")))
    {
        mounts.push(mount);
    }
    let rule: toml::Table = toml::from_str(&format!("label = \"{PROJECT_LABEL}\"")).unwrap();
    docker.insert("adopt".into(), toml::Value::Array(vec![rule.into()]));
    let mut balancers = toml::Table::new();
    balancers.insert("runtime_apis".into(), site.runtime_apis().into());
    balancers.insert("enable_timeout".into(), "10s".into());
    doc.insert("balancers".into(), toml::Value::Table(balancers));
    let path = dir.join("steward.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// The platform as the test's Steward sees it, from its config's text; None when it cannot
/// connect (the network is not there yet, or gone).
async fn adopting_platform(config: &str) -> Option<DockerPlatform> {
    let doc: toml::Table = toml::from_str(config).unwrap();
    let raw: RawDockerConfig = doc["platform"]["docker"].clone().try_into().unwrap();
    DockerPlatform::connect(raw.validate().expect("valid"))
        .await
        .ok()
}

/// The lab's Patroni and the 3.x one (scripts/lab.sh installs both).
const PATRONI_4: (&str, &str) = ("/opt/steward-lab/venv/bin/patroni", "patroni 4.1.5");
const PATRONI_3: (&str, &str) = ("/opt/steward-lab/venv-3.0.2/bin/patroni", "patroni 3.0.2");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_by_another_tool_is_adopted_and_its_killed_replica_replaced() {
    adoption(&LOOPBACK, PATRONI_4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_3_cluster_made_by_another_tool_is_adopted_and_its_killed_replica_replaced() {
    adoption(&LOOPBACK, PATRONI_3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_cluster_on_a_docker_network_has_its_killed_replica_replaced_there() {
    adoption(&NETWORK, PATRONI_4).await;
}

async fn adoption(site: &'static Site, (patroni, version): (&'static str, &'static str)) {
    if lab().is_none() {
        return;
    }
    let out = sh(patroni, &["--version"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        version,
        "{patroni} (scripts/lab.sh installs it): {out:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    cleanup_containers().await;
    cleanup_network(site).await;
    if let Some((network, subnet)) = site.network {
        let out = sh(
            "docker",
            &["network", "create", "--subnet", subnet, network],
        )
        .await;
        assert!(out.status.success(), "docker network create: {out:?}");
    }
    let patroni_config = site.patroni_config();
    let config = write_config(site, dir.path(), &state_dir, patroni, &patroni_config);
    // The text, for the clean-up: the file goes with `dir`, which the scenario's Steward owns.
    let text = std::fs::read_to_string(&config).unwrap();
    cleanup(site, &text).await;
    let outcome = tokio::spawn(scenario(
        site,
        config,
        text.clone(),
        dir,
        (patroni, version),
        patroni_config,
    ))
    .await;
    cleanup(site, &text).await;
    cleanup_network(site).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(
    site: &'static Site,
    config: PathBuf,
    text: String,
    dir: tempfile::TempDir,
    (patroni_bin, version): (&'static str, &'static str),
    patroni_config: PathBuf,
) {
    let state_dir = dir.path().join("state");
    site.write_patroni_config();
    run_etcd(site).await;
    for (name, address) in site.members {
        run_member(site, name, address, patroni_bin, &patroni_config).await;
    }
    run_balancers(site).await;
    let mut look_alike = vec!["--name".to_string(), LOOK_ALIKE.into()];
    look_alike.extend(["--network".into(), "host".into()]);
    look_alike.extend(host_programs());
    look_alike.extend(["steward-empty:1", "/bin/sleep", "infinity"].map(String::from));
    docker_run(look_alike, LOOK_ALIKE).await;
    let client = patroni(site.apis());
    let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
    let leader = loop {
        if let Some((leader, streaming)) = leader_and_streaming(&client).await {
            if streaming.len() == 2 {
                break leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the hand-made cluster did not bootstrap within {BOOTSTRAP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let platform = adopting_platform(&text)
        .await
        .expect("the platform connects to the lab's engines");
    let listed: Vec<String> = platform
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(listed, site.members.map(|(n, _)| n.to_string()));

    let mut steward = Steward::start(&config, dir, state_dir);
    tokio::time::sleep(Duration::from_secs(6)).await;
    steward.assert_alive();
    let victim = site
        .members
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n != leader)
        .unwrap();
    let out = sh("docker", &["kill", victim]).await;
    assert!(out.status.success(), "docker kill {victim}: {out:?}");
    let killed = Instant::now();
    eprintln!("e2e-adopt: killed {victim} (leader {leader}, {patroni_bin})");

    let deadline = killed + REPAIR_TIMEOUT;
    let (replacement, address, names) = loop {
        steward.assert_alive();
        let members = platform.list().await.unwrap_or_default();
        let running: Vec<_> = members
            .iter()
            .filter(|m| m.state == PlatformState::Running)
            .collect();
        let names: BTreeSet<String> = running.iter().map(|m| m.name.clone()).collect();
        let owned: Vec<String> = running
            .iter()
            .filter(|m| m.labels.get(LABEL_CLUSTER).map(String::as_str) == Some(SCOPE))
            .map(|m| m.name.clone())
            .collect();
        let in_patroni: BTreeSet<String> = client
            .cluster()
            .await
            .map(|v| v.members.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        let streaming = leader_and_streaming(&client)
            .await
            .map(|(_, s)| s.len())
            .unwrap_or(0);
        if members.len() == 3
            && running.len() == 3
            && !names.contains(victim)
            && owned.len() == 1
            && in_patroni == names
            && streaming == 2
        {
            let address = running
                .iter()
                .find(|m| m.name == owned[0])
                .map(|m| m.address.clone())
                .unwrap_or_default();
            break (owned[0].clone(), address, names);
        }
        assert!(
            Instant::now() < deadline,
            "no replacement streaming {REPAIR_TIMEOUT:?} after the kill: platform {members:?}, \
             patroni {in_patroni:?}, {streaming} streaming\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "e2e-adopt: {replacement} ({address}) streams in place of {victim} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let (first, last) = site.pool.split_once('-').unwrap();
    let in_pool = |a: &str| {
        let a: std::net::Ipv4Addr = a.parse().unwrap();
        let (first, last): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
            (first.parse().unwrap(), last.parse().unwrap());
        first <= a && a <= last
    };
    assert!(
        in_pool(&address),
        "{replacement} at {address}, outside {}",
        site.pool
    );
    // The replacement runs the cluster's Patroni, not the lab's default.
    let status: serde_json::Value = reqwest::get(format!("http://{address}:8008/patroni"))
        .await
        .expect("the replacement's REST API answers")
        .json()
        .await
        .expect("its /patroni is JSON");
    let want = version.trim_start_matches("patroni ");
    assert_eq!(
        status["patroni"]["version"], want,
        "{replacement}: {status}"
    );
    // Both balancers serve exactly the three running members, none in maintenance.
    let want: Vec<(String, String, String)> = ["primary", "replicas"]
        .iter()
        .flat_map(|b| {
            names
                .iter()
                .map(|n| (b.to_string(), n.clone(), "0".to_string()))
        })
        .collect();
    let deadline = Instant::now() + BALANCERS_TIMEOUT;
    for api in site.runtime_apis() {
        loop {
            let servers = balancer_servers(&api).await;
            if servers.as_ref() == Some(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "balancer {api} not in step: {servers:?}, want {want:?}\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // Traffic: through each balancer, 5432 reaches the primary and 5433 a replica.
    for (name, balancer) in site.balancers {
        for (port, recovery) in [("5432", "f"), ("5433", "t")] {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let answer = psql(balancer, port, "select pg_is_in_recovery()").await;
                if answer.as_deref() == Ok(recovery) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} {balancer}:{port}: {answer:?}, want {recovery}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // The killed one: kept, stopped, renamed; its data where the deployment put it.
    let retired = format!("{victim}.retired");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = sh("docker", &["inspect", "-f", "{{.State.Running}}", &retired]).await;
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "false");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{victim} was not retired as {retired}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let pg_version = Path::new(ROOT).join(victim).join("pgdata/PG_VERSION");
    assert!(pg_version.exists(), "{} is gone", pg_version.display());
    let out = sh(
        "docker",
        &["inspect", "-f", "{{.State.Running}}", LOOK_ALIKE],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "true",
        "the look-alike was touched"
    );
    let alerts: Vec<serde_json::Value> = steward
        .actions()
        .into_iter()
        .filter(|l| l["kind"] == "alert")
        .collect();
    assert!(
        alerts.is_empty(),
        "alerts: {alerts:?}\n{}",
        steward.output()
    );
    steward.stop_cleanly().await;
}

/// Where the balancer member template's HAProxy configuration is (lab/haproxy-member.cfg,
/// copied here by the test: the containers see the host's folders, not the work tree).
const MEMBER_HAPROXY_DIR: &str = "/var/lib/steward-lab/balancer-member";

/// The lab's config with the lab's own HAProxy pair adopted as `balancer` members, a template
/// for new ones, and `[balancers]` following the platform's balancer members.
fn balancer_config(dir: &Path, state_dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("tests/data/e2e/lab.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    doc["cluster"]
        .as_table_mut()
        .unwrap()
        .insert("state_dir".into(), state_dir.display().to_string().into());
    let docker = doc["platform"]["docker"].as_table_mut().unwrap();
    let rules: Vec<toml::Value> = LAB_BALANCERS
        .iter()
        .map(|(container, api)| {
            let (address, _) = api.split_once(':').unwrap();
            toml::Value::Table(
                toml::from_str(&format!(
                    "container = \"{container}\"\nrole = \"balancer\"\naddress = \"{address}\""
                ))
                .unwrap(),
            )
        })
        .collect();
    docker.insert("adopt".into(), toml::Value::Array(rules));
    let uid = |flag: &str| {
        let out = std::process::Command::new("id")
            .args([flag, "haproxy"])
            .output()
            .expect("id runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut mounts: Vec<String> = ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc"]
        .iter()
        .map(|m| format!("{m}:{m}:ro"))
        .collect();
    mounts.push(format!("{MEMBER_HAPROXY_DIR}:{MEMBER_HAPROXY_DIR}:ro"));
    let template: toml::Table = toml::from_str(&format!(
        "image = \"steward-empty:1\"\n\
         command = [\"/usr/sbin/haproxy\", \"-W\", \"-db\", \"-f\", \"{MEMBER_HAPROXY_DIR}/haproxy.cfg\"]\n\
         user = \"{}:{}\"\n\
         restart_policy = \"no\"\n\
         mounts = {mounts:?}\n",
        uid("-u"),
        uid("-g"),
    ))
    .unwrap();
    docker.insert("balancer".into(), toml::Value::Table(template));
    let mut balancers = toml::Table::new();
    balancers.insert("runtime_apis".into(), toml::Value::Array(Vec::new()));
    balancers.insert("member_api_port".into(), 9999.into());
    balancers.insert("enable_timeout".into(), "10s".into());
    doc.insert("balancers".into(), toml::Value::Table(balancers));
    let path = dir.join("steward.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// Issue 15: the lab's own HAProxy pair (made by scripts/lab.sh, no Steward label) adopted as
/// `balancer` members, with `[balancers]` following the platform's balancer members
/// (`member_api_port`) instead of a fixed list. `lab-haproxy-1` is killed: Steward must replace
/// it with a new HAProxy from the balancer template (lab/haproxy-member.cfg: no servers of its
/// own) at an address of its pool, give it every database member as a server of both backends
/// (none in maintenance), so that its port 5432 reaches the primary and 5433 a replica, and keep
/// the killed one (stopped, renamed `lab-haproxy-1.retired`: it is not Steward's to delete);
/// meanwhile `lab-haproxy-2` carries the traffic: a query through it answers on every round.
/// The lab is restored after (`with_lab`: Steward's balancer removed, `lab.sh up` remakes
/// `lab-haproxy-1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labs_haproxy_adopted_as_balancers_a_killed_one_is_replaced_and_kept_in_step() {
    let Some(urls) = lab() else {
        return;
    };
    let retired = format!("{}.retired", LAB_BALANCERS[0].0);
    let _ = sh("docker", &["rm", "-f", &retired]).await;
    with_lab(urls, move |_| async move {
        std::fs::create_dir_all(MEMBER_HAPROXY_DIR).unwrap();
        std::fs::copy(
            repo().join("lab/haproxy-member.cfg"),
            Path::new(MEMBER_HAPROXY_DIR).join("haproxy.cfg"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let config = balancer_config(dir.path(), &state_dir);
        let text = std::fs::read_to_string(&config).unwrap();
        let platform = adopting_platform(&text)
            .await
            .expect("the platform connects to the lab's engines");
        let balancers = |members: &[steward_model::ports::PlatformMember]| -> Vec<String> {
            members
                .iter()
                .filter(|m| m.role == steward_model::Role::Balancer)
                .map(|m| m.name.clone())
                .collect()
        };
        let listed = platform.list().await.unwrap();
        assert_eq!(
            balancers(&listed),
            LAB_BALANCERS.map(|(c, _)| c.to_string()),
            "both lab balancers adopted"
        );
        let (victim, victim_api) = LAB_BALANCERS[0];
        let (survivor, survivor_api) = LAB_BALANCERS[1];
        let survivor_address = survivor_api.split_once(':').unwrap().0;

        let mut steward = Steward::start(&config, dir, state_dir);
        tokio::time::sleep(Duration::from_secs(6)).await;
        steward.assert_alive();
        assert_eq!(
            psql(survivor_address, "5432", "select pg_is_in_recovery()").await,
            Ok("f".to_string())
        );
        let out = sh("docker", &["kill", victim]).await;
        assert!(out.status.success(), "docker kill {victim}: {out:?}");
        let killed = Instant::now();
        eprintln!("e2e-adopt: killed balancer {victim} ({victim_api})");

        let want: Vec<(String, String, String)> = ["primary", "replicas"]
            .iter()
            .flat_map(|b| LAB_MEMBERS.map(|m| (b.to_string(), m.to_string(), "0".to_string())))
            .collect();
        let deadline = killed + REPAIR_TIMEOUT;
        let mut rounds = 0;
        let (replacement, address) = loop {
            steward.assert_alive();
            rounds += 1;
            // The survivor carries the traffic all along.
            let through = psql(survivor_address, "5432", "select pg_is_in_recovery()").await;
            assert_eq!(
                through.as_deref(),
                Ok("f"),
                "{survivor} stopped carrying the traffic {:.1} s after the kill",
                killed.elapsed().as_secs_f64()
            );
            let members = platform.list().await.unwrap_or_default();
            let new: Vec<&steward_model::ports::PlatformMember> = members
                .iter()
                .filter(|m| {
                    m.role == steward_model::Role::Balancer
                        && m.state == PlatformState::Running
                        && m.labels.get(LABEL_CLUSTER).map(String::as_str) == Some("steward-lab")
                })
                .collect();
            if let [m] = new.as_slice() {
                let api = format!("{}:9999", m.address);
                let in_step = balancer_servers(&api).await.as_ref() == Some(&want);
                let primary = psql(&m.address, "5432", "select pg_is_in_recovery()").await;
                let replica = psql(&m.address, "5433", "select pg_is_in_recovery()").await;
                if in_step && primary.as_deref() == Ok("f") && replica.as_deref() == Ok("t") {
                    break (m.name.clone(), m.address.clone());
                }
            }
            assert!(
                Instant::now() < deadline,
                "no balancer in step in place of {victim} {REPAIR_TIMEOUT:?} after the kill: \
                 {members:?}\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        eprintln!(
            "e2e-adopt: balancer {replacement} ({address}) serves in place of {victim} {:.1} s \
             after the kill ({rounds} rounds of traffic through {survivor}, none failed)",
            killed.elapsed().as_secs_f64()
        );
        let out = sh("docker", &["inspect", "-f", "{{.State.Running}}", &retired]).await;
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "false",
            "{victim} was not retired as {retired}: {out:?}\n{}",
            steward.output()
        );
        let alerts: Vec<serde_json::Value> = steward
            .actions()
            .into_iter()
            .filter(|l| l["kind"] == "alert")
            .collect();
        assert!(alerts.is_empty(), "alerts: {alerts:?}");
        steward.stop_cleanly().await;
        let _ = sh("docker", &["rm", "-f", &retired]).await;
    })
    .await;
}

/// A balancer's CPU limit (vCPU: `NanoCpus`, else quota over period) and the time it started.
async fn balancer_cpus(container: &str) -> (f64, String) {
    let out = sh(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}} {{.State.StartedAt}}",
            container,
        ],
    )
    .await;
    assert!(out.status.success(), "docker inspect {container}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<&str> = text.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpus = if num(0) > 0.0 {
        num(0) / 1e9
    } else if num(1) > 0.0 && num(2) > 0.0 {
        num(1) / num(2)
    } else {
        0.0
    };
    (cpus, f.get(3).unwrap_or(&"").to_string())
}

/// Issue 15: the lab's HAProxy pair adopted as `balancer` members grows live under a CPU load
/// through it. Both are limited to 0.05 vCPU first (the lab runs them without a limit, whose
/// size Steward cannot know), with a balancer CPU policy that acts within seconds; four
/// streams of `COPY ... TO STDOUT` through both read ports keep HAProxy busier than that. Both
/// must be grown (the role has one size) without a restart: the same container, started at
/// the same time. The lab's HAProxy pair is removed after and `lab.sh up` makes it afresh
/// (a Docker limit cannot be taken off with `docker update`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_labs_haproxy_adopted_as_balancers_grows_live_under_a_cpu_load() {
    let Some(urls) = lab() else {
        return;
    };
    const START: f64 = 0.05;
    with_lab(urls, move |_| async move {
        let outcome = tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let state_dir = dir.path().join("state");
            let config = balancer_config(dir.path(), &state_dir);
            let mut doc: toml::Table =
                toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
            let policy: toml::Table = toml::from_str(&format!(
                "[balancer.cpu]\nstep = {START}\nmin = {START}\nmax = 0.5\nwindow = \"10s\"\n\
                 up_window = \"12s\"\ndown_window = \"1h\"\ncooldown = \"10m\"\n"
            ))
            .unwrap();
            doc.insert("policy".into(), toml::Value::Table(policy));
            std::fs::write(&config, toml::to_string(&doc).unwrap()).unwrap();
            let mut before = Vec::new();
            for (container, _) in LAB_BALANCERS {
                let out = sh(
                    "docker",
                    &["update", "--cpus", &START.to_string(), container],
                )
                .await;
                assert!(out.status.success(), "docker update {container}: {out:?}");
                before.push((container, balancer_cpus(container).await));
            }
            let mut steward = Steward::start(&config, dir, state_dir);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let streams: Vec<_> = LAB_BALANCERS
                .iter()
                .flat_map(|(_, api)| {
                    let host = api.split_once(':').unwrap().0.to_string();
                    [host.clone(), host]
                })
                .map(|host| {
                    let stop = std::sync::Arc::clone(&stop);
                    tokio::spawn(async move {
                        let mut copies = 0u32;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let copied = stream_through(&host, "5433").await;
                            if copied.is_ok() {
                                copies += 1;
                            } else {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                        }
                        copies
                    })
                })
                .collect();
            let loaded = Instant::now();
            let deadline = loaded + Duration::from_secs(180);
            let grown = loop {
                steward.assert_alive();
                let mut now = Vec::new();
                for (container, _) in LAB_BALANCERS {
                    now.push(balancer_cpus(container).await);
                }
                if now.iter().all(|(cpus, _)| *cpus > START + 1e-6) {
                    break now;
                }
                assert!(
                    Instant::now() < deadline,
                    "the balancers did not grow within 180 s of the load: {now:?}\n{}",
                    steward.output()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut copies = 0;
            for s in streams {
                copies += s.await.unwrap_or(0);
            }
            eprintln!(
                "e2e-adopt: balancers grown {START} -> {:?} vCPU {:.1} s after the load \
                 ({copies} copies of 200 MB through them)",
                grown.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                loaded.elapsed().as_secs_f64()
            );
            for ((container, (_, started)), (_, started_now)) in before.iter().zip(&grown) {
                assert_eq!(
                    started, started_now,
                    "{container} was restarted, not grown live"
                );
            }
            assert!(copies > 0, "no copy went through the balancers");
            steward.stop_cleanly().await;
        })
        .await;
        // The pair is made afresh by the restore (`lab.sh up`): the limit cannot be undone.
        for (container, _) in LAB_BALANCERS {
            let _ = sh("docker", &["rm", "-f", container]).await;
        }
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

/// 200 MB from a replica through `host:port` (`COPY ... TO STDOUT`), thrown away.
async fn stream_through(host: &str, port: &str) -> Result<(), String> {
    let mut command = psql_command(host, port)?;
    let status = command
        .args([
            "-c",
            "copy (select repeat('x', 1000) from generate_series(1, 200000)) to stdout",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("psql: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or(format!("psql: {status}"))
}

/// `psql` as the lab's superuser, to `host:port`, its password from the lab's secrets.
fn psql_command(host: &str, port: &str) -> Result<tokio::process::Command, String> {
    let secrets = std::fs::read_to_string("/var/lib/steward-lab/secrets/passwords.env")
        .map_err(|e| format!("the lab's secrets (root): {e}"))?;
    let password = secrets
        .lines()
        .find_map(|l| l.strip_prefix("SUPERUSER_PASSWORD="))
        .ok_or("no SUPERUSER_PASSWORD in the lab's secrets")?
        .trim_matches('\'')
        .to_string();
    let mut command = tokio::process::Command::new("/usr/lib/postgresql/15/bin/psql");
    command
        .args(["-h", host, "-p", port, "-U", "postgres", "-d", "postgres"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "3")
        .env_remove("PGPASSFILE");
    Ok(command)
}

/// One value from `psql` as the lab's superuser, through `host:port`.
async fn psql(host: &str, port: &str, query: &str) -> Result<String, String> {
    let out = psql_command(host, port)?
        .args(["-tAc", query])
        .output()
        .await
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes everything the test made: Steward's members of the scope (with their disks), every
/// `legacy-*` container on every engine, the data folders, and the scope's keys in the lab's
/// etcd. Never panics.
async fn cleanup(site: &Site, config: &str) {
    if let Some(platform) = adopting_platform(config).await {
        for m in platform.list().await.unwrap_or_default() {
            if m.labels.get(LABEL_CLUSTER).map(String::as_str) == Some(SCOPE) {
                let _ = platform.fence(&m.name).await;
                let _ = platform.remove(&m.name, true).await;
            }
        }
    }
    cleanup_containers().await;
    let _ = std::fs::remove_dir_all(ROOT);
    if site.network.is_some() {
        // Its etcd was a container, gone with the others.
        return;
    }
    // etcd v3's JSON gateway: delete the range [/service/legacy-e2e/, /service/legacy-e20).
    let body = serde_json::json!({
        "key": b64(&format!("/service/{SCOPE}/")),
        "range_end": b64(&format!("/service/{SCOPE}0")),
    });
    let http = reqwest::Client::new();
    if let Err(e) = http
        .post(format!("http://{LAB_ETCD}/v3/kv/deleterange"))
        .json(&body)
        .send()
        .await
    {
        eprintln!("e2e-adopt: could not delete the scope's keys in etcd: {e}");
    }
}

/// Every `legacy-*` container on every engine. Never panics.
async fn cleanup_containers() {
    for engine in ENGINES {
        let out = sh(
            "docker",
            &["-H", engine, "ps", "-aq", "--filter", "name=^legacy-"],
        )
        .await;
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = sh("docker", &["-H", engine, "rm", "-f", id]).await;
        }
    }
}

/// The site's network, once nothing is attached to it. Never panics.
async fn cleanup_network(site: &Site) {
    if let Some((network, _)) = site.network {
        let _ = sh("docker", &["network", "rm", network]).await;
    }
}

/// Standard base64 with padding (etcd's JSON gateway takes keys so).
pub(crate) fn b64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn b64_matches_the_standard_alphabet_and_padding() {
    assert_eq!(b64("/service/a/"), "L3NlcnZpY2UvYS8=");
    assert_eq!(b64("ab"), "YWI=");
    assert_eq!(b64("abc"), "YWJj");
}
