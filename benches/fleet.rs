//! Fleet-scale tick: one tick of both loops for 10,000 clusters x 3 members on the simulated
//! platform, with the metrics fetched from a local HTTP server that answers Prometheus's
//! `/api/v1/query` with every series of the fleet (issue "Beyond one process", part 3).
//!
//! One tick, phase by phase, as the run loop does it for one cluster (`runtime/src/run/observer.rs`),
//! but for the whole fleet at once:
//! 1. `fetch`: one instant query per metric for the WHOLE fleet through the production
//!    [`PrometheusClient`] (30,000 series each; sequential, as the observer asks).
//!    By default ([`Fetch::Table`]) each series is handed over as the answer is decoded
//!    ([`PrometheusClient::instant_each`]) and filed in the fleet's [`FleetReadings`] (a row per
//!    member, built once; the key is borrowed from the answer): nothing is left to split;
//! 2. `split` (`FLEET_FETCH=client` or `lean`, the paths before the table): the fleet-wide
//!    readings cut into one `BTreeMap<Metric, MetricReading>` per cluster (the client keys
//!    series by the `member` label only; member names embed the cluster name, as the scaler
//!    names new members `<cluster>-db-N`, so a member-to-cluster index does the split and the
//!    served `cluster` label is not needed);
//! 3. `list`: each cluster's [`SimulatedPlatform::list`];
//! 4. `assemble`: [`assemble_with`] per cluster over its share of the table (or [`assemble`]
//!    over its maps), with a prebuilt Patroni `/cluster` and leader `/patroni` answer: Patroni
//!    is not part of this benchmark, so its answers are parsed once;
//! 5. `scaler` and `repairer`: the events the run loop's two loops hand each core per tick
//!    (`runtime/src/run.rs`): the scaler the observation and a tick, the repairer the
//!    platform's list and the observation (the repair loop sends no tick; until 2026-12-07
//!    the bench sent one, a third judgement per tick that production does not make). Every
//!    proposal is refused as a dry-run driver does, so no plan advances. The scaler is lent the
//!    snapshot ([`Scaler::observed`]), which then goes on to the repairer: one copy of the
//!    observation and list per cluster, not one per core.
//!
//! What is measured: this thread's CPU time per phase (`CLOCK_THREAD_CPUTIME_ID`). The HTTP
//! server is a process of its own (this binary again, `FLEET_SERVE`), as Prometheus is beside
//! Steward, so its work and the time spent waiting for it are not counted; the client's own
//! work (request, reading and parsing the JSON) is, under `fetch`. Wall time of `fetch` is
//! shown beside it. Peak RSS is `VmHWM` from `/proc/self/status` at the end: the pipeline and
//! the bench's fixtures (simulated platforms, Patroni's answers; shown apart), not the server
//! (until 2026-12-07 it was a thread here, and its answers counted: ~12 MB at 10,000). The
//! allocator is the `steward` binary's (mimalloc): it is part of what the pipeline costs.
//!
//! What it is not: a Criterion bench (one tick is 10^5 calls, and the figures wanted are CPU
//! per phase and peak memory, not a wall-clock distribution), nor a model of Patroni or of
//! actions being carried out.
//!
//! Run: `cargo bench -p steward --bench fleet` (env `FLEET_CLUSTERS`, `FLEET_TICKS`,
//! `FLEET_WARMUP` change the size, `FLEET_FETCH=client|lean` the fetch path). Under
//! `cargo test -p steward --benches` (no `--bench` argument) it runs a small fleet and checks
//! what the pipeline produced, and that every fetch path observes the same.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use steward_adapters::patroni::{ClusterView, MemberStatus};
use steward_adapters::platform::simulated::{SimClock, SimConfig, SimulatedPlatform};
use steward_adapters::prometheus::{
    judge, Metric, MetricReading, MetricsSource, PrometheusClient, PrometheusSettings,
};
use steward_coordinator::Coordinator;
use steward_model::observation::Observation;
use steward_model::ports::{CreateSpec, Platform};
use steward_model::{Role, Size, Timestamp};
use steward_repairer::{Event as RepairEvent, RepairConfig, Repairer};
use steward_runtime::observe::assemble::{assemble, assemble_with, Answers};
use steward_runtime::observe::fleet::FleetReadings;
use steward_scaler::{
    Command as ScalerCommand, Event as ScalerEvent, Scaler, ScalerConfig, Snapshot,
};

