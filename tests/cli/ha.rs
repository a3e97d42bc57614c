//! Steward itself highly available: two `steward run` processes (the built binary) on the REAL lab,
//! electing one actor on the lab's own etcd (127.0.0.2:2379, the one Patroni uses) under a scope
//! fresh for every test run (`/steward/ha-<random>/leader`), so runs never see each other's keys.
//!
//! - a crash of the leader process (`kill -9`) hands the acting role to the other within the
//!   lease TTL and a margin; before that, a killed replica is replaced exactly once (the
//!   follower executes nothing);
//! - a leader cut off from etcd (it reaches etcd through a TCP proxy this test runs, on
//!   127.0.0.7, which then either freezes: bytes held, connections open, so only the local
//!   deadline can save us; or closes: connections dropped) stops acting BEFORE the other
//!   instance, connected directly, becomes leader.
//!
//! What it is not: a test of the election itself (adapters/tests/it/lease.rs on a throwaway etcd)
//! nor of the outer loop's transitions (runtime/src/run/lease.rs, paused time); here both are seen from
//! outside, through `/status`, the actions files and the lab.
//!
//! Needs the lab (see tests/cli/e2e.rs): `STEWARD_LAB=1`, the lab's variables, and the lab lock:
//! `flock /tmp/steward-lab.lock cargo nextest run -p steward --test cli -E 'test(/^ha::/)'
//! --no-capture`. Without the lab the tests fail (`crate::service_missing`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::e2e::{
    container_id, container_state, lab, leader_and_streaming, patroni, platform, repo, sh,
    with_lab, Steward, LAB_MEMBERS, REPAIR_TIMEOUT,
};
use steward_model::ports::Platform;

/// The lab's etcd.
const ETCD: &str = "127.0.0.2:2379";
/// tests/data/ha/lab.toml's `[lease] ttl`.
const TTL: Duration = Duration::from_secs(6);
/// Beyond the TTL for a takeover: etcd's expiry sweep (up to ~0.5 s), the watch event, the
/// campaign round trip and a loaded 2-core box.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(6);
/// How long both instances get to agree on a leader after they start.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().unwrap().port()
}

/// One instance: its `steward run` child, its /status URL and its folders.
struct Instance {
    name: String,
    steward: Steward,
    status_url: String,
    state_dir: PathBuf,
}

