//! End-to-end fault tests: `steward run` (the built binary, not a library call) acting on the REAL
//! lab (scripts/lab.sh; lab/README.md), a Patroni 4.1.5 cluster in Docker. The test breaks a
//! member the way production would (`docker kill`, `docker pause`) and watches Steward repair it
//! through Docker and Patroni only, as an operator would; or it takes away one of Steward's
//! sources (Prometheus, or etcd under Patroni: `docker stop`) and checks that Steward holds
//! still and says why, on its `/status` (a `[server]` section on a free loopback port) and in
//! its decision log (`<state_dir>/actions.jsonl`).
//!
//! What it is not: a test of the repairer's decisions (its own unit and replay tests) nor of the
//! Docker platform's verbs (adapters/tests/it/lab_docker.rs); here nothing is called in-process
//! except the read-only Patroni client and, to restore the lab, the platform's remove.
//!
//! Needs root, the lab up, `STEWARD_LAB=1` and the lab's variables (`scripts/test.sh` does it all;
//! by hand: `scripts/lab.sh up; eval "$(scripts/lab.sh env)"; STEWARD_LAB=1 cargo test --test cli
//! e2e -- --nocapture --test-threads 1`). Without them the tests fail (`crate::service_missing`
//! names the opt-out). Each test disturbs the lab for a minute or two and restores
//! it (extra members removed, `scripts/lab.sh up`, three members with two streaming) also when it
//! fails; they run one at a time with the other lab tests (.config/nextest.toml, group `lab`).
//! The restore also reloads a balancer whose servers are not the lab's static ones (Steward's
//! `[balancers]` adds, drains and deletes servers at run time), and `lab.sh up` starts a lab
//! service a failed test left stopped. On the shared lab, run them under the lab lock:
//! `flock /tmp/steward-lab.lock cargo nextest run -p steward --test cli -E 'test(/^e2e::/)'`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use steward_adapters::patroni::{PatroniApi, PatroniClient, PatroniSettings};
use steward_adapters::platform::docker::{DockerPlatform, RawDockerConfig};
use steward_model::observation::PatroniRole;
use steward_model::ports::{ErrorKind, Platform};
use tokio::time::Instant;

/// The lab's own database members (scripts/lab.sh MEMBERS); any other member is Steward's.
pub(crate) const LAB_MEMBERS: [&str; 3] = ["lab-pg-1", "lab-pg-2", "lab-pg-3"];
/// From the fault to the replacement streaming: grace (6 s) + fence (up to 5 s) + a clone
/// (4-11 s measured, ENVIRONMENT.md) + Patroni's loop, with a wide margin for a loaded 2-core box.
pub(crate) const REPAIR_TIMEOUT: Duration = Duration::from_secs(120);
/// A SIGTERM'd steward finishes its in-flight step and journals it; it must not take longer.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The lab's Patroni URLs, or None (after saying why) when the lab is not up.
pub(crate) fn lab() -> Option<Vec<String>> {
    match (
        std::env::var("STEWARD_LAB").as_deref(),
        std::env::var("PATRONI_URLS"),
    ) {
        (Ok("1"), Ok(urls)) => Some(urls.split(',').map(str::to_string).collect()),
        _ => {
            crate::service_missing("the lab is not up (`scripts/lab.sh up`, `eval \"$(scripts/lab.sh env)\"` and STEWARD_LAB=1)");
            None
        }
    }
}

/// tests/data/e2e/lab.toml with `state_dir` pointed at `state_dir`, written into `dir`.
pub(crate) fn write_config(dir: &Path, state_dir: &Path) -> PathBuf {
    write_config_with(dir, state_dir, |_| {})
}