/// The allocator the `steward` binary runs with (`src/main.rs`): the bench measures its pipeline.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MEMBERS: usize = 3;
/// Seconds between ticks: the values served move with the evaluation time.
const TICK_SECS: i64 = 10;
const START: Timestamp = Timestamp::from_secs(1_800_000_000);
const SIZE: Size = Size {
    cpus: 2.0,
    memory_bytes: 4 << 30,
    disk_bytes: 20 << 30,
};

fn cluster_name(c: usize) -> String {
    format!("c{c:05}")
}

fn member_name(c: usize, m: usize) -> String {
    format!("c{c:05}-db-{}", m + 1)
}

// ---- the Prometheus stand-in --------------------------------------------------------------

/// What the server knows: the fleet's labels and which query is which metric.
struct Served {
    /// (cluster, member) per series, in fleet order.
    series: Vec<(String, String)>,
    /// PromQL text -> metric, from the same settings the client uses.
    queries: HashMap<String, Metric>,
}

/// A deterministic value for one series at `t` (seconds): a slow wave, offset per member, so
/// every tick differs and members differ, inside the policies' bands most of the time.
fn value(metric: Metric, i: usize, t: i64) -> f64 {
    let phase = (t as f64 / 600.0) + i as f64 * 0.37;
    let w = phase.sin();
    match metric {
        Metric::CpuUsed => SIZE.cpus * (0.45 + 0.1 * w),
        Metric::MemoryUsed => SIZE.memory_bytes as f64 * (0.5 + 0.05 * w),
        Metric::DiskUsed => SIZE.disk_bytes as f64 * 0.2 + (t - START.as_millis() / 1000) as f64,
        Metric::WalBytes => 256e6,
        Metric::Connections => (20.0 + 10.0 * w).round(),
        Metric::ReadRate => 100.0 + 50.0 * w,
        // The leader (member index 0) is never behind itself.
        Metric::LagBytes if i % MEMBERS == 0 => 0.0,
        Metric::LagBytes => (4096.0 * (1.0 + w)).round(),
        Metric::OomKills => 0.0,
        Metric::SlotWalBytes => 16e6,
        Metric::CacheHitRatio => 0.99 + 0.005 * w,
        Metric::SharedBuffers => SIZE.memory_bytes as f64 / 4.0,
    }
}

/// `GET /api/v1/query?query=..&time=..`: every series of the fleet, in Prometheus's JSON.
async fn query(
    State(served): State<Arc<Served>>,
    Query(params): Query<HashMap<String, String>>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let metric = params.get("query").and_then(|q| served.queries.get(q));
    let time = params.get("time").and_then(|t| t.parse::<f64>().ok());
    let (Some(&metric), Some(time)) = (metric, time) else {
        let body = r#"{"status":"error","errorType":"bad_data","error":"unknown query"}"#;
        return (StatusCode::BAD_REQUEST, json, body.into());
    };
    let t = time as i64;
    let mut body = String::with_capacity(served.series.len() * 96 + 64);
    body.push_str(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for (i, (cluster, member)) in served.series.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Writing into a String cannot fail. Slots are keyed by slot name (one per member).
        let _ = if metric.is_per_member() {
            write!(
                body,
                r#"{{"metric":{{"cluster":"{cluster}","member":"{member}"}},"value":[{t},"{}"]}}"#,
                value(metric, i, t)
            )
        } else {
            write!(
                body,
                r#"{{"metric":{{"cluster":"{cluster}","slot_name":"{}"}},"value":[{t},"{}"]}}"#,
                steward_policies::slots::slot_name(member),
                value(metric, i, t)
            )
        };
    }
    body.push_str("]}}");
    (StatusCode::OK, json, body)
}

/// What the server serves for a fleet of `clusters`: every member's series, and the queries of
/// the default settings (the client's own).
fn served(clusters: usize) -> Served {
    // The URL only passes validation; the queries do not depend on it.
    let settings = PrometheusSettings::with_url("http://127.0.0.1:9").expect("a valid url");
    Served {
        series: (0..clusters)
            .flat_map(|c| (0..MEMBERS).map(move |m| (cluster_name(c), member_name(c, m))))
            .collect(),
        queries: settings
            .queries
            .iter()
            .map(|(m, q)| (q.query.clone(), *m))
            .collect(),
    }
}

/// The environment variable that makes this binary the server (its value: the clusters).
const SERVE_ENV: &str = "FLEET_SERVE";

