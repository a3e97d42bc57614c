//! End-to-end SCALING tests: `steward run` (the built binary) resizing the REAL lab (scripts/lab.sh;
//! lab/README.md) while an application keeps writing through HAProxy, and promise 5 (DESIGN.md
//! section 6: no acknowledged write is lost by a planned action) checked row by row.
//!
//! - [`Writer`]: commits numbered rows (1, 2, 3, ...) through the lab's HAProxy primary port
//!   (127.0.0.21:5432), one row per transaction, reconnecting after any error like an
//!   application would, and remembers which numbers were ACKNOWLEDGED (the commit returned OK).
//!   At the end every acknowledged number must be in the table, read back through the primary;
//!   unacknowledged ones (an error, a timeout: the outcome is unknown) may or may not be there.
//! - CPU: the members are set to 1 vCPU (the lab runs them at 2, and a 2-core host cannot give
//!   more: Docker refuses `--cpus` above the host's CPU count), CPU-heavy selects run through
//!   the replicas' port 5433, and tests/data/e2e/scaling-cpu.toml's fast CPU policy must grow
//!   every member (to 1.5 or 2 vCPU, as the load says) live (same container, same start time),
//!   all to one size, and patch the PostgreSQL
//!   settings the scaler derives from the size (scaler/src/settings.rs), seen with
//!   `current_setting()` on every member.
//! - Disk: a file written with dd in steps into one replica's volume (outside pgdata) must make
//!   tests/data/e2e/scaling-disk.toml's disk policy grow every member's XFS volume online before
//!   the filled one is full; the member keeps running.
//! - Replicas: CPU-heavy selects in six sessions through 5433 must make
//!   tests/data/e2e/scaling-replicas.toml's replica-count policy add a member, which streams and
//!   which both balancers list UP and ready in `replicas` (`[balancers]`, the Runtime API on
//!   :9999), and a read through 5433 reaches; once the load stops it is removed again (from
//!   Patroni, both balancers, the platform and its volume), and /cluster never shows fewer than
//!   the three lab members.
//! - Rolling restart: tests/data/e2e/scaling-cache.toml's buffer cache policy finds every
//!   member's cache short (issue 17) and moves shared_buffers to its share of memory; it needs a
//!   restart, so each replica is restarted, the primary is switched over, and the old primary
//!   restarted, while the writer commits: every member ends restarted (a new postmaster start
//!   time, the same container, the same memory) with the new shared_buffers, the leader has
//!   moved, and no acknowledged row is lost.
//! - OOM: tests/data/e2e/scaling-oom.toml never grows memory for usage; a replica's backend is
//!   OOM-killed by a sort far bigger than its 1 GiB, and every member's memory grows live by one
//!   step with no PostgreSQL restart, the same shared_buffers and no switchover (issue 17).
//!
//! Two more tests of issue 14: the replication slot a killed-and-replaced replica leaves behind
//! (Patroni 4 keeps it `member_slots_ttl`) is said and released through Patroni, checked on the
//! leader's `pg_replication_slots`; and a primary repair (the leader's volume filled past
//! `disk_full_ratio`: switched over, then replaced) loses no acknowledged write of the writer.
//!
//! A trap the load must avoid: `select count(*) from generate_series(1, N)` materializes the
//! series (a FROM-clause function), spilling hundreds of MiB to pgsql_tmp: on the lab's small
//! disks that fills the replica, postgres crashes, the replica stops streaming and Steward
//! (rightly) fences it. The load here runs the function in the select list, which streams.
//!
//! What it is not: a test of the policies' arithmetic (policies' own unit and property tests) nor
//! of the platform's resize verbs (adapters/tests/it/lab_docker.rs); here Steward is only watched
//! from outside, through Docker, `df`, Patroni and PostgreSQL, as an operator would.
//!
//! Running them: root, the lab up, `STEWARD_LAB=1` and the lab's variables (PGPASSFILE gives the
//! writer its password; nothing here prints it), and THE LAB LOCK, since the lab is shared:
//! `eval "$(scripts/lab.sh env)"; STEWARD_LAB=1 flock /tmp/steward-lab.lock cargo nextest run -p
//! steward --test cli -E 'test(/^e2e_scaling::/)' --no-capture`. Without the lab they fail, like
//! tests/cli/e2e.rs (`crate::service_missing`). The CPU and disk tests take about
//! 30 s each, the replica one about three minutes.
//!
//! What each test leaves behind: the lab restored by `with_lab` (three members, two streaming),
//! the members' CPU limit back at the lab's 2 vCPU, Patroni's dynamic config back as it was, the
//! writer's table and the fill file removed, also when the test fails. A disk cannot shrink
//! (XFS), so the disk test leaves every member's volume larger than it found it; the next run
//! fills from whatever size it finds. Before each test the lab members' disk images are grown to
//! the largest of them (`equalize_disks`): members of different sizes make the role "mixed", and
//! the scaler resizes nothing then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steward_adapters::patroni::PatroniApi;
use steward_model::Size;
use steward_scaler::settings::{ParamValue, PARAMETERS};
use steward_scaler::SettingsConfig;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::NoTls;

use crate::e2e::{lab, open_journal_records, patroni, repo, sh, with_lab, Steward, LAB_MEMBERS};

/// HAProxy's primary port on the first balancer: where an application writes.
const PRIMARY: (&str, u16) = ("127.0.0.21", 5432);
/// HAProxy's replicas port (leastconn): where an application reads.
const REPLICAS: (&str, u16) = ("127.0.0.21", 5433);
/// The lab's Patroni REST APIs, tried in order for `/config`.
const PATRONI_APIS: [&str; 3] = [
    "http://127.0.0.11:8008",
    "http://127.0.0.12:8008",
    "http://127.0.0.13:8008",
];
/// What the lab gives every member (scripts/lab.sh MEMBER_CPUS), restored after the CPU test.
const LAB_CPUS: &str = "2";
/// The size the CPU test starts the members at, in vCPUs; the policy's max (2) is above it.
const START_CPUS: f64 = 1.0;
/// From the load to every member resized and its settings applied: the policy's window and up
/// window (10 s + 12 s), the first observations, a resize per member (a `docker update` each)
/// and Patroni's loop (5 s) for the reload, with a wide margin for a loaded 2-core box.
const SCALE_TIMEOUT: Duration = Duration::from_secs(180);
/// A connection attempt (TCP and authentication): a paused member still accepts TCP.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One statement of the writer: past it, the outcome is unknown and the write unacknowledged.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The writer's pause between two commits: "as fast as it can" without taking a whole core of
/// the 2-core box away from the members it is writing to.
const WRITE_PAUSE: Duration = Duration::from_millis(10);
/// The writer's pause after an error before it connects again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// The writer's table (on the lab's own database; dropped at the end).
const TABLE: &str = "steward_e2e_writes";

