//! Leader election and per-cluster leases against a real etcd (Debian's 3.4), one throwaway
//! member per test on its own 127.0.0.5 port, never the lab's 127.0.0.2:2379.
//!
//! Real time and real sockets throughout (no paused clock), with 2 s TTLs so the module stays
//! fast. A cut-off is a TCP proxy in this process that stops forwarding bytes (packets vanish,
//! connections stay open), the case where only the local deadline can save us.
//!
//! An etcd that cannot start fails these tests (`crate::service_missing`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use steward_adapters::lease::{
    discover_patroni_scopes, ClusterLeases, Etcd, EtcdLeadership, FencingToken, LeaderState,
    Leadership, LeaseConfig, LeaseError, Write,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout, Instant};

const HOST: &str = "127.0.0.5";
const TTL: Duration = Duration::from_secs(2);

/// A single-member etcd in a temp dir, killed when dropped (also when a test panics).
struct TestEtcd {
    child: Child,
    _dir: tempfile::TempDir,
    endpoint: String,
}

/// Starts etcd on `HOST:port` (peer port `port + 1`) and waits until it answers a read.
/// `None` = skip (only where `crate::service_missing` allows it).
async fn etcd(port: u16) -> Option<TestEtcd> {
    match start_etcd(port).await {
        Ok(e) => Some(e),
        Err(e) => {
            crate::service_missing(&format!("cannot start etcd on {HOST}:{port} ({e})"));
            None
        }
    }
}

