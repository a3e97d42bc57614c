//! End-to-end FLEET test (issue 19): two `steward run` instances share a fleet of two real
//! Patroni clusters through per-cluster etcd leases; one instance is killed, the other takes
//! its clusters over, and a replica killed in one of them is replaced exactly once.
//!
//! The test makes the two clusters itself on the lab's engines, and one HAProxy they share
//! (`fleet-e2e-lb`, 127.0.0.80, Runtime API :9999) with two backends per cluster (`a_primary`,
//! `a_replicas`, `b_primary`, `b_replicas`), each cluster's `[fleet.cluster.balancers]` naming
//! its own. The clusters are made as Steward's Docker platform makes a member (the lab's template: Patroni 4.1.5 over the host's programs, a loop-mounted
//! XFS disk each): `fleet-e2e-a` (members `fa-1..3`, 127.0.0.61-63, pool .61-.69) and
//! `fleet-e2e-b` (`fb-1..3`, 127.0.0.71-73, pool .71-.79), each its own Patroni scope in the
//! lab's etcd. Then:
//! 1. instance `a` starts alone and takes both clusters' leases; its `/status` summary shows
//!    both healthy, none elsewhere;
//! 2. instance `b` starts; its `/status` shows both clusters elsewhere, owned by `a`;
//! 3. `a` is SIGKILLed (no resign: its leases run out after the TTL) and at once a replica of
//!    `fleet-e2e-a` is `docker kill`ed;
//! 4. within `REPAIR_TIMEOUT`, `b` owns both clusters and `fleet-e2e-a` is back to three members,
//!    one leader and two streaming, one of them the replacement, and its backends on the
//!    shared balancer list the replacement and not the dead replica; the cluster's decision log
//!    (shared state folder, as instances sharing a fleet share their storage) holds exactly one
//!    create, `b`'s; `a` ran no repair; `fleet-e2e-b` was not touched (the same three
//!    containers, running, its backends as they were).
//!
//! Needs what tests/cli/e2e.rs needs (root, the lab up for its image, engines and etcd,
//! `STEWARD_LAB=1`, the lab lock). It leaves nothing: both clusters' containers and disks (on
//! every engine), the balancer, their scopes' keys in the lab's etcd and the instances' lease
//! keys are removed at the end, also when it fails. About a minute and a half.

use std::path::{Path, PathBuf};
use std::time::Duration;

use steward_adapters::patroni::{PatroniApi, PatroniClient};
use steward_adapters::platform::docker::DockerPlatform;
use steward_model::ports::{CreateSpec, ErrorKind, Platform};
use steward_model::{Role, Size};
use tokio::time::Instant;

use crate::e2e::{
    balancer_servers, lab, leader_and_streaming, patroni, platform, repo, sh, REPAIR_TIMEOUT,
};

/// One test cluster: its name (Patroni scope), members and address pool.
struct TestCluster {
    name: &'static str,
    members: [(&'static str, &'static str); 3],
    pool: &'static str,
}

const A: TestCluster = TestCluster {
    name: "fleet-e2e-a",
    members: [
        ("fa-1", "127.0.0.61"),
        ("fa-2", "127.0.0.62"),
        ("fa-3", "127.0.0.63"),
    ],
    pool: "127.0.0.61-127.0.0.69",
};

const B: TestCluster = TestCluster {
    name: "fleet-e2e-b",
    members: [
        ("fb-1", "127.0.0.71"),
        ("fb-2", "127.0.0.72"),
        ("fb-3", "127.0.0.73"),
    ],
    pool: "127.0.0.71-127.0.0.79",
};

/// The balancer both clusters share, each with backends of its own (`<a|b>_primary`,
/// `<a|b>_replicas`), and its Runtime API.
const BALANCER: &str = "fleet-e2e-lb";
const BALANCER_ADDR: &str = "127.0.0.80";
/// Where its configuration lives.
const BALANCER_DIR: &str = "/var/lib/steward-lab/fleet-e2e-lb";