/// The config under tests/data/e2e/ with `state_dir` pointed at `state_dir`, written into `dir`
/// (tests/cli/e2e.rs's `write_config`, for another file).
fn write_config(file: &str, dir: &Path, state_dir: &Path) -> PathBuf {
    let source = repo().join("tests/data/e2e").join(file);
    let text =
        std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let mut doc: toml::Table = toml::from_str(&text).expect("the e2e config is TOML");
    doc["cluster"].as_table_mut().expect("[cluster]").insert(
        "state_dir".into(),
        toml::Value::String(state_dir.display().to_string()),
    );
    let path = dir.join("steward.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

/// `steward run` on `file` with a fresh state folder, after a few ticks of the healthy cluster;
/// its state folder, to watch its journal.
async fn start_steward(file: &str) -> (Steward, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let config = write_config(file, dir.path(), &state_dir);
    let mut steward = Steward::start(&config, dir, state_dir.clone());
    tokio::time::sleep(Duration::from_secs(6)).await;
    steward.assert_alive();
    (steward, state_dir)
}

/// Waits (bounded) until Steward has no operation open, then stops it: a rollout's last check
/// may still be pending when its effect is already visible, and a stop must find none open.
async fn stop_when_idle(mut steward: Steward, state_dir: &Path) {
    let deadline = Instant::now() + SCALE_TIMEOUT;
    loop {
        steward.assert_alive();
        let open = open_journal_records(state_dir);
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "steward still has operations open {SCALE_TIMEOUT:?} later: {open:?}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    steward.stop_cleanly().await;
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// The password libpq would take from PGPASSFILE (`host:port:database:user:password`, `*` for
/// any). The lab writes one line per address; escaped `:` in a field is not supported. The
/// password is never printed, not even in a panic message.
fn password_for(host: &str, port: u16, user: &str) -> String {
    let path = std::env::var("PGPASSFILE")
        .unwrap_or_else(|_| "/var/lib/steward-lab/secrets/pgpass".to_string());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the lab's password file {path}: {e}"));
    let port = port.to_string();
    let fits = |field: &str, value: &str| field == "*" || field == value;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.splitn(5, ':').collect::<Vec<_>>())
        .find(|f| {
            f.len() == 5
                && fits(f[0], host)
                && fits(f[1], &port)
                && fits(f[2], "postgres")
                && fits(f[3], user)
        })
        .map(|f| f[4].to_string())
        .unwrap_or_else(|| panic!("no line for {user}@{host}:{port} in {path}"))
}

/// A session as user `postgres`, database `postgres`; the whole handshake is bounded.
async fn connect(host: &str, port: u16) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .password(password_for(host, port, "postgres"))
        .application_name("steward-e2e-scaling")
        .connect_timeout(CONNECT_TIMEOUT);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| format!("connect to {host}:{port} timed out"))?
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    // The connection object does the I/O; it ends when the client is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects, retrying for up to 30 s (a member or HAProxy may be between two states).
async fn connect_patiently(host: &str, port: u16) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect(host, port).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// What the writer did.
#[derive(Debug)]
struct WriterReport {
    /// The numbers whose commit returned OK, in order.
    acknowledged: Vec<i64>,
    /// Attempts that failed or timed out (outcome unknown).
    failed: u64,
    /// Times it had to connect again after an error.
    reconnects: u64,
    /// The longest time between two acknowledgements: how long writes were unavailable.
    longest_gap: Duration,
    elapsed: Duration,
}

/// An application writing numbered rows through HAProxy's primary port, one per transaction.
struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<WriterReport>,
}

impl Writer {
    /// Creates the table afresh and starts writing.
    async fn start() -> Writer {
        let client = connect_patiently(PRIMARY.0, PRIMARY.1).await;
        client
            .batch_execute(&format!(
                "drop table if exists {TABLE}; \
                 create table {TABLE} (n bigint primary key, at timestamptz not null default clock_timestamp())"
            ))
            .await
            .expect("create the writer's table through the primary port");
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write(Some(client), Arc::clone(&stop)));
        Writer { stop, task }
    }

    async fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        // One statement and one connection attempt at most are in flight.
        tokio::time::timeout(STATEMENT_TIMEOUT + CONNECT_TIMEOUT * 2, self.task)
            .await
            .expect("the writer stops")
            .expect("the writer did not panic")
    }
}