async fn start_etcd(port: u16) -> Result<TestEtcd, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let client = format!("http://{HOST}:{port}");
    let peer = format!("http://{HOST}:{}", port + 1);
    let child = Command::new("etcd")
        .args(["--name", "t", "--data-dir"])
        .arg(dir.path().join("data"))
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
        .spawn()
        .map_err(|e| format!("etcd: {e}"))?;
    let etcd = TestEtcd {
        child,
        _dir: dir,
        endpoint: client.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = async {
            let mut c = etcd_client::Client::connect([client.as_str()], None).await?;
            c.get("/", None).await
        };
        if let Ok(Ok(_)) = timeout(Duration::from_secs(1), ready).await {
            return Ok(etcd);
        }
        if Instant::now() > deadline {
            return Err(format!("etcd at {client} did not answer within 10 s"));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

impl TestEtcd {
    /// Sends `signal` (`STOP`, `CONT`) to the etcd process.
    async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("etcd still running").to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

async fn connect(endpoint: &str, instance: &str, scope: &str) -> Etcd {
    let settings = LeaseConfig {
        endpoints: vec![endpoint.to_string()],
        instance: Some(instance.to_string()),
        scope: Some(scope.to_string()),
        ttl: TTL,
        ..LeaseConfig::default()
    }
    .validate_with_env(|_| None)
    .expect("valid test config");
    Etcd::connect(settings).await.expect("connect")
}

/// Every state a watch channel showed, with when it was seen; `None` once the sender is gone.
type History = Arc<Mutex<Vec<(Instant, Option<LeaderState>)>>>;

fn record(mut rx: watch::Receiver<LeaderState>) -> (History, JoinHandle<()>) {
    let history: History = Arc::default();
    let h = history.clone();
    let task = tokio::spawn(async move {
        loop {
            let state = rx.borrow_and_update().clone();
            h.lock().unwrap().push((Instant::now(), Some(state)));
            if rx.changed().await.is_err() {
                h.lock().unwrap().push((Instant::now(), None));
                return;
            }
        }
    });
    (history, task)
}

/// The intervals during which a history shows Leader (open ones end at `end`).
fn leader_intervals(history: &History, end: Instant) -> Vec<(Instant, Instant, FencingToken)> {
    let h = history.lock().unwrap();
    let mut out = Vec::new();
    let mut open: Option<(Instant, FencingToken)> = None;
    for (at, state) in h.iter() {
        let token = state.as_ref().and_then(LeaderState::token);
        match (open, token) {
            (None, Some(t)) => open = Some((*at, t)),
            (Some((from, t0)), Some(t)) if t != t0 => {
                out.push((from, *at, t0));
                open = Some((*at, t));
            }
            (Some((from, t0)), None) => {
                out.push((from, *at, t0));
                open = None;
            }
            _ => {}
        }
    }
    if let Some((from, t)) = open {
        out.push((from, end, t));
    }
    out
}

fn assert_no_overlap(a: &History, b: &History) {
    let end = Instant::now();
    let (ia, ib) = (leader_intervals(a, end), leader_intervals(b, end));
    for (a0, a1, ta) in &ia {
        for (b0, b1, tb) in &ib {
            assert!(
                a1 <= b0 || b1 <= a0,
                "two leaders at once: {ta} during {a0:?}..{a1:?} and {tb} during {b0:?}..{b1:?}"
            );
        }
    }
}

/// Waits until `rx` shows a state for which `pred` holds; returns when.
async fn wait_for(
    rx: &mut watch::Receiver<LeaderState>,
    within: Duration,
    what: &str,
    pred: impl Fn(&LeaderState) -> bool,
) -> Instant {
    timeout(within, async {
        loop {
            if pred(&rx.borrow_and_update()) {
                return Instant::now();
            }
            rx.changed().await.expect("election task alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not {what} within {within:?}; state {:?}", *rx.borrow()))
}

fn is_leader(s: &LeaderState) -> bool {
    matches!(s, LeaderState::Leader { .. })
}

/// Campaigns on both; returns (leader, follower, token).
async fn elect<'a>(
    a: &'a EtcdLeadership,
    b: &'a EtcdLeadership,
) -> (&'a EtcdLeadership, &'a EtcdLeadership, FencingToken) {
    let winner = timeout(Duration::from_secs(5), async {
        tokio::select! {
            t = a.campaign() => (true, t.expect("campaign a")),
            t = b.campaign() => (false, t.expect("campaign b")),
        }
    })
    .await
    .expect("someone wins within 5 s");
    // The loser keeps campaigning in the background (its wish to lead stays set).
    let (leader, follower) = if winner.0 { (a, b) } else { (b, a) };
    (leader, follower, winner.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_then_a_crash_hands_over_within_the_ttl() {
    let Some(server) = etcd(23790).await else {
        return;
    };
    let ea = connect(&server.endpoint, "a", "crash").await;
    let eb = connect(&server.endpoint, "b", "crash").await;
    let a = ea.leadership();
    let b = eb.leadership();
    let (leader, follower, token) = elect(&a, &b).await;
    let leader_id = if std::ptr::eq(leader, &a) { "a" } else { "b" };

    // Exactly one leader: the other follows it, and its guard refuses the leader's token.
    let mut frx = follower.current();
    wait_for(&mut frx, Duration::from_secs(2), "following", |s| {
        *s == LeaderState::Follower {
            leader: Some(leader_id.to_string()),
        }
    })
    .await;
    assert!(leader.check(token).is_ok());
    assert!(follower.check(token).is_err());
    assert!(leader.check(FencingToken(token.0 - 1)).is_err());

    // Crash the leader: drop it without resigning, its lease runs out at etcd.
    let (ha, _) = record(leader.current());
    let (hb, _) = record(follower.current());
    let crashed_at = Instant::now();
    let (survivor, survivor_id) = if leader_id == "a" {
        drop(a);
        (b, "b")
    } else {
        drop(b);
        (a, "a")
    };
    let mut srx = survivor.current();
    let took_over = wait_for(&mut srx, TTL + Duration::from_secs(3), "leader", is_leader).await;
    let new_token = srx.borrow().token().unwrap();
    let handover = took_over - crashed_at;
    eprintln!("crash handover ({leader_id} -> {survivor_id}): {handover:?}, tokens {token} -> {new_token}");
    assert!(new_token > token, "tokens grow: {token} -> {new_token}");
    assert!(
        // etcd checks for expired leases every 500 ms; the rest is slack for a busy machine.
        handover <= TTL + Duration::from_secs(2),
        "took over after {handover:?}, TTL {TTL:?}"
    );
    // The lease really had to run out: nobody took over at once.
    assert!(handover >= TTL / 2, "took over after only {handover:?}");
    assert!(survivor.check(new_token).is_ok());
    assert_no_overlap(&ha, &hb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_hands_over_fast() {
    let Some(server) = etcd(23792).await else {
        return;
    };
    let ea = connect(&server.endpoint, "a", "resign").await;
    let eb = connect(&server.endpoint, "b", "resign").await;
    let a = ea.leadership();
    let b = eb.leadership();
    let (leader, follower, token) = elect(&a, &b).await;
    let (hl, _) = record(leader.current());
    let (hf, _) = record(follower.current());
    let mut frx = follower.current();

    let resigned_at = Instant::now();
    leader.resign().await.expect("resign");
    assert!(
        leader.check(token).is_err(),
        "a resigned leader must not act"
    );
    let took_over = wait_for(&mut frx, Duration::from_secs(2), "leader", is_leader).await;
    let handover = took_over - resigned_at;
    let new_token = frx.borrow().token().unwrap();
    eprintln!("resign handover: {handover:?}, tokens {token} -> {new_token}");
    assert!(
        handover < Duration::from_secs(1),
        "handover took {handover:?}"
    );
    assert!(new_token > token);

    // The resigned instance does not campaign again on its own; it follows the new leader.
    let mut lrx = leader.current();
    wait_for(&mut lrx, Duration::from_secs(2), "following", |s| {
        matches!(s, LeaderState::Follower { leader: Some(_) })
    })
    .await;
    // And a second campaign waits for the next handover, with a larger token again.
    follower.resign().await.expect("resign");
    let third = timeout(Duration::from_secs(2), leader.campaign())
        .await
        .expect("campaign after the other resigned")
        .expect("campaign");
    assert!(third > new_token);
    assert_no_overlap(&hl, &hf);
}

/// A TCP proxy that can stop forwarding (bytes are held, connections stay open).
struct Proxy {
    addr: String,
    frozen: watch::Sender<bool>,
    _task: JoinHandle<()>,
}

async fn proxy(listen: &str, upstream: &str) -> Proxy {
    let listener = TcpListener::bind(listen).await.expect("bind proxy");
    let (frozen, frozen_rx) = watch::channel(false);
    let upstream = upstream.trim_start_matches("http://").to_string();
    let task = tokio::spawn(async move {
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
    Proxy {
        addr: format!("http://{listen}"),
        frozen,
        _task: task,
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_stops_acting_before_anyone_takes_over() {
    let Some(server) = etcd(23794).await else {
        return;
    };
    let cut = proxy(&format!("{HOST}:23799"), &server.endpoint).await;
    let ea = connect(&cut.addr, "a", "cut").await;
    let eb = connect(&server.endpoint, "b", "cut").await;
    let a = ea.leadership();
    let b = eb.leadership();
    let token_a = timeout(Duration::from_secs(5), a.campaign())
        .await
        .expect("a leads within 5 s")
        .expect("campaign");
    let mut brx = b.current();
    let b_campaign = {
        let b = &b;
        async move { b.campaign().await }
    };
    tokio::pin!(b_campaign);
    // b campaigns but cannot win while a keeps its lease alive.
    assert!(
        timeout(TTL, &mut b_campaign).await.is_err(),
        "b won while a held the lease"
    );
    assert!(a.check(token_a).is_ok());

    let (ha, _) = record(a.current());
    let (hb, _) = record(b.current());
    let mut arx = a.current();
    let cut_at = Instant::now();
    cut.frozen.send_replace(true);

    let a_stopped = wait_for(&mut arx, TTL, "unknown", |s| !is_leader(s)).await;
    assert!(
        a.check(token_a).is_err(),
        "a cut-off leader's guard must refuse"
    );
    let token_b = timeout(TTL + Duration::from_secs(3), &mut b_campaign)
        .await
        .expect("b takes over")
        .expect("campaign");
    let b_leads = wait_for(&mut brx, Duration::from_secs(1), "leader", is_leader).await;
    eprintln!(
        "cut off: a stopped after {:?}, b leads after {:?}",
        a_stopped - cut_at,
        b_leads - cut_at
    );
    assert!(
        a_stopped - cut_at < TTL,
        "a stopped only after {:?}",
        a_stopped - cut_at
    );
    assert!(a_stopped < b_leads);
    assert!(token_b > token_a);
    assert_no_overlap(&ha, &hb);

    // Reconnected, the deposed leader's fenced write is refused by etcd itself...
    cut.frozen.send_replace(false);
    let key = "/steward/cut/data";
    let stale = Write::Put {
        key: key.into(),
        value: b"from a".to_vec(),
    };
    let err = timeout(
        Duration::from_secs(5),
        a.txn_fenced(token_a, std::slice::from_ref(&stale)),
    )
    .await
    .expect("etcd answers once the proxy forwards again")
    .unwrap_err();
    assert!(matches!(err, LeaseError::Fenced { .. }), "{err:?}");
    // ... and refused locally before reaching etcd by txn_if_leader.
    let err = a.txn_if_leader(token_a, &[stale]).await.unwrap_err();
    assert!(matches!(err, LeaseError::NotLeader(_)), "{err:?}");
    // The new leader's write goes through.
    b.txn_if_leader(
        token_b,
        &[Write::Put {
            key: key.into(),
            value: b"from b".to_vec(),
        }],
    )
    .await
    .expect("the holder's write");
    let mut raw = etcd_client::Client::connect([server.endpoint.as_str()], None)
        .await
        .unwrap();
    let got = raw.get(key, None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"from b");
    // The token is the leader key's create_revision.
    let leader = raw.get("/steward/cut/leader", None).await.unwrap();
    assert_eq!(leader.kvs()[0].create_revision(), token_b.0);
    assert_eq!(leader.kvs()[0].value(), b"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_makes_the_leader_stop_before_the_ttl() {
    let Some(server) = etcd(23802).await else {
        return;
    };
    let ea = connect(&server.endpoint, "a", "frozen").await;
    let a = ea.leadership();
    let token = timeout(Duration::from_secs(5), a.campaign())
        .await
        .expect("a leads within 5 s")
        .expect("campaign");
    // Held across more than one TTL by keep-alives.
    sleep(TTL + Duration::from_millis(500)).await;
    assert!(a.check(token).is_ok(), "keep-alives must hold the lease");

    let mut arx = a.current();
    let frozen_at = Instant::now();
    server.signal("STOP").await;
    let stopped = wait_for(&mut arx, TTL, "unknown", |s| !is_leader(s)).await;
    let after = stopped - frozen_at;
    assert!(a.check(token).is_err());
    server.signal("CONT").await;
    eprintln!("etcd frozen: leader stopped after {after:?}");
    assert!(after < TTL, "stopped after {after:?}");
    // Once etcd runs again the old lease has expired there; a wins again under a new token.
    let again = timeout(TTL + Duration::from_secs(5), a.campaign())
        .await
        .expect("leads again after etcd resumes")
        .expect("campaign");
    assert!(again > token, "{token} -> {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_deleted_steps_down() {
    let Some(server) = etcd(23804).await else {
        return;
    };
    let ea = connect(&server.endpoint, "a", "deleted").await;
    let a = ea.leadership();
    let token = timeout(Duration::from_secs(5), a.campaign())
        .await
        .expect("a leads")
        .expect("campaign");
    let (history, _) = record(a.current());
    let mut raw = etcd_client::Client::connect([server.endpoint.as_str()], None)
        .await
        .unwrap();
    raw.delete("/steward/deleted/leader", None).await.unwrap();
    // It stops acting under the old token, then (still campaigning) wins under a new one.
    let again = timeout(Duration::from_secs(3), async {
        let mut rx = a.current();
        loop {
            if let Some(t) = rx.borrow_and_update().token().filter(|t| *t != token) {
                return t;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("leads again");
    assert!(again > token);
    assert!(a.check(token).is_err());
    // The recorder runs in its own task: let it catch up with the state just seen.
    timeout(Duration::from_secs(1), async {
        while history
            .lock()
            .unwrap()
            .last()
            .and_then(|(_, s)| s.as_ref()?.token())
            != Some(again)
        {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the recorder sees the new term");
    let intervals = leader_intervals(&history, Instant::now());
    assert_eq!(
        intervals.iter().map(|i| i.2).collect::<Vec<_>>(),
        [token, again]
    );
}

async fn owned_set(l: &ClusterLeases) -> Vec<String> {
    l.owned().into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_shared_out_and_retaken_after_a_crash() {
    let Some(server) = etcd(23796).await else {
        return;
    };
    let ea = connect(&server.endpoint, "a", "fleet").await;
    let eb = connect(&server.endpoint, "b", "fleet").await;
    let clusters: Vec<String> = ["pg-1", "pg-2", "pg-3", "pg-4"].map(String::from).to_vec();
    let mut a = ClusterLeases::join(&ea).await.expect("join a");
    let mut b = ClusterLeases::join(&eb).await.expect("join b");
    a.claim(&clusters);
    b.claim(&clusters);

    let shared = timeout(Duration::from_secs(3), async {
        loop {
            let (oa, ob) = (owned_set(&a).await, owned_set(&b).await);
            if oa.len() + ob.len() == clusters.len() {
                return (oa, ob);
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("all clusters owned within 3 s");
    eprintln!("shared out: a {:?}, b {:?}", shared.0, shared.1);
    // Sorted clusters go round-robin to sorted instances.
    assert_eq!(shared.0, ["pg-1", "pg-3"]);
    assert_eq!(shared.1, ["pg-2", "pg-4"]);
    let old_tokens = a.owned();
    // Stable: nobody steals while both live.
    sleep(TTL).await;
    assert_eq!(owned_set(&a).await, shared.0);
    assert_eq!(owned_set(&b).await, shared.1);
    let (cluster, token) = old_tokens.iter().next().unwrap();
    assert!(a.cluster(cluster).unwrap().check(*token).is_ok());
    assert!(b.cluster(cluster).unwrap().check(*token).is_err());

    let crashed_at = Instant::now();
    drop(a);
    let all = timeout(2 * TTL + Duration::from_secs(3), async {
        loop {
            if owned_set(&b).await.len() == clusters.len() {
                return b.owned();
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("b picks up a's clusters");
    eprintln!("re-taken after {:?}", crashed_at.elapsed());
    for (cluster, old) in old_tokens {
        assert!(all[&cluster] > old, "{cluster}: {old} -> {}", all[&cluster]);
    }
    assert!(b.present());
    b.resign_all().await.expect("resign");
    assert!(b.owned().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_scopes_are_discovered() {
    let Some(server) = etcd(23800).await else {
        return;
    };
    let mut raw = etcd_client::Client::connect([server.endpoint.as_str()], None)
        .await
        .unwrap();
    for key in [
        "/service/alpha/config",
        "/service/alpha/members/pg-1",
        "/service/beta/leader",
        "/service/beta/members/pg-2",
        "/service/junk/other",
        "/other/gamma/leader",
        "/ns2/delta/initialize",
    ] {
        raw.put(key, "{}", None).await.unwrap();
    }
    let e = connect(&server.endpoint, "a", "disc").await;
    let default_ns = e.settings().patroni_namespace.clone();
    assert_eq!(
        discover_patroni_scopes(&e, &default_ns).await.unwrap(),
        ["alpha", "beta"]
    );
    assert_eq!(
        discover_patroni_scopes(&e, "/ns2/").await.unwrap(),
        ["delta"]
    );
    assert!(discover_patroni_scopes(&e, "/none")
        .await
        .unwrap()
        .is_empty());
}