/// The server's process: Prometheus runs beside Steward, not in it, so neither its CPU nor its
/// memory is the pipeline's (`VmHWM` is this process's alone). Dies with its stdin.
struct Server {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Server {
    /// Starts this binary again as the server for `clusters` and waits for its address.
    fn start(clusters: usize) -> Server {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(
            std::env::current_exe().expect("the bench knows its own binary"),
        )
        .env(SERVE_ENV, clusters.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the server process starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("a piped stdout"))
            .read_line(&mut line)
            .expect("the server reports its address");
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the server's first line is its address: {line:?}"));
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server process's main: binds a loopback port, prints it, serves until stdin closes.
async fn serve(clusters: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port is free");
    let addr = listener
        .local_addr()
        .expect("a bound socket has an address");
    println!("{addr}");
    // The bench holds our stdin: at its end (or death) the read returns and so do we.
    std::thread::spawn(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        std::process::exit(0);
    });
    let app = Router::new()
        .route("/api/v1/query", get(query))
        .with_state(Arc::new(served(clusters)));
    axum::serve(listener, app).await.expect("the server runs");
}

// ---- the fleet ------------------------------------------------------------------------------

/// One cluster: its platform, Patroni's answers (fixed), and both cores.
struct Cluster {
    name: String,
    platform: SimulatedPlatform,
    patroni: ClusterView,
    /// The leader's `/patroni`, with its name, as the observer lends it to `assemble`.
    statuses: [(String, MemberStatus); 1],
    scaler: Scaler,
    repairer: Repairer,
    /// The cluster's coordinator, which the runtime owns beside the repairer.
    coordinator: Coordinator,
}

/// Builds the fleet, noting the RSS after each kind of part (platforms with Patroni's answers,
/// scalers, repairers) so the memory can be attributed.
async fn build_fleet(
    clusters: usize,
    clock: &SimClock,
) -> (Vec<Cluster>, Vec<(&'static str, u64)>) {
    let mut stages = vec![("start", status_kb("VmRSS"))];
    let mut parts = Vec::with_capacity(clusters);
    for c in 0..clusters {
        let name = cluster_name(c);
        let platform = SimulatedPlatform::new(SimConfig::new(&name, MEMBERS), clock.clone());
        let mut members = Vec::new();
        for m in 0..MEMBERS {
            let spec = CreateSpec {
                cluster: name.clone(),
                role: Role::Database,
                name: member_name(c, m),
                size: SIZE,
                operation_id: format!("bench-{c}-{m}"),
                replaces: None,
            };
            members.push(
                platform
                    .create(&spec)
                    .await
                    .expect("the simulated create works"),
            );
        }
        // Patroni's `/cluster` and the leader's `/patroni`, in the 4.1.5 shape (fixtures).
        let entries: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(m, p)| {
                let (role, state) = if m == 0 {
                    ("leader", "running")
                } else {
                    ("replica", "streaming")
                };
                format!(
                    r#"{{"api_url":"http://{a}:8008/patroni","host":"{a}","name":"{n}","port":5432,"role":"{role}","state":"{state}","timeline":1,"lag":0}}"#,
                    a = p.address,
                    n = p.name
                )
            })
            .collect();
        let cluster_json = format!(r#"{{"members":[{}],"scope":"{name}"}}"#, entries.join(","));
        let walsenders: Vec<String> = members[1..]
            .iter()
            .map(|p| {
                format!(
                    r#"{{"application_name":"{}","client_addr":"127.0.0.1","state":"streaming","sync_state":"async"}}"#,
                    p.name
                )
            })
            .collect();
        let status_json = format!(
            r#"{{"patroni":{{"name":"{}","scope":"{name}","version":"4.1.5"}},"replication":[{}],"role":"primary","server_version":150018,"state":"running","timeline":1,"xlog":{{"location":67108960}}}}"#,
            members[0].name,
            walsenders.join(",")
        );
        parts.push((
            name,
            platform,
            ClusterView::from_json(cluster_json.as_bytes()).expect("valid /cluster"),
            MemberStatus::from_json(status_json.as_bytes()).expect("valid /patroni"),
        ));
    }
    stages.push(("platforms + patroni answers", status_kb("VmRSS")));
    // One config shared by all, as `steward run`'s fleet does (its clusters share `Config::scaler`).
    let shared = Arc::new(ScalerConfig::default());
    let fleet = parts
        .into_iter()
        .map(|(name, platform, patroni, leader_status)| {
            let config = RepairConfig::default();
            let coordinator = Coordinator::new(config.guards.clone());
            Cluster {
                repairer: Repairer::new(name.clone(), config),
                coordinator,
                scaler: Scaler::new(Arc::clone(&shared)),
                name,
                platform,
                statuses: [(patroni.members[0].name.clone(), leader_status)],
                patroni,
            }
        })
        .collect();
    stages.push(("scalers, repairers", status_kb("VmRSS")));
    (fleet, stages)
}

// ---- measuring ------------------------------------------------------------------------------

/// This thread's time on CPU so far. `CLOCK_THREAD_CPUTIME_ID` brings the scheduler's count up
/// to date when read; `/proc/thread-self/schedstat` does not (it lags by up to a scheduler
/// tick, 4 ms here), too coarse for phases of a few milliseconds.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A `/proc/self/status` figure in kB (`VmHWM`, `VmRSS`).
fn status_kb(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
}

const PHASES: [&str; 8] = [
    "fetch (cpu)",
    "fetch (wall)",
    "split",
    "list",
    "assemble",
    "scaler",
    "repairer",
    "tick cpu",
];

/// One tick's figures, in the order of [`PHASES`].
type Figures = [Duration; 8];

/// What one tick produced, for the checks and the summary.
#[derive(Debug, Default)]
struct Produced {
    observations: usize,
    members: usize,
    /// Members whose CPU figure came from Prometheus this tick.
    cpu_figures: usize,
    proposals: usize,
    repair_commands: usize,
}

/// How the metrics are fetched and split per cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    /// The production [`PrometheusClient`] handing each series over as it decodes the answer
    /// ([`PrometheusClient::instant_each`]), filed straight into the fleet's table of readings
    /// ([`FleetReadings`]: a row per member and per slot, a cell per metric of its kind, built
    /// once), which [`assemble_with`] reads per cluster. No split: the series land in their
    /// cluster's rows.
    Table,
    /// The production [`PrometheusClient`] (one reading per metric keyed by member), then a
    /// split by a member-to-cluster index into a map per cluster and metric (before the table).
    Client,
    /// The same queries through plain reqwest and a lean serde type that borrows the labels
    /// from the body and files each series under its `cluster` label at once: what a
    /// fleet-aware client could do (see the report).
    Lean,
}

/// Clusters handled phase by phase before moving on: reading the thread's CPU clock per
/// cluster would cost more than some phases (a `/proc` read is microseconds), and a whole
/// fleet phase-major would hold every observation at once.
const CHUNK: usize = 500;

/// Runs one tick of both loops over the whole fleet at `now`.
async fn tick(
    s: &mut Setup,
    fetch: Fetch,
    now: Timestamp,
    mut keep: Option<&mut Vec<Observation>>,
) -> (Figures, Produced) {
    let mut fig = Figures::default();
    let mut out = Produced::default();
    let tick_start = thread_cpu();

    // 1. fetch: one query per metric for the fleet; 2. split per cluster.
    let wall = tokio::time::Instant::now();
    let per_cluster = match fetch {
        Fetch::Table => {
            s.table.clear();
            for metric in s.client.metrics() {
                let table = &mut s.table;
                table.answered(metric);
                s.client
                    .instant_each(metric, now, |key, reading| {
                        table.file(metric, key, reading);
                    })
                    .await
                    .unwrap_or_else(|e| panic!("the {} query failed: {e:#?}", metric.as_str()));
            }
            fig[1] = wall.elapsed();
            fig[0] = thread_cpu() - tick_start;
            // Nothing to split: every cluster reads its share of the table.
            Vec::new()
        }
        Fetch::Client => {
            let mut fleet_readings = Vec::new();
            for metric in s.client.metrics() {
                let reading = s
                    .client
                    .instant(metric, now)
                    .await
                    .unwrap_or_else(|e| panic!("the {} query failed: {e:#?}", metric.as_str()));
                fleet_readings.push(reading);
            }
            fig[1] = wall.elapsed();
            fig[0] = thread_cpu() - tick_start;
            split(fleet_readings, &s.index, s.fleet.len())
        }
        Fetch::Lean => {
            let per_cluster = lean_fetch(s, now).await;
            fig[1] = wall.elapsed();
            fig[0] = thread_cpu() - tick_start;
            per_cluster
        }
    };
    let mut at = thread_cpu();
    fig[2] = at - tick_start - fig[0];
    let mut lap = |fig: &mut Figures, i: usize| {
        let t = thread_cpu();
        fig[i] += t - at;
        at = t;
    };

    let mut per_cluster = per_cluster.into_iter();
    for (n, chunk) in s.fleet.chunks_mut(CHUNK).enumerate() {
        // 3. the platforms' lists.
        let mut listed = Vec::with_capacity(chunk.len());
        for cluster in chunk.iter() {
            listed.push(
                cluster
                    .platform
                    .list()
                    .await
                    .expect("the simulated list works"),
            );
        }
        lap(&mut fig, 3);

        // 4. assemble the observations.
        let mut observations = Vec::with_capacity(chunk.len());
        for (i, (cluster, listed)) in chunk.iter().zip(&listed).enumerate() {
            let answers = Answers {
                cluster: Some(&cluster.patroni),
                statuses: &cluster.statuses,
                metrics: match fetch {
                    Fetch::Table => BTreeMap::new(),
                    _ => per_cluster.next().expect("one metrics map per cluster"),
                },
                platform: Some(listed),
                notes: Vec::new(),
            };
            let mut observation = match fetch {
                Fetch::Table => {
                    let share = s.table.cluster(n * CHUNK + i);
                    assemble_with(&cluster.name, now, &answers, &share)
                }
                _ => assemble(&cluster.name, now, &answers),
            };
            // As the run loop's observer does: restart counters come from the platform.
            for m in &mut observation.members {
                if let Some(p) = listed.iter().find(|p| p.name == m.name) {
                    m.restart_count = Some(p.restart_count);
                }
            }
            out.observations += 1;
            out.members += observation.members.len();
            out.cpu_figures += observation
                .members
                .iter()
                .filter(|m| m.cpu_used.is_some())
                .count();
            if let Some(keep) = keep.as_deref_mut() {
                keep.push(observation.clone());
            }
            observations.push(observation);
        }
        lap(&mut fig, 4);

        // 5. the scalers: observation, then a tick; a proposal is refused (dry-run). The
        // snapshot is lent ([`Scaler::observed`]): the scaler copies it only to keep it, and
        // its parts go on to the repairer. (The run loop's two loops are tasks of their own,
        // each handed its own copy; a fleet's driver need not copy.)
        let mut snapshots = Vec::with_capacity(chunk.len());
        for ((cluster, listed), observation) in chunk.iter_mut().zip(listed).zip(observations) {
            let snapshot = Snapshot {
                observation,
                platform: listed,
                capabilities: cluster.platform.capabilities(),
            };
            let mut commands = cluster.scaler.observed(&snapshot, now);
            commands.extend(cluster.scaler.handle(ScalerEvent::Tick, now));
            for c in commands {
                if let ScalerCommand::Propose { plan } = c {
                    out.proposals += 1;
                    let refused = ScalerEvent::Refused {
                        op: plan.id,
                        reason: "dry-run".into(),
                    };
                    cluster.scaler.handle(refused, now);
                }
            }
            snapshots.push(snapshot);
        }
        lap(&mut fig, 5);

        // 6. the repairers: the platform's list, then the observation, as the repair loop.
        for (cluster, snapshot) in chunk.iter_mut().zip(snapshots) {
            let Snapshot {
                observation,
                platform: listed,
                ..
            } = snapshot;
            let (r, c) = (&mut cluster.repairer, &mut cluster.coordinator);
            let listed = RepairEvent::PlatformListed {
                at: now,
                members: listed,
            };
            out.repair_commands += r.handle(listed, now, c).len();
            out.repair_commands += r.handle(RepairEvent::Observed(observation), now, c).len();
        }
        lap(&mut fig, 6);
    }
    fig[7] = thread_cpu() - tick_start;
    (fig, out)
}

/// Cuts fleet-wide readings into one map per cluster, moving each series' key and reading.
fn split(
    fleet_readings: Vec<MetricReading>,
    index: &HashMap<String, usize>,
    clusters: usize,
) -> Vec<BTreeMap<Metric, MetricReading>> {
    let mut per_cluster: Vec<BTreeMap<Metric, MetricReading>> =
        (0..clusters).map(|_| BTreeMap::new()).collect();
    for reading in fleet_readings {
        let MetricReading {
            metric,
            label,
            values,
        } = reading;
        for (member, r) in values {
            let Some(&c) = index.get(&member) else {
                continue; // not a member of this fleet: nobody's figure
            };
            per_cluster[c]
                .entry(metric)
                .or_insert_with(|| MetricReading {
                    metric,
                    label: label.clone(),
                    values: BTreeMap::new(),
                })
                .values
                .insert(member, r);
        }
    }
    per_cluster
}

/// Prometheus's instant-query answer, borrowing from the body where it can.
#[derive(serde::Deserialize)]
struct LeanAnswer<'a> {
    #[serde(borrow)]
    data: LeanData<'a>,
}

#[derive(serde::Deserialize)]
struct LeanData<'a> {
    #[serde(rename = "resultType", borrow)]
    result_type: Cow<'a, str>,
    #[serde(borrow)]
    result: Vec<LeanSeries<'a>>,
}