async fn write(mut client: Option<tokio_postgres::Client>, stop: Arc<AtomicBool>) -> WriterReport {
    let started = Instant::now();
    let insert = format!("insert into {TABLE} (n) values ($1)");
    let mut report = WriterReport {
        acknowledged: Vec::new(),
        failed: 0,
        reconnects: 0,
        longest_gap: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let mut last_ack = started;
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_ref() else {
            match connect(PRIMARY.0, PRIMARY.1).await {
                Ok(c) => {
                    report.reconnects += 1;
                    client = Some(c);
                }
                Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
            continue;
        };
        n += 1;
        // Autocommit: one statement is one transaction, and its OK is the commit's.
        match tokio::time::timeout(STATEMENT_TIMEOUT, c.execute(insert.as_str(), &[&n])).await {
            Ok(Ok(1)) => {
                report.acknowledged.push(n);
                report.longest_gap = report.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
            }
            _ => {
                // Unknown outcome: not acknowledged. A fresh connection, like an app's pool.
                report.failed += 1;
                client = None;
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
        tokio::time::sleep(WRITE_PAUSE).await;
    }
    report.longest_gap = report.longest_gap.max(last_ack.elapsed());
    report.elapsed = started.elapsed();
    report
}

/// Promise 5: every acknowledged number is in the table, read back through the primary port.
/// Drops the table afterwards.
async fn assert_no_acknowledged_write_lost(report: &WriterReport) {
    let client = connect_patiently(PRIMARY.0, PRIMARY.1).await;
    let rows = client
        .query(&format!("select n from {TABLE}"), &[])
        .await
        .expect("read the writer's table back");
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
    let lost: Vec<i64> = report
        .acknowledged
        .iter()
        .copied()
        .filter(|n| !present.contains(n))
        .collect();
    let acknowledged: BTreeSet<i64> = report.acknowledged.iter().copied().collect();
    let unacknowledged_present = present.difference(&acknowledged).count();
    eprintln!(
        "e2e-scaling: writer: {} commits acknowledged in {:.1} s, {} attempts failed ({} of them \
         committed anyway), {} reconnects, longest time between two acknowledgements {:.2} s; \
         {} rows in the table",
        report.acknowledged.len(),
        report.elapsed.as_secs_f64(),
        report.failed,
        unacknowledged_present,
        report.reconnects,
        report.longest_gap.as_secs_f64(),
        present.len()
    );
    assert!(
        report.acknowledged.len() >= 10,
        "the writer got too few commits acknowledged to prove anything: {report:?}"
    );
    assert!(
        lost.is_empty(),
        "promise 5 broken: {} acknowledged rows are missing, first ones {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    client
        .batch_execute(&format!("drop table if exists {TABLE}"))
        .await
        .expect("drop the writer's table");
}

/// CPU-heavy selects in `sessions` sessions through `(host, port)` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<u64>>,
}

impl Load {
    fn start(sessions: usize, (host, port): (&'static str, u16)) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..sessions)
            .map(|_| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let mut done = 0;
                    let mut client = None;
                    while !stop.load(Ordering::Relaxed) {
                        let Some(c) = client.as_ref() else {
                            client = connect(host, port).await.ok();
                            if client.is_none() {
                                tokio::time::sleep(RECONNECT_PAUSE).await;
                            }
                            continue;
                        };
                        // A few seconds of one core each, so a stop is never far away. The
                        // set-returning function runs in the select list (ProjectSet), which
                        // streams: in FROM it would be materialized, and `generate_series(1,
                        // 2e7)` spills hundreds of MiB to pgsql_tmp, which fills the lab's small
                        // disks, crashes the replica and gets it fenced.
                        let query = c.query_one(
                            "select count(*) from (select generate_series(1, 100000000)) s",
                            &[],
                        );
                        match tokio::time::timeout(Duration::from_secs(60), query).await {
                            Ok(Ok(_)) => done += 1,
                            _ => client = None,
                        }
                    }
                    done
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops it; the number of selects that finished.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut done = 0;
        for t in self.tasks {
            // A select in flight ends within seconds; one that does not is aborted by the
            // timeout dropping its task (and its connection).
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(60), t).await {
                done += n;
            }
        }
        done
    }
}

/// Whether `current_setting(name)` on the member at `host:5432` is `value` for every parameter;
/// the first mismatch otherwise.
async fn settings_mismatch(host: &str, expected: &BTreeMap<String, ParamValue>) -> Option<String> {
    let client = match connect(host, 5432).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    for (name, want) in expected {
        let row = match client
            .query_one(
                "select current_setting($1), pg_size_bytes(current_setting($1))::bigint",
                &[name],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return Some(format!("{host}: current_setting({name}): {e}")),
        };
        let text: String = row.get(0);
        let bytes: i64 = row.get(1);
        let ok = match want {
            ParamValue::Count(n) => text == n.to_string(),
            ParamValue::Megabytes(mb) => u64::try_from(bytes).ok() == Some(mb * 1024 * 1024),
        };
        if !ok {
            return Some(format!("{host}: {name} = {text}, expected {want}"));
        }
    }
    None
}

// ---- Docker, Patroni, disks ------------------------------------------------------------------

/// What `docker inspect` says of a member that matters here.
#[derive(Clone, Debug, PartialEq)]
struct Container {
    id: String,
    started_at: String,
    status: String,
    /// The CPU limit in vCPUs (NanoCpus, or CpuQuota / CpuPeriod, whichever is set).
    cpus: f64,
    memory_bytes: u64,
}

async fn inspect(name: &str) -> Container {
    let out = sh(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.Id}} {{.State.StartedAt}} {{.State.Status}} {{.HostConfig.NanoCpus}} \
             {{.HostConfig.CpuQuota}} {{.HostConfig.CpuPeriod}} {{.HostConfig.Memory}}",
            name,
        ],
    )
    .await;
    assert!(out.status.success(), "docker inspect {name}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 7, "docker inspect {name}: {text}");
    let num = |s: &str| s.parse::<i64>().unwrap_or(0);
    let (nano, quota, period) = (num(f[3]), num(f[4]), num(f[5]));
    let cpus = if nano > 0 {
        nano as f64 / 1e9
    } else if quota > 0 && period > 0 {
        quota as f64 / period as f64
    } else {
        0.0
    };
    Container {
        id: f[0].to_string(),
        started_at: f[1].to_string(),
        status: f[2].to_string(),
        cpus,
        memory_bytes: u64::try_from(num(f[6])).unwrap_or(0),
    }
}

async fn set_cpus(name: &str, cpus: &str) {
    let out = sh("docker", &["update", "--cpus", cpus, name]).await;
    assert!(
        out.status.success(),
        "docker update --cpus {cpus} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Patroni's dynamic `postgresql.parameters` (from the first API that answers).
async fn patroni_parameters() -> serde_json::Map<String, serde_json::Value> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for api in PATRONI_APIS {
        let Ok(r) = http.get(format!("{api}/config")).send().await else {
            continue;
        };
        if let Ok(v) = r.json::<serde_json::Value>().await {
            return v["postgresql"]["parameters"]
                .as_object()
                .cloned()
                .unwrap_or_default();
        }
    }
    panic!("no Patroni API answered GET /config");
}

/// Puts the size-derived parameters back as they were in `saved` (removes those it did not have).
async fn restore_parameters(saved: &serde_json::Map<String, serde_json::Value>) {
    let mut parameters = serde_json::Map::new();
    for (name, _) in PARAMETERS {
        let value = saved.get(name).cloned().unwrap_or(serde_json::Value::Null);
        parameters.insert(name.to_string(), value);
    }
    let body = serde_json::json!({ "postgresql": { "parameters": parameters } });
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for api in PATRONI_APIS {
        if let Ok(r) = http.patch(format!("{api}/config")).json(&body).send().await {
            if r.status().is_success() {
                return;
            }
        }
    }
    eprintln!("e2e-scaling: could not restore Patroni's parameters: no API accepted the PATCH");
}

/// Each lab member's PostgreSQL host (from `/cluster`), by name.
async fn member_hosts(urls: &[String]) -> BTreeMap<String, String> {
    let view = patroni(urls.to_vec())
        .cluster()
        .await
        .expect("the lab's /cluster");
    view.members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.host.clone()?)))
        .collect()
}

/// `df` of a mount, in bytes.
#[derive(Clone, Copy, Debug)]
struct Df {
    size: u64,
    used: u64,
    avail: u64,
}

