//! `steward run` as a user runs it: the simulated example, in a dry run that stops by itself,
//! prints readable decisions of both loops and touches nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The scripted scenario of examples/simulated.toml (load rises at 15 s, pg-3 crashes at 45 s):
/// in two simulated minutes the scaler proposes a CPU grow and the repairer would drain pg-3,
/// each with its reason; nothing is executed and no state is written.
#[test]
fn a_dry_run_of_the_simulated_example_prints_both_loops_decisions() {
    let state = tempfile::tempdir().unwrap();
    let config = example_config("simulated.toml", state.path(), |t| t);

    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--dry-run", "--for", "2m", "--config"])
        .arg(&config)
        .output()
        .expect("the steward binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("dry run"), "{stdout}");
    let grow = lines
        .iter()
        .find(|l| l.contains(" scale ") && l.contains("propose"))
        .unwrap_or_else(|| panic!("no scaling proposal:\n{stdout}"));
    assert!(grow.contains("database cpu 2.00 -> 3.00 vCPU"), "{grow}");
    assert!(grow.contains("above high"), "the reason is shown: {grow}");
    let drain = lines
        .iter()
        .find(|l| l.contains(" repair ") && l.contains("would run"))
        .unwrap_or_else(|| panic!("no repair command:\n{stdout}"));
    assert!(drain.contains("drain pg-3"), "{drain}");
    assert!(drain.contains("Exited"), "the evidence is shown: {drain}");
    // Nothing ran, so nothing came back and nothing was journaled.
    assert!(!stdout.contains(" result "), "{stdout}");
    assert!(
        !state.path().join("state").exists(),
        "a dry run writes no state"
    );
}

/// `examples/<name>` with its state under `dir` and its trace path made absolute, edited by
/// `edit`, written to `dir/<name>`.
fn example_config(name: &str, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(repo("examples").join(name)).unwrap();
    let state = format!("state_dir = {:?}", dir.join("state"));
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("state_dir = ") {
                state.clone()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains(&state),
        "examples/{name} has no state_dir line"
    );
    let text = text.replace(
        "trace = \"traces/",
        &format!("trace = \"{}/", repo("examples/traces").display()),
    );
    let config = dir.join(name);
    std::fs::write(&config, edit(text)).unwrap();
    config
}

/// examples/fleet-simulated.toml with its state (and, when given, everything else) under `dir`.
fn fleet_config(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    example_config("fleet-simulated.toml", dir, edit)
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The fleet example as shipped (50 clusters, 30 simulated minutes): it ends by itself, and
/// every cluster repairs ITS OWN crashed replica exactly once (drain, fence, create, remove),
/// counted from its own actions log, with its own operation ids, and the clusters do not act
/// in lock-step.
#[test]
fn the_fleet_example_runs_to_its_end_and_each_cluster_replaces_its_replica_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), |t| t);
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--for", "30m", "--config"])
        .arg(&config)
        .output()
        .expect("the steward binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains("fleet of 50 clusters"),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().contains("stopped"),
        "the run ends cleanly: {stdout}"
    );
    let mut first_repairs = std::collections::BTreeSet::new();
    for i in 1..=50 {
        let cluster = format!("fleet-{i}");
        let lines = json_lines(
            &dir.path()
                .join("state")
                .join(&cluster)
                .join("actions.jsonl"),
        );
        let commands: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["loop"] == "repair" && l["kind"] == "command")
            .collect();
        let whats: Vec<&str> = commands
            .iter()
            .map(|l| l["what"].as_str().unwrap())
            .collect();
        assert_eq!(
            whats,
            [
                "drain pg-3",
                "fence pg-3",
                "create database pg-3-r1 replacing pg-3",
                "remove pg-3 delete-data"
            ],
            "{cluster}"
        );
        let results = lines
            .iter()
            .filter(|l| l["loop"] == "repair" && l["kind"] == "result" && l["reason"] == "ok")
            .count();
        assert_eq!(results, 4, "{cluster}: every repair step succeeded");
        assert!(
            lines.iter().all(|l| l["op"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{cluster}-"))),
            "{cluster}'s log holds only its own operations"
        );
        first_repairs.insert(commands[0]["at"].as_str().unwrap().to_string());
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{cluster:<8} ")) && l.contains("drain pg-3")),
            "{cluster}'s decisions are printed with its name"
        );
        assert!(dir
            .path()
            .join("state")
            .join(&cluster)
            .join("active")
            .is_dir());
    }
    assert!(
        first_repairs.len() > 10,
        "the clusters' loops are staggered, not in lock-step: {first_repairs:?}"
    );
}

