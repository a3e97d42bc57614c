//! Fleet mode: one `steward run` looking after many clusters (`[fleet]`).
//!
//! What it is: one process and one runtime with one [`super::run`] per cluster, each with its
//! own ports, its own journal in `<state_dir>/<cluster>/` and its own action log
//! (`<state_dir>/<cluster>/actions.jsonl`; on stdout every line is prefixed with the cluster,
//! and a `--decision-log FILE` gets every cluster's lines tagged `"cluster": "<name>"`). All of
//! them stop together on SIGTERM/SIGINT or at the end of `--for`. Two forms:
//! - simulated clusters (`clusters = N`), each its own simulated world;
//! - listed clusters of a real platform (`[[fleet.cluster]]`, Docker): one connection per
//!   engine, shared by every cluster's view of the platform ([`DockerPlatform::for_cluster`]:
//!   the cluster's label, its own address pool), and per cluster its Patroni client (its URLs,
//!   `[patroni]`'s credentials), its balancers and its Prometheus queries (the defaults
//!   narrowed to its own series, `{cluster}` filled in the config's own:
//!   `PrometheusSettings::for_cluster`).
//!
//! The clusters share nothing else: a tick costs what one cluster's tick costs, times the
//! clusters; nothing compares clusters with each other. Their loops start staggered over one
//! tick, so a thousand clusters do not observe, decide and write in the same instant.
//!
//! With `[server]`, one HTTP surface serves them all ([`crate::server::fleet`]): a summary on
//! `/status`, a cluster's detail on `/status?cluster=NAME`, every cluster's series on
//! `/metrics` (a `cluster` label), pause and resume of one cluster or all.
//!
//! With `[lease]`, several instances share the fleet through [`ClusterLeases`] (one etcd
//! election per cluster, `<prefix>/clusters/<name>/owner`): a cluster's loops run only while
//! this instance holds its lease, are stopped when it is lost, and every step checks the lease
//! first ([`ClusterGuard`], the executor's [`ActGuard`]). A crashed instance's clusters are
//! claimed by the others after one TTL, and their loops start here, recovering whatever the
//! journal holds (the state directory must be shared by the instances, or each cluster's
//! operations are finished from the platform's labels). etcd is real, so with a lease the
//! simulated clusters run in real time.
//!
//! What it is not: a scheduler across clusters (no cross-cluster budget or ordering).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use steward_adapters::lease::{ClusterLeases, Leadership};
use steward_adapters::patroni::{PatroniApi, PatroniClient};
use steward_adapters::platform::docker::DockerPlatform;
use steward_adapters::prometheus::PrometheusClient;
use steward_model::ports::metrics::MetricsSource;
use steward_model::ports::Platform;
use steward_model::Timestamp;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use super::actions::ActionLog;
use super::config::{FleetSettings, ListedCluster, PlatformSettings, SimSettings};
use super::exec::ActGuard;
use super::journal::{LoopJournal, MemoryJournal, StateJournal};
use super::options::{runtime, RunOptions, ACTIONS_FILE};
use super::sim::SimWorld;
use super::{run, shutdown_channel, Clock, Options, Ports, Shutdown, ShutdownTrigger, Telemetry};
use crate::config::Config;

/// Runs `steward run` for every cluster of `fleet` to its end.
pub fn execute(args: &RunOptions, config: Config, fleet: FleetSettings) -> anyhow::Result<()> {
    // A dry run acts on nothing, so it takes no lease: it looks at every cluster.
    let leased = config.lease.is_some() && !args.dry_run;
    let kind = match fleet {
        FleetSettings::Simulated { clusters } => {
            let Some(PlatformSettings::Simulated(sim)) = config.platform.clone() else {
                // Validation already refuses a count without the simulated platform.
                bail!("a fleet of simulated clusters needs [platform] kind = \"simulated\"");
            };
            Kind::Simulated {
                sim: Box::new(sim),
                clusters,
            }
        }
        FleetSettings::Listed { clusters } => Kind::Listed { clusters },
    };
    // Simulated time unless leased or real (options::runtime says why).
    let simulated_time = matches!(kind, Kind::Simulated { .. }) && !leased;
    let runtime = runtime(simulated_time)?;
    runtime.block_on(async_main(args, config, kind, leased))
}