async fn df(mount: &Path) -> Df {
    let m = mount.to_str().unwrap();
    let out = sh("df", &["-B1", "--output=size,used,avail", m]).await;
    assert!(out.status.success(), "df {m}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(f.len(), 3, "df {m}: {text}");
    Df {
        size: f[0],
        used: f[1],
        avail: f[2],
    }
}

const DISKS: &str = "/var/lib/steward-lab/disks";
const FILL_FILE: &str = "steward-e2e-fill";

fn mount_of(member: &str) -> PathBuf {
    Path::new(DISKS).join(member)
}

/// Grows the lab members' disk images to the largest of them (`LAB_DISK_SIZE=<bytes> lab.sh
/// up` grows online; it never shrinks). A role whose members differ in size is "mixed" and the
/// scaler resizes nothing until a plan evens it out (scaler/src/view.rs `role_size`), and a disk
/// test, a replacement or an earlier run can leave the lab's disks uneven.
async fn equalize_disks() {
    let sizes: Vec<u64> = LAB_MEMBERS
        .iter()
        .map(|m| {
            let image = Path::new(DISKS).join(format!("{m}.img"));
            std::fs::metadata(&image)
                .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
                .len()
        })
        .collect();
    let largest = *sizes.iter().max().unwrap();
    if sizes.iter().all(|s| *s == largest) {
        return;
    }
    eprintln!("e2e-scaling: the lab's disk images differ ({sizes:?}): growing them to {largest}");
    let out = tokio::process::Command::new(repo().join("scripts/lab.sh"))
        .arg("up")
        .env("LAB_DISK_SIZE", largest.to_string())
        .output()
        .await
        .expect("scripts/lab.sh runs");
    assert!(
        out.status.success(),
        "LAB_DISK_SIZE={largest} scripts/lab.sh up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `scenario` under `with_lab`, then `cleanup`, whether it passed or panicked.
async fn with_lab_and_cleanup<F, Fut, C, CFut>(urls: Vec<String>, scenario: F, cleanup: C)
where
    F: FnOnce(Vec<String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    C: FnOnce() -> CFut,
    CFut: std::future::Future<Output = ()>,
{
    equalize_disks().await;
    let outcome = tokio::spawn(with_lab(urls, scenario)).await;
    cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---- the tests -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_pressure_grows_the_members_live_and_their_settings_follow() {
    let Some(urls) = lab() else {
        return;
    };
    let saved = patroni_parameters().await;
    let cleanup = || async move {
        // Never panics: a panic here would hide the scenario's own.
        for m in LAB_MEMBERS {
            let out = sh("docker", &["update", "--cpus", LAB_CPUS, m]).await;
            if !out.status.success() {
                eprintln!("e2e-scaling: could not give {m} its {LAB_CPUS} vCPU back: {out:?}");
            }
        }
        restore_parameters(&saved).await;
    };
    with_lab_and_cleanup(urls, cpu_scenario, cleanup).await;
}

async fn cpu_scenario(urls: Vec<String>) {
    let hosts = member_hosts(&urls).await;
    for m in LAB_MEMBERS {
        set_cpus(m, &START_CPUS.to_string()).await;
    }
    let before: BTreeMap<&str, Container> = {
        let mut b = BTreeMap::new();
        for m in LAB_MEMBERS {
            b.insert(m, inspect(m).await);
        }
        b
    };
    for (m, c) in &before {
        assert!(
            (c.cpus - START_CPUS).abs() < 1e-3,
            "{m} is not at {START_CPUS} vCPU: {c:?}"
        );
    }
    let memory_bytes = before["lab-pg-1"].memory_bytes;

    let writer = Writer::start().await;
    let (mut steward, state_dir) = start_steward("scaling-cpu.toml").await;

    // Two sessions through the replicas' port: leastconn gives one to each replica, each wants a
    // whole core and has one. The policy decides on the busiest member of the role.
    let loaded = Instant::now();
    let load = Load::start(2, REPLICAS);
    eprintln!("e2e-scaling: CPU load started on the replicas (2 sessions via 5433)");

    let mut grown_at: BTreeMap<&str, (Duration, f64)> = BTreeMap::new();
    let mut expected: Option<BTreeMap<String, ParamValue>> = None;
    let deadline = loaded + SCALE_TIMEOUT;
    let mut last_mismatch = String::new();
    let settings_at = loop {
        steward.assert_alive();
        for m in LAB_MEMBERS {
            if grown_at.contains_key(m) {
                continue;
            }
            let c = inspect(m).await;
            if c.cpus > START_CPUS + 1e-3 {
                eprintln!(
                    "e2e-scaling: {m} at {} vCPU {:.1} s after the load started",
                    c.cpus,
                    loaded.elapsed().as_secs_f64()
                );
                grown_at.insert(m, (loaded.elapsed(), c.cpus));
            }
        }
        // The settings that follow the new size, once the role has one.
        if expected.is_none() && grown_at.len() == LAB_MEMBERS.len() {
            let sizes: BTreeSet<String> = grown_at.values().map(|(_, c)| c.to_string()).collect();
            assert_eq!(
                sizes.len(),
                1,
                "the members grew to different sizes: {grown_at:?}"
            );
            let to = grown_at.values().next().unwrap().1;
            let size = |cpus| Size {
                cpus,
                memory_bytes,
                disk_bytes: 0,
            };
            let diff = SettingsConfig::default().diff(&size(START_CPUS), &size(to));
            assert!(
                diff.restart.is_empty(),
                "a CPU grow {START_CPUS} -> {to} changes restart-only settings {:?}: this test \
                 does not wait for the rolling restart",
                diff.restart
            );
            assert!(
                !diff.reload.is_empty(),
                "no setting follows {START_CPUS} -> {to} vCPU: nothing to check"
            );
            eprintln!(
                "e2e-scaling: settings expected after the grow: {:?}",
                diff.reload.0
            );
            expected = Some(diff.reload.0.clone());
        }
        if let Some(want) = &expected {
            let mut mismatch = None;
            for m in LAB_MEMBERS {
                mismatch = settings_mismatch(&hosts[m], want).await;
                if mismatch.is_some() {
                    break;
                }
            }
            match mismatch {
                None => break loaded.elapsed(),
                Some(why) => last_mismatch = why,
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every member grew with its settings within {SCALE_TIMEOUT:?}: grown {grown_at:?}, \
             settings: {last_mismatch}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let selects = load.stop().await;
    eprintln!(
        "e2e-scaling: every member grown and its settings applied {:.1} s after the load \
         started ({selects} selects ran)",
        settings_at.as_secs_f64()
    );

    // Live: the same containers, never restarted, still running.
    for (m, was) in &before {
        let now = inspect(m).await;
        assert_eq!(
            (&now.id, &now.started_at, now.status.as_str()),
            (&was.id, &was.started_at, "running"),
            "{m} was restarted or replaced by the CPU grow"
        );
    }
    stop_when_idle(steward, &state_dir).await;
    let report = writer.stop().await;
    assert_no_acknowledged_write_lost(&report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_grows_online_before_it_is_full() {
    let Some(urls) = lab() else {
        return;
    };
    let cleanup = || async {
        for m in LAB_MEMBERS {
            let _ = std::fs::remove_file(mount_of(m).join(FILL_FILE));
        }
    };
    with_lab_and_cleanup(urls, disk_scenario, cleanup).await;
}

async fn disk_scenario(urls: Vec<String>) {
    let client = patroni(urls.clone());
    let view = client.cluster().await.expect("the lab's /cluster");
    let leader = view.leader().expect("a leader").name.clone();
    // A replica: the member whose disk fills keeps serving reads; the writer's primary is not
    // the one at risk if Steward fails to act.
    let victim = *LAB_MEMBERS
        .iter()
        .find(|m| **m != leader)
        .expect("a lab replica");
    let mount = mount_of(victim);
    let fill = mount.join(FILL_FILE);
    let _ = std::fs::remove_file(&fill);

    let writer = Writer::start().await;
    let (mut steward, state_dir) = start_steward("scaling-disk.toml").await;

    // The baseline is taken once Steward has settled: nothing open in its journal and every
    // volume's size unchanged over three of its ticks. A change it finishes from before the fill
    // (a grow a noisy start forecast, a rollout an earlier run left half-done on an uneven lab)
    // would otherwise pass for the fill's effect.
    let settle_deadline = Instant::now() + SCALE_TIMEOUT;
    let mut last: Option<Vec<u64>> = None;
    let mut steady = 0;
    while steady < 3 {
        steward.assert_alive();
        let mut sizes = Vec::new();
        for m in LAB_MEMBERS {
            sizes.push(df(&mount_of(m)).await.size);
        }
        let idle = open_journal_records(&state_dir).is_empty();
        steady = if idle && last.as_ref() == Some(&sizes) {
            steady + 1
        } else {
            0
        };
        if last.as_ref().is_some_and(|l| *l != sizes) {
            eprintln!("e2e-scaling: volumes changed before the fill: {last:?} -> {sizes:?}");
        }
        last = Some(sizes);
        assert!(
            Instant::now() < settle_deadline,
            "steward did not settle (journal idle, volumes unchanged) within {SCALE_TIMEOUT:?}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let mut initial = BTreeMap::new();
    for m in LAB_MEMBERS {
        initial.insert(m, (df(&mount_of(m)).await, inspect(m).await));
    }
    let sizes: BTreeSet<u64> = initial.values().map(|(d, _)| d.size).collect();
    assert_eq!(
        sizes.len(),
        1,
        "the lab's volumes differ in size (the role would be 'mixed' and never resized): {initial:?}"
    );
    let start = initial[victim].0;

    // Steps of a fortieth of the volume (at least 16 MiB), up to 85 % of it at most: the policy
    // (high 60 %) must have grown it long before; past that the test stops filling and waits.
    let step_mib = (start.size >> 20).div_ceil(40).max(16);
    let limit = start.size / 100 * 85;
    let filling = Instant::now();
    let deadline = filling + SCALE_TIMEOUT;
    let mut written = 0_u64;
    let mut fullest = 0.0_f64;
    let grown = loop {
        steward.assert_alive();
        let d = df(&mount).await;
        fullest = fullest.max(d.used as f64 / d.size as f64);
        assert!(
            d.avail > step_mib << 20,
            "{victim}'s volume is (nearly) full: {d:?}\n{}",
            steward.output()
        );
        if d.size > start.size {
            assert!(
                written > 0,
                "{victim}'s volume grew before anything was written: not the fill's effect \
                 ({start:?} -> {d:?})\n{}\n--- decision log ---\n{}",
                steward.output(),
                std::fs::read_to_string(state_dir.join("actions.jsonl")).unwrap_or_default()
            );
            break d;
        }
        if d.used + (step_mib << 20) < limit {
            let of = format!("of={}", fill.display());
            let out = sh(
                "dd",
                &[
                    "if=/dev/zero",
                    &of,
                    "bs=1M",
                    &format!("count={step_mib}"),
                    "oflag=append",
                    "conv=notrunc,fsync",
                    "status=none",
                ],
            )
            .await;
            assert!(
                out.status.success(),
                "dd into {victim}'s volume failed (full?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            written += step_mib;
        }
        assert!(
            Instant::now() < deadline,
            "{victim}'s volume did not grow within {SCALE_TIMEOUT:?} ({written} MiB written, \
             now {d:?})\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "e2e-scaling: {victim}'s volume grew {} -> {} MiB {:.1} s after the fill started \
         ({written} MiB written, at most {:.0} % full)",
        start.size >> 20,
        grown.size >> 20,
        filling.elapsed().as_secs_f64(),
        fullest * 100.0
    );
    assert!(
        fullest < 0.95,
        "the volume came close to full: {fullest:.2}"
    );

    // The role shares one size: every member's volume grows, each online.
    loop {
        let mut small = Vec::new();
        for m in LAB_MEMBERS {
            let d = df(&mount_of(m)).await;
            if d.size <= start.size {
                small.push((m, d));
            }
        }
        if small.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "volumes not grown within {SCALE_TIMEOUT:?}: {small:?}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "e2e-scaling: every member's volume grown {:.1} s after the fill started",
        filling.elapsed().as_secs_f64()
    );
    // The writer may not have created it yet when the growth is seen.
    match std::fs::remove_file(&fill) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("remove the fill file {}: {e}", fill.display()),
    }

    for (m, (_, was)) in &initial {
        let now = inspect(m).await;
        assert_eq!(
            (&now.id, &now.started_at, now.status.as_str()),
            (&was.id, &was.started_at, "running"),
            "{m} was restarted or replaced by the disk grow"
        );
    }
    let view = client.cluster().await.expect("/cluster after the grow");
    for m in LAB_MEMBERS {
        let state = view.member(m).map(|x| x.state.as_str());
        assert!(
            matches!(state, Some("running" | "streaming")),
            "{m} is not running after the disk grow: {state:?}"
        );
    }
    stop_when_idle(steward, &state_dir).await;
    let report = writer.stop().await;
    assert_no_acknowledged_write_lost(&report).await;
}

/// One server of an HAProxy backend, as `show servers state <backend>` lists it.
#[derive(Clone, Debug, PartialEq)]
struct Server {
    name: String,
    address: String,
    /// 2 is UP (srv_op_state).
    op_state: u32,
    /// 0 is ready: no maintenance, no drain (srv_admin_state).
    admin_state: u32,
}

impl Server {
    fn up_and_ready(&self) -> bool {
        self.op_state == 2 && self.admin_state == 0
    }
}

/// The servers of `backend` on the balancer whose Runtime API is `api` (`127.0.0.21:9999`).
async fn backend_servers(api: &str, backend: &str) -> Vec<Server> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(api).await?;
        s.write_all(format!("show servers state {backend}\n").as_bytes())
            .await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), talk)
        .await
        .unwrap_or_else(|_| panic!("{api}: the Runtime API did not answer"))
        .unwrap_or_else(|e| panic!("{api}: {e}"));
    // "1" (the format version), "# be_id be_name srv_id srv_name srv_addr srv_op_state
    // srv_admin_state ...", then one line per server.
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 6 && f[1] == backend)
        .map(|f| Server {
            name: f[3].to_string(),
            address: f[4].to_string(),
            op_state: f[5].parse().unwrap_or(u32::MAX),
            admin_state: f[6].parse().unwrap_or(u32::MAX),
        })
        .collect()
}

const RUNTIME_APIS: [&str; 2] = ["127.0.0.21:9999", "127.0.0.22:9999"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_load_adds_a_routed_replica_and_its_end_removes_it_never_below_three() {
    let Some(urls) = lab() else {
        return;
    };
    with_lab_and_cleanup(urls, replicas_scenario, || async {}).await;
}

async fn replicas_scenario(urls: Vec<String>) {
    let client = patroni(urls.clone());
    let writer = Writer::start().await;
    let (mut steward, state_dir) = start_steward("scaling-replicas.toml").await;

    // Six CPU-heavy sessions through the replicas' port: three per replica (leastconn).
    let loaded = Instant::now();
    let load = Load::start(6, REPLICAS);
    eprintln!("e2e-scaling: read load started (6 sessions via 5433)");

    // Watches /cluster: the member count never drops below 3 and the lab's members stay.
    let mut fewest = usize::MAX;
    // The whole story, for a failure: what Steward said and decided.
    let story = |steward: &Steward| {
        let decisions =
            std::fs::read_to_string(state_dir.join("actions.jsonl")).unwrap_or_default();
        format!("{}\n--- decision log ---\n{decisions}", steward.output())
    };
    let watch =
        |view: &steward_adapters::patroni::ClusterView, fewest: &mut usize, steward: &Steward| {
            let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
            *fewest = (*fewest).min(names.len());
            assert!(
                names.len() >= 3 && LAB_MEMBERS.iter().all(|m| names.contains(m)),
                "below the HA minimum or a lab member gone: {names:?}\n{}",
                story(steward)
            );
        };

    // Scale-out: a new member streams and both balancers route reads to it.
    let deadline = loaded + SCALE_TIMEOUT;
    let (added, address) = loop {
        steward.assert_alive();
        if let Ok(view) = client.cluster().await {
            watch(&view, &mut fewest, &steward);
            let new = view
                .members
                .iter()
                .find(|m| !LAB_MEMBERS.contains(&m.name.as_str()) && m.state == "streaming");
            if let Some(m) = new {
                let address = m.host.clone().expect("the new member's host");
                let mut routed = true;
                for api in RUNTIME_APIS {
                    let servers = backend_servers(api, "replicas").await;
                    routed &= servers
                        .iter()
                        .any(|s| s.address == address && s.up_and_ready());
                }
                if routed {
                    break (m.name.clone(), address);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no replica added, streaming and routed within {SCALE_TIMEOUT:?}\n{}",
            story(&steward)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "e2e-scaling: {added} ({address}) streaming and UP in both balancers' replicas backend \
         {:.1} s after the read load started",
        loaded.elapsed().as_secs_f64()
    );
    // Reads really reach it: a session through 5433 lands on it (leastconn: the new server has
    // the fewest connections while the load runs on the others).
    let mut reached = false;
    for _ in 0..10 {
        if let Ok(c) = connect(REPLICAS.0, REPLICAS.1).await {
            if let Ok(row) = c.query_one("select inet_server_addr()::text", &[]).await {
                let server: String = row.get(0);
                reached |= server.starts_with(&format!("{address}/")) || server == address;
            }
        }
        if reached {
            break;
        }
    }
    assert!(reached, "no read through 127.0.0.21:5433 reached {added}");

    let selects = load.stop().await;
    let unloaded = Instant::now();
    eprintln!("e2e-scaling: read load stopped ({selects} selects ran)");

    // Scale-in: the added member goes (never a lab member, never below 3) and leaves the
    // balancers.
    let deadline = unloaded + SCALE_TIMEOUT;
    loop {
        steward.assert_alive();
        if let Ok(view) = client.cluster().await {
            watch(&view, &mut fewest, &steward);
            let gone = view.member(&added).is_none();
            let mut listed = false;
            for api in RUNTIME_APIS {
                listed |= backend_servers(api, "replicas")
                    .await
                    .iter()
                    .chain(backend_servers(api, "primary").await.iter())
                    .any(|s| s.address == address);
            }
            let container = sh(
                "docker",
                &["-H", "unix:///run/steward-docker2.sock", "inspect", &added],
            )
            .await
            .status
            .success()
                || sh("docker", &["inspect", &added]).await.status.success();
            // delete_data_on_scale_in (scaling-replicas.toml): its volume goes with it.
            let volume = Path::new(DISKS).join(format!("{added}.img")).exists();
            if gone && !listed && !container && !volume {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{added} not removed (from Patroni, both balancers, the platform and its volume) \
             within {SCALE_TIMEOUT:?} of the load's end\n{}",
            story(&steward)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "e2e-scaling: {added} removed {:.1} s after the read load stopped; fewest members seen: \
         {fewest}",
        unloaded.elapsed().as_secs_f64()
    );
    assert!(fewest >= 3, "fewer than 3 members seen: {fewest}");

    stop_when_idle(steward, &state_dir).await;
    let report = writer.stop().await;
    assert_no_acknowledged_write_lost(&report).await;
}

/// What the rollout test gives the members back: the lab's memory (scripts/lab.sh MEMBER_MEMORY).
const LAB_MEMORY: &str = "1073741824";
/// tests/data/e2e/scaling-oom.toml's maximum: one 256 MiB step above the lab's 1 GiB.
const GROWN_MEMORY: u64 = 1280 * 1024 * 1024;
/// From the retune to every member restarted and the primary switched over: the cache window
/// (20 s), a PATCH, three PostgreSQL restarts and a switchover, each waited for in Patroni's 5 s
/// loop, on a loaded 2-core box.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);

/// Promise 5 through a rolling restart that switches the primary: a short buffer cache moves
/// shared_buffers to its share of memory (policies/src/cache.rs), which needs a restart, so every
/// member is restarted and the primary handed over before its own restart (scaler/src/plan.rs),
/// while the writer commits through HAProxy. Every member ends with the new shared_buffers in
/// effect, restarted (a new postmaster start time) in the same container at the same memory, the
/// leader moved, and no acknowledged row lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_a_switchover_loses_no_acknowledged_write() {
    let Some(urls) = lab() else {
        return;
    };
    let saved = patroni_parameters().await;
    with_lab_and_cleanup(urls, rollout_scenario, || memory_and_parameters_back(saved)).await;
}

/// The clean-up of the memory tests: every lab member back at its 1 GiB, Patroni's dynamic
/// parameters as they were, and the members that need it restarted. Never panics: a panic here
/// would hide the scenario's own.
async fn memory_and_parameters_back(saved: serde_json::Map<String, serde_json::Value>) {
    for m in LAB_MEMBERS {
        let out = sh(
            "docker",
            &[
                "update",
                "--memory",
                LAB_MEMORY,
                "--memory-swap",
                LAB_MEMORY,
                m,
            ],
        )
        .await;
        if !out.status.success() {
            eprintln!("e2e-scaling: could not give {m} its 1 GiB back: {out:?}");
        }
    }
    restore_parameters(&saved).await;
    restart_pending_members().await;
}

async fn rollout_scenario(urls: Vec<String>) {
    let client = patroni(urls.clone());
    let hosts = member_hosts(&urls).await;
    let mut before: BTreeMap<&str, (Container, String)> = BTreeMap::new();
    for m in LAB_MEMBERS {
        let c = inspect(m).await;
        before.insert(m, (c, postmaster_start(&hosts[m]).await));
    }
    let (old_leader, _) = crate::e2e::leader_and_streaming(&client)
        .await
        .expect("the lab has a leader");
    let from = before[LAB_MEMBERS[0]].0.clone();
    let size = Size {
        cpus: from.cpus,
        memory_bytes: from.memory_bytes,
        disk_bytes: 0,
    };
    let retune = SettingsConfig::default().cache_retune(&size);
    let expected = retune.restart.0.clone();
    let Some(ParamValue::Megabytes(share_mb)) = expected.get("shared_buffers").copied() else {
        panic!("a retune sets shared_buffers: {expected:?}");
    };
    for m in LAB_MEMBERS {
        let running = shared_buffers(&hosts[m]).await;
        assert_ne!(
            running,
            format!("{share_mb}MB"),
            "{m} already runs shared_buffers at its share: nothing to retune"
        );
    }
    eprintln!("e2e-scaling: settings expected after the retune: {expected:?}");

    // Every member answers a query now and then, so each has a hit ratio (an idle one has none,
    // and the policy holds on a missing figure).
    let stop_reads = Arc::new(AtomicBool::new(false));
    let reads = {
        let (stop, hosts) = (Arc::clone(&stop_reads), hosts.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for host in hosts.values() {
                    if let Ok(c) = connect(host, 5432).await {
                        let _ = c.query("select count(*) from pg_class", &[]).await;
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let writer = Writer::start().await;
    let (mut steward, state_dir) = start_steward("scaling-cache.toml").await;
    let started = Instant::now();
    let deadline = started + ROLLOUT_TIMEOUT;
    let mut last = String::new();
    let done_at = loop {
        steward.assert_alive();
        let mut waiting = Vec::new();
        for m in LAB_MEMBERS {
            if postmaster_start(&hosts[m]).await == before[m].1 {
                waiting.push(format!("{m} not restarted yet"));
            } else if let Some(why) = settings_mismatch(&hosts[m], &expected).await {
                waiting.push(why);
            }
        }
        let leader = crate::e2e::leader_and_streaming(&client).await;
        match &leader {
            Some((l, streaming)) if *l != old_leader && streaming.len() == 2 => {}
            other => waiting.push(format!("leader and streaming: {other:?}")),
        }
        if waiting.is_empty() {
            break started.elapsed();
        }
        last = waiting.join("; ");
        assert!(
            Instant::now() < deadline,
            "the rolling restart did not finish within {ROLLOUT_TIMEOUT:?}: {last}\n{}",
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "e2e-scaling: every member restarted with shared_buffers {share_mb}MB and the primary \
         moved {:.1} s after steward started ({last})",
        done_at.as_secs_f64()
    );
    // The same containers at the same size: the restarts were PostgreSQL's (through Patroni),
    // not the platform's, and no memory moved.
    for (m, (was, _)) in &before {
        let now = inspect(m).await;
        assert_eq!(
            (
                &now.id,
                &now.started_at,
                now.status.as_str(),
                now.memory_bytes
            ),
            (&was.id, &was.started_at, "running", was.memory_bytes),
            "{m}'s container was restarted, replaced or resized by the retune"
        );
    }
    let lines = steward.actions();
    let steps: Vec<String> = lines
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| l.to_string())
        .collect();
    assert!(
        steps.iter().any(|s| s.contains("switchover")),
        "no switchover among Steward's commands: {steps:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.to_string().contains("the buffer cache is short")),
        "no line says why: {lines:#?}"
    );
    stop_when_idle(steward, &state_dir).await;
    stop_reads.store(true, Ordering::Relaxed);
    let _ = reads.await;
    let report = writer.stop().await;
    assert_no_acknowledged_write_lost(&report).await;
}

/// `pg_postmaster_start_time()` of the member at `host`: it changes when PostgreSQL restarts.
async fn postmaster_start(host: &str) -> String {
    let client = connect_patiently(host, 5432).await;
    let row = client
        .query_one("select pg_postmaster_start_time()::text", &[])
        .await
        .unwrap_or_else(|e| panic!("{host}: pg_postmaster_start_time(): {e}"));
    row.get(0)
}

/// Restarts every lab member that Patroni says has a restart pending (`POST /restart` with
/// `restart_pending`), so settings put back by [`restore_parameters`] are in effect for the
/// next test. Patroni notices a changed setting in its next loop (5 s on the lab), so this first
/// waits two of them, then restarts and looks again for up to a minute. Never panics (a cleanup).
async fn restart_pending_members() {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = serde_json::json!({ "restart_pending": true });
    while Instant::now() < deadline {
        let mut pending = Vec::new();
        for api in PATRONI_APIS {
            let Ok(r) = http.get(format!("{api}/cluster")).send().await else {
                continue;
            };
            let Ok(view) = r.json::<serde_json::Value>().await else {
                continue;
            };
            for m in view["members"].as_array().into_iter().flatten() {
                if m["pending_restart"] == true {
                    pending.extend(m["api_url"].as_str().map(str::to_string));
                }
            }
            break;
        }
        if pending.is_empty() {
            return;
        }
        for url in pending {
            let restart = url.replace("/patroni", "/restart");
            if let Err(e) = http.post(&restart).json(&body).send().await {
                eprintln!("e2e-scaling: POST {restart}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    eprintln!("e2e-scaling: lab members still have a restart pending a minute after the cleanup");
}

/// The memory grow after an OOM kill (issue 17, part 5): a replica's backend sorts far more than
/// its 1 GiB in memory (`work_mem` raised for the session) and is OOM-killed; Steward grows every
/// member's memory live (1 GiB -> 1.25 GiB), and hands none of it to the buffer cache: no
/// PostgreSQL restart (the same postmaster start time), the same shared_buffers, no switchover,
/// the same containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_grows_memory_live_without_a_restart() {
    let Some(urls) = lab() else {
        return;
    };
    let saved = patroni_parameters().await;
    with_lab_and_cleanup(urls, oom_scenario, || memory_and_parameters_back(saved)).await;
}

/// A sort of ~30 million 32-byte strings held in memory (`work_mem` 3 GB, so neither the
/// series nor the sort spills): well over 2 GiB, far over a 1 GiB member.
const OOM_QUERY: &str =
    "select count(*) from (select md5(g::text) from generate_series(1, 30000000) g order by 1) s";

async fn oom_scenario(urls: Vec<String>) {
    let client = patroni(urls.clone());
    let hosts = member_hosts(&urls).await;
    let mut before = BTreeMap::new();
    for m in LAB_MEMBERS {
        let c = inspect(m).await;
        assert!(
            c.memory_bytes < GROWN_MEMORY,
            "{m} already has {} bytes",
            c.memory_bytes
        );
        let start = postmaster_start(&hosts[m]).await;
        let buffers = shared_buffers(&hosts[m]).await;
        before.insert(m, (c, start, buffers));
    }
    let (leader, streaming) = crate::e2e::leader_and_streaming(&client)
        .await
        .expect("the lab has a leader");
    let victim = streaming.first().expect("a streaming replica").clone();
    let (mut steward, state_dir) = start_steward("scaling-oom.toml").await;
    // Steward's first observation sets the OOM counters' baseline: a kill before it would be
    // history, not news. Two ticks are 4 s; give it a few more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    steward.assert_alive();
    let started = Instant::now();
    let session = connect_patiently(&hosts[victim.as_str()], 5432).await;
    session
        .batch_execute("set work_mem = '3GB'; set statement_timeout = '5min'")
        .await
        .expect("session settings");
    match session.query_one(OOM_QUERY, &[]).await {
        Err(e) => eprintln!("e2e-scaling: the sort on {victim} failed as it should: {e}"),
        Ok(_) => panic!("the sort fit in {victim}'s memory: no OOM kill to react to"),
    }
    let deadline = started + Duration::from_secs(180);
    let grown_at = loop {
        steward.assert_alive();
        let mut waiting = Vec::new();
        for m in LAB_MEMBERS {
            let c = inspect(m).await;
            if c.memory_bytes != GROWN_MEMORY {
                waiting.push(format!("{m} has {} bytes", c.memory_bytes));
            }
        }
        if waiting.is_empty() {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no OOM grow within 180 s: {}\n{}",
            waiting.join("; "),
            steward.output()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "e2e-scaling: every member grown to {GROWN_MEMORY} bytes {:.1} s after the OOM query began",
        grown_at.as_secs_f64()
    );
    // Let a restart that should not come have the time to come: two of Patroni's loops.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for (m, (was, start, buffers)) in &before {
        let now = inspect(m).await;
        assert_eq!(
            (&now.id, &now.started_at, now.status.as_str()),
            (&was.id, &was.started_at, "running"),
            "{m}'s container was restarted or replaced"
        );
        assert_eq!(
            &postmaster_start(&hosts[*m]).await,
            start,
            "{m}'s PostgreSQL was restarted for an OOM grow"
        );
        assert_eq!(
            &shared_buffers(&hosts[*m]).await,
            buffers,
            "{m}'s shared_buffers followed an OOM grow"
        );
    }
    let (leader_after, _) = crate::e2e::leader_and_streaming(&client)
        .await
        .expect("a leader after the grow");
    assert_eq!(leader_after, leader, "the primary moved for an OOM grow");
    let steps: Vec<String> = steward
        .actions()
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| l.to_string())
        .collect();
    assert!(
        steps
            .iter()
            .all(|s| !s.contains("restart") && !s.contains("switchover")),
        "Steward restarted or switched over for an OOM grow: {steps:#?}"
    );
    stop_when_idle(steward, &state_dir).await;
}

/// `shared_buffers` in effect on the member at `host`.
async fn shared_buffers(host: &str) -> String {
    let client = connect_patiently(host, 5432).await;
    let row = client
        .query_one("select current_setting('shared_buffers')", &[])
        .await
        .unwrap_or_else(|e| panic!("{host}: shared_buffers: {e}"));
    row.get(0)
}

// ---- replication slots -----------------------------------------------------------------------

/// Patroni's `member_slots_ttl` on the lab: 0 (tests/data patroni.yml drops the slots of absent
/// members at once); the slot test raises it to Patroni 4's default and puts this back.
const LAB_MEMBER_SLOTS_TTL: u64 = 0;

/// The replicas' WAL on the leader, as `SELECT slot_name, pg_wal_lsn_diff(...)`: (name, bytes).
async fn leader_slots() -> Vec<(String, i64)> {
    let db = connect_patiently(PRIMARY.0, PRIMARY.1).await;
    db.query(
        "select slot_name::text, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint \
         from pg_replication_slots order by 1",
        &[],
    )
    .await
    .expect("pg_replication_slots on the leader")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Issue 14: a replica killed and replaced leaves its replication slot on the leader, and
/// Patroni 4 keeps it for `member_slots_ttl` (30 min by default) while the leader keeps every WAL
/// segment since. Steward, with `[policy.slots] release_above`, says so, has Patroni drop it
/// (`member_slots_ttl` 0) once it keeps more than the limit, and puts the cluster's value back.
/// Checked on the leader itself (`pg_replication_slots`) and in Patroni's `/config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_a_replaced_replica_leaves_is_released_through_patroni() {
    let Some(urls) = lab() else {
        return;
    };
    let client = patroni(urls.clone());
    let cleanup = || async move {
        let back = serde_json::json!({ "member_slots_ttl": LAB_MEMBER_SLOTS_TTL });
        if let Err(e) = client.patch_config(&back).await {
            eprintln!("e2e-slots: could not put member_slots_ttl back: {e}");
        }
    };
    with_lab_and_cleanup(urls, slots_scenario, cleanup).await;
}

async fn slots_scenario(urls: Vec<String>) {
    let client = patroni(urls);
    client
        .patch_config(&serde_json::json!({ "member_slots_ttl": 1800 }))
        .await
        .expect("member_slots_ttl raised to Patroni 4's default");
    let (leader, streaming) = crate::e2e::leader_and_streaming(&client)
        .await
        .expect("the lab has a leader");
    let victim = streaming
        .iter()
        .find(|n| LAB_MEMBERS.contains(&n.as_str()) && **n != leader)
        .expect("a streaming lab replica")
        .clone();
    let slot = victim.replace('-', "_");
    let (mut steward, state_dir) = start_steward("slots.toml").await;
    let out = sh("docker", &["kill", &victim]).await;
    assert!(out.status.success(), "docker kill {victim}: {out:?}");
    let killed = Instant::now();
    eprintln!("e2e-slots: killed {victim}; its slot is {slot}");

    // Until Steward has released and put back: WAL moves on (a write and a segment switch every
    // 2 s, 16 MiB each), so the slot Patroni keeps for the gone member holds more and more.
    let db = connect_patiently(PRIMARY.0, PRIMARY.1).await;
    db.batch_execute("create table if not exists steward_e2e_slots (n bigint)")
        .await
        .expect("the WAL table");
    let slot_commands = |steward: &Steward| -> Vec<String> {
        steward
            .actions()
            .iter()
            .filter(|l| l["op"] == "slots" && l["kind"] == "command")
            .map(|l| l["what"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut most_kept = 0;
    let deadline = killed + Duration::from_secs(300);
    loop {
        steward.assert_alive();
        if slot_commands(&steward).len() >= 2 {
            break;
        }
        let kept = leader_slots()
            .await
            .into_iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, b)| b);
        most_kept = most_kept.max(kept.unwrap_or(0));
        assert!(
            Instant::now() < deadline,
            "no release and put-back within 5 min (slot {slot} keeps {kept:?} bytes); slot lines: {:?}\n{}",
            slot_commands(&steward),
            steward.output()
        );
        // Reconnect through HAProxy if the session died (it should not: the leader stays).
        let _ = db
            .batch_execute("insert into steward_e2e_slots values (1); select pg_switch_wal();")
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let _ = db
        .batch_execute("drop table if exists steward_e2e_slots")
        .await;
    eprintln!(
        "e2e-slots: released and put back {:.1} s after the kill; the slot kept up to {most_kept} bytes",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        most_kept > 24 << 20,
        "the test never made the slot keep more than release_above: {most_kept}"
    );
    let commands = slot_commands(&steward);
    assert_eq!(
        commands,
        ["member_slots_ttl 1800 -> 0", "member_slots_ttl 0 -> 1800"],
        "{}",
        steward.output()
    );
    let slots = leader_slots().await;
    assert!(
        slots.iter().all(|(s, _)| *s != slot),
        "{slot} is still on the leader: {slots:?}"
    );
    let ttl = client.config().await.expect("patroni's config")["member_slots_ttl"].clone();
    assert_eq!(ttl, serde_json::json!(1800), "the cluster's value is back");
    let notices: Vec<String> = steward
        .actions()
        .iter()
        .filter(|l| l["kind"] == "notice")
        .map(|l| l["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        notices.iter().any(|n| n.contains(&slot)),
        "no notice about {slot}: {notices:?}"
    );
    stop_when_idle(steward, &state_dir).await;
}

// ---- a primary repair ------------------------------------------------------------------------

/// Issue 14: no acknowledged write lost through a PRIMARY repair. The leader's volume is filled
/// past `disk_full_ratio` (0.55 in tests/data/e2e/primary-repair.toml, below the disk policy's
/// `high`): the leader is degraded but alive, so Steward has Patroni switch over to a healthy
/// replica, then replaces the old primary (now a replica with a full disk), while the
/// numbered-rows writer commits through HAProxy. A primary that is KILLED is Patroni's failover,
/// where asynchronous replication may lose the last commits by design; a repair Steward leads
/// must not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_repair_loses_no_acknowledged_write() {
    let Some(urls) = lab() else {
        return;
    };
    let cleanup = || async {
        for m in LAB_MEMBERS {
            let _ = std::fs::remove_file(mount_of(m).join(FILL_FILE));
        }
    };
    with_lab_and_cleanup(urls, primary_repair_scenario, cleanup).await;
}

async fn primary_repair_scenario(urls: Vec<String>) {
    let client = patroni(urls);
    let (leader, _) = crate::e2e::leader_and_streaming(&client)
        .await
        .expect("the lab has a leader");
    let writer = Writer::start().await;
    let (mut steward, state_dir) = start_steward("primary-repair.toml").await;

    // Up to 65 % of the leader's volume: past disk_full_ratio, below the disk policy's high.
    let mount = mount_of(&leader);
    let d = df(&mount).await;
    let fill_mib = ((d.size as f64 * 0.65) as u64).saturating_sub(d.used) >> 20;
    assert!(
        fill_mib > 0,
        "{leader}'s volume is already past 65 %: {d:?}"
    );
    let of = format!("of={}", mount.join(FILL_FILE).display());
    let count = format!("count={fill_mib}");
    let out = sh("dd", &["if=/dev/zero", &of, "bs=1M", &count, "conv=fsync"]).await;
    assert!(out.status.success(), "filling {leader}'s volume: {out:?}");
    let filled = Instant::now();
    eprintln!(
        "e2e-scaling: {leader}'s volume filled to {:.0} % (primary)",
        df(&mount).await.used as f64 * 100.0 / d.size as f64
    );

    // A new leader, the old one gone from Patroni's /cluster (replaced), two streaming.
    let deadline = filled + Duration::from_secs(240);
    let (switched, replaced) = {
        let mut switched = None;
        loop {
            steward.assert_alive();
            let view = client.cluster().await.ok();
            let names: Vec<String> = view
                .iter()
                .flat_map(|v| v.members.iter().map(|m| m.name.clone()))
                .collect();
            let now = crate::e2e::leader_and_streaming(&client).await;
            if let Some((l, _)) = &now {
                if *l != leader && switched.is_none() {
                    switched = Some(filled.elapsed());
                }
            }
            let done = matches!(&now, Some((l, s)) if *l != leader && s.len() == 2)
                && !names.contains(&leader)
                && names.len() == 3;
            if done {
                break (switched.unwrap_or_default(), filled.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "the primary was not repaired within 240 s: leader and streaming: {now:?}; \
                 members: {names:?}\n{}",
                steward.output()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    eprintln!(
        "e2e-scaling: primary {leader} switched over {:.1} s and replaced {:.1} s after its disk \
         filled",
        switched.as_secs_f64(),
        replaced.as_secs_f64()
    );
    let steps: Vec<String> = steward
        .actions()
        .iter()
        .filter(|l| l["kind"] == "command")
        .map(|l| l["what"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with(&format!("switchover {leader}"))),
        "no switchover away from {leader}: {steps:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with(&format!("remove {leader}"))),
        "{leader} was not removed: {steps:#?}"
    );
    stop_when_idle(steward, &state_dir).await;
    let report = writer.stop().await;
    assert_no_acknowledged_write_lost(&report).await;
}