/// [`write_config`], with `edit` applied to the document before it is written (a `[server]`
/// section, another window).
pub(crate) fn write_config_with(
    dir: &Path,
    state_dir: &Path,
    edit: impl FnOnce(&mut toml::Table),
) -> PathBuf {
    let source = repo().join("tests/data/e2e/lab.toml");
    let text = std::fs::read_to_string(&source).expect("tests/data/e2e/lab.toml");
    let mut doc: toml::Table = toml::from_str(&text).expect("the e2e config is TOML");
    doc["cluster"].as_table_mut().expect("[cluster]").insert(
        "state_dir".into(),
        toml::Value::String(state_dir.display().to_string()),
    );
    edit(&mut doc);
    let path = dir.join("steward.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// The Docker platform of the e2e config: used to see the members and to remove Steward's extra
/// ones when the lab is restored.
pub(crate) async fn platform() -> DockerPlatform {
    let text = std::fs::read_to_string(repo().join("tests/data/e2e/lab.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let raw: RawDockerConfig = doc["platform"]["docker"]
        .clone()
        .try_into()
        .expect("[platform.docker] is a RawDockerConfig");
    let config = raw.validate().expect("[platform.docker] validates");
    DockerPlatform::connect(config)
        .await
        .expect("the platform connects to the lab's engines")
}

pub(crate) fn patroni(urls: Vec<String>) -> PatroniClient {
    let settings = PatroniSettings::with_urls(urls).expect("the lab's Patroni URLs are valid");
    PatroniClient::with_seed(&settings, 11).expect("patroni client")
}

/// Runs a command to its end; its status and output.
pub(crate) async fn sh(program: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

/// `docker inspect -f '{{.Name}} {{.State.Status}}'` of a container id: None when it is gone.
pub(crate) async fn container_state(id: &str) -> Option<(String, String)> {
    let out = sh(
        "docker",
        &["inspect", "-f", "{{.Name}} {{.State.Status}}", id],
    )
    .await;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (name, status) = text.trim().split_once(' ')?;
    Some((name.trim_start_matches('/').to_string(), status.to_string()))
}

pub(crate) async fn container_id(name: &str) -> String {
    let out = sh("docker", &["inspect", "-f", "{{.Id}}", name]).await;
    assert!(out.status.success(), "docker inspect {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The leader's name and the members streaming from it (per its /patroni replication[]).
pub(crate) async fn leader_and_streaming(patroni: &PatroniClient) -> Option<(String, Vec<String>)> {
    let view = patroni.cluster().await.ok()?;
    let leader = view.leader()?;
    let status = patroni.member_status(&leader.api_base()?).await.ok()?;
    let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
    let streaming = status.streaming_members(names).into_iter().collect();
    Some((leader.name.clone(), streaming))
}

/// `steward run` as a child process, its output in files (a pipe nobody reads would block it).
pub(crate) struct Steward {
    child: tokio::process::Child,
    out: PathBuf,
    err: PathBuf,
    /// Its journal's folder (inside `dir`).
    state_dir: PathBuf,
    /// Holds the config, the state and the output; removed when the test ends.
    _dir: tempfile::TempDir,
}

impl Steward {
    /// Starts `steward run` on the lab's test config with a fresh state folder, and lets it
    /// observe the healthy cluster for a few ticks first: the fault it is shown is a change.
    pub(crate) async fn start_on_lab() -> Steward {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let config = write_config(dir.path(), &state_dir);
        let mut steward = Steward::start(&config, dir, state_dir);
        tokio::time::sleep(Duration::from_secs(6)).await;
        steward.assert_alive();
        steward
    }

    /// [`Steward::start_on_lab`] with a `[server]` section: the HTTP API on a free loopback
    /// port, its token in a file (mode 600) in the test's folder. Returns the API's client once
    /// `/status` shows a first observation.
    pub(crate) async fn start_served_on_lab() -> (Steward, Api) {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let port = free_port();
        let token_file = dir.path().join("api.token");
        std::fs::write(&token_file, "e2e-token-0123456789abcdef\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = write_config_with(dir.path(), &state_dir, |doc| {
            let mut server = toml::Table::new();
            server.insert("listen".into(), format!("127.0.0.1:{port}").into());
            server.insert("token_file".into(), token_file.display().to_string().into());
            doc.insert("server".into(), toml::Value::Table(server));
        });
        let mut steward = Steward::start(&config, dir, state_dir);
        let api = Api::new(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            steward.assert_alive();
            if let Some(status) = api.try_status().await {
                if !status["observed_at"].is_null() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "steward's /status showed no observation within 30 s\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A few ticks of the healthy cluster first, as start_on_lab does.
        tokio::time::sleep(Duration::from_secs(4)).await;
        steward.assert_alive();
        (steward, api)
    }

    /// The decision log so far (`<state_dir>/actions.jsonl`), one JSON value a line.
    pub(crate) fn actions(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.state_dir.join("actions.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("actions.jsonl holds a line that is not JSON ({e}): {l}")
                })
            })
            .collect()
    }

    /// SIGTERM: it must exit 0 and leave no operation open in its journal.
    pub(crate) async fn stop_cleanly(self) {
        let state_dir = self.state_dir.clone();
        let (status, output) = self.terminate().await;
        assert!(
            status.success(),
            "steward did not exit 0 on SIGTERM: {status}\n{output}"
        );
        let open = open_journal_records(&state_dir);
        assert!(
            open.is_empty(),
            "operations left open in the journal: {open:?}\n{output}"
        );
    }

    pub(crate) fn start(config: &Path, dir: tempfile::TempDir, state_dir: PathBuf) -> Steward {
        Steward::start_with_env(config, dir, state_dir, &[])
    }

    /// [`Steward::start`] with extra environment variables (a test's fault injection). Its
    /// output is appended to the files of an earlier run in the same folder.
    pub(crate) fn start_with_env(
        config: &Path,
        dir: tempfile::TempDir,
        state_dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Steward {
        let out = dir.path().join("steward.out");
        let err = dir.path().join("steward.err");
        let append = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        };
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
            // STEWARD_E2E_LOG: another log filter for a failing test's steward (e.g.
            // `info,steward_runtime::run=debug` shows each observation's notes).
            .args(["run", "--config", config.to_str().unwrap(), "--log"])
            .arg(std::env::var("STEWARD_E2E_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::from(append(&out)))
            .stderr(Stdio::from(append(&err)))
            // A failing test must not leave a steward acting on the lab.
            .kill_on_drop(true)
            .spawn()
            .expect("the steward binary starts");
        Steward {
            child,
            out,
            err,
            state_dir,
            _dir: dir,
        }
    }

    /// What it printed so far, for a failure message.
    pub(crate) fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- steward stdout ---\n{}\n--- steward stderr ---\n{}",
            read(&self.out),
            read(&self.err)
        )
    }

    /// Still running (a steward that died would leave the test waiting for nothing).
    pub(crate) fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("steward exited early ({status}):\n{}", self.output());
        }
    }

    /// Waits up to `timeout` for it to exit by itself (a fault injection that aborts it): its
    /// status, its output, and its folder and state folder to start it again on; None (after
    /// killing it) when it is still running.
    pub(crate) async fn wait_exit(
        mut self,
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, tempfile::TempDir, PathBuf), String> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok((status.expect("wait for steward"), self._dir, self.state_dir)),
            Err(_) => {
                let output = self.output();
                let _ = self.child.kill().await;
                Err(output)
            }
        }
    }

    /// SIGTERM, then its exit status; it must stop by itself within EXIT_TIMEOUT.
    pub(crate) async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("steward is running").to_string();
        let out = sh("kill", &["-TERM", &pid]).await;
        assert!(out.status.success(), "kill -TERM {pid}: {out:?}");
        let status = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "steward ignored SIGTERM for {EXIT_TIMEOUT:?}:\n{}",
                    self.output()
                )
            })
            .expect("wait for steward");
        let output = self.output();
        (status, output)
    }
}

