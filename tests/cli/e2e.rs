//! End-to-end fault tests: `steward run` (the built binary, not a library call) acting on the REAL
//! lab (scripts/lab.sh; lab/README.md), a Patroni 4.1.5 cluster in Docker. The test breaks a
//! member the way production would (`docker kill`, `docker pause`) and watches Steward repair it
//! through Docker and Patroni only, as an operator would.
//!
//! What it is not: a test of the repairer's decisions (its own unit and replay tests) nor of the
//! Docker platform's verbs (adapters/tests/it/lab_docker.rs); here nothing is called in-process
//! except the read-only Patroni client and, to restore the lab, the platform's remove.
//!
//! Needs root, the lab up, `STEWARD_LAB=1` and the lab's variables (`scripts/test.sh` does it all;
//! by hand: `scripts/lab.sh up; eval "$(scripts/lab.sh env)"; STEWARD_LAB=1 cargo test --test cli
//! e2e -- --nocapture --test-threads 1`). Without them the tests fail under CI (`CI` set) and are
//! skipped, with a message, elsewhere. Each test disturbs the lab for a minute or two and restores
//! it (extra members removed, `scripts/lab.sh up`, three members with two streaming) also when it
//! fails; they run one at a time with the other lab tests (.config/nextest.toml, group `lab`).

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
        _ if std::env::var_os("CI").is_some() => {
            panic!("the lab is not up: scripts/test.sh starts it and exports STEWARD_LAB=1, PATRONI_URLS")
        }
        _ => {
            eprintln!("skipped: the lab is not up (run `scripts/lab.sh up` and `eval \"$(scripts/lab.sh env)\"`, STEWARD_LAB=1)");
            None
        }
    }
}

/// tests/data/e2e/lab.toml with `state_dir` pointed at `state_dir`, written into `dir`.
pub(crate) fn write_config(dir: &Path, state_dir: &Path) -> PathBuf {
    let source = repo().join("tests/data/e2e/lab.toml");
    let text = std::fs::read_to_string(&source).expect("tests/data/e2e/lab.toml");
    let mut doc: toml::Table = toml::from_str(&text).expect("the e2e config is TOML");
    doc["cluster"].as_table_mut().expect("[cluster]").insert(
        "state_dir".into(),
        toml::Value::String(state_dir.display().to_string()),
    );
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
        let out = dir.path().join("steward.out");
        let err = dir.path().join("steward.err");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["run", "--config", config.to_str().unwrap(), "--log", "info"])
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
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

/// Back to the lab's three members, one leader and two replicas streaming.
pub(crate) async fn restore(platform: &DockerPlatform, patroni: &PatroniClient) {
    // A member left paused by a failed test would keep `up` from finding it healthy.
    for m in LAB_MEMBERS {
        let _ = sh("docker", &["unpause", m]).await;
    }
    remove_extra_members(platform).await;
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
