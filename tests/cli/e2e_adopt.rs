//! End-to-end ADOPTION test (issue 15): `steward run` looking after a Patroni cluster that
//! another tool made.
//!
//! The test makes that cluster itself, the way an operator's script would: three `docker run`
//! commands (`legacy-db-1..3`, with its own scope `legacy-e2e`, on the lab's etcd,
//! on 127.0.0.31-33), data in bind-mounted host folders under /var/lib/steward-lab/adopt, no
//! `io.steward.*` label, only the deployment's own `com.example.project=legacy-e2e`. Beside it
//! stands a look-alike, `legacy-db-10`, a sleeping container without that label.
//!
//! Steward is told to adopt what carries the project label (`[[platform.docker.adopt]]`) and a
//! replica is `docker kill`ed. Within `REPAIR_TIMEOUT` it must be replaced as an owned one would:
//! - three members running, one of them the replacement, which carries Steward's labels, and
//!   Patroni listing those three, one leader and two streaming;
//! - the killed container kept, stopped, renamed `legacy-db-N.retired`, its data folder intact
//!   (Steward never deletes what it did not create: the rule has no `delete_data`);
//! - the look-alike untouched (still running).
//!
//! It runs twice: with Patroni 4.1.5 (the lab's) and with Patroni 3.0.2 (the 3.x line Debian 12
//! packages, which says `master` and never `streaming`; `scripts/lab.sh` installs it in its own
//! venv and a member picks it with `STEWARD_LAB_PATRONI`). Steward's replacement runs the same
//! Patroni as the cluster it joins (the test's template sets the same variable).
//!
//! What it is not: a test of the balancers (the lab's HAProxy pair serves the lab's cluster, not
//! this one).
//!
//! Needs what tests/cli/e2e.rs needs (root, the lab up for its etcd, images and engines,
//! `STEWARD_LAB=1`, the lab lock). It leaves nothing: its containers (every engine), Steward's
//! replacement and its disk, the data folders and the scope's keys in etcd are removed at the
//! end, also when it fails. About a minute.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use steward_adapters::patroni::PatroniApi;
use steward_adapters::platform::docker::{DockerPlatform, RawDockerConfig};
use steward_model::observation::PlatformState;
use steward_model::ports::{Platform, LABEL_CLUSTER};
use tokio::time::Instant;

use crate::e2e::{lab, leader_and_streaming, patroni, repo, sh, Steward, REPAIR_TIMEOUT};

const SCOPE: &str = "legacy-e2e";
const MEMBERS: [(&str, &str); 3] = [
    ("legacy-db-1", "127.0.0.31"),
    ("legacy-db-2", "127.0.0.32"),
    ("legacy-db-3", "127.0.0.33"),
];
/// A container with a similar name that is not part of the deployment.
const LOOK_ALIKE: &str = "legacy-db-10";
const PROJECT_LABEL: &str = "com.example.project=legacy-e2e";
/// Where the deployment keeps its members' data (bind mounts), and their /tmp.
const ROOT: &str = "/var/lib/steward-lab/adopt";
const ENGINES: [&str; 2] = [
    "unix:///var/run/docker.sock",
    "unix:///run/steward-docker2.sock",
];
/// The lab's etcd (scripts/lab.sh ETCD_ADDR), v3 JSON gateway.
const ETCD: &str = "http://127.0.0.2:2379";
/// From `docker run` to a leader and two streaming replicas.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);

fn apis() -> Vec<String> {
    MEMBERS
        .iter()
        .map(|(_, a)| format!("http://{a}:8008"))
        .collect()
}