/// A dry run of a small fleet with `--decision-log`: one file, every line tagged with its
/// cluster, every cluster present, and no state written.
#[test]
fn a_fleet_decision_log_tags_every_line_with_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), |t| t.replace("clusters = 50", "clusters = 3"));
    let log = dir.path().join("decisions.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--dry-run", "--quiet", "--for", "3m", "--config"])
        .arg(&config)
        .arg("--decision-log")
        .arg(&log)
        .output()
        .expect("the steward binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "--quiet prints nothing");
    let lines = json_lines(&log);
    let mut drains = std::collections::BTreeMap::new();
    for l in &lines {
        let cluster = l["cluster"]
            .as_str()
            .unwrap_or_else(|| panic!("untagged: {l}"));
        assert!(l["op"].as_str().unwrap().starts_with(cluster), "{l}");
        assert_eq!(l["dry_run"], true, "{l}");
        if l["what"] == "drain pg-3" {
            *drains.entry(cluster.to_string()).or_insert(0) += 1;
        }
    }
    let expected: std::collections::BTreeMap<String, i32> =
        (1..=3).map(|i| (format!("fleet-{i}"), 1)).collect();
    assert_eq!(
        drains, expected,
        "each cluster would drain its own pg-3 once"
    );
    assert!(
        !dir.path().join("state").exists(),
        "a dry run writes no state"
    );
}

/// A bad `[fleet]` is refused before anything runs, each problem with its path.
#[test]
fn a_bad_fleet_section_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("clusters = 50", "clusters = 0", "fleet.clusters: 0 is not between 1 and"),
        (
            "clusters = 50",
            "clusters = 2\n[[fleet.cluster]]\nname = \"a\"\npatroni_urls = [\"http://127.0.0.11:8008\"]",
            "fleet.clusters: give either a count",
        ),
        ("clusters = 50", "clusters = 5\nsize = 3", "unknown field `size`"),
        (
            "[run]",
            "[balancers]\nruntime_apis = [\"127.0.0.21:9999\"]\n[run]",
            "fleet: cannot be combined with [balancers]",
        ),
        (
            "clusters = 50",
            "[[fleet.cluster]]\nname = \"a\"\npatroni_urls = [\"http://127.0.0.11:8008\"]",
            "fleet.cluster: listed clusters need a real platform",
        ),
    ];
    for (from, to, expected) in cases {
        let config = fleet_config(dir.path(), |t| t.replace(from, to));
        let out = Command::new(env!("CARGO_BIN_EXE_steward"))
            .args(["run", "--for", "1m", "--config"])
            .arg(&config)
            .output()
            .expect("the steward binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to}: accepted");
        assert!(stderr.contains(expected), "{to}: {stderr}");
        assert!(!dir.path().join("state").exists(), "{to}: nothing ran");
    }
}