/// Unfinished operation records left in the journal (`<state_dir>/active/*.json`): a clean
/// shutdown leaves none.
pub(crate) fn open_journal_records(state_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(state_dir.join("active")) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A free loopback port (the kernel's pick; released again for steward to bind).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A client of a running steward's HTTP API (`[server]`).
pub(crate) struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    pub(crate) fn new(port: u16) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an http client");
        Api {
            base: format!("http://127.0.0.1:{port}"),
            client,
        }
    }

    /// `/status` as JSON, or None when it does not answer (yet).
    pub(crate) async fn try_status(&self) -> Option<serde_json::Value> {
        let response = self
            .client
            .get(format!("{}/status", self.base))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// `/status`, which must answer.
    pub(crate) async fn status(&self) -> serde_json::Value {
        self.try_status().await.expect("steward's /status answers")
    }

    /// `/healthz`'s HTTP status code.
    pub(crate) async fn healthz(&self) -> u16 {
        self.client
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .expect("steward's /healthz answers")
            .status()
            .as_u16()
    }
}

/// Removes the members Steward added (any name not the lab's own); a missing one is fine. The lab's
/// own members are never removed here (their `.fenced` containers are `lab.sh up`'s business, and
/// their data stays).
pub(crate) async fn remove_extra_members(platform: &DockerPlatform) {
    let members = platform.list().await.expect("list the lab's members");
    for m in members {
        let name = m.name.clone();
        if LAB_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        match platform.fence(&name).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot fence {name}: {e}"),
        }
        match platform.remove(&name, true).await {
            Ok(()) => eprintln!("e2e: removed {name}"),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {name}: {e}"),
        }
    }
}

pub(crate) async fn lab_sh(args: &[&str]) {
    let script = repo().join("scripts/lab.sh");
    let out = sh(script.to_str().unwrap(), args).await;
    assert!(
        out.status.success(),
        "scripts/lab.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lab's balancers: container, Runtime API (scripts/lab.sh BALANCER_ADDR, port 9999).
pub(crate) const LAB_BALANCERS: [(&str, &str); 2] = [
    ("lab-haproxy-1", "127.0.0.21:9999"),
    ("lab-haproxy-2", "127.0.0.22:9999"),
];

/// A balancer's servers per its Runtime API (`show servers state`): (backend, server, admin
/// state) sorted; None when it does not answer.
pub(crate) async fn balancer_servers(api: &str) -> Option<Vec<(String, String, String)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(api).await?;
        stream.write_all(b"show servers state\n").await?;
        let mut text = String::new();
        // Without `prompt`, HAProxy answers one command and closes.
        stream.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(3), talk)
        .await
        .ok()?
        .ok()?;
    // Lines: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...; the first
    // is the format version, the second the field names.
    let mut servers: Vec<(String, String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 6).then(|| (f[1].to_string(), f[3].to_string(), f[6].to_string()))
        })
        .collect();
    servers.sort();
    Some(servers)
}

/// Puts each balancer back to the lab's static servers (lab-pg-1..3 in both backends, none in
/// maintenance or drained): Steward's `[balancers]` adds servers for new members, drains and
/// deletes old ones through the Runtime API, and `lab.sh up` does not undo that (the config
/// file did not change, so it does not restart HAProxy). A master-worker reload (SIGUSR2)
/// re-reads the file and drops every runtime change; `up` then waits for the checks.
async fn reset_balancers() {
    let mut expected: Vec<(String, String, String)> = ["primary", "replicas"]
        .iter()
        .flat_map(|b| LAB_MEMBERS.map(|m| (b.to_string(), m.to_string(), "0".to_string())))
        .collect();
    expected.sort();
    for (container, api) in LAB_BALANCERS {
        let servers = balancer_servers(api).await;
        if servers.as_ref() == Some(&expected) {
            continue;
        }
        eprintln!("e2e: reloading {container}: its servers are not the lab's: {servers:?}");
        // A balancer that does not answer at all is `lab.sh up`'s to start; a failed signal too.
        let _ = sh("docker", &["kill", "-s", "USR2", container]).await;
    }
}