/// Which clusters, on what.
enum Kind {
    /// Simulated clusters, each its own world built from `sim`.
    Simulated {
        sim: Box<SimSettings>,
        clusters: Vec<String>,
    },
    /// Clusters of the real platform `[platform]` names, sharing its engines.
    Listed { clusters: Vec<ListedCluster> },
}

impl Kind {
    fn names(&self) -> Vec<String> {
        match self {
            Kind::Simulated { clusters, .. } => clusters.clone(),
            Kind::Listed { clusters } => clusters.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

/// Where one cluster's members live and how they are reached.
enum World {
    Simulated(Arc<SimWorld>),
    Real {
        platform: Arc<dyn Platform>,
        patroni: Arc<dyn PatroniApi>,
        metrics: Vec<Arc<dyn MetricsSource>>,
    },
}

/// One cluster of the fleet, ready to run.
struct Member {
    config: Config,
    world: World,
    decisions: ActionLog,
    /// When its loops start after the others': a share of one tick.
    phase: Duration,
    /// What its loops publish to the fleet's HTTP surface (`[server]`).
    telemetry: Option<Telemetry>,
}

async fn async_main(
    args: &RunOptions,
    config: Config,
    kind: Kind,
    leased: bool,
) -> anyhow::Result<()> {
    let (trigger, shutdown) = shutdown_channel();
    let clusters = kind.names();
    let combined = args.decision_log.clone().map(Target::File);
    let stdout = Target::shared(Box::new(std::io::stdout()));
    let count = clusters.len();
    // Names are padded to the longest so that the decisions line up.
    let width = widest(&clusters);
    // Joined before the worlds are built: joining may wait up to a TTL (a stale presence key),
    // and the simulated worlds' clocks start when they are built.
    let leases = match config.lease.as_ref().filter(|_| leased) {
        Some(settings) => {
            let Some(etcd) = super::lease::connect_patiently(settings, &shutdown).await? else {
                info!("stopped before etcd could be reached");
                return Ok(());
            };
            let mut leases = ClusterLeases::join(&etcd)
                .await
                .context("joining the fleet's instances in etcd")?;
            leases.claim(&clusters);
            Some(Arc::new(leases))
        }
        None => None,
    };
    let worlds = build_worlds(args, &config, &kind).await?;
    let (start, platform_kind) = match &kind {
        Kind::Simulated { sim, .. } => (sim.start, "simulated"),
        // The command's edge: the one place a real fleet reads the wall clock.
        Kind::Listed { .. } => (
            Timestamp::from_millis(chrono::Utc::now().timestamp_millis()),
            "docker",
        ),
    };
    // Stops the HTTP server once the loops have stopped.
    let cancel = tokio_util::sync::CancellationToken::new();
    let _stop_server = cancel.clone().drop_guard();
    let server = match &config.server {
        Some(server) => Some(FleetServer::start(server).await?),
        None => None,
    };
    let mut members = Vec::with_capacity(count);
    let mut served = Vec::new();
    for (i, (own, world)) in worlds.into_iter().enumerate() {
        let name = own.cluster.name.clone();
        let json = match (&combined, args.dry_run) {
            (Some(target), _) => Some(LineSink::tagged(&name, target.clone())),
            (None, false) => {
                std::fs::create_dir_all(&own.cluster.state_dir).with_context(|| {
                    format!(
                        "creating the state directory {}",
                        own.cluster.state_dir.display()
                    )
                })?;
                Some(LineSink::plain(Target::File(
                    own.cluster.state_dir.join(ACTIONS_FILE),
                )))
            }
            (None, true) => None,
        };
        let mut decisions = ActionLog::new(json.map(|s| Box::new(s) as Box<dyn Write + Send>));
        if !args.quiet {
            let human = LineSink::prefixed(&format!("{name:<width$} "), stdout.clone());
            decisions = decisions.with_human(Box::new(human), start);
        }
        let telemetry = match &server {
            Some(server) => {
                let t = server.cluster(&own, args.dry_run)?;
                served.push(t.server.clone());
                Some(t)
            }
            None => None,
        };
        // Spread the clusters' first ticks evenly over one tick.
        let phase = config.run.tick.mul_f64(i as f64 / count as f64);
        members.push(Member {
            config: own,
            world,
            decisions,
            phase,
            telemetry,
        });
    }
    if let Some(server) = server {
        server.serve(served, &cancel);
    }
    if !args.quiet {
        let mode = if args.dry_run {
            "dry run: observes and decides, executes nothing"
        } else {
            "acting"
        };
        let time = match (args.run_for, &leases, &kind) {
            (Some(d), None, Kind::Simulated { .. }) => {
                format!(", for {} of simulated time", humantime::format_duration(d))
            }
            (None, None, Kind::Simulated { .. }) => ", in simulated time".to_string(),
            (Some(d), Some(_), _) => format!(
                ", for {} (clusters are leased in etcd)",
                humantime::format_duration(d)
            ),
            (None, Some(_), _) => " (clusters are leased in etcd)".to_string(),
            (Some(d), None, _) => format!(", for {}", humantime::format_duration(d)),
            (None, None, _) => String::new(),
        };
        println!(
            "# steward run: fleet of {count} clusters ({} .. {}) on the {platform_kind} platform, {mode}{time}",
            clusters.first().map_or("", String::as_str),
            clusters.last().map_or("", String::as_str),
        );
    }
    stop_on(trigger, args.run_for);
    let clock = Clock::starting_at(start);
    let options = Options {
        dry_run: args.dry_run,
        clock,
    };
    let mut tasks = JoinSet::new();
    for member in members {
        if let World::Simulated(world) = &member.world {
            tokio::spawn(Arc::clone(world).play());
        }
        let name = member.config.cluster.name.clone();
        if let (Some(leases), Some(telemetry)) = (&leases, &member.telemetry) {
            if let Some(election) = leases.cluster(&name) {
                let instance = config
                    .lease
                    .as_ref()
                    .map_or_else(String::new, |l| l.instance.clone());
                tokio::spawn(super::lease::publish(
                    election.current(),
                    instance,
                    telemetry.clone(),
                ));
            }
        }
        let span = tracing::info_span!("cluster", cluster = %name);
        let task = look_after(
            member,
            options,
            args.dry_run,
            leases.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move { (name, task.await) }.instrument(span));
    }
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                warn!(cluster = %name, error = %format!("{e:#}"), "the cluster's loops stopped with an error");
                failed.push(format!("{name}: {e:#}"));
            }
            Err(e) => failed.push(format!("a cluster's task failed: {e}")),
        }
    }
    if let Some(leases) = &leases {
        // A clean stop hands the clusters over at once instead of after a TTL.
        if let Err(e) = leases.resign_all().await {
            warn!(error = %e, "cannot resign the fleet's leases; they expire after their ttl");
        }
    }
    if !failed.is_empty() {
        failed.sort();
        bail!(
            "{} of {count} clusters stopped with an error:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    if !args.quiet {
        println!("# steward run: fleet of {count} clusters stopped");
    }
    Ok(())
}

/// Every cluster's own config (its name, its state directory under the fleet's, its Patroni
/// URLs and balancers) and world: a simulated world each, or views of the one shared platform.
async fn build_worlds(
    args: &RunOptions,
    config: &Config,
    kind: &Kind,
) -> anyhow::Result<Vec<(Config, World)>> {
    let own_config = |name: &str| {
        let mut own = config.clone();
        own.cluster.name = name.to_string();
        own.cluster.state_dir = config.cluster.state_dir.join(name);
        own.fleet = None;
        own
    };
    let mut out = Vec::new();
    match kind {
        Kind::Simulated { sim, clusters } => {
            let trace = read_trace(args, sim)?;
            for name in clusters {
                let world = SimWorld::build(name, sim, trace.as_deref())
                    .await
                    .with_context(|| format!("building the simulated cluster {name}"))?;
                out.push((own_config(name), World::Simulated(Arc::new(world))));
            }
        }
        Kind::Listed { clusters } => {
            let Some(PlatformSettings::Docker(docker)) = &config.platform else {
                // Validation refuses listed clusters on any other platform.
                bail!("a fleet of listed clusters needs [platform] kind = \"docker\"");
            };
            // One connection per engine, shared by every cluster's view of the platform.
            let shared = DockerPlatform::connect((**docker).clone())
                .await
                .context("connecting to docker")?;
            let seed = chrono::Utc::now().timestamp_millis() as u64;
            for (i, c) in clusters.iter().enumerate() {
                let mut own = own_config(&c.name);
                own.patroni = Some(c.patroni.clone());
                own.balancers = c.balancers.clone();
                let patroni = PatroniClient::with_seed(&c.patroni, seed.wrapping_add(i as u64))
                    .with_context(|| format!("setting up the patroni client of {}", c.name))?;
                let platform = shared.for_cluster(&c.name, c.addresses.clone());
                // The clusters share Prometheus: each asks for its own members' series.
                let mut metrics: Vec<Arc<dyn MetricsSource>> = Vec::new();
                if let Some(p) = &config.prometheus {
                    let own_queries = p.for_cluster(&c.name);
                    metrics.push(Arc::new(PrometheusClient::new(&own_queries).with_context(
                        || format!("setting up the prometheus client of {}", c.name),
                    )?));
                    own.prometheus = Some(own_queries);
                }
                out.push((
                    own,
                    World::Real {
                        platform: Arc::new(platform),
                        patroni: Arc::new(patroni),
                        metrics,
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// The fleet's one HTTP surface (`[server]`): each cluster's state, one registry, one token.
struct FleetServer {
    config: crate::server::ServerConfig,
    token: Option<crate::server::BearerToken>,
    metrics: Arc<crate::telemetry::Metrics>,
    listener: tokio::net::TcpListener,
}

impl FleetServer {
    /// Binds the listen address (before the clusters start, so that a port in use is said at
    /// once).
    async fn start(config: &crate::server::ServerConfig) -> anyhow::Result<Self> {
        let token = config
            .load_token(|k| std::env::var(k).ok())
            .context("loading the api token")?;
        let listener = crate::server::bind(config).await?;
        Ok(FleetServer {
            config: config.clone(),
            token,
            metrics: Arc::new(crate::telemetry::Metrics::new()),
            listener,
        })
    }

    /// One cluster's state, counting into the fleet's registry.
    fn cluster(&self, own: &Config, dry_run: bool) -> anyhow::Result<Telemetry> {
        super::start::cluster_telemetry(
            &self.config,
            self.token.clone(),
            Arc::clone(&self.metrics),
            own,
            dry_run,
        )
    }

    /// Serves every cluster's state until `cancel`.
    fn serve(
        self,
        clusters: Vec<crate::server::Shared>,
        cancel: &tokio_util::sync::CancellationToken,
    ) {
        let fleet = crate::server::fleet::FleetShared::new(clusters, self.metrics, self.token);
        tokio::spawn(crate::server::fleet::serve(
            self.listener,
            fleet,
            cancel.clone(),
        ));
    }
}

/// Pulls `trigger` at the end of `run_for`, or on SIGTERM/SIGINT.
fn stop_on(trigger: ShutdownTrigger, run_for: Option<Duration>) {
    tokio::spawn(async move {
        let (relay, mut signalled) = shutdown_channel();
        tokio::spawn(async move {
            if let Err(e) = super::on_signals(relay).await {
                warn!(error = %e, "cannot listen for SIGTERM/SIGINT");
            }
        });
        match run_for {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep(d) => info!("--for elapsed: stopping every cluster"),
                _ = signalled.wait() => {}
            },
            None => signalled.wait().await,
        }
        trigger.trigger();
    });
}

/// The load trace, read once for every cluster; a relative path is relative to the config file.
fn read_trace(args: &RunOptions, sim: &SimSettings) -> anyhow::Result<Option<String>> {
    let Some(path) = &sim.trace else {
        return Ok(None);
    };
    let path = match args.config.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.clone(),
    };
    std::fs::read_to_string(&path)
        .map(Some)
        .with_context(|| format!("reading the load trace {}", path.display()))
}

fn widest(names: &[String]) -> usize {
    names.iter().map(String::len).max().unwrap_or(0)
}

/// Runs one cluster's loops: at once and until `shutdown` without a lease; with one, each time
/// this instance comes to own the cluster, until it stops owning it or `shutdown`.
async fn look_after(
    member: Member,
    options: Options,
    dry_run: bool,
    leases: Option<Arc<ClusterLeases>>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(member.phase) => {}
        _ = shutdown.wait() => return Ok(()),
    }
    let Some(leases) = leases else {
        let ports = member.ports(dry_run, None)?;
        return run(&member.config, ports, options, shutdown).await;
    };
    let name = member.config.cluster.name.clone();
    let Some(election) = leases.cluster(&name) else {
        bail!("no lease election for cluster {name}");
    };
    let mut state = election.current();
    loop {
        // Wait until this instance owns the cluster.
        loop {
            if state.borrow_and_update().token().is_some() {
                break;
            }
            tokio::select! {
                changed = state.changed() => if changed.is_err() {
                    bail!("the lease election of cluster {name} stopped");
                },
                _ = shutdown.wait() => return Ok(()),
            }
        }
        let token = state.borrow().token();
        info!(cluster = %name, token = ?token, "this instance owns the cluster: its loops start");
        // The journal is opened per ownership: the previous owner (sharing the state directory)
        // may have written to it since.
        let guard: Arc<dyn ActGuard> = Arc::new(ClusterGuard {
            leases: Arc::clone(&leases),
            cluster: name.clone(),
        });
        let ports = member.ports(dry_run, Some(guard))?;
        let (stop, own_shutdown) = shutdown_channel();
        let loops = run(&member.config, ports, options, own_shutdown);
        tokio::pin!(loops);
        let lost = async {
            loop {
                if state.borrow_and_update().token() != token {
                    return;
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        };
        let mut global = shutdown.clone();
        tokio::select! {
            result = &mut loops => return result,
            _ = global.wait() => {
                stop.trigger();
                return loops.await;
            }
            _ = lost => {
                warn!(cluster = %name, "the cluster's lease is lost: its loops stop");
                stop.trigger();
                loops.await?;
            }
        }
    }
}

impl Member {
    /// The ports of one run of this cluster's loops.
    fn ports(&self, dry_run: bool, guard: Option<Arc<dyn ActGuard>>) -> anyhow::Result<Ports> {
        let journal: Arc<dyn LoopJournal> = if dry_run {
            Arc::new(MemoryJournal::default())
        } else {
            Arc::new(
                StateJournal::open(&self.config.cluster.state_dir, &self.config.cluster.name)
                    .with_context(|| {
                        format!("opening the journal of {}", self.config.cluster.name)
                    })?,
            )
        };
        let (platform, patroni, metrics) = match &self.world {
            // A simulated cluster's figures come from its simulated platform.
            World::Simulated(world) => (
                Arc::clone(&world.platform) as Arc<dyn Platform>,
                Arc::clone(&world.patroni) as Arc<dyn PatroniApi>,
                Vec::new(),
            ),
            World::Real {
                platform,
                patroni,
                metrics,
            } => (Arc::clone(platform), Arc::clone(patroni), metrics.clone()),
        };
        Ok(Ports {
            platform,
            patroni,
            metrics,
            balancers: self.config.balancers.as_ref().map(super::balancers::build),
            guard,
            journal,
            decisions: self.decisions.clone(),
            telemetry: self.telemetry.clone(),
        })
    }
}

/// A cluster's steps may run only while this instance holds the cluster's lease (promise 8),
/// checked before each step, within the lease's local deadline.
struct ClusterGuard {
    leases: Arc<ClusterLeases>,
    cluster: String,
}

impl ActGuard for ClusterGuard {
    fn may_act(&self) -> Result<(), String> {
        let election = self
            .leases
            .cluster(&self.cluster)
            .ok_or_else(|| format!("no lease election for cluster {}", self.cluster))?;
        let token = election
            .current()
            .borrow()
            .token()
            .ok_or_else(|| format!("this instance does not own cluster {}", self.cluster))?;
        election.check(token).map_err(|e| e.to_string())
    }
}

/// Where finished lines go.
#[derive(Clone)]
enum Target {
    /// Appended to this file, opened for each line: a fleet of thousands keeps no descriptor
    /// open per cluster, and lines are few (a handful per cluster per hour).
    File(PathBuf),
    /// A writer every cluster shares (stdout), one whole line at a time.
    Shared(Arc<Mutex<Box<dyn Write + Send>>>),
}

impl Target {
    fn shared(out: Box<dyn Write + Send>) -> Self {
        Target::Shared(Arc::new(Mutex::new(out)))
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Target::File(path) => append(path, line),
            Target::Shared(out) => {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                out.write_all(line)?;
                out.flush()
            }
        }
    }
}

fn append(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write of a whole line to an O_APPEND file: lines of clusters sharing the file do
    // not interleave.
    file.write_all(line)
}

/// How a line is marked with its cluster.
#[derive(Clone)]
enum Tag {
    /// As written.
    None,
    /// Text in front (readable lines).
    Prefix(Vec<u8>),
    /// `"cluster": <name>` as the first field of a JSON object line.
    JsonField(Vec<u8>),
}

/// A writer that collects whole lines, marks each with its cluster and hands it to its target;
/// what [`ActionLog`] writes to in a fleet.
struct LineSink {
    tag: Tag,
    target: Target,
    partial: Vec<u8>,
}

impl LineSink {
    fn plain(target: Target) -> Self {
        LineSink {
            tag: Tag::None,
            target,
            partial: Vec::new(),
        }
    }

    fn prefixed(prefix: &str, target: Target) -> Self {
        LineSink {
            tag: Tag::Prefix(prefix.as_bytes().to_vec()),
            target,
            partial: Vec::new(),
        }
    }

    fn tagged(cluster: &str, target: Target) -> Self {
        // Serialized, so that any name is a valid JSON string.
        let name = serde_json::Value::String(cluster.to_string()).to_string();
        LineSink {
            tag: Tag::JsonField(format!("{{\"cluster\":{name},").into_bytes()),
            target,
            partial: Vec::new(),
        }
    }

    fn mark(&self, line: &[u8]) -> Vec<u8> {
        match &self.tag {
            Tag::None => line.to_vec(),
            Tag::Prefix(p) => [p.as_slice(), line].concat(),
            Tag::JsonField(field) => match line.strip_prefix(b"{") {
                // `{}` would become `{"cluster":"x",}`: an empty object gets no tag.
                Some(rest) if !rest.starts_with(b"}") => [field.as_slice(), rest].concat(),
                _ => line.to_vec(),
            },
        }
    }
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.target.write_line(&self.mark(&line))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Whole lines are written as they complete; a partial line waits for its end.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::run::tests::Buf;

    /// A shared in-memory target and what reaches it.
    fn memory() -> (Target, Buf) {
        let buf = Buf::default();
        (Target::shared(Box::new(buf.clone())), buf)
    }

    #[test]
    fn lines_written_in_pieces_come_out_whole_and_tagged() {
        let (target, bytes) = memory();
        let mut a = LineSink::tagged("demo-1", target.clone());
        let mut b = LineSink::prefixed("demo-2 ", target);
        a.write_all(b"{\"kind\":").unwrap();
        // Another cluster's line in between must not land inside the first one.
        b.write_all(b"+00:01:00 repair run\n").unwrap();
        a.write_all(b"\"command\"}\n{}\n").unwrap();
        let text = bytes.text();
        assert_eq!(
            text,
            "demo-2 +00:01:00 repair run\n{\"cluster\":\"demo-1\",\"kind\":\"command\"}\n{}\n"
        );
        let first: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(first["cluster"], "demo-1");
    }

    #[test]
    fn file_targets_append_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions.jsonl");
        let mut sink = LineSink::plain(Target::File(path.clone()));
        sink.write_all(b"{\"a\":1}\n{\"a\"").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        sink.write_all(b":2}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
    }
}