#[derive(serde::Deserialize)]
struct LeanSeries<'a> {
    #[serde(borrow)]
    metric: LeanLabels<'a>,
    /// `[seconds, "value"]`: Prometheus sends the value as a string (NaN and ±Inf included).
    #[serde(borrow)]
    value: (f64, Cow<'a, str>),
}

/// Only the two labels a fleet needs; the others are skipped without being kept.
#[derive(serde::Deserialize)]
struct LeanLabels<'a> {
    #[serde(borrow, default)]
    cluster: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    member: Option<Cow<'a, str>>,
    /// The slots' query is keyed by slot.
    #[serde(borrow, default)]
    slot_name: Option<Cow<'a, str>>,
}

/// [`Fetch::Lean`]: the same queries, parsed and filed per cluster in one pass.
async fn lean_fetch(s: &Setup, now: Timestamp) -> Vec<BTreeMap<Metric, MetricReading>> {
    let mut per_cluster: Vec<BTreeMap<Metric, MetricReading>> =
        (0..s.fleet.len()).map(|_| BTreeMap::new()).collect();
    let time = now.as_millis().div_euclid(1000).to_string();
    for (&metric, q) in &s.settings.queries {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", s.settings.url.trim_end_matches('/')),
            [("query", q.query.as_str()), ("time", time.as_str())],
        )
        .expect("a valid query url");
        let body = s
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the query is answered")
            .bytes()
            .await
            .expect("the body is read");
        let answer: LeanAnswer<'_> =
            serde_json::from_slice(&body).expect("a Prometheus query answer");
        assert_eq!(answer.data.result_type, "vector");
        for series in answer.data.result {
            let key = if metric.is_per_member() {
                series.metric.member
            } else {
                series.metric.slot_name
            };
            let (Some(cluster), Some(member)) = (series.metric.cluster, key) else {
                continue; // not attributable to a member of a cluster
            };
            let Some(&c) = s.cluster_index.get(cluster.as_ref()) else {
                continue; // a cluster this controller does not look after
            };
            let value = series.value.1.parse::<f64>().unwrap_or(f64::NAN);
            let reading = judge(value, series.value.0, now, s.settings.max_age);
            per_cluster[c]
                .entry(metric)
                .or_insert_with(|| MetricReading {
                    metric,
                    label: q.label.clone(),
                    values: BTreeMap::new(),
                })
                .values
                .insert(member.into_owned(), reading);
        }
    }
    per_cluster
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    /// Kept for its lifetime: the server stops when it is dropped.
    _server: Server,
    fleet: Vec<Cluster>,
    client: PrometheusClient,
    /// Member (and slot) name -> cluster position, for [`split`] (empty unless asked for).
    index: HashMap<String, usize>,
    /// Cluster name -> position, for [`lean_fetch`] (empty unless asked for).
    cluster_index: HashMap<String, usize>,
    /// The fleet's readings, a row per member, for [`Fetch::Table`].
    table: FleetReadings,
    settings: PrometheusSettings,
    http: reqwest::Client,
    /// RSS (kB) after each setup stage.
    stages: Vec<(&'static str, u64)>,
}