/// `docker run` of one member as the operator's script would write it.
async fn run_member(name: &str, address: &str, patroni: &str) {
    let data = Path::new(ROOT).join(name);
    let tmp = Path::new(ROOT).join(format!("{name}-tmp"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let vol = |host: &str, inside: &str, mode: &str| format!("{host}:{inside}:{mode}");
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--label",
        PROJECT_LABEL,
        "--user",
        "0:0",
        "--cpus",
        "1",
        "--memory",
        "1g",
        "--memory-swap",
        "1g",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/opt"] {
        args.extend(["-v".into(), vol(m, m, "ro")]);
    }
    for m in [
        "/var/lib/steward-lab/patroni",
        "/var/lib/steward-lab/patroni-secrets",
    ] {
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
    ] {
        args.extend(["-e".into(), e]);
    }
    args.extend([
        "steward-empty:1".into(),
        "/var/lib/steward-lab/patroni/member.sh".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sh("docker", &argv).await;
    assert!(out.status.success(), "docker run {name}: {out:?}");
}

/// The Steward config: the lab's, pointed at this cluster, adopting what carries the label.
fn write_config(dir: &Path, state_dir: &Path, patroni: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("tests/data/e2e/lab.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let cluster = doc["cluster"].as_table_mut().unwrap();
    cluster.insert("name".into(), SCOPE.into());
    cluster.insert("state_dir".into(), state_dir.display().to_string().into());
    doc["patroni"]
        .as_table_mut()
        .unwrap()
        .insert("urls".into(), apis().into());
    let docker = doc["platform"]["docker"].as_table_mut().unwrap();
    docker.insert("cluster".into(), SCOPE.into());
    docker.insert("addresses".into(), vec!["127.0.0.34-127.0.0.39"].into());
    docker.insert("placement".into(), "preferred".into());
    // The adopted members' disks are bind-mounted folders, not Steward's volumes: their size is
    // unknown, so a replacement gets this one (the lab's disks are 512 MiB).
    docker["volumes"]
        .as_table_mut()
        .unwrap()
        .insert("default_size".into(), "512MiB".into());
    // A replacement runs the Patroni the cluster runs.
    docker["database"]["env"]
        .as_table_mut()
        .unwrap()
        .insert("STEWARD_LAB_PATRONI".into(), patroni.into());
    let rule: toml::Table = toml::from_str(&format!("label = \"{PROJECT_LABEL}\"")).unwrap();
    docker.insert("adopt".into(), toml::Value::Array(vec![rule.into()]));
    let path = dir.join("steward.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// The platform as the test's Steward sees it, from its config's text.
async fn adopting_platform(config: &str) -> DockerPlatform {
    let doc: toml::Table = toml::from_str(config).unwrap();
    let raw: RawDockerConfig = doc["platform"]["docker"].clone().try_into().unwrap();
    DockerPlatform::connect(raw.validate().expect("valid"))
        .await
        .expect("the lab's engines answer")
}

/// The lab's Patroni and the 3.x one (scripts/lab.sh installs both).
const PATRONI_4: (&str, &str) = ("/opt/steward-lab/venv/bin/patroni", "patroni 4.1.5");
const PATRONI_3: (&str, &str) = ("/opt/steward-lab/venv-3.0.2/bin/patroni", "patroni 3.0.2");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_made_by_another_tool_is_adopted_and_its_killed_replica_replaced() {
    adoption(PATRONI_4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_3_cluster_made_by_another_tool_is_adopted_and_its_killed_replica_replaced() {
    adoption(PATRONI_3).await;
}

async fn adoption((patroni, version): (&'static str, &'static str)) {
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
    let config = write_config(dir.path(), &state_dir, patroni);
    // The text, for the clean-up: the file goes with `dir`, which the scenario's Steward owns.
    let text = std::fs::read_to_string(&config).unwrap();
    cleanup(&text).await;
    let outcome = tokio::spawn(scenario(config, text.clone(), dir, patroni, version)).await;
    cleanup(&text).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(
    config: std::path::PathBuf,
    text: String,
    dir: tempfile::TempDir,
    patroni_bin: &'static str,
    version: &'static str,
) {
    let state_dir = dir.path().join("state");
    for (name, address) in MEMBERS {
        run_member(name, address, patroni_bin).await;
    }
    let out = sh(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            LOOK_ALIKE,
            "--network",
            "host",
            "-v",
            "/bin:/bin:ro",
            "-v",
            "/lib:/lib:ro",
            "-v",
            "/lib64:/lib64:ro",
            "-v",
            "/usr:/usr:ro",
            "steward-empty:1",
            "/bin/sleep",
            "infinity",
        ],
    )
    .await;
    assert!(out.status.success(), "docker run {LOOK_ALIKE}: {out:?}");
    let client = patroni(apis());
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
    let platform = adopting_platform(&text).await;
    let listed: Vec<String> = platform
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(listed, MEMBERS.map(|(n, _)| n.to_string()));

    let mut steward = Steward::start(&config, dir, state_dir);
    tokio::time::sleep(Duration::from_secs(6)).await;
    steward.assert_alive();
    let victim = MEMBERS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n != leader)
        .unwrap();
    let out = sh("docker", &["kill", victim]).await;
    assert!(out.status.success(), "docker kill {victim}: {out:?}");
    let killed = Instant::now();
    eprintln!("e2e-adopt: killed {victim} (leader {leader}, {patroni_bin})");

    let deadline = killed + REPAIR_TIMEOUT;
    let replacement = loop {
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
            break (
                owned[0].clone(),
                running
                    .iter()
                    .find(|m| m.name == owned[0])
                    .map(|m| m.address.clone())
                    .unwrap_or_default(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "no replacement streaming {REPAIR_TIMEOUT:?} after the kill: platform {members:?}, \
             patroni {in_patroni:?}, {streaming} streaming\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (replacement, address) = replacement;
    eprintln!(
        "e2e-adopt: {replacement} streams in place of {victim} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
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
    assert!(alerts.is_empty(), "alerts: {alerts:?}");
    steward.stop_cleanly().await;
}

/// Removes everything the test made: Steward's members of the scope (with their disks), every
/// `legacy-db-*` container on every engine, the data folders, and the scope's keys in etcd.
/// Never panics.
async fn cleanup(config: &str) {
    let platform = adopting_platform(config).await;
    for m in platform.list().await.unwrap_or_default() {
        if m.labels.get(LABEL_CLUSTER).map(String::as_str) == Some(SCOPE) {
            let _ = platform.fence(&m.name).await;
            let _ = platform.remove(&m.name, true).await;
        }
    }
    for engine in ENGINES {
        let out = sh(
            "docker",
            &["-H", engine, "ps", "-aq", "--filter", "name=^legacy-db-"],
        )
        .await;
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = sh("docker", &["-H", engine, "rm", "-f", id]).await;
        }
    }
    let _ = std::fs::remove_dir_all(ROOT);
    // etcd v3's JSON gateway: delete the range [/service/legacy-e2e/, /service/legacy-e20).
    let body = serde_json::json!({
        "key": b64(&format!("/service/{SCOPE}/")),
        "range_end": b64(&format!("/service/{SCOPE}0")),
    });
    let http = reqwest::Client::new();
    if let Err(e) = http
        .post(format!("{ETCD}/v3/kv/deleterange"))
        .json(&body)
        .send()
        .await
    {
        eprintln!("e2e-adopt: could not delete the scope's keys in etcd: {e}");
    }
}

/// Standard base64 with padding (etcd's JSON gateway takes keys so).
fn b64(text: &str) -> String {
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