/// tests/data/ha/lab.toml for one instance, written into `dir`.
fn write_ha_config(
    dir: &Path,
    state_dir: &Path,
    instance: &str,
    scope: &str,
    etcd: &str,
    port: u16,
) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("tests/data/ha/lab.toml"))
        .expect("tests/data/ha/lab.toml");
    let mut doc: toml::Table = toml::from_str(&text).expect("the ha config is TOML");
    let set = |doc: &mut toml::Table, section: &str, key: &str, value: toml::Value| {
        doc[section]
            .as_table_mut()
            .unwrap_or_else(|| panic!("[{section}]"))
            .insert(key.into(), value);
    };
    let s = |v: &str| toml::Value::String(v.to_string());
    set(
        &mut doc,
        "cluster",
        "state_dir",
        s(&state_dir.display().to_string()),
    );
    set(&mut doc, "lease", "instance", s(instance));
    set(&mut doc, "lease", "scope", s(scope));
    set(
        &mut doc,
        "lease",
        "endpoints",
        toml::Value::Array(vec![s(&format!("http://{etcd}"))]),
    );
    set(
        &mut doc,
        "server",
        "listen",
        s(&format!("127.0.0.1:{port}")),
    );
    let path = dir.join("steward.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

impl Instance {
    /// Starts `steward run` as `name` in `scope`, reaching etcd at `etcd` (`host:port`).
    fn start(name: &str, scope: &str, etcd: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let port = free_port();
        let config = write_ha_config(dir.path(), &state_dir, name, scope, etcd, port);
        let steward = Steward::start(&config, dir, state_dir.clone());
        Instance {
            name: name.to_string(),
            steward,
            status_url: format!("http://127.0.0.1:{port}/status"),
            state_dir,
        }
    }

    /// `/status`'s `lease` part, or None while the server does not answer yet.
    async fn lease(&self, http: &reqwest::Client) -> Option<Value> {
        let resp = http
            .get(&self.status_url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let v: Value = resp.json().await.ok()?;
        Some(v["lease"].clone())
    }

    async fn role(&self, http: &reqwest::Client) -> Option<String> {
        self.lease(http).await?["role"].as_str().map(str::to_string)
    }

    /// The lines of its actions file (`<state_dir>/actions.jsonl`).
    fn actions(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.state_dir.join("actions.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("actions.jsonl holds JSON lines"))
            .collect()
    }

    /// Commands it executed (not dry-run ones).
    fn executed(&self) -> Vec<String> {
        self.actions()
            .into_iter()
            .filter(|l| l["kind"] == "command" && l["dry_run"] == false)
            .map(|l| l["what"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn scope() -> String {
    format!("ha-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// Waits until `a` and `b` agree: one says `leader`, the other `follower` of it. Returns the
/// leader's index (0 = a, 1 = b).
async fn agreed_leader(http: &reqwest::Client, a: &mut Instance, b: &mut Instance) -> usize {
    let deadline = Instant::now() + ELECTION_TIMEOUT;
    loop {
        a.steward.assert_alive();
        b.steward.assert_alive();
        let (la, lb) = (a.lease(http).await, b.lease(http).await);
        if let (Some(la), Some(lb)) = (&la, &lb) {
            let says = |l: &Value| {
                (
                    l["role"].as_str().unwrap_or("").to_string(),
                    l["leader"].as_str().unwrap_or("").to_string(),
                )
            };
            let (ra, leader_a) = says(la);
            let (rb, leader_b) = says(lb);
            if ra == "leader" && rb == "follower" && leader_b == a.name && leader_a == a.name {
                return 0;
            }
            if rb == "leader" && ra == "follower" && leader_a == b.name && leader_b == b.name {
                return 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within {ELECTION_TIMEOUT:?}: a {la:?}, b {lb:?}\n{}\n{}",
            a.steward.output(),
            b.steward.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Both up, exactly one leads; a killed replica is replaced once, by the leader only; then the
/// leader is killed with SIGKILL and the other one leads within TTL + margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_acts_and_the_other_takes_over_after_a_crash() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, |urls| async move {
        let http = reqwest::Client::new();
        let client = patroni(urls);
        let platform = platform().await;
        let scope = scope();
        let mut a = Instance::start("steward-a", &scope, ETCD);
        let mut b = Instance::start("steward-b", &scope, ETCD);
        let first = agreed_leader(&http, &mut a, &mut b).await;
        let (leader, follower) = if first == 0 { (a, b) } else { (b, a) };
        let (mut leader, mut follower) = (leader, follower);
        let token = leader.lease(&http).await.unwrap()["token"]
            .as_i64()
            .expect("the leader shows its token");
        eprintln!(
            "ha: {} leads (token {token}), {} follows (scope {scope})",
            leader.name, follower.name
        );
        // Let the acting run observe the healthy cluster first: the fault must be a change.
        tokio::time::sleep(Duration::from_secs(6)).await;

        let (pg_leader, streaming) = leader_and_streaming(&client)
            .await
            .expect("the lab has a leader");
        let victim = streaming
            .iter()
            .find(|n| LAB_MEMBERS.contains(&n.as_str()) && **n != pg_leader)
            .expect("a streaming lab replica")
            .clone();
        let victim_id = container_id(&victim).await;
        let killed = Instant::now();
        let out = sh("docker", &["kill", &victim]).await;
        assert!(out.status.success(), "docker kill {victim}: {out:?}");
        eprintln!("ha: killed replica {victim}");

        // Replaced (a new member streams) and the old container removed.
        let deadline = killed + REPAIR_TIMEOUT;
        loop {
            leader.steward.assert_alive();
            follower.steward.assert_alive();
            let gone = container_state(&victim_id).await.is_none();
            let new = leader_and_streaming(&client).await.and_then(|(_, s)| {
                s.into_iter().find(|n| !LAB_MEMBERS.contains(&n.as_str()))
            });
            if let (true, Some(new)) = (gone, &new) {
                eprintln!(
                    "ha: {victim} replaced by {new} and removed in {:.1} s",
                    killed.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no replacement of {victim} within {REPAIR_TIMEOUT:?}\n{}\n{}",
                leader.steward.output(),
                follower.steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Exactly once: one member that is not the lab's, created by the leader, none by the
        // follower (it executed nothing at all), also a few ticks later.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let extra: Vec<String> = platform
            .list()
            .await
            .expect("list the lab's members")
            .into_iter()
            .map(|m| m.name)
            .filter(|n| !LAB_MEMBERS.contains(&n.as_str()))
            .collect();
        assert_eq!(extra.len(), 1, "one replacement, not {extra:?}");
        let creates: Vec<String> = leader
            .executed()
            .into_iter()
            .filter(|c| c.starts_with("create "))
            .collect();
        assert_eq!(creates.len(), 1, "the leader created once: {creates:?}");
        assert_eq!(
            follower.executed(),
            Vec::<String>::new(),
            "the follower executed commands"
        );

        // kill -9 the leader (dropping the child kills it with SIGKILL): the follower leads
        // within the TTL and a margin, under a larger token.
        let leader_name = leader.name.clone();
        drop(leader);
        let crashed = Instant::now();
        let took = loop {
            follower.steward.assert_alive();
            if follower.role(&http).await.as_deref() == Some("leader") {
                break crashed.elapsed();
            }
            assert!(
                crashed.elapsed() < TTL + TAKEOVER_MARGIN,
                "{} did not lead within {:?} of {leader_name}'s crash\n{}",
                follower.name,
                TTL + TAKEOVER_MARGIN,
                follower.steward.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let new_token = follower.lease(&http).await.unwrap()["token"]
            .as_i64()
            .expect("the new leader shows its token");
        eprintln!(
            "ha: {leader_name} killed -> {} leads after {:.2} s (ttl {} s), token {token} -> {new_token}",
            follower.name,
            took.as_secs_f64(),
            TTL.as_secs()
        );
        assert!(new_token > token, "tokens grow: {token} -> {new_token}");

        follower.steward.stop_cleanly().await;
    })
    .await;
}

/// A TCP proxy that can freeze (bytes held, connections kept open: packets vanish).
struct Proxy {
    addr: String,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on a free port of 127.0.0.7 (no lab service uses that address) and forwards to
/// `upstream` (`host:port`).
async fn proxy(upstream: &str) -> Proxy {
    let listener = TcpListener::bind("127.0.0.7:0").await.expect("bind proxy");
    let addr = listener.local_addr().unwrap().to_string();
    let (frozen, frozen_rx) = watch::channel(false);
    let upstream = upstream.to_string();
    let task = tokio::spawn(async move {
        // The pumps live (and die) with this task.
        let mut conns = JoinSet::new();
        loop {
            let Ok((down, _)) = listener.accept().await else {
                return;
            };
            let Ok(up) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            conns.spawn(pump(dr, uw, frozen_rx.clone()));
            conns.spawn(pump(ur, dw, frozen_rx.clone()));
        }
    });
    Proxy { addr, frozen, task }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// How the leader's way to etcd is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Bytes are held, connections stay open: only the local deadline notices.
    Freeze,
    /// The proxy goes away: its connections drop and new ones are refused.
    Close,
}

/// The leader reaches etcd through a proxy that freezes: it stops acting (its /status leaves
/// `leader`, it executes nothing more) before the other instance becomes leader; once the way
/// is open again it follows the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_acting_before_the_other_leads() {
    cut_off(Cut::Freeze).await;
}

/// The same when the leader's connections to etcd drop and cannot be made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_etcd_connections_drop_stops_acting_before_the_other_leads() {
    cut_off(Cut::Close).await;
}

async fn cut_off(how: Cut) {
    let Some(urls) = lab() else {
        return;
    };
    with_lab(urls, move |_urls| async move {
        let http = reqwest::Client::new();
        let scope = scope();
        let mut cut = Some(proxy(ETCD).await);
        let via = cut.as_ref().unwrap().addr.clone();
        let mut a = Instance::start("steward-a", &scope, &via);
        // A leads first (B starts once it does), so the cut-off one is the leader.
        let deadline = Instant::now() + ELECTION_TIMEOUT;
        while a.role(&http).await.as_deref() != Some("leader") {
            a.steward.assert_alive();
            assert!(
                Instant::now() < deadline,
                "a did not lead alone within {ELECTION_TIMEOUT:?}\n{}",
                a.steward.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut b = Instance::start("steward-b", &scope, ETCD);
        assert_eq!(agreed_leader(&http, &mut a, &mut b).await, 0);
        let token_a = a.lease(&http).await.unwrap()["token"].as_i64().unwrap();
        let executed_before = a.executed();

        let cut_at = Instant::now();
        match how {
            Cut::Freeze => {
                if let Some(p) = &cut {
                    p.frozen.send_replace(true);
                }
            }
            // Dropping the proxy aborts its task: the listener and every connection close.
            Cut::Close => drop(cut.take()),
        }
        eprintln!("ha: cut a's way to etcd ({how:?}, token {token_a})");
        let mut a_stopped = None;
        let mut b_leads = None;
        let limit = TTL + TAKEOVER_MARGIN;
        while a_stopped.is_none() || b_leads.is_none() {
            a.steward.assert_alive();
            b.steward.assert_alive();
            let (ra, rb) = (a.role(&http).await, b.role(&http).await);
            let now = Instant::now();
            if a_stopped.is_none() && ra.as_deref() != Some("leader") {
                a_stopped = Some(now);
            }
            if b_leads.is_none() && rb.as_deref() == Some("leader") {
                b_leads = Some(now);
            }
            if a_stopped.is_some() {
                assert_ne!(
                    ra.as_deref(),
                    Some("leader"),
                    "a cut-off instance leads again"
                );
            }
            assert!(
                cut_at.elapsed() < limit,
                "within {limit:?} of the cut: a stopped {a_stopped:?}, b leads {b_leads:?}\n{}\n{}",
                a.steward.output(),
                b.steward.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (a_stopped, b_leads) = (a_stopped.unwrap(), b_leads.unwrap());
        eprintln!(
            "ha: cut off at 0: a stopped acting after {:.2} s, b leads after {:.2} s",
            (a_stopped - cut_at).as_secs_f64(),
            (b_leads - cut_at).as_secs_f64()
        );
        assert!(
            a_stopped < b_leads,
            "b led ({:?}) before a stopped ({:?})",
            b_leads - cut_at,
            a_stopped - cut_at
        );
        assert!(
            a_stopped - cut_at < TTL,
            "a stopped only after {:?}",
            a_stopped - cut_at
        );
        let out = a.steward.output();
        eprintln!("ha: a's log of the cut:");
        for line in out
            .lines()
            .filter(|l| l.contains("stopped acting") || l.contains("lease"))
        {
            eprintln!("  {line}");
        }
        assert!(
            out.contains("lost the lease: stopped acting"),
            "a's log says it stopped acting:\n{out}"
        );
        assert_eq!(a.executed(), executed_before, "a executed after the cut");
        let token_b = b.lease(&http).await.unwrap()["token"].as_i64().unwrap();
        assert!(token_b > token_a, "tokens grow: {token_a} -> {token_b}");

        // Reconnected (after a freeze), a follows b.
        if let Some(p) = &cut {
            p.frozen.send_replace(false);
            let deadline = Instant::now() + ELECTION_TIMEOUT;
            loop {
                let la = a.lease(&http).await.unwrap_or_default();
                if la["role"] == "follower" && la["leader"] == b.name.as_str() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a did not follow b after reconnecting: {la}\n{}",
                    a.steward.output()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert_eq!(a.executed(), executed_before, "a executed after the cut");
        a.steward.stop_cleanly().await;
        b.steward.stop_cleanly().await;
    })
    .await;
}