/// Builds the fleet and what the fetch paths in `paths` need (each path's own index only when
/// it is asked for: they are the bench's, not the pipeline's, and would count in its peak).
async fn setup(clusters: usize, paths: &[Fetch]) -> Setup {
    let clock = SimClock::new(START);
    let (fleet, mut stages) = build_fleet(clusters, &clock).await;
    let cluster_index: HashMap<String, usize> = if paths.contains(&Fetch::Lean) {
        (0..clusters).map(|c| (cluster_name(c), c)).collect()
    } else {
        HashMap::new()
    };
    // Series come under a member's name, or for the slots' query under its slot's name.
    let members = |c: usize| (0..MEMBERS).map(move |m| member_name(c, m));
    let slots = move |c: usize| members(c).map(|m| steward_policies::slots::slot_name(&m));
    let index: HashMap<String, usize> = if paths.contains(&Fetch::Client) {
        (0..clusters)
            .flat_map(|c| members(c).chain(slots(c)).map(move |k| (k, c)))
            .collect()
    } else {
        HashMap::new()
    };
    // The server's queries come from the same default settings as the client's.
    let server = Server::start(clusters);
    let settings =
        PrometheusSettings::with_url(&format!("http://{}", server.addr)).expect("a valid url");
    let client = PrometheusClient::new(&settings).expect("the client builds");
    // Rows in fleet order: the order the answers list their series in.
    let table = FleetReadings::new(
        &client.metrics(),
        (0..clusters).map(|c| (members(c), slots(c))),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(settings.timeout)
        .build()
        .expect("the lean client builds");
    stages.push(("indexes", status_kb("VmRSS")));
    Setup {
        _server: server,
        fleet,
        client,
        index,
        cluster_index,
        table,
        settings,
        http,
        stages,
    }
}

/// `cargo bench`: the measurement.
async fn measure() {
    let clusters = env_usize("FLEET_CLUSTERS", 10_000);
    let ticks = env_usize("FLEET_TICKS", 20).max(1);
    let warmup = env_usize("FLEET_WARMUP", 3);
    let fetch = match std::env::var("FLEET_FETCH").as_deref() {
        Ok("lean") => Fetch::Lean,
        Ok("client") => Fetch::Client,
        _ => Fetch::Table,
    };
    let before = status_kb("VmRSS");
    let build = thread_cpu();
    let mut s = setup(clusters, &[fetch]).await;
    let build = thread_cpu() - build;
    println!(
        "fleet: {clusters} clusters x {MEMBERS} members = {} series per metric, {} metrics; \
         setup {:.0} ms CPU, RSS {} -> {} MB",
        clusters * MEMBERS,
        s.client.metrics().len(),
        build.as_secs_f64() * 1e3,
        before / 1024,
        status_kb("VmRSS") / 1024
    );
    let mut prev = 0;
    for (stage, kb) in &s.stages {
        if prev > 0 {
            println!(
                "  RSS after {stage:<28} {:>6} MB (+{} MB)",
                kb / 1024,
                (kb - prev) / 1024
            );
        }
        prev = *kb;
    }
    println!("fetch: {fetch:?}");
    let mut all: Vec<Figures> = Vec::new();
    let mut last = Produced::default();
    for t in 0..warmup + ticks {
        let now = Timestamp::from_millis(START.as_millis() + (t as i64 + 1) * TICK_SECS * 1000);
        let (fig, produced) = tick(&mut s, fetch, now, None).await;
        if t == 0 {
            println!(
                "  RSS after the first tick {:>6} MB (peak so far {} MB)",
                status_kb("VmRSS") / 1024,
                status_kb("VmHWM") / 1024
            );
        }
        assert_eq!(
            produced.cpu_figures,
            clusters * MEMBERS,
            "every member got its CPU figure"
        );
        if t >= warmup {
            all.push(fig);
        }
        last = produced;
    }
    println!(
        "{ticks} ticks after {warmup} warm-up; last tick: {} observations, {} members, \
         {} proposals (refused), {} repair commands",
        last.observations, last.members, last.proposals, last.repair_commands
    );
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>12}",
        "phase", "median ms", "p95 ms", "max ms", "ns/member"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let mut v: Vec<Duration> = all.iter().map(|f| f[i]).collect();
        v.sort();
        let median = percentile(&v, 0.5);
        println!(
            "{name:<14} {:>10.1} {:>10.1} {:>10.1} {:>12.0}",
            median.as_secs_f64() * 1e3,
            percentile(&v, 0.95).as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3,
            median.as_nanos() as f64 / (clusters * MEMBERS) as f64
        );
    }
    println!(
        "peak RSS (VmHWM): {} MB; RSS now {} MB",
        status_kb("VmHWM") / 1024,
        status_kb("VmRSS") / 1024
    );
    // Per cluster: the tick's CPU, and the peak RSS over the process before the fleet was
    // built, with and without the benchmark's own fixtures (simulated platforms and Patroni's
    // answers, the first setup stage).
    let mut ticks_cpu: Vec<Duration> = all.iter().map(|f| f[7]).collect();
    ticks_cpu.sort();
    let grown = status_kb("VmHWM").saturating_sub(before) as f64;
    let fixtures = match s.stages.as_slice() {
        [(_, start), (_, built), ..] => built.saturating_sub(*start) as f64,
        _ => 0.0,
    };
    println!(
        "per cluster: {:.1} us CPU per tick (median); {:.1} KB peak RSS, {:.1} KB without the \
         fixtures",
        percentile(&ticks_cpu, 0.5).as_secs_f64() * 1e6 / clusters as f64,
        grown / clusters as f64,
        (grown - fixtures) / clusters as f64
    );
}