/// Back to the lab's three members, one leader and two replicas streaming.
pub(crate) async fn restore(platform: &DockerPlatform, patroni: &PatroniClient) {
    // A member left paused by a failed test would keep `up` from finding it healthy.
    for m in LAB_MEMBERS {
        let _ = sh("docker", &["unpause", m]).await;
    }
    remove_extra_members(platform).await;
    reset_balancers().await;
    lab_sh(&["up"]).await;
    let deadline = Instant::now() + REPAIR_TIMEOUT;
    loop {
        let view = patroni.cluster().await.ok();
        let names: Vec<String> = view
            .iter()
            .flat_map(|v| v.members.iter().map(|m| m.name.clone()))
            .collect();
        if let Some((_, streaming)) = leader_and_streaming(patroni).await {
            if names.len() == 3 && streaming.len() == 2 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the lab did not come back to 3 members with 2 streaming: {names:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs `scenario` with the lab restored before and after, whether it passes or panics.
pub(crate) async fn with_lab<F, Fut>(urls: Vec<String>, scenario: F)
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let platform = platform().await;
    let client = patroni(urls.clone());
    restore(&platform, &client).await;
    // In its own task, so a panic comes back as a JoinError and the restore below still runs
    // (and the steward child, dropped with the task, is killed).
    let outcome = tokio::spawn(scenario(urls)).await;
    restore(&platform, &client).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_fenced_replaced_and_removed_by_steward_run() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let (leader, streaming) = leader_and_streaming(&client)
            .await
            .expect("the lab has a leader");
        // A replica, never the leader: this is the replica path of the repairer.
        let victim = streaming
            .iter()
            .find(|n| LAB_MEMBERS.contains(&n.as_str()) && **n != leader)
            .expect("a streaming lab replica")
            .clone();
        let victim_id = container_id(&victim).await;

        let mut steward = Steward::start_on_lab().await;

        let killed = Instant::now();
        let out = sh("docker", &["kill", &victim]).await;
        assert!(out.status.success(), "docker kill {victim}: {out:?}");
        eprintln!("e2e: killed replica {victim} (leader {leader})");

        // Fenced (renamed .fenced or gone) and a new member streaming from the leader.
        let mut replaced_after = None;
        let mut replacement = None;
        let deadline = killed + REPAIR_TIMEOUT;
        while replaced_after.is_none() {
            steward.assert_alive();
            let old = container_state(&victim_id).await;
            let fenced = old.as_ref().is_none_or(|(name, _)| *name != victim);
            let new = leader_and_streaming(&client).await.and_then(|(_, s)| {
                s.into_iter()
                    .find(|n| !LAB_MEMBERS.contains(&n.as_str()))
            });
            if fenced && new.is_some() {
                replaced_after = Some(killed.elapsed());
                replacement = new;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no replacement of {victim} within {REPAIR_TIMEOUT:?} (old container: {old:?}, new member streaming: {new:?})\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let replacement = replacement.unwrap();
        eprintln!(
            "e2e: {victim} killed -> {replacement} streaming in {:.1} s",
            replaced_after.unwrap().as_secs_f64()
        );

        // Retired: the old container is removed once its replacement streams.
        loop {
            steward.assert_alive();
            let old = container_state(&victim_id).await;
            if old.is_none() {
                eprintln!(
                    "e2e: {victim} removed {:.1} s after the kill",
                    killed.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old container of {victim} is still there ({old:?}) {REPAIR_TIMEOUT:?} after the kill\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        steward.stop_cleanly().await;
    })
    .await;
}

/// Issue 14: both replicas killed at once. The platform reports them exited and Patroni lists
/// only the leader: two independent sources agree, so the unhealthy-majority guard (there for an
/// observer that is wrong) does not freeze repairs; they are replaced one at a time and the
/// cluster is back to three members, two streaming, the killed ones removed, with no
/// unhealthy-majority alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_killed_at_once_are_replaced_one_at_a_time() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let (leader, streaming) = leader_and_streaming(&client)
            .await
            .expect("the lab has a leader");
        assert_eq!(streaming.len(), 2, "two streaming replicas: {streaming:?}");
        let mut victims = Vec::new();
        for name in &streaming {
            victims.push((name.clone(), container_id(name).await));
        }
        let mut steward = Steward::start_on_lab().await;
        let killed = Instant::now();
        for (name, _) in &victims {
            let out = sh("docker", &["kill", name]).await;
            assert!(out.status.success(), "docker kill {name}: {out:?}");
        }
        eprintln!("e2e: killed both replicas {streaming:?} (leader {leader})");

        let deadline = killed + 2 * REPAIR_TIMEOUT;
        loop {
            steward.assert_alive();
            let mut gone = true;
            for (_, id) in &victims {
                gone &= container_state(id).await.is_none();
            }
            let now_streaming = leader_and_streaming(&client).await;
            let replaced = now_streaming.as_ref().is_some_and(|(l, s)| {
                *l == leader && s.len() == 2 && s.iter().all(|n| !streaming.contains(n))
            });
            if gone && replaced {
                eprintln!(
                    "e2e: both replicas replaced ({:?}) and removed {:.1} s after the kill",
                    now_streaming.map(|(_, s)| s),
                    killed.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not back to two new streaming replicas within {:?} (old ones removed: {gone}, \
                 now: {now_streaming:?})\n{}",
                2 * REPAIR_TIMEOUT,
                steward.output()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let lines = steward.actions();
        let frozen: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["kind"] == "alert" && l["what"] == "alert unhealthy_majority")
            .collect();
        assert!(frozen.is_empty(), "repairs froze: {frozen:?}");
        // One at a time: the second repair's first step comes after the first one's last.
        let acting: Vec<String> = lines
            .iter()
            .filter(|l| l["kind"] == "command" && l["loop"] == "repair")
            .map(|l| l["what"].as_str().unwrap_or_default().to_string())
            .collect();
        let removes: Vec<usize> = acting
            .iter()
            .enumerate()
            .filter(|(_, a)| a.starts_with("remove"))
            .map(|(i, _)| i)
            .collect();
        let drains: Vec<usize> = acting
            .iter()
            .enumerate()
            .filter(|(_, a)| a.starts_with("drain"))
            .map(|(i, _)| i)
            .collect();
        assert!(
            removes.len() == 2 && drains.len() == 2 && removes[0] < drains[1],
            "{acting:?}"
        );
        steward.stop_cleanly().await;
    })
    .await;
}

/// The lab's PostgreSQL programs (pgbench, pg_basebackup, psql).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// pgbench's tables at `scale` (through HAProxy's primary port, the lab's PG* variables).
async fn pgbench_tables(scale: u32) {
    let scale = scale.to_string();
    let init = sh(&format!("{PG_BIN}/pgbench"), &["-i", "-s", &scale, "-q"]).await;
    assert!(init.status.success(), "pgbench -i: {init:?}");
}

/// Drops what [`pgbench_tables`] made.
async fn drop_pgbench_tables() {
    let drop = sh(
        &format!("{PG_BIN}/psql"),
        &["-c", "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers"],
    )
    .await;
    assert!(drop.status.success(), "dropping pgbench's tables: {drop:?}");
}

/// Kills a streaming replica (never the leader) and returns how long until its replacement
/// streams and the old member is fenced; then waits for the old one to be removed.
async fn time_one_replacement(client: &PatroniClient, steward: &mut Steward) -> Duration {
    let (leader, streaming) = leader_and_streaming(client)
        .await
        .expect("the lab has a leader");
    let before: Vec<String> = streaming.clone();
    let victim = streaming
        .iter()
        .find(|n| **n != leader)
        .expect("a streaming replica")
        .clone();
    let engine = e2e_engine_of(&victim).await;
    let victim_id = sh(
        "docker",
        &["-H", engine, "inspect", "-f", "{{.Id}}", &victim],
    )
    .await;
    let victim_id = String::from_utf8_lossy(&victim_id.stdout)
        .trim()
        .to_string();
    let killed = Instant::now();
    let out = sh("docker", &["-H", engine, "kill", &victim]).await;
    assert!(out.status.success(), "docker kill {victim}: {out:?}");
    let deadline = killed + 2 * REPAIR_TIMEOUT;
    let took = loop {
        steward.assert_alive();
        let now = leader_and_streaming(client).await;
        if let Some((_, s)) = &now {
            if s.len() == 2 && s.iter().any(|n| !before.contains(n)) && !s.contains(&victim) {
                break killed.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{victim} not replaced within {:?}: {now:?}\n{}",
            2 * REPAIR_TIMEOUT,
            steward.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    loop {
        let gone = sh("docker", &["-H", engine, "inspect", &victim_id]).await;
        if !gone.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{victim} never removed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    took
}

/// The engine a member runs on (the lab's two: tests/data/e2e/lab.toml).
async fn e2e_engine_of(member: &str) -> &'static str {
    let listed = platform().await.list().await.expect("the platform lists");
    match listed
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.host.as_str())
    {
        Some("host-b") => "unix:///run/steward-docker2.sock",
        _ => "unix:///var/run/docker.sock",
    }
}

/// Issue 14, replacement time under load: kill -> replacement streaming, idle and then under a
/// pgbench write load through HAProxy (4 clients), side by side in one run, with the time
/// `pg_basebackup --checkpoint=fast` of the same data takes as the reference. The figures are
/// printed (`e2e-time:` lines), not asserted: the machine is shared. What is asserted: both
/// replacements stream within the repair timeout, and the load ran through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacement_time_idle_and_under_a_write_load() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let pgbench = format!("{PG_BIN}/pgbench");
        // Scale 2 (~30 MB): enough rows for a write load, small enough for the lab's disks.
        pgbench_tables(2).await;
        let mut steward = Steward::start_on_lab().await;

        let idle = time_one_replacement(&client, &mut steward).await;
        eprintln!("e2e-time: replacement idle: {:.1} s from the kill to streaming", idle.as_secs_f64());

        let load = tokio::process::Command::new(&pgbench)
            .args(["-n", "-c", "4", "-j", "2", "-T", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("pgbench starts");
        tokio::time::sleep(Duration::from_secs(10)).await;
        let loaded = time_one_replacement(&client, &mut steward).await;
        eprintln!(
            "e2e-time: replacement under pgbench (4 clients through HAProxy): {:.1} s from the kill to streaming",
            loaded.as_secs_f64()
        );
        let _ = sh("kill", &["-INT", &load.id().expect("pgbench runs").to_string()]).await;
        let _ = load.wait_with_output().await;
        let count = sh(
            &format!("{PG_BIN}/psql"),
            &["-tAc", "select count(*) from pgbench_history"],
        )
        .await;
        let written: u64 = String::from_utf8_lossy(&count.stdout).trim().parse().unwrap_or(0);
        assert!(written > 0, "the write load wrote nothing: {count:?}");
        eprintln!("e2e-time: pgbench committed {written} transactions during the run");

        // The reference: the same data cloned by pg_basebackup itself, from the leader.
        let (leader, _) = leader_and_streaming(&client).await.expect("a leader");
        let view = client.cluster().await.expect("/cluster");
        let host = view
            .member(&leader)
            .and_then(|m| m.host.clone())
            .expect("the leader's address");
        let dir = tempfile::tempdir().unwrap();
        let secrets = std::fs::read_to_string("/var/lib/steward-lab/secrets/passwords.env")
            .expect("the lab's secrets (root)");
        let password = secrets
            .lines()
            .find_map(|l| l.strip_prefix("REPLICATION_PASSWORD="))
            .expect("a replication password")
            .trim_matches('\'')
            .to_string();
        let pgpass = dir.path().join("pgpass");
        std::fs::write(&pgpass, format!("{host}:5432:*:replicator:{password}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let target = dir.path().join("clone");
        let began = Instant::now();
        let out = tokio::process::Command::new(format!("{PG_BIN}/pg_basebackup"))
            .args(["-h", &host, "-U", "replicator", "-X", "stream", "--checkpoint=fast", "-D"])
            .arg(&target)
            .env("PGPASSFILE", &pgpass)
            .output()
            .await
            .expect("pg_basebackup runs");
        let reference = began.elapsed();
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "e2e-time: pg_basebackup --checkpoint=fast of the same data (idle): {:.1} s",
            reference.as_secs_f64()
        );
        drop_pgbench_tables().await;
        steward.stop_cleanly().await;
    })
    .await;
}

/// Issue 14, a zombie replica found by progress: a replica's WAL receiver is frozen (SIGSTOP)
/// while pgbench writes through HAProxy. Patroni still calls it streaming and its lag stays small
/// for a while; its received WAL position stands still while the leader's moves on. With
/// `stall_after = 20s` (under PostgreSQL's 60 s `wal_sender_timeout`, after which the leader would
/// drop it and "not streaming" would say it too), Steward repairs it because it is stuck, and
/// says so ("stuck", with both positions), within 20 s + the grace window + the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_wal_receiver_is_frozen_is_replaced_as_stuck() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let pgbench = format!("{PG_BIN}/pgbench");
        pgbench_tables(1).await;
        let (leader, streaming) = leader_and_streaming(&client)
            .await
            .expect("the lab has a leader");
        let victim = streaming
            .iter()
            .find(|n| **n != leader)
            .expect("a streaming replica")
            .clone();
        let victim_id = container_id(&victim).await;

        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let config = write_config_with(dir.path(), &state_dir, |doc| {
            doc["repair"]
                .as_table_mut()
                .expect("[repair]")
                .insert("stall_after".into(), "20s".into());
        });
        let mut steward = Steward::start(&config, dir, state_dir);
        tokio::time::sleep(Duration::from_secs(6)).await;
        steward.assert_alive();

        let load = tokio::process::Command::new(&pgbench)
            .args(["-n", "-c", "2", "-j", "1", "-T", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pgbench starts");
        let top = sh("docker", &["top", &victim, "-eo", "pid,args"]).await;
        let text = String::from_utf8_lossy(&top.stdout).to_string();
        let pid = text
            .lines()
            .find(|l| l.contains("walreceiver"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no walreceiver in {victim}: {text}"))
            .to_string();
        let frozen = Instant::now();
        let out = sh("kill", &["-STOP", &pid]).await;
        assert!(out.status.success(), "kill -STOP {pid}: {out:?}");
        eprintln!("e2e: froze {victim}'s walreceiver (pid {pid}) under pgbench");

        let deadline = frozen + REPAIR_TIMEOUT;
        let reason = loop {
            steward.assert_alive();
            let found = steward.actions().into_iter().find(|l| {
                l["kind"] == "command"
                    && l["what"]
                        .as_str()
                        .is_some_and(|w| w == format!("drain {victim}"))
            });
            if let Some(line) = found {
                break line["reason"].as_str().unwrap_or_default().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{victim} not repaired within {REPAIR_TIMEOUT:?} of the freeze\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let took = frozen.elapsed();
        eprintln!(
            "e2e: {victim} repaired as stuck {:.1} s after its walreceiver froze: {reason}",
            took.as_secs_f64()
        );
        let _ = sh("kill", &["-CONT", &pid]).await;
        drop(load);
        assert!(reason.contains("stuck"), "{reason}");
        // The repair runs to its end (the replacement streams, the zombie is removed) before
        // Steward is stopped: a clean stop leaves no operation open.
        while container_state(&victim_id).await.is_some() {
            steward.assert_alive();
            assert!(
                Instant::now() < frozen + 2 * REPAIR_TIMEOUT,
                "{victim} never removed\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        drop_pgbench_tables().await;
        steward.stop_cleanly().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_fenced_before_it_thaws() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let view = client.cluster().await.expect("the lab's /cluster");
        let old_leader = view.leader().expect("the lab has a leader").name.clone();
        let old_timeline = view.leader().and_then(|l| l.timeline);
        let old_id = container_id(&old_leader).await;

        let mut steward = Steward::start_on_lab().await;

        let frozen = Instant::now();
        let out = sh("docker", &["pause", &old_leader]).await;
        assert!(out.status.success(), "docker pause {old_leader}: {out:?}");
        eprintln!("e2e: paused the leader {old_leader}");

        // Patroni promotes another member once the leader key expires (ttl); Steward must then
        // fence the frozen one while it is still frozen: the test never unpauses it first.
        let deadline = frozen + REPAIR_TIMEOUT;
        let mut new_leader = None;
        loop {
            steward.assert_alive();
            if new_leader.is_none() {
                if let Ok(v) = client.cluster().await {
                    if let Some(l) = v.leader().filter(|l| l.name != old_leader) {
                        eprintln!(
                            "e2e: {} leads {:.1} s after the freeze",
                            l.name,
                            frozen.elapsed().as_secs_f64()
                        );
                        new_leader = Some((l.name.clone(), l.timeline));
                    }
                }
            }
            let old = container_state(&old_id).await;
            // Fenced: killed, renamed .fenced, or gone; `paused` under its own name is not.
            let fenced = match &old {
                None => true,
                Some((name, status)) => *name != old_leader || status != "paused",
            };
            if fenced {
                assert!(
                    new_leader.is_some(),
                    "{old_leader} was fenced ({old:?}) before Patroni moved the leader lock\n{}",
                    steward.output()
                );
                eprintln!(
                    "e2e: frozen {old_leader} fenced {:.1} s after the freeze: {old:?}",
                    frozen.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the frozen {old_leader} was not fenced within {REPAIR_TIMEOUT:?} (new leader {new_leader:?})\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // Thaw whatever is left of it (a killed container is not paused: that is fine).
        let _ = sh("docker", &["unpause", &old_id]).await;
        let (new_leader, mut new_timeline) = new_leader.unwrap();
        // Patroni takes the leader key before the promotion finishes: the new timeline shows
        // in /cluster a moment later, so wait for it (bounded) rather than read it once.
        let promoted_by = Instant::now() + Duration::from_secs(30);
        while let (Some(old), Some(new)) = (old_timeline, new_timeline) {
            if new > old {
                break;
            }
            assert!(
                Instant::now() < promoted_by,
                "the promotion did not start a new timeline within 30 s: {old} -> {new}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Ok(v) = client.cluster().await {
                if let Some(l) = v.leader().filter(|l| l.name == new_leader) {
                    new_timeline = l.timeline;
                }
            }
        }
        // For a while after the thaw: exactly one leader, the new one, and the old container
        // not running (so it cannot accept a write as a second primary).
        for _ in 0..10 {
            let v = client.cluster().await.expect("/cluster after the thaw");
            let leaders: Vec<&str> = v
                .members
                .iter()
                .filter(|m| m.role == PatroniRole::Leader)
                .map(|m| m.name.as_str())
                .collect();
            assert_eq!(leaders, [new_leader.as_str()], "{v:?}");
            let old = container_state(&old_id).await;
            assert!(
                old.as_ref().is_none_or(|(_, s)| s != "running"),
                "the old primary runs again after the thaw: {old:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        steward.stop_cleanly().await;
    })
    .await;
}

/// The lab's Prometheus and etcd containers (scripts/lab.sh start_prometheus, start_etcd). The
/// tests stop them with `docker stop` and start them again with `docker start`; `restore`
/// (`lab.sh up`) starts them too, should a test fail in between.
const LAB_PROMETHEUS: &str = "lab-prometheus";
const LAB_ETCD: &str = "lab-etcd";

/// Decision-log lines in which Steward acted or set out to: a command (fence, create, remove,
/// drain, resize, ...) or a scaling proposal. Alerts, refusals and results are not acting.
fn acting(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| matches!(l["kind"].as_str(), Some("command" | "proposal")))
        .map(|l| l.to_string())
        .collect()
}

/// The notes of `/status` that say a metrics query failed (observer.rs: "<metric>: metrics
/// query failed: ...").
fn metric_failures(status: &serde_json::Value) -> Vec<String> {
    status["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .filter(|n| n.contains("metrics query failed"))
        .map(str::to_string)
        .collect()
}

/// The leaders in Patroni's `/cluster` (none when it does not answer).
async fn leaders(patroni: &PatroniClient) -> Vec<String> {
    patroni
        .cluster()
        .await
        .map(|v| {
            v.members
                .iter()
                .filter(|m| m.role == PatroniRole::Leader)
                .map(|m| m.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Stops (`stop`) or starts a lab service container; it must succeed.
async fn docker(verb: &str, container: &str) {
    let out = sh("docker", &[verb, container]).await;
    assert!(out.status.success(), "docker {verb} {container}: {out:?}");
}

/// Every lab member still runs in the container it ran in at the start, under its own name, and
/// the platform lists no other member: nothing was fenced, created or removed.
async fn assert_members_untouched(
    platform: &DockerPlatform,
    containers: &[(String, String)],
    steward: &Steward,
) {
    for (name, id) in containers {
        let state = container_state(id).await;
        assert_eq!(
            state.as_ref().map(|(n, s)| (n.as_str(), s.as_str())),
            Some((name.as_str(), "running")),
            "{name}'s container was touched\n{}",
            steward.output()
        );
    }
    let mut names: Vec<String> = platform
        .list()
        .await
        .expect("list the lab's members")
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    assert_eq!(names, LAB_MEMBERS, "{}", steward.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_and_steward_replaces_it_with_a_replica() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let (old_leader, streaming) = leader_and_streaming(&client)
            .await
            .expect("the lab has a leader");
        assert_eq!(streaming.len(), 2, "the lab starts with two replicas streaming");
        let old_id = container_id(&old_leader).await;

        let mut steward = Steward::start_on_lab().await;

        let killed = Instant::now();
        let out = sh("docker", &["kill", &old_leader]).await;
        assert!(out.status.success(), "docker kill {old_leader}: {out:?}");
        eprintln!("e2e: killed the leader {old_leader}");

        // Patroni promotes a replica once the leader key expires (ttl 20 s); Steward fences the
        // dead one and creates a replacement, which must stream from the NEW leader.
        let deadline = killed + REPAIR_TIMEOUT;
        let mut new_leader: Option<String> = None;
        let mut fenced = false;
        let mut replacement: Option<String> = None;
        while !(fenced && replacement.is_some()) {
            steward.assert_alive();
            if new_leader.is_none() {
                let now_leading: Vec<String> = leaders(&client)
                    .await
                    .into_iter()
                    .filter(|l| *l != old_leader)
                    .collect();
                if let [l] = now_leading.as_slice() {
                    eprintln!(
                        "e2e: {l} leads {:.1} s after the kill",
                        killed.elapsed().as_secs_f64()
                    );
                    new_leader = Some(l.clone());
                }
            }
            let old = container_state(&old_id).await;
            // Fenced: renamed `.fenced`, or gone. Never running again under its own name.
            if let Some((name, status)) = &old {
                assert!(
                    !(*name == old_leader && status == "running"),
                    "the killed primary {old_leader} runs again\n{}",
                    steward.output()
                );
            }
            if !fenced && old.as_ref().is_none_or(|(name, _)| *name != old_leader) {
                fenced = true;
                eprintln!(
                    "e2e: {old_leader} fenced {:.1} s after the kill: {old:?}",
                    killed.elapsed().as_secs_f64()
                );
            }
            if let (Some(leader), None) = (&new_leader, &replacement) {
                if let Some((l, streaming)) = leader_and_streaming(&client).await {
                    let new = streaming
                        .into_iter()
                        .find(|n| !LAB_MEMBERS.contains(&n.as_str()));
                    if let (true, Some(new)) = (l == *leader, new) {
                        eprintln!(
                            "e2e: {old_leader} killed -> replacement {new} streaming from {l} in {:.1} s",
                            killed.elapsed().as_secs_f64()
                        );
                        replacement = Some(new);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover and replacement of {old_leader} within {REPAIR_TIMEOUT:?} (new leader {new_leader:?}, fenced {fenced}, replacement {replacement:?})\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (new_leader, replacement) = (new_leader.unwrap(), replacement.unwrap());

        // Retired: the old container goes once its replacement streams.
        while let Some(old) = container_state(&old_id).await {
            steward.assert_alive();
            assert!(
                Instant::now() < deadline,
                "the old primary's container is still there ({old:?}) {REPAIR_TIMEOUT:?} after the kill\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "e2e: {old_leader}'s container removed {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );

        // The end state: one leader, the new one, with the surviving lab replica and the
        // replacement streaming from it. The other replica follows the new timeline a moment
        // after the promotion, so wait for it (bounded).
        let settled_by = Instant::now() + Duration::from_secs(30);
        loop {
            let leading = leaders(&client).await;
            let streaming = leader_and_streaming(&client)
                .await
                .map(|(_, s)| s)
                .unwrap_or_default();
            if leading == [new_leader.as_str()]
                && streaming.len() == 2
                && streaming.contains(&replacement)
            {
                break;
            }
            assert!(
                Instant::now() < settled_by,
                "not one leader ({new_leader}) with two replicas streaming: leaders {leading:?}, streaming {streaming:?}\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        steward.stop_cleanly().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_outage_is_reported_on_status_and_changes_nothing() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |_urls| async move {
        let platform = platform().await;
        let mut containers = Vec::new();
        for m in LAB_MEMBERS {
            containers.push((m.to_string(), container_id(m).await));
        }
        let (mut steward, api) = Steward::start_served_on_lab().await;

        // Fresh data first: every metrics query answers (else the outage could not show).
        let fresh_by = Instant::now() + Duration::from_secs(20);
        loop {
            let status = api.status().await;
            if metric_failures(&status).is_empty() {
                eprintln!("e2e: notes with prometheus up: {}", status["notes"]);
                break;
            }
            assert!(
                Instant::now() < fresh_by,
                "metrics queries fail with prometheus up: {}",
                status["notes"]
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let logged_before = steward.actions().len();

        docker("stop", LAB_PROMETHEUS).await;
        let stopped = Instant::now();
        eprintln!("e2e: stopped {LAB_PROMETHEUS}");
        // Ten ticks (2 s each) without Prometheus.
        let outage = Duration::from_secs(20);
        let mut reported: Option<Vec<String>> = None;
        let mut observed = Vec::new();
        while stopped.elapsed() < outage {
            steward.assert_alive();
            let status = api.status().await;
            let failing = metric_failures(&status);
            if reported.is_none() && !failing.is_empty() {
                eprintln!(
                    "e2e: /status reports the metrics outage {:.1} s after the stop: {failing:?}",
                    stopped.elapsed().as_secs_f64()
                );
                reported = Some(failing);
            }
            observed.push(status["observed_at"].clone());
            assert_members_untouched(&platform, &containers, &steward).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(
            reported.is_some(),
            "/status never said the metrics are missing during a {outage:?} outage: {}",
            api.status().await
        );
        // The loops went on observing (holding still is not stalling).
        observed.dedup();
        assert!(
            observed.len() >= 5,
            "the repair loop published only {} observations in {outage:?}: {observed:?}",
            observed.len()
        );
        assert_eq!(api.healthz().await, 200, "/healthz during the outage");
        let during = acting(&steward.actions()[logged_before..]);
        assert!(
            during.is_empty(),
            "steward acted while prometheus was down: {during:#?}\n{}",
            steward.output()
        );

        docker("start", LAB_PROMETHEUS).await;
        let started = Instant::now();
        let fresh_by = started + Duration::from_secs(60);
        loop {
            steward.assert_alive();
            let status = api.status().await;
            if metric_failures(&status).is_empty() {
                eprintln!(
                    "e2e: /status shows fresh metrics {:.1} s after prometheus started: {}",
                    started.elapsed().as_secs_f64(),
                    status["notes"]
                );
                break;
            }
            assert!(
                Instant::now() < fresh_by,
                "metrics still failing 60 s after prometheus started: {}",
                status["notes"]
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_members_untouched(&platform, &containers, &steward).await;
        let all = acting(&steward.actions());
        assert!(
            all.is_empty(),
            "steward acted: {all:#?}\n{}",
            steward.output()
        );

        steward.stop_cleanly().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_freezes_repairs_and_steward_says_why() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let client = patroni(urls);
        let platform = platform().await;
        let mut containers = Vec::new();
        for m in LAB_MEMBERS {
            containers.push((m.to_string(), container_id(m).await));
        }
        let (mut steward, api) = Steward::start_served_on_lab().await;
        let logged_before = steward.actions().len();

        docker("stop", LAB_ETCD).await;
        let stopped = Instant::now();
        eprintln!("e2e: stopped {LAB_ETCD}");
        // Longer than Patroni's ttl (20 s): the leader loses its lock and demotes, every member
        // looks bad to Steward at once.
        let outage = Duration::from_secs(45);
        let mut last = serde_json::Value::Null;
        let mut engaged: Option<(String, serde_json::Value)> = None;
        let mut observed = Vec::new();
        let mut dcs_notes: Option<serde_json::Value> = None;
        while stopped.elapsed() < outage {
            steward.assert_alive();
            assert_members_untouched(&platform, &containers, &steward).await;
            last = api.status().await;
            observed.push(last["observed_at"].clone());
            let cluster_failed = last["notes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.as_str().is_some_and(|n| n.contains("patroni /cluster")));
            if cluster_failed && dcs_notes.is_none() {
                eprintln!(
                    "e2e: /status says /cluster fails {:.1} s after etcd stopped: {}",
                    stopped.elapsed().as_secs_f64(),
                    last["notes"]
                );
                dcs_notes = Some(last["notes"].clone());
            }
            if let Some(guards) = last["guards"].as_object() {
                for (name, g) in guards {
                    if g["engaged"] == true && engaged.is_none() && name != "slot" {
                        eprintln!(
                            "e2e: guard {name} engaged {:.1} s after etcd stopped: {g}",
                            stopped.elapsed().as_secs_f64()
                        );
                        engaged = Some((name.clone(), g.clone()));
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let lines = steward.actions();
        let during = &lines[logged_before..];
        let acted = acting(during);
        assert!(
            acted.is_empty(),
            "steward acted while etcd was down: {acted:#?}\n{}",
            steward.output()
        );
        // It said why, in /status and in its decision log: Patroni's /cluster does not answer,
        // and with every member looking bad at once repairs are frozen (the observer is
        // suspect), not started.
        assert!(
            dcs_notes.is_some(),
            "/status never said that patroni's /cluster fails: {last:#}"
        );
        let frozen: Vec<&serde_json::Value> = during
            .iter()
            .filter(|l| l["kind"] == "alert" && l["what"] == "alert unhealthy_majority")
            .collect();
        assert!(
            !frozen.is_empty(),
            "no unhealthy_majority alert in the decision log during the outage: {during:#?}\n/status: {last:#}"
        );
        eprintln!("e2e: steward said: {}", frozen[0]["reason"]);
        if engaged.is_none() {
            eprintln!("e2e: (no guard showed engaged on /status during the outage)");
        }
        // The loops went on observing: no pass hung on the DCS-less Patroni.
        observed.dedup();
        assert!(
            observed.len() >= 3,
            "/status published {} observation(s) in a {outage:?} outage: {observed:?}",
            observed.len()
        );
        assert_eq!(api.healthz().await, 200, "/healthz during the outage");

        docker("start", LAB_ETCD).await;
        let started = Instant::now();
        let healthy_by = started + Duration::from_secs(90);
        loop {
            steward.assert_alive();
            assert_members_untouched(&platform, &containers, &steward).await;
            if let Some((leader, streaming)) = leader_and_streaming(&client).await {
                if streaming.len() == 2 && leaders(&client).await == [leader.as_str()] {
                    eprintln!(
                        "e2e: {leader} leads with 2 streaming {:.1} s after etcd started",
                        started.elapsed().as_secs_f64()
                    );
                    break;
                }
            }
            assert!(
                Instant::now() < healthy_by,
                "the cluster did not come back to 1 leader + 2 streaming within 90 s\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // A few more ticks of the recovered cluster: still nothing destructive.
        for _ in 0..5 {
            steward.assert_alive();
            assert_members_untouched(&platform, &containers, &steward).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let all = acting(&steward.actions());
        assert!(all.is_empty(), "steward acted: {all:#?}\n{}", steward.output());

        steward.stop_cleanly().await;
    })
    .await;
}