/// The lab's etcd (scripts/lab.sh ETCD_ADDR); Patroni's namespace there (lab/patroni.yml.tmpl).
const LAB_ETCD: &str = "127.0.0.2:2379";
const PATRONI_NAMESPACE: &str = "/service";
/// From the first `docker run` to a leader and two streaming replicas.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);
/// The instances' lease TTL: a killed instance's clusters pass on after it.
const LEASE_TTL: &str = "4s";

impl TestCluster {
    /// Its backends on the shared balancer: `a_primary`, `a_replicas` for `fleet-e2e-a`.
    fn backends(&self) -> [String; 2] {
        let short = self.name.trim_start_matches("fleet-e2e-");
        [format!("{short}_primary"), format!("{short}_replicas")]
    }

    fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|(_, a)| format!("http://{a}:8008"))
            .collect()
    }

    fn patroni(&self) -> PatroniClient {
        patroni(self.urls())
    }

    /// The lab's platform, for this cluster's members.
    fn platform(&self, lab: &DockerPlatform) -> DockerPlatform {
        let pool = self
            .members
            .iter()
            .map(|(_, a)| a.parse().unwrap())
            .collect();
        lab.for_cluster(self.name, pool)
    }

    /// Creates the three members (the first alone, so that it bootstraps the cluster) and
    /// waits for a leader and two streaming replicas.
    async fn bootstrap(&self, lab: &DockerPlatform) {
        let platform = self.platform(lab);
        let size = Size {
            cpus: 1.0,
            memory_bytes: 1 << 30,
            disk_bytes: 512 << 20,
        };
        let client = self.patroni();
        for (i, (name, _)) in self.members.iter().enumerate() {
            let spec = CreateSpec {
                cluster: self.name.to_string(),
                role: Role::Database,
                name: name.to_string(),
                size,
                operation_id: format!("e2e-fleet-bootstrap-{i}"),
                replaces: None,
            };
            platform
                .create(&spec)
                .await
                .unwrap_or_else(|e| panic!("creating {name}: {e}"));
            if i == 0 {
                self.wait_healthy(&client, 1).await;
            }
        }
        self.wait_healthy(&client, 3).await;
    }

    /// Waits until Patroni lists `members` members, one leader and the others streaming.
    async fn wait_healthy(&self, client: &PatroniClient, members: usize) -> (String, Vec<String>) {
        let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
        loop {
            let listed = client.cluster().await.map(|v| v.members.len()).ok();
            if let Some((leader, streaming)) = leader_and_streaming(client).await {
                if listed == Some(members) && streaming.len() == members - 1 {
                    return (leader, streaming);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no leader and {} streaming within {BOOTSTRAP_TIMEOUT:?} (members: {listed:?})",
                self.name,
                members - 1
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Removes every container of the cluster (fenced ones too) with its disk, and the scope's
    /// keys in etcd. Never panics: it also runs after a failure.
    async fn remove(&self, lab: &DockerPlatform) {
        let platform = self.platform(lab);
        if let Ok(members) = platform.list().await {
            for m in members {
                let _ = platform.fence(&m.name).await;
                match platform.remove(&m.name, true).await {
                    Ok(()) => eprintln!("e2e_fleet: removed {}", m.name),
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => eprintln!("e2e_fleet: cannot remove {}: {e}", m.name),
                }
            }
        }
        etcd_delete_prefix(&format!("{PATRONI_NAMESPACE}/{}/", self.name)).await;
    }
}

/// Deletes every key under `prefix` in the lab's etcd (v3 JSON gateway: the range from the
/// prefix to the prefix with its last byte raised by one). Never panics.
async fn etcd_delete_prefix(prefix: &str) {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let body = serde_json::json!({
        "key": crate::e2e_adopt::b64(prefix),
        "range_end": crate::e2e_adopt::b64(&String::from_utf8_lossy(&end)),
    });
    let sent = reqwest::Client::new()
        .post(format!("http://{LAB_ETCD}/v3/kv/deleterange"))
        .json(&body)
        .send()
        .await;
    if !matches!(&sent, Ok(r) if r.status().is_success()) {
        eprintln!("e2e_fleet: cannot delete {prefix} in etcd: {sent:?}");
    }
}

/// Runs the shared HAProxy (the lab's settings: checks on Patroni's REST API, OPTIONS
/// /primary and /replica), each cluster's two backends listing its three members.
async fn run_balancer() {
    let mut listens = Vec::new();
    for (i, c) in [&A, &B].iter().enumerate() {
        let servers: Vec<String> = c
            .members
            .iter()
            .map(|(m, a)| format!("    server {m} {a}:5432 check port 8008"))
            .collect();
        let servers = servers.join("\n");
        let [primary, replicas] = c.backends();
        let (p, r) = (6001 + 2 * i, 6002 + 2 * i);
        listens.push(format!(
            "listen {primary}\n    bind {BALANCER_ADDR}:{p}\n    option httpchk OPTIONS /primary\n    http-check expect status 200\n{servers}\n"
        ));
        listens.push(format!(
            "listen {replicas}\n    bind {BALANCER_ADDR}:{r}\n    balance leastconn\n    option httpchk OPTIONS /replica\n    http-check expect status 200\n{servers}\n"
        ));
    }
    let config = [
        "global".to_string(),
        "    maxconn 200".into(),
        format!("    stats socket ipv4@{BALANCER_ADDR}:9999 level admin"),
        "    stats timeout 30s".into(),
        "defaults".into(),
        "    mode tcp".into(),
        "    timeout connect 3s".into(),
        "    timeout client 30m".into(),
        "    timeout server 30m".into(),
        "    timeout check 2s".into(),
        "    default-server inter 1s fastinter 500ms downinter 2s rise 2 fall 2 on-marked-down shutdown-sessions".into(),
        listens.join("\n"),
    ]
    .join("\n");
    std::fs::create_dir_all(BALANCER_DIR).unwrap();
    std::fs::write(Path::new(BALANCER_DIR).join("haproxy.cfg"), config).unwrap();
    let host = vec!["--network".to_string(), "host".to_string()];
    crate::e2e_adopt::run_haproxy(BALANCER, host, Path::new(BALANCER_DIR)).await;
}

/// The servers of `cluster`'s backends on the shared balancer (backend, server, admin state),
/// sorted; None while it does not answer.
async fn backends_of(cluster: &TestCluster) -> Option<Vec<(String, String, String)>> {
    let all = balancer_servers(&format!("{BALANCER_ADDR}:9999")).await?;
    let own = cluster.backends();
    Some(
        all.into_iter()
            .filter(|(b, _, _)| own.contains(b))
            .collect(),
    )
}

/// What `cluster`'s backends should hold: every member named, in both, none in maintenance.
fn serving(cluster: &TestCluster, members: &[&str]) -> Vec<(String, String, String)> {
    let mut want: Vec<(String, String, String)> = cluster
        .backends()
        .iter()
        .flat_map(|b| {
            members
                .iter()
                .map(|m| (b.clone(), m.to_string(), "0".to_string()))
        })
        .collect();
    want.sort();
    want
}

/// A free port on loopback (bound, then released for the child to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// The fleet's config for instance `id`: the lab's platform and repair settings
/// (tests/data/e2e/lab.toml) with both clusters listed, a lease on the lab's etcd under
/// `scope`, and the HTTP API on `port`. Both instances share `state_dir`.
fn write_fleet_config(dir: &Path, state_dir: &Path, id: &str, scope: &str, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("tests/data/e2e/lab.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    // What a fleet's clusters name for themselves, each in its entry. The lab's Prometheus
    // stays, as a deployment's would (it scrapes the lab's cluster only; that each cluster
    // asks for its own series is tests/cli/lab.rs's test on it).
    for own in ["patroni", "balancers"] {
        doc.remove(own);
    }
    doc["cluster"]
        .as_table_mut()
        .unwrap()
        .insert("state_dir".into(), state_dir.display().to_string().into());
    let entry = |c: &TestCluster| {
        let mut t = toml::Table::new();
        t.insert("name".into(), c.name.into());
        t.insert(
            "patroni_urls".into(),
            toml::Value::Array(c.urls().into_iter().map(toml::Value::String).collect()),
        );
        t.insert("addresses".into(), toml::Value::Array(vec![c.pool.into()]));
        let mut balancers = toml::Table::new();
        balancers.insert(
            "runtime_apis".into(),
            toml::Value::Array(vec![format!("{BALANCER_ADDR}:9999").into()]),
        );
        balancers.insert(
            "backends".into(),
            toml::Value::Array(c.backends().into_iter().map(toml::Value::String).collect()),
        );
        balancers.insert("enable_timeout".into(), "20s".into());
        t.insert("balancers".into(), toml::Value::Table(balancers));
        toml::Value::Table(t)
    };
    let mut fleet = toml::Table::new();
    fleet.insert(
        "cluster".into(),
        toml::Value::Array(vec![entry(&A), entry(&B)]),
    );
    doc.insert("fleet".into(), toml::Value::Table(fleet));
    let mut lease = toml::Table::new();
    lease.insert(
        "endpoints".into(),
        toml::Value::Array(vec![format!("http://{LAB_ETCD}").into()]),
    );
    lease.insert("instance".into(), id.into());
    lease.insert("scope".into(), scope.into());
    lease.insert("ttl".into(), LEASE_TTL.into());
    doc.insert("lease".into(), toml::Value::Table(lease));
    let mut server = toml::Table::new();
    server.insert("listen".into(), format!("127.0.0.1:{port}").into());
    doc.insert("server".into(), toml::Value::Table(server));
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// One `steward run` instance of the fleet, its output in files, killed when dropped.
struct Instance {
    id: &'static str,
    child: tokio::process::Child,
    port: u16,
    err: PathBuf,
}

impl Instance {
    fn start(dir: &Path, state_dir: &Path, id: &'static str, scope: &str) -> Instance {
        let port = free_port();
        let config = write_fleet_config(dir, state_dir, id, scope, port);
        let err = dir.join(format!("{id}.stderr"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["--log", "steward=info,warn", "run", "--config"])
            .arg(&config)
            .stdout(std::fs::File::create(dir.join(format!("{id}.stdout"))).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("the steward binary runs");
        Instance {
            id,
            child,
            port,
            err,
        }
    }

    /// Its logs (stderr).
    fn output(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// What it printed of its actions (stdout: a line per command and result).
    fn printed(&self) -> String {
        std::fs::read_to_string(self.err.with_extension("stdout")).unwrap_or_default()
    }

    /// The process's CPU time so far (user + system, from /proc/PID/stat), seconds.
    fn cpu_seconds(&self) -> f64 {
        let pid = self.child.id().expect("running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        // USER_HZ is 100 on Linux.
        ticks / 100.0
    }

    /// The process's resident memory now, KiB (VmRSS).
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The fleet summary on `/status`, when it answers.
    async fn status(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        reqwest::get(url).await.ok()?.json().await.ok()
    }

    /// Waits until `/status` satisfies `done`; the last summary.
    async fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("{} exited ({exit}):\n{}", self.id, self.output());
            }
            let status = self.status().await;
            if let Some(s) = status.as_ref().filter(|s| done(s)) {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} within {timeout:?}; /status: {status:?}\n{}",
                self.id,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The `state` of `cluster` on a fleet summary.
fn state_of<'a>(summary: &'a serde_json::Value, cluster: &str) -> &'a str {
    summary["by_cluster"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == cluster))
        .and_then(|c| c["state"].as_str())
        .unwrap_or("missing")
}

/// The JSON lines of a cluster's decision log in the shared state folder.
fn actions(state_dir: &Path, cluster: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state_dir.join(cluster).join("actions.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Container ids of a cluster's members, by name.
async fn containers(platform: &DockerPlatform) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = platform
        .list()
        .await
        .expect("list the cluster's members")
        .into_iter()
        .map(|m| (m.name.clone(), format!("{:?}", m.state)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_real_clusters_are_taken_over_and_a_fault_repaired_exactly_once() {
    if lab().is_none() {
        return;
    }
    let lab = platform().await;
    for c in [&A, &B] {
        c.remove(&lab).await;
    }
    // In its own task, so that a panic comes back here and the clean-up below still runs
    // (the instances, dropped with the task, are killed).
    let _ = sh("docker", &["rm", "-f", BALANCER]).await;
    let scope = format!("fleet-e2e-{}", std::process::id());
    let outcome = tokio::spawn(scenario(scope.clone())).await;
    for c in [&A, &B] {
        c.remove(&lab).await;
    }
    let _ = sh("docker", &["rm", "-f", BALANCER]).await;
    let _ = std::fs::remove_dir_all(BALANCER_DIR);
    // The leases expire by themselves; a clean etcd is kinder to the next run.
    etcd_delete_prefix(&format!("/steward/{scope}/")).await;
    for c in [&A, &B] {
        etcd_delete_prefix(&format!("/steward/clusters/{}/", c.name)).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(scope: String) {
    let lab = platform().await;
    tokio::join!(A.bootstrap(&lab), B.bootstrap(&lab), run_balancer());
    let before_b = containers(&B.platform(&lab)).await;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");

    // 1. `a` alone takes both clusters.
    let mut a = Instance::start(dir.path(), &state_dir, "a", &scope);
    let summary = a
        .wait_status("both clusters healthy here", Duration::from_secs(60), |s| {
            s["states"]["healthy"] == 2
        })
        .await;
    assert_eq!(summary["clusters"], 2, "{summary}");

    // 2. `b` joins: both clusters are elsewhere, a's.
    let mut b = Instance::start(dir.path(), &state_dir, "b", &scope);
    let summary = b
        .wait_status("both clusters elsewhere", Duration::from_secs(30), |s| {
            s["states"]["elsewhere"] == 2
        })
        .await;
    for c in summary["by_cluster"].as_array().unwrap() {
        assert_eq!(c["owner"], "a", "{summary}");
    }
    // What a cluster costs: `a` runs both clusters' loops, `b` none (the same binary and
    // config, its HTTP API and leases alive), over the same 20 s. Printed, not asserted.
    let (a_cpu, b_cpu) = (a.cpu_seconds(), b.cpu_seconds());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (a_cpu, b_cpu) = (a.cpu_seconds() - a_cpu, b.cpu_seconds() - b_cpu);
    let (a_rss, b_rss) = (a.rss_kib(), b.rss_kib());
    eprintln!(
        "e2e_fleet: over 20 s, a (2 clusters) {a_cpu:.2} s CPU, {a_rss} KiB RSS; b (none) \
         {b_cpu:.2} s CPU, {b_rss} KiB RSS; per cluster {:.1} % of a core, {} KiB",
        (a_cpu - b_cpu) / 2.0 / 20.0 * 100.0,
        (a_rss as i64 - b_rss as i64) / 2
    );

    // 3. `a` dies without resigning, and a replica of fleet-e2e-a dies with it.
    let client = A.patroni();
    let (leader, streaming) = leader_and_streaming(&client).await.expect("a leader");
    let victim = streaming.first().expect("a streaming replica").clone();
    a.child.kill().await.unwrap();
    let killed = Instant::now();
    // The lab's engines stand for two hosts (tests/data/e2e/lab.toml): kill it on its own.
    let host = A
        .platform(&lab)
        .list()
        .await
        .expect("list fleet-e2e-a")
        .into_iter()
        .find(|m| m.name == victim)
        .map(|m| m.host)
        .expect("the victim is listed");
    let engine = match host.as_str() {
        "host-b" => "unix:///run/steward-docker2.sock",
        _ => "unix:///var/run/docker.sock",
    };
    let out = sh("docker", &["-H", engine, "kill", &victim]).await;
    assert!(out.status.success(), "docker kill {victim}: {out:?}");
    eprintln!("e2e_fleet: killed instance a and {victim} (leader {leader})");

    // 4. `b` takes both clusters over and repairs fleet-e2e-a.
    b.wait_status("both clusters taken over", REPAIR_TIMEOUT, |s| {
        s["states"]["elsewhere"] == 0
    })
    .await;
    let taken = killed.elapsed();
    let deadline = Instant::now() + REPAIR_TIMEOUT;
    let (new_leader, streaming) = loop {
        let listed: Vec<String> = client
            .cluster()
            .await
            .map(|v| v.members.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        if let Some((l, s)) = leader_and_streaming(&client).await {
            if listed.len() == 3 && s.len() == 2 && !listed.contains(&victim) {
                break (l, s);
            }
        }
        assert!(
            Instant::now() < deadline,
            "fleet-e2e-a not repaired within {REPAIR_TIMEOUT:?}: members {listed:?}\n{}",
            b.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let repaired = killed.elapsed();
    assert_eq!(new_leader, leader, "a replica's death moved no leader");
    let replacement = format!("{victim}-r1");
    assert!(
        streaming.contains(&replacement),
        "the replacement {replacement} streams: {streaming:?}"
    );
    let summary = b
        .wait_status("fleet-e2e-a healthy again", Duration::from_secs(60), |s| {
            state_of(s, A.name) == "healthy"
        })
        .await;
    assert_eq!(state_of(&summary, B.name), "healthy", "{summary}");

    // The shared balancer: fleet-e2e-a's backends follow its members (the replacement in,
    // the dead replica out), fleet-e2e-b's still list its own three.
    let names: Vec<String> = A
        .members
        .iter()
        .map(|(m, _)| m.to_string())
        .filter(|m| *m != victim)
        .chain([replacement.clone()])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let want_a = serving(&A, &names);
    let want_b = serving(&B, &B.members.map(|(m, _)| m));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got_a, got_b) = (backends_of(&A).await, backends_of(&B).await);
        if got_a.as_ref() == Some(&want_a) && got_b.as_ref() == Some(&want_b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shared balancer's backends:\n a: {got_a:?}\n want {want_a:?}\n b: {got_b:?}\n want {want_b:?}\n{}",
            b.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Exactly once: one create in the cluster's log, by b (a was killed before the fault).
    let lines = actions(&state_dir, A.name);
    let creates: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["kind"] == "command"
                && l["what"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("create database"))
        })
        .collect();
    assert_eq!(creates.len(), 1, "one create: {creates:?}\n{}", b.output());
    let on_platform: Vec<String> = containers(&A.platform(&lab))
        .await
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(&format!("{victim}-r")))
        .collect();
    assert_eq!(
        on_platform,
        std::slice::from_ref(&replacement),
        "one replacement container"
    );
    // a's own account: no command at all (it was killed before the fault); b's: the repair.
    assert!(
        !a.printed().contains(&victim),
        "a acted on {victim}:\n{}",
        a.printed()
    );
    assert!(
        b.printed()
            .contains(&format!("create database {replacement}")),
        "b made the replacement:\n{}",
        b.printed()
    );
    // The other cluster: the same containers, still running, nothing done.
    assert_eq!(containers(&B.platform(&lab)).await, before_b);
    let b_actions = actions(&state_dir, B.name);
    assert!(
        !b_actions.iter().any(|l| l["kind"] == "command"),
        "nothing done to fleet-e2e-b: {b_actions:?}"
    );
    eprintln!(
        "e2e_fleet: clusters taken over {:.1} s after the kill, {victim} replaced by \
         {replacement} and streaming {:.1} s after it",
        taken.as_secs_f64(),
        repaired.as_secs_f64()
    );
    b.child.kill().await.unwrap();
}