/// `cargo test --benches`: a small fleet, two ticks, and checks that the pipeline is real:
/// every member observed with the figures served, values moving between ticks, nothing to
/// repair in a healthy fleet.
async fn check() {
    let clusters = 25;
    let mut s = setup(clusters, &[Fetch::Client, Fetch::Lean, Fetch::Table]).await;
    let mut seen = Vec::new();
    // Two ticks through the production client, then the second instant again through the
    // lean path and the table: all must observe exactly the same.
    for (t, fetch) in [
        (1, Fetch::Client),
        (2, Fetch::Client),
        (2, Fetch::Lean),
        (2, Fetch::Table),
    ] {
        let now = Timestamp::from_millis(START.as_millis() + t * 600 * 1000);
        let (fig, produced) = tick(&mut s, fetch, now, Some(&mut seen)).await;
        assert_eq!(produced.observations, clusters);
        assert_eq!(produced.members, clusters * MEMBERS);
        assert_eq!(produced.cpu_figures, clusters * MEMBERS);
        assert_eq!(
            produced.repair_commands, 0,
            "a healthy fleet needs no repair"
        );
        assert!(fig[7] >= fig[2] + fig[4], "the tick's CPU holds its phases");
    }
    let first = &seen[..clusters];
    let second = &seen[clusters..2 * clusters];
    assert_eq!(
        second,
        &seen[2 * clusters..3 * clusters],
        "the lean fetch observes as the client does"
    );
    assert_eq!(
        second,
        &seen[3 * clusters..],
        "the table observes as the client does"
    );
    for (c, (a, b)) in first.iter().zip(second).enumerate() {
        assert_eq!(a.cluster, cluster_name(c));
        let names: Vec<&str> = a.members.iter().map(|m| m.name.as_str()).collect();
        let want: Vec<String> = (0..MEMBERS).map(|m| member_name(c, m)).collect();
        assert_eq!(names, want, "the members of {}", a.cluster);
        for (m, (ma, mb)) in a.members.iter().zip(&b.members).enumerate() {
            let i = c * MEMBERS + m;
            let secs = |o: &Observation| o.at.as_millis() / 1000;
            let cpu = |mo: &steward_model::observation::MemberObservation| {
                mo.cpu_used.expect("a CPU figure").value
            };
            assert!((cpu(ma) - value(Metric::CpuUsed, i, secs(a))).abs() < 1e-9);
            assert!((cpu(mb) - value(Metric::CpuUsed, i, secs(b))).abs() < 1e-9);
            assert_ne!(cpu(ma), cpu(mb), "values move between ticks");
            assert_eq!(mb.streaming, if m == 0 { None } else { Some(true) });
        }
        // Every member's slot, tied to its member (the slots' series are keyed by slot).
        let slots: Vec<(String, Option<&str>)> = b
            .slots
            .iter()
            .map(|s| (s.name.clone(), s.member.as_deref()))
            .collect();
        let want: Vec<(String, Option<&str>)> = b
            .members
            .iter()
            .map(|m| {
                (
                    steward_policies::slots::slot_name(&m.name),
                    Some(m.name.as_str()),
                )
            })
            .collect();
        assert_eq!(slots, want, "the slots of {}", b.cluster);
    }
    println!("fleet bench check: ok ({clusters} clusters, 4 ticks, three fetch paths)");
}

fn main() {
    if let Ok(clusters) = std::env::var(SERVE_ENV) {
        let clusters = clusters
            .parse()
            .expect("FLEET_SERVE is a number of clusters");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the server's runtime starts");
        rt.block_on(serve(clusters));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    if bench {
        rt.block_on(measure());
    } else {
        rt.block_on(check());
    }
}