/// A free port on `host` (bound, then released for the child to take).
fn free_port(host: &str) -> u16 {
    let l = std::net::TcpListener::bind((host, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// A throwaway single-member etcd on 127.0.0.7 (never the lab's), killed when dropped, and its
/// client URL; `None` (skip, saying why) when it cannot start and skipping is allowed.
async fn throwaway_etcd(dir: &Path) -> Option<(tokio::process::Child, String)> {
    throwaway_etcd_at(dir, &format!("http://{ETCD_HOST}:{}", free_port(ETCD_HOST))).await
}

/// Where the throwaway etcd listens.
const ETCD_HOST: &str = "127.0.0.7";

/// [`throwaway_etcd`] on the client URL `client` (`http://127.0.0.7:PORT`).
async fn throwaway_etcd_at(dir: &Path, client: &str) -> Option<(tokio::process::Child, String)> {
    let client = client.to_string();
    let peer = format!("http://{ETCD_HOST}:{}", free_port(ETCD_HOST));
    let started = tokio::process::Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("t={peer}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let why = match started {
        Ok(etcd) => {
            let addr = client.trim_start_matches("http://").to_string();
            for _ in 0..100 {
                if health(&addr).await {
                    return Some((etcd, client));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            format!("etcd at {client} did not become healthy within 10 s")
        }
        Err(e) => format!("cannot start etcd: {e}"),
    };
    crate::service_missing(&why);
    None
}

/// etcd's `/health` says true.
async fn health(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let mut answer = String::new();
    let asked = async {
        s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .await?;
        s.read_to_string(&mut answer).await
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), asked).await,
        Ok(Ok(_))
    ) && answer.contains("\"health\":\"true\"")
}

/// A `steward run` of the fleet example with `clusters` clusters, a 1 s tick, pg-3 crashing
/// at 18 s, a 2 s repair grace window and a 2 s lease on `endpoint`, as instance `id`: its
/// state, config and stderr (info logs) under `<dir>/<id>/`, killed when dropped.
fn leased_instance(
    dir: &Path,
    endpoint: &str,
    id: &str,
    clusters: u32,
    for_: &str,
) -> (tokio::process::Child, PathBuf) {
    let sub = dir.join(id);
    std::fs::create_dir_all(&sub).unwrap();
    let config = fleet_config(&sub, |t| {
        let t = t
            .replace("clusters = 50", &format!("clusters = {clusters}"))
            .replace("at = \"45s\"", "at = \"18s\"")
            .replace("tick = \"15s\"", "tick = \"1s\"");
        format!(
            "{t}\n[repair]\ngrace_window = \"2s\"\n\n[lease]\nendpoints = [{endpoint:?}]\n\
             instance = {id:?}\nscope = \"fleet-test\"\nttl = \"2s\"\n\n[server]\n\
             listen = \"127.0.0.1:{}\"\n",
            free_port("127.0.0.1")
        )
    });
    let stderr = std::fs::File::create(sub.join("stderr")).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args([
            "--log",
            "steward=info,warn",
            "run",
            "--quiet",
            "--for",
            for_,
        ])
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("the steward binary runs");
    (child, sub)
}

/// The fleet summary an instance whose config is in `sub` serves on `/status`, once it answers.
async fn fleet_status(sub: &Path) -> Option<serde_json::Value> {
    let config = std::fs::read_to_string(sub.join("fleet-simulated.toml")).ok()?;
    let listen = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))?
        .trim_matches('"')
        .to_string();
    let answer = reqwest::get(format!("http://{listen}/status")).await.ok()?;
    answer.json().await.ok()
}

/// How many of the fleet's clusters are in `state` on the instance's `/status`.
async fn clusters_in(sub: &Path, state: &str) -> Option<u64> {
    fleet_status(sub).await?["states"][state].as_u64()
}

/// How many clusters the instance whose stderr is in `sub` has come to own so far.
fn owns(sub: &Path) -> usize {
    std::fs::read_to_string(sub.join("stderr"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("this instance owns the cluster"))
        .count()
}

/// Polls `done` every 100 ms for up to `secs`; whether it came true.
async fn poll_until(secs: u64, done: impl Fn() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    done()
}

/// [`poll_until`], failing the test if `done` does not come true.
async fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    assert!(poll_until(secs, done).await, "{what} within {secs} s");
}

/// Two instances share a fleet through etcd leases: `a` starts alone and owns all four
/// clusters, `b` joins and owns none (its loops do not run), `a` is killed (SIGKILL: no
/// resign) before its clusters' scripted crash, and `b` picks up every cluster after the
/// lease runs out and repairs each one's crashed replica exactly once; `a` acted on nothing.
/// Real time (etcd's leases expire in real time): about 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_clusters_are_picked_up_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_etcd, endpoint)) = throwaway_etcd(dir.path()).await else {
        return;
    };
    let (mut a, a_dir) = leased_instance(dir.path(), &endpoint, "a", 4, "5m");
    wait_until("a owns all four clusters", 15, || owns(&a_dir) == 4).await;
    let (mut b, b_dir) = leased_instance(dir.path(), &endpoint, "b", 4, "30s");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(owns(&b_dir), 0, "b owns nothing while a holds every lease");
    // Each instance's /status says which clusters it looks after: a all four, b none (they
    // are elsewhere, with a as their owner).
    assert_eq!(clusters_in(&a_dir, "elsewhere").await, Some(0));
    let seen_by_b = fleet_status(&b_dir).await.expect("b serves /status");
    assert_eq!(seen_by_b["states"]["elsewhere"], 4, "{seen_by_b}");
    assert_eq!(seen_by_b["by_cluster"][0]["owner"], "a", "{seen_by_b}");
    a.kill().await.unwrap();
    wait_until("b picks up a's four clusters", 15, || owns(&b_dir) == 4).await;
    let mut here = false;
    for _ in 0..50 {
        if clusters_in(&b_dir, "elsewhere").await == Some(0) {
            here = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(here, "b's /status: {:?}", fleet_status(&b_dir).await);
    let status = b.wait().await.unwrap();
    let stderr = std::fs::read_to_string(b_dir.join("stderr")).unwrap();
    assert!(status.success(), "b ends cleanly:\n{stderr}");

    for i in 1..=4 {
        let cluster = format!("fleet-{i}");
        let a_log = a_dir.join("state").join(&cluster).join("actions.jsonl");
        let acted = std::fs::read_to_string(&a_log).unwrap_or_default();
        assert!(
            !acted.contains("\"loop\":\"repair\""),
            "a was killed before the crash: {acted}"
        );
        let lines = json_lines(&b_dir.join("state").join(&cluster).join("actions.jsonl"));
        let creates = lines
            .iter()
            .filter(|l| {
                l["kind"] == "command" && l["what"] == "create database pg-3-r1 replacing pg-3"
            })
            .count();
        assert_eq!(creates, 1, "{cluster}: b replaced pg-3 once:\n{stderr}");
    }
}

/// etcd comes up after Steward (as it may at boot): the instance waits, says why, acts on
/// nothing meanwhile, and takes its clusters once etcd answers; it does not exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_before_etcd_waits_for_it_and_then_leads() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{ETCD_HOST}:{}", free_port(ETCD_HOST));
    let (mut a, a_dir) = leased_instance(dir.path(), &endpoint, "a", 2, "30s");
    let stderr = || std::fs::read_to_string(a_dir.join("stderr")).unwrap_or_default();
    // Either the connection (with credentials it authenticates at once) or the lease rounds
    // after a lazy connection fail, and say so.
    wait_until("a says etcd cannot be reached", 15, || {
        let e = stderr();
        e.contains("etcd cannot be reached") || e.contains("lease round failed")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        a.try_wait().unwrap().is_none(),
        "a gave up without etcd:\n{}",
        stderr()
    );
    assert_eq!(owns(&a_dir), 0, "nothing owned without etcd");
    assert!(
        !a_dir
            .join("state")
            .join("fleet-1")
            .join("actions.jsonl")
            .exists()
            || std::fs::read_to_string(a_dir.join("state/fleet-1/actions.jsonl"))
                .unwrap()
                .is_empty(),
        "nothing acted on without etcd"
    );
    let Some((_etcd, _)) = throwaway_etcd_at(dir.path(), &endpoint).await else {
        return;
    };
    wait_until("a owns both clusters once etcd answers", 40, || {
        owns(&a_dir) == 2
    })
    .await;
    let status = a.wait().await.unwrap();
    assert!(status.success(), "a ends cleanly:\n{}", stderr());
}

/// One simulated cluster with `[lease]` runs in real time, as a leased fleet does: in the
/// simulation's paused time etcd's TTLs and the election's retry waits would pass at once (an
/// instance without etcd spun through thousands of failed rounds a second of wall time).
#[tokio::test]
async fn one_leased_simulated_cluster_runs_in_real_time_and_retries_at_a_human_pace() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{ETCD_HOST}:{}", free_port(ETCD_HOST));
    let config = example_config("simulated.toml", dir.path(), |text| {
        format!(
            "{text}\n[lease]\nendpoints = [{endpoint:?}]\ninstance = \"a\"\nscope = \"pace\"\nttl = \"2s\"\n"
        )
    });
    let started = tokio::time::Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args([
            "--log",
            "steward=info,warn",
            "run",
            "--quiet",
            "--for",
            "3s",
            "--config",
        ])
        .arg(&config)
        .output()
        .await
        .expect("the steward binary runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A lower bound only (real time cannot run fast): in paused time `--for 3s` took 35 ms.
    assert!(
        took >= std::time::Duration::from_secs(3),
        "--for 3s ended after {took:?}: the leased run is not in real time"
    );
    let failed = stderr.matches("lease round failed").count();
    // A round a second or two, with a connection timeout each: a handful in 3 s, not thousands.
    assert!(
        (1..=30).contains(&failed),
        "{failed} failed lease rounds in 3 s:\n{}",
        stderr.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Without `--for`, a fleet runs until SIGTERM, and then every cluster stops together and the
/// process exits 0 (simulated time races ahead meanwhile; the point is the clean stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_cluster_of_a_fleet_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = fleet_config(dir.path(), |t| t.replace("clusters = 50", "clusters = 3"));
    let out = dir.path().join("stdout");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(&out).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("the steward binary runs");
    let printed = || std::fs::read_to_string(&out).unwrap_or_default();
    // Every cluster has repaired its replica: all three are well under way.
    wait_until("every cluster repairs pg-3", 30, || {
        printed().matches("remove pg-3 (delete data): ok").count() == 3
    })
    .await;
    let pid = child.id().expect("still running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the fleet stops within 30 s of SIGTERM")
        .unwrap();
    assert!(done.status.success(), "{:?}", done.status);
    let text = printed();
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains("fleet of 3 clusters stopped"),
        "{text}"
    );
}

/// Issue 19: one HTTP surface for a fleet. `/status` is a summary (counts by state, a line per
/// cluster), `/status?cluster=NAME` that cluster's whole status (404 for a name not in the
/// fleet), `/metrics` every cluster's series with a `cluster` label, and `POST /pause
/// ?cluster=NAME` pauses that cluster alone (with the token; 401 without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_serves_a_summary_each_clusters_detail_and_pauses_one_cluster() {
    const TOKEN: &str = "fleet-test-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let config = fleet_config(dir.path(), |t| {
        format!(
            "{}\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
            t.replace("clusters = 50", "clusters = 3")
        )
    });
    let _steward = tokio::process::Command::new(env!("CARGO_BIN_EXE_steward"))
        .args(["run", "--quiet", "--config"])
        .arg(&config)
        .env("STEWARD_API_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the steward binary runs");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let r = request.send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        }
    };
    let mut summary = serde_json::Value::Null;
    for _ in 0..100 {
        if let Some((200, body)) = get("/status").await {
            summary = serde_json::from_str(&body).unwrap();
            if summary["states"]["unknown"] == 0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(summary["clusters"], 3, "{summary}");
    assert_eq!(
        summary["states"]["unknown"], 0,
        "every cluster observed: {summary}"
    );
    let names: Vec<&str> = summary["by_cluster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fleet-1", "fleet-2", "fleet-3"]);
    assert!(
        summary["by_cluster"][0]["members"].as_u64().unwrap() >= 3,
        "{summary}"
    );

    let (code, body) = get("/status?cluster=fleet-2").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["cluster"], "fleet-2");
    assert!(detail["members"].as_array().unwrap().len() >= 3, "{detail}");
    let (code, body) = get("/status?cluster=fleet-9").await.unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("fleet-1"),
        "the answer lists the fleet's clusters: {body}"
    );

    let pause = |token: Option<&str>| {
        let mut request = http.post(format!("{base}/pause?cluster=fleet-2"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move { request.send().await.unwrap() }
    };
    assert_eq!(pause(None).await.status().as_u16(), 401);
    let paused: serde_json::Value = pause(Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(paused["paused"], serde_json::json!({"fleet-2": true}));
    let (_, body) = get("/status").await.unwrap();
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["states"]["paused"], 1, "{summary}");
    assert_eq!(summary["by_cluster"][1]["state"], "paused", "{summary}");
    assert_ne!(summary["by_cluster"][0]["state"], "paused", "{summary}");

    let (_, metrics) = get("/metrics").await.unwrap();
    for (cluster, value) in [("fleet-1", 0), ("fleet-2", 1), ("fleet-3", 0)] {
        let line = format!("steward_paused{{cluster=\"{cluster}\"}} {value}");
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    // One descriptor per metric however many clusters: what Prometheus's parser requires.
    let types = metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE steward_paused "))
        .count();
    assert_eq!(types, 1, "{metrics}");
}

/// Cut off from etcd (etcd frozen with SIGSTOP), an instance stops every cluster's loops once
/// the leases' local deadline passes, and starts them again when etcd answers and the leases
/// are its own again; it ends cleanly. Real time: about 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_cut_off_from_etcd_stops_its_loops_and_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    let Some((etcd, endpoint)) = throwaway_etcd(dir.path()).await else {
        return;
    };
    let signal = |sig: &'static str| {
        let pid = etcd.id().expect("etcd runs").to_string();
        async move {
            let sent = tokio::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .await
                .unwrap();
            assert!(sent.success(), "kill {sig} {pid}");
        }
    };
    let (mut a, a_dir) = leased_instance(dir.path(), &endpoint, "a", 2, "20s");
    wait_until("a owns both clusters", 15, || owns(&a_dir) == 2).await;
    let lost = |sub: &Path| {
        std::fs::read_to_string(sub.join("stderr"))
            .unwrap_or_default()
            .matches("the cluster's lease is lost: its loops stop")
            .count()
    };
    assert_eq!(lost(&a_dir), 0);
    signal("-STOP").await;
    wait_until("a stops both clusters' loops", 8, || lost(&a_dir) == 2).await;
    let restarted = poll_until(2, || owns(&a_dir) > 2).await;
    signal("-CONT").await;
    assert!(
        !restarted,
        "a started a cluster's loops again while cut off from etcd"
    );
    assert_eq!(lost(&a_dir), 2, "both clusters' loops stopped");
    wait_until("a owns both clusters again", 15, || owns(&a_dir) == 4).await;
    let status = a.wait().await.unwrap();
    let stderr = std::fs::read_to_string(a_dir.join("stderr")).unwrap();
    assert!(status.success(), "a ends cleanly:\n{stderr}");
}
